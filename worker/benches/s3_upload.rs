//! Upload throughput of a 64 MiB output through `S3Store::put_file`: one `PutObject` against
//! a multipart upload (8 MiB parts, 4 in flight), alternated in one run, medians of N rounds.
//! Needs the S3 server of the tests (`bash deploy/scripts/test.sh` starts it); same
//! `REELFORGE_TEST_S3_*` overrides. `REELFORGE_BENCH_RUNS` sets N (default 7).

use std::time::Instant;

use aws_sdk_s3::config::{BehaviorVersion, Credentials};
use worker::storage::s3::{S3Config, S3Store, UPLOAD_CONCURRENCY};
use worker::storage::{ObjectMeta, Store};

const SIZE: usize = 64 * 1024 * 1024;

fn var(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.into())
}

async fn store(bucket: &str, multipart_threshold: u64, part_size: u64) -> S3Store {
    let mut cfg = S3Config::new(bucket);
    cfg.endpoint = Some(var("REELFORGE_TEST_S3_ENDPOINT", "http://127.0.0.1:3900"));
    cfg.region = Some(var("REELFORGE_TEST_S3_REGION", "garage"));
    cfg.force_path_style = true;
    cfg.multipart_threshold = multipart_threshold;
    cfg.part_size = part_size;
    let creds = Credentials::new(
        var("REELFORGE_TEST_S3_ACCESS_KEY_ID", "GK7265656c666f7267652d7465"),
        var("REELFORGE_TEST_S3_SECRET_ACCESS_KEY", "7265656c666f7267652d746573742d7365637265742d6b65792d303030303031"),
        None,
        None,
        "reelforge-bench",
    );
    let loader = aws_config::defaults(BehaviorVersion::latest()).credentials_provider(creds);
    S3Store::connect_with(cfg, loader).await.expect("connect to the test S3 server")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let runs: usize = var("REELFORGE_BENCH_RUNS", "7").parse().expect("a number of runs");
    let bucket = format!("bench-{}", std::process::id());
    let single = store(&bucket, SIZE as u64, 8 << 20).await;
    let multi = store(&bucket, 16 << 20, 8 << 20).await;
    single
        .client()
        .create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("create the bench bucket (is the server up? bash deploy/scripts/test.sh)");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("out.mp4");
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let data: Vec<u8> = (0..SIZE)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(&file, &data).unwrap();
    let meta = ObjectMeta { content_type: "video/mp4".into(), ..Default::default() };
    // One warm-up each (connections, server caches), then alternate.
    let (mut t_single, mut t_multi) = (Vec::new(), Vec::new());
    for round in 0..=runs {
        for (name, s, times) in [("single", &single, &mut t_single), ("multipart", &multi, &mut t_multi)] {
            let t0 = Instant::now();
            let obj = s.put_file(&format!("bench/{name}-{round}.mp4"), &file, &meta).await.expect("upload");
            let secs = t0.elapsed().as_secs_f64();
            assert_eq!(obj.bytes, SIZE as u64);
            if round > 0 {
                times.push(secs);
            }
        }
    }
    let mib = SIZE as f64 / (1024.0 * 1024.0);
    let (s, m) = (median(t_single), median(t_multi));
    println!("64 MiB upload, median of {runs} runs (after one warm-up):");
    println!("  single PutObject          {:7.3} s  {:7.1} MiB/s", s, mib / s);
    println!("  multipart 8 MiB x{UPLOAD_CONCURRENCY} in flight {:7.3} s  {:7.1} MiB/s", m, mib / m);
    println!("  multipart / single throughput: {:.2}x", s / m);
}
