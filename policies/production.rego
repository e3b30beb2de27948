# Promotion to production: may this version replace what production serves?
#
# Evaluated by the registry when an approval arrives (and again as the staging
# soak runs), and again by the deployer on the evidence it gathered itself.
# Signatures are verified in Rust before this runs; each approval arrives with
# the outcome of that check.
#
# Input:
#   model, version, model_sha256   the version to promote
#   author                         principal whose token submitted its batch
#   gates                          {passed: bool} of the promotion gates
#   staging                        {deployed: bool, soaked_seconds, required_soak_seconds,
#                                   requests, errors, error_rate, max_error_rate,
#                                   min_requests} for this digest in staging; a
#                                   missing min_requests means 1 (fail closed)
#   approvals, rejections          [{approver, role, signature_valid, expired, revoked}]
#   min_approvals                  distinct approvals required (2 by default)
#
# Output: allow (bool), deny (set of reasons) and ignored (the approvals that do
# not count, with why).
package modelbus.production

import rego.v1

default allow := false

allow if count(deny) == 0

min_approvals := object.get(input, "min_approvals", 2)

staging := object.get(input, "staging", {})

author := object.get(input, "author", "")

# A batch dropped on the bus names its submitter without proof
# ("unverified:<name>"): that name may not approve the version either.
author_names := {author, trim_prefix(author, "unverified:")}

# Why one approval does not count (fields missing from an approval count against it).
problems(a) := {msg |
	some check in [
		[object.get(a, "signature_valid", false) != true, "its signature does not verify"],
		[object.get(a, "expired", true) != false, "it has expired"],
		[object.get(a, "revoked", true) != false, "the approver was revoked"],
		[object.get(a, "role", "") != "approver", sprintf("the signer's role is %v, not approver", [object.get(a, "role", "none")])],
		[object.get(a, "approver", "") in author_names, "the signer is the version's author"],
	]
	check[0]
	msg := check[1]
}

valid(a) if count(problems(a)) == 0

approvers := {a.approver | some a in object.get(input, "approvals", []); valid(a)}

deny contains "the promotion gates did not pass" if object.get(object.get(input, "gates", {}), "passed", false) != true

deny contains sprintf("%s v%d was never deployed to staging", [input.model, input.version]) if {
	object.get(staging, "deployed", false) != true
}

deny contains sprintf("staging soak %ds is shorter than the required %ds", [staging.soaked_seconds, staging.required_soak_seconds]) if {
	staging.deployed
	staging.soaked_seconds < staging.required_soak_seconds
}

deny contains sprintf("staging error rate %.4f is above the objective %.4f (%d errors in %d requests)", [staging.error_rate, staging.max_error_rate, staging.errors, staging.requests]) if {
	staging.deployed
	staging.error_rate > staging.max_error_rate
}

# Fail closed: without a stated minimum, at least one request.
min_staging_requests := object.get(staging, "min_requests", 1)

deny contains sprintf("staging served %d requests, fewer than the %d required to judge its error rate", [object.get(staging, "requests", 0), min_staging_requests]) if {
	staging.deployed
	object.get(staging, "requests", 0) < min_staging_requests
}

# Invalid approvals are reported and ignored, never a reason to deny: one
# expired or revoked signature among a version's approvals must not block it
# forever once enough valid ones exist.
ignored contains sprintf("approval by %s does not count: %s", [a.approver, concat(", ", sort(problems(a)))]) if {
	some a in object.get(input, "approvals", [])
	not valid(a)
}

deny contains sprintf("%d valid approval(s) from distinct approvers (%s); %d required", [count(approvers), concat(", ", sort(approvers)), min_approvals]) if {
	count(approvers) < min_approvals
}

deny contains sprintf("rejected by %s: %s", [r.approver, object.get(r, "comment", "")]) if {
	some r in object.get(input, "rejections", [])
	object.get(r, "signature_valid", false) == true
	object.get(r, "revoked", true) == false
	object.get(r, "expired", true) == false
}
