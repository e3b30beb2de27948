//! Logs, traces and metrics for every service.
//!
//! Spans always carry OpenTelemetry trace ids, whether or not an OTLP endpoint is
//! configured, so the W3C `traceparent` put on every event is real and one trace
//! follows a batch across services. Metrics go to one process-wide Prometheus
//! recorder rendered at `/metrics`.

use std::collections::HashMap;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{LogFormat, TelemetryConfig};

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The log filter does not parse.
    #[error("invalid telemetry.log_level {0:?}: {1}")]
    Filter(String, String),
    /// The OTLP exporter could not be built.
    #[error("cannot build the OTLP exporter for {0}: {1}")]
    Otlp(String, String),
}

/// Keeps the tracer provider alive; flushes spans when dropped.
pub struct TelemetryGuard {
    provider: SdkTracerProvider,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        let _ = self.provider.shutdown();
    }
}

/// Installs the global tracing subscriber (logs + OpenTelemetry layer) and the
/// Prometheus recorder. Call once, from `main`.
pub fn init(cfg: &TelemetryConfig, service: &str) -> Result<TelemetryGuard, TelemetryError> {
    let filter = EnvFilter::try_new(&cfg.log_level)
        .map_err(|e| TelemetryError::Filter(cfg.log_level.clone(), e.to_string()))?;
    let mut builder = SdkTracerProvider::builder();
    if let Some(endpoint) = &cfg.otlp_endpoint {
        use opentelemetry_otlp::WithExportConfig;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.clone())
            .build()
            .map_err(|e| TelemetryError::Otlp(endpoint.clone(), e.to_string()))?;
        builder = builder.with_batch_exporter(exporter);
    }
    let provider = builder
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(format!("modelbus-{service}"))
                .build(),
        )
        .build();
    let tracer = provider.tracer("modelbus");
    let otel = tracing_opentelemetry::layer().with_tracer(tracer);
    let fmt = match cfg.log_format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed(),
    };
    // A second init (tests) keeps the first subscriber.
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(otel)
        .with(fmt)
        .try_init();
    prometheus();
    Ok(TelemetryGuard { provider })
}

/// The process-wide Prometheus handle, installing the recorder on first use.
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        // Real histograms (with buckets), so Prometheus can aggregate quantiles
        // across replicas; from 0.5 ms (a prediction) to 5 min (a training).
        let buckets = [
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            30.0, 60.0, 300.0,
        ];
        let builder = PrometheusBuilder::new();
        let builder = builder
            .set_buckets(&buckets)
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (a host application); ours
        // still renders what is recorded through it.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// W3C `traceparent` of the current span, if it belongs to a trace.
pub fn current_traceparent() -> Option<String> {
    let cx = tracing::Span::current().context();
    let mut carrier: HashMap<String, String> = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove("traceparent")
}

/// Makes `span` a child of the remote span named by `traceparent`, when valid.
pub fn set_remote_parent(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(tp) = traceparent else { return };
    let mut carrier: HashMap<String, String> = HashMap::new();
    carrier.insert("traceparent".into(), tp.to_string());
    let cx = TraceContextPropagator::new().extract(&carrier);
    let _ = span.set_parent(cx);
}

/// The span of one incoming gRPC call to `path`: a child of the caller's span
/// when the call carries its `traceparent` (the registry client of every
/// stage sends it), so a registration made while handling a batch is in the
/// batch's trace.
pub fn grpc_server_span(path: &str, traceparent: Option<&str>) -> tracing::Span {
    let span = tracing::info_span!("grpc_call", rpc = %path);
    set_remote_parent(&span, traceparent);
    span
}

/// Describes the metrics every service records, so `/metrics` documents them.
pub fn describe_metrics() {
    metrics::describe_counter!(
        "modelbus_events_handled_total",
        "Events handled by a service's consumer, by consumer, event type and outcome"
    );
    metrics::describe_histogram!(
        "modelbus_event_handle_seconds",
        "Time to handle one event, by consumer and event type"
    );
    metrics::describe_counter!(
        "modelbus_events_dead_lettered_total",
        "Events sent to the dead-letter stream, by consumer"
    );
    metrics::describe_counter!(
        "modelbus_events_published_total",
        "Events published, by event type"
    );
    metrics::describe_counter!(
        "modelbus_events_redelivered_total",
        "Events delivered again to a consumer (a retry, or an ack that never came), by consumer"
    );
    metrics::describe_gauge!(
        "modelbus_consumer_pending",
        "Events waiting behind the last one a consumer received (its lag), by consumer"
    );
}
