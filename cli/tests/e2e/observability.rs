//! The dashboards and alert rules read only metrics the services export: a
//! platform runs a batch, a rejected batch, predictions (normal and drifted)
//! with labels for some, a forged approval and a malformed signed statement,
//! then every service's `/metrics` is scraped and each metric name used in
//! `deploy/grafana/dashboards/*.json` and `deploy/prometheus/rules.yml` must be
//! among them; every expression must parse (`promtool check rules`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use modelbus_testkit::{repo_root, telco_csv};
use serde_json::Value;

use crate::harness::{Db, TestPlatform, telco_records};

/// Metrics the test does not wait for, each with its reason. Keep it short:
/// anything a test can cause belongs in the traffic below instead.
const NOT_DRIVEN: &[(&str, &str)] = &[
    // Prometheus's own per-target series, not a service's.
    ("up", "synthesised by Prometheus for every scrape target"),
    (
        "modelbus_monitor_performance_degraded_total",
        "a degraded-performance decision: labels showing the model clearly worse than its evaluation",
    ),
];

/// The metric names an expression reads (`modelbus_*`, and `up`): string
/// literals removed first, recording rules (`a:b:c`) left out.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut code = String::new();
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in expr.chars() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                    code.push(' ');
                }
            }
            None if c == '"' || c == '\'' || c == '`' => quote = Some(c),
            None => code.push(c),
        }
    }
    let mut out = BTreeSet::new();
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let chars: Vec<char> = code.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if is_ident(chars[i]) && (i == 0 || !is_ident(chars[i - 1])) {
            let start = i;
            while i < chars.len() && is_ident(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            // A function call or a label name (`by (x)`, `{x="..."}`) is not
            // a metric; every metric of ours is `modelbus_*`.
            if (word.starts_with("modelbus_") && !word.contains(':')) || word == "up" {
                out.insert(word);
            }
        } else {
            i += 1;
        }
    }
    out
}

/// Every PromQL expression of a dashboard (targets, annotations, query
/// variables), as `(where, expression)`.
fn dashboard_exprs(file: &Path) -> Vec<(String, String)> {
    let dash: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let name = file.file_name().unwrap().to_string_lossy().to_string();
    let mut out = Vec::new();
    let mut panels: Vec<&Value> = Vec::new();
    for p in dash["panels"].as_array().into_iter().flatten() {
        panels.push(p);
        panels.extend(p["panels"].as_array().into_iter().flatten());
    }
    for p in panels {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push((
                format!("{name}: panel {:?} {}", p["title"], t["refId"]),
                t["expr"].as_str().unwrap_or_default().to_string(),
            ));
        }
    }
    for a in dash["annotations"]["list"].as_array().into_iter().flatten() {
        if let Some(e) = a["expr"].as_str() {
            out.push((format!("{name}: annotation {:?}", a["name"]), e.to_string()));
        }
    }
    for v in dash["templating"]["list"].as_array().into_iter().flatten() {
        let q = v["query"]["query"].as_str().or(v["query"].as_str());
        if v["type"] == "query"
            && let Some(q) = q
        {
            let selector = q
                .strip_prefix("label_values(")
                .and_then(|r| r.rsplit_once(','))
                .map(|(sel, _)| sel.to_string())
                .unwrap_or_else(|| panic!("{name}: variable {}: {q}", v["name"]));
            out.push((format!("{name}: variable {}", v["name"]), selector));
        }
    }
    out
}

/// Every `expr:` of a Prometheus rules file (inline or a block scalar).
fn rule_exprs(file: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(file).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let indent = line.len() - line.trim_start().len();
        if let Some(rest) = line.trim_start().strip_prefix("expr:") {
            let rest = rest.trim();
            let expr = if rest.starts_with('|') || rest.starts_with('>') {
                let mut block = Vec::new();
                while i + 1 < lines.len() {
                    let next = lines[i + 1];
                    let next_indent = next.len() - next.trim_start().len();
                    if !next.trim().is_empty() && next_indent <= indent {
                        break;
                    }
                    block.push(next.trim());
                    i += 1;
                }
                block.join(" ")
            } else {
                rest.to_string()
            };
            out.push((format!("rules.yml line {}", i + 1), expr));
        }
        i += 1;
    }
    out
}

/// Metric families in Prometheus text, with their types (`untyped` when no
/// `# TYPE` line names them).
fn families(text: &str) -> BTreeMap<String, String> {
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            if let (Some(n), Some(t)) = (it.next(), it.next()) {
                types.insert(n.to_string(), t.to_string());
            }
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            samples.insert(line[..end].to_string());
        }
    }
    let mut out = BTreeMap::new();
    for s in samples {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .filter_map(|suffix| s.strip_suffix(suffix))
            .find(|f| {
                matches!(
                    types.get(*f).map(String::as_str),
                    Some("histogram" | "summary")
                )
            })
            .unwrap_or(&s)
            .to_string();
        let t = types
            .get(&family)
            .cloned()
            .unwrap_or_else(|| "untyped".into());
        out.insert(family, t);
    }
    out
}

/// Whether `name`, as an expression uses it, is exported: a family itself, or
/// a histogram's `_bucket`/`_sum`/`_count` (a summary's `_sum`/`_count`).
fn exported(name: &str, families: &BTreeMap<String, String>) -> bool {
    if families.contains_key(name) {
        return true;
    }
    let part_of = |suffix: &str, kinds: &[&str]| {
        name.strip_suffix(suffix)
            .and_then(|f| families.get(f))
            .is_some_and(|t| kinds.contains(&t.as_str()))
    };
    part_of("_bucket", &["histogram"])
        || part_of("_sum", &["histogram", "summary"])
        || part_of("_count", &["histogram", "summary"])
}

/// Grafana's variables replaced as Prometheus would receive them.
fn for_promtool(expr: &str) -> String {
    let mut out = String::new();
    let mut rest = expr;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        let (name, len) = if let Some(inner) = after.strip_prefix('{') {
            let end = inner.find('}').expect("closed ${...}");
            (inner[..end].split(':').next().unwrap(), end + 2)
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], end)
        };
        out.push_str(match name {
            "__rate_interval" => "5m",
            "__interval" => "1m",
            "__range" => "1d",
            _ => ".*",
        });
        rest = &after[len..];
    }
    out.push_str(rest);
    out
}

/// Fails naming the expressions promtool cannot parse.
fn promtool_parses(exprs: &[(String, String)], dir: &Path) {
    let mut rules = String::from("groups:\n  - name: dashboards-and-rules\n    rules:\n");
    for (i, (_, e)) in exprs.iter().enumerate() {
        let e = serde_json::to_string(&for_promtool(e)).unwrap();
        rules.push_str(&format!("      - record: expr:{i}\n        expr: {e}\n"));
    }
    let file = dir.join("exprs.yml");
    std::fs::write(&file, rules).unwrap();
    let out = std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .unwrap_or_else(|e| {
            panic!("promtool not found ({e}): scripts/validate-deploy.sh installs it")
        });
    assert!(
        out.status.success(),
        "promtool cannot parse some expressions:\n{}\n{}\n(expression N is record expr:N of {})",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        exprs
            .iter()
            .enumerate()
            .map(|(i, (w, _))| format!("{i}: {w}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn metric_names_are_read_from_expressions() {
    let e = r#"sum by (environment, le) (rate(modelbus_serving_request_seconds_bucket{status!="ok", x="modelbus_fake"}[5m])) / on (environment) modelbus:serving_requests:rate5m or up"#;
    assert_eq!(
        metric_names(e),
        ["modelbus_serving_request_seconds_bucket", "up"]
            .map(String::from)
            .into()
    );
    let f = families(
        "# TYPE a_seconds histogram\na_seconds_bucket{le=\"1\"} 1\na_seconds_sum 1\na_seconds_count 1\n# TYPE b_total counter\nb_total{x=\"y\"} 0\n",
    );
    // A histogram by its family name or its series; nothing else.
    assert!(exported("a_seconds_bucket", &f) && exported("a_seconds_count", &f));
    assert!(exported("a_seconds", &f) && exported("b_total", &f));
    assert!(!exported("b", &f) && !exported("b_total_bucket", &f) && !exported("a", &f));
    assert_eq!(
        for_promtool(r#"x{a=~"$env", b=~"${model:regex}"}[$__rate_interval]"#),
        r#"x{a=~".*", b=~".*"}[5m]"#
    );
}

/// A copy of the Telco file with one customer's gender outside its set: rejected.
fn rejected_batch(dir: &Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string(telco_csv()).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let mut f: Vec<&str> = lines[7].split(',').collect();
    f[1] = "Unknown";
    lines[7] = f.join(",");
    let p = dir.join("outside.csv");
    std::fs::write(&p, lines.join("\n")).unwrap();
    p
}

/// Every `/metrics` of the platform, each checked to answer: the registry's,
/// ingest's, the ops ports of features, trainer, deployer and monitor, and
/// both serving ports.
async fn scrape_all(t: &TestPlatform) -> BTreeMap<String, String> {
    let c = &t.config;
    let addrs = [
        ("registry", c.registry.http_addr),
        ("ingest", c.ingest.http_addr),
        ("features", c.features.ops_addr),
        ("trainer", c.trainer.ops_addr),
        ("deployer", c.deployer.ops_addr),
        ("monitor", c.monitor.ops_addr),
        ("serving staging", c.serving.staging_addr),
        ("serving production", c.serving.production_addr),
    ];
    let mut out = BTreeMap::new();
    for (name, addr) in addrs {
        let r = modelbus_core::http::client()
            .unwrap()
            .get(format!("http://{addr}/metrics"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{name} /metrics: {e}"));
        assert_eq!(r.status(), 200, "{name} /metrics");
        out.insert(name.to_string(), r.text().await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboards_and_alerts_use_is_exported() {
    let root = repo_root();
    let mut exprs = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(root.join("deploy/grafana/dashboards"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 3, "{files:?}");
    for f in &files {
        exprs.extend(dashboard_exprs(f));
    }
    exprs.extend(rule_exprs(&root.join("deploy/prometheus/rules.yml")));
    let mut used: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (w, e) in &exprs {
        for m in metric_names(e) {
            used.entry(m).or_default().push(w.clone());
        }
    }
    assert!(used.len() > 40, "{used:#?}");

    let t = TestPlatform::start_with(Db::Sqlite, |c| {
        c.serving.log_flush_interval = Duration::from_millis(50);
        c.monitor.window_rows = 200;
        c.monitor.min_rows = 50;
        c.monitor.window_duration = Duration::from_secs(600);
    })
    .await;
    promtool_parses(&exprs, t.dir.path());

    // A batch from upload to staging, and one ingest rejects.
    t.deploy_telco().await;
    let run = t.submit_and_wait(&rejected_batch(t.dir.path())).await;
    assert_eq!(run["state"], "rejected", "{run:#}");
    // Predictions: a window like the training rows, then a drifted one
    // (charges × 1.10 + 5, a third of the contracts two-year).
    let records = telco_records(400);
    t.predict(&records[..200]).await;
    let answered = t.predict(&crate::harness::shifted(&records[200..])).await;
    // Ground truth for the drifted window's predictions, joined by their ids.
    let churn = crate::harness::telco_truth(400);
    let mut labels = String::from("prediction_id,Churn\n");
    for (p, (_, y)) in answered["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .zip(&churn[200..])
    {
        labels.push_str(&format!("{},{y}\n", p["prediction_id"].as_str().unwrap()));
    }
    let r = t
        .http
        .post(format!(
            "{}/v1/datasets/telco-churn/labels",
            t.config.ingest_url()
        ))
        .body(labels)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    // A request refused as the client's mistake.
    let bad = t
        .http
        .post(format!("{}/v1/models/telco-churn:predict", t.staging()))
        .json(&serde_json::json!({ "instances": "not a list" }))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    // A forged approval on the bus (the deployer refuses it) and a malformed
    // signed statement (the registry refuses it).
    let nats = t.nats().await;
    nats.publish("modelbus.approval.granted", "not an approval".into())
        .await
        .unwrap();
    nats.flush().await.unwrap();
    let refused = t
        .http
        .post(format!("{}/v1/approvals", t.config.registry_http_url()))
        .json(&serde_json::json!({
            "payloadType": "application/vnd.in-toto+json",
            "payload": "bm90IGEgc3RhdGVtZW50",
            "signatures": [],
        }))
        .send()
        .await
        .unwrap();
    assert!(refused.status().is_client_error(), "{}", refused.status());

    // Windows close off the consumer, refusals on theirs: wait until every
    // name is there (or the deadline), then report what is missing.
    let not_driven: BTreeMap<&str, &str> = NOT_DRIVEN.iter().copied().collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let (missing, scraped) = loop {
        let scraped = scrape_all(&t).await;
        let mut all = BTreeMap::new();
        for text in scraped.values() {
            all.extend(families(text));
        }
        let missing: Vec<(&String, &Vec<String>)> = used
            .iter()
            .filter(|(m, _)| !not_driven.contains_key(m.as_str()) && !exported(m, &all))
            .collect();
        if missing.is_empty() || tokio::time::Instant::now() > deadline {
            break (
                missing
                    .into_iter()
                    .map(|(m, w)| format!("{m} (used by {})", w.join("; ")))
                    .collect::<Vec<_>>(),
                all,
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        missing.is_empty(),
        "metrics used by the dashboards or alert rules that no service exports:\n{}\n\nexported:\n{}",
        missing.join("\n"),
        scraped.keys().cloned().collect::<Vec<_>>().join("\n")
    );
    eprintln!(
        "{} metric names used, all exported but {:?}; {} families exported",
        used.len(),
        not_driven.keys().collect::<Vec<_>>(),
        scraped.len()
    );
    // The list of exceptions names only metrics the dashboards or rules use.
    for m in not_driven.keys() {
        assert!(
            used.contains_key(*m),
            "{m} is listed in NOT_DRIVEN but nothing uses it"
        );
    }
    // The figures the dashboards slice by are there: serving by version, the
    // monitor's drift per column, a rejected batch's failing expectation.
    let text = scrape_all(&t).await.remove("serving staging").unwrap();
    assert!(
        text.contains("modelbus_serving_predictions_total{environment=\"staging\",model=\"telco-churn\",version=\"1\"}"),
        "{text}"
    );
    assert!(
        crate::harness::series_value(
            &text,
            "modelbus_ingest_expectation_failures_total{dataset=\"telco-churn\",expectation=\"expect_column_values_to_be_in_set\",column=\"gender\",severity=\"error\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert!(
        text.contains("modelbus_monitor_drift_score{environment=\"staging\",model=\"telco-churn\",column=\"MonthlyCharges\"}"),
        "{text}"
    );
}
