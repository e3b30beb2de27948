//! Typed views of a chunk's columns, downcast once.

use arrow_array::{Array, BooleanArray, Float64Array, Int64Array, StringArray};
use arrow_buffer::NullBuffer;

use super::hashing::float_key;
use super::report::sample_text;
use crate::schema::ColumnType;

/// A chunk's column, downcast once.
#[derive(Clone, Copy)]
pub(crate) enum Col<'a> {
    Str(&'a StringArray),
    Int(&'a Int64Array),
    Float(&'a Float64Array),
    Bool(&'a BooleanArray),
    /// Not the expected Arrow type (cannot happen with `table`'s chunks).
    Other(&'a dyn Array),
}

impl<'a> Col<'a> {
    pub(crate) fn of(array: &'a dyn Array, ty: ColumnType) -> Self {
        let any = array.as_any();
        let typed = match ty {
            ColumnType::String => any.downcast_ref::<StringArray>().map(Col::Str),
            ColumnType::Int => any.downcast_ref::<Int64Array>().map(Col::Int),
            ColumnType::Float => any.downcast_ref::<Float64Array>().map(Col::Float),
            ColumnType::Bool => any.downcast_ref::<BooleanArray>().map(Col::Bool),
        };
        typed.unwrap_or(Col::Other(array))
    }

    pub(crate) fn array(&self) -> &'a dyn Array {
        match *self {
            Col::Str(a) => a,
            Col::Int(a) => a,
            Col::Float(a) => a,
            Col::Bool(a) => a,
            Col::Other(a) => a,
        }
    }

    /// The null mask, only when there are nulls.
    pub(crate) fn nulls(&self) -> Option<&'a NullBuffer> {
        self.array().nulls().filter(|n| n.null_count() > 0)
    }

    pub(crate) fn null_count(&self) -> u64 {
        self.array().null_count() as u64
    }

    /// The value at `i` as JSON (for samples only).
    pub(crate) fn json(&self, i: usize) -> serde_json::Value {
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
    pub(crate) fn encode(&self, i: usize, valid: bool, buf: &mut Vec<u8>) {
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
pub(crate) fn is_valid(nulls: Option<&NullBuffer>, i: usize) -> bool {
    nulls.is_none_or(|n| n.is_valid(i))
}

/// Calls `f(i, x)` for every non-null value of a numeric column.
#[inline]
pub(crate) fn each_f64(col: Col<'_>, mut f: impl FnMut(usize, f64)) {
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
pub(crate) fn each_str(col: Col<'_>, mut f: impl FnMut(usize, &str)) {
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
pub(crate) fn each_key_bytes(col: Col<'_>, mut f: impl FnMut(usize, &[u8])) {
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
