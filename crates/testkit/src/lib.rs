//! Test harness shared by the integration tests: a real `nats-server` (the pinned
//! one `scripts/bootstrap.sh` installs) on a free port with a temporary store per
//! test, and a fresh PostgreSQL database per test. Nothing here is a mock.
#![forbid(unsafe_code)]

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
