//! Training data for MCVD: [`SyntheticShapes`], a stochastic moving-shapes set in the spirit of
//! Stochastic Moving MNIST (shapes bounce off the borders in a random new direction), generated
//! deterministically from a seed; and [`VideoClips`], windows of a folder of videos decoded
//! through [`crate::media`]. Both yield batches `(B, frames·C, S, S)` in [-1, 1].

use std::path::{Path, PathBuf};

use candle_core::Tensor;
use image::{Rgb, RgbImage};

use crate::media::{self, DecodeOptions, MediaError, MediaLimits};
use crate::models::diffusion::{SeededNoise, frame_to_tensor};
use crate::models::mcvd::McvdConfig;

use super::TrainError;

/// Stochastic moving shapes: two discs or squares of random colours moving over black, each
/// taking a random new direction when it hits a border.
#[derive(Debug, Clone)]
pub struct SyntheticShapes {
    /// Frame side.
    pub size: u32,
    /// Seed of the whole set: sequence `i` depends only on (seed, i).
    pub seed: u64,
}

impl SyntheticShapes {
    /// The set for `seed` at `size`×`size`.
    pub fn new(size: u32, seed: u64) -> Self {
        SyntheticShapes { size, seed }
    }

    /// Sequence `index`: `frames` frames.
    pub fn sequence(&self, index: u64, frames: usize) -> Vec<RgbImage> {
        let mut rng = SeededNoise::new(self.seed.wrapping_mul(0x1000_0000_01b3) ^ index);
        let s = self.size as f64;
        struct Shape {
            x: f64,
            y: f64,
            vx: f64,
            vy: f64,
            r: f64,
            disc: bool,
            colour: [u8; 3],
        }
        let speed = 0.08 * s;
        let mut shapes: Vec<Shape> = (0..2)
            .map(|_| {
                let r = (0.12 + 0.08 * rng.uniform()) * s;
                let a = rng.uniform() * std::f64::consts::TAU;
                let hue = rng.below(6);
                let colour =
                    [[255, 80, 80], [80, 255, 80], [90, 120, 255], [255, 230, 70], [240, 90, 240], [80, 240, 240]][hue];
                Shape {
                    x: r + rng.uniform() * (s - 2.0 * r),
                    y: r + rng.uniform() * (s - 2.0 * r),
                    vx: speed * a.cos(),
                    vy: speed * a.sin(),
                    r,
                    disc: rng.uniform() < 0.5,
                    colour,
                }
            })
            .collect();
        let mut out = Vec::with_capacity(frames);
        for _ in 0..frames {
            out.push(RgbImage::from_fn(self.size, self.size, |px, py| {
                let (fx, fy) = (px as f64 + 0.5, py as f64 + 0.5);
                let mut c = Rgb([0u8, 0, 0]);
                for sh in &shapes {
                    let inside = if sh.disc {
                        (fx - sh.x).powi(2) + (fy - sh.y).powi(2) < sh.r * sh.r
                    } else {
                        (fx - sh.x).abs() < sh.r * 0.85 && (fy - sh.y).abs() < sh.r * 0.85
                    };
                    if inside {
                        c = Rgb(sh.colour);
                    }
                }
                c
            }));
            for sh in &mut shapes {
                sh.x += sh.vx;
                sh.y += sh.vy;
                let hit_x = sh.x < sh.r || sh.x > s - sh.r;
                let hit_y = sh.y < sh.r || sh.y > s - sh.r;
                if hit_x || hit_y {
                    sh.x = sh.x.clamp(sh.r, s - sh.r);
                    sh.y = sh.y.clamp(sh.r, s - sh.r);
                    // A random new direction pointing back into the frame.
                    let a = rng.uniform() * std::f64::consts::PI - std::f64::consts::FRAC_PI_2;
                    let (mut vx, mut vy) = (speed * a.cos(), speed * a.sin());
                    if hit_x {
                        vx = vx.abs() * if sh.x > s / 2.0 { -1.0 } else { 1.0 };
                    }
                    if hit_y {
                        std::mem::swap(&mut vx, &mut vy);
                        vy = vy.abs() * if sh.y > s / 2.0 { -1.0 } else { 1.0 };
                    }
                    sh.vx = vx;
                    sh.vy = vy;
                }
            }
        }
        out
    }
}

/// Decoded videos, each a list of `(C, S, S)` frames, sampled at 8 fps.
pub struct VideoClips {
    videos: Vec<Vec<Tensor>>,
}

/// Frames kept per video.
const MAX_FRAMES_PER_VIDEO: usize = 2_000;

impl VideoClips {
    /// Decodes every video file (`mp4`, `mov`, `mkv`, `webm`, `avi`) in `dir`; videos shorter
    /// than one training sequence are skipped.
    pub fn load(dir: &Path, cfg: &McvdConfig) -> Result<Self, TrainError> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| TrainError::Data(format!("{}: {e}", dir.display())))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| matches!(e, "mp4" | "mov" | "mkv" | "webm" | "avi"))
            })
            .collect();
        paths.sort();
        Self::load_files(&paths, cfg).map_err(|e| match e {
            TrainError::Data(_) => {
                TrainError::Data(format!("no video in {} has {} frames at 8 fps", dir.display(), cfg.sequence_frames()))
            }
            other => other,
        })
    }

    /// Decodes the given video files; videos shorter than one training sequence are skipped.
    pub fn load_files(paths: &[PathBuf], cfg: &McvdConfig) -> Result<Self, TrainError> {
        let opts = DecodeOptions {
            sample_fps: Some(8.0),
            start_s: 0.0,
            end_s: None,
            max_side: Some(cfg.image_size as u32 * 2),
        };
        let mut videos = Vec::new();
        for p in paths {
            let mut frames = Vec::new();
            for f in media::decode(p, &opts, &MediaLimits::default())? {
                let f: Result<_, MediaError> = f;
                frames.push(frame_to_tensor(&f?.image, cfg)?);
                if frames.len() == MAX_FRAMES_PER_VIDEO {
                    break;
                }
            }
            if frames.len() >= cfg.sequence_frames() {
                videos.push(frames);
            }
        }
        if videos.is_empty() {
            return Err(TrainError::Data(format!("no video has {} frames at 8 fps", cfg.sequence_frames())));
        }
        Ok(VideoClips { videos })
    }

    /// Number of usable videos.
    pub fn len(&self) -> usize {
        self.videos.len()
    }

    /// True when no video is usable (never, after [`load`](Self::load)).
    pub fn is_empty(&self) -> bool {
        self.videos.is_empty()
    }
}

/// Where training sequences come from.
pub enum TrainData {
    /// The built-in synthetic set.
    Synthetic(SyntheticShapes),
    /// A folder of videos.
    Videos(VideoClips),
}

impl TrainData {
    /// A batch of `b` sequences of `cfg.sequence_frames()` frames, `(b, frames·C, S, S)`.
    pub fn batch(&self, cfg: &McvdConfig, b: usize, rng: &mut SeededNoise) -> Result<Tensor, TrainError> {
        let n = cfg.sequence_frames();
        let mut seqs = Vec::with_capacity(b);
        for _ in 0..b {
            let frames: Vec<Tensor> = match self {
                TrainData::Synthetic(set) => {
                    set.sequence(rng.next_u64(), n).iter().map(|f| frame_to_tensor(f, cfg)).collect::<Result<_, _>>()?
                }
                TrainData::Videos(v) => {
                    let video = &v.videos[rng.below(v.videos.len())];
                    let start = rng.below(video.len() - n + 1);
                    video[start..start + n].to_vec()
                }
            };
            seqs.push(Tensor::cat(&frames, 0)?);
        }
        Ok(Tensor::stack(&seqs, 0)?)
    }
}
