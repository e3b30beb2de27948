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
    /// During a rollout (canary steps or a bake time), the version that served
    /// before: it answers the traffic `version` does not get, and automatic
    /// rollback returns to it. `None` once the rollout is finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<Box<DesiredState>>,
    /// Share of traffic, in percent, that `version` answers; the rest goes to
    /// `previous`. 100 outside canary steps.
    #[serde(default = "full_traffic")]
    pub traffic_percent: u8,
}

fn full_traffic() -> u8 {
    100
}

impl DesiredState {
    /// Whether requests are split between `version` and `previous`.
    pub fn is_split(&self) -> bool {
        self.previous.is_some() && self.traffic_percent < 100
    }

    /// Whether a rollout of `version` is still being watched (split or baking).
    pub fn in_rollout(&self) -> bool {
        self.previous.is_some()
    }
}

/// The traffic bucket (0-99) of an entity: requests whose bucket is below a
/// desired state's `traffic_percent` go to the new version. A SHA-256 of the
/// entity id, so every replica, restart and release puts one customer in the
/// same bucket, and raising the weight only moves customers from old to new.
pub fn traffic_bucket(entity: &str) -> u8 {
    use sha2::Digest as _;
    let h = sha2::Sha256::digest(entity.as_bytes());
    let n = u64::from_be_bytes([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]]);
    (n % 100) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_stable_and_spread() {
        assert_eq!(traffic_bucket("7590-VHVEG"), traffic_bucket("7590-VHVEG"));
        let mut counts = [0usize; 100];
        for i in 0..100_000 {
            counts[usize::from(traffic_bucket(&format!("customer-{i}")))] += 1;
        }
        // Each bucket should hold about 1000 of 100 000 ids.
        assert!(counts.iter().all(|c| (800..1200).contains(c)), "{counts:?}");
        let below_10: usize = counts[..10].iter().sum();
        assert!((9_000..11_000).contains(&below_10), "{below_10}");
    }

    #[test]
    fn old_states_without_rollout_fields_still_parse() {
        let old = r#"{"environment":"staging","model":"m","version":1,
            "model_sha256":"0000000000000000000000000000000000000000000000000000000000000000",
            "approved_by":[],"nonces":[],"pipelinerun":null,"updated_at":"x"}"#;
        let d: DesiredState = serde_json::from_str(old).unwrap();
        assert_eq!(d.traffic_percent, 100);
        assert!(!d.is_split() && !d.in_rollout());
    }
}
