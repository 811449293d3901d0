//! `watermark` owns the invisible watermark of every generated item: the 64-bit [`Payload`]
//! (tenant, job, generator) and its key ([`payload`]), the error-correcting code ([`ecc`]), the
//! per-block DCT math ([`dct`]), the resolution-normalised luma domain ([`plane`]), the keyed
//! spreading [`pattern`], marking ([`embed::Watermarker`], a [`crate::media::FrameFilter`]) and
//! detection ([`detect::Detector`], [`detect_file`] for MP4, JPEG and PNG), and the robustness
//! evaluation ([`robustness`]). The CPU code here is the reference for a GPU kernel: the
//! per-block steps are plain functions over f32 luma in [`dct`].
//!
//! Scheme: each frame's luma is resampled to a square canonical grid (64, 128 or 256 samples
//! a side, by frame size); the 12 low-mid-frequency coefficients of each 8×8 block DCT are
//! slots; a keyed permutation spreads the 204 coded bits (96 information bits: payload ‖
//! CRC-32, key-whitened, through a rate-1/2 K=7 convolutional code) over all slots with keyed
//! ±1 chips. Detection resamples to the same grids, correlates, sums over frames, decodes with
//! soft Viterbi and accepts only a CRC match with a z-score ≥ [`detect::Z_MIN`].

pub mod dct;
pub mod detect;
pub mod ecc;
pub mod embed;
pub mod pattern;
pub mod payload;
pub mod plane;
pub mod robustness;

use std::path::Path;

pub use detect::{Detection, Detector};
pub use embed::{Strength, Watermarker};
pub use payload::{Generator, Payload, WatermarkKey};

use crate::media::{self, DecodeOptions, MediaError, MediaLimits};

/// Most video frames examined by [`detect_file`].
pub const MAX_DETECT_FRAMES: usize = 48;
/// Frames per second sampled from a video by [`detect_file`].
pub const DETECT_FPS: f64 = 8.0;

/// Why a file could not be examined.
#[derive(Debug, thiserror::Error)]
pub enum WatermarkError {
    /// The file is not readable media.
    #[error(transparent)]
    Media(#[from] MediaError),
    /// Reading the file failed.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Looks for a mark in a JPEG, a PNG or a video (up to [`MAX_DETECT_FRAMES`] frames at
/// [`DETECT_FPS`]).
pub fn detect_file(path: &Path, key: &WatermarkKey, limits: &MediaLimits) -> Result<Detection, WatermarkError> {
    let mut detector = Detector::new(key);
    let head = {
        use std::io::Read;
        let mut buf = [0u8; 8];
        let mut f = std::fs::File::open(path).map_err(|source| io(path, source))?;
        let n = f.read(&mut buf).map_err(|source| io(path, source))?;
        buf[..n].to_vec()
    };
    let is_still = head.starts_with(&[0xff, 0xd8]) || head.starts_with(b"\x89PNG");
    if is_still {
        let bytes = std::fs::read(path).map_err(|source| io(path, source))?;
        detector.add_frame(&media::decode_still(&bytes, limits)?);
    } else {
        let opts = DecodeOptions { sample_fps: Some(DETECT_FPS), start_s: 0.0, end_s: None, max_side: None };
        for frame in media::decode(path, &opts, limits)?.take(MAX_DETECT_FRAMES) {
            detector.add_frame(&frame?.image);
        }
    }
    Ok(detector.finish())
}

fn io(path: &Path, source: std::io::Error) -> WatermarkError {
    WatermarkError::Io { path: path.display().to_string(), source }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::RgbImage;
    use image::imageops::{FilterType, resize};

    fn detect(frames: &[RgbImage], key: &WatermarkKey) -> Detection {
        let mut d = Detector::new(key);
        frames.iter().for_each(|f| d.add_frame(f));
        d.finish()
    }

    fn psnr(a: &RgbImage, b: &RgbImage) -> f64 {
        let mse = a.as_raw().iter().zip(b.as_raw()).map(|(&x, &y)| (x as f64 - y as f64).powi(2)).sum::<f64>()
            / a.as_raw().len() as f64;
        10.0 * (255.0f64 * 255.0 / mse).log10()
    }

    #[test]
    fn marks_survive_half_size_and_jpeg_and_are_not_found_unmarked() {
        let key = WatermarkKey::dev();
        let payload = Payload::for_job(&key, "acme", "job-9", Generator::EDITOR);
        let wm = Watermarker::new(&key, payload);
        let original = crate::samples::textured_frame(384, 216, 0.0, 3);
        let mut marked = original.clone();
        wm.mark(&mut marked);
        let p = psnr(&original, &marked);
        assert!(p >= 40.0, "PSNR {p:.2}");
        assert_eq!(detect(std::slice::from_ref(&marked), &key).found, Some(payload));
        let half = resize(&marked, 192, 108, FilterType::Triangle);
        assert_eq!(detect(&[half], &key).found, Some(payload));
        let jpeg = media::encode_jpeg(&marked, 75).unwrap();
        let back = media::decode_still(&jpeg, &MediaLimits::default()).unwrap();
        assert_eq!(detect(&[back], &key).found, Some(payload));
        // Unmarked, or marked under another key: nothing.
        assert_eq!(detect(&[original], &key).found, None);
        assert_eq!(detect(&[marked], &WatermarkKey::new(b"another key".to_vec())).found, None);
    }
}
