//! Windows of live traffic the monitor closed, as the `monitor.window.closed`
//! events it published.

use modelbus_core::events::MonitorWindowClosed;
use sqlx::Row;

use super::{Store, WriteTx};
use crate::error::RegistryError;

impl Store {
    /// Records a closed window once; `true` when it was new.
    pub async fn record_window(&self, w: &MonitorWindowClosed) -> Result<bool, RegistryError> {
        let payload =
            serde_json::to_string(w).map_err(|e| RegistryError::Internal(e.to_string()))?;
        let done = sqlx::query(
            "INSERT INTO monitor_windows (window_id, environment, model, version, closed, report_sha256, html_sha256, payload) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
        )
        .bind(&w.window_id)
        .bind(w.environment.as_str())
        .bind(w.model.as_str())
        .bind(i64::from(w.version))
        .bind(&w.closed)
        .bind(w.report_sha256.to_hex())
        .bind(w.html_sha256.to_hex())
        .bind(payload)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// A model's latest windows, newest first, optionally of one environment,
    /// each with its latest realised performance (the JSON of its
    /// `monitor.window.performance`), when labels joined it.
    pub async fn windows(
        &self,
        model: &str,
        environment: Option<&str>,
        limit: u32,
    ) -> Result<Vec<(MonitorWindowClosed, Option<String>)>, RegistryError> {
        let rows = sqlx::query(
            "SELECT payload, performance FROM monitor_windows WHERE model = $1 AND ($2 = '' OR environment = $2) \
             ORDER BY closed DESC, window_id DESC LIMIT $3",
        )
        .bind(model)
        .bind(environment.unwrap_or(""))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let text: String = r.try_get("payload")?;
                let window = serde_json::from_str(&text)
                    .map_err(|e| RegistryError::Internal(format!("stored window: {e}")))?;
                Ok((window, r.try_get("performance")?))
            })
            .collect()
    }

    /// Whether `sha256` is the HTML page of a recorded window (only those are
    /// served as pages).
    pub async fn is_window_page(&self, sha256: &str) -> Result<bool, RegistryError> {
        let row =
            sqlx::query("SELECT 1 AS one FROM monitor_windows WHERE html_sha256 = $1 LIMIT 1")
                .bind(sha256)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.is_some())
    }
}

pub use modelbus_models::monitoring::IndexedPrediction;

/// What joining one label found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Joined {
    /// Joined to a prediction of this window.
    Window,
    /// That prediction already had a label (the first one wins).
    Duplicate,
    /// The prediction is older than the label window before the label.
    OutsideWindow,
    /// No indexed prediction (yet).
    Unknown,
}

/// Counts of one join.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JoinCounts {
    /// Joined.
    pub joined: u64,
    /// Kept pending.
    pub pending: u64,
    /// Outside the label window.
    pub outside_window: u64,
    /// Duplicates refused.
    pub duplicate: u64,
    /// Windows whose labels changed.
    pub windows: std::collections::BTreeSet<String>,
}

/// A window's labelled predictions.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WindowLabels {
    /// Predictions the window indexed.
    pub indexed: u64,
    /// Probabilities of the labelled ones.
    pub probabilities: Vec<f64>,
    /// Their labels (true = positive).
    pub positive: Vec<bool>,
    /// Their ids.
    pub ids: Vec<String>,
}

impl Store {
    /// The dataset a registered model is trained on.
    pub async fn model_dataset(&self, model: &str) -> Result<Option<String>, RegistryError> {
        let row = sqlx::query("SELECT dataset FROM registered_models WHERE name = $1")
            .bind(model)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => Some(r.try_get("dataset")?),
            None => None,
        })
    }

    /// Indexes a window's predictions (idempotent); the rows newly added.
    pub async fn index_window(
        &self,
        window_id: &str,
        dataset: &str,
        rows: &[IndexedPrediction],
    ) -> Result<u64, RegistryError> {
        const CHUNK: usize = 100;
        let mut tx = self.pool.begin().await?;
        let mut added = 0;
        for chunk in rows.chunks(CHUNK) {
            let mut sql = String::from(
                "INSERT INTO monitor_predictions (prediction_id, window_id, dataset, entity, time_ms, probability) VALUES ",
            );
            for i in 0..chunk.len() {
                let b = i * 6;
                if i > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!(
                    "(${}, ${}, ${}, ${}, ${}, ${})",
                    b + 1,
                    b + 2,
                    b + 3,
                    b + 4,
                    b + 5,
                    b + 6
                ));
            }
            sql.push_str(" ON CONFLICT DO NOTHING");
            // Audited: only placeholders are formatted in; every value is bound.
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for r in chunk {
                q = q
                    .bind(r.id.clone())
                    .bind(window_id.to_string())
                    .bind(dataset.to_string())
                    .bind(r.entity.clone())
                    .bind(r.time_ms)
                    .bind(r.p);
            }
            added += q.execute(&mut *tx).await?.rows_affected();
        }
        tx.commit().await?;
        Ok(added)
    }

    /// Whether a submission of labels was joined already.
    pub async fn label_batch_exists(&self, labels_id: &str) -> Result<bool, RegistryError> {
        let row = sqlx::query("SELECT 1 AS one FROM label_batches WHERE labels_id = $1")
            .bind(labels_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    /// Pending labels of a dataset still within `since_ms`, oldest first.
    pub async fn pending_labels(
        &self,
        dataset: &str,
        since_ms: i64,
        limit: u32,
    ) -> Result<Vec<(String, modelbus_dataset::labels::Label)>, RegistryError> {
        let rows = sqlx::query(
            "SELECT labels_id, row_no, prediction_id, entity, positive, label_time_ms FROM pending_labels \
             WHERE dataset = $1 AND label_time_ms >= $2 ORDER BY label_time_ms, labels_id, row_no LIMIT $3",
        )
        .bind(dataset)
        .bind(since_ms)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get::<String, _>("labels_id")?,
                    modelbus_dataset::labels::Label {
                        row: u64::try_from(r.try_get::<i64, _>("row_no")?).unwrap_or(0),
                        prediction_id: r.try_get("prediction_id")?,
                        entity: r.try_get("entity")?,
                        positive: r.try_get::<i64, _>("positive")? != 0,
                        time_ms: r.try_get("label_time_ms")?,
                    },
                ))
            })
            .collect()
    }

    /// Drops pending labels older than `before_ms`; how many.
    pub async fn expire_pending_labels(&self, before_ms: i64) -> Result<u64, RegistryError> {
        Ok(
            sqlx::query("DELETE FROM pending_labels WHERE label_time_ms < $1")
                .bind(before_ms)
                .execute(&self.pool)
                .await?
                .rows_affected(),
        )
    }

    /// Deletes at most `limit` indexed predictions, and at most `limit`
    /// labels, older than `before_ms` (a prediction by its time, a label by
    /// its own: a label is never older than its prediction, so a pruned
    /// label's prediction is pruned too). Bounded so a first prune of a long
    /// history never holds the writer for long; returns what went.
    pub async fn prune_prediction_index(
        &self,
        before_ms: i64,
        limit: i64,
    ) -> Result<(u64, u64), RegistryError> {
        let mut deleted = [0u64; 2];
        for (n, (table, time)) in deleted.iter_mut().zip([
            ("monitor_predictions", "time_ms"),
            ("prediction_labels", "label_time_ms"),
        ]) {
            // Audited: only the two constant names above are formatted in.
            *n = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE prediction_id IN \
                 (SELECT prediction_id FROM {table} WHERE {time} < $1 LIMIT $2)"
            )))
            .bind(before_ms)
            .bind(limit)
            .execute(&self.pool)
            .await?
            .rows_affected();
        }
        let [predictions, labels] = deleted;
        Ok((predictions, labels))
    }

    /// A window's labelled predictions.
    pub async fn window_labels(&self, window_id: &str) -> Result<WindowLabels, RegistryError> {
        let indexed: i64 =
            sqlx::query("SELECT COUNT(*) AS n FROM monitor_predictions WHERE window_id = $1")
                .bind(window_id)
                .fetch_one(&self.pool)
                .await?
                .try_get("n")?;
        let rows = sqlx::query(
            "SELECT l.prediction_id AS prediction_id, p.probability AS probability, l.positive AS positive FROM prediction_labels l \
             JOIN monitor_predictions p ON p.prediction_id = l.prediction_id WHERE l.window_id = $1 \
             ORDER BY l.prediction_id",
        )
        .bind(window_id)
        .fetch_all(&self.pool)
        .await?;
        let mut out = WindowLabels {
            indexed: u64::try_from(indexed).unwrap_or(0),
            ..WindowLabels::default()
        };
        for r in rows {
            out.probabilities.push(r.try_get("probability")?);
            out.positive.push(r.try_get::<i64, _>("positive")? != 0);
            out.ids.push(r.try_get("prediction_id")?);
        }
        Ok(out)
    }

    /// A model's windows with at least one label, newest first.
    pub async fn labelled_windows(
        &self,
        model: &str,
        limit: u32,
    ) -> Result<Vec<String>, RegistryError> {
        let rows = sqlx::query(
            "SELECT w.window_id AS window_id FROM monitor_windows w WHERE w.model = $1 \
             AND EXISTS (SELECT 1 FROM prediction_labels l WHERE l.window_id = w.window_id) \
             ORDER BY w.closed DESC, w.window_id DESC LIMIT $2",
        )
        .bind(model)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok(r.try_get::<String, _>("window_id")?))
            .collect()
    }

    /// A recorded window, if any.
    pub async fn window(
        &self,
        window_id: &str,
    ) -> Result<Option<MonitorWindowClosed>, RegistryError> {
        let row = sqlx::query("SELECT payload FROM monitor_windows WHERE window_id = $1")
            .bind(window_id)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(r) => {
                let text: String = r.try_get("payload")?;
                serde_json::from_str(&text)
                    .map(Some)
                    .map_err(|e| RegistryError::Internal(format!("stored window: {e}")))
            }
            None => Ok(None),
        }
    }

    /// Records a window's latest realised performance (JSON of the event).
    pub async fn record_window_performance(
        &self,
        window_id: &str,
        performance: &str,
    ) -> Result<bool, RegistryError> {
        let done = sqlx::query("UPDATE monitor_windows SET performance = $1 WHERE window_id = $2")
            .bind(performance)
            .bind(window_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }
}

impl WriteTx {
    /// Joins one label of `dataset` to its prediction (see [`Joined`]); a
    /// label that finds none is kept pending when `keep_pending`.
    pub async fn join_label(
        &mut self,
        labels_id: &str,
        dataset: &str,
        label: &modelbus_dataset::labels::Label,
        window_ms: i64,
        keep_pending: bool,
    ) -> Result<(Joined, Option<String>), RegistryError> {
        let found = if let Some(id) = &label.prediction_id {
            sqlx::query(
                "SELECT prediction_id, window_id, time_ms FROM monitor_predictions WHERE prediction_id = $1 AND dataset = $2",
            )
            .bind(id)
            .bind(dataset)
            .fetch_optional(&mut *self.tx)
            .await?
        } else {
            sqlx::query(
                "SELECT prediction_id, window_id, time_ms FROM monitor_predictions \
                 WHERE dataset = $1 AND entity = $2 AND time_ms <= $3 ORDER BY time_ms DESC LIMIT 1",
            )
            .bind(dataset)
            .bind(label.entity.clone())
            .bind(label.time_ms)
            .fetch_optional(&mut *self.tx)
            .await?
        };
        let Some(row) = found else {
            if keep_pending {
                sqlx::query(
                    "INSERT INTO pending_labels (labels_id, row_no, dataset, prediction_id, entity, positive, label_time_ms) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
                )
                .bind(labels_id)
                .bind(i64::try_from(label.row).unwrap_or(i64::MAX))
                .bind(dataset)
                .bind(label.prediction_id.clone())
                .bind(label.entity.clone())
                .bind(i64::from(label.positive))
                .bind(label.time_ms)
                .execute(&mut *self.tx)
                .await?;
            }
            return Ok((Joined::Unknown, None));
        };
        let prediction: String = row.try_get("prediction_id")?;
        let window: String = row.try_get("window_id")?;
        let time_ms: i64 = row.try_get("time_ms")?;
        if time_ms < label.time_ms.saturating_sub(window_ms) {
            return Ok((Joined::OutsideWindow, None));
        }
        let done = sqlx::query(
            "INSERT INTO prediction_labels (prediction_id, window_id, labels_id, positive, label_time_ms) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(&prediction)
        .bind(&window)
        .bind(labels_id)
        .bind(i64::from(label.positive))
        .bind(label.time_ms)
        .execute(&mut *self.tx)
        .await?;
        if done.rows_affected() == 1 {
            return Ok((Joined::Window, Some(window)));
        }
        // Already labelled: by this very submission (a redelivery) it still
        // counts as joined, by another it is a duplicate.
        let by: Option<String> =
            sqlx::query("SELECT labels_id FROM prediction_labels WHERE prediction_id = $1")
                .bind(&prediction)
                .fetch_optional(&mut *self.tx)
                .await?
                .map(|r| r.try_get("labels_id"))
                .transpose()?;
        Ok(if by.as_deref() == Some(labels_id) {
            (Joined::Window, Some(window))
        } else {
            (Joined::Duplicate, None)
        })
    }

    /// Removes a pending label (it was joined, or is outside the window).
    pub async fn drop_pending_label(
        &mut self,
        labels_id: &str,
        row: u64,
    ) -> Result<(), RegistryError> {
        sqlx::query("DELETE FROM pending_labels WHERE labels_id = $1 AND row_no = $2")
            .bind(labels_id)
            .bind(i64::try_from(row).unwrap_or(i64::MAX))
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Records a submission's join; `false` when it was recorded already.
    #[allow(clippy::too_many_arguments)]
    pub async fn record_label_batch(
        &mut self,
        labels_id: &str,
        dataset: &str,
        labels_sha256: &str,
        rows: u64,
        c: &JoinCounts,
        submitted_by: &str,
    ) -> Result<bool, RegistryError> {
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let done = sqlx::query(
            "INSERT INTO label_batches (labels_id, dataset, labels_sha256, rows_total, joined, pending, outside_window, duplicate, submitted_by, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING",
        )
        .bind(labels_id)
        .bind(dataset)
        .bind(labels_sha256)
        .bind(n(rows))
        .bind(n(c.joined))
        .bind(n(c.pending))
        .bind(n(c.outside_window))
        .bind(n(c.duplicate))
        .bind(submitted_by)
        .bind(super::now())
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}
