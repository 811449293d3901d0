//! The broker restarted mid-run loses no job. In a test binary of its own: restarting
//! RabbitMQ's application drops every connection, so nothing else may share the broker then
//! (cargo runs test binaries one at a time).

mod support;

use std::process::Command;
use std::time::Duration;

use support::Fleet;

fn rabbit_app(cmd: &str) {
    let out = Command::new("rabbitmqctl").args(["-q", cmd]).output().unwrap();
    assert!(out.status.success(), "rabbitmqctl {cmd}: {}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_mid_run_loses_no_job() {
    let mut f = Fleet::new("restart").await;
    f.scheduler("s1", &[]);
    f.worker("w1", &["--capacity", "2"]);
    let ids: Vec<String> = (0..8).map(|i| format!("b{i}")).collect();
    for id in &ids {
        f.submit(&f.slow_edit(id)).await;
    }
    // Once work is under way, restart the broker's application: every connection drops;
    // durable queues and persistent messages survive.
    f.finished(&["b0"], Duration::from_secs(120)).await;
    rabbit_app("stop_app");
    tokio::time::sleep(Duration::from_secs(2)).await;
    rabbit_app("start_app");
    // Events published while the test's own feed was gone are lost to the test, so the store's
    // manifests are the evidence: every job commits exactly one result.json.
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    loop {
        let done = ids.iter().filter(|id| f.store().join("t1").join(id).join("result.json").exists()).count();
        if done == ids.len() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{done}/{} jobs committed after the restart", ids.len());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for id in &ids {
        let r: protocol::JobResult =
            serde_json::from_slice(&std::fs::read(f.store().join("t1").join(id).join("result.json")).unwrap()).unwrap();
        assert_eq!(r.status, protocol::JobStatus::Succeeded, "{id}: {:?}", r.error);
        assert_eq!(r.outputs.len(), 17, "{id}");
    }
}
