//! Generated thumbnails: the [`ThumbnailGenerate`] stage runs Stable Diffusion ([`crate::models::sd`])
//! for N candidates — image-to-image from a given frame, or text-to-image from the guidance
//! alone — and keeps the one a caller-supplied scorer likes best (the editor passes a CLIP score
//! against the guidance). Candidate `i` is seeded [`candidate_seed`]`(seed, i)`, so a job's
//! seed fixes every candidate. Cancellation, shutdown and the deadline are checked before every
//! UNet step; progress is reported as [`Stage::Diffuse`], one unit per step over all candidates.

use std::path::PathBuf;

use image::RgbImage;
use protocol::{GenerateOptions, Guidance, OutputKind, Stage};

use super::{Artifact, JobContext, ModelError, PipelineError};
use crate::media;
use crate::models::sd::{SdError, SdRequest, StableDiffusion, candidate_seed};

/// File name of a generated thumbnail in scratch and in the outputs.
pub const GENERATED_THUMBNAIL: &str = "thumbnail-generated.jpg";

/// Scores a candidate; higher is better.
pub type ScoreFn<'a> = dyn Fn(&RgbImage) -> Result<f32, PipelineError> + 'a;

impl From<SdError> for PipelineError {
    fn from(e: SdError) -> Self {
        match e {
            SdError::Stopped => PipelineError::Cancelled,
            e => ModelError::from(e).into(),
        }
    }
}

/// The prompt of a job: its instruction and style, joined by ", ".
pub fn prompt(guidance: &Guidance) -> String {
    [guidance.instruction.as_deref(), guidance.style.as_deref()]
        .into_iter()
        .flatten()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The request a job's options describe, for an image of `size` (`None`: the model's size).
pub fn request(opts: &GenerateOptions, prompt: &str, size: Option<(usize, usize)>) -> SdRequest {
    SdRequest {
        prompt: prompt.to_owned(),
        negative_prompt: opts.negative_prompt.clone().unwrap_or_default(),
        steps: opts.steps as usize,
        guidance_scale: opts.guidance_scale,
        strength: opts.strength,
        seed: opts.seed,
        width: size.map(|s| s.0),
        height: size.map(|s| s.1),
    }
}

/// The winner of a generation.
#[derive(Debug, Clone)]
pub struct GeneratedThumbnail {
    /// The best candidate, at the model's resolution.
    pub image: RgbImage,
    /// Its score.
    pub score: f32,
    /// Its index among the candidates.
    pub index: usize,
    /// Its seed.
    pub seed: u64,
    /// Every candidate's score, in order.
    pub scores: Vec<f32>,
}

/// Stage: N Stable Diffusion candidates, the best kept.
pub struct ThumbnailGenerate<'m> {
    /// The loaded model.
    pub model: &'m StableDiffusion,
}

impl<'m> ThumbnailGenerate<'m> {
    /// A stage over `model`.
    pub fn new(model: &'m StableDiffusion) -> Self {
        ThumbnailGenerate { model }
    }

    /// `n` candidates (txt2img when `init` is `None`, else img2img from it at `req.strength`),
    /// candidate `i` seeded [`candidate_seed`]`(req.seed, i)`.
    pub fn candidates(
        &self,
        req: &SdRequest,
        init: Option<&RgbImage>,
        n: usize,
        ctx: &JobContext,
    ) -> Result<Vec<RgbImage>, PipelineError> {
        if n == 0 {
            return Err(PipelineError::BadGuidance("no candidates asked for".into()));
        }
        let mut out = Vec::with_capacity(n);
        let mut stopped: Option<PipelineError> = None;
        for i in 0..n {
            ctx.check()?;
            let r = SdRequest { seed: candidate_seed(req.seed, i), ..req.clone() };
            let mut on_step = |done: usize, total: usize| {
                if let Err(e) = ctx.check() {
                    stopped = Some(e);
                    return false;
                }
                let total = total as u64;
                ctx.progress.progress(Stage::Diffuse, i as u64 * total + done as u64, n as u64 * total);
                true
            };
            match self.model.generate(&r, init, &mut on_step) {
                Ok(img) => out.push(img),
                Err(SdError::Stopped) => return Err(stopped.take().unwrap_or(PipelineError::Cancelled)),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(out)
    }

    /// Generates `n` candidates and keeps the best by `score` (ties: the first).
    pub fn run(
        &self,
        req: &SdRequest,
        init: Option<&RgbImage>,
        n: usize,
        score: &ScoreFn<'_>,
        ctx: &JobContext,
    ) -> Result<GeneratedThumbnail, PipelineError> {
        let images = self.candidates(req, init, n, ctx)?;
        ctx.check()?;
        let scores = images.iter().map(score).collect::<Result<Vec<f32>, _>>()?;
        if let Some(bad) = scores.iter().find(|s| !s.is_finite()) {
            return Err(ModelError::Unusable(format!("candidate score is {bad}")).into());
        }
        let (index, best) = scores
            .iter()
            .copied()
            .enumerate()
            .fold((0, f32::NEG_INFINITY), |acc, (i, s)| if s > acc.1 { (i, s) } else { acc });
        let image = images.into_iter().nth(index).expect("index of a candidate");
        Ok(GeneratedThumbnail { image, score: best, index, seed: candidate_seed(req.seed, index), scores })
    }

    /// Writes `thumb` resized to `size` as [`GENERATED_THUMBNAIL`] (JPEG) in scratch.
    pub fn artifact(
        thumb: &GeneratedThumbnail,
        size: (u32, u32),
        quality: u8,
        ctx: &JobContext,
    ) -> Result<Artifact, PipelineError> {
        let mut img = if thumb.image.dimensions() == size {
            thumb.image.clone()
        } else {
            image::imageops::resize(&thumb.image, size.0, size.1, image::imageops::FilterType::CatmullRom)
        };
        ctx.mark_still(&mut img);
        let path: PathBuf = ctx.scratch_path(GENERATED_THUMBNAIL);
        std::fs::write(&path, media::encode_jpeg(&img, quality)?)?;
        let mut a = Artifact::new(OutputKind::Thumbnail, &path, GENERATED_THUMBNAIL, "image/jpeg");
        a.score = Some(thumb.score);
        Ok(a)
    }
}
