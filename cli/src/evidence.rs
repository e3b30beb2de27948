//! `modelbus evidence`: writes the compliance bundle of one model version
//! (`evidence.json`, a readable `evidence.html` rendered from it, and
//! `SHA256SUMS`) and verifies such a directory offline.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use modelbus_core::evidence::{Evidence, Finding, verify};
use modelbus_core::ids::Sha256Digest;
use modelbus_core::signing::{PublicKey, peek_statement};
use modelbus_dataset::validation_html::escape;
use serde_json::Value;

use crate::client::Client;

/// Files of a bundle directory.
pub const JSON_FILE: &str = "evidence.json";
/// The readable report.
pub const HTML_FILE: &str = "evidence.html";
/// Checksums of both.
pub const SUMS_FILE: &str = "SHA256SUMS";

/// An exported bundle: what was written, its checks, and the digest under which
/// the registry keeps it in the artifact store.
pub struct Exported {
    /// The bundle.
    pub evidence: Evidence,
    /// Its checks at export.
    pub findings: Vec<Finding>,
    /// Its artifact digest in the registry's store, when the registry said.
    pub artifact_sha256: Option<String>,
}

/// Fetches the bundle of `model` v`version`, checks it, and writes it to `out`.
pub async fn export(client: &Client, model: &str, version: u32, out: &Path) -> Result<Exported> {
    let (evidence, artifact_sha256) = client.evidence(model, version).await?;
    let findings = verify(&evidence, &[]);
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let json = serde_json::to_string_pretty(&evidence)? + "\n";
    let html = render_html(&evidence, &findings);
    let sums = format!(
        "{}  {JSON_FILE}\n{}  {HTML_FILE}\n",
        Sha256Digest::of(json.as_bytes()).to_hex(),
        Sha256Digest::of(html.as_bytes()).to_hex()
    );
    for (name, text) in [(JSON_FILE, &json), (HTML_FILE, &html), (SUMS_FILE, &sums)] {
        let path = out.join(name);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(Exported {
        evidence,
        findings,
        artifact_sha256,
    })
}

/// Verifies a bundle directory with no access to the platform: the checksums,
/// the bundle's own checks (see [`modelbus_core::evidence::verify`]), with
/// `trusted_keys` the public keys the auditor holds, and that the HTML report
/// is exactly the one rendered from the JSON.
pub fn verify_dir(dir: &Path, trusted_keys: &[PathBuf]) -> Result<(Evidence, Vec<Finding>)> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))
    };
    let json = read(JSON_FILE)?;
    let html = read(HTML_FILE)?;
    let sums = read(SUMS_FILE)?;
    let mut findings = Vec::new();
    for (name, text) in [(JSON_FILE, &json), (HTML_FILE, &html)] {
        let actual = Sha256Digest::of(text.as_bytes()).to_hex();
        let listed = sums
            .lines()
            .find_map(|l| l.strip_suffix(&format!("  {name}")))
            .unwrap_or_default();
        findings.push(Finding {
            check: format!("checksum of {name}"),
            ok: listed == actual,
            detail: if listed == actual {
                actual
            } else {
                format!("{SUMS_FILE} lists {listed:?}, the file hashes to {actual}")
            },
        });
    }
    let evidence: Evidence = serde_json::from_str(&json).with_context(|| {
        format!(
            "{} is not an evidence bundle",
            dir.join(JSON_FILE).display()
        )
    })?;
    let mut keys = Vec::new();
    for path in trusted_keys {
        let pem = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        keys.push(PublicKey::from_pem(&pem, &path.display().to_string())?);
    }
    let rendered = render_html(&evidence, &verify(&evidence, &[]));
    findings.push(Finding {
        check: format!("{HTML_FILE} renders {JSON_FILE}"),
        ok: rendered == html,
        detail: if rendered == html {
            "identical".into()
        } else {
            "the HTML report differs from the one the JSON renders to".into()
        },
    });
    findings.extend(verify(&evidence, &keys));
    if !keys.is_empty() {
        findings.push(Finding {
            check: "keys held by the verifier".into(),
            ok: true,
            detail: keys
                .iter()
                .map(|k| k.id().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    Ok((evidence, findings))
}

/// Whether every finding holds.
pub fn all_ok(findings: &[Finding]) -> bool {
    findings.iter().all(|f| f.ok)
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A two-column table of an object's scalar fields.
fn fields(out: &mut String, v: &Value) {
    out.push_str("<table>");
    if let Some(obj) = v.as_object() {
        for (k, val) in obj {
            if val.is_object() || val.is_array() {
                continue;
            }
            let _ = write!(
                out,
                "<tr><th>{}</th><td><code>{}</code></td></tr>",
                escape(k),
                escape(&text(val))
            );
        }
    }
    out.push_str("</table>");
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2rem;max-width:75rem;color:#1f2328}
table{border-collapse:collapse;margin:.5rem 0 1.5rem}th,td{border:1px solid #d0d7de;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#f6f8fa}code,pre{font-family:ui-monospace,monospace;font-size:.8rem}pre{margin:0;white-space:pre-wrap;word-break:break-all}
td code{word-break:break-all}.ok{color:#1a7f37}.bad{color:#cf222e;font-weight:bold}tr.relevant td{background:#fff8c5}";

/// The readable report of a bundle; deterministic, so verification can
/// re-render it and compare.
pub fn render_html(e: &Evidence, findings: &[Finding]) -> String {
    let mut o = String::new();
    let title = format!("Evidence: {} v{}", e.model, e.version);
    let _ = write!(
        o,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head><body><h1>{}</h1>",
        escape(&title),
        escape(&title)
    );
    let _ = write!(
        o,
        "<p>Artifact <code>sha256:{}</code>. Assembled {} for {}. Format {}.</p>",
        escape(&e.model_sha256),
        escape(&e.generated_at),
        escape(&e.generated_by),
        escape(&e.format)
    );
    o.push_str("<h2>Verification at export</h2><table><tr><th>check</th><th>result</th><th>detail</th></tr>");
    for f in findings {
        let _ = write!(
            o,
            "<tr><td>{}</td><td class=\"{}\">{}</td><td>{}</td></tr>",
            escape(&f.check),
            if f.ok { "ok" } else { "bad" },
            if f.ok { "ok" } else { "FAILED" },
            escape(&f.detail)
        );
    }
    o.push_str("</table><p>Run <code>modelbus evidence verify DIR --trusted-key FILE.pub</code> to check again offline with keys you hold.</p>");

    o.push_str("<h2>Version</h2>");
    fields(&mut o, &e.version_record);
    o.push_str("<h3>Lineage</h3>");
    fields(&mut o, &e.version_record["lineage"]);
    o.push_str("<h3>Holdout metrics</h3>");
    fields(&mut o, &e.version_record["metrics"]);

    o.push_str("<h2>Validation of the batch</h2>");
    if e.validation.is_null() {
        o.push_str("<p>No validation report is stored.</p>");
    } else {
        fields(&mut o, &e.validation);
        o.push_str("<table><tr><th>expectation</th><th>column</th><th>severity</th><th>success</th><th>unexpected</th></tr>");
        for r in e.validation["results"].as_array().into_iter().flatten() {
            let _ = write!(
                o,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td></tr>",
                escape(&text(&r["expectation"])),
                escape(&text(&r["kwargs"]["column"])),
                escape(&text(&r["severity"])),
                if r["success"] == true { "ok" } else { "bad" },
                escape(&text(&r["success"])),
                escape(&text(&r["result"]["unexpected_count"]))
            );
        }
        o.push_str("</table>");
    }
    o.push_str("<h2>Training run</h2>");
    fields(&mut o, &e.training_run);
    fields(&mut o, &e.training_run["params"]);

    o.push_str("<h2>Evaluation and gates</h2>");
    if !e.evaluation.is_null() {
        fields(&mut o, &e.evaluation);
        fields(&mut o, &e.evaluation["evaluation"]);
        if !e.evaluation["comparison"].is_null() {
            o.push_str("<h3>Against the champion</h3>");
            fields(&mut o, &e.evaluation["comparison"]);
        }
    }
    o.push_str("<table><tr><th>gate</th><th>passed</th><th>detail</th></tr>");
    for g in e.version_record["gate_checks"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let _ = write!(
            o,
            "<tr><td>{}</td><td class=\"{}\">{}</td><td>{}</td></tr>",
            escape(&text(&g["gate"])),
            if g["passed"] == true { "ok" } else { "bad" },
            escape(&text(&g["passed"])),
            escape(&text(&g["detail"]))
        );
    }
    o.push_str("</table><h3>Promotion policy</h3>");
    fields(&mut o, &e.version_record["decision"]);
    if !e.promotion.is_null() {
        o.push_str("<h3>Production promotion</h3>");
        fields(&mut o, &e.promotion);
        let _ = write!(
            o,
            "<p>Reasons: {}</p>",
            escape(&text(&e.promotion["reasons"]))
        );
    }

    o.push_str("<h2>Signed statements</h2><table><tr><th>kind</th><th>environment</th><th>signer</th><th>key</th><th>issued</th><th>expires</th><th>nonce</th><th>comment</th><th>recorded</th></tr>");
    for s in e.signed.iter().chain(e.automation.iter()) {
        let (issued, expires, nonce, comment) = match peek_statement(&s.envelope) {
            Ok((st, _)) => (
                st.predicate
                    .issued_at
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default(),
                st.predicate
                    .expires_at
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default(),
                st.predicate.nonce,
                st.predicate.comment,
            ),
            Err(err) => (err.to_string(), String::new(), String::new(), String::new()),
        };
        let _ = write!(
            o,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
            escape(&s.kind),
            escape(&s.environment),
            escape(&s.signer),
            escape(&s.key_id),
            escape(&issued),
            escape(&expires),
            escape(&nonce),
            escape(&comment),
            escape(&s.recorded_at)
        );
    }
    o.push_str("</table><h3>Public keys</h3><table><tr><th>id</th><th>role</th><th>key</th><th>added</th><th>revoked</th><th>PEM</th></tr>");
    for k in &e.keys {
        let _ = write!(
            o,
            "<tr><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td><pre>{}</pre></td></tr>",
            escape(&k.id),
            escape(&k.role),
            escape(&k.key_id),
            escape(&k.added_at),
            escape(&k.revoked_at),
            escape(&k.public_key)
        );
    }
    o.push_str("</table><h2>Deployments and rollbacks</h2><table><tr><th>at</th><th>environment</th><th>version</th><th>kind</th><th>detail</th></tr>");
    for d in &e.deployments {
        let _ = write!(
            o,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&text(&d["at"])),
            escape(&text(&d["environment"])),
            escape(&text(&d["version"])),
            escape(&text(&d["kind"])),
            escape(&text(&d["detail"]))
        );
    }
    let _ = write!(
        o,
        "</table><h2>Audit entries</h2><p>Entries {}..{} of the chain; head <code>{}</code>. Highlighted: about this version.</p>",
        e.audit.entries.first().map_or(0, |x| x.seq),
        e.audit.head.entries,
        escape(&e.audit.head.hash)
    );
    o.push_str("<table><tr><th>seq</th><th>at</th><th>actor</th><th>action</th><th>subject</th><th>detail</th><th>hash</th><th>previous</th></tr>");
    for a in &e.audit.entries {
        let _ = write!(
            o,
            "<tr{}><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><pre>{}</pre></td><td><code>{}</code></td><td><code>{}</code></td></tr>",
            if e.audit.relevant.contains(&a.seq) {
                " class=\"relevant\""
            } else {
                ""
            },
            a.seq,
            escape(&a.at),
            escape(&a.actor),
            escape(&a.action),
            escape(&a.subject),
            escape(&a.detail.to_string()),
            escape(&a.hash),
            escape(&a.prev_hash)
        );
    }
    o.push_str("</table></body></html>\n");
    o
}

/// Prints findings, one line each.
pub fn print_findings(findings: &[Finding]) {
    for f in findings {
        println!(
            "{:6} {}: {}",
            if f.ok { "ok" } else { "FAILED" },
            f.check,
            f.detail
        );
    }
}
