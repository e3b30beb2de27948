//! Signing and verifying webhooks as the Standard Webhooks specification
//! (<https://www.standardwebhooks.com/>) says, so a receiver can check that a
//! CloudEvent came from modelbus, unchanged and recently:
//!
//! - `webhook-id`: the message id (the CloudEvent's `id`, the same on every
//!   attempt, so a receiver can drop repeats);
//! - `webhook-timestamp`: the attempt's time, whole seconds since the Unix
//!   epoch;
//! - `webhook-signature`: `v1,` then the Base64 (standard alphabet, padded)
//!   HMAC-SHA256 of `{webhook-id}.{webhook-timestamp}.{body}` under the
//!   receiver's secret. Several space-separated signatures may be listed
//!   (during a key rotation); one valid one is enough.
//!
//! The key: a secret of the form `whsec_<base64>` is Base64-decoded, as
//! Standard Webhooks libraries do; any other secret is used as its bytes (a
//! trailing newline of a secret file is not part of it). A receiver verifies
//! with [`verify_signature`], or any Standard Webhooks library given the same
//! secret, and refuses timestamps too far from its clock (replays).

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Header carrying the message id.
pub const ID_HEADER: &str = "webhook-id";
/// Header carrying the attempt's Unix time in seconds.
pub const TIMESTAMP_HEADER: &str = "webhook-timestamp";
/// Header carrying `v1,<base64 signature>` (space-separated if several).
pub const SIGNATURE_HEADER: &str = "webhook-signature";

/// Why a signature does not verify.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    /// A header is missing or is not text.
    #[error("missing or unreadable `{0}` header")]
    MissingHeader(&'static str),
    /// The timestamp is not whole seconds.
    #[error("`webhook-timestamp` is not a Unix time in seconds")]
    BadTimestamp,
    /// The timestamp is further from now than the tolerance.
    #[error("`webhook-timestamp` is {0} s away from now, beyond the tolerance")]
    Stale(i64),
    /// No `v1` signature in the header matches the body.
    #[error("no signature matches the message")]
    Mismatch,
    /// The secret is `whsec_` followed by something that is not Base64.
    #[error("the secret starts with `whsec_` but the rest is not Base64")]
    BadSecret,
}

/// The HMAC key a secret stands for (see the module documentation).
pub fn signing_key(secret: &str) -> Result<Vec<u8>, SignatureError> {
    let secret = secret.trim_end_matches(['\n', '\r']);
    match secret.strip_prefix("whsec_") {
        Some(b64) => STANDARD.decode(b64).map_err(|_| SignatureError::BadSecret),
        None => Ok(secret.as_bytes().to_vec()),
    }
}

fn mac(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"));
    m.update(id.as_bytes());
    m.update(b".");
    m.update(timestamp.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    m
}

/// The `webhook-signature` value of a message: `v1,<base64>`.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    format!(
        "v1,{}",
        STANDARD.encode(mac(key, id, timestamp, body).finalize().into_bytes())
    )
}

/// Verifies a signed webhook: `headers` must carry `webhook-id`,
/// `webhook-timestamp` within `tolerance` of now and a `webhook-signature`
/// whose `v1` signature of `{id}.{timestamp}.{body}` under `secret` matches
/// (compared in constant time).
pub fn verify_signature(
    secret: &str,
    headers: &http::HeaderMap,
    body: &[u8],
    tolerance: Duration,
) -> Result<(), SignatureError> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    verify_signature_at(secret, headers, body, tolerance, now)
}

/// [`verify_signature`] at a given Unix time.
pub fn verify_signature_at(
    secret: &str,
    headers: &http::HeaderMap,
    body: &[u8],
    tolerance: Duration,
    now: i64,
) -> Result<(), SignatureError> {
    let header = |name: &'static str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .ok_or(SignatureError::MissingHeader(name))
    };
    let id = header(ID_HEADER)?;
    let timestamp: i64 = header(TIMESTAMP_HEADER)?
        .parse()
        .map_err(|_| SignatureError::BadTimestamp)?;
    let signatures = header(SIGNATURE_HEADER)?;
    let skew = now.saturating_sub(timestamp);
    let tolerance = i64::try_from(tolerance.as_secs()).unwrap_or(i64::MAX);
    if skew.saturating_abs() > tolerance {
        return Err(SignatureError::Stale(skew));
    }
    let key = signing_key(secret)?;
    for candidate in signatures.split(' ') {
        let Some(b64) = candidate.strip_prefix("v1,") else {
            continue;
        };
        let Ok(sig) = STANDARD.decode(b64) else {
            continue;
        };
        if mac(&key, id, timestamp, body).verify_slice(&sig).is_ok() {
            return Ok(());
        }
    }
    Err(SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(id: &str, ts: i64, sig: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert(ID_HEADER, id.parse().unwrap());
        h.insert(TIMESTAMP_HEADER, ts.to_string().parse().unwrap());
        h.insert(SIGNATURE_HEADER, sig.parse().unwrap());
        h
    }

    #[test]
    fn matches_the_standard_webhooks_reference_vector() {
        // The test vector of the Standard Webhooks reference libraries.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
        let ts = 1614265330;
        let body = br#"{"test": 2432232314}"#;
        let sig = sign(&signing_key(secret).unwrap(), id, ts, body);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        let h = headers(id, ts, &format!("v1,bm90IGl0 {sig}"));
        let tol = Duration::from_secs(300);
        assert_eq!(verify_signature_at(secret, &h, body, tol, ts + 10), Ok(()));
        assert_eq!(
            verify_signature_at(secret, &h, br#"{"test": 2432232315}"#, tol, ts),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature_at("whsec_b3RoZXI=", &h, body, tol, ts),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature_at(secret, &h, body, tol, ts + 301),
            Err(SignatureError::Stale(301))
        );
        assert_eq!(
            verify_signature_at(secret, &http::HeaderMap::new(), body, tol, ts),
            Err(SignatureError::MissingHeader(ID_HEADER))
        );
    }

    #[test]
    fn a_plain_secret_is_its_bytes() {
        assert_eq!(signing_key("s3cret\n").unwrap(), b"s3cret".to_vec());
        assert_eq!(
            signing_key("whsec_!!").unwrap_err(),
            SignatureError::BadSecret
        );
    }
}
