//! Operations endpoints every service exposes (`/healthz`, `/readyz`, `/metrics`)
//! and the shared HTTP serving loop.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

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

/// Serves `router` on an already-bound listener until `shutdown`, then drains.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// Runs a service whose only work is one event consumer: its operations
/// endpoints on `ops`, and the durable consumer `name` on `subjects` until
/// `ctx.shutdown`. The readiness component `name` turns ready once the consumer
/// exists.
pub async fn run_consumer_service<H, Fut>(
    ctx: &crate::Context,
    ops: TcpListener,
    name: &str,
    subjects: &[&str],
    handler: H,
) -> Result<(), crate::bus::BusError>
where
    H: Fn(crate::bus::Delivery) -> Fut,
    Fut: std::future::Future<Output = Result<(), crate::bus::HandlerError>>,
{
    ctx.readiness.register(name);
    // The operations endpoints stop with the consumer, or with the process.
    let stop_http = ctx.shutdown.child_token();
    let http = tokio::spawn(serve(
        ops,
        ops_router(ctx.readiness.clone()),
        stop_http.clone(),
    ));
    let readiness = ctx.readiness.clone();
    let result = ctx
        .bus
        .consume(
            name,
            subjects,
            ctx.shutdown.clone(),
            move || readiness.set(name, true),
            handler,
        )
        .await;
    stop_http.cancel();
    let _ = http.await;
    result
}
