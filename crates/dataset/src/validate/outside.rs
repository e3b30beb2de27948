//! Distinct values seen outside a value set, bounded.

use super::columns::Col;
use crate::schema::{ColumnType, Scalar};

/// Distinct values outside the set that `expect_column_distinct_values_to_be_in_set`
/// remembers (and lists) at most.
pub const DISTINCT_OUTSIDE_CAP: usize = 1_000;

/// Distinct values seen outside a value set, kept sorted, at most
/// [`DISTINCT_OUTSIDE_CAP`] of them.
pub(crate) enum Outside {
    Str(Vec<String>),
    Int(Vec<i64>),
    Float(Vec<f64>),
    Bool(Vec<bool>),
}

impl Outside {
    pub(crate) fn new(ty: ColumnType) -> Self {
        match ty {
            ColumnType::String => Outside::Str(Vec::new()),
            ColumnType::Int => Outside::Int(Vec::new()),
            ColumnType::Float => Outside::Float(Vec::new()),
            ColumnType::Bool => Outside::Bool(Vec::new()),
        }
    }

    /// Remembers the value at `i`; false when it is new but the cap is reached.
    pub(crate) fn note(&mut self, col: Col<'_>, i: usize) -> bool {
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
pub(crate) fn distinct_values(
    set: &[Scalar],
    seen: &[bool],
    outside: &Outside,
) -> Vec<serde_json::Value> {
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
