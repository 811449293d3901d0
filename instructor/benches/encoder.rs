//! Sentences/s of the text encoder against sentence-transformers (PyTorch, CPU), side by side in
//! one run: the same 256 sentences (`benches/minilm_sentences.json`, dumped by
//! `benches/minilm_torch.py`), the same batch size, alternating the two implementations each
//! round so that both see the same machine; medians.
//!
//! ```sh
//! source deploy/scripts/lib.sh && ensure_minilm
//! python3 -m venv ~/.cache/reelforge/st-venv && ~/.cache/reelforge/st-venv/bin/pip install torch sentence-transformers
//! REELFORGE_ST_PYTHON=~/.cache/reelforge/st-venv/bin/python \
//!   cargo bench -p reelforge-instructor --bench encoder --profile dev -- [--batch 32] [--rounds 5]
//! ```
//! Without `REELFORGE_ST_PYTHON` only the Rust side runs.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use candle_core::Device;
use instructor::TextEncoder;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() {
    let batch = arg("--batch", 32);
    let rounds = arg("--rounds", 5);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = PathBuf::from(std::env::var("REELFORGE_MINILM").expect("set REELFORGE_MINILM (deploy/scripts/lib.sh)"));
    let sentences: Vec<String> =
        serde_json::from_slice(&std::fs::read(root.join("benches/minilm_sentences.json")).expect("sentences"))
            .expect("a JSON array of strings");
    let enc = TextEncoder::load(&dir, &Device::Cpu).expect("load").with_batch(batch);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    enc.encode(&sentences).expect("warm-up");
    let python = std::env::var("REELFORGE_ST_PYTHON").ok();
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let t = Instant::now();
        enc.encode(&sentences).expect("encode");
        ours.push(t.elapsed().as_secs_f64());
        if let Some(py) = &python {
            // One timed repeat per round (the script warms up first, outside its timing).
            let out = Command::new(py)
                .arg(root.join("benches/minilm_torch.py"))
                .args(["--model", dir.to_str().expect("utf-8 path"), "--batch", &batch.to_string()])
                .args(["--threads", &threads.to_string(), "--repeats", "1"])
                .env("HF_HUB_OFFLINE", "1")
                .output()
                .expect("run benches/minilm_torch.py");
            let line = String::from_utf8_lossy(&out.stdout);
            let v: serde_json::Value = serde_json::from_str(line.lines().last().unwrap_or(""))
                .unwrap_or_else(|e| panic!("minilm_torch.py: {e}: {line}{}", String::from_utf8_lossy(&out.stderr)));
            theirs.push(v["median_s"].as_f64().expect("median_s"));
        }
    }
    let n = sentences.len() as f64;
    let ours = median(ours);
    println!(
        "{{\"impl\":\"reelforge (candle)\",\"batch\":{batch},\"threads\":{threads},\"sentences\":{n},\"median_s\":{ours:.4},\"sentences_per_s\":{:.1}}}",
        n / ours
    );
    if !theirs.is_empty() {
        let theirs = median(theirs);
        println!(
            "{{\"impl\":\"sentence-transformers\",\"batch\":{batch},\"threads\":{threads},\"sentences\":{n},\"median_s\":{theirs:.4},\"sentences_per_s\":{:.1}}}",
            n / theirs
        );
        println!("ratio (ours / theirs, sentences/s): {:.2}", theirs / ours);
    }
}
