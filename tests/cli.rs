//! The `reelforge` binary as a user runs it.

use std::path::Path;
use std::process::Command;

fn reelforge() -> Command {
    Command::new(env!("CARGO_BIN_EXE_reelforge"))
}

#[test]
fn help_lists_every_subcommand() {
    let out = reelforge().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for cmd in ["demo", "scheduler", "worker", "submit", "status", "models", "train", "eval", "watermark"] {
        assert!(help.lines().any(|l| l.trim_start().starts_with(cmd)), "`{cmd}` missing from --help:\n{help}");
    }
}

#[test]
fn validate_reports_the_first_problem() {
    let dir = tempfile::tempdir().unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("protocol/examples/edit.json");
    let out = reelforge().arg("validate").arg(&example).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"v":1,"kind":"edit","job_id":"a","tenant":"t","source":"s3://bkt/../x","guidance":{}}"#)
        .unwrap();
    let out = reelforge().arg("validate").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("invalid_job: ") && text.contains("source"), "{text}");
}

fn ffprobe_ok(path: &Path) -> serde_json::Value {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-show_streams", "-show_format", "-of", "json"])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "ffprobe rejected {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn demo_ends_with_a_table_of_real_files() {
    let dir = tempfile::tempdir().unwrap();
    let out = reelforge().args(["demo", "--out"]).arg(dir.path()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let rows: Vec<&str> = stdout.lines().filter(|l| l.contains(".mp4") || l.contains(".jpg")).collect();
    assert!(rows.len() >= 4, "expected clips, a video and thumbnails in the table:\n{stdout}");
    let mut kinds = std::collections::BTreeSet::new();
    for row in rows {
        let path = row.split('┆').map(str::trim).find(|c| c.starts_with('/')).expect("a path column");
        let v = ffprobe_ok(Path::new(path));
        let codec = v["streams"][0]["codec_name"].as_str().unwrap().to_owned();
        if path.ends_with(".mp4") {
            assert_eq!(codec, "h264", "{path}");
            assert_eq!(v["streams"][0]["pix_fmt"], "yuv420p");
        } else {
            assert_eq!(codec, "mjpeg", "{path}");
        }
        kinds.insert(row.split('┆').nth(1).unwrap().trim().to_owned());
        // Every output is marked; the CLI finds the mark in the editor's outputs. (The demo's
        // creator outputs come from a 20-step tiny MCVD: 32×32 colour noise scaled up, whose
        // energy in the watermark's band exceeds the push cap, so their mark is not reliably
        // readable; natural content is covered by worker/tests/watermark.rs.)
        let out = reelforge().args(["watermark", "detect", path]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        if path.contains("/demo-edit-") {
            assert!(out.status.success(), "no watermark in {path}:\n{text}{}", String::from_utf8_lossy(&out.stderr));
            assert!(text.contains("payload") && text.contains("generator   reelforge-editor"), "{text}");
        }
    }
    assert_eq!(kinds.into_iter().collect::<Vec<_>>(), ["clip", "thumbnail", "video"]);
}

#[test]
fn watermark_detect_rejects_unmarked_media() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("plain.png");
    std::fs::write(&png, worker::media::encode_png(&worker::samples::textured_frame(320, 180, 0.0, 9)).unwrap())
        .unwrap();
    let mp4 = dir.path().join("plain.mp4");
    worker::samples::write_textured_video(&mp4, 1.0, 8, 256, 144, 9).unwrap();
    for f in [&png, &mp4] {
        let out = reelforge().args(["watermark", "detect"]).arg(f).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stdout));
        assert!(String::from_utf8_lossy(&out.stdout).contains("no watermark found"));
    }
    // Not media at all: an error, not a silent "none".
    let junk = dir.path().join("junk.bin");
    std::fs::write(&junk, b"not a video").unwrap();
    let out = reelforge().args(["watermark", "detect"]).arg(&junk).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("error"), "{}", String::from_utf8_lossy(&out.stderr));
}
