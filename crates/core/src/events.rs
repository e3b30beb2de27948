//! The CloudEvents 1.0 envelope and every event payload on the bus.
//!
//! Payloads are plain serde structs; their JSON Schemas are generated into
//! `schemas/` (`modelbus schemas`) so producers in other languages can validate
//! what they send. Only this module knows the wire shape of an event.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;

use crate::ids::{DatasetName, Environment, ModelName, PipelineRunId, Sha256Digest};
use crate::signing::DsseEnvelope;

/// CloudEvents `specversion` this code writes and accepts.
pub const SPEC_VERSION: &str = "1.0";

/// A payload type carried on the bus.
pub trait EventPayload: Serialize + DeserializeOwned + JsonSchema + Send + Sync + 'static {
    /// Dotted event name, e.g. `data.batch.validated`. The NATS subject is
    /// `modelbus.<NAME>` and the CloudEvents type `io.modelbus.<NAME>.v1`.
    const NAME: &'static str;

    /// NATS subject this event is published on.
    fn subject() -> String {
        format!("modelbus.{}", Self::NAME)
    }

    /// CloudEvents `type` attribute.
    fn event_type() -> String {
        format!("io.modelbus.{}.v1", Self::NAME)
    }
}

/// Why an event from the bus could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The bytes are not a JSON CloudEvent.
    #[error("not a JSON CloudEvent: {0}")]
    NotCloudEvent(serde_json::Error),
    /// A CloudEvents attribute is missing or wrong.
    #[error("invalid CloudEvents attribute `{attribute}`: {reason}")]
    Attribute {
        /// The attribute name.
        attribute: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The event's `type` does not belong to the subject it arrived on. NATS
    /// permissions say who may publish on which subject; a type that disagrees
    /// with its subject is an attempt to reach another event's handler through a
    /// subject its sender may publish on.
    #[error(
        "event of type {event_type:?} arrived on subject {subject:?}, which carries only {expected:?}"
    )]
    Misrouted {
        /// The subject it arrived on.
        subject: String,
        /// Its `type` attribute (at most 200 characters of it).
        event_type: String,
        /// The only type that subject carries.
        expected: String,
    },
    /// The `data` member does not match the payload schema of the event type.
    #[error("invalid `data` for {event_type}: {source}")]
    Data {
        /// The event type being decoded.
        event_type: String,
        /// serde's description, naming the field.
        source: serde_json::Error,
    },
}

/// A CloudEvents 1.0 event in JSON structured mode, with modelbus's extensions.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Envelope<T> {
    /// Always `1.0`.
    pub specversion: String,
    /// Unique per source; also the `Nats-Msg-Id`, so a republished event is de-duplicated.
    pub id: String,
    /// The service that produced the event, e.g. `/modelbus/ingest`.
    pub source: String,
    /// `io.modelbus.<name>.v1`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// When the event was produced (RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "String")]
    pub time: OffsetDateTime,
    /// What the event is about: a dataset or model name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Always `application/json`.
    pub datacontenttype: String,
    /// Extension: the pipeline run this event belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipelinerun: Option<PipelineRunId>,
    /// Extension: W3C trace context of the span that produced the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// Extension: id of the event that caused this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causationid: Option<String>,
    /// The payload.
    pub data: T,
}

impl<T: EventPayload> Envelope<T> {
    /// A new event with a deterministic id derived from `key`: the same cause and key
    /// always give the same id, so a handler that runs twice publishes an event the
    /// bus de-duplicates instead of a second one.
    pub fn new(source: &str, key: &str, data: T) -> Self {
        Self {
            specversion: SPEC_VERSION.to_string(),
            id: derive_event_id(T::NAME, key),
            source: source.to_string(),
            event_type: T::event_type(),
            time: OffsetDateTime::now_utc(),
            subject: None,
            datacontenttype: "application/json".to_string(),
            pipelinerun: None,
            traceparent: crate::telemetry::current_traceparent(),
            causationid: None,
            data,
        }
    }

    /// Sets the CloudEvents subject.
    pub fn with_subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    /// Sets the pipeline run.
    pub fn with_pipeline_run(mut self, run: Option<PipelineRunId>) -> Self {
        self.pipelinerun = run;
        self
    }

    /// Marks this event as caused by `cause`, inheriting its pipeline run.
    pub fn caused_by<U>(mut self, cause: &Envelope<U>) -> Self {
        self.causationid = Some(cause.id.clone());
        if self.pipelinerun.is_none() {
            self.pipelinerun = cause.pipelinerun.clone();
        }
        self
    }

    /// What identifies this event: its name and id (`<name>/<id>`). Consumers
    /// key idempotency on it and the bus de-duplicates on it, so an event of
    /// another type that copies the id (anyone can write any id) collides with
    /// nothing of this type.
    pub fn identity(&self) -> String {
        format!("{}/{}", T::NAME, self.id)
    }

    /// JSON bytes for the wire.
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising plain structs with string keys cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

fn full_traffic() -> u8 {
    100
}

/// Id for an event of `name` keyed by `key` (32 hex characters).
pub fn derive_event_id(name: &str, key: &str) -> String {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([0]);
    h.update(key.as_bytes());
    hex::encode(&h.finalize()[..16])
}

/// The CloudEvents `type` the subject `modelbus.<name>` carries, if it is one of
/// modelbus's event subjects.
pub fn type_of_subject(subject: &str) -> Option<String> {
    let name = event_name_of(subject)?;
    (!name.is_empty()).then(|| format!("io.modelbus.{name}.v1"))
}

/// The event name a subject carries: `modelbus.<name>`, or
/// `modelbus_inference.<name>` for the prediction log.
pub fn event_name_of(subject: &str) -> Option<&str> {
    subject
        .strip_prefix("modelbus.")
        .or_else(|| subject.strip_prefix(INFERENCE_PREFIX)?.strip_prefix('.'))
}

/// Checks that an event's `type` is the one its subject carries.
pub fn check_route(subject: &str, event_type: &str) -> Result<(), DecodeError> {
    match type_of_subject(subject) {
        Some(expected) if expected == event_type => Ok(()),
        expected => Err(DecodeError::Misrouted {
            subject: subject.chars().take(200).collect(),
            event_type: event_type.chars().take(200).collect(),
            expected: expected.unwrap_or_else(|| "(no modelbus event)".into()),
        }),
    }
}

/// Decodes an event of type `T` that arrived on `subject`: the subject must be
/// `T`'s, and so must the `type` attribute.
pub fn decode_on<T: EventPayload>(subject: &str, bytes: &[u8]) -> Result<Envelope<T>, DecodeError> {
    if subject != T::subject() {
        return Err(DecodeError::Misrouted {
            subject: subject.chars().take(200).collect(),
            event_type: T::event_type(),
            expected: type_of_subject(subject).unwrap_or_else(|| "(no modelbus event)".into()),
        });
    }
    // On `T`'s subject, `decode` insisting on `T`'s type is the route check.
    decode::<T>(bytes)
}

/// Decodes an event of a known type, checking the CloudEvents attributes first so
/// the error names what is wrong.
pub fn decode<T: EventPayload>(bytes: &[u8]) -> Result<Envelope<T>, DecodeError> {
    // One parse straight into `T` when the event is well formed (the common
    // case, and most of the monitor's cost per logged prediction); the
    // attributes are checked after. Anything else takes the path below, which
    // checks the attributes first so the error names what is wrong.
    if let Ok(env) = serde_json::from_slice::<Envelope<T>>(bytes)
        && env.specversion == SPEC_VERSION
        && env.event_type == T::event_type()
        && !env.id.is_empty()
    {
        return Ok(env);
    }
    let raw: Envelope<serde_json::Value> =
        serde_json::from_slice(bytes).map_err(DecodeError::NotCloudEvent)?;
    if raw.specversion != SPEC_VERSION {
        return Err(DecodeError::Attribute {
            attribute: "specversion",
            reason: format!("expected {SPEC_VERSION:?}, got {:?}", raw.specversion),
        });
    }
    if raw.event_type != T::event_type() {
        return Err(DecodeError::Attribute {
            attribute: "type",
            reason: format!("expected {:?}, got {:?}", T::event_type(), raw.event_type),
        });
    }
    if raw.id.is_empty() {
        return Err(DecodeError::Attribute {
            attribute: "id",
            reason: "must not be empty".into(),
        });
    }
    let data = T::deserialize(raw.data).map_err(|source| DecodeError::Data {
        event_type: raw.event_type.clone(),
        source,
    })?;
    Ok(Envelope {
        specversion: raw.specversion,
        id: raw.id,
        source: raw.source,
        event_type: raw.event_type,
        time: raw.time,
        subject: raw.subject,
        datacontenttype: raw.datacontenttype,
        pipelinerun: raw.pipelinerun,
        traceparent: raw.traceparent,
        causationid: raw.causationid,
        data,
    })
}

/// A producer dropped a batch: the raw bytes are already in the artifact store.
/// Published by ingest's HTTP endpoint, or by any producer that put the object itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchSubmitted {
    /// Dataset the batch belongs to.
    pub dataset: DatasetName,
    /// Digest of the spec version the batch is validated against.
    pub spec_digest: Sha256Digest,
    /// Digest (and artifact key) of the raw CSV bytes.
    pub batch_sha256: Sha256Digest,
    /// Size of the raw bytes.
    pub size_bytes: u64,
    /// Who submitted it (a principal name; `anonymous` until tokens exist).
    pub submitted_by: String,
}
impl EventPayload for BatchSubmitted {
    const NAME: &'static str = "data.batch.submitted";
}

/// A batch passed validation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchValidated {
    /// Dataset the batch belongs to.
    pub dataset: DatasetName,
    /// Spec version it was validated against.
    pub spec_digest: Sha256Digest,
    /// The raw batch.
    pub batch_sha256: Sha256Digest,
    /// The validation report artifact (JSON).
    pub report_sha256: Sha256Digest,
    /// Data rows in the batch.
    pub rows: u64,
    /// Expectations that failed with severity `warning`.
    pub warnings: Vec<String>,
    /// Who submitted the batch.
    pub submitted_by: String,
}
impl EventPayload for BatchValidated {
    const NAME: &'static str = "data.batch.validated";
}

/// A batch failed validation; it stays quarantined in the artifact store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRejected {
    /// Dataset the batch belongs to.
    pub dataset: DatasetName,
    /// Spec version it was validated against.
    pub spec_digest: Sha256Digest,
    /// The raw batch (kept, never deleted).
    pub batch_sha256: Sha256Digest,
    /// The validation report artifact (JSON).
    pub report_sha256: Sha256Digest,
    /// One line per failed check, naming the column, expectation and rows.
    pub reasons: Vec<String>,
}
impl EventPayload for BatchRejected {
    const NAME: &'static str = "data.batch.rejected";
}

/// Features were computed for a validated batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FeaturesReady {
    /// Dataset the batch belongs to.
    pub dataset: DatasetName,
    /// Spec version in force.
    pub spec_digest: Sha256Digest,
    /// The raw batch.
    pub batch_sha256: Sha256Digest,
    /// The feature set (Parquet: entity, label, split and one column per feature).
    pub feature_set_sha256: Sha256Digest,
    /// The fitted transform (JSON), fitted on the training split only.
    pub transform_sha256: Sha256Digest,
    /// Rows in the training split.
    pub train_rows: u64,
    /// Rows in the holdout split.
    pub holdout_rows: u64,
    /// Number of model inputs after encoding.
    pub num_features: u32,
    /// Seed of the split.
    pub seed: u64,
    /// Who submitted the batch.
    pub submitted_by: String,
    /// Feature statistics on the training rows (JSON): the drift reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statistics_sha256: Option<Sha256Digest>,
    /// Entities whose latest record went to the online store.
    #[serde(default)]
    pub online_entities: u64,
}
impl EventPayload for FeaturesReady {
    const NAME: &'static str = "features.ready";
}

/// A model was trained, evaluated and registered as a new version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelTrained {
    /// Dataset it was trained on.
    pub dataset: DatasetName,
    /// Registered model name.
    pub model: ModelName,
    /// Version number the registry assigned.
    pub version: u32,
    /// Training run id in the registry.
    pub run_id: String,
    /// The model artifact.
    pub model_sha256: Sha256Digest,
    /// `gbdt` or `logistic`.
    pub algorithm: String,
    /// Holdout metrics (`roc_auc`, `pr_auc`, `log_loss`, `brier`).
    pub metrics: BTreeMap<String, f64>,
    /// The evaluation report (JSON): intervals, calibration, slices, champion comparison.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluation_sha256: Option<Sha256Digest>,
    /// The same report as a self-contained HTML page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluation_html_sha256: Option<Sha256Digest>,
}
impl EventPayload for ModelTrained {
    const NAME: &'static str = "model.trained";
}

/// The outcome of one gate check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GateCheck {
    /// The gate, e.g. `min_roc_auc`.
    pub gate: String,
    /// Whether it passed.
    pub passed: bool,
    /// Human-readable detail with the observed and required values.
    pub detail: String,
}

/// A version passed its gates and may be promoted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelCandidate {
    /// Registered model name.
    pub model: ModelName,
    /// Version number.
    pub version: u32,
    /// The model artifact.
    pub model_sha256: Sha256Digest,
    /// Every gate and its outcome.
    pub checks: Vec<GateCheck>,
}
impl EventPayload for ModelCandidate {
    const NAME: &'static str = "model.candidate";
}

/// A version failed its gates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelRejected {
    /// Registered model name.
    pub model: ModelName,
    /// Version number.
    pub version: u32,
    /// The model artifact.
    pub model_sha256: Sha256Digest,
    /// Every gate and its outcome.
    pub checks: Vec<GateCheck>,
    /// The failed gates, one line each.
    pub reasons: Vec<String>,
}
impl EventPayload for ModelRejected {
    const NAME: &'static str = "model.rejected";
}

/// Promotion of a version to an environment was approved; carries every signed
/// envelope so the deployer can verify them itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApprovalGranted {
    /// Registered model name.
    pub model: ModelName,
    /// Version number.
    pub version: u32,
    /// The model artifact the approvals are about.
    pub model_sha256: Sha256Digest,
    /// Target environment.
    pub environment: Environment,
    /// DSSE envelopes, each holding a signed in-toto statement.
    pub approvals: Vec<DsseEnvelope>,
    /// Principal whose token submitted the version's batch: the policy refuses
    /// their own approval.
    #[serde(default)]
    pub author: String,
    /// The registry's policy decision (production): reasons and policy digest.
    /// Informational: the deployer reads none of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<serde_json::Value>,
    /// Production: the registry's decision signed with its automation key
    /// ([`crate::signing::DecisionStatement`]), the only source of the author,
    /// gates and rejections the deployer's own policy run uses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_decision: Option<DsseEnvelope>,
}
impl EventPayload for ApprovalGranted {
    const NAME: &'static str = "approval.granted";
}

/// The deployer refused an approval (bad signature, unknown key, digest mismatch...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApprovalRefused {
    /// Model named by the refused event.
    pub model: ModelName,
    /// Version named by the refused event.
    pub version: u32,
    /// Environment named by the refused event.
    pub environment: Environment,
    /// Why it was refused.
    pub reason: String,
}
impl EventPayload for ApprovalRefused {
    const NAME: &'static str = "approval.refused";
}

/// The deployer wrote a new desired state for an environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeploymentStarted {
    /// Target environment.
    pub environment: Environment,
    /// Registered model name.
    pub model: ModelName,
    /// Version being deployed.
    pub version: u32,
    /// The model artifact.
    pub model_sha256: Sha256Digest,
    /// Revision of the desired-state entry in the `deployments` KV bucket.
    pub revision: u64,
    /// Share of traffic the version gets with this write (canary steps), percent.
    #[serde(default = "full_traffic")]
    pub traffic_percent: u8,
}
impl EventPayload for DeploymentStarted {
    const NAME: &'static str = "deployment.started";
}

/// A serving replica loaded a model and is answering with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServingModelLoaded {
    /// Environment the replica serves.
    pub environment: Environment,
    /// Registered model name.
    pub model: ModelName,
    /// Version now served.
    pub version: u32,
    /// The model artifact.
    pub model_sha256: Sha256Digest,
    /// Replica id.
    pub replica: String,
    /// Revision of the desired-state entry this replica acted on.
    pub revision: u64,
    /// Share of traffic the version answers on this replica, percent.
    #[serde(default = "full_traffic")]
    pub traffic_percent: u8,
}
impl EventPayload for ServingModelLoaded {
    const NAME: &'static str = "serving.model.loaded";
}

/// A deployment reached its desired state: serving answers with the new version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeploymentCompleted {
    /// Target environment.
    pub environment: Environment,
    /// Registered model name.
    pub model: ModelName,
    /// Version deployed.
    pub version: u32,
    /// The model artifact.
    pub model_sha256: Sha256Digest,
    /// Share of traffic it answers now, percent (below 100 during a canary).
    #[serde(default = "full_traffic")]
    pub traffic_percent: u8,
}
impl EventPayload for DeploymentCompleted {
    const NAME: &'static str = "deployment.completed";
}

/// A signed request to return an environment to an earlier version, checked by
/// the registry against its roster and re-verified by the deployer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequested {
    /// Environment.
    pub environment: Environment,
    /// Registered model name.
    pub model: ModelName,
    /// Version to return to.
    pub to_version: u32,
    /// Its artifact.
    pub to_model_sha256: Sha256Digest,
    /// Operator who signed.
    pub operator: String,
    /// The signed rollback statement.
    pub envelope: DsseEnvelope,
}
impl EventPayload for RollbackRequested {
    const NAME: &'static str = "rollback.requested";
}

/// The deployer returned an environment to an earlier version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeploymentRolledBack {
    /// Environment.
    pub environment: Environment,
    /// Registered model name.
    pub model: ModelName,
    /// Version taken out of service.
    pub from_version: u32,
    /// Version serving again (0: none, the environment no longer serves the model).
    pub to_version: u32,
    /// Why: the breached objective with its figures, or the operator's reason.
    pub reason: String,
    /// `true` when the deployer decided on its own, `false` for a signed request.
    pub automatic: bool,
    /// Operator who signed (manual rollbacks).
    #[serde(default)]
    pub operator: String,
}
impl EventPayload for DeploymentRolledBack {
    const NAME: &'static str = "deployment.rolled_back";
}

/// Request statistics one serving replica observed for one served version over a
/// window: what soak checks and automatic rollback decide on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServingStats {
    /// Environment.
    pub environment: Environment,
    /// Registered model name.
    pub model: ModelName,
    /// Version.
    pub version: u32,
    /// Its artifact.
    pub model_sha256: Sha256Digest,
    /// Replica that observed it.
    pub replica: String,
    /// Requests answered in the window.
    pub requests: u64,
    /// Of which failed on the server side (HTTP 5xx, prediction errors).
    pub errors: u64,
    /// 99th percentile latency in the window, milliseconds.
    pub p99_ms: f64,
    /// Requests of the window per latency bucket ([`crate::latency`]), so
    /// percentiles can be pooled over windows and replicas. Empty from
    /// replicas that predate it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub latency_histogram: Vec<u64>,
    /// End of the window (RFC 3339).
    pub window_end: String,
    /// Window length, milliseconds.
    pub window_ms: u64,
}
impl EventPayload for ServingStats {
    const NAME: &'static str = "serving.stats";
}

/// Something a person should know about (validation warnings today): for
/// notification channels (chat, e-mail, pager) to subscribe to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NotificationRaised {
    /// `info`, `warning` or `error`.
    pub severity: String,
    /// Machine-readable kind, e.g. `validation_warning`.
    pub kind: String,
    /// One-line summary.
    pub title: String,
    /// Details, one line each.
    pub details: Vec<String>,
    /// Dataset concerned, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<DatasetName>,
}
impl EventPayload for NotificationRaised {
    const NAME: &'static str = "notification.raised";
}

/// The notifier's record of one notification to one receiver
/// (`[[notifications.receivers]]`): delivered, failed after its attempts, or
/// left out as a repeat within the receiver's repeat interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NotificationDelivered {
    /// The receiver's configured name.
    pub receiver: String,
    /// What the notification was about: `drift`, `performance`,
    /// `validation_warning`, `rejection`, `rollback` or `signature_refused`.
    pub kind: String,
    /// Id of the event that caused it.
    pub event_id: String,
    /// `delivered`, `failed` or `deduplicated`.
    pub outcome: String,
    /// Delivery attempts made (0 when deduplicated).
    pub attempts: u32,
    /// HTTP status of the last attempt, when one answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Why the last attempt failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
impl EventPayload for NotificationDelivered {
    const NAME: &'static str = "notification.delivered";
}

/// Subject prefix of the prediction log: its own stream
/// ([`crate::bus::INFERENCE_STREAM`]), with its own retention, apart from
/// `modelbus.>` (the pipeline's events are never crowded out by traffic).
pub const INFERENCE_PREFIX: &str = "modelbus_inference";

/// One prediction serving answered, as the monitor reads it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PredictionRecord {
    /// Prediction id (a UUIDv7), also returned to the client; labels name it.
    pub prediction_id: String,
    /// When it was answered (RFC 3339, UTC).
    pub time: String,
    /// Registered model name.
    pub model: ModelName,
    /// Version that answered (during a canary, either one).
    pub version: u32,
    /// That version's artifact.
    pub model_sha256: Sha256Digest,
    /// The record's entity id, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity: Option<String>,
    /// The input record as the model saw it (completed from the online
    /// store when the request gave only an entity id).
    pub input: serde_json::Map<String, serde_json::Value>,
    /// Probability of the positive class.
    pub probability: f64,
    /// Label at the model's threshold.
    pub label: String,
}

/// A batch of predictions one serving replica answered in one environment.
///
/// On the wire the batch names its input columns once: `columns` holds the
/// first record's input keys, and every record whose input has exactly those
/// keys gives `input` as an array of its values in that order (a record
/// with other keys gives it as an object). Logged traffic was mostly key
/// names otherwise: a Telco record takes 462 bytes instead of 756, so the
/// log's stream holds 1.6 times as many predictions within its byte limit.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(try_from = "InferenceLoggedWire")]
#[schemars(with = "InferenceLoggedWire")]
pub struct InferenceLogged {
    /// Environment.
    pub environment: Environment,
    /// Replica that answered.
    pub replica: String,
    /// The predictions, oldest first.
    pub records: Vec<PredictionRecord>,
    /// Predictions this replica dropped since its previous batch because its
    /// log buffer was full (so the monitor knows its windows are partial).
    #[serde(default)]
    pub dropped_before: u64,
}
/// The wire form of [`InferenceLogged`].
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "InferenceLogged")]
pub struct InferenceLoggedWire {
    /// Environment.
    pub environment: Environment,
    /// Replica that answered.
    pub replica: String,
    /// Input keys of the records whose `input` is an array, in its order.
    #[serde(default)]
    pub columns: Vec<String>,
    /// The predictions, oldest first.
    pub records: Vec<WireRecord>,
    /// Predictions this replica dropped since its previous batch because its
    /// log buffer was full (so the monitor knows its windows are partial).
    #[serde(default)]
    pub dropped_before: u64,
}

/// One prediction of a batch on the wire: a [`PredictionRecord`] whose input
/// may be a row of values against the batch's `columns`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WireRecord {
    /// Prediction id.
    pub prediction_id: String,
    /// When it was answered (RFC 3339, UTC).
    pub time: String,
    /// Registered model name.
    pub model: ModelName,
    /// Version that answered.
    pub version: u32,
    /// That version's artifact.
    pub model_sha256: Sha256Digest,
    /// The record's entity id, when it has one.
    #[serde(default)]
    pub entity: Option<String>,
    /// The input record: its values in the order of the batch's `columns`,
    /// or an object.
    pub input: WireInput,
    /// Probability of the positive class.
    pub probability: f64,
    /// Label at the model's threshold.
    pub label: String,
}

/// A record's input on the wire.
#[derive(JsonSchema)]
#[serde(untagged)]
pub enum WireInput {
    /// Values in the order of the batch's `columns`.
    Row(Vec<serde_json::Value>),
    /// Keys and values.
    Object(serde_json::Map<String, serde_json::Value>),
}

/// Decided by the JSON's own shape (an array or an object) in one pass; an
/// untagged derive would buffer every input and try each form in turn.
impl<'de> Deserialize<'de> for WireInput {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Shape;
        impl<'de> serde::de::Visitor<'de> for Shape {
            type Value = WireInput;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an array of values or an object")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                seq: A,
            ) -> Result<WireInput, A::Error> {
                Vec::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))
                    .map(WireInput::Row)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<WireInput, A::Error> {
                serde_json::Map::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(WireInput::Object)
            }
        }
        d.deserialize_any(Shape)
    }
}

impl TryFrom<InferenceLoggedWire> for InferenceLogged {
    type Error = String;

    fn try_from(w: InferenceLoggedWire) -> Result<Self, String> {
        let mut records = Vec::with_capacity(w.records.len());
        for (i, r) in w.records.into_iter().enumerate() {
            let input = match r.input {
                WireInput::Object(m) => m,
                WireInput::Row(values) => {
                    if values.len() != w.columns.len() {
                        return Err(format!(
                            "records[{i}].input has {} values where `columns` names {}",
                            values.len(),
                            w.columns.len()
                        ));
                    }
                    let mut m = serde_json::Map::new();
                    for (k, v) in w.columns.iter().zip(values) {
                        if m.insert(k.clone(), v).is_some() {
                            return Err(format!("`columns` names {k:?} twice"));
                        }
                    }
                    m
                }
            };
            records.push(PredictionRecord {
                prediction_id: r.prediction_id,
                time: r.time,
                model: r.model,
                version: r.version,
                model_sha256: r.model_sha256,
                entity: r.entity,
                input,
                probability: r.probability,
                label: r.label,
            });
        }
        Ok(Self {
            environment: w.environment,
            replica: w.replica,
            records,
            dropped_before: w.dropped_before,
        })
    }
}

impl Serialize for InferenceLogged {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        /// A record's input: its values alone when its keys are the batch's columns.
        struct Input<'a>(&'a serde_json::Map<String, serde_json::Value>, bool);
        impl Serialize for Input<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                if self.1 {
                    s.collect_seq(self.0.values())
                } else {
                    self.0.serialize(s)
                }
            }
        }
        #[derive(Serialize)]
        struct Record<'a> {
            prediction_id: &'a str,
            time: &'a str,
            model: &'a ModelName,
            version: u32,
            model_sha256: &'a Sha256Digest,
            #[serde(skip_serializing_if = "Option::is_none")]
            entity: Option<&'a String>,
            input: Input<'a>,
            probability: f64,
            label: &'a str,
        }
        #[derive(Serialize)]
        struct Batch<'a> {
            environment: Environment,
            replica: &'a str,
            columns: Vec<&'a String>,
            records: Vec<Record<'a>>,
            dropped_before: u64,
        }
        let columns: Vec<&String> = self
            .records
            .first()
            .map(|r| r.input.keys().collect())
            .unwrap_or_default();
        let records = self
            .records
            .iter()
            .map(|r| Record {
                prediction_id: &r.prediction_id,
                time: &r.time,
                model: &r.model,
                version: r.version,
                model_sha256: &r.model_sha256,
                entity: r.entity.as_ref(),
                input: Input(
                    &r.input,
                    r.input.len() == columns.len() && r.input.keys().eq(columns.iter().copied()),
                ),
                probability: r.probability,
                label: &r.label,
            })
            .collect();
        Batch {
            environment: self.environment,
            replica: &self.replica,
            columns,
            records,
            dropped_before: self.dropped_before,
        }
        .serialize(serializer)
    }
}

impl EventPayload for InferenceLogged {
    const NAME: &'static str = "inference.logged";
    fn subject() -> String {
        format!("{INFERENCE_PREFIX}.{}", Self::NAME)
    }
}

/// One decision the monitoring policy took on a window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WindowDecision {
    /// `drift.detected` or `performance.degraded`.
    pub kind: String,
    /// Why.
    pub reason: String,
}

/// A window of live traffic the monitor closed and evaluated against the
/// served version's training reference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MonitorWindowClosed {
    /// Window id: environment, model, version and the window's first prediction id.
    pub window_id: String,
    /// Environment.
    pub environment: Environment,
    /// Registered model name.
    pub model: ModelName,
    /// Version that answered the window's predictions.
    pub version: u32,
    /// Its artifact.
    pub model_sha256: Sha256Digest,
    /// Time of the window's first prediction (RFC 3339).
    pub opened: String,
    /// Time the window closed (RFC 3339).
    pub closed: String,
    /// What closed it: `rows` (monitor.window_rows), `time`
    /// (monitor.window_duration) or `shutdown`.
    pub closed_by: String,
    /// Predictions in the window.
    pub rows: u64,
    /// Predictions serving dropped while this window was open (full log buffer).
    pub dropped: u64,
    /// Share of drifted columns.
    pub drift_share: f64,
    /// Whether the data set drifted by the share rule.
    pub dataset_drift: bool,
    /// Columns that drifted (`@probability` is the prediction).
    pub drifted_columns: Vec<String>,
    /// Each tested column's score (p-value or distance).
    pub scores: BTreeMap<String, f64>,
    /// The full drift report (JSON).
    pub report_sha256: Sha256Digest,
    /// The same as a self-contained HTML page.
    pub html_sha256: Sha256Digest,
    /// What the monitoring policy decided.
    pub decisions: Vec<WindowDecision>,
    /// Digest of the policy that decided.
    pub policy_digest: String,
    /// Estimated performance from the window's probabilities (CBPE), when
    /// the version's reference has what it needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated: Option<PerformanceFigures>,
    /// The window's prediction index (JSON lines of id, entity, time and
    /// probability): what labels are joined to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_sha256: Option<Sha256Digest>,
    /// The window's logged records (JSON lines of id and input, up to
    /// `monitor.max_record_bytes` per window): what retraining reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records_sha256: Option<Sha256Digest>,
}
impl EventPayload for MonitorWindowClosed {
    const NAME: &'static str = "monitor.window.closed";
}

/// The monitoring policy found drift in a window of live traffic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DriftDetected {
    /// The window.
    pub window_id: String,
    /// Environment.
    pub environment: Environment,
    /// Registered model name.
    pub model: ModelName,
    /// Version.
    pub version: u32,
    /// Its artifact.
    pub model_sha256: Sha256Digest,
    /// Why (one line per decision).
    pub reasons: Vec<String>,
    /// Columns that drifted.
    pub drifted_columns: Vec<String>,
    /// The window's drift report (JSON).
    pub report_sha256: Sha256Digest,
    /// Digest of the policy that decided.
    pub policy_digest: String,
}
impl EventPayload for DriftDetected {
    const NAME: &'static str = "drift.detected";
}

/// Performance figures of a window: realised (from labels) or estimated (from
/// probabilities; estimated counts are expected values, so fractional).
/// Undefined figures (one class only, no rows) are absent, never NaN.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PerformanceFigures {
    /// Predictions the figures are over.
    pub rows: u64,
    /// Positive labels (expected, when estimated).
    pub positives: f64,
    /// ROC AUC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roc_auc: Option<f64>,
    /// PR AUC (realised only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pr_auc: Option<f64>,
    /// Log loss (realised only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_loss: Option<f64>,
    /// Brier score (realised only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub brier: Option<f64>,
    /// Expected calibration error (realised only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ece: Option<f64>,
    /// Accuracy at the threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    /// Precision at the threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<f64>,
    /// Recall at the threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recall: Option<f64>,
    /// F1 at the threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub f1: Option<f64>,
    /// The model's threshold.
    pub threshold: f64,
    /// Confusion matrix at the threshold: true positives.
    pub tp: f64,
    /// False positives.
    pub fp: f64,
    /// True negatives.
    pub tn: f64,
    /// False negatives.
    #[serde(rename = "fn")]
    pub fn_: f64,
}

/// A producer submitted ground truth for earlier predictions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LabelsObserved {
    /// Id of this submission (a UUIDv7).
    pub labels_id: String,
    /// Dataset whose models' predictions the labels belong to.
    pub dataset: DatasetName,
    /// The validated labels (JSON lines, see `modelbus_core::labels`).
    pub labels_sha256: Sha256Digest,
    /// Labels in the file.
    pub rows: u64,
    /// Who submitted them.
    pub submitted_by: String,
}
impl EventPayload for LabelsObserved {
    const NAME: &'static str = "labels.observed";
}

/// The registry joined a submission of labels to logged predictions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LabelsJoined {
    /// The submission.
    pub labels_id: String,
    /// Its dataset.
    pub dataset: DatasetName,
    /// Labels in it.
    pub rows: u64,
    /// Joined to a prediction.
    pub joined: u64,
    /// Naming a prediction id (or entity) with no logged prediction yet;
    /// kept and joined when its window is indexed, within `monitor.label_window`.
    pub pending: u64,
    /// Whose prediction is older than `monitor.label_window` before the label.
    pub outside_window: u64,
    /// For a prediction that already had a label (the first one wins).
    pub duplicate: u64,
    /// Windows whose realised performance changed (at most 10,000 listed).
    pub windows: Vec<String>,
}
impl EventPayload for LabelsJoined {
    const NAME: &'static str = "labels.joined";
}

/// Realised performance of a window, (re)computed because labels joined it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WindowPerformance {
    /// The window.
    pub window_id: String,
    /// Environment.
    pub environment: Environment,
    /// Registered model name.
    pub model: ModelName,
    /// Version.
    pub version: u32,
    /// Predictions in the window.
    pub window_rows: u64,
    /// Share of them with a label.
    pub label_coverage: f64,
    /// Realised figures over the labelled predictions.
    pub realised: PerformanceFigures,
    /// What the monitoring policy decided now.
    pub decisions: Vec<WindowDecision>,
    /// Digest of the policy that decided.
    pub policy_digest: String,
}
impl EventPayload for WindowPerformance {
    const NAME: &'static str = "monitor.window.performance";
}

/// The monitoring policy found a version performing worse than its evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PerformanceDegraded {
    /// The window.
    pub window_id: String,
    /// Environment.
    pub environment: Environment,
    /// Registered model name.
    pub model: ModelName,
    /// Version.
    pub version: u32,
    /// `realised` (from labels) or `estimated` (from probabilities).
    pub basis: String,
    /// Why (one line per decision).
    pub reasons: Vec<String>,
    /// Digest of the policy that decided.
    pub policy_digest: String,
}
impl EventPayload for PerformanceDegraded {
    const NAME: &'static str = "performance.degraded";
}

/// What the dead-letter stream holds: an event that exhausted its deliveries or
/// could not be handled at all, with the last error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeadLetter {
    /// The consumer that gave up.
    pub consumer: String,
    /// The subject the event was published on.
    pub subject: String,
    /// Stream sequence of the original message.
    pub stream_sequence: u64,
    /// How many times it was delivered.
    pub deliveries: i64,
    /// The last error, with its causes.
    pub error: String,
    /// Pipeline run of the original event, when it could be read.
    pub pipelinerun: Option<PipelineRunId>,
    /// The original payload, verbatim when it was UTF-8.
    pub original: String,
}

/// Lists every event payload once: the names (and so the subjects) modelbus
/// knows and the JSON Schemas it writes both come from this list, so a new
/// event is its payload type, its `EventPayload` impl and one entry here.
macro_rules! every_event {
    ($($t:ty),* $(,)?) => {
        /// Names of every event modelbus defines (the subjects `modelbus.<name>`).
        pub const EVENT_NAMES: &[&str] = &[$(<$t>::NAME,)*];

        /// The JSON Schema of every event payload, keyed by event name.
        pub fn schemas() -> BTreeMap<&'static str, serde_json::Value> {
            let mut out = BTreeMap::new();
            $(
                out.insert(
                    <$t>::NAME,
                    serde_json::to_value(schemars::schema_for!(Envelope<$t>)).unwrap_or_default(),
                );
            )*
            out
        }
    };
}

every_event!(
    BatchSubmitted,
    BatchValidated,
    BatchRejected,
    FeaturesReady,
    ModelTrained,
    ModelCandidate,
    ModelRejected,
    ApprovalGranted,
    ApprovalRefused,
    DeploymentStarted,
    ServingModelLoaded,
    DeploymentCompleted,
    NotificationRaised,
    NotificationDelivered,
    RollbackRequested,
    DeploymentRolledBack,
    ServingStats,
    InferenceLogged,
    MonitorWindowClosed,
    DriftDetected,
    LabelsObserved,
    LabelsJoined,
    WindowPerformance,
    PerformanceDegraded,
);

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Envelope<BatchSubmitted> {
        Envelope::new(
            "/modelbus/test",
            "k",
            BatchSubmitted {
                dataset: DatasetName::parse("telco-churn").unwrap(),
                spec_digest: Sha256Digest::of(b"s"),
                batch_sha256: Sha256Digest::of(b"b"),
                size_bytes: 1,
                submitted_by: "anonymous".into(),
            },
        )
    }

    #[test]
    fn checked_in_schemas_are_current() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas");
        for (name, schema) in schemas() {
            let path = dir.join(format!("{name}.schema.json"));
            let text = std::fs::read_to_string(&path).unwrap_or_else(|_| {
                panic!(
                    "{} is missing: run `modelbus schemas --out schemas`",
                    path.display()
                )
            });
            let on_disk: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(
                on_disk,
                schema,
                "{} is stale: run `modelbus schemas --out schemas`",
                path.display()
            );
        }
    }

    #[test]
    fn round_trip_keeps_every_attribute() {
        let e = sample().with_subject("telco-churn");
        let back: Envelope<BatchSubmitted> = decode(&e.to_json()).unwrap();
        assert_eq!(back.id, e.id);
        assert_eq!(back.data, e.data);
        assert_eq!(back.event_type, "io.modelbus.data.batch.submitted.v1");
        assert_eq!(back.subject.as_deref(), Some("telco-churn"));
    }

    #[test]
    fn ids_are_deterministic_per_key() {
        assert_eq!(sample().id, sample().id);
        assert_ne!(derive_event_id("a", "k"), derive_event_id("a", "k2"));
        assert_ne!(derive_event_id("a", "k"), derive_event_id("b", "k"));
    }

    #[test]
    fn decode_names_what_is_wrong() {
        let mut v: serde_json::Value = serde_json::from_slice(&sample().to_json()).unwrap();
        v["specversion"] = "0.3".into();
        let e = decode::<BatchSubmitted>(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(e.to_string().contains("specversion"), "{e}");

        let mut v: serde_json::Value = serde_json::from_slice(&sample().to_json()).unwrap();
        v["data"]["batch_sha256"] = "nope".into();
        let e = decode::<BatchSubmitted>(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(e.to_string().contains("sha256"), "{e}");

        let e = decode::<BatchValidated>(&sample().to_json()).unwrap_err();
        assert!(e.to_string().contains("type"), "{e}");

        assert!(matches!(
            decode::<BatchSubmitted>(b"not json"),
            Err(DecodeError::NotCloudEvent(_))
        ));
    }

    #[test]
    fn every_payload_has_a_schema() {
        let s = schemas();
        assert!(s.contains_key("data.batch.validated"));
        assert!(s.len() >= 12);
    }

    #[test]
    fn a_logged_batch_names_its_columns_once_and_reads_back_as_it_was() {
        let record = |id: &str, input: serde_json::Value| PredictionRecord {
            prediction_id: id.into(),
            time: "2026-12-03T10:00:00Z".into(),
            model: ModelName::parse("churn").unwrap(),
            version: 2,
            model_sha256: Sha256Digest::of(b"m"),
            entity: Some(id.into()),
            input: input.as_object().unwrap().clone(),
            probability: 0.25,
            label: "No".into(),
        };
        let batch = InferenceLogged {
            environment: Environment::Production,
            replica: "r1".into(),
            records: vec![
                record(
                    "a",
                    serde_json::json!({"tenure": 3, "contract": "One year"}),
                ),
                record(
                    "b",
                    serde_json::json!({"tenure": null, "contract": "Two year"}),
                ),
                // Other keys: written as an object.
                record("c", serde_json::json!({"tenure": 5})),
            ],
            dropped_before: 4,
        };
        let json = serde_json::to_value(&batch).unwrap();
        assert_eq!(json["columns"], serde_json::json!(["contract", "tenure"]));
        assert_eq!(
            json["records"][0]["input"],
            serde_json::json!(["One year", 3])
        );
        assert_eq!(
            json["records"][1]["input"],
            serde_json::json!(["Two year", null])
        );
        assert_eq!(
            json["records"][2]["input"],
            serde_json::json!({"tenure": 5})
        );
        let back: InferenceLogged = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(back, batch);
        // The older form (every input an object, no columns) still reads.
        let mut objects = json.clone();
        objects.as_object_mut().unwrap().remove("columns");
        for (i, r) in batch.records.iter().enumerate() {
            objects["records"][i]["input"] = serde_json::Value::Object(r.input.clone());
        }
        assert_eq!(
            serde_json::from_value::<InferenceLogged>(objects).unwrap(),
            batch
        );
        // A row that does not fit the columns names the record.
        let mut short = json.clone();
        short["records"][1]["input"] = serde_json::json!(["Two year"]);
        let e = serde_json::from_value::<InferenceLogged>(short)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("records[1].input has 1 values where `columns` names 2"),
            "{e}"
        );
        let mut neither = json.clone();
        neither["records"][0]["input"] = serde_json::json!("tenure=3");
        let e = serde_json::from_value::<InferenceLogged>(neither)
            .unwrap_err()
            .to_string();
        assert!(e.contains("an array of values or an object"), "{e}");
        let mut twice = json;
        twice["columns"] = serde_json::json!(["tenure", "tenure"]);
        let e = serde_json::from_value::<InferenceLogged>(twice)
            .unwrap_err()
            .to_string();
        assert!(e.contains("names \"tenure\" twice"), "{e}");
    }
}
