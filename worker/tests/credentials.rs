//! C2PA content credentials: outputs signed with a certificate chain the test makes (the
//! openssl CLI: a CA and an end-entity signer), read back and verified with c2pa's Reader
//! trusting that CA; tampering breaks the verification; a bad key stops set-up.

use std::path::Path;

use c2pa::{Context, Reader, ValidationState};
use protocol::OutputKind;
use worker::credentials::{ContentCredentials, TRAINED_ALGORITHMIC};
use worker::media::{self, EncodeOptions, VideoEncoder};
use worker::pipeline::Artifact;

mod common;
use common::certificates;

fn frame(i: u32) -> image::RgbImage {
    worker::samples::textured_frame(160, 96, i as f64 * 0.1, 3)
}

fn read(path: &Path, ca: &str) -> Reader {
    let ctx = Context::new().with_settings(serde_json::json!({ "trust": { "trust_anchors": ca } })).unwrap();
    Reader::from_context(ctx).with_file(path).unwrap()
}

#[test]
fn outputs_carry_a_verifiable_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let (chain, key, ca) = certificates(dir.path());
    let creds = ContentCredentials::from_files(&chain, &key, "es256").unwrap();

    let jpg = dir.path().join("thumbnail-generated.jpg");
    std::fs::write(&jpg, media::encode_jpeg(&frame(0), 90).unwrap()).unwrap();
    let still = Artifact::new(OutputKind::Thumbnail, &jpg, "thumbnail-generated.jpg", "image/jpeg");
    creds.attach(&still, "reelforge-editor", true, Some("0123456789abcdef")).unwrap();

    let mp4 = dir.path().join("video.mp4");
    let mut enc = VideoEncoder::create(&mp4, 160, 96, 10, &EncodeOptions::default()).unwrap();
    for i in 0..10 {
        enc.push(&frame(i)).unwrap();
    }
    enc.finish().unwrap();
    let video = Artifact::new(OutputKind::Video, &mp4, "video.mp4", "video/mp4");
    creds.attach(&video, "reelforge-creator-mcvd", true, None).unwrap();

    for path in [&jpg, &mp4] {
        let reader = read(path, &ca);
        assert_eq!(
            reader.validation_state(),
            ValidationState::Trusted,
            "{}: {:?}",
            path.display(),
            reader.validation_status()
        );
        let json = reader.json();
        assert!(json.contains("reelforge"), "{json}");
        assert!(json.contains(TRAINED_ALGORITHMIC), "{json}");
        assert!(json.contains("c2pa.created"), "{json}");
    }
    assert!(read(&jpg, &ca).json().contains("0123456789abcdef"), "the watermark payload is asserted");
    // The signed files are still what they were: a JPEG that decodes, an MP4 that probes.
    media::decode_still(&std::fs::read(&jpg).unwrap(), &media::MediaLimits::default()).unwrap();
    common::video_stream(&common::ffprobe(&mp4));

    // Without the CA in the trust list the signature still verifies, but is not trusted.
    let untrusted = Reader::from_context(Context::new()).with_file(&jpg).unwrap();
    assert_eq!(untrusted.validation_state(), ValidationState::Valid);
}

#[test]
fn tampering_breaks_the_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let (chain, key, ca) = certificates(dir.path());
    let creds = ContentCredentials::from_files(&chain, &key, "es256").unwrap();
    let jpg = dir.path().join("thumbnail.jpg");
    std::fs::write(&jpg, media::encode_jpeg(&frame(1), 90).unwrap()).unwrap();
    creds
        .attach(
            &Artifact::new(OutputKind::Thumbnail, &jpg, "thumbnail.jpg", "image/jpeg"),
            "reelforge-editor",
            false,
            None,
        )
        .unwrap();
    let mut bytes = std::fs::read(&jpg).unwrap();
    let n = bytes.len();
    bytes[n - 100] ^= 0x55; // inside the entropy-coded image data, after the manifest
    std::fs::write(&jpg, bytes).unwrap();
    let reader = read(&jpg, &ca);
    assert_eq!(reader.validation_state(), ValidationState::Invalid, "{:?}", reader.validation_status());
}

#[test]
fn a_key_that_does_not_fit_is_refused_at_set_up() {
    let dir = tempfile::tempdir().unwrap();
    let (chain, _, _) = certificates(dir.path());
    // The CA's key does not match the signer's certificate: the set-up self-test catches it.
    let err = ContentCredentials::from_files(&chain, &dir.path().join("ca.key"), "es256").unwrap_err();
    assert!(err.to_string().contains("self-test") || err.to_string().contains("C2PA"), "{err}");
    assert!(ContentCredentials::from_files(&chain, &dir.path().join("missing.key"), "es256").is_err());
    assert!(ContentCredentials::from_files(&chain, &dir.path().join("ee.key"), "rot13").is_err());
}
