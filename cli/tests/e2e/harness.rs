//! Starting a platform for one test and talking to it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use modelbus_cli::client::{AppliedSpec, Client};
use modelbus_cli::platform::{self, Platform, Service};
use modelbus_core::audit::AuditEntry;
use modelbus_core::config::{Config, DatabaseUrl};
use modelbus_testkit::{TestNats, TestPostgres, repo_root, telco_csv, telco_spec};
use serde_json::{Value, json};

/// The CLI's typed client answering in JSON, as the tests read it: each record
/// serialised back, which is the JSON the registry (or ingest) sent.
#[derive(Clone)]
pub struct JsonClient(pub Client);

fn to_json(record: impl serde::Serialize) -> Value {
    serde_json::to_value(record).expect("records serialise")
}

impl JsonClient {
    /// A client for the given base URLs, sending `token` as its bearer token.
    pub fn new(registry: &str, ingest: &str, token: Option<&str>) -> Self {
        Self(Client::new(registry, ingest, token))
    }

    pub async fn get_json(&self, path: &str) -> anyhow::Result<Value> {
        self.0.get_json(path).await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.0.post_json(path, body).await
    }

    pub async fn apply_spec(&self, file: &Path) -> anyhow::Result<AppliedSpec> {
        self.0.apply_spec(file).await
    }

    pub async fn audit_all(&self) -> anyhow::Result<Vec<AuditEntry>> {
        self.0.audit_all().await
    }

    pub async fn datasets(&self) -> anyhow::Result<Value> {
        Ok(json!({ "datasets": self.0.datasets().await? }))
    }

    pub async fn pipeline_runs(&self, dataset: Option<&str>, limit: u32) -> anyhow::Result<Value> {
        Ok(json!({ "pipeline_runs": self.0.pipeline_runs(dataset, limit).await? }))
    }

    pub async fn pipeline_run(&self, id: &str) -> anyhow::Result<Value> {
        Ok(to_json(self.0.pipeline_run(id).await?))
    }

    pub async fn run(&self, id: &str) -> anyhow::Result<Value> {
        Ok(to_json(self.0.run(id).await?))
    }

    pub async fn model(&self, name: &str) -> anyhow::Result<Value> {
        Ok(to_json(self.0.model(name).await?))
    }

    pub async fn model_version(&self, name: &str, version: u64) -> anyhow::Result<Value> {
        Ok(to_json(self.0.model_version(name, version).await?))
    }

    pub async fn submit(&self, dataset: &str, file: &Path) -> anyhow::Result<Value> {
        Ok(to_json(self.0.submit(dataset, file).await?))
    }

    pub async fn wait_run(&self, id: &str, timeout: Duration) -> anyhow::Result<Value> {
        Ok(to_json(self.0.wait_run(id, timeout).await?))
    }
}

/// Which registry database a test uses.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// A platform running in this process for one test.
pub struct TestPlatform {
    pub nats: TestNats,
    pub dir: tempfile::TempDir,
    /// Kept alive for the test; dropping it stops every service.
    _platform: Platform,
    pub client: JsonClient,
    pub config: std::sync::Arc<Config>,
    /// Sends the admin token with every request.
    pub http: reqwest::Client,
    /// The first admin token the registry wrote.
    pub admin_token: String,
    _pg: Option<TestPostgres>,
}

/// A reqwest client that sends `token` as its bearer token.
pub fn authed_http(token: &str) -> reqwest::Client {
    let mut h = reqwest::header::HeaderMap::new();
    h.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {}", token.trim()).parse().unwrap(),
    );
    modelbus_core::http::client_builder()
        .default_headers(h)
        .build()
        .unwrap()
}

/// Configuration for tests: every port 0, short redelivery delays.
pub fn test_config(state_dir: &Path, nats_url: &str) -> Config {
    let mut c = Config::default();
    c.general.state_dir = state_dir.to_path_buf();
    c.nats.url = Some(nats_url.to_string());
    c.bus.ack_wait = Duration::from_secs(3);
    c.bus.backoff = vec![Duration::from_millis(200), Duration::from_millis(400)];
    c.bus.max_deliver = 3;
    for l in platform::SERVICES.iter().flat_map(|s| s.listeners) {
        (l.addr)(&mut c).set_port(0);
    }
    c
}

impl TestPlatform {
    /// Starts every service against a fresh nats-server and database.
    pub async fn start(db: Db) -> Self {
        Self::start_with(db, |_| {}).await
    }

    /// Same, letting the test adjust the configuration.
    pub async fn start_with(db: Db, adjust: impl FnOnce(&mut Config)) -> Self {
        Self::start_services(db, adjust, &Service::ALL).await
    }

    /// Starts only `services` (a test may run the others itself, to stop and
    /// restart them).
    pub async fn start_services(
        db: Db,
        adjust: impl FnOnce(&mut Config),
        services: &[Service],
    ) -> Self {
        let nats = TestNats::start().await;
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(dir.path(), nats.url());
        let pg = match db {
            Db::Sqlite => None,
            Db::Postgres => {
                let pg = TestPostgres::create().await;
                config.database.url = Some(DatabaseUrl::new(pg.url()));
                Some(pg)
            }
        };
        adjust(&mut config);
        let platform = platform::start(config, services)
            .await
            .expect("platform starts");
        platform
            .wait_ready(Duration::from_secs(30))
            .await
            .expect("platform ready");
        let config = platform.config.clone();
        let admin = std::fs::read_to_string(config.admin_token_path())
            .expect("the registry writes the first admin token");
        let client = JsonClient::new(
            &config.registry_http_url(),
            &config.ingest_url(),
            Some(&admin),
        );
        client
            .apply_spec(&telco_spec())
            .await
            .expect("apply the Telco spec");
        Self {
            nats,
            dir,
            _platform: platform,
            client,
            config,
            http: authed_http(&admin),
            admin_token: admin.trim().to_string(),
            _pg: pg,
        }
    }

    /// Staging serving base URL.
    pub fn staging(&self) -> String {
        format!("http://{}", self.config.serving.staging_addr)
    }

    /// Submits a file and waits for its run to end.
    pub async fn submit_and_wait(&self, file: &Path) -> Value {
        let resp = self
            .client
            .submit("telco-churn", file)
            .await
            .expect("submit");
        let id = resp["pipeline_run"].as_str().expect("run id").to_string();
        self.client
            .wait_run(&id, Duration::from_secs(120))
            .await
            .expect("run ends")
    }

    /// Deploys the Telco model and returns the run.
    pub async fn deploy_telco(&self) -> Value {
        let run = self.submit_and_wait(&telco_csv()).await;
        assert_eq!(run["state"], "deployed", "{run:#}");
        self.wait_serving("telco-churn", run["model_version"].as_u64().unwrap())
            .await;
        run
    }

    /// Waits until staging serves `version` of `model`.
    pub async fn wait_serving(&self, model: &str, version: u64) {
        for _ in 0..400 {
            if let Ok(r) = self
                .http
                .get(format!("{}/v1/models/{model}", self.staging()))
                .send()
                .await
                && r.status().is_success()
            {
                let v: Value = r.json().await.unwrap();
                if v["model_version"].as_u64() == Some(version) {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("staging never served {model} v{version}");
    }

    /// Predictions for the first rows of the Telco file (without the target).
    pub async fn predict_sample(&self) -> Value {
        self.predict(&telco_records(5)).await
    }

    /// Staging's v1 answer for `records`, which must succeed.
    pub async fn predict(&self, records: &[Value]) -> Value {
        let r = self
            .http
            .post(format!("{}/v1/models/telco-churn:predict", self.staging()))
            .json(&serde_json::json!({ "instances": records }))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
        r.json().await.unwrap()
    }

    /// The bus as a client.
    pub async fn nats(&self) -> async_nats::Client {
        async_nats::connect(self.nats.url()).await.unwrap()
    }

    /// Prometheus text of this process.
    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.config.registry_http_url()))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Whether the metrics come to contain `line` within about five seconds.
    pub async fn metric_appears(&self, line: &str) -> bool {
        for _ in 0..100 {
            if self.metrics().await.contains(line) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }
}

/// A v1 prediction response without its prediction ids (new on every
/// request), for comparing answers.
pub fn answers(mut v: Value) -> Value {
    if let Some(preds) = v["predictions"].as_array_mut() {
        for p in preds {
            if let Some(o) = p.as_object_mut() {
                o.remove("prediction_id");
            }
        }
    }
    v
}

/// Records as Open Inference Protocol v2 input tensors, one per column.
pub fn oip_inputs(records: &[Value]) -> Vec<Value> {
    let columns: Vec<String> = records[0].as_object().unwrap().keys().cloned().collect();
    columns
        .iter()
        .map(|c| {
            let data: Vec<Value> = records.iter().map(|r| r[c].clone()).collect();
            serde_json::json!({ "name": c, "shape": [records.len()], "datatype": "BYTES", "data": data })
        })
        .collect()
}

/// The first `n` Telco rows as JSON records, without the target.
pub fn telco_records(n: usize) -> Vec<Value> {
    let text = std::fs::read_to_string(telco_csv()).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    lines
        .take(n)
        .map(|l| {
            let mut m = serde_json::Map::new();
            for (h, v) in header.iter().zip(l.split(',')) {
                if *h != "Churn" {
                    m.insert(h.to_string(), Value::String(v.to_string()));
                }
            }
            Value::Object(m)
        })
        .collect()
}

/// Telco records with monthly charges × 1.10 + 5 and a third of the
/// contracts switched to two years.
pub fn shifted(records: &[Value]) -> Vec<Value> {
    records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut r = r.clone();
            let m: f64 = r["MonthlyCharges"].as_str().unwrap().parse().unwrap();
            r["MonthlyCharges"] = Value::String(format!("{:.2}", m * 1.10 + 5.0));
            if i % 3 == 0 {
                r["Contract"] = Value::String("Two year".into());
            }
            r
        })
        .collect()
}

/// The target of the first `n` Telco rows, with their customer ids.
pub fn telco_truth(n: usize) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(telco_csv()).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let id = header.iter().position(|h| *h == "customerID").unwrap();
    let churn = header.iter().position(|h| *h == "Churn").unwrap();
    lines
        .take(n)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[id].to_string(), f[churn].to_string())
        })
        .collect()
}

/// Path of the modelbus binary built for these tests.
pub fn modelbus_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_modelbus"))
}

/// Runs `modelbus <args>` as a client of `platform`, returning (exit code, stdout, stderr).
/// The call blocks this worker thread only (`block_in_place`): the platform keeps
/// running on the others.
pub fn cli(platform: &TestPlatform, args: &[&str]) -> (i32, String, String) {
    tokio::task::block_in_place(|| cli_blocking(platform, args))
}

fn cli_blocking(platform: &TestPlatform, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(modelbus_bin())
        .args(args)
        .current_dir(repo_root())
        .env(
            "MODELBUS_REGISTRY__HTTP_URL",
            platform.config.registry_http_url(),
        )
        .env("MODELBUS_INGEST__URL", platform.config.ingest_url())
        .env("MODELBUS_TOKEN", &platform.admin_token)
        .output()
        .expect("run modelbus");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `modelbus up` as a real process (its own embedded nats-server, or `nats`),
/// with its listeners on fixed ports (from [`ports`]) and its log in a file.
pub struct Up {
    child: std::process::Child,
    state: PathBuf,
    ports: Vec<u16>,
}

/// The environment variable of every listener `modelbus up` binds, from the
/// services table.
fn keys() -> Vec<String> {
    platform::SERVICES
        .iter()
        .flat_map(|s| s.listeners)
        .map(|l| l.env_var())
        .collect()
}

/// A free port for every listener of `modelbus up`, in the services table's order.
pub fn ports() -> Vec<u16> {
    (0..keys().len())
        .map(|_| modelbus_core::nats_server::free_port().unwrap())
        .collect()
}

impl Up {
    /// Starts `modelbus up` on `state` with the specs of `datasets`.
    pub fn start(
        state: &Path,
        ports: &[u16],
        nats: Option<&str>,
        datasets: &Path,
        log: &Path,
    ) -> Up {
        Self::start_with_env(state, ports, nats, datasets, log, &[])
    }

    /// Same, with more environment variables (configuration keys).
    pub fn start_with_env(
        state: &Path,
        ports: &[u16],
        nats: Option<&str>,
        datasets: &Path,
        log: &Path,
        env: &[(&str, &str)],
    ) -> Up {
        use std::process::{Command, Stdio};
        let mut cmd = Command::new(modelbus_bin());
        cmd.args([
            "up",
            "--state-dir",
            state.to_str().unwrap(),
            "--datasets-dir",
            datasets.to_str().unwrap(),
        ])
        .current_dir(repo_root())
        .env("MODELBUS_BUS__ACK_WAIT", "2s")
        .env("MODELBUS_TELEMETRY__LOG_LEVEL", "info")
        .env_remove("NATS_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .unwrap(),
        );
        if let Some(url) = nats {
            cmd.env("NATS_URL", url);
        }
        for (k, p) in keys().iter().zip(ports) {
            cmd.env(k, format!("127.0.0.1:{p}"));
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        Up {
            child: cmd.spawn().unwrap(),
            state: state.to_path_buf(),
            ports: ports.to_vec(),
        }
    }

    pub fn registry(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports[0])
    }

    pub fn ingest(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports[2])
    }

    pub fn staging(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports[6])
    }

    /// Waits until the registry is ready and has the Telco spec.
    pub async fn ready(&mut self, log: &Path) {
        for _ in 0..600 {
            let http = match std::fs::read_to_string(self.state.join("admin.token")) {
                Ok(t) => authed_http(&t),
                Err(_) => modelbus_core::http::client().unwrap(),
            };
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "modelbus up exited with {status}:\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            if let Ok(r) = http.get(format!("{}/readyz", self.registry())).send().await
                && r.status() == 200
                && http
                    .get(format!("{}/v1/datasets/telco-churn", self.registry()))
                    .send()
                    .await
                    .map(|r| r.status() == 200)
                    .unwrap_or(false)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "modelbus up not ready:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }

    /// A client with the admin token the registry wrote.
    pub fn client(&self) -> JsonClient {
        let token = std::fs::read_to_string(self.state.join("admin.token")).ok();
        JsonClient::new(&self.registry(), &self.ingest(), token.as_deref())
    }

    /// SIGTERM, and waits (at most 10 s) for the process to stop.
    pub fn terminate(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..200 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        panic!("modelbus up did not stop on SIGTERM within 10s");
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Up {
    /// A failing test must not leave a `modelbus up` behind.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The value of one series in a Prometheus scrape, if it is there. Counters
/// are process-wide: under `cargo test` every e2e test shares one recorder,
/// so a test asserts what it caused as "at least", never an exact count.
pub fn series_value(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}
