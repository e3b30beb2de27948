//! Validation: a dataset spec's expectations checked over a stream of Arrow
//! chunks in one pass, producing a report shaped like Great Expectations'
//! validation results (success, observed value, unexpected count and percent, a
//! few unexpected values with their rows).
//!
//! Besides the spec's own expectations, the column declarations imply three
//! checks: the header matches the declared columns, every value has its column's
//! type, and non-nullable columns hold no nulls. Memory is bounded by the chunk
//! size, except for uniqueness, which must remember a 16-byte fingerprint per
//! distinct value.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::io::Read;
use std::sync::Arc;

use arrow_array::{Array, BooleanArray, Float64Array, Int64Array, StringArray};
use serde::{Deserialize, Serialize};

use crate::spec::{ColumnType, DatasetSpec, Expectation, Scalar};
use crate::table::{Chunk, CsvChunks, SAMPLE, TableError};

/// An unexpected value and where it was.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Unexpected {
    /// 1-based data row (the header is not counted).
    pub row: u64,
    /// The value (null for a missing value).
    pub value: serde_json::Value,
}

/// GE's `result` member.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResultDetail {
    /// What was measured (row count, header, duplicate count...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_value: Option<serde_json::Value>,
    /// Rows considered.
    pub element_count: u64,
    /// Null values among them.
    pub missing_count: u64,
    /// Values that failed.
    pub unexpected_count: u64,
    /// Failed share of the non-null values, in percent.
    pub unexpected_percent: f64,
    /// Up to 20 failing values with their rows.
    pub partial_unexpected_list: Vec<Unexpected>,
    /// Free-text explanation when the check could not run normally.
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
    /// Whether it passed.
    pub success: bool,
    /// Measurements.
    pub result: ResultDetail,
}

impl ExpectationResult {
    /// One line for a rejection reason: expectation, column, counts, examples.
    pub fn reason(&self) -> String {
        let col = self
            .kwargs
            .get("column")
            .and_then(|c| c.as_str())
            .map(|c| format!(" on column {c:?}"))
            .unwrap_or_default();
        let mut s = format!("{}{col} failed", self.expectation);
        let r = &self.result;
        if let Some(d) = &r.details {
            s.push_str(&format!(": {d}"));
        } else if r.unexpected_count > 0 {
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
        } else if let Some(o) = &r.observed_value {
            s.push_str(&format!(": observed {o}"));
        }
        s
    }
}

/// Summary counts, as in GE.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Statistics {
    /// Expectations evaluated.
    pub evaluated_expectations: u64,
    /// Passed.
    pub successful_expectations: u64,
    /// Failed.
    pub unsuccessful_expectations: u64,
    /// Passed share in percent.
    pub success_percent: f64,
}

/// A validation report for one batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidationReport {
    /// Whether the batch is acceptable.
    pub success: bool,
    /// Dataset name.
    pub dataset: String,
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
    /// One line per failure.
    pub fn reasons(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(e) = &self.structural_error {
            out.push(e.clone());
        }
        out.extend(
            self.results
                .iter()
                .filter(|r| !r.success)
                .map(|r| r.reason()),
        );
        out
    }
}

/// Two independent 64-bit SipHashes: a 128-bit fingerprint for uniqueness.
#[derive(Clone)]
struct Fingerprinter(std::hash::RandomState, std::hash::RandomState);

impl Fingerprinter {
    fn new() -> Self {
        Self(std::hash::RandomState::new(), std::hash::RandomState::new())
    }
    fn of(&self, bytes: &[u8]) -> u128 {
        let mut a = self.0.build_hasher();
        a.write(bytes);
        let mut b = self.1.build_hasher();
        b.write(bytes);
        ((a.finish() as u128) << 64) | b.finish() as u128
    }
}

enum State {
    NotNull,
    InSet {
        strings: HashSet<String>,
        ints: HashSet<i64>,
        floats: Vec<f64>,
        bools: HashSet<bool>,
    },
    Between {
        min: Option<f64>,
        max: Option<f64>,
        strict_min: bool,
        strict_max: bool,
    },
    Unique {
        seen: HashMap<u128, u32>,
        fp: Fingerprinter,
    },
    RowCount {
        min: Option<u64>,
        max: Option<u64>,
    },
    OfType,
}

struct Check {
    expectation: String,
    kwargs: serde_json::Value,
    implied: bool,
    column: Option<usize>,
    mostly: f64,
    state: State,
    element_count: u64,
    missing: u64,
    unexpected: u64,
    sample: Vec<Unexpected>,
}

impl Check {
    fn new(
        expectation: &str,
        kwargs: serde_json::Value,
        implied: bool,
        column: Option<usize>,
        mostly: f64,
        state: State,
    ) -> Self {
        Self {
            expectation: expectation.to_string(),
            kwargs,
            implied,
            column,
            mostly,
            state,
            element_count: 0,
            missing: 0,
            unexpected: 0,
            sample: Vec::new(),
        }
    }
}

/// Validates chunks as they stream by.
pub struct Validator {
    spec: Arc<DatasetSpec>,
    checks: Vec<Check>,
    rows: u64,
}

fn scalar_json(v: &dyn Array, i: usize) -> serde_json::Value {
    if v.is_null(i) {
        return serde_json::Value::Null;
    }
    if let Some(a) = v.as_any().downcast_ref::<StringArray>() {
        return a.value(i).into();
    }
    if let Some(a) = v.as_any().downcast_ref::<Int64Array>() {
        return a.value(i).into();
    }
    if let Some(a) = v.as_any().downcast_ref::<Float64Array>() {
        return a.value(i).into();
    }
    if let Some(a) = v.as_any().downcast_ref::<BooleanArray>() {
        return a.value(i).into();
    }
    serde_json::Value::Null
}

impl Validator {
    /// Prepares the checks of a spec.
    pub fn new(spec: Arc<DatasetSpec>) -> Self {
        let mut checks = Vec::new();
        for (i, c) in spec.columns.iter().enumerate() {
            checks.push(Check::new(
                "expect_column_values_to_be_of_type",
                serde_json::json!({ "column": c.name, "type_": c.ty.to_string() }),
                true,
                Some(i),
                1.0,
                State::OfType,
            ));
            let must_have =
                !c.nullable || c.name == spec.target.column || c.name == spec.entity_column;
            if must_have {
                checks.push(Check::new(
                    "expect_column_values_to_not_be_null",
                    serde_json::json!({ "column": c.name }),
                    true,
                    Some(i),
                    1.0,
                    State::NotNull,
                ));
            }
        }
        for e in &spec.expectations {
            let col = e
                .column()
                .and_then(|c| spec.columns.iter().position(|x| x.name == c));
            let state = match e {
                Expectation::NotNull { .. } => State::NotNull,
                Expectation::InSet { value_set, .. } => {
                    let mut strings = HashSet::new();
                    let mut ints = HashSet::new();
                    let mut floats = Vec::new();
                    let mut bools = HashSet::new();
                    for v in value_set {
                        match v {
                            Scalar::Str(s) => {
                                strings.insert(s.clone());
                            }
                            Scalar::Int(i) => {
                                ints.insert(*i);
                                floats.push(*i as f64);
                            }
                            Scalar::Float(f) => floats.push(*f),
                            Scalar::Bool(b) => {
                                bools.insert(*b);
                            }
                        }
                    }
                    State::InSet {
                        strings,
                        ints,
                        floats,
                        bools,
                    }
                }
                Expectation::Between {
                    min_value,
                    max_value,
                    strict_min,
                    strict_max,
                    ..
                } => State::Between {
                    min: *min_value,
                    max: *max_value,
                    strict_min: *strict_min,
                    strict_max: *strict_max,
                },
                Expectation::Unique { .. } => State::Unique {
                    seen: HashMap::new(),
                    fp: Fingerprinter::new(),
                },
                Expectation::RowCount {
                    min_value,
                    max_value,
                } => State::RowCount {
                    min: *min_value,
                    max: *max_value,
                },
                // Checked against the header before any row is read.
                Expectation::ColumnsMatchSet { .. } => continue,
            };
            checks.push(Check::new(
                e.name(),
                e.kwargs(),
                false,
                col,
                e.mostly(),
                state,
            ));
        }
        Self {
            spec,
            checks,
            rows: 0,
        }
    }

    /// Feeds one chunk.
    pub fn push(&mut self, chunk: &Chunk) {
        let batch = &chunk.batch;
        let n = batch.num_rows();
        self.rows += n as u64;
        for check in &mut self.checks {
            let Some(ci) = check.column else { continue };
            let col = batch.column(ci);
            let (bad_count, bad_sample) = &chunk.bad_cells[ci];
            let ty = self.spec.columns[ci].ty;
            check.element_count += n as u64;
            // Cells that failed to parse are null in Arrow but present in the file.
            let nulls = col.null_count() as u64 - bad_count;
            let Check {
                state,
                unexpected,
                sample,
                missing,
                ..
            } = check;
            let mut flag = |row: u64, value: serde_json::Value| {
                *unexpected += 1;
                if sample.len() < SAMPLE {
                    sample.push(Unexpected { row, value });
                }
            };
            match state {
                State::OfType => {
                    *missing += nulls;
                    for b in bad_sample {
                        flag(b.row, b.value.clone().into());
                    }
                    // Unparseable cells beyond the sample still count.
                    *unexpected += bad_count - bad_sample.len() as u64;
                }
                State::NotNull => {
                    let bad_rows: HashSet<u64> = bad_sample.iter().map(|b| b.row).collect();
                    for i in 0..n {
                        let row = chunk.first_row + i as u64;
                        if col.is_null(i) && (*bad_count == 0 || !bad_rows.contains(&row)) {
                            flag(row, serde_json::Value::Null);
                        }
                    }
                    // Rows with unparseable cells beyond the sample are not nulls either.
                    if *bad_count as usize > bad_sample.len() {
                        *unexpected =
                            unexpected.saturating_sub(*bad_count - bad_sample.len() as u64);
                    }
                }
                State::InSet {
                    strings,
                    ints,
                    floats,
                    bools,
                } => {
                    *missing += col.null_count() as u64;
                    for i in 0..n {
                        if col.is_null(i) {
                            continue;
                        }
                        let ok = match ty {
                            ColumnType::String => {
                                let a = col.as_any().downcast_ref::<StringArray>();
                                a.is_some_and(|a| strings.contains(a.value(i)))
                            }
                            ColumnType::Int => {
                                let a = col.as_any().downcast_ref::<Int64Array>();
                                a.is_some_and(|a| ints.contains(&a.value(i)))
                            }
                            ColumnType::Float => {
                                let a = col.as_any().downcast_ref::<Float64Array>();
                                a.is_some_and(|a| floats.contains(&a.value(i)))
                            }
                            ColumnType::Bool => {
                                let a = col.as_any().downcast_ref::<BooleanArray>();
                                a.is_some_and(|a| bools.contains(&a.value(i)))
                            }
                        };
                        if !ok {
                            flag(chunk.first_row + i as u64, scalar_json(col.as_ref(), i));
                        }
                    }
                }
                State::Between {
                    min,
                    max,
                    strict_min,
                    strict_max,
                } => {
                    *missing += col.null_count() as u64;
                    let value = |i: usize| -> Option<f64> {
                        if let Some(a) = col.as_any().downcast_ref::<Float64Array>() {
                            return Some(a.value(i));
                        }
                        col.as_any()
                            .downcast_ref::<Int64Array>()
                            .map(|a| a.value(i) as f64)
                    };
                    for i in 0..n {
                        if col.is_null(i) {
                            continue;
                        }
                        let Some(v) = value(i) else { continue };
                        let low_ok = min.is_none_or(|m| if *strict_min { v > m } else { v >= m });
                        let high_ok = max.is_none_or(|m| if *strict_max { v < m } else { v <= m });
                        if !(low_ok && high_ok) {
                            flag(chunk.first_row + i as u64, scalar_json(col.as_ref(), i));
                        }
                    }
                }
                State::Unique { seen, fp } => {
                    *missing += col.null_count() as u64;
                    for i in 0..n {
                        if col.is_null(i) {
                            continue;
                        }
                        let key = match ty {
                            ColumnType::String => col
                                .as_any()
                                .downcast_ref::<StringArray>()
                                .map(|a| fp.of(a.value(i).as_bytes())),
                            ColumnType::Int => col
                                .as_any()
                                .downcast_ref::<Int64Array>()
                                .map(|a| fp.of(&a.value(i).to_le_bytes())),
                            ColumnType::Float => col
                                .as_any()
                                .downcast_ref::<Float64Array>()
                                .map(|a| fp.of(&a.value(i).to_bits().to_le_bytes())),
                            ColumnType::Bool => col
                                .as_any()
                                .downcast_ref::<BooleanArray>()
                                .map(|a| fp.of(&[a.value(i) as u8])),
                        };
                        let Some(key) = key else { continue };
                        let count = seen.entry(key).or_insert(0);
                        *count += 1;
                        if *count > 1 && sample.len() < SAMPLE {
                            sample.push(Unexpected {
                                row: chunk.first_row + i as u64,
                                value: scalar_json(col.as_ref(), i),
                            });
                        }
                    }
                }
                State::RowCount { .. } => {}
            }
        }
    }

    /// The report, once every chunk was pushed. `structural_error` is the error
    /// that stopped the read early, if any.
    pub fn finish(
        self,
        header: Vec<String>,
        structural_error: Option<&TableError>,
    ) -> ValidationReport {
        let rows = self.rows;
        let mut results = Vec::new();
        // The header check implied by [[columns]] plus any explicit column-set expectations.
        let declared: Vec<String> = self.spec.columns.iter().map(|c| c.name.clone()).collect();
        let header_ok = !matches!(
            structural_error,
            Some(TableError::Columns { .. } | TableError::DuplicateColumn(_) | TableError::Empty)
        );
        results.push(ExpectationResult {
            expectation: "expect_table_columns_to_match_set".into(),
            kwargs: serde_json::json!({ "column_set": declared, "exact_match": !self.spec.allow_extra_columns }),
            implied: true,
            success: header_ok,
            result: ResultDetail {
                observed_value: Some(serde_json::json!(header)),
                details: if header_ok { None } else { structural_error.map(|e| e.to_string()) },
                ..Default::default()
            },
        });
        for e in &self.spec.expectations {
            if let Expectation::ColumnsMatchSet {
                column_set,
                exact_match,
            } = e
            {
                let present: HashSet<&String> = header.iter().collect();
                let wanted: HashSet<&String> = column_set.iter().collect();
                let ok = if *exact_match {
                    present == wanted
                } else {
                    wanted.is_subset(&present)
                };
                results.push(ExpectationResult {
                    expectation: e.name().into(),
                    kwargs: e.kwargs(),
                    implied: false,
                    success: ok && !header.is_empty(),
                    result: ResultDetail {
                        observed_value: Some(serde_json::json!(header)),
                        ..Default::default()
                    },
                });
            }
        }
        let read_complete = structural_error.is_none();
        results.push(ExpectationResult {
            expectation: "expect_table_row_count_to_be_between".into(),
            kwargs: serde_json::json!({ "min_value": 1 }),
            implied: true,
            success: rows >= 1 && read_complete,
            result: ResultDetail {
                observed_value: Some(rows.into()),
                details: if rows == 0 && read_complete {
                    Some("the file has a header but no data rows".into())
                } else {
                    None
                },
                ..Default::default()
            },
        });
        for c in self.checks {
            let result = match &c.state {
                State::RowCount { min, max } => {
                    let ok = min.is_none_or(|m| rows >= m) && max.is_none_or(|m| rows <= m);
                    ExpectationResult {
                        expectation: c.expectation,
                        kwargs: c.kwargs,
                        implied: c.implied,
                        success: ok && read_complete,
                        result: ResultDetail {
                            observed_value: Some(rows.into()),
                            ..Default::default()
                        },
                    }
                }
                _ => {
                    let mut unexpected = c.unexpected;
                    let mut observed = None;
                    if let State::Unique { seen, .. } = &c.state {
                        // GE counts every row of a duplicated value, the first one included.
                        unexpected = seen.values().filter(|n| **n > 1).map(|n| *n as u64).sum();
                        observed = Some(serde_json::json!({ "distinct_values": seen.len() }));
                    }
                    let (denominator, missing) = match c.state {
                        State::NotNull => (c.element_count, 0),
                        _ => (c.element_count.saturating_sub(c.missing), c.missing),
                    };
                    let pct = if denominator == 0 {
                        0.0
                    } else {
                        100.0 * unexpected as f64 / denominator as f64
                    };
                    let pass_ratio = if denominator == 0 {
                        1.0
                    } else {
                        1.0 - unexpected as f64 / denominator as f64
                    };
                    let ok = pass_ratio + 1e-12 >= c.mostly && read_complete;
                    ExpectationResult {
                        expectation: c.expectation,
                        kwargs: c.kwargs,
                        implied: c.implied,
                        success: ok,
                        result: ResultDetail {
                            observed_value: observed,
                            element_count: c.element_count,
                            missing_count: missing,
                            unexpected_count: unexpected,
                            unexpected_percent: pct,
                            partial_unexpected_list: c.sample,
                            details: None,
                        },
                    }
                }
            };
            results.push(result);
        }
        let failed = results.iter().filter(|r| !r.success).count() as u64;
        let total = results.len() as u64;
        ValidationReport {
            success: failed == 0 && structural_error.is_none(),
            dataset: self.spec.name.clone(),
            rows,
            columns: header,
            structural_error: structural_error.map(|e| e.to_string()),
            statistics: Statistics {
                evaluated_expectations: total,
                successful_expectations: total - failed,
                unsuccessful_expectations: failed,
                success_percent: if total == 0 {
                    100.0
                } else {
                    100.0 * (total - failed) as f64 / total as f64
                },
            },
            results,
        }
    }
}

/// Validates a whole CSV stream against a spec, in chunks of `chunk_rows` rows.
pub fn validate_csv<R: Read>(
    input: R,
    spec: Arc<DatasetSpec>,
    chunk_rows: usize,
) -> ValidationReport {
    let validator = Validator::new(spec.clone());
    let mut reader = match CsvChunks::new(input, spec, chunk_rows) {
        Ok(r) => r,
        Err(e) => return validator.finish(Vec::new(), Some(&e)),
    };
    let mut validator = validator;
    loop {
        match reader.next_chunk() {
            Ok(Some(chunk)) => validator.push(&chunk),
            Ok(None) => return validator.finish(reader.header().to_vec(), None),
            Err(e) => return validator.finish(reader.header().to_vec(), Some(&e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn telco_spec() -> Arc<DatasetSpec> {
        let text = include_str!("../../../config/datasets/telco-churn.toml");
        Arc::new(DatasetSpec::parse(text, "telco-churn.toml").unwrap().spec)
    }

    fn telco() -> String {
        std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../data/telco-churn/telco_customer_churn.csv"
        ))
        .unwrap()
    }

    fn failed(r: &ValidationReport) -> Vec<&ExpectationResult> {
        r.results.iter().filter(|x| !x.success).collect()
    }

    #[test]
    fn telco_passes_every_expectation() {
        let r = validate_csv(telco().as_bytes(), telco_spec(), 1000);
        assert!(r.success, "{:#?}", r.reasons());
        assert_eq!(r.rows, 7043);
        let nn = r
            .results
            .iter()
            .find(|x| {
                x.expectation == "expect_column_values_to_not_be_null"
                    && x.kwargs["column"] == "TotalCharges"
            })
            .unwrap();
        assert_eq!(nn.result.unexpected_count, 11);
        assert!(nn.success, "mostly = 0.99 tolerates 11 nulls");
        let uniq = r
            .results
            .iter()
            .find(|x| x.expectation == "expect_column_values_to_be_unique")
            .unwrap();
        assert_eq!(uniq.result.unexpected_count, 0);
    }

    #[test]
    fn chunk_size_does_not_change_the_report() {
        let a = validate_csv(telco().as_bytes(), telco_spec(), 7);
        let b = validate_csv(telco().as_bytes(), telco_spec(), 100_000);
        assert_eq!(a.statistics, b.statistics);
        assert_eq!(
            a.results
                .iter()
                .map(|r| r.result.unexpected_count)
                .collect::<Vec<_>>(),
            b.results
                .iter()
                .map(|r| r.result.unexpected_count)
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn bad_values_are_reported_with_rows() {
        let mut lines: Vec<String> = telco().lines().map(str::to_string).collect();
        // Row 3: gender outside its set; row 5: text in a numeric column; row 6 duplicates row 1's id.
        lines[3] = lines[3]
            .replacen(",Male,", ",Mal,", 1)
            .replacen(",Female,", ",Femal,", 1);
        let mut f: Vec<String> = lines[5].split(',').map(str::to_string).collect();
        f[5] = "ten".into();
        lines[5] = f.join(",");
        let id1 = lines[1].split(',').next().unwrap().to_string();
        let mut g: Vec<String> = lines[6].split(',').map(str::to_string).collect();
        g[0] = id1;
        lines[6] = g.join(",");
        let r = validate_csv(lines.join("\n").as_bytes(), telco_spec(), 1000);
        assert!(!r.success);
        let f = failed(&r);
        let gender = f.iter().find(|x| x.kwargs["column"] == "gender").unwrap();
        assert_eq!(gender.result.unexpected_count, 1);
        assert_eq!(gender.result.partial_unexpected_list[0].row, 3);
        let ty = f
            .iter()
            .find(|x| x.expectation == "expect_column_values_to_be_of_type")
            .unwrap();
        assert_eq!(ty.kwargs["column"], "tenure");
        assert_eq!(ty.result.partial_unexpected_list[0].value, "ten");
        assert_eq!(ty.result.partial_unexpected_list[0].row, 5);
        let uniq = f
            .iter()
            .find(|x| x.expectation == "expect_column_values_to_be_unique")
            .unwrap();
        assert_eq!(uniq.result.unexpected_count, 2);
        assert_eq!(uniq.result.partial_unexpected_list[0].row, 6);
        let reasons = r.reasons().join("\n");
        assert!(
            reasons.contains("gender") && reasons.contains("row 3"),
            "{reasons}"
        );
    }

    #[test]
    fn structural_failures_reject_with_a_reason() {
        let r = validate_csv(&b""[..], telco_spec(), 10);
        assert!(!r.success);
        assert!(r.reasons()[0].contains("empty"), "{:?}", r.reasons());

        let header = telco().lines().next().unwrap().to_string();
        let r = validate_csv(format!("{header}\n").as_bytes(), telco_spec(), 10);
        assert!(!r.success);
        assert!(
            r.reasons().join(" ").contains("no data rows"),
            "{:?}",
            r.reasons()
        );

        let dropped = header.replace(",tenure", "");
        let r = validate_csv(format!("{dropped}\n").as_bytes(), telco_spec(), 10);
        assert!(
            r.reasons().join(" ").contains("tenure"),
            "{:?}",
            r.reasons()
        );

        let t = telco();
        let mut lines: Vec<&str> = t.lines().collect();
        lines[10] = "7590-VHVEG,Female,0";
        let r = validate_csv(lines.join("\n").as_bytes(), telco_spec(), 1000);
        assert!(r.reasons()[0].contains("line 11"), "{:?}", r.reasons());
    }

    #[test]
    fn mostly_tolerates_a_share_of_failures() {
        let text = r#"name = "d"
entity_column = "id"
[target]
column = "y"
positive = "1"
[[columns]]
name = "id"
type = "int"
[[columns]]
name = "y"
type = "int"
[[columns]]
name = "x"
type = "float"
[[expectations]]
expectation = "expect_column_values_to_be_between"
column = "x"
min_value = 0
max_value = 1
mostly = 0.75
"#;
        let spec = Arc::new(DatasetSpec::parse(text, "t").unwrap().spec);
        let ok = validate_csv(
            &b"id,y,x\n1,0,0.1\n2,1,0.2\n3,0,0.3\n4,1,5\n"[..],
            spec.clone(),
            2,
        );
        assert!(ok.success, "{:?}", ok.reasons());
        let bad = validate_csv(&b"id,y,x\n1,0,0.1\n2,1,7\n3,0,0.3\n4,1,5\n"[..], spec, 2);
        assert!(!bad.success);
        let r = bad
            .results
            .iter()
            .find(|r| r.expectation == "expect_column_values_to_be_between")
            .unwrap();
        assert_eq!(r.result.unexpected_count, 2);
        assert!((r.result.unexpected_percent - 50.0).abs() < 1e-9);
    }
}
