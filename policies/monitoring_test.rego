package modelbus.monitoring_test

import rego.v1

import data.modelbus.monitoring

col(name, drifted) := {"column": name, "method": "wasserstein", "score": 0.3, "threshold": 0.1, "drifted": drifted}

window(rows, columns, share, dataset) := {
	"environment": "production", "model": "m", "version": 1,
	"window": {"rows": rows, "dropped": 0},
	"drift": {"share": share, "drift_share": 0.5, "drifted": dataset, "columns": columns},
}

test_no_drift_no_decision if {
	count(monitoring.decisions) == 0 with input as window(1000, [col("a", false), col("@probability", false)], 0, false)
}

test_one_drifted_feature_is_reported_by_name if {
	d := monitoring.decisions with input as window(1000, [col("MonthlyCharges", true), col("b", false)], 0.5, false)
	count(d) == 1
	some x in d
	x.kind == "drift.detected"
	contains(x.reason, "MonthlyCharges (wasserstein 0.3000")
}

test_prediction_drift_and_dataset_drift_are_separate_reasons if {
	d := monitoring.decisions with input as window(1000, [col("a", true), col("@probability", true)], 1, true)
	count(d) == 3
}

test_a_small_window_decides_nothing if {
	count(monitoring.decisions) == 0 with input as window(99, [col("a", true)], 1, true)
}

test_settings_raise_the_bar if {
	inp := object.union(window(1000, [col("a", true), col("b", false)], 0.5, false), {"settings": {"min_drifted_columns": 2}})
	count(monitoring.decisions) == 0 with input as inp
}
