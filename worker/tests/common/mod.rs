//! Helpers shared by the worker's integration tests (and `tests/editor_embedded.rs`): the ffmpeg
//! and ffprobe CLIs (an encoder and a prober independent of ours), MP4 box inspection, and a
//! C2PA certificate chain made with the openssl CLI.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
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

pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").current_dir(dir).args(args).output().expect("the openssl CLI runs");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A P-256 CA and a signer it issued (document-signing profile: not a CA, digitalSignature,
/// emailProtection EKU), as C2PA requires. Returns (chain, signer key, CA certificate).
pub fn certificates(dir: &Path) -> (PathBuf, PathBuf, String) {
    std::fs::write(
        dir.join("ext.cnf"),
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=emailProtection\n\
         subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n",
    )
    .unwrap();
    for args in [
        &["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca.sec1"][..],
        &["pkcs8", "-topk8", "-nocrypt", "-in", "ca.sec1", "-out", "ca.key"],
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            "ca.key",
            "-sha256",
            "-days",
            "30",
            "-subj",
            "/CN=reelforge test CA/O=reelforge",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-out",
            "ca.pem",
        ],
        &["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ee.sec1"],
        &["pkcs8", "-topk8", "-nocrypt", "-in", "ee.sec1", "-out", "ee.key"],
        &["req", "-new", "-key", "ee.key", "-subj", "/CN=reelforge test signer/O=reelforge", "-out", "ee.csr"],
        &[
            "x509",
            "-req",
            "-in",
            "ee.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "30",
            "-sha256",
            "-extfile",
            "ext.cnf",
            "-out",
            "ee.pem",
        ],
    ] {
        openssl(dir, args);
    }
    let chain =
        [std::fs::read_to_string(dir.join("ee.pem")).unwrap(), std::fs::read_to_string(dir.join("ca.pem")).unwrap()]
            .concat();
    std::fs::write(dir.join("chain.pem"), chain).unwrap();
    (dir.join("chain.pem"), dir.join("ee.key"), std::fs::read_to_string(dir.join("ca.pem")).unwrap())
}
