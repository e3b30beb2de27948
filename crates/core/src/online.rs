//! The online feature store: the latest raw record of every entity, materialised
//! by the features service into the NATS KV bucket `online-features` and read by
//! serving, so a client can ask for a prediction by entity id alone.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// KV bucket of the latest record per entity.
pub const ONLINE_BUCKET: &str = "online-features";

/// KV key of an entity: `<dataset>.<id>` when the id is made of letters, digits,
/// `-` and `_` (most ids are), else `<dataset>.b64_<base64url(id)>`, so every id
/// maps to one valid key and back.
pub fn entity_key(dataset: &str, entity: &str) -> String {
    let plain = !entity.is_empty()
        && entity.len() <= 200
        && !entity.starts_with("b64_")
        && entity
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if plain {
        format!("{dataset}.{entity}")
    } else {
        format!(
            "{dataset}.b64_{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(entity.as_bytes())
        )
    }
}

/// What is stored per entity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OnlineRecord {
    /// The entity id.
    pub entity: String,
    /// Raw column values (as in the CSV; the target excluded).
    pub record: serde_json::Map<String, serde_json::Value>,
    /// The batch it came from.
    pub batch_sha256: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_valid_and_distinct() {
        assert_eq!(entity_key("telco", "7590-VHVEG"), "telco.7590-VHVEG");
        let k = entity_key("telco", "a b/c");
        assert!(k.starts_with("telco.b64_"), "{k}");
        assert!(
            k[6..]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c)),
            "{k}"
        );
        assert_ne!(entity_key("t", "b64_x"), "t.b64_x");
        assert_ne!(entity_key("t", "x y"), entity_key("t", "x_y"));
    }
}
