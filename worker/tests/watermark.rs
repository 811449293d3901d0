//! The watermark on real pipeline outputs and after attacks made with tools independent of
//! ours (the ffmpeg CLI, libjpeg-turbo's cjpeg); kept small so it runs fast on two cores.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use protocol::{Job, OutputKind, ValidationContext};
use serde_json::json;
use worker::media::MediaLimits;
use worker::pipeline::create::CreatePipeline;
use worker::pipeline::edit::EditPipeline;
use worker::pipeline::{JobContext, NoProgress};
use worker::provenance::Provenance;
use worker::watermark::robustness::{Attack, apply_attack};
use worker::watermark::{Generator, Payload, WatermarkKey, Watermarker, detect_file};

mod common;
use common::*;

fn key() -> WatermarkKey {
    WatermarkKey::new(b"test-key".to_vec())
}

fn marked_ctx(dir: &Path, payload: Payload, generator: Generator) -> JobContext {
    let mut c =
        JobContext::new(dir.to_owned(), MediaLimits::default(), Arc::new(NoProgress), Arc::new(AtomicBool::new(false)));
    c.watermark = Some(Arc::new(Watermarker::new(&key(), payload)));
    c.provenance = Provenance::new(generator, payload).mp4_tags();
    c
}

fn parse(v: serde_json::Value) -> Job {
    Job::from_json(v.to_string().as_bytes(), &ValidationContext { allow_local_media: true }).unwrap()
}

fn found(path: &Path) -> Option<Payload> {
    detect_file(path, &key(), &MediaLimits::default()).unwrap().found
}

#[test]
fn every_edit_and_create_output_carries_the_mark_and_provenance() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.mp4");
    worker::samples::write_textured_video(&src, 4.0, 10, 320, 180, 1).unwrap();

    let payload = Payload::for_job(&key(), "acme", "e1", Generator::EDITOR);
    let Job::Edit(edit) = parse(json!({
        "v": 1, "kind": "edit", "job_id": "e1", "tenant": "acme", "source": format!("file://{}", src.display()),
        "guidance": { "instruction": "x" },
        "options": { "clips": 2, "clip_seconds_min": 1.0, "clip_seconds_max": 1.5, "output_size": { "width": 256, "height": 144 } }
    })) else {
        unreachable!()
    };
    let mut c = marked_ctx(dir.path(), payload, Generator::EDITOR);
    let out = EditPipeline::default().run(&edit, &src, &[], &mut c).unwrap();
    assert_eq!(out.artifacts.len(), 3);
    for a in &out.artifacts {
        assert_eq!(found(&a.path), Some(payload), "{}", a.name);
        if a.kind == OutputKind::Clip {
            let tags = &ffprobe(&a.path)["format"]["tags"];
            assert_eq!(tags["ai_generated"], "true", "{tags}");
            assert!(tags["generator"].as_str().unwrap().contains("reelforge-editor"), "{tags}");
            assert_eq!(tags["watermark"], payload.hex());
            assert!(tags["comment"].as_str().unwrap().starts_with("AI-generated"), "{tags}");
        }
    }
    assert!(c.timings().iter().any(|t| t.stage == protocol::Stage::Watermark));

    let payload = Payload::for_job(&key(), "acme", "c1", Generator::CREATOR_BASELINE);
    let Job::Create(create) = parse(json!({
        "v": 1, "kind": "create", "job_id": "c1", "tenant": "acme", "mode": "predict",
        "frames": 8, "fps": 8, "size": { "width": 192, "height": 128 },
        "conditioning": { "source": format!("file://{}", src.display()), "start_s": 0.5, "end_s": 1.5 }
    })) else {
        unreachable!()
    };
    let mut c = marked_ctx(dir.path(), payload, Generator::CREATOR_BASELINE);
    let out = CreatePipeline::default().run(&create, Some(&src), &mut c).unwrap();
    for a in &out.artifacts {
        assert_eq!(found(&a.path), Some(payload), "{}", a.name);
    }
    // The source itself was never marked.
    assert_eq!(found(&src), None);
}

#[test]
fn unmarked_media_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let video = dir.path().join("plain.mp4");
    worker::samples::write_textured_video(&video, 1.0, 8, 256, 144, 2).unwrap();
    assert_eq!(found(&video), None);
    let still = dir.path().join("plain.jpg");
    std::fs::write(
        &still,
        worker::media::encode_jpeg(&worker::samples::sample_frame(320, 180, 0.3, 1.0, 1), 90).unwrap(),
    )
    .unwrap();
    assert_eq!(found(&still), None);
    // A mark made with another key is not found either.
    let mut img = worker::samples::textured_frame(320, 180, 0.0, 4);
    Watermarker::new(&WatermarkKey::new(b"someone else".to_vec()), Payload(42)).mark(&mut img);
    let other = dir.path().join("other.png");
    std::fs::write(&other, worker::media::encode_png(&img).unwrap()).unwrap();
    assert_eq!(found(&other), None);
}

#[test]
fn survives_crf_28_half_size_and_jpeg_75() {
    let dir = tempfile::tempdir().unwrap();
    let payload = Payload::for_job(&key(), "acme", "robust", Generator::CREATOR_MCVD);
    let wm = Watermarker::new(&key(), payload);
    let path = dir.path().join("marked.mp4");
    let opts = worker::media::EncodeOptions {
        filter: Some(worker::media::SharedFilter(Arc::new(Watermarker::new(&key(), payload)))),
        ..Default::default()
    };
    let mut enc = worker::media::VideoEncoder::create(&path, 320, 180, 8, &opts).unwrap();
    for i in 0..8 {
        enc.push(&worker::samples::textured_frame(320, 180, f64::from(i) / 8.0, 5)).unwrap();
    }
    enc.finish().unwrap();
    for attack in [Attack::Crf(28), Attack::Resize(0.5)] {
        let out = apply_attack(attack, true, &path, None, dir.path(), &format!("{attack:?}")).unwrap();
        assert_eq!(found(&out), Some(payload), "{attack:?}");
    }
    let mut still = worker::samples::textured_frame(320, 180, 0.0, 6);
    wm.mark(&mut still);
    let png = dir.path().join("still.png");
    std::fs::write(&png, worker::media::encode_png(&still).unwrap()).unwrap();
    for attack in [Attack::Jpeg(75), Attack::Resize(0.5)] {
        let out = apply_attack(attack, false, &png, Some(&still), dir.path(), &format!("s{attack:?}")).unwrap();
        assert_eq!(found(&out), Some(payload), "still {attack:?}");
    }
}
