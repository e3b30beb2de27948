//! The registry's metadata store over sqlx: SQLite (the embedded default) or
//! PostgreSQL, one set of migrations each, one code path through sqlx's `Any`
//! driver. Every write that must happen once is guarded by a unique key, so
//! retried requests and redelivered events find the existing row.

use std::collections::BTreeMap;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

use crate::error::RegistryError;

mod audit;
mod decisions;
mod monitor;
mod roster;
mod stats;
mod tokens;
mod tx;
use crate::types::{
    DatasetInfo, GateCheck, Lineage, ModelVersion, NamedArtifact, NewModelVersion, PipelineRun,
    RegisteredModel, SpecVersion, Stage, TrainingRun,
};
pub use decisions::{Promotion, SignedDecision};
pub use monitor::{IndexedPrediction, JoinCounts, Joined, WindowLabels};
pub use roster::Approver;
pub use stats::ServingTotals;
pub use tokens::TokenInfo;
pub use tx::{OutboxEvent, WriteTx};

/// Current time, RFC 3339 UTC with microseconds: sorts as text.
pub fn now() -> String {
    let f = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    );
    time::OffsetDateTime::now_utc()
        .format(&f)
        .unwrap_or_default()
}

/// Which database is behind the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite file.
    Sqlite,
    /// PostgreSQL server.
    Postgres,
}

/// Handle to the metadata store; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

fn parse_json<T: serde::de::DeserializeOwned + Default>(s: &str) -> T {
    serde_json::from_str(s).unwrap_or_default()
}

fn u32_of(v: i64) -> u32 {
    u32::try_from(v).unwrap_or(0)
}

impl Store {
    /// Connects and applies migrations. `url` is `sqlite://...` or `postgres://...`.
    pub async fn connect(url: &str) -> Result<Self, RegistryError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("postgres") {
            Backend::Postgres
        } else {
            Backend::Sqlite
        };
        if backend == Backend::Sqlite
            && let Some(path) = url
                .strip_prefix("sqlite://")
                .map(|p| p.split('?').next().unwrap_or(p))
            && let Some(parent) = std::path::Path::new(path).parent()
            && !parent.as_os_str().is_empty()
        {
            modelbus_core::fsutil::create_private_dir(parent).map_err(|e| {
                RegistryError::Internal(format!("cannot create {}: {e}", parent.display()))
            })?;
        }
        let mut opts =
            AnyPoolOptions::new().max_connections(if backend == Backend::Sqlite { 4 } else { 8 });
        if backend == Backend::Sqlite {
            opts = opts.after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::query("PRAGMA journal_mode = WAL")
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query("PRAGMA busy_timeout = 10000")
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query("PRAGMA foreign_keys = ON")
                        .execute(&mut *conn)
                        .await?;
                    Ok(())
                })
            });
        }
        let pool = opts.connect(url).await.map_err(|e| {
            RegistryError::Internal(format!("cannot open the registry database: {e}"))
        })?;
        let migrator = match backend {
            Backend::Sqlite => sqlx::migrate!("migrations/sqlite"),
            Backend::Postgres => sqlx::migrate!("migrations/postgres"),
        };
        migrator
            .run(&pool)
            .await
            .map_err(|e| RegistryError::Internal(format!("migrations: {e}")))?;
        Ok(Self { pool, backend })
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The pool (tests poke at rows directly).
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    // ---- datasets and specs ----

    /// Registers a spec version; applying the same text again returns the existing one.
    pub async fn apply_spec(
        &self,
        dataset: &str,
        digest: &str,
        toml: &str,
        spec_json: &serde_json::Value,
    ) -> Result<(SpecVersion, bool), RegistryError> {
        if let Some(existing) = self.spec_by_digest(digest).await? {
            if existing.dataset != dataset {
                return Err(RegistryError::FailedPrecondition(format!(
                    "this exact spec text is already registered for dataset {:?}",
                    existing.dataset
                )));
            }
            return Ok((existing, false));
        }
        for _attempt in 0..5 {
            let mut tx = self.pool.begin().await?;
            let ts = now();
            sqlx::query("INSERT INTO datasets (name, created_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
                .bind(dataset)
                .bind(&ts)
                .execute(&mut *tx)
                .await?;
            if self.backend == Backend::Postgres {
                // One spec-version allocation per dataset at a time (see register_model_version).
                sqlx::query("SELECT name FROM datasets WHERE name = $1 FOR UPDATE")
                    .bind(dataset)
                    .fetch_one(&mut *tx)
                    .await?;
            }
            let next: i64 = sqlx::query(
                "SELECT COALESCE(MAX(version), 0) + 1 AS v FROM spec_versions WHERE dataset = $1",
            )
            .bind(dataset)
            .fetch_one(&mut *tx)
            .await?
            .try_get("v")?;
            let inserted = sqlx::query(
                "INSERT INTO spec_versions (digest, dataset, version, toml, spec_json, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            )
            .bind(digest)
            .bind(dataset)
            .bind(next)
            .bind(toml)
            .bind(spec_json.to_string())
            .bind(&ts)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            if inserted.rows_affected() == 1 {
                let v = self
                    .spec_by_digest(digest)
                    .await?
                    .ok_or_else(|| RegistryError::Internal("spec vanished".into()))?;
                return Ok((v, true));
            }
            if let Some(v) = self.spec_by_digest(digest).await? {
                return Ok((v, false));
            }
        }
        Err(RegistryError::Internal(
            "could not allocate a spec version number".into(),
        ))
    }

    fn spec_row(r: &AnyRow) -> Result<SpecVersion, RegistryError> {
        Ok(SpecVersion {
            dataset: r.try_get("dataset")?,
            digest: r.try_get("digest")?,
            version: u32_of(r.try_get("version")?),
            toml: r.try_get("toml")?,
            spec: serde_json::from_str(&r.try_get::<String, _>("spec_json")?).unwrap_or_default(),
            created_at: r.try_get("created_at")?,
        })
    }

    /// A spec version by digest.
    pub async fn spec_by_digest(&self, digest: &str) -> Result<Option<SpecVersion>, RegistryError> {
        let row = sqlx::query("SELECT * FROM spec_versions WHERE digest = $1")
            .bind(digest)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(Self::spec_row).transpose()
    }

    /// The latest spec version of a dataset.
    pub async fn latest_spec(&self, dataset: &str) -> Result<Option<SpecVersion>, RegistryError> {
        let row = sqlx::query(
            "SELECT * FROM spec_versions WHERE dataset = $1 ORDER BY version DESC LIMIT 1",
        )
        .bind(dataset)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(Self::spec_row).transpose()
    }

    /// Every spec version of a dataset, newest first.
    pub async fn spec_versions(&self, dataset: &str) -> Result<Vec<SpecVersion>, RegistryError> {
        let rows =
            sqlx::query("SELECT * FROM spec_versions WHERE dataset = $1 ORDER BY version DESC")
                .bind(dataset)
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(Self::spec_row).collect()
    }

    /// Datasets with their latest spec, by name: at most `limit` after `after`.
    pub async fn list_datasets(
        &self,
        after: &str,
        limit: u32,
    ) -> Result<Vec<DatasetInfo>, RegistryError> {
        let rows = sqlx::query(
            "SELECT d.name, d.created_at, COUNT(s.digest) AS n, COALESCE(MAX(s.version), 0) AS latest \
             FROM datasets d LEFT JOIN spec_versions s ON s.dataset = d.name WHERE d.name > $1 \
             GROUP BY d.name, d.created_at ORDER BY d.name LIMIT $2",
        )
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::new();
        for r in rows {
            let name: String = r.try_get("name")?;
            let latest = self.latest_spec(&name).await?;
            out.push(DatasetInfo {
                latest_version: u32_of(r.try_get("latest")?),
                latest_digest: latest.map(|s| s.digest).unwrap_or_default(),
                spec_versions: u32_of(r.try_get("n")?),
                created_at: r.try_get("created_at")?,
                name,
            });
        }
        Ok(out)
    }

    // ---- pipeline runs ----

    /// Creates a pipeline run, or returns the existing one for the same spec and batch.
    pub async fn create_pipeline_run(
        &self,
        id: &str,
        dataset: &str,
        spec_digest: &str,
        batch_sha256: &str,
        size_bytes: u64,
        submitted_by: &str,
    ) -> Result<(PipelineRun, bool), RegistryError> {
        let ts = now();
        let inserted = sqlx::query(
            "INSERT INTO pipeline_runs (id, dataset, spec_digest, batch_sha256, size_bytes, submitted_by, state, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 'submitted', $7, $7) ON CONFLICT DO NOTHING",
        )
        .bind(id)
        .bind(dataset)
        .bind(spec_digest)
        .bind(batch_sha256)
        .bind(size_bytes as i64)
        .bind(submitted_by)
        .bind(&ts)
        .execute(&self.pool)
        .await?;
        let run = self.pipeline_run(id).await?.ok_or_else(|| {
            RegistryError::Internal(format!("pipeline run {id} missing after insert"))
        })?;
        Ok((run, inserted.rows_affected() == 1))
    }

    fn run_row(r: &AnyRow) -> Result<PipelineRun, RegistryError> {
        Ok(PipelineRun {
            id: r.try_get("id")?,
            dataset: r.try_get("dataset")?,
            spec_digest: r.try_get("spec_digest")?,
            batch_sha256: r.try_get("batch_sha256")?,
            size_bytes: r.try_get::<i64, _>("size_bytes")? as u64,
            submitted_by: r.try_get("submitted_by")?,
            state: r.try_get("state")?,
            reasons: parse_json(&r.try_get::<String, _>("reasons")?),
            report_sha256: r.try_get("report_sha256")?,
            rows: r.try_get::<i64, _>("rows_count")? as u64,
            model: r.try_get("model")?,
            model_version: u32_of(r.try_get("model_version")?),
            created_at: r.try_get("created_at")?,
            updated_at: r.try_get("updated_at")?,
            stages: Vec::new(),
        })
    }

    /// A pipeline run with its stages.
    pub async fn pipeline_run(&self, id: &str) -> Result<Option<PipelineRun>, RegistryError> {
        let Some(row) = sqlx::query("SELECT * FROM pipeline_runs WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        let mut run = Self::run_row(&row)?;
        run.stages = self.stages(id).await?;
        Ok(Some(run))
    }

    async fn stages(&self, run: &str) -> Result<Vec<Stage>, RegistryError> {
        let rows = sqlx::query(
            "SELECT * FROM pipeline_stages WHERE run_id = $1 ORDER BY position, started_at",
        )
        .bind(run)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|s| {
                Ok(Stage {
                    name: s.try_get("stage")?,
                    status: s.try_get("status")?,
                    started_at: s.try_get("started_at")?,
                    finished_at: s.try_get("finished_at")?,
                    detail: s.try_get("detail")?,
                })
            })
            .collect()
    }

    /// Pipeline runs, newest first.
    pub async fn list_pipeline_runs(
        &self,
        dataset: Option<&str>,
        limit: u32,
    ) -> Result<Vec<PipelineRun>, RegistryError> {
        let limit = i64::from(limit.max(1));
        let rows = match dataset {
            Some(d) => sqlx::query(
                "SELECT * FROM pipeline_runs WHERE dataset = $1 ORDER BY created_at DESC LIMIT $2",
            )
            .bind(d)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?,
            None => {
                sqlx::query("SELECT * FROM pipeline_runs ORDER BY created_at DESC LIMIT $1")
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        let mut runs = rows
            .iter()
            .map(Self::run_row)
            .collect::<Result<Vec<_>, _>>()?;
        for r in &mut runs {
            r.stages = self.stages(&r.id).await?;
        }
        Ok(runs)
    }

    /// Pipeline runs of a batch (one per spec version it was submitted under), newest first.
    pub async fn runs_for_batch(
        &self,
        batch_sha256: &str,
    ) -> Result<Vec<PipelineRun>, RegistryError> {
        let rows = sqlx::query(
            "SELECT * FROM pipeline_runs WHERE batch_sha256 = $1 ORDER BY created_at DESC",
        )
        .bind(batch_sha256)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(Self::run_row).collect()
    }

    /// Records a stage transition: creates the stage on first sight, sets its status,
    /// and its end time when the status is final.
    pub async fn set_stage(
        &self,
        run: &str,
        stage: &str,
        status: &str,
        detail: &str,
    ) -> Result<(), RegistryError> {
        let position = match stage {
            "validation" => 1,
            "features" => 2,
            "training" => 3,
            "gates" => 4,
            "deployment" => 5,
            _ => 9,
        };
        let ts = now();
        let finished = if status == "running" {
            String::new()
        } else {
            ts.clone()
        };
        sqlx::query(
            "INSERT INTO pipeline_stages (run_id, stage, position, status, started_at, finished_at, detail) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (run_id, stage) DO UPDATE SET status = excluded.status, \
             finished_at = excluded.finished_at, detail = CASE WHEN excluded.detail = '' THEN pipeline_stages.detail ELSE excluded.detail END",
        )
        .bind(run)
        .bind(stage)
        .bind(position)
        .bind(status)
        .bind(&ts)
        .bind(&finished)
        .bind(detail)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Moves a run to `state`, unless it already ended. Returns whether it moved.
    pub async fn set_run_state(
        &self,
        run: &str,
        state: &str,
        reasons: Option<&[String]>,
    ) -> Result<bool, RegistryError> {
        let r = match reasons {
            Some(reasons) => {
                sqlx::query(
                    "UPDATE pipeline_runs SET state = $1, reasons = $2, updated_at = $3 \
                 WHERE id = $4 AND state NOT IN ('deployed', 'rejected', 'failed')",
                )
                .bind(state)
                .bind(json(&reasons))
                .bind(now())
                .bind(run)
                .execute(&self.pool)
                .await?
            }
            None => {
                sqlx::query(
                    "UPDATE pipeline_runs SET state = $1, updated_at = $2 \
                 WHERE id = $3 AND state NOT IN ('deployed', 'rejected', 'failed')",
                )
                .bind(state)
                .bind(now())
                .bind(run)
                .execute(&self.pool)
                .await?
            }
        };
        Ok(r.rows_affected() > 0)
    }

    /// Records the validation outcome's report and row count.
    pub async fn set_run_report(
        &self,
        run: &str,
        report: &str,
        rows: u64,
    ) -> Result<(), RegistryError> {
        sqlx::query("UPDATE pipeline_runs SET report_sha256 = $1, rows_count = $2, updated_at = $3 WHERE id = $4")
            .bind(report)
            .bind(rows as i64)
            .bind(now())
            .bind(run)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Links the version trained from a run.
    pub async fn set_run_model(
        &self,
        run: &str,
        model: &str,
        version: u32,
    ) -> Result<(), RegistryError> {
        sqlx::query("UPDATE pipeline_runs SET model = $1, model_version = $2, updated_at = $3 WHERE id = $4")
            .bind(model)
            .bind(i64::from(version))
            .bind(now())
            .bind(run)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // ---- models ----

    /// Records the training run and registers the version; the same model digest
    /// returns the existing version.
    pub async fn register_model_version(
        &self,
        v: &NewModelVersion,
    ) -> Result<(ModelVersion, bool), RegistryError> {
        if let Some(existing) = self.version_by_digest(&v.model, &v.model_sha256).await? {
            return Ok((existing, false));
        }
        for _attempt in 0..5 {
            let ts = now();
            let run_id = format!("run-{}", uuid::Uuid::now_v7().simple());
            let mut tx = self.pool.begin().await?;
            sqlx::query("INSERT INTO registered_models (name, dataset, created_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING")
                .bind(&v.model)
                .bind(&v.dataset)
                .bind(&ts)
                .execute(&mut *tx)
                .await?;
            if self.backend == Backend::Postgres {
                // Serialize version allocation per model: without this lock, concurrent
                // registrations all read the same MAX(version) and can exhaust the retries.
                sqlx::query("SELECT name FROM registered_models WHERE name = $1 FOR UPDATE")
                    .bind(&v.model)
                    .fetch_one(&mut *tx)
                    .await?;
            }
            sqlx::query(
                "INSERT INTO training_runs (id, pipeline_run, dataset, params, metrics, artifacts, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&run_id)
            .bind(&v.lineage.pipeline_run)
            .bind(&v.dataset)
            .bind(json(&v.params))
            .bind(json(&v.metrics))
            .bind(json(&v.artifacts))
            .bind(&ts)
            .execute(&mut *tx)
            .await?;
            let next: i64 = sqlx::query(
                "SELECT COALESCE(MAX(version), 0) + 1 AS v FROM model_versions WHERE model = $1",
            )
            .bind(&v.model)
            .fetch_one(&mut *tx)
            .await?
            .try_get("v")?;
            let inserted = sqlx::query(
                "INSERT INTO model_versions (model, version, model_sha256, status, algorithm, metrics, lineage, run_id, author, \
                 evaluation_sha256, evaluation_html_sha256, created_at, updated_at) \
                 VALUES ($1, $2, $3, 'pending', $4, $5, $6, $7, $8, $10, $11, $9, $9) ON CONFLICT DO NOTHING",
            )
            .bind(&v.model)
            .bind(next)
            .bind(&v.model_sha256)
            .bind(&v.algorithm)
            .bind(json(&v.metrics))
            .bind(json(&v.lineage))
            .bind(&run_id)
            .bind(&v.author)
            .bind(&ts)
            .bind(&v.evaluation_sha256)
            .bind(&v.evaluation_html_sha256)
            .execute(&mut *tx)
            .await?;
            if inserted.rows_affected() == 1 {
                tx.commit().await?;
                let mv = self
                    .model_version(&v.model, u32_of(next))
                    .await?
                    .ok_or_else(|| RegistryError::Internal("version vanished".into()))?;
                return Ok((mv, true));
            }
            tx.rollback().await?;
            if let Some(existing) = self.version_by_digest(&v.model, &v.model_sha256).await? {
                return Ok((existing, false));
            }
        }
        Err(RegistryError::Internal(
            "could not allocate a version number".into(),
        ))
    }

    async fn version_from_row(&self, r: &AnyRow) -> Result<ModelVersion, RegistryError> {
        let model: String = r.try_get("model")?;
        let version = u32_of(r.try_get("version")?);
        let aliases = sqlx::query(
            "SELECT alias FROM aliases WHERE model = $1 AND version = $2 ORDER BY alias",
        )
        .bind(&model)
        .bind(i64::from(version))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|a| a.try_get::<String, _>("alias"))
        .collect::<Result<Vec<_>, _>>()?;
        Ok(ModelVersion {
            model,
            version,
            model_sha256: r.try_get("model_sha256")?,
            status: r.try_get("status")?,
            algorithm: r.try_get("algorithm")?,
            metrics: parse_json(&r.try_get::<String, _>("metrics")?),
            lineage: parse_json::<Lineage>(&r.try_get::<String, _>("lineage")?),
            run_id: r.try_get("run_id")?,
            author: r.try_get("author")?,
            gate_checks: parse_json::<Vec<GateCheck>>(&r.try_get::<String, _>("gate_checks")?),
            aliases,
            created_at: r.try_get("created_at")?,
            evaluation_sha256: r.try_get("evaluation_sha256")?,
            evaluation_html_sha256: r.try_get("evaluation_html_sha256")?,
            decision: serde_json::from_str(&r.try_get::<String, _>("decision")?).ok(),
        })
    }

    async fn version_by_digest(
        &self,
        model: &str,
        digest: &str,
    ) -> Result<Option<ModelVersion>, RegistryError> {
        let row =
            sqlx::query("SELECT * FROM model_versions WHERE model = $1 AND model_sha256 = $2")
                .bind(model)
                .bind(digest)
                .fetch_optional(&self.pool)
                .await?;
        match row {
            Some(r) => Ok(Some(self.version_from_row(&r).await?)),
            None => Ok(None),
        }
    }

    /// One version.
    pub async fn model_version(
        &self,
        model: &str,
        version: u32,
    ) -> Result<Option<ModelVersion>, RegistryError> {
        let row = sqlx::query("SELECT * FROM model_versions WHERE model = $1 AND version = $2")
            .bind(model)
            .bind(i64::from(version))
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(r) => Ok(Some(self.version_from_row(&r).await?)),
            None => Ok(None),
        }
    }

    /// A registered model with every version and alias.
    pub async fn model(&self, name: &str) -> Result<Option<RegisteredModel>, RegistryError> {
        let Some(m) = sqlx::query("SELECT * FROM registered_models WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        let rows =
            sqlx::query("SELECT * FROM model_versions WHERE model = $1 ORDER BY version DESC")
                .bind(name)
                .fetch_all(&self.pool)
                .await?;
        let mut versions = Vec::new();
        for r in &rows {
            versions.push(self.version_from_row(r).await?);
        }
        let mut aliases = BTreeMap::new();
        for a in sqlx::query("SELECT alias, version FROM aliases WHERE model = $1")
            .bind(name)
            .fetch_all(&self.pool)
            .await?
        {
            aliases.insert(
                a.try_get::<String, _>("alias")?,
                u32_of(a.try_get("version")?),
            );
        }
        Ok(Some(RegisteredModel {
            name: m.try_get("name")?,
            dataset: m.try_get("dataset")?,
            created_at: m.try_get("created_at")?,
            versions,
            aliases,
        }))
    }

    /// Registered models by name: at most `limit` after `after`.
    pub async fn list_models(
        &self,
        after: &str,
        limit: u32,
    ) -> Result<Vec<RegisteredModel>, RegistryError> {
        let names = sqlx::query(
            "SELECT name FROM registered_models WHERE name > $1 ORDER BY name LIMIT $2",
        )
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::new();
        for n in names {
            if let Some(m) = self.model(&n.try_get::<String, _>("name")?).await? {
                out.push(m);
            }
        }
        Ok(out)
    }

    /// A training run.
    pub async fn run(&self, id: &str) -> Result<Option<TrainingRun>, RegistryError> {
        let Some(r) = sqlx::query("SELECT * FROM training_runs WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        Ok(Some(TrainingRun {
            id: r.try_get("id")?,
            pipeline_run: r.try_get("pipeline_run")?,
            dataset: r.try_get("dataset")?,
            params: parse_json(&r.try_get::<String, _>("params")?),
            metrics: parse_json(&r.try_get::<String, _>("metrics")?),
            artifacts: parse_json::<Vec<NamedArtifact>>(&r.try_get::<String, _>("artifacts")?),
            created_at: r.try_get("created_at")?,
        }))
    }

    /// Records a gate decision; a version already decided keeps its first decision.
    pub async fn set_gate_decision(
        &self,
        model: &str,
        version: u32,
        status: &str,
        checks: &[GateCheck],
        decision: Option<&crate::types::PolicyDecision>,
    ) -> Result<(), RegistryError> {
        sqlx::query(
            "UPDATE model_versions SET status = $1, gate_checks = $2, decision = $6, updated_at = $3 \
             WHERE model = $4 AND version = $5 AND status = 'pending'",
        )
        .bind(status)
        .bind(json(&checks))
        .bind(now())
        .bind(model)
        .bind(i64::from(version))
        .bind(decision.map(json).unwrap_or_else(|| "{}".into()))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records a version's evaluation report (JSON and HTML artifacts); the first
    /// recorded stays.
    pub async fn set_evaluation(
        &self,
        model: &str,
        version: u32,
        json_sha256: &str,
        html_sha256: &str,
    ) -> Result<(), RegistryError> {
        sqlx::query(
            "UPDATE model_versions SET evaluation_sha256 = $1, evaluation_html_sha256 = $2, updated_at = $3 \
             WHERE model = $4 AND version = $5 AND evaluation_sha256 = ''",
        )
        .bind(json_sha256)
        .bind(html_sha256)
        .bind(now())
        .bind(model)
        .bind(i64::from(version))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Points an alias at a version.
    pub async fn set_alias(
        &self,
        model: &str,
        alias: &str,
        version: u32,
    ) -> Result<(), RegistryError> {
        sqlx::query(
            "INSERT INTO aliases (model, alias, version, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (model, alias) DO UPDATE SET version = excluded.version, updated_at = excluded.updated_at",
        )
        .bind(model)
        .bind(alias)
        .bind(i64::from(version))
        .bind(now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    // ---- approvals and deployments ----

    /// Stores an approval envelope; the first stored for a (version, environment,
    /// approver, request) is kept and returned, so a republished approval is
    /// identical. `request` is what asked for it (the pipeline run, for the
    /// registry's automation approvals).
    #[allow(clippy::too_many_arguments)]
    pub async fn save_approval(
        &self,
        model: &str,
        version: u32,
        environment: &str,
        approver: &str,
        request: &str,
        key_id: &str,
        envelope: &str,
    ) -> Result<String, RegistryError> {
        sqlx::query(
            "INSERT INTO approvals (model, version, environment, approver, request, key_id, envelope, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
        )
        .bind(model)
        .bind(i64::from(version))
        .bind(environment)
        .bind(approver)
        .bind(request)
        .bind(key_id)
        .bind(envelope)
        .bind(now())
        .execute(&self.pool)
        .await?;
        let row = sqlx::query(
            "SELECT envelope FROM approvals WHERE model = $1 AND version = $2 AND environment = $3 \
             AND approver = $4 AND request = $5",
        )
        .bind(model)
        .bind(i64::from(version))
        .bind(environment)
        .bind(approver)
        .bind(request)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("envelope")?)
    }

    /// Appends to the deployment timeline (once per event).
    pub async fn record_deployment_event(
        &self,
        event_id: &str,
        kind: &str,
        environment: &str,
        model: &str,
        version: u32,
        detail: &str,
    ) -> Result<(), RegistryError> {
        sqlx::query(
            "INSERT INTO deployment_events (event_id, kind, environment, model, version, detail, at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
        )
        .bind(event_id)
        .bind(kind)
        .bind(environment)
        .bind(model)
        .bind(i64::from(version))
        .bind(detail)
        .bind(now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The deployment timeline of a model, oldest first.
    pub async fn deployment_events(
        &self,
        model: &str,
    ) -> Result<Vec<serde_json::Value>, RegistryError> {
        let rows = sqlx::query("SELECT * FROM deployment_events WHERE model = $1 ORDER BY at")
            .bind(model)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(serde_json::json!({
                    "event_id": r.try_get::<String, _>("event_id")?,
                    "kind": r.try_get::<String, _>("kind")?,
                    "environment": r.try_get::<String, _>("environment")?,
                    "version": r.try_get::<i64, _>("version")?,
                    "detail": r.try_get::<String, _>("detail")?,
                    "at": r.try_get::<String, _>("at")?,
                }))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_sort_as_text() {
        let a = now();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = now();
        assert!(a < b, "{a} {b}");
        assert!(a.ends_with('Z') && a.len() == 27, "{a}");
    }
}
