//! Column types and literal values, and the cells that fail to parse as their
//! column's type: the leaf every other module of the dataset crate (and every
//! crate above it) builds on. It imports nothing of modelbus.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Type of a column's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnType {
    /// 64-bit signed integer.
    Int,
    /// 64-bit float.
    Float,
    /// UTF-8 text; one-hot encoded as a feature.
    String,
    /// `true/false`, `t/f`, `yes/no`, `1/0` (case-insensitive).
    Bool,
}

impl ColumnType {
    /// Whether values are numbers.
    pub fn is_numeric(self) -> bool {
        matches!(self, ColumnType::Int | ColumnType::Float)
    }
}

impl ColumnType {
    /// The column type a Great Expectations / pandas / SQL type name stands for
    /// (case-insensitive): `int`, `int64`, `integer`... → int; `float`, `float64`,
    /// `double`... → float; `str`, `string`, `object`, `varchar`... → string;
    /// `bool`, `boolean` → bool.
    pub fn from_ge_type(name: &str) -> Option<ColumnType> {
        let n = name.trim().to_ascii_lowercase();
        Some(match n.as_str() {
            "int" | "int8" | "int16" | "int32" | "int64" | "uint8" | "uint16" | "uint32"
            | "integer" | "long" | "bigint" | "smallint" | "tinyint" | "int64dtype" => {
                ColumnType::Int
            }
            "float" | "float16" | "float32" | "float64" | "double" | "real" | "floating"
            | "float64dtype" => ColumnType::Float,
            "str" | "string" | "object" | "unicode" | "varchar" | "text" | "char" | "utf8"
            | "stringdtype" => ColumnType::String,
            "bool" | "boolean" | "bool_" | "booleandtype" => ColumnType::Bool,
            _ => return None,
        })
    }
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ColumnType::Int => "int",
            ColumnType::Float => "float",
            ColumnType::String => "string",
            ColumnType::Bool => "bool",
        })
    }
}

/// A literal in an expectation's value set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::Bool(b) => write!(f, "{b}"),
            Scalar::Int(i) => write!(f, "{i}"),
            Scalar::Float(x) => write!(f, "{x}"),
            Scalar::Str(s) => write!(f, "{s:?}"),
        }
    }
}

/// Whether a literal fits a column of this type (ints fit float columns).
pub fn scalar_fits(ty: ColumnType, v: &Scalar) -> bool {
    matches!(
        (ty, v),
        (ColumnType::String, Scalar::Str(_))
            | (ColumnType::Int, Scalar::Int(_))
            | (ColumnType::Float, Scalar::Int(_) | Scalar::Float(_))
            | (ColumnType::Bool, Scalar::Bool(_))
    )
}

/// A cell that did not parse as its column's type.
#[derive(Debug, Clone, PartialEq)]
pub struct BadCell {
    /// Index of the column in the spec's `columns`.
    pub column: usize,
    /// 1-based data row (the header is not counted).
    pub row: u64,
    /// The raw text.
    pub value: String,
}

/// How many examples of a problem are kept per column and chunk.
pub const SAMPLE: usize = 20;
