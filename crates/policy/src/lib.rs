//! Promotion gates and the production promotion rule as Rego policies
//! (`policies/`, evaluated with `regorus`), not hard-coded thresholds. The
//! registry and the deployer load the same policies, so the deployer can
//! re-decide a production promotion on evidence it gathered itself.
//!
//! Gates (`modelbus.promotion`): The input is the version's evaluation report, its
//! champion/challenger comparison and the validation summary of its batch; the
//! output is allow/deny with reasons and every gate checked, stored with the
//! version. The default policy is compiled into the binary; a policy directory
//! given in the configuration replaces it.
//!
//! Policies have their own Rego unit tests (`test_*` rules in `*_test` packages),
//! run by [`PolicySet::run_tests`] and `modelbus policies test`.

use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// One gate the promotion policy evaluated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateCheck {
    /// Gate.
    pub gate: String,
    /// Passed?
    pub passed: bool,
    /// Observed and required values.
    pub detail: String,
}

/// The shipped promotion policy.
pub const DEFAULT_POLICY: &str = include_str!("../../../policies/promotion.rego");
/// The shipped policy's tests.
pub const DEFAULT_POLICY_TESTS: &str = include_str!("../../../policies/promotion_test.rego");
/// The shipped production promotion policy.
pub const PRODUCTION_POLICY: &str = include_str!("../../../policies/production.rego");
/// Its tests.
pub const PRODUCTION_POLICY_TESTS: &str = include_str!("../../../policies/production_test.rego");
/// One monitoring decision: an event to raise and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitoringDecision {
    /// `drift.detected` or `performance.degraded`.
    pub kind: String,
    /// Why, for people.
    pub reason: String,
}

/// The shipped monitoring policy (what a closed window of live traffic means).
pub const MONITORING_POLICY: &str = include_str!("../../../policies/monitoring.rego");
/// Its tests.
pub const MONITORING_POLICY_TESTS: &str = include_str!("../../../policies/monitoring_test.rego");
/// Rule queried for monitoring decisions.
pub const MONITORING_DECISIONS: &str = "data.modelbus.monitoring.decisions";
/// Package of the production promotion rule.
pub const PRODUCTION_PACKAGE: &str = "data.modelbus.production";
/// Rule queried for the decision.
pub const ALLOW: &str = "data.modelbus.promotion.allow";
/// Rule queried for the reasons.
pub const DENY: &str = "data.modelbus.promotion.deny";
/// Rule queried for every gate evaluated.
pub const CHECKS: &str = "data.modelbus.promotion.checks";

/// Why a policy could not be loaded or evaluated.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A policy file does not parse or compile; the message names file and line.
    #[error("policy {file}: {message}")]
    Invalid {
        /// The policy file.
        file: String,
        /// regorus's message, with the line.
        message: String,
    },
    /// A policy directory could not be read.
    #[error("cannot read policies from {dir}: {message}")]
    Read {
        /// The directory.
        dir: String,
        /// Why.
        message: String,
    },
    /// Evaluation failed (a runtime error in the policy, or an unexpected output shape).
    #[error("policy evaluation: {0}")]
    Eval(String),
}

/// A policy's decision about one version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Whether promotion is allowed.
    pub allow: bool,
    /// Why not, one line per failed gate.
    pub reasons: Vec<String>,
    /// Every gate the policy evaluated.
    pub checks: Vec<GateCheck>,
    /// SHA-256 over the policy sources, so the decision names the policy that made it.
    pub policy_digest: String,
}

/// An allow/deny decision with reasons (the production promotion rule).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// Whether it is allowed.
    pub allow: bool,
    /// Why not.
    pub reasons: Vec<String>,
    /// Inputs that were left out of the decision, with why (approvals that do
    /// not count): reported, never a reason to deny.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignored: Vec<String>,
    /// SHA-256 over the policy sources.
    pub policy_digest: String,
}

/// Outcome of one Rego test rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestOutcome {
    /// `package.rule`.
    pub name: String,
    /// Whether it evaluated to true.
    pub passed: bool,
}

/// A loaded set of policy sources.
#[derive(Debug, Clone)]
pub struct PolicySet {
    sources: Vec<(String, String)>,
    tests: Vec<(String, String)>,
}

/// An engine with the policy sources loaded and `input` set.
fn engine_with_input(
    sources: &[(String, String)],
    input: &serde_json::Value,
) -> Result<regorus::Engine, PolicyError> {
    let mut e = engine(sources)?;
    let value = regorus::Value::from_json_str(&input.to_string())
        .map_err(|err| PolicyError::Eval(err.to_string()))?;
    e.set_input(value);
    Ok(e)
}

/// The value of rule `path` as JSON; `None` when it is undefined.
fn rule(e: &mut regorus::Engine, path: &str) -> Result<Option<serde_json::Value>, PolicyError> {
    let v = e
        .eval_rule(path.into())
        .map_err(|err| PolicyError::Eval(format!("{path}: {err}")))?;
    if v == regorus::Value::Undefined {
        return Ok(None);
    }
    let s = v
        .to_json_str()
        .map_err(|err| PolicyError::Eval(err.to_string()))?;
    serde_json::from_str(&s)
        .map(Some)
        .map_err(|err| PolicyError::Eval(err.to_string()))
}

/// A `deny` set as sorted strings (undefined: none).
fn strings(v: Option<serde_json::Value>, what: &str) -> Result<Vec<String>, PolicyError> {
    let mut out: Vec<String> = match v {
        None => Vec::new(),
        Some(serde_json::Value::Array(a)) => a
            .into_iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string())
            })
            .collect(),
        Some(other) => {
            return Err(PolicyError::Eval(format!(
                "{what} must be a set of strings, got {other}"
            )));
        }
    };
    out.sort();
    Ok(out)
}

/// A denial always says why.
fn with_a_reason(allow: bool, mut reasons: Vec<String>) -> Vec<String> {
    if !allow && reasons.is_empty() {
        reasons.push("denied by policy (no reason given)".into());
    }
    reasons
}

fn engine(sources: &[(String, String)]) -> Result<regorus::Engine, PolicyError> {
    let mut e = regorus::Engine::new();
    for (file, text) in sources {
        e.add_policy(file.clone(), text.clone())
            .map_err(|err| PolicyError::Invalid {
                file: file.clone(),
                message: err.to_string(),
            })?;
    }
    Ok(e)
}

impl PolicySet {
    /// The shipped policy and its tests.
    pub fn default_set() -> Self {
        Self {
            sources: vec![
                ("policies/monitoring.rego".into(), MONITORING_POLICY.into()),
                ("policies/production.rego".into(), PRODUCTION_POLICY.into()),
                ("policies/promotion.rego".into(), DEFAULT_POLICY.into()),
            ],
            tests: vec![
                (
                    "policies/monitoring_test.rego".into(),
                    MONITORING_POLICY_TESTS.into(),
                ),
                (
                    "policies/production_test.rego".into(),
                    PRODUCTION_POLICY_TESTS.into(),
                ),
                (
                    "policies/promotion_test.rego".into(),
                    DEFAULT_POLICY_TESTS.into(),
                ),
            ],
        }
    }

    /// Every `*.rego` in `dir` (files ending in `_test.rego` are tests), checked by
    /// compiling them once.
    pub fn load_dir(dir: &Path) -> Result<Self, PolicyError> {
        let read_err = |e: std::io::Error| PolicyError::Read {
            dir: dir.display().to_string(),
            message: e.to_string(),
        };
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map_err(read_err)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "rego"))
            .collect();
        files.sort();
        let mut set = Self {
            sources: Vec::new(),
            tests: Vec::new(),
        };
        for f in files {
            let text = std::fs::read_to_string(&f).map_err(read_err)?;
            let name = f.display().to_string();
            if name.ends_with("_test.rego") {
                set.tests.push((name, text));
            } else {
                set.sources.push((name, text));
            }
        }
        if set.sources.is_empty() {
            return Err(PolicyError::Read {
                dir: dir.display().to_string(),
                message: "no policy (*.rego other than *_test.rego) found".into(),
            });
        }
        // Compile now: a broken policy is refused at start, not at decision time.
        engine(&set.sources)?;
        engine(&[set.sources.clone(), set.tests.clone()].concat())?;
        Ok(set)
    }

    /// SHA-256 over the policy sources (not the tests), in order.
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        for (name, text) in &self.sources {
            h.update(name.rsplit('/').next().unwrap_or(name).as_bytes());
            h.update([0]);
            h.update(text.as_bytes());
            h.update([0]);
        }
        hex::encode(h.finalize())
    }

    /// Evaluates the promotion policy on `input`.
    pub fn evaluate(&self, input: &serde_json::Value) -> Result<Decision, PolicyError> {
        let mut e = engine_with_input(&self.sources, input)?;
        let allow = rule(&mut e, ALLOW)?.unwrap_or(serde_json::Value::Null);
        let allow = allow
            .as_bool()
            .ok_or_else(|| PolicyError::Eval(format!("{ALLOW} must be a boolean, got {allow}")))?;
        let reasons = strings(rule(&mut e, DENY)?, DENY)?;
        let mut checks: Vec<GateCheck> = match rule(&mut e, CHECKS)? {
            None => Vec::new(),
            Some(serde_json::Value::Array(a)) => a
                .into_iter()
                .map(|c| {
                    serde_json::from_value(c)
                        .map_err(|err| PolicyError::Eval(format!("{CHECKS}: {err}")))
                })
                .collect::<Result<_, _>>()?,
            Some(other) => {
                return Err(PolicyError::Eval(format!(
                    "{CHECKS} must be a set of objects, got {other}"
                )));
            }
        };
        checks.sort_by(|a, b| a.gate.cmp(&b.gate));
        Ok(Decision {
            allow,
            reasons: with_a_reason(allow, reasons),
            checks,
            policy_digest: self.digest(),
        })
    }

    /// Evaluates the production promotion rule (`modelbus.production`) on `input`.
    pub fn evaluate_production(&self, input: &serde_json::Value) -> Result<Verdict, PolicyError> {
        let mut e = engine_with_input(&self.sources, input)?;
        // Unlike the gates, the production rule must be there: a missing rule
        // would read as "nothing to deny".
        let mut required = |name: &str| {
            let path = format!("{PRODUCTION_PACKAGE}.{name}");
            rule(&mut e, &path)?.ok_or_else(|| {
                PolicyError::Eval(format!(
                    "{path} is undefined: is the production policy loaded?"
                ))
            })
        };
        let allow = required("allow")?;
        let allow = allow.as_bool().ok_or_else(|| {
            PolicyError::Eval(format!(
                "{PRODUCTION_PACKAGE}.allow must be a boolean, got {allow}"
            ))
        })?;
        let reasons = strings(
            Some(required("deny")?),
            &format!("{PRODUCTION_PACKAGE}.deny"),
        )?;
        let ignored_rule = format!("{PRODUCTION_PACKAGE}.ignored");
        let ignored = strings(rule(&mut e, &ignored_rule)?, &ignored_rule)?;
        Ok(Verdict {
            allow,
            reasons: with_a_reason(allow, reasons),
            ignored,
            policy_digest: self.digest(),
        })
    }

    /// The monitoring decisions (`modelbus.monitoring.decisions`) for one
    /// closed window; none when the rule is undefined (no monitoring policy
    /// loaded means no alert, which `modelbus policies test` makes visible).
    pub fn evaluate_monitoring(
        &self,
        input: &serde_json::Value,
    ) -> Result<Vec<MonitoringDecision>, PolicyError> {
        let mut e = engine_with_input(&self.sources, input)?;
        let mut out: Vec<MonitoringDecision> = match rule(&mut e, MONITORING_DECISIONS)? {
            None => Vec::new(),
            Some(serde_json::Value::Array(a)) => a
                .into_iter()
                .map(|d| {
                    serde_json::from_value(d)
                        .map_err(|err| PolicyError::Eval(format!("{MONITORING_DECISIONS}: {err}")))
                })
                .collect::<Result<_, _>>()?,
            Some(other) => {
                return Err(PolicyError::Eval(format!(
                    "{MONITORING_DECISIONS} must be a set of {{kind, reason}}, got {other}"
                )));
            }
        };
        out.sort_by(|a, b| (&a.kind, &a.reason).cmp(&(&b.kind, &b.reason)));
        Ok(out)
    }

    /// Runs every `test_*` rule of the test files; a rule that is not true fails.
    pub fn run_tests(&self) -> Result<Vec<TestOutcome>, PolicyError> {
        let all = [self.sources.clone(), self.tests.clone()].concat();
        let mut out = Vec::new();
        for (file, text) in &self.tests {
            let package = text
                .lines()
                .find_map(|l| l.trim().strip_prefix("package "))
                .map(|p| p.trim().to_string())
                .ok_or_else(|| PolicyError::Invalid {
                    file: file.clone(),
                    message: "no package line".into(),
                })?;
            let mut rules: Vec<String> = text
                .lines()
                .filter_map(|l| {
                    let name: String = l
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    (name.starts_with("test_") && l.starts_with(&name)).then_some(name)
                })
                .collect();
            rules.dedup();
            for rule in rules {
                let mut e = engine(&all)?;
                let v = e
                    .eval_rule(format!("data.{package}.{rule}"))
                    .map_err(|err| PolicyError::Eval(format!("{package}.{rule}: {err}")))?;
                out.push(TestOutcome {
                    name: format!("{package}.{rule}"),
                    passed: v == regorus::Value::from(true),
                });
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_policy_passes_its_own_tests() {
        let outcomes = PolicySet::default_set().run_tests().unwrap();
        assert!(outcomes.len() >= 20, "{outcomes:?}");
        assert!(
            outcomes
                .iter()
                .any(|o| o.name.starts_with("modelbus.production_test.")),
            "{outcomes:?}"
        );
        let failed: Vec<_> = outcomes.iter().filter(|o| !o.passed).collect();
        assert!(failed.is_empty(), "failing policy tests: {failed:?}");
    }

    fn input(roc_auc: f64, ece: f64, delta: Option<f64>) -> serde_json::Value {
        serde_json::json!({
            "model": "m", "version": 2,
            "gates": {"min_roc_auc": 0.8, "min_pr_auc": null},
            "evaluation": {"roc_auc": roc_auc, "pr_auc": 0.6, "log_loss": 0.4, "brier": 0.13, "ece": ece, "slices": []},
            "comparison": delta.map(|d| serde_json::json!({"champion_version": 1, "delta_roc_auc": d})),
            "validation": {"success": true, "rows": 100, "warnings": []},
        })
    }

    #[test]
    fn monitoring_decisions_come_from_the_policy() {
        let p = PolicySet::default_set();
        let input = |drifted: bool| {
            serde_json::json!({
                "environment": "production", "model": "m", "version": 1,
                "window": {"rows": 1000, "dropped": 0},
                "drift": {"share": 0.1, "drift_share": 0.5, "drifted": false, "columns": [
                    {"column": "MonthlyCharges", "method": "wasserstein", "score": 0.37, "threshold": 0.1, "drifted": drifted},
                    {"column": "@probability", "method": "wasserstein", "score": 0.01, "threshold": 0.1, "drifted": false},
                ]},
            })
        };
        assert!(p.evaluate_monitoring(&input(false)).unwrap().is_empty());
        let d = p.evaluate_monitoring(&input(true)).unwrap();
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].kind, "drift.detected");
        assert!(
            d[0].reason.contains("MonthlyCharges (wasserstein 0.3700"),
            "{d:?}"
        );
    }

    #[test]
    fn decisions_carry_reasons_and_checks() {
        let p = PolicySet::default_set();
        let ok = p.evaluate(&input(0.85, 0.02, Some(0.0))).unwrap();
        assert!(ok.allow, "{ok:?}");
        assert!(ok.reasons.is_empty());
        assert!(
            ok.checks
                .iter()
                .any(|c| c.gate == "min_roc_auc" && c.passed)
        );
        let bad = p.evaluate(&input(0.79, 0.07, Some(-0.05))).unwrap();
        assert!(!bad.allow);
        assert_eq!(bad.reasons.len(), 3, "{:?}", bad.reasons);
        assert!(
            bad.reasons
                .iter()
                .any(|r| r.contains("roc_auc 0.7900 must be at least 0.8")),
            "{:?}",
            bad.reasons
        );
        assert_eq!(ok.policy_digest, bad.policy_digest);
        assert_eq!(ok.policy_digest.len(), 64);
    }

    #[test]
    fn production_verdicts_name_what_is_missing() {
        let p = PolicySet::default_set();
        let a = |who: &str| serde_json::json!({"approver": who, "role": "approver", "signature_valid": true, "expired": false, "revoked": false});
        let mut input = serde_json::json!({
            "model": "m", "version": 3, "author": "pat",
            "gates": {"passed": true},
            "staging": {"deployed": true, "soaked_seconds": 10, "required_soak_seconds": 5,
                        "requests": 0, "errors": 0, "error_rate": 0.0, "max_error_rate": 0.01, "min_requests": 0},
            "approvals": [a("alice"), a("bob")], "rejections": [], "min_approvals": 2,
        });
        let v = p.evaluate_production(&input).unwrap();
        assert!(v.allow, "{v:?}");
        input["approvals"] = serde_json::json!([a("alice"), a("pat")]);
        let v = p.evaluate_production(&input).unwrap();
        assert!(!v.allow);
        // The author's approval is reported as ignored, and one valid
        // approval is not two.
        assert!(
            v.ignored
                .iter()
                .any(|r| r.contains("pat") && r.contains("author")),
            "{v:?}"
        );
        assert!(
            v.reasons.iter().any(|r| r.contains("1 valid approval")),
            "{v:?}"
        );
        assert!(!p.evaluate_production(&serde_json::json!({})).unwrap().allow);
    }

    #[test]
    fn a_policy_dir_without_the_production_rule_is_caught_at_evaluation() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("promotion.rego"), DEFAULT_POLICY).unwrap();
        let e = PolicySet::load_dir(dir.path())
            .unwrap()
            .evaluate_production(&serde_json::json!({}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("modelbus.production"), "{e}");
    }

    #[test]
    fn a_broken_policy_is_refused_with_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("promotion.rego"),
            "package modelbus.promotion\n\nallow if {\n  input.x ==\n}\n",
        )
        .unwrap();
        let e = PolicySet::load_dir(dir.path()).unwrap_err().to_string();
        assert!(e.contains("promotion.rego"), "{e}");
        assert!(
            e.contains(":4") || e.contains("line 4") || e.contains(":5"),
            "{e}"
        );
    }

    #[test]
    fn a_failing_policy_test_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("promotion.rego"), DEFAULT_POLICY).unwrap();
        std::fs::write(
            dir.path().join("promotion_test.rego"),
            "package modelbus.promotion_test\n\nimport rego.v1\n\nimport data.modelbus.promotion\n\ntest_wrong if {\n\tpromotion.allow with input as {}\n}\n",
        )
        .unwrap();
        let outcomes = PolicySet::load_dir(dir.path())
            .unwrap()
            .run_tests()
            .unwrap();
        assert_eq!(
            outcomes,
            vec![TestOutcome {
                name: "modelbus.promotion_test.test_wrong".into(),
                passed: false
            }]
        );
    }
}
