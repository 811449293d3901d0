//! The editor with CLIP through the whole runtime (embedded mode: scheduler and worker over the
//! in-process bus, a local store): history media fetched by the runtime steer the selection,
//! the safety filter withholds outputs so that nothing of them reaches the store, and stored
//! outputs carry C2PA manifests that verify against the operator's CA.

mod embedded_support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bus::memory::MemoryBus;
use bus::{Bus, Consumer, Message, topology};
use protocol::{ErrorCode, Event, EventBody, JobResult, JobStatus, OutputKind};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use worker::WorkerConfig;

#[path = "../worker/tests/common/mod.rs"]
mod common;

struct Harness {
    bus: Arc<MemoryBus>,
    dir: tempfile::TempDir,
    events: Box<dyn Consumer>,
    stop: CancellationToken,
}

impl Harness {
    /// A fleet whose worker loads the tiny CLIP; `safety` is the concepts file's JSON, if any.
    async fn start(dir: tempfile::TempDir, safety: Option<Value>) -> Harness {
        Self::start_with(dir, safety, None, false).await
    }

    /// As [`start`](Self::start), signing outputs with `c2pa` (chain, key) when given, and
    /// running CLIP in f16 when `clip_f16`.
    async fn start_with(
        dir: tempfile::TempDir,
        safety: Option<Value>,
        c2pa: Option<(PathBuf, PathBuf)>,
        clip_f16: bool,
    ) -> Harness {
        worker::models::clip::init_tiny(&dir.path().join("clip"), 6).unwrap();
        let safety_concepts = safety.map(|v| {
            let p = dir.path().join("concepts.json");
            std::fs::write(&p, v.to_string()).unwrap();
            p
        });
        let cfg = WorkerConfig {
            id: "w1".into(),
            scratch_dir: dir.path().join("scratch"),
            allow_local_media: true,
            clip: Some(dir.path().join("clip")),
            clip_f16,
            safety_concepts,
            c2pa: c2pa.map(|(c, k)| (c, k, "es256".to_owned())),
            ..Default::default()
        };
        let embedded_support::Embedded { bus, events, stop } = embedded_support::start(dir.path(), cfg).await;
        Harness { bus, dir, events, stop }
    }

    async fn run(&mut self, job: Value) -> JobResult {
        let id = job["job_id"].as_str().unwrap().to_owned();
        let msg = Message::new(&id, job.to_string().into_bytes());
        self.bus.publish(topology::JOBS_EXCHANGE, topology::SUBMIT_KEY, msg).await.unwrap();
        loop {
            let d = tokio::time::timeout(Duration::from_secs(120), self.events.next())
                .await
                .expect("events within 120 s")
                .unwrap()
                .unwrap();
            let ev: Event = serde_json::from_slice(&d.message.body).unwrap();
            d.ack().await.unwrap();
            if let EventBody::Finished { result } = ev.event
                && result.job_id.as_str() == id
            {
                return *result;
            }
        }
    }

    fn job_dir(&self, id: &str) -> PathBuf {
        self.dir.path().join("store").join("t1").join(id)
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// 8 s, 4 shots of 2 s.
fn sample(dir: &Path) -> PathBuf {
    let p = dir.join("sample.mp4");
    worker::samples::write_sample_video(&p, 8.0, 20, 256, 144, 4).unwrap();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_media_fetched_by_the_runtime_steer_the_clips() {
    history_steers_the_clips(false).await;
}

/// The same selection with CLIP in f16 (`--clip-f16`): weights, activations and the
/// preprocessed frames in half precision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_steers_the_clips_with_clip_in_f16() {
    history_steers_the_clips(true).await;
}

async fn history_steers_the_clips(clip_f16: bool) {
    let dir = tempfile::tempdir().unwrap();
    let src = sample(dir.path());
    let liked = dir.path().join("liked.jpg");
    let frame = worker::samples::sample_frame(256, 144, 5.0, 8.0, 4);
    std::fs::write(&liked, worker::media::encode_jpeg(&frame, 95).unwrap()).unwrap();
    let mut h = Harness::start_with(dir, None, None, clip_f16).await;
    let r = h
        .run(json!({
            "v": 1, "kind": "edit", "job_id": "h1", "tenant": "t1", "source": format!("file://{}", src.display()),
            "guidance": { "history": [{ "item_id": "liked-1", "media": format!("file://{}", liked.display()) }] },
            "options": { "clips": 1, "clip_seconds_min": 1.5, "clip_seconds_max": 2.0 }
        }))
        .await;
    assert_eq!(r.status, JobStatus::Succeeded, "{:?}", r.error);
    let clip = r.outputs.iter().find(|o| o.kind == OutputKind::Clip).unwrap();
    let (s, e) = (clip.start_s.unwrap(), clip.end_s.unwrap());
    assert!(s >= 3.7 && e <= 6.3, "the clip is in the liked shot (4–6 s): {s}..{e}");
    assert!(r.models.iter().any(|m| m.id.starts_with("clip:clip@")), "{:?}", r.models);
    assert!(r.withheld.is_empty());
    // Stored in the committed execution's folder, where the result points.
    let path = std::path::PathBuf::from(clip.uri.strip_prefix("file://").unwrap());
    assert!(path.is_file() && path.starts_with(h.job_dir("h1")), "{}", clip.uri);
    assert_eq!(path.file_name().unwrap(), "clip-01.mp4");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withheld_outputs_never_reach_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let src = sample(dir.path());
    // A concept every frame matches (threshold −1): all outputs are withheld.
    let concepts = json!({ "concepts": [{ "name": "everything", "prompt": "anything at all", "threshold": -1.0 }] });
    let mut h = Harness::start(dir, Some(concepts)).await;
    let r = h
        .run(json!({
            "v": 1, "kind": "edit", "job_id": "s1", "tenant": "t1", "source": format!("file://{}", src.display()),
            "guidance": { "instruction": "the best goal" },
            "options": { "clips": 2, "clip_seconds_min": 1.0, "clip_seconds_max": 2.0 }
        }))
        .await;
    assert_eq!(r.status, JobStatus::Failed);
    let err = r.error.as_ref().unwrap();
    assert_eq!(err.code, ErrorCode::UnsafeContent);
    assert!(err.message.contains("everything"), "{}", err.message);
    assert!(r.outputs.is_empty());
    // The local store keeps each object's metadata in a `.meta.json` sidecar.
    let mut stored: Vec<String> = std::fs::read_dir(h.job_dir("s1"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".meta.json"))
        .collect();
    stored.sort();
    // The attempt's start marker and the result: no withheld output was stored.
    assert_eq!(stored, ["attempt-1.json", "result.json"], "only the result is stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_outputs_carry_content_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let src = sample(dir.path());
    let (chain, key, ca) = common::certificates(dir.path());
    let mut h = Harness::start_with(dir, None, Some((chain, key)), false).await;
    let r = h
        .run(json!({
            "v": 1, "kind": "edit", "job_id": "p1", "tenant": "t1", "source": format!("file://{}", src.display()),
            "guidance": { "instruction": "the best goal" },
            "options": { "clips": 1, "clip_seconds_min": 1.0, "clip_seconds_max": 2.0 }
        }))
        .await;
    assert_eq!(r.status, JobStatus::Succeeded, "{:?}", r.error);
    assert_eq!(r.outputs.len(), 2);
    for o in &r.outputs {
        let path = Path::new(o.uri.strip_prefix("file://").unwrap());
        let bytes = std::fs::read(path).unwrap();
        assert_eq!(worker::storage::sha256_hex(&bytes), o.sha256, "the result describes the signed file");
        let ctx = c2pa::Context::new().with_settings(json!({ "trust": { "trust_anchors": ca } })).unwrap();
        let reader = c2pa::Reader::from_context(ctx).with_file(path).unwrap();
        assert_eq!(reader.validation_state(), c2pa::ValidationState::Trusted, "{}", o.uri);
        let manifest = reader.json();
        assert!(manifest.contains("compositeWithTrainedAlgorithmicMedia"), "{manifest}");
        assert!(manifest.contains(o.watermark.as_deref().unwrap()), "the watermark payload is asserted");
    }
}
