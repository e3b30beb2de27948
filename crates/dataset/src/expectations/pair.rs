//! Column-pair expectations: a predicate on the two values of each row.

use super::{Check, ColumnArg, Kwargs, Plan, PlanContext, Severity};
use crate::validate::accumulator::{Accumulator, ChunkColumns, Outcome, Tally};
use crate::validate::columns::{Col, is_valid};

arguments! {
    /// In every row where both are non-null, `column_A` is greater than `column_B`
    /// (or equal, with `or_equal`). Rows where either is null are ignored (GE's
    /// `ignore_row_if = "either_value_is_missing"`); `mostly` is the share of
    /// the compared rows that must pass.
    pub struct PairAGreaterThanB {
        /// The column that must be greater (numeric).
        #[serde(rename = "column_A")]
        pub column_a: String,
        /// The column that must be smaller (numeric).
        #[serde(rename = "column_B")]
        pub column_b: String,
        /// Whether equal values pass.
        #[serde(default, skip_serializing_if = "crate::expectations::is_false")]
        pub or_equal: bool,
        mostly,
    }
}

impl Check for PairAGreaterThanB {
    fn columns(&self) -> Vec<(ColumnArg, &str)> {
        vec![
            (ColumnArg::ColumnA, &self.column_a),
            (ColumnArg::ColumnB, &self.column_b),
        ]
    }

    fn needs_numeric(&self) -> bool {
        true
    }

    fn plan(&self, columns: &PlanContext<'_>) -> Plan {
        Plan::Rows(Box::new(PairAcc {
            a: columns.index(&self.column_a).unwrap_or_default(),
            b: columns.index(&self.column_b).unwrap_or_default(),
            or_equal: self.or_equal,
        }))
    }

    fn from_ge(
        k: &mut Kwargs<'_>,
        severity: Severity,
        notes: &mut Vec<String>,
    ) -> Result<Self, String> {
        let ignore = k.string("ignore_row_if")?;
        match ignore.as_deref() {
            Some("either_value_is_missing") => {}
            None | Some("both_values_are_missing") | Some("neither") => notes.push(format!(
                "ignore_row_if {:?}: here a row with either value missing is ignored, \
                 where GE would count a row with one missing value as failing",
                ignore
                    .as_deref()
                    .unwrap_or("both_values_are_missing (GE default)")
            )),
            Some(other) => return Err(format!("ignore_row_if {other:?} is not supported")),
        }
        Ok(Self {
            column_a: k.required_string("column_A")?,
            column_b: k.required_string("column_B")?,
            or_equal: k.flag("or_equal")?,
            mostly: k.mostly()?,
            severity,
        })
    }
}

struct PairAcc {
    a: usize,
    b: usize,
    or_equal: bool,
}

impl Accumulator for PairAcc {
    fn update(&mut self, c: &ChunkColumns<'_>, tally: &mut Tally) {
        let (ca, cb) = (c.cols[self.a], c.cols[self.b]);
        let (na, nb) = (ca.nulls(), cb.nulls());
        let json = |i: usize| serde_json::json!([ca.json(i), cb.json(i)]);
        let (or_equal, first) = (self.or_equal, c.first);
        match (ca, cb) {
            (Col::Int(x), Col::Int(y)) => {
                let (x, y) = (x.values(), y.values());
                for i in 0..c.n {
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
                for i in 0..c.n {
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

    fn finish(self: Box<Self>, out: &mut Outcome<'_>) -> bool {
        out.column_map()
    }
}
