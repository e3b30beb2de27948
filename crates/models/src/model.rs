//! The model artifact: everything serving needs to answer exactly as training
//! evaluated, in one JSON document whose SHA-256 is the model's identity: the input
//! schema, the fitted feature transform, the estimator (LightGBM's own text model,
//! or logistic coefficients) and the labels.
//!
//! [`Predictor`] loads an artifact for serving: it validates raw records against
//! the input schema (a bad record gets an error naming the field), encodes them and
//! predicts in pure Rust, so it can be shared across threads.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::MlError;
use crate::gbdt::GbdtModel;
use crate::logistic::LogisticModel;
use modelbus_dataset::spec::{Algorithm, ColumnType, DatasetSpec, Role};
use modelbus_featurize::features::{Cell, FeatureTransform};

/// Format tag of the artifact JSON.
pub const FORMAT: &str = "modelbus.model.v1";

/// How a raw input column is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputRole {
    /// A model input.
    Feature,
    /// The entity id (accepted, not used).
    Entity,
    /// The target (accepted and ignored, so a CSV row can be sent as is).
    Target,
    /// Declared but not used.
    Ignore,
}

/// One raw input column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputColumn {
    /// Name, as in the CSV header.
    pub name: String,
    /// Value type.
    #[serde(rename = "type")]
    pub ty: ColumnType,
    /// Whether it may be null or absent.
    pub nullable: bool,
    /// Use.
    pub role: InputRole,
}

/// The raw records a model accepts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputSchema {
    /// Columns in spec order.
    pub columns: Vec<InputColumn>,
    /// Strings read as null.
    pub null_values: Vec<String>,
    /// Entity column name.
    pub entity_column: String,
}

impl InputSchema {
    /// The schema of a spec.
    pub fn from_spec(spec: &DatasetSpec) -> Self {
        Self {
            columns: spec
                .columns
                .iter()
                .map(|c| InputColumn {
                    name: c.name.clone(),
                    ty: c.ty,
                    nullable: c.nullable,
                    role: if c.name == spec.entity_column {
                        InputRole::Entity
                    } else if c.name == spec.target.column {
                        InputRole::Target
                    } else if c.role == Role::Ignore {
                        InputRole::Ignore
                    } else {
                        InputRole::Feature
                    },
                })
                .collect(),
            null_values: spec.null_values.clone(),
            entity_column: spec.entity_column.clone(),
        }
    }
}

/// The fitted estimator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Estimator {
    /// LightGBM text model (opens in LightGBM's Python package too).
    Gbdt {
        /// The model text.
        model: String,
    },
    /// Logistic regression.
    Logistic(LogisticModel),
}

/// The model artifact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelArtifact {
    /// Always [`FORMAT`].
    pub format: String,
    /// Registered model name.
    pub model_name: String,
    /// Dataset it was trained on.
    pub dataset: String,
    /// Learner.
    pub algorithm: Algorithm,
    /// Label returned for a positive prediction.
    pub positive_label: String,
    /// Label returned for a negative prediction.
    pub negative_label: String,
    /// Probability at or above which the positive label is returned.
    pub threshold: f64,
    /// Accepted records.
    pub input: InputSchema,
    /// Fitted transform (training split only).
    pub transform: FeatureTransform,
    /// Names of the encoded features.
    pub feature_names: Vec<String>,
    /// The estimator.
    pub estimator: Estimator,
}

impl ModelArtifact {
    /// Canonical JSON bytes (the artifact's digest is taken over these).
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses artifact bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, MlError> {
        let a: ModelArtifact = serde_json::from_slice(bytes)
            .map_err(|e| MlError::InvalidModel(format!("model artifact: {e}")))?;
        if a.format != FORMAT {
            return Err(MlError::InvalidModel(format!(
                "model artifact format {:?}, expected {FORMAT:?}",
                a.format
            )));
        }
        let mut a = a;
        a.transform = a.transform.prepare().map_err(MlError::InvalidModel)?;
        Ok(a)
    }
}

/// Why a record was refused at prediction time.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("instances[{index}].{field}: {reason}")]
pub struct RecordError {
    /// Position of the record in the request.
    pub index: usize,
    /// The offending field.
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

/// One prediction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// Probability of the positive class.
    pub probability: f64,
    /// Positive or negative label at the model's threshold.
    pub label: String,
}

enum Loaded {
    Gbdt(GbdtModel),
    Logistic(LogisticModel),
}

/// A model ready to predict; `Send + Sync`.
pub struct Predictor {
    artifact: ModelArtifact,
    loaded: Loaded,
    /// For each transform column, the index of its input column.
    feature_inputs: Vec<usize>,
}

impl std::fmt::Debug for Predictor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Predictor")
            .field("model", &self.artifact.model_name)
            .field("algorithm", &self.artifact.algorithm)
            .finish()
    }
}

impl Predictor {
    /// Loads an artifact, parsing the estimator once.
    pub fn new(artifact: ModelArtifact) -> Result<Self, MlError> {
        let loaded = match &artifact.estimator {
            Estimator::Gbdt { model } => {
                let m = GbdtModel::parse(model)?;
                if m.num_features() != artifact.transform.num_features() {
                    return Err(MlError::InvalidModel(format!(
                        "the LightGBM model has {} features but the transform produces {}",
                        m.num_features(),
                        artifact.transform.num_features()
                    )));
                }
                Loaded::Gbdt(m)
            }
            Estimator::Logistic(m) => Loaded::Logistic(m.clone()),
        };
        let mut feature_inputs = Vec::new();
        for name in &artifact.transform.inputs {
            let i = artifact
                .input
                .columns
                .iter()
                .position(|c| &c.name == name)
                .ok_or_else(|| {
                    MlError::InvalidModel(format!(
                        "transform input {name:?} is not in the input schema"
                    ))
                })?;
            feature_inputs.push(i);
        }
        Ok(Self {
            artifact,
            loaded,
            feature_inputs,
        })
    }

    /// The artifact.
    pub fn artifact(&self) -> &ModelArtifact {
        &self.artifact
    }

    /// Probability of the positive class for one encoded row.
    pub fn predict_encoded(&self, row: &[f64]) -> f64 {
        match &self.loaded {
            Loaded::Gbdt(m) => m.predict_proba(row),
            Loaded::Logistic(m) => m.predict_proba(row),
        }
    }

    /// Probabilities for rows of typed chunks (global row indices over all chunks,
    /// ascending), reading each transform input from the chunk column
    /// `column_index` names. Fails naming the first input the data lacks.
    pub fn predict_chunk_rows(
        &self,
        chunks: &[modelbus_dataset::table::Chunk],
        column_index: &dyn Fn(&str) -> Option<usize>,
        rows: &[usize],
    ) -> Result<Vec<f64>, MlError> {
        let t = &self.artifact.transform;
        let idx: Vec<usize> = t
            .inputs
            .iter()
            .map(|c| {
                column_index(c).ok_or_else(|| {
                    MlError::InvalidData(format!(
                        "the data has no column {c:?}, which this model reads"
                    ))
                })
            })
            .collect::<Result<_, _>>()?;
        let mut out = Vec::with_capacity(rows.len());
        let mut want = rows.iter().copied().peekable();
        let mut base = 0usize;
        let mut encoded = Vec::with_capacity(t.num_features());
        let mut cells = Vec::with_capacity(idx.len());
        for chunk in chunks {
            let n = chunk.batch.num_rows();
            while let Some(&r) = want.peek() {
                if r >= base + n {
                    break;
                }
                want.next();
                let i = r - base;
                cells.clear();
                cells.extend(
                    idx.iter()
                        .map(|&ci| modelbus_featurize::features::cell(chunk, ci, i)),
                );
                encoded.clear();
                t.encode_row(&cells, &mut encoded);
                out.push(self.predict_encoded(&encoded));
            }
            base += n;
        }
        Ok(out)
    }

    /// Validates and predicts raw records (`{column: value}` as in the CSV).
    pub fn predict_records(
        &self,
        records: &[Map<String, Value>],
    ) -> Result<Vec<Prediction>, RecordError> {
        let mut out = Vec::with_capacity(records.len());
        let mut row = Vec::with_capacity(self.artifact.transform.num_features());
        for (index, rec) in records.iter().enumerate() {
            let cells = self.cells(index, rec)?;
            row.clear();
            self.artifact.transform.encode_row(&cells, &mut row);
            let p = self.predict_encoded(&row);
            out.push(Prediction {
                probability: p,
                label: if p >= self.artifact.threshold {
                    self.artifact.positive_label.clone()
                } else {
                    self.artifact.negative_label.clone()
                },
            });
        }
        Ok(out)
    }

    fn cells<'a>(
        &self,
        index: usize,
        rec: &'a Map<String, Value>,
    ) -> Result<Vec<Cell<'a>>, RecordError> {
        let schema = &self.artifact.input;
        let err = |field: &str, reason: String| RecordError {
            index,
            field: field.to_string(),
            reason,
        };
        for key in rec.keys() {
            if !schema.columns.iter().any(|c| &c.name == key) {
                return Err(err(
                    &shown(key),
                    "unknown field: not a column of this model's input schema".into(),
                ));
            }
        }
        let mut cells = Vec::with_capacity(self.feature_inputs.len());
        for &ci in &self.feature_inputs {
            let col = &schema.columns[ci];
            let cell = match rec.get(&col.name) {
                None | Some(Value::Null) => Cell::Null,
                Some(Value::String(s)) if schema.null_values.iter().any(|n| n == s) => Cell::Null,
                Some(v) => typed_cell(col, v).map_err(|reason| err(&col.name, reason))?,
            };
            if cell == Cell::Null && !col.nullable {
                return Err(err(
                    &col.name,
                    format!(
                        "required ({} column, not nullable) but missing or null",
                        col.ty
                    ),
                ));
            }
            cells.push(cell);
        }
        Ok(cells)
    }
}

/// A client's value as an error message shows it: at most 64 characters of its
/// JSON, so a huge string or array sent in a field is not echoed back whole.
fn shown(v: &dyn std::fmt::Display) -> String {
    const MAX: usize = 64;
    let text = v.to_string();
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}… ({} bytes)", &text[..cut], text.len()),
        None => text,
    }
}

fn typed_cell<'a>(col: &InputColumn, v: &'a Value) -> Result<Cell<'a>, String> {
    match (col.ty, v) {
        (ColumnType::Int, Value::Number(n)) => match n.as_i64() {
            Some(i) => Ok(Cell::Num(i as f64)),
            None => Err(format!("expected an integer, got {}", shown(n))),
        },
        (ColumnType::Int, Value::String(s)) => s
            .trim()
            .parse::<i64>()
            .map(|i| Cell::Num(i as f64))
            .map_err(|_| format!("expected an integer, got {}", shown(&format!("{s:?}")))),
        (ColumnType::Float, Value::Number(n)) => n
            .as_f64()
            .map(Cell::Num)
            .ok_or_else(|| format!("expected a number, got {}", shown(n))),
        (ColumnType::Float, Value::String(s)) => match s.trim().parse::<f64>() {
            Ok(x) if x.is_finite() => Ok(Cell::Num(x)),
            _ => Err(format!(
                "expected a number, got {}",
                shown(&format!("{s:?}"))
            )),
        },
        (ColumnType::Bool, Value::Bool(b)) => Ok(Cell::Bool(*b)),
        (ColumnType::Bool, Value::String(s)) => modelbus_dataset::table::parse_bool(s.trim())
            .map(Cell::Bool)
            .ok_or_else(|| format!("expected a boolean, got {}", shown(&format!("{s:?}")))),
        (ColumnType::String, Value::String(s)) => Ok(Cell::Text(s)),
        (ColumnType::String, Value::Number(_) | Value::Bool(_)) => {
            Err(format!("expected a string, got {}", shown(v)))
        }
        (ty, other) => Err(format!("expected a {ty} value, got {}", shown(other))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use modelbus_featurize::features::ColumnTransform;

    fn predictor() -> Predictor {
        let spec_text = r#"name = "d"
entity_column = "id"
[target]
column = "y"
positive = "Yes"
[[columns]]
name = "id"
type = "string"
[[columns]]
name = "x"
type = "float"
nullable = true
[[columns]]
name = "c"
type = "string"
[[columns]]
name = "y"
type = "string"
"#;
        let spec = DatasetSpec::parse(spec_text, "t").unwrap().spec;
        let transform = FeatureTransform::new(vec![
            ColumnTransform::Numeric {
                column: "x".into(),
                impute: 0.0,
                missing_indicator: false,
            },
            ColumnTransform::OneHot {
                column: "c".into(),
                categories: vec!["a".into(), "b".into()],
                other: false,
                impute: None,
                missing_indicator: false,
            },
        ])
        .unwrap();
        let artifact = ModelArtifact {
            format: FORMAT.into(),
            model_name: "d".into(),
            dataset: "d".into(),
            algorithm: Algorithm::Logistic,
            positive_label: "Yes".into(),
            negative_label: "No".into(),
            threshold: 0.5,
            input: InputSchema::from_spec(&spec),
            feature_names: transform.feature_names(),
            transform,
            estimator: Estimator::Logistic(LogisticModel {
                means: vec![0.0; 3],
                scales: vec![1.0; 3],
                coef: vec![1.0, 2.0, -2.0],
                intercept: 0.0,
                iterations: 1,
            }),
        };
        let back = ModelArtifact::from_bytes(&artifact.to_bytes()).unwrap();
        assert_eq!(back, artifact);
        Predictor::new(back).unwrap()
    }

    fn rec(v: serde_json::Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn predicts_raw_records_and_handles_unknowns() {
        let p = predictor();
        let out = p
            .predict_records(&[
                rec(serde_json::json!({"id": "1", "x": 1.0, "c": "a"})),
                rec(serde_json::json!({"id": "2", "x": "0", "c": "b", "y": "No"})),
                rec(serde_json::json!({"c": "never-seen"})),
            ])
            .unwrap();
        assert!((out[0].probability - 1.0 / (1.0 + (-3.0f64).exp())).abs() < 1e-12);
        assert_eq!(out[0].label, "Yes");
        assert_eq!(out[1].label, "No");
        assert!(
            (out[2].probability - 0.5).abs() < 1e-12,
            "missing nullable x and unknown c"
        );
    }

    #[test]
    fn bad_records_name_the_field() {
        let p = predictor();
        let e = p
            .predict_records(&[rec(serde_json::json!({"x": "abc", "c": "a"}))])
            .unwrap_err();
        assert_eq!(e.field, "x");
        assert!(e.to_string().starts_with("instances[0].x"), "{e}");
        let e = p
            .predict_records(&[
                rec(serde_json::json!({"c": "a"})),
                rec(serde_json::json!({"zzz": 1, "c": "a"})),
            ])
            .unwrap_err();
        assert_eq!((e.index, e.field.as_str()), (1, "zzz"));
        let e = p
            .predict_records(&[rec(serde_json::json!({"x": 1}))])
            .unwrap_err();
        assert_eq!(e.field, "c");
        assert!(e.reason.contains("required"));
        let e = p
            .predict_records(&[rec(serde_json::json!({"x": 1, "c": 5}))])
            .unwrap_err();
        assert_eq!(e.field, "c");
    }
}
