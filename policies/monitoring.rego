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
#   settings                        {min_rows, min_drifted_columns}
#
# Output: decisions, a set of {kind, reason}; kind is "drift.detected" (or,
# with live or estimated performance, "performance.degraded").
package modelbus.monitoring

import rego.v1

settings := object.get(input, "settings", {})

min_rows := object.get(settings, "min_rows", 100)

min_drifted_columns := object.get(settings, "min_drifted_columns", 1)

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
	count(drifted_features) >= min_drifted_columns
	reason := sprintf("feature drift: %s", [concat(", ", [describe(c) | some c in drifted_features])])
}

decisions contains {"kind": "drift.detected", "reason": reason} if {
	judged
	some c in input.drift.columns
	c.column == "@probability"
	c.drifted
	reason := sprintf("prediction drift: %s", [describe(c)])
}
