//! The embedded mode end to end: scheduler and worker over the in-process bus and a local store,
//! the same code paths as the fleet. (Fleet tests against RabbitMQ live beside this file.)

mod embedded_support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bus::memory::MemoryBus;
use bus::{Bus, Consumer, Message, topology};
use protocol::{ErrorCode, Event, EventBody, JobKind, JobResult, JobState, JobStatus, Task};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use worker::WorkerConfig;

struct Harness {
    bus: Arc<MemoryBus>,
    dir: tempfile::TempDir,
    events: Box<dyn Consumer>,
    stop: CancellationToken,
    seen: Vec<Event>,
    sample: PathBuf,
}

impl Harness {
    async fn start() -> Harness {
        Self::start_with(|_, _| {}).await
    }

    /// As [`start`](Self::start), with the worker's config changed by `configure` (given the
    /// test's directory first).
    async fn start_with(configure: impl FnOnce(&Path, &mut WorkerConfig)) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let sample = dir.path().join("sample.mp4");
        worker::samples::write_sample_video(&sample, 4.0, 25, 160, 90, 2).unwrap();
        let mut cfg = WorkerConfig {
            id: "w1".into(),
            capacity: 2,
            scratch_dir: dir.path().join("scratch"),
            allow_local_media: true,
            ..Default::default()
        };
        configure(dir.path(), &mut cfg);
        let embedded_support::Embedded { bus, events, stop } = embedded_support::start(dir.path(), cfg).await;
        Harness { bus, dir, events, stop, seen: Vec::new(), sample }
    }

    fn source(&self) -> String {
        format!("file://{}", self.sample.display())
    }

    fn edit(&self, id: &str) -> Value {
        json!({
            "v": 1, "kind": "edit", "job_id": id, "tenant": "t1", "source": self.source(),
            "guidance": { "instruction": "x" }, "options": { "clips": 1, "clip_seconds_min": 1.0, "clip_seconds_max": 1.0 }
        })
    }

    async fn submit(&self, id: &str, body: Vec<u8>) {
        self.bus.publish(topology::JOBS_EXCHANGE, topology::SUBMIT_KEY, Message::new(id, body)).await.unwrap();
    }

    /// Collects events until every id in `ids` has finished; returns their results.
    async fn finished(&mut self, ids: &[&str]) -> HashMap<String, JobResult> {
        let mut out = HashMap::new();
        while ids.iter().any(|id| !out.contains_key(*id)) {
            let d = tokio::time::timeout(Duration::from_secs(60), self.events.next())
                .await
                .expect("events within 60 s")
                .unwrap()
                .unwrap();
            let ev: Event = serde_json::from_slice(&d.message.body).unwrap();
            d.ack().await.unwrap();
            if let EventBody::Finished { result } = &ev.event {
                out.insert(result.job_id.to_string(), (**result).clone());
            }
            self.seen.push(ev);
        }
        out
    }

    fn count(&self, id: &str, state: JobState) -> usize {
        self.seen
            .iter()
            .filter(|e| e.job_id.as_str() == id && matches!(e.event, EventBody::State { state: s, .. } if s == state))
            .count()
    }

    fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn path_of(uri: &str) -> &Path {
    Path::new(uri.strip_prefix("file://").unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_succeed_and_result_json_commits_them() {
    let mut h = Harness::start().await;
    let create = json!({
        "v": 1, "kind": "create", "job_id": "c1", "tenant": "t1", "mode": "predict",
        "conditioning": { "source": h.source(), "start_s": 0.0, "end_s": 1.0 },
        "frames": 4, "fps": 4, "size": { "width": 32, "height": 32 }
    });
    h.submit("e1", h.edit("e1").to_string().into_bytes()).await;
    h.submit("c1", create.to_string().into_bytes()).await;
    let results = h.finished(&["e1", "c1"]).await;
    for (id, kind) in [("e1", JobKind::Edit), ("c1", JobKind::Create)] {
        let r = &results[id];
        assert_eq!(r.status, JobStatus::Succeeded, "{id}: {:?}", r.error);
        assert_eq!(r.kind, Some(kind));
        assert!(!r.outputs.is_empty());
        for o in &r.outputs {
            let bytes = std::fs::read(path_of(&o.uri)).unwrap();
            assert_eq!(bytes.len() as u64, o.bytes);
            assert_eq!(worker::storage::sha256_hex(&bytes), o.sha256);
            assert!(path_of(&o.uri).starts_with(h.store().join("t1").join(id)));
        }
        let committed: JobResult =
            serde_json::from_slice(&std::fs::read(h.store().join("t1").join(id).join("result.json")).unwrap()).unwrap();
        assert_eq!(&committed, r);
        assert_eq!(h.count(id, JobState::Dispatched), 1);
        assert_eq!(h.count(id, JobState::Running), 1);
    }
    assert!(h.seen.iter().any(|e| matches!(e.event, EventBody::Progress { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_documents_fail_with_codes_and_the_fleet_stays_up() {
    let mut h = Harness::start().await;
    h.submit("garbage", b"{not json".to_vec()).await;
    let mut v2 = h.edit("v2");
    v2["v"] = json!(2);
    h.submit("v2", v2.to_string().into_bytes()).await;
    let mut missing = h.edit("missing");
    missing.as_object_mut().unwrap().remove("source");
    h.submit("missing", missing.to_string().into_bytes()).await;
    let mut huge = h.edit("huge");
    huge["guidance"]["instruction"] = json!("x".repeat(protocol::limits::MAX_JOB_BYTES));
    h.submit("huge", huge.to_string().into_bytes()).await;
    // Valid, but far more than a worker holds: refused at admission with the numbers.
    let enormous = json!({
        "v": 1, "kind": "create", "job_id": "enormous", "tenant": "t1", "mode": "generate",
        "frames": 1024, "fps": 24, "size": { "width": 4096, "height": 4096 }
    });
    h.submit("enormous", enormous.to_string().into_bytes()).await;
    let mut bad_media = h.edit("badmedia");
    let noise = h.dir.path().join("noise.mp4");
    std::fs::write(&noise, vec![7u8; 4096]).unwrap();
    bad_media["source"] = json!(format!("file://{}", noise.display()));
    h.submit("badmedia", bad_media.to_string().into_bytes()).await;
    let mut gone = h.edit("gone");
    gone["source"] = json!("file:///nonexistent/x.mp4");
    h.submit("gone", gone.to_string().into_bytes()).await;
    let mut late = h.edit("late");
    late["deadline"] = json!("2001-01-01T00:00:00Z");
    h.submit("late", late.to_string().into_bytes()).await;
    h.submit("ok", h.edit("ok").to_string().into_bytes()).await;

    let r = h.finished(&["garbage", "v2", "missing", "huge", "enormous", "badmedia", "gone", "late", "ok"]).await;
    let code = |id: &str| r[id].error.as_ref().map(|e| e.code);
    assert_eq!(code("garbage"), Some(ErrorCode::InvalidJob));
    assert_eq!(code("v2"), Some(ErrorCode::UnsupportedVersion));
    assert_eq!(code("missing"), Some(ErrorCode::InvalidJob));
    assert!(r["missing"].error.as_ref().unwrap().message.contains("source"));
    assert_eq!(code("huge"), Some(ErrorCode::JobTooLarge));
    assert_eq!(code("enormous"), Some(ErrorCode::JobTooLarge));
    let msg = &r["enormous"].error.as_ref().unwrap().message;
    assert!(msg.contains("1024 frames at 4096x4096") && msg.contains("MiB"), "{msg}");
    assert_eq!(h.count("enormous", JobState::Dispatched), 0);
    assert_eq!(code("badmedia"), Some(ErrorCode::InvalidMedia));
    assert_eq!(code("gone"), Some(ErrorCode::InputNotFound));
    assert_eq!(r["late"].status, JobStatus::Expired);
    assert_eq!(code("late"), Some(ErrorCode::DeadlineExceeded));
    assert_eq!(r["ok"].status, JobStatus::Succeeded);
    // Failed jobs commit their result too, so a redelivery cannot run them again; so do jobs
    // refused at admission (a worker's committer writes what the scheduler ended).
    assert!(h.store().join("t1/badmedia/result.json").exists());
    for id in ["missing", "enormous", "late"] {
        let path = h.store().join("t1").join(id).join("result.json");
        for _ in 0..100 {
            if path.exists() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let stored: protocol::JobResult = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(&stored, &r[id], "{id}");
    }
    // Refused documents were never dispatched.
    assert_eq!(h.count("garbage", JobState::Dispatched), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_submission_runs_once() {
    let mut h = Harness::start().await;
    let body = h.edit("dup").to_string().into_bytes();
    h.submit("dup", body.clone()).await;
    h.submit("dup", body).await;
    h.finished(&["dup"]).await;
    // A later job proves the scheduler has handled both copies by now.
    h.submit("after", h.edit("after").to_string().into_bytes()).await;
    h.finished(&["after"]).await;
    assert_eq!(h.count("dup", JobState::Dispatched), 1);
    assert_eq!(h.count("dup", JobState::Running), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivered_task_with_a_committed_result_is_not_run_again() {
    let mut h = Harness::start().await;
    h.submit("once", h.edit("once").to_string().into_bytes()).await;
    let first = h.finished(&["once"]).await.remove("once").unwrap();
    // Put the same task on the work queue again, as a broker does after a lost ack.
    let job = protocol::Job::from_json(
        h.edit("once").to_string().as_bytes(),
        &protocol::ValidationContext { allow_local_media: true },
    )
    .unwrap();
    let queue = topology::task_queue_base(JobKind::Edit, "default");
    let body = serde_json::to_vec(&Task::first(job)).unwrap();
    let before = h.seen.len();
    h.bus.publish("", &queue, Message::new("once", body)).await.unwrap();
    let again = h.finished(&["once"]).await.remove("once").unwrap();
    assert_eq!(again, first);
    let running_after = h.seen[before..]
        .iter()
        .filter(|e| matches!(e.event, EventBody::State { state: JobState::Running, .. }))
        .count();
    assert_eq!(running_after, 0, "the job ran a second time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_are_marked_and_say_they_are_ai_generated() {
    let mut h = Harness::start().await;
    let mut e = h.edit("wm1");
    e["options"]["output_size"] = json!({ "width": 256, "height": 144 });
    h.submit("wm1", e.to_string().into_bytes()).await;
    let r = h.finished(&["wm1"]).await.remove("wm1").unwrap();
    assert_eq!(r.status, JobStatus::Succeeded, "{:?}", r.error);
    let key = worker::watermark::WatermarkKey::dev();
    let payload = worker::watermark::Payload::for_job(&key, "t1", "wm1", worker::watermark::Generator::EDITOR);
    assert!(r.timings.iter().any(|t| t.stage == protocol::Stage::Watermark));
    for o in &r.outputs {
        assert_eq!(o.watermark.as_deref(), Some(payload.hex().as_str()));
        let d = worker::watermark::detect_file(path_of(&o.uri), &key, &Default::default()).unwrap();
        assert_eq!(d.found, Some(payload), "{}", o.uri);
        let sidecar: Value =
            serde_json::from_slice(&std::fs::read(format!("{}.meta.json", path_of(&o.uri).display())).unwrap())
                .unwrap();
        assert_eq!(sidecar["metadata"]["ai-generated"], "true");
        assert_eq!(sidecar["metadata"]["watermark"], payload.hex());
        assert!(sidecar["metadata"]["generator"].as_str().unwrap().ends_with("reelforge-editor"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_cannot_read_another_tenants_outputs() {
    let mut h = Harness::start().await;
    h.submit("mine", h.edit("mine").to_string().into_bytes()).await;
    let r = h.finished(&["mine"]).await.remove("mine").unwrap();
    let clip = r.outputs.iter().find(|o| o.kind == protocol::OutputKind::Clip).unwrap();
    // Tenant t2 asks for t1's clip as its source: directly, through `..` (refused by
    // validation) and through a symbolic link outside the store.
    let direct = clip.uri.clone();
    let dotted = direct.replace("/store/t1/", "/store/t2/../t1/");
    let link = h.dir.path().join("innocent.mp4");
    std::os::unix::fs::symlink(path_of(&clip.uri), &link).unwrap();
    let linked = format!("file://{}", link.display());
    for (id, source) in [("theirs", direct), ("theirs2", dotted), ("theirs3", linked)] {
        let mut job = h.edit(id);
        job["tenant"] = json!("t2");
        job["source"] = json!(source);
        h.submit(id, job.to_string().into_bytes()).await;
    }
    // The same tenant may reuse its own output.
    let mut own = h.edit("reuse");
    own["source"] = json!(clip.uri);
    h.submit("reuse", own.to_string().into_bytes()).await;
    let r = h.finished(&["theirs", "theirs2", "theirs3", "reuse"]).await;
    for id in ["theirs", "theirs2", "theirs3"] {
        let e = r[id].error.as_ref().expect("refused");
        assert_eq!(e.code, ErrorCode::InvalidJob, "{id}: {}", e.message);
        let why = if id == "theirs2" { "`..`" } else { "may not read" };
        assert!(e.message.contains(why), "{id}: {}", e.message);
        // No output in any execution's folder: the job's folder has no subfolder at all.
        let dirs = std::fs::read_dir(h.store().join("t2").join(id))
            .map(|rd| rd.flatten().filter(|e| e.path().is_dir()).count())
            .unwrap_or(0);
        assert_eq!(dirs, 0, "{id} stored outputs");
    }
    assert_eq!(r["reuse"].status, JobStatus::Succeeded, "{:?}", r["reuse"].error);
}

/// Everything written through `tracing`, for the privacy test.
#[derive(Clone, Default)]
struct CapturedLogs(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for CapturedLogs {
    type Writer = CapturedLogs;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instructions_and_history_never_reach_the_logs() {
    let logs = CapturedLogs::default();
    // Every level, every target, as with RUST_LOG=trace (the global subscriber of this binary).
    let installed = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(logs.clone())
        .try_init()
        .is_ok();
    assert!(installed, "another test installed a subscriber first");
    // With CLIP loaded, so the instruction and style are really tokenised and embedded.
    let mut h = Harness::start_with(|dir, cfg| {
        worker::models::clip::init_tiny(&dir.join("clip"), 6).unwrap();
        cfg.clip = Some(dir.join("clip"));
    })
    .await;
    let secret = "s3cr3t-user-wish-8f2e";
    // History embeddings live in CLIP's space: the tiny CLIP's dimension.
    let clip_dim = worker::models::clip::ClipConfig::tiny(worker::models::clip::tiny_vocab_size()).projection_dim;
    let mut ok = h.edit("private");
    ok["guidance"] = json!({
        "instruction": format!("{secret} instruction"),
        "style": format!("{secret} style"),
        "history": [ { "item_id": format!("{secret}-item"), "embedding": vec![0.1f32; clip_dim] } ]
    });
    h.submit("private", ok.to_string().into_bytes()).await;
    // Refused documents that carry the secret where it does not belong.
    let mut wrong_type = h.edit("private-bad");
    wrong_type["guidance"]["history"] = json!(format!("{secret}-as-a-string"));
    h.submit("private-bad", wrong_type.to_string().into_bytes()).await;
    let mut control = h.edit("private-ctl");
    control["guidance"]["instruction"] = json!(format!("{secret}\u{7}bell"));
    h.submit("private-ctl", control.to_string().into_bytes()).await;
    let r = h.finished(&["private", "private-bad", "private-ctl"]).await;
    assert_eq!(r["private"].status, JobStatus::Succeeded, "{:?}", r["private"].error);
    assert!(r["private"].models.iter().any(|m| m.id.starts_with("clip:")), "CLIP ran: {:?}", r["private"].models);
    assert_eq!(r["private-bad"].status, JobStatus::Failed);
    assert_eq!(r["private-ctl"].status, JobStatus::Failed);
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(text.contains("private"), "the capture saw nothing: {text}");
    assert!(
        !text.contains(secret),
        "a secret reached the logs:\n{}",
        text.lines().filter(|l| l.contains(secret)).collect::<Vec<_>>().join("\n")
    );
}
