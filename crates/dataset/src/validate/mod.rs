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
//! # KL divergence
//!
//! `expect_column_kl_divergence_to_be_less_than` computes KL(P ‖ Q) = Σ p·ln(p/q)
//! in nats, P the observed distribution of the non-null values over the reference
//! bins (numeric: `[e_i, e_{i+1})`, the last bin closed, plus a bucket below the
//! first edge and one above the last) or values (categorical: plus one bucket for
//! every other value), Q the reference weights normalised to sum to 1 (tails from
//! `tail_weights`, else 0). Buckets where p = 0 contribute nothing. A reference
//! weight of 0 (including the tails and the other-values bucket) is replaced by
//! [`KL_EPSILON`] = 1e-6 before renormalising, so observed mass where the
//! reference has none adds p·ln(p/ε) (about 13.8·p) instead of making the
//! divergence infinite. It passes when the divergence is at most `threshold`.

use std::collections::HashSet;
use std::io::Read;
use std::sync::Arc;

use arrow_buffer::NullBuffer;
use regex::Regex;

use crate::spec::{ColumnType, DatasetSpec, Expectation, Scalar, Severity};
use crate::table::{Chunk, CsvChunks, SAMPLE, TableError};

mod columns;
mod distinct;
mod hashing;
mod numeric;
mod outside;
mod report;
mod value_sets;

use columns::{Col, each_f64, each_str, is_valid};
use distinct::Distinct;
pub use distinct::SPILL_AT;
use numeric::{Bounds, KlRef, MedianAcc, Stat, Sum, Welford, kl_divergence, kl_reference};
pub use numeric::{EXACT_MEDIAN_LIMIT, KL_EPSILON, QuantileSketch, SKETCH_K};
pub use outside::DISTINCT_OUTSIDE_CAP;
use outside::{Outside, distinct_values};
pub use report::{
    ExpectationResult, MAX_ENTITY_ID_BYTES, ResultDetail, SAMPLE_CHARS, Statistics, Unexpected,
    ValidationReport, entity_id_problem, sample_text,
};
use value_sets::ValueSet;

/// What a check does with each chunk, and what it has accumulated.
enum Kind {
    OfType,
    NotNull,
    InSet(ValueSet),
    Between(Bounds),
    /// Reads the column's shared [`Distinct`] fingerprints.
    Unique,
    RowCount {
        min: Option<u64>,
        max: Option<u64>,
    },
    Regex(Regex),
    /// Values usable as online-store keys (see [`entity_id_problem`]).
    EntityId,
    Lengths {
        min: Option<u64>,
        max: Option<u64>,
    },
    DistinctInSet {
        values: Vec<Scalar>,
        set: ValueSet,
        seen: Vec<bool>,
        outside: Outside,
        overflow: bool,
    },
    /// Reads the column's shared [`Distinct`] fingerprints.
    ProportionUnique(Bounds),
    Stat {
        stat: Stat,
        bounds: Bounds,
    },
    Pair {
        a: usize,
        b: usize,
        or_equal: bool,
    },
    Compound {
        columns: Vec<usize>,
        distinct: Distinct,
        buf: Vec<u8>,
    },
    Kl {
        reference: KlRef,
        probabilities: Vec<f64>,
        counts: Vec<u64>,
        threshold: f64,
    },
    /// A check that cannot run (a spec that did not go through the parser).
    Invalid(String),
}

/// Counts of a check.
#[derive(Default)]
struct Tally {
    element_count: u64,
    missing: u64,
    unexpected: u64,
    sample: Vec<Unexpected>,
}

impl Tally {
    #[inline]
    fn flag(&mut self, row: u64, value: impl FnOnce() -> serde_json::Value) {
        self.unexpected += 1;
        self.sample_only(row, value);
    }

    #[inline]
    fn sample_only(&mut self, row: u64, value: impl FnOnce() -> serde_json::Value) {
        if self.sample.len() < SAMPLE {
            self.sample.push(Unexpected {
                row,
                value: value(),
            });
        }
    }
}

struct Check {
    expectation: &'static str,
    kwargs: serde_json::Value,
    implied: bool,
    severity: Severity,
    column: Option<usize>,
    mostly: f64,
    kind: Kind,
    tally: Tally,
}

impl Check {
    fn new(e: &Expectation, column: Option<usize>, kind: Kind) -> Self {
        Self {
            expectation: e.name(),
            kwargs: e.kwargs(),
            implied: false,
            severity: e.severity(),
            column,
            mostly: e.mostly(),
            kind,
            tally: Tally::default(),
        }
    }

    fn implied(
        expectation: &'static str,
        kwargs: serde_json::Value,
        column: usize,
        kind: Kind,
    ) -> Self {
        Self {
            expectation,
            kwargs,
            implied: true,
            severity: Severity::Error,
            column: Some(column),
            mostly: 1.0,
            kind,
            tally: Tally::default(),
        }
    }
}

/// Validates chunks as they stream by.
pub struct Validator {
    spec: Arc<DatasetSpec>,
    checks: Vec<Check>,
    /// Per column: the distinct-value fingerprints, when a check needs them.
    distinct: Vec<Option<Distinct>>,
    rows: u64,
}

fn bounds(min: &Option<f64>, max: &Option<f64>, strict_min: bool, strict_max: bool) -> Bounds {
    Bounds {
        min: *min,
        max: *max,
        strict_min,
        strict_max,
    }
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
            checks.push(Check::implied(
                "expect_column_values_to_be_of_type",
                serde_json::json!({ "column": c.name, "type_": c.ty.to_string() }),
                i,
                Kind::OfType,
            ));
            let must_have =
                !c.nullable || c.name == spec.target.column || c.name == spec.entity_column;
            if must_have {
                checks.push(Check::implied(
                    "expect_column_values_to_not_be_null",
                    serde_json::json!({ "column": c.name }),
                    i,
                    Kind::NotNull,
                ));
            }
            if c.name == spec.entity_column && c.ty == ColumnType::String {
                checks.push(Check::implied(
                    "expect_column_values_to_be_valid_entity_ids",
                    serde_json::json!({ "column": c.name, "max_bytes": MAX_ENTITY_ID_BYTES }),
                    i,
                    Kind::EntityId,
                ));
            }
        }
        let index = |name: &str| spec.columns.iter().position(|x| x.name == name);
        for e in &spec.expectations {
            let undeclared: Vec<&str> = e
                .columns()
                .into_iter()
                .map(|(_, c)| c)
                .filter(|c| index(c).is_none())
                .collect();
            if !undeclared.is_empty() {
                // Refused by the spec parser; a spec built otherwise fails here.
                let why = format!("column(s) {undeclared:?} not declared in [[columns]]");
                checks.push(Check::new(e, None, Kind::Invalid(why)));
                continue;
            }
            let col = e.column().and_then(index);
            let ty = col
                .map(|c| spec.columns[c].ty)
                .unwrap_or(ColumnType::String);
            let kind = match e {
                Expectation::NotNull { .. } => Kind::NotNull,
                Expectation::OfType { .. } => Kind::OfType,
                Expectation::InSet { value_set, .. } => Kind::InSet(ValueSet::new(ty, value_set)),
                Expectation::Between {
                    min_value,
                    max_value,
                    strict_min,
                    strict_max,
                    ..
                } => Kind::Between(bounds(min_value, max_value, *strict_min, *strict_max)),
                Expectation::Unique { .. } => Kind::Unique,
                Expectation::RowCount {
                    min_value,
                    max_value,
                    ..
                } => Kind::RowCount {
                    min: *min_value,
                    max: *max_value,
                },
                // Checked against the header before any row is read.
                Expectation::ColumnsMatchSet { .. } => continue,
                Expectation::MatchRegex { regex, .. } => match crate::spec::compile_regex(regex) {
                    Ok(re) => Kind::Regex(re),
                    // Refused by the spec parser; a spec built otherwise fails here.
                    Err(err) => Kind::Invalid(format!("the regex {err}")),
                },
                Expectation::ValueLengthsBetween {
                    min_value,
                    max_value,
                    ..
                } => Kind::Lengths {
                    min: *min_value,
                    max: *max_value,
                },
                Expectation::DistinctValuesInSet { value_set, .. } => Kind::DistinctInSet {
                    values: value_set.clone(),
                    set: ValueSet::new(ty, value_set),
                    seen: vec![false; value_set.len()],
                    outside: Outside::new(ty),
                    overflow: false,
                },
                Expectation::ProportionOfUniqueBetween {
                    min_value,
                    max_value,
                    strict_min,
                    strict_max,
                    ..
                } => Kind::ProportionUnique(bounds(min_value, max_value, *strict_min, *strict_max)),
                Expectation::MeanBetween {
                    min_value,
                    max_value,
                    strict_min,
                    strict_max,
                    ..
                } => Kind::Stat {
                    stat: Stat::Mean(Sum::default()),
                    bounds: bounds(min_value, max_value, *strict_min, *strict_max),
                },
                Expectation::MedianBetween {
                    min_value,
                    max_value,
                    strict_min,
                    strict_max,
                    ..
                } => Kind::Stat {
                    stat: Stat::Median(Box::new(MedianAcc::new(median_limit))),
                    bounds: bounds(min_value, max_value, *strict_min, *strict_max),
                },
                Expectation::StdevBetween {
                    min_value,
                    max_value,
                    strict_min,
                    strict_max,
                    ..
                } => Kind::Stat {
                    stat: Stat::Stdev(Welford::default()),
                    bounds: bounds(min_value, max_value, *strict_min, *strict_max),
                },
                Expectation::MinBetween {
                    min_value,
                    max_value,
                    strict_min,
                    strict_max,
                    ..
                } => Kind::Stat {
                    stat: Stat::Min(None),
                    bounds: bounds(min_value, max_value, *strict_min, *strict_max),
                },
                Expectation::MaxBetween {
                    min_value,
                    max_value,
                    strict_min,
                    strict_max,
                    ..
                } => Kind::Stat {
                    stat: Stat::Max(None),
                    bounds: bounds(min_value, max_value, *strict_min, *strict_max),
                },
                Expectation::PairAGreaterThanB {
                    column_a,
                    column_b,
                    or_equal,
                    ..
                } => Kind::Pair {
                    a: index(column_a).unwrap_or_default(),
                    b: index(column_b).unwrap_or_default(),
                    or_equal: *or_equal,
                },
                Expectation::CompoundColumnsUnique { column_list, .. } => {
                    let columns: Vec<usize> = column_list.iter().filter_map(|c| index(c)).collect();
                    Kind::Compound {
                        columns,
                        distinct: Distinct::new(),
                        buf: Vec::new(),
                    }
                }
                Expectation::KlDivergenceLessThan {
                    partition_object,
                    threshold,
                    ..
                } => {
                    let probabilities = kl_reference(partition_object);
                    let reference = match (&partition_object.bins, &partition_object.values) {
                        (Some(bins), _) => KlRef::Bins(bins.clone()),
                        (None, values) => {
                            KlRef::Values(ValueSet::new(ty, values.as_deref().unwrap_or(&[])))
                        }
                    };
                    Kind::Kl {
                        counts: vec![0; probabilities.len()],
                        probabilities,
                        reference,
                        threshold: *threshold,
                    }
                }
            };
            checks.push(Check::new(e, col, kind));
        }
        let mut distinct: Vec<Option<Distinct>> = spec.columns.iter().map(|_| None).collect();
        for c in &checks {
            if let (Kind::Unique | Kind::ProportionUnique(_), Some(ci)) = (&c.kind, c.column) {
                distinct[ci].get_or_insert_with(Distinct::new);
            }
        }
        Self {
            spec,
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
        let first = chunk.first_row;
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
        for check in &mut self.checks {
            let Check {
                kind,
                tally,
                column,
                ..
            } = check;
            tally.element_count += n as u64;
            let Some(ci) = *column else {
                push_multi(kind, tally, &cols, first, n);
                continue;
            };
            let col = cols[ci];
            let (bad_count, bad_sample) = &chunk.bad_cells[ci];
            // Cells that failed to parse are null in Arrow but present in the file.
            let nulls = col.null_count().saturating_sub(*bad_count);
            match kind {
                Kind::OfType => {
                    tally.missing += nulls;
                    for b in bad_sample {
                        tally.flag(b.row, || b.value.clone().into());
                    }
                    // Unparseable cells beyond the sample still count.
                    tally.unexpected += bad_count - bad_sample.len() as u64;
                }
                Kind::NotNull => {
                    if nulls == 0 {
                        continue;
                    }
                    tally.unexpected += nulls;
                    if tally.sample.len() < SAMPLE
                        && let Some(mask) = col.nulls()
                    {
                        // Unparseable cells are null in Arrow but not missing: skip
                        // the sampled ones (beyond the sample they may be listed).
                        let bad_rows: HashSet<u64> = bad_sample.iter().map(|b| b.row).collect();
                        for (i, valid) in mask.iter().enumerate() {
                            let row = first + i as u64;
                            if !valid && !bad_rows.contains(&row) {
                                tally.sample_only(row, || serde_json::Value::Null);
                                if tally.sample.len() >= SAMPLE {
                                    break;
                                }
                            }
                        }
                    }
                }
                Kind::InSet(set) => {
                    tally.missing += col.null_count();
                    set.each_position(col, |i, pos| {
                        if pos.is_none() {
                            tally.flag(first + i as u64, || col.json(i));
                        }
                    });
                }
                Kind::Between(b) => {
                    tally.missing += col.null_count();
                    each_f64(col, |i, v| {
                        if !b.contains(v) {
                            tally.flag(first + i as u64, || col.json(i));
                        }
                    });
                }
                Kind::Unique => {
                    tally.missing += col.null_count();
                    if let Some(d) = &self.distinct[ci] {
                        for i in &d.chunk_repeats {
                            if tally.sample.len() >= SAMPLE {
                                break;
                            }
                            let i = *i as usize;
                            tally.sample_only(first + i as u64, || col.json(i));
                        }
                    }
                }
                Kind::Regex(re) => {
                    tally.missing += col.null_count();
                    each_str(col, |i, s| {
                        if !re.is_match(s) {
                            tally.flag(first + i as u64, || sample_text(s));
                        }
                    });
                }
                Kind::EntityId => {
                    tally.missing += col.null_count();
                    each_str(col, |i, s| {
                        if entity_id_problem(s).is_some() {
                            tally.flag(first + i as u64, || sample_text(s));
                        }
                    });
                }
                Kind::Lengths { min, max } => {
                    tally.missing += col.null_count();
                    let (lo, hi) = (min.unwrap_or(0), max.unwrap_or(u64::MAX));
                    each_str(col, |i, s| {
                        // Byte length bounds the character count from above, and a
                        // quarter of it from below: count characters only when needed.
                        let bytes = s.len() as u64;
                        let ok = if bytes >= lo && bytes <= hi && s.is_ascii() {
                            true
                        } else {
                            let chars = s.chars().count() as u64;
                            chars >= lo && chars <= hi
                        };
                        if !ok {
                            tally.flag(first + i as u64, || sample_text(s));
                        }
                    });
                }
                Kind::DistinctInSet {
                    set,
                    seen,
                    outside,
                    overflow,
                    ..
                } => {
                    tally.missing += col.null_count();
                    set.each_position(col, |i, pos| match pos {
                        Some(p) => seen[p as usize] = true,
                        None => {
                            if !outside.note(col, i) {
                                *overflow = true;
                            }
                            tally.flag(first + i as u64, || col.json(i));
                        }
                    });
                }
                Kind::ProportionUnique(_) => tally.missing += col.null_count(),
                Kind::Stat { stat, .. } => {
                    tally.missing += col.null_count();
                    each_f64(col, |_, x| stat.add(x));
                }
                Kind::Kl {
                    reference, counts, ..
                } => {
                    tally.missing += col.null_count();
                    match reference {
                        KlRef::Bins(edges) => {
                            let (lo, hi) = (edges[0], edges[edges.len() - 1]);
                            let last = counts.len() - 1;
                            each_f64(col, |_, x| {
                                let slot = if x < lo {
                                    0
                                } else if x > hi {
                                    last
                                } else if x == hi {
                                    last - 1
                                } else {
                                    edges.partition_point(|e| *e <= x)
                                };
                                counts[slot] += 1;
                            });
                        }
                        KlRef::Values(set) => {
                            let other = counts.len() - 1;
                            set.each_position(col, |_, pos| {
                                counts[pos.map_or(other, |p| p as usize)] += 1;
                            });
                        }
                    }
                }
                Kind::RowCount { .. }
                | Kind::Pair { .. }
                | Kind::Compound { .. }
                | Kind::Invalid(_) => {}
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
            severity: Severity::Error,
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
                ..
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
                    severity: e.severity(),
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
            let shared = c.column.and_then(|ci| self.distinct[ci].as_ref());
            results.push(finish_check(c, rows, read_complete, shared));
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

/// Per-chunk work of the checks over several columns.
fn push_multi(kind: &mut Kind, tally: &mut Tally, cols: &[Col<'_>], first: u64, n: usize) {
    match kind {
        Kind::Pair { a, b, or_equal } => {
            let (ca, cb) = (cols[*a], cols[*b]);
            let (na, nb) = (ca.nulls(), cb.nulls());
            let json = |i: usize| serde_json::json!([ca.json(i), cb.json(i)]);
            let or_equal = *or_equal;
            match (ca, cb) {
                (Col::Int(x), Col::Int(y)) => {
                    let (x, y) = (x.values(), y.values());
                    for i in 0..n {
                        if !(is_valid(na, i) && is_valid(nb, i)) {
                            tally.missing += 1;
                        } else if !(x[i] > y[i] || (or_equal && x[i] == y[i])) {
                            tally.flag(first + i as u64, || json(i));
                        }
                    }
                }
                _ => {
                    let value = |c: Col<'_>, i: usize| match c {
                        Col::Int(a) => a.value(i) as f64,
                        Col::Float(a) => a.value(i),
                        _ => f64::NAN,
                    };
                    for i in 0..n {
                        if !(is_valid(na, i) && is_valid(nb, i)) {
                            tally.missing += 1;
                            continue;
                        }
                        let (x, y) = (value(ca, i), value(cb, i));
                        if !(x > y || (or_equal && x == y)) {
                            tally.flag(first + i as u64, || json(i));
                        }
                    }
                }
            }
        }
        Kind::Compound {
            columns,
            distinct,
            buf,
        } => {
            let picked: Vec<Col<'_>> = columns.iter().map(|c| cols[*c]).collect();
            let masks: Vec<Option<&NullBuffer>> = picked.iter().map(|c| c.nulls()).collect();
            for i in 0..n {
                if masks.iter().all(|m| !is_valid(*m, i)) {
                    tally.missing += 1;
                    continue;
                }
                buf.clear();
                for (c, m) in picked.iter().zip(&masks) {
                    c.encode(i, is_valid(*m, i), buf);
                }
                let key = distinct.fp.of(buf);
                distinct.queue(i, key);
            }
            distinct.flush();
            for i in &distinct.chunk_repeats {
                if tally.sample.len() >= SAMPLE {
                    break;
                }
                let i = *i as usize;
                tally.sample_only(first + i as u64, || {
                    serde_json::Value::Array(picked.iter().map(|c| c.json(i)).collect())
                });
            }
        }
        _ => {}
    }
}

fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}

fn finish_check(
    c: Check,
    rows: u64,
    read_complete: bool,
    distinct: Option<&Distinct>,
) -> ExpectationResult {
    let Check {
        expectation,
        kwargs,
        implied,
        severity,
        mostly,
        kind,
        tally,
        ..
    } = c;
    let mut detail = ResultDetail {
        element_count: tally.element_count,
        missing_count: tally.missing,
        unexpected_count: tally.unexpected,
        partial_unexpected_list: tally.sample,
        ..Default::default()
    };
    let non_null = tally.element_count.saturating_sub(tally.missing);
    // Column-map expectations: the share of passing values against `mostly`.
    let map_success = |unexpected: u64, denominator: u64, detail: &mut ResultDetail| {
        detail.unexpected_count = unexpected;
        detail.unexpected_percent = pct(unexpected, denominator);
        let pass_ratio = if denominator == 0 {
            1.0
        } else {
            1.0 - unexpected as f64 / denominator as f64
        };
        pass_ratio + 1e-12 >= mostly
    };
    let success = match kind {
        Kind::Invalid(why) => {
            detail.details = Some(why);
            false
        }
        Kind::RowCount { min, max } => {
            detail = ResultDetail {
                observed_value: Some(rows.into()),
                ..Default::default()
            };
            min.is_none_or(|m| rows >= m) && max.is_none_or(|m| rows <= m)
        }
        Kind::NotNull => {
            detail.missing_count = 0;
            map_success(tally.unexpected, tally.element_count, &mut detail)
        }
        Kind::Unique | Kind::Compound { .. } => {
            let d = match &kind {
                Kind::Compound { distinct, .. } => Some(distinct),
                _ => distinct,
            };
            // GE counts every row of a repeated value, the first one included.
            let unexpected = d.map_or(0, Distinct::rows_in_repeats);
            let count = d.map_or(0, Distinct::distinct_values);
            detail.observed_value = Some(serde_json::json!({ "distinct_values": count }));
            map_success(unexpected, non_null, &mut detail)
        }
        Kind::OfType
        | Kind::InSet(_)
        | Kind::Between(_)
        | Kind::Regex(_)
        | Kind::Lengths { .. }
        | Kind::Pair { .. } => map_success(tally.unexpected, non_null, &mut detail),
        Kind::EntityId => {
            if tally.unexpected > 0 {
                detail.details = Some(format!(
                    "entity ids key the online feature store: 1 to {MAX_ENTITY_ID_BYTES} bytes, \
                     no control characters"
                ));
            }
            map_success(tally.unexpected, non_null, &mut detail)
        }
        Kind::DistinctInSet {
            values,
            seen,
            outside,
            overflow,
            ..
        } => {
            detail.unexpected_percent = pct(tally.unexpected, non_null);
            detail.observed_value = Some(distinct_values(&values, &seen, &outside).into());
            if overflow {
                detail.details = Some(format!(
                    "more than {DISTINCT_OUTSIDE_CAP} distinct values outside the set; the \
                     first {DISTINCT_OUTSIDE_CAP} found are listed"
                ));
            }
            tally.unexpected == 0
        }
        Kind::ProportionUnique(bounds) => {
            if non_null == 0 {
                detail.details = Some("no non-null values".into());
                false
            } else {
                let count = distinct.map_or(0, Distinct::distinct_values);
                let p = count as f64 / non_null as f64;
                detail.observed_value = Some(p.into());
                bounds.contains(p)
            }
        }
        Kind::Stat { mut stat, bounds } => {
            let (value, note) = match &mut stat {
                Stat::Mean(s) => (s.mean(), None),
                Stat::Median(m) => m.finish(),
                Stat::Stdev(w) => (w.stdev(), None),
                Stat::Min(m) | Stat::Max(m) => (*m, None),
            };
            detail.details = note;
            match value {
                Some(v) => {
                    detail.observed_value = Some(v.into());
                    bounds.contains(v)
                }
                None => {
                    let need = if matches!(stat, Stat::Stdev(_)) {
                        "at least two non-null values"
                    } else {
                        "at least one non-null value"
                    };
                    detail.details = Some(format!("not computable: needs {need}"));
                    false
                }
            }
        }
        Kind::Kl {
            probabilities,
            counts,
            threshold,
            reference,
        } => match kl_divergence(&counts, &probabilities) {
            Some(kl) => {
                detail.observed_value = Some(kl.into());
                let total: u64 = counts.iter().sum();
                let outside = match reference {
                    KlRef::Bins(_) => counts[0] + counts[counts.len() - 1],
                    KlRef::Values(_) => counts[counts.len() - 1],
                };
                let what = match reference {
                    KlRef::Bins(_) => "outside the reference bins",
                    KlRef::Values(_) => "outside the reference values",
                };
                if outside > 0 {
                    detail.details = Some(format!(
                        "{outside} of {total} values ({:.2}%) fall {what}",
                        pct(outside, total)
                    ));
                }
                kl <= threshold
            }
            None => {
                detail.details = Some("not computable: no non-null values".into());
                false
            }
        },
    };
    ExpectationResult {
        expectation: expectation.into(),
        kwargs,
        implied,
        severity,
        success: success && read_complete,
        result: detail,
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
