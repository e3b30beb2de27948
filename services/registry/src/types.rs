//! The registry's records, as the HTTP API shows them, and their conversions to
//! and from the protobuf messages of the gRPC API.

use std::collections::BTreeMap;

use modelbus_proto::registry::v1 as pb;
use serde::{Deserialize, Serialize};

/// A registered version of a dataset spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpecVersion {
    /// Dataset name.
    pub dataset: String,
    /// SHA-256 of the TOML text.
    pub digest: String,
    /// 1, 2, ... per dataset.
    pub version: u32,
    /// The TOML as applied.
    pub toml: String,
    /// The parsed spec.
    pub spec: serde_json::Value,
    /// When it was applied.
    pub created_at: String,
}

/// A dataset and its latest spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetInfo {
    /// Name.
    pub name: String,
    /// Latest spec version number.
    pub latest_version: u32,
    /// Latest spec digest.
    pub latest_digest: String,
    /// Number of spec versions.
    pub spec_versions: u32,
    /// When it was first applied.
    pub created_at: String,
}

/// One stage of a pipeline run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stage {
    /// `validation`, `features`, `training`, `gates`, `deployment`.
    pub name: String,
    /// `running`, `succeeded`, `failed`.
    pub status: String,
    /// Start time.
    pub started_at: String,
    /// End time (empty while running).
    pub finished_at: String,
    /// What happened.
    pub detail: String,
}

/// A batch's journey through the pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineRun {
    /// `pr-...`, derived from spec and batch digests.
    pub id: String,
    /// Dataset.
    pub dataset: String,
    /// Spec version the batch is validated against.
    pub spec_digest: String,
    /// Raw batch digest.
    pub batch_sha256: String,
    /// Raw batch size.
    pub size_bytes: u64,
    /// Who submitted it.
    pub submitted_by: String,
    /// Current state.
    pub state: String,
    /// Why it was rejected or failed.
    pub reasons: Vec<String>,
    /// Validation report artifact.
    pub report_sha256: String,
    /// Data rows.
    pub rows: u64,
    /// Model trained from it.
    pub model: String,
    /// Version registered from it (0 until trained).
    pub model_version: u32,
    /// Created.
    pub created_at: String,
    /// Last change.
    pub updated_at: String,
    /// Stages in order.
    pub stages: Vec<Stage>,
}

impl PipelineRun {
    /// Whether the run has ended.
    pub fn is_final(&self) -> bool {
        matches!(self.state.as_str(), "deployed" | "rejected" | "failed")
    }
}

/// Where a version came from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Lineage {
    /// Pipeline run.
    pub pipeline_run: String,
    /// Raw batch.
    pub batch_sha256: String,
    /// Spec version.
    pub spec_digest: String,
    /// Validation report.
    pub report_sha256: String,
    /// Feature set (Parquet).
    pub feature_set_sha256: String,
    /// Fitted transform.
    pub transform_sha256: String,
    /// Code that trained it.
    pub code_revision: String,
    /// Seed.
    pub seed: u64,
}

/// A named artifact of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamedArtifact {
    /// Role, e.g. `model`, `feature_set`.
    pub name: String,
    /// Digest.
    pub sha256: String,
}

/// A training run with params, metrics and artifacts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingRun {
    /// Training run id.
    pub id: String,
    /// Pipeline run.
    pub pipeline_run: String,
    /// Dataset.
    pub dataset: String,
    /// Parameters.
    pub params: BTreeMap<String, String>,
    /// Holdout metrics.
    pub metrics: BTreeMap<String, f64>,
    /// Artifacts.
    pub artifacts: Vec<NamedArtifact>,
    /// Created.
    pub created_at: String,
}

pub use modelbus_policy::GateCheck;

/// A model version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelVersion {
    /// Model name.
    pub model: String,
    /// Version number.
    pub version: u32,
    /// Artifact digest.
    pub model_sha256: String,
    /// `pending`, `candidate` or `rejected`.
    pub status: String,
    /// Learner.
    pub algorithm: String,
    /// Holdout metrics.
    pub metrics: BTreeMap<String, f64>,
    /// Lineage.
    pub lineage: Lineage,
    /// Training run.
    pub run_id: String,
    /// Who submitted the batch.
    pub author: String,
    /// Gate decisions.
    pub gate_checks: Vec<GateCheck>,
    /// Aliases pointing here.
    pub aliases: Vec<String>,
    /// Created.
    pub created_at: String,
    /// Evaluation report (JSON) artifact.
    #[serde(default)]
    pub evaluation_sha256: String,
    /// Evaluation report (HTML) artifact.
    #[serde(default)]
    pub evaluation_html_sha256: String,
    /// The promotion policy's decision, once made.
    #[serde(default)]
    pub decision: Option<PolicyDecision>,
}

/// What the promotion policy decided about a version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyDecision {
    /// Whether promotion was allowed.
    pub allow: bool,
    /// Why not.
    pub reasons: Vec<String>,
    /// SHA-256 of the policy sources that decided.
    pub policy_digest: String,
}

/// A registered model with its versions and aliases.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegisteredModel {
    /// Name.
    pub name: String,
    /// Dataset.
    pub dataset: String,
    /// Created.
    pub created_at: String,
    /// Versions, newest first.
    pub versions: Vec<ModelVersion>,
    /// Alias → version.
    pub aliases: BTreeMap<String, u32>,
}

/// What the trainer registers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewModelVersion {
    /// Model name.
    pub model: String,
    /// Dataset.
    pub dataset: String,
    /// Artifact digest.
    pub model_sha256: String,
    /// Learner.
    pub algorithm: String,
    /// Holdout metrics.
    pub metrics: BTreeMap<String, f64>,
    /// Parameters.
    pub params: BTreeMap<String, String>,
    /// Lineage.
    pub lineage: Lineage,
    /// Artifacts of the training run.
    pub artifacts: Vec<NamedArtifact>,
    /// Who submitted the batch.
    pub author: String,
    /// Evaluation report (JSON) artifact.
    #[serde(default)]
    pub evaluation_sha256: String,
    /// Evaluation report (HTML) artifact.
    #[serde(default)]
    pub evaluation_html_sha256: String,
}

// ---- conversions to and from protobuf ----

impl From<SpecVersion> for pb::SpecVersion {
    fn from(s: SpecVersion) -> Self {
        pb::SpecVersion {
            dataset: s.dataset,
            digest: s.digest,
            version: s.version,
            toml: s.toml,
            spec_json: s.spec.to_string(),
            created_at: s.created_at,
        }
    }
}

impl From<DatasetInfo> for pb::Dataset {
    fn from(d: DatasetInfo) -> Self {
        pb::Dataset {
            name: d.name,
            latest_version: d.latest_version,
            latest_digest: d.latest_digest,
            spec_versions: d.spec_versions,
            created_at: d.created_at,
        }
    }
}

impl From<PipelineRun> for pb::PipelineRun {
    fn from(r: PipelineRun) -> Self {
        pb::PipelineRun {
            id: r.id,
            dataset: r.dataset,
            spec_digest: r.spec_digest,
            batch_sha256: r.batch_sha256,
            size_bytes: r.size_bytes,
            submitted_by: r.submitted_by,
            state: r.state,
            reasons: r.reasons,
            report_sha256: r.report_sha256,
            rows: r.rows,
            model: r.model,
            model_version: r.model_version,
            created_at: r.created_at,
            updated_at: r.updated_at,
            stages: r
                .stages
                .into_iter()
                .map(|s| pb::Stage {
                    name: s.name,
                    status: s.status,
                    started_at: s.started_at,
                    finished_at: s.finished_at,
                    detail: s.detail,
                })
                .collect(),
        }
    }
}

impl From<Lineage> for pb::Lineage {
    fn from(l: Lineage) -> Self {
        pb::Lineage {
            pipeline_run: l.pipeline_run,
            batch_sha256: l.batch_sha256,
            spec_digest: l.spec_digest,
            report_sha256: l.report_sha256,
            feature_set_sha256: l.feature_set_sha256,
            transform_sha256: l.transform_sha256,
            code_revision: l.code_revision,
            seed: l.seed,
        }
    }
}

impl From<pb::Lineage> for Lineage {
    fn from(l: pb::Lineage) -> Self {
        Lineage {
            pipeline_run: l.pipeline_run,
            batch_sha256: l.batch_sha256,
            spec_digest: l.spec_digest,
            report_sha256: l.report_sha256,
            feature_set_sha256: l.feature_set_sha256,
            transform_sha256: l.transform_sha256,
            code_revision: l.code_revision,
            seed: l.seed,
        }
    }
}

impl From<ModelVersion> for pb::ModelVersion {
    fn from(v: ModelVersion) -> Self {
        pb::ModelVersion {
            model: v.model,
            version: v.version,
            model_sha256: v.model_sha256,
            status: v.status,
            algorithm: v.algorithm,
            metrics: v.metrics.into_iter().collect(),
            lineage: Some(v.lineage.into()),
            run_id: v.run_id,
            author: v.author,
            gate_checks: v
                .gate_checks
                .into_iter()
                .map(|g| pb::GateCheck {
                    gate: g.gate,
                    passed: g.passed,
                    detail: g.detail,
                })
                .collect(),
            aliases: v.aliases,
            created_at: v.created_at,
            evaluation_sha256: v.evaluation_sha256,
            evaluation_html_sha256: v.evaluation_html_sha256,
            decision_reasons: v
                .decision
                .as_ref()
                .map(|d| d.reasons.clone())
                .unwrap_or_default(),
            policy_digest: v.decision.map(|d| d.policy_digest).unwrap_or_default(),
        }
    }
}

impl From<RegisteredModel> for pb::RegisteredModel {
    fn from(m: RegisteredModel) -> Self {
        pb::RegisteredModel {
            name: m.name,
            dataset: m.dataset,
            created_at: m.created_at,
            versions: m.versions.into_iter().map(Into::into).collect(),
            aliases: m.aliases.into_iter().collect(),
        }
    }
}

impl From<TrainingRun> for pb::Run {
    fn from(r: TrainingRun) -> Self {
        pb::Run {
            id: r.id,
            pipeline_run: r.pipeline_run,
            dataset: r.dataset,
            params: r.params.into_iter().collect(),
            metrics: r.metrics.into_iter().collect(),
            artifacts: r
                .artifacts
                .into_iter()
                .map(|a| pb::Artifact {
                    name: a.name,
                    sha256: a.sha256,
                })
                .collect(),
            created_at: r.created_at,
        }
    }
}

impl From<pb::RegisterModelVersionRequest> for NewModelVersion {
    fn from(r: pb::RegisterModelVersionRequest) -> Self {
        NewModelVersion {
            model: r.model,
            dataset: r.dataset,
            model_sha256: r.model_sha256,
            algorithm: r.algorithm,
            metrics: r.metrics.into_iter().collect(),
            params: r.params.into_iter().collect(),
            lineage: r.lineage.map(Into::into).unwrap_or_default(),
            artifacts: r
                .artifacts
                .into_iter()
                .map(|a| NamedArtifact {
                    name: a.name,
                    sha256: a.sha256,
                })
                .collect(),
            author: r.author,
            evaluation_sha256: r.evaluation_sha256,
            evaluation_html_sha256: r.evaluation_html_sha256,
        }
    }
}

/// Converts a gRPC pipeline run back (clients use this).
impl From<pb::PipelineRun> for PipelineRun {
    fn from(r: pb::PipelineRun) -> Self {
        PipelineRun {
            id: r.id,
            dataset: r.dataset,
            spec_digest: r.spec_digest,
            batch_sha256: r.batch_sha256,
            size_bytes: r.size_bytes,
            submitted_by: r.submitted_by,
            state: r.state,
            reasons: r.reasons,
            report_sha256: r.report_sha256,
            rows: r.rows,
            model: r.model,
            model_version: r.model_version,
            created_at: r.created_at,
            updated_at: r.updated_at,
            stages: r
                .stages
                .into_iter()
                .map(|s| Stage {
                    name: s.name,
                    status: s.status,
                    started_at: s.started_at,
                    finished_at: s.finished_at,
                    detail: s.detail,
                })
                .collect(),
        }
    }
}
