//! Frames analysed per second by the editor's analysis stage (decode at 4 fps + CLIP
//! preprocessing + batched embedding) on a synthetic 720p video, side by side with decoding
//! alone (the ffmpeg CLI, and our decoder without a model), for the tiny CLIP and a
//! ViT-B/32-sized one (random weights: the same arithmetic as openai/clip-vit-base-patch32).
//! Also the split of one batch's time between preprocessing and the network, in f32 and in f16.
//!
//! `cargo run --profile dev -p reelforge-worker --example clip_bench -- [SECONDS] [RUNS]`
//! (defaults 60 s, 3 runs; medians are reported).

mod timing;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use timing::time;

use candle_core::{DType, Device};
use worker::media::{self, MediaLimits};
use worker::models::clip::{self, Clip, ClipConfig};
use worker::models::preprocess::Frames;
use worker::pipeline::edit::{ANALYSIS_FPS, FrameAnalysis};
use worker::pipeline::{JobContext, NoProgress};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let seconds: f64 = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(60.0);
    let runs: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(3);
    let tmp = tempfile::tempdir()?;
    let src = tmp.path().join("src.mp4");
    eprintln!("writing a {seconds} s 1280x720 25 fps sample");
    worker::samples::write_sample_video(&src, seconds, 25, 1280, 720, 6)?;
    let limits = MediaLimits::default();
    let info = media::probe(&src, &limits)?;
    let ctx = JobContext::new(tmp.path().to_owned(), limits, Arc::new(NoProgress), Arc::new(AtomicBool::new(false)));
    let frames = (info.duration_s * ANALYSIS_FPS).round();

    let ffmpeg = time(runs, || {
        let ok = Command::new("ffmpeg")
            .args(["-v", "error", "-i"])
            .arg(&src)
            .args(["-vf", &format!("fps={ANALYSIS_FPS}"), "-f", "null", "-"])
            .status()
            .expect("ffmpeg runs")
            .success();
        assert!(ok);
    });
    let decode = time(runs, || {
        FrameAnalysis::run(&src, &info, None, None, 27.0, &ctx).unwrap();
    });
    println!("| pipeline (60 s 720p → {frames} frames at {ANALYSIS_FPS} fps) | median s | frames/s |");
    println!("|---|---:|---:|");
    println!("| `ffmpeg -i src.mp4 -vf fps=4 -f null -` (decode alone) | {ffmpeg:.2} | {:.0} |", frames / ffmpeg);
    println!("| our decode + sharpness + shot detection, no model | {decode:.2} | {:.0} |", frames / decode);

    let mut split = Vec::new();
    for (name, cfg) in [("tiny", ClipConfig::tiny(clip::tiny_vocab_size())), ("ViT-B/32", ClipConfig::vit_b32())] {
        let dir = tmp.path().join(name.replace('/', "-"));
        clip::init_random(&dir, &cfg, 6)?;
        let model = Clip::load(&dir, &Device::Cpu)?;
        let full = time(runs, || {
            FrameAnalysis::run(&src, &info, Some(&model), None, 27.0, &ctx).unwrap();
        });
        println!(
            "| decode + preprocess + embed, {name} CLIP (batch {}) | {full:.2} | {:.1} |",
            model.batch,
            frames / full
        );
        split.push((format!("{name} f32"), batch_split(&model, runs)));
        let half = Clip::load_as(&dir, &Device::Cpu, DType::F16)?;
        split.push((format!("{name} f16 (`--clip-f16`)"), batch_split(&half, runs)));
    }
    println!();
    println!("| one batch of 16 frames (398x224) | preprocess ms | network ms |");
    println!("|---|---:|---:|");
    for (name, (pre, net)) in split {
        println!("| {name} | {:.1} | {:.1} |", pre * 1e3, net * 1e3);
    }
    Ok(())
}

/// Median time to preprocess a batch of 16 decoded-size frames, and to run the network on it.
fn batch_split(model: &Clip, runs: usize) -> (f64, f64) {
    let frames: Vec<_> = (0..16).map(|i| worker::samples::sample_frame(398, 224, i as f64 * 0.25, 60.0, 6)).collect();
    let batch = || model.processor().tensor(Frames::Rgb(&frames), &Device::Cpu, model.dtype()).unwrap();
    let pre = time(runs, || {
        batch();
    });
    let pixels = batch();
    let net = time(runs, || {
        model.embed_pixels(&pixels).unwrap();
    });
    (pre, net)
}
