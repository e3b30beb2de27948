//! Uniqueness expectations, over distinct-value fingerprints: the values of a
//! column (one table per column, shared by its checks), or the combinations
//! of several columns.

use std::collections::BTreeSet;

use super::{Check, ColumnArg, ColumnType, Kwargs, PathPart, Plan, PlanContext, Refusal, Severity};
use crate::validate::accumulator::{Accumulator, ChunkColumns, Outcome, Tally};
use crate::validate::columns::{Col, is_valid};
use crate::validate::distinct::Distinct;
use crate::validate::numeric::Bounds;

arguments! {
    /// Non-null values are unique.
    pub struct Unique {
        column,
        mostly,
    }
}

impl Check for Unique {
    fn plan(&self, columns: &PlanContext<'_>) -> Plan {
        Plan::Rows(Box::new(UniqueAcc {
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

/// GE counts every row of a repeated value, the first one included.
fn repeats(distinct: Option<&Distinct>, out: &mut Outcome<'_>) -> bool {
    let unexpected = distinct.map_or(0, Distinct::rows_in_repeats);
    let count = distinct.map_or(0, Distinct::distinct_values);
    out.detail.observed_value = Some(serde_json::json!({ "distinct_values": count }));
    out.map_success(unexpected, out.non_null)
}

struct UniqueAcc {
    column: usize,
}

impl Accumulator for UniqueAcc {
    fn shared_distinct(&self) -> Option<usize> {
        Some(self.column)
    }

    fn update(&mut self, c: &ChunkColumns<'_>, tally: &mut Tally) {
        let col = c.cols[self.column];
        tally.missing += col.null_count();
        if let Some(d) = &c.distinct[self.column] {
            for i in &d.chunk_repeats {
                if tally.sample_full() {
                    break;
                }
                let i = *i as usize;
                tally.sample_only(c.first + i as u64, || col.json(i));
            }
        }
    }

    fn finish(self: Box<Self>, out: &mut Outcome<'_>) -> bool {
        repeats(out.distinct, out)
    }
}

arguments! {
    /// The number of distinct non-null values divided by the number of non-null
    /// values is within bounds.
    pub struct ProportionOfUniqueBetween {
        column,
        bounds,
    }
}

impl Check for ProportionOfUniqueBetween {
    fn plan(&self, columns: &PlanContext<'_>) -> Plan {
        Plan::Rows(Box::new(ProportionAcc {
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
            severity,
        })
    }
}

struct ProportionAcc {
    column: usize,
    bounds: Bounds,
}

impl Accumulator for ProportionAcc {
    fn shared_distinct(&self) -> Option<usize> {
        Some(self.column)
    }

    fn update(&mut self, c: &ChunkColumns<'_>, tally: &mut Tally) {
        tally.missing += c.cols[self.column].null_count();
    }

    fn finish(self: Box<Self>, out: &mut Outcome<'_>) -> bool {
        if out.non_null == 0 {
            out.detail.details = Some("no non-null values".into());
            return false;
        }
        let count = out.distinct.map_or(0, Distinct::distinct_values);
        let p = count as f64 / out.non_null as f64;
        out.detail.observed_value = Some(p.into());
        self.bounds.contains(p)
    }
}

arguments! {
    /// The combination of values of these columns is unique across rows (rows where
    /// every one of them is null are ignored; a null equals a null).
    pub struct CompoundColumnsUnique {
        /// The columns, at least two.
        pub column_list: Vec<String>,
        mostly,
    }
}

impl Check for CompoundColumnsUnique {
    fn columns(&self) -> Vec<(ColumnArg, &str)> {
        self.column_list
            .iter()
            .enumerate()
            .map(|(i, c)| (ColumnArg::ColumnList(i), c.as_str()))
            .collect()
    }

    fn check(&self, _: Option<ColumnType>) -> Result<(), Refusal> {
        if self.column_list.is_empty() {
            return Err(Refusal::at("column_list", "name at least one column"));
        }
        let mut seen = BTreeSet::new();
        for (j, c) in self.column_list.iter().enumerate() {
            if !seen.insert(c) {
                return Err(Refusal::at_path(
                    vec![PathPart::Key("column_list".into()), PathPart::Index(j)],
                    format!("column {c:?} is listed twice"),
                ));
            }
        }
        Ok(())
    }

    fn plan(&self, columns: &PlanContext<'_>) -> Plan {
        Plan::Rows(Box::new(CompoundAcc {
            columns: self
                .column_list
                .iter()
                .filter_map(|c| columns.index(c))
                .collect(),
            distinct: Distinct::new(),
            buf: Vec::new(),
        }))
    }

    fn from_ge(
        k: &mut Kwargs<'_>,
        severity: Severity,
        notes: &mut Vec<String>,
    ) -> Result<Self, String> {
        let ignore = k.string("ignore_row_if")?;
        match ignore.as_deref() {
            None | Some("all_values_are_missing") => {}
            Some("any_value_is_missing") | Some("never") => notes.push(format!(
                "ignore_row_if {:?}: here only rows where every column is missing are \
                 ignored",
                ignore.as_deref().unwrap_or_default()
            )),
            Some(other) => return Err(format!("ignore_row_if {other:?} is not supported")),
        }
        Ok(Self {
            column_list: k.strings("column_list")?,
            mostly: k.mostly()?,
            severity,
        })
    }
}

struct CompoundAcc {
    columns: Vec<usize>,
    distinct: Distinct,
    buf: Vec<u8>,
}

impl Accumulator for CompoundAcc {
    fn update(&mut self, c: &ChunkColumns<'_>, tally: &mut Tally) {
        let picked: Vec<Col<'_>> = self.columns.iter().map(|i| c.cols[*i]).collect();
        let masks: Vec<_> = picked.iter().map(|c| c.nulls()).collect();
        for i in 0..c.n {
            if masks.iter().all(|m| !is_valid(*m, i)) {
                tally.missing += 1;
                continue;
            }
            self.buf.clear();
            for (col, m) in picked.iter().zip(&masks) {
                col.encode(i, is_valid(*m, i), &mut self.buf);
            }
            let key = self.distinct.fp.of(&self.buf);
            self.distinct.queue(i, key);
        }
        self.distinct.flush();
        for i in &self.distinct.chunk_repeats {
            if tally.sample_full() {
                break;
            }
            let i = *i as usize;
            tally.sample_only(c.first + i as u64, || {
                serde_json::Value::Array(picked.iter().map(|c| c.json(i)).collect())
            });
        }
    }

    fn finish(self: Box<Self>, out: &mut Outcome<'_>) -> bool {
        repeats(Some(&self.distinct), out)
    }
}
