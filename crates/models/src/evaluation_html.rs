//! Renders an [`EvaluationReport`] as one self-contained HTML page: inline CSS,
//! inline SVG charts (ROC curve, reliability diagram), no scripts and no external
//! assets, so the registry can serve it as is.
//!
//! Every string from the report (model names, slice columns and values, feature
//! names) comes from user data and is HTML-escaped.

use std::fmt::Write;

use modelbus_dataset::html::escape;

use crate::evaluate::{Comparison, Evaluation, EvaluationReport, ReliabilityBin};

/// Page style: kept small and inline so the page stands alone.
const STYLE: &str = "\
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2em auto;max-width:1100px;color:#1f2328;padding:0 1em}\
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #d0d7de;padding-bottom:.3em}\
table{border-collapse:collapse;margin:.5em 0}th,td{border:1px solid #d0d7de;padding:.3em .7em;text-align:right}\
th{background:#f6f8fa}td.l,th.l{text-align:left}.muted{color:#656d76}\
.better{color:#1a7f37;font-weight:600}.worse{color:#cf222e;font-weight:600}.same{color:#656d76}\
.charts{display:flex;flex-wrap:wrap;gap:2em}figure{margin:0}figcaption{text-align:center;color:#656d76}\
.bar{background:#0969da;height:.9em;display:inline-block;vertical-align:middle}\
.cm td{min-width:6em;text-align:center}.cm .hit{background:#dafbe1}.cm .miss{background:#ffebe9}\
svg text{font-size:11px;fill:#656d76}";

/// Side of a square chart's plot area, in pixels.
const PLOT: f64 = 260.0;
/// Margin around a chart's plot area, in pixels.
const MARGIN: f64 = 36.0;

/// A metric with four decimals, or `n/a` when undefined.
fn num(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.4}")
    } else {
        "n/a".to_string()
    }
}

/// A signed difference with four decimals, or `n/a`.
fn signed(v: f64) -> String {
    if v.is_finite() {
        format!("{v:+.4}")
    } else {
        "n/a".to_string()
    }
}

/// `[low, high]`, or `n/a` when the interval could not be computed.
fn interval(low: f64, high: f64) -> String {
    if low.is_finite() && high.is_finite() {
        format!("[{low:.4}, {high:.4}]")
    } else {
        "n/a".to_string()
    }
}

/// A confidence level as a percentage without trailing zeros, e.g. `95`.
fn percent(confidence: f64) -> String {
    num(confidence * 100.0)
        .trim_end_matches('0')
        .trim_end_matches('.')
        .to_string()
}

/// CSS class of a difference: `better`, `worse` or `same`.
fn delta_class(delta: f64, higher_is_better: bool) -> &'static str {
    if !delta.is_finite() || delta == 0.0 {
        "same"
    } else if (delta > 0.0) == higher_is_better {
        "better"
    } else {
        "worse"
    }
}

/// Chart x coordinate of a value in `[0, 1]`.
fn sx(x: f64) -> f64 {
    MARGIN + x.clamp(0.0, 1.0) * PLOT
}

/// Chart y coordinate of a value in `[0, 1]` (upwards).
fn sy(y: f64) -> f64 {
    MARGIN + (1.0 - y.clamp(0.0, 1.0)) * PLOT
}

/// Opens a square chart: frame, diagonal, ticks and axis labels.
fn chart_start(out: &mut String, x_label: &str, y_label: &str) {
    let size = PLOT + 2.0 * MARGIN;
    let _ = write!(
        out,
        "<svg width=\"{size}\" height=\"{size}\" viewBox=\"0 0 {size} {size}\" role=\"img\">\
         <rect x=\"{MARGIN}\" y=\"{MARGIN}\" width=\"{PLOT}\" height=\"{PLOT}\" fill=\"none\" stroke=\"#d0d7de\"/>\
         <line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#afb8c1\" stroke-dasharray=\"4 4\"/>",
        sx(0.0),
        sy(0.0),
        sx(1.0),
        sy(1.0)
    );
    for t in [0.0, 0.5, 1.0] {
        let _ = write!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{t}</text>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{t}</text>",
            sx(t),
            sy(0.0) + 14.0,
            sx(0.0) - 4.0,
            sy(t) + 4.0
        );
    }
    let _ = write!(
        out,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\
         <text x=\"12\" y=\"{:.1}\" text-anchor=\"middle\" transform=\"rotate(-90 12 {:.1})\">{}</text>",
        sx(0.5),
        size - 4.0,
        escape(x_label),
        sy(0.5),
        sy(0.5),
        escape(y_label)
    );
}

/// An SVG polyline through `points` (in `[0, 1]²`).
fn polyline(out: &mut String, points: &[(f64, f64)], colour: &str, dashed: bool) {
    if points.is_empty() {
        return;
    }
    out.push_str("<polyline fill=\"none\" stroke-width=\"2\" stroke=\"");
    out.push_str(colour);
    out.push('"');
    if dashed {
        out.push_str(" stroke-dasharray=\"6 3\"");
    }
    out.push_str(" points=\"");
    for (i, &(x, y)) in points.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let _ = write!(out, "{:.1},{:.1}", sx(x), sy(y));
    }
    out.push_str("\"/>");
}

/// The ROC curve of the model, and of the champion (dashed) when compared.
fn roc_chart(out: &mut String, evaluation: &Evaluation, champion: Option<&Evaluation>) {
    out.push_str("<figure>");
    chart_start(out, "false positive rate", "true positive rate");
    if let Some(champion) = champion {
        polyline(out, &champion.roc_curve, "#bf8700", true);
    }
    polyline(out, &evaluation.roc_curve, "#0969da", false);
    out.push_str("</svg><figcaption>ROC curve");
    if champion.is_some() {
        out.push_str(" (blue: this model, dashed orange: champion)");
    }
    if evaluation.roc_curve.is_empty() {
        out.push_str(": undefined with one class");
    }
    out.push_str("</figcaption></figure>");
}

/// Reliability diagram: per bin, a bar of the fraction of positives over the
/// bin's width and a dot at (mean predicted, fraction positive).
fn reliability_chart(out: &mut String, bins: &[ReliabilityBin]) {
    out.push_str("<figure>");
    chart_start(out, "predicted probability", "fraction positive");
    let used: Vec<&ReliabilityBin> = bins.iter().filter(|b| b.count > 0).collect();
    for b in &used {
        let _ = write!(
            out,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#0969da\" fill-opacity=\"0.18\"/>",
            sx(b.lower),
            sy(b.fraction_positive),
            (sx(b.upper) - sx(b.lower)).max(0.0),
            (sy(0.0) - sy(b.fraction_positive)).max(0.0)
        );
    }
    let points: Vec<(f64, f64)> = used
        .iter()
        .map(|b| (b.mean_predicted, b.fraction_positive))
        .collect();
    polyline(out, &points, "#0969da", false);
    for &(x, y) in &points {
        let _ = write!(
            out,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3.5\" fill=\"#0969da\"/>",
            sx(x),
            sy(y)
        );
    }
    out.push_str("</svg><figcaption>Reliability diagram</figcaption></figure>");
}

/// The headline metrics table.
fn metrics_table(out: &mut String, e: &Evaluation) {
    let rate = if e.rows > 0 {
        format!(" ({:.1} %)", 100.0 * e.positives as f64 / e.rows as f64)
    } else {
        String::new()
    };
    let ci = &e.roc_auc_interval;
    let _ = write!(
        out,
        "<table><tr><th class=\"l\">Metric</th><th>Value</th></tr>\
         <tr><td class=\"l\">Holdout rows</td><td>{}</td></tr>\
         <tr><td class=\"l\">Positives</td><td>{}{rate}</td></tr>\
         <tr><td class=\"l\">ROC AUC</td><td>{} <span class=\"muted\">{} % CI {}</span></td></tr>\
         <tr><td class=\"l\">PR AUC</td><td>{}</td></tr>\
         <tr><td class=\"l\">Log loss</td><td>{}</td></tr>\
         <tr><td class=\"l\">Brier score</td><td>{}</td></tr>\
         <tr><td class=\"l\">Expected calibration error ({} bins)</td><td>{}</td></tr></table>",
        e.rows,
        e.positives,
        num(e.roc_auc),
        percent(ci.confidence),
        interval(ci.low, ci.high),
        num(e.pr_auc),
        num(e.log_loss),
        num(e.brier),
        e.reliability.len(),
        num(e.ece)
    );
}

/// The confusion matrix at the chosen threshold, with the rule.
fn confusion_table(out: &mut String, e: &Evaluation) {
    let c = &e.confusion;
    let _ = write!(
        out,
        "<p>Threshold <b>{}</b> chosen by rule <b>{}</b>; a row is predicted positive when p &ge; threshold.</p>\
         <table class=\"cm\"><tr><th></th><th>Predicted positive</th><th>Predicted negative</th></tr>\
         <tr><th class=\"l\">Actual positive</th><td class=\"hit\">{} TP</td><td class=\"miss\">{} FN</td></tr>\
         <tr><th class=\"l\">Actual negative</th><td class=\"miss\">{} FP</td><td class=\"hit\">{} TN</td></tr></table>\
         <table><tr><th>Precision</th><th>Recall</th><th>F1</th><th>Accuracy</th><th>Expected cost per row</th></tr>\
         <tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr></table>",
        num(c.threshold),
        escape(&e.threshold_rule.describe()),
        c.true_positive,
        c.false_negative,
        c.false_positive,
        c.true_negative,
        num(c.precision),
        num(c.recall),
        num(c.f1),
        num(c.accuracy),
        c.expected_cost.map_or_else(|| "&ndash;".to_string(), num)
    );
}

/// The reliability table, empty bins included.
fn reliability_table(out: &mut String, bins: &[ReliabilityBin]) {
    out.push_str(
        "<table><tr><th>Bin</th><th>Rows</th><th>Mean predicted</th><th>Fraction positive</th><th>Gap</th></tr>",
    );
    for b in bins {
        let _ = write!(
            out,
            "<tr><td>[{:.2}, {:.2})</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            b.lower,
            b.upper,
            b.count,
            num(b.mean_predicted),
            num(b.fraction_positive),
            num((b.mean_predicted - b.fraction_positive).abs())
        );
    }
    out.push_str("</table>");
}

/// Metrics per slice value.
fn slice_table(out: &mut String, e: &Evaluation) {
    if e.slices.is_empty() {
        out.push_str("<p class=\"muted\">No slice columns in the spec.</p>");
        return;
    }
    out.push_str(
        "<table><tr><th class=\"l\">Column</th><th class=\"l\">Value</th><th>Rows</th><th>Positives</th>\
         <th>ROC AUC</th><th>PR AUC</th><th>Log loss</th><th>Brier</th></tr>",
    );
    for s in &e.slices {
        let _ = write!(
            out,
            "<tr><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&s.column),
            escape(&s.value),
            s.rows,
            s.positives,
            num(s.roc_auc),
            num(s.pr_auc),
            num(s.log_loss),
            num(s.brier)
        );
    }
    out.push_str("</table>");
}

/// Feature importance as horizontal bars scaled to the largest magnitude.
fn importance_table(out: &mut String, e: &Evaluation) {
    if e.feature_importance.is_empty() {
        out.push_str("<p class=\"muted\">No feature importance recorded.</p>");
        return;
    }
    let max = e
        .feature_importance
        .iter()
        .map(|(_, v)| v.abs())
        .fold(0.0, f64::max);
    out.push_str(
        "<table><tr><th class=\"l\">Feature</th><th class=\"l\">Importance</th><th>Value</th></tr>",
    );
    for (name, value) in &e.feature_importance {
        let width = if max > 0.0 {
            value.abs() / max * 300.0
        } else {
            0.0
        };
        let _ = write!(
            out,
            "<tr><td class=\"l\">{}</td><td class=\"l\"><span class=\"bar\" style=\"width:{width:.1}px\"></span></td><td>{}</td></tr>",
            escape(name),
            num(*value)
        );
    }
    out.push_str("</table>");
}

/// The champion/challenger table with coloured deltas.
fn comparison_section(out: &mut String, e: &Evaluation, c: &Comparison) {
    let champion = &c.champion;
    let _ = write!(
        out,
        "<h2>Champion comparison</h2><p>Against the current champion <b>{} v{}</b> on the same {} holdout rows.</p>\
         <table><tr><th class=\"l\">Metric</th><th>This model</th><th>Champion</th><th>&Delta;</th><th class=\"l\">Better when</th></tr>",
        escape(&c.champion_model),
        c.champion_version,
        champion.rows
    );
    let rows = [
        (
            "ROC AUC",
            e.roc_auc,
            champion.roc_auc,
            c.delta_roc_auc,
            true,
        ),
        ("PR AUC", e.pr_auc, champion.pr_auc, c.delta_pr_auc, true),
        (
            "Log loss",
            e.log_loss,
            champion.log_loss,
            c.delta_log_loss,
            false,
        ),
        ("Brier score", e.brier, champion.brier, c.delta_brier, false),
        ("ECE", e.ece, champion.ece, c.delta_ece, false),
    ];
    for (name, mine, theirs, delta, higher) in rows {
        let _ = write!(
            out,
            "<tr><td class=\"l\">{name}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td class=\"l\">{}</td></tr>",
            num(mine),
            num(theirs),
            delta_class(delta, higher),
            signed(delta),
            if higher { "higher" } else { "lower" }
        );
    }
    out.push_str("</table>");
    let ci = &c.paired_roc_auc_interval;
    let verdict = if !(ci.low.is_finite() && ci.high.is_finite()) {
        ("same", "undefined")
    } else if ci.low > 0.0 {
        ("better", "this model ranks better")
    } else if ci.high < 0.0 {
        ("worse", "this model ranks worse")
    } else {
        ("same", "no clear difference")
    };
    let _ = write!(
        out,
        "<p>Paired bootstrap {} % interval of &Delta; ROC AUC: {} &mdash; <span class=\"{}\">{}</span>.</p>",
        percent(ci.confidence),
        interval(ci.low, ci.high),
        verdict.0,
        verdict.1
    );
}

/// Renders the report as one self-contained HTML page (no scripts, no
/// external assets; every string from the data is escaped).
pub fn render(report: &EvaluationReport) -> String {
    let e = &report.evaluation;
    let title = format!("Evaluation of {} v{}", report.model, report.version);
    let mut out = String::with_capacity(16 * 1024);
    let _ = write!(
        out,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><style>{STYLE}</style></head><body><h1>{}</h1>",
        escape(&title),
        escape(&title)
    );
    out.push_str("<h2>Metrics</h2>");
    metrics_table(&mut out, e);
    out.push_str("<div class=\"charts\">");
    roc_chart(&mut out, e, report.comparison.as_ref().map(|c| &c.champion));
    reliability_chart(&mut out, &e.reliability);
    out.push_str("</div>");
    if let Some(c) = &report.comparison {
        comparison_section(&mut out, e, c);
    }
    out.push_str("<h2>Confusion matrix</h2>");
    confusion_table(&mut out, e);
    out.push_str("<h2>Calibration</h2>");
    reliability_table(&mut out, &e.reliability);
    out.push_str("<h2>Slices</h2>");
    slice_table(&mut out, e);
    out.push_str("<h2>Feature importance</h2>");
    importance_table(&mut out, e);
    out.push_str("</body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evaluate::{EvaluationConfig, Slice, compare, evaluate};

    fn report(with_comparison: bool) -> EvaluationReport {
        let n = 60;
        let y: Vec<f64> = (0..n).map(|i| f64::from(i % 3 == 0)).collect();
        // Informative but imperfect scores.
        let p: Vec<f64> = (0..n)
            .map(|i| {
                let base = if i % 3 == 0 { 0.6 } else { 0.35 };
                base + ((i * 37) % 11) as f64 / 40.0 - 0.12
            })
            .collect();
        let champion: Vec<f64> = (0..n).map(|i| 0.3 + ((i * 17) % 7) as f64 / 20.0).collect();
        let values: Vec<String> = (0..n)
            .map(|i| match i % 4 {
                // Only negatives: a one-class slice.
                3 if i % 3 != 0 => "One year".to_string(),
                0 | 3 => "<script>alert(1)</script>".to_string(),
                1 => "Month-to-month".to_string(),
                _ => "A & B \"quoted\"".to_string(),
            })
            .collect();
        let slices = [Slice {
            column: "Contract",
            values: &values,
        }];
        let importance = vec![
            ("tenure".to_string(), 40.0),
            ("<b onmouseover=x>".to_string(), 10.0),
        ];
        let config = EvaluationConfig {
            bootstrap_samples: 200,
            ..EvaluationConfig::default()
        };
        EvaluationReport {
            model: "churn<v2>".into(),
            version: 7,
            evaluation: evaluate(&y, &p, &slices, &importance, &config),
            comparison: with_comparison
                .then(|| compare(&y, &p, &champion, "churn & co", 6, &slices, &config)),
        }
    }

    #[test]
    fn escapes_untrusted_strings_and_lists_every_slice() {
        let r = report(true);
        let html = render(&r);
        assert!(!html.contains("<script"), "raw script tag in the page");
        assert!(!html.contains("<b onmouseover"));
        assert!(html.contains("&lt;b onmouseover=x&gt;"));
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("A &amp; B &quot;quoted&quot;"));
        assert!(html.contains("churn&lt;v2&gt;"));
        assert!(html.contains("churn &amp; co v6"));
        assert_eq!(r.evaluation.slices.len(), 4);
        for s in &r.evaluation.slices {
            let cell = format!("<td class=\"l\">{}</td>", escape(&s.value));
            assert!(html.contains(&cell), "missing slice {}", s.value);
        }
    }

    #[test]
    fn page_is_self_contained_with_charts_and_sections() {
        let html = render(&report(true));
        assert!(html.starts_with("<!DOCTYPE html>"));
        for forbidden in [
            "http://", "https://", " src=", "<link", "<script", "@import", "url(",
        ] {
            assert!(!html.contains(forbidden), "found {forbidden}");
        }
        assert_eq!(html.matches("<svg").count(), 2);
        // Challenger and champion ROC curves, plus the reliability line.
        assert_eq!(html.matches("<polyline").count(), 3);
        for heading in [
            "Metrics",
            "Champion comparison",
            "Confusion matrix",
            "Calibration",
            "Slices",
            "Feature importance",
        ] {
            assert!(html.contains(&format!("<h2>{heading}</h2>")), "{heading}");
        }
        assert!(html.contains("chosen by rule <b>max F1</b>"));
        assert!(html.contains("95 % CI ["));
        assert!(html.contains("style=\"width:300.0px\""));
        assert!(html.contains("style=\"width:75.0px\""));
        let no_comparison = render(&report(false));
        assert!(!no_comparison.contains("Champion comparison"));
        assert_eq!(no_comparison.matches("<polyline").count(), 2);
    }

    #[test]
    fn comparison_colours_deltas_by_direction() {
        let r = report(true);
        let c = r.comparison.as_ref().unwrap();
        assert!(c.delta_roc_auc > 0.0 && c.delta_log_loss < 0.0, "{c:?}");
        let html = render(&r);
        let section = &html[html.find("<h2>Champion comparison</h2>").unwrap()..];
        let row = |name: &str| {
            let start = section
                .find(&format!("<td class=\"l\">{name}</td>"))
                .unwrap();
            let end = start + section[start..].find("</tr>").unwrap();
            section[start..end].to_string()
        };
        assert!(row("ROC AUC").contains("class=\"better\""));
        // Lower log loss is an improvement, shown with a minus sign.
        let log_loss = row("Log loss");
        assert!(log_loss.contains("class=\"better\""), "{log_loss}");
        assert!(log_loss.contains(">-0."));
        assert_eq!(delta_class(0.01, false), "worse");
        assert_eq!(delta_class(-0.01, true), "worse");
        assert_eq!(delta_class(0.0, true), "same");
        assert_eq!(delta_class(f64::NAN, false), "same");
    }

    #[test]
    fn undefined_metrics_render_as_not_available() {
        let r = report(false);
        let one_class = r
            .evaluation
            .slices
            .iter()
            .find(|s| s.positives == 0 || s.positives == s.rows)
            .expect("a one-class slice");
        assert!(one_class.roc_auc.is_nan());
        let html = render(&r);
        assert!(html.contains("n/a"));
        assert!(!html.contains("NaN"));
        assert_eq!(num(f64::INFINITY), "n/a");
        assert_eq!(percent(0.975), "97.5");
        assert_eq!(percent(0.9), "90");
    }
}
