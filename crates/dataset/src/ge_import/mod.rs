//! Import of a Great Expectations expectation suite (the JSON export of GE 1.x,
//! `{"name": ..., "expectations": [{"type": ..., "kwargs": {...}, "meta": {...},
//! "severity": ...}]}`; GE 0.x's `expectation_suite_name` and `expectation_type`
//! are accepted too) into dataset-spec expectations and their `[[expectations]]`
//! TOML.
//!
//! Nothing is dropped silently: an expectation that cannot be carried over with
//! its meaning (unknown type, a `row_condition`, `parse_strings_as_datetimes`,
//! suite parameters, an argument this engine does not implement, a regex Rust's
//! engine cannot compile...) is listed in [`ImportedSuite::unmapped`] with its
//! index and the reason, and as a comment in the TOML. Output-only arguments
//! (`result_format`, `include_config`, `catch_exceptions`,
//! `output_strftime_format`) are dropped. Expectations carried over with a
//! difference worth knowing (GE's `ignore_row_if` defaults, severity `info`) are
//! listed in [`ImportedSuite::notes`]. A column that the dataset does not have is
//! an error.

use std::collections::BTreeSet;

use serde::Serialize;
use serde_json::{Map, Value};

pub(crate) mod kwargs;

use kwargs::{Kwargs, Mapped};

use crate::spec::{Expectation, Severity};

/// A suite carried over.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportedSuite {
    /// The suite's name.
    pub name: String,
    /// The expectations that were mapped, in suite order.
    pub expectations: Vec<Expectation>,
    /// `[[expectations]]` tables to paste into a dataset spec, with comments for
    /// what was not imported.
    pub toml: String,
    /// Expectations not imported: (index in the suite, GE type, reason).
    pub unmapped: Vec<(usize, String, String)>,
    /// Expectations imported with a caveat: (index in the suite, note).
    pub notes: Vec<(usize, String)>,
}

/// Why a suite cannot be imported at all.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ImportError {
    /// The text is not JSON.
    #[error("the suite is not valid JSON: {0}")]
    Json(String),
    /// JSON, but not shaped like a GE suite.
    #[error("not a Great Expectations suite: {0}")]
    NotASuite(String),
    /// An expectation names a column the dataset does not have.
    #[error(
        "expectation {index} ({expectation}) names column {column:?}, which the dataset does not have"
    )]
    UnknownColumn {
        /// Index of the expectation in the suite's list.
        index: usize,
        /// Its GE type.
        expectation: String,
        /// The column.
        column: String,
    },
}

/// Maps one expectation; Err(reason) when it cannot be carried over.
fn map_expectation(
    ty: &str,
    kwargs: &Map<String, Value>,
    severity: Severity,
    notes: &mut Vec<String>,
) -> Mapped<Expectation> {
    let mut k = Kwargs::new(kwargs);
    let e = match Expectation::from_ge(ty, &mut k, severity, notes) {
        Some(e) => e?,
        None if ty == "expect_column_to_exist" => {
            return Err(
                "implied: every column declared in [[columns]] must be in the header".into(),
            );
        }
        None if ty.starts_with("expect_") => {
            return Err("this expectation type is not supported".into());
        }
        None => return Err("not an expectation type".into()),
    };
    k.leftover()?;
    e.check_ge()?;
    Ok(e)
}

fn severity_of(v: Option<&Value>, notes: &mut Vec<String>) -> Mapped<Severity> {
    match v {
        None | Some(Value::Null) => Ok(Severity::Error),
        Some(Value::String(s)) => match s.to_ascii_lowercase().as_str() {
            "critical" | "error" => Ok(Severity::Error),
            "warning" => Ok(Severity::Warning),
            "info" => {
                notes.push("severity \"info\" became \"warning\"".into());
                Ok(Severity::Warning)
            }
            _ => Err(format!("unknown severity {s:?}")),
        },
        Some(other) => Err(format!("unknown severity {other}")),
    }
}

/// The column names an expectation's arguments mention.
fn named_columns(kwargs: &Map<String, Value>) -> Vec<String> {
    let mut out = Vec::new();
    for key in ["column", "column_A", "column_B"] {
        if let Some(Value::String(c)) = kwargs.get(key) {
            out.push(c.clone());
        }
    }
    for key in ["column_list", "column_set"] {
        if let Some(Value::Array(list)) = kwargs.get(key) {
            out.extend(list.iter().filter_map(|c| c.as_str().map(str::to_string)));
        }
    }
    out
}

/// Text safe inside a one-line TOML comment.
fn comment(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Reads a Great Expectations suite JSON export and maps its expectations onto a
/// dataset with these columns. See the module documentation for what is refused.
pub fn import_ge_suite(
    json: &str,
    dataset_columns: &[String],
) -> Result<ImportedSuite, ImportError> {
    let doc: Value = serde_json::from_str(json).map_err(|e| ImportError::Json(e.to_string()))?;
    let Value::Object(root) = &doc else {
        return Err(ImportError::NotASuite(
            "the document is not a JSON object".into(),
        ));
    };
    let name = root
        .get("name")
        .or_else(|| root.get("expectation_suite_name"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let Some(Value::Array(list)) = root.get("expectations") else {
        return Err(ImportError::NotASuite("no \"expectations\" list".into()));
    };
    let known: BTreeSet<&str> = dataset_columns.iter().map(String::as_str).collect();
    let empty = Map::new();
    let mut out = ImportedSuite {
        name: name.clone(),
        expectations: Vec::new(),
        toml: format!(
            "# Imported from Great Expectations suite {:?}.\n",
            comment(&name)
        ),
        unmapped: Vec::new(),
        notes: Vec::new(),
    };
    for (index, item) in list.iter().enumerate() {
        let Value::Object(e) = item else {
            return Err(ImportError::NotASuite(format!(
                "expectation {index} is not a JSON object"
            )));
        };
        let Some(ty) = e
            .get("type")
            .or_else(|| e.get("expectation_type"))
            .and_then(Value::as_str)
        else {
            return Err(ImportError::NotASuite(format!(
                "expectation {index} has no \"type\" (or \"expectation_type\")"
            )));
        };
        let kwargs = match e.get("kwargs") {
            None | Some(Value::Null) => &empty,
            Some(Value::Object(k)) => k,
            Some(_) => {
                return Err(ImportError::NotASuite(format!(
                    "expectation {index}: \"kwargs\" is not an object"
                )));
            }
        };
        for column in named_columns(kwargs) {
            if !known.contains(column.as_str()) {
                return Err(ImportError::UnknownColumn {
                    index,
                    expectation: ty.to_string(),
                    column,
                });
            }
        }
        let mut notes = Vec::new();
        let mapped = severity_of(e.get("severity"), &mut notes)
            .and_then(|sev| map_expectation(ty, kwargs, sev, &mut notes));
        match mapped {
            Ok(expectation) => {
                out.toml
                    .push_str(&format!("\n# GE expectation {index}: {}\n", comment(ty)));
                if let Some(Value::Object(meta)) = e.get("meta")
                    && !meta.is_empty()
                {
                    out.toml.push_str(&format!(
                        "# meta: {}\n",
                        comment(&Value::Object(meta.clone()).to_string())
                    ));
                }
                for n in &notes {
                    out.toml.push_str(&format!("# note: {}\n", comment(n)));
                }
                out.toml.push_str(&expectation_toml(&expectation));
                out.notes.extend(notes.into_iter().map(|n| (index, n)));
                out.expectations.push(expectation);
            }
            Err(reason) => {
                out.toml.push_str(&format!(
                    "\n# NOT IMPORTED: GE expectation {index} ({}): {}\n",
                    comment(ty),
                    comment(&reason)
                ));
                out.unmapped.push((index, ty.to_string(), reason));
            }
        }
    }
    Ok(out)
}

/// One `[[expectations]]` table.
fn expectation_toml(e: &Expectation) -> String {
    #[derive(Serialize)]
    struct One<'a> {
        expectations: [&'a Expectation; 1],
    }
    toml::to_string(&One { expectations: [e] }).unwrap_or_else(|err| {
        format!(
            "# cannot write this expectation as TOML: {}\n",
            comment(&err.to_string())
        )
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::expectations::{MatchRegex, NotNull};
    use crate::spec::DatasetSpec;
    use crate::validate::validate_csv;

    const TELCO_SPEC: &str = include_str!("../../../../config/datasets/telco-churn.toml");

    fn telco_columns() -> Vec<String> {
        DatasetSpec::parse(TELCO_SPEC, "t")
            .unwrap()
            .spec
            .columns
            .iter()
            .map(|c| c.name.clone())
            .collect()
    }

    /// A GE 1.x suite for the Telco file, as `suite.to_json_dict()` writes it.
    const SUITE: &str = r#"{
  "name": "telco_churn.critical",
  "id": "9c1e2f0a-5d4b-4e0e-8f7a-2b8d1c3e4f50",
  "expectations": [
    {
      "type": "expect_table_row_count_to_be_between",
      "kwargs": {"min_value": 1000, "max_value": 10000000},
      "meta": {},
      "id": "0b6f3a51-0d55-4a0e-9c3c-1d7a6e1f0001",
      "severity": "critical"
    },
    {
      "type": "expect_table_columns_to_match_set",
      "kwargs": {
        "column_set": ["customerID", "gender", "SeniorCitizen", "Partner", "Dependents", "tenure",
          "PhoneService", "MultipleLines", "InternetService", "OnlineSecurity", "OnlineBackup",
          "DeviceProtection", "TechSupport", "StreamingTV", "StreamingMovies", "Contract",
          "PaperlessBilling", "PaymentMethod", "MonthlyCharges", "TotalCharges", "Churn"],
        "exact_match": true
      },
      "meta": {},
      "id": "0b6f3a51-0d55-4a0e-9c3c-1d7a6e1f0002"
    },
    {
      "type": "expect_column_values_to_not_be_null",
      "kwargs": {"column": "customerID"},
      "meta": {},
      "id": "0b6f3a51-0d55-4a0e-9c3c-1d7a6e1f0003",
      "severity": "critical"
    },
    {
      "type": "expect_column_values_to_be_unique",
      "kwargs": {"column": "customerID"},
      "meta": {"notes": {"format": "markdown", "content": "One row per **customer**."}},
      "id": "0b6f3a51-0d55-4a0e-9c3c-1d7a6e1f0004"
    },
    {
      "type": "expect_column_values_to_match_regex",
      "kwargs": {"column": "customerID", "regex": "^\\d{4}-[A-Z]{5}$", "result_format": "SUMMARY"},
      "meta": {},
      "id": "0b6f3a51-0d55-4a0e-9c3c-1d7a6e1f0005"
    },
    {
      "type": "expect_column_value_lengths_to_be_between",
      "kwargs": {"column": "customerID", "min_value": 10, "max_value": 10},
      "meta": {}
    },
    {
      "type": "expect_column_values_to_be_in_set",
      "kwargs": {"column": "Contract", "value_set": ["Month-to-month", "One year", "Two year"]},
      "meta": {}
    },
    {
      "type": "expect_column_values_to_be_in_set",
      "kwargs": {"column": "SeniorCitizen", "value_set": [0, 1]},
      "meta": {}
    },
    {
      "type": "expect_column_values_to_be_between",
      "kwargs": {"column": "tenure", "min_value": 0, "max_value": 72, "strict_min": false, "strict_max": false},
      "meta": {}
    },
    {
      "type": "expect_column_values_to_not_be_null",
      "kwargs": {"column": "TotalCharges", "mostly": 0.99},
      "meta": {},
      "severity": "warning"
    },
    {
      "type": "expect_column_values_to_be_of_type",
      "kwargs": {"column": "tenure", "type_": "int64"},
      "meta": {}
    },
    {
      "type": "expect_column_distinct_values_to_be_in_set",
      "kwargs": {"column": "PaymentMethod", "value_set": ["Bank transfer (automatic)", "Credit card (automatic)", "Electronic check", "Mailed check"]},
      "meta": {}
    },
    {
      "type": "expect_column_proportion_of_unique_values_to_be_between",
      "kwargs": {"column": "customerID", "min_value": 1.0, "max_value": 1.0},
      "meta": {}
    },
    {
      "type": "expect_column_mean_to_be_between",
      "kwargs": {"column": "MonthlyCharges", "min_value": 50, "max_value": 80},
      "meta": {}
    },
    {
      "type": "expect_column_median_to_be_between",
      "kwargs": {"column": "tenure", "min_value": 20, "max_value": 40},
      "meta": {}
    },
    {
      "type": "expect_column_stdev_to_be_between",
      "kwargs": {"column": "TotalCharges", "min_value": 1500, "max_value": 3000},
      "meta": {},
      "severity": "info"
    },
    {
      "type": "expect_column_min_to_be_between",
      "kwargs": {"column": "MonthlyCharges", "min_value": 0, "max_value": 30, "strict_min": true},
      "meta": {}
    },
    {
      "type": "expect_column_max_to_be_between",
      "kwargs": {"column": "tenure", "min_value": 60, "max_value": 72},
      "meta": {}
    },
    {
      "type": "expect_column_pair_values_a_to_be_greater_than_b",
      "kwargs": {"column_A": "TotalCharges", "column_B": "MonthlyCharges", "or_equal": true, "ignore_row_if": "either_value_is_missing"},
      "meta": {}
    },
    {
      "type": "expect_column_pair_values_a_to_be_greater_than_b",
      "kwargs": {"column_A": "tenure", "column_B": "SeniorCitizen", "or_equal": true, "mostly": 0.9},
      "meta": {}
    },
    {
      "type": "expect_compound_columns_to_be_unique",
      "kwargs": {"column_list": ["customerID", "gender"], "ignore_row_if": "all_values_are_missing"},
      "meta": {}
    },
    {
      "type": "expect_column_kl_divergence_to_be_less_than",
      "kwargs": {
        "column": "InternetService",
        "partition_object": {"values": ["DSL", "Fiber optic", "No"], "weights": [0.34, 0.44, 0.22]},
        "threshold": 0.05
      },
      "meta": {}
    },
    {
      "type": "expect_column_kl_divergence_to_be_less_than",
      "kwargs": {
        "column": "tenure",
        "partition_object": {"bins": [0, 12, 24, 36, 48, 60, 72], "weights": [0.29, 0.15, 0.12, 0.11, 0.12, 0.21]},
        "threshold": 0.05,
        "tail_weight_holdout": 0,
        "bucketize_data": true
      },
      "meta": {}
    },
    {
      "type": "expect_column_values_to_be_between",
      "kwargs": {"column": "MonthlyCharges", "min_value": 60, "row_condition": "Contract==\"Two year\"", "condition_parser": "pandas"},
      "meta": {}
    },
    {
      "type": "expect_column_values_to_be_dateutil_parseable",
      "kwargs": {"column": "customerID"},
      "meta": {}
    },
    {
      "type": "expect_column_to_exist",
      "kwargs": {"column": "Churn"},
      "meta": {}
    },
    {
      "type": "expect_column_max_to_be_between",
      "kwargs": {"column": "MonthlyCharges", "max_value": {"$PARAMETER": "max_monthly_charge"}},
      "meta": {}
    },
    {
      "type": "expect_column_values_to_match_regex",
      "kwargs": {"column": "customerID", "regex": "^(?!0000)\\d{4}-"},
      "meta": {}
    },
    {
      "type": "expect_column_values_to_be_between",
      "kwargs": {"column": "tenure", "min_value": 0, "parse_strings_as_datetimes": true},
      "meta": {}
    }
  ],
  "meta": {"great_expectations_version": "1.3.9"},
  "notes": null
}"#;

    fn telco_with(expectations_toml: &str) -> String {
        // The shipped spec's own expectations are kept: the imported ones come after.
        TELCO_SPEC.replace("\n[model]", &format!("\n{expectations_toml}\n[model]"))
    }

    #[test]
    fn imports_a_ge_1x_suite_for_telco() {
        let s = import_ge_suite(SUITE, &telco_columns()).unwrap();
        assert_eq!(s.name, "telco_churn.critical");
        let unmapped: Vec<(usize, &str)> = s
            .unmapped
            .iter()
            .map(|(i, t, _)| (*i, t.as_str()))
            .collect();
        assert_eq!(
            unmapped,
            vec![
                (23, "expect_column_values_to_be_between"),
                (24, "expect_column_values_to_be_dateutil_parseable"),
                (25, "expect_column_to_exist"),
                (26, "expect_column_max_to_be_between"),
                (27, "expect_column_values_to_match_regex"),
                (28, "expect_column_values_to_be_between"),
            ]
        );
        let reason = |i: usize| &s.unmapped.iter().find(|u| u.0 == i).unwrap().2;
        assert!(reason(23).contains("row_condition"), "{}", reason(23));
        assert!(reason(24).contains("not supported"), "{}", reason(24));
        assert!(reason(25).contains("implied"), "{}", reason(25));
        assert!(reason(26).contains("suite parameter"), "{}", reason(26));
        assert!(reason(27).contains("does not compile"), "{}", reason(27));
        assert!(
            reason(28).contains("parse_strings_as_datetimes"),
            "{}",
            reason(28)
        );
        assert_eq!(s.expectations.len(), 23);
        // Unmapped expectations are named in the TOML too.
        for i in 23..=28 {
            assert!(
                s.toml
                    .contains(&format!("# NOT IMPORTED: GE expectation {i} (")),
                "{}",
                s.toml
            );
        }
        // Severity: critical → error, warning → warning, info → warning with a note.
        assert_eq!(s.expectations[0].severity(), Severity::Error);
        assert_eq!(s.expectations[9].severity(), Severity::Warning);
        assert_eq!(s.expectations[15].severity(), Severity::Warning);
        assert!(s.notes.iter().any(|(i, n)| *i == 15 && n.contains("info")));
        // GE's default ignore_row_if for pairs differs: noted, not hidden.
        assert!(
            s.notes
                .iter()
                .any(|(i, n)| *i == 19 && n.contains("ignore_row_if")),
            "{:?}",
            s.notes
        );
        assert_eq!(
            s.expectations[4],
            Expectation::MatchRegex(MatchRegex {
                column: "customerID".into(),
                regex: r"^\d{4}-[A-Z]{5}$".into(),
                mostly: None,
                severity: Severity::Error,
            })
        );
        assert!(s.toml.contains("# meta: {\"notes\""), "{}", s.toml);

        // The TOML is a valid part of a spec, and reads back as the same expectations.
        let text = telco_with(&s.toml);
        let parsed = DatasetSpec::parse(&text, "imported.toml")
            .unwrap_or_else(|e| panic!("{e}\n{}", s.toml));
        let shipped = DatasetSpec::parse(TELCO_SPEC, "t")
            .unwrap()
            .spec
            .expectations
            .len();
        assert_eq!(&parsed.spec.expectations[shipped..], &s.expectations[..]);

        // And the Telco file meets the imported suite.
        let csv = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../data/telco-churn/telco_customer_churn.csv"
        ))
        .unwrap();
        let report = validate_csv(&csv[..], Arc::new(parsed.spec), 4096);
        assert!(report.success, "{:#?}", report.reasons());
        assert!(report.warnings().is_empty(), "{:?}", report.warnings());
    }

    #[test]
    fn accepts_ge_0x_keys() {
        let json = r#"{
          "expectation_suite_name": "legacy",
          "data_asset_type": null,
          "expectations": [
            {"expectation_type": "expect_column_values_to_not_be_null", "kwargs": {"column": "tenure", "mostly": 0.5}, "meta": {}}
          ],
          "meta": {"great_expectations_version": "0.18.12"}
        }"#;
        let s = import_ge_suite(json, &telco_columns()).unwrap();
        assert_eq!(s.name, "legacy");
        assert_eq!(
            s.expectations,
            vec![Expectation::NotNull(NotNull {
                column: "tenure".into(),
                mostly: Some(0.5),
                severity: Severity::Error
            })]
        );
        assert!(s.unmapped.is_empty());
        assert!(
            s.toml
                .contains("expectation = \"expect_column_values_to_not_be_null\"")
        );
        assert!(s.toml.contains("mostly = 0.5"));
    }

    #[test]
    fn an_unknown_column_is_an_error_naming_index_and_column() {
        let json = r#"{"name": "s", "expectations": [
            {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "tenure"}},
            {"type": "expect_column_pair_values_a_to_be_greater_than_b", "kwargs": {"column_A": "tenure", "column_B": "Tenure"}}
        ]}"#;
        let e = import_ge_suite(json, &telco_columns()).unwrap_err();
        assert_eq!(
            e,
            ImportError::UnknownColumn {
                index: 1,
                expectation: "expect_column_pair_values_a_to_be_greater_than_b".into(),
                column: "Tenure".into()
            }
        );
        assert!(e.to_string().contains("expectation 1"), "{e}");
        let json = r#"{"name": "s", "expectations": [
            {"type": "expect_compound_columns_to_be_unique", "kwargs": {"column_list": ["customerID", "email"]}}
        ]}"#;
        assert!(matches!(
            import_ge_suite(json, &telco_columns()),
            Err(ImportError::UnknownColumn { index: 0, ref column, .. }) if column == "email"
        ));
    }

    #[test]
    fn malformed_suites_are_refused() {
        let cols = telco_columns();
        assert!(matches!(
            import_ge_suite("{", &cols),
            Err(ImportError::Json(_))
        ));
        assert!(matches!(
            import_ge_suite("[]", &cols),
            Err(ImportError::NotASuite(_))
        ));
        assert!(matches!(
            import_ge_suite(r#"{"name": "x"}"#, &cols),
            Err(ImportError::NotASuite(_))
        ));
        let e = import_ge_suite(
            r#"{"name": "x", "expectations": [{"kwargs": {"column": "tenure"}}]}"#,
            &cols,
        )
        .unwrap_err();
        assert!(e.to_string().contains("expectation 0"), "{e}");
    }

    #[test]
    fn unsupported_arguments_and_values_are_named() {
        let cols = telco_columns();
        let one = |kwargs: &str, extra: &str| {
            let json = format!(
                r#"{{"name": "x", "expectations": [{{"type": "expect_column_mean_to_be_between", "kwargs": {kwargs}{extra}}}]}}"#
            );
            import_ge_suite(&json, &cols).unwrap()
        };
        let s = one(r#"{"column": "tenure"}"#, "");
        assert!(
            s.unmapped[0].2.contains("observation-only"),
            "{:?}",
            s.unmapped
        );
        let s = one(
            r#"{"column": "tenure", "min_value": 5, "max_value": 1}"#,
            "",
        );
        assert!(
            s.unmapped[0].2.contains("above max_value"),
            "{:?}",
            s.unmapped
        );
        let s = one(r#"{"column": "tenure", "min_value": 1, "mostly": 0.5}"#, "");
        assert_eq!(s.expectations.len(), 0);
        assert!(s.unmapped[0].2.contains("`mostly`"), "{:?}", s.unmapped);
        let s = one(r#"{"column": "tenure", "min_value": "2020-01-01"}"#, "");
        assert!(
            s.unmapped[0].2.contains("should be a number"),
            "{:?}",
            s.unmapped
        );
        let s = one(
            r#"{"column": "tenure", "min_value": 1}"#,
            r#", "severity": "fatal""#,
        );
        assert!(s.unmapped[0].2.contains("severity"), "{:?}", s.unmapped);
        let s = one(
            r#"{"column": "tenure", "min_value": 1, "row_condition": "", "condition_parser": "pandas", "catch_exceptions": true}"#,
            "",
        );
        assert_eq!(s.expectations.len(), 1, "{:?}", s.unmapped);
        // Hostile text stays inside its comment.
        let json = r#"{"name": "x\n[[expectations]]\nexpectation = \"boom\"", "expectations": [
            {"type": "expect_nothing\n[model]", "kwargs": {}}
        ]}"#;
        let s = import_ge_suite(json, &cols).unwrap();
        assert_eq!(s.unmapped.len(), 1);
        let text = telco_with(&s.toml);
        let parsed = DatasetSpec::parse(&text, "t").unwrap_or_else(|e| panic!("{e}\n{}", s.toml));
        assert_eq!(
            parsed.spec.expectations.len(),
            DatasetSpec::parse(TELCO_SPEC, "t")
                .unwrap()
                .spec
                .expectations
                .len()
        );
    }
}
