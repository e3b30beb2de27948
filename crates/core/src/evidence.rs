//! Evidence bundles: everything an auditor needs about one model version in
//! one JSON document (lineage, validation, evaluation and gate decisions, the
//! signed statements with the public keys that signed them, the deployment and
//! rollback timeline, and the audit entries from the first that concerns the
//! version to the last, every entry between included so the chain links),
//! and [`verify`], which checks it offline
//! with this same code: signatures against the bundled keys (and, when given,
//! against keys the auditor holds), the audit chain segment, and that every
//! signature, registration and deployment the bundle claims has its audit entry.

use serde::{Deserialize, Serialize};

use crate::audit::{AuditEntry, ChainHead, verify_segment};
use crate::signing::{DsseEnvelope, PublicKey, Statement, StatementKind, verify_envelope};

/// Format tag of bundles this code writes and verifies.
pub const FORMAT: &str = "modelbus-evidence/v1";

/// The compliance bundle of one model version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Evidence {
    /// [`FORMAT`].
    pub format: String,
    /// The state it describes, as of (RFC 3339): the time of the last audit
    /// entry it carries, so exporting an unchanged version again gives the
    /// same bytes.
    pub generated_at: String,
    /// Principal that asked for it.
    pub generated_by: String,
    /// Model name.
    pub model: String,
    /// Version.
    pub version: u32,
    /// The model artifact's SHA-256: what every signature must name.
    pub model_sha256: String,
    /// The version as registered: status, author, algorithm, holdout metrics,
    /// lineage (batch, spec, feature set, transform, code revision, seed), gate
    /// checks and the promotion policy's decision.
    pub version_record: serde_json::Value,
    /// The training run: parameters, metrics, artifacts.
    pub training_run: serde_json::Value,
    /// Summary of the batch's validation report.
    pub validation: serde_json::Value,
    /// Summary of the evaluation report.
    pub evaluation: serde_json::Value,
    /// Signed approvals, rejections and rollbacks naming this version.
    pub signed: Vec<SignedStatement>,
    /// The registry's signed staging promotions of this version.
    pub automation: Vec<SignedStatement>,
    /// The production promotion decision, if one was made.
    pub promotion: serde_json::Value,
    /// Public keys of every signer above.
    pub keys: Vec<KeyRecord>,
    /// The model's deployment timeline in every environment, oldest first.
    pub deployments: Vec<serde_json::Value>,
    /// The audit chain from the first entry about this version to the last.
    pub audit: AuditSegment,
}

/// A signed statement as recorded by the registry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedStatement {
    /// `approve`, `reject` or `rollback`.
    pub kind: String,
    /// Environment it is for.
    pub environment: String,
    /// Approver id that signed.
    pub signer: String,
    /// Key that signed (`SHA256:<hex>`).
    pub key_id: String,
    /// When the registry accepted it.
    pub recorded_at: String,
    /// The DSSE envelope exactly as signed.
    pub envelope: DsseEnvelope,
}

/// A public key that signed something in the bundle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRecord {
    /// Approver id (or `registry-automation`).
    pub id: String,
    /// Role on the roster.
    pub role: String,
    /// Key id.
    pub key_id: String,
    /// SPKI PEM.
    pub public_key: String,
    /// When it was added to the roster.
    pub added_at: String,
    /// When it was revoked (empty: active at export).
    pub revoked_at: String,
}

/// A contiguous part of the audit chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSegment {
    /// Hash of the entry before the first one ([`crate::audit::GENESIS`] from entry 1).
    pub prev_hash: String,
    /// Entries in chain order.
    pub entries: Vec<AuditEntry>,
    /// Sequence numbers of the entries about this version.
    pub relevant: Vec<u64>,
    /// The segment's last entry (count and hash): compare with the live chain
    /// (`modelbus audit verify`) to see it is still part of it.
    pub head: ChainHead,
}

/// One check of [`verify`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// What was checked.
    pub check: String,
    /// Whether it holds.
    pub ok: bool,
    /// The figures or the failure.
    pub detail: String,
}

fn finding(check: impl Into<String>, ok: bool, detail: impl Into<String>) -> Finding {
    Finding {
        check: check.into(),
        ok,
        detail: detail.into(),
    }
}

/// Checks a bundle offline. `trusted`: public keys the auditor holds
/// independently; when not empty, every signature must be by one of them, not
/// only by a key the bundle itself carries.
pub fn verify(e: &Evidence, trusted: &[PublicKey]) -> Vec<Finding> {
    let mut out = Vec::new();
    out.push(finding(
        "format",
        e.format == FORMAT,
        format!("{:?} (expected {FORMAT:?})", e.format),
    ));
    let entries = &e.audit.entries;
    let chain = match entries.first() {
        None => Err("the bundle holds no audit entries".to_string()),
        Some(first) => verify_segment(entries, first.seq, &e.audit.prev_hash)
            .map_err(|b| b.to_string())
            .and_then(|head| {
                if head == e.audit.head {
                    Ok(head)
                } else {
                    Err(format!(
                        "the entries end at {} entries / {}, the bundle claims head {} / {}",
                        head.entries, head.hash, e.audit.head.entries, e.audit.head.hash
                    ))
                }
            }),
    };
    out.push(match &chain {
        Ok(head) => finding(
            "audit chain",
            true,
            format!(
                "entries {}..{} link and hash correctly; head {}",
                entries.first().map_or(0, |x| x.seq),
                head.entries,
                head.hash
            ),
        ),
        Err(why) => finding("audit chain", false, why.clone()),
    });
    let missing: Vec<u64> = e
        .audit
        .relevant
        .iter()
        .filter(|s| !entries.iter().any(|x| x.seq == **s))
        .copied()
        .collect();
    out.push(finding(
        "audit entries about the version",
        missing.is_empty() && !e.audit.relevant.is_empty(),
        if missing.is_empty() {
            format!("{} entries", e.audit.relevant.len())
        } else {
            format!("entries {missing:?} are listed but not in the segment")
        },
    ));
    let find = |action: &str, pred: &dyn Fn(&AuditEntry) -> bool| {
        entries.iter().find(|x| x.action == action && pred(x))
    };
    let registered = find("version.registered", &|x| {
        x.subject == format!("model/{}/v{}", e.model, e.version)
    });
    out.push(match registered {
        Some(x) if x.detail["model_sha256"] == e.model_sha256.as_str() => finding(
            "registration",
            true,
            format!(
                "audit entry {} registers artifact {}",
                x.seq, e.model_sha256
            ),
        ),
        Some(x) => finding(
            "registration",
            false,
            format!(
                "audit entry {} registers artifact {}, the bundle says {}",
                x.seq, x.detail["model_sha256"], e.model_sha256
            ),
        ),
        None => finding(
            "registration",
            false,
            "no version.registered audit entry for this version",
        ),
    });
    for (i, s) in e.signed.iter().chain(e.automation.iter()).enumerate() {
        let label = format!(
            "signature {i} ({} by {}, {})",
            s.kind, s.signer, s.environment
        );
        match check_signed(e, s, trusted) {
            Ok(nonce) => {
                let human = e.signed.contains(s);
                let action = match s.kind.as_str() {
                    "approve" => "approval.accepted",
                    "reject" => "rejection.accepted",
                    _ => "rollback.accepted",
                };
                let audited =
                    !human || find(action, &|x| x.detail["nonce"] == nonce.as_str()).is_some();
                out.push(finding(
                    label,
                    audited,
                    if audited {
                        format!("valid signature by key {}", s.key_id)
                    } else {
                        format!("valid signature, but no {action} audit entry with nonce {nonce}")
                    },
                ));
            }
            Err(why) => out.push(finding(label, false, why)),
        }
    }
    if e.promotion["granted_event"]
        .as_str()
        .is_some_and(|g| !g.is_empty())
    {
        let author = e.version_record["author"].as_str().unwrap_or_default();
        let mut approvers: Vec<&str> = e
            .signed
            .iter()
            .filter(|s| s.kind == "approve" && s.environment == "production")
            .filter(|s| check_signed(e, s, trusted).is_ok())
            .map(|s| s.signer.as_str())
            .collect();
        approvers.sort_unstable();
        approvers.dedup();
        let own = approvers.contains(&author);
        let needed = e.promotion["input"]["min_approvals"].as_u64().unwrap_or(2) as usize;
        out.push(finding(
            "production approvals",
            approvers.len() >= needed && !own,
            format!(
                "{} distinct valid approvers ({}) of {needed} required; author {author:?}{}",
                approvers.len(),
                approvers.join(", "),
                if own {
                    " approved their own version"
                } else {
                    ""
                }
            ),
        ));
    }
    let mut unaudited = Vec::new();
    let mut deployments = 0;
    for d in &e.deployments {
        if d["version"].as_u64() != Some(u64::from(e.version)) {
            continue;
        }
        deployments += 1;
        let id = d["event_id"].as_str().unwrap_or_default();
        if !entries.iter().any(|x| x.detail["event_id"] == id) {
            unaudited.push(format!("{} {}", d["kind"], id));
        }
    }
    out.push(finding(
        "deployment timeline",
        unaudited.is_empty(),
        if unaudited.is_empty() {
            format!("{deployments} events of this version, each with its audit entry")
        } else {
            format!("events without an audit entry: {}", unaudited.join(", "))
        },
    ));
    out
}

/// Checks one signed statement; returns its nonce.
fn check_signed(
    e: &Evidence,
    s: &SignedStatement,
    trusted: &[PublicKey],
) -> Result<String, String> {
    let record = e
        .keys
        .iter()
        .find(|k| k.key_id == s.key_id)
        .ok_or_else(|| format!("the bundle holds no public key {}", s.key_id))?;
    let key = PublicKey::from_pem(&record.public_key, &format!("key of {}", record.id))
        .map_err(|err| err.to_string())?;
    if key.id() != s.key_id {
        return Err(format!(
            "the bundled key of {} is {}, not {}",
            record.id,
            key.id(),
            s.key_id
        ));
    }
    if !trusted.is_empty() && !trusted.iter().any(|t| t.id() == key.id()) {
        return Err(format!(
            "key {} of {} is not among the keys given to verify with",
            s.key_id, record.id
        ));
    }
    let (payload, _) = verify_envelope(&s.envelope, std::slice::from_ref(&key))
        .map_err(|err| format!("signature: {err}"))?;
    let (st, digest) = Statement::parse(&payload).map_err(|err| err.to_string())?;
    let kind = st.kind().map(StatementKind::as_str).unwrap_or("unknown");
    let p = &st.predicate;
    let mismatch = [
        (digest.to_hex() != e.model_sha256, "artifact digest"),
        (p.model.as_str() != e.model, "model"),
        (p.version != e.version, "version"),
        (p.environment.as_str() != s.environment, "environment"),
        (p.approver != s.signer || s.signer != record.id, "signer"),
        (kind != s.kind, "kind"),
    ];
    if let Some((_, what)) = mismatch.iter().find(|(bad, _)| *bad) {
        return Err(format!(
            "the signed statement's {what} does not match the bundle (signed: {} v{} {} {} by {}, artifact {digest})",
            p.model, p.version, p.environment, kind, p.approver
        ));
    }
    Ok(p.nonce.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::entry_hash;
    use crate::ids::{Environment, ModelName};
    use crate::signing::{ApprovalPredicate, KeyPair, new_nonce};

    fn entry(
        seq: u64,
        prev: &str,
        action: &str,
        subject: &str,
        detail: serde_json::Value,
    ) -> AuditEntry {
        let at = "2026-11-27T00:00:00Z";
        AuditEntry {
            seq,
            at: at.into(),
            actor: "admin".into(),
            action: action.into(),
            subject: subject.into(),
            hash: entry_hash(seq, at, "admin", action, subject, &detail, prev),
            detail,
            prev_hash: prev.into(),
        }
    }

    /// A bundle with one production approval by alice, its audit entries and her key.
    fn bundle() -> (Evidence, KeyPair) {
        let digest = crate::ids::Sha256Digest::of(b"model");
        let alice = KeyPair::generate().unwrap();
        let nonce = new_nonce();
        let now = time::OffsetDateTime::now_utc();
        let st = Statement::of_kind(
            StatementKind::Approve,
            &digest,
            ApprovalPredicate {
                model: ModelName::parse("churn").unwrap(),
                version: 3,
                environment: Environment::Production,
                approver: "alice".into(),
                issued_at: now,
                expires_at: now + time::Duration::hours(1),
                nonce: nonce.clone(),
                comment: String::new(),
            },
        );
        let e1 = entry(
            7,
            "aa",
            "version.registered",
            "model/churn/v3",
            serde_json::json!({ "model_sha256": digest.to_hex() }),
        );
        let e2 = entry(
            8,
            &e1.hash,
            "approval.accepted",
            "model/churn/v3",
            serde_json::json!({ "nonce": nonce }),
        );
        let head = ChainHead {
            entries: 8,
            hash: e2.hash.clone(),
        };
        let evidence = Evidence {
            format: FORMAT.into(),
            generated_at: String::new(),
            generated_by: "auditor".into(),
            model: "churn".into(),
            version: 3,
            model_sha256: digest.to_hex(),
            version_record: serde_json::json!({ "author": "pat" }),
            training_run: serde_json::Value::Null,
            validation: serde_json::Value::Null,
            evaluation: serde_json::Value::Null,
            signed: vec![SignedStatement {
                kind: "approve".into(),
                environment: "production".into(),
                signer: "alice".into(),
                key_id: alice.id().to_string(),
                recorded_at: String::new(),
                envelope: alice.sign_statement(&st),
            }],
            automation: vec![],
            promotion: serde_json::Value::Null,
            keys: vec![KeyRecord {
                id: "alice".into(),
                role: "approver".into(),
                key_id: alice.id().to_string(),
                public_key: alice.public().to_pem(),
                added_at: String::new(),
                revoked_at: String::new(),
            }],
            deployments: vec![],
            audit: AuditSegment {
                prev_hash: "aa".into(),
                entries: vec![e1, e2],
                relevant: vec![7, 8],
                head,
            },
        };
        (evidence, alice)
    }

    fn failed(findings: &[Finding]) -> Vec<String> {
        findings
            .iter()
            .filter(|f| !f.ok)
            .map(|f| format!("{}: {}", f.check, f.detail))
            .collect()
    }

    #[test]
    fn an_intact_bundle_verifies_with_or_without_the_auditors_keys() {
        let (e, alice) = bundle();
        assert_eq!(failed(&verify(&e, &[])), Vec::<String>::new());
        assert_eq!(failed(&verify(&e, &[alice.public()])), Vec::<String>::new());
        let stranger = KeyPair::generate().unwrap();
        let f = failed(&verify(&e, &[stranger.public()]));
        assert!(f[0].contains("not among the keys given"), "{f:?}");
    }

    #[test]
    fn edits_to_signatures_digests_or_the_audit_segment_are_named() {
        let (mut e, _) = bundle();
        e.audit.entries[0].actor = "mallory".into();
        let f = failed(&verify(&e, &[]));
        assert!(
            f.iter()
                .any(|x| x.starts_with("audit chain") && x.contains("entry 7")),
            "{f:?}"
        );

        let (mut e, _) = bundle();
        e.model_sha256 = crate::ids::Sha256Digest::of(b"other").to_hex();
        let f = failed(&verify(&e, &[]));
        assert!(f.iter().any(|x| x.starts_with("registration")), "{f:?}");
        assert!(
            f.iter()
                .any(|x| x.contains("artifact digest does not match")),
            "{f:?}"
        );

        let (mut e, _) = bundle();
        let forger = KeyPair::generate().unwrap();
        e.keys[0].public_key = forger.public().to_pem();
        let f = failed(&verify(&e, &[]));
        assert!(
            f.iter().any(|x| x.contains("the bundled key of alice is")),
            "{f:?}"
        );

        let (mut e, _) = bundle();
        e.audit.entries.pop();
        e.audit.head = ChainHead {
            entries: 7,
            hash: e.audit.entries[0].hash.clone(),
        };
        let f = failed(&verify(&e, &[]));
        assert!(
            f.iter()
                .any(|x| x.contains("no approval.accepted audit entry")),
            "{f:?}"
        );
        assert!(
            f.iter()
                .any(|x| x.contains("listed but not in the segment")),
            "{f:?}"
        );
    }
}
