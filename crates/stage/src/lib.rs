//! What the pipeline stages (ingest, features, trainer) share above
//! `modelbus-core`: the registry client each holds with its own token, the
//! dataset spec of a batch fetched by digest, and one classification of
//! registry and artifact errors into retry or reject. (Their one `run` body,
//! operations endpoints, an optional API and the durable consumer, is
//! `modelbus_core::ops::run_consumer_service`, which the deployer shares.)
#![forbid(unsafe_code)]

use modelbus_core::Context;
use modelbus_core::artifact::ArtifactError;
use modelbus_core::auth::ServiceIdentity;
use modelbus_core::bus::HandlerError;
use modelbus_core::ids::Sha256Digest;
use modelbus_dataset::spec::DatasetSpec;
use modelbus_proto::registry::v1 as pb;

/// Why a stage could not start.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// The registry's configured URL is not usable.
    #[error("registry URL: {0}")]
    RegistryUrl(String),
}

/// The registry client of `service`, presenting that service's own token and
/// the calling span's trace context (so the registry's spans of a call made
/// while handling a batch are in that batch's trace).
pub fn registry_client(
    ctx: &Context,
    service: ServiceIdentity,
) -> Result<modelbus_proto::Client, StageError> {
    modelbus_proto::connect_lazy_traced(
        &ctx.config.registry_grpc_url(),
        ctx.config.service_token_source(service),
        modelbus_core::telemetry::current_traceparent,
    )
    .map_err(|e| StageError::RegistryUrl(e.to_string()))
}

/// What a registry refusal means for the event being handled: an unknown
/// or malformed name or digest will not become valid (reject, dead letter);
/// anything else may pass (retry).
pub fn registry_error(st: tonic::Status) -> HandlerError {
    match st.code() {
        tonic::Code::NotFound | tonic::Code::InvalidArgument => {
            HandlerError::Reject(st.message().to_string())
        }
        _ => HandlerError::Retry(format!("registry: {st}")),
    }
}

/// What an artifact-store failure means for the event being handled, the
/// same for every stage: an artifact that is not in the store never will be
/// (reject); one whose bytes do not hash to its digest is counted
/// (`modelbus_artifacts_corrupt_total{stage}`) and retried, because uploading
/// it again repairs the stored copy; anything else may pass (retry).
pub fn artifact_error(stage: &'static str, e: ArtifactError) -> HandlerError {
    match e {
        ArtifactError::NotFound(_) => HandlerError::Reject(e.to_string()),
        ArtifactError::Corrupt { .. } => {
            metrics::counter!("modelbus_artifacts_corrupt_total", "stage" => stage).increment(1);
            tracing::error!(stage, error = %e, "stored artifact is corrupt");
            HandlerError::Retry(format!("{e}; upload it again to repair the stored copy"))
        }
        other => HandlerError::Retry(other.to_string()),
    }
}

/// A dataset spec as the registry holds it, and parsed.
#[derive(Debug, Clone)]
pub struct FetchedSpec {
    /// The registry's record (dataset, version, digest, text).
    pub record: pb::SpecVersion,
    /// The parsed spec.
    pub spec: DatasetSpec,
}

/// The spec with `digest`, from the registry, parsed; errors classified by
/// [`registry_error`] (a spec the registry holds that no longer parses is
/// rejected).
pub async fn fetch_spec(
    registry: &modelbus_proto::Client,
    digest: &Sha256Digest,
) -> Result<FetchedSpec, HandlerError> {
    let record = registry
        .clone()
        .get_spec(pb::GetSpecRequest {
            dataset: String::new(),
            digest: digest.to_hex(),
        })
        .await
        .map_err(registry_error)?
        .into_inner();
    let spec = DatasetSpec::parse(&record.toml, "registered spec")
        .map_err(HandlerError::reject)?
        .spec;
    Ok(FetchedSpec { record, spec })
}
