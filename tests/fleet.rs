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
    // Exactly one set of outputs: 16 clips, a thumbnail, the manifest (and their metadata).
    let names = f.outputs_of("t1", "k1");
    let media: Vec<_> = names.iter().filter(|n| !n.ends_with(".meta.json")).collect();
    assert_eq!(media.len(), 18, "{names:?}");
    assert_eq!(r.outputs.len(), 17);
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
    let queue = topology::declare_task_queue(&f.bus, protocol::JobKind::Edit, "default").await.unwrap();
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
