//! The dataset spec: the user-facing contract for a dataset (columns and types,
//! entity and target, expectations with Great Expectations names and arguments,
//! model settings and gates), written in TOML.
//!
//! Parsing refuses anything doubtful with the file, line and key named: unknown
//! keys (typos), wrong types, expectations on columns that do not exist, value
//! sets that do not fit their column's type.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

mod contract;

use crate::expectations::PathPart;
pub use crate::expectations::{
    ColumnArg, Expectation, MAX_REGEX_EXPECTATIONS, MAX_REGEX_LEN, PartitionObject, Severity,
    compile_regex,
};
pub use crate::schema::{ColumnType, Scalar, scalar_fits};
pub use contract::*;

/// Why a spec was refused. Displays as `FILE:LINE: key `KEY`: REASON`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{source_name}:{line}: {key}: {reason}")]
pub struct SpecError {
    /// The file (or other source) the spec came from.
    pub source_name: String,
    /// 1-based line of the offending key (1 when unknown).
    pub line: usize,
    /// The key, e.g. `expectations[2].column`.
    pub key: String,
    /// What is wrong.
    pub reason: String,
}

/// What a column is used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A model input (the default).
    #[default]
    Feature,
    /// Validated but kept out of the features (ids, names, free text).
    Ignore,
}

/// One declared column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnSpec {
    /// Header name in the CSV.
    pub name: String,
    /// Value type.
    #[serde(rename = "type")]
    pub ty: ColumnType,
    /// Whether a null (see `null_values`) is allowed.
    #[serde(default)]
    pub nullable: bool,
    /// Feature or ignored.
    #[serde(default)]
    pub role: Role,
    /// How nulls are filled when used as a feature (default: median for numbers,
    /// nothing for strings, whose null encodes as all zeros).
    #[serde(default)]
    pub impute: Option<Impute>,
    /// The constant for `impute = "constant"`.
    #[serde(default)]
    pub fill_value: Option<FillValue>,
    /// Add a 0/1 feature telling whether the value was missing.
    #[serde(default)]
    pub missing_indicator: bool,
    /// One-hot at most this many categories (most frequent in training); the rest
    /// share an "other" feature. Strings only.
    #[serde(default)]
    pub max_categories: Option<usize>,
}

/// A feature computed from other columns (`[[features]]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DerivedFeatureSpec {
    /// Feature name (must not clash with a column).
    pub name: String,
    /// Expression over the row, e.g. `TotalCharges / (tenure + 1)`; see `expr`.
    pub expr: String,
    /// How nulls (and undefined results) are filled; default median.
    #[serde(default)]
    pub impute: Option<Impute>,
    /// The constant for `impute = "constant"`.
    #[serde(default)]
    pub fill_value: Option<f64>,
    /// Add a 0/1 missing indicator.
    #[serde(default)]
    pub missing_indicator: bool,
}

/// The prediction target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSpec {
    /// Target column (declared in `[[columns]]`).
    pub column: String,
    /// The value of the positive class, as written in the file.
    pub positive: String,
}

/// Which learner to fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    /// Gradient-boosted trees (LightGBM).
    #[default]
    Gbdt,
    /// L2-regularised logistic regression on standardised features.
    Logistic,
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Algorithm::Gbdt => "gbdt",
            Algorithm::Logistic => "logistic",
        })
    }
}

/// Model settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// Registered model name; default: the dataset name.
    #[serde(default)]
    pub name: Option<String>,
    /// Learner.
    #[serde(default)]
    pub algorithm: Algorithm,
    /// Share of rows held out (stratified) for evaluation.
    #[serde(default = "default_holdout")]
    pub holdout_fraction: f64,
    /// Seed of the split and of the learner.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// LightGBM parameters.
    #[serde(default)]
    pub gbdt: GbdtParams,
    /// Logistic regression parameters.
    #[serde(default)]
    pub logistic: LogisticParams,
    /// Several learners to choose from; the best on validation wins (empty: just
    /// `algorithm` with the parameters above).
    #[serde(default)]
    pub candidates: Vec<CandidateSpec>,
    /// Choose among candidates by k-fold stratified cross-validation on the
    /// training split (unset: one inner validation split).
    #[serde(default)]
    pub cv_folds: Option<usize>,
    /// Candidates whose validation ROC AUC is within this of the best count as
    /// tied; the first of them in spec order wins (list simpler learners first).
    #[serde(default = "default_tolerance")]
    pub selection_tolerance: f64,
}

fn default_tolerance() -> f64 {
    0.001
}

/// One learner to try.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CandidateSpec {
    /// A name for reports (default: the algorithm).
    #[serde(default)]
    pub name: Option<String>,
    /// Learner.
    pub algorithm: Algorithm,
    /// LightGBM parameters.
    #[serde(default)]
    pub gbdt: GbdtParams,
    /// Logistic regression parameters.
    #[serde(default)]
    pub logistic: LogisticParams,
}

impl CandidateSpec {
    /// Name shown in reports.
    pub fn label(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| self.algorithm.to_string())
    }
}

impl ModelSpec {
    /// The learners to try: the listed candidates, or the single configured one.
    pub fn candidates(&self) -> Vec<CandidateSpec> {
        if self.candidates.is_empty() {
            vec![CandidateSpec {
                name: None,
                algorithm: self.algorithm,
                gbdt: self.gbdt.clone(),
                logistic: self.logistic.clone(),
            }]
        } else {
            self.candidates.clone()
        }
    }
}

/// How versions are evaluated (`[evaluation]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvaluationSpec {
    /// Columns whose values define slices with their own metrics (e.g. `["Contract"]`).
    #[serde(default)]
    pub slices: Vec<String>,
    /// How the decision threshold is chosen.
    #[serde(default)]
    pub threshold: ThresholdRule,
    /// Bootstrap resamples for the ROC AUC interval.
    #[serde(default = "default_bootstrap")]
    pub bootstrap_samples: usize,
    /// Confidence level of the interval.
    #[serde(default = "default_confidence")]
    pub confidence: f64,
    /// Bins of the reliability table.
    #[serde(default = "default_bins")]
    pub calibration_bins: usize,
}

fn default_bootstrap() -> usize {
    1000
}
fn default_confidence() -> f64 {
    0.95
}
fn default_bins() -> usize {
    10
}

impl Default for EvaluationSpec {
    fn default() -> Self {
        Self {
            slices: Vec::new(),
            threshold: ThresholdRule::default(),
            bootstrap_samples: default_bootstrap(),
            confidence: default_confidence(),
            calibration_bins: default_bins(),
        }
    }
}

impl EvaluationSpec {
    /// The evaluation settings, seeded.
    pub fn config(&self, seed: u64) -> EvaluationConfig {
        EvaluationConfig {
            bootstrap_samples: self.bootstrap_samples,
            confidence: self.confidence,
            calibration_bins: self.calibration_bins,
            threshold: self.threshold.clone(),
            seed,
        }
    }
}

fn default_holdout() -> f64 {
    0.2
}
fn default_seed() -> u64 {
    42
}

impl Default for ModelSpec {
    fn default() -> Self {
        Self {
            name: None,
            algorithm: Algorithm::default(),
            holdout_fraction: default_holdout(),
            seed: default_seed(),
            gbdt: GbdtParams::default(),
            logistic: LogisticParams::default(),
            candidates: Vec::new(),
            cv_folds: None,
            selection_tolerance: default_tolerance(),
        }
    }
}

/// Quality gates on holdout metrics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatesSpec {
    /// Minimum ROC AUC.
    #[serde(default)]
    pub min_roc_auc: Option<f64>,
    /// Minimum PR AUC (average precision).
    #[serde(default)]
    pub min_pr_auc: Option<f64>,
    /// Maximum log loss.
    #[serde(default)]
    pub max_log_loss: Option<f64>,
    /// Maximum Brier score.
    #[serde(default)]
    pub max_brier: Option<f64>,
    /// Largest ROC AUC drop allowed against the current champion (policy default 0.01).
    #[serde(default)]
    pub max_roc_auc_drop: Option<f64>,
    /// Largest expected calibration error (policy default 0.05).
    #[serde(default)]
    pub max_ece: Option<f64>,
    /// Minimum ROC AUC per slice column (every value of the column is a slice),
    /// e.g. `slices = { Contract = 0.6 }`; the column must be in `[evaluation] slices`.
    #[serde(default)]
    pub slices: std::collections::BTreeMap<String, f64>,
}

fn default_nulls() -> Vec<String> {
    vec![String::new()]
}

/// A dataset spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetSpec {
    /// Dataset name (letters, digits, `-`, `_`).
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Column identifying an entity (customer); never a feature.
    pub entity_column: String,
    /// Cell values read as null (after no trimming). Default `[""]`.
    #[serde(default = "default_nulls")]
    pub null_values: Vec<String>,
    /// Whether columns not declared are allowed (and ignored).
    #[serde(default)]
    pub allow_extra_columns: bool,
    /// The target.
    pub target: TargetSpec,
    /// Declared columns, in any order.
    pub columns: Vec<ColumnSpec>,
    /// Expectations checked on every batch.
    #[serde(default)]
    pub expectations: Vec<Expectation>,
    /// Model settings.
    #[serde(default)]
    pub model: ModelSpec,
    /// Promotion gates.
    #[serde(default)]
    pub gates: GatesSpec,
    /// Derived features.
    #[serde(default)]
    pub features: Vec<DerivedFeatureSpec>,
    /// Evaluation settings.
    #[serde(default)]
    pub evaluation: EvaluationSpec,
    /// Post-deployment settings.
    #[serde(default)]
    pub monitor: MonitorSpec,
}

/// Post-deployment settings (`[monitor]`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorSpec {
    /// Retraining on labelled live traffic (`[monitor.retrain]`); off when absent.
    #[serde(default)]
    pub retrain: Option<RetrainSpec>,
}

/// When and on what the monitor retrains (`[monitor.retrain]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrainSpec {
    /// Monitoring decisions that ask for a retrain: `drift.detected`,
    /// `performance.degraded`.
    #[serde(default = "default_retrain_on")]
    pub on: Vec<String>,
    /// Fewest labelled logged records a retraining batch needs; below it the
    /// request waits for more labels.
    #[serde(default = "default_retrain_min_labels")]
    pub min_labels: u64,
    /// Whether the last training batch is included with the labelled records.
    #[serde(default = "default_true")]
    pub include_training_batch: bool,
    /// Most labelled records taken (the newest windows first).
    #[serde(default = "default_retrain_max_records")]
    pub max_records: u64,
}

fn default_retrain_on() -> Vec<String> {
    vec!["drift.detected".into(), "performance.degraded".into()]
}
fn default_retrain_min_labels() -> u64 {
    200
}
fn default_retrain_max_records() -> u64 {
    100_000
}
fn default_true() -> bool {
    true
}

/// A parsed spec with the digest of its source text (its version identity).
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedSpec {
    /// The spec.
    pub spec: DatasetSpec,
    /// SHA-256 of the TOML text, hex.
    pub digest: String,
}

/// One step of a key path, for locating a key's line.
enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

/// Line (1-based) of the value at `path` in a TOML document, if found.
fn locate(text: &str, path: &[Seg<'_>]) -> Option<usize> {
    use toml::de::{DeTable, DeValue};
    let root = DeTable::parse(text).ok()?;
    let mut span = root.span();
    let mut table: Option<&DeTable<'_>> = Some(root.get_ref());
    let mut array: Option<&toml::de::DeArray<'_>> = None;
    for seg in path {
        let value = match seg {
            Seg::Key(k) => {
                let t = table?;
                let (key, v) = t.iter().find(|(key, _)| key.get_ref().as_ref() == *k)?;
                span = key.span();
                v
            }
            Seg::Index(i) => {
                let v = array?.get(*i)?;
                span = v.span();
                v
            }
        };
        table = None;
        array = None;
        match value.get_ref() {
            DeValue::Table(t) => table = Some(t),
            DeValue::Array(a) => array = Some(a),
            _ => {}
        }
    }
    Some(text[..span.start.min(text.len())].matches('\n').count() + 1)
}

fn line_of(text: &str, span: Option<std::ops::Range<usize>>) -> usize {
    span.map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
        .unwrap_or(1)
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl DatasetSpec {
    /// Parses and checks a spec. `source_name` (usually the file path) is used in errors.
    pub fn parse(text: &str, source_name: &str) -> Result<ParsedSpec, SpecError> {
        let located = |(path, reason): (Vec<PathPart>, String)| {
            let segs: Vec<Seg<'_>> = path
                .iter()
                .map(|p| match p {
                    PathPart::Key(k) => Seg::Key(k),
                    PathPart::Index(i) => Seg::Index(*i),
                })
                .collect();
            SpecError {
                source_name: source_name.to_string(),
                line: locate(text, &segs).unwrap_or(1),
                key: render_path(&path),
                reason,
            }
        };
        let spec: DatasetSpec = toml::from_str(text).map_err(|e| {
            if let Some(found) = unknown_severity(text) {
                return located(found);
            }
            let reason = e.message().to_string();
            SpecError {
                source_name: source_name.to_string(),
                line: line_of(text, e.span()),
                key: key_from_message(&reason).unwrap_or_else(|| "(document)".into()),
                reason,
            }
        })?;
        spec.check().map_err(located)?;
        Ok(ParsedSpec {
            spec,
            digest: hex::encode(Sha256::digest(text.as_bytes())),
        })
    }

    /// The registered model name.
    pub fn model_name(&self) -> &str {
        self.model.name.as_deref().unwrap_or(&self.name)
    }

    /// The declared column with this name.
    pub fn column(&self, name: &str) -> Option<&ColumnSpec> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// Columns that are model inputs: role `feature`, neither entity nor target.
    pub fn feature_columns(&self) -> impl Iterator<Item = &ColumnSpec> {
        self.columns.iter().filter(move |c| {
            c.role == Role::Feature && c.name != self.entity_column && c.name != self.target.column
        })
    }

    /// Whether a raw cell is a null under this spec.
    pub fn is_null(&self, cell: &str) -> bool {
        self.null_values.iter().any(|n| n == cell)
    }

    fn check(&self) -> Result<(), (Vec<PathPart>, String)> {
        use PathPart::{Index, Key};
        let k = |s: &str| vec![Key(s.to_string())];
        if !valid_name(&self.name) {
            return Err((
                k("name"),
                "must be 1-63 letters, digits, '-' or '_', starting with a letter or digit".into(),
            ));
        }
        if let Some(m) = &self.model.name
            && !valid_name(m)
        {
            return Err((
                vec![Key("model".into()), Key("name".into())],
                "must be 1-63 letters, digits, '-' or '_', starting with a letter or digit".into(),
            ));
        }
        if self.columns.is_empty() {
            return Err((k("columns"), "declare at least one column".into()));
        }
        let mut seen = BTreeSet::new();
        for (i, c) in self.columns.iter().enumerate() {
            if c.name.is_empty() {
                return Err((
                    vec![Key("columns".into()), Index(i), Key("name".into())],
                    "must not be empty".into(),
                ));
            }
            if !seen.insert(c.name.as_str()) {
                return Err((
                    vec![Key("columns".into()), Index(i), Key("name".into())],
                    format!("column {:?} is declared twice", c.name),
                ));
            }
        }
        if let Some(r) = &self.monitor.retrain {
            let at = |f: &str| {
                vec![
                    Key("monitor".into()),
                    Key("retrain".into()),
                    Key(f.to_string()),
                ]
            };
            if r.on.is_empty()
                || r.on
                    .iter()
                    .any(|o| o != "drift.detected" && o != "performance.degraded")
            {
                return Err((
                    at("on"),
                    "list drift.detected and/or performance.degraded".into(),
                ));
            }
            if r.min_labels == 0 || r.min_labels > 1_000_000 {
                return Err((at("min_labels"), "must be between 1 and 1000000".into()));
            }
            if r.max_records < r.min_labels || r.max_records > 1_000_000 {
                return Err((
                    at("max_records"),
                    "must be between min_labels and 1000000".into(),
                ));
            }
        }
        if self.column(&self.entity_column).is_none() {
            return Err((
                k("entity_column"),
                format!("{:?} is not a declared column", self.entity_column),
            ));
        }
        let Some(target) = self.column(&self.target.column) else {
            return Err((
                vec![Key("target".into()), Key("column".into())],
                format!("{:?} is not a declared column", self.target.column),
            ));
        };
        if target.name == self.entity_column {
            return Err((
                vec![Key("target".into()), Key("column".into())],
                "the target cannot be the entity column".into(),
            ));
        }
        if target.ty == ColumnType::Float {
            return Err((
                vec![Key("target".into()), Key("column".into())],
                "a binary target must be a string, int or bool column, not float".into(),
            ));
        }
        if self.feature_columns().next().is_none() {
            return Err((
                k("columns"),
                "no feature columns: every column is the entity, the target or ignored".into(),
            ));
        }
        if self.null_values.is_empty() {
            return Err((
                k("null_values"),
                "list at least one null marker (\"\" is usual)".into(),
            ));
        }
        let hf = self.model.holdout_fraction;
        if !(hf > 0.0 && hf < 1.0) {
            return Err((
                vec![Key("model".into()), Key("holdout_fraction".into())],
                format!("must be strictly between 0 and 1, got {hf}"),
            ));
        }
        for (name, v) in [
            ("min_roc_auc", self.gates.min_roc_auc),
            ("min_pr_auc", self.gates.min_pr_auc),
        ] {
            if let Some(v) = v
                && !(0.0..=1.0).contains(&v)
            {
                return Err((
                    vec![Key("gates".into()), Key(name.into())],
                    format!("must be between 0 and 1, got {v}"),
                ));
            }
        }
        // Expectations of each type so far: a type may bound its number.
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, e) in self.expectations.iter().enumerate() {
            let at =
                |path: Vec<PathPart>| [vec![Key("expectations".into()), Index(i)], path].concat();
            let count = counts.entry(e.name()).or_default();
            *count += 1;
            if let Some(reason) = e.too_many(*count) {
                return Err((at(Vec::new()), reason));
            }
            e.check_arguments(&|c| self.column(c).map(|c| c.ty))
                .map_err(|r| (at(r.path), r.reason))?;
        }
        self.check_features()?;
        self.check_model_and_evaluation()
    }

    fn check_features(&self) -> Result<(), (Vec<PathPart>, String)> {
        use PathPart::{Index, Key};
        for (i, c) in self.columns.iter().enumerate() {
            let at = |key: &str| vec![Key("columns".into()), Index(i), Key(key.into())];
            if let Some(m) = c.max_categories {
                if c.ty != ColumnType::String {
                    return Err((
                        at("max_categories"),
                        format!(
                            "only string columns are one-hot encoded; {:?} is {}",
                            c.name, c.ty
                        ),
                    ));
                }
                if m == 0 {
                    return Err((at("max_categories"), "must be at least 1".into()));
                }
            }
            match (c.impute, &c.fill_value) {
                (Some(Impute::Constant), None) => {
                    return Err((
                        at("impute"),
                        "impute = \"constant\" needs a fill_value".into(),
                    ));
                }
                (Some(Impute::Median | Impute::Mean), _) if c.ty == ColumnType::String => {
                    return Err((
                        at("impute"),
                        format!(
                            "{:?} is a string column: use \"most_frequent\" or \"constant\"",
                            c.name
                        ),
                    ));
                }
                (_, Some(FillValue::Text(_))) if c.ty != ColumnType::String => {
                    return Err((
                        at("fill_value"),
                        format!(
                            "{:?} is a {} column: fill_value must be a number",
                            c.name, c.ty
                        ),
                    ));
                }
                (Some(Impute::Constant), Some(_)) | (_, None) | (Some(_), Some(_)) => {}
                (None, Some(_)) => {
                    return Err((
                        at("fill_value"),
                        "fill_value is used only with impute = \"constant\"".into(),
                    ));
                }
            }
        }
        let mut names: BTreeSet<&str> = self.columns.iter().map(|c| c.name.as_str()).collect();
        for (i, f) in self.features.iter().enumerate() {
            let at = |key: &str| vec![Key("features".into()), Index(i), Key(key.into())];
            if !valid_name(&f.name) {
                return Err((
                    at("name"),
                    "must be 1-63 letters, digits, '-' or '_'".into(),
                ));
            }
            if !names.insert(f.name.as_str()) {
                return Err((
                    at("name"),
                    format!("{:?} is already a column or a feature", f.name),
                ));
            }
            let expr = crate::expr::Expr::parse(&f.expr)
                .map_err(|e| (at("expr"), format!("{:?}: {e}", f.expr)))?;
            expr.check(&|c| self.column(c).map(|c| c.ty))
                .map_err(|e| (at("expr"), format!("{:?}: {e}", f.expr)))?;
            if let Some(c) = expr.columns().iter().find(|c| **c == self.target.column) {
                return Err((
                    at("expr"),
                    format!("{c:?} is the target: a feature must not read it"),
                ));
            }
            match (f.impute, f.fill_value) {
                (Some(Impute::Constant), None) => {
                    return Err((
                        at("impute"),
                        "impute = \"constant\" needs a fill_value".into(),
                    ));
                }
                (None | Some(Impute::Median | Impute::Mean | Impute::MostFrequent), Some(_)) => {
                    return Err((
                        at("fill_value"),
                        "fill_value is used only with impute = \"constant\"".into(),
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn check_model_and_evaluation(&self) -> Result<(), (Vec<PathPart>, String)> {
        use PathPart::{Index, Key};
        let m = |key: &str| vec![Key("model".into()), Key(key.into())];
        if let Some(k) = self.model.cv_folds
            && !(2..=20).contains(&k)
        {
            return Err((m("cv_folds"), format!("must be between 2 and 20, got {k}")));
        }
        let t = self.model.selection_tolerance;
        if !(0.0..=0.1).contains(&t) {
            return Err((
                m("selection_tolerance"),
                format!("must be between 0 and 0.1, got {t}"),
            ));
        }
        // Worded as the learner words its own refusal, so the message is the
        // same whether the spec or the trainer catches it.
        if let Err(e) = self.model.gbdt.validate() {
            return Err((m("gbdt"), format!("invalid training data: {e}")));
        }
        for (i, c) in self.model.candidates.iter().enumerate() {
            if let Err(e) = c.gbdt.validate() {
                return Err((
                    vec![
                        Key("model".into()),
                        Key("candidates".into()),
                        Index(i),
                        Key("gbdt".into()),
                    ],
                    format!("invalid training data: {e}"),
                ));
            }
        }
        let ev = |key: &str| vec![Key("evaluation".into()), Key(key.into())];
        let mut seen = BTreeSet::new();
        for c in &self.evaluation.slices {
            let Some(col) = self.column(c) else {
                return Err((
                    ev("slices"),
                    format!("slice column {c:?} is not declared in [[columns]]"),
                ));
            };
            if col.ty == ColumnType::Float {
                return Err((
                    ev("slices"),
                    format!(
                        "slice column {c:?} is a float column: slice by a category, an int or a bool"
                    ),
                ));
            }
            if !seen.insert(c) {
                return Err((ev("slices"), format!("slice column {c:?} is listed twice")));
            }
        }
        if let Err(e) = self.evaluation.config(self.model.seed).validate() {
            return Err((vec![Key("evaluation".into())], e));
        }
        for (c, v) in &self.gates.slices {
            if !self.evaluation.slices.contains(c) {
                return Err((
                    vec![Key("gates".into()), Key("slices".into()), Key(c.clone())],
                    format!("{c:?} is not a slice column: add it to [evaluation] slices"),
                ));
            }
            if !(0.0..=1.0).contains(v) {
                return Err((
                    vec![Key("gates".into()), Key("slices".into()), Key(c.clone())],
                    format!("must be between 0 and 1, got {v}"),
                ));
            }
        }
        for (name, v) in [
            ("max_roc_auc_drop", self.gates.max_roc_auc_drop),
            ("max_ece", self.gates.max_ece),
        ] {
            if let Some(v) = v
                && !(0.0..=1.0).contains(&v)
            {
                return Err((
                    vec![Key("gates".into()), Key(name.into())],
                    format!("must be between 0 and 1, got {v}"),
                ));
            }
        }
        Ok(())
    }
}

/// Finds an unknown `severity` in the raw document, to name its line and key when
/// deserialisation failed (serde's message alone would not say where).
fn unknown_severity(text: &str) -> Option<(Vec<PathPart>, String)> {
    let doc: toml::Table = text.parse().ok()?;
    let list = doc.get("expectations")?.as_array()?;
    for (i, e) in list.iter().enumerate() {
        let Some(s) = e.get("severity") else { continue };
        if !matches!(s.as_str(), Some("error" | "warning")) {
            return Some((
                vec![
                    PathPart::Key("expectations".into()),
                    PathPart::Index(i),
                    PathPart::Key("severity".into()),
                ],
                format!("unknown severity {s}: use \"error\" or \"warning\""),
            ));
        }
    }
    None
}

fn render_path(p: &[PathPart]) -> String {
    let mut s = String::new();
    for part in p {
        match part {
            PathPart::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            PathPart::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// Pulls the key out of serde messages like "unknown field `nulable`, expected ...".
fn key_from_message(m: &str) -> Option<String> {
    for prefix in [
        "unknown field `",
        "missing field `",
        "unknown variant `",
        "duplicate key `",
    ] {
        if let Some(rest) = m.split(prefix).nth(1) {
            return rest.split('`').next().map(str::to_string);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const TELCO: &str = include_str!("../../../config/datasets/telco-churn.toml");

    #[test]
    fn shipped_telco_spec_parses() {
        let p = DatasetSpec::parse(TELCO, "telco-churn.toml").unwrap();
        assert_eq!(p.spec.name, "telco-churn");
        assert_eq!(p.spec.entity_column, "customerID");
        assert_eq!(p.spec.target.column, "Churn");
        assert_eq!(p.digest.len(), 64);
        assert!(
            p.spec
                .feature_columns()
                .all(|c| c.name != "customerID" && c.name != "Churn")
        );
        assert_eq!(p.spec.feature_columns().count(), 19);
    }

    fn err(text: &str) -> SpecError {
        DatasetSpec::parse(text, "x.toml").unwrap_err()
    }

    const BASE: &str = r#"name = "d"
entity_column = "id"
[target]
column = "y"
positive = "Yes"
[[columns]]
name = "id"
type = "string"
[[columns]]
name = "y"
type = "string"
[[columns]]
name = "x"
type = "float"
nullable = true
"#;

    #[test]
    fn typo_in_a_key_names_file_line_and_key() {
        let text = BASE.replace("nullable = true", "nulable = true");
        let e = err(&text);
        assert_eq!(e.key, "nulable", "{e}");
        assert_eq!(e.line, 15, "{e}");
        assert!(e.to_string().starts_with("x.toml:15: nulable"), "{e}");
    }

    #[test]
    fn unknown_expectation_is_named() {
        let text = format!(
            "{BASE}[[expectations]]\nexpectation = \"expect_column_to_be_awesome\"\ncolumn = \"x\"\n"
        );
        let e = err(&text);
        assert!(e.reason.contains("expect_column_to_be_awesome"), "{e}");
        assert!(e.line >= 16, "{e}");
    }

    #[test]
    fn expectation_on_unknown_column_points_at_its_line() {
        let text = format!(
            "{BASE}[[expectations]]\nexpectation = \"expect_column_values_to_not_be_null\"\ncolumn = \"x\"\n\
             [[expectations]]\nexpectation = \"expect_column_values_to_not_be_null\"\ncolumn = \"nope\"\n"
        );
        let e = err(&text);
        assert_eq!(e.key, "expectations[1].column");
        assert_eq!(e.line, 21, "{e}");
        assert!(e.reason.contains("nope"));
    }

    #[test]
    fn regexes_are_bounded_in_size_and_count() {
        let telco = include_str!("../../../config/datasets/telco-churn.toml");
        let with = |extra: &str| format!("{telco}\n{extra}");
        let one = |re: &str| {
            format!(
                "[[expectations]]\nexpectation = \"expect_column_values_to_match_regex\"\ncolumn = \"customerID\"\nregex = '{re}'\n"
            )
        };
        // Compiles to far more than 1 MiB of program: refused, not built.
        let e = DatasetSpec::parse(&with(&one("(a{1000}){1000}")), "t.toml").unwrap_err();
        assert!(e.to_string().contains("does not compile"), "{e}");
        let e =
            DatasetSpec::parse(&with(&one(&"a".repeat(MAX_REGEX_LEN + 1))), "t.toml").unwrap_err();
        assert!(e.to_string().contains("at most 1000"), "{e}");
        let many = (0..MAX_REGEX_EXPECTATIONS)
            .map(|_| one("^x"))
            .collect::<String>();
        let e = DatasetSpec::parse(&with(&many), "t.toml").unwrap_err();
        assert!(e.to_string().contains("more than 64 regex"), "{e}");
        assert!(DatasetSpec::parse(&with(&one("^[0-9]+$")), "t.toml").is_ok());
    }

    #[test]
    fn semantic_errors() {
        assert!(
            err(&BASE.replace("entity_column = \"id\"", "entity_column = \"zz\""))
                .reason
                .contains("zz")
        );
        assert!(
            err(&BASE.replace("column = \"y\"", "column = \"q\""))
                .key
                .contains("target.column")
        );
        let text = format!(
            "{BASE}[[expectations]]\nexpectation = \"expect_column_values_to_be_between\"\ncolumn = \"id\"\nmin_value = 0\n"
        );
        assert!(err(&text).reason.contains("numeric"));
        let text = format!(
            "{BASE}[[expectations]]\nexpectation = \"expect_column_values_to_be_in_set\"\ncolumn = \"x\"\nvalue_set = [\"a\"]\n"
        );
        assert!(err(&text).reason.contains("does not fit"));
        let text = format!("{BASE}[model]\nholdout_fraction = 1.5\n");
        assert_eq!(err(&text).key, "model.holdout_fraction");
        let text = BASE.replace("name = \"d\"", "name = \"a b\"");
        assert_eq!(err(&text).key, "name");
        assert!(err("not toml at all ===").line >= 1);
    }

    #[test]
    fn digest_is_of_the_text() {
        let a = DatasetSpec::parse(BASE, "a").unwrap();
        let b = DatasetSpec::parse(&format!("{BASE}\n# comment\n"), "a").unwrap();
        assert_eq!(a.spec, b.spec);
        assert_ne!(a.digest, b.digest);
    }

    /// BASE plus an int and a string column; expectations start on line 22.
    fn with_expectations(expectations: &str) -> String {
        format!(
            "{BASE}[[columns]]\nname = \"n\"\ntype = \"int\"\n[[columns]]\nname = \"s\"\ntype = \"string\"\n{expectations}"
        )
    }

    const EVERY_NEW: &str = r#"[[expectations]]
expectation = "expect_column_values_to_match_regex"
column = "s"
regex = '^[a-z]+\d*$'
mostly = 0.9
[[expectations]]
expectation = "expect_column_value_lengths_to_be_between"
column = "s"
min_value = 1
max_value = 8
severity = "warning"
[[expectations]]
expectation = "expect_column_values_to_be_of_type"
column = "n"
type_ = "int64"
[[expectations]]
expectation = "expect_column_values_to_be_of_type"
column = "x"
type_ = "float"
[[expectations]]
expectation = "expect_column_distinct_values_to_be_in_set"
column = "n"
value_set = [1, 2, 3]
[[expectations]]
expectation = "expect_column_proportion_of_unique_values_to_be_between"
column = "id"
min_value = 0.99
[[expectations]]
expectation = "expect_column_mean_to_be_between"
column = "x"
min_value = 0
max_value = 10
strict_max = true
[[expectations]]
expectation = "expect_column_median_to_be_between"
column = "n"
max_value = 3
[[expectations]]
expectation = "expect_column_stdev_to_be_between"
column = "x"
min_value = 0.1
[[expectations]]
expectation = "expect_column_min_to_be_between"
column = "x"
min_value = 0
strict_min = true
[[expectations]]
expectation = "expect_column_max_to_be_between"
column = "n"
max_value = 100
[[expectations]]
expectation = "expect_column_pair_values_a_to_be_greater_than_b"
column_A = "x"
column_B = "n"
or_equal = true
mostly = 0.95
[[expectations]]
expectation = "expect_compound_columns_to_be_unique"
column_list = ["id", "n"]
[[expectations]]
expectation = "expect_column_kl_divergence_to_be_less_than"
column = "x"
threshold = 0.1
partition_object = { bins = [0, 1, 5, 10], weights = [0.2, 0.5, 0.3], tail_weights = [0.0, 0.0] }
[[expectations]]
expectation = "expect_column_kl_divergence_to_be_less_than"
column = "s"
threshold = 0.1
[expectations.partition_object]
values = ["a", "b"]
weights = [0.5, 0.5]
[[expectations]]
expectation = "expect_column_values_to_be_in_set"
column = "y"
value_set = ["Yes", "No"]
severity = "error"
"#;

    #[test]
    fn every_new_expectation_parses_and_round_trips_through_toml() {
        let p = DatasetSpec::parse(&with_expectations(EVERY_NEW), "x.toml").unwrap();
        let e = &p.spec.expectations;
        assert_eq!(e.len(), 16);
        assert_eq!(e[1].severity(), Severity::Warning);
        assert_eq!(e[0].severity(), Severity::Error);
        assert_eq!(e[0].mostly(), 0.9);
        assert_eq!(e[6].bounds(), Some((Some(0.0), Some(10.0))));
        assert_eq!(
            e[11].columns(),
            vec![(ColumnArg::ColumnA, "x"), (ColumnArg::ColumnB, "n")]
        );
        assert_eq!(
            e[11].kwargs(),
            serde_json::json!({"column_A": "x", "column_B": "n", "or_equal": true, "mostly": 0.95})
        );
        assert_eq!(e[1].kwargs()["severity"], serde_json::Value::Null);
        #[derive(Serialize)]
        struct Wrap<'a> {
            expectations: &'a [Expectation],
        }
        let text = toml::to_string(&Wrap { expectations: e }).unwrap();
        let back = DatasetSpec::parse(&with_expectations(&text), "y.toml")
            .unwrap_or_else(|err| panic!("{err}\n{text}"));
        assert_eq!(&back.spec.expectations, e);
    }

    fn refused(expectations: &str) -> SpecError {
        err(&with_expectations(expectations))
    }

    #[test]
    fn refuses_a_regex_that_does_not_compile() {
        let e = refused(
            "[[expectations]]\nexpectation = \"expect_column_values_to_match_regex\"\ncolumn = \"s\"\nregex = '(?<=a)b'\n",
        );
        assert_eq!(e.key, "expectations[0].regex", "{e}");
        assert_eq!(e.line, 25, "{e}");
        assert!(e.reason.contains("does not compile"), "{e}");
        assert!(
            e.to_string()
                .starts_with("x.toml:25: expectations[0].regex"),
            "{e}"
        );
    }

    #[test]
    fn refuses_undeclared_columns_in_every_column_argument() {
        let pair = |a: &str, b: &str| {
            format!(
                "[[expectations]]\nexpectation = \"expect_column_pair_values_a_to_be_greater_than_b\"\ncolumn_A = \"{a}\"\ncolumn_B = \"{b}\"\n"
            )
        };
        let e = refused(&pair("nope", "n"));
        assert_eq!(
            (e.key.as_str(), e.line),
            ("expectations[0].column_A", 24),
            "{e}"
        );
        assert!(e.reason.contains("nope"));
        let e = refused(&pair("n", "gone"));
        assert_eq!(
            (e.key.as_str(), e.line),
            ("expectations[0].column_B", 25),
            "{e}"
        );
        let e = refused(
            "[[expectations]]\nexpectation = \"expect_compound_columns_to_be_unique\"\ncolumn_list = [\n  \"id\",\n  \"ghost\",\n]\n",
        );
        assert_eq!(
            (e.key.as_str(), e.line),
            ("expectations[0].column_list[1]", 26),
            "{e}"
        );
        let e = refused(
            "[[expectations]]\nexpectation = \"expect_column_mean_to_be_between\"\ncolumn = \"q\"\nmin_value = 1\n",
        );
        assert_eq!(
            (e.key.as_str(), e.line),
            ("expectations[0].column", 24),
            "{e}"
        );
        let e = refused(
            "[[expectations]]\nexpectation = \"expect_compound_columns_to_be_unique\"\ncolumn_list = [\"id\", \"id\"]\n",
        );
        assert!(e.reason.contains("twice"), "{e}");
    }

    #[test]
    fn refuses_numeric_expectations_on_string_columns() {
        for name in [
            "expect_column_mean_to_be_between",
            "expect_column_median_to_be_between",
            "expect_column_stdev_to_be_between",
            "expect_column_min_to_be_between",
            "expect_column_max_to_be_between",
        ] {
            let e = refused(&format!(
                "[[expectations]]\nexpectation = \"{name}\"\ncolumn = \"s\"\nmin_value = 1\n"
            ));
            assert_eq!(e.key, "expectations[0].column", "{e}");
            assert!(e.reason.contains("numeric"), "{e}");
        }
        let e = refused(
            "[[expectations]]\nexpectation = \"expect_column_pair_values_a_to_be_greater_than_b\"\ncolumn_A = \"x\"\ncolumn_B = \"s\"\n",
        );
        assert_eq!(e.key, "expectations[0].column_B", "{e}");
        let e = refused(
            "[[expectations]]\nexpectation = \"expect_column_kl_divergence_to_be_less_than\"\ncolumn = \"s\"\nthreshold = 0.1\npartition_object = { bins = [0, 1], weights = [1] }\n",
        );
        assert!(e.reason.contains("numeric"), "{e}");
        // And text expectations on numbers.
        let e = refused(
            "[[expectations]]\nexpectation = \"expect_column_values_to_match_regex\"\ncolumn = \"n\"\nregex = 'a'\n",
        );
        assert!(e.reason.contains("string column"), "{e}");
        let e = refused(
            "[[expectations]]\nexpectation = \"expect_column_value_lengths_to_be_between\"\ncolumn = \"x\"\nmax_value = 3\n",
        );
        assert!(e.reason.contains("string column"), "{e}");
    }

    #[test]
    fn refuses_min_value_above_max_value() {
        for (name, column) in [
            ("expect_column_mean_to_be_between", "x"),
            ("expect_column_median_to_be_between", "n"),
            ("expect_column_stdev_to_be_between", "x"),
            ("expect_column_min_to_be_between", "x"),
            ("expect_column_max_to_be_between", "x"),
            (
                "expect_column_proportion_of_unique_values_to_be_between",
                "s",
            ),
            ("expect_column_value_lengths_to_be_between", "s"),
            ("expect_column_values_to_be_between", "x"),
            ("expect_table_row_count_to_be_between", "x"),
        ] {
            let column = if name.starts_with("expect_table") {
                String::new()
            } else {
                format!("column = \"{column}\"\n")
            };
            let e = refused(&format!(
                "[[expectations]]\nexpectation = \"{name}\"\n{column}min_value = 5\nmax_value = 2\n"
            ));
            assert_eq!(e.key, "expectations[0].min_value", "{name}: {e}");
            assert!(e.reason.contains("above max_value"), "{name}: {e}");
        }
        let e = refused(
            "[[expectations]]\nexpectation = \"expect_column_mean_to_be_between\"\ncolumn = \"x\"\n",
        );
        assert!(e.reason.contains("give min_value"), "{e}");
    }

    #[test]
    fn refuses_bad_partition_objects() {
        let kl = |column: &str, po: &str| {
            refused(&format!(
                "[[expectations]]\nexpectation = \"expect_column_kl_divergence_to_be_less_than\"\ncolumn = \"{column}\"\nthreshold = 0.1\n[expectations.partition_object]\n{po}\n"
            ))
        };
        let e = kl("x", "bins = [0, 1, 2]\nweights = [0.2, 0.3, 0.5]");
        assert_eq!(e.key, "expectations[0].partition_object.weights", "{e}");
        assert_eq!(e.line, 28, "{e}");
        assert!(e.reason.contains("lengths do not match"), "{e}");
        let e = kl("x", "bins = [0, 1, 2]\nweights = [0.5, -0.5]");
        assert_eq!(e.key, "expectations[0].partition_object.weights", "{e}");
        assert!(e.reason.contains("negative"), "{e}");
        let e = kl("s", "values = [\"a\", \"b\"]\nweights = [1]");
        assert!(e.reason.contains("lengths do not match"), "{e}");
        let e = kl("s", "values = [\"a\", 1]\nweights = [1, 1]");
        assert_eq!(e.key, "expectations[0].partition_object.values", "{e}");
        let e = kl("x", "bins = [0, 2, 1]\nweights = [1, 1]");
        assert_eq!(e.key, "expectations[0].partition_object.bins", "{e}");
        let e = kl("x", "bins = [0, 1]\nvalues = [1.0]\nweights = [1]");
        assert_eq!(e.key, "expectations[0].partition_object", "{e}");
        let e = kl("x", "bins = [0, 1]\nweights = [0]");
        assert!(e.reason.contains("sum to 0"), "{e}");
        let e = kl("x", "bins = [0, 1]\nweights = [1]\ntail_weights = [0.1]");
        assert_eq!(
            e.key, "expectations[0].partition_object.tail_weights",
            "{e}"
        );
        let e = kl("x", "bins = [0, 1]\nweights = [1]\nbogus = 1");
        assert!(e.reason.contains("bogus"), "{e}");
        let e = refused(
            "[[expectations]]\nexpectation = \"expect_column_kl_divergence_to_be_less_than\"\ncolumn = \"x\"\nthreshold = -1\npartition_object = { bins = [0, 1], weights = [1] }\n",
        );
        assert_eq!(e.key, "expectations[0].threshold", "{e}");
    }

    #[test]
    fn refuses_an_unknown_severity_with_its_line() {
        let e = refused(
            "[[expectations]]\nexpectation = \"expect_column_values_to_not_be_null\"\ncolumn = \"x\"\nseverity = \"warning\"\n\
             [[expectations]]\nexpectation = \"expect_column_values_to_not_be_null\"\ncolumn = \"n\"\nseverity = \"fatal\"\n",
        );
        assert_eq!(e.key, "expectations[1].severity", "{e}");
        assert_eq!(e.line, 29, "{e}");
        assert!(
            e.reason.contains("fatal") && e.reason.contains("warning"),
            "{e}"
        );
    }

    #[test]
    fn of_type_must_name_the_declared_type() {
        let of_type = |column: &str, ty: &str| {
            DatasetSpec::parse(
                &with_expectations(&format!(
                    "[[expectations]]\nexpectation = \"expect_column_values_to_be_of_type\"\ncolumn = \"{column}\"\ntype_ = \"{ty}\"\n"
                )),
                "x.toml",
            )
        };
        for (column, ty) in [
            ("n", "int"),
            ("n", "int64"),
            ("n", "INTEGER"),
            ("x", "float"),
            ("x", "float64"),
            ("s", "str"),
            ("s", "string"),
            ("s", "object"),
        ] {
            assert!(of_type(column, ty).is_ok(), "{column} {ty}");
        }
        let e = of_type("x", "str").unwrap_err();
        assert_eq!(e.key, "expectations[0].type_", "{e}");
        assert!(e.reason.contains("declared float"), "{e}");
        let e = of_type("x", "decimal128").unwrap_err();
        assert!(e.reason.contains("unknown type"), "{e}");
        assert_eq!(ColumnType::from_ge_type("boolean"), Some(ColumnType::Bool));
        assert_eq!(ColumnType::from_ge_type("bool"), Some(ColumnType::Bool));
    }

    #[test]
    fn feature_options_and_derived_features_are_checked() {
        let ok = format!("{BASE}[[features]]\nname = \"x2\"\nexpr = \"x * 2\"\n");
        assert!(DatasetSpec::parse(&ok, "x.toml").is_ok());
        let e = err(&format!(
            "{BASE}[[features]]\nname = \"x2\"\nexpr = \"x * \"\n"
        ));
        assert_eq!(e.key, "features[0].expr");
        assert_eq!(e.line, 18, "{e}");
        let e = err(&format!(
            "{BASE}[[features]]\nname = \"x2\"\nexpr = \"nope + 1\"\n"
        ));
        assert!(e.reason.contains("unknown column"), "{e}");
        let e = err(&format!("{BASE}[[features]]\nname = \"x\"\nexpr = \"1\"\n"));
        assert!(e.reason.contains("already a column"), "{e}");
        let e = err(&format!(
            "{BASE}[[features]]\nname = \"leak\"\nexpr = \"y == 'Yes'\"\n"
        ));
        assert!(e.reason.contains("target"), "{e}");
        let e = err(&BASE.replace("nullable = true", "nullable = true\nmax_categories = 3"));
        assert_eq!(e.key, "columns[2].max_categories");
        let e = err(&BASE.replace("nullable = true", "nullable = true\nimpute = \"constant\""));
        assert!(e.reason.contains("fill_value"), "{e}");
        let e = err(&BASE.replace("nullable = true", "nullable = true\nfill_value = 3.0"));
        assert!(e.reason.contains("only with impute"), "{e}");
        assert!(DatasetSpec::parse(&BASE.replace("nullable = true", "nullable = true\nimpute = \"constant\"\nfill_value = 0.0\nmissing_indicator = true"), "x.toml").is_ok());
    }

    #[test]
    fn evaluation_model_and_gate_settings_are_checked() {
        let ok = format!(
            "{BASE}[evaluation]\nslices = [\"id\"]\nthreshold = {{ rule = \"cost\", false_positive = 1.0, false_negative = 5.0 }}\n[gates]\nslices = {{ id = 0.6 }}\nmax_ece = 0.1\n"
        );
        let p = DatasetSpec::parse(&ok, "x.toml").unwrap();
        assert_eq!(p.spec.gates.slices["id"], 0.6);
        let e = err(&format!("{BASE}[evaluation]\nslices = [\"nope\"]\n"));
        assert_eq!(e.key, "evaluation.slices");
        let e = err(&format!("{BASE}[evaluation]\nslices = [\"x\"]\n"));
        assert!(e.reason.contains("float"), "{e}");
        let e = err(&format!("{BASE}[gates]\nslices = {{ id = 0.6 }}\n"));
        assert!(e.reason.contains("not a slice column"), "{e}");
        let e = err(&format!(
            "{BASE}[evaluation]\nthreshold = {{ rule = \"best\" }}\n"
        ));
        assert!(
            e.reason.contains("best") || e.reason.contains("variant"),
            "{e}"
        );
        let e = err(&format!("{BASE}[model]\ncv_folds = 1\n"));
        assert_eq!(e.key, "model.cv_folds");
        let e = err(&format!(
            "{BASE}[model]\n[[model.candidates]]\nalgorithm = \"forest\"\n"
        ));
        assert!(e.reason.contains("forest"), "{e}");
        let two = format!(
            "{BASE}[model]\ncv_folds = 3\n[[model.candidates]]\nalgorithm = \"logistic\"\n[[model.candidates]]\nname = \"deep\"\nalgorithm = \"gbdt\"\n[model.candidates.gbdt]\nnum_leaves = 63\n"
        );
        let p = DatasetSpec::parse(&two, "x.toml").unwrap();
        let c = p.spec.model.candidates();
        assert_eq!(c.len(), 2);
        assert_eq!(c[1].label(), "deep");
        assert_eq!(c[1].gbdt.num_leaves, 63);
    }
}
