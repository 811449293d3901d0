//! The edit and create pipelines on videos the tests make, outputs checked with ffprobe.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use protocol::{CreateJob, EditJob, ErrorCode, Job, OutputKind, ValidationContext};
use serde_json::json;
use worker::media::MediaLimits;
use worker::pipeline::create::CreatePipeline;
use worker::pipeline::edit::EditPipeline;
use worker::pipeline::{JobContext, NoProgress, PipelineError};

mod common;
use common::*;

fn ctx(dir: &Path) -> JobContext {
    JobContext::new(dir.to_owned(), MediaLimits::default(), Arc::new(NoProgress), Arc::new(AtomicBool::new(false)))
}

fn parse(v: serde_json::Value) -> Job {
    Job::from_json(v.to_string().as_bytes(), &ValidationContext { allow_local_media: true }).unwrap()
}

fn edit_job(src: &Path, options: serde_json::Value) -> EditJob {
    let Job::Edit(j) = parse(json!({
        "v": 1, "kind": "edit", "job_id": "e1", "tenant": "t", "source": format!("file://{}", src.display()),
        "guidance": { "instruction": "x" }, "options": options
    })) else {
        unreachable!()
    };
    j
}

fn create_job(src: &Path, mode: &str) -> CreateJob {
    let mut v = json!({
        "v": 1, "kind": "create", "job_id": "c1", "tenant": "t", "mode": mode,
        "frames": 10, "fps": 10, "size": { "width": 96, "height": 64 }
    });
    if mode != "generate" {
        v["conditioning"] = json!({ "source": format!("file://{}", src.display()), "start_s": 0.5, "end_s": 1.5 });
    }
    let Job::Create(j) = parse(v) else { unreachable!() };
    j
}

#[test]
fn edit_cuts_clips_and_a_thumbnail() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.mp4");
    worker::samples::write_sample_video(&src, 8.0, 25, 320, 180, 2).unwrap();
    let job = edit_job(
        &src,
        json!({ "clips": 2, "clip_seconds_min": 2.0, "clip_seconds_max": 3.0, "output_size": { "width": 160, "height": 90 } }),
    );
    let mut c = ctx(dir.path());
    let out = EditPipeline::default().run(&job, &src, &[], &mut c).unwrap();
    let clips: Vec<_> = out.artifacts.iter().filter(|a| a.kind == OutputKind::Clip).collect();
    assert_eq!(clips.len(), 2);
    for clip in &clips {
        let (s, e) = (clip.start_s.unwrap(), clip.end_s.unwrap());
        assert!((e - s - 3.0).abs() < 1e-6);
        assert_valid_output(&clip.path, 160, 90, 3.0, 0.1);
    }
    assert!(clips[0].end_s.unwrap() <= clips[1].start_s.unwrap());
    let thumb = out.artifacts.iter().find(|a| a.kind == OutputKind::Thumbnail).unwrap();
    let v = ffprobe(&thumb.path);
    assert_eq!(video_stream(&v)["codec_name"], "mjpeg");
    assert_eq!(video_stream(&v)["width"], 160);
    let stages: Vec<_> = c.timings().iter().map(|t| t.stage.as_str()).collect();
    assert_eq!(stages, ["probe", "decode", "select", "encode", "encode"]);
}

#[test]
fn video_shorter_than_a_clip_gives_one_whole_clip() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("short.mp4");
    worker::samples::write_sample_video(&src, 1.2, 25, 128, 72, 1).unwrap();
    let job = edit_job(&src, json!({ "clips": 3, "clip_seconds_min": 2.0 }));
    let out = EditPipeline::default().run(&job, &src, &[], &mut ctx(dir.path())).unwrap();
    let clips: Vec<_> = out.artifacts.iter().filter(|a| a.kind == OutputKind::Clip).collect();
    assert_eq!(clips.len(), 1);
    assert_valid_output(&clips[0].path, 128, 72, 1.2, 0.1);
}

#[test]
fn bad_media_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("noise.mp4");
    std::fs::write(&src, (0..50_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect::<Vec<_>>()).unwrap();
    let job = edit_job(&src, json!({}));
    let err = EditPipeline::default().run(&job, &src, &[], &mut ctx(dir.path())).unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidMedia, "{err}");
    assert!(!err.is_transient());
}

#[test]
fn generated_thumbnails_need_the_diffusion_model() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.mp4");
    worker::samples::write_sample_video(&src, 1.0, 10, 64, 64, 1).unwrap();
    let job = edit_job(&src, json!({ "thumbnail": "generate" }));
    let err = EditPipeline::default().run(&job, &src, &[], &mut ctx(dir.path())).unwrap_err();
    assert!(matches!(err, PipelineError::Unsupported(_)), "{err}");
}

#[test]
fn create_predicts_and_interpolates_from_conditioning() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.mp4");
    worker::samples::write_sample_video(&src, 3.0, 25, 192, 128, 1).unwrap();
    for mode in ["predict", "interpolate"] {
        let job = create_job(&src, mode);
        let out = CreatePipeline::default().run(&job, Some(&src), &mut ctx(dir.path())).unwrap();
        let video = out.artifacts.iter().find(|a| a.kind == OutputKind::Video).unwrap();
        let v = assert_valid_output(&video.path, 96, 64, 1.0, 0.15);
        assert_eq!(video_stream(&v)["nb_frames"], "10", "{mode}");
        assert!(out.artifacts.iter().any(|a| a.kind == OutputKind::Thumbnail));
        assert!(out.models[0].id.starts_with("baseline-linear"));
    }
}

#[test]
fn create_generate_needs_mcvd() {
    let dir = tempfile::tempdir().unwrap();
    let job = create_job(dir.path(), "generate");
    let err = CreatePipeline::default().run(&job, None, &mut ctx(dir.path())).unwrap_err();
    assert!(matches!(err, PipelineError::Unsupported(_)), "{err}");
}

#[test]
fn cancellation_stops_before_the_next_stage() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.mp4");
    worker::samples::write_sample_video(&src, 1.0, 10, 64, 64, 1).unwrap();
    let job = edit_job(&src, json!({}));
    let mut c = ctx(dir.path());
    c.cancel.store(true, std::sync::atomic::Ordering::Relaxed);
    let err = EditPipeline::default().run(&job, &src, &[], &mut c).unwrap_err();
    assert_eq!(err.code(), ErrorCode::Cancelled);
}
