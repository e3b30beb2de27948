//! Bad input is refused with a reason naming what is wrong, `submit --wait` exits
//! 3, and the services and the served model are untouched.

use std::io::Write;
use std::path::Path;

use crate::harness::{Db, TestPlatform, cli, modelbus_bin};
use modelbus_core::ids::Sha256Digest;
use modelbus_testkit::{repo_root, telco_csv};
use serde_json::Value;

fn telco_lines() -> Vec<String> {
    std::fs::read_to_string(telco_csv())
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn set_field(line: &str, idx: usize, value: &str) -> String {
    let mut f: Vec<&str> = line.split(',').collect();
    f[idx] = value;
    f.join(",")
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Submits through the real CLI and checks: exit 3, state rejected, a reason
/// containing every `expect` fragment.
fn rejected(t: &TestPlatform, file: &Path, expect: &[&str]) -> Value {
    let (code, out, err) = cli(
        t,
        &[
            "submit",
            "--dataset",
            "telco-churn",
            file.to_str().unwrap(),
            "--wait",
            "--json",
        ],
    );
    assert_eq!(
        code,
        3,
        "{}: expected exit 3\nstdout {out}\nstderr {err}",
        file.display()
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["state"], "rejected", "{v:#}");
    let reasons = v["reasons"].to_string();
    for e in expect {
        assert!(
            reasons.contains(e),
            "{}: reasons {reasons} lack {e:?}",
            file.display()
        );
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_batches_are_rejected_with_reasons_and_change_nothing() {
    let t = TestPlatform::start(Db::Sqlite).await;
    t.deploy_telco().await;
    let before = t.predict_sample().await;
    let dir = t.dir.path();
    let lines = telco_lines();
    let header = lines[0].clone();

    rejected(&t, &write(dir, "empty.csv", b""), &["empty"]);
    rejected(
        &t,
        &write(dir, "header-only.csv", format!("{header}\r\n").as_bytes()),
        &["no data rows"],
    );

    // tenure is column 5.
    let drop_tenure: Vec<String> = lines
        .iter()
        .map(|l| {
            let mut f: Vec<&str> = l.split(',').collect();
            f.remove(5);
            f.join(",")
        })
        .collect();
    rejected(
        &t,
        &write(dir, "missing.csv", drop_tenure.join("\n").as_bytes()),
        &["missing column", "tenure"],
    );

    let extra: Vec<String> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| format!("{l},{}", if i == 0 { "Extra" } else { "1" }))
        .collect();
    rejected(
        &t,
        &write(dir, "extra.csv", extra.join("\n").as_bytes()),
        &["unexpected column", "Extra"],
    );

    let mut utf8 = lines.join("\n").into_bytes();
    // Corrupt a byte inside data row 3's customerID (file line 4).
    let pos = lines[..3].iter().map(|l| l.len() + 1).sum::<usize>() + 2;
    utf8[pos] = 0xFF;
    rejected(
        &t,
        &write(dir, "utf8.csv", &utf8),
        &["invalid UTF-8", "line 4", "customerID"],
    );

    let mut ragged = lines.clone();
    ragged[10] = ragged[10].rsplit_once(',').unwrap().0.to_string();
    rejected(
        &t,
        &write(dir, "ragged.csv", ragged.join("\n").as_bytes()),
        &["ragged row", "line 11", "20 fields", "21"],
    );

    let mut outside = lines.clone();
    outside[7] = set_field(&outside[7], 1, "Unknown");
    rejected(
        &t,
        &write(dir, "outside.csv", outside.join("\n").as_bytes()),
        &[
            "expect_column_values_to_be_in_set",
            "gender",
            "row 7",
            "Unknown",
        ],
    );

    let mut text = lines.clone();
    text[12] = set_field(&text[12], 5, "twelve");
    let v = rejected(
        &t,
        &write(dir, "text-in-number.csv", text.join("\n").as_bytes()),
        &[
            "expect_column_values_to_be_of_type",
            "tenure",
            "row 12",
            "twelve",
        ],
    );

    // Rejected batches stay in quarantine: the raw bytes are kept.
    let digest = Sha256Digest::parse(v["batch_sha256"].as_str().unwrap()).unwrap();
    let store =
        modelbus_core::artifact::ArtifactStore::open(&t.config.artifact_location()).unwrap();
    assert!(
        store.exists(&digest).await.unwrap(),
        "rejected batch must be kept"
    );

    // Nothing changed: still one version, still served, same answers, still ready.
    let model = t.client.model("telco-churn").await.unwrap();
    assert_eq!(model["versions"].as_array().unwrap().len(), 1);
    assert_eq!(model["aliases"]["staging"], 1);
    assert_eq!(
        crate::harness::answers(t.predict_sample().await),
        crate::harness::answers(before)
    );
    let ready = t
        .http
        .get(format!("{}/readyz", t.config.registry_http_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let runs = t.client.pipeline_runs(None, 50).await.unwrap();
    let rejected_runs = runs["pipeline_runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["state"] == "rejected")
        .count();
    assert_eq!(rejected_runs, 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spec_with_a_typo_is_refused_naming_file_line_and_key() {
    let t = TestPlatform::start(Db::Sqlite).await;
    let spec =
        std::fs::read_to_string(repo_root().join("config/datasets/telco-churn.toml")).unwrap();
    let typo = spec.replacen("nullable = true", "nulable = true", 1);
    let line = typo.lines().position(|l| l.starts_with("nulable")).unwrap() + 1;
    let file = t.dir.path().join("typo.toml");
    std::fs::write(&file, typo).unwrap();
    let (code, out, err) = cli(&t, &["datasets", "apply", file.to_str().unwrap()]);
    assert_eq!(code, 3, "stdout {out} stderr {err}");
    assert!(
        err.contains("typo.toml") && err.contains(&format!(":{line}:")) && err.contains("nulable"),
        "{err}"
    );
    // The registered spec is untouched.
    let ds = t.client.datasets().await.unwrap();
    assert_eq!(ds["datasets"][0]["latest_version"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_dataset_is_refused_before_anything_is_stored() {
    let t = TestPlatform::start(Db::Sqlite).await;
    let (code, _out, err) = cli(
        &t,
        &[
            "submit",
            "--dataset",
            "no-such-dataset",
            telco_csv().to_str().unwrap(),
            "--wait",
        ],
    );
    assert_eq!(code, 1);
    assert!(err.contains("no-such-dataset"), "{err}");
}

/// Writes a CSV of at least `bytes` bytes: the Telco rows repeated (so ids repeat).
fn big_file(path: &Path, bytes: u64) {
    let lines = telco_lines();
    let body = lines[1..].join("\n") + "\n";
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    writeln!(f, "{}", lines[0]).unwrap();
    let mut written = 0u64;
    while written < bytes {
        f.write_all(body.as_bytes()).unwrap();
        written += body.len() as u64;
    }
    f.flush().unwrap();
}

fn vm_hwm_mib(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = s
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    kb / 1024.0
}

/// A few hundred MB are streamed through upload and validation: the platform's
/// peak memory stays far below the file size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_few_hundred_mb_file_is_streamed_in_bounded_memory() {
    let nats = modelbus_testkit::TestNats::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.csv");
    big_file(&file, 300 * 1024 * 1024);
    let size = std::fs::metadata(&file).unwrap().len();
    let ports: Vec<u16> = (0..8)
        .map(|_| modelbus_core::nats_server::free_port().unwrap())
        .collect();
    let keys = [
        "REGISTRY__HTTP_ADDR",
        "REGISTRY__GRPC_ADDR",
        "INGEST__HTTP_ADDR",
        "FEATURES__OPS_ADDR",
        "TRAINER__OPS_ADDR",
        "DEPLOYER__OPS_ADDR",
        "SERVING__STAGING_ADDR",
        "SERVING__PRODUCTION_ADDR",
    ];
    let mut cmd = std::process::Command::new(modelbus_bin());
    cmd.args([
        "up",
        "--state-dir",
        dir.path().join("state").to_str().unwrap(),
    ])
    .current_dir(repo_root())
    .env("NATS_URL", nats.url())
    .env("MODELBUS_TELEMETRY__LOG_LEVEL", "warn")
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null());
    for (k, p) in keys.iter().zip(&ports) {
        cmd.env(format!("MODELBUS_{k}"), format!("127.0.0.1:{p}"));
    }
    let mut child = cmd.spawn().unwrap();
    let registry = format!("http://127.0.0.1:{}", ports[0]);
    let ingest = format!("http://127.0.0.1:{}", ports[2]);
    let mut ready = false;
    let token_file = dir.path().join("state").join("admin.token");
    for _ in 0..300 {
        let http = match std::fs::read_to_string(&token_file) {
            Ok(t) => crate::harness::authed_http(&t),
            Err(_) => modelbus_core::http::client().unwrap(),
        };
        if let Ok(r) = http.get(format!("{registry}/readyz")).send().await
            && r.status() == 200
            && http
                .get(format!("{registry}/v1/datasets/telco-churn"))
                .send()
                .await
                .map(|r| r.status() == 200)
                .unwrap_or(false)
        {
            ready = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(ready, "modelbus up did not become ready");
    let baseline = vm_hwm_mib(child.id());
    let out = tokio::task::block_in_place(|| {
        std::process::Command::new(modelbus_bin())
            .args([
                "submit",
                "--dataset",
                "telco-churn",
                file.to_str().unwrap(),
                "--wait",
                "--json",
            ])
            .env("MODELBUS_REGISTRY__HTTP_URL", &registry)
            .env("MODELBUS_INGEST__URL", &ingest)
            .env(
                "MODELBUS_TOKEN",
                std::fs::read_to_string(&token_file).unwrap().trim(),
            )
            .output()
            .unwrap()
    });
    let peak = vm_hwm_mib(child.id());
    let _ = child.kill();
    let _ = child.wait();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert!(
        v["reasons"]
            .to_string()
            .contains("expect_column_values_to_be_unique"),
        "{v:#}"
    );
    let file_mib = size as f64 / 1024.0 / 1024.0;
    println!(
        "file {file_mib:.0} MiB; modelbus up peak RSS {baseline:.0} MiB before, {peak:.0} MiB after"
    );
    assert!(
        peak < 200.0,
        "peak RSS {peak:.0} MiB for a {file_mib:.0} MiB file: not streamed"
    );
}

/// A model below its gates is rejected: exit 3, the failed gate named, the
/// version kept as rejected, nothing promoted or served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_failing_its_gates_is_rejected_and_not_deployed() {
    let t = TestPlatform::start(Db::Sqlite).await;
    let spec =
        std::fs::read_to_string(repo_root().join("config/datasets/telco-churn.toml")).unwrap();
    let strict = spec.replace("min_roc_auc = 0.80", "min_roc_auc = 0.99");
    let file = t.dir.path().join("strict.toml");
    std::fs::write(&file, strict).unwrap();
    let (code, out, err) = cli(&t, &["datasets", "apply", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{out} {err}");
    assert!(out.contains("version 2"), "{out}");
    let v = rejected(
        &t,
        &telco_csv(),
        &["gate min_roc_auc failed", "must be at least 0.99"],
    );
    assert_eq!(v["model"]["status"], "rejected");
    let model = t.client.model("telco-churn").await.unwrap();
    assert!(
        model["aliases"].as_object().unwrap().is_empty(),
        "{model:#}"
    );
    let gate = model["versions"][0]["gate_checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["gate"] == "min_roc_auc")
        .cloned()
        .unwrap();
    assert_eq!(gate["passed"], false);
    assert!(
        !model["versions"][0]["decision"]["policy_digest"]
            .as_str()
            .unwrap()
            .is_empty()
    );
    let r = t
        .http
        .get(format!("{}/v1/models/telco-churn", t.staging()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_too_large_for_the_features_stage_fails_its_run_before_the_work() {
    let t = TestPlatform::start_with(Db::Sqlite, |c| c.features.max_rows = 1_000).await;
    let run = t.submit_and_wait(&telco_csv()).await;
    assert_eq!(run["state"], "failed", "{run:#}");
    let reasons = run["reasons"].to_string();
    assert!(
        reasons.contains("7043 rows") && reasons.contains("features.max_rows"),
        "{reasons}"
    );
}
