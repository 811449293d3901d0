//! Synthetic sample videos for the demo and the tests: coloured shapes moving over a background
//! that changes at shot boundaries (each change above PySceneDetect's default threshold of 27),
//! so that decoding, shot detection and clip selection have real structure to find; and
//! textured, natural-looking frames (fractal value noise with soft colour and slow panning: what
//! watermark distortion and robustness are measured on).
//! Deterministic for the same arguments.

use std::path::Path;

use image::{Rgb, RgbImage};

use crate::media::{EncodeOptions, EncodeReport, MediaError, VideoEncoder};

/// One frame of the sample at time `t` seconds with `shots` shots over `seconds`.
pub fn sample_frame(width: u32, height: u32, t: f64, seconds: f64, shots: u32) -> RgbImage {
    const BACKGROUNDS: [[u8; 3]; 5] = [[24, 40, 90], [90, 60, 20], [20, 90, 110], [70, 20, 70], [40, 40, 40]];
    let shot = ((t / seconds) * f64::from(shots.max(1))).floor() as usize;
    let bg = BACKGROUNDS[shot % BACKGROUNDS.len()];
    let (w, h) = (f64::from(width), f64::from(height));
    // A disc moving right and a square moving down, both with texture so they have edges.
    let (cx, cy, r) = ((0.1 + 0.8 * ((t * 0.3).fract())) * w, 0.5 * h, 0.15 * h);
    let side = 0.2 * h;
    let (sx, sy) = (0.7 * w, (0.1 + 0.7 * ((t * 0.2).fract())) * h);
    RgbImage::from_fn(width, height, |x, y| {
        let (xf, yf) = (f64::from(x), f64::from(y));
        let grain = ((x * 7 + y * 13) % 16) as u8;
        if (xf - cx).powi(2) + (yf - cy).powi(2) < r * r {
            let stripe = if ((xf - cx) / 6.0).floor() as i64 % 2 == 0 { 255 } else { 200 };
            Rgb([stripe, 210, 40])
        } else if xf >= sx && xf < sx + side && yf >= sy && yf < sy + side {
            Rgb([230, 60 + grain * 4, 60])
        } else {
            Rgb([bg[0] + grain, bg[1] + grain, bg[2] + grain])
        }
    })
}

/// Writes a `seconds`-long H.264 sample at `fps` and `width`×`height` to `path`.
pub fn write_sample_video(
    path: &Path,
    seconds: f64,
    fps: u32,
    width: u32,
    height: u32,
    shots: u32,
) -> Result<EncodeReport, MediaError> {
    let mut enc = VideoEncoder::create(path, width, height, fps, &EncodeOptions::default())?;
    let n = (seconds * f64::from(fps)).round() as u64;
    for i in 0..n {
        enc.push(&sample_frame(width, height, i as f64 / f64::from(fps), seconds, shots))?;
    }
    enc.finish()
}

/// Hash of a lattice point to [0, 1).
fn lattice(x: i64, y: i64, seed: u64) -> f32 {
    let mut h = (x as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (y as u64).wrapping_mul(0xc2b2_ae3d_27d4_eb4f) ^ seed;
    h ^= h >> 31;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 29;
    (h >> 40) as f32 / (1u64 << 24) as f32
}

/// Smoothly interpolated value noise at (x, y), in [0, 1).
fn value_noise(x: f32, y: f32, seed: u64) -> f32 {
    let (x0, y0) = (x.floor(), y.floor());
    let (fx, fy) = (x - x0, y - y0);
    let (sx, sy) = (fx * fx * (3.0 - 2.0 * fx), fy * fy * (3.0 - 2.0 * fy));
    let (xi, yi) = (x0 as i64, y0 as i64);
    let top = lattice(xi, yi, seed) * (1.0 - sx) + lattice(xi + 1, yi, seed) * sx;
    let bottom = lattice(xi, yi + 1, seed) * (1.0 - sx) + lattice(xi + 1, yi + 1, seed) * sx;
    top * (1.0 - sy) + bottom * sy
}

/// Fractal noise: five octaves, each half the amplitude of the one before (a 1/f-like
/// spectrum, as in natural images).
fn fractal(x: f32, y: f32, seed: u64) -> f32 {
    let (mut sum, mut amp, mut freq, mut norm) = (0.0, 1.0, 1.0, 0.0);
    for octave in 0..5 {
        sum += amp * value_noise(x * freq, y * freq, seed.wrapping_add(octave));
        norm += amp;
        amp *= 0.5;
        freq *= 2.0;
    }
    sum / norm
}

/// A textured, natural-looking frame at time `t` seconds: fractal luminance and colour fields
/// (scaled to the frame, so every size shows the same scene), panning slowly, with one soft
/// disc moving across. Each `seed` is a different scene.
pub fn textured_frame(width: u32, height: u32, t: f64, seed: u64) -> RgbImage {
    let scale = 6.0 / width.max(height) as f32;
    let pan = (t * 0.4) as f32;
    let tint = [lattice(1, 2, seed), lattice(3, 4, seed), lattice(5, 6, seed)];
    let (cx, cy, r) =
        ((0.2 + 0.6 * ((t * 0.15).fract() as f32)) * width as f32, 0.45 * height as f32, 0.12 * height as f32);
    RgbImage::from_fn(width, height, |x, y| {
        let (u, v) = (x as f32 * scale + pan, y as f32 * scale + 0.3 * pan);
        let l = fractal(u, v, seed);
        let c = fractal(u * 0.5 + 11.0, v * 0.5 + 7.0, seed ^ 0x55);
        let mut rgb = [0f32; 3];
        for (i, ch) in rgb.iter_mut().enumerate() {
            *ch = 255.0 * (0.15 + 0.7 * l) * (0.75 + 0.5 * tint[i] * c);
        }
        let d = ((x as f32 - cx).powi(2) + (y as f32 - cy).powi(2)).sqrt();
        if d < r {
            let shade = 1.0 - 0.4 * d / r;
            rgb = [230.0 * shade, 190.0 * shade, 120.0 * shade];
        }
        Rgb(rgb.map(|c| c.clamp(0.0, 255.0) as u8))
    })
}

/// Writes a `seconds`-long H.264 video of [`textured_frame`]s (scene `seed`) to `path`.
pub fn write_textured_video(
    path: &Path,
    seconds: f64,
    fps: u32,
    width: u32,
    height: u32,
    seed: u64,
) -> Result<EncodeReport, MediaError> {
    let mut enc = VideoEncoder::create(path, width, height, fps, &EncodeOptions::default())?;
    let n = (seconds * f64::from(fps)).round() as u64;
    for i in 0..n {
        enc.push(&textured_frame(width, height, i as f64 / f64::from(fps), seed))?;
    }
    enc.finish()
}
