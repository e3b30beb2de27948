//! Reading a GE expectation's `kwargs`: typed, with suite parameters refused
//! and every argument read marked used, so that the rest can be refused.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use crate::schema::Scalar;

/// Arguments that only shape GE's output: dropped without notice.
const OUTPUT_ONLY: &[&str] = &[
    "result_format",
    "include_config",
    "catch_exceptions",
    "output_strftime_format",
];

/// Keyword arguments of one expectation, tracking which were used.
pub(crate) struct Kwargs<'a> {
    map: &'a Map<String, Value>,
    used: BTreeSet<&'a str>,
}

/// A mapping, or why it cannot be made.
pub(crate) type Mapped<T> = Result<T, String>;

impl<'a> Kwargs<'a> {
    pub(crate) fn new(map: &'a Map<String, Value>) -> Self {
        Self {
            map,
            used: BTreeSet::new(),
        }
    }

    /// The argument, if present and not null.
    pub(crate) fn get(&mut self, key: &'a str) -> Mapped<Option<&'a Value>> {
        self.used.insert(key);
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(o)) if o.contains_key("$PARAMETER") => Err(format!(
                "argument `{key}` is a suite parameter ({}), resolved only at GE run time",
                o["$PARAMETER"]
            )),
            Some(v) => Ok(Some(v)),
        }
    }

    pub(crate) fn string(&mut self, key: &'a str) -> Mapped<Option<String>> {
        match self.get(key)? {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(format!("argument `{key}` should be a string, got {v}")),
        }
    }

    pub(crate) fn required_string(&mut self, key: &'a str) -> Mapped<String> {
        self.string(key)?
            .ok_or_else(|| format!("argument `{key}` is missing"))
    }

    pub(crate) fn f64(&mut self, key: &'a str) -> Mapped<Option<f64>> {
        match self.get(key)? {
            None => Ok(None),
            Some(Value::Number(n)) => n
                .as_f64()
                .map(Some)
                .ok_or_else(|| format!("argument `{key}` is not a usable number")),
            Some(v) => Err(format!(
                "argument `{key}` should be a number, got {v} (dates and strings are not supported)"
            )),
        }
    }

    pub(crate) fn u64(&mut self, key: &'a str) -> Mapped<Option<u64>> {
        match self.f64(key)? {
            None => Ok(None),
            Some(x) if x >= 0.0 && x.fract() == 0.0 && x < 2f64.powi(63) => Ok(Some(x as u64)),
            Some(x) => Err(format!(
                "argument `{key}` should be a whole number >= 0, got {x}"
            )),
        }
    }

    pub(crate) fn bool(&mut self, key: &'a str) -> Mapped<Option<bool>> {
        match self.get(key)? {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(format!("argument `{key}` should be true or false, got {v}")),
        }
    }

    pub(crate) fn flag(&mut self, key: &'a str) -> Mapped<bool> {
        Ok(self.bool(key)?.unwrap_or(false))
    }

    pub(crate) fn scalars(&mut self, key: &'a str) -> Mapped<Vec<Scalar>> {
        let Some(v) = self.get(key)? else {
            return Err(format!("argument `{key}` is missing"));
        };
        let Value::Array(items) = v else {
            return Err(format!("argument `{key}` should be a list, got {v}"));
        };
        items.iter().map(|x| scalar(key, x)).collect()
    }

    pub(crate) fn strings(&mut self, key: &'a str) -> Mapped<Vec<String>> {
        let Some(v) = self.get(key)? else {
            return Err(format!("argument `{key}` is missing"));
        };
        let Value::Array(items) = v else {
            return Err(format!("argument `{key}` should be a list, got {v}"));
        };
        items
            .iter()
            .map(|x| match x {
                Value::String(s) => Ok(s.clone()),
                other => Err(format!(
                    "argument `{key}` should list strings, found {other}"
                )),
            })
            .collect()
    }

    /// GE `mostly`.
    pub(crate) fn mostly(&mut self) -> Mapped<Option<f64>> {
        self.f64("mostly")
    }

    /// Numeric bounds: `min_value`, `max_value`, `strict_min`, `strict_max`.
    pub(crate) fn bounds(&mut self) -> Mapped<(Option<f64>, Option<f64>, bool, bool)> {
        Ok((
            self.f64("min_value")?,
            self.f64("max_value")?,
            self.flag("strict_min")?,
            self.flag("strict_max")?,
        ))
    }

    /// Arguments neither used nor output-only: the first one makes the
    /// expectation unmapped, with the reason.
    pub(crate) fn leftover(&self) -> Mapped<()> {
        for (key, value) in self.map {
            if self.used.contains(key.as_str()) || OUTPUT_ONLY.contains(&key.as_str()) {
                continue;
            }
            let reason = match (key.as_str(), value) {
                (_, Value::Null) => continue,
                ("row_condition", Value::String(s)) if s.trim().is_empty() => continue,
                // Only meaningful with a row_condition, which is refused on its own.
                ("condition_parser", _) => continue,
                ("parse_strings_as_datetimes", Value::Bool(false)) => continue,
                ("row_condition", v) => {
                    format!("conditional expectations are not supported (row_condition {v})")
                }
                ("parse_strings_as_datetimes", _) => {
                    "parse_strings_as_datetimes: dates are not a column type here".into()
                }
                (k, v) => format!("argument `{k}` ({v}) is not supported"),
            };
            return Err(reason);
        }
        Ok(())
    }
}

/// A GE value as a spec literal.
pub(crate) fn scalar(key: &str, v: &Value) -> Mapped<Scalar> {
    match v {
        Value::Bool(b) => Ok(Scalar::Bool(*b)),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Ok(Scalar::Int(i)),
            None => n
                .as_f64()
                .map(Scalar::Float)
                .ok_or_else(|| format!("argument `{key}`: unusable number {n}")),
        },
        Value::String(s) => Ok(Scalar::Str(s.clone())),
        other => Err(format!(
            "argument `{key}`: {other} is not a string, number or boolean"
        )),
    }
}
