//! Operations endpoints every service exposes (`/healthz`, `/readyz`, `/metrics`)
//! and the shared HTTP serving loop.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::HttpConfig;

/// Which components of a process are ready. `/readyz` answers 200 only when every
/// registered component is; a component registers as not ready and flips once it
/// can do its job (consumer created, model loaded, migrations applied).
#[derive(Clone, Default, Debug)]
pub struct Readiness(Arc<Mutex<BTreeMap<String, bool>>>);

impl Readiness {
    /// A fresh set with no components.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a component as not ready yet.
    pub fn register(&self, component: &str) {
        if let Ok(mut m) = self.0.lock() {
            m.entry(component.to_string()).or_insert(false);
        }
    }

    /// Marks a component ready (or not).
    pub fn set(&self, component: &str, ready: bool) {
        if let Ok(mut m) = self.0.lock() {
            m.insert(component.to_string(), ready);
        }
    }

    /// Whether every component is ready (and at least one is registered).
    pub fn is_ready(&self) -> bool {
        self.0
            .lock()
            .map(|m| !m.is_empty() && m.values().all(|r| *r))
            .unwrap_or(false)
    }

    /// Each component and its state.
    pub fn report(&self) -> BTreeMap<String, bool> {
        self.0.lock().map(|m| m.clone()).unwrap_or_default()
    }
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(r): State<Readiness>) -> impl IntoResponse {
    let status = if r.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        axum::Json(serde_json::json!({ "ready": r.is_ready(), "components": r.report() })),
    )
}

async fn metrics_text() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::telemetry::prometheus().render(),
    )
}

/// Router with `/healthz`, `/readyz` and `/metrics`, to merge into a service's router.
pub fn ops_router(readiness: Readiness) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(readiness)
}

/// Headers every HTTP response carries: no MIME sniffing, and pages that may
/// load nothing from anywhere (the reports are self-contained: inline style,
/// no script), cannot be framed and cannot submit forms.
async fn security_headers(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let mut resp = next.run(req).await;
    let headers = resp.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    let is_html = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    if is_html {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
    }
    resp
}

/// The Content-Security-Policy of every HTML page the services render.
pub const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; \
                       base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// How long in-flight requests may finish after `shutdown` before their
/// connections are dropped.
const DRAIN: Duration = Duration::from_secs(10);

/// Serves `router` on an already-bound listener until `shutdown`, then drains.
///
/// Every connection is bounded by `limits`: headers must arrive within
/// `header_read_timeout` (which also closes idle keep-alive connections), a
/// request body may not pause longer than `body_idle_timeout`, and at most
/// `max_connections` are served at once (the rest wait to be accepted). Every
/// response carries `X-Content-Type-Options: nosniff`, and HTML ones a
/// Content-Security-Policy that lets them load nothing.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    limits: &HttpConfig,
) -> std::io::Result<()> {
    let router = router
        .layer(axum::middleware::from_fn(security_headers))
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            limits.body_idle_timeout,
        ));
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(DRAIN) => {
            tracing::warn!("connections still open {DRAIN:?} after shutdown were dropped");
        }
    }
    Ok(())
}

/// Runs a service whose work is one event consumer (every pipeline stage and
/// the deployer): on `listener`, its operations endpoints merged with `api`
/// when it has an HTTP API of its own (ingest's uploads); and the durable
/// consumer `name` on `subjects` until `ctx.shutdown`. The readiness
/// component `name` turns ready once the consumer exists.
pub async fn run_consumer_service<H, Fut>(
    ctx: &crate::Context,
    listener: TcpListener,
    api: Option<Router>,
    name: &'static str,
    subjects: &[&str],
    handler: H,
) -> Result<(), crate::bus::BusError>
where
    H: Fn(crate::bus::Delivery) -> Fut,
    Fut: std::future::Future<Output = Result<(), crate::bus::HandlerError>>,
{
    run_stream_consumer_service(
        ctx,
        listener,
        api,
        name,
        crate::bus::EVENTS_STREAM,
        subjects,
        handler,
    )
    .await
}

/// [`run_consumer_service`] on another stream than the events (the monitor
/// reads the prediction log).
pub async fn run_stream_consumer_service<H, Fut>(
    ctx: &crate::Context,
    listener: TcpListener,
    api: Option<Router>,
    name: &'static str,
    stream: &str,
    subjects: &[&str],
    handler: H,
) -> Result<(), crate::bus::BusError>
where
    H: Fn(crate::bus::Delivery) -> Fut,
    Fut: std::future::Future<Output = Result<(), crate::bus::HandlerError>>,
{
    ctx.readiness.register(name);
    let ops = ops_router(ctx.readiness.clone());
    let router = match api {
        Some(api) => api.merge(ops),
        None => ops,
    };
    // The endpoints stop with the consumer, or with the process.
    let stop_http = ctx.shutdown.child_token();
    let limits = ctx.config.http.clone();
    let stop = stop_http.clone();
    let http = tokio::spawn(async move { serve(listener, router, stop, &limits).await });
    let readiness = ctx.readiness.clone();
    let result = ctx
        .bus
        .consume_stream(
            stream,
            name,
            subjects,
            ctx.shutdown.clone(),
            move || readiness.set(name, true),
            handler,
        )
        .await;
    stop_http.cancel();
    match http.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(service = name, error = %e, "HTTP server failed"),
        Err(e) => tracing::error!(service = name, error = %e, "HTTP server task failed"),
    }
    result
}
