//! The online feature store: the latest raw record of every entity, materialised
//! by the features service into the NATS KV bucket `online-features` and read by
//! serving, so a client can ask for a prediction by entity id alone.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// KV bucket of the latest record per entity.
pub const ONLINE_BUCKET: &str = "online-features";

/// Longest entity id, in bytes, that the online store and serving accept. The id
/// becomes part of a KV subject (base64-encoded when it is not plain), and
/// nats-server drops a connection whose control line exceeds its limit (4 KiB by
/// default), taking every service that shares the connection with it; 256 bytes
/// leaves room for the bucket prefix and dataset name under any encoding.
pub const MAX_ENTITY_ID_BYTES: usize = 256;

/// Why an entity id is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntityIdError {
    /// The id is empty.
    #[error("entity id is empty")]
    Empty,
    /// The id is longer than [`MAX_ENTITY_ID_BYTES`].
    #[error("entity id is {len} bytes long; at most {max} are accepted")]
    TooLong {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The id holds a control character (NUL, newline, ...).
    #[error("entity id contains a control character")]
    Control,
}

/// Checks that an entity id can be stored and looked up (see
/// [`MAX_ENTITY_ID_BYTES`]).
pub fn check_entity_id(entity: &str) -> Result<(), EntityIdError> {
    if entity.is_empty() {
        return Err(EntityIdError::Empty);
    }
    if entity.len() > MAX_ENTITY_ID_BYTES {
        return Err(EntityIdError::TooLong {
            len: entity.len(),
            max: MAX_ENTITY_ID_BYTES,
        });
    }
    if entity.chars().any(char::is_control) {
        return Err(EntityIdError::Control);
    }
    Ok(())
}

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

    #[test]
    fn entity_ids_are_bounded() {
        assert_eq!(check_entity_id("7590-VHVEG"), Ok(()));
        assert_eq!(check_entity_id(""), Err(EntityIdError::Empty));
        assert_eq!(check_entity_id("a\nb"), Err(EntityIdError::Control));
        let long = "x".repeat(MAX_ENTITY_ID_BYTES + 1);
        assert!(matches!(
            check_entity_id(&long),
            Err(EntityIdError::TooLong { len, .. }) if len == MAX_ENTITY_ID_BYTES + 1
        ));
        // The longest accepted id, in its longest encoding, stays a short subject.
        let worst = "\u{10FFFF}".repeat(MAX_ENTITY_ID_BYTES / 4);
        assert_eq!(check_entity_id(&worst), Ok(()));
        assert!(entity_key("a-long-dataset-name", &worst).len() < 512);
    }
}
