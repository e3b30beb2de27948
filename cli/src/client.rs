//! The CLI's HTTP client for the registry and ingest APIs. Every answer is
//! decoded into the record type the registry (or ingest) serialises it from,
//! so commands print fields, not guesses about JSON.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use modelbus_core::audit::AuditEntry;
use modelbus_core::auth::Principal;
use modelbus_core::evidence::Evidence;
use modelbus_core::signing::DsseEnvelope;
use modelbus_ingest::SubmitResponse;
use modelbus_registry::governance::SubmitOutcome;
use modelbus_registry::store::{Approver, TokenInfo};
use modelbus_registry::types::{
    DatasetInfo, ModelVersion, PipelineRun, RegisteredModel, SpecVersion, TrainingRun,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
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
        Self::has_status(e, 400)
    }

    /// Whether the API answered `status` somewhere in `e`'s chain.
    fn has_status(e: &anyhow::Error, status: u16) -> bool {
        e.chain().any(|c| {
            c.downcast_ref::<ApiError>()
                .is_some_and(|a| a.status == status)
        })
    }
}

/// The answer to applying a spec (`POST /v1/datasets`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppliedSpec {
    /// False when the same text was already registered.
    pub created: bool,
    /// The spec version it is.
    pub spec: SpecVersion,
}

/// A new API token (`POST /v1/tokens`): the secret, shown once, and its record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewToken {
    /// The secret.
    pub token: String,
    /// What the registry keeps about it.
    pub info: TokenInfo,
}

/// One event of a model's deployment timeline (`GET
/// /v1/models/{name}/deployments`), as the registry's store lists it. The
/// registry has no record type for it; these are all of its fields, so
/// `--json` prints back exactly what the registry sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentEvent {
    /// The event the deployer published.
    pub event_id: String,
    /// `started`, `completed`, `rolled_back`, `refused`, ...
    pub kind: String,
    /// `staging` or `production`.
    pub environment: String,
    /// Model version.
    pub version: i64,
    /// What happened.
    pub detail: String,
    /// When (RFC 3339).
    pub at: String,
}

/// The list under `key` of an answer (`{key: [...], ...}`); none when the
/// key is missing.
fn list<T: DeserializeOwned>(mut answer: Value, key: &str, what: &str) -> Result<Vec<T>> {
    match answer.get_mut(key).map(Value::take) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(items) => decode(items, what),
    }
}

/// Decodes an answer into its record type, naming the request when the
/// registry sent something else.
fn decode<T: DeserializeOwned>(v: Value, what: &str) -> Result<T> {
    serde_json::from_value(v).with_context(|| format!("{what}: the answer has an unexpected shape"))
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
            http: modelbus_core::http::client_builder()
                .connect_timeout(Duration::from_secs(5))
                .default_headers(headers)
                .build()
                .unwrap_or_default(),
            registry: registry.trim_end_matches('/').to_string(),
            ingest: ingest.trim_end_matches('/').to_string(),
        }
    }

    fn unreachable(&self) -> String {
        format!(
            "cannot reach the registry at {} (is `modelbus up` running?)",
            self.registry
        )
    }

    async fn send_get(&self, path: &str) -> Result<reqwest::Response> {
        let url = format!("{}{path}", self.registry);
        self.http
            .get(&url)
            .send()
            .await
            .with_context(|| self.unreachable())
    }

    /// `GET` on the registry's API, the answer as sent (for what has no
    /// record type, and for tests).
    pub async fn get_json(&self, path: &str) -> Result<Value> {
        let resp = self.send_get(path).await?;
        json_or_error(resp, &format!("GET {path}")).await
    }

    /// `GET` on the registry's API, decoded into `T`.
    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        decode(self.get_json(path).await?, &format!("GET {path}"))
    }

    /// `POST` a JSON body to the registry's API, the answer as sent (for what
    /// has no record type, and for tests).
    pub async fn post_json(&self, path: &str, body: &impl Serialize) -> Result<Value> {
        let resp = self
            .http
            .post(format!("{}{path}", self.registry))
            .json(body)
            .send()
            .await
            .with_context(|| self.unreachable())?;
        json_or_error(resp, &format!("POST {path}")).await
    }

    /// `POST` a JSON body to the registry's API, decoded into `T`.
    async fn post<T: DeserializeOwned>(&self, path: &str, body: &impl Serialize) -> Result<T> {
        decode(self.post_json(path, body).await?, &format!("POST {path}"))
    }

    /// Who the token belongs to (`GET /v1/whoami`).
    pub async fn whoami(&self) -> Result<Principal> {
        serde_json::from_value(self.get_json("/v1/whoami").await?)
            .context("the registry did not say who the token belongs to")
    }

    /// Every audit entry, following pages.
    pub async fn audit_all(&self) -> Result<Vec<AuditEntry>> {
        let mut out: Vec<AuditEntry> = Vec::new();
        loop {
            let after = out.last().map_or(0, |e| e.seq);
            let page = self.get_json(&format!("/v1/audit?after={after}")).await?;
            let entries: Vec<AuditEntry> = serde_json::from_value(page["entries"].clone())
                .context("the registry sent audit entries of an unexpected shape")?;
            if entries.is_empty() {
                return Ok(out);
            }
            out.extend(entries);
        }
    }

    /// Registers a spec file.
    pub async fn apply_spec(&self, file: &Path) -> Result<AppliedSpec> {
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
        decode(json_or_error(resp, "apply spec").await?, "apply spec")
    }

    /// Every item of a list ordered by name, following its pages (`next_after`).
    async fn all_pages<T: DeserializeOwned>(&self, path: &str, key: &str) -> Result<Vec<T>> {
        let mut items: Vec<T> = Vec::new();
        let mut after = String::new();
        loop {
            let url = format!("{path}?after={}", urlencode(&after));
            let page = self.get_json(&url).await?;
            let next = page["next_after"].as_str().map(str::to_string);
            items.extend(list(page, key, &format!("GET {url}"))?);
            match next {
                Some(next) if !next.is_empty() && next != after => after = next,
                _ => return Ok(items),
            }
        }
    }

    /// Datasets, by name.
    pub async fn datasets(&self) -> Result<Vec<DatasetInfo>> {
        self.all_pages("/v1/datasets", "datasets").await
    }

    /// The latest spec version of a dataset.
    pub async fn dataset_spec(&self, dataset: &str) -> Result<SpecVersion> {
        self.get(&format!("/v1/datasets/{dataset}/spec")).await
    }

    /// Pipeline runs, newest first.
    pub async fn pipeline_runs(
        &self,
        dataset: Option<&str>,
        limit: u32,
    ) -> Result<Vec<PipelineRun>> {
        let mut path = format!("/v1/pipeline-runs?limit={limit}");
        if let Some(d) = dataset {
            path.push_str(&format!("&dataset={d}"));
        }
        let what = format!("GET {path}");
        list(self.get_json(&path).await?, "pipeline_runs", &what)
    }

    /// One pipeline run.
    pub async fn pipeline_run(&self, id: &str) -> Result<PipelineRun> {
        self.get(&format!("/v1/pipeline-runs/{id}")).await
    }

    /// A training run.
    pub async fn run(&self, id: &str) -> Result<TrainingRun> {
        self.get(&format!("/v1/runs/{id}")).await
    }

    /// Models, by name.
    pub async fn models(&self) -> Result<Vec<RegisteredModel>> {
        self.all_pages("/v1/models", "models").await
    }

    /// One model.
    pub async fn model(&self, name: &str) -> Result<RegisteredModel> {
        self.get(&format!("/v1/models/{name}")).await
    }

    /// One version.
    pub async fn model_version(&self, name: &str, version: u64) -> Result<ModelVersion> {
        self.get(&format!("/v1/models/{name}/versions/{version}"))
            .await
    }

    /// A model's latest monitoring windows (newest first), of one environment or all.
    pub async fn windows(
        &self,
        model: &str,
        environment: Option<&str>,
        limit: u32,
    ) -> Result<Vec<modelbus_core::events::MonitorWindowClosed>> {
        let mut path = format!("/v1/models/{model}/windows?limit={limit}");
        if let Some(e) = environment {
            path.push_str(&format!("&environment={}", urlencode(e)));
        }
        let what = format!("GET {path}");
        list(self.get_json(&path).await?, "windows", &what)
    }

    /// A model's latest windows with the realised performance of those that
    /// labels joined (keyed by window id).
    pub async fn windows_with_performance(
        &self,
        model: &str,
        environment: Option<&str>,
        limit: u32,
    ) -> Result<(
        Vec<modelbus_core::events::MonitorWindowClosed>,
        std::collections::BTreeMap<String, modelbus_core::events::WindowPerformance>,
    )> {
        let mut path = format!("/v1/models/{model}/windows?limit={limit}");
        if let Some(e) = environment {
            path.push_str(&format!("&environment={}", urlencode(e)));
        }
        let what = format!("GET {path}");
        let v = self.get_json(&path).await?;
        let performance = match v.get("performance") {
            Some(p) => serde_json::from_value(p.clone())
                .with_context(|| format!("{what}: unexpected performance"))?,
            None => Default::default(),
        };
        Ok((list(v, "windows", &what)?, performance))
    }

    /// A model's deployment timeline in every environment, oldest first.
    pub async fn deployments(&self, model: &str) -> Result<Vec<DeploymentEvent>> {
        let path = format!("/v1/models/{model}/deployments");
        let what = format!("GET {path}");
        list(self.get_json(&path).await?, "timeline", &what)
    }

    /// The evidence bundle of a version, with the digest under which the
    /// registry keeps it in its artifact store (when it says).
    pub async fn evidence(&self, model: &str, version: u32) -> Result<(Evidence, Option<String>)> {
        let path = format!("/v1/models/{model}/versions/{version}/evidence");
        let resp = self.send_get(&path).await?;
        let artifact = resp
            .headers()
            .get("x-modelbus-artifact-sha256")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let value = json_or_error(resp, &format!("GET {path}")).await?;
        let evidence =
            serde_json::from_value(value).context("the registry's evidence bundle is malformed")?;
        Ok((evidence, artifact))
    }

    /// Creates a token for `name` with `roles` (comma-separated).
    pub async fn create_token(&self, name: &str, roles: &str) -> Result<NewToken> {
        self.post(
            "/v1/tokens",
            &serde_json::json!({ "name": name, "roles": roles }),
        )
        .await
    }

    /// Every token (never their secrets).
    pub async fn tokens(&self) -> Result<Vec<TokenInfo>> {
        list(
            self.get_json("/v1/tokens").await?,
            "tokens",
            "GET /v1/tokens",
        )
    }

    /// Revokes a token by id, or every token of a principal; returns those revoked.
    pub async fn revoke_tokens(
        &self,
        id: Option<&str>,
        name: Option<&str>,
    ) -> Result<Vec<TokenInfo>> {
        let answer: Value = self
            .post(
                "/v1/tokens/revoke",
                &serde_json::json!({ "id": id, "name": name }),
            )
            .await?;
        list(answer, "revoked", "POST /v1/tokens/revoke")
    }

    /// Adds a person to the approver roster.
    pub async fn add_approver(&self, id: &str, public_key: &str, role: &str) -> Result<Approver> {
        self.post(
            "/v1/approvers",
            &serde_json::json!({ "id": id, "public_key": public_key, "role": role }),
        )
        .await
    }

    /// The approver roster.
    pub async fn approvers(&self) -> Result<Vec<Approver>> {
        list(
            self.get_json("/v1/approvers").await?,
            "approvers",
            "GET /v1/approvers",
        )
    }

    /// Revokes an approver.
    pub async fn revoke_approver(&self, id: &str) -> Result<Approver> {
        self.post(
            &format!("/v1/approvers/{id}/revoke"),
            &serde_json::json!({}),
        )
        .await
    }

    /// Submits a signed approval or rejection.
    pub async fn submit_approval(&self, envelope: &DsseEnvelope) -> Result<SubmitOutcome> {
        self.post("/v1/approvals", envelope).await
    }

    /// Submits a signed rollback.
    pub async fn submit_rollback(&self, envelope: &DsseEnvelope) -> Result<SubmitOutcome> {
        self.post("/v1/rollbacks", envelope).await
    }

    /// Streams a CSV file to ingest.
    pub async fn submit(&self, dataset: &str, file: &Path) -> Result<SubmitResponse> {
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
        decode(json_or_error(resp, "submit").await?, "submit")
    }

    /// Sends a label file to ingest (it is checked whole there).
    pub async fn submit_labels(&self, dataset: &str, file: &Path) -> Result<Value> {
        let bytes = tokio::fs::read(file)
            .await
            .with_context(|| format!("cannot read {}", file.display()))?;
        let resp = self
            .http
            .post(format!("{}/v1/datasets/{dataset}/labels", self.ingest))
            .header("content-type", "text/csv")
            .body(bytes)
            .send()
            .await
            .with_context(|| {
                format!(
                    "cannot reach ingest at {} (is `modelbus up` running?)",
                    self.ingest
                )
            })?;
        json_or_error(resp, "labels submit").await
    }

    /// Polls a pipeline run until it ends or `timeout` passes.
    pub async fn wait_run(&self, id: &str, timeout: Duration) -> Result<PipelineRun> {
        let started = Instant::now();
        loop {
            let run = match self.pipeline_run(id).await {
                Ok(run) => run,
                // A run announced on the bus is created when its event is handled.
                Err(e) if started.elapsed() < timeout && ApiError::has_status(&e, 404) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            if run.is_final() {
                return Ok(run);
            }
            if started.elapsed() > timeout {
                bail!(
                    "pipeline run {id} still {} after {timeout:?}",
                    Value::from(run.state)
                );
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
