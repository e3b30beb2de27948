//! The models an environment serves: the current one and, during a canary,
//! the previous one beside it, swapped atomically.

use std::sync::Arc;

use modelbus_models::model::Predictor;
use serde_json::{Map, Value};

/// A model being served.
#[derive(Debug)]
pub struct Served {
    /// Model name.
    pub model: String,
    /// Version.
    pub version: u32,
    /// Artifact digest.
    pub model_sha256: String,
    /// When this replica loaded it.
    pub loaded_at: String,
    /// The loaded model.
    pub predictor: Predictor,
}

/// What one model name answers with in an environment.
#[derive(Debug)]
pub struct Slot {
    /// The version the desired state names.
    pub current: Arc<Served>,
    /// During a canary, the version answering the traffic `current` does not get.
    pub stable: Option<Arc<Served>>,
    /// Percent of entities `current` answers (100 outside a canary).
    pub traffic_percent: u8,
}

impl Slot {
    /// One version for everything.
    pub fn single(served: Served) -> Self {
        Self {
            current: Arc::new(served),
            stable: None,
            traffic_percent: 100,
        }
    }

    /// Whether requests are split between two versions.
    pub fn is_split(&self) -> bool {
        self.stable.is_some() && self.traffic_percent < 100
    }

    /// The version that answers a record: by the stable hash of its entity id
    /// (of the whole record when it has none), so one customer always gets the
    /// same version during a canary.
    pub fn route(&self, rec: &Map<String, Value>) -> &Arc<Served> {
        let Some(stable) = self.stable.as_ref().filter(|_| self.traffic_percent < 100) else {
            return &self.current;
        };
        let entity_col = &self.current.predictor.artifact().input.entity_column;
        let key = match rec.get(entity_col) {
            Some(Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
            None => Value::Object(rec.clone()).to_string(),
        };
        if modelbus_core::deploy::traffic_bucket(&key) < self.traffic_percent {
            &self.current
        } else {
            stable
        }
    }
}
