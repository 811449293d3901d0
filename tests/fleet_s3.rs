//! The fleet with S3 storage: a worker reads `s3://` inputs and writes outputs to the test garage
//! node (deploy/scripts/test.sh starts it), and tenants cannot read each other's inputs; and the
//! editor as a fleet runs it, with CLIP, the safety filter and C2PA on.

#[path = "../worker/tests/common/mod.rs"]
mod common;
mod support;

use std::time::Duration;

use protocol::{ErrorCode, JobStatus};
use serde_json::json;
use support::{Fleet, GARAGE};
use worker::storage::Store;
use worker::storage::s3::S3Store;

async fn store(bucket: &str) -> S3Store {
    support::garage_store(bucket, GARAGE).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_inputs_and_outputs_with_tenant_isolation() {
    let mut f = Fleet::new("s3").await;
    let bucket = format!("fleet-{}", std::process::id());
    let s3 = store(&bucket).await;
    s3.client().create_bucket().bucket(&bucket).send().await.expect("create the test bucket");
    let meta = worker::storage::ObjectMeta { content_type: "video/mp4".into(), ..Default::default() };
    s3.put_file("t1/in/sample.mp4", &f.sample, &meta).await.unwrap();
    f.scheduler("s1", &[]);
    f.worker("w1", &["--s3-bucket", &bucket, "--s3-endpoint", GARAGE, "--s3-region", "garage", "--s3-path-style"]);
    let source = format!("s3://{bucket}/t1/in/sample.mp4");
    let mut own = f.edit("own");
    own["source"] = json!(source);
    f.submit(&own).await;
    let mut other = f.edit("other");
    other["source"] = json!(source);
    other["tenant"] = json!("t2");
    f.submit(&other).await;
    let r = f.finished(&["own", "other"], Duration::from_secs(120)).await;
    assert_eq!(r["own"].status, JobStatus::Succeeded, "{:?}", r["own"].error);
    for o in &r["own"].outputs {
        assert!(o.uri.starts_with(&format!("s3://{bucket}/t1/own/")), "{}", o.uri);
        let key = o.uri.strip_prefix(&format!("s3://{bucket}/")).unwrap();
        let bytes = s3.get(key).await.unwrap().expect("output stored");
        assert_eq!(worker::storage::sha256_hex(&bytes), o.sha256);
    }
    let manifest = s3.get("t1/own/result.json").await.unwrap().expect("result.json committed");
    let committed: protocol::JobResult = serde_json::from_slice(&manifest).unwrap();
    assert_eq!(committed, r["own"]);
    let e = r["other"].error.as_ref().unwrap();
    assert_eq!(e.code, ErrorCode::InvalidJob);
    assert!(e.message.contains("t2"), "{}", e.message);
    assert!(s3.get("t2/other/clip-01.mp4").await.unwrap().is_none());
}

/// Scheduler and worker processes over RabbitMQ, outputs on garage, with the tiny CLIP choosing
/// clips, the safety filter checking them and C2PA signing them: a `default` worker whose
/// concept never matches stores signed outputs; a `strict` worker whose concept matches
/// everything withholds them all, and nothing of them reaches the bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clip_safety_filter_and_credentials_over_rabbitmq_and_garage() {
    let mut f = Fleet::new("s3-editor").await;
    let bucket = format!("fleet-editor-{}", std::process::id());
    let s3 = store(&bucket).await;
    s3.client().create_bucket().bucket(&bucket).send().await.expect("create the test bucket");
    let dir = f.dir.path().to_owned();
    worker::models::clip::init_tiny(&dir.join("clip"), 6).unwrap();
    let concepts = |name: &str, threshold: f64| {
        let p = dir.join(format!("{name}.json"));
        let doc = json!({ "concepts": [{ "name": name, "prompt": "anything at all", "threshold": threshold }] });
        std::fs::write(&p, doc.to_string()).unwrap();
        p.to_string_lossy().into_owned()
    };
    let (never, always) = (concepts("never", 1.0), concepts("everything", -1.0));
    let (chain, key, ca) = common::certificates(&dir);
    let (chain, key) = (chain.to_string_lossy().into_owned(), key.to_string_lossy().into_owned());
    let clip = dir.join("clip").to_string_lossy().into_owned();
    f.scheduler("s1", &["--profiles", "default,strict"]);
    let s3_args = ["--s3-bucket", &bucket, "--s3-endpoint", GARAGE, "--s3-region", "garage", "--s3-path-style"];
    let editor = |profile: &'static str, concepts: &str| {
        let mut a = vec!["--kinds", "edit", "--profiles", profile, "--clip", &clip, "--safety-concepts"];
        a.push(concepts);
        a.extend(["--c2pa-cert", &chain, "--c2pa-key", &key]);
        a.extend(s3_args);
        a.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    let (w1, w2) = (editor("default", &never), editor("strict", &always));
    f.worker("w1", &w1.iter().map(String::as_str).collect::<Vec<_>>());
    f.worker("w2", &w2.iter().map(String::as_str).collect::<Vec<_>>());
    let meta = worker::storage::ObjectMeta { content_type: "video/mp4".into(), ..Default::default() };
    s3.put_file("t1/in/sample.mp4", &f.sample, &meta).await.unwrap();
    let source = format!("s3://{bucket}/t1/in/sample.mp4");
    let mut signed = f.edit("signed");
    signed["source"] = json!(source);
    f.submit(&signed).await;
    let mut withheld = f.edit("withheld");
    withheld["source"] = json!(source);
    withheld["profile"] = json!("strict");
    f.submit(&withheld).await;
    let r = f.finished(&["signed", "withheld"], Duration::from_secs(180)).await;

    let ok = &r["signed"];
    assert_eq!(ok.status, JobStatus::Succeeded, "{:?}", ok.error);
    assert!(ok.models.iter().any(|m| m.id.starts_with("clip:")), "CLIP chose the clips: {:?}", ok.models);
    assert!(!ok.outputs.is_empty());
    for o in &ok.outputs {
        let key = o.uri.strip_prefix(&format!("s3://{bucket}/")).unwrap();
        let bytes = s3.get(key).await.unwrap().expect("output stored");
        assert_eq!(worker::storage::sha256_hex(&bytes), o.sha256);
        let ext = key.rsplit('.').next().unwrap();
        let local = dir.join(format!("download.{ext}"));
        std::fs::write(&local, &bytes).unwrap();
        let ctx = c2pa::Context::new().with_settings(json!({ "trust": { "trust_anchors": ca } })).unwrap();
        let reader = c2pa::Reader::from_context(ctx).with_file(&local).unwrap();
        assert_eq!(reader.validation_state(), c2pa::ValidationState::Trusted, "{}", o.uri);
    }

    let no = &r["withheld"];
    assert_eq!(no.status, JobStatus::Failed);
    assert_eq!(no.error.as_ref().unwrap().code, ErrorCode::UnsafeContent, "{:?}", no.error);
    assert!(no.outputs.is_empty());
    let listed = s3.list("t1/withheld/").await.unwrap();
    let stored: Vec<&String> =
        listed.iter().filter(|k| !k.contains("attempt-") && !k.ends_with("result.json")).collect();
    assert!(stored.is_empty(), "withheld outputs reached the bucket: {stored:?}");
}
