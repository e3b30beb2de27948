//! Ground truth for earlier predictions: the label file a producer submits
//! (`modelbus labels submit`, `POST /v1/datasets/{name}/labels`), checked
//! against the dataset's spec, and the form it is stored in (JSON lines).
//!
//! A label file is a CSV with a header. It names the prediction either by
//! `prediction_id` (the id serving returned) or by the spec's entity column
//! (the label then belongs to the entity's latest prediction before the
//! label's time), carries the spec's target column with the spec's class
//! values, and may give `event_time` (RFC 3339; the submission time when
//! absent). Any other column is refused, so a misspelt id column is not read
//! as "no id". The whole file is checked before anything is stored: one bad
//! row refuses the file, naming the row and what is wrong.

use serde::{Deserialize, Serialize};

use crate::spec::DatasetSpec;

/// Header of the prediction id column.
pub const PREDICTION_ID: &str = "prediction_id";
/// Header of the optional event time column.
pub const EVENT_TIME: &str = "event_time";
/// Longest id or entity accepted.
const MAX_ID_BYTES: usize = 256;

/// One label, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Label {
    /// Data row in the submitted file (1 = the first row after the header).
    pub row: u64,
    /// The prediction it belongs to, when the file named it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prediction_id: Option<String>,
    /// The entity, when the file named the prediction that way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity: Option<String>,
    /// Whether the label is the positive class.
    pub positive: bool,
    /// When the outcome was observed (Unix milliseconds).
    pub time_ms: i64,
}

/// Why a label file is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    /// The header lacks a required column or has an unknown one.
    #[error("header: {0}")]
    Header(String),
    /// A data row is wrong.
    #[error("row {row}: {reason}")]
    Row {
        /// Data row (1 = first after the header).
        row: u64,
        /// What is wrong.
        reason: String,
    },
    /// The file as a whole cannot be used.
    #[error("{0}")]
    File(String),
}

/// The classes a label may take: the target's `expect_column_values_to_be_in_set`
/// values when the spec declares them (the positive class must be one),
/// otherwise the positive class and whatever one other value the file uses.
fn classes(spec: &DatasetSpec) -> Option<Vec<String>> {
    use crate::expectations::Expectation;
    spec.expectations.iter().find_map(|e| match e {
        Expectation::InSet(s) if s.column == spec.target.column => Some(
            s.value_set
                .iter()
                .map(|v| match v {
                    crate::schema::Scalar::Str(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect(),
        ),
        _ => None,
    })
}

/// Reads and checks a label file against `spec`; labels without
/// `event_time` get `now_ms`. At most `max_rows` data rows.
pub fn parse(
    spec: &DatasetSpec,
    bytes: &[u8],
    now_ms: i64,
    max_rows: u64,
) -> Result<Vec<Label>, LabelError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(bytes);
    let header = reader
        .headers()
        .map_err(|e| LabelError::Header(csv_reason(&e)))?
        .clone();
    let position = |name: &str| header.iter().position(|h| h == name);
    let id_col = position(PREDICTION_ID);
    let entity_col = position(&spec.entity_column);
    let target_col = position(&spec.target.column);
    let time_col = position(EVENT_TIME);
    if id_col.is_none() && entity_col.is_none() {
        return Err(LabelError::Header(format!(
            "no id column: a label file names its prediction by `{PREDICTION_ID}` or by the entity column `{}`",
            spec.entity_column
        )));
    }
    let Some(target_col) = target_col else {
        return Err(LabelError::Header(format!(
            "no target column `{}`",
            spec.target.column
        )));
    };
    let known = [
        PREDICTION_ID,
        spec.entity_column.as_str(),
        spec.target.column.as_str(),
        EVENT_TIME,
    ];
    if let Some(extra) = header.iter().find(|h| !known.contains(h)) {
        return Err(LabelError::Header(format!(
            "unknown column {extra:?} (a label file has {PREDICTION_ID} and/or {}, {}, and optionally {EVENT_TIME})",
            spec.entity_column, spec.target.column
        )));
    }
    let mut seen: Vec<&str> = header.iter().collect();
    seen.sort_unstable();
    if seen.windows(2).any(|w| w[0] == w[1]) {
        return Err(LabelError::Header("a column appears twice".into()));
    }
    let declared = classes(spec);
    if let Some(c) = &declared
        && !c.contains(&spec.target.positive)
    {
        return Err(LabelError::File(format!(
            "the spec's value set for {} does not include the positive class {:?}",
            spec.target.column, spec.target.positive
        )));
    }
    let mut negative: Option<String> = None;
    let mut labels = Vec::new();
    let mut record = csv::StringRecord::new();
    let mut row = 0u64;
    loop {
        match reader.read_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                return Err(LabelError::Row {
                    row: row + 1,
                    reason: csv_reason(&e),
                });
            }
        }
        row += 1;
        if row > max_rows {
            return Err(LabelError::File(format!(
                "more than {max_rows} labels in one file; split it"
            )));
        }
        let err = |reason: String| LabelError::Row { row, reason };
        let cell = |c: Option<usize>| {
            c.and_then(|i| record.get(i))
                .map(str::trim)
                .filter(|s| !s.is_empty())
        };
        let prediction_id = match cell(id_col) {
            Some(id) => Some(
                uuid::Uuid::parse_str(id)
                    .map_err(|_| err(format!("{PREDICTION_ID} {id:?} is not a prediction id")))?
                    .hyphenated()
                    .to_string(),
            ),
            None => None,
        };
        let entity = match (prediction_id.is_some(), cell(entity_col)) {
            (false, Some(e)) if e.len() > MAX_ID_BYTES => {
                return Err(err(format!(
                    "{} of {} bytes (at most {MAX_ID_BYTES})",
                    spec.entity_column,
                    e.len()
                )));
            }
            (false, Some(e)) => Some(e.to_string()),
            (false, None) => {
                return Err(err(format!(
                    "no {PREDICTION_ID} and no {}: the label names no prediction",
                    spec.entity_column
                )));
            }
            (true, _) => None,
        };
        let value = record.get(target_col).unwrap_or("");
        let positive = if value == spec.target.positive {
            true
        } else {
            match &declared {
                Some(c) if c.iter().any(|v| v == value) => false,
                Some(c) => {
                    return Err(err(format!(
                        "{} {value:?} is not one of the spec's classes {c:?}",
                        spec.target.column
                    )));
                }
                None => match &negative {
                    Some(n) if n == value => false,
                    Some(n) => {
                        return Err(err(format!(
                            "{} {value:?} is a third class (the file already has {:?} and {n:?})",
                            spec.target.column, spec.target.positive
                        )));
                    }
                    None if value.is_empty() => {
                        return Err(err(format!("{} is empty", spec.target.column)));
                    }
                    None => {
                        negative = Some(value.to_string());
                        false
                    }
                },
            }
        };
        let time_ms = match cell(time_col) {
            Some(t) => parse_time_ms(t).map_err(|r| err(format!("{EVENT_TIME} {t:?}: {r}")))?,
            None => now_ms,
        };
        labels.push(Label {
            row,
            prediction_id,
            entity,
            positive,
            time_ms,
        });
    }
    if labels.is_empty() {
        return Err(LabelError::File(
            "no labels: the file has a header only".into(),
        ));
    }
    Ok(labels)
}

/// Unix milliseconds of an RFC 3339 time.
pub fn parse_time_ms(text: &str) -> Result<i64, String> {
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("not an RFC 3339 time ({e})"))?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).map_err(|_| "out of range".to_string())
}

/// A CSV reader error without the crate's internal wording.
fn csv_reason(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::Utf8 { err, .. } => format!(
            "invalid UTF-8 in field {} (a label file is UTF-8 text)",
            err.field() + 1
        ),
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!("{len} fields where the header has {expected_len}"),
        _ => e.to_string(),
    }
}

/// Labels as stored: one JSON object per line.
pub fn to_json_lines(labels: &[Label]) -> Vec<u8> {
    let mut out = Vec::with_capacity(labels.len() * 96);
    for l in labels {
        if serde_json::to_writer(&mut out, l).is_ok() {
            out.push(b'\n');
        }
    }
    out
}

/// Reads stored labels back, at most `max_rows`.
pub fn from_json_lines(bytes: &[u8], max_rows: usize) -> Result<Vec<Label>, String> {
    let mut out = Vec::new();
    for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        if out.len() >= max_rows {
            return Err(format!("more than {max_rows} labels"));
        }
        let l: Label = serde_json::from_slice(line).map_err(|e| format!("line {}: {e}", i + 1))?;
        if l.prediction_id.is_none() == l.entity.is_none() {
            return Err(format!(
                "line {}: a label names its prediction by id or by entity",
                i + 1
            ));
        }
        out.push(l);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(in_set: bool) -> DatasetSpec {
        let mut text = String::from(
            r#"name = "churn"
entity_column = "id"
[target]
column = "Churn"
positive = "Yes"
[[columns]]
name = "id"
type = "string"
[[columns]]
name = "x"
type = "float"
[[columns]]
name = "Churn"
type = "string"
"#,
        );
        if in_set {
            text.push_str(
                "[[expectations]]\nexpectation = \"expect_column_values_to_be_in_set\"\ncolumn = \"Churn\"\nvalue_set = [\"Yes\", \"No\"]\n",
            );
        }
        DatasetSpec::parse(&text, "test").unwrap().spec
    }

    const ID: &str = "0190f5c2-7a3b-7cc0-8000-000000000001";

    #[test]
    fn reads_ids_entities_classes_and_times() {
        let csv = format!(
            "prediction_id,id,Churn,event_time\n{ID},,Yes,2026-12-01T10:00:00Z\n,c-2,No,\n"
        );
        let l = parse(&spec(true), csv.as_bytes(), 7, 10).unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].prediction_id.as_deref(), Some(ID));
        assert!(l[0].positive);
        assert_eq!(l[0].time_ms, 1_796_119_200_000);
        assert_eq!(l[1].entity.as_deref(), Some("c-2"));
        assert!(!l[1].positive);
        assert_eq!(l[1].time_ms, 7);
        let back = from_json_lines(&to_json_lines(&l), 10).unwrap();
        assert_eq!(back, l);
    }

    #[test]
    fn bad_files_name_the_row_and_value() {
        let s = spec(true);
        let e = |csv: &[u8]| parse(&s, csv, 0, 10).unwrap_err().to_string();
        assert!(
            e(b"Churn\nYes\n").contains("no id column"),
            "{}",
            e(b"Churn\nYes\n")
        );
        assert!(e(b"id,Churn,extra\nc,Yes,1\n").contains("unknown column \"extra\""));
        assert!(e(b"id\nc\n").contains("no target column"));
        let outside = e(b"id,Churn\nc1,Yes\nc2,Maybe\n");
        assert!(
            outside.starts_with("row 2:") && outside.contains("\"Maybe\""),
            "{outside}"
        );
        let ragged = e(b"id,Churn\nc1,Yes\nc2,No,3\n");
        assert!(
            ragged.starts_with("row 2:") && ragged.contains("3 fields"),
            "{ragged}"
        );
        let utf8 = e(b"id,Churn\nc1,Yes\n\xff\xfe,No\n");
        assert!(utf8.contains("row 2") && utf8.contains("UTF-8"), "{utf8}");
        assert!(e(b"prediction_id,Churn\nnot-an-id,Yes\n").contains("row 1: prediction_id"));
        assert!(e(b"id,Churn,event_time\nc,Yes,yesterday\n").contains("event_time"));
        assert!(e(b"id,Churn\n,Yes\n").contains("names no prediction"));
        assert!(e(b"id,Churn\n").contains("header only"));
        let many = "id,Churn\n".to_string() + &"c,No\n".repeat(11);
        assert!(e(many.as_bytes()).contains("more than 10"));
    }

    #[test]
    fn without_a_value_set_the_file_may_use_one_other_class() {
        let s = spec(false);
        assert!(parse(&s, b"id,Churn\na,Yes\nb,No\nc,No\n", 0, 10).is_ok());
        let third = parse(&s, b"id,Churn\na,Yes\nb,No\nc,Maybe\n", 0, 10)
            .unwrap_err()
            .to_string();
        assert!(third.starts_with("row 3:") && third.contains("third class"));
    }
}
