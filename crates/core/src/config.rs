//! One typed configuration for every service and the CLI.
//!
//! Layers, later ones winning: built-in defaults, a TOML file (`--config FILE`),
//! the conventional `NATS_URL` and `DATABASE_URL`, then one environment variable
//! per key, `MODELBUS_<SECTION>__<KEY>` (values are read as TOML values when they
//! parse as one, as strings otherwise). The whole configuration is validated before
//! any port is bound. Secrets are references (`env://VAR`, `file://PATH`), never
//! literal values, and never printed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The configuration file is not valid (syntax, unknown key, wrong type); the
    /// message carries the line, column and key.
    #[error("invalid configuration file {path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// toml's message with line and column.
        message: String,
    },
    /// An environment variable does not name a known key or has a bad value.
    #[error("invalid environment variable {var}: {message}")]
    Env {
        /// The variable.
        var: String,
        /// What is wrong.
        message: String,
    },
    /// A value is syntactically fine but not acceptable.
    #[error("invalid configuration value `{key}`: {reason}")]
    Invalid {
        /// Dotted key, e.g. `bus.max_deliver`.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A secret reference could not be resolved.
    #[error("cannot resolve secret `{key}` ({reference}): {reason}")]
    Secret {
        /// Dotted key.
        key: String,
        /// The reference, which is safe to print.
        reference: String,
        /// What failed.
        reason: String,
    },
}

/// A reference to a secret: `env://VAR` or `file://PATH`. The reference is
/// printable; the value it resolves to never is.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretRef(String);

impl SecretRef {
    /// Parses a reference; `key` names the configuration key in errors.
    pub fn parse(key: &str, s: &str) -> Result<Self, ConfigError> {
        match s.split_once("://") {
            Some(("env", v)) if !v.is_empty() => Ok(Self(s.to_string())),
            Some(("file", p)) if !p.is_empty() => Ok(Self(s.to_string())),
            _ => Err(ConfigError::Invalid {
                key: key.to_string(),
                reason: "a secret must be a reference, `env://VAR` or `file://PATH`, not a literal value"
                    .into(),
            }),
        }
    }

    /// A reference to a file.
    pub fn file(path: &Path) -> Self {
        Self(format!("file://{}", path.display()))
    }

    /// Reads the secret value.
    pub fn resolve(&self, key: &str) -> Result<Secret, ConfigError> {
        let err = |reason: String| ConfigError::Secret {
            key: key.to_string(),
            reference: self.0.clone(),
            reason,
        };
        match self.0.split_once("://") {
            Some(("env", var)) => std::env::var(var)
                .map(Secret)
                .map_err(|e| err(e.to_string())),
            Some(("file", path)) => std::fs::read_to_string(path)
                .map(Secret)
                .map_err(|e| err(e.to_string())),
            _ => Err(err("unsupported reference".into())),
        }
    }

    /// The file path, for `file://` references.
    pub fn file_path(&self) -> Option<PathBuf> {
        self.0.strip_prefix("file://").map(PathBuf::from)
    }
}

impl std::fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl Serialize for SecretRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        SecretRef::parse("secret", &s).map_err(serde::de::Error::custom)
    }
}

/// A resolved secret value. `Debug` and `Display` print `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value that must not be printed.
    pub fn new(v: impl Into<String>) -> Self {
        Self(v.into())
    }
    /// The value, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A database URL; its password is masked whenever it is printed.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// Wraps a URL.
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }
    /// The URL with credentials, for connecting.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// The URL with any password replaced by `***` (see [`mask_url`]).
    pub fn masked(&self) -> String {
        mask_url(&self.0)
    }
    /// Whether this is a PostgreSQL URL.
    pub fn is_postgres(&self) -> bool {
        self.0.starts_with("postgres://") || self.0.starts_with("postgresql://")
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.masked())
    }
}

impl Serialize for DatabaseUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.masked())
    }
}

impl<'de> Deserialize<'de> for DatabaseUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.starts_with("sqlite:")
            || s.starts_with("postgres://")
            || s.starts_with("postgresql://")
        {
            Ok(Self(s))
        } else {
            Err(serde::de::Error::custom(
                "expected a `sqlite:` or `postgres://` URL",
            ))
        }
    }
}

mod duration {
    use super::*;
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| {
            serde::de::Error::custom(format!("{s:?} is not a duration like \"30s\": {e}"))
        })
    }
}

mod durations {
    use super::*;
    pub fn serialize<S: Serializer>(d: &[Duration], s: S) -> Result<S::Ok, S::Error> {
        let v: Vec<String> = d
            .iter()
            .map(|d| humantime::format_duration(*d).to_string())
            .collect();
        v.serialize(s)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
        let v = Vec::<String>::deserialize(d)?;
        v.iter()
            .map(|s| {
                humantime::parse_duration(s).map_err(|e| {
                    serde::de::Error::custom(format!("{s:?} is not a duration like \"30s\": {e}"))
                })
            })
            .collect()
    }
}

fn addr(s: &str) -> SocketAddr {
    // Only called on the literal defaults below.
    s.parse()
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
}

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Process-wide settings.
    pub general: GeneralConfig,
    /// NATS connection or embedded server.
    pub nats: NatsConfig,
    /// Registry database.
    pub database: DatabaseConfig,
    /// Artifact store.
    pub artifacts: ArtifactsConfig,
    /// Event consumption: redelivery and dead-lettering.
    pub bus: BusConfig,
    /// Registry service.
    pub registry: RegistryConfig,
    /// Ingest service.
    pub ingest: IngestConfig,
    /// Features service.
    pub features: FeaturesConfig,
    /// Trainer service.
    pub trainer: OpsConfig,
    /// Deployer service.
    pub deployer: DeployerConfig,
    /// Serving service.
    pub serving: ServingConfig,
    /// Monitor service.
    pub monitor: MonitorConfig,
    /// Logs and traces.
    pub telemetry: TelemetryConfig,
    /// Limits every HTTP server of the process applies to its clients.
    pub http: HttpConfig,
    /// API tokens of this process's services.
    pub auth: AuthConfig,
    /// What a promotion to production needs.
    pub promotion: PromotionConfig,
    /// How a new version replaces the old one, per environment.
    pub rollout: RolloutConfig,
    /// Where notifications (drift, performance, validation, rollbacks,
    /// refused signatures) are delivered.
    pub notifications: NotificationsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            general: GeneralConfig::default(),
            nats: NatsConfig::default(),
            database: DatabaseConfig::default(),
            artifacts: ArtifactsConfig::default(),
            bus: BusConfig::default(),
            registry: RegistryConfig::default(),
            ingest: IngestConfig::default(),
            features: FeaturesConfig::default(),
            trainer: OpsConfig {
                ops_addr: addr("127.0.0.1:7074"),
            },
            deployer: DeployerConfig::default(),
            serving: ServingConfig::default(),
            monitor: MonitorConfig::default(),
            telemetry: TelemetryConfig::default(),
            http: HttpConfig::default(),
            auth: AuthConfig::default(),
            promotion: PromotionConfig::default(),
            rollout: RolloutConfig::default(),
            notifications: NotificationsConfig::default(),
        }
    }
}

/// API tokens of this process's services: each service presents its own
/// token to the registry, holding only its own role (see
/// [`crate::auth::ServiceIdentity`]). Unset: `<state_dir>/tokens/<service>.token`,
/// which the registry writes (mode 0600) on its first start. A deployment
/// generates each token into a secret that its service and the registry
/// read; the registry registers it on first sight.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Ingest's token (role `ingest-service`), a secret reference.
    pub ingest_token: Option<SecretRef>,
    /// The features service's token (role `features-service`).
    pub features_token: Option<SecretRef>,
    /// The trainer's token (role `trainer-service`).
    pub trainer_token: Option<SecretRef>,
    /// Serving's token (role `serving-service`: token introspection only).
    pub serving_token: Option<SecretRef>,
    /// The monitor's token (role `monitor-service`: reads models and runs).
    pub monitor_token: Option<SecretRef>,
}

impl AuthConfig {
    /// The configured token of a service, if any.
    pub fn token_of(&self, service: crate::auth::ServiceIdentity) -> Option<&SecretRef> {
        use crate::auth::ServiceIdentity::*;
        match service {
            Ingest => self.ingest_token.as_ref(),
            Features => self.features_token.as_ref(),
            Trainer => self.trainer_token.as_ref(),
            Serving => self.serving_token.as_ref(),
            Monitor => self.monitor_token.as_ref(),
        }
    }
}

/// What a promotion to production needs, besides the policy itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PromotionConfig {
    /// How long the same digest must have served in staging
    /// (`MODELBUS_PROMOTION__STAGING_SOAK`).
    #[serde(with = "duration")]
    pub staging_soak: Duration,
    /// Highest staging error rate (server errors / requests) over the soak.
    pub max_staging_error_rate: f64,
    /// Fewest staging requests (that reached the model) over the soak for its
    /// error rate to count; at least 1, so a version nobody called in staging
    /// never passes its soak.
    pub min_staging_requests: u64,
    /// Valid approvals from distinct approvers required.
    pub min_approvals: u32,
    /// Longest validity an approval may claim (`expires_at - issued_at`).
    #[serde(with = "duration")]
    pub max_approval_validity: Duration,
    /// How often the registry re-decides promotions that wait on their soak.
    #[serde(with = "duration")]
    pub evaluate_interval: Duration,
}

impl Default for PromotionConfig {
    fn default() -> Self {
        Self {
            staging_soak: Duration::from_secs(600),
            max_staging_error_rate: 0.01,
            min_staging_requests: 100,
            min_approvals: 2,
            max_approval_validity: Duration::from_secs(30 * 24 * 3600),
            evaluate_interval: Duration::from_secs(5),
        }
    }
}

/// How a new version replaces the old one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RolloutStrategy {
    /// All traffic at once, then a bake time during which it can roll back.
    Direct,
    /// Traffic in weight steps, each baked before the next.
    Canary,
}

/// The rollout of one environment.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RolloutPolicy {
    /// `direct` or `canary`.
    pub strategy: RolloutStrategy,
    /// Canary traffic percentages, increasing, ending at 100.
    pub steps: Vec<u8>,
    /// How long each step (or a direct rollout) is watched before moving on.
    #[serde(with = "duration")]
    pub bake: Duration,
    /// Highest error rate (server errors / requests) of the new version.
    pub max_error_rate: f64,
    /// Highest p99 latency of the new version, milliseconds.
    pub max_p99_ms: f64,
    /// Fewest requests in a step before its error rate can trigger a rollback.
    pub min_requests: u64,
}

impl Default for RolloutPolicy {
    fn default() -> Self {
        Self {
            strategy: RolloutStrategy::Direct,
            steps: vec![10, 50, 100],
            bake: Duration::ZERO,
            max_error_rate: 0.05,
            max_p99_ms: 1000.0,
            min_requests: 1,
        }
    }
}

/// Rollouts per environment.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RolloutConfig {
    /// Staging: direct, no bake, by default.
    pub staging: RolloutPolicy,
    /// Production: direct, no bake, by default; set `canary` with steps and a bake.
    pub production: RolloutPolicy,
}

impl RolloutConfig {
    /// The policy of an environment.
    pub fn of(&self, env: crate::ids::Environment) -> &RolloutPolicy {
        match env {
            crate::ids::Environment::Staging => &self.staging,
            crate::ids::Environment::Production => &self.production,
        }
    }
}

/// Where modelbus tells people what needs them (`[[notifications.receivers]]`):
/// delivered by the notifier (`crates/notify`, hosted by the monitor process)
/// from the events on the bus. Empty (the default): no notifier runs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotificationsConfig {
    /// The receivers, each with its format, URL and the events it wants
    /// (also `MODELBUS_NOTIFICATIONS__RECEIVERS` as a TOML array of inline
    /// tables, like `deployer.trusted_keys`).
    pub receivers: Vec<ReceiverConfig>,
}

/// The wire format a receiver speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReceiverFormat {
    /// Prometheus Alertmanager's v2 API (`POST {url}/api/v2/alerts`), with
    /// labels so its routing, grouping and silences apply.
    Alertmanager,
    /// A Slack-compatible incoming webhook (`{"text", "blocks"}`, mrkdwn).
    Slack,
    /// A CloudEvents 1.0 JSON event (structured mode) signed with
    /// HMAC-SHA256 as Standard Webhooks specifies; needs `secret`.
    Cloudevents,
}

impl ReceiverFormat {
    /// The name used in configuration and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Alertmanager => "alertmanager",
            Self::Slack => "slack",
            Self::Cloudevents => "cloudevents",
        }
    }
}

/// What a notification is about: the events a receiver can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationKind {
    /// `drift.detected`: the monitoring policy found drift in live traffic.
    Drift,
    /// `performance.degraded`: a version performs worse than its evaluation.
    Performance,
    /// `notification.raised` of kind `validation_warning`: a batch passed
    /// with warnings.
    ValidationWarning,
    /// `data.batch.rejected`: a batch failed validation.
    Rejection,
    /// `deployment.rolled_back`: an environment returned to an earlier version.
    Rollback,
    /// `approval.refused`: a signed statement was refused.
    SignatureRefused,
}

impl NotificationKind {
    /// Every kind, in configuration order.
    pub const ALL: [NotificationKind; 6] = [
        Self::Drift,
        Self::Performance,
        Self::ValidationWarning,
        Self::Rejection,
        Self::Rollback,
        Self::SignatureRefused,
    ];

    /// The name used in configuration, metrics and labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Drift => "drift",
            Self::Performance => "performance",
            Self::ValidationWarning => "validation_warning",
            Self::Rejection => "rejection",
            Self::Rollback => "rollback",
            Self::SignatureRefused => "signature_refused",
        }
    }
}

fn all_notification_kinds() -> Vec<NotificationKind> {
    NotificationKind::ALL.to_vec()
}
fn default_repeat_interval() -> Duration {
    Duration::from_secs(4 * 3600)
}
fn default_receiver_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_max_attempts() -> u32 {
    6
}
fn default_receiver_backoff() -> Duration {
    Duration::from_secs(1)
}

/// One receiver of notifications.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverConfig {
    /// Its name: letters, digits, `-` and `_` (a metric label and part of
    /// the de-duplication key).
    pub name: String,
    /// `alertmanager`, `slack` or `cloudevents`.
    pub format: ReceiverFormat,
    /// An `http://` or `https://` URL: Alertmanager's base URL, the webhook's
    /// URL otherwise. Printed only as scheme and host (a webhook URL's path
    /// is often its credential).
    pub url: String,
    /// The kinds it wants; default all of them.
    #[serde(default = "all_notification_kinds")]
    pub events: Vec<NotificationKind>,
    /// HMAC key of `cloudevents` receivers (required there, refused
    /// elsewhere), a secret reference; `whsec_<base64>` is decoded as
    /// Standard Webhooks libraries do, any other value used as bytes.
    #[serde(default)]
    pub secret: Option<SecretRef>,
    /// A PEM file of one or more CA certificates trusted for this receiver's
    /// `https://` URL besides the system's roots: for a receiver whose
    /// certificate a private CA signed. Refused with an `http://` URL (it
    /// would be ignored); read when the notifier starts, which refuses a file
    /// it cannot read or that holds no certificate.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The same notification (receiver, kind, model or dataset, environment,
    /// reasons with their numbers left out) is sent at most once per
    /// interval; Alertmanager alerts end after it unless sent again.
    #[serde(default = "default_repeat_interval", with = "duration")]
    pub repeat_interval: Duration,
    /// Longest one delivery attempt may take.
    #[serde(default = "default_receiver_timeout", with = "duration")]
    pub timeout: Duration,
    /// Attempts per notification, the first included, with exponential
    /// backoff in between (`Retry-After` honoured).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Delay before the first retry; each further one doubles it (at most
    /// 5 minutes), with jitter.
    #[serde(default = "default_receiver_backoff", with = "duration")]
    pub backoff: Duration,
}

impl ReceiverConfig {
    /// The URL safe to print: scheme, host and port only.
    pub fn display_url(&self) -> String {
        match self.url.parse::<axum::http::Uri>() {
            Ok(u) => {
                let host = u.host().unwrap_or("");
                let port = u.port_u16().map(|p| format!(":{p}")).unwrap_or_default();
                let more = u.path_and_query().is_some_and(|p| p.as_str() != "/");
                format!(
                    "{}://{host}{port}{}",
                    u.scheme_str().unwrap_or(""),
                    if more { "/…" } else { "" }
                )
            }
            Err(_) => "(unparsable URL)".into(),
        }
    }
}

/// Why `url` is not an `http://` or `https://` URL with a host (the reason
/// never repeats the URL, whose path may be a credential).
pub fn check_receiver_url(url: &str) -> Result<(), String> {
    let u = url
        .parse::<axum::http::Uri>()
        .map_err(|e| format!("does not parse as a URL ({e})"))?;
    match u.scheme_str() {
        Some("http") | Some("https") => {}
        Some(other) => {
            return Err(format!(
                "scheme `{}` is not http or https",
                other.chars().take(16).collect::<String>()
            ));
        }
        None => return Err("is not an absolute http:// or https:// URL".into()),
    }
    match u.host() {
        Some(h) if !h.is_empty() => Ok(()),
        _ => Err("has no host".into()),
    }
}

impl NotificationsConfig {
    /// Checks every receiver, naming the key (`notifications.receivers[i].url`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: String, reason: &str| ConfigError::Invalid {
            key,
            reason: reason.into(),
        };
        if self.receivers.len() > 64 {
            return Err(invalid(
                "notifications.receivers".into(),
                "at most 64 receivers",
            ));
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, r) in self.receivers.iter().enumerate() {
            let key = |k: &str| format!("notifications.receivers[{i}].{k}");
            if !is_valid_nats_user(&r.name) {
                return Err(invalid(
                    key("name"),
                    "must be 1 to 64 letters, digits, `-` or `_`",
                ));
            }
            if !names.insert(r.name.as_str()) {
                return Err(invalid(
                    key("name"),
                    &format!("`{}` names two receivers", r.name),
                ));
            }
            check_receiver_url(&r.url).map_err(|reason| invalid(key("url"), &reason))?;
            if r.events.is_empty() {
                return Err(invalid(
                    key("events"),
                    "must list at least one of drift, performance, validation_warning, rejection, rollback, signature_refused (leave it out for all)",
                ));
            }
            match (r.format, &r.secret) {
                (ReceiverFormat::Cloudevents, None) => {
                    return Err(invalid(
                        key("secret"),
                        "a cloudevents receiver needs a secret reference (`env://VAR` or `file://PATH`) to sign with",
                    ));
                }
                (ReceiverFormat::Alertmanager | ReceiverFormat::Slack, Some(_)) => {
                    return Err(invalid(
                        key("secret"),
                        &format!(
                            "only cloudevents receivers sign; a {} receiver would ignore it",
                            r.format.as_str()
                        ),
                    ));
                }
                _ => {}
            }
            if r.ca_file.is_some()
                && r.url
                    .trim()
                    .parse::<axum::http::Uri>()
                    .ok()
                    .and_then(|u| u.scheme_str().map(|s| s.eq_ignore_ascii_case("https")))
                    != Some(true)
            {
                return Err(invalid(
                    key("ca_file"),
                    "only an https:// receiver uses a CA file; this one's URL is not https",
                ));
            }
            if r.ca_file.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                return Err(invalid(key("ca_file"), "is empty"));
            }
            if r.repeat_interval < Duration::from_secs(1)
                || r.repeat_interval > Duration::from_secs(30 * 24 * 3600)
            {
                return Err(invalid(
                    key("repeat_interval"),
                    "must be between 1s and 30 days",
                ));
            }
            if r.timeout < Duration::from_millis(100) || r.timeout > Duration::from_secs(300) {
                return Err(invalid(key("timeout"), "must be between 100ms and 5m"));
            }
            if r.max_attempts == 0 || r.max_attempts > 20 {
                return Err(invalid(key("max_attempts"), "must be between 1 and 20"));
            }
            if r.backoff < Duration::from_millis(10) || r.backoff > Duration::from_secs(60) {
                return Err(invalid(key("backoff"), "must be between 10ms and 1m"));
            }
        }
        Ok(())
    }
}

/// Limits every HTTP server (registry, ingest, serving, the operations
/// endpoints) applies to its clients, so a slow or idle client cannot hold
/// connections, tasks or half-uploaded temporary files for ever.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Longest a client may take to send a request's headers, counted from
    /// the moment the connection is accepted or the previous response was
    /// sent: it also closes idle keep-alive connections.
    #[serde(with = "duration")]
    pub header_read_timeout: Duration,
    /// Longest a request body may pause between two pieces; an upload that
    /// stalls longer is dropped (and its temporary file removed).
    #[serde(with = "duration")]
    pub body_idle_timeout: Duration,
    /// Most connections one listener serves at once; further clients wait in
    /// the kernel's accept queue until one closes.
    pub max_connections: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            body_idle_timeout: Duration::from_secs(30),
            max_connections: 1024,
        }
    }
}

/// Process-wide settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GeneralConfig {
    /// Where the embedded defaults keep their state: SQLite database, artifacts,
    /// NATS store, generated keys.
    pub state_dir: PathBuf,
    /// Code revision recorded in lineage; defaults to the build's git revision.
    pub code_revision: Option<String>,
}

impl Default for GeneralConfig {
    fn default() -> Self {
        Self {
            state_dir: PathBuf::from(".modelbus"),
            code_revision: None,
        }
    }
}

/// NATS connection.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    /// Server to connect to (also `NATS_URL`). Unset: `modelbus up` starts and
    /// supervises its own pinned nats-server under the state dir.
    pub url: Option<String>,
    /// nats-server binary for the embedded server; default: `.tools/bin/nats-server`
    /// if present, else `nats-server` on the PATH.
    pub server_binary: Option<PathBuf>,
    /// How long to wait for the server at start-up.
    #[serde(with = "duration")]
    pub connect_timeout: Duration,
    /// User this process authenticates as (also `MODELBUS_NATS__USER`). A server
    /// configured with `deploy/nats/permissions.conf` has one user per service, each
    /// allowed only its own subjects and KV buckets; the name also picks the reply
    /// inbox prefix (`_INBOX_<user>`), so it is limited to letters, digits, `-` and
    /// `_`. Unset: connect without credentials (the embedded server has no
    /// authorization).
    pub user: Option<String>,
    /// Password of `user`, as a secret reference (`env://VAR` or `file://PATH`;
    /// also `MODELBUS_NATS__PASSWORD`). A trailing newline in the file is ignored.
    pub password: Option<SecretRef>,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            url: None,
            server_binary: None,
            connect_timeout: Duration::from_secs(10),
            user: None,
            password: None,
        }
    }
}

/// Resolved NATS credentials: what [`crate::bus::Bus::connect_with`] presents to
/// the server. `Debug` never shows the password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsCredentials {
    /// User name.
    pub user: String,
    /// Password, if the user has one.
    pub password: Option<Secret>,
}

impl NatsCredentials {
    /// Credentials from a user and an optional password.
    pub fn new(user: impl Into<String>, password: Option<Secret>) -> Self {
        Self {
            user: user.into(),
            password,
        }
    }
}

/// Whether `user` can be a NATS user name here: non-empty, letters, digits, `-`
/// and `_` only, since it becomes part of the reply subject prefix `_INBOX_<user>`.
pub fn is_valid_nats_user(user: &str) -> bool {
    !user.is_empty()
        && user.len() <= 64
        && user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Registry database.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `postgres://...` or `sqlite:...` (also `DATABASE_URL`). Unset: SQLite at
    /// `<state_dir>/registry.db`.
    pub url: Option<DatabaseUrl>,
}

/// Artifact store.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArtifactsConfig {
    /// A directory or `file://` URL. Unset: `<state_dir>/artifacts`.
    pub location: Option<String>,
}

/// Event consumption settings shared by every service.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BusConfig {
    /// Deliveries before an event goes to the dead-letter stream.
    pub max_deliver: i64,
    /// How long a handler may hold an event before it is redelivered (handlers
    /// that run longer report progress).
    #[serde(with = "duration")]
    pub ack_wait: Duration,
    /// Delay before each redelivery after a failure; the last entry repeats.
    #[serde(with = "durations")]
    pub backoff: Vec<Duration>,
    /// Window in which a republished event id is dropped by the server.
    #[serde(with = "duration")]
    pub duplicate_window: Duration,
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            max_deliver: 5,
            ack_wait: Duration::from_secs(30),
            backoff: vec![
                Duration::from_secs(1),
                Duration::from_secs(5),
                Duration::from_secs(15),
                Duration::from_secs(30),
            ],
            duplicate_window: Duration::from_secs(120),
        }
    }
}

/// Registry service.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryConfig {
    /// HTTP JSON API and operations endpoints.
    pub http_addr: SocketAddr,
    /// gRPC API.
    pub grpc_addr: SocketAddr,
    /// How other services and the CLI reach the gRPC API; default from `grpc_addr`.
    pub grpc_url: Option<String>,
    /// How the CLI reaches the HTTP API; default from `http_addr`.
    pub http_url: Option<String>,
    /// Largest `limit` a list route accepts (`/v1/pipeline-runs`, `/v1/audit`,
    /// `/v1/models`, `/v1/datasets`); a larger one is refused with 400, so one
    /// request cannot make the registry read a whole table into memory.
    pub max_list_limit: u32,
    /// Most audit entries one evidence bundle may carry (the chain from the
    /// version's first audit entry to its last); a longer one is refused
    /// with a message saying so, instead of reading it all into memory.
    pub max_evidence_entries: u32,
    /// Private key (PKCS#8 PEM) the registry signs staging promotions with.
    /// Unset: `<state_dir>/keys/automation.pem`, generated on first start.
    pub automation_key: Option<SecretRef>,
    /// Directory of Rego promotion policies (`*.rego`, tests in `*_test.rego`).
    /// Unset: the policy shipped in the binary (`policies/promotion.rego`).
    pub policies_dir: Option<PathBuf>,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            http_addr: addr("127.0.0.1:7070"),
            grpc_addr: addr("127.0.0.1:7071"),
            grpc_url: None,
            http_url: None,
            max_list_limit: 1000,
            max_evidence_entries: 100_000,
            automation_key: None,
            policies_dir: None,
        }
    }
}

/// Ingest service.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// HTTP upload endpoint and operations endpoints.
    pub http_addr: SocketAddr,
    /// How the CLI reaches ingest; default from `http_addr`.
    pub url: Option<String>,
    /// Largest accepted batch; larger uploads are refused and nothing is kept.
    pub max_batch_bytes: u64,
    /// Rows per Arrow record batch while validating: bounds validation memory.
    pub chunk_rows: usize,
    /// Largest accepted label file (it is checked in memory).
    pub max_label_bytes: u64,
    /// Most labels in one file.
    pub max_label_rows: u64,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            http_addr: addr("127.0.0.1:7072"),
            url: None,
            max_batch_bytes: 4 * 1024 * 1024 * 1024,
            chunk_rows: 16_384,
            max_label_bytes: 64 * 1024 * 1024,
            max_label_rows: 1_000_000,
        }
    }
}

/// Features service. It holds a whole batch in memory (typed columns, the
/// feature matrix) to fit and encode it, so it refuses, before reading any of
/// it, a batch above either limit: the run fails with a reason naming the key.
/// Ingest accepts larger batches (`ingest.max_batch_bytes`) because validation
/// streams.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeaturesConfig {
    /// Operations endpoints.
    pub ops_addr: SocketAddr,
    /// Largest batch, in stored bytes, the stage builds a feature set from.
    pub max_batch_bytes: u64,
    /// Most data rows in a batch the stage builds a feature set from.
    pub max_rows: u64,
}

impl Default for FeaturesConfig {
    fn default() -> Self {
        Self {
            ops_addr: addr("127.0.0.1:7073"),
            max_batch_bytes: 1024 * 1024 * 1024,
            max_rows: 5_000_000,
        }
    }
}

/// Monitor service: windows of live traffic compared with the served
/// version's training reference.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MonitorConfig {
    /// Operations endpoints.
    pub ops_addr: SocketAddr,
    /// Predictions after which a window closes.
    pub window_rows: u64,
    /// Time after its first prediction at which a window closes, whichever
    /// of the two comes first.
    #[serde(with = "duration")]
    pub window_duration: Duration,
    /// Fewest values a column needs in a window to be tested; a smaller window
    /// is reported but decides nothing (the policy's `settings.min_rows`).
    pub min_rows: u64,
    /// Share of drifted columns at or above which the data set has drifted.
    pub drift_share: f64,
    /// Most windows open at once (environment × model × version); a record
    /// for a further one is counted and skipped.
    pub max_open_windows: usize,
    /// How long before a label's time its prediction may be: a label joined
    /// by entity goes to the entity's latest prediction in this span; older
    /// predictions are counted as outside the window, not labelled.
    #[serde(with = "duration")]
    pub label_window: Duration,
    /// How long the registry keeps the prediction index and the joined
    /// labels (at least `label_window`, so every label can still find its
    /// prediction): older ones are pruned as windows close. A window's
    /// figures stay; only recomputing them from old labels is no longer
    /// possible.
    #[serde(with = "duration")]
    pub index_retention: Duration,
    /// Bytes of logged records (id and input) a window keeps for retraining;
    /// records beyond are not kept (counted). 0 keeps none.
    pub max_record_bytes: u64,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        Self {
            ops_addr: addr("127.0.0.1:7076"),
            window_rows: 1_000,
            window_duration: Duration::from_secs(3600),
            min_rows: 100,
            drift_share: 0.5,
            max_open_windows: 1_000,
            label_window: Duration::from_secs(30 * 24 * 3600),
            index_retention: Duration::from_secs(90 * 24 * 3600),
            max_record_bytes: 16 * 1024 * 1024,
        }
    }
}

/// A service whose only HTTP surface is operations (`/healthz`, `/readyz`, `/metrics`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpsConfig {
    /// Operations endpoints.
    pub ops_addr: SocketAddr,
}

/// A public key the deployer trusts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedKey {
    /// Who holds the private half (`registry-automation` for the registry's key).
    pub id: String,
    /// SPKI PEM file.
    pub public_key_file: PathBuf,
    /// What the key may approve.
    #[serde(default = "default_envs")]
    pub environments: Vec<crate::ids::Environment>,
    /// `approver` (signs promotions), `operator` (signs rollbacks) or `admin`
    /// (both); the registry's automation key is an approver for staging.
    #[serde(default = "default_key_role")]
    pub role: crate::auth::Role,
}

fn default_key_role() -> crate::auth::Role {
    crate::auth::Role::Approver
}

fn default_envs() -> Vec<crate::ids::Environment> {
    vec![crate::ids::Environment::Staging]
}

/// Deployer service.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeployerConfig {
    /// Operations endpoints.
    pub ops_addr: SocketAddr,
    /// Keys whose signatures the deployer accepts. Empty: the registry's automation
    /// key from the state dir, for staging only.
    pub trusted_keys: Vec<TrustedKey>,
}

impl Default for DeployerConfig {
    fn default() -> Self {
        Self {
            ops_addr: addr("127.0.0.1:7075"),
            trusted_keys: Vec::new(),
        }
    }
}

/// Serving service.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServingConfig {
    /// Staging prediction endpoint.
    pub staging_addr: SocketAddr,
    /// Production prediction endpoint.
    pub production_addr: SocketAddr,
    /// Largest prediction request body.
    pub max_request_bytes: usize,
    /// Most records (v1 `instances`, OIP v2 rows) one prediction request may
    /// carry; more is refused with 413 before any work is done.
    pub max_rows_per_request: usize,
    /// Most input tensors one OIP v2 request may carry.
    pub max_inputs_per_request: usize,
    /// Most cells (rows × columns) one OIP v2 request may expand to.
    pub max_cells_per_request: usize,
    /// Replica id reported in events; default: host name and process id.
    pub replica_id: Option<String>,
    /// How often each replica publishes `serving.stats` (request counts, errors,
    /// p99 latency per served version): the evidence of soaks and rollbacks.
    #[serde(with = "duration")]
    pub stats_interval: Duration,
    /// Whether prediction and model endpoints need a bearer token with the
    /// `viewer` role (checked with the registry, cached for `token_cache`).
    /// Off by default: serving sits behind the caller's own gateway, and a
    /// token sent anyway is ignored.
    pub require_token: bool,
    /// How long serving trusts a token the registry accepted (a revoked token
    /// keeps working at most this long).
    #[serde(with = "duration")]
    pub token_cache: Duration,
    /// Whether answered predictions are logged to the `MODELBUS_INFERENCE`
    /// stream for the monitor (`inference.logged`).
    pub log_predictions: bool,
    /// Share of predictions logged, 0 to 1, chosen by prediction id (the same
    /// id is always in or out; see the serving docs).
    pub log_sample_rate: f64,
    /// Records waiting to be published; beyond this, new records are dropped
    /// and counted (`modelbus_serving_log_dropped_total`), never blocking a request.
    pub log_buffer_records: usize,
    /// Most records in one `inference.logged` event.
    pub log_batch_records: usize,
    /// Most bytes of records in one `inference.logged` event (under the NATS
    /// server's `max_payload`, 1 MiB by default).
    pub log_batch_bytes: usize,
    /// Longest a record waits before its batch is published.
    #[serde(with = "duration")]
    pub log_flush_interval: Duration,
    /// How long the inference stream keeps records.
    #[serde(with = "duration")]
    pub log_max_age: Duration,
    /// Most bytes the inference stream keeps (oldest dropped first).
    pub log_max_bytes: u64,
}

impl Default for ServingConfig {
    fn default() -> Self {
        Self {
            staging_addr: addr("127.0.0.1:7080"),
            production_addr: addr("127.0.0.1:7081"),
            max_request_bytes: 8 * 1024 * 1024,
            max_rows_per_request: 10_000,
            max_inputs_per_request: 1_024,
            max_cells_per_request: 1_000_000,
            replica_id: None,
            stats_interval: Duration::from_secs(10),
            require_token: false,
            token_cache: Duration::from_secs(30),
            log_predictions: true,
            log_sample_rate: 1.0,
            log_buffer_records: 100_000,
            log_batch_records: 500,
            log_batch_bytes: 512 * 1024,
            log_flush_interval: Duration::from_millis(500),
            log_max_age: Duration::from_secs(7 * 24 * 3600),
            log_max_bytes: 1 << 30,
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Logs and traces.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// `text` or `json`.
    pub log_format: LogFormat,
    /// A tracing filter, e.g. `info` or `info,modelbus_ingest=debug`.
    pub log_level: String,
    /// OTLP/gRPC endpoint for traces (e.g. `http://127.0.0.1:4317`); unset: no export.
    pub otlp_endpoint: Option<String>,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Text,
            log_level: "info".into(),
            otlp_endpoint: None,
        }
    }
}

impl Config {
    /// Loads the configuration from an optional file and the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::load_from(file, &env)
    }

    /// Loads from an optional file and the given environment (tests pass their own).
    pub fn load_from(file: Option<&Path>, env: &[(String, String)]) -> Result<Self, ConfigError> {
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                let table: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::File {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                })?;
                // Deserialise the file on its own first so its errors carry its lines.
                toml::from_str::<Config>(&text).map_err(|e| ConfigError::File {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                })?;
                table
            }
            None => toml::Table::new(),
        };

        let mut overrides: Vec<(String, String, String, toml::Value)> = Vec::new();
        for (var, raw) in env {
            let (section, key) = match var.as_str() {
                "NATS_URL" => ("nats".to_string(), "url".to_string()),
                "DATABASE_URL" => ("database".to_string(), "url".to_string()),
                v => match v.strip_prefix("MODELBUS_").and_then(|r| r.split_once("__")) {
                    Some((s, k)) => (s.to_ascii_lowercase(), k.to_ascii_lowercase()),
                    None => continue,
                },
            };
            if raw.is_empty() {
                continue;
            }
            let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or_else(|| toml::Value::String(raw.clone()));
            overrides.push((var.clone(), section, key, value));
        }
        // Conventional variables first so that MODELBUS_* wins over them.
        overrides.sort_by_key(|(var, ..)| var.starts_with("MODELBUS_"));
        for (var, section, key, value) in overrides {
            let entry = table
                .entry(section.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            let Some(sec) = entry.as_table_mut() else {
                return Err(ConfigError::Env {
                    var,
                    message: format!("`{section}` is not a section"),
                });
            };
            sec.insert(key.clone(), value);
            Config::deserialize(toml::Value::Table(table.clone())).map_err(|e| {
                ConfigError::Env {
                    var: var.clone(),
                    message: format!("key `{section}.{key}`: {}", e.message()),
                }
            })?;
        }
        let config =
            Config::deserialize(toml::Value::Table(table)).map_err(|e| ConfigError::Invalid {
                key: "(configuration)".into(),
                reason: e.to_string(),
            })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, reason: &str| ConfigError::Invalid {
            key: key.into(),
            reason: reason.into(),
        };
        if self.bus.max_deliver < 1 {
            return Err(invalid("bus.max_deliver", "must be at least 1"));
        }
        if self.bus.backoff.is_empty() {
            return Err(invalid("bus.backoff", "must list at least one delay"));
        }
        if self.bus.ack_wait < Duration::from_secs(1) {
            return Err(invalid("bus.ack_wait", "must be at least 1s"));
        }
        if self.ingest.max_batch_bytes == 0 {
            return Err(invalid("ingest.max_batch_bytes", "must be positive"));
        }
        if self.http.header_read_timeout < Duration::from_millis(100) {
            return Err(invalid(
                "http.header_read_timeout",
                "must be at least 100ms",
            ));
        }
        if self.http.body_idle_timeout < Duration::from_millis(100) {
            return Err(invalid("http.body_idle_timeout", "must be at least 100ms"));
        }
        if self.http.max_connections == 0 || self.http.max_connections > 1_000_000 {
            return Err(invalid(
                "http.max_connections",
                "must be between 1 and 1000000",
            ));
        }
        if self.registry.max_list_limit == 0 || self.registry.max_list_limit > 100_000 {
            return Err(invalid(
                "registry.max_list_limit",
                "must be between 1 and 100000",
            ));
        }
        if self.registry.max_evidence_entries == 0 {
            return Err(invalid("registry.max_evidence_entries", "must be positive"));
        }
        if self.features.max_batch_bytes == 0 {
            return Err(invalid("features.max_batch_bytes", "must be positive"));
        }
        if self.features.max_rows == 0 {
            return Err(invalid("features.max_rows", "must be positive"));
        }
        if self.ingest.chunk_rows == 0 || self.ingest.chunk_rows > 10_000_000 {
            return Err(invalid(
                "ingest.chunk_rows",
                "must be between 1 and 10000000",
            ));
        }
        if let Some(url) = &self.nats.url
            && !(url.starts_with("nats://") || url.starts_with("tls://") || !url.contains("://"))
        {
            return Err(invalid("nats.url", "expected nats://host:port"));
        }
        match (&self.nats.user, &self.nats.password) {
            (None, Some(_)) => {
                return Err(invalid(
                    "nats.password",
                    "is set but nats.user is not; a password needs its user (MODELBUS_NATS__USER)",
                ));
            }
            (Some(user), _) if !is_valid_nats_user(user) => {
                return Err(invalid(
                    "nats.user",
                    "must be 1 to 64 letters, digits, `-` or `_` (it prefixes the reply inbox)",
                ));
            }
            _ => {}
        }
        if !(0.0..=1.0).contains(&self.promotion.max_staging_error_rate) {
            return Err(invalid(
                "promotion.max_staging_error_rate",
                "must be between 0 and 1",
            ));
        }
        for (key, value) in [
            ("serving.max_request_bytes", self.serving.max_request_bytes),
            (
                "serving.max_rows_per_request",
                self.serving.max_rows_per_request,
            ),
            (
                "serving.max_inputs_per_request",
                self.serving.max_inputs_per_request,
            ),
            (
                "serving.max_cells_per_request",
                self.serving.max_cells_per_request,
            ),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be positive"));
            }
        }
        if self.promotion.min_staging_requests == 0 {
            return Err(invalid(
                "promotion.min_staging_requests",
                "must be at least 1: a soak without staging traffic proves nothing",
            ));
        }
        if self.monitor.window_rows == 0 || self.monitor.window_rows > 1_000_000 {
            return Err(invalid(
                "monitor.window_rows",
                "must be between 1 and 1000000",
            ));
        }
        // Open windows keep their numbers until they close: bound what all of
        // them may hold together (about 8 bytes per value and feature).
        if self
            .monitor
            .window_rows
            .saturating_mul(self.monitor.max_open_windows as u64)
            > 50_000_000
        {
            return Err(invalid(
                "monitor.max_open_windows",
                "times monitor.window_rows must be at most 50000000 (the rows open windows may hold together)",
            ));
        }
        if self.monitor.window_duration < Duration::from_secs(1) {
            return Err(invalid("monitor.window_duration", "must be at least 1s"));
        }
        if self.monitor.min_rows == 0 {
            return Err(invalid("monitor.min_rows", "must be at least 1"));
        }
        if !(self.monitor.drift_share > 0.0 && self.monitor.drift_share <= 1.0) {
            return Err(invalid("monitor.drift_share", "must be in (0, 1]"));
        }
        if self.monitor.max_record_bytes > 256 * 1024 * 1024 {
            return Err(invalid(
                "monitor.max_record_bytes",
                "must be at most 256 MiB (each open window may hold that much)",
            ));
        }
        if self.monitor.label_window < Duration::from_secs(1) {
            return Err(invalid("monitor.label_window", "must be at least 1s"));
        }
        if self.monitor.index_retention < self.monitor.label_window {
            return Err(invalid(
                "monitor.index_retention",
                &format!(
                    "must be at least monitor.label_window ({}): a label could not find its prediction",
                    humantime::format_duration(self.monitor.label_window)
                ),
            ));
        }
        if self.ingest.max_label_bytes == 0 || self.ingest.max_label_bytes > 1024 * 1024 * 1024 {
            return Err(invalid(
                "ingest.max_label_bytes",
                "must be between 1 byte and 1 GiB (a label file is checked in memory)",
            ));
        }
        if self.ingest.max_label_rows == 0 || self.ingest.max_label_rows > 10_000_000 {
            return Err(invalid(
                "ingest.max_label_rows",
                "must be between 1 and 10000000",
            ));
        }
        if self.monitor.max_open_windows == 0 {
            return Err(invalid("monitor.max_open_windows", "must be at least 1"));
        }
        if !(0.0..=1.0).contains(&self.serving.log_sample_rate) {
            return Err(invalid(
                "serving.log_sample_rate",
                "must be between 0 and 1",
            ));
        }
        for (key, value, max) in [
            (
                "serving.log_buffer_records",
                self.serving.log_buffer_records,
                10_000_000,
            ),
            (
                "serving.log_batch_records",
                self.serving.log_batch_records,
                100_000,
            ),
            (
                "serving.log_batch_bytes",
                self.serving.log_batch_bytes,
                8 << 20,
            ),
        ] {
            if value == 0 || value > max {
                return Err(invalid(key, &format!("must be between 1 and {max}")));
            }
        }
        if self.serving.log_flush_interval < Duration::from_millis(10) {
            return Err(invalid(
                "serving.log_flush_interval",
                "must be at least 10ms",
            ));
        }
        if self.serving.log_max_age < Duration::from_secs(60) {
            return Err(invalid("serving.log_max_age", "must be at least 1m"));
        }
        if self.serving.log_max_bytes < 1 << 20 {
            return Err(invalid("serving.log_max_bytes", "must be at least 1 MiB"));
        }
        if self.serving.stats_interval < Duration::from_millis(100) {
            return Err(invalid("serving.stats_interval", "must be at least 100ms"));
        }
        if self.promotion.min_approvals == 0 || self.promotion.min_approvals > 10 {
            return Err(invalid(
                "promotion.min_approvals",
                "must be between 1 and 10",
            ));
        }
        if self.promotion.evaluate_interval < Duration::from_millis(100) {
            return Err(invalid(
                "promotion.evaluate_interval",
                "must be at least 100ms",
            ));
        }
        for (key, r) in [
            ("rollout.staging", &self.rollout.staging),
            ("rollout.production", &self.rollout.production),
        ] {
            if r.strategy == RolloutStrategy::Canary {
                let ok = !r.steps.is_empty()
                    && r.steps.windows(2).all(|w| w[0] < w[1])
                    && r.steps.first().is_some_and(|s| *s > 0)
                    && r.steps.last() == Some(&100);
                if !ok {
                    return Err(invalid(
                        &format!("{key}.steps"),
                        "must be increasing percentages above 0 ending at 100, like [10, 50, 100]",
                    ));
                }
                if r.bake.is_zero() {
                    return Err(invalid(
                        &format!("{key}.bake"),
                        "a canary needs a bake time per step (like \"5m\"): with none, no step is ever watched",
                    ));
                }
            }
            if !r.bake.is_zero() && r.bake < self.serving.stats_interval {
                return Err(invalid(
                    &format!("{key}.bake"),
                    &format!(
                        "{} is shorter than serving.stats_interval ({}): a step would end before serving reports on it",
                        humantime::format_duration(r.bake),
                        humantime::format_duration(self.serving.stats_interval)
                    ),
                ));
            }
            if !(0.0..=1.0).contains(&r.max_error_rate) {
                return Err(invalid(
                    &format!("{key}.max_error_rate"),
                    "must be between 0 and 1",
                ));
            }
            if r.max_p99_ms.is_nan() || r.max_p99_ms <= 0.0 {
                return Err(invalid(&format!("{key}.max_p99_ms"), "must be positive"));
            }
        }
        if self.telemetry.log_level.trim().is_empty() {
            return Err(invalid("telemetry.log_level", "must not be empty"));
        }
        self.notifications.validate()?;
        let addrs = [
            ("registry.http_addr", self.registry.http_addr),
            ("registry.grpc_addr", self.registry.grpc_addr),
            ("ingest.http_addr", self.ingest.http_addr),
            ("features.ops_addr", self.features.ops_addr),
            ("trainer.ops_addr", self.trainer.ops_addr),
            ("deployer.ops_addr", self.deployer.ops_addr),
            ("serving.staging_addr", self.serving.staging_addr),
            ("serving.production_addr", self.serving.production_addr),
            ("monitor.ops_addr", self.monitor.ops_addr),
        ];
        for (i, (ka, a)) in addrs.iter().enumerate() {
            for (kb, b) in &addrs[i + 1..] {
                if a.port() != 0 && a == b {
                    return Err(invalid(kb, &format!("same address as {ka} ({a})")));
                }
            }
        }
        Ok(())
    }

    /// Directory of the local artifact store, or the configured location.
    pub fn artifact_location(&self) -> String {
        self.artifacts.location.clone().unwrap_or_else(|| {
            self.general
                .state_dir
                .join("artifacts")
                .display()
                .to_string()
        })
    }

    /// The database URL in force.
    pub fn database_url(&self) -> DatabaseUrl {
        self.database.url.clone().unwrap_or_else(|| {
            DatabaseUrl::new(format!(
                "sqlite://{}?mode=rwc",
                self.general.state_dir.join("registry.db").display()
            ))
        })
    }

    /// Where the registry's automation key lives.
    pub fn automation_key_ref(&self) -> SecretRef {
        self.registry
            .automation_key
            .clone()
            .unwrap_or_else(|| SecretRef::file(&self.automation_key_path()))
    }

    /// Where a service's token comes from: its configured reference, else the
    /// file the registry writes under the state dir.
    pub fn service_token_ref(&self, service: crate::auth::ServiceIdentity) -> SecretRef {
        self.auth
            .token_of(service)
            .cloned()
            .unwrap_or_else(|| SecretRef::file(&self.service_token_path(service)))
    }

    /// The configuration key naming a service's token, for messages.
    pub fn service_token_key(service: crate::auth::ServiceIdentity) -> String {
        format!("auth.{}_token", service.name())
    }

    /// A function that reads a service's token when first needed (the
    /// registry may write the file after the service starts) and keeps it.
    pub fn service_token_source(
        &self,
        service: crate::auth::ServiceIdentity,
    ) -> std::sync::Arc<dyn Fn() -> Option<String> + Send + Sync> {
        let reference = self.service_token_ref(service);
        let key = Self::service_token_key(service);
        let cache: std::sync::Arc<std::sync::OnceLock<String>> = Default::default();
        std::sync::Arc::new(move || {
            if let Some(t) = cache.get() {
                return Some(t.clone());
            }
            let secret = reference.resolve(&key).ok()?;
            let token = secret.expose().trim().to_string();
            if token.is_empty() {
                return None;
            }
            Some(cache.get_or_init(|| token).clone())
        })
    }

    /// The file a service's token is written to when none is configured.
    pub fn service_token_path(&self, service: crate::auth::ServiceIdentity) -> PathBuf {
        self.general
            .state_dir
            .join("tokens")
            .join(format!("{}.token", service.name()))
    }

    /// Where the registry writes the first admin token.
    pub fn admin_token_path(&self) -> PathBuf {
        self.general.state_dir.join("admin.token")
    }

    /// Default location of the generated automation private key.
    pub fn automation_key_path(&self) -> PathBuf {
        self.general.state_dir.join("keys").join("automation.pem")
    }

    /// The NATS credentials in force, with the password resolved; `None` without
    /// `nats.user`.
    pub fn nats_credentials(&self) -> Result<Option<NatsCredentials>, ConfigError> {
        let Some(user) = &self.nats.user else {
            return Ok(None);
        };
        let password = match &self.nats.password {
            Some(r) => {
                let s = r.resolve("nats.password")?;
                // Files written by `echo` or editors end in a newline the server
                // would take as part of the password.
                let value = s.expose().trim_end_matches(['\n', '\r']);
                // A server whose password variable is empty lets that user in with
                // an empty password; never be the client that relies on it.
                if value.is_empty() {
                    return Err(ConfigError::Secret {
                        key: "nats.password".into(),
                        reference: r.0.clone(),
                        reason: "resolves to an empty password".into(),
                    });
                }
                Some(Secret::new(value))
            }
            None => None,
        };
        Ok(Some(NatsCredentials::new(user.clone(), password)))
    }

    /// gRPC endpoint of the registry for clients.
    pub fn registry_grpc_url(&self) -> String {
        self.registry
            .grpc_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", connectable(self.registry.grpc_addr)))
    }

    /// HTTP endpoint of the registry for clients.
    pub fn registry_http_url(&self) -> String {
        self.registry
            .http_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", connectable(self.registry.http_addr)))
    }

    /// HTTP endpoint of ingest for clients.
    pub fn ingest_url(&self) -> String {
        self.ingest
            .url
            .clone()
            .unwrap_or_else(|| format!("http://{}", connectable(self.ingest.http_addr)))
    }

    /// The code revision recorded in lineage.
    pub fn code_revision(&self) -> String {
        self.general
            .code_revision
            .clone()
            .or_else(|| option_env!("MODELBUS_GIT_REVISION").map(str::to_string))
            .unwrap_or_else(|| format!("modelbus-{}", env!("CARGO_PKG_VERSION")))
    }

    /// The configuration as TOML, with secrets masked: safe to print.
    pub fn to_redacted_toml(&self) -> String {
        let mut shown = self.clone();
        shown.nats.url = shown.nats.url.as_deref().map(mask_url);
        for r in &mut shown.notifications.receivers {
            r.url = r.display_url();
        }
        toml::to_string_pretty(&shown).unwrap_or_default()
    }
}

/// A URL safe to print: the password of its user info (`user:***@host`) and
/// the value of every query parameter that can carry a credential
/// (`password`, `sslpassword`, `token`, `secret`, `key`, ... case-insensitive)
/// are replaced by `***`. A user info without `:` is a token for some servers
/// (`nats://TOKEN@host`), so it is masked whole.
pub fn mask_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let (main, query) = match rest.split_once('?') {
        Some((m, q)) => (m, Some(q)),
        None => (rest, None),
    };
    // User info ends at the last `@` before the path.
    let authority_end = main.find('/').unwrap_or(main.len());
    let main = match main[..authority_end].rfind('@') {
        Some(at) => {
            let userinfo = &main[..at];
            let masked = match userinfo.split_once(':') {
                Some((user, _)) => format!("{user}:***"),
                None => "***".to_string(),
            };
            format!("{masked}{}", &main[at..])
        }
        None => main.to_string(),
    };
    let mut out = match scheme {
        Some(scheme) => format!("{scheme}://{main}"),
        None => main,
    };
    if let Some(q) = query {
        let sensitive = |k: &str| {
            let k = k.to_ascii_lowercase();
            [
                "pass",
                "pwd",
                "token",
                "secret",
                "key",
                "auth",
                "credential",
            ]
            .iter()
            .any(|w| k.contains(w))
        };
        let masked: Vec<String> = q
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) if sensitive(k) => format!("{k}=***"),
                _ => pair.to_string(),
            })
            .collect();
        out.push('?');
        out.push_str(&masked.join("&"));
    }
    out
}

/// A listen address turned into one a client can dial (0.0.0.0 → 127.0.0.1).
pub fn connectable(a: SocketAddr) -> SocketAddr {
    if a.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], a.port()))
    } else {
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_valid_and_use_the_documented_ports() {
        let c = Config::load_from(None, &[]).unwrap();
        assert_eq!(c.registry.http_addr.port(), 7070);
        assert_eq!(c.registry.grpc_addr.port(), 7071);
        assert_eq!(c.ingest.http_addr.port(), 7072);
        assert_eq!(c.serving.staging_addr.port(), 7080);
        assert_eq!(c.serving.production_addr.port(), 7081);
        assert!(c.database_url().expose().starts_with("sqlite://"));
    }

    #[test]
    fn monitoring_and_prediction_log_settings_are_bounded_naming_the_key() {
        let refused =
            |vars: &[(&str, &str)]| Config::load_from(None, &env(vars)).unwrap_err().to_string();
        assert!(
            refused(&[("MODELBUS_SERVING__LOG_SAMPLE_RATE", "1.5")])
                .contains("serving.log_sample_rate")
        );
        assert!(
            refused(&[("MODELBUS_SERVING__LOG_BUFFER_RECORDS", "0")])
                .contains("serving.log_buffer_records")
        );
        assert!(
            refused(&[("MODELBUS_MONITOR__WINDOW_ROWS", "2000000")])
                .contains("monitor.window_rows")
        );
        assert!(refused(&[("MODELBUS_MONITOR__DRIFT_SHARE", "0")]).contains("monitor.drift_share"));
        let e = refused(&[
            ("MODELBUS_MONITOR__WINDOW_ROWS", "1000000"),
            ("MODELBUS_MONITOR__MAX_OPEN_WINDOWS", "100"),
        ]);
        assert!(e.contains("monitor.max_open_windows"), "{e}");
        let c = Config::load_from(None, &[]).unwrap();
        assert_eq!(c.monitor.ops_addr.port(), 7076);
        assert_eq!((c.monitor.window_rows, c.monitor.min_rows), (1_000, 100));
    }

    #[test]
    fn file_then_env_layers() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(
            &p,
            "[bus]\nmax_deliver = 7\n[registry]\nhttp_addr = \"127.0.0.1:9000\"\n",
        )
        .unwrap();
        let c = Config::load_from(
            Some(&p),
            &env(&[
                ("MODELBUS_REGISTRY__HTTP_ADDR", "127.0.0.1:9001"),
                ("MODELBUS_BUS__BACKOFF", "[\"2s\"]"),
                ("NATS_URL", "nats://127.0.0.1:4333"),
                ("DATABASE_URL", "postgres://u:pw@h/db"),
                ("MODELBUS_TOKEN", "ignored: not a section key"),
            ]),
        )
        .unwrap();
        assert_eq!(c.bus.max_deliver, 7);
        assert_eq!(c.registry.http_addr.port(), 9001);
        assert_eq!(c.bus.backoff, vec![Duration::from_secs(2)]);
        assert_eq!(c.nats.url.as_deref(), Some("nats://127.0.0.1:4333"));
        assert!(c.database_url().is_postgres());
        let shown = c.to_redacted_toml();
        assert!(!shown.contains("pw"), "{shown}");
        assert!(format!("{c:?}").contains("***"));
    }

    #[test]
    fn features_limits_are_configurable_and_checked() {
        let c = Config::load_from(None, &[]).unwrap();
        assert_eq!(c.features.max_batch_bytes, 1 << 30);
        assert_eq!(c.features.max_rows, 5_000_000);
        assert_eq!(c.features.ops_addr.port(), 7073);
        let c = Config::load_from(
            None,
            &env(&[
                ("MODELBUS_FEATURES__MAX_BATCH_BYTES", "1000"),
                ("MODELBUS_FEATURES__MAX_ROWS", "10"),
            ]),
        )
        .unwrap();
        assert_eq!(
            (c.features.max_batch_bytes, c.features.max_rows),
            (1000, 10)
        );
        let e = Config::load_from(None, &env(&[("MODELBUS_FEATURES__MAX_ROWS", "0")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("features.max_rows"), "{e}");
    }

    #[test]
    fn a_typo_in_the_file_names_line_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "[registry]\n\nhtp_addr = \"127.0.0.1:1\"\n").unwrap();
        let e = Config::load_from(Some(&p), &[]).unwrap_err().to_string();
        assert!(e.contains("htp_addr"), "{e}");
        assert!(e.contains("line 3"), "{e}");
        assert!(e.contains("c.toml"), "{e}");
    }

    #[test]
    fn a_bad_env_var_is_named() {
        let e = Config::load_from(None, &env(&[("MODELBUS_BUS__MAX_DELIVR", "3")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("MODELBUS_BUS__MAX_DELIVR"), "{e}");
        let e = Config::load_from(None, &env(&[("MODELBUS_BUS__ACK_WAIT", "soon")]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("MODELBUS_BUS__ACK_WAIT") && e.contains("duration"),
            "{e}"
        );
    }

    #[test]
    fn invalid_values_and_literal_secrets_are_refused() {
        let e = Config::load_from(None, &env(&[("MODELBUS_BUS__MAX_DELIVER", "0")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("bus.max_deliver"), "{e}");
        let e = Config::load_from(
            None,
            &env(&[(
                "MODELBUS_REGISTRY__AUTOMATION_KEY",
                "-----BEGIN PRIVATE KEY-----",
            )]),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("reference"), "{e}");
        assert!(!e.contains("BEGIN PRIVATE KEY"), "secret echoed: {e}");
        let e = Config::load_from(
            None,
            &env(&[("MODELBUS_SERVING__PRODUCTION_ADDR", "127.0.0.1:7080")]),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("serving.production_addr"), "{e}");
        // The index must outlive the label window, or a label could not
        // find its prediction.
        let e = Config::load_from(
            None,
            &env(&[
                ("MODELBUS_MONITOR__LABEL_WINDOW", "30d"),
                ("MODELBUS_MONITOR__INDEX_RETENTION", "7d"),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("monitor.index_retention") && e.contains("30days"),
            "{e}"
        );
    }

    #[test]
    fn canary_rollouts_need_steps_and_a_bake_longer_than_a_stats_window() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        let load = |body: &str| {
            std::fs::write(&p, body).unwrap();
            Config::load_from(Some(&p), &[]).map_err(|e| e.to_string())
        };
        let c = load(
            "[serving]\nstats_interval = \"1s\"\n[rollout.production]\nstrategy = \"canary\"\nsteps = [5, 25, 100]\nbake = \"5m\"\n",
        )
        .unwrap();
        assert_eq!(c.rollout.production.steps, vec![5, 25, 100]);
        let e = load("[rollout.production]\nstrategy = \"canary\"\n").unwrap_err();
        assert!(e.contains("rollout.production.bake"), "{e}");
        let e = load(
            "[rollout.staging]\nstrategy = \"canary\"\nsteps = [50, 20, 100]\nbake = \"1m\"\n",
        )
        .unwrap_err();
        assert!(e.contains("rollout.staging.steps"), "{e}");
        let e = load("[rollout.staging]\nstrategy = \"canary\"\nsteps = [50]\nbake = \"1m\"\n")
            .unwrap_err();
        assert!(e.contains("ending at 100"), "{e}");
        let e = load("[rollout.staging]\nbake = \"2s\"\n").unwrap_err();
        assert!(
            e.contains("rollout.staging.bake") && e.contains("serving.stats_interval"),
            "{e}"
        );
    }

    #[test]
    fn urls_are_printed_without_credentials() {
        for (url, shown) in [
            (
                "postgres://app:s3cret@db:5432/modelbus",
                "postgres://app:***@db:5432/modelbus",
            ),
            (
                "postgres://db/modelbus?user=app&password=s3cret&sslmode=require",
                "postgres://db/modelbus?user=app&password=***&sslmode=require",
            ),
            (
                "postgres://db/m?sslpassword=s3cret&SSLKEY=/k",
                "postgres://db/m?sslpassword=***&SSLKEY=***",
            ),
            (
                "nats://deployer:s3cret@nats:4222",
                "nats://deployer:***@nats:4222",
            ),
            ("nats://s3cret@nats:4222", "nats://***@nats:4222"),
            ("nats://a:b@c@nats:4222", "nats://a:***@nats:4222"),
            ("nats://nats:4222", "nats://nats:4222"),
            (
                "sqlite:/var/lib/m/registry.db",
                "sqlite:/var/lib/m/registry.db",
            ),
        ] {
            assert_eq!(mask_url(url), shown, "{url}");
        }
        let mut c = Config::default();
        c.nats.url = Some("nats://deployer:s3cret@nats:4222".into());
        c.database.url = Some(DatabaseUrl::new("postgres://db/m?password=s3cret"));
        let toml = c.to_redacted_toml();
        assert!(!toml.contains("s3cret"), "{toml}");
    }

    #[test]
    fn nats_credentials_come_from_env_and_a_password_needs_a_user() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "s3cret\n").unwrap();
        let c = Config::load_from(
            None,
            &env(&[
                ("MODELBUS_NATS__USER", "deployer"),
                (
                    "MODELBUS_NATS__PASSWORD",
                    &format!("file://{}", p.display()),
                ),
            ]),
        )
        .unwrap();
        assert_eq!(c.nats.user.as_deref(), Some("deployer"));
        let creds = c.nats_credentials().unwrap().unwrap();
        assert_eq!(creds.user, "deployer");
        assert_eq!(creds.password.as_ref().unwrap().expose(), "s3cret");
        assert!(!format!("{creds:?}").contains("s3cret"));
        assert!(!c.to_redacted_toml().contains("s3cret"));
        assert!(
            Config::load_from(None, &[])
                .unwrap()
                .nats_credentials()
                .unwrap()
                .is_none()
        );

        let e = Config::load_from(
            None,
            &env(&[("MODELBUS_NATS__PASSWORD", "env://SOME_PASSWORD")]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("nats.password") && e.contains("nats.user"),
            "{e}"
        );
        let e = Config::load_from(
            None,
            &env(&[
                ("MODELBUS_NATS__USER", "deployer"),
                ("MODELBUS_NATS__PASSWORD", "hunter2"),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("reference") && !e.contains("hunter2"), "{e}");
        let e = Config::load_from(None, &env(&[("MODELBUS_NATS__USER", "a.b")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("nats.user"), "{e}");
        let missing = Config::load_from(
            None,
            &env(&[
                ("MODELBUS_NATS__USER", "deployer"),
                (
                    "MODELBUS_NATS__PASSWORD",
                    "env://MODELBUS_TEST_SURELY_UNSET",
                ),
            ]),
        )
        .unwrap()
        .nats_credentials()
        .unwrap_err()
        .to_string();
        assert!(missing.contains("nats.password"), "{missing}");
        std::fs::write(&p, "\n").unwrap();
        let empty = Config::load_from(
            None,
            &env(&[
                ("MODELBUS_NATS__USER", "deployer"),
                (
                    "MODELBUS_NATS__PASSWORD",
                    &format!("file://{}", p.display()),
                ),
            ]),
        )
        .unwrap()
        .nats_credentials()
        .unwrap_err()
        .to_string();
        assert!(empty.contains("empty"), "{empty}");
    }

    #[test]
    fn secrets_resolve_and_never_print() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        std::fs::write(&p, "s3cret").unwrap();
        let r = SecretRef::file(&p);
        let s = r.resolve("registry.automation_key").unwrap();
        assert_eq!(s.expose(), "s3cret");
        assert_eq!(format!("{s:?} {s}"), "[redacted] [redacted]");
        let missing = SecretRef::parse("k", "env://MODELBUS_TEST_SURELY_UNSET").unwrap();
        assert!(missing.resolve("k").is_err());
    }

    #[test]
    fn notification_receivers_are_checked_naming_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        let load = |body: &str| {
            std::fs::write(&p, body).unwrap();
            Config::load_from(Some(&p), &[]).map_err(|e| e.to_string())
        };
        assert!(
            Config::load_from(None, &[])
                .unwrap()
                .notifications
                .receivers
                .is_empty()
        );
        let c = load(
            "[[notifications.receivers]]\nname = \"am\"\nformat = \"alertmanager\"\nurl = \"http://127.0.0.1:9093\"\n\
             [[notifications.receivers]]\nname = \"chat\"\nformat = \"slack\"\nurl = \"https://hooks.example/services/T0/B0/s3cret\"\nevents = [\"drift\", \"rollback\"]\nrepeat_interval = \"1h\"\nca_file = \"/etc/modelbus/hooks-ca.pem\"\n\
             [[notifications.receivers]]\nname = \"ce\"\nformat = \"cloudevents\"\nurl = \"http://127.0.0.1:8080/hook\"\nsecret = \"env://HOOK_SECRET\"\n",
        )
        .unwrap();
        let r = &c.notifications.receivers;
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].events, NotificationKind::ALL.to_vec());
        assert_eq!(
            (r[0].repeat_interval, r[0].timeout, r[0].max_attempts),
            (Duration::from_secs(4 * 3600), Duration::from_secs(5), 6)
        );
        assert_eq!(
            r[1].events,
            vec![NotificationKind::Drift, NotificationKind::Rollback]
        );
        assert_eq!(
            (r[0].ca_file.as_deref(), r[1].ca_file.as_deref()),
            (None, Some(Path::new("/etc/modelbus/hooks-ca.pem")))
        );
        let shown = c.to_redacted_toml();
        assert!(
            !shown.contains("s3cret") && shown.contains("https://hooks.example/…"),
            "{shown}"
        );

        let e = load(
            "[[notifications.receivers]]\nname = \"am\"\nformat = \"alertmanager\"\nurl = \"http//am:9093 x\"\n",
        )
        .unwrap_err();
        assert!(e.contains("notifications.receivers[0].url"), "{e}");
        let e = load(
            "[[notifications.receivers]]\nname = \"a\"\nformat = \"slack\"\nurl = \"http://a\"\n[[notifications.receivers]]\nname = \"b\"\nformat = \"slack\"\nurl = \"ftp://b/x\"\n",
        )
        .unwrap_err();
        assert!(
            e.contains("notifications.receivers[1].url") && e.contains("ftp"),
            "{e}"
        );
        let e = load(
            "[[notifications.receivers]]\nname = \"a\"\nformat = \"slack\"\nurl = \"http://a\"\nevents = [\"drfit\"]\n",
        )
        .unwrap_err();
        assert!(e.contains("drfit"), "{e}");
        let e = load(
            "[[notifications.receivers]]\nname = \"a\"\nformat = \"cloudevents\"\nurl = \"http://a\"\n",
        )
        .unwrap_err();
        assert!(e.contains("notifications.receivers[0].secret"), "{e}");
        let e = load(
            "[[notifications.receivers]]\nname = \"a\"\nformat = \"slack\"\nurl = \"http://a\"\nsecret = \"env://X\"\n",
        )
        .unwrap_err();
        assert!(e.contains("notifications.receivers[0].secret"), "{e}");
        let e = load(
            "[[notifications.receivers]]\nname = \"a\"\nformat = \"slack\"\nurl = \"http://a\"\nmax_attempts = 0\n",
        )
        .unwrap_err();
        assert!(e.contains("notifications.receivers[0].max_attempts"), "{e}");
        let e = load(
            "[[notifications.receivers]]\nname = \"a\"\nformat = \"slack\"\nurl = \"http://a\"\n[[notifications.receivers]]\nname = \"a\"\nformat = \"slack\"\nurl = \"http://b\"\n",
        )
        .unwrap_err();
        assert!(e.contains("notifications.receivers[1].name"), "{e}");
        // A CA file only means something for an https:// receiver.
        let e = load(
            "[[notifications.receivers]]\nname = \"a\"\nformat = \"slack\"\nurl = \"https://a\"\nca_file = \"/ca.pem\"\n[[notifications.receivers]]\nname = \"b\"\nformat = \"slack\"\nurl = \"http://b\"\nca_file = \"/ca.pem\"\n",
        )
        .unwrap_err();
        assert!(
            e.contains("notifications.receivers[1].ca_file") && e.contains("https"),
            "{e}"
        );

        // The environment takes the list as a TOML array of inline tables.
        let c = Config::load_from(
            None,
            &env(&[(
                "MODELBUS_NOTIFICATIONS__RECEIVERS",
                r#"[{name = "am", format = "alertmanager", url = "http://am:9093", events = ["drift"]}]"#,
            )]),
        )
        .unwrap();
        assert_eq!(c.notifications.receivers[0].name, "am");
        let e = Config::load_from(
            None,
            &env(&[(
                "MODELBUS_NOTIFICATIONS__RECEIVERS",
                r#"[{name = "am", format = "alertmanager", url = "am:9093"}]"#,
            )]),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("notifications.receivers[0].url"), "{e}");
    }
}
