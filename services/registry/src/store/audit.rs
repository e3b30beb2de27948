//! The hash-chained audit log (appends go through a write transaction, see
//! `tx.rs`).

use modelbus_core::audit::AuditEntry;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::Store;
use crate::error::RegistryError;

pub(super) fn audit_row(r: &AnyRow) -> Result<AuditEntry, RegistryError> {
    let detail: String = r.try_get("detail")?;
    Ok(AuditEntry {
        seq: u64::try_from(r.try_get::<i64, _>("seq")?).unwrap_or(0),
        at: r.try_get("at")?,
        actor: r.try_get("actor")?,
        action: r.try_get("action")?,
        subject: r.try_get("subject")?,
        // An unparseable detail is kept as a string: verification then fails on
        // that entry's hash, naming it, instead of the export failing.
        detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::String(detail)),
        prev_hash: r.try_get("prev_hash")?,
        hash: r.try_get("hash")?,
    })
}

impl Store {
    /// Appends an entry to the audit chain in its own write transaction. With
    /// a `dedup_key`, appending the same key again returns the entry already
    /// written (redelivered events, retried requests). Writes that must land
    /// with their audit entry use [`WriteTx::append_audit`] instead.
    pub async fn append_audit(
        &self,
        actor: &str,
        action: &str,
        subject: &str,
        detail: &serde_json::Value,
        dedup_key: Option<&str>,
    ) -> Result<AuditEntry, RegistryError> {
        let mut tx = self.begin_write().await?;
        let entry = tx
            .append_audit(actor, action, subject, detail, dedup_key)
            .await?;
        tx.commit().await?;
        Ok(entry)
    }

    /// Audit entries after `after_seq`, oldest first, at most `limit`.
    pub async fn audit_entries(
        &self,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, RegistryError> {
        let rows = sqlx::query("SELECT * FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2")
            .bind(i64::try_from(after_seq).unwrap_or(i64::MAX))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(audit_row).collect()
    }

    /// Audit entries that may concern `model` v`version`, oldest first: those
    /// whose subject is the version (but not the exports of its evidence),
    /// rollbacks of the model, spec applications and roster changes. The caller
    /// narrows them by their detail; this reads no other entry, so assembling
    /// evidence costs what the version's own history costs, not the log's.
    pub async fn audit_about_version(
        &self,
        model: &str,
        version: u32,
    ) -> Result<Vec<AuditEntry>, RegistryError> {
        let rows = sqlx::query(
            "SELECT * FROM audit_log WHERE (subject = $1 AND action <> 'evidence.exported') \
             OR (action = 'deployment.rolled_back' AND subject LIKE $2) \
             OR action = 'spec.applied' OR action LIKE 'roster.%' ORDER BY seq",
        )
        .bind(format!("model/{model}/v{version}"))
        .bind(format!("model/{model}/%"))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(audit_row).collect()
    }
}
