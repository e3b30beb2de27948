//! Signed approvals: DSSE envelopes holding in-toto Statements, signed with ed25519.
//!
//! The registry signs staging promotions with its automation key; people sign
//! production approvals with their own keys. The deployer verifies every envelope
//! against public keys from its own configuration, never from the bus. Keys are
//! stored as PKCS#8 PEM, so OpenSSL and other tools can read them.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::ids::{Environment, ModelName, Sha256Digest};

/// DSSE payload type of an in-toto Statement.
pub const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
/// in-toto Statement v1 `_type`.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// Predicate type of a modelbus promotion approval.
pub const APPROVAL_PREDICATE_TYPE: &str = "https://modelbus.dev/approval/v1";
/// Predicate type of a signed rejection (same predicate fields as an approval).
pub const REJECTION_PREDICATE_TYPE: &str = "https://modelbus.dev/rejection/v1";
/// Predicate type of a signed rollback: `version` is the version to return to.
pub const ROLLBACK_PREDICATE_TYPE: &str = "https://modelbus.dev/rollback/v1";

/// What a signed statement asks for; each kind has its own predicate type, so a
/// signature on one can never be replayed as another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum StatementKind {
    /// Allow the version into the environment.
    Approve,
    /// Block the version from the environment.
    Reject,
    /// Return the environment to the version.
    Rollback,
}

impl StatementKind {
    /// The in-toto predicate type of this kind.
    pub fn predicate_type(self) -> &'static str {
        match self {
            StatementKind::Approve => APPROVAL_PREDICATE_TYPE,
            StatementKind::Reject => REJECTION_PREDICATE_TYPE,
            StatementKind::Rollback => ROLLBACK_PREDICATE_TYPE,
        }
    }

    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            StatementKind::Approve => "approve",
            StatementKind::Reject => "reject",
            StatementKind::Rollback => "rollback",
        }
    }

    fn from_predicate_type(t: &str) -> Option<Self> {
        [
            StatementKind::Approve,
            StatementKind::Reject,
            StatementKind::Rollback,
        ]
        .into_iter()
        .find(|k| k.predicate_type() == t)
    }
}

/// Why a key, an envelope or a signature was refused.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    /// A key file or string is not a valid ed25519 PKCS#8/SPKI PEM.
    #[error("invalid ed25519 key in {what}: {reason}")]
    InvalidKey {
        /// Where the key came from.
        what: String,
        /// What is wrong.
        reason: String,
    },
    /// The envelope is malformed (bad base64, wrong payload type, no signatures).
    #[error("malformed DSSE envelope: {0}")]
    Malformed(String),
    /// No signature was made by a trusted key.
    #[error("no signature by a trusted key (key ids in envelope: {0})")]
    UnknownKey(String),
    /// A signature by a trusted key does not verify.
    #[error("signature by key {0} does not verify")]
    BadSignature(String),
    /// The statement is not an approval statement.
    #[error("invalid approval statement: {0}")]
    Statement(String),
}

/// A DSSE envelope (<https://github.com/secure-systems-lab/dsse>).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DsseEnvelope {
    /// Media type of the payload.
    #[serde(rename = "payloadType")]
    pub payload_type: String,
    /// Base64 of the payload bytes.
    pub payload: String,
    /// Signatures over PAE(payloadType, payload).
    pub signatures: Vec<DsseSignature>,
}

/// One DSSE signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DsseSignature {
    /// Id of the signing key (see [`key_id`]).
    pub keyid: String,
    /// Base64 of the ed25519 signature.
    pub sig: String,
}

/// DSSE pre-authentication encoding: what is actually signed.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + payload_type.len() + 32);
    out.extend_from_slice(b"DSSEv1 ");
    out.extend_from_slice(payload_type.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload_type.as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload);
    out
}

/// Key id of a public key: `SHA256:` and the hex digest of its 32 raw bytes.
pub fn key_id(key: &VerifyingKey) -> String {
    format!("SHA256:{}", Sha256Digest::of(key.as_bytes()).to_hex())
}

/// A private signing key with its id.
pub struct KeyPair {
    key: SigningKey,
    id: String,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair")
            .field("id", &self.id)
            .field("key", &"[redacted]")
            .finish()
    }
}

impl KeyPair {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Result<Self, SigningError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| SigningError::InvalidKey {
            what: "generated key".into(),
            reason: format!("no randomness available: {e}"),
        })?;
        Ok(Self::from_signing_key(SigningKey::from_bytes(&seed)))
    }

    fn from_signing_key(key: SigningKey) -> Self {
        let id = key_id(&key.verifying_key());
        Self { key, id }
    }

    /// Reads a PKCS#8 PEM private key; `what` names the source in errors.
    pub fn from_pem(pem: &str, what: &str) -> Result<Self, SigningError> {
        let key = SigningKey::from_pkcs8_pem(pem).map_err(|e| SigningError::InvalidKey {
            what: what.to_string(),
            reason: e.to_string(),
        })?;
        Ok(Self::from_signing_key(key))
    }

    /// PKCS#8 PEM of the private key.
    pub fn to_pem(&self) -> Result<String, SigningError> {
        self.key
            .to_pkcs8_pem(Default::default())
            .map(|s| s.to_string())
            .map_err(|e| SigningError::InvalidKey {
                what: "key being written".into(),
                reason: e.to_string(),
            })
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        PublicKey {
            key: self.key.verifying_key(),
            id: self.id.clone(),
        }
    }

    /// Key id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Signs `payload` into a one-signature DSSE envelope.
    pub fn sign_envelope(&self, payload_type: &str, payload: &[u8]) -> DsseEnvelope {
        let sig: Signature = self.key.sign(&pae(payload_type, payload));
        DsseEnvelope {
            payload_type: payload_type.to_string(),
            payload: B64.encode(payload),
            signatures: vec![DsseSignature {
                keyid: self.id.clone(),
                sig: B64.encode(sig.to_bytes()),
            }],
        }
    }

    /// Signs an approval statement.
    pub fn sign_statement(&self, statement: &Statement) -> DsseEnvelope {
        let payload = serde_json::to_vec(statement).unwrap_or_default();
        self.sign_envelope(IN_TOTO_PAYLOAD_TYPE, &payload)
    }

    /// Signs a promotion decision (see [`DecisionStatement`]).
    pub fn sign_decision(&self, statement: &DecisionStatement) -> DsseEnvelope {
        let payload = serde_json::to_vec(statement).unwrap_or_default();
        self.sign_envelope(IN_TOTO_PAYLOAD_TYPE, &payload)
    }
}

/// A trusted public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    key: VerifyingKey,
    id: String,
}

impl PublicKey {
    /// Reads an SPKI PEM public key (`-----BEGIN PUBLIC KEY-----`).
    pub fn from_pem(pem: &str, what: &str) -> Result<Self, SigningError> {
        let key = VerifyingKey::from_public_key_pem(pem).map_err(|e| SigningError::InvalidKey {
            what: what.to_string(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            id: key_id(&key),
            key,
        })
    }

    /// SPKI PEM of the key.
    pub fn to_pem(&self) -> String {
        self.key
            .to_public_key_pem(Default::default())
            .unwrap_or_default()
    }

    /// Key id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Verifies one of the envelope's signatures was made by this key.
    fn verify(&self, env: &DsseEnvelope, payload: &[u8]) -> Result<(), SigningError> {
        let message = pae(&env.payload_type, payload);
        let mut found = false;
        for s in env.signatures.iter().filter(|s| s.keyid == self.id) {
            found = true;
            let raw = B64
                .decode(&s.sig)
                .map_err(|e| SigningError::Malformed(format!("signature is not base64: {e}")))?;
            let sig = Signature::from_slice(&raw)
                .map_err(|_| SigningError::Malformed("signature is not 64 bytes".into()))?;
            if self.key.verify_strict(&message, &sig).is_ok() {
                return Ok(());
            }
        }
        if found {
            Err(SigningError::BadSignature(self.id.clone()))
        } else {
            Err(SigningError::UnknownKey(String::new()))
        }
    }
}

/// Verifies an envelope against trusted keys; returns the payload bytes and the id
/// of the key whose signature verified.
pub fn verify_envelope(
    env: &DsseEnvelope,
    trusted: &[PublicKey],
) -> Result<(Vec<u8>, String), SigningError> {
    if env.signatures.is_empty() {
        return Err(SigningError::Malformed("no signatures".into()));
    }
    let payload = B64
        .decode(&env.payload)
        .map_err(|e| SigningError::Malformed(format!("payload is not base64: {e}")))?;
    let mut last_bad = None;
    for key in trusted {
        match key.verify(env, &payload) {
            Ok(()) => return Ok((payload, key.id.clone())),
            Err(SigningError::UnknownKey(_)) => {}
            Err(e) => last_bad = Some(e),
        }
    }
    Err(last_bad.unwrap_or_else(|| {
        SigningError::UnknownKey(
            env.signatures
                .iter()
                .map(|s| s.keyid.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        )
    }))
}

/// The statement inside an envelope, NOT verified: only to find out who claims to
/// have signed it, so the right key can be looked up. Verify with
/// [`verify_envelope`] before trusting anything in it.
pub fn peek_statement(env: &DsseEnvelope) -> Result<(Statement, Sha256Digest), SigningError> {
    if env.payload_type != IN_TOTO_PAYLOAD_TYPE {
        return Err(SigningError::Malformed(format!(
            "payloadType is {:?}, expected {IN_TOTO_PAYLOAD_TYPE:?}",
            env.payload_type
        )));
    }
    let payload = B64
        .decode(&env.payload)
        .map_err(|e| SigningError::Malformed(format!("payload is not base64: {e}")))?;
    Statement::parse(&payload)
}

/// An in-toto Statement v1 whose predicate is an approval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Statement {
    /// Always [`STATEMENT_TYPE`].
    #[serde(rename = "_type")]
    pub statement_type: String,
    /// What the statement is about: the model artifact.
    pub subject: Vec<Subject>,
    /// Always [`APPROVAL_PREDICATE_TYPE`].
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    /// The approval itself.
    pub predicate: ApprovalPredicate,
}

/// An in-toto subject.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Subject {
    /// Artifact name (`<model>/v<version>`).
    pub name: String,
    /// Digests by algorithm; modelbus uses `sha256`.
    pub digest: std::collections::BTreeMap<String, String>,
}

/// What an approver approves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApprovalPredicate {
    /// Registered model.
    pub model: ModelName,
    /// Version approved.
    pub version: u32,
    /// Environment it may be deployed to.
    pub environment: Environment,
    /// Id of the approver (or `registry-automation`).
    pub approver: String,
    /// When the approval was signed.
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "String")]
    pub issued_at: OffsetDateTime,
    /// After this instant the approval is void.
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "String")]
    pub expires_at: OffsetDateTime,
    /// Random value; an approval is accepted at most once.
    pub nonce: String,
    /// Free text from the approver.
    #[serde(default)]
    pub comment: String,
}

impl Statement {
    /// A statement approving `model` version `version` (artifact `digest`) for `environment`.
    pub fn approval(digest: &Sha256Digest, predicate: ApprovalPredicate) -> Self {
        Self::of_kind(StatementKind::Approve, digest, predicate)
    }

    /// What the statement asks for.
    pub fn kind(&self) -> Option<StatementKind> {
        StatementKind::from_predicate_type(&self.predicate_type)
    }

    /// A statement of any kind about the artifact `digest`.
    pub fn of_kind(
        kind: StatementKind,
        digest: &Sha256Digest,
        predicate: ApprovalPredicate,
    ) -> Self {
        Self {
            statement_type: STATEMENT_TYPE.to_string(),
            subject: vec![Subject::of(&predicate.model, predicate.version, digest)],
            predicate_type: kind.predicate_type().to_string(),
            predicate,
        }
    }

    /// Parses and checks the statement shape; returns it with its subject digest.
    pub fn parse(payload: &[u8]) -> Result<(Self, Sha256Digest), SigningError> {
        let st: Statement =
            serde_json::from_slice(payload).map_err(|e| SigningError::Statement(e.to_string()))?;
        if st.statement_type != STATEMENT_TYPE {
            return Err(SigningError::Statement(format!(
                "_type is {:?}, expected {STATEMENT_TYPE:?}",
                st.statement_type
            )));
        }
        if st.kind().is_none() {
            return Err(SigningError::Statement(format!(
                "predicateType is {:?}, expected one of {APPROVAL_PREDICATE_TYPE:?}, {REJECTION_PREDICATE_TYPE:?}, {ROLLBACK_PREDICATE_TYPE:?}",
                st.predicate_type
            )));
        }
        let digest = subject_digest(&st.subject)?;
        Ok((st, digest))
    }
}

/// in-toto predicate type of the registry's signed promotion decision.
pub const DECISION_PREDICATE_TYPE: &str = "https://modelbus.dev/promotion-decision/v1";

/// The registry's signed account of a production decision: the inputs of the
/// production policy that the deployer cannot establish itself (who authored
/// the version, whether its gates passed, which signed rejections exist), bound
/// to the exact approvals it counted. The deployer accepts these inputs only
/// under the registry's automation key, never from fields of a bus event, so a
/// re-wrapped set of real approvals the registry refused gets nowhere.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionPredicate {
    /// Registered model.
    pub model: ModelName,
    /// Version decided.
    pub version: u32,
    /// Target environment.
    pub environment: Environment,
    /// Who submitted the batch the version was trained on, from the registry's
    /// own record of the pipeline run.
    pub author: String,
    /// Whether the promotion gates passed (the registry's stored gate decision).
    pub gates_passed: bool,
    /// Nonces of the approvals the decision counted, sorted.
    pub approval_nonces: Vec<String>,
    /// Every signed rejection of the version for the environment, as submitted.
    pub rejections: Vec<DsseEnvelope>,
    /// SHA-256 of the policy sources that decided.
    pub policy_digest: String,
    /// When the registry decided.
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "String")]
    pub issued_at: OffsetDateTime,
    /// After this instant the decision is void (a new one is made).
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "String")]
    pub expires_at: OffsetDateTime,
}

/// An in-toto Statement v1 whose predicate is a promotion decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionStatement {
    /// Always [`STATEMENT_TYPE`].
    #[serde(rename = "_type")]
    pub statement_type: String,
    /// The model artifact decided on.
    pub subject: Vec<Subject>,
    /// Always [`DECISION_PREDICATE_TYPE`].
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    /// The decision.
    pub predicate: DecisionPredicate,
}

impl DecisionStatement {
    /// A decision about the artifact `digest`.
    pub fn new(digest: &Sha256Digest, predicate: DecisionPredicate) -> Self {
        Self {
            statement_type: STATEMENT_TYPE.to_string(),
            subject: vec![Subject::of(&predicate.model, predicate.version, digest)],
            predicate_type: DECISION_PREDICATE_TYPE.to_string(),
            predicate,
        }
    }

    /// Parses and checks the statement shape; returns it with its subject digest.
    pub fn parse(payload: &[u8]) -> Result<(Self, Sha256Digest), SigningError> {
        let st: DecisionStatement =
            serde_json::from_slice(payload).map_err(|e| SigningError::Statement(e.to_string()))?;
        if st.statement_type != STATEMENT_TYPE || st.predicate_type != DECISION_PREDICATE_TYPE {
            return Err(SigningError::Statement(format!(
                "not a promotion decision: _type {:?}, predicateType {:?}",
                st.statement_type, st.predicate_type
            )));
        }
        let digest = subject_digest(&st.subject)?;
        Ok((st, digest))
    }
}

impl Subject {
    /// The one subject of a statement about `model` version `version`.
    fn of(model: &ModelName, version: u32, digest: &Sha256Digest) -> Self {
        let mut d = std::collections::BTreeMap::new();
        d.insert("sha256".to_string(), digest.to_hex());
        Self {
            name: format!("{model}/v{version}"),
            digest: d,
        }
    }
}

/// The artifact digest of a statement's subjects: exactly one, with a sha256.
fn subject_digest(subjects: &[Subject]) -> Result<Sha256Digest, SigningError> {
    let [subject] = subjects else {
        return Err(SigningError::Statement(
            "expected exactly one subject".into(),
        ));
    };
    let hex = subject
        .digest
        .get("sha256")
        .ok_or_else(|| SigningError::Statement("subject has no sha256 digest".into()))?;
    Sha256Digest::parse(hex).map_err(|e| SigningError::Statement(format!("subject digest: {e}")))
}

/// A fresh random nonce (128 bits, hex).
pub fn new_nonce() -> String {
    let mut b = [0u8; 16];
    // A failing OS random source would also fail key generation; fall back to a
    // time-based value rather than refusing to sign.
    if getrandom::fill(&mut b).is_err() {
        b = OffsetDateTime::now_utc()
            .unix_timestamp_nanos()
            .to_le_bytes();
    }
    hex::encode(b)
}

/// Loads a PKCS#8 PEM private key from `path`, creating it (mode 0600, with its
/// public key beside it as `<path>.pub`) when it does not exist yet.
pub fn load_or_create_key(path: &std::path::Path) -> Result<KeyPair, SigningError> {
    let io = |e: std::io::Error| SigningError::InvalidKey {
        what: path.display().to_string(),
        reason: e.to_string(),
    };
    if path.exists() {
        let pem = std::fs::read_to_string(path).map_err(io)?;
        return KeyPair::from_pem(&pem, &path.display().to_string());
    }
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        crate::fsutil::create_private_dir(dir).map_err(io)?;
    }
    let key = KeyPair::generate()?;
    write_private(path, &key.to_pem()?).map_err(io)?;
    std::fs::write(public_key_path(path), key.public().to_pem()).map_err(io)?;
    Ok(key)
}

/// Where the public half of a key file lives: `<path>.pub`.
pub fn public_key_path(private: &std::path::Path) -> std::path::PathBuf {
    let mut s = private.as_os_str().to_owned();
    s.push(".pub");
    std::path::PathBuf::from(s)
}

/// Writes a private key readable by its owner only, durably and never over an
/// existing file (see [`crate::fsutil::write_private_file`]).
pub fn write_private(path: &std::path::Path, pem: &str) -> std::io::Result<()> {
    crate::fsutil::write_private_file(path, pem.as_bytes(), crate::fsutil::Existing::Keep)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn predicate() -> ApprovalPredicate {
        let now = OffsetDateTime::now_utc();
        ApprovalPredicate {
            model: ModelName::parse("m").unwrap(),
            version: 3,
            environment: Environment::Staging,
            approver: "registry-automation".into(),
            issued_at: now,
            expires_at: now + time::Duration::hours(1),
            nonce: new_nonce(),
            comment: String::new(),
        }
    }

    #[test]
    fn each_kind_has_its_own_predicate_type() {
        let k = KeyPair::generate().unwrap();
        let digest = Sha256Digest::of(b"model");
        for kind in [
            StatementKind::Approve,
            StatementKind::Reject,
            StatementKind::Rollback,
        ] {
            let env = k.sign_statement(&Statement::of_kind(kind, &digest, predicate()));
            let (payload, _) = verify_envelope(&env, &[k.public()]).unwrap();
            let (st, _) = Statement::parse(&payload).unwrap();
            assert_eq!(st.kind(), Some(kind));
        }
        let mut st = Statement::approval(&digest, predicate());
        st.predicate_type = "https://example.com/other".into();
        let e = Statement::parse(&serde_json::to_vec(&st).unwrap()).unwrap_err();
        assert!(e.to_string().contains("predicateType"), "{e}");
    }

    #[test]
    fn pae_matches_the_dsse_spec_example() {
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
    }

    #[test]
    fn sign_then_verify_and_refuse_tampering() {
        let k = KeyPair::generate().unwrap();
        let digest = Sha256Digest::of(b"model");
        let st = Statement::approval(&digest, predicate());
        let env = k.sign_statement(&st);
        let (payload, id) = verify_envelope(&env, &[k.public()]).unwrap();
        assert_eq!(id, k.id());
        let (back, d) = Statement::parse(&payload).unwrap();
        assert_eq!(back, st);
        assert_eq!(d, digest);

        // Another key is unknown.
        let other = KeyPair::generate().unwrap();
        assert!(matches!(
            verify_envelope(&env, &[other.public()]),
            Err(SigningError::UnknownKey(_))
        ));

        // A changed payload does not verify.
        let mut forged = env.clone();
        let mut st2 = st.clone();
        st2.predicate.version = 4;
        forged.payload = B64.encode(serde_json::to_vec(&st2).unwrap());
        assert!(matches!(
            verify_envelope(&forged, &[k.public()]),
            Err(SigningError::BadSignature(_))
        ));

        // A signature by another key under the trusted key's id does not verify.
        let mut stolen_id = other.sign_statement(&st);
        stolen_id.signatures[0].keyid = k.id().to_string();
        assert!(matches!(
            verify_envelope(&stolen_id, &[k.public()]),
            Err(SigningError::BadSignature(_))
        ));
    }

    #[test]
    fn keys_round_trip_through_pem() {
        let k = KeyPair::generate().unwrap();
        let back = KeyPair::from_pem(&k.to_pem().unwrap(), "test").unwrap();
        assert_eq!(back.id(), k.id());
        let p = PublicKey::from_pem(&k.public().to_pem(), "test").unwrap();
        assert_eq!(p, k.public());
        let e = PublicKey::from_pem("garbage", "deployer.trusted_keys[0]").unwrap_err();
        assert!(e.to_string().contains("deployer.trusted_keys[0]"), "{e}");
    }
}
