//! Deployment state shared by the deployer (its only writer) and serving (its
//! readers): the desired state of each environment and model, one entry per key
//! `<environment>.<model>` in the NATS KV bucket `deployments`.

use serde::{Deserialize, Serialize};

use crate::ids::{Environment, ModelName, PipelineRunId, Sha256Digest};

/// KV bucket holding desired deployment state.
pub const DEPLOYMENTS_BUCKET: &str = "deployments";
/// KV bucket of approval nonces already accepted.
pub const NONCES_BUCKET: &str = "approval-nonces";

/// KV key of a model in an environment.
pub fn deployment_key(env: Environment, model: &ModelName) -> String {
    format!("{}.{}", env.as_str(), model.as_str())
}

/// What should be served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DesiredState {
    /// Environment.
    pub environment: Environment,
    /// Registered model.
    pub model: ModelName,
    /// Version to serve.
    pub version: u32,
    /// Its artifact; serving refuses bytes that do not hash to it.
    pub model_sha256: Sha256Digest,
    /// Who approved it (approver ids).
    pub approved_by: Vec<String>,
    /// Nonces of the approvals that allowed it.
    pub nonces: Vec<String>,
    /// Pipeline run that produced the version, if any.
    pub pipelinerun: Option<PipelineRunId>,
    /// When the deployer wrote it (RFC 3339).
    pub updated_at: String,
    /// W3C trace context of the deployment, so serving's swap joins the batch's trace.
    #[serde(default)]
    pub traceparent: Option<String>,
}
