# Monitoring decisions: what a closed window of live traffic means.
#
# Evaluated by the monitor on every window it closes. The statistics are
# computed in Rust (Evidently's methods and defaults); this policy only decides
# what they mean, so a team changes its alerting here, not in code.
#
# Input:
#   environment, model, version     what served the window
#   window                          {rows, dropped}
#   drift                           {share, drift_share, drifted (the share rule),
#                                    columns: [{column, method, score, threshold, drifted}]}
#                                   the predicted probability is the column "@probability"
#   multivariate                    {method, error, lower, upper, drifted, top_features:
#                                    [[name, window error, reference error]]} (PCA
#                                    reconstruction, NannyML's method; absent without one)
#   settings                        {min_rows, min_drifted_columns, min_labels,
#                                    max_roc_auc_drop, max_estimated_roc_auc_drop}
#   performance                     {holdout: {roc_auc, ...} (the evaluation's figures),
#                                    estimated: {rows, roc_auc, accuracy, f1, ...} (CBPE),
#                                    realised: {rows, positives, roc_auc, ...} (from labels;
#                                    present only when labels joined the window),
#                                    label_coverage}
#                                   absent figures (one class only) are missing keys
#
# A window is evaluated twice: when it closes (drift and estimated
# performance; no `realised`) and again whenever labels join it (realised
# performance; drift is not decided again then).
#
# Output: decisions, a set of {kind, reason}; kind is "drift.detected" or
# "performance.degraded".
package modelbus.monitoring

import rego.v1

settings := object.get(input, "settings", {})

min_rows := object.get(settings, "min_rows", 100)

min_drifted_columns := object.get(settings, "min_drifted_columns", 1)

# Fewest labelled predictions a window needs before its realised figures count.
min_labels := object.get(settings, "min_labels", 100)

# How far below the evaluation's ROC AUC a window may fall.
max_roc_auc_drop := object.get(settings, "max_roc_auc_drop", 0.05)

max_estimated_roc_auc_drop := object.get(settings, "max_estimated_roc_auc_drop", 0.05)

performance := object.get(input, "performance", {})

# Re-evaluation after labels: performance only.
relabelled if performance.realised

# A window too small to judge decides nothing.
judged if input.window.rows >= min_rows

drifted_features := [c |
	some c in input.drift.columns
	c.drifted
	c.column != "@probability"
]

describe(c) := sprintf("%s (%s %.4f, threshold %v)", [c.column, c.method, c.score, c.threshold])

decisions contains {"kind": "drift.detected", "reason": reason} if {
	judged
	not relabelled
	input.drift.drifted
	reason := sprintf("dataset drift: %d of %d columns drifted (share %.2f ≥ %.2f)", [
		count([c | some c in input.drift.columns; c.drifted]),
		count(input.drift.columns),
		input.drift.share,
		input.drift.drift_share,
	])
}

decisions contains {"kind": "drift.detected", "reason": reason} if {
	judged
	not relabelled
	count(drifted_features) >= min_drifted_columns
	reason := sprintf("feature drift: %s", [concat(", ", [describe(c) | some c in drifted_features])])
}

decisions contains {"kind": "drift.detected", "reason": reason} if {
	judged
	not relabelled
	some c in input.drift.columns
	c.column == "@probability"
	c.drifted
	reason := sprintf("prediction drift: %s", [describe(c)])
}

decisions contains {"kind": "performance.degraded", "reason": reason} if {
	r := performance.realised
	r.rows >= min_labels
	h := performance.holdout.roc_auc
	h - r.roc_auc > max_roc_auc_drop
	reason := sprintf("live ROC AUC %.3f is %.3f below the evaluation's %.3f (%d labels, margin %.2f)", [
		r.roc_auc, h - r.roc_auc, h, r.rows, max_roc_auc_drop,
	])
}

decisions contains {"kind": "performance.degraded", "reason": reason} if {
	judged
	not relabelled
	e := performance.estimated
	h := performance.holdout.roc_auc
	h - e.roc_auc > max_estimated_roc_auc_drop
	reason := sprintf("estimated ROC AUC %.3f is %.3f below the evaluation's %.3f (CBPE over %d predictions, margin %.2f)", [
		e.roc_auc, h - e.roc_auc, h, e.rows, max_estimated_roc_auc_drop,
	])
}

decisions contains {"kind": "drift.detected", "reason": reason} if {
	judged
	not relabelled
	m := input.multivariate
	m.drifted
	reason := sprintf("multivariate drift: PCA reconstruction error %.3f outside [%.3f, %.3f]; most changed: %s", [
		m.error, m.lower, m.upper, concat(", ", [f[0] | some f in m.top_features]),
	])
}
