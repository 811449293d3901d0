//! The fleet against the real RabbitMQ: real scheduler and worker processes, killed, restarted,
//! flooded and fed garbage. Each test runs in a vhost of its own (see `support`).

mod support;

use std::time::Duration;

use bus::{Bus, Message, topology};
use protocol::{ErrorCode, EventBody, JobState, JobStatus};
use serde_json::json;
use support::{Fleet, wait_http};

const T: Duration = Duration::from_secs(90);

fn is_state(id: &str, state: JobState) -> impl Fn(&protocol::Event) -> bool + '_ {
    move |e| e.job_id.as_str() == id && matches!(e.event, EventBody::State { state: s, .. } if s == state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_worker_job_is_redelivered_and_completes_once() {
    let mut f = Fleet::new("sigkill").await;
    f.scheduler("s1", &[]);
    f.worker("w1", &[]);
    f.submit(&f.slow_edit("k1")).await;
    f.until(T, is_state("k1", JobState::Running)).await;
    f.kill("w1");
    f.worker("w2", &[]);
    let r = f.finished(&["k1"], T).await.remove("k1").unwrap();
    assert_eq!(r.status, JobStatus::Succeeded, "{:?}", r.error);
    assert_eq!(r.attempt, 2);
    assert_eq!(r.worker.as_deref(), Some("w2"));
    assert!(f.count("k1", JobState::Retrying) >= 1);
    // Exactly one set of outputs: 16 clips and a thumbnail in the committed execution's folder,
    // the manifest, and the markers of the two attempts that started (and their metadata).
    let names = f.outputs_of("t1", "k1");
    let stored: Vec<_> = names.iter().filter(|n| !n.ends_with(".meta.json")).collect();
    assert_eq!(stored.len(), 20, "{names:?}");
    assert_eq!(r.outputs.len(), 17);
    for name in ["result.json", "attempt-1.json", "attempt-2.json"] {
        assert!(names.iter().any(|n| n == name), "{name} in {names:?}");
    }
    check_committed(&f, &r, "k1");
}

/// The job's `result.json` is the result the fleet reported, every output it names exists with
/// its size and hash, and no other media is stored for the job.
fn check_committed(f: &Fleet, r: &protocol::JobResult, id: &str) {
    let manifest = std::fs::read(f.store().join("t1").join(id).join("result.json")).unwrap();
    let stored: protocol::JobResult = serde_json::from_slice(&manifest).unwrap();
    assert_eq!(&stored, r, "result.json and the reported result differ");
    for o in &r.outputs {
        let bytes = std::fs::read(o.uri.strip_prefix("file://").unwrap()).unwrap();
        assert_eq!(worker::storage::sha256_hex(&bytes), o.sha256, "{}", o.uri);
        assert_eq!(bytes.len() as u64, o.bytes);
    }
    let media: Vec<String> =
        f.outputs_of("t1", id).into_iter().filter(|n| n.contains('/') && !n.ends_with(".meta.json")).collect();
    assert_eq!(media.len(), r.outputs.len(), "outputs of other attempts are left: {media:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_worker_connection_does_not_run_a_job_twice() {
    let mut f = Fleet::new("dropconn").await;
    f.scheduler("s1", &[]);
    f.worker("w1", &[]);
    f.worker("w2", &[]);
    f.submit(&f.slow_edit("d1")).await;
    let running = f.until(T, is_state("d1", JobState::Running)).await;
    let first = running.source.clone();
    // An operator (or the network) drops the running worker's connection: the broker hands the
    // task to someone else while the first worker is still busy with it.
    assert_eq!(f.close_connections_of(&first), 1, "the connection of {first}");
    let r = f.finished(&["d1"], T).await.remove("d1").unwrap();
    assert_eq!(r.status, JobStatus::Succeeded, "{:?}", r.error);
    assert_eq!(r.attempt, 2, "the interrupted attempt counts once");
    // Long enough for a stale attempt to have finished and published too.
    f.drain(Duration::from_secs(8)).await;
    assert_eq!(f.finished_count("d1"), 1, "finished twice");
    check_committed(&f, &r, "d1");
    assert!(f.log(&first).contains("delivery lost"), "{}", f.log(&first));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_a_killed_worker_never_started_keep_their_attempt() {
    let mut f = Fleet::new("prefetched").await;
    f.scheduler("s1", &[]);
    f.worker("w1", &["--capacity", "1"]);
    f.submit(&f.slow_edit("busy")).await;
    f.until(T, is_state("busy", JobState::Running)).await;
    // A create job is delivered to w1 from its other work queue and waits behind the edit.
    let create = json!({
        "v": 1, "kind": "create", "job_id": "waiting", "tenant": "t1", "mode": "generate",
        "frames": 4, "fps": 4, "size": { "width": 32, "height": 32 }
    });
    f.submit(&create).await;
    f.reached("waiting", JobState::Dispatched, T).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    f.kill("w1");
    f.worker("w2", &[]);
    let r = f.finished(&["busy", "waiting"], T).await;
    assert_eq!(r["busy"].attempt, 2, "the edit had started: its attempt counts");
    assert_eq!(r["waiting"].attempt, 1, "a task that never started spent an attempt");
    assert!(f.log("w2").contains("redelivered before it started"), "{}", f.log("w2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_job_is_dead_lettered_after_max_attempts() {
    let mut f = Fleet::new("poison").await;
    f.scheduler("s1", &[]);
    for i in 1..=3 {
        let w = format!("w{i}");
        f.worker(&w, &["--max-attempts", "3"]);
        if i == 1 {
            f.submit(&f.slow_edit("p1")).await;
        }
        // A job that kills whichever worker runs it.
        let ev = f.until(T, is_state("p1", JobState::Running)).await;
        assert_eq!(ev.source, w);
        f.kill(&w);
    }
    f.worker("w4", &["--max-attempts", "3"]);
    let r = f.finished(&["p1"], T).await.remove("p1").unwrap();
    assert_eq!(r.status, JobStatus::Failed);
    let err = r.error.unwrap();
    assert_eq!(err.code, ErrorCode::RetriesExhausted);
    assert!(err.message.contains("3 attempts"), "{}", err.message);
    assert_eq!(f.bus.depth(topology::DEAD_LETTER_QUEUE).await.unwrap(), 1);
    let d = f.bus.get(topology::DEAD_LETTER_QUEUE).await.unwrap().unwrap();
    assert_eq!(d.message.id, "p1");
    let reason = d.message.headers.get(topology::REASON_HEADER).cloned().unwrap_or_default();
    assert!(reason.contains("interrupted"), "{reason}");
    assert_eq!(d.message.headers.get("x-reelforge-attempts").map(String::as_str), Some("3"));
    d.ack().await.unwrap();
    // The manifest commits the failure: a redelivery cannot run it again.
    assert!(f.store().join("t1/p1/result.json").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priorities_are_respected() {
    let mut f = Fleet::new("prio").await;
    f.scheduler("s1", &[]);
    let mut ids = Vec::new();
    for i in 0..3 {
        for (name, p) in [("lo", 1), ("hi", 8)] {
            let id = format!("{name}-{i}");
            let mut job = f.edit(&id);
            job["priority"] = json!(p);
            f.submit(&job).await;
            ids.push(id);
        }
    }
    for id in &ids {
        f.reached(id, JobState::Dispatched, T).await;
    }
    f.worker("w1", &["--capacity", "1"]);
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    f.finished(&refs, T).await;
    let order: Vec<String> = f
        .seen
        .iter()
        .filter(|e| matches!(e.event, EventBody::State { state: JobState::Running, .. }))
        .map(|e| e.job_id.to_string())
        .collect();
    assert!(order[..3].iter().all(|id| id.starts_with("hi")), "{order:?}");
    assert!(order[3..].iter().all(|id| id.starts_with("lo")), "{order:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_before_and_during_a_job() {
    let mut f = Fleet::new("cancel").await;
    let api = f.scheduler("s1", &[]);
    wait_http(&format!("{api}/readyz")).await;
    let client = reqwest::Client::new();
    // Before submission: the scheduler remembers it and never dispatches the job.
    let r = client.post(format!("{api}/v1/jobs/early/cancel")).send().await.unwrap();
    assert_eq!(r.status(), 202);
    tokio::time::sleep(Duration::from_millis(300)).await;
    f.submit(&f.edit("early")).await;
    f.worker("w1", &["--capacity", "1"]);
    f.submit(&f.slow_edit("running")).await;
    f.until(T, is_state("running", JobState::Running)).await;
    // Queued behind the running job on a capacity-1 worker.
    f.submit(&f.edit("queued")).await;
    f.reached("queued", JobState::Dispatched, T).await;
    for id in ["queued", "running"] {
        let r = client.post(format!("{api}/v1/jobs/{id}/cancel")).send().await.unwrap();
        assert_eq!(r.status(), 202);
    }
    let r = f.finished(&["early", "running", "queued"], T).await;
    for id in ["early", "running", "queued"] {
        assert_eq!(r[id].status, JobStatus::Cancelled, "{id}: {:?}", r[id].error);
        assert_eq!(r[id].error.as_ref().unwrap().code, ErrorCode::Cancelled);
    }
    assert_eq!(f.count("early", JobState::Dispatched), 0);
    assert_eq!(f.count("queued", JobState::Running), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passed_deadlines_end_expired() {
    let mut f = Fleet::new("deadline").await;
    f.scheduler("s1", &[]);
    let mut past = f.edit("past");
    past["deadline"] = json!("2001-01-01T00:00:00Z");
    f.submit(&past).await;
    let mut soon = f.edit("soon");
    soon["deadline"] = json!((chrono::Utc::now() + chrono::Duration::seconds(2)).to_rfc3339());
    f.submit(&soon).await;
    f.reached("soon", JobState::Dispatched, T).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    f.worker("w1", &[]);
    let r = f.finished(&["past", "soon"], T).await;
    for id in ["past", "soon"] {
        assert_eq!(r[id].status, JobStatus::Expired, "{id}");
        assert_eq!(r[id].error.as_ref().unwrap().code, ErrorCode::DeadlineExceeded);
    }
    assert_eq!(f.count("past", JobState::Dispatched), 0);
    assert_eq!(f.count("soon", JobState::Running), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_messages_fail_and_the_fleet_stays_up() {
    let mut f = Fleet::new("garbage").await;
    f.scheduler("s1", &[]);
    f.worker("w1", &[]);
    f.submit_raw("junk", b"\xff\xfe not json".to_vec(), 0).await;
    let mut big = f.edit("big");
    big["guidance"]["instruction"] = json!("x".repeat(protocol::limits::MAX_JOB_BYTES));
    f.submit(&big).await;
    let mut unknown = f.edit("unknown-field");
    unknown["surprise"] = json!(1);
    f.submit(&unknown).await;
    // Straight onto a work queue, bypassing the scheduler.
    let queue = topology::Layout::default()
        .declare_task_queues(&f.bus, protocol::JobKind::Edit, "default")
        .await
        .unwrap()
        .remove(0);
    f.bus.publish("", &queue, Message::new("raw-task", b"{\"v\":1,\"job\":42}".to_vec())).await.unwrap();
    f.submit(&f.edit("fine")).await;
    let r = f.finished(&["junk", "big", "unknown-field", "raw-task", "fine"], T).await;
    assert_eq!(r["junk"].error.as_ref().unwrap().code, ErrorCode::InvalidJob);
    assert_eq!(r["big"].error.as_ref().unwrap().code, ErrorCode::JobTooLarge);
    let e = r["unknown-field"].error.as_ref().unwrap();
    assert_eq!(e.code, ErrorCode::InvalidJob);
    assert!(e.message.contains("surprise"), "{}", e.message);
    assert_eq!(r["raw-task"].error.as_ref().unwrap().code, ErrorCode::InvalidJob);
    assert_eq!(r["fine"].status, JobStatus::Succeeded);
    assert_eq!(f.bus.depth(&queue).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_submissions_run_once() {
    let mut f = Fleet::new("dup").await;
    f.scheduler("s1", &[]);
    f.worker("w1", &[]);
    for _ in 0..3 {
        f.submit(&f.edit("d1")).await;
    }
    f.finished(&["d1"], T).await;
    f.submit(&f.edit("d1")).await;
    f.submit(&f.edit("after")).await;
    f.finished(&["after"], T).await;
    assert_eq!(f.count("d1", JobState::Dispatched), 1);
    assert_eq!(f.count("d1", JobState::Running), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_jobs_running_together_share_model_batches() {
    let mut f = Fleet::new("batch").await;
    let models = f.dir.path().join("models");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_reelforge"))
        .args(["models", "init-tiny", "--out"])
        .arg(&models)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mcvd = models.join("mcvd");
    let url = f.worker("w1", &["--capacity", "3", "--mcvd", mcvd.to_str().unwrap(), "--batch-window-ms", "200"]);
    wait_http(&format!("{url}/readyz")).await;
    f.scheduler("s1", &[]);
    let ids = ["b0", "b1", "b2"];
    for (i, id) in ids.iter().enumerate() {
        let job = json!({
            "v": 1, "kind": "create", "job_id": id, "tenant": "t1", "mode": "generate", "seed": i,
            "frames": 8, "fps": 8, "size": { "width": 64, "height": 64 },
            "sampler": { "kind": "ddim", "steps": 6 }
        });
        f.submit(&job).await;
    }
    let r = f.finished(&ids, T).await;
    for id in ids {
        assert_eq!(r[id].status, JobStatus::Succeeded, "{id}: {:?}", r[id].error);
    }
    let text = reqwest::get(format!("{url}/metrics")).await.unwrap().text().await.unwrap();
    let value = |name: &str| -> f64 {
        let line = text.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name} in\n{text}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    // Every model call of the three jobs is counted once; some forwards carried several jobs.
    let (calls, forwards) = (value("reelforge_batch_size_sum"), value("reelforge_batch_size_count"));
    assert!(forwards > 0.0 && calls > forwards, "tasks per forward: {calls} calls in {forwards} forwards");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_scheduler_replicas_dispatch_each_job_once() {
    let mut f = Fleet::new("replicas").await;
    f.scheduler("s1", &[]);
    f.scheduler("s2", &[]);
    f.worker("w1", &["--capacity", "2"]);
    let ids: Vec<String> = (0..20).map(|i| format!("r{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        f.submit(&f.edit(id)).await;
        if i % 4 == 0 {
            f.submit(&f.edit(id)).await;
        }
        if i == 10 {
            // Once the first half is admitted, the active replica dies; the standby takes
            // over admission. (A replica killed between publishing a task and its `dispatched`
            // event leaves its successor without the record, so a second copy of the task can
            // exist; the workers' per-job lock runs only one: see the README.)
            for done in &ids[..=10] {
                f.reached(done, JobState::Dispatched, T).await;
            }
            let active = f
                .seen
                .iter()
                .find(|e| matches!(e.event, EventBody::State { state: JobState::Dispatched, .. }))
                .unwrap()
                .source
                .clone();
            f.kill(&active);
        }
    }
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let r = f.finished(&refs, Duration::from_secs(180)).await;
    for id in &ids {
        assert_eq!(r[id].status, JobStatus::Succeeded, "{id}");
        assert_eq!(f.count(id, JobState::Running), 1, "{id} ran more than once");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tenant_limit_holds_across_two_scheduler_replicas() {
    let mut f = Fleet::new("limit2").await;
    // Both replicas consume the held queue before anything is held.
    let a1 = f.scheduler("s1", &["--tenant-max-in-flight", "1"]);
    let a2 = f.scheduler("s2", &["--tenant-max-in-flight", "1"]);
    let w = f.worker("w1", &["--capacity", "3"]);
    for url in [a1, a2, w] {
        wait_http(&format!("{url}/readyz")).await;
    }
    let ids: Vec<String> = (0..8).map(|i| format!("l{i}")).collect();
    for id in &ids {
        f.submit(&f.edit(id)).await;
    }
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let r = f.finished(&refs, T).await;
    for id in &ids {
        assert_eq!(r[id].status, JobStatus::Succeeded, "{id}");
    }
    // Replayed in order: never more than one of the tenant's jobs running at once.
    let mut running = std::collections::HashSet::new();
    let mut most = 0;
    for e in &f.seen {
        match &e.event {
            EventBody::State { state: JobState::Running, .. } => {
                running.insert(e.job_id.clone());
                most = most.max(running.len());
            }
            EventBody::Finished { .. } => {
                running.remove(&e.job_id);
            }
            _ => {}
        }
    }
    assert_eq!(most, 1, "the tenant ran {most} jobs at once with a limit of 1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_job_is_counted_and_cancelled_at_once() {
    let mut f = Fleet::new("heldcancel").await;
    let api = f.scheduler("s1", &["--tenant-max-in-flight", "1"]);
    wait_http(&format!("{api}/readyz")).await;
    f.worker("w1", &[]);
    f.submit(&f.slow_edit("long")).await;
    f.until(T, is_state("long", JobState::Running)).await;
    f.submit(&f.edit("waits")).await;
    f.reached("waits", JobState::Queued, T).await;
    // The scheduler holds it unacknowledged, yet the held queue reports it.
    let mut held = 0;
    for _ in 0..50 {
        let q: serde_json::Value = reqwest::get(format!("{api}/v1/queues")).await.unwrap().json().await.unwrap();
        held = q[topology::HELD_QUEUE].as_u64().unwrap();
        if held == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(held, 1, "held jobs in /v1/queues");
    let r = reqwest::Client::new().post(format!("{api}/v1/jobs/waits/cancel")).send().await.unwrap();
    assert_eq!(r.status(), 202);
    let r = f.finished(&["waits"], T).await;
    assert_eq!(r["waits"].status, JobStatus::Cancelled);
    assert_eq!(f.finished_count("long"), 0, "the held job waited for its tenant's running job");
    f.finished(&["long"], T).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tenants_burst_does_not_starve_another() {
    let mut f = Fleet::new("fair").await;
    f.scheduler("s1", &["--tenant-max-in-flight", "2"]);
    let mut ids = Vec::new();
    for i in 0..8 {
        let id = format!("big-{i}");
        let mut job = f.edit(&id);
        job["tenant"] = json!("big");
        f.submit(&job).await;
        ids.push(id);
    }
    for i in 0..2 {
        let id = format!("small-{i}");
        let mut job = f.edit(&id);
        job["tenant"] = json!("small");
        f.submit(&job).await;
        ids.push(id);
    }
    for id in ["small-0", "small-1"] {
        f.reached(id, JobState::Dispatched, T).await;
    }
    while f.count_prefix("big", JobState::Dispatched) < 2 {
        f.until(T, |e| e.job_id.as_str().starts_with("big")).await;
    }
    // Give any improper third dispatch time to show.
    f.drain(Duration::from_millis(800)).await;
    assert_eq!(f.count_prefix("big", JobState::Dispatched), 2, "only two of big's jobs may be in flight");
    f.worker("w1", &["--capacity", "1"]);
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let r = f.finished(&refs, Duration::from_secs(180)).await;
    assert!(r.values().all(|x| x.status == JobStatus::Succeeded));
    let order: Vec<String> = f
        .seen
        .iter()
        .filter(|e| matches!(e.event, EventBody::State { state: JobState::Running, .. }))
        .map(|e| e.job_id.to_string())
        .collect();
    let small_at: Vec<usize> =
        order.iter().enumerate().filter(|(_, id)| id.starts_with("small")).map(|(i, _)| i).collect();
    assert!(small_at.iter().all(|&i| i < 4), "small ran behind big's burst: {order:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_api_submits_reports_and_lists_workers() {
    let mut f = Fleet::new("api").await;
    let api = f.scheduler("s1", &[]);
    f.worker("w1", &["--profiles", "default,sd-turbo"]);
    wait_http(&format!("{api}/healthz")).await;
    wait_http(&format!("{api}/readyz")).await;
    let client = reqwest::Client::new();
    let r = client.post(format!("{api}/v1/jobs")).body(f.edit("via-http").to_string()).send().await.unwrap();
    assert_eq!(r.status(), 202);
    let r = client.post(format!("{api}/v1/jobs")).body("{\"v\":1,\"kind\":\"edit\"}").send().await.unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_job");
    f.finished(&["via-http"], T).await;
    let mut view = serde_json::Value::Null;
    for _ in 0..50 {
        view = client.get(format!("{api}/v1/jobs/via-http")).send().await.unwrap().json().await.unwrap();
        if view["state"] == "succeeded" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(view["state"], "succeeded", "{view}");
    assert_eq!(view["result"]["outputs"].as_array().unwrap().len(), 2);
    assert_eq!(client.get(format!("{api}/v1/jobs/nope")).send().await.unwrap().status(), 404);
    let queues: serde_json::Value = client.get(format!("{api}/v1/queues")).send().await.unwrap().json().await.unwrap();
    assert_eq!(queues["reelforge.submit"], 0, "{queues}");
    assert_eq!(queues["reelforge.tasks.edit.default"], 0, "{queues}");
    let mut workers = serde_json::Value::Null;
    for _ in 0..50 {
        workers = client.get(format!("{api}/v1/workers")).send().await.unwrap().json().await.unwrap();
        if workers.as_array().is_some_and(|a| !a.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(workers[0]["worker_id"], "w1", "{workers}");
    assert_eq!(workers[0]["profiles"], json!(["default", "sd-turbo"]));
    // A profile a live worker announces is accepted; one nobody serves is refused.
    let mut job = f.edit("turbo");
    job["profile"] = json!("sd-turbo");
    f.submit(&job).await;
    let mut job = f.edit("nobody");
    job["profile"] = json!("nobody-serves-this");
    f.submit(&job).await;
    let r = f.finished(&["turbo", "nobody"], T).await;
    assert_eq!(r["turbo"].status, JobStatus::Succeeded);
    assert_eq!(r["nobody"].error.as_ref().unwrap().code, ErrorCode::UnknownProfile);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_authenticates_tenants_and_limits_their_rate() {
    let mut f = Fleet::new("auth").await;
    let token = |name: &str, scope: serde_json::Value| {
        let (token, sha256) = scheduler::auth::new_token().unwrap();
        let mut entry = json!({ "name": name, "sha256": sha256 });
        entry.as_object_mut().unwrap().extend(scope.as_object().unwrap().clone());
        (token, entry)
    };
    let (t1, e1) = token("t1-app", json!({ "scope": "tenant", "tenant": "t1" }));
    let (t2, e2) = token("t2-app", json!({ "scope": "tenant", "tenant": "t2" }));
    let (svc, es) = token("instructor", json!({ "scope": "service", "tenants": ["t1", "t2"] }));
    let (ops, eo) = token("ops", json!({ "scope": "admin" }));
    let file = f.dir.path().join("tokens.json");
    std::fs::write(&file, json!({ "tokens": [e1, e2, es, eo] }).to_string()).unwrap();
    let api = f.scheduler(
        "s1",
        &["--api-tokens", file.to_str().unwrap(), "--tenant-submit-rate", "0.5", "--tenant-submit-burst", "2"],
    );
    f.worker("w1", &[]);
    wait_http(&format!("{api}/readyz")).await;
    let http = reqwest::Client::new();
    let submit = |token: Option<&str>, job: serde_json::Value| {
        let mut req = http.post(format!("{api}/v1/jobs")).body(job.to_string());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    let mut t2_job = f.edit("theirs");
    t2_job["tenant"] = json!("t2");
    // No token, an unknown one: 401 with a challenge; another tenant's job: 403.
    let r = submit(None, f.edit("a1")).await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    assert_eq!(submit(Some("rf_guess"), f.edit("a1")).await.unwrap().status(), 401);
    assert_eq!(submit(Some(&t2), f.edit("a1")).await.unwrap().status(), 403);
    assert_eq!(submit(Some(&t1), f.edit("a1")).await.unwrap().status(), 202);
    assert_eq!(submit(Some(&svc), t2_job.clone()).await.unwrap().status(), 202);
    f.finished(&["a1", "theirs"], T).await;
    // Reading and cancelling: one's own jobs only; another tenant's job does not exist for it.
    let get = |token: &str, path: &str| http.get(format!("{api}{path}")).bearer_auth(token).send();
    let mut seen = reqwest::StatusCode::NOT_FOUND;
    for _ in 0..50 {
        seen = get(&t1, "/v1/jobs/a1").await.unwrap().status();
        if seen == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen, 200);
    assert_eq!(get(&t2, "/v1/jobs/a1").await.unwrap().status(), 404);
    assert_eq!(get(&svc, "/v1/jobs/a1").await.unwrap().status(), 200);
    assert_eq!(get(&ops, "/v1/jobs/theirs").await.unwrap().status(), 200);
    let cancel = |token: &str, id: &str| http.post(format!("{api}/v1/jobs/{id}/cancel")).bearer_auth(token).send();
    assert_eq!(cancel(&t2, "a1").await.unwrap().status(), 404);
    assert_eq!(cancel(&t1, "not-yet-submitted").await.unwrap().status(), 404);
    assert_eq!(cancel(&ops, "not-yet-submitted").await.unwrap().status(), 202);
    // The fleet endpoints are for admins; probes and metrics need no token.
    assert_eq!(get(&t1, "/v1/workers").await.unwrap().status(), 403);
    assert_eq!(get(&svc, "/v1/queues").await.unwrap().status(), 403);
    assert_eq!(get(&ops, "/v1/workers").await.unwrap().status(), 200);
    assert_eq!(get(&ops, "/v1/queues").await.unwrap().status(), 200);
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(http.get(format!("{api}{path}")).send().await.unwrap().status(), 200, "{path}");
    }
    // Rate: t1 has spent one of its burst of 2; the next passes, the one after is a 429 with
    // Retry-After. Another tenant is not affected.
    assert_eq!(submit(Some(&t1), f.edit("a2")).await.unwrap().status(), 202);
    let r = submit(Some(&t1), f.edit("a3")).await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers()["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    let mut t2_again = f.edit("theirs-2");
    t2_again["tenant"] = json!("t2");
    assert_eq!(submit(Some(&t2), t2_again).await.unwrap().status(), 202);
    f.finished(&["a2", "theirs-2"], T).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_submissions_are_bound_to_their_tenants_user() {
    let mut f = Fleet::new("binding").await;
    // A RabbitMQ user for tenant t2, allowed in this vhost.
    let user = format!("t2-{}", std::process::id());
    let rabbit = |args: &[&str]| {
        let out = std::process::Command::new("rabbitmqctl").arg("-q").args(args).output().unwrap();
        assert!(out.status.success(), "rabbitmqctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    rabbit(&["add_user", &user, "pw"]);
    rabbit(&["set_permissions", "-p", &f.vhost, &user, ".*", ".*", ".*"]);
    f.scheduler("s1", &["--amqp-tenant-binding"]);
    f.worker("w1", &[]);
    let url = format!("amqp://{user}:pw@127.0.0.1:5672/{}", f.vhost);
    let as_user = bus::amqp::AmqpBus::connect(&url).await.unwrap();
    let publish = |job: serde_json::Value, user_id: Option<&str>| {
        let mut m = Message::new(job["job_id"].as_str().unwrap(), job.to_string().into_bytes());
        m.user_id = user_id.map(str::to_owned);
        as_user.publish(topology::JOBS_EXCHANGE, topology::SUBMIT_KEY, m)
    };
    let tenant = |id: &str, t: &str| {
        let mut j = f.edit(id);
        j["tenant"] = json!(t);
        j
    };
    // Its own tenant: admitted. Another tenant's, or without user_id: dead-lettered unrun, no
    // result (so it cannot occupy t1's job id). The scheduler's own user (guest) may submit for
    // any tenant.
    let forged = tenant("forged", "t1");
    publish(tenant("own", &user), Some(&user)).await.unwrap();
    publish(tenant("spoof", "t1"), Some(&user)).await.unwrap();
    publish(tenant("anon", "t1"), None).await.unwrap();
    let mut trusted = Message::new("trusted", f.edit("trusted").to_string().into_bytes());
    trusted.user_id = Some("guest".into());
    f.bus.publish(topology::JOBS_EXCHANGE, topology::SUBMIT_KEY, trusted).await.unwrap();
    let r = f.finished(&["own", "trusted"], T).await;
    assert_eq!(r["own"].status, JobStatus::Succeeded);
    assert_eq!(r["trusted"].status, JobStatus::Succeeded);
    let mut reasons = Vec::new();
    for _ in 0..50 {
        if let Some(d) = f.bus.get(topology::DEAD_LETTER_QUEUE).await.unwrap() {
            reasons.push((d.message.id.clone(), d.message.headers[topology::REASON_HEADER].clone()));
            d.ack().await.unwrap();
        }
        if reasons.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    reasons.sort();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(reasons[0].0 == "anon" && reasons[0].1.contains("no AMQP user_id"), "{reasons:?}");
    assert!(reasons[1].0 == "spoof" && reasons[1].1.contains("may not submit for tenant t1"), "{reasons:?}");
    assert!(!f.store().join("t1/spoof").exists() && !f.results().contains_key("spoof"));
    // A publisher cannot claim another user's id: the broker itself refuses it.
    assert!(publish(forged, Some("guest")).await.is_err());
    rabbit(&["delete_user", &user]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_exit_when_idle_exits() {
    let mut f = Fleet::new("drain").await;
    f.scheduler("s1", &[]);
    // Within the grace period the running job finishes.
    f.worker("w1", &["--grace-s", "60"]);
    f.submit(&f.slow_edit("graceful")).await;
    f.until(T, is_state("graceful", JobState::Running)).await;
    assert_eq!(f.terminate("w1"), Some(0));
    let r = f.finished(&["graceful"], T).await.remove("graceful").unwrap();
    assert_eq!(
        (r.status, r.attempt, r.worker.as_deref()),
        (JobStatus::Succeeded, 1, Some("w1")),
        "finished by w1 before it exited"
    );
    // With no grace the job is put back as it was and a later worker runs it.
    f.worker("w2", &["--grace-s", "0"]);
    f.submit(&f.slow_edit("interrupted")).await;
    f.until(T, is_state("interrupted", JobState::Running)).await;
    assert_eq!(f.terminate("w2"), Some(0));
    f.worker("w3", &["--exit-when-idle-s", "2"]);
    let r = f.finished(&["interrupted"], T).await;
    assert_eq!(r["interrupted"].status, JobStatus::Succeeded);
    assert_eq!(r["interrupted"].attempt, 1, "an interruption is not a failed attempt");
    assert_eq!(f.wait_exit("w3", Duration::from_secs(30)), Some(0), "idle worker did not exit");
}
