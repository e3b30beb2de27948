//! Windows of live traffic the monitor closed, as the `monitor.window.closed`
//! events it published.

use modelbus_core::events::MonitorWindowClosed;
use sqlx::Row;

use super::Store;
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

    /// A model's latest windows, newest first, optionally of one environment.
    pub async fn windows(
        &self,
        model: &str,
        environment: Option<&str>,
        limit: u32,
    ) -> Result<Vec<MonitorWindowClosed>, RegistryError> {
        let rows = sqlx::query(
            "SELECT payload FROM monitor_windows WHERE model = $1 AND ($2 = '' OR environment = $2) \
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
                serde_json::from_str(&text)
                    .map_err(|e| RegistryError::Internal(format!("stored window: {e}")))
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
