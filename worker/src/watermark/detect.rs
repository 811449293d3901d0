//! Detection: [`Detector`] accumulates, over any number of frames, the per-coded-bit
//! correlations under every hypothesis (each canonical grid size, uncropped or a centre crop
//! to 90 %), then decodes each with the soft Viterbi decoder and checks the CRC.
//! A payload is accepted only when its CRC-32 matches (the false-positive bound rests on that,
//! see the README) and the evidence is not degenerate (z-score ≥ [`Z_MIN`]: a flat or empty
//! input gives 0).

use image::RgbImage;

use super::ecc;
use super::embed::{self, CODED_BITS, MIN_SIDE};
use super::pattern::{CANONICAL_SIZES, Pattern};
use super::payload::{CRC_BITS, INFO_BITS, InfoWord, Payload, WatermarkKey};
use super::plane::{Plane, Span, resample};

/// Centre-crop hypotheses: the fraction of each side that is left.
pub const CROPS: [f32; 2] = [1.0, 0.9];
/// Hypotheses tried per item: grid sizes × crops.
pub const HYPOTHESES: usize = CANONICAL_SIZES.len() * CROPS.len();
/// The smallest z-score accepted besides the CRC: a floor against degenerate evidence, not the
/// test itself (the best codeword of pure noise scores about 9–10, since the decoder picks the
/// codeword that fits best; marks score 12–14).
pub const Z_MIN: f32 = 6.0;

/// What the detector concluded.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    /// The payload, when one passed the CRC and the z-score test.
    pub found: Option<Payload>,
    /// The best hypothesis's decoded payload, checked or not (for bit-accuracy measurements).
    pub best_guess: Payload,
    /// z-score of the best hypothesis: correlation of its codeword with the soft values over
    /// their norm (at most √204 ≈ 14.3; about 9–10 on unmarked content, where the decoder still
    /// picks the best-fitting codeword).
    pub z: f32,
    /// Fraction of coded bits whose soft value agrees with the codeword (0.5 is chance).
    pub agreement: f32,
    /// Canonical grid size of the best hypothesis.
    pub canonical: usize,
    /// Crop fraction of the best hypothesis.
    pub crop: f32,
    /// Frames examined.
    pub frames: usize,
}

impl Detection {
    /// The confidence that a found payload is not a false positive: 1 − [`HYPOTHESES`] · 2⁻³²
    /// (0 when nothing was found).
    pub fn confidence(&self) -> f64 {
        if self.found.is_some() { 1.0 - false_positive_bound() } else { 0.0 }
    }
}

/// The probability that unmarked content passes, per file: [`HYPOTHESES`] · 2⁻³² (CRC-32).
pub fn false_positive_bound() -> f64 {
    HYPOTHESES as f64 * 2f64.powi(-(CRC_BITS as i32))
}

struct Hypothesis {
    pattern: Pattern,
    crop: f32,
    soft: Vec<f32>,
}

/// Accumulates frames and decides.
pub struct Detector {
    key: WatermarkKey,
    hypotheses: Vec<Hypothesis>,
    frames: usize,
}

impl Detector {
    /// A detector for marks made under `key`.
    pub fn new(key: &WatermarkKey) -> Self {
        let mut hypotheses = Vec::with_capacity(HYPOTHESES);
        for &c in &CANONICAL_SIZES {
            let pattern = Pattern::new(key, c, CODED_BITS);
            for &crop in &CROPS {
                hypotheses.push(Hypothesis { pattern: pattern.clone(), crop, soft: vec![0.0; CODED_BITS] });
            }
        }
        Detector { key: key.clone(), hypotheses, frames: 0 }
    }

    /// Adds one frame's evidence.
    pub fn add_frame(&mut self, img: &RgbImage) {
        if img.width() < MIN_SIDE || img.height() < MIN_SIDE {
            return;
        }
        let luma = Plane::luma(img);
        for h in &mut self.hypotheses {
            let c = h.pattern.size as f32;
            let span = Span { start: c * (1.0 - h.crop) / 2.0, end: c * (1.0 + h.crop) / 2.0 };
            let (canon, covered) = resample(&luma, h.pattern.size, h.pattern.size, span, span);
            accumulate(&canon, &covered, &h.pattern, &mut h.soft);
        }
        self.frames += 1;
    }

    /// Decodes every hypothesis and keeps the best.
    pub fn finish(&self) -> Detection {
        let mut best: Option<(bool, Detection)> = None;
        for h in &self.hypotheses {
            let norm = h.soft.iter().map(|x| x * x).sum::<f32>().sqrt();
            let bits = ecc::decode(&h.soft, INFO_BITS);
            let codeword = ecc::encode(&bits);
            let (mut corr, mut agree) = (0f32, 0usize);
            for (&c, &y) in codeword.iter().zip(&h.soft) {
                let s = if c == 1 { y } else { -y };
                corr += s;
                agree += usize::from(s > 0.0);
            }
            let z = if norm > 0.0 { corr / norm } else { 0.0 };
            let (ok, payload) = match InfoWord::decode(&self.key, &bits) {
                Ok(p) => (z >= Z_MIN, p),
                Err(p) => (false, p),
            };
            let d = Detection {
                found: ok.then_some(payload),
                best_guess: payload,
                z,
                agreement: agree as f32 / CODED_BITS as f32,
                canonical: h.pattern.size,
                crop: h.crop,
                frames: self.frames,
            };
            let better = match &best {
                None => true,
                Some((best_ok, b)) => (ok, z) > (*best_ok, b.z),
            };
            if better {
                best = Some((ok, d));
            }
        }
        best.expect("at least one hypothesis").1
    }
}

/// Adds chip × coefficient of every fully covered block to its coded bit.
fn accumulate(canon: &Plane, covered: &[bool], pattern: &Pattern, soft: &mut [f32]) {
    let w = canon.width;
    let corners = [(0, 0), (7, 0), (0, 7), (7, 7)];
    let take = |bx: usize, by: usize| corners.iter().all(|&(dx, dy)| covered[(by * 8 + dy) * w + bx * 8 + dx]);
    embed::accumulate(canon, pattern, take, soft);
}
