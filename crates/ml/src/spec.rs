//! The dataset spec: the user-facing contract for a dataset (columns and types,
//! entity and target, expectations with Great Expectations names and arguments,
//! model settings and gates), written in TOML.
//!
//! Parsing refuses anything doubtful with the file, line and key named: unknown
//! keys (typos), wrong types, expectations on columns that do not exist, value
//! sets that do not fit their column's type.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::gbdt::GbdtParams;
use crate::logistic::LogisticParams;

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

/// Type of a column's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnType {
    /// 64-bit signed integer.
    Int,
    /// 64-bit float.
    Float,
    /// UTF-8 text; one-hot encoded as a feature.
    String,
    /// `true/false`, `t/f`, `yes/no`, `1/0` (case-insensitive).
    Bool,
}

impl ColumnType {
    /// Whether values are numbers.
    pub fn is_numeric(self) -> bool {
        matches!(self, ColumnType::Int | ColumnType::Float)
    }
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ColumnType::Int => "int",
            ColumnType::Float => "float",
            ColumnType::String => "string",
            ColumnType::Bool => "bool",
        })
    }
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

/// A literal in an expectation's value set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::Bool(b) => write!(f, "{b}"),
            Scalar::Int(i) => write!(f, "{i}"),
            Scalar::Float(x) => write!(f, "{x}"),
            Scalar::Str(s) => write!(f, "{s:?}"),
        }
    }
}

/// An expectation, named and parameterised as in Great Expectations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "expectation", deny_unknown_fields)]
pub enum Expectation {
    /// Values are not null.
    #[serde(rename = "expect_column_values_to_not_be_null")]
    NotNull {
        /// Column.
        column: String,
        /// Fraction of rows that must pass (GE `mostly`).
        #[serde(default)]
        mostly: Option<f64>,
    },
    /// Non-null values are in a set.
    #[serde(rename = "expect_column_values_to_be_in_set")]
    InSet {
        /// Column.
        column: String,
        /// Allowed values.
        value_set: Vec<Scalar>,
        /// Fraction of non-null rows that must pass.
        #[serde(default)]
        mostly: Option<f64>,
    },
    /// Non-null numeric values are within bounds.
    #[serde(rename = "expect_column_values_to_be_between")]
    Between {
        /// Column.
        column: String,
        /// Lower bound (inclusive unless `strict_min`).
        #[serde(default)]
        min_value: Option<f64>,
        /// Upper bound (inclusive unless `strict_max`).
        #[serde(default)]
        max_value: Option<f64>,
        /// Exclusive lower bound.
        #[serde(default)]
        strict_min: bool,
        /// Exclusive upper bound.
        #[serde(default)]
        strict_max: bool,
        /// Fraction of non-null rows that must pass.
        #[serde(default)]
        mostly: Option<f64>,
    },
    /// Non-null values are unique.
    #[serde(rename = "expect_column_values_to_be_unique")]
    Unique {
        /// Column.
        column: String,
        /// Fraction of non-null rows that must pass.
        #[serde(default)]
        mostly: Option<f64>,
    },
    /// The number of rows is within bounds.
    #[serde(rename = "expect_table_row_count_to_be_between")]
    RowCount {
        /// Minimum rows (inclusive).
        #[serde(default)]
        min_value: Option<u64>,
        /// Maximum rows (inclusive).
        #[serde(default)]
        max_value: Option<u64>,
    },
    /// The header holds exactly (or at least) these columns. Implied by `[[columns]]`.
    #[serde(rename = "expect_table_columns_to_match_set")]
    ColumnsMatchSet {
        /// The columns.
        column_set: Vec<String>,
        /// When false, extra columns are allowed.
        #[serde(default = "yes")]
        exact_match: bool,
    },
}

fn yes() -> bool {
    true
}

impl Expectation {
    /// The Great Expectations name.
    pub fn name(&self) -> &'static str {
        match self {
            Expectation::NotNull { .. } => "expect_column_values_to_not_be_null",
            Expectation::InSet { .. } => "expect_column_values_to_be_in_set",
            Expectation::Between { .. } => "expect_column_values_to_be_between",
            Expectation::Unique { .. } => "expect_column_values_to_be_unique",
            Expectation::RowCount { .. } => "expect_table_row_count_to_be_between",
            Expectation::ColumnsMatchSet { .. } => "expect_table_columns_to_match_set",
        }
    }

    /// The column it checks, for column expectations.
    pub fn column(&self) -> Option<&str> {
        match self {
            Expectation::NotNull { column, .. }
            | Expectation::InSet { column, .. }
            | Expectation::Between { column, .. }
            | Expectation::Unique { column, .. } => Some(column),
            Expectation::RowCount { .. } | Expectation::ColumnsMatchSet { .. } => None,
        }
    }

    /// GE `mostly` (1.0 when unset).
    pub fn mostly(&self) -> f64 {
        match self {
            Expectation::NotNull { mostly, .. }
            | Expectation::InSet { mostly, .. }
            | Expectation::Between { mostly, .. }
            | Expectation::Unique { mostly, .. } => mostly.unwrap_or(1.0),
            _ => 1.0,
        }
    }

    /// The arguments as JSON (GE's `kwargs`), for reports.
    pub fn kwargs(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.remove("expectation");
        }
        v
    }
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
        let spec: DatasetSpec = toml::from_str(text).map_err(|e| {
            let reason = e.message().to_string();
            SpecError {
                source_name: source_name.to_string(),
                line: line_of(text, e.span()),
                key: key_from_message(&reason).unwrap_or_else(|| "(document)".into()),
                reason,
            }
        })?;
        spec.check().map_err(|(path, reason)| {
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
        })?;
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
        for (i, e) in self.expectations.iter().enumerate() {
            let at = |key: &str| vec![Key("expectations".into()), Index(i), Key(key.into())];
            if let Some(col) = e.column() {
                let Some(c) = self.column(col) else {
                    return Err((
                        at("column"),
                        format!(
                            "{} names column {col:?}, which is not declared in [[columns]]",
                            e.name()
                        ),
                    ));
                };
                let m = e.mostly();
                if !(0.0..=1.0).contains(&m) {
                    return Err((at("mostly"), format!("must be between 0 and 1, got {m}")));
                }
                match e {
                    Expectation::Between {
                        min_value,
                        max_value,
                        ..
                    } => {
                        if !c.ty.is_numeric() {
                            return Err((
                                at("column"),
                                format!("{} needs a numeric column; {col:?} is {}", e.name(), c.ty),
                            ));
                        }
                        if min_value.is_none() && max_value.is_none() {
                            return Err((
                                at("min_value"),
                                "give min_value, max_value or both".into(),
                            ));
                        }
                        if let (Some(a), Some(b)) = (min_value, max_value)
                            && a > b
                        {
                            return Err((
                                at("min_value"),
                                format!("min_value {a} is above max_value {b}"),
                            ));
                        }
                    }
                    Expectation::InSet { value_set, .. } => {
                        if value_set.is_empty() {
                            return Err((at("value_set"), "must not be empty".into()));
                        }
                        for v in value_set {
                            let fits = matches!(
                                (c.ty, v),
                                (ColumnType::String, Scalar::Str(_))
                                    | (ColumnType::Int, Scalar::Int(_))
                                    | (ColumnType::Float, Scalar::Int(_) | Scalar::Float(_))
                                    | (ColumnType::Bool, Scalar::Bool(_))
                            );
                            if !fits {
                                return Err((
                                    at("value_set"),
                                    format!(
                                        "value {v} does not fit column {col:?} of type {}",
                                        c.ty
                                    ),
                                ));
                            }
                        }
                    }
                    _ => {}
                }
            }
            if let Expectation::RowCount {
                min_value: Some(a),
                max_value: Some(b),
            } = e
                && a > b
            {
                return Err((
                    at("min_value"),
                    format!("min_value {a} is above max_value {b}"),
                ));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
enum PathPart {
    Key(String),
    Index(usize),
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
}
