//! Embedding: [`Watermarker`] marks RGB frames and stills with one payload. Per frame: luma →
//! canonical grid (see [`super::plane`]) → per coded bit, the correlation of the band
//! coefficients with the keyed chips → the smallest push that gives each bit's correlation the
//! right sign and a margin (informed embedding: host content that already agrees costs
//! nothing, content that disagrees is overridden up to a cap) → inverse DCT of the pushes →
//! back to frame resolution → added equally to R, G and B (a pure luma change). A second pass
//! measures again and tops up what resampling, rounding and clipping lost.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use image::RgbImage;

use super::dct::{self, BAND};
use super::ecc;
use super::pattern::{CANONICAL_SIZES, Pattern, canonical_size};
use super::payload::{INFO_BITS, InfoWord, Payload, WatermarkKey};
use super::plane::{Plane, Span, resample};
use crate::media::FrameFilter;

/// Coded bits per frame.
pub const CODED_BITS: usize = ecc::coded_len(INFO_BITS);

/// Smallest frame side that is marked; smaller frames pass unmarked.
pub const MIN_SIDE: u32 = 16;

/// How strongly to mark.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Strength {
    /// Target mean correlation per slot (DCT units on the 0..255 luma scale).
    pub margin: f32,
    /// Largest push per slot and pass (doubled on the 64 grid of frames whose shorter side is
    /// under 128 px, which has a quarter of the slots: a lower PSNR there).
    pub max_push: f32,
    /// Measure-and-push passes.
    pub passes: usize,
}

impl Default for Strength {
    fn default() -> Self {
        Strength { margin: 4.5, max_push: 10.0, passes: 2 }
    }
}

/// Marks frames with one payload under one key. Cheap to share (`Arc`); records the time it
/// spends so the pipelines can report a `watermark` stage.
pub struct Watermarker {
    payload: Payload,
    /// ±1 per coded bit.
    signs: Vec<f32>,
    patterns: Vec<Pattern>,
    strength: Strength,
    nanos: AtomicU64,
}

impl std::fmt::Debug for Watermarker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watermarker").field("payload", &self.payload).field("strength", &self.strength).finish()
    }
}

impl Watermarker {
    /// A marker of `payload` under `key`, default strength.
    pub fn new(key: &WatermarkKey, payload: Payload) -> Self {
        Self::with_strength(key, payload, Strength::default())
    }

    /// A marker with explicit strength.
    pub fn with_strength(key: &WatermarkKey, payload: Payload, strength: Strength) -> Self {
        let coded = ecc::encode(&InfoWord::encode(key, payload));
        Watermarker {
            payload,
            signs: coded.iter().map(|&c| if c == 1 { 1.0 } else { -1.0 }).collect(),
            patterns: CANONICAL_SIZES.iter().map(|&c| Pattern::new(key, c, CODED_BITS)).collect(),
            strength,
            nanos: AtomicU64::new(0),
        }
    }

    /// The payload it embeds.
    pub fn payload(&self) -> Payload {
        self.payload
    }

    /// Time spent marking so far.
    pub fn elapsed(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::Relaxed))
    }

    /// Marks `img` in place (frames under [`MIN_SIDE`] are left as they are).
    pub fn mark(&self, img: &mut RgbImage) {
        let t = Instant::now();
        let (w, h) = img.dimensions();
        if w >= MIN_SIDE && h >= MIN_SIDE {
            let c = canonical_size(w, h);
            let pattern = self.patterns.iter().find(|p| p.size == c).expect("a pattern per canonical size");
            for _ in 0..self.strength.passes {
                let luma = Plane::luma(img);
                let (canon, _) = resample(&luma, c, c, Span::full(c), Span::full(c));
                let proj = project(&canon, pattern);
                let mut strength = self.strength;
                if c < 128 {
                    strength.max_push *= 2.0;
                }
                let push = pushes(&proj, &pattern.count, &self.signs, &strength);
                if push.iter().all(|&p| p == 0.0) {
                    break;
                }
                let delta = spread(pattern, &push);
                let (up, _) = resample(&delta, w as usize, h as usize, Span::full(w as usize), Span::full(h as usize));
                add_luma(img, &up);
            }
        }
        self.nanos.fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }
}

impl FrameFilter for Watermarker {
    fn apply(&self, frame: &mut RgbImage) {
        self.mark(frame);
    }
}

/// Per coded bit: the sum over its slots of chip × coefficient.
pub fn project(canon: &Plane, pattern: &Pattern) -> Vec<f32> {
    let mut proj = vec![0f32; pattern.count.len()];
    accumulate(canon, pattern, |_, _| true, &mut proj);
    proj
}

/// Adds chip × coefficient of every block that `take(bx, by)` accepts to its coded bit (the
/// embedder projects every block; the detector only those its crop hypothesis covers).
pub fn accumulate(canon: &Plane, pattern: &Pattern, take: impl Fn(usize, usize) -> bool, proj: &mut [f32]) {
    let (mut block, mut chips, mut out) = ([0f32; 64], [0f32; BAND.len()], [0f32; BAND.len()]);
    for by in 0..pattern.blocks {
        for bx in 0..pattern.blocks {
            if !take(bx, by) {
                continue;
            }
            canon.block(bx, by, &mut block);
            let slots = pattern.block_slots(bx, by);
            chips.copy_from_slice(&pattern.chip[slots.clone()]);
            dct::block_correlation(&block, &chips, &mut out);
            for (i, s) in slots.enumerate() {
                proj[pattern.bit[s] as usize] += out[i];
            }
        }
    }
}

/// Per coded bit: the push per slot that brings `sign · proj / count` up to the margin, capped.
fn pushes(proj: &[f32], count: &[u32], signs: &[f32], s: &Strength) -> Vec<f32> {
    proj.iter()
        .zip(count)
        .zip(signs)
        .map(|((&p, &n), &b)| {
            let n = n.max(1) as f32;
            let short = s.margin - b * p / n;
            if short <= 0.0 { 0.0 } else { b * short.min(s.max_push) }
        })
        .collect()
}

/// The canonical-grid delta whose slot coefficients are chip × push of their bit.
fn spread(pattern: &Pattern, push: &[f32]) -> Plane {
    let amps: Vec<f32> = pattern.chip.iter().zip(&pattern.bit).map(|(&c, &b)| c * push[b as usize]).collect();
    dct::plane_embed(&Plane::zeros(pattern.size, pattern.size), &amps)
}

/// Adds `delta` to R, G and B of every pixel (rounded, clamped).
fn add_luma(img: &mut RgbImage, delta: &Plane) {
    for (p, d) in img.pixels_mut().zip(&delta.data) {
        for c in p.0.iter_mut() {
            *c = (*c as f32 + d).round().clamp(0.0, 255.0) as u8;
        }
    }
}
