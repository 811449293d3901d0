//! `http` owns a worker's small HTTP server: `GET /metrics` (Prometheus text exposition),
//! `GET /healthz` (the process is up) and `GET /readyz` (the broker is connected and the work
//! queue consumers are subscribed; 503 otherwise, so Kubernetes sends no traffic and a rollout
//! waits).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bus::Bus;

use crate::metrics::WorkerMetrics;

/// What the handlers share.
#[derive(Clone)]
pub struct HttpState {
    /// The broker the worker consumes from.
    pub bus: Arc<dyn Bus>,
    /// The worker's metrics.
    pub metrics: Arc<WorkerMetrics>,
    /// Set once every work queue consumer is subscribed; cleared when the worker stops consuming.
    pub consuming: Arc<AtomicBool>,
}

/// The worker's routes.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .with_state(state)
}

async fn metrics(State(s): State<HttpState>) -> Response {
    match s.metrics.render() {
        Ok(text) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], text).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn ready(State(s): State<HttpState>) -> Response {
    if !s.bus.is_connected().await {
        return (StatusCode::SERVICE_UNAVAILABLE, "not connected to the broker").into_response();
    }
    if !s.consuming.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "not consuming").into_response();
    }
    "ready".into_response()
}
