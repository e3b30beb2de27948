//! The tamper-evident audit log's hash chain: each entry carries the SHA-256 of
//! the previous entry, and its own hash covers its fields and that link. Editing,
//! removing or reordering an entry breaks the chain at that entry, which
//! [`verify_chain`] names. The registry appends; the CLI and evidence bundles
//! verify with this same code, offline.
//!
//! What a chain cannot show on its own: entries cut off at the end. Anyone who
//! keeps the last `(seq, hash)` they saw (the CLI prints it, evidence bundles
//! record it) can detect that too.

use serde::{Deserialize, Serialize};

use crate::ids::Sha256Digest;

/// `prev_hash` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Domain separator of entry hashes, so no other modelbus hash can collide with one.
const DOMAIN: &[u8] = b"modelbus-audit-v1\n";

/// One audit entry as stored and exported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEntry {
    /// Position in the chain, from 1, without gaps.
    pub seq: u64,
    /// When it was appended (RFC 3339 UTC).
    pub at: String,
    /// Who did it: a principal, an approver id or a service.
    pub actor: String,
    /// What happened (`spec.applied`, `approval.accepted`, ...).
    pub action: String,
    /// What it happened to (`churn/v3`, `dataset telco-churn`, ...).
    pub subject: String,
    /// Details; any JSON value.
    pub detail: serde_json::Value,
    /// Hash of the previous entry ([`GENESIS`] for the first).
    pub prev_hash: String,
    /// Hash of this entry.
    pub hash: String,
}

/// The hash an entry with these fields must carry.
pub fn entry_hash(
    seq: u64,
    at: &str,
    actor: &str,
    action: &str,
    subject: &str,
    detail: &serde_json::Value,
    prev_hash: &str,
) -> String {
    // A JSON array gives every field an unambiguous boundary; serde_json writes
    // the same bytes for the same value whatever its source text looked like.
    let body = serde_json::json!([seq, at, actor, action, subject, detail, prev_hash]);
    let mut bytes = DOMAIN.to_vec();
    bytes.extend_from_slice(body.to_string().as_bytes());
    Sha256Digest::of(&bytes).to_hex()
}

impl AuditEntry {
    /// The hash this entry's fields call for.
    pub fn computed_hash(&self) -> String {
        entry_hash(
            self.seq,
            &self.at,
            &self.actor,
            &self.action,
            &self.subject,
            &self.detail,
            &self.prev_hash,
        )
    }
}

/// Where and why a chain is broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit chain broken at entry {seq}: {reason}")]
pub struct ChainBreak {
    /// The first entry that does not fit (the one found at that position).
    pub seq: u64,
    /// What does not fit.
    pub reason: String,
}

/// The head of a verified chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainHead {
    /// Number of entries.
    pub entries: u64,
    /// Hash of the last entry ([`GENESIS`] when empty).
    pub hash: String,
}

/// Verifies a whole chain, in stored order, from entry 1.
pub fn verify_chain(entries: &[AuditEntry]) -> Result<ChainHead, ChainBreak> {
    verify_segment(entries, 1, GENESIS)
}

/// Verifies a contiguous segment that starts at `first_seq` after an entry whose
/// hash is `prev_hash`.
pub fn verify_segment(
    entries: &[AuditEntry],
    first_seq: u64,
    prev_hash: &str,
) -> Result<ChainHead, ChainBreak> {
    let mut expected_seq = first_seq;
    let mut prev = prev_hash.to_string();
    for (i, e) in entries.iter().enumerate() {
        if e.seq != expected_seq {
            let later = entries[i + 1..].iter().any(|x| x.seq == expected_seq);
            let reason = if e.seq > expected_seq && !later {
                format!(
                    "expected entry {expected_seq} here, found {}: entries {expected_seq}..{} were removed",
                    e.seq,
                    e.seq - 1
                )
            } else {
                format!(
                    "expected entry {expected_seq} here, found {}: entries were reordered or duplicated",
                    e.seq
                )
            };
            return Err(ChainBreak {
                seq: e.seq.min(expected_seq),
                reason,
            });
        }
        if e.prev_hash != prev {
            return Err(ChainBreak {
                seq: e.seq,
                reason: format!(
                    "prev_hash {} does not match the hash of entry {} ({prev}): an entry before it was changed, removed or reordered",
                    e.prev_hash,
                    e.seq.saturating_sub(1)
                ),
            });
        }
        let computed = e.computed_hash();
        if computed != e.hash {
            return Err(ChainBreak {
                seq: e.seq,
                reason: format!(
                    "its fields hash to {computed}, it records {}: the entry was changed after it was written",
                    e.hash
                ),
            });
        }
        prev = e.hash.clone();
        expected_seq += 1;
    }
    Ok(ChainHead {
        entries: expected_seq - 1,
        hash: prev,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: u64) -> Vec<AuditEntry> {
        let mut out: Vec<AuditEntry> = Vec::new();
        for seq in 1..=n {
            let prev = out.last().map_or(GENESIS.to_string(), |e| e.hash.clone());
            let detail = serde_json::json!({ "n": seq, "b": [1, 2.5], "a": "x" });
            let hash = entry_hash(
                seq,
                "2026-11-27T00:00:00Z",
                "alice",
                "spec.applied",
                "d",
                &detail,
                &prev,
            );
            out.push(AuditEntry {
                seq,
                at: "2026-11-27T00:00:00Z".into(),
                actor: "alice".into(),
                action: "spec.applied".into(),
                subject: "d".into(),
                detail,
                prev_hash: prev,
                hash,
            });
        }
        out
    }

    #[test]
    fn intact_chain_verifies_and_reports_its_head() {
        let c = chain(5);
        let head = verify_chain(&c).unwrap();
        assert_eq!(head.entries, 5);
        assert_eq!(head.hash, c[4].hash);
        assert_eq!(verify_chain(&[]).unwrap().hash, GENESIS);
    }

    #[test]
    fn hash_survives_a_json_round_trip() {
        let c = chain(3);
        let text: Vec<String> = c
            .iter()
            .map(|e| serde_json::to_string(e).unwrap())
            .collect();
        let back: Vec<AuditEntry> = text
            .iter()
            .map(|t| serde_json::from_str(t).unwrap())
            .collect();
        verify_chain(&back).unwrap();
    }

    #[test]
    fn an_edited_entry_is_named() {
        let mut c = chain(5);
        c[2].actor = "mallory".into();
        let b = verify_chain(&c).unwrap_err();
        assert_eq!(b.seq, 3);
        assert!(b.reason.contains("changed"), "{}", b.reason);
    }

    #[test]
    fn an_edited_and_rehashed_entry_breaks_the_next_link() {
        let mut c = chain(5);
        c[2].detail = serde_json::json!({ "n": 99 });
        c[2].hash = c[2].computed_hash();
        let b = verify_chain(&c).unwrap_err();
        assert_eq!(b.seq, 4);
        assert!(b.reason.contains("prev_hash"), "{}", b.reason);
    }

    #[test]
    fn a_removed_entry_is_named() {
        let mut c = chain(5);
        c.remove(1);
        let b = verify_chain(&c).unwrap_err();
        assert_eq!(b.seq, 2);
        assert!(b.reason.contains("removed"), "{}", b.reason);
    }

    #[test]
    fn reordered_entries_are_named() {
        let mut c = chain(5);
        c.swap(1, 2);
        let b = verify_chain(&c).unwrap_err();
        assert_eq!(b.seq, 2);
        assert!(b.reason.contains("reordered"), "{}", b.reason);
    }

    #[test]
    fn renumbered_entries_after_a_removal_are_caught_by_the_link() {
        let mut c = chain(5);
        c.remove(1);
        for (i, e) in c.iter_mut().enumerate() {
            e.seq = i as u64 + 1;
        }
        let b = verify_chain(&c).unwrap_err();
        assert_eq!(b.seq, 2);
    }

    #[test]
    fn a_segment_verifies_from_its_anchor() {
        let c = chain(6);
        let head = verify_segment(&c[3..], 4, &c[2].hash).unwrap();
        assert_eq!(head.entries, 6);
        assert!(verify_segment(&c[3..], 4, GENESIS).is_err());
    }
}
