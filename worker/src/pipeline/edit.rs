//! The edit pipeline, GeneRec's AI editor: from one source video, the clips and the thumbnail
//! that fit a user. Stages, one type each: [`FrameAnalysis`] (decode at a sampling rate, score
//! every sampled frame), [`ClipPlan`] (choose non-overlapping windows within the clip length
//! bounds), [`ClipCutter`] (cut and encode each window) and [`ThumbnailPick`] (the best frame,
//! decoded again at output resolution). Until the CLIP model lands, frames are scored by
//! sharpness alone and windows are spread evenly over the video.

use std::path::{Path, PathBuf};

use image::RgbImage;
use protocol::{EditJob, ModelUse, OutputKind, Stage, ThumbnailMode};

use super::{Artifact, JobContext, PipelineError, PipelineOutput, even_size};
use crate::media::{self, DecodeOptions, EncodeOptions, ProbeInfo};

/// Frames per second sampled for analysis.
pub const ANALYSIS_FPS: f64 = 4.0;
/// Longer side of analysis frames, in pixels.
pub const ANALYSIS_SIDE: u32 = 224;
/// JPEG quality of thumbnails.
pub const THUMBNAIL_QUALITY: u8 = 90;

/// The edit pipeline.
#[derive(Debug, Clone, Default)]
pub struct EditPipeline {
    /// Encoder settings for clips.
    pub encode: EncodeOptions,
}

/// One sampled frame's analysis.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameScore {
    /// Presentation time, seconds.
    pub pts_s: f64,
    /// Higher is better.
    pub score: f32,
}

/// Stage: decode at [`ANALYSIS_FPS`] and score each frame (variance of the luma Laplacian).
pub struct FrameAnalysis;

impl FrameAnalysis {
    /// Scores the sampled frames of `path`.
    pub fn run(path: &Path, info: &ProbeInfo, ctx: &JobContext) -> Result<Vec<FrameScore>, PipelineError> {
        let opts =
            DecodeOptions { sample_fps: Some(ANALYSIS_FPS), start_s: 0.0, end_s: None, max_side: Some(ANALYSIS_SIDE) };
        let total = (info.duration_s * ANALYSIS_FPS).ceil().max(1.0) as u64;
        let mut scores = Vec::new();
        for frame in media::decode(path, &opts, &ctx.limits)? {
            let frame = frame?;
            ctx.check()?;
            scores.push(FrameScore { pts_s: frame.pts_s, score: sharpness(&frame.image) });
            ctx.progress.progress(Stage::Decode, scores.len() as u64, total);
        }
        if scores.is_empty() {
            return Err(media::MediaError::NoFrames { path: path.to_owned() }.into());
        }
        Ok(scores)
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
    /// Windows spread evenly over `duration_s`. A video shorter than one clip gives one clip of
    /// the whole video.
    pub fn run(duration_s: f64, clips: u8, min_s: f64, max_s: f64, scores: &[FrameScore]) -> Vec<Window> {
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
            let report = media::cut(src, w.start_s, w.end_s, &path, Some(size), encode, &ctx.limits)?;
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

/// Stage: the best-scoring frame, decoded again at output resolution, as a JPEG.
pub struct ThumbnailPick;

impl ThumbnailPick {
    /// Writes `thumbnail.jpg` in scratch.
    pub fn run(
        src: &Path,
        scores: &[FrameScore],
        size: (u32, u32),
        ctx: &JobContext,
    ) -> Result<Artifact, PipelineError> {
        let best = scores
            .iter()
            .copied()
            .max_by(|a, b| a.score.total_cmp(&b.score))
            .expect("analysis yields at least one frame");
        let opts = DecodeOptions { sample_fps: None, start_s: best.pts_s, end_s: None, max_side: None };
        let frame = media::decode(src, &opts, &ctx.limits)?
            .next()
            .ok_or_else(|| media::MediaError::NoFrames { path: src.to_owned() })??;
        let img = image::imageops::resize(&frame.image, size.0, size.1, image::imageops::FilterType::CatmullRom);
        let path: PathBuf = ctx.scratch_path("thumbnail.jpg");
        std::fs::write(&path, media::encode_jpeg(&img, THUMBNAIL_QUALITY)?)?;
        let mut a = Artifact::new(OutputKind::Thumbnail, &path, "thumbnail.jpg", "image/jpeg");
        a.start_s = Some(frame.pts_s);
        a.score = Some(best.score);
        Ok(a)
    }
}

impl EditPipeline {
    /// Runs the job on a source already fetched to `src`.
    pub fn run(&self, job: &EditJob, src: &Path, ctx: &mut JobContext) -> Result<PipelineOutput, PipelineError> {
        if job.options.thumbnail != ThumbnailMode::Select {
            return Err(PipelineError::Unsupported(
                "thumbnail generation needs the diffusion model, which this worker does not load; use \"select\""
                    .into(),
            ));
        }
        let limits = ctx.limits.clone();
        let info = ctx.stage(Stage::Probe, |_| Ok(media::probe(src, &limits)?))?;
        let size = match job.options.output_size {
            Some(s) => (s.width, s.height),
            None => {
                let (w, h) = info.display_size();
                even_size(w, h)
            }
        };
        let scores = ctx.stage(Stage::Decode, |ctx| FrameAnalysis::run(src, &info, ctx))?;
        let o = &job.options;
        let windows = ctx.stage(Stage::Select, |_| {
            Ok(ClipPlan::run(info.duration_s, o.clips, o.clip_seconds_min, o.clip_seconds_max, &scores))
        })?;
        let mut artifacts = ctx.stage(Stage::Encode, |ctx| ClipCutter::run(src, &windows, size, &self.encode, ctx))?;
        artifacts.push(ctx.stage(Stage::Encode, |ctx| ThumbnailPick::run(src, &scores, size, ctx))?);
        Ok(PipelineOutput {
            artifacts,
            models: vec![ModelUse { role: "selector".into(), id: "uniform-sharpness".into() }],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_spreads_windows_without_overlap() {
        let w = ClipPlan::run(30.0, 3, 2.0, 6.0, &[]);
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
        let w = ClipPlan::run(1.5, 3, 2.0, 6.0, &[]);
        assert_eq!(w.len(), 1);
        assert_eq!((w[0].start_s, w[0].end_s), (0.0, 1.5));
    }

    #[test]
    fn fewer_clips_when_they_cannot_fit() {
        let w = ClipPlan::run(5.0, 4, 2.0, 3.0, &[]);
        assert_eq!(w.len(), 2);
        assert!(w[0].end_s <= w[1].start_s + 1e-9);
    }

    #[test]
    fn window_score_is_the_mean_inside() {
        let scores = [
            FrameScore { pts_s: 0.5, score: 1.0 },
            FrameScore { pts_s: 1.5, score: 3.0 },
            FrameScore { pts_s: 2.5, score: 100.0 },
        ];
        let w = ClipPlan::run(4.0, 2, 2.0, 2.0, &scores);
        assert_eq!(w[0].score, 2.0);
        assert_eq!(w[1].score, 100.0);
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
}
