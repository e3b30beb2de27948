//! The CLI's governance commands: keys, tokens, the approver roster, signed
//! approvals, rejections and rollbacks, and the audit log.

use std::path::Path;

use anyhow::{Context as _, Result, bail};
use modelbus_core::audit::{AuditEntry, ChainBreak, verify_chain};
use modelbus_core::ids::{Environment, ModelName, Sha256Digest};
use modelbus_core::signing::{
    ApprovalPredicate, DsseEnvelope, KeyPair, Statement, StatementKind, new_nonce, public_key_path,
    write_private,
};
use modelbus_registry::governance::SubmitOutcome;

use crate::client::Client;

/// Writes a new ed25519 key pair: the private key to `out` (mode 0600, refusing
/// to overwrite) and the public key to `out.pub`. Returns the public key PEM.
pub fn keygen(out: &Path) -> Result<(String, String)> {
    if out.exists() {
        bail!(
            "{} already exists; refusing to overwrite a private key",
            out.display()
        );
    }
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let key = KeyPair::generate()?;
    write_private(out, &key.to_pem()?)
        .with_context(|| format!("cannot write {}", out.display()))?;
    let public = key.public().to_pem();
    std::fs::write(public_key_path(out), &public)
        .with_context(|| format!("cannot write {}", public_key_path(out).display()))?;
    Ok((public, key.id().to_string()))
}

/// Reads a private key file, naming the file in errors.
pub fn read_key(path: &Path) -> Result<KeyPair> {
    let pem = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the key {}", path.display()))?;
    Ok(KeyPair::from_pem(&pem, &path.display().to_string())?)
}

/// Longest validity a statement may be signed for (the registry's own
/// `promotion.max_approval_validity` is usually much shorter).
pub const MAX_VALIDITY: time::Duration = time::Duration::days(366);

/// Parses `24h`, `30m`, `7d` into a duration of at most [`MAX_VALIDITY`].
pub fn parse_validity(s: &str) -> Result<time::Duration> {
    let d = humantime::parse_duration(s)
        .with_context(|| format!("--expires {s:?} is not a duration like 24h"))?;
    if d.is_zero() {
        bail!("--expires must be longer than zero");
    }
    match time::Duration::try_from(d) {
        Ok(d) if d <= MAX_VALIDITY => Ok(d),
        _ => bail!("--expires {s:?} is too long: at most 366 days"),
    }
}

/// Who the token belongs to.
pub async fn whoami(client: &Client) -> Result<String> {
    Ok(client.whoami().await?.name)
}

/// Signs a statement of `kind` about `model` version `version` for `env` with
/// `key`, as the token's principal.
#[allow(clippy::too_many_arguments)]
pub async fn sign(
    client: &Client,
    kind: StatementKind,
    model: &str,
    version: u32,
    env: Environment,
    key: &KeyPair,
    validity: time::Duration,
    comment: &str,
) -> Result<DsseEnvelope> {
    let signer = whoami(client).await?;
    let v = client.model_version(model, u64::from(version)).await?;
    let digest = Sha256Digest::parse(&v.model_sha256)
        .context("the registry sent a malformed model digest")?;
    let now = time::OffsetDateTime::now_utc();
    let statement = Statement::of_kind(
        kind,
        &digest,
        ApprovalPredicate {
            model: ModelName::parse(model)?,
            version,
            environment: env,
            approver: signer,
            issued_at: now,
            expires_at: now
                .checked_add(validity)
                .context("--expires reaches past the last representable date")?,
            nonce: new_nonce(),
            comment: comment.to_string(),
        },
    );
    Ok(key.sign_statement(&statement))
}

/// Finds the model and target version of a rollback: the model deployed in
/// `env` when not given, and the version that served before the current one
/// when `to_version` is not given.
pub async fn rollback_target(
    client: &Client,
    env: Environment,
    model: Option<&str>,
    to_version: Option<u32>,
) -> Result<(String, u32)> {
    let model = match model {
        Some(m) => m.to_string(),
        None => {
            let deployed: Vec<String> = client
                .models()
                .await?
                .into_iter()
                .filter(|m| m.aliases.contains_key(env.as_str()))
                .map(|m| m.name)
                .collect();
            match deployed.as_slice() {
                [one] => one.clone(),
                [] => bail!("no model is deployed in {env}"),
                many => bail!(
                    "several models are deployed in {env} ({}); choose one with --model",
                    many.join(", ")
                ),
            }
        }
    };
    if let Some(v) = to_version {
        return Ok((model, v));
    }
    // Versions that completed in this environment, oldest first, without repeats
    // of the same version back to back.
    let mut served: Vec<u32> = Vec::new();
    for ev in client.deployments(&model).await? {
        if ev.environment != env.as_str() || ev.kind != "completed" {
            continue;
        }
        match u32::try_from(ev.version) {
            Ok(v) if served.last() != Some(&v) => served.push(v),
            _ => {}
        }
    }
    let current = client
        .model(&model)
        .await?
        .aliases
        .get(env.as_str())
        .copied();
    let Some(current) = current else {
        bail!("{model} is not deployed in {env}");
    };
    served
        .iter()
        .rev()
        .find(|v| **v != current)
        .map(|v| (model.clone(), *v))
        .with_context(|| {
            format!("{model} has served no version in {env} before v{current}; give --to-version")
        })
}

/// Outcome of verifying the audit chain.
pub enum AuditCheck {
    /// Every entry links and hashes correctly.
    Intact {
        /// Number of entries.
        entries: u64,
        /// Hash of the last entry.
        head: String,
    },
    /// The first entry that does not fit.
    Broken(ChainBreak),
}

/// Fetches and verifies the whole audit chain.
pub async fn audit_verify(client: &Client) -> Result<(AuditCheck, Vec<AuditEntry>)> {
    let entries = client.audit_all().await?;
    Ok(match verify_chain(&entries) {
        Ok(head) => (
            AuditCheck::Intact {
                entries: head.entries,
                head: head.hash,
            },
            entries,
        ),
        Err(b) => (AuditCheck::Broken(b), entries),
    })
}

/// One-line summary of an outcome of a signed submission (more lines when it
/// decided a production promotion).
pub fn describe_outcome(outcome: &SubmitOutcome) -> String {
    let d = &outcome.decision;
    let mut s = format!(
        "{} of {} v{} for {} by {} recorded (nonce {}, audit entry {})",
        d.kind, d.model, d.version, d.environment, d.signer, d.nonce, outcome.audit_seq
    );
    if let Some(p) = &outcome.promotion {
        if p.allow {
            s.push_str("\npromotion to production: allowed; approval.granted published");
        } else {
            s.push_str("\npromotion to production: not yet allowed:");
            for r in &p.reasons {
                s.push_str(&format!("\n  - {r}"));
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validities_are_bounded_not_panicking() {
        assert_eq!(parse_validity("24h").unwrap(), time::Duration::hours(24));
        for huge in ["100000000000y", "9999999999999999s", "367d"] {
            let e = parse_validity(huge).unwrap_err().to_string();
            assert!(
                e.contains("too long") || e.contains("not a duration"),
                "{huge}: {e}"
            );
        }
        assert!(parse_validity("0s").is_err());
        assert!(parse_validity("soon").is_err());
    }
}
