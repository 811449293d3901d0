//! Synthetic sample videos for the demo and the tests: coloured shapes moving over a background
//! that changes at shot boundaries, so that decoding, shot detection and clip selection have
//! real structure to find. Deterministic for the same arguments.

use std::path::Path;

use image::{Rgb, RgbImage};

use crate::media::{EncodeOptions, EncodeReport, MediaError, VideoEncoder};

/// One frame of the sample at time `t` seconds with `shots` shots over `seconds`.
pub fn sample_frame(width: u32, height: u32, t: f64, seconds: f64, shots: u32) -> RgbImage {
    const BACKGROUNDS: [[u8; 3]; 5] = [[24, 40, 90], [90, 60, 20], [20, 80, 40], [70, 20, 70], [40, 40, 40]];
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
