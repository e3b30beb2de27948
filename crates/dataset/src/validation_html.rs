//! A validation report as one self-contained HTML page, in the manner of Great
//! Expectations' data docs: a header (dataset, batch and spec digests, outcome,
//! statistics) and a table of every expectation with its arguments, severity,
//! outcome, observed value, unexpected count and share, and a few unexpected
//! values with their rows.
//!
//! The page has inline CSS only, no script and no external asset, and a Content
//! Security Policy that forbids both. Every string is escaped: values come from
//! untrusted CSV files.

use std::fmt::Write as _;

pub use crate::html::escape;
use crate::spec::Severity;
use crate::validate::{ExpectationResult, ValidationReport};

/// Longest text shown for one value before it is cut (with an ellipsis).
const MAX_VALUE_CHARS: usize = 300;

/// Unexpected values listed per expectation.
const MAX_EXAMPLES: usize = 10;

const STYLE: &str = "
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem;color:#1f2328;background:#fff}
h1{font-size:1.5rem;margin:0 0 .5rem}
h2{font-size:1.15rem;margin:1.5rem 0 .5rem}
dl.meta{display:grid;grid-template-columns:max-content 1fr;gap:.25rem 1rem;margin:0}
dl.meta dt{font-weight:600;color:#57606a}
dl.meta dd{margin:0;font-family:ui-monospace,SFMono-Regular,Menlo,monospace;word-break:break-all}
.badge{display:inline-block;padding:.1rem .55rem;border-radius:1rem;font-size:.85rem;font-weight:600}
.ok{background:#dafbe1;color:#116329}
.fail{background:#ffebe9;color:#a40e26}
.warn{background:#fff8c5;color:#7d4e00}
.muted{color:#57606a}
.stats{display:flex;gap:1rem;flex-wrap:wrap;margin:.5rem 0}
.stat{border:1px solid #d0d7de;border-radius:.5rem;padding:.5rem .9rem;min-width:8rem}
.stat b{display:block;font-size:1.3rem}
table{border-collapse:collapse;width:100%;font-size:.9rem}
th,td{border:1px solid #d0d7de;padding:.35rem .5rem;text-align:left;vertical-align:top}
th{background:#f6f8fa}
tr.failed td{background:#fff5f5}
tr.warned td{background:#fffdf0}
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:.82rem}
pre{margin:0;white-space:pre-wrap;word-break:break-word}
ul.examples{margin:0;padding-left:1.1rem}
.error{border:1px solid #ff8182;background:#ffebe9;padding:.5rem .75rem;border-radius:.5rem}
";

/// At most `max` characters of `s`, with an ellipsis when cut.
fn clip(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_string(),
        Some((i, _)) => format!("{}…", &s[..i]),
    }
}

/// A JSON value as short escaped text.
fn value_html(v: &serde_json::Value) -> String {
    let text = match v {
        serde_json::Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    };
    escape(&clip(&text, MAX_VALUE_CHARS))
}

/// The column(s) and other arguments of an expectation.
fn arguments_html(r: &ExpectationResult) -> String {
    let mut out = String::new();
    if let Some(subject) = r.subject() {
        let _ = write!(out, "<b>{}</b>", escape(&subject));
    }
    let mut rest = r.kwargs.clone();
    if let Some(o) = rest.as_object_mut() {
        for key in ["column", "column_A", "column_B", "column_list"] {
            o.remove(key);
        }
        if !o.is_empty() {
            let text = serde_json::to_string(&rest).unwrap_or_default();
            let _ = write!(
                out,
                "<pre>{}</pre>",
                escape(&clip(&text, MAX_VALUE_CHARS * 2))
            );
        }
    }
    out
}

fn row_html(out: &mut String, index: usize, r: &ExpectationResult) {
    let d = &r.result;
    let (class, badge) = match (r.success, r.severity) {
        (true, _) => ("", "<span class=\"badge ok\">passed</span>"),
        (false, Severity::Error) => ("failed", "<span class=\"badge fail\">failed</span>"),
        (false, Severity::Warning) => ("warned", "<span class=\"badge warn\">warning</span>"),
    };
    let _ = write!(
        out,
        "<tr class=\"{class}\" id=\"e{index}\"><td>{}</td><td><code>{}</code>{}</td><td>{}</td><td>{}</td><td>{badge}</td>",
        index + 1,
        escape(&r.expectation),
        if r.implied {
            " <span class=\"muted\">(implied by [[columns]])</span>"
        } else {
            ""
        },
        arguments_html(r),
        escape(&r.severity.to_string()),
    );
    // Observed value and details.
    out.push_str("<td>");
    if let Some(o) = &d.observed_value {
        let _ = write!(out, "<pre>{}</pre>", value_html(o));
    }
    if let Some(details) = &d.details {
        let _ = write!(
            out,
            "<div class=\"muted\">{}</div>",
            escape(&clip(details, MAX_VALUE_CHARS * 2))
        );
    }
    out.push_str("</td>");
    // Unexpected count and share.
    let considered = d.element_count.saturating_sub(d.missing_count);
    if d.unexpected_count > 0 || d.element_count > 0 {
        let _ = write!(
            out,
            "<td>{} <span class=\"muted\">of {considered} ({:.2}%)</span>{}</td>",
            d.unexpected_count,
            d.unexpected_percent,
            if d.missing_count > 0 {
                format!(
                    "<div class=\"muted\">{} missing of {} rows</div>",
                    d.missing_count, d.element_count
                )
            } else {
                String::new()
            }
        );
    } else {
        out.push_str("<td class=\"muted\">–</td>");
    }
    // A few unexpected values with their rows.
    if d.partial_unexpected_list.is_empty() {
        out.push_str("<td></td>");
    } else {
        out.push_str("<td><ul class=\"examples\">");
        for u in d.partial_unexpected_list.iter().take(MAX_EXAMPLES) {
            let _ = write!(
                out,
                "<li>row {}: <code>{}</code></li>",
                u.row,
                value_html(&u.value)
            );
        }
        let more = d.partial_unexpected_list.len().saturating_sub(MAX_EXAMPLES);
        if more > 0 {
            let _ = write!(out, "<li class=\"muted\">{more} more sampled</li>");
        }
        out.push_str("</ul></td>");
    }
    out.push_str("</tr>\n");
}

/// Renders a report as a standalone HTML page.
pub fn render(report: &ValidationReport) -> String {
    let mut out = String::with_capacity(16 * 1024 + 1024 * report.results.len());
    let title = format!("Validation of {}", report.dataset);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        escape(&title)
    );
    let warnings = report
        .results
        .iter()
        .filter(|r| !r.success && r.severity == Severity::Warning)
        .count();
    let outcome = if report.success && warnings == 0 {
        "<span class=\"badge ok\">Succeeded</span>"
    } else if report.success {
        "<span class=\"badge warn\">Succeeded with warnings</span>"
    } else {
        "<span class=\"badge fail\">Failed</span>"
    };
    let _ = write!(
        out,
        "<header>\n<h1>Validation of <code>{}</code> {outcome}</h1>\n<dl class=\"meta\">\
         <dt>Dataset</dt><dd>{}</dd>\
         <dt>Batch SHA-256</dt><dd>{}</dd>\
         <dt>Spec digest</dt><dd>{}</dd>\
         <dt>Rows read</dt><dd>{}</dd>\
         <dt>Columns</dt><dd>{}</dd>\
         </dl>\n</header>\n",
        escape(&report.dataset),
        escape(&report.dataset),
        if report.batch_sha256.is_empty() {
            "<span class=\"muted\">(not recorded)</span>".to_string()
        } else {
            escape(&report.batch_sha256)
        },
        if report.spec_digest.is_empty() {
            "<span class=\"muted\">(not recorded)</span>".to_string()
        } else {
            escape(&report.spec_digest)
        },
        report.rows,
        escape(&clip(&report.columns.join(", "), MAX_VALUE_CHARS * 4)),
    );
    if let Some(e) = &report.structural_error {
        let _ = writeln!(
            out,
            "<p class=\"error\"><b>The file could not be read to the end:</b> {}</p>",
            escape(e)
        );
    }
    let s = &report.statistics;
    let _ = write!(
        out,
        "<h2>Statistics</h2>\n<div class=\"stats\">\
         <div class=\"stat\"><b>{}</b>evaluated</div>\
         <div class=\"stat\"><b>{}</b>successful</div>\
         <div class=\"stat\"><b>{}</b>unsuccessful</div>\
         <div class=\"stat\"><b>{warnings}</b>of which warnings</div>\
         <div class=\"stat\"><b>{:.1}%</b>success</div>\
         </div>\n",
        s.evaluated_expectations,
        s.successful_expectations,
        s.unsuccessful_expectations,
        s.success_percent,
    );
    out.push_str(
        "<h2>Expectations</h2>\n<table>\n<thead><tr><th>#</th><th>Expectation</th>\
         <th>Column / arguments</th><th>Severity</th><th>Result</th><th>Observed value</th>\
         <th>Unexpected</th><th>Unexpected values (row: value)</th></tr></thead>\n<tbody>\n",
    );
    for (i, r) in report.results.iter().enumerate() {
        row_html(&mut out, i, r);
    }
    out.push_str("</tbody>\n</table>\n</body>\n</html>\n");
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::spec::DatasetSpec;
    use crate::validate::validate_csv;

    const SPEC: &str = r#"name = "d"
entity_column = "id"
[target]
column = "y"
positive = "1"
[[columns]]
name = "id"
type = "string"
[[columns]]
name = "y"
type = "int"
[[columns]]
name = "s"
type = "string"
nullable = true
[[expectations]]
expectation = "expect_column_values_to_be_in_set"
column = "s"
value_set = ["a", "b"]
[[expectations]]
expectation = "expect_column_values_to_match_regex"
column = "s"
regex = '^[ab]$'
severity = "warning"
[[expectations]]
expectation = "expect_column_proportion_of_unique_values_to_be_between"
column = "id"
min_value = 1.0
[[expectations]]
expectation = "expect_table_row_count_to_be_between"
min_value = 1
"#;

    fn report() -> ValidationReport {
        let spec = Arc::new(DatasetSpec::parse(SPEC, "t").unwrap().spec);
        let csv = "id,y,s\n1,0,a\n2,1,<script>alert('x')</script>\n3,0,\"b & \"\"c\"\"\"\n4,1,b\n";
        let mut r = validate_csv(csv.as_bytes(), spec, 2);
        r.batch_sha256 = "ab".repeat(32);
        r.spec_digest = "<digest>".into();
        r
    }

    #[test]
    fn escapes_every_value_from_the_file() {
        let r = report();
        assert!(!r.success);
        let html = render(&r);
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("alert('x')"), "{html}");
        assert!(
            html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"),
            "{html}"
        );
        assert!(html.contains("b &amp; \\&quot;c\\&quot;"), "{html}");
        assert!(html.contains("&lt;digest&gt;"));
        assert!(html.contains(&"ab".repeat(32)));
        assert!(html.contains("default-src 'none'"));
        assert!(!html.contains("http://") && !html.contains("https://"));
    }

    #[test]
    fn every_expectation_appears_with_its_outcome() {
        let r = report();
        let html = render(&r);
        assert_eq!(html.matches("<tr class=").count(), r.results.len());
        for (i, res) in r.results.iter().enumerate() {
            assert!(html.contains(&format!("id=\"e{i}\"")), "row {i}");
            assert!(html.contains(&escape(&res.expectation)));
        }
        assert_eq!(
            html.matches("badge fail\">failed").count(),
            1,
            "the set check"
        );
        assert_eq!(html.matches("badge warn\">warning").count(), 1, "the regex");
        assert!(html.contains("<b>column &quot;s&quot;</b>"));
        assert!(html.contains("row 2: <code>"));
        assert!(html.contains("Failed"));
    }

    #[test]
    fn a_structural_error_and_long_values_are_shown_safely() {
        let spec = Arc::new(DatasetSpec::parse(SPEC, "t").unwrap().spec);
        let long = "x".repeat(5000);
        let csv = format!("id,y,s\n1,0,{long}\n2,1\n");
        // Chunks of one row: the first row is validated before the ragged one stops the read.
        let r = validate_csv(csv.as_bytes(), spec, 1);
        let html = render(&r);
        assert!(html.contains("could not be read to the end"));
        assert!(html.contains("ragged row at line 3"));
        assert!(!html.contains(&"x".repeat(MAX_VALUE_CHARS + 5)));
        assert!(html.contains('…'));
    }
}
