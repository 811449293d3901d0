//! The fleet with S3 storage: a worker reads `s3://` inputs and writes outputs to the test garage
//! node (deploy/scripts/test.sh starts it), and tenants cannot read each other's inputs.

mod support;

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_sdk_s3::config::Credentials;
use protocol::{ErrorCode, JobStatus};
use serde_json::json;
use support::{Fleet, GARAGE, GARAGE_KEY_ID, GARAGE_SECRET};
use worker::storage::Store;
use worker::storage::s3::{S3Config, S3Store};

async fn store(bucket: &str) -> S3Store {
    let mut cfg = S3Config::new(bucket);
    cfg.endpoint = Some(GARAGE.into());
    cfg.region = Some("garage".into());
    cfg.force_path_style = true;
    let creds = Credentials::new(GARAGE_KEY_ID, GARAGE_SECRET, None, None, "reelforge-test");
    let loader = aws_config::defaults(BehaviorVersion::latest()).credentials_provider(creds);
    S3Store::connect_with(cfg, loader).await.expect("garage on 127.0.0.1:3900 (run deploy/scripts/test.sh)")
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
