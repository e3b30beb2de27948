//! A drift report as one self-contained HTML page, in the manner of
//! Evidently's data drift report: the data set's verdict, then per column its
//! method, score, threshold and verdict, null shares, unseen categories, and
//! its distribution in the reference beside the current sample as paired bars.
//!
//! Inline CSS only, no script, no external asset, and a Content Security
//! Policy forbidding both; every string is escaped (column names and
//! categories come from untrusted files).

use std::fmt::Write as _;

use modelbus_dataset::html::escape;

use super::{ColumnDrift, DatasetDrift, short_number as n};

const STYLE: &str = "
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem;color:#1f2328;background:#fff}
h1{font-size:1.5rem;margin:0 0 .5rem}
h2{font-size:1.1rem;margin:1.5rem 0 .4rem}
.badge{display:inline-block;padding:.1rem .55rem;border-radius:1rem;font-size:.85rem;font-weight:600}
.ok{background:#dafbe1;color:#116329}
.drift{background:#ffebe9;color:#a40e26}
.muted{color:#57606a}
table{border-collapse:collapse;width:100%;font-size:.9rem;margin-bottom:.5rem}
th,td{border:1px solid #d0d7de;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#f6f8fa}
td.num{text-align:right;font-family:ui-monospace,SFMono-Regular,Menlo,monospace}
.bars td{border:none;padding:.05rem .4rem;font-size:.8rem}
.bar{height:.55rem;display:block;border-radius:.15rem}
.ref{background:#8c959f}
.cur{background:#0969da}
section{border:1px solid #d0d7de;border-radius:.5rem;padding:.6rem 1rem;margin:.8rem 0}
";

fn column_section(out: &mut String, c: &ColumnDrift) {
    let badge = if c.drifted {
        "<span class=\"badge drift\">drift</span>"
    } else {
        "<span class=\"badge ok\">no drift</span>"
    };
    let _ = write!(
        out,
        "<section>\n<h2><code>{}</code> {badge}</h2>\n<p class=\"muted\">{:?}, {}: score {} (drift when {} {}), statistic {}{}; {} reference and {} current values; nulls {} → {}",
        escape(&c.column),
        c.kind,
        c.method.name(),
        n(c.score),
        if c.method.is_test() { "p <" } else { "≥" },
        n(c.threshold),
        n(c.statistic),
        c.p_value
            .map(|p| format!(", p-value {}", n(p)))
            .unwrap_or_default(),
        c.reference_rows,
        c.current_rows,
        n(c.reference_null_share),
        n(c.current_null_share),
    );
    if c.error_bound > 0.0 {
        let _ = write!(
            out,
            "; reference from quantiles, error ≤ {}",
            n(c.error_bound)
        );
    }
    out.push_str("</p>\n");
    if c.unseen_rows > 0 {
        let list: Vec<String> = c
            .unseen
            .iter()
            .map(|(k, v)| format!("<code>{}</code> ({v})", escape(k)))
            .collect();
        let _ = writeln!(
            out,
            "<p>{} rows of categories the reference never saw: {}</p>",
            c.unseen_rows,
            list.join(", ")
        );
    }
    let max = c
        .distribution
        .reference
        .iter()
        .chain(&c.distribution.current)
        .copied()
        .fold(0.0f64, f64::max)
        .max(1e-12);
    out.push_str(
        "<table class=\"bars\">\n<tr><th>value</th><th>reference</th><th>current</th></tr>\n",
    );
    for ((label, r), cur) in c
        .distribution
        .labels
        .iter()
        .zip(&c.distribution.reference)
        .zip(&c.distribution.current)
    {
        let _ = writeln!(
            out,
            "<tr><td><code>{}</code></td><td><span class=\"bar ref\" style=\"width:{:.1}%\"></span>{}</td><td><span class=\"bar cur\" style=\"width:{:.1}%\"></span>{}</td></tr>",
            escape(label),
            100.0 * r / max,
            n(*r),
            100.0 * cur / max,
            n(*cur)
        );
    }
    out.push_str("</table>\n</section>\n");
}

/// Renders the report; `title` says what was compared.
pub fn render(title: &str, report: &DatasetDrift) -> String {
    let mut out = String::with_capacity(16_384);
    let verdict = if report.drifted {
        "<span class=\"badge drift\">data set drift</span>"
    } else if report.any_drift() {
        "<span class=\"badge drift\">column drift</span>"
    } else {
        "<span class=\"badge ok\">no drift</span>"
    };
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>Drift: {}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n\
         <h1>Drift: {} {verdict}</h1>\n\
         <p>{} of {} columns drifted (share {}, data set drifts at ≥ {}); {} reference rows, {} current rows.</p>\n",
        escape(title),
        escape(title),
        report.drifted_columns,
        report.columns.len(),
        n(report.share),
        n(report.drift_share),
        report.reference_rows,
        report.current_rows,
    );
    out.push_str("<table>\n<tr><th>column</th><th>kind</th><th>method</th><th>score</th><th>threshold</th><th>drift</th><th>nulls (ref → cur)</th></tr>\n");
    for c in &report.columns {
        let _ = writeln!(
            out,
            "<tr><td><code>{}</code></td><td>{:?}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td><td class=\"num\">{} → {}</td></tr>",
            escape(&c.column),
            c.kind,
            c.method.name(),
            n(c.score),
            n(c.threshold),
            if c.drifted { "yes" } else { "no" },
            n(c.reference_null_share),
            n(c.current_null_share)
        );
    }
    out.push_str("</table>\n");
    if !report.skipped.is_empty() {
        out.push_str("<h2>Not tested</h2>\n<ul>\n");
        for s in &report.skipped {
            let _ = writeln!(
                out,
                "<li><code>{}</code>: {}</li>",
                escape(&s.column),
                escape(&s.reason)
            );
        }
        out.push_str("</ul>\n");
    }
    for c in &report.columns {
        column_section(&mut out, c);
    }
    out.push_str("</body>\n</html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drift::{DriftOptions, DriftReference, compare};
    use crate::sample::FeatureSample;

    #[test]
    fn names_and_categories_are_escaped_and_nothing_loads_from_outside() {
        let cat = |pairs: &[(&str, u64)]| FeatureSample::Categorical {
            counts: pairs.iter().map(|(k, c)| (k.to_string(), *c)).collect(),
            nulls: 0,
        };
        let r = DriftReference::from_samples(
            100,
            vec![("<b>c</b>".into(), cat(&[("a", 50), ("b", 50)]))],
        );
        let d = compare(
            &r,
            100,
            vec![(
                "<b>c</b>".into(),
                cat(&[("a", 40), ("<script>x</script>", 60)]),
            )],
            &DriftOptions::default(),
        )
        .unwrap();
        let html = render("t<i>", &d);
        assert!(!html.contains("<script>") && !html.contains("<b>c</b>") && !html.contains("t<i>"));
        assert!(html.contains("&lt;script&gt;"));
        assert!(html.contains("default-src 'none'"));
        assert!(!html.contains("src=\"http") && !html.contains("href=\"http"));
        assert!(html.contains("60 rows of categories the reference never saw"));
    }
}
