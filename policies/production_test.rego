# Unit tests of the production promotion policy (`modelbus policies test`).
package modelbus.production_test

import rego.v1

import data.modelbus.production

approval(who) := {"approver": who, "role": "approver", "signature_valid": true, "expired": false, "revoked": false}

base := {
	"model": "telco-churn",
	"version": 4,
	"model_sha256": "ab",
	"author": "pat",
	"gates": {"passed": true},
	"staging": {
		"deployed": true, "soaked_seconds": 900, "required_soak_seconds": 600,
		"requests": 1000, "errors": 2, "error_rate": 0.002, "max_error_rate": 0.01, "min_requests": 100,
	},
	"approvals": [approval("alice"), approval("bob")],
	"rejections": [],
	"min_approvals": 2,
}

denied_with(inp, text) if {
	not production.allow with input as inp
	some msg in production.deny with input as inp
	contains(msg, text)
}

ignored_with(inp, text) if {
	some msg in production.ignored with input as inp
	contains(msg, text)
}

test_two_approvals_after_a_clean_soak_are_allowed if {
	production.allow with input as base
	count(production.deny) == 0 with input as base
}

test_one_approval_where_two_are_needed_is_denied if {
	denied_with(json.patch(base, [{"op": "remove", "path": "/approvals/1"}]), "1 valid approval(s)")
}

test_the_same_approver_twice_counts_once if {
	denied_with(json.patch(base, [{"op": "replace", "path": "/approvals/1", "value": approval("alice")}]), "1 valid approval(s)")
}

test_the_author_cannot_approve_their_own_version if {
	inp := json.patch(base, [{"op": "add", "path": "/approvals/-", "value": approval("pat")}, {"op": "remove", "path": "/approvals/1"}])
	ignored_with(inp, "the signer is the version's author")
	denied_with(inp, "1 valid approval(s)")
}

test_the_claimed_submitter_of_a_bus_batch_cannot_approve_it if {
	inp := json.patch(base, [{"op": "replace", "path": "/author", "value": "unverified:alice"}])
	ignored_with(inp, "approval by alice does not count: the signer is the version's author")
	denied_with(inp, "1 valid approval(s)")
}

test_expired_and_revoked_approvals_do_not_count if {
	inp := json.patch(base, [
		{"op": "replace", "path": "/approvals/0/expired", "value": true},
		{"op": "replace", "path": "/approvals/1/revoked", "value": true},
	])
	ignored_with(inp, "it has expired")
	ignored_with(inp, "the approver was revoked")
	denied_with(inp, "0 valid approval(s)")
}

test_an_invalid_approval_beside_enough_valid_ones_does_not_block if {
	expired := object.union(approval("carol"), {"expired": true})
	inp := json.patch(base, [{"op": "add", "path": "/approvals/-", "value": expired}])
	production.allow with input as inp
	ignored_with(inp, "approval by carol does not count: it has expired")
}

test_an_operator_signature_is_not_an_approval if {
	inp := json.patch(base, [{"op": "replace", "path": "/approvals/1/role", "value": "operator"}])
	ignored_with(inp, "not approver")
	denied_with(inp, "1 valid approval(s)")
}

test_a_bad_signature_does_not_count if {
	inp := json.patch(base, [{"op": "replace", "path": "/approvals/0/signature_valid", "value": false}])
	ignored_with(inp, "does not verify")
	denied_with(inp, "1 valid approval(s)")
}

test_a_short_soak_is_denied if {
	denied_with(json.patch(base, [{"op": "replace", "path": "/staging/soaked_seconds", "value": 30}]), "shorter than the required")
}

test_never_in_staging_is_denied if {
	denied_with(json.patch(base, [{"op": "replace", "path": "/staging/deployed", "value": false}]), "never deployed to staging")
}

test_a_high_staging_error_rate_is_denied if {
	denied_with(json.patch(base, [{"op": "replace", "path": "/staging/error_rate", "value": 0.05}]), "error rate")
}

test_too_little_staging_traffic_is_denied_when_required if {
	denied_with(json.patch(base, [{"op": "replace", "path": "/staging/min_requests", "value": 5000}]), "fewer than the 5000 required")
}

test_a_soak_without_traffic_is_denied_even_without_a_minimum if {
	inp := json.patch(base, [
		{"op": "replace", "path": "/staging/requests", "value": 0},
		{"op": "remove", "path": "/staging/min_requests"},
	])
	denied_with(inp, "fewer than the 1 required")
}

test_failed_gates_are_denied if {
	denied_with(json.patch(base, [{"op": "replace", "path": "/gates/passed", "value": false}]), "gates did not pass")
}

test_a_valid_rejection_blocks if {
	rej := object.union(approval("carol"), {"comment": "drift on senior customers"})
	denied_with(json.patch(base, [{"op": "add", "path": "/rejections/-", "value": rej}]), "rejected by carol: drift on senior customers")
}

test_an_empty_input_fails_closed if {
	not production.allow with input as {}
}
