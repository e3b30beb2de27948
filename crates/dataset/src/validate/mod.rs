//! Validation: a dataset spec's expectations checked over a stream of Arrow
//! chunks in one pass, producing a report shaped like Great Expectations'
//! validation results (success, observed value, unexpected count and percent, a
//! few unexpected values with their rows, severity).
//!
//! Besides the spec's own expectations, the column declarations imply four
//! checks: the header matches the declared columns, every value has its column's
//! type, non-nullable columns hold no nulls, and a string entity column holds
//! only ids the online feature store can key (at most [`MAX_ENTITY_ID_BYTES`]
//! bytes, not empty, no control characters:
//! `expect_column_values_to_be_valid_entity_ids`).
//!
//! # How it runs
//!
//! Every expectation is an accumulator updated once per chunk: each chunk's
//! columns are downcast once, then each check walks the typed arrays (no
//! per-cell allocation; value sets are looked up by `&str`, regexes are compiled
//! once). Values are folded in row order, so no result depends on the chunk size.
//! A failing expectation of severity `warning` is reported (and listed by
//! [`ValidationReport::warnings`]) without rejecting the batch.
//!
//! # Memory
//!
//! Bounded by the chunk size whatever the file size, plus at most 20 sampled
//! unexpected values per check, except for:
//!
//! - `expect_column_values_to_be_unique` and
//!   `expect_column_proportion_of_unique_values_to_be_between`: a 16-byte
//!   fingerprint (two independently keyed SipHashes) per distinct value, in an
//!   open-addressing table at most 5/8 full (so 26 to 51 bytes per distinct
//!   value), plus 40 to 80 bytes per value that occurs more than once (its
//!   count, in a hash map). Both checks of one column share one table.
//! - `expect_compound_columns_to_be_unique`: the same, per distinct tuple.
//! - `expect_column_distinct_values_to_be_in_set`: one flag per value of the set,
//!   plus at most [`DISTINCT_OUTSIDE_CAP`] distinct values found outside it, kept
//!   as values (more are counted as unexpected rows but not listed).
//! - `expect_column_median_to_be_between`: exact (8 bytes per non-null value) up
//!   to [`EXACT_MEDIAN_LIMIT`] values; beyond, a deterministic streaming quantile
//!   sketch ([`QuantileSketch`], a Manku–Rajagopalan–Lindsay compactor hierarchy)
//!   of at most `SKETCH_K · (1 + log2(n / SKETCH_K))` values (256 KiB per level,
//!   about 4 MiB for 10^9 values), whose median has a rank within ±E of the true
//!   median's, with E ≤ n · log2(n / SKETCH_K) / SKETCH_K (under 0.02 % of n for
//!   2·10^6 values, under 0.08 % up to 2^40 values). The exact E of the run is
//!   stated in the result's `details`.
//! - `expect_column_kl_divergence_to_be_less_than`: one counter per bin or value
//!   of the reference partition.
//!
//! These tables also use per-chunk scratch space (the chunk's fingerprints, 20
//! bytes per row, ordered before insertion), bounded by the chunk size.
//!
//! Fingerprint collisions (probability about d²/2^129 for d distinct values, the
//! keys being random per run) could only hide a duplicate, never invent one.
//!
//! How KL divergence is computed is told in
//! [`expectations::distribution`](crate::expectations::distribution).

use std::io::Read;
use std::sync::Arc;

use crate::expectations::column_map::{NotNullAcc, OfTypeAcc};
use crate::expectations::{ColumnsMatchSet, NotNull, OfType, RowCount};
use crate::spec::{ColumnType, DatasetSpec, Severity};
use crate::table::{Chunk, CsvChunks, TableError};

pub(crate) mod accumulator;
pub(crate) mod columns;
pub(crate) mod distinct;
mod hashing;
pub(crate) mod numeric;
pub(crate) mod outside;
pub(crate) mod report;
pub(crate) mod value_sets;

use accumulator::{Accumulator, ChunkColumns, HeaderTest, Outcome, Plan, PlanContext, Tally};
use columns::{Col, each_str};
use distinct::Distinct;

pub use crate::expectations::KL_EPSILON;
pub use distinct::SPILL_AT;
pub use numeric::{EXACT_MEDIAN_LIMIT, QuantileSketch, SKETCH_K};
pub use outside::DISTINCT_OUTSIDE_CAP;
pub use report::{
    ExpectationResult, MAX_ENTITY_ID_BYTES, ResultDetail, SAMPLE_CHARS, Statistics, Unexpected,
    ValidationReport, entity_id_problem, sample_text,
};

/// An expectation being evaluated over the chunks.
struct Running {
    expectation: &'static str,
    kwargs: serde_json::Value,
    implied: bool,
    severity: Severity,
    mostly: f64,
    accumulator: Box<dyn Accumulator>,
    tally: Tally,
}

impl Running {
    /// A check implied by the column declarations (severity error, no `mostly`).
    fn implied(
        expectation: &'static str,
        kwargs: serde_json::Value,
        accumulator: Box<dyn Accumulator>,
    ) -> Self {
        Self {
            expectation,
            kwargs,
            implied: true,
            severity: Severity::Error,
            mostly: 1.0,
            accumulator,
            tally: Tally::default(),
        }
    }

    /// The result, once every chunk was folded in.
    fn finish(
        self,
        rows: u64,
        read_complete: bool,
        distinct: &[Option<Distinct>],
    ) -> ExpectationResult {
        let Running {
            expectation,
            kwargs,
            implied,
            severity,
            mostly,
            accumulator,
            tally,
        } = self;
        let mut out = Outcome {
            detail: ResultDetail {
                element_count: tally.element_count,
                missing_count: tally.missing,
                unexpected_count: tally.unexpected,
                partial_unexpected_list: tally.sample,
                ..Default::default()
            },
            non_null: tally.element_count.saturating_sub(tally.missing),
            rows,
            mostly,
            distinct: accumulator
                .shared_distinct()
                .and_then(|ci| distinct[ci].as_ref()),
        };
        let success = accumulator.finish(&mut out);
        ExpectationResult {
            expectation: expectation.into(),
            kwargs,
            implied,
            severity,
            success: success && read_complete,
            result: out.detail,
        }
    }
}

/// An expectation that cannot run (a spec that did not go through the
/// parser): it fails, saying why.
struct Invalid(String);

impl Accumulator for Invalid {
    fn update(&mut self, _: &ChunkColumns<'_>, _: &mut Tally) {}

    fn finish(self: Box<Self>, out: &mut Outcome<'_>) -> bool {
        out.detail.details = Some(self.0);
        false
    }
}

/// The check implied by a string entity column: values usable as
/// online-store keys (see [`entity_id_problem`]).
struct EntityIds {
    column: usize,
}

impl Accumulator for EntityIds {
    fn update(&mut self, c: &ChunkColumns<'_>, tally: &mut Tally) {
        let col = c.cols[self.column];
        tally.missing += col.null_count();
        each_str(col, |i, s| {
            if entity_id_problem(s).is_some() {
                tally.flag(c.first + i as u64, || sample_text(s));
            }
        });
    }

    fn finish(self: Box<Self>, out: &mut Outcome<'_>) -> bool {
        if out.detail.unexpected_count > 0 {
            out.detail.details = Some(format!(
                "entity ids key the online feature store: 1 to {MAX_ENTITY_ID_BYTES} bytes, \
                 no control characters"
            ));
        }
        out.column_map()
    }
}

/// An expectation decided by the header alone.
struct HeaderCheck {
    expectation: &'static str,
    kwargs: serde_json::Value,
    severity: Severity,
    passes: HeaderTest,
}

/// Validates chunks as they stream by.
pub struct Validator {
    spec: Arc<DatasetSpec>,
    header_checks: Vec<HeaderCheck>,
    checks: Vec<Running>,
    /// Per column: the distinct-value fingerprints, when a check needs them.
    distinct: Vec<Option<Distinct>>,
    rows: u64,
}

impl Validator {
    /// Prepares the checks of a spec (which [`DatasetSpec::parse`] has checked:
    /// columns exist, regexes compile, value sets fit).
    pub fn new(spec: Arc<DatasetSpec>) -> Self {
        Self::with_median_limit(spec, EXACT_MEDIAN_LIMIT)
    }

    fn with_median_limit(spec: Arc<DatasetSpec>, median_limit: usize) -> Self {
        let mut checks = Vec::new();
        for (i, c) in spec.columns.iter().enumerate() {
            checks.push(Running::implied(
                OfType::NAME,
                serde_json::json!({ "column": c.name, "type_": c.ty.to_string() }),
                Box::new(OfTypeAcc { column: i }),
            ));
            let must_have =
                !c.nullable || c.name == spec.target.column || c.name == spec.entity_column;
            if must_have {
                checks.push(Running::implied(
                    NotNull::NAME,
                    serde_json::json!({ "column": c.name }),
                    Box::new(NotNullAcc { column: i }),
                ));
            }
            if c.name == spec.entity_column && c.ty == ColumnType::String {
                checks.push(Running::implied(
                    "expect_column_values_to_be_valid_entity_ids",
                    serde_json::json!({ "column": c.name, "max_bytes": MAX_ENTITY_ID_BYTES }),
                    Box::new(EntityIds { column: i }),
                ));
            }
        }
        let context = PlanContext::new(
            spec.columns
                .iter()
                .map(|c| (c.name.as_str(), c.ty))
                .collect(),
            median_limit,
        );
        let mut header_checks = Vec::new();
        for e in &spec.expectations {
            let undeclared: Vec<&str> = e
                .columns()
                .into_iter()
                .map(|(_, c)| c)
                .filter(|c| context.index(c).is_none())
                .collect();
            let plan = if undeclared.is_empty() {
                e.plan(&context)
            } else {
                // Refused by the spec parser; a spec built otherwise fails here.
                Plan::Invalid(format!(
                    "column(s) {undeclared:?} not declared in [[columns]]"
                ))
            };
            let accumulator: Box<dyn Accumulator> = match plan {
                Plan::Rows(a) => a,
                Plan::Invalid(why) => Box::new(Invalid(why)),
                Plan::Header(passes) => {
                    header_checks.push(HeaderCheck {
                        expectation: e.name(),
                        kwargs: e.kwargs(),
                        severity: e.severity(),
                        passes,
                    });
                    continue;
                }
            };
            checks.push(Running {
                expectation: e.name(),
                kwargs: e.kwargs(),
                implied: false,
                severity: e.severity(),
                mostly: e.mostly(),
                accumulator,
                tally: Tally::default(),
            });
        }
        let mut distinct: Vec<Option<Distinct>> = spec.columns.iter().map(|_| None).collect();
        for c in &checks {
            if let Some(ci) = c.accumulator.shared_distinct() {
                distinct[ci].get_or_insert_with(Distinct::new);
            }
        }
        Self {
            spec,
            header_checks,
            checks,
            distinct,
            rows: 0,
        }
    }

    /// Feeds one chunk.
    pub fn push(&mut self, chunk: &Chunk) {
        let batch = &chunk.batch;
        let n = batch.num_rows();
        self.rows += n as u64;
        let cols: Vec<Col<'_>> = self
            .spec
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| Col::of(batch.column(i).as_ref(), c.ty))
            .collect();
        for (ci, d) in self.distinct.iter_mut().enumerate() {
            if let Some(d) = d {
                d.push(cols[ci]);
            }
        }
        let view = ChunkColumns {
            cols: &cols,
            first: chunk.first_row,
            n,
            bad_cells: &chunk.bad_cells,
            distinct: &self.distinct,
        };
        for check in &mut self.checks {
            check.tally.element_count += n as u64;
            check.accumulator.update(&view, &mut check.tally);
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
            expectation: ColumnsMatchSet::NAME.into(),
            kwargs: serde_json::json!({ "column_set": declared, "exact_match": !self.spec.allow_extra_columns }),
            implied: true,
            severity: Severity::Error,
            success: header_ok,
            result: ResultDetail {
                observed_value: Some(serde_json::json!(header)),
                details: if header_ok { None } else { structural_error.map(|e| e.to_string()) },
                ..Default::default()
            },
        });
        for h in self.header_checks {
            results.push(ExpectationResult {
                expectation: h.expectation.into(),
                kwargs: h.kwargs,
                implied: false,
                severity: h.severity,
                success: (h.passes)(&header),
                result: ResultDetail {
                    observed_value: Some(serde_json::json!(header)),
                    ..Default::default()
                },
            });
        }
        let read_complete = structural_error.is_none();
        results.push(ExpectationResult {
            expectation: RowCount::NAME.into(),
            kwargs: serde_json::json!({ "min_value": 1 }),
            implied: true,
            severity: Severity::Error,
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
            results.push(c.finish(rows, read_complete, &self.distinct));
        }
        let failed = results.iter().filter(|r| !r.success).count() as u64;
        let rejecting = results
            .iter()
            .any(|r| !r.success && r.severity == Severity::Error);
        let total = results.len() as u64;
        ValidationReport {
            success: !rejecting && structural_error.is_none(),
            dataset: self.spec.name.clone(),
            batch_sha256: String::new(),
            spec_digest: String::new(),
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
pub fn validate_csv<R: Read + Send>(
    input: R,
    spec: Arc<DatasetSpec>,
    chunk_rows: usize,
) -> ValidationReport {
    let validator = Validator::new(spec.clone());
    let mut reader = match CsvChunks::new(input, spec, chunk_rows) {
        Ok(r) => r,
        Err(e) => return validator.finish(Vec::new(), Some(&e)),
    };
    let header = reader.header().to_vec();
    let mut validator = validator;
    // Parsing and checking overlap: one thread turns CSV into chunks, this one
    // checks them. At most two chunks wait in between, so memory stays bounded
    // by the chunk size.
    let (tx, rx) = std::sync::mpsc::sync_channel::<Chunk>(2);
    let outcome = std::thread::scope(|scope| {
        let parser = scope.spawn(move || {
            loop {
                match reader.next_chunk() {
                    Ok(Some(chunk)) => {
                        if tx.send(chunk).is_err() {
                            return None;
                        }
                    }
                    Ok(None) => return None,
                    Err(e) => return Some(e),
                }
            }
        });
        for chunk in rx {
            validator.push(&chunk);
        }
        parser.join().unwrap_or_else(|_| {
            Some(TableError::Csv {
                line: None,
                message: "the CSV parser thread panicked".into(),
            })
        })
    });
    validator.finish(header, outcome.as_ref())
}

#[cfg(test)]
mod tests;
