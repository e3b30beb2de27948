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

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};
use std::io::Read;
use std::sync::Arc;

use arrow_array::{Array, BooleanArray, Float64Array, Int64Array, StringArray};
use arrow_buffer::NullBuffer;
use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::spec::{ColumnType, DatasetSpec, Expectation, PartitionObject, Scalar, Severity};
use crate::table::{Chunk, CsvChunks, SAMPLE, TableError};

/// Non-null values kept for an exact median; beyond, the median is approximate.
pub const EXACT_MEDIAN_LIMIT: usize = 1_000_000;

/// Buffer size of each level of the median's quantile sketch (even).
pub const SKETCH_K: usize = 32_768;

/// Distinct values outside the set that `expect_column_distinct_values_to_be_in_set`
/// remembers (and lists) at most.
pub const DISTINCT_OUTSIDE_CAP: usize = 1_000;

/// Weight given to an empty bucket of a KL reference distribution.
pub const KL_EPSILON: f64 = 1e-6;

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
fn json_num(v: &serde_json::Value) -> String {
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
    fn expected(&self) -> Option<String> {
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

// ---------------------------------------------------------------------------
// Hashing

/// FxHash-style hasher for lookups in maps whose keys come from the spec (value
/// sets, categories): untrusted cells are only looked up, never inserted, so a
/// fast non-keyed hash is safe there.
#[derive(Default)]
struct FxHasher(u64);

impl FxHasher {
    #[inline]
    fn add(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().unwrap_or_default()));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut buf = [0u8; 8];
            buf[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(buf));
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(i as u64);
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    #[inline]
    fn write_i64(&mut self, i: i64) {
        self.add(i as u64);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

type FxBuild = BuildHasherDefault<FxHasher>;

/// Hasher for 128-bit fingerprints, which are already uniformly random (keyed
/// SipHash with per-run random keys, so not predictable from the data): it keeps
/// 64 of their bits.
#[derive(Default)]
struct FingerprintHasher(u64);

impl Hasher for FingerprintHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ *b as u64;
        }
    }
    #[inline]
    fn write_u128(&mut self, i: u128) {
        self.0 = (i as u64) ^ ((i >> 64) as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

type FpBuild = BuildHasherDefault<FingerprintHasher>;

/// Two independent 64-bit SipHashes: a 128-bit fingerprint for uniqueness.
#[derive(Clone)]
struct Fingerprinter(std::hash::RandomState, std::hash::RandomState);

impl Fingerprinter {
    fn new() -> Self {
        Self(std::hash::RandomState::new(), std::hash::RandomState::new())
    }
    #[inline]
    fn of(&self, bytes: &[u8]) -> u128 {
        let mut a = self.0.build_hasher();
        a.write(bytes);
        let mut b = self.1.build_hasher();
        b.write(bytes);
        ((a.finish() as u128) << 64) | b.finish() as u128
    }
}

/// Float bits with -0.0 and 0.0 made equal.
#[inline]
fn float_key(x: f64) -> u64 {
    if x == 0.0 { 0 } else { x.to_bits() }
}

// ---------------------------------------------------------------------------
// Typed views of a chunk's columns

/// A chunk's column, downcast once.
#[derive(Clone, Copy)]
enum Col<'a> {
    Str(&'a StringArray),
    Int(&'a Int64Array),
    Float(&'a Float64Array),
    Bool(&'a BooleanArray),
    /// Not the expected Arrow type (cannot happen with `table`'s chunks).
    Other(&'a dyn Array),
}

impl<'a> Col<'a> {
    fn of(array: &'a dyn Array, ty: ColumnType) -> Self {
        let any = array.as_any();
        let typed = match ty {
            ColumnType::String => any.downcast_ref::<StringArray>().map(Col::Str),
            ColumnType::Int => any.downcast_ref::<Int64Array>().map(Col::Int),
            ColumnType::Float => any.downcast_ref::<Float64Array>().map(Col::Float),
            ColumnType::Bool => any.downcast_ref::<BooleanArray>().map(Col::Bool),
        };
        typed.unwrap_or(Col::Other(array))
    }

    fn array(&self) -> &'a dyn Array {
        match *self {
            Col::Str(a) => a,
            Col::Int(a) => a,
            Col::Float(a) => a,
            Col::Bool(a) => a,
            Col::Other(a) => a,
        }
    }

    /// The null mask, only when there are nulls.
    fn nulls(&self) -> Option<&'a NullBuffer> {
        self.array().nulls().filter(|n| n.null_count() > 0)
    }

    fn null_count(&self) -> u64 {
        self.array().null_count() as u64
    }

    /// The value at `i` as JSON (for samples only).
    fn json(&self, i: usize) -> serde_json::Value {
        if self.array().is_null(i) {
            return serde_json::Value::Null;
        }
        match self {
            Col::Str(a) => sample_text(a.value(i)),
            Col::Int(a) => a.value(i).into(),
            Col::Float(a) => a.value(i).into(),
            Col::Bool(a) => a.value(i).into(),
            Col::Other(_) => serde_json::Value::Null,
        }
    }

    /// Appends the value at `i` to `buf`, tagged by type and length so that
    /// distinct tuples never encode alike (nulls included).
    #[inline]
    fn encode(&self, i: usize, valid: bool, buf: &mut Vec<u8>) {
        if !valid {
            buf.push(0);
            return;
        }
        match self {
            Col::Str(a) => {
                let s = a.value(i).as_bytes();
                buf.push(1);
                buf.extend_from_slice(&(s.len() as u64).to_le_bytes());
                buf.extend_from_slice(s);
            }
            Col::Int(a) => {
                buf.push(2);
                buf.extend_from_slice(&a.value(i).to_le_bytes());
            }
            Col::Float(a) => {
                buf.push(3);
                buf.extend_from_slice(&float_key(a.value(i)).to_le_bytes());
            }
            Col::Bool(a) => buf.extend_from_slice(&[4, a.value(i) as u8]),
            Col::Other(_) => buf.push(5),
        }
    }
}

#[inline]
fn is_valid(nulls: Option<&NullBuffer>, i: usize) -> bool {
    nulls.is_none_or(|n| n.is_valid(i))
}

/// Calls `f(i, x)` for every non-null value of a numeric column.
#[inline]
fn each_f64(col: Col<'_>, mut f: impl FnMut(usize, f64)) {
    let nulls = col.nulls();
    match col {
        Col::Float(a) => {
            for (i, x) in a.values().iter().enumerate() {
                if is_valid(nulls, i) {
                    f(i, *x);
                }
            }
        }
        Col::Int(a) => {
            for (i, x) in a.values().iter().enumerate() {
                if is_valid(nulls, i) {
                    f(i, *x as f64);
                }
            }
        }
        _ => {}
    }
}

/// Calls `f(i, s)` for every non-null value of a string column.
#[inline]
fn each_str(col: Col<'_>, mut f: impl FnMut(usize, &str)) {
    if let Col::Str(a) = col {
        let nulls = col.nulls();
        for i in 0..a.len() {
            if is_valid(nulls, i) {
                f(i, a.value(i));
            }
        }
    }
}

/// Calls `f(i, bytes)` for every non-null value: the bytes identify the value.
#[inline]
fn each_key_bytes(col: Col<'_>, mut f: impl FnMut(usize, &[u8])) {
    let nulls = col.nulls();
    match col {
        Col::Str(a) => {
            for i in 0..a.len() {
                if is_valid(nulls, i) {
                    f(i, a.value(i).as_bytes());
                }
            }
        }
        Col::Int(a) => {
            for (i, x) in a.values().iter().enumerate() {
                if is_valid(nulls, i) {
                    f(i, &x.to_le_bytes());
                }
            }
        }
        Col::Float(a) => {
            for (i, x) in a.values().iter().enumerate() {
                if is_valid(nulls, i) {
                    f(i, &float_key(*x).to_le_bytes());
                }
            }
        }
        Col::Bool(a) => {
            for i in 0..a.len() {
                if is_valid(nulls, i) {
                    f(i, &[a.value(i) as u8]);
                }
            }
        }
        Col::Other(_) => {}
    }
}

// ---------------------------------------------------------------------------
// Value sets

/// A list of keys with their positions: linear search when short, hashed beyond.
struct Lookup<K> {
    items: Vec<K>,
    map: Option<HashMap<K, u32, FxBuild>>,
}

impl<K: Eq + Hash + Clone> Lookup<K> {
    const LINEAR: usize = 8;

    fn new(items: Vec<K>) -> Self {
        let map = (items.len() > Self::LINEAR).then(|| {
            let mut m = HashMap::with_capacity_and_hasher(items.len(), FxBuild::default());
            for (i, k) in items.iter().enumerate().rev() {
                m.insert(k.clone(), i as u32);
            }
            m
        });
        Self { items, map }
    }

    #[inline]
    fn get<Q>(&self, q: &Q) -> Option<u32>
    where
        K: std::borrow::Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        match &self.map {
            Some(m) => m.get(q).copied(),
            None => self
                .items
                .iter()
                .position(|k| k.borrow() == q)
                .map(|p| p as u32),
        }
    }
}

impl Lookup<String> {
    /// Position of a string given as UTF-8 bytes.
    #[inline]
    fn get_bytes(&self, q: &[u8]) -> Option<u32> {
        match &self.map {
            // Valid UTF-8 (it comes from a StringArray); a failed check just misses.
            Some(m) => std::str::from_utf8(q).ok().and_then(|s| m.get(s).copied()),
            // Short category strings: an inlined byte compare beats a memcmp call.
            None => self
                .items
                .iter()
                .position(|k| k.len() == q.len() && k.as_bytes().iter().zip(q).all(|(a, b)| a == b))
                .map(|p| p as u32),
        }
    }
}

/// The values of a value set (or of a categorical partition), typed like the column.
enum ValueSet {
    Str(Lookup<String>),
    Int(Lookup<i64>),
    Float(Lookup<u64>),
    Bool(Lookup<bool>),
}

impl ValueSet {
    /// Position `i` of the result is the value `values[i]` (values that do not fit
    /// the type were refused when the spec was parsed, and are never matched here).
    fn new(ty: ColumnType, values: &[Scalar]) -> Self {
        match ty {
            ColumnType::String => ValueSet::Str(Lookup::new(
                values
                    .iter()
                    .map(|v| match v {
                        Scalar::Str(s) => s.clone(),
                        other => format!("\u{0}{other}"),
                    })
                    .collect(),
            )),
            ColumnType::Int => ValueSet::Int(Lookup::new(
                values
                    .iter()
                    .map(|v| match v {
                        Scalar::Int(i) => *i,
                        _ => i64::MIN,
                    })
                    .collect(),
            )),
            ColumnType::Float => ValueSet::Float(Lookup::new(
                values
                    .iter()
                    .map(|v| match v {
                        Scalar::Int(i) => float_key(*i as f64),
                        Scalar::Float(f) => float_key(*f),
                        _ => f64::NAN.to_bits(),
                    })
                    .collect(),
            )),
            ColumnType::Bool => ValueSet::Bool(Lookup::new(
                values
                    .iter()
                    .map(|v| matches!(v, Scalar::Bool(true)))
                    .collect(),
            )),
        }
    }

    /// Calls `f(i, position)` for every non-null value of the column, with its
    /// position in the set (None when outside).
    #[inline]
    fn each_position(&self, col: Col<'_>, mut f: impl FnMut(usize, Option<u32>)) {
        let nulls = col.nulls();
        match (self, col) {
            (ValueSet::Str(l), Col::Str(a)) => {
                // Compared as bytes straight from the array's buffers.
                let offsets = a.value_offsets();
                let bytes = a.value_data();
                for (i, w) in offsets.windows(2).enumerate() {
                    if is_valid(nulls, i) {
                        let v = bytes.get(w[0] as usize..w[1] as usize).unwrap_or_default();
                        f(i, l.get_bytes(v));
                    }
                }
            }
            (ValueSet::Int(l), Col::Int(a)) => {
                for (i, x) in a.values().iter().enumerate() {
                    if is_valid(nulls, i) {
                        f(i, l.get(x));
                    }
                }
            }
            (ValueSet::Float(l), Col::Float(a)) => {
                for (i, x) in a.values().iter().enumerate() {
                    if is_valid(nulls, i) {
                        f(i, l.get(&float_key(*x)));
                    }
                }
            }
            (ValueSet::Bool(l), Col::Bool(a)) => {
                for i in 0..a.len() {
                    if is_valid(nulls, i) {
                        f(i, l.get(&a.value(i)));
                    }
                }
            }
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------
// Distinct values outside a set (bounded)

/// Distinct values seen outside a value set, kept sorted, at most
/// [`DISTINCT_OUTSIDE_CAP`] of them.
enum Outside {
    Str(Vec<String>),
    Int(Vec<i64>),
    Float(Vec<f64>),
    Bool(Vec<bool>),
}

impl Outside {
    fn new(ty: ColumnType) -> Self {
        match ty {
            ColumnType::String => Outside::Str(Vec::new()),
            ColumnType::Int => Outside::Int(Vec::new()),
            ColumnType::Float => Outside::Float(Vec::new()),
            ColumnType::Bool => Outside::Bool(Vec::new()),
        }
    }

    /// Remembers the value at `i`; false when it is new but the cap is reached.
    fn note(&mut self, col: Col<'_>, i: usize) -> bool {
        fn put<T: Ord + Clone>(v: &mut Vec<T>, x: T) -> bool {
            match v.binary_search(&x) {
                Ok(_) => true,
                Err(_) if v.len() >= DISTINCT_OUTSIDE_CAP => false,
                Err(p) => {
                    v.insert(p, x);
                    true
                }
            }
        }
        match (self, col) {
            (Outside::Str(v), Col::Str(a)) => {
                let s = a.value(i);
                match v.binary_search_by(|p| p.as_str().cmp(s)) {
                    Ok(_) => true,
                    Err(_) if v.len() >= DISTINCT_OUTSIDE_CAP => false,
                    Err(p) => {
                        v.insert(p, s.to_string());
                        true
                    }
                }
            }
            (Outside::Int(v), Col::Int(a)) => put(v, a.value(i)),
            (Outside::Float(v), Col::Float(a)) => {
                let x = a.value(i);
                let x = if x == 0.0 { 0.0 } else { x };
                match v.binary_search_by(|p| p.total_cmp(&x)) {
                    Ok(_) => true,
                    Err(_) if v.len() >= DISTINCT_OUTSIDE_CAP => false,
                    Err(p) => {
                        v.insert(p, x);
                        true
                    }
                }
            }
            (Outside::Bool(v), Col::Bool(a)) => put(v, a.value(i)),
            _ => true,
        }
    }
}

/// Sorted distinct values: the seen values of a set plus those outside it.
fn distinct_values(set: &[Scalar], seen: &[bool], outside: &Outside) -> Vec<serde_json::Value> {
    let chosen = set.iter().zip(seen).filter(|(_, s)| **s).map(|(v, _)| v);
    match outside {
        Outside::Str(o) => {
            let mut all: Vec<&str> = chosen
                .filter_map(|v| match v {
                    Scalar::Str(s) => Some(s.as_str()),
                    _ => None,
                })
                .chain(o.iter().map(String::as_str))
                .collect();
            all.sort_unstable();
            all.dedup();
            all.into_iter().map(serde_json::Value::from).collect()
        }
        Outside::Int(o) => {
            let mut all: Vec<i64> = chosen
                .filter_map(|v| match v {
                    Scalar::Int(i) => Some(*i),
                    _ => None,
                })
                .chain(o.iter().copied())
                .collect();
            all.sort_unstable();
            all.dedup();
            all.into_iter().map(serde_json::Value::from).collect()
        }
        Outside::Float(o) => {
            let mut all: Vec<f64> = chosen
                .filter_map(|v| match v {
                    Scalar::Int(i) => Some(*i as f64),
                    Scalar::Float(f) => Some(*f),
                    _ => None,
                })
                .chain(o.iter().copied())
                .collect();
            all.sort_by(f64::total_cmp);
            all.dedup();
            all.into_iter().map(serde_json::Value::from).collect()
        }
        Outside::Bool(o) => {
            let mut all: Vec<bool> = chosen
                .filter_map(|v| match v {
                    Scalar::Bool(b) => Some(*b),
                    _ => None,
                })
                .chain(o.iter().copied())
                .collect();
            all.sort_unstable();
            all.dedup();
            all.into_iter().map(serde_json::Value::from).collect()
        }
    }
}

// ---------------------------------------------------------------------------
// Numeric accumulators

/// Bounds of a `*_to_be_between` expectation.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    min: Option<f64>,
    max: Option<f64>,
    strict_min: bool,
    strict_max: bool,
}

impl Bounds {
    #[inline]
    fn contains(&self, v: f64) -> bool {
        let low = self
            .min
            .is_none_or(|m| if self.strict_min { v > m } else { v >= m });
        let high = self
            .max
            .is_none_or(|m| if self.strict_max { v < m } else { v <= m });
        low && high
    }
}

/// Neumaier-compensated running sum, in row order.
#[derive(Debug, Clone, Default)]
struct Sum {
    sum: f64,
    comp: f64,
    n: u64,
}

impl Sum {
    #[inline]
    fn add(&mut self, x: f64) {
        let t = self.sum + x;
        if self.sum.abs() >= x.abs() {
            self.comp += (self.sum - t) + x;
        } else {
            self.comp += (x - t) + self.sum;
        }
        self.sum = t;
        self.n += 1;
    }
    fn mean(&self) -> Option<f64> {
        (self.n > 0).then(|| (self.sum + self.comp) / self.n as f64)
    }
}

/// Welford's running mean and sum of squared deviations, in row order.
#[derive(Debug, Clone, Default)]
struct Welford {
    n: u64,
    mean: f64,
    m2: f64,
}

impl Welford {
    #[inline]
    fn add(&mut self, x: f64) {
        self.n += 1;
        let d = x - self.mean;
        self.mean += d / self.n as f64;
        self.m2 += d * (x - self.mean);
    }
    /// Sample standard deviation (ddof = 1), from two values on.
    fn stdev(&self) -> Option<f64> {
        (self.n >= 2).then(|| (self.m2.max(0.0) / (self.n - 1) as f64).sqrt())
    }
}

/// A deterministic streaming quantile summary (Manku, Rajagopalan and Lindsay,
/// 1998): level `h` buffers up to `k` values of weight 2^h; a full buffer is sorted
/// and every other value (alternating the offset) moves up a level with twice the
/// weight. A compaction at level h moves the weighted rank of any value by at most
/// 2^h, so [`error_bound`](Self::error_bound) (the sum over compactions) bounds the
/// rank error of every query; it is at most n·log2(n/k)/k. Memory: at most
/// `k·(1 + log2(n/k))` values. The result depends only on the order of the values.
#[derive(Debug, Clone)]
pub struct QuantileSketch {
    k: usize,
    levels: Vec<Vec<f64>>,
    flip: Vec<bool>,
    n: u64,
    error_bound: u64,
}

impl QuantileSketch {
    /// A sketch whose buffers hold `k` values (rounded up to an even number ≥ 2).
    pub fn new(k: usize) -> Self {
        let k = k.max(2).next_multiple_of(2);
        Self {
            k,
            levels: vec![Vec::with_capacity(k)],
            flip: vec![false],
            n: 0,
            error_bound: 0,
        }
    }

    /// Adds a value.
    #[inline]
    pub fn insert(&mut self, x: f64) {
        self.n += 1;
        self.levels[0].push(x);
        if self.levels[0].len() >= self.k {
            self.compact(0);
        }
    }

    fn compact(&mut self, mut h: usize) {
        loop {
            if self.levels.len() <= h + 1 {
                self.levels.push(Vec::with_capacity(self.k));
                self.flip.push(false);
            }
            let mut buf = std::mem::take(&mut self.levels[h]);
            buf.sort_unstable_by(f64::total_cmp);
            let offset = self.flip[h] as usize;
            self.flip[h] = !self.flip[h];
            self.levels[h + 1].extend(buf.iter().skip(offset).step_by(2));
            buf.clear();
            self.levels[h] = buf;
            self.error_bound += 1 << h;
            if self.levels[h + 1].len() >= self.k {
                h += 1;
            } else {
                return;
            }
        }
    }

    /// Values inserted.
    pub fn count(&self) -> u64 {
        self.n
    }

    /// Largest possible difference between the rank a query assumes for a value
    /// and its true rank among the inserted values.
    pub fn error_bound(&self) -> u64 {
        self.error_bound
    }

    /// Values held (memory is 8 bytes each plus the buffers' spare capacity).
    pub fn retained(&self) -> usize {
        self.levels.iter().map(Vec::len).sum()
    }

    /// A value whose rank (1-based, among the inserted values, some tie counted) is
    /// within ±[`error_bound`](Self::error_bound) of `rank`; None when empty.
    pub fn value_at_rank(&self, rank: u64) -> Option<f64> {
        let mut items: Vec<(f64, u64)> = self
            .levels
            .iter()
            .enumerate()
            .flat_map(|(h, l)| l.iter().map(move |x| (*x, 1u64 << h)))
            .collect();
        if items.is_empty() {
            return None;
        }
        items.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
        let mut cum = 0u64;
        for (x, w) in &items {
            cum += w;
            if cum >= rank {
                return Some(*x);
            }
        }
        items.last().map(|(x, _)| *x)
    }

    /// The median estimate: the value at rank ⌈n/2⌉ (the lower median).
    pub fn median(&self) -> Option<f64> {
        self.value_at_rank(self.n.div_ceil(2).max(1))
    }
}

/// The median's accumulator: exact up to a limit, then a [`QuantileSketch`].
#[derive(Debug, Clone)]
struct MedianAcc {
    exact: Vec<f64>,
    sketch: Option<QuantileSketch>,
    limit: usize,
}

impl MedianAcc {
    fn new(limit: usize) -> Self {
        Self {
            exact: Vec::new(),
            sketch: None,
            limit,
        }
    }

    #[inline]
    fn add(&mut self, x: f64) {
        match &mut self.sketch {
            Some(s) => s.insert(x),
            None => {
                self.exact.push(x);
                if self.exact.len() > self.limit {
                    let mut s = QuantileSketch::new(SKETCH_K);
                    for v in self.exact.drain(..) {
                        s.insert(v);
                    }
                    self.exact = Vec::new();
                    self.sketch = Some(s);
                }
            }
        }
    }

    /// The median and, when approximate, an explanation with its error bound.
    fn finish(&mut self) -> (Option<f64>, Option<String>) {
        if let Some(s) = &self.sketch {
            let m = s.median();
            let n = s.count();
            let e = s.error_bound();
            return (
                m,
                Some(format!(
                    "approximate median: {n} values exceed the exact limit of {}; a streaming \
                     quantile sketch returned a value whose rank is within ±{e} ({:.4}%) of the \
                     median's",
                    self.limit,
                    100.0 * e as f64 / n.max(1) as f64
                )),
            );
        }
        let v = &mut self.exact;
        let n = v.len();
        if n == 0 {
            return (None, None);
        }
        let (_, hi, _) = v.select_nth_unstable_by(n / 2, f64::total_cmp);
        let hi = *hi;
        if n % 2 == 1 {
            return (Some(hi), None);
        }
        let lo = v[..n / 2]
            .iter()
            .copied()
            .max_by(f64::total_cmp)
            .unwrap_or(hi);
        (Some((lo + hi) / 2.0), None)
    }
}

/// A column statistic.
enum Stat {
    Mean(Sum),
    Median(Box<MedianAcc>),
    Stdev(Welford),
    Min(Option<f64>),
    Max(Option<f64>),
}

impl Stat {
    #[inline]
    fn add(&mut self, x: f64) {
        match self {
            Stat::Mean(s) => s.add(x),
            Stat::Median(m) => m.add(x),
            Stat::Stdev(w) => w.add(x),
            Stat::Min(m) => *m = Some(m.map_or(x, |m| m.min(x))),
            Stat::Max(m) => *m = Some(m.map_or(x, |m| m.max(x))),
        }
    }
}

/// The reference side of a KL divergence.
enum KlRef {
    /// Edges; counts are `[below, bins..., above]`.
    Bins(Vec<f64>),
    /// Categories; counts are `[values..., other]`.
    Values(ValueSet),
}

/// Normalised reference probabilities in the layout of the counts, with
/// [`KL_EPSILON`] for empty buckets, renormalised.
fn kl_reference(p: &PartitionObject) -> Vec<f64> {
    let mut w: Vec<f64> = Vec::with_capacity(p.weights.len() + 2);
    if p.bins.is_some() {
        let tails = p.tail_weights.clone().unwrap_or_default();
        w.push(tails.first().copied().unwrap_or(0.0));
        w.extend(&p.weights);
        w.push(tails.get(1).copied().unwrap_or(0.0));
    } else {
        w.extend(&p.weights);
        w.push(0.0);
    }
    let total: f64 = w.iter().sum();
    for x in &mut w {
        *x = if total > 0.0 { *x / total } else { 0.0 };
        if *x <= 0.0 {
            *x = KL_EPSILON;
        }
    }
    let total: f64 = w.iter().sum();
    w.iter().map(|x| x / total).collect()
}

/// KL(P ‖ Q) in nats of observed counts against reference probabilities.
fn kl_divergence(counts: &[u64], reference: &[f64]) -> Option<f64> {
    let n: u64 = counts.iter().sum();
    if n == 0 {
        return None;
    }
    let mut kl = 0.0;
    for (c, q) in counts.iter().zip(reference) {
        if *c > 0 {
            let p = *c as f64 / n as f64;
            kl += p * (p / q).ln();
        }
    }
    Some(kl.max(0.0))
}

// ---------------------------------------------------------------------------
// Checks

/// A set of 128-bit fingerprints: open addressing with linear probing, at most
/// 5/8 full, 16 bytes per slot (so 26 to 51 bytes per distinct value). The top
/// bits of a fingerprint (uniformly random already) are its home slot: no
/// further hashing, one cache line per probe sequence, and growing reinserts in
/// slot order. 0 marks an empty slot; the fingerprint 0 is stored as 1.
struct FpSet {
    slots: Vec<u128>,
    len: usize,
    bits: u32,
}

impl FpSet {
    const INITIAL_BITS: u32 = 10;

    fn new() -> Self {
        Self {
            slots: vec![0; 1 << Self::INITIAL_BITS],
            len: 0,
            bits: Self::INITIAL_BITS,
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    /// Makes room for `additional` more fingerprints without growing.
    fn reserve(&mut self, additional: usize) {
        while (self.len + additional) * 8 > self.slots.len() * 5 {
            self.grow();
        }
    }

    /// Adds a fingerprint; false when it was already there.
    #[inline]
    fn insert(&mut self, key: u128) -> bool {
        if (self.len + 1) * 8 > self.slots.len() * 5 {
            self.grow();
        }
        self.place(key.max(1))
    }

    #[inline]
    fn place(&mut self, key: u128) -> bool {
        let mask = self.slots.len() - 1;
        let mut i = (key >> (128 - self.bits)) as usize;
        loop {
            let slot = self.slots[i];
            if slot == 0 {
                self.slots[i] = key;
                self.len += 1;
                return true;
            }
            if slot == key {
                return false;
            }
            i = (i + 1) & mask;
        }
    }

    /// Takes every fingerprint out, sorted, and shrinks back to the initial size.
    fn drain_sorted(&mut self) -> Vec<u128> {
        // In place: no second copy of the table while spilling.
        let mut keys = std::mem::take(&mut self.slots);
        keys.retain(|k| *k != 0);
        keys.sort_unstable();
        *self = Self::new();
        keys
    }

    fn grow(&mut self) {
        let size = self.slots.len() * 2;
        let old = std::mem::replace(&mut self.slots, vec![0; size]);
        self.bits += 1;
        self.len = 0;
        for key in old {
            if key != 0 {
                self.place(key);
            }
        }
    }
}

/// Fingerprints of the distinct values of a column (or of a tuple of columns),
/// with the number of extra occurrences of the repeated ones. Shared by the
/// uniqueness and proportion-of-unique checks of a column: 16 bytes per distinct
/// value (plus the hash table's slack), 20 more per repeated value.
///
/// Memory stays bounded whatever the file size: past [`SPILL_AT`] distinct
/// values, the fingerprints go to a sorted run in a temporary file and the table
/// starts over; the runs are merged once at the end to count distinct values and
/// repeats across them (repeats found only in the merge are counted, not sampled).
struct Distinct {
    fp: Fingerprinter,
    seen: FpSet,
    repeats: HashMap<u128, u32, FpBuild>,
    /// Rows (offsets in the last chunk, ascending) whose value had been seen before.
    chunk_repeats: Vec<u32>,
    /// The chunk's (fingerprint, row) pairs, before and after ordering by slot.
    pending: Vec<(u128, u32)>,
    ordered: Vec<(u128, u32)>,
    buckets: Vec<u32>,
    /// Sorted runs of fingerprints spilled to disk.
    runs: Vec<std::fs::File>,
    /// Distinct values kept in memory before spilling.
    spill_at: usize,
    /// (distinct values, rows holding a repeated value), once merged.
    totals: std::cell::OnceCell<(u64, u64)>,
}

/// Distinct fingerprints held in memory per column before a sorted run is
/// spilled to disk (a table of 32 MiB at most, 48 MiB while it grows).
pub const SPILL_AT: usize = 1 << 20;

impl Distinct {
    /// Bits of the fingerprint by which a chunk is ordered before insertion.
    const ORDER_BITS: u32 = 12;

    fn new() -> Self {
        Self {
            fp: Fingerprinter::new(),
            seen: FpSet::new(),
            repeats: HashMap::default(),
            chunk_repeats: Vec::new(),
            pending: Vec::new(),
            ordered: Vec::new(),
            buckets: vec![0; 1 << Self::ORDER_BITS],
            runs: Vec::new(),
            spill_at: SPILL_AT,
            totals: std::cell::OnceCell::new(),
        }
    }

    /// Writes the in-memory fingerprints as a sorted run to a temporary file.
    /// When no temporary file can be made, keeps going in memory.
    fn spill(&mut self) {
        use std::io::{Seek, Write};
        let Ok(file) = tempfile::tempfile() else {
            return;
        };
        let keys = self.seen.drain_sorted();
        let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
        let ok = keys.iter().all(|k| w.write_all(&k.to_le_bytes()).is_ok());
        match w.into_inner() {
            Ok(f) if ok && (&f).rewind().is_ok() => self.runs.push(f),
            _ => {
                // Could not write the run: put the keys back.
                for k in keys {
                    self.seen.insert(k);
                }
            }
        }
    }

    /// (distinct values, rows holding a repeated value, every occurrence counted).
    fn totals(&self) -> (u64, u64) {
        *self.totals.get_or_init(|| {
            if self.runs.is_empty() {
                return (
                    self.seen.len() as u64,
                    self.repeats.values().map(|n| *n as u64 + 1).sum(),
                );
            }
            self.merge_runs()
        })
    }

    fn merge_runs(&self) -> (u64, u64) {
        use std::cmp::Reverse;
        use std::io::{Read, Seek};
        let mut memory: Vec<u128> = self
            .seen
            .slots
            .iter()
            .copied()
            .filter(|k| *k != 0)
            .collect();
        memory.sort_unstable();
        let mut readers: Vec<std::io::BufReader<&std::fs::File>> = self
            .runs
            .iter()
            .map(|f| {
                let mut f = f;
                let _ = f.rewind();
                std::io::BufReader::with_capacity(1 << 16, f)
            })
            .collect();
        let mut next = |src: usize, mem_at: &mut usize| -> Option<u128> {
            if src == readers.len() {
                let k = memory.get(*mem_at).copied();
                *mem_at += 1;
                return k;
            }
            let mut b = [0u8; 16];
            readers[src]
                .read_exact(&mut b)
                .ok()
                .map(|_| u128::from_le_bytes(b))
        };
        let mut mem_at = 0usize;
        let mut heap = std::collections::BinaryHeap::new();
        for src in 0..=self.runs.len() {
            if let Some(k) = next(src, &mut mem_at) {
                heap.push(Reverse((k, src)));
            }
        }
        let (mut distinct, mut repeated) = (0u64, 0u64);
        while let Some(Reverse((key, src))) = heap.pop() {
            let mut sources = 1u64;
            if let Some(k) = next(src, &mut mem_at) {
                heap.push(Reverse((k, src)));
            }
            while let Some(Reverse((k, s))) = heap.peek().copied() {
                if k != key {
                    break;
                }
                heap.pop();
                sources += 1;
                if let Some(k2) = next(s, &mut mem_at) {
                    heap.push(Reverse((k2, s)));
                }
            }
            distinct += 1;
            let total = sources + self.repeats.get(&key).map_or(0, |n| *n as u64);
            if total > 1 {
                repeated += total;
            }
        }
        (distinct, repeated)
    }

    /// Queues the value of row `i` (in the chunk) by its fingerprint.
    #[inline]
    fn queue(&mut self, i: usize, key: u128) {
        self.pending.push((key, i as u32));
    }

    /// Adds the queued values of a chunk. They are first ordered by the top bits
    /// of their fingerprints (a stable one-pass radix sort, so equal values keep
    /// their row order), which are also their slots in the set: the insertions
    /// then sweep the table in one direction instead of hopping at random, which
    /// is several times faster once the table outgrows the caches.
    fn flush(&mut self) {
        self.chunk_repeats.clear();
        self.seen.reserve(self.pending.len());
        let shift = 128 - Self::ORDER_BITS;
        self.buckets.fill(0);
        for (key, _) in &self.pending {
            self.buckets[(key >> shift) as usize] += 1;
        }
        let mut start = 0u32;
        for b in self.buckets.iter_mut() {
            let n = *b;
            *b = start;
            start += n;
        }
        self.ordered.clear();
        self.ordered.resize(self.pending.len(), (0, 0));
        for &(key, row) in &self.pending {
            let b = &mut self.buckets[(key >> shift) as usize];
            self.ordered[*b as usize] = (key, row);
            *b += 1;
        }
        self.pending.clear();
        for &(key, row) in &self.ordered {
            if !self.seen.insert(key) {
                *self.repeats.entry(key).or_insert(0) += 1;
                self.chunk_repeats.push(row);
            }
        }
        self.chunk_repeats.sort_unstable();
        if self.seen.len() > self.spill_at {
            self.spill();
        }
    }

    /// Adds the non-null values of a chunk's column.
    fn push(&mut self, col: Col<'_>) {
        let fp = self.fp.clone();
        each_key_bytes(col, |i, bytes| self.queue(i, fp.of(bytes)));
        self.flush();
    }

    /// Rows holding a repeated value, every occurrence counted (as GE does).
    fn rows_in_repeats(&self) -> u64 {
        self.totals().1
    }

    /// Distinct values.
    fn distinct_values(&self) -> u64 {
        self.totals().0
    }
}

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
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    const TELCO_SPEC: &str = include_str!("../../../config/datasets/telco-churn.toml");

    fn telco_spec() -> Arc<DatasetSpec> {
        Arc::new(
            DatasetSpec::parse(TELCO_SPEC, "telco-churn.toml")
                .unwrap()
                .spec,
        )
    }

    /// The shipped spec plus every expectation added with severity and GE 1.x names,
    /// with bounds the Telco file meets, and one warning it does not meet.
    const TELCO_EXTRA: &str = r#"
[[expectations]]
expectation = "expect_column_values_to_match_regex"
column = "customerID"
regex = '^\d{4}-[A-Z]{5}$'

[[expectations]]
expectation = "expect_column_value_lengths_to_be_between"
column = "customerID"
min_value = 10
max_value = 10

[[expectations]]
expectation = "expect_column_values_to_be_of_type"
column = "tenure"
type_ = "int64"

[[expectations]]
expectation = "expect_column_distinct_values_to_be_in_set"
column = "Contract"
value_set = ["Month-to-month", "One year", "Two year"]

[[expectations]]
expectation = "expect_column_proportion_of_unique_values_to_be_between"
column = "customerID"
min_value = 1.0
max_value = 1.0

[[expectations]]
expectation = "expect_column_mean_to_be_between"
column = "MonthlyCharges"
min_value = 50
max_value = 80

[[expectations]]
expectation = "expect_column_median_to_be_between"
column = "tenure"
min_value = 20
max_value = 40

[[expectations]]
expectation = "expect_column_stdev_to_be_between"
column = "TotalCharges"
min_value = 1500
max_value = 3000

[[expectations]]
expectation = "expect_column_min_to_be_between"
column = "MonthlyCharges"
min_value = 0
max_value = 30

[[expectations]]
expectation = "expect_column_max_to_be_between"
column = "tenure"
min_value = 60
max_value = 72

[[expectations]]
expectation = "expect_column_pair_values_a_to_be_greater_than_b"
column_A = "TotalCharges"
column_B = "MonthlyCharges"
or_equal = true

[[expectations]]
expectation = "expect_compound_columns_to_be_unique"
column_list = ["customerID", "gender"]

[[expectations]]
expectation = "expect_column_kl_divergence_to_be_less_than"
column = "tenure"
threshold = 0.05
partition_object = { bins = [0, 12, 24, 36, 48, 60, 72], weights = [0.29, 0.15, 0.12, 0.11, 0.12, 0.21] }

[[expectations]]
expectation = "expect_column_kl_divergence_to_be_less_than"
column = "InternetService"
threshold = 0.05
partition_object = { values = ["DSL", "Fiber optic", "No"], weights = [0.34, 0.44, 0.22] }

[[expectations]]
expectation = "expect_column_mean_to_be_between"
column = "tenure"
min_value = 40
max_value = 50
severity = "warning"
"#;

    fn telco_extended_spec() -> Arc<DatasetSpec> {
        let text = TELCO_SPEC.replace("\n[model]", &format!("{TELCO_EXTRA}\n[model]"));
        Arc::new(
            DatasetSpec::parse(&text, "telco-extended.toml")
                .unwrap()
                .spec,
        )
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

    /// The first explicit result of an expectation type.
    fn find<'a>(r: &'a ValidationReport, name: &str) -> &'a ExpectationResult {
        r.results
            .iter()
            .find(|x| x.expectation == name && !x.implied)
            .unwrap_or_else(|| panic!("no result for {name}"))
    }

    #[test]
    fn telco_passes_every_expectation() {
        let r = validate_csv(telco().as_bytes(), telco_spec(), 1000);
        assert!(r.success, "{:#?}", r.reasons());
        assert!(r.warnings().is_empty());
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
        let uniq = find(&r, "expect_column_values_to_be_unique");
        assert_eq!(uniq.result.unexpected_count, 0);
    }

    #[test]
    fn telco_meets_every_new_expectation_and_warns_once() {
        let r = validate_csv(telco().as_bytes(), telco_extended_spec(), 1000);
        assert!(r.success, "{:#?}", r.reasons());
        assert!(r.reasons().is_empty());
        let warnings = r.warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("expect_column_mean_to_be_between on column \"tenure\""),
            "{warnings:?}"
        );
        assert!(
            warnings[0].contains("observed 32.37114865824223, expected >= 40 and <= 50"),
            "{warnings:?}"
        );
        let failing: Vec<_> = failed(&r);
        assert_eq!(failing.len(), 1);
        assert_eq!(failing[0].severity, Severity::Warning);
        assert_eq!(r.statistics.unsuccessful_expectations, 1);

        let mean = |col: &str| {
            r.results
                .iter()
                .find(|x| {
                    x.expectation == "expect_column_mean_to_be_between" && x.kwargs["column"] == col
                })
                .unwrap()
                .result
                .observed_value
                .clone()
                .unwrap()
                .as_f64()
                .unwrap()
        };
        // Reference values computed with Python's statistics module.
        assert!((mean("MonthlyCharges") - 64.76169246059918).abs() < 1e-9);
        assert!((mean("tenure") - 32.37114865824223).abs() < 1e-9);
        let obs = |name: &str| find(&r, name).result.observed_value.clone().unwrap();
        assert_eq!(obs("expect_column_median_to_be_between"), 29.0);
        let sd = obs("expect_column_stdev_to_be_between").as_f64().unwrap();
        assert!((sd - 2266.771361883145).abs() < 1e-6, "{sd}");
        assert_eq!(obs("expect_column_min_to_be_between"), 18.25);
        assert_eq!(obs("expect_column_max_to_be_between"), 72.0);
        assert_eq!(
            obs("expect_column_distinct_values_to_be_in_set"),
            serde_json::json!(["Month-to-month", "One year", "Two year"])
        );
        assert_eq!(
            obs("expect_column_proportion_of_unique_values_to_be_between"),
            1.0
        );
        let pair = find(&r, "expect_column_pair_values_a_to_be_greater_than_b");
        assert_eq!(
            pair.result.missing_count, 11,
            "rows with a null are ignored"
        );
        let kl = obs("expect_column_kl_divergence_to_be_less_than")
            .as_f64()
            .unwrap();
        assert!(kl > 0.0 && kl < 0.01, "{kl}");
    }

    /// A Telco file with a few broken rows, to compare failing results too.
    fn broken_telco() -> String {
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
        // Row 9: a contract outside the set, a lower-case id, monthly above total.
        let mut h: Vec<String> = lines[9].split(',').map(str::to_string).collect();
        h[0] = h[0].to_lowercase();
        h[15] = "Three year".into();
        h[18] = "9999".into();
        lines[9] = h.join(",");
        lines.join("\n")
    }

    #[test]
    fn chunk_size_does_not_change_any_result() {
        for text in [telco(), broken_telco()] {
            let a = validate_csv(text.as_bytes(), telco_extended_spec(), 7);
            let b = validate_csv(text.as_bytes(), telco_extended_spec(), 100_000);
            assert_eq!(a.statistics, b.statistics);
            assert_eq!(a.results.len(), b.results.len());
            for (x, y) in a.results.iter().zip(&b.results) {
                assert_eq!(x, y, "{}", x.expectation);
            }
            assert_eq!(a, b);
        }
        let broken = validate_csv(broken_telco().as_bytes(), telco_extended_spec(), 7);
        let names: Vec<&str> = failed(&broken)
            .iter()
            .map(|r| r.expectation.as_str())
            .collect();
        for n in [
            "expect_column_values_to_match_regex",
            "expect_column_distinct_values_to_be_in_set",
            "expect_column_pair_values_a_to_be_greater_than_b",
            "expect_compound_columns_to_be_unique",
            "expect_column_proportion_of_unique_values_to_be_between",
            "expect_column_values_to_be_of_type",
        ] {
            assert!(names.contains(&n), "{n} should fail: {names:?}");
        }
    }

    #[test]
    fn bad_values_are_reported_with_rows() {
        let r = validate_csv(broken_telco().as_bytes(), telco_spec(), 1000);
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
        let r = find(&bad, "expect_column_values_to_be_between");
        assert_eq!(r.result.unexpected_count, 2);
        assert!((r.result.unexpected_percent - 50.0).abs() < 1e-9);
    }

    // --- Small handmade files, one expectation at a time -----------------------

    const SMALL: &str = r#"name = "d"
entity_column = "id"
[target]
column = "y"
positive = "1"
[[columns]]
name = "id"
type = "string"
[[columns]]
name = "y"
type = "int"
[[columns]]
name = "s"
type = "string"
nullable = true
[[columns]]
name = "n"
type = "int"
nullable = true
[[columns]]
name = "m"
type = "int"
nullable = true
[[columns]]
name = "x"
type = "float"
nullable = true
"#;

    /// s: 5 values (one non-ASCII: 5 characters, 6 bytes), one null.
    /// n > m holds in rows 1 only; rows 4 and 5 have a null on one side.
    const SMALL_CSV: &str = "id,y,s,n,m,x
a,1,AB-12,10,5,1.5
b,0,AB-345,20,25,2.5
c,1,XY-56,30,30,
d,0,,40,,4.0
e,1,ÉB-78,,1,5.0
f,0,AB-90,50,60,0.5
";

    /// Validates with chunks of 2 and of 1000, checks both reports are equal, and
    /// returns one.
    fn run(expectation: &str, csv: &str) -> ValidationReport {
        let text = format!("{SMALL}[[expectations]]\n{expectation}\n");
        let spec = Arc::new(
            DatasetSpec::parse(&text, "small.toml")
                .unwrap_or_else(|e| panic!("{e}"))
                .spec,
        );
        let a = validate_csv(csv.as_bytes(), spec.clone(), 2);
        let b = validate_csv(csv.as_bytes(), spec, 1000);
        assert_eq!(a, b, "chunk size changed the report");
        a
    }

    fn one(expectation: &str, csv: &str) -> ExpectationResult {
        let r = run(expectation, csv);
        let name = expectation
            .split('"')
            .nth(1)
            .expect("expectation = \"...\" first");
        let res = find(&r, name).clone();
        let others_ok = r.results.iter().filter(|x| x.implied).all(|x| x.success);
        assert!(others_ok, "{:?}", r.reasons());
        assert_eq!(r.success, res.success || res.severity == Severity::Warning);
        res
    }

    #[test]
    fn regex_with_mostly() {
        let e = |extra: &str| {
            format!(
                "expectation = \"expect_column_values_to_match_regex\"\ncolumn = \"s\"\nregex = '^AB-\\d+$'\n{extra}"
            )
        };
        let r = one(&e(""), SMALL_CSV);
        assert!(!r.success);
        assert_eq!(r.result.unexpected_count, 2);
        assert_eq!(r.result.missing_count, 1);
        assert_eq!(r.result.element_count, 6);
        assert!((r.result.unexpected_percent - 40.0).abs() < 1e-9);
        assert_eq!(r.result.partial_unexpected_list[0].row, 3);
        assert_eq!(r.result.partial_unexpected_list[0].value, "XY-56");
        assert_eq!(r.result.partial_unexpected_list[1].value, "ÉB-78");
        assert!(one(&e("mostly = 0.6"), SMALL_CSV).success);
        assert!(!one(&e("mostly = 0.7"), SMALL_CSV).success);
        // Searched anywhere, like GE (re.search).
        let anywhere = "expectation = \"expect_column_values_to_match_regex\"\ncolumn = \"s\"\nregex = '\\d\\d'\n";
        assert!(one(anywhere, SMALL_CSV).success);
    }

    #[test]
    fn value_lengths_count_characters_with_mostly() {
        let e = |extra: &str| {
            format!(
                "expectation = \"expect_column_value_lengths_to_be_between\"\ncolumn = \"s\"\nmin_value = 5\nmax_value = 5\n{extra}"
            )
        };
        let r = one(&e(""), SMALL_CSV);
        assert!(!r.success);
        // "ÉB-78" is 6 bytes but 5 characters: only "AB-345" fails.
        assert_eq!(r.result.unexpected_count, 1);
        assert_eq!(r.result.partial_unexpected_list[0].row, 2);
        assert_eq!(r.result.partial_unexpected_list[0].value, "AB-345");
        assert!(one(&e("mostly = 0.8"), SMALL_CSV).success);
        assert!(!one(&e("mostly = 0.81"), SMALL_CSV).success);
        let min_only = "expectation = \"expect_column_value_lengths_to_be_between\"\ncolumn = \"s\"\nmin_value = 6\n";
        let r = one(min_only, SMALL_CSV);
        assert_eq!(r.result.unexpected_count, 4);
    }

    #[test]
    fn explicit_of_type_with_mostly() {
        let e = |extra: &str| {
            format!(
                "expectation = \"expect_column_values_to_be_of_type\"\ncolumn = \"n\"\ntype_ = \"int64\"\n{extra}"
            )
        };
        assert!(one(&e(""), SMALL_CSV).success);
        let bad = SMALL_CSV.replace("b,0,AB-345,20,", "b,0,AB-345,twenty,");
        let r = run(&e("severity = \"warning\""), &bad);
        let explicit = find(&r, "expect_column_values_to_be_of_type");
        assert!(!explicit.success);
        assert_eq!(explicit.result.unexpected_count, 1);
        assert_eq!(explicit.result.partial_unexpected_list[0].value, "twenty");
        assert_eq!(explicit.result.partial_unexpected_list[0].row, 2);
        // The implied check (severity error) still rejects the batch.
        assert!(!r.success);
        assert_eq!(r.warnings().len(), 1);
        let r = run(&e("mostly = 0.8"), &bad);
        assert!(find(&r, "expect_column_values_to_be_of_type").success);
    }

    #[test]
    fn distinct_values_in_set() {
        let r = one(
            "expectation = \"expect_column_distinct_values_to_be_in_set\"\ncolumn = \"s\"\nvalue_set = [\"AB-12\", \"AB-345\", \"XY-56\", \"ÉB-78\", \"AB-90\", \"unused\"]",
            SMALL_CSV,
        );
        assert!(r.success);
        assert_eq!(
            r.result.observed_value,
            Some(serde_json::json!([
                "AB-12", "AB-345", "AB-90", "XY-56", "ÉB-78"
            ]))
        );
        let r = one(
            "expectation = \"expect_column_distinct_values_to_be_in_set\"\ncolumn = \"s\"\nvalue_set = [\"AB-12\", \"AB-345\", \"ÉB-78\", \"AB-90\"]",
            SMALL_CSV,
        );
        assert!(!r.success);
        assert_eq!(r.result.unexpected_count, 1);
        assert_eq!(r.result.partial_unexpected_list[0].row, 3);
        let observed = r.result.observed_value.unwrap();
        assert!(observed.as_array().unwrap().contains(&"XY-56".into()));
        let r = one(
            "expectation = \"expect_column_distinct_values_to_be_in_set\"\ncolumn = \"n\"\nvalue_set = [10, 20, 30, 40]",
            SMALL_CSV,
        );
        assert!(!r.success);
        assert_eq!(
            r.result.observed_value,
            Some(serde_json::json!([10, 20, 30, 40, 50]))
        );
    }

    #[test]
    fn distinct_values_outside_the_set_are_capped() {
        let mut csv = String::from("id,y,s,n,m,x\n");
        for i in 0..(DISTINCT_OUTSIDE_CAP + 500) {
            csv.push_str(&format!("r{i},0,v{i},{i},,\n"));
        }
        let r = one(
            "expectation = \"expect_column_distinct_values_to_be_in_set\"\ncolumn = \"n\"\nvalue_set = [0]",
            &csv,
        );
        assert!(!r.success);
        assert_eq!(r.result.unexpected_count, DISTINCT_OUTSIDE_CAP as u64 + 499);
        let listed = r.result.observed_value.unwrap().as_array().unwrap().len();
        assert_eq!(listed, DISTINCT_OUTSIDE_CAP + 1);
        assert!(r.result.details.unwrap().contains("more than"));
    }

    #[test]
    fn proportion_of_unique_values() {
        let e = |lo: f64, hi: f64| {
            format!(
                "expectation = \"expect_column_proportion_of_unique_values_to_be_between\"\ncolumn = \"y\"\nmin_value = {lo:?}\nmax_value = {hi:?}"
            )
        };
        let r = one(&e(0.3, 0.4), SMALL_CSV);
        assert!(r.success);
        assert_eq!(r.result.observed_value, Some((2.0 / 6.0).into()));
        assert!(!one(&e(0.5, 1.0), SMALL_CSV).success);
        // Nulls are left out: s has 5 distinct values among 5 non-null ones.
        let r = one(
            "expectation = \"expect_column_proportion_of_unique_values_to_be_between\"\ncolumn = \"s\"\nmin_value = 1.0",
            SMALL_CSV,
        );
        assert!(r.success);
        let strict = one(
            "expectation = \"expect_column_proportion_of_unique_values_to_be_between\"\ncolumn = \"s\"\nmax_value = 1.0\nstrict_max = true",
            SMALL_CSV,
        );
        assert!(!strict.success);
    }

    fn stat(name: &str, column: &str, bounds: &str) -> ExpectationResult {
        one(
            &format!("expectation = \"{name}\"\ncolumn = \"{column}\"\n{bounds}"),
            SMALL_CSV,
        )
    }

    #[test]
    fn column_statistics() {
        // x: 1.5, 2.5, null, 4.0, 5.0, 0.5.
        let mean = stat(
            "expect_column_mean_to_be_between",
            "x",
            "min_value = 2.6\nmax_value = 2.8",
        );
        assert!(mean.success);
        assert!((mean.result.observed_value.unwrap().as_f64().unwrap() - 2.7).abs() < 1e-12);
        assert_eq!(mean.result.missing_count, 1);
        assert!(!stat("expect_column_mean_to_be_between", "x", "min_value = 2.8").success);

        let median = stat(
            "expect_column_median_to_be_between",
            "x",
            "min_value = 2.5\nmax_value = 2.5",
        );
        assert!(median.success);
        assert_eq!(median.result.observed_value, Some(2.5.into()));
        assert!(median.result.details.is_none(), "exact");
        assert!(
            !stat(
                "expect_column_median_to_be_between",
                "x",
                "min_value = 2.5\nstrict_min = true"
            )
            .success
        );
        // Even count: the mean of the two middle values, like pandas.
        let even = stat("expect_column_median_to_be_between", "y", "min_value = 0");
        assert_eq!(even.result.observed_value, Some(0.5.into()));

        let sd = stat(
            "expect_column_stdev_to_be_between",
            "x",
            "min_value = 1.8\nmax_value = 1.85",
        );
        assert!(sd.success);
        let expected = (13.3f64 / 4.0).sqrt();
        assert!((sd.result.observed_value.unwrap().as_f64().unwrap() - expected).abs() < 1e-12);
        assert!(!stat("expect_column_stdev_to_be_between", "x", "max_value = 1.5").success);

        let min = stat(
            "expect_column_min_to_be_between",
            "x",
            "min_value = 0.5\nmax_value = 1",
        );
        assert!(min.success);
        assert_eq!(min.result.observed_value, Some(0.5.into()));
        assert!(
            !stat(
                "expect_column_min_to_be_between",
                "x",
                "min_value = 0.5\nstrict_min = true"
            )
            .success
        );

        let max = stat("expect_column_max_to_be_between", "n", "max_value = 50");
        assert!(max.success);
        assert_eq!(max.result.observed_value, Some(50.0.into()));
        let strict = stat(
            "expect_column_max_to_be_between",
            "n",
            "max_value = 50\nstrict_max = true",
        );
        assert!(!strict.success);
        assert!(
            strict.reason().contains("observed 50, expected < 50"),
            "{}",
            strict.reason()
        );
    }

    #[test]
    fn statistics_of_an_empty_column_fail_with_details() {
        let csv = "id,y,s,n,m,x\na,1,,,,\nb,0,,,,\n";
        for name in [
            "expect_column_mean_to_be_between",
            "expect_column_median_to_be_between",
            "expect_column_stdev_to_be_between",
            "expect_column_min_to_be_between",
            "expect_column_max_to_be_between",
        ] {
            let r = one(
                &format!("expectation = \"{name}\"\ncolumn = \"x\"\nmin_value = 0"),
                csv,
            );
            assert!(!r.success, "{name}");
            assert!(r.result.details.unwrap().contains("not computable"));
        }
    }

    #[test]
    fn pair_a_greater_than_b() {
        // n > m: row 1 passes; rows 2, 3 (equal), 6 fail; rows 4 and 5 have a null.
        let e = |extra: &str| {
            format!(
                "expectation = \"expect_column_pair_values_a_to_be_greater_than_b\"\ncolumn_A = \"n\"\ncolumn_B = \"m\"\n{extra}"
            )
        };
        let r = one(&e(""), SMALL_CSV);
        assert!(!r.success);
        assert_eq!(r.result.element_count, 6);
        assert_eq!(r.result.missing_count, 2);
        assert_eq!(r.result.unexpected_count, 3);
        assert_eq!(
            r.result
                .partial_unexpected_list
                .iter()
                .map(|u| u.row)
                .collect::<Vec<_>>(),
            vec![2, 3, 6]
        );
        assert_eq!(
            r.result.partial_unexpected_list[0].value,
            serde_json::json!([20, 25])
        );
        let r = one(&e("or_equal = true"), SMALL_CSV);
        assert_eq!(r.result.unexpected_count, 2);
        assert!(!r.success);
        assert!(one(&e("or_equal = true\nmostly = 0.5"), SMALL_CSV).success);
        assert!(!one(&e("mostly = 0.5"), SMALL_CSV).success);
        // Int against float.
        let r = one(
            "expectation = \"expect_column_pair_values_a_to_be_greater_than_b\"\ncolumn_A = \"n\"\ncolumn_B = \"x\"",
            SMALL_CSV,
        );
        assert!(r.success);
        assert_eq!(r.result.missing_count, 2);
    }

    #[test]
    fn compound_columns_unique() {
        let e = |extra: &str| {
            format!(
                "expectation = \"expect_compound_columns_to_be_unique\"\ncolumn_list = [\"y\", \"s\"]\n{extra}"
            )
        };
        assert!(one(&e(""), SMALL_CSV).success);
        // Rows 2 and 5 repeat rows 1 and 3's (y, s); rows 7 and 8 are both (0, null);
        // row 9 is all null and ignored.
        let csv = "id,y,s,n,m,x
a,1,AB,,,
b,0,CD,,,
c,1,AB,,,
d,1,CD,,,
e,0,CD,,,
f,0,EF,,,
g,0,,,,
h,0,,,,
";
        let r = one(&e(""), csv);
        assert!(!r.success);
        assert_eq!(r.result.unexpected_count, 6);
        assert_eq!(r.result.missing_count, 0);
        assert_eq!(
            r.result.observed_value,
            Some(serde_json::json!({ "distinct_values": 5 }))
        );
        assert_eq!(r.result.partial_unexpected_list[0].row, 3);
        assert_eq!(
            r.result.partial_unexpected_list[0].value,
            serde_json::json!([1, "AB"])
        );
        assert!(one(&e("mostly = 0.25"), csv).success);
        assert!(!one(&e("mostly = 0.3"), csv).success);
        let r = one(
            "expectation = \"expect_compound_columns_to_be_unique\"\ncolumn_list = [\"s\", \"n\"]",
            csv,
        );
        assert_eq!(r.result.missing_count, 2, "rows where every column is null");
    }

    #[test]
    fn kl_divergence_numeric() {
        let e = |po: &str, threshold: f64| {
            format!(
                "expectation = \"expect_column_kl_divergence_to_be_less_than\"\ncolumn = \"x\"\nthreshold = {threshold:?}\npartition_object = {po}"
            )
        };
        // x: [0,2): 1.5, 0.5; [2,4): 2.5; [4,6]: 4.0, 5.0.
        let same = one(
            &e("{ bins = [0, 2, 4, 6], weights = [0.4, 0.2, 0.4] }", 0.001),
            SMALL_CSV,
        );
        assert!(same.success);
        // Identical distributions: only the ε of the two empty tails remains.
        let kl = same.result.observed_value.unwrap().as_f64().unwrap();
        assert!((kl - (1.0 + 2.0 * KL_EPSILON).ln()).abs() < 1e-12, "{kl}");
        let far = one(
            &e("{ bins = [0, 2, 4, 6], weights = [0.1, 0.8, 0.1] }", 0.1),
            SMALL_CSV,
        );
        assert!(!far.success);
        assert!(
            far.reason().contains(", expected at most 0.1"),
            "{}",
            far.reason()
        );
        let expected = 0.4 * (4.0f64).ln() + 0.2 * (0.25f64).ln() + 0.4 * (4.0f64).ln();
        let kl = far.result.observed_value.unwrap().as_f64().unwrap();
        assert!((kl - expected).abs() < 1e-4, "{kl} vs {expected}");
        // 5.0 falls above the last edge, where the reference has no weight: ε.
        let tail = one(
            &e("{ bins = [0, 2, 4], weights = [0.5, 0.5] }", 100.0),
            SMALL_CSV,
        );
        let eps = KL_EPSILON;
        let z = 1.0 + 2.0 * eps;
        let q = [eps / z, 0.5 / z, 0.5 / z, eps / z];
        let p = [0.0, 0.4, 0.4, 0.2];
        let expected: f64 = p
            .iter()
            .zip(q)
            .filter(|(p, _)| **p > 0.0)
            .map(|(p, q)| p * (p / q).ln())
            .sum();
        let kl = tail.result.observed_value.unwrap().as_f64().unwrap();
        assert!((kl - expected).abs() < 1e-12, "{kl} vs {expected}");
        assert!(tail.result.details.unwrap().contains("1 of 5 values"));
        assert!(tail.success);
        // Tail weights make the same observation likely.
        let with_tails = one(
            &e(
                "{ bins = [0, 2, 4], weights = [0.4, 0.4], tail_weights = [0.0, 0.2] }",
                0.001,
            ),
            SMALL_CSV,
        );
        assert!(with_tails.success, "{:?}", with_tails.result);
    }

    #[test]
    fn kl_divergence_categorical() {
        let e = |weights: &str, threshold: f64| {
            format!(
                "expectation = \"expect_column_kl_divergence_to_be_less_than\"\ncolumn = \"s\"\nthreshold = {threshold:?}\npartition_object = {{ values = [\"AB-12\", \"AB-345\", \"XY-56\", \"ÉB-78\", \"AB-90\"], weights = {weights} }}"
            )
        };
        let r = one(&e("[1, 1, 1, 1, 1]", 1e-5), SMALL_CSV);
        assert!(r.success, "{:?}", r.result);
        // Identical distributions: only the ε of the empty "other" bucket remains.
        let kl = r.result.observed_value.unwrap().as_f64().unwrap();
        assert!((kl - (1.0 + KL_EPSILON).ln()).abs() < 1e-12, "{kl}");
        let r = one(&e("[0.6, 0.1, 0.1, 0.1, 0.1]", 0.1), SMALL_CSV);
        assert!(!r.success);
        let expected = 0.2 * (0.2f64 / 0.6).ln() + 0.8 * (0.2f64 / 0.1).ln();
        let kl = r.result.observed_value.unwrap().as_f64().unwrap();
        assert!((kl - expected).abs() < 1e-4, "{kl} vs {expected}");
        // A value that is not a category of the reference goes to "other" (ε).
        let r = one(
            "expectation = \"expect_column_kl_divergence_to_be_less_than\"\ncolumn = \"s\"\nthreshold = 1.0\npartition_object = { values = [\"AB-12\", \"AB-345\", \"ÉB-78\", \"AB-90\"], weights = [1, 1, 1, 1] }",
            SMALL_CSV,
        );
        assert!(!r.success, "{:?}", r.result);
        assert!(
            r.result
                .details
                .unwrap()
                .contains("outside the reference values")
        );
    }

    #[test]
    fn warning_severity_reports_without_failing_the_batch() {
        let e = |severity: &str| {
            format!(
                "expectation = \"expect_column_values_to_be_in_set\"\ncolumn = \"s\"\nvalue_set = [\"AB-12\"]\n{severity}"
            )
        };
        let warn = run(&e("severity = \"warning\""), SMALL_CSV);
        assert!(warn.success);
        assert!(warn.reasons().is_empty(), "{:?}", warn.reasons());
        let w = warn.warnings();
        assert_eq!(w.len(), 1);
        assert!(
            w[0].starts_with("expect_column_values_to_be_in_set on column \"s\" failed: 4 of 5"),
            "{w:?}"
        );
        let r = find(&warn, "expect_column_values_to_be_in_set");
        assert_eq!(r.severity, Severity::Warning);
        assert!(!r.success);
        assert_eq!(warn.statistics.unsuccessful_expectations, 1);
        let json = serde_json::to_value(&warn).unwrap();
        assert_eq!(
            json["results"].as_array().unwrap().last().unwrap()["severity"],
            "warning"
        );

        let err = run(&e(""), SMALL_CSV);
        assert!(!err.success);
        assert_eq!(err.reasons().len(), 1);
        assert!(err.warnings().is_empty());
        let err = run(&e("severity = \"error\""), SMALL_CSV);
        assert!(!err.success);
    }

    #[test]
    fn old_reports_still_deserialize() {
        let r = run(
            "expectation = \"expect_column_values_to_not_be_null\"\ncolumn = \"s\"",
            SMALL_CSV,
        );
        let mut json = serde_json::to_value(&r).unwrap();
        let o = json.as_object_mut().unwrap();
        o.remove("batch_sha256");
        o.remove("spec_digest");
        for res in o["results"].as_array_mut().unwrap() {
            res.as_object_mut().unwrap().remove("severity");
        }
        let back: ValidationReport = serde_json::from_value(json).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn a_spec_that_skipped_the_parser_fails_instead_of_passing() {
        let mut spec = DatasetSpec::parse(SMALL, "t").unwrap().spec;
        spec.expectations.push(Expectation::MatchRegex {
            column: "s".into(),
            regex: "(".into(),
            mostly: None,
            severity: Severity::Error,
        });
        spec.expectations.push(Expectation::NotNull {
            column: "ghost".into(),
            mostly: None,
            severity: Severity::Error,
        });
        let r = validate_csv(SMALL_CSV.as_bytes(), Arc::new(spec), 10);
        assert!(!r.success);
        let reasons = r.reasons().join("\n");
        assert!(reasons.contains("does not compile"), "{reasons}");
        assert!(reasons.contains("ghost"), "{reasons}");
    }

    #[test]
    fn fingerprint_set_matches_a_hash_set() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut set = FpSet::new();
        let mut reference = HashSet::new();
        let mut keys: Vec<u128> = (0..50_000).map(|_| rng.random::<u128>()).collect();
        // Repeats, the empty marker, and keys sharing their top bits (same home slot).
        keys.extend_from_within(..1000);
        keys.extend([0, 1, 0, u128::MAX, u128::MAX - 1, 1 << 127, (1 << 127) | 5]);
        for k in keys {
            assert_eq!(set.insert(k), reference.insert(k.max(1)), "{k}");
        }
        assert_eq!(set.len(), reference.len());
        assert!(set.slots.len() * 5 >= set.len() * 8);

        // Ordered batches give the same answers, rows of repeats ascending.
        let mut d = Distinct::new();
        let mut seen = HashSet::new();
        for chunk in 0..5u32 {
            let mut expected = Vec::new();
            for row in 0..3000u32 {
                let key = ((rng.random::<u32>() % 8000) as u128)
                    .wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835);
                d.queue(row as usize, key);
                if !seen.insert(key) {
                    expected.push(row);
                }
            }
            d.flush();
            assert_eq!(d.chunk_repeats, expected, "chunk {chunk}");
        }
        assert_eq!(d.seen.len(), seen.len());
    }

    /// Past its memory budget the set spills sorted runs to disk; the merged
    /// totals equal an exact count, repeats across runs included.
    #[test]
    fn spilled_fingerprints_merge_to_exact_totals() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let mut d = Distinct::new();
        d.spill_at = 500;
        let mut counts: HashMap<u128, u64> = HashMap::new();
        for _chunk in 0..20 {
            for row in 0..1000u32 {
                // ~6000 distinct values over 20000 rows: plenty of repeats, across runs too.
                let key = ((rng.random::<u32>() % 6000) as u128 + 1)
                    .wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835);
                d.queue(row as usize, key);
                *counts.entry(key.max(1)).or_default() += 1;
            }
            d.flush();
        }
        assert!(d.runs.len() > 5, "spilled {} runs", d.runs.len());
        let repeated: u64 = counts.values().filter(|n| **n > 1).sum();
        assert_eq!(d.distinct_values(), counts.len() as u64);
        assert_eq!(d.rows_in_repeats(), repeated);
        assert!(
            d.seen.len() <= 1001,
            "memory stays bounded: {}",
            d.seen.len()
        );
    }

    // --- Median ------------------------------------------------------------

    /// (values strictly below v, values at or below v).
    fn rank_range(values: &[f64], v: f64) -> (u64, u64) {
        let below = values.iter().filter(|x| **x < v).count() as u64;
        let at_or_below = values.iter().filter(|x| **x <= v).count() as u64;
        (below, at_or_below)
    }

    /// Whether v can be given a rank within ±e of `target` among `values`.
    fn within(values: &[f64], v: f64, target: u64, e: u64) -> bool {
        let (below, at_or_below) = rank_range(values, v);
        below < target + e && at_or_below + e >= target
    }

    #[test]
    fn approximate_median_stays_within_its_documented_error() {
        let n = 2_000_000usize;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let random: Vec<f64> = (0..n)
            .map(|_| rng.random::<f64>() * 1000.0 - 100.0)
            .collect();
        let mut ascending = random.clone();
        ascending.sort_by(f64::total_cmp);
        let mut descending = ascending.clone();
        descending.reverse();
        let ties: Vec<f64> = (0..n).map(|i| ((i * 7919) % 13) as f64).collect();
        let bound = |n: usize| {
            let levels = (n as f64 / SKETCH_K as f64).log2().ceil().max(1.0);
            (n as f64 * levels / SKETCH_K as f64).ceil() as u64
        };
        for (what, values) in [
            ("random", &random),
            ("ascending", &ascending),
            ("descending", &descending),
            ("ties", &ties),
        ] {
            let mut acc = MedianAcc::new(EXACT_MEDIAN_LIMIT);
            for x in values.iter() {
                acc.add(*x);
            }
            let retained = acc.sketch.as_ref().map(|s| s.retained()).unwrap();
            assert!(
                retained <= SKETCH_K * (1 + (n / SKETCH_K).ilog2() as usize + 1),
                "{what}: {retained} values retained"
            );
            let e = acc.sketch.as_ref().unwrap().error_bound();
            assert!(
                e <= bound(n),
                "{what}: bound {e} above documented {}",
                bound(n)
            );
            assert!(e > 0 && e < n as u64 / 1000, "{what}: {e}");
            let (m, details) = acc.finish();
            let m = m.unwrap();
            let details = details.unwrap();
            assert!(details.contains("approximate") && details.contains(&format!("±{e}")));
            assert!(
                within(values, m, n.div_ceil(2) as u64, e),
                "{what}: median {m} has ranks {:?}, wanted {} ± {e}",
                rank_range(values, m),
                n / 2
            );
        }
    }

    #[test]
    fn small_sketches_keep_their_bound_through_many_levels() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let values: Vec<f64> = (0..100_000).map(|_| rng.random::<f64>()).collect();
        let mut s = QuantileSketch::new(64);
        for x in &values {
            s.insert(*x);
        }
        assert_eq!(s.count(), 100_000);
        assert!(s.retained() <= 64 * 12, "{}", s.retained());
        let e = s.error_bound();
        for q in [1u64, 10_000, 50_000, 99_000, 100_000] {
            let v = s.value_at_rank(q).unwrap();
            assert!(within(&values, v, q, e), "rank {q}: {v} ± {e}");
        }
        let m = s.median().unwrap();
        assert!(within(&values, m, 50_000, e));
        assert!(QuantileSketch::new(8).median().is_none());
    }

    #[test]
    fn median_switches_to_the_sketch_past_the_exact_limit() {
        let text = format!(
            "{SMALL}[[expectations]]\nexpectation = \"expect_column_median_to_be_between\"\ncolumn = \"n\"\nmin_value = 0\n"
        );
        let spec = Arc::new(DatasetSpec::parse(&text, "t").unwrap().spec);
        let mut csv = String::from("id,y,s,n,m,x\n");
        for i in 0..1001 {
            csv.push_str(&format!("r{i},0,,{},,\n", (i * 37) % 1001));
        }
        let report = |limit: usize, chunk: usize| {
            let mut v = Validator::with_median_limit(spec.clone(), limit);
            let mut reader = CsvChunks::new(csv.as_bytes(), spec.clone(), chunk).unwrap();
            while let Some(c) = reader.next_chunk().unwrap() {
                v.push(&c);
            }
            v.finish(reader.header().to_vec(), None)
        };
        let exact = report(EXACT_MEDIAN_LIMIT, 100);
        let r = find(&exact, "expect_column_median_to_be_between");
        assert_eq!(r.result.observed_value, Some(500.0.into()));
        assert!(r.result.details.is_none());
        let approx = report(100, 100);
        assert_eq!(approx, report(100, 7));
        let r = find(&approx, "expect_column_median_to_be_between");
        assert!(r.success);
        assert!(
            r.result
                .details
                .as_deref()
                .unwrap()
                .contains("approximate median"),
            "{:?}",
            r.result
        );
        // With 1001 values and buffers of 32768 nothing was compacted yet: exact.
        assert_eq!(r.result.observed_value, Some(500.0.into()));
    }
}
