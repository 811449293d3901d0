//! The robustness evaluation behind `reelforge eval watermark`: it makes textured test videos
//! and stills ([`crate::samples::textured_frame`]), marks them, measures the distortion (PSNR
//! of marked against unmarked frames), attacks the marked files with tools independent of ours
//! (the `ffmpeg` CLI's libx264 and scalers, libjpeg-turbo's `cjpeg`), runs the detector on each
//! result and on unmarked media, and reports bit accuracy, detection rate and false positives.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use image::RgbImage;

use super::{Detector, Generator, Payload, WatermarkError, WatermarkKey, Watermarker, detect_file};
use crate::media::{self, EncodeOptions, MediaError, MediaLimits, VideoEncoder};
use crate::samples::textured_frame;

/// Why the evaluation could not run.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// Making or reading media failed.
    #[error(transparent)]
    Media(#[from] MediaError),
    /// Detection could not read a file.
    #[error(transparent)]
    Watermark(#[from] WatermarkError),
    /// An attack tool failed or is missing.
    #[error("{tool} failed: {reason}")]
    Tool {
        /// The command.
        tool: String,
        /// Its error output, or why it could not start.
        reason: String,
    },
    /// Scratch I/O.
    #[error("scratch I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// What to evaluate on.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalOptions {
    /// Test videos (each a different scene and payload); each also gives one still.
    pub videos: usize,
    /// Frame width.
    pub width: u32,
    /// Frame height.
    pub height: u32,
    /// Video length, seconds.
    pub seconds: f64,
    /// Frames per second.
    pub fps: u32,
    /// Extra unmarked stills examined for false positives (besides the unmarked videos and
    /// stills and their attacked copies).
    pub negatives: usize,
    /// Which attacks to run (names from [`ATTACKS`]); empty means all.
    pub only: Vec<String>,
    /// Where the files go.
    pub work_dir: PathBuf,
}

/// How a file is attacked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Attack {
    /// The marked file as the worker encodes it.
    None,
    /// H.264 re-encode with the ffmpeg CLI (libx264, preset medium) at this CRF.
    Crf(u8),
    /// JPEG with libjpeg-turbo's `cjpeg` at this quality (stills).
    Jpeg(u8),
    /// Resize by this factor (ffmpeg's bicubic scaler), re-encoded at CRF 18 / PNG.
    Resize(f32),
    /// Luma multiplied by this factor (ffmpeg `lutyuv`), re-encoded at CRF 18 / PNG.
    Brightness(f32),
    /// Centre crop keeping this fraction of each side, re-encoded at CRF 18 / PNG.
    Crop(f32),
}

/// Every attack, with its name; `true` for video attacks, `false` for stills.
pub const ATTACKS: [(&str, Attack, bool); 14] = [
    ("video: none (CRF 20)", Attack::None, true),
    ("video: H.264 CRF 23", Attack::Crf(23), true),
    ("video: H.264 CRF 28", Attack::Crf(28), true),
    ("video: resize 0.5x", Attack::Resize(0.5), true),
    ("video: resize 0.75x", Attack::Resize(0.75), true),
    ("video: brightness +10%", Attack::Brightness(1.1), true),
    ("video: brightness -10%", Attack::Brightness(0.9), true),
    ("video: crop 10%", Attack::Crop(0.9), true),
    ("still: none (PNG)", Attack::None, false),
    ("still: JPEG q90", Attack::Jpeg(90), false),
    ("still: JPEG q75", Attack::Jpeg(75), false),
    ("still: JPEG q50", Attack::Jpeg(50), false),
    ("still: resize 0.5x", Attack::Resize(0.5), false),
    ("still: crop 10%", Attack::Crop(0.9), false),
];

/// One attack's outcome over every test item.
#[derive(Debug, Clone, PartialEq)]
pub struct AttackRow {
    /// The attack's name.
    pub name: String,
    /// Items examined.
    pub items: usize,
    /// Mean fraction of the 64 payload bits decoded right (from the best hypothesis, checked
    /// or not).
    pub bit_accuracy: f64,
    /// Fraction of items where the right payload was accepted.
    pub detection_rate: f64,
    /// Items where a wrong payload was accepted (should never happen).
    pub wrong_payloads: usize,
}

/// The whole evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalReport {
    /// One row per attack.
    pub rows: Vec<AttackRow>,
    /// Mean PSNR of marked against unmarked frames (RGB, before encoding), dB.
    pub psnr_mean: f64,
    /// Lowest per-frame PSNR, dB.
    pub psnr_min: f64,
    /// Unmarked items examined.
    pub negatives: usize,
    /// Unmarked items in which a mark was accepted.
    pub false_positives: usize,
    /// Mean time to mark one frame, milliseconds.
    pub mark_ms_per_frame: f64,
}

fn psnr(a: &RgbImage, b: &RgbImage) -> f64 {
    let sse: f64 = a.as_raw().iter().zip(b.as_raw()).map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2)).sum();
    let mse = sse / a.as_raw().len() as f64;
    if mse == 0.0 { f64::INFINITY } else { 10.0 * (255.0f64 * 255.0 / mse).log10() }
}

fn run_tool(program: &str, args: &[String]) -> Result<(), EvalError> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| EvalError::Tool { tool: program.into(), reason: e.to_string() })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(EvalError::Tool {
            tool: format!("{program} {}", args.join(" ")),
            reason: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

fn ffmpeg(input: &Path, filter: Option<String>, tail: &[&str], output: &Path) -> Result<(), EvalError> {
    let mut args: Vec<String> =
        ["-v", "error", "-nostdin", "-y", "-i"].iter().map(|s| s.to_string()).collect::<Vec<_>>();
    args.push(input.display().to_string());
    if let Some(f) = filter {
        args.push("-vf".into());
        args.push(f);
    }
    args.extend(tail.iter().map(|s| s.to_string()));
    args.push(output.display().to_string());
    run_tool("ffmpeg", &args)
}

fn write_ppm(img: &RgbImage, path: &Path) -> Result<(), EvalError> {
    let mut bytes = format!("P6\n{} {}\n255\n", img.width(), img.height()).into_bytes();
    bytes.extend_from_slice(img.as_raw());
    Ok(std::fs::write(path, bytes)?)
}

/// Applies `attack` to `input` (an MP4 when `video`, else a PNG of `still`), writing into
/// `dir`; returns the attacked file.
pub fn apply_attack(
    attack: Attack,
    video: bool,
    input: &Path,
    still: Option<&RgbImage>,
    dir: &Path,
    tag: &str,
) -> Result<PathBuf, EvalError> {
    let h264 = ["-c:v", "libx264", "-preset", "medium", "-pix_fmt", "yuv420p"];
    let (ext, tail): (&str, Vec<&str>) =
        if video { ("mp4", h264.iter().copied().chain(["-crf", "18"]).collect()) } else { ("png", vec![]) };
    let out = dir.join(format!("{tag}.{ext}"));
    let even = |f: f32| format!("trunc(iw*{f}/2)*2:trunc(ih*{f}/2)*2");
    match attack {
        Attack::None => return Ok(input.to_owned()),
        Attack::Crf(crf) => {
            let crf = crf.to_string();
            let tail: Vec<&str> = h264.iter().copied().chain(["-crf", crf.as_str()]).collect();
            ffmpeg(input, None, &tail, &out)?;
        }
        Attack::Jpeg(q) => {
            let img = still.expect("JPEG attacks are on stills");
            let ppm = dir.join(format!("{tag}.ppm"));
            write_ppm(img, &ppm)?;
            let jpg = dir.join(format!("{tag}.jpg"));
            let args = vec!["-quality".into(), q.to_string(), "-outfile".into(), jpg.display().to_string()];
            run_tool("cjpeg", &[args, vec![ppm.display().to_string()]].concat())?;
            return Ok(jpg);
        }
        Attack::Resize(f) => ffmpeg(input, Some(format!("scale={}:flags=bicubic", even(f))), &tail, &out)?,
        Attack::Brightness(f) => ffmpeg(input, Some(format!("lutyuv=y=clip(val*{f}\\,0\\,255)")), &tail, &out)?,
        Attack::Crop(f) => ffmpeg(input, Some(format!("crop={}", even(f))), &tail, &out)?,
    }
    Ok(out)
}

fn bits_right(a: Payload, b: Payload) -> f64 {
    f64::from(64 - (a.0 ^ b.0).count_ones()) / 64.0
}

/// Runs the evaluation.
pub fn evaluate(opts: &EvalOptions, key: &WatermarkKey) -> Result<EvalReport, EvalError> {
    std::fs::create_dir_all(&opts.work_dir)?;
    let limits = MediaLimits::default();
    let attacks: Vec<_> = ATTACKS
        .iter()
        .filter(|(name, ..)| opts.only.is_empty() || opts.only.iter().any(|o| name.contains(o)))
        .collect();
    let mut rows: Vec<AttackRow> = attacks
        .iter()
        .map(|(name, ..)| AttackRow {
            name: name.to_string(),
            items: 0,
            bit_accuracy: 0.0,
            detection_rate: 0.0,
            wrong_payloads: 0,
        })
        .collect();
    let (mut psnr_sum, mut psnr_n, mut psnr_min) = (0.0, 0usize, f64::INFINITY);
    let (mut negatives, mut false_positives) = (0usize, 0usize);
    let (mut mark_time, mut marked_frames) = (0.0, 0usize);
    let frames_per_video = ((opts.seconds * f64::from(opts.fps)).round() as usize).max(1);
    for v in 0..opts.videos {
        let dir = opts.work_dir.join(format!("item-{v}"));
        std::fs::create_dir_all(&dir)?;
        let payload = Payload::for_job(key, &format!("tenant-{v}"), &format!("eval-job-{v}"), Generator::EDITOR);
        let wm = Watermarker::new(key, payload);
        let enc = EncodeOptions::default();
        let (marked_mp4, plain_mp4) = (dir.join("marked.mp4"), dir.join("unmarked.mp4"));
        let mut marked_enc = VideoEncoder::create(&marked_mp4, opts.width, opts.height, opts.fps, &enc)?;
        let mut plain_enc = VideoEncoder::create(&plain_mp4, opts.width, opts.height, opts.fps, &enc)?;
        let (mut still, mut plain_still) = (None, None);
        for i in 0..frames_per_video {
            let frame = textured_frame(opts.width, opts.height, i as f64 / f64::from(opts.fps), 1000 + v as u64);
            let mut marked = frame.clone();
            let t = Instant::now();
            wm.mark(&mut marked);
            mark_time += t.elapsed().as_secs_f64() * 1e3;
            marked_frames += 1;
            let p = psnr(&frame, &marked);
            psnr_sum += p;
            psnr_n += 1;
            psnr_min = psnr_min.min(p);
            marked_enc.push(&marked)?;
            plain_enc.push(&frame)?;
            if i == frames_per_video / 2 {
                still = Some(marked);
                plain_still = Some(frame);
            }
        }
        marked_enc.finish()?;
        plain_enc.finish()?;
        let (still, plain_still) = (still.expect("a middle frame"), plain_still.expect("a middle frame"));
        let (marked_png, plain_png) = (dir.join("marked.png"), dir.join("unmarked.png"));
        std::fs::write(&marked_png, media::encode_png(&still)?)?;
        std::fs::write(&plain_png, media::encode_png(&plain_still)?)?;
        for (row, (_, attack, video)) in rows.iter_mut().zip(&attacks) {
            let (input, plain_input) = if *video { (&marked_mp4, &plain_mp4) } else { (&marked_png, &plain_png) };
            let tag = row.name.replace([' ', ':', '.', '%', '(', ')', '+'], "_");
            let attacked = apply_attack(*attack, *video, input, Some(&still), &dir, &format!("m-{tag}"))?;
            let d = detect_file(&attacked, key, &limits)?;
            row.items += 1;
            row.bit_accuracy += bits_right(d.best_guess, payload);
            match d.found {
                Some(p) if p == payload => row.detection_rate += 1.0,
                Some(_) => row.wrong_payloads += 1,
                None => {}
            }
            // The same attack on the unmarked original: a false-positive trial.
            let attacked = apply_attack(*attack, *video, plain_input, Some(&plain_still), &dir, &format!("u-{tag}"))?;
            negatives += 1;
            false_positives += usize::from(detect_file(&attacked, key, &limits)?.found.is_some());
        }
    }
    for row in &mut rows {
        if row.items > 0 {
            row.bit_accuracy /= row.items as f64;
            row.detection_rate /= row.items as f64;
        }
    }
    // More negatives: unmarked stills of other scenes and sizes.
    let sizes = [(640, 360), (320, 180), (256, 256), (1280, 720), (160, 90)];
    for i in 0..opts.negatives {
        let (w, h) = sizes[i % sizes.len()];
        let mut d = Detector::new(key);
        d.add_frame(&textured_frame(w, h, i as f64 * 0.37, 50_000 + i as u64));
        negatives += 1;
        false_positives += usize::from(d.finish().found.is_some());
    }
    Ok(EvalReport {
        rows,
        psnr_mean: psnr_sum / psnr_n.max(1) as f64,
        psnr_min,
        negatives,
        false_positives,
        mark_ms_per_frame: mark_time / marked_frames.max(1) as f64,
    })
}
