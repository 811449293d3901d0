//! Prometheus scrapes a real fleet: a scheduler and a worker process run a job in a private
//! vhost, Debian's `prometheus` (installed by `deploy/scripts/test.sh`) scrapes their `/metrics`
//! with the project's alert rules loaded, and its HTTP API must return their series.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use protocol::JobStatus;
use serde_json::Value;
use support::{Fleet, free_port, wait_http};

/// A `prometheus` process, killed when dropped.
struct Prometheus {
    child: Child,
    api: String,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `prometheus` scraping `targets` (job name, host:port) every second, with storage and
/// logs under `dir` and the repository's alert rules loaded.
fn start_prometheus(dir: &Path, targets: &[(&str, &str)]) -> Prometheus {
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus/rules.yml");
    // A canary that must always be pending or firing: proof that an alert whose condition
    // holds shows up in ALERTS, so "no alert" below can fail.
    let canary = dir.join("canary.yml");
    std::fs::write(
        &canary,
        "groups:\n  - name: canary\n    rules:\n      - alert: ReelforgeTestCanary\n        expr: vector(1) > 0\n        for: 1h\n",
    )
    .unwrap();
    let mut config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\n  - {}\nscrape_configs:\n",
        rules.display(),
        canary.display()
    );
    for (job, target) in targets {
        config.push_str(&format!("  - job_name: {job}\n    static_configs:\n      - targets: ['{target}']\n"));
    }
    let config_path = dir.join("prometheus.yml");
    std::fs::write(&config_path, config).unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config_path.display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
        .arg(format!("--web.listen-address={listen}"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("`prometheus` on PATH (Debian package prometheus; deploy/scripts/test.sh installs it)");
    Prometheus { child, api: format!("http://{listen}") }
}

/// Fails unless `promtool check metrics` accepts the exposition (names, units, help texts).
fn promtool_check_metrics(exposition: &str) {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("`promtool` on PATH (Debian package prometheus)");
    child.stdin.take().unwrap().write_all(exposition.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && report.trim().is_empty(), "promtool check metrics: {report}\n{exposition}");
}

/// Runs an instant query; the result vector.
async fn query(api: &str, q: &str) -> Vec<Value> {
    let resp = reqwest::Client::new().get(format!("{api}/api/v1/query")).query(&[("query", q)]).send().await;
    let Ok(resp) = resp else { return Vec::new() };
    let body: Value = resp.json().await.unwrap_or_default();
    body["data"]["result"].as_array().cloned().unwrap_or_default()
}

/// Polls `q` until some series' value satisfies `pred`; returns the series, or panics.
async fn until_series(api: &str, q: &str, pred: impl Fn(f64) -> bool) -> Vec<Value> {
    let mut last = Vec::new();
    for _ in 0..60 {
        last = query(api, q).await;
        let ok = last.iter().any(|s| s["value"][1].as_str().and_then(|v| v.parse::<f64>().ok()).is_some_and(&pred));
        if ok {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("no series for {q} matched within 30 s; last answer: {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_scheduler_and_worker() {
    let mut f = Fleet::new("prometheus").await;
    let api = f.scheduler("s1", &[]);
    let worker = f.worker("w1", &[]);
    wait_http(&format!("{api}/readyz")).await;
    wait_http(&format!("{worker}/readyz")).await;
    f.submit(&f.edit("m1")).await;
    let r = f.finished(&["m1"], Duration::from_secs(90)).await.remove("m1").unwrap();
    assert_eq!(r.status, JobStatus::Succeeded, "{:?}", r.error);

    // Both expositions, with the job's series in them, pass Prometheus' own linter.
    for url in [&api, &worker] {
        let text = reqwest::get(format!("{url}/metrics")).await.unwrap().text().await.unwrap();
        promtool_check_metrics(&text);
    }

    let prom = start_prometheus(
        f.dir.path(),
        &[
            ("reelforge-scheduler", api.trim_start_matches("http://")),
            ("reelforge-worker", worker.trim_start_matches("http://")),
        ],
    );
    wait_http(&format!("{}/-/ready", prom.api)).await;
    until_series(&prom.api, r#"sum(up{job=~"reelforge-scheduler|reelforge-worker"})"#, |v| v == 2.0).await;
    let jobs = until_series(
        &prom.api,
        r#"reelforge_jobs_total{job="reelforge-worker",kind="edit",outcome="succeeded"}"#,
        |v| v == 1.0,
    )
    .await;
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    until_series(&prom.api, r#"reelforge_build_info{job="reelforge-scheduler",role="scheduler"}"#, |v| v == 1.0).await;
    until_series(&prom.api, r#"reelforge_build_info{job="reelforge-worker",role="worker"}"#, |v| v == 1.0).await;
    until_series(&prom.api, r#"reelforge_admissions_total{outcome="dispatched"}"#, |v| v == 1.0).await;
    // Every stage the edit pipeline ran has a histogram with one observation.
    let stages = until_series(&prom.api, "reelforge_stage_duration_seconds_count", |v| v == 1.0).await;
    let names: Vec<&str> = stages.iter().filter_map(|s| s["metric"]["stage"].as_str()).collect();
    for stage in ["download", "decode", "upload"] {
        assert!(names.contains(&stage), "stage {stage} missing from {names:?}");
    }
    until_series(&prom.api, r#"reelforge_queue_depth{queue="reelforge.dlq"}"#, |v| v == 0.0).await;
    until_series(&prom.api, r#"reelforge_queue_depth{queue="reelforge.tasks.edit.default"}"#, |v| v == 0.0).await;
    until_series(&prom.api, "reelforge_workers_live", |v| v == 1.0).await;
    // The alert rules loaded and evaluate against live series without errors, and none of
    // them is even pending on a healthy fleet (every rule has a `for:`, so "firing" alone could
    // never be seen this early). The canary shows that a true condition does show up.
    until_series(&prom.api, r#"ALERTS{alertname="ReelforgeTestCanary"}"#, |v| v == 1.0).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rules: Value = reqwest::get(format!("{}/api/v1/rules", prom.api)).await.unwrap().json().await.unwrap();
    let groups = rules["data"]["groups"].as_array().cloned().unwrap_or_default();
    let all: Vec<&Value> = groups.iter().flat_map(|g| g["rules"].as_array().into_iter().flatten()).collect();
    assert!(all.len() > 1, "alert rules not loaded: {rules}");
    for rule in &all {
        assert_eq!(rule["health"], "ok", "rule {} does not evaluate: {}", rule["name"], rule["lastError"]);
    }
    let alerts = query(&prom.api, r#"ALERTS{alertname!="ReelforgeTestCanary"}"#).await;
    assert!(alerts.is_empty(), "alerts pending or firing on a healthy fleet: {alerts:?}");
}
