//! What validation runs for an expectation: a [`Plan`], usually an
//! [`Accumulator`] folded over every chunk, with the counts every check keeps
//! ([`Tally`]) and the result it ends with ([`Outcome`]).

use crate::schema::{BadCell, ColumnType, SAMPLE};

use super::columns::Col;
use super::distinct::Distinct;
use super::report::{ResultDetail, Unexpected};

/// How validation evaluates an expectation.
pub(crate) enum Plan {
    /// Folded over every chunk, then finished.
    Rows(Box<dyn Accumulator>),
    /// Decided by the header alone, before any row is read.
    Header(HeaderTest),
    /// Cannot run (a spec that did not go through the parser): why.
    Invalid(String),
}

/// Whether a header (the file's column names) passes.
pub(crate) type HeaderTest = Box<dyn Fn(&[String]) -> bool + Send>;

/// What a plan is made against: the spec's columns, in declaration order.
pub(crate) struct PlanContext<'a> {
    columns: Vec<(&'a str, ColumnType)>,
    /// Non-null values the median keeps for an exact answer.
    pub median_limit: usize,
}

impl<'a> PlanContext<'a> {
    /// The context of these columns (name, type).
    pub fn new(columns: Vec<(&'a str, ColumnType)>, median_limit: usize) -> Self {
        Self {
            columns,
            median_limit,
        }
    }

    /// Position of a declared column.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|(n, _)| *n == name)
    }

    /// Type of a declared column (String when not declared: the parser
    /// refused such a spec already).
    pub fn type_of(&self, name: &str) -> ColumnType {
        self.index(name)
            .map(|i| self.columns[i].1)
            .unwrap_or(ColumnType::String)
    }
}

/// One chunk as the accumulators see it.
pub(crate) struct ChunkColumns<'a> {
    /// Every declared column, downcast.
    pub cols: &'a [Col<'a>],
    /// Data row number (1-based) of the first row.
    pub first: u64,
    /// Rows in the chunk.
    pub n: usize,
    /// Per column: cells that failed to parse, counted and sampled.
    pub bad_cells: &'a [(u64, Vec<BadCell>)],
    /// Per column: the shared distinct-value fingerprints, when a check reads them.
    pub distinct: &'a [Option<Distinct>],
}

impl<'a> ChunkColumns<'a> {
    /// Nulls of column `ci` that are missing in the file (cells that failed
    /// to parse are null in Arrow but present in the file).
    pub fn missing(&self, ci: usize) -> u64 {
        self.cols[ci]
            .null_count()
            .saturating_sub(self.bad_cells[ci].0)
    }
}

/// An expectation's state over the chunks.
pub(crate) trait Accumulator: Send {
    /// The column whose shared distinct-value fingerprints it reads, if any:
    /// they are built once per column for every check that reads them.
    fn shared_distinct(&self) -> Option<usize> {
        None
    }

    /// Folds one chunk in (its rows are already counted in `tally`).
    fn update(&mut self, chunk: &ChunkColumns<'_>, tally: &mut Tally);

    /// Fills in the result from what was folded; whether it passed.
    fn finish(self: Box<Self>, out: &mut Outcome<'_>) -> bool;
}

/// Counts of a check.
#[derive(Default)]
pub(crate) struct Tally {
    /// Rows seen.
    pub element_count: u64,
    /// Values (or rows) not considered.
    pub missing: u64,
    /// Values that failed.
    pub unexpected: u64,
    /// The first failing values with their rows.
    pub sample: Vec<Unexpected>,
}

impl Tally {
    /// Counts a failing value, and samples it while the sample has room.
    #[inline]
    pub fn flag(&mut self, row: u64, value: impl FnOnce() -> serde_json::Value) {
        self.unexpected += 1;
        self.sample_only(row, value);
    }

    /// Samples a failing value while the sample has room, without counting it.
    #[inline]
    pub fn sample_only(&mut self, row: u64, value: impl FnOnce() -> serde_json::Value) {
        if self.sample.len() < SAMPLE {
            self.sample.push(Unexpected {
                row,
                value: value(),
            });
        }
    }

    /// Whether the sample is full.
    #[inline]
    pub fn sample_full(&self) -> bool {
        self.sample.len() >= SAMPLE
    }
}

/// A check being finished: its result so far (the tally's counts) and what
/// a result may depend on.
pub(crate) struct Outcome<'a> {
    /// The result member, filled from the tally; the accumulator completes it.
    pub detail: ResultDetail,
    /// Rows considered (every row seen, less the missing ones).
    pub non_null: u64,
    /// Rows of the batch.
    pub rows: u64,
    /// GE `mostly` (1.0 when not applicable).
    pub mostly: f64,
    /// The shared distinct-value fingerprints it asked for.
    pub distinct: Option<&'a Distinct>,
}

impl Outcome<'_> {
    /// The result of a column-map expectation: `unexpected` of `denominator`
    /// values failed; it passes when the passing share is at least `mostly`.
    pub fn map_success(&mut self, unexpected: u64, denominator: u64) -> bool {
        self.detail.unexpected_count = unexpected;
        self.detail.unexpected_percent = pct(unexpected, denominator);
        let pass_ratio = if denominator == 0 {
            1.0
        } else {
            1.0 - unexpected as f64 / denominator as f64
        };
        pass_ratio + 1e-12 >= self.mostly
    }

    /// The usual column-map result: the flagged values of the considered ones.
    pub fn column_map(&mut self) -> bool {
        self.map_success(self.detail.unexpected_count, self.non_null)
    }
}

/// `part` of `whole` in percent (0 of nothing).
pub(crate) fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}
