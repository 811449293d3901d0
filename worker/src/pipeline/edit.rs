//! The edit pipeline, GeneRec's AI editor: from one source video, the clips and the thumbnail
//! that fit a user. Stages, one type each:
//! - [`FrameAnalysis`]: decode at [`ANALYSIS_FPS`], and per sampled frame its sharpness, the
//!   [`ShotDetector`]'s verdict and (with CLIP) its embedding, computed in batches as frames
//!   stream by, so memory does not grow with the video;
//! - [`GuidanceVector`]: one direction in CLIP space from the instruction's text embedding and
//!   the mean of the user's history embeddings (GeneRec's user vector);
//! - [`ClipPlan`]: per-frame cosine with the guidance, windows aligned to shots, the top-k
//!   non-overlapping ones within the length bounds;
//! - [`ClipCutter`]: cut and encode each window;
//! - [`ThumbnailPick`]: the best frame by score and sharpness, decoded again at output size;
//! - with `thumbnail: generate | both`, [`ThumbnailGenerate`] (Stable Diffusion image-to-image
//!   from that frame, N candidates, the best by CLIP cosine with the guidance).
//!
//! A worker without a CLIP checkpoint falls back to spreading clips evenly and picking the
//! sharpest frame (model id `uniform-sharpness`); with one, a job with no instruction, style or
//! history is refused (there is nothing to select by).

use crate::batching::Batcher;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use image::RgbImage;
use protocol::{EditJob, Guidance, ModelUse, OutputKind, Stage, ThumbnailMode};

use super::thumbnail::{self, ThumbnailGenerate};
use super::{Artifact, JobContext, ModelError, PipelineError, PipelineOutput, even_size};
use crate::media::{self, DecodeOptions, EncodeOptions, ProbeInfo};
use crate::models::clip::{self, Clip, ClipError};
use crate::models::sd::StableDiffusion;

/// Frames per second sampled for analysis.
pub const ANALYSIS_FPS: f64 = 4.0;
/// Longer side of analysis frames without CLIP, in pixels.
pub const ANALYSIS_SIDE: u32 = 224;
/// JPEG quality of thumbnails.
pub const THUMBNAIL_QUALITY: u8 = 90;
/// Sampled frames between candidate window starts (GeneRec: windows of 8 frames, stride 4).
pub const WINDOW_STRIDE_FRAMES: usize = 4;
/// Weight of the normalised sharpness (0..1) added to a frame's cosine when picking the
/// thumbnail: enough to prefer a crisp frame among near-equals, too little to override content.
pub const SHARPNESS_WEIGHT: f32 = 0.05;
/// Shortest shot the detector cuts, in seconds (PySceneDetect: 15 frames at 30 fps).
pub const MIN_SHOT_SECONDS: f64 = 0.5;
/// Frames of a history video embedded for the user vector.
pub const HISTORY_VIDEO_FRAMES: usize = 8;

/// The edit pipeline.
#[derive(Clone, Default)]
pub struct EditPipeline {
    /// Encoder settings for clips.
    pub encode: EncodeOptions,
    /// CLIP, when the worker loaded a checkpoint.
    pub clip: Option<Arc<Clip>>,
    /// Batches CLIP's image forwards across the jobs running at once (the worker sets it).
    pub clip_batcher: Option<Batcher>,
    /// Stable Diffusion for generated thumbnails, when the worker loaded one.
    pub sd: Option<Arc<StableDiffusion>>,
}

impl std::fmt::Debug for EditPipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EditPipeline")
            .field("encode", &self.encode)
            .field("clip", &self.clip.as_ref().map(|c| c.id.clone()))
            .field("sd", &self.sd.as_ref().map(|m| m.variant()))
            .finish()
    }
}

/// A history item whose media the runtime fetched to scratch.
#[derive(Debug, Clone)]
pub struct HistoryMedia {
    /// Index in `guidance.history`.
    pub index: usize,
    /// The fetched file (a still image or a video).
    pub path: PathBuf,
}

/// One sampled frame's analysis.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameScore {
    /// Presentation time, seconds.
    pub pts_s: f64,
    /// Cosine with the guidance (CLIP), or the normalised sharpness without CLIP. Higher is better.
    pub score: f32,
    /// Variance of the luma Laplacian.
    pub sharpness: f32,
}

/// What [`FrameAnalysis`] found.
#[derive(Debug, Clone, Default)]
pub struct Analysis {
    /// Presentation times of the sampled frames, seconds.
    pub pts_s: Vec<f64>,
    /// Sharpness per sampled frame.
    pub sharpness: Vec<f32>,
    /// CLIP embedding per sampled frame (empty without CLIP).
    pub embeddings: Vec<Vec<f32>>,
    /// Times of shot cuts, seconds, ascending.
    pub cuts: Vec<f64>,
}

impl From<ClipError> for PipelineError {
    fn from(e: ClipError) -> Self {
        ModelError::from(e).into()
    }
}

/// Stage: decode at [`ANALYSIS_FPS`]; per frame, sharpness, shot detection and (with CLIP)
/// batched embeddings.
pub struct FrameAnalysis;

impl FrameAnalysis {
    /// Analyses the sampled frames of `path`; `shot_threshold` is the [`ShotDetector`]'s.
    pub fn run(
        path: &Path,
        info: &ProbeInfo,
        clip: Option<&Clip>,
        batcher: Option<&Batcher>,
        shot_threshold: f64,
        ctx: &JobContext,
    ) -> Result<Analysis, PipelineError> {
        // While this job analyses frames, batches wait (briefly) for its embedding calls.
        let _session = batcher.filter(|_| clip.is_some()).map(Batcher::session);
        let max_side = match clip {
            // Decode so that the shortest side is about the model's input side: the processor's
            // own resize then only trims, and decoding does the heavy downscale.
            Some(c) => {
                let (w, h) = info.display_size();
                let edge = c.processor().shortest_edge() as f64;
                (edge * w.max(h) as f64 / w.min(h).max(1) as f64).ceil() as u32
            }
            None => ANALYSIS_SIDE,
        };
        let opts =
            DecodeOptions { sample_fps: Some(ANALYSIS_FPS), start_s: 0.0, end_s: None, max_side: Some(max_side) };
        let total = (info.duration_s * ANALYSIS_FPS).ceil().max(1.0) as u64;
        let mut out = Analysis::default();
        let mut shots = ShotDetector::new(shot_threshold, MIN_SHOT_SECONDS);
        let mut pending: Vec<RgbImage> = Vec::new();
        let embed = |pending: &mut Vec<RgbImage>, out: &mut Analysis| -> Result<(), PipelineError> {
            if let Some(c) = clip
                && !pending.is_empty()
            {
                out.embeddings.extend(c.embed_images_batched(pending, batcher)?);
                ctx.progress.progress(Stage::Embed, out.embeddings.len() as u64, total);
            }
            pending.clear();
            Ok(())
        };
        for frame in media::decode(path, &opts, &ctx.limits)? {
            let frame = frame?;
            ctx.check()?;
            if let Some(cut) = shots.push(frame.pts_s, &frame.image) {
                out.cuts.push(cut);
            }
            out.pts_s.push(frame.pts_s);
            out.sharpness.push(sharpness(&frame.image));
            if clip.is_some() {
                pending.push(frame.image);
                if pending.len() >= clip.map_or(1, |c| c.batch.max(1)) {
                    embed(&mut pending, &mut out)?;
                }
            }
            ctx.progress.progress(Stage::Decode, out.pts_s.len() as u64, total);
        }
        embed(&mut pending, &mut out)?;
        if out.pts_s.is_empty() {
            return Err(media::MediaError::NoFrames { path: path.to_owned() }.into());
        }
        Ok(out)
    }
}

/// Variance of the 4-neighbour Laplacian of the luma: a cheap focus measure.
pub fn sharpness(img: &RgbImage) -> f32 {
    let (w, h) = img.dimensions();
    if w < 3 || h < 3 {
        return 0.0;
    }
    let luma = |x: u32, y: u32| {
        let p = img.get_pixel(x, y).0;
        0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32
    };
    let (mut sum, mut sum2, mut n) = (0f64, 0f64, 0f64);
    for y in 1..h - 1 {
        for x in 1..w - 1 {
            let l = 4.0 * luma(x, y) - luma(x - 1, y) - luma(x + 1, y) - luma(x, y - 1) - luma(x, y + 1);
            sum += l as f64;
            sum2 += (l * l) as f64;
            n += 1.0;
        }
    }
    let mean = sum / n;
    (sum2 / n - mean * mean) as f32
}

/// Shot boundaries as PySceneDetect's `ContentDetector` finds them: the mean absolute
/// difference of hue, saturation and value (OpenCV's 8-bit HSV: H in 0..180) between
/// consecutive frames, averaged over the three channels; a cut where it reaches the threshold
/// (27 by default) and the current shot is at least `min_shot_s` long.
pub struct ShotDetector {
    threshold: f64,
    min_shot_s: f64,
    last: Option<Vec<[u8; 3]>>,
    shot_start: Option<f64>,
}

impl ShotDetector {
    /// A detector with PySceneDetect's scale of `threshold`.
    pub fn new(threshold: f64, min_shot_s: f64) -> Self {
        ShotDetector { threshold, min_shot_s, last: None, shot_start: None }
    }

    /// Feeds the next frame; returns `Some(pts)` when a new shot starts at it.
    pub fn push(&mut self, pts_s: f64, img: &RgbImage) -> Option<f64> {
        let hsv: Vec<[u8; 3]> = img.pixels().map(|p| hsv(p.0)).collect();
        let start = *self.shot_start.get_or_insert(pts_s);
        let cut = match &self.last {
            Some(last) if last.len() == hsv.len() => {
                let score = content_score(last, &hsv);
                (score >= self.threshold && pts_s - start >= self.min_shot_s).then_some(pts_s)
            }
            _ => None,
        };
        if cut.is_some() {
            self.shot_start = Some(pts_s);
        }
        self.last = Some(hsv);
        cut
    }
}

/// The mean over H, S and V of the mean absolute per-pixel difference.
pub fn content_score(a: &[[u8; 3]], b: &[[u8; 3]]) -> f64 {
    let mut sums = [0u64; 3];
    for (p, q) in a.iter().zip(b) {
        for c in 0..3 {
            sums[c] += (p[c] as i32 - q[c] as i32).unsigned_abs() as u64;
        }
    }
    let n = a.len().max(1) as f64;
    sums.iter().map(|s| *s as f64 / n).sum::<f64>() / 3.0
}

/// OpenCV's `COLOR_RGB2HSV` for 8-bit images: H = degrees / 2 (0..180), S and V in 0..=255.
pub fn hsv([r, g, b]: [u8; 3]) -> [u8; 3] {
    let (r, g, b) = (r as f64, g as f64, b as f64);
    let v = r.max(g).max(b);
    let min = r.min(g).min(b);
    let delta = v - min;
    let s = if v > 0.0 { 255.0 * delta / v } else { 0.0 };
    let h = if delta == 0.0 {
        0.0
    } else if v == r {
        60.0 * (g - b) / delta
    } else if v == g {
        120.0 + 60.0 * (b - r) / delta
    } else {
        240.0 + 60.0 * (r - g) / delta
    };
    let h = if h < 0.0 { h + 360.0 } else { h };
    [((h / 2.0).round() as u32 % 180) as u8, s.round() as u8, v as u8]
}

/// What steers the selection.
#[derive(Debug, Clone, PartialEq)]
pub struct Guide {
    /// Unit vector in CLIP space.
    pub vector: Vec<f32>,
    /// What it was made of: `instruction`, `style`, `history`.
    pub sources: Vec<&'static str>,
}

/// Stage: the guidance as one direction in CLIP space.
pub struct GuidanceVector;

impl GuidanceVector {
    /// The normalised mean of the text direction (the instruction, else the style prompt) and
    /// the user vector (the normalised mean of the history items' embeddings, given or computed
    /// from their fetched media).
    pub fn run(
        clip: &Clip,
        guidance: &Guidance,
        history: &[HistoryMedia],
        ctx: &JobContext,
    ) -> Result<Guide, PipelineError> {
        let mut parts = Vec::new();
        let mut sources = Vec::new();
        let text = [("instruction", &guidance.instruction), ("style", &guidance.style)]
            .into_iter()
            .find_map(|(name, t)| t.as_deref().filter(|t| !t.trim().is_empty()).map(|t| (name, t)));
        if let Some((name, text)) = text {
            parts.push(clip.embed_text(text)?);
            sources.push(name);
        }
        let mut items = Vec::new();
        for (i, item) in guidance.history.iter().enumerate() {
            ctx.check()?;
            if let Some(e) = &item.embedding {
                if e.len() != clip.dim() {
                    return Err(PipelineError::BadGuidance(format!(
                        "guidance.history[{i}].embedding has {} dimensions; this worker's CLIP ({}) has {}",
                        e.len(),
                        clip.id,
                        clip.dim()
                    )));
                }
                items.push(e.clone());
            } else if let Some(m) = history.iter().find(|m| m.index == i) {
                items.push(embed_media(clip, &m.path, ctx).map_err(|e| match e {
                    PipelineError::Media(m) => PipelineError::BadGuidance(format!("guidance.history[{i}].media: {m}")),
                    other => other,
                })?);
            }
        }
        if !items.is_empty() {
            let user = clip::mean_direction(&items)
                .ok_or_else(|| PipelineError::BadGuidance("the history embeddings cancel out (no direction)".into()))?;
            parts.push(user);
            sources.push("history");
        }
        if parts.is_empty() {
            return Err(PipelineError::BadGuidance(
                "no guidance to select by: give guidance.instruction, guidance.style or guidance.history".into(),
            ));
        }
        let vector = clip::mean_direction(&parts).ok_or_else(|| {
            PipelineError::BadGuidance("the instruction and the history point in opposite directions".into())
        })?;
        Ok(Guide { vector, sources })
    }
}

/// One history item's embedding: the still image, or the mean of up to
/// [`HISTORY_VIDEO_FRAMES`] frames sampled at 1 fps from a video.
fn embed_media(clip: &Clip, path: &Path, ctx: &JobContext) -> Result<Vec<f32>, PipelineError> {
    let bytes = std::fs::read(path)?;
    let still = bytes.starts_with(&[0xFF, 0xD8, 0xFF]) || bytes.starts_with(b"\x89PNG\r\n\x1a\n");
    let frames = if still {
        vec![media::decode_still(&bytes, &ctx.limits)?]
    } else {
        let opts = DecodeOptions { sample_fps: Some(1.0), start_s: 0.0, end_s: None, max_side: Some(448) };
        let mut frames = Vec::new();
        for f in media::decode(path, &opts, &ctx.limits)?.take(HISTORY_VIDEO_FRAMES) {
            frames.push(f?.image);
        }
        if frames.is_empty() {
            return Err(media::MediaError::NoFrames { path: path.to_owned() }.into());
        }
        frames
    };
    let embeddings = clip.embed_images(&frames)?;
    clip::mean_direction(&embeddings).ok_or_else(|| ModelError::Unusable("a zero history embedding".into()).into())
}

/// A chosen window of the source.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    /// Start, seconds.
    pub start_s: f64,
    /// End, seconds.
    pub end_s: f64,
    /// Mean frame score inside.
    pub score: f32,
}

/// Stage: choose up to `clips` non-overlapping windows between the length bounds.
pub struct ClipPlan;

impl ClipPlan {
    /// Windows spread evenly over `duration_s` (the fallback without CLIP). A video shorter
    /// than one clip gives one clip of the whole video.
    pub fn uniform(duration_s: f64, clips: u8, min_s: f64, max_s: f64, scores: &[FrameScore]) -> Vec<Window> {
        let window = |start_s: f64, end_s: f64| Window { start_s, end_s, score: mean_score(scores, start_s, end_s) };
        if duration_s <= min_s {
            return vec![window(0.0, duration_s)];
        }
        let fit = ((duration_s / min_s).floor() as usize).max(1);
        let n = usize::from(clips).min(fit);
        let len = (duration_s / n as f64).clamp(min_s, max_s);
        (0..n)
            .map(|i| {
                let centre = (i as f64 + 0.5) * duration_s / n as f64;
                let start = (centre - len / 2.0).clamp(0.0, duration_s - len);
                window(start, start + len)
            })
            .collect()
    }

    /// The top-`clips` non-overlapping windows by mean frame score. Candidates are aligned to
    /// shots: inside a shot at least `min_s` long, windows of `min(shot, max_s)` seconds start at
    /// the shot's start and every [`WINDOW_STRIDE_FRAMES`] sampled frames after, the last one
    /// ending at the shot's end; a shorter shot gives one `min_s` window centred on it. The
    /// result is in time order. A video shorter than one clip gives one clip of the whole video.
    pub fn ranked(
        duration_s: f64,
        clips: u8,
        min_s: f64,
        max_s: f64,
        scores: &[FrameScore],
        cuts: &[f64],
    ) -> Vec<Window> {
        let window = |start_s: f64, end_s: f64| Window { start_s, end_s, score: mean_score(scores, start_s, end_s) };
        if duration_s <= min_s {
            return vec![window(0.0, duration_s)];
        }
        let stride = WINDOW_STRIDE_FRAMES as f64 / ANALYSIS_FPS;
        let mut bounds = vec![0.0];
        bounds.extend(cuts.iter().copied().filter(|c| *c > 0.0 && *c < duration_s));
        bounds.push(duration_s);
        let mut candidates = Vec::new();
        for shot in bounds.windows(2) {
            let (a, b) = (shot[0], shot[1]);
            if b - a >= min_s {
                let len = (b - a).min(max_s);
                let mut start = a;
                while start + len < b - 1e-9 {
                    candidates.push((start, start + len));
                    start += stride;
                }
                candidates.push((b - len, b));
            } else {
                let start = ((a + b) / 2.0 - min_s / 2.0).clamp(0.0, duration_s - min_s);
                candidates.push((start, start + min_s));
            }
        }
        let mut scored: Vec<Window> = candidates
            .into_iter()
            .filter(|(s, e)| scores.iter().any(|f| f.pts_s >= *s && f.pts_s < *e))
            .map(|(s, e)| window(s, e))
            .collect();
        // Best first; ties to the earlier window, so the choice is deterministic.
        scored.sort_by(|x, y| y.score.total_cmp(&x.score).then(x.start_s.total_cmp(&y.start_s)));
        let mut chosen: Vec<Window> = Vec::new();
        for w in scored {
            if chosen.len() == usize::from(clips) {
                break;
            }
            if chosen.iter().all(|c| w.end_s <= c.start_s + 1e-9 || w.start_s >= c.end_s - 1e-9) {
                chosen.push(w);
            }
        }
        if chosen.is_empty() {
            chosen.push(window(0.0, duration_s.min(max_s)));
        }
        chosen.sort_by(|x, y| x.start_s.total_cmp(&y.start_s));
        chosen
    }
}

fn mean_score(scores: &[FrameScore], start: f64, end: f64) -> f32 {
    let inside: Vec<f32> = scores.iter().filter(|s| s.pts_s >= start && s.pts_s < end).map(|s| s.score).collect();
    if inside.is_empty() { 0.0 } else { inside.iter().sum::<f32>() / inside.len() as f32 }
}

/// Stage: cut and encode each window.
pub struct ClipCutter;

impl ClipCutter {
    /// Cuts `windows` of `src` into MP4 clips in scratch.
    pub fn run(
        src: &Path,
        windows: &[Window],
        size: (u32, u32),
        encode: &EncodeOptions,
        ctx: &JobContext,
    ) -> Result<Vec<Artifact>, PipelineError> {
        let mut out = Vec::with_capacity(windows.len());
        for (i, w) in windows.iter().enumerate() {
            ctx.check()?;
            let name = format!("clip-{:02}.mp4", i + 1);
            let path = ctx.scratch_path(&name);
            let encode = ctx.encode_options(encode);
            let report = media::cut(src, w.start_s, w.end_s, &path, Some(size), &encode, &ctx.limits)?;
            ctx.progress.progress(Stage::Encode, i as u64 + 1, windows.len() as u64);
            let mut a = Artifact::new(OutputKind::Clip, &path, name, "video/mp4");
            a.start_s = Some(w.start_s);
            a.end_s = Some(w.end_s);
            a.duration_s = Some(report.duration_s);
            a.score = Some(w.score);
            out.push(a);
        }
        Ok(out)
    }
}

/// Stage: the best frame by score and sharpness, decoded again at output resolution, as a JPEG.
pub struct ThumbnailPick;

impl ThumbnailPick {
    /// The index of the best frame: score plus [`SHARPNESS_WEIGHT`] × sharpness / max sharpness.
    pub fn best(scores: &[FrameScore]) -> Option<usize> {
        let max_sharp = scores.iter().map(|s| s.sharpness).fold(0f32, f32::max);
        let value =
            |s: &FrameScore| s.score + SHARPNESS_WEIGHT * if max_sharp > 0.0 { s.sharpness / max_sharp } else { 0.0 };
        (0..scores.len()).max_by(|a, b| value(&scores[*a]).total_cmp(&value(&scores[*b])).then(b.cmp(a)))
    }

    /// Writes `thumbnail.jpg` (watermarked) in scratch; returns it and the unmarked frame.
    pub fn run(
        src: &Path,
        scores: &[FrameScore],
        size: (u32, u32),
        ctx: &JobContext,
    ) -> Result<(Artifact, RgbImage), PipelineError> {
        let best = scores[Self::best(scores).expect("analysis yields at least one frame")];
        let opts = DecodeOptions { sample_fps: None, start_s: best.pts_s, end_s: None, max_side: None };
        let frame = media::decode(src, &opts, &ctx.limits)?
            .next()
            .ok_or_else(|| media::MediaError::NoFrames { path: src.to_owned() })??;
        let plain = image::imageops::resize(&frame.image, size.0, size.1, image::imageops::FilterType::CatmullRom);
        let mut img = plain.clone();
        ctx.mark_still(&mut img);
        let path: PathBuf = ctx.scratch_path("thumbnail.jpg");
        std::fs::write(&path, media::encode_jpeg(&img, THUMBNAIL_QUALITY)?)?;
        let mut a = Artifact::new(OutputKind::Thumbnail, &path, "thumbnail.jpg", "image/jpeg");
        a.start_s = Some(frame.pts_s);
        a.score = Some(best.score);
        // The unmarked frame: generated thumbnails start from it and are marked themselves.
        Ok((a, plain))
    }
}

impl EditPipeline {
    /// Runs the job on a source already fetched to `src`, with the history media the runtime
    /// fetched.
    pub fn run(
        &self,
        job: &EditJob,
        src: &Path,
        history: &[HistoryMedia],
        ctx: &mut JobContext,
    ) -> Result<PipelineOutput, PipelineError> {
        let mode = job.options.thumbnail;
        if mode != ThumbnailMode::Select && self.sd.is_none() {
            return Err(PipelineError::Unsupported(
                "thumbnail generation needs a Stable Diffusion checkpoint, which this worker does not load (worker \
                 --sd); use \"select\""
                    .into(),
            ));
        }
        let clip = self.clip.as_deref();
        // Refuse jobs with nothing to select by before decoding anything.
        let guide = match clip {
            Some(c) => Some(ctx.stage(Stage::Embed, |ctx| GuidanceVector::run(c, &job.guidance, history, ctx))?),
            None => None,
        };
        let limits = ctx.limits.clone();
        let info = ctx.stage(Stage::Probe, |_| Ok(media::probe(src, &limits)?))?;
        let size = match job.options.output_size {
            Some(s) => (s.width, s.height),
            None => {
                let (w, h) = info.display_size();
                even_size(w, h)
            }
        };
        let o = &job.options;
        let analysis = ctx.stage(Stage::Decode, |ctx| {
            FrameAnalysis::run(src, &info, clip, self.clip_batcher.as_ref(), o.shot_threshold, ctx)
        })?;
        let scores = frame_scores(&analysis, guide.as_ref());
        let windows = ctx.stage(Stage::Select, |_| {
            Ok(match guide {
                Some(_) => ClipPlan::ranked(
                    info.duration_s,
                    o.clips,
                    o.clip_seconds_min,
                    o.clip_seconds_max,
                    &scores,
                    &analysis.cuts,
                ),
                None => ClipPlan::uniform(info.duration_s, o.clips, o.clip_seconds_min, o.clip_seconds_max, &scores),
            })
        })?;
        let mut artifacts = ctx.stage(Stage::Encode, |ctx| ClipCutter::run(src, &windows, size, &self.encode, ctx))?;
        let (thumb, frame) = ctx.stage(Stage::Encode, |ctx| ThumbnailPick::run(src, &scores, size, ctx))?;
        if mode != ThumbnailMode::Generate {
            artifacts.push(thumb);
        }
        let mut models = vec![match clip {
            Some(c) => ModelUse { role: "selector".into(), id: format!("clip:{}", c.id) },
            None => ModelUse { role: "selector".into(), id: "uniform-sharpness".into() },
        }];
        if let (Some(sd), true) = (self.sd.as_deref(), mode != ThumbnailMode::Select) {
            let prompt = thumbnail::prompt(&job.guidance);
            let req = thumbnail::request(&o.generate, &prompt, None);
            // Candidates are ranked by CLIP cosine with the guidance; without CLIP the first wins.
            let score = |img: &RgbImage| -> Result<f32, PipelineError> {
                match (clip, &guide) {
                    (Some(c), Some(g)) => Ok(clip::cosine(&c.embed_images(std::slice::from_ref(img))?[0], &g.vector)),
                    _ => Ok(0.0),
                }
            };
            let generated = ctx.stage(Stage::Diffuse, |ctx| {
                ThumbnailGenerate::new(sd).run(&req, Some(&frame), usize::from(o.generate.candidates), &score, ctx)
            })?;
            artifacts.push(ThumbnailGenerate::artifact(&generated, size, THUMBNAIL_QUALITY, ctx)?);
            models.push(ModelUse { role: "thumbnail-generator".into(), id: format!("sd:{}", sd.variant().as_str()) });
        }
        ctx.record_watermark();
        Ok(PipelineOutput { artifacts, models })
    }
}

/// Per-frame scores: the cosine with the guide, or without one the sharpness normalised to 0..1.
pub fn frame_scores(analysis: &Analysis, guide: Option<&Guide>) -> Vec<FrameScore> {
    let max_sharp = analysis.sharpness.iter().copied().fold(0f32, f32::max);
    analysis
        .pts_s
        .iter()
        .enumerate()
        .map(|(i, &pts_s)| {
            let sharpness = analysis.sharpness[i];
            let score = match (guide, analysis.embeddings.get(i)) {
                (Some(g), Some(e)) => clip::cosine(e, &g.vector),
                _ if max_sharp > 0.0 => sharpness / max_sharp,
                _ => 0.0,
            };
            FrameScore { pts_s, score, sharpness }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(scores: &[(f64, f32)]) -> Vec<FrameScore> {
        scores.iter().map(|&(pts_s, score)| FrameScore { pts_s, score, sharpness: 0.0 }).collect()
    }

    #[test]
    fn uniform_plan_spreads_windows_without_overlap() {
        let w = ClipPlan::uniform(30.0, 3, 2.0, 6.0, &[]);
        assert_eq!(w.len(), 3);
        for pair in w.windows(2) {
            assert!(pair[0].end_s <= pair[1].start_s + 1e-9, "{pair:?}");
        }
        for x in &w {
            assert!((x.end_s - x.start_s - 6.0).abs() < 1e-9);
            assert!(x.start_s >= 0.0 && x.end_s <= 30.0);
        }
    }

    #[test]
    fn short_video_gives_one_whole_clip() {
        for w in [ClipPlan::uniform(1.5, 3, 2.0, 6.0, &[]), ClipPlan::ranked(1.5, 3, 2.0, 6.0, &[], &[])] {
            assert_eq!(w.len(), 1);
            assert_eq!((w[0].start_s, w[0].end_s), (0.0, 1.5));
        }
    }

    #[test]
    fn fewer_clips_when_they_cannot_fit() {
        let w = ClipPlan::uniform(5.0, 4, 2.0, 3.0, &[]);
        assert_eq!(w.len(), 2);
        assert!(w[0].end_s <= w[1].start_s + 1e-9);
    }

    #[test]
    fn window_score_is_the_mean_inside() {
        let scores = frames(&[(0.5, 1.0), (1.5, 3.0), (2.5, 100.0)]);
        let w = ClipPlan::uniform(4.0, 2, 2.0, 2.0, &scores);
        assert_eq!(w[0].score, 2.0);
        assert_eq!(w[1].score, 100.0);
    }

    #[test]
    fn ranked_plan_takes_the_best_shots_in_time_order() {
        // 12 s at 4 fps; shots cut at 4 s and 8 s; the last shot scores best, then the first.
        let scores: Vec<FrameScore> = (0..48)
            .map(|i| {
                let t = i as f64 / 4.0;
                let s = if t >= 8.0 {
                    0.9
                } else if t < 4.0 {
                    0.5
                } else {
                    0.1
                };
                FrameScore { pts_s: t, score: s, sharpness: 0.0 }
            })
            .collect();
        let w = ClipPlan::ranked(12.0, 2, 2.0, 3.0, &scores, &[4.0, 8.0]);
        assert_eq!(w.len(), 2);
        assert!(w[0].start_s >= 0.0 && w[0].end_s <= 4.0 + 1e-9, "{w:?}");
        assert!(w[1].start_s >= 8.0 - 1e-9 && w[1].end_s <= 12.0 + 1e-9, "{w:?}");
        assert!(w.iter().all(|x| (x.end_s - x.start_s - 3.0).abs() < 1e-9));
        assert!((w[1].score - 0.9).abs() < 1e-6 && (w[0].score - 0.5).abs() < 1e-6);
    }

    #[test]
    fn ranked_plan_finds_a_peak_inside_a_long_shot() {
        // One 20 s shot; frames around 13 s score high; the window must cover them.
        let scores: Vec<FrameScore> = (0..80)
            .map(|i| {
                let t = i as f64 / 4.0;
                FrameScore { pts_s: t, score: if (12.0..14.0).contains(&t) { 1.0 } else { 0.0 }, sharpness: 0.0 }
            })
            .collect();
        let w = ClipPlan::ranked(20.0, 1, 2.0, 2.0, &scores, &[]);
        assert_eq!(w.len(), 1);
        assert_eq!((w[0].start_s, w[0].end_s), (12.0, 14.0));
        // Overlapping candidates are never both taken.
        let w = ClipPlan::ranked(20.0, 5, 2.0, 4.0, &scores, &[]);
        for pair in w.windows(2) {
            assert!(pair[0].end_s <= pair[1].start_s + 1e-9, "{pair:?}");
        }
    }

    #[test]
    fn short_shots_get_a_min_length_window() {
        let scores = frames(&[(0.0, 0.0), (1.0, 0.0), (2.0, 1.0), (2.25, 1.0), (3.0, 0.0), (5.0, 0.0)]);
        let w = ClipPlan::ranked(6.0, 1, 1.0, 2.0, &scores, &[2.0, 2.5]);
        assert_eq!(w.len(), 1);
        assert!(w[0].start_s <= 2.0 && w[0].end_s >= 2.5 && (w[0].end_s - w[0].start_s - 1.0).abs() < 1e-9, "{w:?}");
    }

    #[test]
    fn thumbnail_prefers_score_then_sharpness() {
        let mut s = frames(&[(0.0, 0.5), (1.0, 0.9), (2.0, 0.9)]);
        s[1].sharpness = 10.0;
        s[2].sharpness = 100.0;
        assert_eq!(ThumbnailPick::best(&s), Some(2));
        s[0].sharpness = 1000.0;
        assert_eq!(ThumbnailPick::best(&s), Some(2), "sharpness does not beat a clearly better score");
    }

    #[test]
    fn sharpness_prefers_edges() {
        let flat = RgbImage::from_pixel(32, 32, image::Rgb([128, 128, 128]));
        let checker =
            RgbImage::from_fn(
                32,
                32,
                |x, y| {
                    if (x / 4 + y / 4) % 2 == 0 { image::Rgb([255; 3]) } else { image::Rgb([0; 3]) }
                },
            );
        assert_eq!(sharpness(&flat), 0.0);
        assert!(sharpness(&checker) > 1000.0);
    }

    #[test]
    fn hsv_matches_opencv() {
        assert_eq!(hsv([255, 0, 0]), [0, 255, 255]);
        assert_eq!(hsv([0, 255, 0]), [60, 255, 255]);
        assert_eq!(hsv([0, 0, 255]), [120, 255, 255]);
        assert_eq!(hsv([128, 128, 128]), [0, 0, 128]);
        assert_eq!(hsv([255, 0, 128]), [165, 255, 255]);
    }

    #[test]
    fn shot_detector_cuts_on_a_content_change_only() {
        let red = RgbImage::from_pixel(16, 16, image::Rgb([200, 30, 30]));
        let blue = RgbImage::from_pixel(16, 16, image::Rgb([30, 30, 200]));
        let mut d = ShotDetector::new(27.0, 0.5);
        assert_eq!(d.push(0.0, &red), None);
        assert_eq!(d.push(0.25, &red), None);
        assert_eq!(d.push(0.5, &blue), Some(0.5));
        assert_eq!(d.push(0.75, &red), None, "shorter than the minimum shot");
        assert_eq!(d.push(1.0, &red), None);
        assert_eq!(d.push(1.25, &blue), Some(1.25));
        // A threshold above the change never cuts.
        let mut d = ShotDetector::new(255.0, 0.0);
        assert!([(0.0, &red), (1.0, &blue), (2.0, &red)].iter().all(|(t, f)| d.push(*t, f).is_none()));
    }
}
