//! The CLI's HTTP client for the registry and ingest APIs.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

/// Talks to the registry (and ingest) over HTTP.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    registry: String,
    ingest: String,
}

/// An error answer from an API, with its HTTP status.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status code.
    pub status: u16,
    /// What the API said.
    pub message: String,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (HTTP {})", self.message, self.status)
    }
}

impl std::error::Error for ApiError {}

impl ApiError {
    /// Whether the request itself was refused as invalid (HTTP 400).
    pub fn is_invalid_input(e: &anyhow::Error) -> bool {
        e.chain().any(|c| {
            c.downcast_ref::<ApiError>()
                .is_some_and(|a| a.status == 400)
        })
    }
}

async fn json_or_error(resp: reqwest::Response, what: &str) -> Result<Value> {
    let status = resp.status();
    let body = resp
        .bytes()
        .await
        .with_context(|| format!("{what}: reading the response"))?;
    let v: Value = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    if status.is_success() {
        return Ok(v);
    }
    let msg = v["error"]["message"]
        .as_str()
        .or_else(|| v["error"].as_str())
        .map(str::to_string)
        .unwrap_or_else(|| v.to_string());
    Err(anyhow::Error::new(ApiError {
        status: status.as_u16(),
        message: msg,
    })
    .context(what.to_string()))
}

impl Client {
    /// A client for the given base URLs, sending `token` as its bearer token.
    pub fn new(registry: &str, ingest: &str, token: Option<&str>) -> Self {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(t) = token
            && let Ok(mut v) =
                reqwest::header::HeaderValue::from_str(&format!("Bearer {}", t.trim()))
        {
            v.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, v);
        }
        Self {
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .default_headers(headers)
                .build()
                .unwrap_or_default(),
            registry: registry.trim_end_matches('/').to_string(),
            ingest: ingest.trim_end_matches('/').to_string(),
        }
    }

    async fn send_get(&self, path: &str) -> Result<reqwest::Response> {
        let url = format!("{}{path}", self.registry);
        self.http.get(&url).send().await.with_context(|| {
            format!(
                "cannot reach the registry at {} (is `modelbus up` running?)",
                self.registry
            )
        })
    }

    async fn get(&self, path: &str) -> Result<Value> {
        let resp = self.send_get(path).await?;
        json_or_error(resp, &format!("GET {path}")).await
    }

    /// `GET` on the registry's API.
    pub async fn get_json(&self, path: &str) -> Result<Value> {
        self.get(path).await
    }

    /// `GET` on the registry's API, with the value of one response header.
    pub async fn get_json_and_header(
        &self,
        path: &str,
        header: &str,
    ) -> Result<(Value, Option<String>)> {
        let resp = self.send_get(path).await?;
        let value = resp
            .headers()
            .get(header)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        Ok((json_or_error(resp, &format!("GET {path}")).await?, value))
    }

    /// `POST` a JSON body to the registry's API.
    pub async fn post_json(&self, path: &str, body: &Value) -> Result<Value> {
        let resp = self
            .http
            .post(format!("{}{path}", self.registry))
            .json(body)
            .send()
            .await
            .with_context(|| {
                format!(
                    "cannot reach the registry at {} (is `modelbus up` running?)",
                    self.registry
                )
            })?;
        json_or_error(resp, &format!("POST {path}")).await
    }

    /// Every audit entry, following pages.
    pub async fn audit_all(&self) -> Result<Vec<modelbus_core::audit::AuditEntry>> {
        let mut out: Vec<modelbus_core::audit::AuditEntry> = Vec::new();
        loop {
            let after = out.last().map_or(0, |e| e.seq);
            let page = self.get(&format!("/v1/audit?after={after}")).await?;
            let entries: Vec<modelbus_core::audit::AuditEntry> =
                serde_json::from_value(page["entries"].clone())
                    .context("the registry sent audit entries of an unexpected shape")?;
            if entries.is_empty() {
                return Ok(out);
            }
            out.extend(entries);
        }
    }

    /// Registers a spec file.
    pub async fn apply_spec(&self, file: &Path) -> Result<Value> {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let resp = self
            .http
            .post(format!("{}/v1/datasets", self.registry))
            .header("x-modelbus-source", file.display().to_string())
            .body(text)
            .send()
            .await
            .with_context(|| format!("cannot reach the registry at {}", self.registry))?;
        json_or_error(resp, "apply spec").await
    }

    /// Every item of a list ordered by name, following its pages
    /// (`next_after`): `{key: [...]}`.
    async fn all_pages(&self, path: &str, key: &str) -> Result<Value> {
        let mut items: Vec<Value> = Vec::new();
        let mut after = String::new();
        loop {
            let page = self
                .get(&format!("{path}?after={}", urlencode(&after)))
                .await?;
            if let Some(a) = page[key].as_array() {
                items.extend(a.iter().cloned());
            }
            match page["next_after"].as_str() {
                Some(next) if !next.is_empty() && next != after => after = next.to_string(),
                _ => return Ok(serde_json::json!({ key: items })),
            }
        }
    }

    /// Datasets.
    pub async fn datasets(&self) -> Result<Value> {
        self.all_pages("/v1/datasets", "datasets").await
    }

    /// The latest spec version of a dataset.
    pub async fn dataset_spec(&self, dataset: &str) -> Result<Value> {
        self.get(&format!("/v1/datasets/{dataset}/spec")).await
    }

    /// Pipeline runs.
    pub async fn pipeline_runs(&self, dataset: Option<&str>, limit: u32) -> Result<Value> {
        let mut path = format!("/v1/pipeline-runs?limit={limit}");
        if let Some(d) = dataset {
            path.push_str(&format!("&dataset={d}"));
        }
        self.get(&path).await
    }

    /// One pipeline run.
    pub async fn pipeline_run(&self, id: &str) -> Result<Value> {
        self.get(&format!("/v1/pipeline-runs/{id}")).await
    }

    /// A training run.
    pub async fn run(&self, id: &str) -> Result<Value> {
        self.get(&format!("/v1/runs/{id}")).await
    }

    /// Models.
    pub async fn models(&self) -> Result<Value> {
        self.all_pages("/v1/models", "models").await
    }

    /// One model.
    pub async fn model(&self, name: &str) -> Result<Value> {
        self.get(&format!("/v1/models/{name}")).await
    }

    /// One version.
    pub async fn model_version(&self, name: &str, version: u64) -> Result<Value> {
        self.get(&format!("/v1/models/{name}/versions/{version}"))
            .await
    }

    /// Streams a CSV file to ingest.
    pub async fn submit(&self, dataset: &str, file: &Path) -> Result<Value> {
        let f = tokio::fs::File::open(file)
            .await
            .with_context(|| format!("cannot open {}", file.display()))?;
        let stream = tokio_util::io::ReaderStream::with_capacity(f, 1 << 20);
        let resp = self
            .http
            .post(format!("{}/v1/datasets/{dataset}/batches", self.ingest))
            .header("content-type", "text/csv")
            .body(reqwest::Body::wrap_stream(stream))
            .send()
            .await
            .with_context(|| {
                format!(
                    "cannot reach ingest at {} (is `modelbus up` running?)",
                    self.ingest
                )
            })?;
        json_or_error(resp, "submit").await
    }

    /// Polls a pipeline run until it ends or `timeout` passes.
    pub async fn wait_run(&self, id: &str, timeout: Duration) -> Result<Value> {
        let started = Instant::now();
        loop {
            let run = match self.pipeline_run(id).await {
                Ok(run) => run,
                // A run announced on the bus is created when its event is handled.
                Err(e)
                    if started.elapsed() < timeout
                        && e.chain().any(|c| {
                            c.downcast_ref::<ApiError>()
                                .is_some_and(|a| a.status == 404)
                        }) =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            if matches!(
                run["state"].as_str(),
                Some("deployed" | "rejected" | "failed")
            ) {
                return Ok(run);
            }
            if started.elapsed() > timeout {
                bail!("pipeline run {id} still {} after {timeout:?}", run["state"]);
            }
            // Poll briskly while a run is young (most finish within a second).
            let pause = if started.elapsed() < Duration::from_secs(5) {
                20
            } else {
                200
            };
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
    }
}

/// Percent-encodes a query value (names are letters, digits, `-`, `_` and `.`
/// today; anything else is escaped rather than trusted).
fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
