//! Governance end to end: bearer tokens on every API (401 without, 403 with the
//! wrong role), the approver roster, signed production approvals decided by the
//! policy and verified again by the deployer, refusals of forged, foreign,
//! revoked, expired, replayed and self-approvals, and the audit chain catching
//! a row edited in the database.

use std::time::Duration;

use futures::StreamExt;
use modelbus_core::config::TrustedKey;
use modelbus_core::ids::{Environment, ModelName, Sha256Digest};
use modelbus_core::signing::{ApprovalPredicate, KeyPair, Statement, StatementKind, new_nonce};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Db, TestPlatform, authed_http, cli};

/// The status code of a gRPC answer (`Ok` for a success).
fn code<T>(r: Result<T, tonic::Status>) -> tonic::Code {
    r.err().map_or(tonic::Code::Ok, |s| s.code())
}

/// Every HTTP route of the registry with a method, a concrete path and the role
/// whose token must be refused with 403.
fn registry_routes() -> Vec<(&'static str, &'static str, &'static str)> {
    vec![
        ("GET", "/v1/whoami", ""),
        ("GET", "/v1/datasets", "producer"),
        ("POST", "/v1/datasets", "viewer"),
        ("GET", "/v1/datasets/telco-churn", "producer"),
        ("GET", "/v1/datasets/telco-churn/spec", "producer"),
        ("GET", "/v1/specs/00", "producer"),
        ("GET", "/v1/pipeline-runs", "producer"),
        ("GET", "/v1/pipeline-runs/x", "producer"),
        ("GET", "/v1/runs/x", "producer"),
        ("GET", "/v1/models", "producer"),
        ("GET", "/v1/models/telco-churn", "producer"),
        ("GET", "/v1/models/telco-churn/versions/1", "producer"),
        (
            "GET",
            "/v1/models/telco-churn/versions/1/evaluation",
            "producer",
        ),
        (
            "GET",
            "/v1/models/telco-churn/versions/1/evaluation.html",
            "producer",
        ),
        (
            "GET",
            "/v1/models/telco-churn/versions/1/approvals",
            "producer",
        ),
        ("GET", "/v1/models/telco-churn/deployments", "producer"),
        ("GET", "/v1/reports/00", "producer"),
        ("GET", "/v1/batches/00/report.json", "producer"),
        ("GET", "/v1/batches/00/report.html", "producer"),
        ("GET", "/v1/audit", "producer"),
        (
            "GET",
            "/v1/models/telco-churn/versions/1/evidence",
            "producer",
        ),
        ("GET", "/v1/tokens", "approver"),
        ("POST", "/v1/tokens", "operator"),
        ("POST", "/v1/tokens/revoke", "viewer"),
        ("GET", "/v1/approvers", "viewer"),
        ("POST", "/v1/approvers", "approver"),
        ("POST", "/v1/approvers/alice/revoke", "operator"),
        ("POST", "/v1/approvals", "viewer"),
        ("POST", "/v1/rollbacks", "approver"),
    ]
}

async fn token(t: &TestPlatform, name: &str, roles: &str) -> String {
    let v = t
        .client
        .post_json("/v1/tokens", &json!({ "name": name, "roles": roles }))
        .await
        .unwrap();
    v["token"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_needs_a_token_and_the_right_role() {
    let t = TestPlatform::start_with(Db::Sqlite, |c| c.serving.require_token = true).await;
    let anonymous = modelbus_core::http::client().unwrap();
    let base = t.config.registry_http_url();
    let mut tokens = std::collections::HashMap::new();
    for role in ["viewer", "producer", "approver", "operator"] {
        tokens.insert(
            role,
            authed_http(&token(&t, &format!("u-{role}"), role).await),
        );
    }
    for (method, path, wrong) in registry_routes() {
        let url = format!("{base}{path}");
        let req = |c: &reqwest::Client| match method {
            "GET" => c.get(&url),
            _ => c.post(&url).body("{}"),
        };
        let r = req(&anonymous).send().await.unwrap();
        assert_eq!(
            r.status(),
            StatusCode::UNAUTHORIZED,
            "{method} {path} without a token"
        );
        assert!(
            r.headers().contains_key("www-authenticate"),
            "{method} {path}"
        );
        let r = req(&anonymous)
            .header("authorization", "Bearer mbt_000000000000_0000000000000000000000000000000000000000000000000000000000000000")
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::UNAUTHORIZED,
            "{method} {path} with an unknown token"
        );
        if !wrong.is_empty() {
            let r = req(&tokens[wrong]).send().await.unwrap();
            assert_eq!(
                r.status(),
                StatusCode::FORBIDDEN,
                "{method} {path} as {wrong}"
            );
            let body: Value = r.json().await.unwrap();
            assert!(
                body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("needs one of the roles"),
                "{body}"
            );
        }
    }
    // Operations endpoints stay open for probes and Prometheus.
    assert_eq!(
        anonymous
            .get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // Ingest: 401 without a token, 403 for a viewer, accepted for a producer.
    let submit = format!("{}/v1/datasets/telco-churn/batches", t.config.ingest_url());
    let csv = std::fs::read(modelbus_testkit::telco_csv()).unwrap();
    let r = anonymous
        .post(&submit)
        .body(csv.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = tokens["viewer"]
        .post(&submit)
        .body(csv.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let producer = token(&t, "pat", "producer").await;
    let r = authed_http(&producer)
        .post(&submit)
        .body(csv)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let run: Value = r.json().await.unwrap();
    let run = t
        .client
        .wait_run(
            run["pipeline_run"].as_str().unwrap(),
            Duration::from_secs(120),
        )
        .await
        .unwrap();
    // The author of a version is the principal whose token submitted its batch.
    let v = t
        .client
        .model_version("telco-churn", run["model_version"].as_u64().unwrap())
        .await
        .unwrap();
    assert_eq!(v["author"], "pat");

    // gRPC: every method answers Unauthenticated without a token and
    // PermissionDenied to a role that lacks its permission.
    let url = t.config.registry_grpc_url();
    let client = |tok: Option<String>| {
        modelbus_proto::connect_lazy(&url, std::sync::Arc::new(move || tok.clone())).unwrap()
    };
    let viewer = token(&t, "grpc-viewer", "viewer").await;
    let grpc_producer = token(&t, "grpc-producer", "producer").await;
    use modelbus_core::auth::{Permission as P, Role, ServiceIdentity};
    let mut callers: Vec<(String, Option<String>, Option<Role>)> = vec![
        ("nobody".into(), None, None),
        ("viewer".into(), Some(viewer.clone()), Some(Role::Viewer)),
        (
            "producer".into(),
            Some(grpc_producer.clone()),
            Some(Role::Producer),
        ),
    ];
    // Each service's own role: only the methods that service calls.
    for s in ServiceIdentity::ALL {
        let tok = token(&t, &format!("grpc-{}", s.name()), s.role().as_str()).await;
        callers.push((s.role().as_str().to_string(), Some(tok), Some(s.role())));
    }
    for (who, tok, role) in callers {
        let mut c = client(tok);
        let wrong_for = |p: P| role.is_some_and(|r| !r.grants(p));
        // (method, code, whether this role is the wrong one for it)
        use modelbus_proto::registry::v1 as pb;
        let calls: Vec<(&str, tonic::Code, bool)> = vec![
            (
                "ApplySpec",
                code(c.apply_spec(pb::ApplySpecRequest::default()).await),
                wrong_for(P::ApplySpec),
            ),
            (
                "GetSpec",
                code(c.get_spec(pb::GetSpecRequest::default()).await),
                wrong_for(P::ReadSpecs),
            ),
            (
                "ListDatasets",
                code(c.list_datasets(pb::ListDatasetsRequest::default()).await),
                wrong_for(P::ReadSpecs),
            ),
            (
                "CreatePipelineRun",
                code(
                    c.create_pipeline_run(pb::CreatePipelineRunRequest::default())
                        .await,
                ),
                wrong_for(P::WriteRuns),
            ),
            (
                "GetPipelineRun",
                code(
                    c.get_pipeline_run(pb::GetPipelineRunRequest::default())
                        .await,
                ),
                wrong_for(P::Read),
            ),
            (
                "ListPipelineRuns",
                code(
                    c.list_pipeline_runs(pb::ListPipelineRunsRequest::default())
                        .await,
                ),
                wrong_for(P::Read),
            ),
            (
                "RegisterModelVersion",
                code(
                    c.register_model_version(pb::RegisterModelVersionRequest::default())
                        .await,
                ),
                wrong_for(P::RegisterModels),
            ),
            (
                "GetModel",
                code(c.get_model(pb::GetModelRequest::default()).await),
                wrong_for(P::Read),
            ),
            (
                "ListModels",
                code(c.list_models(pb::ListModelsRequest::default()).await),
                wrong_for(P::Read),
            ),
            (
                "GetModelVersion",
                code(
                    c.get_model_version(pb::GetModelVersionRequest::default())
                        .await,
                ),
                wrong_for(P::Read),
            ),
            (
                "GetRun",
                code(c.get_run(pb::GetRunRequest::default()).await),
                wrong_for(P::Read),
            ),
            (
                "Authenticate",
                code(
                    c.authenticate(pb::AuthenticateRequest {
                        token: viewer.clone(),
                    })
                    .await,
                ),
                wrong_for(P::Introspect),
            ),
            (
                "SubmitSignedStatement",
                code(
                    c.submit_signed_statement(pb::SubmitSignedStatementRequest {
                        envelope_json: "{}".into(),
                    })
                    .await,
                ),
                wrong_for(P::Read),
            ),
        ];
        for (method, code, wrong) in calls {
            if role.is_none() {
                assert_eq!(
                    code,
                    tonic::Code::Unauthenticated,
                    "{method} without a token"
                );
            } else if wrong {
                assert_eq!(code, tonic::Code::PermissionDenied, "{method} as {who}");
            } else {
                assert!(
                    !matches!(
                        code,
                        tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
                    ),
                    "{method} as {who}: {code:?}"
                );
            }
        }
    }
    let mut v = client(Some(viewer.clone()));
    assert!(
        v.list_models(modelbus_proto::registry::v1::ListModelsRequest::default())
            .await
            .is_ok()
    );
    let st = v
        .authenticate(modelbus_proto::registry::v1::AuthenticateRequest {
            token: producer.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(st.code(), tonic::Code::PermissionDenied);

    // A revoked token stops working at once.
    let (code, _, err) = cli(&t, &["tokens", "revoke", "--name", "u-viewer"]);
    assert_eq!(code, 0, "{err}");
    let r = tokens["viewer"]
        .get(format!("{base}/v1/models"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // Tokens are stored hashed: no row holds the secret.
    let listed = t.client.get_json("/v1/tokens").await.unwrap();
    assert!(!listed.to_string().contains("mbt_"), "{listed}");

    // Serving with `serving.require_token`: model routes need a token that may
    // read (401 without, 403 for a producer-only token); health routes stay open.
    let version = run["model_version"].as_u64().unwrap();
    t.wait_serving("telco-churn", version).await;
    let predict = format!("{}/v1/models/telco-churn:predict", t.staging());
    let body = json!({ "instances": crate::harness::telco_records(2) });
    let r = anonymous.post(&predict).json(&body).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = authed_http(&producer)
        .post(&predict)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let reader = authed_http(&token(&t, "dashboard", "viewer").await);
    for _ in 0..2 {
        // The second request is answered from serving's token cache.
        let r = reader.post(&predict).json(&body).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    let r = anonymous
        .post(format!("{}/v2/models/telco-churn/infer", t.staging()))
        .json(&json!({ "inputs": [] }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = anonymous
        .get(format!("{}/v2/health/ready", t.staging()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

struct Person {
    name: &'static str,
    key: KeyPair,
    http: reqwest::Client,
    key_file: std::path::PathBuf,
    token: String,
}

fn sign(
    p: &Person,
    kind: StatementKind,
    digest: Sha256Digest,
    version: u32,
    env: Environment,
    expires_in: time::Duration,
) -> Value {
    let now = time::OffsetDateTime::now_utc();
    let st = Statement::of_kind(
        kind,
        &digest,
        ApprovalPredicate {
            model: ModelName::parse("telco-churn").unwrap(),
            version,
            environment: env,
            approver: p.name.into(),
            issued_at: now,
            expires_at: now + expires_in,
            nonce: new_nonce(),
            comment: String::new(),
        },
    );
    serde_json::to_value(p.key.sign_statement(&st)).unwrap()
}

async fn post(p: &Person, t: &TestPlatform, path: &str, body: &Value) -> (StatusCode, Value) {
    let r = p
        .http
        .post(format!("{}{path}", t.config.registry_http_url()))
        .json(body)
        .send()
        .await
        .unwrap();
    let s = r.status();
    (s, r.json().await.unwrap_or(Value::Null))
}

async fn production_kv(t: &TestPlatform) -> Option<u64> {
    let kv = async_nats::jetstream::new(t.nats().await)
        .get_key_value("deployments")
        .await
        .ok()?;
    kv.entry("production.telco-churn")
        .await
        .ok()?
        .map(|e| e.revision)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_needs_two_valid_human_approvals_after_the_staging_soak() {
    let dir = tempfile::tempdir().unwrap();
    let mut people = Vec::new();
    let mut trusted = Vec::new();
    // "admin" is the author of the version (its token submits the batch).
    for name in ["alice", "bob", "carol", "olga", "dave", "admin"] {
        let key_file = dir.path().join(format!("{name}.pem"));
        let (code, out, err) = {
            let o = std::process::Command::new(crate::harness::modelbus_bin())
                .args(["keygen", "--id", name, "--out", key_file.to_str().unwrap()])
                .output()
                .unwrap();
            (
                o.status.code(),
                String::from_utf8_lossy(&o.stdout).into_owned(),
                String::from_utf8_lossy(&o.stderr).into_owned(),
            )
        };
        assert_eq!(code, Some(0), "{err}");
        assert!(out.contains("BEGIN PUBLIC KEY"), "{out}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let key = KeyPair::from_pem(&std::fs::read_to_string(&key_file).unwrap(), "t").unwrap();
        trusted.push(TrustedKey {
            id: name.into(),
            public_key_file: modelbus_core::signing::public_key_path(&key_file),
            environments: vec![Environment::Production],
            role: if name == "olga" {
                modelbus_core::auth::Role::Operator
            } else {
                modelbus_core::auth::Role::Approver
            },
        });
        people.push((name, key, key_file));
    }
    let t = TestPlatform::start_with(Db::Sqlite, |c| {
        c.promotion.staging_soak = Duration::from_secs(2);
        c.promotion.evaluate_interval = Duration::from_millis(200);
        // The test's staging traffic is five requests (the default asks 100).
        c.promotion.min_staging_requests = 5;
        c.serving.stats_interval = Duration::from_millis(200);
        c.deployer.trusted_keys = trusted.clone();
        c.rollout.production.strategy = modelbus_core::config::RolloutStrategy::Direct;
    })
    .await;
    let mut ps = Vec::new();
    for (name, key, key_file) in people {
        let role = if name == "olga" {
            "operator"
        } else {
            "approver"
        };
        let tok = token(&t, name, role).await;
        let (code, _, err) = cli(
            &t,
            &[
                "approvers",
                "add",
                "--id",
                name,
                "--public-key-file",
                modelbus_core::signing::public_key_path(&key_file)
                    .to_str()
                    .unwrap(),
                "--role",
                role,
            ],
        );
        assert_eq!(code, 0, "{err}");
        ps.push(Person {
            name,
            key,
            http: authed_http(&tok),
            key_file,
            token: tok,
        });
    }
    let [alice, bob, carol, olga, dave, author] = <[Person; 6]>::try_from(ps).ok().unwrap();

    // A roster change by a non-admin is refused.
    let (s, _) = post(
        &alice,
        &t,
        "/v1/approvers",
        &json!({"id": "eve", "public_key": "x", "role": "approver"}),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    let run = t.deploy_telco().await;
    let version = run["model_version"].as_u64().unwrap() as u32;
    let v = t
        .client
        .model_version("telco-churn", version.into())
        .await
        .unwrap();
    let digest = Sha256Digest::parse(v["model_sha256"].as_str().unwrap()).unwrap();
    assert_eq!(v["author"], "admin");
    let before = production_kv(&t).await;
    assert_eq!(before, None);
    let approve = |p: &Person| {
        sign(
            p,
            StatementKind::Approve,
            digest,
            version,
            Environment::Production,
            time::Duration::hours(1),
        )
    };

    // Refusals, each named, none deploying anything.
    let forger = KeyPair::generate().unwrap();
    let mut forged =
        serde_json::from_value::<modelbus_core::signing::DsseEnvelope>(approve(&alice)).unwrap();
    let other = forger.sign_statement(&Statement::approval(
        &digest,
        ApprovalPredicate {
            model: ModelName::parse("telco-churn").unwrap(),
            version,
            environment: Environment::Production,
            approver: "alice".into(),
            issued_at: time::OffsetDateTime::now_utc(),
            expires_at: time::OffsetDateTime::now_utc() + time::Duration::hours(1),
            nonce: new_nonce(),
            comment: String::new(),
        },
    ));
    forged.signatures = other.signatures.clone();
    let cases: Vec<(&str, &Person, Value, StatusCode, &str)> = vec![
        (
            "unknown key",
            &alice,
            serde_json::to_value(&other).unwrap(),
            StatusCode::FORBIDDEN,
            "not signed by alice's key",
        ),
        (
            "another digest",
            &alice,
            sign(
                &alice,
                StatementKind::Approve,
                Sha256Digest::of(b"x"),
                version,
                Environment::Production,
                time::Duration::hours(1),
            ),
            StatusCode::BAD_REQUEST,
            "is about artifact",
        ),
        (
            "another version",
            &alice,
            sign(
                &alice,
                StatementKind::Approve,
                digest,
                version + 7,
                Environment::Production,
                time::Duration::hours(1),
            ),
            StatusCode::NOT_FOUND,
            "no version",
        ),
        (
            "staging",
            &alice,
            sign(
                &alice,
                StatementKind::Approve,
                digest,
                version,
                Environment::Staging,
                time::Duration::hours(1),
            ),
            StatusCode::BAD_REQUEST,
            "people approve production",
        ),
        (
            "expired",
            &alice,
            sign(
                &alice,
                StatementKind::Approve,
                digest,
                version,
                Environment::Production,
                time::Duration::seconds(-5),
            ),
            StatusCode::BAD_REQUEST,
            "expired",
        ),
        (
            "someone else's",
            &bob,
            approve(&alice),
            StatusCode::FORBIDDEN,
            "may not submit a statement signed as",
        ),
        (
            "operator signing an approval",
            &olga,
            approve(&olga),
            StatusCode::FORBIDDEN,
            "may not approve",
        ),
        (
            "the author approving their own version",
            &author,
            approve(&author),
            StatusCode::FORBIDDEN,
            "an author may not approve their own version",
        ),
    ];
    for (what, who, body, status, text) in cases {
        let (s, v) = post(who, &t, "/v1/approvals", &body).await;
        assert_eq!(s, status, "{what}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap_or("").contains(text),
            "{what}: {v}"
        );
    }
    let mut tampered = approve(&alice);
    let mut st: Value =
        serde_json::from_slice(&base64_decode(tampered["payload"].as_str().unwrap())).unwrap();
    st["predicate"]["comment"] = json!("changed after signing");
    tampered["payload"] = json!(base64_encode(&serde_json::to_vec(&st).unwrap()));
    let (s, v) = post(&alice, &t, "/v1/approvals", &tampered).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("does not verify"),
        "{v}"
    );

    // One valid approval where two are needed, submitted over gRPC: recorded,
    // not granted.
    let first = approve(&alice);
    let alice_token = alice.token.clone();
    let mut grpc = modelbus_proto::connect_lazy(
        &t.config.registry_grpc_url(),
        std::sync::Arc::new(move || Some(alice_token.clone())),
    )
    .unwrap();
    let submit = modelbus_proto::registry::v1::SubmitSignedStatementRequest {
        envelope_json: first.to_string(),
    };
    let out = grpc
        .submit_signed_statement(submit.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!((out.kind.as_str(), out.version), ("approve", version));
    assert!(out.promotion_decided && !out.promotion_allowed, "{out:?}");
    assert!(
        out.promotion_reasons
            .join("; ")
            .contains("1 valid approval(s)"),
        "{out:?}"
    );
    // The same envelope again, over HTTP or gRPC: a replayed nonce.
    let (s, v) = post(&alice, &t, "/v1/approvals", &first).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    let st = grpc.submit_signed_statement(submit).await.unwrap_err();
    assert_eq!(st.code(), tonic::Code::FailedPrecondition, "{st:?}");
    // The revoked approver's approval stops counting.
    let (code, _, err) = cli(&t, &["approvers", "revoke", "--id", "carol"]);
    assert_eq!(code, 0, "{err}");
    let (s, v) = post(&carol, &t, "/v1/approvals", &approve(&carol)).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("revoked"),
        "{v}"
    );
    assert_eq!(production_kv(&t).await, None, "nothing reached production");

    // Some staging traffic for the soak's error rate, then bob approves with the CLI.
    for _ in 0..5 {
        let r = t
            .http
            .post(format!("{}/v1/models/telco-churn:predict", t.staging()))
            .json(&json!({ "instances": crate::harness::telco_records(3) }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    // A signed rollback naming this version (an operator preparing to return to
    // it) is no approval: it neither counts nor spoils the decision. The deployer
    // refuses it, production never having served the version.
    let rollback = sign(
        &olga,
        StatementKind::Rollback,
        digest,
        version,
        Environment::Production,
        time::Duration::hours(1),
    );
    let (s, v) = post(&olga, &t, "/v1/rollbacks", &rollback).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    // A valid rejection blocks the promotion, whatever the approvals; it stops
    // counting when it expires, and the registry's evaluation loop then grants.
    let rejection = sign(
        &dave,
        StatementKind::Reject,
        digest,
        version,
        Environment::Production,
        time::Duration::seconds(4),
    );
    let (s, v) = post(&dave, &t, "/v1/approvals", &rejection).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert!(
        v["promotion"]["reasons"]
            .to_string()
            .contains("rejected by dave"),
        "{v}"
    );
    let (code, out, err) = tokio::task::block_in_place(|| {
        let o = std::process::Command::new(crate::harness::modelbus_bin())
            .args([
                "approve",
                "--model",
                "telco-churn",
                "--version",
                &version.to_string(),
                "--env",
                "production",
                "--key",
                bob.key_file.to_str().unwrap(),
                "--comment",
                "looks good",
            ])
            .env("MODELBUS_REGISTRY__HTTP_URL", t.config.registry_http_url())
            .env("MODELBUS_TOKEN", &bob.token)
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    });
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("rejected by dave"), "{out}");
    assert_eq!(
        production_kv(&t).await,
        None,
        "the rejection holds production back"
    );
    // Granted once the rejection has expired; the deployer verifies and deploys.
    let mut deployed = false;
    for _ in 0..200 {
        let m = t.client.model("telco-churn").await.unwrap();
        if m["aliases"]["production"].as_u64() == Some(u64::from(version)) {
            deployed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let approvals = t
        .client
        .get_json(&format!(
            "/v1/models/telco-churn/versions/{version}/approvals"
        ))
        .await
        .unwrap();
    assert!(
        deployed,
        "production never served v{version}: {approvals:#}"
    );
    assert_eq!(approvals["promotion"]["allow"], true, "{approvals:#}");
    let r = t
        .http
        .post(format!(
            "http://{}/v1/models/telco-churn:predict",
            t.config.serving.production_addr
        ))
        .json(&json!({ "instances": crate::harness::telco_records(2) }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // The version's evidence bundle: written, verified offline with the keys the
    // auditor holds; a signer missing from those keys, or a bundle edited after
    // export, fails verification (exit 3).
    let ev = dir.path().join("evidence");
    let ev_s = ev.to_str().unwrap().to_string();
    let version_s = version.to_string();
    let (code, out, err) = cli(
        &t,
        &[
            "evidence",
            "--model",
            "telco-churn",
            "--version",
            &version_s,
            "--out",
            &ev_s,
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let html = std::fs::read_to_string(ev.join("evidence.html")).unwrap();
    for needle in [
        "alice",
        "bob",
        digest.to_hex().as_str(),
        "deployment.completed",
    ] {
        assert!(html.contains(needle), "no {needle} in the HTML");
    }
    let key_of = |p: &Person| {
        modelbus_core::signing::public_key_path(&p.key_file)
            .to_str()
            .unwrap()
            .to_string()
    };
    let automation_pub = modelbus_core::signing::public_key_path(&t.config.automation_key_path())
        .to_str()
        .unwrap()
        .to_string();
    let (alice_pub, bob_pub, dave_pub, olga_pub) =
        (key_of(&alice), key_of(&bob), key_of(&dave), key_of(&olga));
    let verify = |keys: &[&str]| {
        let mut args = vec!["evidence", "verify", ev_s.as_str()];
        for k in keys {
            args.extend(["--trusted-key", k]);
        }
        cli(&t, &args)
    };
    let (code, out, err) = verify(&[&alice_pub, &bob_pub, &dave_pub, &olga_pub, &automation_pub]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("ok     production approvals: 2 distinct valid approvers (alice, bob)"),
        "{out}"
    );
    let (code, out, _) = verify(&[&bob_pub, &dave_pub, &olga_pub, &automation_pub]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("is not among the keys given"), "{out}");
    let json_path = ev.join("evidence.json");
    let original = std::fs::read_to_string(&json_path).unwrap();
    let mut edited: Value = serde_json::from_str(&original).unwrap();
    edited["model_sha256"] = json!(Sha256Digest::of(b"another model").to_hex());
    let edited = serde_json::to_string_pretty(&edited).unwrap() + "\n";
    std::fs::write(&json_path, &edited).unwrap();
    let (code, out, _) = verify(&[]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("FAILED checksum of evidence.json"), "{out}");
    // Checksums recomputed by whoever edited it: the signatures and the audit
    // entries still disagree.
    let sums = std::fs::read_to_string(ev.join("SHA256SUMS")).unwrap();
    let old = Sha256Digest::of(original.as_bytes()).to_hex();
    let new = Sha256Digest::of(edited.as_bytes()).to_hex();
    std::fs::write(ev.join("SHA256SUMS"), sums.replace(&old, &new)).unwrap();
    let (code, out, _) = verify(&[]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("FAILED registration"), "{out}");
    assert!(out.contains("artifact digest does not match"), "{out}");

    // The audit log holds every step and verifies; a row edited in the database is caught.
    let (code, out, _) = cli(&t, &["audit", "verify"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("intact"), "{out}");
    let export = t.client.audit_all().await.unwrap();
    let actions: Vec<&str> = export.iter().map(|e| e.action.as_str()).collect();
    for needed in [
        "spec.applied",
        "version.registered",
        "gates.decided",
        "approval.granted",
        "deployment.completed",
        "roster.added",
        "roster.revoked",
        "approval.accepted",
        "approval.refused",
        "promotion.decided",
        "token.created",
    ] {
        assert!(actions.contains(&needed), "no {needed} in {actions:?}");
    }
    let refused = export
        .iter()
        .filter(|e| e.action == "approval.refused")
        .count();
    assert!(refused >= 10, "{refused} refusals audited");
    // Requests without the role never reach the signature checks: denied by the
    // API, audited and counted all the same.
    for (who, permission) in [("olga", "approve"), ("alice", "administer")] {
        assert!(
            export.iter().any(|e| e.action == "access.denied"
                && e.actor == who
                && e.subject == format!("permission/{permission}")),
            "no access.denied of {who} for {permission}"
        );
    }
    let by_author = export.iter().find(|e| {
        e.action == "approval.refused"
            && e.actor == "admin"
            && e.detail.to_string().contains("author_approval")
    });
    assert!(
        by_author.is_some(),
        "the author's approval is not in the audit log"
    );
    let metrics = t.metrics().await;
    assert!(metrics.contains("modelbus_auth_denials_total{permission=\"approve\"}"));
    for reason in [
        "unknown_key",
        "digest_mismatch",
        "unknown_version",
        "expired",
        "not_signer",
        "author_approval",
        "bad_signature",
        "replayed_nonce",
        "revoked",
    ] {
        assert!(
            metrics.contains(&format!(
                "modelbus_registry_approval_refusals_total{{reason=\"{reason}\"}}"
            )),
            "no refusal counted for {reason}: {}",
            metrics
                .lines()
                .filter(|l| l.starts_with("modelbus_registry_approval_refusals_total"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    let victim = export
        .iter()
        .find(|e| e.action == "approval.accepted")
        .unwrap()
        .seq;
    let url = format!(
        "sqlite://{}?mode=rw",
        t.dir.path().join("registry.db").display()
    );
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&url).await.unwrap();
    sqlx::query("UPDATE audit_log SET actor = 'mallory' WHERE seq = $1")
        .bind(victim as i64)
        .execute(&pool)
        .await
        .unwrap();
    let (code, out, _) = cli(&t, &["audit", "verify"]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains(&format!("BROKEN at entry {victim}")), "{out}");
    // A bundle exported now carries the broken chain and says so.
    let again = dir.path().join("evidence-after-edit");
    let (code, out, _) = cli(
        &t,
        &[
            "evidence",
            "--model",
            "telco-churn",
            "--version",
            &version_s,
            "--out",
            again.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("FAILED audit chain"), "{out}");
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// The deployer re-decides a production promotion on its own evidence; a
/// restarted deployer rebuilds the staging statistics it had from the event
/// stream, so traffic served before the restart still counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_deployer_still_counts_the_staging_traffic_it_saw() {
    use modelbus_cli::platform::{self, Service};
    let dir = tempfile::tempdir().unwrap();
    let mut keys = Vec::new();
    let mut trusted = Vec::new();
    for name in ["alice", "bob"] {
        let key = KeyPair::generate().unwrap();
        let file = dir.path().join(format!("{name}.pem.pub"));
        std::fs::write(&file, key.public().to_pem()).unwrap();
        trusted.push(TrustedKey {
            id: name.into(),
            public_key_file: file.clone(),
            environments: vec![Environment::Production],
            role: modelbus_core::auth::Role::Approver,
        });
        keys.push((name, key, file));
    }
    let others: Vec<Service> = Service::ALL
        .into_iter()
        .filter(|s| *s != Service::Deployer)
        .collect();
    let t = TestPlatform::start_services(
        Db::Postgres,
        |c| {
            c.promotion.staging_soak = Duration::from_secs(1);
            c.promotion.evaluate_interval = Duration::from_millis(200);
            c.promotion.min_staging_requests = 6;
            c.serving.stats_interval = Duration::from_millis(200);
            c.deployer.trusted_keys = trusted.clone();
        },
        &others,
    )
    .await;
    let deployer = platform::start((*t.config).clone(), &[Service::Deployer])
        .await
        .unwrap();
    deployer.wait_ready(Duration::from_secs(30)).await.unwrap();
    let run = t.deploy_telco().await;
    let version = run["model_version"].as_u64().unwrap() as u32;
    let digest = Sha256Digest::parse(
        t.client
            .model_version("telco-churn", version.into())
            .await
            .unwrap()["model_sha256"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let nats = t.nats().await;
    let mut stats = nats.subscribe("modelbus.serving.stats").await.unwrap();
    nats.flush().await.unwrap();
    for _ in 0..6 {
        let r = t
            .http
            .post(format!("{}/v1/models/telco-churn:predict", t.staging()))
            .json(&json!({ "instances": crate::harness::telco_records(1) }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    // Serving reports them, and the deployer has consumed every event (its
    // durable consumer has nothing pending) before it stops.
    let mut reported = 0;
    while reported < 6 {
        let msg = tokio::time::timeout(Duration::from_secs(10), stats.next())
            .await
            .expect("serving.stats")
            .unwrap();
        let e: Value = serde_json::from_slice(&msg.payload).unwrap();
        if e["data"]["environment"] == "staging" {
            reported += e["data"]["requests"].as_u64().unwrap();
        }
    }
    let js = async_nats::jetstream::new(nats.clone());
    let mut drained = false;
    for _ in 0..100 {
        let mut c: async_nats::jetstream::consumer::PullConsumer = js
            .get_consumer_from_stream("deployer", "MODELBUS_EVENTS")
            .await
            .unwrap();
        let info = c.info().await.unwrap();
        if info.num_pending == 0 && info.num_ack_pending == 0 {
            drained = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(drained, "the deployer never caught up");
    deployer.stop().await.unwrap();
    let deployer = platform::start((*t.config).clone(), &[Service::Deployer])
        .await
        .unwrap();
    deployer.wait_ready(Duration::from_secs(30)).await.unwrap();
    for (name, key, _) in &keys {
        let tok = token(&t, name, "approver").await;
        let (code, _, err) = cli(
            &t,
            &[
                "approvers",
                "add",
                "--id",
                name,
                "--public-key-file",
                dir.path().join(format!("{name}.pem.pub")).to_str().unwrap(),
                "--role",
                "approver",
            ],
        );
        assert_eq!(code, 0, "{err}");
        let p = Person {
            name,
            key: KeyPair::from_pem(&key.to_pem().unwrap(), "t").unwrap(),
            http: authed_http(&tok),
            key_file: dir.path().join(format!("{name}.pem")),
            token: tok,
        };
        let body = sign(
            &p,
            StatementKind::Approve,
            digest,
            version,
            Environment::Production,
            time::Duration::hours(1),
        );
        let (s, v) = post(&p, &t, "/v1/approvals", &body).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    let mut alias = Value::Null;
    for _ in 0..100 {
        alias = t.client.model("telco-churn").await.unwrap()["aliases"]["production"].clone();
        if alias == version {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let timeline = t
        .client
        .get_json("/v1/models/telco-churn/deployments")
        .await
        .unwrap();
    assert_eq!(
        alias, version,
        "the restarted deployer refused: {timeline:#}"
    );
    deployer.stop().await.unwrap();
}

/// A deployment hands each service its own token from a secret
/// (`auth.<service>_token`); the registry registers each on first start under
/// the service's principal with the service's role only, and the pipeline
/// runs on them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_service_tokens_are_registered_each_with_its_own_role() {
    use modelbus_core::auth::ServiceIdentity;
    let dir = tempfile::tempdir().unwrap();
    let mut minted = Vec::new();
    for s in ServiceIdentity::ALL {
        let m = modelbus_core::auth::mint_token().unwrap();
        let file = dir.path().join(format!("{}.token", s.name()));
        std::fs::write(&file, format!("{}\n", m.token)).unwrap();
        minted.push((s, m, file));
    }
    let files: Vec<_> = minted.iter().map(|(s, _, f)| (*s, f.clone())).collect();
    let t = TestPlatform::start_with(Db::Sqlite, move |c| {
        for (s, f) in &files {
            let r = Some(modelbus_core::config::SecretRef::file(f));
            match s {
                ServiceIdentity::Ingest => c.auth.ingest_token = r,
                ServiceIdentity::Features => c.auth.features_token = r,
                ServiceIdentity::Trainer => c.auth.trainer_token = r,
                ServiceIdentity::Serving => c.auth.serving_token = r,
                ServiceIdentity::Monitor => c.auth.monitor_token = r,
            }
        }
    })
    .await;
    // Ingest authenticates the producer, features reads the spec, the
    // trainer registers the version: each with its own configured token.
    t.deploy_telco().await;
    let tokens = t.client.get_json("/v1/tokens").await.unwrap();
    for (s, m, _) in &minted {
        let held: Vec<&Value> = tokens["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|x| x["principal"] == s.principal().as_str())
            .collect();
        assert_eq!(held.len(), 1, "{}: {tokens:#}", s.name());
        assert_eq!(held[0]["id"], m.id.as_str());
        assert_eq!(held[0]["created_by"], "configuration");
        assert_eq!(held[0]["roles"], json!([s.role().as_str()]));
        assert!(
            !t.config.service_token_path(*s).exists(),
            "no second {} token written to the state dir",
            s.name()
        );
    }
    // The serving token can introspect, nothing else.
    let serving = &minted[3].1.token;
    let status = modelbus_core::http::client()
        .unwrap()
        .get(format!("{}/v1/models", t.config.registry_http_url()))
        .bearer_auth(serving)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, reqwest::StatusCode::FORBIDDEN);
}

/// One service's token configured as another's is refused at start: a
/// token is registered under one principal only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_token_configured_for_two_services_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let m = modelbus_core::auth::mint_token().unwrap();
    let file = dir.path().join("shared.token");
    std::fs::write(&file, &m.token).unwrap();
    let store = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/registry.db?mode=rwc", store.path().display());
    let registry = modelbus_registry::Registry::new(
        modelbus_registry::store::Store::connect(&db).await.unwrap(),
        modelbus_core::signing::KeyPair::generate().unwrap(),
        modelbus_core::artifact::ArtifactStore::local(&store.path().join("artifacts")).unwrap(),
        modelbus_registry::policy::PolicySet::default_set(),
    );
    let mut config = modelbus_core::config::Config::default();
    config.general.state_dir = store.path().to_path_buf();
    config.auth.ingest_token = Some(modelbus_core::config::SecretRef::file(&file));
    config.auth.trainer_token = Some(modelbus_core::config::SecretRef::file(&file));
    let err = registry
        .bootstrap_tokens(&config)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("auth.trainer_token") && err.contains("modelbus-ingest"),
        "{err}"
    );
}
