//! Features: turns a validated batch into a feature set. The batch is split
//! (stratified, seeded) into training and holdout rows; the spec's transforms are
//! fitted on the training rows only and applied to all; the encoded rows go to the
//! artifact store as Parquet and the fitted transform as JSON, so the trainer and
//! serving apply exactly what was fitted here.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use modelbus_core::Context;
use modelbus_core::bus::{Delivery, HandlerError};
use modelbus_core::events::{BatchValidated, Envelope, FeaturesReady};
use modelbus_core::online::{ONLINE_BUCKET, OnlineRecord, entity_key};
use modelbus_dataset::spec::{ColumnType, DatasetSpec};
use modelbus_dataset::table::Chunk;
use modelbus_dataset::table::{parse_bool, read_all};
use modelbus_featurize::features::{
    Cell, FeaturePlan, FeatureStatistics, FeatureTransform, FittedFeatures, cell,
};
use modelbus_featurize::featureset::{FeatureSet, HOLDOUT, TRAIN};
use modelbus_featurize::split::stratified_holdout;
use tokio::net::TcpListener;

/// Source attribute of the features service's events.
pub const SOURCE: &str = "/modelbus/features";
/// Durable consumer name.
pub const CONSUMER: &str = "features";

/// Errors that stop the features service.
#[derive(Debug, thiserror::Error)]
pub enum FeaturesError {
    /// Start-up or serving failed.
    #[error("{0}")]
    Fatal(String),
}

/// The outcome of building a feature set.
pub struct Built {
    /// The encoded rows.
    pub feature_set: FeatureSet,
    /// Transform and labels.
    pub fitted: FittedFeatures,
    /// Statistics of every feature on the training rows (the drift reference).
    pub statistics: FeatureStatistics,
    /// The typed rows, for the online store.
    pub chunks: Vec<Chunk>,
}

/// Builds the feature set of a batch (CPU-bound; call from a blocking thread).
/// Fails with a message naming the problem when the batch cannot be used for
/// training (one class only, too few rows for a holdout).
pub fn build(spec: &DatasetSpec, input: impl std::io::Read) -> Result<Built, String> {
    let spec_arc = Arc::new(spec.clone());
    let chunks = read_all(input, spec_arc, 65_536).map_err(|e| e.to_string())?;
    let ti = spec
        .columns
        .iter()
        .position(|c| c.name == spec.target.column)
        .ok_or("target column not declared")?;
    let ei = spec
        .columns
        .iter()
        .position(|c| c.name == spec.entity_column)
        .ok_or("entity column not declared")?;
    let target_ty = spec.columns[ti].ty;
    let positive = &spec.target.positive;
    let mut labels = Vec::new();
    let mut entity = Vec::new();
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for c in &chunks {
        for i in 0..c.batch.num_rows() {
            let text = match cell(c, ti, i) {
                Cell::Text(s) => s.to_string(),
                Cell::Num(v) => format!("{}", v as i64),
                Cell::Bool(b) => b.to_string(),
                Cell::Null => {
                    return Err(format!(
                        "target column {:?} is null in a row",
                        spec.target.column
                    ));
                }
            };
            let is_pos = match target_ty {
                ColumnType::Bool => parse_bool(&text) == parse_bool(positive),
                ColumnType::Int => text.parse::<i64>().ok() == positive.trim().parse::<i64>().ok(),
                _ => &text == positive,
            };
            labels.push(if is_pos { 1.0 } else { 0.0 });
            *counts.entry(text).or_default() += 1;
            entity.push(match cell(c, ei, i) {
                Cell::Text(s) => s.to_string(),
                Cell::Num(v) => format!("{v}"),
                Cell::Bool(b) => b.to_string(),
                Cell::Null => String::new(),
            });
        }
    }
    let pos = labels.iter().filter(|y| **y == 1.0).count();
    if pos == 0 || pos == labels.len() {
        return Err(format!(
            "the batch has a single class of {:?} ({} rows {}): a classifier needs both",
            spec.target.column,
            labels.len(),
            if pos == 0 {
                format!("without {positive:?}")
            } else {
                format!("all {positive:?}")
            }
        ));
    }
    let (train, hold) = stratified_holdout(&labels, spec.model.holdout_fraction, spec.model.seed);
    let hold_pos = hold.iter().filter(|i| labels[**i] == 1.0).count();
    if hold_pos == 0 || hold_pos == hold.len() {
        return Err("the holdout split has a single class: submit more rows".into());
    }
    let index = |n: &str| spec.columns.iter().position(|c| c.name == n);
    let transform = FeatureTransform::fit(&FeaturePlan::from_spec(spec), &chunks, &index, &train)?;
    let x = transform.transform_chunks(&chunks, &index);
    let statistics = FeatureStatistics::compute(&transform, &chunks, &index, &train);
    let mut split = vec![TRAIN; labels.len()];
    for i in hold {
        split[i] = HOLDOUT;
    }
    let negative_label = counts
        .iter()
        .filter(|(k, _)| {
            let is_pos = match target_ty {
                ColumnType::Bool => parse_bool(k) == parse_bool(positive),
                ColumnType::Int => k.parse::<i64>().ok() == positive.trim().parse::<i64>().ok(),
                _ => *k == positive,
            };
            !is_pos
        })
        .max_by_key(|(_, n)| **n)
        .map(|(k, _)| k.clone())
        .unwrap_or_else(|| format!("not {positive}"));
    Ok(Built {
        feature_set: FeatureSet {
            names: transform.feature_names(),
            entity,
            label: labels,
            split,
            x,
        },
        statistics,
        chunks,
        fitted: FittedFeatures {
            transform,
            positive_label: positive.clone(),
            negative_label,
            label_counts: counts,
        },
    })
}

#[derive(Clone)]
struct Features {
    ctx: Context,
    registry: modelbus_proto::Client,
}

impl Features {
    /// Writes the latest record of every entity of the batch to the online store
    /// (later rows of the batch win); returns how many entities were written.
    async fn materialise(
        &self,
        spec: &DatasetSpec,
        chunks: &[Chunk],
        batch: &str,
    ) -> Result<u64, HandlerError> {
        use futures::StreamExt;
        let kv = self
            .ctx
            .bus
            .kv(ONLINE_BUCKET, 1)
            .await
            .map_err(HandlerError::retry)?;
        let Some(ei) = spec
            .columns
            .iter()
            .position(|c| c.name == spec.entity_column)
        else {
            return Ok(0);
        };
        let columns: Vec<(usize, &str, ColumnType)> = spec
            .columns
            .iter()
            .enumerate()
            .filter(|(_, c)| c.name != spec.target.column)
            .map(|(i, c)| (i, c.name.as_str(), c.ty))
            .collect();
        // Latest row per entity.
        let mut latest: HashMap<String, (usize, usize)> = HashMap::new();
        for (k, chunk) in chunks.iter().enumerate() {
            for i in 0..chunk.batch.num_rows() {
                let id = match cell(chunk, ei, i) {
                    Cell::Text(s) => s.to_string(),
                    Cell::Num(v) => format!("{v}"),
                    Cell::Bool(b) => b.to_string(),
                    Cell::Null => continue,
                };
                latest.insert(id, (k, i));
            }
        }
        let mut puts = Vec::with_capacity(latest.len());
        for (id, (k, i)) in latest {
            let mut record = serde_json::Map::new();
            for (ci, name, ty) in &columns {
                let v = match cell(&chunks[k], *ci, i) {
                    Cell::Text(s) => serde_json::Value::String(s.to_string()),
                    // Integers stay integers, as they were in the CSV.
                    Cell::Num(x) if *ty == ColumnType::Int => serde_json::json!(x as i64),
                    Cell::Num(x) => serde_json::json!(x),
                    Cell::Bool(b) => serde_json::Value::Bool(b),
                    Cell::Null => serde_json::Value::Null,
                };
                record.insert((*name).to_string(), v);
            }
            let key = entity_key(&spec.name, &id);
            let value = serde_json::to_vec(&OnlineRecord {
                entity: id,
                record,
                batch_sha256: batch.to_string(),
            })
            .map_err(HandlerError::retry)?;
            puts.push((key, value));
        }
        let n = puts.len() as u64;
        let results: Vec<Result<u64, _>> = futures::stream::iter(puts)
            .map(|(key, value)| {
                let kv = kv.clone();
                async move { kv.put(key, value.into()).await }
            })
            .buffer_unordered(64)
            .collect()
            .await;
        if let Some(Err(e)) = results.into_iter().find(|r| r.is_err()) {
            return Err(HandlerError::retry(format!("online store: {e}")));
        }
        Ok(n)
    }

    async fn handle(&self, d: &Delivery) -> Result<(), HandlerError> {
        let e = d.decode::<BatchValidated>()?;

        let v = &e.data;
        let spec = modelbus_stage::fetch_spec(&self.registry, &v.spec_digest)
            .await?
            .spec;
        // The stage holds the whole batch in memory: refuse, before reading
        // any of it, one above the configured bounds.
        let limits = &self.ctx.config.features;
        let size = self
            .ctx
            .store
            .size(&v.batch_sha256)
            .await
            .map_err(|e| modelbus_stage::artifact_error(CONSUMER, e))?;
        if let Some(reason) = too_large(size, v.rows, limits.max_batch_bytes, limits.max_rows) {
            metrics::counter!("modelbus_features_refused_total", "reason" => "too_large")
                .increment(1);
            return Err(HandlerError::Reject(reason));
        }
        let reader = self
            .ctx
            .store
            .open_read(&v.batch_sha256)
            .await
            .map_err(|e| modelbus_stage::artifact_error(CONSUMER, e))?;
        let seed = spec.model.seed;
        let started = std::time::Instant::now();
        let spec_for_online = spec.clone();
        let built = tokio::task::spawn_blocking(move || build(&spec, reader))
            .await
            .map_err(|e| HandlerError::Retry(format!("features task: {e}")))?
            .map_err(HandlerError::Reject)?;
        metrics::histogram!("modelbus_features_build_seconds")
            .record(started.elapsed().as_secs_f64());
        let parquet = built
            .feature_set
            .to_parquet()
            .map_err(HandlerError::retry)?;
        let fs = self
            .ctx
            .store
            .put(parquet)
            .await
            .map_err(HandlerError::retry)?;
        let fitted = serde_json::to_vec(&built.fitted).map_err(HandlerError::retry)?;
        let tr = self
            .ctx
            .store
            .put(fitted.into())
            .await
            .map_err(HandlerError::retry)?;
        let stats = serde_json::to_vec(&built.statistics).map_err(HandlerError::retry)?;
        let stats = self
            .ctx
            .store
            .put(stats.into())
            .await
            .map_err(HandlerError::retry)?;
        let online_started = std::time::Instant::now();
        let online_entities = self
            .materialise(&spec_for_online, &built.chunks, &v.batch_sha256.to_hex())
            .await?;
        metrics::histogram!("modelbus_features_online_seconds")
            .record(online_started.elapsed().as_secs_f64());
        let (train_rows, holdout_rows) =
            built
                .feature_set
                .split
                .iter()
                .fold((0u64, 0u64), |(t, h), s| {
                    if *s == TRAIN { (t + 1, h) } else { (t, h + 1) }
                });
        let key = format!("{}/{}", v.batch_sha256, v.spec_digest);
        let out = Envelope::new(
            SOURCE,
            &key,
            FeaturesReady {
                dataset: v.dataset.clone(),
                spec_digest: v.spec_digest,
                batch_sha256: v.batch_sha256,
                feature_set_sha256: fs.sha256,
                transform_sha256: tr.sha256,
                train_rows,
                holdout_rows,
                num_features: built.feature_set.names.len() as u32,
                seed,
                submitted_by: v.submitted_by.clone(),
                statistics_sha256: Some(stats.sha256),
                online_entities,
            },
        )
        .with_subject(v.dataset.as_str());
        self.ctx.bus.publish_caused(out, &e).await?;
        tracing::info!(
            features = built.feature_set.names.len(),
            train_rows,
            holdout_rows,
            "feature set ready"
        );
        Ok(())
    }
}

/// Runs the features service until `ctx.shutdown`; `ops` serves its operations endpoints.
pub async fn run(ctx: Context, ops: TcpListener) -> Result<(), FeaturesError> {
    let registry =
        modelbus_stage::registry_client(&ctx, modelbus_core::auth::ServiceIdentity::Features)
            .map_err(|e| FeaturesError::Fatal(e.to_string()))?;
    let svc = Features {
        ctx: ctx.clone(),
        registry,
    };
    modelbus_core::ops::run_consumer_service(
        &ctx,
        ops,
        None,
        CONSUMER,
        &["modelbus.data.batch.validated"],
        |d| {
            let svc = svc.clone();
            async move { svc.handle(&d).await }
        },
    )
    .await
    .map_err(|e| FeaturesError::Fatal(e.to_string()))
}

/// Why a batch is too large for the features stage (which holds it whole in
/// memory), or `None`.
fn too_large(bytes: u64, rows: u64, max_bytes: u64, max_rows: u64) -> Option<String> {
    if bytes > max_bytes {
        return Some(format!(
            "batch is {bytes} bytes; the features stage builds feature sets from at most {max_bytes} (features.max_batch_bytes)"
        ));
    }
    if rows > max_rows {
        return Some(format!(
            "batch has {rows} rows; the features stage builds feature sets from at most {max_rows} (features.max_rows)"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_above_the_features_bounds_are_refused_naming_the_key() {
        assert_eq!(too_large(10, 10, 10, 10), None);
        assert!(
            too_large(11, 1, 10, 10)
                .unwrap()
                .contains("features.max_batch_bytes")
        );
        assert!(
            too_large(1, 11, 10, 10)
                .unwrap()
                .contains("features.max_rows")
        );
    }

    #[test]
    fn telco_feature_set_is_stratified_and_deterministic() {
        let spec_text = include_str!("../../../config/datasets/telco-churn.toml");
        let spec = DatasetSpec::parse(spec_text, "t").unwrap().spec;
        let data = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../data/telco-churn/telco_customer_churn.csv"
        ))
        .unwrap();
        let a = build(&spec, &data[..]).unwrap();
        let b = build(&spec, &data[..]).unwrap();
        assert_eq!(
            a.feature_set.to_parquet().unwrap(),
            b.feature_set.to_parquet().unwrap()
        );
        assert_eq!(a.fitted.negative_label, "No");
        assert_eq!(a.fitted.label_counts["Yes"], 1869);
        let hold = a
            .feature_set
            .split
            .iter()
            .filter(|s| **s == HOLDOUT)
            .count();
        assert_eq!(hold, 1409);
        assert_eq!(a.feature_set.names.len(), a.fitted.transform.num_features());
    }

    #[test]
    fn a_single_class_batch_is_refused_with_a_reason() {
        let spec_text = include_str!("../../../config/datasets/telco-churn.toml");
        let spec = DatasetSpec::parse(spec_text, "t").unwrap().spec;
        let data = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../data/telco-churn/telco_customer_churn.csv"
        ))
        .unwrap();
        let only_no: Vec<&str> = data
            .lines()
            .enumerate()
            .filter(|(i, l)| *i == 0 || l.ends_with(",No"))
            .map(|(_, l)| l)
            .collect();
        let e = build(&spec, only_no.join("\n").as_bytes()).err().unwrap();
        assert!(e.contains("single class") && e.contains("Churn"), "{e}");
    }
}
