# Unit tests of the promotion policy (`modelbus policies test`).
package modelbus.promotion_test

import rego.v1

import data.modelbus.promotion

base := {
	"model": "telco-churn",
	"version": 2,
	"gates": {"min_roc_auc": 0.8, "slices": {"Contract": 0.6}},
	"evaluation": {
		"roc_auc": 0.85, "pr_auc": 0.66, "log_loss": 0.41, "brier": 0.13, "ece": 0.02,
		"slices": [
			{"column": "Contract", "value": "Month-to-month", "rows": 700, "roc_auc": 0.75},
			{"column": "Contract", "value": "Two year", "rows": 300, "roc_auc": 0.65},
		],
	},
	"comparison": {"champion_version": 1, "delta_roc_auc": 0.002},
	"validation": {"success": true, "rows": 7043, "warnings": []},
}

test_a_good_model_is_allowed if {
	promotion.allow with input as base
	count(promotion.deny) == 0 with input as base
}

test_below_min_roc_auc_is_denied if {
	inp := json.patch(base, [{"op": "replace", "path": "/evaluation/roc_auc", "value": 0.79}])
	not promotion.allow with input as inp
	some msg in promotion.deny with input as inp
	contains(msg, "min_roc_auc")
}

test_worse_than_champion_by_more_than_the_drop_is_denied if {
	inp := json.patch(base, [{"op": "replace", "path": "/comparison/delta_roc_auc", "value": -0.011}])
	not promotion.allow with input as inp
	some msg in promotion.deny with input as inp
	contains(msg, "max_roc_auc_drop")
}

test_slightly_worse_than_champion_is_allowed if {
	inp := json.patch(base, [{"op": "replace", "path": "/comparison/delta_roc_auc", "value": -0.009}])
	promotion.allow with input as inp
}

test_no_champion_skips_the_comparison if {
	inp := json.patch(base, [{"op": "replace", "path": "/comparison", "value": null}])
	promotion.allow with input as inp
	checks := promotion.checks with input as inp
	every c in checks {
		c.gate != "max_roc_auc_drop"
	}
}

test_poor_calibration_is_denied if {
	inp := json.patch(base, [{"op": "replace", "path": "/evaluation/ece", "value": 0.06}])
	not promotion.allow with input as inp
}

test_the_spec_can_relax_calibration if {
	inp := json.patch(base, [
		{"op": "replace", "path": "/evaluation/ece", "value": 0.06},
		{"op": "add", "path": "/gates/max_ece", "value": 0.1},
	])
	promotion.allow with input as inp
}

test_a_slice_below_its_minimum_is_denied if {
	inp := json.patch(base, [{"op": "replace", "path": "/evaluation/slices/1/roc_auc", "value": 0.55}])
	not promotion.allow with input as inp
	some msg in promotion.deny with input as inp
	contains(msg, "Contract=Two year")
}

test_a_single_class_slice_cannot_pass_its_gate if {
	inp := json.patch(base, [{"op": "replace", "path": "/evaluation/slices/1/roc_auc", "value": null}])
	not promotion.allow with input as inp
}

test_unconfigured_slices_are_not_gated if {
	inp := json.patch(base, [{"op": "replace", "path": "/gates/slices", "value": {}}, {"op": "replace", "path": "/evaluation/slices/1/roc_auc", "value": 0.1}])
	promotion.allow with input as inp
}

test_a_failed_validation_is_denied if {
	inp := json.patch(base, [{"op": "replace", "path": "/validation/success", "value": false}])
	not promotion.allow with input as inp
}

test_every_gate_reports_a_check if {
	gates := {c.gate | some c in promotion.checks} with input as base
	gates == {"min_roc_auc", "max_ece", "max_roc_auc_drop", "slice_min_roc_auc[Contract=Month-to-month]", "slice_min_roc_auc[Contract=Two year]", "validation"}
}

test_no_evaluation_is_denied if {
	not promotion.allow with input as {"gates": {"min_roc_auc": 0.8}}
	not promotion.allow with input as {}
}

test_a_missing_metric_fails_its_gate if {
	inp := json.patch(base, [{"op": "remove", "path": "/evaluation/roc_auc"}])
	not promotion.allow with input as inp
	some msg in promotion.deny with input as inp
	contains(msg, "roc_auc missing")
}
