//! Validated identifiers: digests, dataset and model names, versions, environments.
//!
//! Each type is parsed once at the edge ("parse, don't validate"); a value that
//! exists is valid, so the rest of the code never re-checks it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {value:?}: {reason}")]
pub struct IdError {
    /// What kind of identifier was being parsed.
    pub kind: &'static str,
    /// The offending input, as given.
    pub value: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// A SHA-256 digest, the identity of every artifact (raw batch, report, feature
/// set, model) in events and lineage. Displayed as 64 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256Digest([u8; 32]);

impl Sha256Digest {
    /// Digest of a byte slice.
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    /// Wraps a finished hasher.
    pub fn from_hasher(hasher: Sha256) -> Self {
        Self(hasher.finalize().into())
    }

    /// Parses 64 hex characters (case-insensitive; an optional `sha256:` prefix is accepted).
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let hex_part = s.strip_prefix("sha256:").unwrap_or(s);
        let err = |reason| IdError {
            kind: "sha256 digest",
            value: s.to_string(),
            reason,
        };
        if hex_part.len() != 64 {
            return Err(err("expected 64 hexadecimal characters"));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut out).map_err(|_| err("not hexadecimal"))?;
        Ok(Self(out))
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lowercase hex form.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first 12 hex characters, for logs and short displays.
    pub fn short(&self) -> String {
        self.to_hex()[..12].to_string()
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.to_hex())
    }
}

impl FromStr for Sha256Digest {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for Sha256Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Sha256Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl schemars::JsonSchema for Sha256Digest {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Sha256Digest".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^[0-9a-f]{64}$",
            "description": "SHA-256 digest, 64 lowercase hexadecimal characters"
        })
    }
}

/// Checks the shared name grammar: 1–63 characters of `[A-Za-z0-9_-]`, starting
/// with a letter or digit. Names end up in NATS subjects, KV keys, file paths and
/// URLs, so they must be safe in all of them.
fn check_name(kind: &'static str, s: &str) -> Result<(), IdError> {
    let err = |reason| IdError {
        kind,
        value: s.to_string(),
        reason,
    };
    if s.is_empty() || s.len() > 63 {
        return Err(err("must be 1 to 63 characters long"));
    }
    if !s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric()) {
        return Err(err("must start with a letter or a digit"));
    }
    if !s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(err("may contain only letters, digits, '-' and '_'"));
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Parses and validates a name.
            pub fn parse(s: &str) -> Result<Self, IdError> {
                check_name($kind, s)?;
                Ok(Self(s.to_string()))
            }
            /// The name as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", self.0)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }

        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({
                    "type": "string",
                    "pattern": "^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$"
                })
            }
        }
    };
}

name_type!(
    /// The name of a dataset, as declared by its spec (`name = "telco-churn"`).
    DatasetName,
    "dataset name"
);
name_type!(
    /// The name of a registered model. A dataset's models are named after it.
    ModelName,
    "model name"
);

/// A pipeline run id: one id threads a batch through every stage.
#[derive(
    Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(transparent)]
pub struct PipelineRunId(String);

impl PipelineRunId {
    /// Deterministic id for a batch under a spec: submitting the same bytes for the
    /// same spec always names the same run, which is what makes resubmission idempotent.
    pub fn for_batch(spec: &Sha256Digest, batch: &Sha256Digest) -> Self {
        let mut h = Sha256::new();
        h.update(b"modelbus.pipelinerun.v1\0");
        h.update(spec.as_bytes());
        h.update(batch.as_bytes());
        let d = h.finalize();
        Self(format!("pr-{}", &hex::encode(d)[..20]))
    }

    /// Parses an id given by a user or found on the bus.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let ok = s.len() == 23
            && s.starts_with("pr-")
            && s[3..]
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase());
        if ok {
            Ok(Self(s.to_string()))
        } else {
            Err(IdError {
                kind: "pipeline run id",
                value: s.to_string(),
                reason: "expected 'pr-' followed by 20 lowercase hexadecimal characters",
            })
        }
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PipelineRunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for PipelineRunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A deployment environment. Serving runs one endpoint per environment.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    /// Promoted automatically by the registry's automation key once gates pass.
    Staging,
    /// Promoted only with human signatures.
    Production,
}

impl Environment {
    /// Lowercase name, as used in KV keys, aliases and URLs.
    pub fn as_str(&self) -> &'static str {
        match self {
            Environment::Staging => "staging",
            Environment::Production => "production",
        }
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Environment {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "staging" => Ok(Environment::Staging),
            "production" => Ok(Environment::Production),
            _ => Err(IdError {
                kind: "environment",
                value: s.to_string(),
                reason: "expected 'staging' or 'production'",
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_round_trips_and_rejects_garbage() {
        let d = Sha256Digest::of(b"abc");
        assert_eq!(
            d.to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(Sha256Digest::parse(&d.to_hex()).unwrap(), d);
        assert_eq!(Sha256Digest::parse(&format!("sha256:{d}")).unwrap(), d);
        assert!(Sha256Digest::parse("abc").is_err());
        assert!(Sha256Digest::parse(&"g".repeat(64)).is_err());
    }

    #[test]
    fn names_follow_the_shared_grammar() {
        assert!(DatasetName::parse("telco-churn").is_ok());
        assert!(DatasetName::parse("").is_err());
        assert!(DatasetName::parse("-x").is_err());
        assert!(DatasetName::parse("a.b").is_err());
        assert!(DatasetName::parse("a b").is_err());
        assert!(ModelName::parse(&"a".repeat(64)).is_err());
        let e = DatasetName::parse("a/b").unwrap_err();
        assert!(e.to_string().contains("a/b"), "{e}");
    }

    #[test]
    fn pipeline_run_ids_are_deterministic_per_spec_and_batch() {
        let s = Sha256Digest::of(b"spec");
        let b = Sha256Digest::of(b"batch");
        let r1 = PipelineRunId::for_batch(&s, &b);
        assert_eq!(r1, PipelineRunId::for_batch(&s, &b));
        assert_ne!(r1, PipelineRunId::for_batch(&b, &s));
        assert_eq!(PipelineRunId::parse(r1.as_str()).unwrap(), r1);
        assert!(PipelineRunId::parse("pr-XYZ").is_err());
    }

    #[test]
    fn environments_parse() {
        assert_eq!(
            "staging".parse::<Environment>().unwrap(),
            Environment::Staging
        );
        assert!("prod".parse::<Environment>().is_err());
    }
}
