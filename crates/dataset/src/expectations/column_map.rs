//! Column-map expectations: a predicate on each non-null value of a column,
//! passing when the share of passing values is at least `mostly`.

use std::collections::HashSet;

use regex::Regex;

use super::{
    Check, ColumnType, Kwargs, Plan, PlanContext, Refusal, Scalar, Severity, value_set_fits_at,
};
use crate::validate::accumulator::{Accumulator, ChunkColumns, Outcome, Tally};
use crate::validate::columns::{each_f64, each_str};
use crate::validate::numeric::Bounds;
use crate::validate::report::sample_text;
use crate::validate::value_sets::ValueSet;

arguments! {
    /// Values are not null (`mostly`: the share of rows that must pass).
    pub struct NotNull {
        column,
        mostly,
    }
}

impl Check for NotNull {
    fn plan(&self, columns: &PlanContext<'_>) -> Plan {
        Plan::Rows(Box::new(NotNullAcc {
            column: columns.index(&self.column).unwrap_or_default(),
        }))
    }

    fn from_ge(
        k: &mut Kwargs<'_>,
        severity: Severity,
        _: &mut Vec<String>,
    ) -> Result<Self, String> {
        Ok(Self {
            column: k.required_string("column")?,
            mostly: k.mostly()?,
            severity,
        })
    }
}

/// Counts the missing values of a column (also the check implied by a
/// non-nullable column).
pub(crate) struct NotNullAcc {
    /// The column.
    pub column: usize,
}

impl Accumulator for NotNullAcc {
    fn update(&mut self, c: &ChunkColumns<'_>, tally: &mut Tally) {
        let col = c.cols[self.column];
        let (_, bad_sample) = &c.bad_cells[self.column];
        let nulls = c.missing(self.column);
        if nulls == 0 {
            return;
        }
        tally.unexpected += nulls;
        if !tally.sample_full()
            && let Some(mask) = col.nulls()
        {
            // Unparseable cells are null in Arrow but not missing: skip the
            // sampled ones (beyond the sample they may be listed).
            let bad_rows: HashSet<u64> = bad_sample.iter().map(|b| b.row).collect();
            for (i, valid) in mask.iter().enumerate() {
                let row = c.first + i as u64;
                if !valid && !bad_rows.contains(&row) {
                    tally.sample_only(row, || serde_json::Value::Null);
                    if tally.sample_full() {
                        break;
                    }
                }
            }
        }
    }

    fn finish(self: Box<Self>, out: &mut Outcome<'_>) -> bool {
        out.detail.missing_count = 0;
        out.map_success(out.detail.unexpected_count, out.detail.element_count)
    }
}

arguments! {
    /// Non-null values are in a set.
    pub struct InSet {
        column,
        /// Allowed values.
        pub value_set: Vec<Scalar>,
        mostly,
    }
}

impl Check for InSet {
    fn check(&self, ty: Option<ColumnType>) -> Result<(), Refusal> {
        value_set_fits_at(ty, &self.value_set, &self.column)
            .map_err(|r| Refusal::at("value_set", r))
    }

    fn plan(&self, columns: &PlanContext<'_>) -> Plan {
        Plan::Rows(Box::new(InSetAcc {
            column: columns.index(&self.column).unwrap_or_default(),
            set: ValueSet::new(columns.type_of(&self.column), &self.value_set),
        }))
    }

    fn from_ge(
        k: &mut Kwargs<'_>,
        severity: Severity,
        _: &mut Vec<String>,
    ) -> Result<Self, String> {
        Ok(Self {
            column: k.required_string("column")?,
            value_set: k.scalars("value_set")?,
            mostly: k.mostly()?,
            severity,
        })
    }

    fn check_ge(&self) -> Result<(), String> {
        if self.value_set.is_empty() {
            return Err("value_set is empty".into());
        }
        Ok(())
    }
}

struct InSetAcc {
    column: usize,
    set: ValueSet,
}

impl Accumulator for InSetAcc {
    fn update(&mut self, c: &ChunkColumns<'_>, tally: &mut Tally) {
        let col = c.cols[self.column];
        tally.missing += col.null_count();
        self.set.each_position(col, |i, pos| {
            if pos.is_none() {
                tally.flag(c.first + i as u64, || col.json(i));
            }
        });
    }

    fn finish(self: Box<Self>, out: &mut Outcome<'_>) -> bool {
        out.column_map()
    }
}

arguments! {
    /// Non-null numeric values are within bounds.
    pub struct Between {
        column,
        bounds,
        mostly,
    }
}

impl Check for Between {
    fn needs_numeric(&self) -> bool {
        true
    }

    fn plan(&self, columns: &PlanContext<'_>) -> Plan {
        Plan::Rows(Box::new(BetweenAcc {
            column: columns.index(&self.column).unwrap_or_default(),
            bounds: Bounds::new(
                self.min_value,
                self.max_value,
                self.strict_min,
                self.strict_max,
            ),
        }))
    }

    fn from_ge(
        k: &mut Kwargs<'_>,
        severity: Severity,
        _: &mut Vec<String>,
    ) -> Result<Self, String> {
        let column = k.required_string("column")?;
        let (min_value, max_value, strict_min, strict_max) = k.bounds()?;
        Ok(Self {
            column,
            min_value,
            max_value,
            strict_min,
            strict_max,
            mostly: k.mostly()?,
            severity,
        })
    }
}

struct BetweenAcc {
    column: usize,
    bounds: Bounds,
}

impl Accumulator for BetweenAcc {
    fn update(&mut self, c: &ChunkColumns<'_>, tally: &mut Tally) {
        let col = c.cols[self.column];
        tally.missing += col.null_count();
        each_f64(col, |i, v| {
            if !self.bounds.contains(v) {
                tally.flag(c.first + i as u64, || col.json(i));
            }
        });
    }

    fn finish(self: Box<Self>, out: &mut Outcome<'_>) -> bool {
        out.column_map()
    }
}

/// Most regex expectations one spec may hold.
pub const MAX_REGEX_EXPECTATIONS: usize = 64;

/// Longest regex pattern accepted, in bytes.
pub const MAX_REGEX_LEN: usize = 1_000;

/// Compiles an expectation's regex within bounds: at most [`MAX_REGEX_LEN`]
/// bytes of pattern and 1 MiB for the compiled program and its lazy DFA each,
/// so a pattern like `(a{1000}){1000}` is refused instead of taking the
/// validating process's memory.
pub fn compile_regex(pattern: &str) -> Result<Regex, String> {
    if pattern.len() > MAX_REGEX_LEN {
        return Err(format!(
            "is {} bytes long; at most {MAX_REGEX_LEN} are accepted",
            pattern.len()
        ));
    }
    regex::RegexBuilder::new(pattern)
        .size_limit(1 << 20)
        .dfa_size_limit(1 << 20)
        .build()
        .map_err(|e| format!("does not compile: {}", e.to_string().replace('\n', " ")))
}

/// Refuses a text expectation on a column that is not a string column.
fn string_only(
    name: &str,
    what: &str,
    column: &str,
    ty: Option<ColumnType>,
) -> Result<(), Refusal> {
    match ty {
        Some(ColumnType::String) | None => Ok(()),
        Some(t) => Err(Refusal::at(
            "column",
            format!("{name} {what}; column {column:?} is {t}"),
        )),
    }
}

arguments! {
    /// Non-null values of a string column contain a match of a regular expression
    /// (searched anywhere in the value, like GE's `re.search`; anchor with `^...$`).
    pub struct MatchRegex {
        column,
        /// The pattern, in Rust `regex` syntax (Python's without look-around and
        /// back-references).
        pub regex: String,
        mostly,
    }
}

impl Check for MatchRegex {
    fn too_many(&self, count: usize) -> Option<String> {
        (count > MAX_REGEX_EXPECTATIONS).then(|| {
            format!(
                "more than {MAX_REGEX_EXPECTATIONS} regex expectations in one spec; each one scans every value of its column"
            )
        })
    }

    fn check(&self, ty: Option<ColumnType>) -> Result<(), Refusal> {
        string_only(Self::NAME, "needs a string column", &self.column, ty)?;
        compile_regex(&self.regex).map_err(|msg| Refusal::at("regex", msg))?;
        Ok(())
    }

    fn plan(&self, columns: &PlanContext<'_>) -> Plan {
        match compile_regex(&self.regex) {
            Ok(re) => Plan::Rows(Box::new(MatchRegexAcc {
                column: columns.index(&self.column).unwrap_or_default(),
                re,
            })),
            // Refused by the spec parser; a spec built otherwise fails here.
            Err(err) => Plan::Invalid(format!("the regex {err}")),
        }
    }

    fn from_ge(
        k: &mut Kwargs<'_>,
        severity: Severity,
        _: &mut Vec<String>,
    ) -> Result<Self, String> {
        let column = k.required_string("column")?;
        let regex = k.required_string("regex")?;
        if let Err(err) = Regex::new(&regex) {
            let msg = err.to_string().replace('\n', " ");
            return Err(format!(
                "the regex does not compile with Rust's regex engine: {msg}"
            ));
        }
        Ok(Self {
            column,
            regex,
            mostly: k.mostly()?,
            severity,
        })
    }
}

struct MatchRegexAcc {
    column: usize,
    re: Regex,
}

impl Accumulator for MatchRegexAcc {
    fn update(&mut self, c: &ChunkColumns<'_>, tally: &mut Tally) {
        let col = c.cols[self.column];
        tally.missing += col.null_count();
        each_str(col, |i, s| {
            if !self.re.is_match(s) {
                tally.flag(c.first + i as u64, || sample_text(s));
            }
        });
    }

    fn finish(self: Box<Self>, out: &mut Outcome<'_>) -> bool {
        out.column_map()
    }
}

arguments! {
    /// The length in characters (Unicode scalar values, like Python's `len`) of each
    /// non-null value of a string column is within bounds (inclusive).
    pub struct ValueLengthsBetween {
        column,
        count_bounds,
        mostly,
    }
}

impl Check for ValueLengthsBetween {
    fn check(&self, ty: Option<ColumnType>) -> Result<(), Refusal> {
        string_only(
            Self::NAME,
            "measures the text of a string column",
            &self.column,
            ty,
        )
    }

    fn plan(&self, columns: &PlanContext<'_>) -> Plan {
        Plan::Rows(Box::new(LengthsAcc {
            column: columns.index(&self.column).unwrap_or_default(),
            min: self.min_value.unwrap_or(0),
            max: self.max_value.unwrap_or(u64::MAX),
        }))
    }

    fn from_ge(
        k: &mut Kwargs<'_>,
        severity: Severity,
        _: &mut Vec<String>,
    ) -> Result<Self, String> {
        if k.flag("strict_min")? || k.flag("strict_max")? {
            return Err("strict_min/strict_max on lengths are not supported".into());
        }
        Ok(Self {
            column: k.required_string("column")?,
            min_value: k.u64("min_value")?,
            max_value: k.u64("max_value")?,
            mostly: k.mostly()?,
            severity,
        })
    }
}

struct LengthsAcc {
    column: usize,
    min: u64,
    max: u64,
}

impl Accumulator for LengthsAcc {
    fn update(&mut self, c: &ChunkColumns<'_>, tally: &mut Tally) {
        let col = c.cols[self.column];
        tally.missing += col.null_count();
        let (lo, hi) = (self.min, self.max);
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
                tally.flag(c.first + i as u64, || sample_text(s));
            }
        });
    }

    fn finish(self: Box<Self>, out: &mut Outcome<'_>) -> bool {
        out.column_map()
    }
}

arguments! {
    /// Every non-null cell parsed as the declared column type, which must be the GE
    /// type named by `type_` (see [`ColumnType::from_ge_type`]).
    pub struct OfType {
        column,
        /// GE / pandas type name: `int`, `int64`, `float`, `float64`, `str`, `string`,
        /// `bool`, `boolean`...
        pub type_: String,
        mostly,
    }
}

impl Check for OfType {
    fn check(&self, ty: Option<ColumnType>) -> Result<(), Refusal> {
        let (column, type_) = (&self.column, &self.type_);
        let Some(wanted) = ColumnType::from_ge_type(type_) else {
            return Err(Refusal::at(
                "type_",
                format!(
                    "unknown type {type_:?}: use a GE/pandas name of an int, float, \
                     string or bool type (int64, float64, str, bool...)"
                ),
            ));
        };
        if let Some(t) = ty
            && t != wanted
        {
            return Err(Refusal::at(
                "type_",
                format!("type {type_:?} is {wanted}, but column {column:?} is declared {t}"),
            ));
        }
        Ok(())
    }

    fn plan(&self, columns: &PlanContext<'_>) -> Plan {
        Plan::Rows(Box::new(OfTypeAcc {
            column: columns.index(&self.column).unwrap_or_default(),
        }))
    }

    fn from_ge(
        k: &mut Kwargs<'_>,
        severity: Severity,
        _: &mut Vec<String>,
    ) -> Result<Self, String> {
        let column = k.required_string("column")?;
        let type_ = k.required_string("type_")?;
        if ColumnType::from_ge_type(&type_).is_none() {
            return Err(format!(
                "type {type_:?} is not an int, float, string or bool type"
            ));
        }
        Ok(Self {
            column,
            type_,
            mostly: k.mostly()?,
            severity,
        })
    }
}

/// Counts the cells that did not parse as the column's type (also the check
/// implied by every declared column).
pub(crate) struct OfTypeAcc {
    /// The column.
    pub column: usize,
}

impl Accumulator for OfTypeAcc {
    fn update(&mut self, c: &ChunkColumns<'_>, tally: &mut Tally) {
        let (bad_count, bad_sample) = &c.bad_cells[self.column];
        tally.missing += c.missing(self.column);
        for b in bad_sample {
            tally.flag(b.row, || b.value.clone().into());
        }
        // Unparseable cells beyond the sample still count.
        tally.unexpected += bad_count - bad_sample.len() as u64;
    }

    fn finish(self: Box<Self>, out: &mut Outcome<'_>) -> bool {
        out.column_map()
    }
}
