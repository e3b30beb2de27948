//! Serving statistics windows, for soak checks.

use serde::{Deserialize, Serialize};
use sqlx::Row;

use super::Store;
use crate::error::RegistryError;

/// Totals of serving statistics over a period.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ServingTotals {
    /// Requests answered.
    pub requests: u64,
    /// Of which failed with a server-side error.
    pub errors: u64,
    /// Worst p99 latency over the windows, milliseconds.
    pub max_p99_ms: f64,
    /// Windows counted.
    pub windows: u64,
}

impl Store {
    /// Records one statistics window (once per event).
    #[allow(clippy::too_many_arguments)]
    pub async fn record_serving_stats(
        &self,
        event_id: &str,
        environment: &str,
        model: &str,
        version: u32,
        requests: u64,
        errors: u64,
        p99_ms: f64,
        window_end: &str,
    ) -> Result<(), RegistryError> {
        sqlx::query(
            "INSERT INTO serving_stats (event_id, environment, model, version, requests, errors, p99_ms, window_end) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
        )
        .bind(event_id)
        .bind(environment)
        .bind(model)
        .bind(i64::from(version))
        .bind(i64::try_from(requests).unwrap_or(i64::MAX))
        .bind(i64::try_from(errors).unwrap_or(i64::MAX))
        .bind(p99_ms)
        .bind(window_end)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Totals of a version's statistics windows ending at or after `since`.
    pub async fn serving_totals(
        &self,
        environment: &str,
        model: &str,
        version: u32,
        since: &str,
    ) -> Result<ServingTotals, RegistryError> {
        let rows = sqlx::query(
            "SELECT requests, errors, p99_ms FROM serving_stats WHERE environment = $1 AND model = $2 \
             AND version = $3 AND window_end >= $4",
        )
        .bind(environment)
        .bind(model)
        .bind(i64::from(version))
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        let mut t = ServingTotals::default();
        for r in &rows {
            // Counts come from events: saturate, never overflow.
            t.requests = t
                .requests
                .saturating_add(u64::try_from(r.try_get::<i64, _>("requests")?).unwrap_or(0));
            t.errors = t
                .errors
                .saturating_add(u64::try_from(r.try_get::<i64, _>("errors")?).unwrap_or(0));
            t.max_p99_ms = t.max_p99_ms.max(r.try_get::<f64, _>("p99_ms")?);
            t.windows += 1;
        }
        Ok(t)
    }

    /// When a digest was first reported serving in an environment, from the
    /// deployment timeline.
    pub async fn first_completed(
        &self,
        environment: &str,
        model: &str,
        version: u32,
    ) -> Result<Option<String>, RegistryError> {
        let row = sqlx::query(
            "SELECT MIN(at) AS at FROM deployment_events WHERE environment = $1 AND model = $2 \
             AND version = $3 AND kind = 'completed'",
        )
        .bind(environment)
        .bind(model)
        .bind(i64::from(version))
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get::<Option<String>, _>("at")?)
    }
}
