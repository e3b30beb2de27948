//! Write transactions and the outbox.
//!
//! Everything the registry accepts that must be seen together commits in one
//! [`WriteTx`]: a signed decision with its audit entry and the event that
//! announces it; a production grant with its audit entry and its
//! `approval.granted`. Events are not published inside the transaction but
//! written to the `outbox` table, which a relay ([`crate::outbox`]) publishes
//! in order and marks, so what the registry accepted always reaches the bus,
//! even when the bus was down at the time or the process died right after
//! the commit.
//!
//! A write transaction also serialises audit appends: SQLite takes the write
//! lock at `BEGIN IMMEDIATE`, PostgreSQL takes one transaction-scoped advisory
//! lock, so two writers (two tasks, or two registry replicas on one
//! database) never compute the same chain position.

use modelbus_core::audit::{AuditEntry, GENESIS, entry_hash};
use sqlx::Row;

use super::audit::audit_row;
use super::{Backend, Promotion, SignedDecision, Store, now};
use crate::error::RegistryError;

/// Key of the PostgreSQL advisory lock every write transaction holds.
const WRITE_LOCK: i64 = 0x6d6f_6465_6c62_7573; // "modelbus"

/// An event waiting in the outbox, as the relay publishes it.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEvent {
    /// Position in the outbox (publication order).
    pub seq: i64,
    /// NATS subject.
    pub subject: String,
    /// `Nats-Msg-Id` (the event's identity, `<name>/<id>`).
    pub msg_id: String,
    /// W3C trace context, empty when none.
    pub traceparent: String,
    /// The CloudEvents JSON.
    pub payload: String,
    /// Failed publication attempts so far.
    pub attempts: i64,
}

impl OutboxEvent {
    /// The outbox row of an envelope (its `seq` is given at insertion).
    pub fn of<T: modelbus_core::events::EventPayload>(
        env: &modelbus_core::events::Envelope<T>,
    ) -> Self {
        Self {
            seq: 0,
            subject: T::subject(),
            msg_id: env.identity(),
            traceparent: env.traceparent.clone().unwrap_or_default(),
            payload: String::from_utf8_lossy(&env.to_json()).into_owned(),
            attempts: 0,
        }
    }
}

/// A write transaction (see the module documentation). Dropped without
/// [`WriteTx::commit`], it rolls back.
pub struct WriteTx {
    pub(super) tx: sqlx::Transaction<'static, sqlx::Any>,
}

impl Store {
    /// Begins a write transaction holding the registry's write lock.
    pub async fn begin_write(&self) -> Result<WriteTx, RegistryError> {
        let tx = match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => {
                let mut tx = self.pool.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(WRITE_LOCK)
                    .execute(&mut *tx)
                    .await?;
                tx
            }
        };
        Ok(WriteTx { tx })
    }

    /// Events not published yet, oldest first, at most `limit`.
    pub async fn pending_outbox(&self, limit: u32) -> Result<Vec<OutboxEvent>, RegistryError> {
        let rows = sqlx::query(
            "SELECT seq, subject, msg_id, traceparent, payload, attempts FROM outbox \
             WHERE published_at = '' ORDER BY seq LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(OutboxEvent {
                    seq: r.try_get("seq")?,
                    subject: r.try_get("subject")?,
                    msg_id: r.try_get("msg_id")?,
                    traceparent: r.try_get("traceparent")?,
                    payload: r.try_get("payload")?,
                    attempts: r.try_get("attempts")?,
                })
            })
            .collect()
    }

    /// Marks an outbox event published (`duplicate`: the stream already held
    /// it, from an attempt whose acknowledgement was lost).
    pub async fn outbox_published(&self, seq: i64, duplicate: bool) -> Result<(), RegistryError> {
        sqlx::query("UPDATE outbox SET published_at = $1, duplicate = $2 WHERE seq = $3")
            .bind(now())
            .bind(i64::from(duplicate))
            .bind(seq)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records a failed publication attempt of an outbox event.
    pub async fn outbox_failed(&self, seq: i64, error: &str) -> Result<(), RegistryError> {
        let error: String = error.chars().take(1000).collect();
        sqlx::query("UPDATE outbox SET attempts = attempts + 1, last_error = $1 WHERE seq = $2")
            .bind(error)
            .bind(seq)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// How many outbox events wait to be published.
    pub async fn outbox_backlog(&self) -> Result<u64, RegistryError> {
        let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM outbox WHERE published_at = ''")
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

impl WriteTx {
    /// Commits everything written in this transaction at once.
    pub async fn commit(self) -> Result<(), RegistryError> {
        self.tx.commit().await?;
        Ok(())
    }

    /// Appends an entry to the audit chain (see [`Store::append_audit`]).
    pub async fn append_audit(
        &mut self,
        actor: &str,
        action: &str,
        subject: &str,
        detail: &serde_json::Value,
        dedup_key: Option<&str>,
    ) -> Result<AuditEntry, RegistryError> {
        if let Some(key) = dedup_key
            && let Some(row) = sqlx::query("SELECT * FROM audit_log WHERE dedup_key = $1")
                .bind(key)
                .fetch_optional(&mut *self.tx)
                .await?
        {
            return audit_row(&row);
        }
        let last = sqlx::query("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut *self.tx)
            .await?;
        let (prev_seq, prev_hash) = match &last {
            Some(r) => (
                u64::try_from(r.try_get::<i64, _>("seq")?).unwrap_or(0),
                r.try_get::<String, _>("hash")?,
            ),
            None => (0, GENESIS.to_string()),
        };
        let seq = prev_seq + 1;
        let at = now();
        let hash = entry_hash(seq, &at, actor, action, subject, detail, &prev_hash);
        sqlx::query(
            "INSERT INTO audit_log (seq, at, actor, action, subject, detail, prev_hash, hash, dedup_key) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(i64::try_from(seq).unwrap_or(i64::MAX))
        .bind(&at)
        .bind(actor)
        .bind(action)
        .bind(subject)
        .bind(detail.to_string())
        .bind(&prev_hash)
        .bind(&hash)
        .bind(dedup_key)
        .execute(&mut *self.tx)
        .await?;
        metrics::counter!("modelbus_audit_entries_total", "action" => action.to_string())
            .increment(1);
        Ok(AuditEntry {
            seq,
            at,
            actor: actor.into(),
            action: action.into(),
            subject: subject.into(),
            detail: detail.clone(),
            prev_hash,
            hash,
        })
    }

    /// Records a signed decision; `Ok(false)` if its nonce was already used.
    pub async fn insert_signed_decision(
        &mut self,
        d: &SignedDecision,
    ) -> Result<bool, RegistryError> {
        let r = sqlx::query(
            "INSERT INTO signed_decisions (nonce, kind, model, version, environment, model_sha256, \
             signer, key_id, submitted_by, issued_at, expires_at, comment, envelope, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) ON CONFLICT DO NOTHING",
        )
        .bind(&d.nonce)
        .bind(&d.kind)
        .bind(&d.model)
        .bind(i64::from(d.version))
        .bind(&d.environment)
        .bind(&d.model_sha256)
        .bind(&d.signer)
        .bind(&d.key_id)
        .bind(&d.submitted_by)
        .bind(&d.issued_at)
        .bind(&d.expires_at)
        .bind(&d.comment)
        .bind(&d.envelope)
        .bind(&d.created_at)
        .execute(&mut *self.tx)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Records the latest policy decision, keeping `granted_event` once set.
    pub async fn save_promotion(&mut self, p: &Promotion) -> Result<(), RegistryError> {
        let reasons = serde_json::to_string(&p.reasons).unwrap_or_else(|_| "[]".into());
        let input = p.input.to_string();
        let updated = sqlx::query(
            "UPDATE promotions SET allow_promotion = $1, reasons = $2, policy_digest = $3, input = $4, \
             decided_at = $5 WHERE model = $6 AND version = $7 AND environment = $8",
        )
        .bind(i64::from(p.allow))
        .bind(&reasons)
        .bind(&p.policy_digest)
        .bind(&input)
        .bind(&p.decided_at)
        .bind(&p.model)
        .bind(i64::from(p.version))
        .bind(&p.environment)
        .execute(&mut *self.tx)
        .await?;
        if updated.rows_affected() == 0 {
            sqlx::query(
                "INSERT INTO promotions (model, version, environment, allow_promotion, reasons, \
                 policy_digest, input, decided_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(&p.model)
            .bind(i64::from(p.version))
            .bind(&p.environment)
            .bind(i64::from(p.allow))
            .bind(&reasons)
            .bind(&p.policy_digest)
            .bind(&input)
            .bind(&p.decided_at)
            .execute(&mut *self.tx)
            .await?;
        }
        Ok(())
    }

    /// Replaces a promotion's grant `from` by `to` (compare-and-set); false
    /// when its grant is not `from`.
    pub async fn swap_promotion_grant(
        &mut self,
        model: &str,
        version: u32,
        environment: &str,
        from: &str,
        to: &str,
    ) -> Result<bool, RegistryError> {
        let r = sqlx::query(
            "UPDATE promotions SET granted_event = $1 WHERE model = $2 AND version = $3 \
             AND environment = $4 AND granted_event = $5",
        )
        .bind(to)
        .bind(model)
        .bind(i64::from(version))
        .bind(environment)
        .bind(from)
        .execute(&mut *self.tx)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Puts an event in the outbox; `false` when an event with its identity is
    /// there already (the same decision committed twice publishes once).
    pub async fn enqueue(&mut self, e: &OutboxEvent) -> Result<bool, RegistryError> {
        let r = sqlx::query(
            "INSERT INTO outbox (subject, msg_id, traceparent, payload, created_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(&e.subject)
        .bind(&e.msg_id)
        .bind(&e.traceparent)
        .bind(&e.payload)
        .bind(now())
        .execute(&mut *self.tx)
        .await?;
        Ok(r.rows_affected() == 1)
    }
}
