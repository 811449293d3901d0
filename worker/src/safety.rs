//! `safety` owns the fidelity check on content: a CLIP concept filter in the spirit of Stable
//! Diffusion's safety checker. Configured unsafe concepts (a text prompt embedded by the
//! worker's CLIP, or a precomputed embedding) each have a cosine threshold; every output's
//! sampled frames (a thumbnail's one image, [`FRAMES_PER_VIDEO`] frames spread over a clip or
//! video) are embedded, and an output with any frame at or above a concept's threshold is
//! withheld: it is not uploaded, and the result names the concept and the score.

use std::path::Path;
use std::sync::Arc;

use protocol::{OutputKind, Stage, Withheld};
use serde::{Deserialize, Serialize};

use crate::media::{self, DecodeOptions, MediaLimits};
use crate::models::clip::{self, Clip, ClipError};
use crate::pipeline::{Artifact, JobContext, PipelineError, PipelineOutput};

/// Frames sampled from each clip or video.
pub const FRAMES_PER_VIDEO: usize = 4;

/// The concepts file (`--safety-concepts FILE`, JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SafetyConfig {
    /// The concepts to block.
    pub concepts: Vec<ConceptSpec>,
}

/// One unsafe concept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConceptSpec {
    /// Name reported in results and metrics.
    pub name: String,
    /// A description CLIP's text tower embeds (give this or `embedding`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// A precomputed embedding in the worker's CLIP space (give this or `prompt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding: Option<Vec<f32>>,
    /// Cosine at or above which a frame shows the concept.
    pub threshold: f32,
}

/// Why the filter could not be built or run.
#[derive(Debug, thiserror::Error)]
pub enum SafetyError {
    /// The concepts file is unreadable or malformed.
    #[error("safety concepts {path}: {msg}")]
    Config {
        /// The file.
        path: String,
        /// What is wrong.
        msg: String,
    },
    /// A concept in the file is not usable.
    #[error("safety concepts {path}: {source}")]
    Concept {
        /// The file (`(inline)` for a config given in code).
        path: String,
        /// What is wrong with which concept.
        #[source]
        source: ConceptError,
    },
    /// CLIP failed.
    #[error(transparent)]
    Clip(#[from] ClipError),
}

/// What makes a concepts file unusable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConceptError {
    /// The file lists none.
    #[error("no concepts")]
    Empty,
    /// A concept without a name.
    #[error("concepts[{index}].name is empty")]
    NoName {
        /// Its position in the file.
        index: usize,
    },
    /// Neither or both of `prompt` and `embedding`.
    #[error("concepts[{index}] ({name}): give exactly one of prompt or embedding")]
    Source {
        /// Its position in the file.
        index: usize,
        /// Its name.
        name: String,
    },
    /// A threshold that is not a cosine.
    #[error("concepts[{index}] ({name}): threshold must be a cosine in [-1, 1]")]
    Threshold {
        /// Its position in the file.
        index: usize,
        /// Its name.
        name: String,
    },
    /// A zero or non-finite embedding.
    #[error("concepts[{index}] ({name}): embedding must be finite and non-zero")]
    Embedding {
        /// Its position in the file.
        index: usize,
        /// Its name.
        name: String,
    },
    /// An embedding whose dimension is not CLIP's.
    #[error("concept {name}: {got}-d embedding, CLIP is {want}-d")]
    Dimension {
        /// Its name.
        name: String,
        /// The embedding's dimension.
        got: usize,
        /// CLIP's.
        want: usize,
    },
}

/// A concept, embedded.
#[derive(Debug, Clone)]
struct Concept {
    name: String,
    direction: Vec<f32>,
    threshold: f32,
}

/// An output the filter withheld.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// The concept that matched.
    pub concept: String,
    /// The highest cosine among the output's frames.
    pub score: f32,
    /// The concept's threshold.
    pub threshold: f32,
}

/// The concept filter, ready to run.
#[derive(Clone)]
pub struct SafetyFilter {
    clip: Arc<Clip>,
    concepts: Vec<Concept>,
}

impl std::fmt::Debug for SafetyFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.concepts.iter().map(|c| c.name.as_str()).collect();
        f.debug_struct("SafetyFilter").field("clip", &self.clip.id).field("concepts", &names).finish()
    }
}

impl SafetyConfig {
    /// Reads and checks a concepts file.
    pub fn load(path: &Path) -> Result<Self, SafetyError> {
        let err = |msg: String| SafetyError::Config { path: path.display().to_string(), msg };
        let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        let cfg: SafetyConfig = serde_json::from_slice(&bytes).map_err(|e| err(e.to_string()))?;
        cfg.check().map_err(|source| SafetyError::Concept { path: path.display().to_string(), source })?;
        Ok(cfg)
    }

    fn check(&self) -> Result<(), ConceptError> {
        if self.concepts.is_empty() {
            return Err(ConceptError::Empty);
        }
        for (index, c) in self.concepts.iter().enumerate() {
            let name = || c.name.clone();
            if c.name.trim().is_empty() {
                return Err(ConceptError::NoName { index });
            }
            if c.prompt.is_some() == c.embedding.is_some() {
                return Err(ConceptError::Source { index, name: name() });
            }
            if !(c.threshold.is_finite() && (-1.0..=1.0).contains(&c.threshold)) {
                return Err(ConceptError::Threshold { index, name: name() });
            }
            if let Some(e) = &c.embedding
                && (e.iter().any(|x| !x.is_finite()) || e.iter().all(|x| *x == 0.0))
            {
                return Err(ConceptError::Embedding { index, name: name() });
            }
        }
        Ok(())
    }
}

impl SafetyFilter {
    /// Embeds the concepts with `clip` (prompts through its text tower; embeddings must have
    /// its dimension).
    pub fn new(clip: Arc<Clip>, cfg: &SafetyConfig) -> Result<Self, SafetyError> {
        let inline = |source| SafetyError::Concept { path: "(inline)".into(), source };
        cfg.check().map_err(inline)?;
        let mut concepts = Vec::new();
        for c in &cfg.concepts {
            let direction = match (&c.prompt, &c.embedding) {
                (Some(p), _) => clip.embed_text(p)?,
                (None, Some(e)) if e.len() == clip.dim() => {
                    clip::mean_direction(std::slice::from_ref(e)).expect("checked non-zero and finite")
                }
                (None, Some(e)) => {
                    let (name, got, want) = (c.name.clone(), e.len(), clip.dim());
                    return Err(inline(ConceptError::Dimension { name, got, want }));
                }
                (None, None) => unreachable!("checked"),
            };
            concepts.push(Concept { name: c.name.clone(), direction, threshold: c.threshold });
        }
        Ok(SafetyFilter { clip, concepts })
    }

    /// The verdict on one output: `None` when it may be published.
    pub fn check(&self, artifact: &Artifact, limits: &MediaLimits) -> Result<Option<Verdict>, PipelineError> {
        let frames = sample_frames(&artifact.path, artifact.kind, limits)?;
        let embeddings = self.clip.embed_images(&frames)?;
        Ok(self.judge(&embeddings))
    }

    /// The worst concept over the frames' embeddings, if any reaches its threshold.
    pub fn judge(&self, embeddings: &[Vec<f32>]) -> Option<Verdict> {
        let mut worst: Option<Verdict> = None;
        for c in &self.concepts {
            let score = embeddings.iter().map(|e| clip::cosine(e, &c.direction)).fold(f32::NEG_INFINITY, f32::max);
            if score >= c.threshold && worst.as_ref().is_none_or(|w| score - c.threshold > w.score - w.threshold) {
                worst = Some(Verdict { concept: c.name.clone(), score, threshold: c.threshold });
            }
        }
        worst
    }
}

/// Stage: the filter over every output of a pipeline; withheld outputs leave the list (and
/// scratch is deleted with the attempt, so they are never uploaded). A job whose every output
/// is withheld fails with `unsafe_content`.
pub struct SafetyCheck;

impl SafetyCheck {
    /// Filters `out`; returns what may be published and what was withheld.
    pub fn run(
        filter: &SafetyFilter,
        out: PipelineOutput,
        ctx: &mut JobContext,
    ) -> Result<(PipelineOutput, Vec<Withheld>), PipelineError> {
        ctx.stage(Stage::Check, |ctx| {
            let PipelineOutput { artifacts, models } = out;
            let total = artifacts.len() as u64;
            let (mut kept, mut withheld) = (Vec::new(), Vec::new());
            for (i, a) in artifacts.into_iter().enumerate() {
                ctx.check()?;
                match filter.check(&a, &ctx.limits)? {
                    None => kept.push(a),
                    Some(v) => withheld.push(Withheld {
                        name: a.name.clone(),
                        kind: a.kind,
                        check: "safety".into(),
                        concept: v.concept,
                        score: v.score,
                        threshold: v.threshold,
                    }),
                }
                ctx.progress.progress(Stage::Check, i as u64 + 1, total);
            }
            if kept.is_empty() && !withheld.is_empty() {
                let why: Vec<String> = withheld
                    .iter()
                    .map(|w| format!("{} matches {:?} (cosine {:.3} ≥ {:.3})", w.name, w.concept, w.score, w.threshold))
                    .collect();
                return Err(PipelineError::Unsafe(format!("every output was withheld: {}", why.join("; "))));
            }
            Ok((PipelineOutput { artifacts: kept, models }, withheld))
        })
    }
}

/// The frames the filter looks at: a still's one image, or [`FRAMES_PER_VIDEO`] frames spread
/// evenly over a video.
fn sample_frames(path: &Path, kind: OutputKind, limits: &MediaLimits) -> Result<Vec<image::RgbImage>, PipelineError> {
    if kind == OutputKind::Thumbnail {
        return Ok(vec![media::decode_still(&std::fs::read(path)?, limits)?]);
    }
    let info = media::probe(path, limits)?;
    let fps = FRAMES_PER_VIDEO as f64 / info.duration_s.max(1e-3);
    let opts = DecodeOptions { sample_fps: Some(fps), start_s: 0.0, end_s: None, max_side: Some(448) };
    let mut frames = Vec::new();
    for f in media::decode(path, &opts, limits)?.take(FRAMES_PER_VIDEO) {
        frames.push(f?.image);
    }
    if frames.is_empty() {
        return Err(media::MediaError::NoFrames { path: path.to_owned() }.into());
    }
    Ok(frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_needs_one_source_per_concept_and_a_cosine_threshold() {
        let ok: SafetyConfig =
            serde_json::from_str(r#"{"concepts": [{"name": "gore", "prompt": "blood", "threshold": 0.3}]}"#).unwrap();
        assert!(ok.check().is_ok());
        for bad in [
            r#"{"concepts": []}"#,
            r#"{"concepts": [{"name": "x", "threshold": 0.3}]}"#,
            r#"{"concepts": [{"name": "x", "prompt": "p", "embedding": [1.0], "threshold": 0.3}]}"#,
            r#"{"concepts": [{"name": "x", "prompt": "p", "threshold": 2.0}]}"#,
            r#"{"concepts": [{"name": "x", "embedding": [0.0, 0.0], "threshold": 0.3}]}"#,
        ] {
            let cfg: SafetyConfig = serde_json::from_str(bad).unwrap();
            assert!(cfg.check().is_err(), "{bad}");
        }
    }
}
