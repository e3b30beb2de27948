//! Test harness shared by the integration tests: a real `nats-server` (the pinned
//! one `scripts/bootstrap.sh` installs) on a free port with a temporary store per
//! test, a fresh PostgreSQL database per test, an OTLP/gRPC trace receiver
//! ([`otlp::OtlpReceiver`]) and a real Prometheus Alertmanager
//! ([`TestAlertmanager`]). Nothing here is a mock.
#![forbid(unsafe_code)]

pub mod otlp;

use std::path::PathBuf;

use modelbus_core::nats_server::{EmbeddedNats, find_binary};

/// Root of the repository (for `.tools/`, `data/`, `config/`).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .and_then(|p| p.parent())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The shipped Telco churn file.
pub fn telco_csv() -> PathBuf {
    repo_root().join("data/telco-churn/telco_customer_churn.csv")
}

/// The shipped Telco dataset spec.
pub fn telco_spec() -> PathBuf {
    repo_root().join("config/datasets/telco-churn.toml")
}

/// A nats-server with JetStream for one test; killed and its store removed on drop.
pub struct TestNats {
    server: EmbeddedNats,
    _dir: tempfile::TempDir,
}

impl TestNats {
    /// Starts the pinned server. Panics with a clear message when it is missing:
    /// run `scripts/bootstrap.sh`.
    pub async fn start() -> Self {
        let pinned = repo_root().join(".tools/bin/nats-server");
        let binary = find_binary(pinned.exists().then_some(pinned.as_path()))
            .unwrap_or_else(|e| panic!("test harness: {e}"));
        let dir = tempfile::tempdir().expect("temporary NATS store");
        let server = EmbeddedNats::start(&binary, dir.path())
            .await
            .unwrap_or_else(|e| panic!("test harness: {e}"));
        Self { server, _dir: dir }
    }

    /// Client URL.
    pub fn url(&self) -> &str {
        self.server.url()
    }

    /// Kills the server.
    pub async fn kill(&mut self) {
        self.server.kill().await;
    }

    /// Starts the server again on the same port with the same store, so
    /// clients reconnect and JetStream keeps what it held.
    pub async fn restart(&mut self) {
        self.server.kill().await;
        let pinned = repo_root().join(".tools/bin/nats-server");
        let binary = find_binary(pinned.exists().then_some(pinned.as_path()))
            .unwrap_or_else(|e| panic!("test harness: {e}"));
        let port: u16 = self
            .server
            .url()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("the test server's URL ends with its port");
        self.server = EmbeddedNats::start_on(&binary, self._dir.path(), port)
            .await
            .unwrap_or_else(|e| panic!("test harness: restarting nats-server: {e}"));
    }
}

/// The Alertmanager binary: `MODELBUS_TEST_ALERTMANAGER`, else Debian's
/// `prometheus-alertmanager` (installed by `scripts/bootstrap.sh`), else
/// `alertmanager` on the PATH.
pub fn alertmanager_binary() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("MODELBUS_TEST_ALERTMANAGER") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    ["prometheus-alertmanager", "alertmanager"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |d| d.join(name)))
        .chain(std::iter::once(PathBuf::from(
            "/usr/bin/prometheus-alertmanager",
        )))
        .find(|p| p.is_file())
}

/// A real Prometheus Alertmanager for one test, on a free loopback port, with
/// clustering off, a temporary store, and a route sending every alert at once
/// (`group_wait: 0s`, one group per label set) to one webhook receiver; killed
/// and its store removed on drop.
pub struct TestAlertmanager {
    url: String,
    _child: tokio::process::Child,
    _dir: tempfile::TempDir,
}

impl TestAlertmanager {
    /// Starts Alertmanager routing to `webhook_url` and waits until it is
    /// ready. Panics with a clear message when the binary is missing: run
    /// `scripts/bootstrap.sh`.
    pub async fn start(webhook_url: &str) -> Self {
        let binary = alertmanager_binary().unwrap_or_else(|| {
            panic!(
                "test harness: prometheus-alertmanager not found; run scripts/bootstrap.sh \
                 (apt-get install prometheus-alertmanager) or set MODELBUS_TEST_ALERTMANAGER"
            )
        });
        let dir = tempfile::tempdir().expect("temporary Alertmanager dir");
        let config = dir.path().join("alertmanager.yml");
        std::fs::write(
            &config,
            format!(
                "route:\n  receiver: test\n  group_by: ['...']\n  group_wait: 0s\n  \
                 group_interval: 1s\n  repeat_interval: 1h\n\
                 receivers:\n  - name: test\n    webhook_configs:\n      - url: '{webhook_url}'\n        \
                 send_resolved: false\n"
            ),
        )
        .expect("write alertmanager.yml");
        let port = modelbus_core::nats_server::free_port().expect("free port");
        let url = format!("http://127.0.0.1:{port}");
        let log = std::fs::File::create(dir.path().join("alertmanager.log")).expect("log file");
        let mut child = tokio::process::Command::new(&binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .arg("--log.level=warn")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("test harness: cannot start {}: {e}", binary.display()));
        let client = modelbus_core::http::client().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(dir.path().join("alertmanager.log"))
                    .unwrap_or_default();
                panic!("test harness: Alertmanager exited ({status}):\n{log}");
            }
            if let Ok(r) = client.get(format!("{url}/-/ready")).send().await
                && r.status().is_success()
            {
                break;
            }
            if std::time::Instant::now() > deadline {
                let log = std::fs::read_to_string(dir.path().join("alertmanager.log"))
                    .unwrap_or_default();
                panic!("test harness: Alertmanager not ready on {url} after 20 s:\n{log}");
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        Self {
            url,
            _child: child,
            _dir: dir,
        }
    }

    /// Base URL (`http://127.0.0.1:<port>`).
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// Base URL of the test PostgreSQL server (`MODELBUS_TEST_POSTGRES`, default the
/// local trust-auth server).
pub fn postgres_base_url() -> String {
    std::env::var("MODELBUS_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_string())
}

/// A fresh PostgreSQL database for one test; dropped when the value is dropped.
pub struct TestPostgres {
    url: String,
    name: String,
}

impl TestPostgres {
    /// Creates `modelbus_test_<uuid>`.
    pub async fn create() -> Self {
        use sqlx::Connection;
        let base = postgres_base_url();
        let name = format!("modelbus_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&format!("{base}/postgres"))
            .await
            .unwrap_or_else(|e| panic!("test harness: cannot reach PostgreSQL at {base}: {e}"));
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut conn)
            .await
            .expect("create test database");
        Self {
            url: format!("{base}/{name}"),
            name,
        }
    }

    /// Connection URL of the test database.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        let base = postgres_base_url();
        let name = self.name.clone();
        // Drop from a separate thread: Drop may run inside a runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(rt) = rt {
                rt.block_on(async move {
                    use sqlx::Connection;
                    if let Ok(mut conn) =
                        sqlx::PgConnection::connect(&format!("{base}/postgres")).await
                    {
                        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                        )))
                        .execute(&mut conn)
                        .await;
                    }
                });
            }
        })
        .join();
    }
}
