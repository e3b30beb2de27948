//! `modelbus bench pipeline`: submit → staging-serving latency of the whole
//! pipeline, measured over several runs on an embedded platform with its own
//! state dir and nats-server, with the per-stage breakdown and peak RSS.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use modelbus_core::config::Config;

use crate::client::Client;
use crate::platform::{self, Service};

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn parse_ts(s: &str) -> Option<f64> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    Some(t.unix_timestamp_nanos() as f64 / 1e9)
}

/// Peak resident set size of this process in MiB (Linux `VmHWM`).
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Runs the benchmark and prints its figures.
pub async fn pipeline(mut config: Config, runs: usize, data: &Path, spec: &Path) -> Result<()> {
    if runs == 0 {
        bail!("--runs must be at least 1");
    }
    let dir = tempfile::tempdir()?;
    config.general.state_dir = dir.path().to_path_buf();
    for a in [
        &mut config.registry.http_addr,
        &mut config.registry.grpc_addr,
        &mut config.ingest.http_addr,
        &mut config.features.ops_addr,
        &mut config.trainer.ops_addr,
        &mut config.deployer.ops_addr,
        &mut config.serving.staging_addr,
        &mut config.serving.production_addr,
    ] {
        a.set_port(0);
    }
    let p = platform::start(config, &Service::ALL).await?;
    p.wait_ready(Duration::from_secs(60)).await?;
    let c = p.config.clone();
    let client = Client::new(&c.registry_http_url(), &c.ingest_url());
    client.apply_spec(spec).await?;
    let spec_name = modelbus_ml::spec::DatasetSpec::parse(
        &std::fs::read_to_string(spec)?,
        &spec.display().to_string(),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?
    .spec;
    let text =
        std::fs::read_to_string(data).with_context(|| format!("cannot read {}", data.display()))?;
    let lines: Vec<&str> = text.lines().collect();
    let http = reqwest::Client::new();
    let mut totals = Vec::new();
    let mut stages: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    let mut auc = Vec::new();
    for i in 0..runs {
        // A distinct batch per run (one data row left out), so nothing is de-duplicated.
        let drop = 1 + (i % (lines.len() - 1));
        let body: String = lines
            .iter()
            .enumerate()
            .filter(|(k, _)| *k != drop)
            .map(|(_, l)| *l)
            .collect::<Vec<_>>()
            .join("\n");
        let file = dir.path().join(format!("batch-{i}.csv"));
        std::fs::write(&file, body)?;
        let started = Instant::now();
        let resp = client.submit(&spec_name.name, &file).await?;
        let id = resp["pipeline_run"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let run = client.wait_run(&id, Duration::from_secs(600)).await?;
        if run["state"] != "deployed" {
            bail!("run {id} ended {}: {}", run["state"], run["reasons"]);
        }
        // Serving answers with the new version.
        let model = run["model"].as_str().unwrap_or_default().to_string();
        let version = run["model_version"].as_u64().unwrap_or(0);
        loop {
            let r = http
                .get(format!(
                    "http://{}/v1/models/{model}",
                    c.serving.staging_addr
                ))
                .send()
                .await?;
            if r.status().is_success() {
                let v: serde_json::Value = r.json().await?;
                if v["model_version"].as_u64() == Some(version) {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        totals.push(started.elapsed().as_secs_f64());
        for s in run["stages"].as_array().into_iter().flatten() {
            if let (Some(a), Some(b)) = (
                parse_ts(s["started_at"].as_str().unwrap_or("")),
                parse_ts(s["finished_at"].as_str().unwrap_or("")),
            ) {
                stages
                    .entry(s["name"].as_str().unwrap_or("").to_string())
                    .or_default()
                    .push(b - a);
            }
        }
        let mv = client.model_version(&model, version).await?;
        if let Some(a) = mv["metrics"]["roc_auc"].as_f64() {
            auc.push(a);
        }
        println!(
            "run {}: {:.3}s ({} v{version})",
            i + 1,
            totals.last().copied().unwrap_or(0.0),
            model
        );
    }
    println!(
        "submit → staging serving, median of {runs}: {:.3}s",
        median(totals.clone())
    );
    for (name, v) in &stages {
        println!("  stage {name:<11} median {:.3}s", median(v.clone()));
    }
    println!("holdout ROC AUC, median: {:.4}", median(auc));
    if let Some(rss) = peak_rss_mib() {
        println!("peak RSS of the platform process: {rss:.0} MiB");
    }
    p.stop().await?;
    Ok(())
}

/// Writes `rows` Telco-shaped rows sampled (with replacement, seeded) from the
/// Telco file: unique customer ids, monthly charges jittered by up to ±3,
/// total charges recomputed from tenure, everything else as sampled. The same
/// seed gives the same bytes.
pub fn generate(telco: &Path, rows: usize, seed: u64, out: &Path) -> Result<u64> {
    use rand::{Rng, SeedableRng};
    use std::io::Write;
    let text = std::fs::read_to_string(telco)
        .with_context(|| format!("cannot read {}", telco.display()))?;
    let mut lines = text.lines();
    let header = lines.next().context("empty Telco file")?.to_string();
    let cols: Vec<&str> = header.split(',').collect();
    let idx = |name: &str| {
        cols.iter()
            .position(|c| *c == name)
            .with_context(|| format!("no column {name}"))
    };
    let (id, tenure, monthly, total) = (
        idx("customerID")?,
        idx("tenure")?,
        idx("MonthlyCharges")?,
        idx("TotalCharges")?,
    );
    let source: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    if source.is_empty() {
        bail!("no data rows in {}", telco.display());
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut w = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(out)?);
    writeln!(w, "{header}")?;
    let mut line = String::with_capacity(256);
    for i in 0..rows {
        let r = &source[rng.random_range(0..source.len())];
        let t: f64 = r[tenure].parse().unwrap_or(0.0);
        let m: f64 = (r[monthly].parse::<f64>().unwrap_or(50.0) + rng.random_range(-3.0..3.0))
            .clamp(18.0, 120.0);
        line.clear();
        for (j, field) in r.iter().enumerate() {
            if j > 0 {
                line.push(',');
            }
            if j == id {
                let suffix = field.split('-').nth(1).unwrap_or("GEN");
                line.push_str(&format!("{i:07}-{suffix}"));
            } else if j == monthly {
                line.push_str(&format!("{m:.2}"));
            } else if j == total {
                if t == 0.0 {
                    line.push(' ');
                } else {
                    let v = t * m * rng.random_range(0.95..1.05);
                    line.push_str(&format!("{v:.2}"));
                }
            } else {
                line.push_str(field);
            }
        }
        line.push('\n');
        w.write_all(line.as_bytes())?;
    }
    w.flush()?;
    Ok(std::fs::metadata(out)?.len())
}

/// Resets the kernel's peak-RSS counter of this process (Linux: `clear_refs` 5),
/// so the next [`peak_rss_mib`] measures from now.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}
