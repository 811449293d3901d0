//! The scheduler's HTTP API: `POST /v1/jobs` (submit), `GET /v1/jobs/{id}` (state and
//! result), `POST /v1/jobs/{id}/cancel`, `GET /v1/workers` (live workers from heartbeats),
//! `GET /v1/queues` (ready messages per queue), `GET /healthz` (the process is up),
//! `GET /readyz` (consuming its queues, and the broker is reachable) and `GET /metrics`
//! (Prometheus text exposition).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bus::{Bus, Message, topology};
use protocol::{Heartbeat, Job, JobId, JobResult, ValidationContext};
use serde::Serialize;
use serde_json::json;

use crate::metrics::SchedulerMetrics;
use crate::state::JobTable;

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// The broker submissions and cancellations go to.
    pub bus: Arc<dyn Bus>,
    /// This replica's job table.
    pub table: JobTable,
    /// Validation applied to submissions before they are queued.
    pub validation: ValidationContext,
    /// Profiles the scheduler accepts without a live worker (their work queues are reported).
    pub profiles: Vec<String>,
    /// Set once the scheduler consumes all its feeds.
    pub ready: Arc<std::sync::atomic::AtomicBool>,
    /// This replica's metrics.
    pub metrics: Arc<SchedulerMetrics>,
}

/// The API's routes.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/v1/jobs", post(submit))
        .route("/v1/jobs/{id}", get(job))
        .route("/v1/jobs/{id}/cancel", post(cancel))
        .route("/v1/workers", get(workers))
        .route("/v1/queues", get(queues))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .with_state(state)
}

fn error(status: StatusCode, code: &str, message: impl std::fmt::Display) -> Response {
    (status, axum::Json(json!({ "error": { "code": code, "message": message.to_string() } }))).into_response()
}

async fn submit(State(s): State<ApiState>, body: Bytes) -> Response {
    let job = match Job::from_json(&body, &s.validation) {
        Ok(job) => job,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.code().as_str(), e),
    };
    let msg = Message::new(job.job_id().to_string(), body.to_vec()).with_priority(job.priority());
    match s.bus.publish(topology::JOBS_EXCHANGE, topology::SUBMIT_KEY, msg).await {
        Ok(()) => (StatusCode::ACCEPTED, axum::Json(json!({ "job_id": job.job_id() }))).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, "broker_unavailable", e),
    }
}

/// A job's state as the API reports it.
#[derive(Serialize)]
struct JobView {
    job_id: JobId,
    tenant: String,
    kind: Option<protocol::JobKind>,
    state: protocol::JobState,
    detail: Option<String>,
    cancel_requested: bool,
    updated_at: chrono::DateTime<chrono::Utc>,
    result: Option<JobResult>,
}

async fn job(State(s): State<ApiState>, Path(id): Path<String>) -> Response {
    match s.table.get(&JobId(id.clone())).await {
        Some(r) => axum::Json(JobView {
            job_id: r.job_id,
            tenant: r.tenant.to_string(),
            kind: r.kind,
            state: r.state,
            detail: r.detail,
            cancel_requested: r.cancel_requested,
            updated_at: r.updated_at,
            result: r.result,
        })
        .into_response(),
        None => error(StatusCode::NOT_FOUND, "not_found", format!("no job {id:?} known to this scheduler")),
    }
}

async fn cancel(State(s): State<ApiState>, Path(id): Path<String>) -> Response {
    let job_id = JobId(id);
    if let Err(e) = job_id.check("job_id") {
        return error(StatusCode::BAD_REQUEST, "invalid_job", e);
    }
    match crate::request_cancel(s.bus.as_ref(), &job_id).await {
        Ok(()) => {
            (StatusCode::ACCEPTED, axum::Json(json!({ "job_id": job_id, "cancel_requested": true }))).into_response()
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, "broker_unavailable", e),
    }
}

async fn workers(State(s): State<ApiState>) -> axum::Json<Vec<Heartbeat>> {
    axum::Json(s.table.workers().await)
}

/// Ready messages in the fleet's queues: submit, held, dead-letter, and the work queue of every
/// kind and profile configured or announced by a live worker.
async fn queues(State(s): State<ApiState>) -> Response {
    let mut names: Vec<String> =
        [topology::SUBMIT_QUEUE, topology::HELD_QUEUE, topology::DEAD_LETTER_QUEUE].map(String::from).to_vec();
    let mut profiles = s.profiles.clone();
    for w in s.table.workers().await {
        profiles.extend(w.profiles);
    }
    profiles.sort();
    profiles.dedup();
    for p in &profiles {
        for kind in [protocol::JobKind::Edit, protocol::JobKind::Create] {
            names.push(topology::task_queue(kind, p));
        }
    }
    let mut depths = serde_json::Map::new();
    for name in names {
        // A work queue nobody declared yet has no messages.
        let depth = s.bus.depth(&name).await.unwrap_or(0);
        depths.insert(name, json!(depth));
    }
    axum::Json(serde_json::Value::Object(depths)).into_response()
}

async fn ready(State(s): State<ApiState>) -> Response {
    if !s.ready.load(std::sync::atomic::Ordering::Relaxed) {
        error(StatusCode::SERVICE_UNAVAILABLE, "starting", "the scheduler is not consuming its queues yet")
    } else if s.bus.is_connected().await {
        "ready".into_response()
    } else {
        error(StatusCode::SERVICE_UNAVAILABLE, "broker_unavailable", "not connected to the broker")
    }
}

async fn metrics(State(s): State<ApiState>) -> Response {
    match s.metrics.render() {
        Ok(text) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], text).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e),
    }
}
