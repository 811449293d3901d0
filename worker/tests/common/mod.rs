//! Helpers shared by the worker's integration tests: the ffmpeg and ffprobe CLIs (an
//! encoder and a prober independent of ours) and MP4 box inspection.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

use serde_json::Value;

pub fn ffmpeg_cli(args: &[&str]) {
    let out = Command::new("ffmpeg").args(["-v", "error", "-nostdin", "-y"]).args(args).output().expect("run ffmpeg");
    assert!(out.status.success(), "ffmpeg {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

pub fn ffprobe(path: &Path) -> Value {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-show_streams", "-show_format", "-of", "json"])
        .arg(path)
        .output()
        .expect("run ffprobe");
    assert!(out.status.success(), "ffprobe failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("ffprobe json")
}

pub fn video_stream(v: &Value) -> &Value {
    v["streams"].as_array().and_then(|s| s.iter().find(|s| s["codec_type"] == "video")).expect("video stream")
}

pub fn json_f64(v: &Value) -> f64 {
    v.as_str().and_then(|s| s.parse().ok()).or_else(|| v.as_f64()).expect("number")
}

/// Top-level MP4 box types in file order.
pub fn top_level_boxes(path: &Path) -> Vec<String> {
    let data = std::fs::read(path).expect("read mp4");
    let mut pos = 0usize;
    let mut boxes = Vec::new();
    while pos + 8 <= data.len() {
        let size32 = u32::from_be_bytes(data[pos..pos + 4].try_into().unwrap()) as u64;
        let kind = String::from_utf8_lossy(&data[pos + 4..pos + 8]).to_string();
        let size = match size32 {
            0 => (data.len() - pos) as u64,
            1 => u64::from_be_bytes(data[pos + 8..pos + 16].try_into().unwrap()),
            n => n,
        };
        boxes.push(kind);
        if size < 8 {
            break;
        }
        pos += size as usize;
    }
    boxes
}

pub fn assert_faststart(path: &Path) {
    let boxes = top_level_boxes(path);
    let moov = boxes.iter().position(|b| b == "moov").expect("moov box");
    let mdat = boxes.iter().position(|b| b == "mdat").expect("mdat box");
    assert!(moov < mdat, "moov must precede mdat: {boxes:?}");
}

/// Check an MP4 we wrote: h264, yuv420p, size, duration, faststart.
pub fn assert_valid_output(path: &Path, width: u32, height: u32, duration_s: f64, tolerance_s: f64) -> Value {
    let v = ffprobe(path);
    let s = video_stream(&v);
    assert_eq!(s["codec_name"], "h264");
    assert_eq!(s["pix_fmt"], "yuv420p");
    assert_eq!(s["width"].as_u64(), Some(u64::from(width)));
    assert_eq!(s["height"].as_u64(), Some(u64::from(height)));
    let dur = json_f64(&v["format"]["duration"]);
    assert!((dur - duration_s).abs() <= tolerance_s, "duration {dur} vs expected {duration_s}");
    assert_faststart(path);
    v
}
