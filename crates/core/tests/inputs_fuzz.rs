//! Property tests over what `modelbus-core` reads from outside: CloudEvents
//! envelopes of every event type (arriving on any subject), DSSE envelopes and
//! the in-toto statements inside them, entity ids, configuration URLs and
//! latency histograms. Each must return (never panic) and refuse bad input
//! with a short error.
//!
//! Bounded cases in the suite (proptest's default 256 per property);
//! `PROPTEST_CASES=100000 cargo test -p modelbus-core --test inputs_fuzz` runs
//! many more locally.

use modelbus_core::events::{self, DecodeError, EventPayload};
use modelbus_core::signing::{
    DecisionStatement, DsseEnvelope, DsseSignature, KeyPair, Statement, verify_envelope,
};
use proptest::prelude::*;

const MAX_ERROR: usize = 4_096;

/// JSON values of bounded size and depth.
fn json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        "\\PC{0,20}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::from),
            prop::collection::btree_map("[a-z_]{1,12}", inner, 0..8)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// An envelope of a known type around arbitrary data, sent on some subject.
fn envelope() -> impl Strategy<Value = (String, Vec<u8>)> {
    (
        prop::sample::select(events::EVENT_NAMES),
        prop::sample::select(events::EVENT_NAMES),
        json(),
        any::<bool>(),
    )
        .prop_map(|(subject, ty, data, good_time)| {
            let v = serde_json::json!({
                "specversion": "1.0",
                "id": "x",
                "source": "/fuzz",
                "type": format!("io.modelbus.{ty}.v1"),
                "time": if good_time { "2026-12-02T18:00:00Z" } else { "yesterday" },
                "datacontenttype": "application/json",
                "data": data,
            });
            (
                format!("modelbus.{subject}"),
                serde_json::to_vec(&v).unwrap(),
            )
        })
}

fn decode_as<T: EventPayload>(subject: &str, bytes: &[u8]) -> Result<(), DecodeError> {
    events::decode_on::<T>(subject, bytes).map(|_| ())
}

/// Decodes `bytes` as every event type; returns the errors.
fn decode_all(subject: &str, bytes: &[u8]) -> Vec<DecodeError> {
    use modelbus_core::events::*;
    [
        decode_as::<BatchSubmitted>(subject, bytes),
        decode_as::<BatchValidated>(subject, bytes),
        decode_as::<BatchRejected>(subject, bytes),
        decode_as::<FeaturesReady>(subject, bytes),
        decode_as::<ModelTrained>(subject, bytes),
        decode_as::<ModelCandidate>(subject, bytes),
        decode_as::<ModelRejected>(subject, bytes),
        decode_as::<ApprovalGranted>(subject, bytes),
        decode_as::<ApprovalRefused>(subject, bytes),
        decode_as::<DeploymentStarted>(subject, bytes),
        decode_as::<ServingModelLoaded>(subject, bytes),
        decode_as::<DeploymentCompleted>(subject, bytes),
        decode_as::<NotificationRaised>(subject, bytes),
        decode_as::<NotificationDelivered>(subject, bytes),
        decode_as::<RollbackRequested>(subject, bytes),
        decode_as::<DeploymentRolledBack>(subject, bytes),
        decode_as::<ServingStats>(subject, bytes),
        decode_as::<InferenceLogged>(subject, bytes),
        decode_as::<MonitorWindowClosed>(subject, bytes),
        decode_as::<DriftDetected>(subject, bytes),
        decode_as::<LabelsObserved>(subject, bytes),
        decode_as::<LabelsJoined>(subject, bytes),
        decode_as::<WindowPerformance>(subject, bytes),
        decode_as::<PerformanceDegraded>(subject, bytes),
    ]
    .into_iter()
    .filter_map(Result::err)
    .collect()
}

proptest! {
    #[test]
    fn envelopes_decode_only_as_their_subjects_type((subject, bytes) in envelope()) {
        let errors = decode_all(&subject, &bytes);
        // At most one type (the subject's) may accept it.
        prop_assert!(errors.len() >= events::EVENT_NAMES.len() - 1);
        for e in &errors {
            prop_assert!(e.to_string().len() < MAX_ERROR, "{} bytes", e.to_string().len());
        }
    }

    #[test]
    fn arbitrary_bytes_never_decode(bytes in prop::collection::vec(any::<u8>(), 0..512), subject in "\\PC{0,40}") {
        let errors = decode_all(&subject, &bytes);
        prop_assert_eq!(errors.len(), events::EVENT_NAMES.len());
        let _ = events::check_route(&subject, &String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn arbitrary_json_is_not_a_statement(v in json()) {
        let bytes = serde_json::to_vec(&v).unwrap();
        prop_assert!(Statement::parse(&bytes).is_err());
        prop_assert!(DecisionStatement::parse(&bytes).is_err());
    }

    #[test]
    fn arbitrary_dsse_envelopes_never_verify(
        payload_type in "\\PC{0,40}",
        payload in "[A-Za-z0-9+/=]{0,200}",
        sigs in prop::collection::vec(("[a-f0-9]{0,64}", "[A-Za-z0-9+/=]{0,120}"), 0..4),
    ) {
        let env = DsseEnvelope {
            payload_type,
            payload,
            signatures: sigs
                .into_iter()
                .map(|(keyid, sig)| DsseSignature { keyid, sig })
                .collect(),
        };
        let key = KeyPair::generate().unwrap().public();
        prop_assert!(verify_envelope(&env, &[key]).is_err());
        let _ = modelbus_core::signing::peek_statement(&env);
    }

    #[test]
    fn entity_ids_are_checked_and_keyed_within_bounds(id in "\\PC{0,400}") {
        let key = modelbus_core::online::entity_key("telco-churn", &id);
        if modelbus_core::online::check_entity_id(&id).is_ok() {
            prop_assert!(key.len() < 512, "{} bytes", key.len());
        }
    }

    #[test]
    fn urls_are_masked_without_panicking(url in "\\PC{0,200}") {
        let shown = modelbus_core::config::mask_url(&url);
        prop_assert!(!shown.is_empty() || url.is_empty());
    }

    #[test]
    fn histograms_from_the_bus_have_their_shape(counts in prop::collection::vec(any::<u64>(), 0..100)) {
        match modelbus_core::latency::Histogram::from_counts(counts.clone()) {
            Ok(h) => {
                prop_assert_eq!(counts.len(), modelbus_core::latency::BUCKETS);
                let _ = h.quantile(0.99);
            }
            Err(e) => prop_assert_eq!(e.0, counts.len()),
        }
    }
}
