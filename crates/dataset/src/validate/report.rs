//! The validation report, shaped like Great Expectations' validation results,
//! and the severity that decides whether a failure rejects the batch.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest entity id, in bytes, a batch may hold. It must equal
/// `modelbus_core::online::MAX_ENTITY_ID_BYTES` (the id becomes part of a NATS
/// KV subject, and nats-server drops a connection whose control line is too
/// long); this crate does not depend on `modelbus-core`, so ingest's tests check
/// the two agree. Validation refuses longer ids with their rows, so a producer
/// learns of them at ingest rather than from a later stage.
pub const MAX_ENTITY_ID_BYTES: usize = 256;

/// Characters of a text value kept in a sample or a reason; longer values are
/// cut and marked with their length, so a huge cell cannot bloat a report or
/// push an event past the bus's message size limit.
pub const SAMPLE_CHARS: usize = 200;

/// A text value for a sample: cut at [`SAMPLE_CHARS`] characters, a cut value
/// ending in `… (N bytes)`.
pub fn sample_text(s: &str) -> serde_json::Value {
    match s.char_indices().nth(SAMPLE_CHARS) {
        None => s.into(),
        Some((end, _)) => format!("{}… ({} bytes)", &s[..end], s.len()).into(),
    }
}

/// Why a text value cannot be an entity id, or `None` when it can (the rule of
/// `modelbus_core::online::check_entity_id`).
pub fn entity_id_problem(id: &str) -> Option<String> {
    if id.is_empty() {
        return Some("entity id is empty".into());
    }
    if id.len() > MAX_ENTITY_ID_BYTES {
        return Some(format!(
            "entity id is {} bytes long; at most {MAX_ENTITY_ID_BYTES} are accepted",
            id.len()
        ));
    }
    if id.chars().any(char::is_control) {
        return Some("entity id contains a control character".into());
    }
    None
}

/// How much a failing expectation matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// A failure rejects the batch (the default).
    #[default]
    Error,
    /// A failure is reported (`ValidationReport::warnings`) but the batch passes.
    Warning,
}

impl Severity {
    /// Whether this is the default severity, `error`.
    pub fn is_error(&self) -> bool {
        *self == Severity::Error
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// An unexpected value and where it was.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Unexpected {
    /// 1-based data row (the header is not counted).
    pub row: u64,
    /// The value (null for a missing value; an array for several columns).
    pub value: serde_json::Value,
}

/// GE's `result` member.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResultDetail {
    /// What was measured (row count, header, mean, distinct values...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_value: Option<serde_json::Value>,
    /// Rows considered.
    pub element_count: u64,
    /// Null values among them (rows ignored, for column pairs and lists).
    pub missing_count: u64,
    /// Values that failed.
    pub unexpected_count: u64,
    /// Failed share of the non-null values, in percent.
    pub unexpected_percent: f64,
    /// Up to 20 failing values with their rows.
    pub partial_unexpected_list: Vec<Unexpected>,
    /// Free-text explanation: why the check could not run normally, or how the
    /// observed value was obtained (approximate median).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
}

/// The outcome of one expectation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExpectationResult {
    /// GE expectation type.
    pub expectation: String,
    /// Its arguments.
    pub kwargs: serde_json::Value,
    /// True for checks implied by the column declarations.
    pub implied: bool,
    /// Whether a failure rejects the batch (`error`) or only warns.
    #[serde(default)]
    pub severity: Severity,
    /// Whether it passed.
    pub success: bool,
    /// Measurements.
    pub result: ResultDetail,
}

/// A JSON value for a message: numbers as Rust prints them (`40`, not `40.0`).
pub(crate) fn json_num(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Number(n) if !(n.is_i64() || n.is_u64()) => n
            .as_f64()
            .map(|f| f.to_string())
            .unwrap_or_else(|| n.to_string()),
        other => other.to_string(),
    }
}

impl ExpectationResult {
    /// The column(s) it is about, for messages: `column "x"`, `columns "a", "b"`.
    pub fn subject(&self) -> Option<String> {
        let k = &self.kwargs;
        if let Some(c) = k.get("column").and_then(|c| c.as_str()) {
            return Some(format!("column {c:?}"));
        }
        if let (Some(a), Some(b)) = (
            k.get("column_A").and_then(|c| c.as_str()),
            k.get("column_B").and_then(|c| c.as_str()),
        ) {
            return Some(format!("columns {a:?} > {b:?}"));
        }
        if let Some(list) = k.get("column_list").and_then(|c| c.as_array()) {
            let names: Vec<String> = list.iter().map(|c| c.to_string()).collect();
            return Some(format!("columns {}", names.join(", ")));
        }
        None
    }

    /// One line for a rejection reason or warning: expectation, column, counts, examples.
    pub fn reason(&self) -> String {
        let col = self
            .subject()
            .map(|s| format!(" on {s}"))
            .unwrap_or_default();
        let mut s = format!("{}{col} failed", self.expectation);
        let r = &self.result;
        let expected = self.expected();
        if r.unexpected_count > 0 {
            s.push_str(&format!(
                ": {} of {} values unexpected ({:.2}%)",
                r.unexpected_count,
                r.element_count - r.missing_count.min(r.element_count),
                r.unexpected_percent
            ));
            let examples: Vec<String> = r
                .partial_unexpected_list
                .iter()
                .take(3)
                .map(|u| format!("row {}: {}", u.row, u.value))
                .collect();
            if !examples.is_empty() {
                s.push_str(&format!(", e.g. {}", examples.join("; ")));
            }
            if let Some(d) = &r.details {
                s.push_str(&format!(" ({d})"));
            }
        } else if let (Some(o), Some(expected)) = (&r.observed_value, &expected) {
            s.push_str(&format!(": observed {}, expected {expected}", json_num(o)));
            if let Some(d) = &r.details {
                s.push_str(&format!(" ({d})"));
            }
        } else if let Some(d) = &r.details {
            s.push_str(&format!(": {d}"));
        } else if let Some(o) = &r.observed_value {
            s.push_str(&format!(": observed {}", json_num(o)));
        }
        s
    }

    /// What the bounds or threshold in the arguments ask for, e.g. `>= 1 and < 5`.
    pub(crate) fn expected(&self) -> Option<String> {
        let k = &self.kwargs;
        let strict = |key: &str| k.get(key).and_then(|v| v.as_bool()).unwrap_or(false);
        let lo = k.get("min_value").map(|v| {
            let op = if strict("strict_min") { ">" } else { ">=" };
            format!("{op} {}", json_num(v))
        });
        let hi = k.get("max_value").map(|v| {
            let op = if strict("strict_max") { "<" } else { "<=" };
            format!("{op} {}", json_num(v))
        });
        let parts: Vec<String> = lo.into_iter().chain(hi).collect();
        if !parts.is_empty() {
            return Some(parts.join(" and "));
        }
        k.get("threshold")
            .map(|t| format!("at most {}", json_num(t)))
    }
}

/// Summary counts, as in GE.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Statistics {
    /// Expectations evaluated.
    pub evaluated_expectations: u64,
    /// Passed.
    pub successful_expectations: u64,
    /// Failed (of either severity).
    pub unsuccessful_expectations: u64,
    /// Passed share in percent.
    pub success_percent: f64,
}

/// A validation report for one batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidationReport {
    /// Whether the batch is acceptable: no structural error and no failing
    /// expectation of severity `error`.
    pub success: bool,
    /// Dataset name.
    pub dataset: String,
    /// SHA-256 (hex) of the batch; left empty by the engine, filled by the caller.
    #[serde(default)]
    pub batch_sha256: String,
    /// Digest of the spec the batch was validated against; filled by the caller.
    #[serde(default)]
    pub spec_digest: String,
    /// Data rows read (up to the first structural error).
    pub rows: u64,
    /// Header as found in the file.
    pub columns: Vec<String>,
    /// A structural error that stopped the read, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub structural_error: Option<String>,
    /// Summary counts.
    pub statistics: Statistics,
    /// Every check, implied ones first.
    pub results: Vec<ExpectationResult>,
}

impl ValidationReport {
    /// One line per reason to reject: the structural error, then every failing
    /// expectation of severity `error`.
    pub fn reasons(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(e) = &self.structural_error {
            out.push(e.clone());
        }
        out.extend(
            self.results
                .iter()
                .filter(|r| !r.success && r.severity == Severity::Error)
                .map(|r| r.reason()),
        );
        out
    }

    /// One line per failing expectation of severity `warning` (these do not reject).
    pub fn warnings(&self) -> Vec<String> {
        self.results
            .iter()
            .filter(|r| !r.success && r.severity == Severity::Warning)
            .map(|r| r.reason())
            .collect()
    }
}
