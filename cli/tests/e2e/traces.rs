//! One trace per batch, as an OTLP collector receives it: `modelbus up` (a
//! real process) exports its spans to the harness's OTLP/gRPC trace receiver,
//! and every stage's spans of a pipeline run share one trace id, which no
//! other batch's spans carry.

use std::collections::BTreeSet;
use std::time::Duration;

use modelbus_testkit::otlp::{OtlpReceiver, ReceivedSpan};
use modelbus_testkit::{repo_root, telco_csv};

use crate::harness::{Up, ports};

/// What a span shows of the pipeline: the upload (`submit`), a consumer
/// handling an event (`consume:<consumer>`), a registry call
/// (`grpc:<method>`), serving loading a model (`swap_model`).
fn stage(s: &ReceivedSpan) -> String {
    match s.name.as_str() {
        "handle_event" => format!("consume:{}", s.attr("consumer").unwrap_or("?")),
        "grpc_call" => format!(
            "grpc:{}",
            s.attr("rpc")
                .and_then(|r| r.rsplit('/').next())
                .unwrap_or("?")
        ),
        other => other.to_string(),
    }
}

/// Every stage a deployed batch goes through, as its spans name them.
const STAGES: &[&str] = &[
    // ingest: the upload, its run, and validation
    "submit",
    "grpc:CreatePipelineRun",
    "consume:ingest",
    // features
    "consume:features",
    // trainer, and the registry registering its version
    "consume:trainer",
    "grpc:RegisterModelVersion",
    // registry: run timeline, gates, staging approval
    "consume:registry",
    // deployer: verification, desired state, completion
    "consume:deployer",
    // serving: loading the approved model
    "swap_model",
];

/// The trace ids of the spans that handled run `run`'s events (not the
/// registry's answers to clients asking about the run, each its own trace).
fn traces_of_run(spans: &[ReceivedSpan], run: &str) -> BTreeSet<String> {
    spans
        .iter()
        .filter(|s| s.name == "handle_event" && s.attr("pipelinerun") == Some(run))
        .map(|s| s.trace_id.clone())
        .collect()
}

fn stages_in(spans: &[ReceivedSpan], trace: &str) -> BTreeSet<String> {
    spans
        .iter()
        .filter(|s| s.trace_id == trace)
        .map(stage)
        .collect()
}

/// The spans of `trace` whose parent is not in it (its roots).
fn roots<'a>(spans: &'a [ReceivedSpan], trace: &str) -> Vec<&'a ReceivedSpan> {
    let ids: BTreeSet<&str> = spans
        .iter()
        .filter(|s| s.trace_id == trace)
        .map(|s| s.span_id.as_str())
        .collect();
    spans
        .iter()
        .filter(|s| s.trace_id == trace && !ids.contains(s.parent_span_id.as_str()))
        .collect()
}

/// Whether run `run`'s spans are all in one trace holding every stage, and
/// every span of it has arrived (one root).
fn complete(spans: &[ReceivedSpan], run: &str) -> bool {
    let traces = traces_of_run(spans, run);
    traces.len() == 1 && {
        let trace = traces.first().unwrap();
        let stages = stages_in(spans, trace);
        STAGES.iter().all(|s| stages.contains(*s)) && roots(spans, trace).len() == 1
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stage_of_a_batch_is_in_one_trace_over_otlp() {
    let otlp = OtlpReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let log = dir.path().join("up.log");
    let p = ports();
    let mut up = Up::start_with_env(
        &state,
        &p,
        None,
        &repo_root().join("config/datasets"),
        &log,
        &[
            ("MODELBUS_TELEMETRY__OTLP_ENDPOINT", otlp.endpoint()),
            // The batch span processor's export delay (OpenTelemetry's own
            // variable): spans arrive within a second, not five.
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
        ],
    );
    up.ready(&log).await;
    let client = up.client();

    // Two batches: the Telco file, and the same without its last customer.
    let text = std::fs::read_to_string(telco_csv()).unwrap();
    let second = dir.path().join("second.csv");
    let mut lines: Vec<&str> = text.lines().collect();
    lines.pop();
    std::fs::write(&second, lines.join("\n")).unwrap();
    let mut runs = Vec::new();
    for file in [telco_csv(), second] {
        let resp = client.submit("telco-churn", &file).await.unwrap();
        let id = resp["pipeline_run"].as_str().unwrap().to_string();
        let run = client
            .wait_run(&id, Duration::from_secs(180))
            .await
            .unwrap();
        assert_eq!(run["state"], "deployed", "{run:#}");
        runs.push(id);
    }

    let spans = otlp
        .wait_for(Duration::from_secs(30), |s| {
            runs.iter().all(|r| complete(s, r))
        })
        .await;
    let mut traces = Vec::new();
    for run in &runs {
        let ids = traces_of_run(&spans, run);
        assert_eq!(
            ids.len(),
            1,
            "run {run}: its events were handled in {} traces: {ids:?}",
            ids.len()
        );
        let trace = ids.first().unwrap().clone();
        let stages = stages_in(&spans, &trace);
        let missing: Vec<&&str> = STAGES.iter().filter(|s| !stages.contains(**s)).collect();
        assert!(
            missing.is_empty(),
            "run {run}, trace {trace}: no span of {missing:?}; the trace has {stages:?}\nlog:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        // Nothing of another run in this trace.
        for s in spans.iter().filter(|s| s.trace_id == trace) {
            if let Some(other) = s.attr("pipelinerun").filter(|r| !r.is_empty()) {
                assert_eq!(other, run, "{s:#?}");
            }
        }
        eprintln!("run {run}: trace {trace} with {stages:?}");
        // Exported by `modelbus up`, as its resource says.
        assert!(
            spans
                .iter()
                .filter(|s| s.trace_id == trace)
                .all(|s| s.service == "modelbus-up"),
            "{:#?}",
            spans.iter().find(|s| s.service != "modelbus-up")
        );
        // One tree: every span but the upload's has its parent in it.
        let roots = roots(&spans, &trace);
        assert_eq!(roots.len(), 1, "one root span: {roots:#?}");
        assert_eq!(roots[0].name, "submit", "the upload starts the trace");
        assert!(roots[0].parent_span_id.is_empty(), "{:#?}", roots[0]);
        traces.push(trace);
    }
    assert_ne!(traces[0], traces[1], "each batch has its own trace");
    up.terminate();
}
