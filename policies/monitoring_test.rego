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

perf(estimated, realised) := p if {
	base := {"holdout": {"roc_auc": 0.84}, "estimated": estimated}
	p := object.union(base, realised)
}

with_perf(w, p) := object.union(w, {"performance": p})

test_estimated_drop_is_degraded_at_close if {
	inp := with_perf(window(1000, [col("a", false)], 0, false), perf({"rows": 1000, "roc_auc": 0.76}, {}))
	d := monitoring.decisions with input as inp
	count(d) == 1
	some x in d
	x.kind == "performance.degraded"
	contains(x.reason, "estimated ROC AUC 0.760")
}

test_estimated_within_margin_is_fine if {
	inp := with_perf(window(1000, [col("a", false)], 0, false), perf({"rows": 1000, "roc_auc": 0.82}, {}))
	count(monitoring.decisions) == 0 with input as inp
}

test_realised_drop_needs_enough_labels if {
	low := {"realised": {"rows": 500, "positives": 130, "roc_auc": 0.70}}
	few := {"realised": {"rows": 50, "positives": 13, "roc_auc": 0.70}}
	w := window(1000, [col("a", true)], 1, true)
	d := monitoring.decisions with input as with_perf(w, perf({"rows": 1000, "roc_auc": 0.83}, low))
	count(d) == 1
	some x in d
	x.kind == "performance.degraded"
	contains(x.reason, "live ROC AUC 0.700")

	# Re-evaluated after labels, drift is not decided again.
	count(monitoring.decisions) == 0 with input as with_perf(w, perf({"rows": 1000, "roc_auc": 0.83}, few))
}

test_a_one_class_window_has_no_realised_auc_and_decides_nothing if {
	one := {"realised": {"rows": 500, "positives": 0}}
	inp := with_perf(window(1000, [col("a", false)], 0, false), perf({"rows": 1000, "roc_auc": 0.83}, one))
	count(monitoring.decisions) == 0 with input as inp
}

test_multivariate_drift_names_the_features if {
	m := {"method": "pca_reconstruction", "error": 2.1, "lower": 1.0, "upper": 1.4, "drifted": true, "top_features": [["tenure", 0.9, 0.2], ["TotalCharges", 0.7, 0.1]]}
	inp := object.union(window(1000, [col("a", false)], 0, false), {"multivariate": m})
	d := monitoring.decisions with input as inp
	count(d) == 1
	some x in d
	contains(x.reason, "multivariate drift")
	contains(x.reason, "tenure, TotalCharges")
}
