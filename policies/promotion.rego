# Promotion gates: may a trained version become a candidate (and go to staging)?
#
# Input (built by the registry from the version's evaluation report):
#   model, version               the version being decided
#   gates                        the dataset spec's [gates] table
#   evaluation                   holdout metrics: roc_auc, pr_auc, log_loss, brier,
#                                ece, slices: [{column, value, rows, roc_auc, ...}]
#   comparison                   null, or the current champion on the same holdout:
#                                {champion_version, delta_roc_auc, ...}
#   validation                   {success, rows, warnings: [...]} of the batch
#
# Output: allow (bool), deny (set of reasons), checks (every gate evaluated, with
# its outcome) -- the registry stores all three with the version.
package modelbus.promotion

import rego.v1

# Defaults for gates the spec does not set.
defaults := {
	"max_roc_auc_drop": 0.01,
	"max_ece": 0.05,
	"slices": {},
}

spec_gates := object.get(input, "gates", {})

gates := object.union(defaults, object.filter(spec_gates, [k | some k, v in spec_gates; v != null]))

evaluation := object.get(input, "evaluation", {})

# A metric of the evaluation, or null when it is missing.
metric(name) := object.get(evaluation, name, null)

# Comparisons fail closed: a missing or non-numeric value never passes.
at_least(v, bound) := true if {
	is_number(v)
	v >= bound
} else := false

at_most(v, bound) := true if {
	is_number(v)
	v <= bound
} else := false

fmt(v) := sprintf("%.4f", [v]) if is_number(v) else := "missing"

default allow := false

allow if count(deny) == 0

deny contains sprintf("gate %s failed: %s", [c.gate, c.detail]) if {
	some c in checks
	not c.passed
}

# Never promote blind: the evaluation must be there.
deny contains "the input has no evaluation: nothing to judge the model by" if {
	not input.evaluation
}

checks contains {
	"gate": "min_roc_auc",
	"passed": at_least(metric("roc_auc"), gates.min_roc_auc),
	"detail": sprintf("roc_auc %s must be at least %v", [fmt(metric("roc_auc")), gates.min_roc_auc]),
} if {
	gates.min_roc_auc
}

checks contains {
	"gate": "min_pr_auc",
	"passed": at_least(metric("pr_auc"), gates.min_pr_auc),
	"detail": sprintf("pr_auc %s must be at least %v", [fmt(metric("pr_auc")), gates.min_pr_auc]),
} if {
	gates.min_pr_auc
}

checks contains {
	"gate": "max_log_loss",
	"passed": at_most(metric("log_loss"), gates.max_log_loss),
	"detail": sprintf("log_loss %s must be at most %v", [fmt(metric("log_loss")), gates.max_log_loss]),
} if {
	gates.max_log_loss
}

checks contains {
	"gate": "max_brier",
	"passed": at_most(metric("brier"), gates.max_brier),
	"detail": sprintf("brier %s must be at most %v", [fmt(metric("brier")), gates.max_brier]),
} if {
	gates.max_brier
}

# Calibration: expected calibration error on the holdout.
checks contains {
	"gate": "max_ece",
	"passed": at_most(metric("ece"), gates.max_ece),
	"detail": sprintf("expected calibration error %s must be at most %v", [fmt(metric("ece")), gates.max_ece]),
}

# Champion/challenger: not worse than the current champion by more than the allowed drop.
checks contains {
	"gate": "max_roc_auc_drop",
	"passed": at_least(c.delta_roc_auc, 0 - gates.max_roc_auc_drop),
	"detail": sprintf(
		"roc_auc %s vs champion v%v: change %s, allowed drop %v",
		[fmt(metric("roc_auc")), c.champion_version, fmt(c.delta_roc_auc), gates.max_roc_auc_drop],
	),
} if {
	c := input.comparison
	c != null
}

# Per-slice minimum ROC AUC, e.g. gates.slices = {"Contract": 0.6}. A slice with a
# single class (roc_auc null) cannot be judged and fails its gate.
checks contains {
	"gate": sprintf("slice_min_roc_auc[%s=%s]", [s.column, s.value]),
	"passed": at_least(object.get(s, "roc_auc", null), minimum),
	"detail": sprintf(
		"roc_auc %s on %v rows where %s = %s must be at least %v",
		[fmt(object.get(s, "roc_auc", null)), s.rows, s.column, s.value, minimum],
	),
} if {
	some s in object.get(evaluation, "slices", [])
	minimum := gates.slices[s.column]
}

# The batch the model was trained on passed validation.
checks contains {
	"gate": "validation",
	"passed": v.success == true,
	"detail": sprintf("validation of %v rows succeeded with %v warning(s)", [v.rows, count(v.warnings)]),
} if {
	v := input.validation
}
