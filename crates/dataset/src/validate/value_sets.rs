//! Value sets: the values of a spec's set (or categorical partition), typed
//! like the column and looked up without allocating.

use std::collections::HashMap;
use std::hash::Hash;

use super::columns::{Col, is_valid};
use super::hashing::{FxBuild, float_key};
use crate::schema::{ColumnType, Scalar};

/// A list of keys with their positions: linear search when short, hashed beyond.
pub(crate) struct Lookup<K> {
    pub(crate) items: Vec<K>,
    pub(crate) map: Option<HashMap<K, u32, FxBuild>>,
}

impl<K: Eq + Hash + Clone> Lookup<K> {
    const LINEAR: usize = 8;

    pub(crate) fn new(items: Vec<K>) -> Self {
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
    pub(crate) fn get<Q>(&self, q: &Q) -> Option<u32>
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
    pub(crate) fn get_bytes(&self, q: &[u8]) -> Option<u32> {
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
pub(crate) enum ValueSet {
    Str(Lookup<String>),
    Int(Lookup<i64>),
    Float(Lookup<u64>),
    Bool(Lookup<bool>),
}

impl ValueSet {
    /// Position `i` of the result is the value `values[i]` (values that do not fit
    /// the type were refused when the spec was parsed, and are never matched here).
    pub(crate) fn new(ty: ColumnType, values: &[Scalar]) -> Self {
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
    pub(crate) fn each_position(&self, col: Col<'_>, mut f: impl FnMut(usize, Option<u32>)) {
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
