//! The expectations, one home each: a type whose fields are its arguments
//! (Great Expectations 1.x names), declared with `arguments!` so that the
//! header every expectation shares (`bounds`, `mostly`, `severity`) is written
//! once, and whose `Check` implementation holds the rest: its parse-time
//! checks against the spec's columns, its accumulator over chunks and the
//! result it makes, and its mapping from a GE suite.
//!
//! Families, one file each: [`column_map`] (a predicate per value, with
//! `mostly`), [`uniqueness`], [`statistics`] (an aggregate within bounds),
//! [`distribution`] (distinct values and KL divergence), [`pair`] (two columns)
//! and [`table`] (row count, header).
//!
//! The list in this file is the one place an expectation is registered: it
//! makes [`Expectation`] (the spec's tagged enum, one variant per type), its
//! GE names and the dispatch of every step to the type's `Check`.
//!
//! # Adding an expectation
//!
//! In its family's file (or a new one): declare its arguments with
//! `arguments!`, implement `Check` for it (at least `plan`, usually with an
//! `Accumulator` of its own, and `from_ge`; the other steps have defaults),
//! and add its line `Type = "GE name",` to the list below. Nothing else names
//! it: the spec parser, validation and the GE import reach it through the
//! list.
//!
//! Layers: this module builds on `schema` and on the building blocks of
//! `validate` (report, typed columns, value sets, accumulators) and of
//! `ge_import` (reading GE arguments); `spec` is built on it.

use serde::{Deserialize, Serialize};

use crate::ge_import::kwargs::Kwargs;
use crate::schema::{ColumnType, Scalar, scalar_fits};
use crate::validate::accumulator::{Plan, PlanContext};
pub use crate::validate::report::Severity;

#[macro_use]
mod macros;
pub mod column_map;
pub mod distribution;
pub mod pair;
pub mod statistics;
pub mod table;
pub mod uniqueness;

pub use column_map::*;
pub use distribution::*;
pub use pair::*;
pub use statistics::*;
pub use table::*;
pub use uniqueness::*;

registry! {
    NotNull = "expect_column_values_to_not_be_null",
    InSet = "expect_column_values_to_be_in_set",
    Between = "expect_column_values_to_be_between",
    Unique = "expect_column_values_to_be_unique",
    RowCount = "expect_table_row_count_to_be_between",
    ColumnsMatchSet = "expect_table_columns_to_match_set",
    MatchRegex = "expect_column_values_to_match_regex",
    ValueLengthsBetween = "expect_column_value_lengths_to_be_between",
    OfType = "expect_column_values_to_be_of_type",
    DistinctValuesInSet = "expect_column_distinct_values_to_be_in_set",
    ProportionOfUniqueBetween = "expect_column_proportion_of_unique_values_to_be_between",
    MeanBetween = "expect_column_mean_to_be_between",
    MedianBetween = "expect_column_median_to_be_between",
    StdevBetween = "expect_column_stdev_to_be_between",
    MinBetween = "expect_column_min_to_be_between",
    MaxBetween = "expect_column_max_to_be_between",
    PairAGreaterThanB = "expect_column_pair_values_a_to_be_greater_than_b",
    CompoundColumnsUnique = "expect_compound_columns_to_be_unique",
    KlDivergenceLessThan = "expect_column_kl_divergence_to_be_less_than",
}

/// Which argument of an expectation names a column (for error paths).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnArg {
    /// `column`.
    Column,
    /// `column_A`.
    ColumnA,
    /// `column_B`.
    ColumnB,
    /// `column_list[i]`.
    ColumnList(usize),
}

impl ColumnArg {
    /// The argument as written in a spec, e.g. `column_list[1]`.
    pub fn key(&self) -> String {
        match self {
            ColumnArg::Column => "column".into(),
            ColumnArg::ColumnA => "column_A".into(),
            ColumnArg::ColumnB => "column_B".into(),
            ColumnArg::ColumnList(i) => format!("column_list[{i}]"),
        }
    }

    /// The argument as a path inside the expectation, to locate it in a spec.
    fn path(&self) -> Vec<PathPart> {
        match self {
            ColumnArg::ColumnList(i) => {
                vec![PathPart::Key("column_list".into()), PathPart::Index(*i)]
            }
            other => vec![PathPart::Key(other.key())],
        }
    }
}

/// The arguments every expectation shares, as `arguments!` declares them:
/// read once by the spec parser's and the GE import's checks and by validation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Header<'a> {
    /// `column`, for the expectations about one column.
    pub column: Option<&'a str>,
    /// `(min_value, max_value)`, for the expectations with bounds.
    pub bounds: Option<(Option<f64>, Option<f64>)>,
    /// GE `mostly`, when the expectation takes it and it is set.
    pub mostly: Option<f64>,
    /// Whether a failure rejects the batch.
    pub severity: Severity,
}

impl Header<'_> {
    fn new(severity: Severity) -> Self {
        Self {
            column: None,
            bounds: None,
            mostly: None,
            severity,
        }
    }
}

/// An expectation's arguments: the shared header, implemented by [`arguments!`].
pub(crate) trait Arguments {
    /// The shared arguments.
    fn header(&self) -> Header<'_>;
}

/// One step of the path to an argument, e.g. `partition_object`, `[1]`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum PathPart {
    /// A key of a table.
    Key(String),
    /// An item of an array.
    Index(usize),
}

/// Why a spec refuses an expectation's arguments: where (a path inside the
/// expectation; empty for the expectation as a whole) and why.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Refusal {
    /// The argument, e.g. `[Key("partition_object"), Key("weights")]`.
    pub path: Vec<PathPart>,
    /// What is wrong.
    pub reason: String,
}

impl Refusal {
    /// A refusal of the argument `key`.
    pub fn at(key: &str, reason: impl Into<String>) -> Self {
        Self::at_path(vec![PathPart::Key(key.into())], reason)
    }

    /// A refusal of the argument at `path`.
    pub fn at_path(path: Vec<PathPart>, reason: impl Into<String>) -> Self {
        Self {
            path,
            reason: reason.into(),
        }
    }
}

/// What an expectation does besides holding its arguments: one implementation
/// per expectation type, in its family's file.
pub(crate) trait Check: Arguments {
    /// Every column it names, with the argument naming it (default: `column`).
    fn columns(&self) -> Vec<(ColumnArg, &str)> {
        self.header()
            .column
            .map(|c| vec![(ColumnArg::Column, c)])
            .unwrap_or_default()
    }

    /// Whether its columns must be numeric (int or float).
    fn needs_numeric(&self) -> bool {
        false
    }

    /// Whether both bounds may be left out (otherwise at least one is needed).
    fn bounds_optional(&self) -> bool {
        false
    }

    /// Why a spec holding `count` expectations of this type (this one the
    /// last) holds too many, if it does.
    fn too_many(&self, _count: usize) -> Option<String> {
        None
    }

    /// Checks its own arguments once the shared ones passed (its columns are
    /// declared and numeric when needed, `mostly` and the bounds are sound);
    /// `column_type` is the declared type of its first column.
    fn check(&self, _column_type: Option<ColumnType>) -> Result<(), Refusal> {
        Ok(())
    }

    /// How validation evaluates it over a spec's columns.
    fn plan(&self, columns: &PlanContext<'_>) -> Plan;

    /// Reads it from a GE suite's `kwargs` (each argument read is marked
    /// used; the caller refuses any other); `notes` collects the differences
    /// worth knowing. Err(reason) when it cannot be carried over.
    fn from_ge(
        kwargs: &mut Kwargs<'_>,
        severity: Severity,
        notes: &mut Vec<String>,
    ) -> Result<Self, String>
    where
        Self: Sized;

    /// What the spec parser would refuse beyond the shared arguments, said
    /// with GE's argument names, once it was read from a suite.
    fn check_ge(&self) -> Result<(), String> {
        Ok(())
    }
}

impl Expectation {
    /// The column it checks, for single-column expectations.
    pub fn column(&self) -> Option<&str> {
        self.as_check().header().column
    }

    /// Every column it names, with the argument naming it.
    pub fn columns(&self) -> Vec<(ColumnArg, &str)> {
        self.as_check().columns()
    }

    /// GE `mostly`, when the expectation takes it and it is set.
    pub fn mostly_arg(&self) -> Option<f64> {
        self.as_check().header().mostly
    }

    /// GE `mostly` (1.0 when unset or not applicable).
    pub fn mostly(&self) -> f64 {
        self.mostly_arg().unwrap_or(1.0)
    }

    /// Whether a failure rejects the batch or only warns.
    pub fn severity(&self) -> Severity {
        self.as_check().header().severity
    }

    /// `(min_value, max_value)` of the expectations that take bounds.
    pub fn bounds(&self) -> Option<(Option<f64>, Option<f64>)> {
        self.as_check().header().bounds
    }

    /// Whether it needs numeric (int or float) columns.
    pub fn needs_numeric(&self) -> bool {
        self.as_check().needs_numeric()
    }

    /// The arguments as JSON (GE's `kwargs`), for reports: unset optional arguments
    /// and `severity` (reported separately) are left out.
    pub fn kwargs(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.remove("expectation");
            o.remove("severity");
        }
        v
    }

    /// Why a spec holding `count` expectations of its type (this one the
    /// last) holds too many, if it does.
    pub(crate) fn too_many(&self, count: usize) -> Option<String> {
        self.as_check().too_many(count)
    }

    /// Checks its arguments against the spec's columns (`column_type` gives a
    /// declared column's type): the shared ones here, then its own.
    pub(crate) fn check_arguments(
        &self,
        column_type: &dyn Fn(&str) -> Option<ColumnType>,
    ) -> Result<(), Refusal> {
        let e = self.as_check();
        let name = self.name();
        let mut types = Vec::new();
        for (arg, col) in e.columns() {
            let Some(ty) = column_type(col) else {
                return Err(Refusal::at_path(
                    arg.path(),
                    format!("{name} names column {col:?}, which is not declared in [[columns]]"),
                ));
            };
            if e.needs_numeric() && !ty.is_numeric() {
                return Err(Refusal::at_path(
                    arg.path(),
                    format!("{name} needs a numeric column; {col:?} is {ty}"),
                ));
            }
            types.push(ty);
        }
        let header = e.header();
        if let Some(m) = header.mostly
            && !(0.0..=1.0).contains(&m)
        {
            return Err(Refusal::at(
                "mostly",
                format!("must be between 0 and 1, got {m}"),
            ));
        }
        if let Some((lo, hi)) = header.bounds {
            for (key, v) in [("min_value", lo), ("max_value", hi)] {
                if let Some(v) = v
                    && v.is_nan()
                {
                    return Err(Refusal::at(key, "must be a number, not NaN"));
                }
            }
            if let (Some(a), Some(b)) = (lo, hi)
                && a > b
            {
                return Err(Refusal::at(
                    "min_value",
                    format!("min_value {a} is above max_value {b}"),
                ));
            }
            if lo.is_none() && hi.is_none() && !e.bounds_optional() {
                return Err(Refusal::at(
                    "min_value",
                    "give min_value, max_value or both",
                ));
            }
        }
        e.check(types.first().copied())
    }

    /// What the spec parser would refuse, said with GE's argument names, for an
    /// expectation just read from a suite: the shared arguments, then its own.
    pub(crate) fn check_ge(&self) -> Result<(), String> {
        let e = self.as_check();
        let header = e.header();
        if let Some((lo, hi)) = header.bounds {
            if lo.is_none() && hi.is_none() && !e.bounds_optional() {
                return Err(
                    "neither min_value nor max_value: observation-only expectations are not supported"
                        .into(),
                );
            }
            if let (Some(a), Some(b)) = (lo, hi)
                && a > b
            {
                return Err(format!("min_value {a} is above max_value {b}"));
            }
        }
        if let Some(m) = header.mostly
            && !(0.0..=1.0).contains(&m)
        {
            return Err(format!("mostly {m} is not between 0 and 1"));
        }
        e.check_ge()
    }
}

/// Whether a set of values fits the type of its column (`ty`; None for no
/// column), for `value_set` and categorical partitions.
fn value_set_fits_at(ty: Option<ColumnType>, set: &[Scalar], column: &str) -> Result<(), String> {
    let Some(t) = ty else { return Ok(()) };
    if set.is_empty() {
        return Err("must not be empty".into());
    }
    match set.iter().find(|v| !scalar_fits(t, v)) {
        Some(v) => Err(format!(
            "value {v} does not fit column {column:?} of type {t}"
        )),
        None => Ok(()),
    }
}

/// For `skip_serializing_if`: a flag left at its default is not written.
fn is_false(b: &bool) -> bool {
    !*b
}
