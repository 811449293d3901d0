//! Integration tests for `worker::media`: every test builds its own inputs in a tempdir (with
//! `VideoEncoder` or the `ffmpeg` CLI) and checks outputs with the `ffprobe` CLI.

use std::path::{Path, PathBuf};

use image::{Rgb, RgbImage};
use worker::media::{
    self, DecodeOptions, EncodeOptions, MediaError, MediaLimits, VideoEncoder, cut, decode, decode_still, encode_jpeg,
    encode_png, probe,
};

mod common;
use common::*;

/// 3 s of testsrc2 at 25 fps, 320x240, H.264 in MP4 (moov at the end: ffmpeg's default).
fn make_testsrc(dir: &Path, name: &str, extra: &[&str]) -> PathBuf {
    let path = dir.join(name);
    let mut args = vec![
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=320x240:rate=25",
        "-t",
        "3",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv420p",
    ];
    args.extend_from_slice(extra);
    let p = path.to_str().unwrap().to_string();
    args.push(&p);
    ffmpeg_cli(&args);
    path
}

const RED: Rgb<u8> = Rgb([230, 20, 20]);
const GREEN: Rgb<u8> = Rgb([20, 200, 40]);
const BLUE: Rgb<u8> = Rgb([30, 40, 220]);
const WHITE: Rgb<u8> = Rgb([240, 240, 240]);

/// Four flat quadrants: red (top-left), green (top-right), blue (bottom-left), white (bottom-right).
fn quadrants(width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| match (x < width / 2, y < height / 2) {
        (true, true) => RED,
        (false, true) => GREEN,
        (true, false) => BLUE,
        (false, false) => WHITE,
    })
}

fn close(a: Rgb<u8>, b: Rgb<u8>, tol: i32) -> bool {
    a.0.iter().zip(b.0.iter()).all(|(x, y)| (i32::from(*x) - i32::from(*y)).abs() <= tol)
}

fn encode_quadrants(
    path: &Path,
    width: u32,
    height: u32,
    frames: u32,
    fps: u32,
    opts: &EncodeOptions,
) -> media::EncodeReport {
    let img = quadrants(width, height);
    let mut enc = VideoEncoder::create(path, width, height, fps, opts).expect("create encoder");
    for _ in 0..frames {
        enc.push(&img).expect("push");
    }
    enc.finish().expect("finish")
}

fn limits() -> MediaLimits {
    MediaLimits::default()
}

fn collect(path: &Path, opts: &DecodeOptions) -> Vec<media::Frame> {
    decode(path, opts, &limits()).expect("open decoder").collect::<Result<Vec<_>, _>>().expect("decode frames")
}

/// First error a full decode of `path` produces (open or mid-stream).
fn decode_error(path: &Path) -> Option<MediaError> {
    match decode(path, &DecodeOptions::default(), &limits()) {
        Err(e) => Some(e),
        Ok(frames) => frames.filter_map(Result::err).next(),
    }
}

// ---------- encode ----------

#[test]
fn encoder_output_passes_ffprobe_with_faststart_and_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("synthetic.mp4");
    let opts = EncodeOptions { metadata: vec![("comment".into(), "ai-generated".into())], ..EncodeOptions::default() };
    let report = encode_quadrants(&path, 320, 240, 50, 25, &opts);
    assert_eq!(report.frames, 50);
    assert!((report.duration_s - 2.0).abs() < 1e-9);
    assert_eq!(report.bytes, std::fs::metadata(&path).unwrap().len());

    let v = assert_valid_output(&path, 320, 240, 2.0, 0.08);
    assert_eq!(v["format"]["tags"]["comment"], "ai-generated");
    assert_eq!(video_stream(&v)["nb_frames"], "50");
}

#[test]
fn encoder_rejects_odd_or_mismatched_dimensions() {
    let dir = tempfile::tempdir().unwrap();
    let opts = EncodeOptions::default();
    for (w, h) in [(321, 240), (320, 239), (0, 240)] {
        let err = VideoEncoder::create(&dir.path().join("odd.mp4"), w, h, 25, &opts).err();
        assert!(matches!(err, Some(MediaError::InvalidDimensions { .. })), "{w}x{h}: {err:?}");
    }
    let mut enc = VideoEncoder::create(&dir.path().join("ok.mp4"), 64, 48, 25, &opts).unwrap();
    let err = enc.push(&quadrants(32, 32)).unwrap_err();
    assert!(matches!(err, MediaError::InvalidDimensions { .. }), "{err:?}");
}

// ---------- probe ----------

#[test]
fn probe_reports_known_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = make_testsrc(dir.path(), "src.mp4", &[]);
    let info = probe(&path, &limits()).unwrap();
    assert!(info.container.contains("mp4"), "{}", info.container);
    assert_eq!(info.codec, "h264");
    assert_eq!((info.width, info.height), (320, 240));
    assert!((info.fps - 25.0).abs() < 1e-6, "fps {}", info.fps);
    assert!((info.duration_s - 3.0).abs() < 0.05, "duration {}", info.duration_s);
    assert_eq!(info.rotation, 0);
    assert_eq!(info.frame_count, Some(75));
    assert!(info.bit_rate.is_some_and(|b| b > 0));
}

/// Blue 320x240 video with a red square in the top-left corner, tagged `rotate=<tag>`.
fn make_rotated(dir: &Path, tag: u32) -> PathBuf {
    let plain = dir.join(format!("plain{tag}.mp4"));
    let rotated = dir.join(format!("rot{tag}.mp4"));
    ffmpeg_cli(&[
        "-f",
        "lavfi",
        "-i",
        "color=c=blue:s=320x240:r=25",
        "-t",
        "1",
        "-vf",
        "drawbox=x=0:y=0:w=60:h=60:color=red:t=fill",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv420p",
        plain.to_str().unwrap(),
    ]);
    let meta = format!("rotate={tag}");
    ffmpeg_cli(&["-i", plain.to_str().unwrap(), "-c", "copy", "-metadata:s:v:0", &meta, rotated.to_str().unwrap()]);
    rotated
}

/// Which corner (0=TL, 1=TR, 2=BL, 3=BR) of `img` is red.
fn red_corner(img: &RgbImage) -> usize {
    let (w, h) = img.dimensions();
    let corners = [(5, 5), (w - 6, 5), (5, h - 6), (w - 6, h - 6)];
    let red: Vec<usize> = (0..4)
        .filter(|&i| {
            let p = img.get_pixel(corners[i].0, corners[i].1);
            p.0[0] > 150 && p.0[2] < 100
        })
        .collect();
    assert_eq!(red.len(), 1, "exactly one red corner expected, got {red:?}");
    red[0]
}

#[test]
fn rotated_input_is_reported_and_decoded_upright() {
    let dir = tempfile::tempdir().unwrap();
    let mut seen = Vec::new();
    for tag in [90, 270] {
        let path = make_rotated(dir.path(), tag);

        // Ground truth: ffprobe's display-matrix rotation (counter-clockwise) and ffmpeg's own
        // autorotated rendering. FFmpeg 5.1's muxer stores the `rotate` tag as a counter-clockwise
        // matrix, so the tag value and the clockwise correction need not be equal.
        let v = ffprobe(&path);
        let ccw = video_stream(&v)["side_data_list"][0]["rotation"].as_i64().expect("display matrix");
        let expected_cw = (360 - ccw).rem_euclid(360) as i32;

        let info = probe(&path, &limits()).unwrap();
        assert_eq!(info.rotation, expected_cw, "tag {tag}");
        assert!(info.rotation == 90 || info.rotation == 270);
        assert_eq!((info.width, info.height), (320, 240));
        assert_eq!(info.display_size(), (240, 320));
        seen.push(info.rotation);

        let frames = collect(&path, &DecodeOptions::default());
        assert!(frames.len() >= 24, "{} frames", frames.len());
        let first = &frames[0].image;
        assert_eq!(first.dimensions(), (240, 320), "upright frames are portrait");

        let reference_png = dir.path().join(format!("ref{tag}.png"));
        ffmpeg_cli(&["-i", path.to_str().unwrap(), "-frames:v", "1", reference_png.to_str().unwrap()]);
        let reference = image::open(&reference_png).unwrap().to_rgb8();
        assert_eq!(reference.dimensions(), (240, 320));
        assert_eq!(red_corner(first), red_corner(&reference), "tag {tag}: orientation differs from ffmpeg");

        // Downscale applies to the upright frame.
        let small =
            collect(&path, &DecodeOptions { max_side: Some(160), end_s: Some(0.1), ..DecodeOptions::default() });
        assert_eq!(small[0].image.dimensions(), (120, 160));
    }
    seen.sort_unstable();
    assert_eq!(seen, vec![90, 270]);
}

// ---------- decode ----------

#[test]
fn sampled_decode_yields_expected_count_with_increasing_pts() {
    let dir = tempfile::tempdir().unwrap();
    let path = make_testsrc(dir.path(), "src.mp4", &[]);
    let frames = collect(&path, &DecodeOptions { sample_fps: Some(2.0), ..DecodeOptions::default() });
    assert!((5..=7).contains(&frames.len()), "{} frames", frames.len());
    for (i, f) in frames.iter().enumerate() {
        assert_eq!(f.index, i as u64);
        assert_eq!(f.image.dimensions(), (320, 240));
    }
    for pair in frames.windows(2) {
        assert!(pair[1].pts_s > pair[0].pts_s);
        assert!((pair[1].pts_s - pair[0].pts_s - 0.5).abs() < 0.05);
    }

    let all = collect(&path, &DecodeOptions::default());
    assert_eq!(all.len(), 75);
}

#[test]
fn decoded_pixels_match_synthetic_pattern() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("quad.mp4");
    encode_quadrants(&path, 320, 240, 25, 25, &EncodeOptions::default());
    let frames = collect(&path, &DecodeOptions::default());
    assert_eq!(frames.len(), 25);
    for frame in [&frames[0], &frames[24]] {
        let img = &frame.image;
        for ((x, y), want) in [((80, 60), RED), ((240, 60), GREEN), ((80, 180), BLUE), ((240, 180), WHITE)] {
            let got = *img.get_pixel(x, y);
            assert!(close(got, want, 24), "({x},{y}): got {got:?}, want {want:?}");
        }
    }
    assert!((frames[24].pts_s - 24.0 / 25.0).abs() < 1e-6);
}

#[test]
fn max_side_downscales_keeping_aspect_and_even_dims() {
    let dir = tempfile::tempdir().unwrap();
    let path = make_testsrc(dir.path(), "src.mp4", &[]);
    let frames = collect(&path, &DecodeOptions { max_side: Some(100), end_s: Some(0.5), ..DecodeOptions::default() });
    let (w, h) = frames[0].image.dimensions();
    assert!(w <= 100 && h <= 100, "{w}x{h}");
    assert!(w % 2 == 0 && h % 2 == 0, "{w}x{h}");
    assert!((f64::from(w) / f64::from(h) - 320.0 / 240.0).abs() < 0.05, "{w}x{h}");
    assert_eq!(w, 100);

    // No upscaling when already small enough.
    let same = collect(&path, &DecodeOptions { max_side: Some(1000), end_s: Some(0.1), ..DecodeOptions::default() });
    assert_eq!(same[0].image.dimensions(), (320, 240));
}

#[test]
fn range_decode_starts_and_stops_at_requested_times() {
    let dir = tempfile::tempdir().unwrap();
    let path = make_testsrc(dir.path(), "src.mp4", &[]);
    let frames = collect(&path, &DecodeOptions { start_s: 1.0, end_s: Some(2.0), ..DecodeOptions::default() });
    assert_eq!(frames.len(), 25);
    assert!((frames[0].pts_s - 1.0).abs() < 1e-6, "{}", frames[0].pts_s);
    assert!(frames.last().unwrap().pts_s < 2.0);

    for (start, end) in [(-1.0, None), (2.0, Some(1.0)), (10.0, None), (f64::NAN, None)] {
        let opts = DecodeOptions { start_s: start, end_s: end, ..DecodeOptions::default() };
        let err = decode(&path, &opts, &limits()).err();
        assert!(matches!(err, Some(MediaError::InvalidRange { .. })), "{start}..{end:?}: {err:?}");
    }
}

#[test]
fn inputs_without_decodable_frames_are_no_frames() {
    let dir = tempfile::tempdir().unwrap();
    // A valid Y4M header with no frames: the container opens, the stream has no pictures.
    let y4m = dir.path().join("empty.y4m");
    std::fs::write(&y4m, b"YUV4MPEG2 W320 H240 F25:1 Ip A1:1 C420jpeg\n").unwrap();
    let err = decode_error(&y4m).expect("zero-frame file must fail");
    assert!(matches!(err, MediaError::NoFrames { .. }), "{err:?}");

    // A range that contains no frame timestamp (frames are at 1.00 and 1.04).
    let path = make_testsrc(dir.path(), "src.mp4", &[]);
    let opts = DecodeOptions { start_s: 1.001, end_s: Some(1.02), ..DecodeOptions::default() };
    let results: Vec<_> = decode(&path, &opts, &limits()).unwrap().collect();
    assert_eq!(results.len(), 1);
    assert!(matches!(results[0], Err(MediaError::NoFrames { .. })), "{:?}", results[0]);
}

#[test]
fn decoder_and_encoder_are_send() {
    fn assert_send<T: Send>() {}
    assert_send::<media::FrameDecoder>();
    assert_send::<VideoEncoder>();
    assert_send::<MediaError>();
}

// ---------- cut ----------

#[test]
fn cut_middle_range_resized_and_native_size() {
    let dir = tempfile::tempdir().unwrap();
    let src = make_testsrc(dir.path(), "src.mp4", &[]);

    let dst = dir.path().join("cut.mp4");
    let report = cut(&src, 1.0, 2.0, &dst, Some((160, 120)), &EncodeOptions::default(), &limits()).unwrap();
    assert!((24..=26).contains(&report.frames), "{} frames", report.frames);
    assert!((report.duration_s - 1.0).abs() <= 0.08);
    assert_valid_output(&dst, 160, 120, 1.0, 0.08);

    let dst2 = dir.path().join("cut_native.mp4");
    let report = cut(&src, 0.5, 1.5, &dst2, None, &EncodeOptions::default(), &limits()).unwrap();
    assert!((24..=26).contains(&report.frames));
    assert_valid_output(&dst2, 320, 240, 1.0, 0.08);
    let info = probe(&dst2, &limits()).unwrap();
    assert!((info.fps - 25.0).abs() < 1e-6);

    let bad = cut(&src, 2.0, 1.0, &dir.path().join("bad.mp4"), None, &EncodeOptions::default(), &limits());
    assert!(matches!(bad, Err(MediaError::InvalidRange { .. })), "{bad:?}");
    let odd = cut(&src, 0.0, 1.0, &dir.path().join("odd.mp4"), Some((161, 120)), &EncodeOptions::default(), &limits());
    assert!(matches!(odd, Err(MediaError::InvalidDimensions { .. })), "{odd:?}");
}

// ---------- errors ----------

#[test]
fn non_media_inputs_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();

    let random = dir.path().join("random.mp4");
    let bytes: Vec<u8> = (0..64 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(&random, bytes).unwrap();
    let err = probe(&random, &limits()).unwrap_err();
    assert!(matches!(err, MediaError::NotMedia { .. }), "{err:?}");
    assert!(err.to_string().contains("random.mp4"), "{err}");
    assert!(matches!(decode_error(&random), Some(MediaError::NotMedia { .. })));

    let empty = dir.path().join("empty.mp4");
    std::fs::write(&empty, b"").unwrap();
    assert!(matches!(probe(&empty, &limits()), Err(MediaError::NotMedia { .. })));

    let missing = dir.path().join("missing.mp4");
    assert!(matches!(probe(&missing, &limits()), Err(MediaError::Io(_))));

    let audio = dir.path().join("sine.m4a");
    ffmpeg_cli(&["-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-c:a", "aac", audio.to_str().unwrap()]);
    let err = probe(&audio, &limits()).unwrap_err();
    assert!(matches!(err, MediaError::NoVideoStream { .. }), "{err:?}");
    assert!(matches!(decode_error(&audio), Some(MediaError::NoVideoStream { .. })));
}

#[test]
fn truncated_mp4s_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();

    // moov first: the index survives, the sample data is cut in half.
    let faststart = make_testsrc(dir.path(), "fast.mp4", &["-movflags", "+faststart"]);
    let data = std::fs::read(&faststart).unwrap();
    let half = dir.path().join("fast_half.mp4");
    std::fs::write(&half, &data[..data.len() / 2]).unwrap();
    let err = decode_error(&half).expect("truncated file must not decode cleanly");
    assert!(matches!(err, MediaError::Corrupt { .. }), "{err:?}");

    // moov last: cutting the file loses the index entirely.
    let plain = make_testsrc(dir.path(), "plain.mp4", &[]);
    let boxes = top_level_boxes(&plain);
    assert_eq!(boxes.last().map(String::as_str), Some("moov"), "{boxes:?}");
    let data = std::fs::read(&plain).unwrap();
    let half = dir.path().join("plain_half.mp4");
    std::fs::write(&half, &data[..data.len() / 2]).unwrap();
    let err = probe(&half, &limits()).unwrap_err();
    assert!(matches!(err, MediaError::NotMedia { .. }), "{err:?}");
    assert!(matches!(decode_error(&half), Some(MediaError::NotMedia { .. })));
}

#[test]
fn limits_are_enforced_before_decoding() {
    let dir = tempfile::tempdir().unwrap();
    let path = make_testsrc(dir.path(), "src.mp4", &[]);

    let short = MediaLimits { max_duration_s: 1.0, ..limits() };
    let err = probe(&path, &short).unwrap_err();
    assert!(matches!(err, MediaError::TooLong { limit_s, .. } if limit_s == 1.0), "{err:?}");
    assert!(matches!(decode(&path, &DecodeOptions::default(), &short), Err(MediaError::TooLong { .. })));

    let tiny = MediaLimits { max_pixels: 320 * 240 - 1, ..limits() };
    let err = probe(&path, &tiny).unwrap_err();
    assert!(matches!(err, MediaError::TooManyPixels { width: 320, height: 240, .. }), "{err:?}");
    assert!(matches!(decode(&path, &DecodeOptions::default(), &tiny), Err(MediaError::TooManyPixels { .. })));

    let small_file = MediaLimits { max_file_bytes: 1000, ..limits() };
    assert!(matches!(probe(&path, &small_file), Err(MediaError::FileTooLarge { .. })));

    let few_frames = MediaLimits { max_decoded_frames: 10, ..limits() };
    let results: Vec<_> = decode(&path, &DecodeOptions::default(), &few_frames).unwrap().collect();
    assert_eq!(results.len(), 11, "10 frames then the error, then the iterator ends");
    assert!(matches!(results.last(), Some(Err(MediaError::TooManyFrames { limit: 10, .. }))));
}

// ---------- stills ----------

#[test]
fn still_round_trips() {
    let img = quadrants(64, 48);
    let png = encode_png(&img).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    assert_eq!(decode_still(&png, &limits()).unwrap(), img);

    let jpeg = encode_jpeg(&img, 90).unwrap();
    assert_eq!(&jpeg[..2], &[0xFF, 0xD8]);
    let back = decode_still(&jpeg, &limits()).unwrap();
    assert_eq!(back.dimensions(), (64, 48));
    assert!(close(*back.get_pixel(16, 12), RED, 24));
    assert!(close(*back.get_pixel(48, 36), WHITE, 24));

    assert!(matches!(encode_jpeg(&img, 0), Err(MediaError::Encode { .. })));
    assert!(matches!(decode_still(b"definitely not an image", &limits()), Err(MediaError::InvalidStill { .. })));
    assert!(matches!(decode_still(&png[..png.len() / 2], &limits()), Err(MediaError::InvalidStill { .. })));
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

#[test]
fn still_bombs_are_rejected_from_the_header() {
    let img = quadrants(16, 16);

    // PNG: rewrite IHDR to claim 60000x60000 and fix its CRC.
    let mut png = encode_png(&img).unwrap();
    assert_eq!(&png[12..16], b"IHDR");
    png[16..20].copy_from_slice(&60_000u32.to_be_bytes());
    png[20..24].copy_from_slice(&60_000u32.to_be_bytes());
    let crc = crc32(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    let err = decode_still(&png, &limits()).unwrap_err();
    assert!(matches!(err, MediaError::TooManyPixels { width: 60_000, height: 60_000, .. }), "{err:?}");

    // JPEG: rewrite the SOF0 frame header to claim 65500x65500.
    let mut jpeg = encode_jpeg(&img, 80).unwrap();
    let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).expect("SOF0");
    jpeg[sof + 5..sof + 7].copy_from_slice(&65_500u16.to_be_bytes());
    jpeg[sof + 7..sof + 9].copy_from_slice(&65_500u16.to_be_bytes());
    let err = decode_still(&jpeg, &limits()).unwrap_err();
    assert!(matches!(err, MediaError::TooManyPixels { .. }), "{err:?}");

    // A real image just over a low limit.
    let low = MediaLimits { max_pixels: 255, ..limits() };
    assert!(matches!(decode_still(&encode_png(&img).unwrap(), &low), Err(MediaError::TooManyPixels { .. })));
}

#[test]
fn the_pixel_limit_holds_when_a_stream_changes_resolution() {
    let dir = tempfile::tempdir().unwrap();
    // Two MPEG-TS segments, 64x64 then 256x256, joined into one stream by ffmpeg's concat
    // demuxer without re-encoding: the header (what the probe reads) says 64x64.
    let part = |name: &str, size: &str| {
        let p = dir.path().join(name);
        let src = format!("testsrc2=size={size}:rate=10");
        ffmpeg_cli(&[
            "-f",
            "lavfi",
            "-i",
            &src,
            "-t",
            "1",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
            "-f",
            "mpegts",
            p.to_str().unwrap(),
        ]);
        p
    };
    let list = dir.path().join("list.txt");
    let (small, large) = (part("small.ts", "64x64"), part("large.ts", "256x256"));
    std::fs::write(&list, format!("file '{}'\nfile '{}'\n", small.display(), large.display())).unwrap();
    let path = dir.path().join("joined.ts");
    ffmpeg_cli(&[
        "-f",
        "concat",
        "-safe",
        "0",
        "-i",
        list.to_str().unwrap(),
        "-c",
        "copy",
        "-f",
        "mpegts",
        path.to_str().unwrap(),
    ]);
    let limits = MediaLimits { max_pixels: 128 * 128, ..MediaLimits::default() };
    let frames: Vec<_> = decode(&path, &DecodeOptions::default(), &limits).unwrap().collect();
    let first_err = frames.iter().position(Result::is_err).expect("the large frames were decoded");
    assert!(first_err > 0, "the small frames decode");
    match &frames[first_err] {
        Err(MediaError::TooManyPixels { width, height, limit, .. }) => {
            assert_eq!((*width, *height, *limit), (256, 256, 128 * 128));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(frames.len(), first_err + 1, "the decoder stops at the error");
    // Without the lower limit the same file decodes whole.
    let whole: Vec<_> = decode(&path, &DecodeOptions::default(), &MediaLimits::default()).unwrap().collect();
    let errors: Vec<_> = whole.iter().filter_map(|f| f.as_ref().err()).collect();
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(whole.len(), 20);
}

// ---------- the fuzz corpus ----------

/// Every input the coverage-guided fuzzer kept (fuzz/corpus/media, grown by
/// deploy/scripts/fuzz.sh; crashes it found stay there once fixed) goes through the fuzz target's
/// own harness on stable: probe, decode and still decode end in typed errors, never a panic.
#[test]
fn the_fuzz_corpus_replays_cleanly() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/media");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| worker::media::fuzz_one(&bytes));
        assert!(outcome.is_ok(), "{} panics the media code", path.display());
        n += 1;
    }
    assert!(n >= 8, "the corpus has {n} inputs; it is kept in the repo (fuzz/corpus/media)");
}
