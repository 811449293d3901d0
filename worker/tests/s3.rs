//! The S3 store against a real S3 server: the single-node garage that `deploy/scripts/test.sh`
//! starts on 127.0.0.1:3900 with fixed test credentials (override with `REELFORGE_TEST_S3_*`).
//! Every test makes its own bucket, so they run in parallel. Outages are made with a TCP proxy
//! in front of the server that the test cuts and heals, so the shared server stays up. The
//! worker tests run the worker over the real RabbitMQ on 127.0.0.1:5672, a vhost each.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use aws_sdk_s3::config::{BehaviorVersion, Credentials};
use bus::amqp::AmqpBus;
use bus::{Bus, Consumer, Message, topology};
use protocol::{
    Event, EventBody, Job, JobKind, JobResult, JobStatus, MediaLocation, Task, TenantId, ValidationContext,
};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use worker::storage::s3::{S3Config, S3Store};
use worker::storage::{ObjectMeta, RESULT_FILE, StorageError, Store, check_input_access, sha256_hex};
use worker::{Worker, WorkerConfig};

// ---------------------------------------------------------------------------------------------
// The server and the stores

struct Server {
    endpoint: String,
    region: String,
    key_id: String,
    secret: String,
}

fn server() -> Server {
    let var = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.into());
    Server {
        endpoint: var("REELFORGE_TEST_S3_ENDPOINT", "http://127.0.0.1:3900"),
        region: var("REELFORGE_TEST_S3_REGION", "garage"),
        key_id: var("REELFORGE_TEST_S3_ACCESS_KEY_ID", "GK7265656c666f7267652d7465"),
        secret: var(
            "REELFORGE_TEST_S3_SECRET_ACCESS_KEY",
            "7265656c666f7267652d746573742d7365637265742d6b65792d303030303031",
        ),
    }
}

/// host:port of an `http://host:port` endpoint.
fn authority(endpoint: &str) -> String {
    endpoint.trim_start_matches("http://").trim_end_matches('/').to_owned()
}

/// Fails (does not skip) when nothing serves the endpoint.
async fn require_server(s: &Server) {
    let addr = authority(&s.endpoint);
    if TcpStream::connect(&addr).await.is_err() {
        panic!(
            "no S3 server at {}: these tests need the garage node that `bash deploy/scripts/test.sh` \
             starts (or set REELFORGE_TEST_S3_ENDPOINT and friends to another server)",
            s.endpoint
        );
    }
}

fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{prefix}-{}-{}-{}", std::process::id(), nanos % 1_000_000_000, N.fetch_add(1, Ordering::Relaxed))
}

fn config(bucket: &str, endpoint: &str) -> S3Config {
    let mut cfg = S3Config::new(bucket);
    cfg.endpoint = Some(endpoint.to_owned());
    cfg.region = Some(server().region);
    cfg.force_path_style = true;
    cfg
}

async fn connect_as(cfg: S3Config, key_id: &str, secret: &str) -> S3Store {
    let creds = Credentials::new(key_id, secret, None, None, "reelforge-test");
    let loader = aws_config::defaults(BehaviorVersion::latest()).credentials_provider(creds);
    S3Store::connect_with(cfg, loader).await.unwrap()
}

async fn connect(cfg: S3Config) -> S3Store {
    let s = server();
    connect_as(cfg, &s.key_id, &s.secret).await
}

/// A fresh bucket on the server and a store writing to it, straight to the server.
async fn fresh(prefix: &str, tweak: impl FnOnce(&mut S3Config)) -> S3Store {
    let s = server();
    require_server(&s).await;
    let bucket = unique(prefix);
    let mut cfg = config(&bucket, &s.endpoint);
    tweak(&mut cfg);
    let store = connect(cfg).await;
    store.client().create_bucket().bucket(&bucket).send().await.unwrap();
    store
}

fn bucket(store: &S3Store) -> String {
    store.config().output_bucket.clone()
}

/// Deterministic, incompressible-looking bytes.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn meta(content_type: &str) -> ObjectMeta {
    ObjectMeta { content_type: content_type.into(), ..Default::default() }
}

// ---------------------------------------------------------------------------------------------
// A TCP proxy the tests cut and heal

struct Proxy {
    endpoint: String,
    down: watch::Sender<bool>,
    /// Cut everything when a request line contains this.
    trip_on: std::sync::Mutex<Option<String>>,
    tripped: AtomicBool,
    /// Connections refused while down (the client's retries).
    refused: AtomicUsize,
    /// Request lines seen (`PUT /bucket/key?... HTTP/1.1`), in order.
    requests: std::sync::Mutex<Vec<String>>,
}

impl Proxy {
    async fn start(upstream: String) -> Arc<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (down, _) = watch::channel(false);
        let proxy = Arc::new(Proxy {
            endpoint: format!("http://{}", listener.local_addr().unwrap()),
            down,
            trip_on: Default::default(),
            tripped: AtomicBool::new(false),
            refused: AtomicUsize::new(0),
            requests: Default::default(),
        });
        let p = proxy.clone();
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                if *p.down.borrow() {
                    p.refused.fetch_add(1, Ordering::SeqCst);
                    drop(client);
                    continue;
                }
                let p = p.clone();
                let upstream = upstream.clone();
                tokio::spawn(async move { p.pipe(client, &upstream).await });
            }
        });
        proxy
    }

    async fn pipe(self: Arc<Self>, client: TcpStream, upstream: &str) {
        let Ok(server) = TcpStream::connect(upstream).await else {
            return;
        };
        let (mut cr, mut cw) = client.into_split();
        let (mut sr, mut sw) = server.into_split();
        let mut down = self.down.subscribe();
        let up = async {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match cr.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                if self.inspect(&buf[..n]) {
                    return;
                }
                if sw.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        };
        let back = tokio::io::copy(&mut sr, &mut cw);
        tokio::select! {
            _ = up => {}
            _ = back => {}
            _ = down.wait_for(|d| *d) => {}
        }
        // Dropping both halves closes both sockets mid-whatever.
    }

    /// Records request lines; true when this chunk trips the cut.
    fn inspect(&self, chunk: &[u8]) -> bool {
        let text = String::from_utf8_lossy(chunk);
        let mut trip = false;
        for line in text.split("\r\n") {
            let is_request = ["GET /", "PUT /", "POST /", "HEAD /", "DELETE /"].iter().any(|m| line.starts_with(m))
                && line.ends_with(" HTTP/1.1");
            if !is_request {
                continue;
            }
            self.requests.lock().unwrap().push(line.to_owned());
            let needle = self.trip_on.lock().unwrap().clone();
            if needle.is_some_and(|n| line.contains(&n)) {
                trip = true;
            }
        }
        if trip {
            self.tripped.store(true, Ordering::SeqCst);
            self.down.send_replace(true);
        }
        trip
    }

    fn cut_when(&self, needle: &str) {
        *self.trip_on.lock().unwrap() = Some(needle.to_owned());
    }

    fn heal(&self) {
        *self.trip_on.lock().unwrap() = None;
        self.down.send_replace(false);
    }

    fn puts(&self) -> Vec<String> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.starts_with("PUT ") || l.starts_with("POST "))
            .cloned()
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Outputs

#[tokio::test]
async fn put_and_get_round_trip() {
    let store = fresh("rt", |_| {}).await;
    let body = b"{\"hello\": \"s3\"}".to_vec();
    let obj = store.put_bytes("t1/j1/a.json", &body, &meta("application/json")).await.unwrap();
    assert_eq!(obj.uri, format!("s3://{}/t1/j1/a.json", bucket(&store)));
    assert_eq!(obj.bytes, body.len() as u64);
    assert_eq!(obj.sha256, sha256_hex(&body));
    assert_eq!(store.get("t1/j1/a.json").await.unwrap().unwrap(), body);
    assert!(store.get("t1/j1/missing.json").await.unwrap().is_none());

    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("small.bin");
    let data = pattern(100_000, 1);
    std::fs::write(&f, &data).unwrap();
    let obj = store.put_file("t1/j1/small.bin", &f, &meta("application/octet-stream")).await.unwrap();
    assert_eq!(obj.sha256, sha256_hex(&data));
    assert_eq!(store.get("t1/j1/small.bin").await.unwrap().unwrap(), data);
}

#[tokio::test]
async fn multipart_round_trip_keeps_bytes_and_sha256() {
    // Default threshold (16 MiB); 5 MiB parts: 21 MiB + 3 bytes is five parts, the last short.
    let store = fresh("mp", |c| c.part_size = 5 * 1024 * 1024).await;
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("big.mp4");
    let data = pattern(21 * 1024 * 1024 + 3, 2);
    std::fs::write(&f, &data).unwrap();
    let obj = store.put_file("t1/j2/big.mp4", &f, &meta("video/mp4")).await.unwrap();
    assert_eq!(obj.bytes, data.len() as u64);
    assert_eq!(obj.sha256, sha256_hex(&data));
    let head = store.client().head_object().bucket(bucket(&store)).key("t1/j2/big.mp4").send().await.unwrap();
    assert_eq!(head.content_length(), Some(data.len() as i64));
    // A multipart object's ETag ends in -<parts>.
    let etag = head.e_tag().unwrap().trim_matches('"').to_owned();
    assert!(etag.ends_with("-5"), "etag {etag} is not a 5-part upload's");
    let back = store.get("t1/j2/big.mp4").await.unwrap().unwrap();
    assert_eq!(sha256_hex(&back), obj.sha256);

    // At the threshold exactly it is one PUT.
    let f2 = dir.path().join("edge.bin");
    std::fs::write(&f2, pattern(16 * 1024 * 1024, 3)).unwrap();
    store.put_file("t1/j2/edge.bin", &f2, &meta("application/octet-stream")).await.unwrap();
    let head = store.client().head_object().bucket(bucket(&store)).key("t1/j2/edge.bin").send().await.unwrap();
    assert!(!head.e_tag().unwrap().contains('-'), "{:?}", head.e_tag());
}

#[tokio::test]
async fn metadata_and_content_type_round_trip() {
    let store = fresh("meta", |c| c.part_size = 5 * 1024 * 1024).await;
    let mut m = meta("video/mp4");
    for (k, v) in [
        ("ai-generated", "true"),
        ("generator", "reelforge/0.1.0"),
        ("job-id", "job:42"),
        ("models", "clip-vit-b32,mcvd-tiny"),
        ("watermark", "a1b2c3d4"),
    ] {
        m.entries.insert(k.into(), v.into());
    }
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("clip.mp4");
    std::fs::write(&small, pattern(10_000, 4)).unwrap();
    let big = dir.path().join("video.mp4");
    std::fs::write(&big, pattern(17 * 1024 * 1024, 5)).unwrap();
    for (key, file) in [("t1/j3/clip.mp4", &small), ("t1/j3/video.mp4", &big)] {
        store.put_file(key, file, &m).await.unwrap();
        let head = store.client().head_object().bucket(bucket(&store)).key(key).send().await.unwrap();
        assert_eq!(head.content_type(), Some("video/mp4"), "{key}");
        let got: std::collections::BTreeMap<String, String> =
            head.metadata().unwrap().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        assert_eq!(got, m.entries, "{key}");
    }
    // Entries that cannot be headers are refused before anything is sent.
    let mut bad = m.clone();
    bad.entries.insert("note".into(), "naïve".into());
    assert!(matches!(store.put_file("t1/j3/x.mp4", &small, &bad).await, Err(StorageError::InvalidMetadata { .. })));
}

#[tokio::test]
async fn keys_that_escape_their_prefix_are_refused() {
    let store = fresh("keys", |_| {}).await;
    let m = meta("text/plain");
    for bad in ["../x", "/t1/j/x", "t1/../../x", "t1//x", "t1/./x", "t1/j/a\u{7}", "t1\\x"] {
        assert!(matches!(store.put_bytes(bad, b"x", &m).await, Err(StorageError::InvalidKey { .. })), "put {bad:?}");
        assert!(matches!(store.get(bad).await, Err(StorageError::InvalidKey { .. })), "get {bad:?}");
    }
    let scratch = tempfile::tempdir().unwrap();
    let traversal = MediaLocation::S3 { bucket: bucket(&store), key: "t1/../t2/in.mp4".into() };
    assert!(matches!(store.fetch(&traversal, scratch.path(), 1 << 20).await, Err(StorageError::InvalidKey { .. })));
    // Cross-tenant: t1's job may not read t2's input, but may read a shared library bucket.
    store.put_bytes("t2/in.mp4", b"x", &m).await.unwrap();
    let other = MediaLocation::S3 { bucket: bucket(&store), key: "t2/in.mp4".into() };
    let err = check_input_access(&TenantId("t1".into()), &other, &[]).unwrap_err();
    assert!(matches!(err, StorageError::Forbidden { .. }), "{err}");
    assert!(!err.is_transient());
    assert!(check_input_access(&TenantId("t2".into()), &other, &[]).is_ok());
    assert!(check_input_access(&TenantId("t1".into()), &other, &[bucket(&store)]).is_ok());
}

#[tokio::test]
async fn refusals_are_permanent_errors() {
    let s = server();
    let store = fresh("deny", |_| {}).await;
    // A wrong secret: 403, not retried into a requeue loop.
    let wrong = connect_as(store.config().clone(), &s.key_id, &"0".repeat(64)).await;
    let err = wrong.put_bytes("t1/j/x", b"x", &meta("text/plain")).await.unwrap_err();
    assert!(matches!(err, StorageError::Remote { status: Some(403), transient: false, .. }), "{err}");
    // A bucket that does not exist: permanent for outputs, NotFound for inputs.
    let missing = connect(config(&unique("nobucket"), &s.endpoint)).await;
    let err = missing.put_bytes("t1/j/x", b"x", &meta("text/plain")).await.unwrap_err();
    assert!(!err.is_transient(), "{err}");
    let scratch = tempfile::tempdir().unwrap();
    let loc = MediaLocation::S3 { bucket: missing.config().output_bucket.clone(), key: "t1/in.mp4".into() };
    assert!(matches!(store.fetch(&loc, scratch.path(), 1 << 20).await, Err(StorageError::NotFound(_))));
}

// ---------------------------------------------------------------------------------------------
// Inputs

#[tokio::test]
async fn inputs_stream_to_scratch_under_a_size_limit() {
    let store = fresh("in", |_| {}).await;
    let data = pattern(3 * 1024 * 1024 + 17, 6);
    store
        .client()
        .put_object()
        .bucket(bucket(&store))
        .key("t1/in/src.mp4")
        .body(data.clone().into())
        .send()
        .await
        .unwrap();
    let loc = MediaLocation::S3 { bucket: bucket(&store), key: "t1/in/src.mp4".into() };
    let scratch = tempfile::tempdir().unwrap();
    let path = store.fetch(&loc, scratch.path(), data.len() as u64).await.unwrap();
    assert!(path.starts_with(scratch.path()));
    assert_eq!(path.extension().unwrap(), "mp4");
    assert_eq!(std::fs::read(&path).unwrap(), data);
    std::fs::remove_file(&path).unwrap();

    let err = store.fetch(&loc, scratch.path(), data.len() as u64 - 1).await.unwrap_err();
    assert!(matches!(err, StorageError::TooLarge { size, .. } if size == data.len() as u64), "{err}");
    assert_eq!(std::fs::read_dir(scratch.path()).unwrap().count(), 0, "no partial file left");
    let missing = MediaLocation::S3 { bucket: bucket(&store), key: "t1/in/nope.mp4".into() };
    assert!(matches!(store.fetch(&missing, scratch.path(), 1 << 30).await, Err(StorageError::NotFound(_))));
    let local = MediaLocation::Local("/etc/hostname".into());
    assert!(matches!(store.fetch(&local, scratch.path(), 1 << 30).await, Err(StorageError::Unsupported(_))));
}

// ---------------------------------------------------------------------------------------------
// Outages

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_gone_mid_upload_is_a_transient_error_and_no_object() {
    let direct = fresh("cut", |c| c.part_size = 5 * 1024 * 1024).await;
    let proxy = Proxy::start(authority(&server().endpoint)).await;
    let mut cfg = direct.config().clone();
    cfg.endpoint = Some(proxy.endpoint.clone());
    let store = connect(cfg).await;
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("big.mp4");
    let data = pattern(20 * 1024 * 1024, 7);
    std::fs::write(&f, &data).unwrap();

    // The server "dies" when the third part starts: live connections drop, new ones are refused.
    proxy.cut_when("partNumber=3&");
    let t0 = std::time::Instant::now();
    let err = store.put_file("t1/j4/big.mp4", &f, &meta("video/mp4")).await.unwrap_err();
    assert!(proxy.tripped.load(Ordering::SeqCst));
    assert!(err.is_transient(), "{err}");
    assert!(
        proxy.refused.load(Ordering::SeqCst) >= 2,
        "the SDK retried ({} connections refused, {:?})",
        proxy.refused.load(Ordering::SeqCst),
        t0.elapsed()
    );
    // Nothing was committed under the key.
    assert!(direct.get("t1/j4/big.mp4").await.unwrap().is_none());

    // The server comes back: the same store, the same call, succeeds.
    proxy.heal();
    let obj = store.put_file("t1/j4/big.mp4", &f, &meta("video/mp4")).await.unwrap();
    assert_eq!(obj.sha256, sha256_hex(&data));
    assert_eq!(sha256_hex(&direct.get("t1/j4/big.mp4").await.unwrap().unwrap()), obj.sha256);
}

// ---------------------------------------------------------------------------------------------
// The worker over S3 and RabbitMQ (127.0.0.1:5672, a vhost per fleet): manifest last, the retry
// ladder on outage

struct Fleet {
    bus: Arc<AmqpBus>,
    vhost: String,
    events: Box<dyn Consumer>,
    stop: CancellationToken,
    /// `retrying` events seen so far.
    retries: usize,
    _scratch: tempfile::TempDir,
}

impl Fleet {
    async fn start(store: S3Store) -> Fleet {
        Self::start_with(store, |_| {}).await
    }

    async fn start_with(store: S3Store, configure: impl FnOnce(&mut WorkerConfig)) -> Fleet {
        let scratch = tempfile::tempdir().unwrap();
        let vhost = unique("test-s3-worker");
        rabbitmqctl(&["add_vhost", &vhost]);
        rabbitmqctl(&["set_permissions", "-p", &vhost, "guest", ".*", ".*", ".*"]);
        let url = format!("amqp://guest:guest@127.0.0.1:5672/{vhost}");
        let bus =
            Arc::new(AmqpBus::connect(&url).await.expect("RabbitMQ on 127.0.0.1:5672 (run deploy/scripts/test.sh)"));
        topology::Layout::default().declare_core(bus.as_ref()).await.unwrap();
        let feed =
            topology::declare_feed(bus.as_ref(), "test", "events", topology::EVENTS_EXCHANGE, "job.#").await.unwrap();
        let events = bus.consume(&feed, 1000).await.unwrap();
        let stop = CancellationToken::new();
        let mut cfg = WorkerConfig {
            id: "s3-worker".into(),
            kinds: vec![JobKind::Edit],
            scratch_dir: scratch.path().to_owned(),
            ..Default::default()
        };
        configure(&mut cfg);
        tokio::spawn(Worker::new(bus.clone(), Arc::new(store), cfg).run(stop.clone()));
        Fleet { bus, vhost, events, stop, retries: 0, _scratch: scratch }
    }

    async fn submit(&self, job: serde_json::Value) {
        let job = Job::from_json(job.to_string().as_bytes(), &ValidationContext { allow_local_media: false }).unwrap();
        let queue = topology::Layout::default()
            .declare_task_queues(self.bus.as_ref(), job.kind(), job.profile())
            .await
            .unwrap()
            .remove(0);
        let id = job.job_id().to_string();
        let body = serde_json::to_vec(&Task::first(job)).unwrap();
        self.bus.publish("", &queue, Message::new(id, body)).await.unwrap();
    }

    /// The next `finished` result within `wait`, if any.
    async fn finished(&mut self, wait: Duration) -> Option<JobResult> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let d = tokio::time::timeout_at(deadline, self.events.next()).await.ok()??.unwrap();
            let ev: Event = serde_json::from_slice(&d.message.body).unwrap();
            d.ack().await.unwrap();
            match ev.event {
                EventBody::Finished { result } => return Some(*result),
                EventBody::State { state: protocol::JobState::Retrying, .. } => self.retries += 1,
                _ => {}
            }
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop.cancel();
        let _ = std::process::Command::new("rabbitmqctl").args(["-q", "delete_vhost", &self.vhost]).output();
    }
}

fn rabbitmqctl(args: &[&str]) {
    let out = std::process::Command::new("rabbitmqctl").arg("-q").args(args).output().expect("rabbitmqctl on PATH");
    assert!(out.status.success(), "rabbitmqctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Uploads a small generated video as `t1/in/{name}` and returns its `s3://` URI.
async fn upload_sample(store: &S3Store, name: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join(name);
    worker::samples::write_sample_video(&src, 3.0, 25, 160, 90, 2).unwrap();
    let key = format!("t1/in/{name}");
    store.put_file(&key, &src, &meta("video/mp4")).await.unwrap();
    format!("s3://{}/{key}", bucket(store))
}

fn edit_job(id: &str, source: &str) -> serde_json::Value {
    json!({
        "v": 1, "kind": "edit", "job_id": id, "tenant": "t1", "source": source,
        "guidance": { "instruction": "x" },
        "options": { "clips": 2, "clip_seconds_min": 1.0, "clip_seconds_max": 1.0 }
    })
}

async fn check_committed(direct: &S3Store, result: &JobResult, job: &str) {
    assert_eq!(result.status, JobStatus::Succeeded, "{:?}", result.error);
    assert!(result.outputs.len() >= 3, "{:?}", result.outputs);
    let prefix = format!("s3://{}/t1/{job}/", bucket(direct));
    for out in &result.outputs {
        let key = out.uri.strip_prefix(&format!("s3://{}/", bucket(direct)));
        assert!(out.uri.starts_with(&prefix), "{}", out.uri);
        let bytes = direct.get(key.unwrap()).await.unwrap().unwrap();
        assert_eq!(sha256_hex(&bytes), out.sha256, "{}", out.uri);
        assert_eq!(bytes.len() as u64, out.bytes);
    }
    let manifest = direct.get(&format!("t1/{job}/{RESULT_FILE}")).await.unwrap().expect("result.json committed");
    let stored: JobResult = serde_json::from_slice(&manifest).unwrap();
    assert_eq!(stored.outputs, result.outputs);
}

/// The request path of each PUT under `t1/{job}/`, in the order the server saw them.
fn job_puts(proxy: &Proxy, bucket: &str, job: &str) -> Vec<String> {
    let prefix = format!("PUT /{bucket}/t1/{job}/");
    proxy
        .puts()
        .into_iter()
        .filter_map(|l| l.strip_prefix(&prefix).map(|rest| rest.split([' ', '?']).next().unwrap().to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_writes_outputs_then_result_json_last() {
    let direct = fresh("wk", |_| {}).await;
    let proxy = Proxy::start(authority(&server().endpoint)).await;
    let mut cfg = direct.config().clone();
    cfg.endpoint = Some(proxy.endpoint.clone());
    let mut fleet = Fleet::start(connect(cfg).await).await;
    let source = upload_sample(&direct, "a.mp4").await;
    fleet.submit(edit_job("job-1", &source)).await;
    let result = fleet.finished(Duration::from_secs(120)).await.unwrap();
    check_committed(&direct, &result, "job-1").await;
    let puts = job_puts(&proxy, &bucket(&direct), "job-1");
    // The attempt's start marker, every output, then the manifest.
    assert_eq!(puts.len(), result.outputs.len() + 2, "{puts:?}");
    assert_eq!(puts.first().unwrap(), "attempt-1.json", "{puts:?}");
    assert_eq!(puts.last().unwrap(), RESULT_FILE, "{puts:?}");
    // Every output's metadata says what made it.
    let key = result.outputs[0].uri.strip_prefix(&format!("s3://{}/", bucket(&direct))).unwrap();
    let head = direct.client().head_object().bucket(bucket(&direct)).key(key).send().await.unwrap();
    let m = head.metadata().unwrap();
    assert_eq!(m.get("ai-generated").map(String::as_str), Some("true"));
    assert_eq!(m.get("job-id").map(String::as_str), Some("job-1"));
    assert!(m.get("generator").is_some_and(|g| g.ends_with("reelforge-editor")), "{m:?}");
    assert_eq!(m.get("watermark"), result.outputs[0].watermark.as_ref());
    assert_eq!(head.content_type(), Some(result.outputs[0].content_type.as_str()));

    // Redelivered (submitted again): the manifest stops a second run; nothing is re-uploaded.
    let before = job_puts(&proxy, &bucket(&direct), "job-1").len();
    fleet.submit(edit_job("job-1", &source)).await;
    let again = fleet.finished(Duration::from_secs(60)).await.unwrap();
    assert_eq!(again.outputs, result.outputs);
    assert_eq!(job_puts(&proxy, &bucket(&direct), "job-1").len(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_gone_mid_job_retries_on_the_ladder_and_leaves_no_manifest() {
    let direct = fresh("wkcut", |_| {}).await;
    let proxy = Proxy::start(authority(&server().endpoint)).await;
    let mut cfg = direct.config().clone();
    cfg.endpoint = Some(proxy.endpoint.clone());
    let mut fleet = Fleet::start_with(connect(cfg).await, |c| {
        c.max_attempts = 8;
        c.retry_delays_ms = vec![300, 600, 1200, 2400];
    })
    .await;
    let source = upload_sample(&direct, "b.mp4").await;

    // The server goes away when the job's second upload starts (one output already stored).
    let b = bucket(&direct);
    proxy.cut_when("/clip-02.mp4");
    fleet.submit(edit_job("job-2", &source)).await;
    // While it is down: no result, no manifest; the task goes up the retry ladder (never
    // requeued in a loop) and each attempt finds the server gone.
    assert!(fleet.finished(Duration::from_secs(8)).await.is_none(), "a job finished while its store was down");
    assert!(proxy.tripped.load(Ordering::SeqCst), "the cut never happened");
    let cut = job_puts(&proxy, &b, "job-2");
    assert_eq!(cut.len(), 3, "marker and uploads before the cut: {cut:?}");
    assert!(cut[1].ends_with("/clip-01.mp4") && cut[2].ends_with("/clip-02.mp4"), "{cut:?}");
    assert!(
        direct.get(&format!("t1/job-2/{RESULT_FILE}")).await.unwrap().is_none(),
        "no manifest for a job that died mid-upload"
    );
    assert!(fleet.retries >= 2, "retries while the server was down: {}", fleet.retries);
    assert!(proxy.refused.load(Ordering::SeqCst) >= 2, "the retried job kept trying");

    // The server is back: the next attempt runs the job cleanly to its manifest, and the first
    // attempt's partial upload is deleted.
    proxy.heal();
    let result =
        fleet.finished(Duration::from_secs(120)).await.expect("the retried job finished after the server came back");
    assert!(result.attempt >= 2, "{}", result.attempt);
    check_committed(&direct, &result, "job-2").await;
    let puts = job_puts(&proxy, &b, "job-2");
    assert_eq!(puts.last().unwrap(), RESULT_FILE, "{puts:?}");
    assert_eq!(puts.iter().filter(|p| *p == RESULT_FILE).count(), 1, "{puts:?}");
    let first_upload = format!("t1/job-2/{}", cut[1]);
    assert!(direct.get(&first_upload).await.unwrap().is_none(), "{first_upload} of the failed attempt is left");
}
