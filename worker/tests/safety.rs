//! The CLIP concept filter (tiny CLIP through the real loading code): an output whose frames
//! match a configured concept is withheld with the concept and score; one that does not is
//! kept; a job whose every output is withheld fails `unsafe_content`.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use candle_core::Device;
use image::RgbImage;
use protocol::{ErrorCode, OutputKind};
use worker::media::{self, EncodeOptions, MediaLimits, VideoEncoder};
use worker::models::clip::{self, Clip};
use worker::pipeline::{Artifact, JobContext, NoProgress, PipelineOutput};
use worker::safety::{SafetyCheck, SafetyConfig, SafetyFilter};

fn ctx(dir: &Path) -> JobContext {
    JobContext::new(dir.to_owned(), MediaLimits::default(), Arc::new(NoProgress), Arc::new(AtomicBool::new(false)))
}

fn striped(rgb: [u8; 3]) -> RgbImage {
    RgbImage::from_fn(160, 96, |x, y| if (x / 8 + y / 8) % 2 == 0 { image::Rgb(rgb) } else { image::Rgb([250; 3]) })
}

fn video(path: &Path, rgb: [u8; 3]) -> Artifact {
    let mut enc = VideoEncoder::create(path, 160, 96, 10, &EncodeOptions::default()).unwrap();
    for _ in 0..20 {
        enc.push(&striped(rgb)).unwrap();
    }
    enc.finish().unwrap();
    Artifact::new(OutputKind::Clip, path, path.file_name().unwrap().to_string_lossy().into_owned(), "video/mp4")
}

fn still(path: &Path, rgb: [u8; 3]) -> Artifact {
    std::fs::write(path, media::encode_jpeg(&striped(rgb), 95).unwrap()).unwrap();
    Artifact::new(OutputKind::Thumbnail, path, "thumbnail.jpg", "image/jpeg")
}

fn setup(dir: &Path) -> (Arc<Clip>, SafetyFilter) {
    clip::init_tiny(&dir.join("clip"), 6).unwrap();
    let model = Arc::new(Clip::load(&dir.join("clip"), &Device::Cpu).unwrap());
    // The "unsafe" concept is the look of red stripes, given as an embedding; a prompt concept
    // with an unreachable threshold rides along to show prompts load and do not fire.
    let red = model.embed_images(&[striped([220, 20, 20])]).unwrap().remove(0);
    let cfg: SafetyConfig = serde_json::from_value(serde_json::json!({ "concepts": [
        { "name": "red-stripes", "embedding": red, "threshold": 0.97 },
        { "name": "gore", "prompt": "red blood", "threshold": 1.0 },
    ]}))
    .unwrap();
    let filter = SafetyFilter::new(model.clone(), &cfg).unwrap();
    (model, filter)
}

#[test]
fn matching_outputs_are_withheld_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let (model, filter) = setup(dir.path());
    let blue = model.embed_images(&[striped([20, 20, 220])]).unwrap().remove(0);
    let red = model.embed_images(&[striped([220, 20, 20])]).unwrap().remove(0);
    assert!(clip::cosine(&blue, &red) < 0.97, "the tiny CLIP separates the two looks");

    let out = PipelineOutput {
        artifacts: vec![
            video(&dir.path().join("clip-01.mp4"), [220, 20, 20]),
            video(&dir.path().join("clip-02.mp4"), [20, 20, 220]),
            still(&dir.path().join("thumbnail.jpg"), [220, 20, 20]),
        ],
        models: vec![],
    };
    let (kept, withheld) = SafetyCheck::run(&filter, out, &mut ctx(dir.path())).unwrap();
    let names: Vec<&str> = kept.artifacts.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["clip-02.mp4"]);
    let w: Vec<(&str, &str)> = withheld.iter().map(|w| (w.name.as_str(), w.concept.as_str())).collect();
    assert_eq!(w, [("clip-01.mp4", "red-stripes"), ("thumbnail.jpg", "red-stripes")]);
    for w in &withheld {
        assert!(w.score >= w.threshold && w.score <= 1.0001, "{w:?}");
        assert_eq!(w.check, "safety");
    }
}

#[test]
fn a_job_with_nothing_left_fails_unsafe_content() {
    let dir = tempfile::tempdir().unwrap();
    let (_, filter) = setup(dir.path());
    let out =
        PipelineOutput { artifacts: vec![still(&dir.path().join("thumbnail.jpg"), [220, 20, 20])], models: vec![] };
    let err = SafetyCheck::run(&filter, out, &mut ctx(dir.path())).unwrap_err();
    assert_eq!(err.code(), ErrorCode::UnsafeContent);
    assert!(err.to_string().contains("red-stripes"), "{err}");
}

#[test]
fn embeddings_of_the_wrong_size_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (model, _) = setup(dir.path());
    let cfg: SafetyConfig = serde_json::from_value(
        serde_json::json!({ "concepts": [{ "name": "x", "embedding": vec![0.1f32; 512], "threshold": 0.5 }] }),
    )
    .unwrap();
    let err = SafetyFilter::new(model, &cfg).unwrap_err();
    assert!(err.to_string().contains("512-d"), "{err}");
}
