//! The scheduler's HTTP API: `POST /v1/jobs` (submit), `GET /v1/jobs/{id}` (state and
//! result), `POST /v1/jobs/{id}/cancel`, `GET /v1/workers` (live workers from heartbeats),
//! `GET /v1/queues` (ready messages per queue), `GET /healthz` (the process is up),
//! `GET /readyz` (consuming its queues, and the broker is reachable) and `GET /metrics`
//! (Prometheus text exposition).
//!
//! With a tokens file ([`crate::auth`]) every `/v1` call needs a bearer token: 401 without a
//! known one; a tenant's jobs are visible only to tokens that may act for it (another tenant's
//! job is a 404, not a 403, so ids do not leak); submitting for another tenant is a 403; the
//! fleet endpoints are admin-only. Submissions are rate limited per tenant (a token bucket per
//! replica): over the limit is a 429 with `Retry-After`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bus::{Bus, Message, topology};
use protocol::{Heartbeat, Job, JobId, JobResult, TenantId, ValidationContext};
use serde::Serialize;
use serde_json::json;

use crate::auth::{Denied, Principal, Tokens};
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
    /// The fleet's queue layout (which work queues there are).
    pub layout: topology::Layout,
    /// Set once the scheduler consumes all its feeds.
    pub ready: Arc<std::sync::atomic::AtomicBool>,
    /// This replica's metrics.
    pub metrics: Arc<SchedulerMetrics>,
    /// Jobs estimated over this much worker memory are refused (`job_too_large`).
    pub job_memory_bytes: u64,
    /// The bearer tokens accepted; `None`: the API is open (development only).
    pub tokens: Option<Arc<Tokens>>,
    /// Per-tenant submission rate limit.
    pub rate: Arc<RateLimit>,
    /// The AMQP user the API's submissions carry as `user_id` (the scheduler's own, which
    /// [`crate::TenantBinding`] trusts); `None` when submissions are not bound to users.
    pub publish_as: Option<String>,
}

/// A token bucket per tenant: `per_second` submissions a second on average, bursts of `burst`.
#[derive(Debug)]
pub struct RateLimit {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<TenantId, (f64, Instant)>>,
}

/// Most tenants a [`RateLimit`] keeps a bucket for; full buckets are dropped first.
const MAX_BUCKETS: usize = 100_000;

impl RateLimit {
    /// A limit of `per_second` on average with bursts of `burst` (0: unlimited).
    pub fn new(per_second: f64, burst: u32) -> Self {
        RateLimit { per_second, burst: f64::from(burst.max(1)), buckets: Mutex::default() }
    }

    /// No limit.
    pub fn unlimited() -> Self {
        Self::new(0.0, 1)
    }

    /// Takes one submission from `tenant`'s bucket; `Err(seconds)` until one is there.
    pub fn take(&self, tenant: &TenantId) -> Result<(), f64> {
        if self.per_second <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut buckets = self.buckets.lock().expect("rate limit lock");
        if buckets.len() >= MAX_BUCKETS {
            let (rate, burst) = (self.per_second, self.burst);
            buckets.retain(|_, (level, at)| *level + now.duration_since(*at).as_secs_f64() * rate < burst);
        }
        let (level, at) = buckets.entry(tenant.clone()).or_insert((self.burst, now));
        *level = (*level + now.duration_since(*at).as_secs_f64() * self.per_second).min(self.burst);
        *at = now;
        if *level >= 1.0 {
            *level -= 1.0;
            Ok(())
        } else {
            Err((1.0 - *level) / self.per_second)
        }
    }
}

/// The caller, or the response refusing it.
fn caller(s: &ApiState, headers: &HeaderMap) -> Result<Principal, Box<Response>> {
    let Some(tokens) = &s.tokens else { return Ok(Principal::open()) };
    let value = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    match tokens.authenticate(value) {
        Ok(p) => Ok(p.clone()),
        Err(denied) => {
            let why = match denied {
                Denied::Missing => "send `Authorization: Bearer <token>`",
                Denied::Unknown => "unknown token",
            };
            let mut r = error(StatusCode::UNAUTHORIZED, "unauthenticated", why);
            r.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
            Err(Box::new(r))
        }
    }
}

fn not_found(id: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        format!(
            "no job {id:?} known to this scheduler (finished jobs are forgotten after --job-retention-s; \
             their result stays in the store as {{tenant}}/{id}/result.json)"
        ),
    )
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

async fn submit(State(s): State<ApiState>, headers: HeaderMap, body: Bytes) -> Response {
    let who = match caller(&s, &headers) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let job =
        match Job::from_json(&body, &s.validation).and_then(|job| job.check_memory(s.job_memory_bytes).map(|_| job)) {
            Ok(job) => job,
            Err(e) => return error(StatusCode::BAD_REQUEST, e.code().as_str(), e),
        };
    if !who.may_act_for(job.tenant()) {
        let msg = format!("token {:?} may not submit for tenant {}", who.name, job.tenant());
        return error(StatusCode::FORBIDDEN, "forbidden", msg);
    }
    if let Err(wait_s) = s.rate.take(job.tenant()) {
        let mut r = error(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("tenant {} is over its submission rate; retry in {wait_s:.1} s", job.tenant()),
        );
        let secs = header::HeaderValue::from(wait_s.ceil().max(1.0) as u64);
        r.headers_mut().insert(header::RETRY_AFTER, secs);
        return r;
    }
    let mut msg = Message::new(job.job_id().to_string(), body.to_vec()).with_priority(job.priority());
    msg.user_id = s.publish_as.clone();
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

async fn job(State(s): State<ApiState>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let who = match caller(&s, &headers) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    match s.table.get(&JobId(id.clone())).await {
        Some(r) if who.may_act_for(&r.tenant) => axum::Json(JobView {
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
        _ => not_found(&id),
    }
}

/// Cancels a job. Only an admin may cancel a job this replica does not know (yet): a tenant
/// could otherwise cancel another tenant's job ids before they are submitted.
async fn cancel(State(s): State<ApiState>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let who = match caller(&s, &headers) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let job_id = JobId(id);
    if let Err(e) = job_id.check("job_id") {
        return error(StatusCode::BAD_REQUEST, "invalid_job", e);
    }
    if !who.is_admin() && !s.table.get(&job_id).await.is_some_and(|r| who.may_act_for(&r.tenant)) {
        return not_found(job_id.as_str());
    }
    match crate::request_cancel(s.bus.as_ref(), &job_id).await {
        Ok(()) => {
            (StatusCode::ACCEPTED, axum::Json(json!({ "job_id": job_id, "cancel_requested": true }))).into_response()
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, "broker_unavailable", e),
    }
}

/// The fleet endpoints' gate: admins only.
fn admin(s: &ApiState, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let who = caller(s, headers)?;
    if who.is_admin() {
        Ok(())
    } else {
        Err(Box::new(error(StatusCode::FORBIDDEN, "forbidden", format!("token {:?} is not an admin token", who.name))))
    }
}

async fn workers(State(s): State<ApiState>, headers: HeaderMap) -> Response {
    if let Err(r) = admin(&s, &headers) {
        return *r;
    }
    let live: Vec<Heartbeat> = s.table.workers().await;
    axum::Json(live).into_response()
}

/// Ready messages in the fleet's queues: submit, held, dead-letter, and the work queue of every
/// kind and profile configured or announced by a live worker.
async fn queues(State(s): State<ApiState>, headers: HeaderMap) -> Response {
    if let Err(r) = admin(&s, &headers) {
        return *r;
    }
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
            names.extend(s.layout.task_queues(kind, p));
        }
    }
    let mut depths = serde_json::Map::new();
    for name in names {
        // A work queue nobody declared yet has no messages.
        let mut depth = s.bus.depth(&name).await.unwrap_or(0);
        if name == topology::HELD_QUEUE {
            depth = crate::metrics::held_depth(depth, &s.table).await;
        }
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
