//! A fleet for integration tests: real `reelforge scheduler` and `reelforge worker` processes
//! against the real RabbitMQ on 127.0.0.1:5672, each test in a vhost of its own so tests run in
//! parallel without sharing queues. The vhost is deleted when the fleet is dropped.
//! [`Fleet::cluster`] runs one on the 3-node cluster of deploy/scripts/rabbitmq-cluster.sh
//! instead, with quorum queues.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bus::amqp::AmqpBus;
use bus::{Bus, Consumer, Message, topology};
use protocol::{Event, EventBody, JobResult, JobState};
use serde_json::{Value, json};

pub const RABBIT: &str = "amqp://guest:guest@127.0.0.1:5672";
/// The test garage node (`start_garage` in deploy/scripts/services.sh).
pub const GARAGE: &str = "http://127.0.0.1:3900";
pub const GARAGE_KEY_ID: &str = "GK7265656c666f7267652d7465";
pub const GARAGE_SECRET: &str = "7265656c666f7267652d746573742d7365637265742d6b65792d303030303031";

/// A store writing to `bucket` on the garage node (or cluster node) at `endpoint`, with the
/// test key.
pub async fn garage_store(bucket: &str, endpoint: &str) -> worker::storage::s3::S3Store {
    let mut cfg = worker::storage::s3::S3Config::new(bucket);
    cfg.endpoint = Some(endpoint.into());
    cfg.region = Some("garage".into());
    cfg.force_path_style = true;
    let creds = aws_sdk_s3::config::Credentials::new(GARAGE_KEY_ID, GARAGE_SECRET, None, None, "reelforge-test");
    let loader = aws_config::defaults(aws_config::BehaviorVersion::latest()).credentials_provider(creds);
    worker::storage::s3::S3Store::connect_with(cfg, loader).await.expect("garage (run deploy/scripts/test.sh)")
}

/// The cluster's control script; node i listens on 127.0.0.1:570i.
pub const CLUSTER_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/scripts/rabbitmq-cluster.sh");

/// How a fleet reaches `rabbitmqctl`: the single node's, or one cluster node's (through the
/// cluster script, which knows its cookie).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Broker {
    Single,
    /// The cluster, through node i.
    Cluster(u8),
}

impl Broker {
    pub fn ctl(self, args: &[&str]) -> std::process::Output {
        match self {
            Broker::Single => Command::new("rabbitmqctl").arg("-q").args(args).output().expect("rabbitmqctl on PATH"),
            Broker::Cluster(i) => {
                Command::new("bash").arg(CLUSTER_SCRIPT).arg("ctl").arg(i.to_string()).args(args).output().unwrap()
            }
        }
    }

    fn must(self, args: &[&str]) {
        let out = self.ctl(args);
        assert!(out.status.success(), "rabbitmqctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

fn rabbitmqctl(args: &[&str]) {
    Broker::Single.must(args);
}

pub struct Fleet {
    pub vhost: String,
    pub url: String,
    pub dir: tempfile::TempDir,
    pub bus: AmqpBus,
    events: Box<dyn Consumer>,
    pub seen: Vec<Event>,
    procs: HashMap<String, Child>,
    pub sample: PathBuf,
    /// Where `rabbitmqctl` goes.
    pub broker: Broker,
    /// Environment every process of the fleet gets besides the defaults.
    env: Vec<(String, String)>,
}

impl Fleet {
    pub async fn new(name: &str) -> Fleet {
        let vhost = format!("test-{name}-{}", std::process::id());
        rabbitmqctl(&["add_vhost", &vhost]);
        rabbitmqctl(&["set_permissions", "-p", &vhost, "guest", ".*", ".*", ".*"]);
        let url = format!("{RABBIT}/{vhost}");
        let bus = AmqpBus::connect(&url).await.expect("RabbitMQ on 127.0.0.1:5672 (run deploy/scripts/test.sh)");
        topology::Layout::default().declare_core(&bus).await.unwrap();
        let q = topology::declare_feed(&bus, "test", "events", topology::EVENTS_EXCHANGE, "job.#").await.unwrap();
        let events = bus.consume(&q, 1000).await.unwrap();
        Fleet::assemble(vhost, url, bus, events, Broker::Single, Vec::new())
    }

    /// A fleet on the 3-node cluster (started by `rabbitmq-cluster.sh start`) with quorum
    /// queues. Its processes get every node's URL, node 1 first; the queues are declared through
    /// node 1, so node 1 leads them all. The test itself follows events through node 3 only.
    pub async fn cluster(name: &str) -> Fleet {
        let vhost = format!("test-{name}-{}", std::process::id());
        let broker = Broker::Cluster(1);
        broker.must(&["add_vhost", &vhost]);
        broker.must(&["set_permissions", "-p", &vhost, "guest", ".*", ".*", ".*"]);
        let node = |i: u8| format!("amqp://guest:guest@127.0.0.1:570{i}/{vhost}");
        let layout = topology::Layout::new(topology::QueueType::Quorum);
        let url = [node(1), node(2), node(3)].join(",");
        let first = AmqpBus::connect(&url).await.expect("the cluster (deploy/scripts/rabbitmq-cluster.sh start)");
        layout.declare_core(&first).await.unwrap();
        let bus = AmqpBus::connect(&node(3)).await.unwrap();
        let q = topology::declare_feed(&bus, "test", "events", topology::EVENTS_EXCHANGE, "job.#").await.unwrap();
        let events = bus.consume(&q, 1000).await.unwrap();
        Fleet::assemble(vhost, url, bus, events, broker, vec![("REELFORGE_QUEUE_TYPE".into(), "quorum".into())])
    }

    fn assemble(
        vhost: String,
        url: String,
        bus: AmqpBus,
        events: Box<dyn Consumer>,
        broker: Broker,
        env: Vec<(String, String)>,
    ) -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        let sample = dir.path().join("sample.mp4");
        worker::samples::write_sample_video(&sample, 2.0, 10, 96, 64, 1).unwrap();
        Fleet { vhost, url, dir, bus, events, seen: Vec::new(), procs: HashMap::new(), sample, broker, env }
    }

    fn spawn(&mut self, name: &str, args: &[&str]) {
        let log = std::fs::File::create(self.dir.path().join(format!("{name}.log"))).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_reelforge"))
            .args(args)
            .env("REELFORGE_AMQP_URL", &self.url)
            .env("REELFORGE_ALLOW_LOCAL_MEDIA", "true")
            .env("RUST_LOG", "info")
            // The test garage node's fixed key (deploy/scripts/services.sh), for S3 workers.
            .env("AWS_ACCESS_KEY_ID", GARAGE_KEY_ID)
            .env("AWS_SECRET_ACCESS_KEY", GARAGE_SECRET)
            .env("AWS_REGION", "garage")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.procs.insert(name.to_owned(), child);
    }

    /// Starts a scheduler replica; returns its API address.
    pub fn scheduler(&mut self, name: &str, extra: &[&str]) -> String {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut args = vec!["scheduler", "--id", name, "--listen", &listen];
        args.extend_from_slice(extra);
        self.spawn(name, &args);
        format!("http://{listen}")
    }

    /// Starts a worker storing under the fleet's store dir; returns the address of its HTTP
    /// server (`/metrics`, `/healthz`, `/readyz`).
    pub fn worker(&mut self, name: &str, extra: &[&str]) -> String {
        let store = self.store();
        let store = store.to_str().unwrap().to_owned();
        let listen = format!("127.0.0.1:{}", free_port());
        let mut args = vec![
            "worker",
            "--id",
            name,
            "--store-dir",
            &store,
            "--retry-delays-ms",
            "200,400",
            "--heartbeat-s",
            "1",
            "--listen",
            &listen,
        ];
        args.extend_from_slice(extra);
        self.spawn(name, &args);
        format!("http://{listen}")
    }

    pub fn kill(&mut self, name: &str) {
        if let Some(mut c) = self.procs.remove(name) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM and waits (up to 2 minutes: a draining worker may take its grace period)
    /// for the process to exit; returns its exit code.
    pub fn terminate(&mut self, name: &str) -> Option<i32> {
        let mut c = self.procs.remove(name)?;
        unsafe_sigterm(c.id());
        for _ in 0..1200 {
            if let Ok(Some(status)) = c.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = c.kill();
        None
    }

    /// Waits for a process to exit by itself.
    pub fn wait_exit(&mut self, name: &str, timeout: Duration) -> Option<i32> {
        let c = self.procs.get_mut(name)?;
        let t0 = std::time::Instant::now();
        while t0.elapsed() < timeout {
            if let Ok(Some(status)) = c.try_wait() {
                self.procs.remove(name);
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }

    pub fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    pub fn edit(&self, id: &str) -> Value {
        json!({
            "v": 1, "kind": "edit", "job_id": id, "tenant": "t1",
            "source": format!("file://{}", self.sample.display()),
            "guidance": { "instruction": "x" },
            "options": { "clips": 1, "clip_seconds_min": 1.0, "clip_seconds_max": 1.0 }
        })
    }

    /// A job that takes a few seconds: many clips cut from a longer video.
    pub fn slow_edit(&self, id: &str) -> Value {
        let long = self.dir.path().join("long.mp4");
        if !long.exists() {
            worker::samples::write_sample_video(&long, 16.0, 25, 640, 360, 4).unwrap();
        }
        json!({
            "v": 1, "kind": "edit", "job_id": id, "tenant": "t1",
            "source": format!("file://{}", long.display()),
            "guidance": { "instruction": "x" },
            "options": { "clips": 16, "clip_seconds_min": 1.0, "clip_seconds_max": 1.0 }
        })
    }

    pub async fn submit(&self, job: &Value) {
        let id = job["job_id"].as_str().unwrap_or("x").to_owned();
        let p = job["priority"].as_u64().unwrap_or(4) as u8;
        self.submit_raw(&id, job.to_string().into_bytes(), p).await;
    }

    pub async fn submit_raw(&self, id: &str, body: Vec<u8>, priority: u8) {
        let msg = Message::new(id, body).with_priority(priority);
        self.bus.publish(topology::JOBS_EXCHANGE, topology::SUBMIT_KEY, msg).await.unwrap();
    }

    /// Reads events until `pred` holds for the last one; fails after `timeout`.
    pub async fn until(&mut self, timeout: Duration, pred: impl Fn(&Event) -> bool) -> Event {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let d = tokio::time::timeout_at(deadline, self.events.next())
                .await
                .unwrap_or_else(|_| panic!("timed out; events so far: {:#?}", self.brief()))
                .unwrap()
                .unwrap();
            let ev: Event = serde_json::from_slice(&d.message.body).unwrap();
            d.ack().await.unwrap();
            self.seen.push(ev.clone());
            if pred(&ev) {
                return ev;
            }
        }
    }

    /// Reads whatever events arrive during `period`.
    pub async fn drain(&mut self, period: Duration) {
        let deadline = tokio::time::Instant::now() + period;
        while let Ok(Some(Ok(d))) = tokio::time::timeout_at(deadline, self.events.next()).await {
            let ev: Event = serde_json::from_slice(&d.message.body).unwrap();
            d.ack().await.unwrap();
            self.seen.push(ev);
        }
    }

    /// Jobs whose id starts with `prefix` that reached `state`.
    pub fn count_prefix(&self, prefix: &str, state: JobState) -> usize {
        self.seen
            .iter()
            .filter(|e| e.job_id.as_str().starts_with(prefix))
            .filter(|e| matches!(e.event, EventBody::State { state: s, .. } if s == state))
            .count()
    }

    /// Waits until `id` has reached `state`, counting events already seen.
    pub async fn reached(&mut self, id: &str, state: JobState, timeout: Duration) {
        if self.count(id, state) > 0 {
            return;
        }
        self.until(timeout, |e| {
            e.job_id.as_str() == id && matches!(e.event, EventBody::State { state: s, .. } if s == state)
        })
        .await;
    }

    /// Waits until every id has a `finished` event; returns the results.
    pub async fn finished(&mut self, ids: &[&str], timeout: Duration) -> HashMap<String, JobResult> {
        let mut out: HashMap<String, JobResult> = self.results();
        while ids.iter().any(|id| !out.contains_key(*id)) {
            let ev = self.until(timeout, |e| matches!(e.event, EventBody::Finished { .. })).await;
            if let EventBody::Finished { result } = ev.event {
                out.insert(result.job_id.to_string(), *result);
            }
        }
        out
    }

    /// Results seen so far (the first `finished` per job).
    pub fn results(&self) -> HashMap<String, JobResult> {
        let mut out = HashMap::new();
        for e in &self.seen {
            if let EventBody::Finished { result } = &e.event {
                out.entry(result.job_id.to_string()).or_insert_with(|| (**result).clone());
            }
        }
        out
    }

    pub fn count(&self, id: &str, state: JobState) -> usize {
        self.seen
            .iter()
            .filter(|e| e.job_id.as_str() == id && matches!(e.event, EventBody::State { state: s, .. } if s == state))
            .count()
    }

    pub fn finished_count(&self, id: &str) -> usize {
        self.seen.iter().filter(|e| e.job_id.as_str() == id && matches!(e.event, EventBody::Finished { .. })).count()
    }

    fn brief(&self) -> Vec<String> {
        self.seen
            .iter()
            .map(|e| match &e.event {
                EventBody::State { state, detail } => format!("{} {} {:?}", e.job_id, state.as_str(), detail),
                EventBody::Progress { stage, .. } => format!("{} progress {}", e.job_id, stage.as_str()),
                EventBody::Finished { result } => {
                    format!("{} finished {:?} {:?}", e.job_id, result.status, result.error)
                }
            })
            .collect()
    }

    /// Every file stored under a job's folder, as paths relative to it (execution folders
    /// included), sorted.
    pub fn outputs_of(&self, tenant: &str, id: &str) -> Vec<String> {
        let root = self.store().join(tenant).join(id);
        let mut names = Vec::new();
        let mut dirs = vec![root.clone()];
        while let Some(dir) = dirs.pop() {
            for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    dirs.push(p);
                } else {
                    names.push(p.strip_prefix(&root).unwrap().to_string_lossy().into_owned());
                }
            }
        }
        names.sort();
        names
    }

    /// Closes the AMQP connections of the process named `name` in this fleet's vhost, as
    /// `rabbitmqctl close_connection` does when an operator or a network drops one; returns
    /// how many it closed.
    pub fn close_connections_of(&self, name: &str) -> usize {
        let out = self.broker.ctl(&["list_connections", "--no-table-headers", "pid", "vhost", "client_properties"]);
        let listing = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut closed = 0;
        for line in listing.lines() {
            let mut cols = line.splitn(3, '\t');
            let (Some(pid), Some(vhost), Some(props)) = (cols.next(), cols.next(), cols.next()) else { continue };
            if vhost == self.vhost && props.contains(&format!("{name}\"")) && props.contains("reelforge ") {
                self.broker.must(&["close_connection", pid, "closed by the test"]);
                closed += 1;
            }
        }
        closed
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let names: Vec<String> = self.procs.keys().cloned().collect();
        for n in names {
            self.kill(&n);
        }
        if std::thread::panicking() {
            for entry in std::fs::read_dir(self.dir.path()).into_iter().flatten().flatten() {
                let p = entry.path();
                if p.extension().is_some_and(|e| e == "log") {
                    eprintln!("==== {} ====\n{}", p.display(), tail(&p));
                }
            }
        }
        // REELFORGE_TEST_KEEP_VHOST=1 keeps a failed test's queues for a look with rabbitmqctl.
        if !(std::thread::panicking() && std::env::var_os("REELFORGE_TEST_KEEP_VHOST").is_some()) {
            let _ = self.broker.ctl(&["delete_vhost", &self.vhost]);
        }
    }
}

fn tail(p: &Path) -> String {
    let s = std::fs::read_to_string(p).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn unsafe_sigterm(pid: u32) {
    let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
}

/// Polls an HTTP GET until it answers 200, or panics.
pub async fn wait_http(url: &str) {
    for _ in 0..100 {
        if let Ok(r) = reqwest::get(url).await
            && r.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{url} did not come up");
}
