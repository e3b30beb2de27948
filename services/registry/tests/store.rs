//! Conformance suite of the registry's metadata store: the same tests run against
//! SQLite (a temporary file) and PostgreSQL (a fresh database on the local server
//! per test), so both backends keep exactly the same behaviour.

use std::collections::{BTreeMap, BTreeSet};

use modelbus_registry::RegistryError;
use modelbus_registry::store::Store;
use modelbus_registry::types::{GateCheck, Lineage, NamedArtifact, NewModelVersion};
use modelbus_testkit::TestPostgres;
use sqlx::Row;

/// Keeps a backend's database alive for as long as a test needs it.
struct Guard {
    url: String,
    _dir: Option<tempfile::TempDir>,
    _pg: Option<TestPostgres>,
}

async fn sqlite_store() -> (Store, Guard) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("registry.db").display()
    );
    let store = Store::connect(&url).await.expect("open SQLite store");
    (
        store,
        Guard {
            url,
            _dir: Some(dir),
            _pg: None,
        },
    )
}

async fn postgres_store() -> (Store, Guard) {
    let pg = TestPostgres::create().await;
    let url = pg.url().to_string();
    let store = Store::connect(&url).await.expect("open PostgreSQL store");
    (
        store,
        Guard {
            url,
            _dir: None,
            _pg: Some(pg),
        },
    )
}

/// A 64-hex digest, distinct per `n`.
fn digest(n: u64) -> String {
    format!("{n:064x}")
}

/// Rows in a table.
async fn count(store: &Store, table: &str) -> i64 {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT COUNT(*) AS n FROM {table}"
    )))
    .fetch_one(store.pool())
    .await
    .expect("count rows");
    row.try_get::<i64, _>("n").expect("count column")
}

/// Metrics whose decimal forms are long: they only round-trip if stored exactly.
fn metrics(n: u64) -> BTreeMap<String, f64> {
    BTreeMap::from([
        ("auc".to_string(), 0.1 + 0.2 + n as f64 / 1000.0),
        ("f1".to_string(), 1.0 / 3.0),
        ("pi".to_string(), std::f64::consts::PI),
        ("tiny".to_string(), -2.5e-300),
        ("big".to_string(), 123_456_789.123_456_79),
    ])
}

fn new_version(model: &str, model_digest: &str, n: u64) -> NewModelVersion {
    NewModelVersion {
        model: model.to_string(),
        dataset: "telco-churn".to_string(),
        model_sha256: model_digest.to_string(),
        algorithm: "logistic_regression".to_string(),
        metrics: metrics(n),
        params: BTreeMap::from([
            ("learning_rate".to_string(), "0.05".to_string()),
            ("epochs".to_string(), format!("{}", 10 + n)),
            ("note".to_string(), "quotes \" and unicode é ✓".to_string()),
        ]),
        lineage: Lineage {
            pipeline_run: format!("pr-{n}"),
            batch_sha256: digest(1000 + n),
            spec_digest: digest(2000 + n),
            report_sha256: digest(3000 + n),
            feature_set_sha256: digest(4000 + n),
            transform_sha256: digest(5000 + n),
            code_revision: format!("rev-{n}"),
            // Above i64::MAX: must survive storage untruncated.
            seed: u64::MAX - n,
        },
        artifacts: vec![
            NamedArtifact {
                name: "model".to_string(),
                sha256: model_digest.to_string(),
            },
            NamedArtifact {
                name: "feature_set".to_string(),
                sha256: digest(4000 + n),
            },
        ],
        author: "alice".to_string(),
        evaluation_sha256: digest(6000 + n),
        evaluation_html_sha256: digest(7000 + n),
    }
}

/// Applies a spec and creates a pipeline run on it.
async fn seed_run(store: &Store, id: &str, batch: u64) {
    let spec = digest(77);
    store
        .apply_spec(
            "churn",
            &spec,
            "name = \"churn\"\n",
            &serde_json::json!({"name": "churn"}),
        )
        .await
        .expect("apply spec");
    store
        .create_pipeline_run(id, "churn", &spec, &digest(batch), 10, "alice")
        .await
        .expect("create pipeline run");
}

macro_rules! store_suite {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;

            #[tokio::test]
            async fn apply_spec_numbers_versions_per_dataset() {
                let (store, _guard) = $make.await;
                let (d1, d2, d3) = (digest(1), digest(2), digest(3));
                let json1 = serde_json::json!({"name": "churn", "columns": [{"name": "tenure", "type": "int"}], "n": 1.5});
                let (v1, created) = store
                    .apply_spec("churn", &d1, "name = \"churn\"\n# v1\n", &json1)
                    .await
                    .unwrap();
                assert!(created);
                assert_eq!(v1.version, 1);
                assert_eq!(v1.dataset, "churn");
                assert_eq!(v1.digest, d1);
                assert_eq!(v1.toml, "name = \"churn\"\n# v1\n");
                assert_eq!(v1.spec, json1);
                assert!(!v1.created_at.is_empty());

                let (again, created) = store
                    .apply_spec("churn", &d1, "name = \"churn\"\n# v1\n", &json1)
                    .await
                    .unwrap();
                assert!(!created, "same digest must not create a version");
                assert_eq!(again, v1);

                let json2 = serde_json::json!({"name": "churn", "v": 2});
                let (v2, created) = store.apply_spec("churn", &d2, "name = \"churn\"\n# v2\n", &json2).await.unwrap();
                assert!(created);
                assert_eq!(v2.version, 2);
                assert_eq!(v2.spec, json2);

                let (iris, created) =
                    store.apply_spec("iris", &d3, "name = \"iris\"\n", &serde_json::json!({})).await.unwrap();
                assert!(created);
                assert_eq!(iris.version, 1, "versions are numbered per dataset");

                assert_eq!(store.latest_spec("churn").await.unwrap(), Some(v2.clone()));
                assert_eq!(store.spec_by_digest(&d1).await.unwrap(), Some(v1.clone()));
                let versions = store.spec_versions("churn").await.unwrap();
                assert_eq!(versions, vec![v2.clone(), v1.clone()], "newest first");

                let datasets = store.list_datasets("", 1000).await.unwrap();
                let summary: Vec<_> = datasets
                    .iter()
                    .map(|d| (d.name.as_str(), d.latest_version, d.latest_digest.as_str(), d.spec_versions))
                    .collect();
                assert_eq!(summary, vec![("churn", 2, d2.as_str(), 2), ("iris", 1, d3.as_str(), 1)]);

                let err = store
                    .apply_spec("iris", &d1, "name = \"churn\"\n# v1\n", &json1)
                    .await
                    .expect_err("a digest belongs to one dataset");
                assert!(matches!(err, RegistryError::FailedPrecondition(_)), "{err:?}");
                assert_eq!(store.spec_versions("iris").await.unwrap().len(), 1);
                assert_eq!(store.spec_by_digest(&d1).await.unwrap().unwrap().dataset, "churn");

                assert_eq!(store.latest_spec("unknown").await.unwrap(), None);
                assert!(store.spec_versions("unknown").await.unwrap().is_empty());
            }

            #[tokio::test]
            async fn pipeline_run_is_idempotent_and_needs_its_spec() {
                let (store, _guard) = $make.await;
                let spec = digest(10);
                store.apply_spec("churn", &spec, "x", &serde_json::json!({})).await.unwrap();
                let batch = digest(11);

                let (run, created) =
                    store.create_pipeline_run("pr-1", "churn", &spec, &batch, 1234, "alice").await.unwrap();
                assert!(created);
                assert_eq!(run.id, "pr-1");
                assert_eq!(run.dataset, "churn");
                assert_eq!(run.spec_digest, spec);
                assert_eq!(run.batch_sha256, batch);
                assert_eq!(run.size_bytes, 1234);
                assert_eq!(run.submitted_by, "alice");
                assert_eq!(run.state, "submitted");
                assert!(run.reasons.is_empty());
                assert_eq!(run.report_sha256, "");
                assert_eq!(run.rows, 0);
                assert_eq!(run.model, "");
                assert_eq!(run.model_version, 0);
                assert!(run.stages.is_empty());
                assert!(!run.created_at.is_empty());
                assert_eq!(run.created_at, run.updated_at);

                let (again, created) =
                    store.create_pipeline_run("pr-1", "churn", &spec, &batch, 999, "bob").await.unwrap();
                assert!(!created, "the second create finds the first run");
                assert_eq!(again.state, "submitted");
                assert_eq!(again, run, "the existing run is returned unchanged");
                assert_eq!(store.pipeline_run("pr-1").await.unwrap(), Some(run.clone()));
                assert_eq!(count(&store, "pipeline_runs").await, 1);

                let missing = store.create_pipeline_run("pr-2", "churn", &digest(12), &batch, 1, "alice").await;
                assert!(missing.is_err(), "a run needs an existing spec: {missing:?}");
                assert_eq!(store.pipeline_run("pr-2").await.unwrap(), None);
                assert_eq!(count(&store, "pipeline_runs").await, 1);

                let listed = store.list_pipeline_runs(Some("churn"), 10).await.unwrap();
                assert_eq!(listed.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), vec!["pr-1"]);
                assert!(store.list_pipeline_runs(Some("iris"), 10).await.unwrap().is_empty());
            }

            #[tokio::test]
            async fn stages_follow_positions_and_keep_details() {
                let (store, _guard) = $make.await;
                seed_run(&store, "pr-1", 1).await;

                store.set_stage("pr-1", "validation", "running", "checking rows").await.unwrap();
                let run = store.pipeline_run("pr-1").await.unwrap().unwrap();
                assert_eq!(run.stages.len(), 1);
                let running = run.stages[0].clone();
                assert_eq!(running.name, "validation");
                assert_eq!(running.status, "running");
                assert_eq!(running.detail, "checking rows");
                assert_eq!(running.finished_at, "", "a running stage has no end");
                assert!(!running.started_at.is_empty());

                // An empty detail keeps the previous one.
                store.set_stage("pr-1", "validation", "succeeded", "").await.unwrap();
                let run = store.pipeline_run("pr-1").await.unwrap().unwrap();
                let done = &run.stages[0];
                assert_eq!(done.status, "succeeded");
                assert_eq!(done.detail, "checking rows");
                assert_eq!(done.started_at, running.started_at, "the start time is kept");
                assert!(!done.finished_at.is_empty(), "a finished stage has an end");
                assert!(done.finished_at >= done.started_at, "{} < {}", done.finished_at, done.started_at);

                // A non-empty detail replaces it.
                store.set_stage("pr-1", "validation", "failed", "schema drift").await.unwrap();
                let run = store.pipeline_run("pr-1").await.unwrap().unwrap();
                assert_eq!(run.stages[0].status, "failed");
                assert_eq!(run.stages[0].detail, "schema drift");

                // Inserted out of order, listed in pipeline order; unknown stages last.
                for stage in ["deployment", "custom", "gates", "training", "features"] {
                    store.set_stage("pr-1", stage, "running", stage).await.unwrap();
                }
                let run = store.pipeline_run("pr-1").await.unwrap().unwrap();
                let names: Vec<_> = run.stages.iter().map(|s| s.name.as_str()).collect();
                assert_eq!(names, vec!["validation", "features", "training", "gates", "deployment", "custom"]);
                let details: Vec<_> = run.stages.iter().map(|s| s.detail.as_str()).collect();
                assert_eq!(details, vec!["schema drift", "features", "training", "gates", "deployment", "custom"]);

                let orphan = store.set_stage("pr-missing", "validation", "running", "").await;
                assert!(orphan.is_err(), "a stage needs an existing run: {orphan:?}");
            }

            #[tokio::test]
            async fn run_state_moves_until_it_ends() {
                let (store, _guard) = $make.await;
                for (i, end) in ["deployed", "rejected", "failed"].into_iter().enumerate() {
                    let id = format!("pr-{end}");
                    seed_run(&store, &id, i as u64 + 1).await;

                    assert!(store.set_run_state(&id, "validating", None).await.unwrap());
                    assert_eq!(store.pipeline_run(&id).await.unwrap().unwrap().state, "validating");
                    assert!(store.set_run_state(&id, "training", None).await.unwrap());
                    let training = store.pipeline_run(&id).await.unwrap().unwrap();
                    assert_eq!(training.state, "training");
                    assert!(training.reasons.is_empty());

                    let reasons = vec![format!("{end}: reason one"), "reason \"two\" ✓".to_string()];
                    assert!(store.set_run_state(&id, end, Some(&reasons)).await.unwrap());
                    let ended = store.pipeline_run(&id).await.unwrap().unwrap();
                    assert_eq!(ended.state, end);
                    assert_eq!(ended.reasons, reasons);
                    assert!(ended.is_final());

                    for next in ["training", "deployed", "rejected", "failed"] {
                        assert!(
                            !store.set_run_state(&id, next, Some(&["late".to_string()])).await.unwrap(),
                            "{end} moved to {next}"
                        );
                        assert!(!store.set_run_state(&id, next, None).await.unwrap());
                    }
                    let after = store.pipeline_run(&id).await.unwrap().unwrap();
                    assert_eq!(after.state, end);
                    assert_eq!(after.reasons, reasons);
                    assert_eq!(after.updated_at, ended.updated_at);
                }
                assert!(!store.set_run_state("pr-missing", "training", None).await.unwrap());
            }

            #[tokio::test]
            async fn model_versions_are_numbered_and_round_trip() {
                let (store, _guard) = $make.await;
                let mut registered = Vec::new();
                for n in 1..=3u64 {
                    let input = new_version("churn-model", &digest(100 + n), n);
                    let (mv, created) = store.register_model_version(&input).await.unwrap();
                    assert!(created);
                    assert_eq!(mv.version, n as u32);
                    assert_eq!(mv.model, "churn-model");
                    assert_eq!(mv.model_sha256, input.model_sha256);
                    assert_eq!(mv.status, "pending");
                    assert_eq!(mv.algorithm, "logistic_regression");
                    assert_eq!(mv.author, "alice");
                    assert_eq!(mv.metrics, input.metrics);
                    for (k, v) in &input.metrics {
                        assert_eq!(mv.metrics[k].to_bits(), v.to_bits(), "metric {k}");
                    }
                    assert_eq!(mv.lineage, input.lineage);
                    assert!(mv.gate_checks.is_empty());
                    assert!(mv.aliases.is_empty());
                    registered.push((input, mv));
                }
                assert_eq!(count(&store, "training_runs").await, 3);

                // The same digest finds version 2, whatever else differs.
                let mut retry = new_version("churn-model", &digest(102), 9);
                retry.algorithm = "gbdt".to_string();
                let (same, created) = store.register_model_version(&retry).await.unwrap();
                assert!(!created);
                assert_eq!(same, registered[1].1);
                assert_eq!(count(&store, "training_runs").await, 3, "no extra training run");

                // Versions are numbered per model; a digest is unique per model only.
                let (other, created) =
                    store.register_model_version(&new_version("iris-model", &digest(101), 7)).await.unwrap();
                assert!(created);
                assert_eq!(other.version, 1);

                assert_eq!(store.model_version("churn-model", 2).await.unwrap(), Some(registered[1].1.clone()));
                assert_eq!(store.model_version("churn-model", 4).await.unwrap(), None);

                let model = store.model("churn-model").await.unwrap().unwrap();
                assert_eq!(model.name, "churn-model");
                assert_eq!(model.dataset, "telco-churn");
                assert_eq!(model.versions.iter().map(|v| v.version).collect::<Vec<_>>(), vec![3, 2, 1]);
                let expected: Vec<_> = registered.iter().rev().map(|(_, mv)| mv.clone()).collect();
                assert_eq!(model.versions, expected);
                assert!(model.aliases.is_empty());
                assert_eq!(store.model("nope").await.unwrap(), None);

                let run_ids: BTreeSet<_> = registered.iter().map(|(_, mv)| mv.run_id.clone()).collect();
                assert_eq!(run_ids.len(), 3, "one training run per version");
                for (input, mv) in &registered {
                    let run = store.run(&mv.run_id).await.unwrap().expect("training run");
                    assert_eq!(run.id, mv.run_id);
                    assert_eq!(run.pipeline_run, input.lineage.pipeline_run);
                    assert_eq!(run.dataset, input.dataset);
                    assert_eq!(run.params, input.params);
                    assert_eq!(run.metrics, input.metrics);
                    for (k, v) in &input.metrics {
                        assert_eq!(run.metrics[k].to_bits(), v.to_bits(), "run metric {k}");
                    }
                    assert_eq!(run.artifacts, input.artifacts);
                }
                assert_eq!(store.run("run-missing").await.unwrap(), None);

                let names: Vec<_> = store.list_models("", 1000).await.unwrap().into_iter().map(|m| m.name).collect();
                assert_eq!(names, vec!["churn-model", "iris-model"]);
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn concurrent_registrations_get_distinct_versions() {
                let (store, _guard) = $make.await;
                let tasks: Vec<_> = (1..=8u64)
                    .map(|n| {
                        let store = store.clone();
                        tokio::spawn(async move {
                            store.register_model_version(&new_version("race", &digest(500 + n), n)).await
                        })
                    })
                    .collect();
                let mut by_version = BTreeMap::new();
                for task in tasks {
                    let (mv, created) = task.await.expect("task").expect("register under contention");
                    assert!(created, "distinct digests each create a version");
                    assert!(
                        by_version.insert(mv.version, mv.model_sha256.clone()).is_none(),
                        "version {} given twice",
                        mv.version
                    );
                }
                assert_eq!(by_version.keys().copied().collect::<Vec<_>>(), (1..=8).collect::<Vec<u32>>());
                let digests: BTreeSet<_> = by_version.values().cloned().collect();
                assert_eq!(digests, (1..=8u64).map(|n| digest(500 + n)).collect::<BTreeSet<_>>());
                let model = store.model("race").await.unwrap().unwrap();
                assert_eq!(model.versions.iter().map(|v| v.version).collect::<Vec<_>>(), (1..=8).rev().collect::<Vec<u32>>());
                for v in &model.versions {
                    assert_eq!(by_version[&v.version], v.model_sha256);
                }
                assert_eq!(count(&store, "training_runs").await, 8);
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn concurrent_same_digest_registers_once() {
                let (store, _guard) = $make.await;
                let tasks: Vec<_> = (0..8u64)
                    .map(|n| {
                        let store = store.clone();
                        tokio::spawn(async move {
                            store.register_model_version(&new_version("same", &digest(600), n)).await
                        })
                    })
                    .collect();
                let mut results = Vec::new();
                for task in tasks {
                    results.push(task.await.expect("task").expect("register under contention"));
                }
                assert_eq!(results.iter().filter(|(_, created)| *created).count(), 1, "exactly one creates");
                assert!(results.iter().all(|(mv, _)| mv.version == 1 && mv.model_sha256 == digest(600)));
                let run_ids: BTreeSet<_> = results.iter().map(|(mv, _)| mv.run_id.clone()).collect();
                assert_eq!(run_ids.len(), 1);
                let model = store.model("same").await.unwrap().unwrap();
                assert_eq!(model.versions.len(), 1);
                assert_eq!(count(&store, "training_runs").await, 1, "losers leave no training run");
            }

            #[tokio::test]
            async fn first_gate_decision_sticks() {
                let (store, _guard) = $make.await;
                store.register_model_version(&new_version("m", &digest(1), 1)).await.unwrap();
                store.register_model_version(&new_version("m", &digest(2), 2)).await.unwrap();
                let passed = vec![
                    GateCheck {
                        gate: "min_auc".to_string(),
                        passed: true,
                        detail: "auc 0.84 >= 0.80".to_string(),
                    },
                    GateCheck {
                        gate: "max_drift".to_string(),
                        passed: true,
                        detail: "psi 0.01 <= \"0.2\" ✓".to_string(),
                    },
                ];
                let failed = vec![GateCheck {
                    gate: "min_auc".to_string(),
                    passed: false,
                    detail: "auc 0.61 < 0.80".to_string(),
                }];

                store.set_gate_decision("m", 1, "candidate", &passed, None).await.unwrap();
                let v1 = store.model_version("m", 1).await.unwrap().unwrap();
                assert_eq!(v1.status, "candidate");
                assert_eq!(v1.gate_checks, passed);

                store.set_gate_decision("m", 1, "rejected", &failed, None).await.unwrap();
                let v1 = store.model_version("m", 1).await.unwrap().unwrap();
                assert_eq!(v1.status, "candidate", "the first decision sticks");
                assert_eq!(v1.gate_checks, passed);

                let v2 = store.model_version("m", 2).await.unwrap().unwrap();
                assert_eq!(v2.status, "pending", "other versions are untouched");
                assert!(v2.gate_checks.is_empty());
                store.set_gate_decision("m", 2, "rejected", &failed, None).await.unwrap();
                let v2 = store.model_version("m", 2).await.unwrap().unwrap();
                assert_eq!(v2.status, "rejected");
                assert_eq!(v2.gate_checks, failed);
            }

            #[tokio::test]
            async fn aliases_follow_their_version() {
                let (store, _guard) = $make.await;
                store.register_model_version(&new_version("m", &digest(1), 1)).await.unwrap();
                store.register_model_version(&new_version("m", &digest(2), 2)).await.unwrap();
                store.set_alias("m", "staging", 1).await.unwrap();
                store.set_alias("m", "production", 1).await.unwrap();

                let v1 = store.model_version("m", 1).await.unwrap().unwrap();
                assert_eq!(v1.aliases, vec!["production", "staging"]);
                assert!(store.model_version("m", 2).await.unwrap().unwrap().aliases.is_empty());
                let model = store.model("m").await.unwrap().unwrap();
                assert_eq!(model.aliases, BTreeMap::from([("production".to_string(), 1), ("staging".to_string(), 1)]));

                store.set_alias("m", "staging", 2).await.unwrap();
                assert_eq!(store.model_version("m", 1).await.unwrap().unwrap().aliases, vec!["production"]);
                assert_eq!(store.model_version("m", 2).await.unwrap().unwrap().aliases, vec!["staging"]);
                let model = store.model("m").await.unwrap().unwrap();
                assert_eq!(model.aliases, BTreeMap::from([("production".to_string(), 1), ("staging".to_string(), 2)]));
                let on_versions: Vec<_> = model.versions.iter().map(|v| (v.version, v.aliases.clone())).collect();
                assert_eq!(
                    on_versions,
                    vec![(2, vec!["staging".to_string()]), (1, vec!["production".to_string()])]
                );
                assert_eq!(count(&store, "aliases").await, 2);
            }

            #[tokio::test]
            async fn first_approval_envelope_is_kept() {
                let (store, _guard) = $make.await;
                let first = store.save_approval("m", 1, "staging", "alice", "", "key-1", "envelope-A").await.unwrap();
                assert_eq!(first, "envelope-A");
                let second = store.save_approval("m", 1, "staging", "alice", "", "key-2", "envelope-B").await.unwrap();
                assert_eq!(second, "envelope-A", "the first envelope is kept");

                // Each part of the key separates approvals.
                assert_eq!(store.save_approval("m", 1, "staging", "bob", "", "k", "bob-env").await.unwrap(), "bob-env");
                assert_eq!(store.save_approval("m", 1, "production", "alice", "", "k", "prod-env").await.unwrap(), "prod-env");
                assert_eq!(store.save_approval("m", 2, "staging", "alice", "", "k", "v2-env").await.unwrap(), "v2-env");
                assert_eq!(store.save_approval("n", 1, "staging", "alice", "", "k", "n-env").await.unwrap(), "n-env");
                assert_eq!(store.save_approval("m", 1, "staging", "alice", "", "k", "again").await.unwrap(), "envelope-A");
                assert_eq!(store.save_approval("m", 1, "staging", "alice", "pr-2", "k", "run-2-env").await.unwrap(), "run-2-env");
                assert_eq!(count(&store, "approvals").await, 6);
            }

            #[tokio::test]
            async fn deployment_events_are_recorded_once_oldest_first() {
                let (store, _guard) = $make.await;
                store.record_deployment_event("ev-1", "deployment.started", "staging", "m", 1, "rolling").await.unwrap();
                store.record_deployment_event("ev-2", "deployment.succeeded", "staging", "m", 1, "ok").await.unwrap();
                store.record_deployment_event("ev-other", "deployment.started", "staging", "other", 4, "").await.unwrap();
                store.record_deployment_event("ev-3", "deployment.rolled_back", "production", "m", 2, "slo").await.unwrap();
                // Redelivered: ignored.
                store.record_deployment_event("ev-1", "deployment.failed", "production", "m", 9, "changed").await.unwrap();

                let events = store.deployment_events("m").await.unwrap();
                let summary: Vec<_> = events
                    .iter()
                    .map(|e| {
                        (
                            e["event_id"].as_str().unwrap().to_string(),
                            e["kind"].as_str().unwrap().to_string(),
                            e["environment"].as_str().unwrap().to_string(),
                            e["version"].as_i64().unwrap(),
                            e["detail"].as_str().unwrap().to_string(),
                        )
                    })
                    .collect();
                let expected = vec![
                    ("ev-1", "deployment.started", "staging", 1, "rolling"),
                    ("ev-2", "deployment.succeeded", "staging", 1, "ok"),
                    ("ev-3", "deployment.rolled_back", "production", 2, "slo"),
                ]
                .into_iter()
                .map(|(a, b, c, d, e)| (a.to_string(), b.to_string(), c.to_string(), d, e.to_string()))
                .collect::<Vec<_>>();
                assert_eq!(summary, expected);
                let at: Vec<_> = events.iter().map(|e| e["at"].as_str().unwrap().to_string()).collect();
                assert!(at.windows(2).all(|w| w[0] < w[1]), "oldest first: {at:?}");
                assert_eq!(store.deployment_events("other").await.unwrap().len(), 1);
                assert!(store.deployment_events("none").await.unwrap().is_empty());
                assert_eq!(count(&store, "deployment_events").await, 4);
            }

            #[tokio::test]
            async fn tokens_are_revoked_by_id_or_principal() {
                // Failed on every PostgreSQL deployment before: a NUL stood in
                // for the absent selector, and PostgreSQL refuses NUL in text.
                let (store, _guard) = $make.await;
                let roles = [modelbus_core::auth::Role::Viewer];
                for (id, who) in [("t1", "alice"), ("t2", "alice"), ("t3", "bob")] {
                    store
                        .create_token(id, who, &roles, &format!("hash-{id}"), "admin")
                        .await
                        .unwrap();
                }
                let by_id = store.revoke_tokens(Some("t1"), None, "admin").await.unwrap();
                assert_eq!(by_id.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(), ["t1"]);
                assert!(!by_id[0].revoked_at.is_empty());
                assert!(store.principal_by_token("hash-t1").await.unwrap().is_none());
                assert!(store.principal_by_token("hash-t2").await.unwrap().is_some());
                let by_principal = store.revoke_tokens(None, Some("alice"), "admin").await.unwrap();
                assert_eq!(by_principal.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(), ["t2"]);
                assert!(store.revoke_tokens(None, None, "admin").await.unwrap().is_empty());
                assert!(store.revoke_tokens(Some("t1"), None, "admin").await.unwrap().is_empty(), "revoked twice");
                assert!(store.has_active_token("bob").await.unwrap());
                assert!(!store.has_active_token("alice").await.unwrap());
                let (_, revoked_at) = store.token("t2").await.unwrap().unwrap();
                assert!(!revoked_at.is_empty());
            }

            #[tokio::test]
            async fn a_refused_grant_reopens_only_its_own_promotion() {
                let (store, _guard) = $make.await;
                let p = modelbus_registry::store::Promotion {
                    model: "m".into(),
                    version: 1,
                    environment: "production".into(),
                    allow: true,
                    reasons: vec![],
                    policy_digest: "d".into(),
                    input: serde_json::json!({}),
                    decided_at: "2026-12-02T00:00:00Z".into(),
                    granted_event: String::new(),
                };
                store.save_promotion(&p).await.unwrap();
                assert!(store.mark_promotion_granted("m", 1, "production", "g1").await.unwrap());
                assert!(!store.mark_promotion_granted("m", 1, "production", "g2").await.unwrap());
                assert!(!store.reopen_promotion("m", 1, "production", "other").await.unwrap());
                assert!(store.reopen_promotion("m", 1, "production", "g1").await.unwrap());
                assert!(store.mark_promotion_granted("m", 1, "production", "g2").await.unwrap());
                let now = store.promotion("m", 1, "production").await.unwrap().unwrap();
                assert_eq!(now.granted_event, "g2");
            }

            #[tokio::test]
            async fn the_prediction_index_and_its_labels_are_pruned_by_time_a_batch_at_a_time() {
                use modelbus_registry::store::{IndexedPrediction, Joined};
                let (store, _guard) = $make.await;
                let day = 86_400_000i64;
                // Five predictions 100 days old, two 1 day old (times in ms).
                let now = 200 * day;
                let rows: Vec<IndexedPrediction> = (0..7)
                    .map(|i| IndexedPrediction {
                        id: format!("p{i}"),
                        entity: Some(format!("e{i}")),
                        time_ms: if i < 5 { now - 100 * day } else { now - day },
                        p: 0.5,
                    })
                    .collect();
                assert_eq!(store.index_window("w1", "d", &rows).await.unwrap(), 7);
                // A label for an old and for a new prediction, each at its prediction's time.
                let mut tx = store.begin_write().await.unwrap();
                for (row, id, t) in [(1, "p0", now - 100 * day), (2, "p6", now - day)] {
                    let label = modelbus_dataset::labels::Label {
                        row,
                        prediction_id: Some(id.into()),
                        entity: None,
                        positive: true,
                        time_ms: t,
                    };
                    let (joined, _) = tx.join_label("l1", "d", &label, 30 * day, false).await.unwrap();
                    assert_eq!(joined, Joined::Window);
                }
                tx.commit().await.unwrap();
                // 90 days kept; at most 3 rows per call.
                let before = now - 90 * day;
                assert_eq!(store.prune_prediction_index(before, 3).await.unwrap(), (3, 1));
                assert_eq!(store.prune_prediction_index(before, 3).await.unwrap(), (2, 0));
                assert_eq!(store.prune_prediction_index(before, 3).await.unwrap(), (0, 0));
                assert_eq!(count(&store, "monitor_predictions").await, 2);
                assert_eq!(count(&store, "prediction_labels").await, 1);
                // What is kept still joins: the recent label is the window's.
                let labels = store.window_labels("w1").await.unwrap();
                assert_eq!(labels.indexed, 2);
                assert_eq!(labels.ids, vec!["p6".to_string()]);
            }

            #[tokio::test]
            async fn data_survives_a_restart() {
                let (store, guard) = $make.await;
                seed_run(&store, "pr-1", 1).await;
                store.set_stage("pr-1", "validation", "succeeded", "100 rows").await.unwrap();
                store.set_run_report("pr-1", &digest(9), 100).await.unwrap();
                store.set_run_state("pr-1", "training", None).await.unwrap();
                let input = new_version("m", &digest(50), 1);
                let (mv, _) = store.register_model_version(&input).await.unwrap();
                store.set_run_model("pr-1", "m", mv.version).await.unwrap();
                let checks = vec![GateCheck {
                    gate: "min_auc".to_string(),
                    passed: true,
                    detail: "ok".to_string(),
                }];
                store.set_gate_decision("m", 1, "candidate", &checks, None).await.unwrap();
                store.set_alias("m", "staging", 1).await.unwrap();
                store.save_approval("m", 1, "staging", "alice", "", "k", "env-A").await.unwrap();
                store.record_deployment_event("ev-1", "deployment.started", "staging", "m", 1, "").await.unwrap();

                let datasets = store.list_datasets("", 1000).await.unwrap();
                let spec = store.latest_spec("churn").await.unwrap().unwrap();
                let run = store.pipeline_run("pr-1").await.unwrap().unwrap();
                assert_eq!((run.rows, run.model.as_str(), run.model_version), (100, "m", 1));
                let model = store.model("m").await.unwrap().unwrap();
                let training = store.run(&mv.run_id).await.unwrap().unwrap();
                let events = store.deployment_events("m").await.unwrap();
                drop(store);

                let store = Store::connect(&guard.url).await.expect("reopen with migrations applied");
                assert_eq!(store.list_datasets("", 1000).await.unwrap(), datasets);
                assert_eq!(store.latest_spec("churn").await.unwrap(), Some(spec));
                assert_eq!(store.pipeline_run("pr-1").await.unwrap(), Some(run));
                assert_eq!(store.model("m").await.unwrap(), Some(model));
                assert_eq!(store.run(&mv.run_id).await.unwrap(), Some(training));
                assert_eq!(store.deployment_events("m").await.unwrap(), events);
                assert_eq!(store.save_approval("m", 1, "staging", "alice", "", "k", "env-B").await.unwrap(), "env-A");
                assert_eq!(count(&store, "_sqlx_migrations").await, 7, "each migration is applied once");

                // Numbering continues where it stopped.
                let (v2, created) = store.register_model_version(&new_version("m", &digest(51), 2)).await.unwrap();
                assert!(created);
                assert_eq!(v2.version, 2);
                let (again, created) = store.register_model_version(&input).await.unwrap();
                assert!(!created);
                assert_eq!(again.version, 1);
                let (s2, created) = store.apply_spec("churn", &digest(78), "y", &serde_json::json!({})).await.unwrap();
                assert!(created);
                assert_eq!(s2.version, 2);

                // A third open while the second is live also succeeds.
                let third = Store::connect(&guard.url).await.expect("open again");
                assert_eq!(third.model("m").await.unwrap().unwrap().versions.len(), 2);
            }
        }
    };
}

store_suite!(sqlite, sqlite_store());
store_suite!(postgres, postgres_store());
