//! Table expectations: the number of rows, the header.

use std::collections::HashSet;

use super::{Check, Kwargs, Plan, PlanContext, Severity};
use crate::validate::accumulator::{Accumulator, ChunkColumns, Outcome, Tally};
use crate::validate::report::ResultDetail;

arguments! {
    /// The number of rows is within bounds (either bound may be left out).
    pub struct RowCount {
        count_bounds,
    }
}

impl Check for RowCount {
    fn bounds_optional(&self) -> bool {
        true
    }

    fn plan(&self, _: &PlanContext<'_>) -> Plan {
        Plan::Rows(Box::new(RowCountAcc {
            min: self.min_value,
            max: self.max_value,
        }))
    }

    fn from_ge(
        k: &mut Kwargs<'_>,
        severity: Severity,
        _: &mut Vec<String>,
    ) -> Result<Self, String> {
        Ok(Self {
            min_value: k.u64("min_value")?,
            max_value: k.u64("max_value")?,
            severity,
        })
    }
}

struct RowCountAcc {
    min: Option<u64>,
    max: Option<u64>,
}

impl Accumulator for RowCountAcc {
    fn update(&mut self, _: &ChunkColumns<'_>, _: &mut Tally) {}

    fn finish(self: Box<Self>, out: &mut Outcome<'_>) -> bool {
        let rows = out.rows;
        out.detail = ResultDetail {
            observed_value: Some(rows.into()),
            ..Default::default()
        };
        self.min.is_none_or(|m| rows >= m) && self.max.is_none_or(|m| rows <= m)
    }
}

fn yes() -> bool {
    true
}

arguments! {
    /// The header holds exactly (or at least) these columns. Implied by `[[columns]]`.
    pub struct ColumnsMatchSet {
        /// The columns.
        pub column_set: Vec<String>,
        /// When false, extra columns are allowed.
        #[serde(default = "yes")]
        pub exact_match: bool,
    }
}

impl Check for ColumnsMatchSet {
    fn plan(&self, _: &PlanContext<'_>) -> Plan {
        let (wanted, exact) = (self.column_set.clone(), self.exact_match);
        Plan::Header(Box::new(move |header: &[String]| {
            let present: HashSet<&String> = header.iter().collect();
            let wanted: HashSet<&String> = wanted.iter().collect();
            let ok = if exact {
                present == wanted
            } else {
                wanted.is_subset(&present)
            };
            ok && !header.is_empty()
        }))
    }

    fn from_ge(
        k: &mut Kwargs<'_>,
        severity: Severity,
        _: &mut Vec<String>,
    ) -> Result<Self, String> {
        Ok(Self {
            column_set: k.strings("column_set")?,
            exact_match: k.bool("exact_match")?.unwrap_or(true),
            severity,
        })
    }
}
