//! A validated batch's data quality as Prometheus metrics (the data-quality
//! dashboard reads them): the expectations evaluated and every failing one by
//! dataset, expectation, column and severity, each column's share of nulls in
//! the last batch, and the rows validated.
//!
//! Label values come from the dataset's spec (its expectations' GE names and
//! columns), never from the batch's cells, so a producer cannot mint series.

use std::collections::BTreeMap;

use modelbus_dataset::validate::ValidationReport;

/// The expectation whose unexpected values are the nulls themselves (it sets
/// `missing_count` to 0).
const NOT_NULL: &str = "expect_column_values_to_not_be_null";

/// Records `report`'s figures for `dataset`.
pub(crate) fn record(dataset: &str, report: &ValidationReport) {
    metrics::counter!("modelbus_ingest_validation_rows_total", "dataset" => dataset.to_string())
        .increment(report.rows);
    metrics::counter!("modelbus_ingest_expectations_evaluated_total", "dataset" => dataset.to_string())
        .increment(report.results.len() as u64);
    // Every expectation of the batch, passing ones at 0: a series then exists
    // before its first failure, which dashboards and alerts see as an increase.
    for r in &report.results {
        metrics::counter!(
            "modelbus_ingest_expectation_failures_total",
            "dataset" => dataset.to_string(),
            "expectation" => r.expectation.clone(),
            "column" => column(r).unwrap_or_default(),
            "severity" => r.severity.to_string(),
        )
        .increment(u64::from(!r.success));
    }
    for (column, ratio) in null_ratios(report) {
        metrics::gauge!("modelbus_ingest_null_ratio", "dataset" => dataset.to_string(), "column" => column)
            .set(ratio);
    }
}

/// The column an expectation is about, if it is about one.
fn column(r: &modelbus_dataset::validate::ExpectationResult) -> Option<String> {
    r.kwargs
        .get("column")
        .and_then(|c| c.as_str())
        .map(str::to_string)
}

/// Each column's share of null cells, from the expectations on it (every
/// declared column has at least its implied type check).
fn null_ratios(report: &ValidationReport) -> BTreeMap<String, f64> {
    let mut out: BTreeMap<String, f64> = BTreeMap::new();
    for r in &report.results {
        let (Some(c), n) = (column(r), r.result.element_count) else {
            continue;
        };
        if n == 0 {
            continue;
        }
        let nulls = if r.expectation == NOT_NULL {
            r.result.unexpected_count
        } else {
            r.result.missing_count
        };
        let ratio = nulls as f64 / n as f64;
        let e = out.entry(c).or_insert(0.0);
        *e = e.max(ratio);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_ratios_read_missing_counts_and_the_not_null_check() {
        let report: ValidationReport = serde_json::from_value(serde_json::json!({
            "success": false, "dataset": "d", "spec_digest": "x", "rows": 10,
            "columns": ["a", "b"],
            "statistics": {"evaluated_expectations": 3, "successful_expectations": 1,
                           "unsuccessful_expectations": 2, "success_percent": 33.3},
            "results": [
                {"expectation": "expect_column_values_to_be_in_set", "kwargs": {"column": "a"},
                 "implied": false, "severity": "warning", "success": false,
                 "result": {"element_count": 10, "missing_count": 2, "unexpected_count": 1,
                            "unexpected_percent": 12.5, "partial_unexpected_list": []}},
                {"expectation": NOT_NULL, "kwargs": {"column": "b"},
                 "implied": true, "severity": "error", "success": false,
                 "result": {"element_count": 10, "missing_count": 0, "unexpected_count": 5,
                            "unexpected_percent": 50.0, "partial_unexpected_list": []}},
                {"expectation": "expect_table_row_count_to_be_between", "kwargs": {},
                 "implied": false, "severity": "error", "success": true,
                 "result": {"element_count": 10, "missing_count": 0, "unexpected_count": 0,
                            "unexpected_percent": 0.0, "partial_unexpected_list": []}}
            ]
        }))
        .unwrap();
        let ratios = null_ratios(&report);
        assert_eq!(ratios.len(), 2);
        assert_eq!(ratios["a"], 0.2);
        assert_eq!(ratios["b"], 0.5);
    }
}
