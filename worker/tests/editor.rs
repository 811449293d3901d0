//! The editor with CLIP (the tiny checkpoint, through the real loading code) on sample videos
//! with known shots: shot detection, selection that follows the user's history, thumbnails,
//! and the refusals (no guidance, wrong embedding size, garbage history media).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use candle_core::Device;
use protocol::{EditJob, ErrorCode, Job, OutputKind, ValidationContext};
use serde_json::json;
use worker::media::{self, MediaLimits};
use worker::models::clip::Clip;
use worker::pipeline::edit::{EditPipeline, FrameAnalysis, HistoryMedia};
use worker::pipeline::{JobContext, NoProgress, PipelineError};
use worker::samples::{sample_frame, write_sample_video};

mod common;

fn ctx(dir: &Path) -> JobContext {
    JobContext::new(dir.to_owned(), MediaLimits::default(), Arc::new(NoProgress), Arc::new(AtomicBool::new(false)))
}

fn tiny_clip(dir: &Path) -> Arc<Clip> {
    let d = dir.join("clip");
    worker::models::clip::init_tiny(&d, 6).unwrap();
    Arc::new(Clip::load(&d, &Device::Cpu).unwrap())
}

fn edit_job(src: &Path, guidance: serde_json::Value, options: serde_json::Value) -> EditJob {
    let v = json!({
        "v": 1, "kind": "edit", "job_id": "e1", "tenant": "t", "source": format!("file://{}", src.display()),
        "guidance": guidance, "options": options
    });
    let Job::Edit(j) =
        Job::from_json(v.to_string().as_bytes(), &ValidationContext { allow_local_media: true }).unwrap()
    else {
        unreachable!()
    };
    j
}

/// 8 s, 4 shots of 2 s (the background changes at 2, 4 and 6 s).
fn sample(dir: &Path) -> std::path::PathBuf {
    let src = dir.join("src.mp4");
    write_sample_video(&src, 8.0, 20, 256, 144, 4).unwrap();
    src
}

#[test]
fn shots_are_found_where_the_background_changes() {
    let dir = tempfile::tempdir().unwrap();
    let src = sample(dir.path());
    let info = media::probe(&src, &MediaLimits::default()).unwrap();
    let a = FrameAnalysis::run(&src, &info, None, None, 27.0, &ctx(dir.path())).unwrap();
    assert_eq!(a.cuts.len(), 3, "cuts {:?}", a.cuts);
    for (cut, want) in a.cuts.iter().zip([2.0, 4.0, 6.0]) {
        assert!((cut - want).abs() <= 0.3, "cut at {cut}, expected about {want}");
    }
    assert!(a.embeddings.is_empty(), "no CLIP, no embeddings");
    // A threshold above any change finds one shot.
    let a = FrameAnalysis::run(&src, &info, None, None, 250.0, &ctx(dir.path())).unwrap();
    assert!(a.cuts.is_empty());
}

#[test]
fn concurrent_analyses_share_clip_forwards_and_embed_what_they_would_alone() {
    use std::sync::Mutex;
    use worker::batching::{BatchOptions, Batcher, ObserveFn};
    let dir = tempfile::tempdir().unwrap();
    let src = sample(dir.path());
    let info = media::probe(&src, &MediaLimits::default()).unwrap();
    let clip = tiny_clip(dir.path());
    let alone = FrameAnalysis::run(&src, &info, Some(&clip), None, 27.0, &ctx(dir.path())).unwrap();
    let sizes = Arc::new(Mutex::new(Vec::new()));
    let observe: ObserveFn = Box::new({
        let sizes = sizes.clone();
        move |n| sizes.lock().unwrap().push(n)
    });
    let opts = BatchOptions { max_rows: 64, window: std::time::Duration::from_secs(2) };
    let batcher = Batcher::spawn("clip-test", opts, worker::models::clip::image_forward(clip.clone()), observe);
    let together: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|_| s.spawn(|| FrameAnalysis::run(&src, &info, Some(&clip), Some(&batcher), 27.0, &ctx(dir.path()))))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap().unwrap()).collect()
    });
    for a in &together {
        assert_eq!(a.embeddings.len(), alone.embeddings.len());
        for (x, y) in a.embeddings.iter().zip(&alone.embeddings) {
            let d = x.iter().zip(y).map(|(p, q)| (p - q).abs()).fold(0f32, f32::max);
            assert!(d < 1e-5, "batched embedding differs by {d}");
        }
    }
    let sizes = sizes.lock().unwrap();
    assert!(sizes.contains(&2), "two analyses share forwards: {sizes:?}");
}

#[test]
fn selection_follows_the_users_history() {
    let dir = tempfile::tempdir().unwrap();
    let src = sample(dir.path());
    let clip = tiny_clip(dir.path());
    let pipeline = EditPipeline { clip: Some(clip.clone()), ..Default::default() };
    let options = json!({ "clips": 1, "clip_seconds_min": 1.5, "clip_seconds_max": 2.0,
        "output_size": { "width": 128, "height": 72 } });
    for (shot_start, t) in [(4.0, 5.0), (0.0, 1.0), (6.0, 7.0)] {
        // The user liked a frame of one shot: its embedding is the history.
        let liked = clip.embed_images(&[sample_frame(256, 144, t, 8.0, 4)]).unwrap().remove(0);
        let job = edit_job(&src, json!({ "history": [{ "item_id": "liked", "embedding": liked }] }), options.clone());
        let out = pipeline.run(&job, &src, &[], &mut ctx(dir.path())).unwrap();
        let clips: Vec<_> = out.artifacts.iter().filter(|a| a.kind == OutputKind::Clip).collect();
        assert_eq!(clips.len(), 1);
        let (s, e) = (clips[0].start_s.unwrap(), clips[0].end_s.unwrap());
        assert!(s >= shot_start - 0.3 && e <= shot_start + 2.3, "liked t={t}: clip {s}..{e}");
        assert!((-1.0..=1.0).contains(&clips[0].score.unwrap()), "a cosine");
        let thumb = out.artifacts.iter().find(|a| a.kind == OutputKind::Thumbnail).unwrap();
        let ts = thumb.start_s.unwrap();
        assert!(ts >= shot_start - 0.1 && ts < shot_start + 2.0, "liked t={t}: thumbnail at {ts}");
        assert!(out.models[0].id.starts_with("clip:clip@"), "{}", out.models[0].id);
        common::video_stream(&common::ffprobe(&clips[0].path));
    }
}

#[test]
fn history_media_is_embedded_on_the_worker() {
    let dir = tempfile::tempdir().unwrap();
    let src = sample(dir.path());
    let clip = tiny_clip(dir.path());
    let pipeline = EditPipeline { clip: Some(clip), ..Default::default() };
    let liked = dir.path().join("liked.jpg");
    std::fs::write(&liked, media::encode_jpeg(&sample_frame(256, 144, 5.0, 8.0, 4), 95).unwrap()).unwrap();
    let job = edit_job(
        &src,
        json!({ "history": [{ "item_id": "liked", "media": format!("file://{}", liked.display()) }] }),
        json!({ "clips": 2, "clip_seconds_min": 1.5, "clip_seconds_max": 2.0 }),
    );
    let history = [HistoryMedia { index: 0, path: liked.clone() }];
    let out = pipeline.run(&job, &src, &history, &mut ctx(dir.path())).unwrap();
    let clips: Vec<_> = out.artifacts.iter().filter(|a| a.kind == OutputKind::Clip).collect();
    assert_eq!(clips.len(), 2);
    assert!(clips[0].end_s.unwrap() <= clips[1].start_s.unwrap() + 1e-9, "time order, no overlap");
    assert!(clips.iter().any(|c| c.start_s.unwrap() >= 3.7 && c.end_s.unwrap() <= 6.3), "one clip in shot 3");
    // Garbage where the history image should be is the job's fault, not the worker's.
    std::fs::write(&liked, b"\xFF\xD8\xFFnot really a jpeg").unwrap();
    let err = pipeline.run(&job, &src, &history, &mut ctx(dir.path())).unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidJob, "{err}");
}

#[test]
fn an_instruction_alone_steers_and_is_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let src = sample(dir.path());
    let pipeline = EditPipeline { clip: Some(tiny_clip(dir.path())), ..Default::default() };
    let job = edit_job(&src, json!({ "instruction": "the best goal" }), json!({ "clips": 2, "clip_seconds_min": 1.0 }));
    let a = pipeline.run(&job, &src, &[], &mut ctx(dir.path())).unwrap();
    let b = pipeline.run(&job, &src, &[], &mut ctx(dir.path())).unwrap();
    let spans = |o: &worker::pipeline::PipelineOutput| {
        o.artifacts.iter().map(|x| (x.start_s, x.end_s, x.score)).collect::<Vec<_>>()
    };
    assert_eq!(spans(&a), spans(&b));
}

#[test]
fn refusals_are_typed() {
    let dir = tempfile::tempdir().unwrap();
    let src = sample(dir.path());
    let pipeline = EditPipeline { clip: Some(tiny_clip(dir.path())), ..Default::default() };
    let job = edit_job(&src, json!({}), json!({}));
    let err = pipeline.run(&job, &src, &[], &mut ctx(dir.path())).unwrap_err();
    assert!(matches!(err, PipelineError::BadGuidance(_)), "{err}");
    assert_eq!(err.code(), ErrorCode::InvalidJob);
    assert!(err.to_string().contains("no guidance"), "{err}");
    let job = edit_job(&src, json!({ "history": [{ "item_id": "x", "embedding": vec![0.5f32; 512] }] }), json!({}));
    let err = pipeline.run(&job, &src, &[], &mut ctx(dir.path())).unwrap_err();
    assert!(err.to_string().contains("512 dimensions"), "{err}");
}

#[test]
fn a_video_shorter_than_a_clip_gives_one_clip_of_all_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("short.mp4");
    write_sample_video(&src, 1.0, 20, 128, 72, 1).unwrap();
    let pipeline = EditPipeline { clip: Some(tiny_clip(dir.path())), ..Default::default() };
    let job = edit_job(&src, json!({ "instruction": "cat" }), json!({ "clips": 3, "clip_seconds_min": 2.0 }));
    let out = pipeline.run(&job, &src, &[], &mut ctx(dir.path())).unwrap();
    let clips: Vec<_> = out.artifacts.iter().filter(|a| a.kind == OutputKind::Clip).collect();
    assert_eq!(clips.len(), 1);
    assert!(clips[0].start_s.unwrap() == 0.0 && clips[0].end_s.unwrap() >= 0.9);
}

#[test]
fn generated_thumbnails_come_from_stable_diffusion() {
    let dir = tempfile::tempdir().unwrap();
    let src = sample(dir.path());
    let sd_dir = dir.path().join("sd");
    worker::models::sd::write_tiny(&sd_dir, 6).unwrap();
    let sd = Arc::new(worker::models::sd::StableDiffusion::load(&sd_dir).unwrap());
    let without = EditPipeline { clip: Some(tiny_clip(dir.path())), ..Default::default() };
    let with = EditPipeline { sd: Some(sd), ..without.clone() };
    let job = |mode: &str| {
        edit_job(
            &src,
            json!({ "instruction": "a red car", "style": "bright" }),
            json!({ "clips": 1, "clip_seconds_min": 1.0, "thumbnail": mode, "output_size": { "width": 96, "height": 64 },
                "generate": { "steps": 4, "candidates": 2, "seed": 3 } }),
        )
    };
    let err = without.run(&job("both"), &src, &[], &mut ctx(dir.path())).unwrap_err();
    assert!(err.to_string().contains("--sd"), "{err}");

    let out = with.run(&job("both"), &src, &[], &mut ctx(dir.path())).unwrap();
    let names: Vec<&str> = out.artifacts.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["clip-01.mp4", "thumbnail.jpg", "thumbnail-generated.jpg"]);
    let generated = out.artifacts.last().unwrap();
    let img = media::decode_still(&std::fs::read(&generated.path).unwrap(), &MediaLimits::default()).unwrap();
    assert_eq!(img.dimensions(), (96, 64), "scaled to the output size");
    assert!(out.models.iter().any(|m| m.role == "thumbnail-generator"), "{:?}", out.models);

    let (s1, s2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let out = with.run(&job("generate"), &src, &[], &mut ctx(s1.path())).unwrap();
    let names: Vec<&str> = out.artifacts.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["clip-01.mp4", "thumbnail-generated.jpg"], "generate replaces the selected thumbnail");
    let again = with.run(&job("generate"), &src, &[], &mut ctx(s2.path())).unwrap();
    assert_eq!(
        std::fs::read(&out.artifacts[1].path).unwrap(),
        std::fs::read(&again.artifacts[1].path).unwrap(),
        "same seed, same thumbnail"
    );
}
