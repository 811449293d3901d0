//! Media handling for reelforge: probe, streaming decode, cut and H.264/MP4 encode of video over
//! ffmpeg-next, plus JPEG/PNG stills over the `image` crate, planar YUV 4:2:0 frames
//! ([`I420Image`]) and their BT.601 conversion, and the [`FrameFilter`] hook applied
//! to every frame before it is encoded. Every entry point enforces
//! [`MediaLimits`] before doing expensive work and reports failures as [`MediaError`].

mod cut;
mod decode;
mod encode;
mod error;
mod filter;
mod probe;
mod still;
mod yuv;

use std::sync::Once;

pub use cut::cut;
pub use decode::{DecodeOptions, Frame, FrameDecoder, decode};
pub use encode::{EncodeOptions, EncodeReport, VideoEncoder};
pub use error::MediaError;
pub use filter::{FrameFilter, SharedFilter};
pub use probe::{ProbeInfo, probe};
pub use still::{decode_still, encode_jpeg, encode_png};
pub use yuv::{I420Image, rgb_to_yuv, yuv_to_rgb};

/// Resource guards applied to every untrusted input.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaLimits {
    /// Longest accepted media duration, in seconds.
    pub max_duration_s: f64,
    /// Largest accepted frame area (width * height).
    pub max_pixels: u64,
    /// Largest accepted input file, in bytes.
    pub max_file_bytes: u64,
    /// Most frames a single decode may pull out of the decoder.
    pub max_decoded_frames: u64,
}

impl Default for MediaLimits {
    fn default() -> Self {
        Self {
            max_duration_s: 3600.0,
            max_pixels: 4096 * 4096,
            max_file_bytes: 4 * 1024 * 1024 * 1024,
            max_decoded_frames: 200_000,
        }
    }
}

static INIT: Once = Once::new();

/// Initialise ffmpeg once per process and silence its log output. Safe to call repeatedly;
/// every public video entry point calls it.
pub fn init() {
    INIT.call_once(|| {
        if let Err(e) = ffmpeg_next::init() {
            tracing::error!(error = %e, "ffmpeg initialisation failed");
        }
        ffmpeg_next::util::log::set_level(ffmpeg_next::util::log::Level::Quiet);
    });
}

/// The fuzz harness, shared by `fuzz/fuzz_targets/media.rs` (cargo-fuzz, nightly) and the corpus
/// replay in `worker/tests/media.rs` (stable): `bytes` as a video file (probed, then up to 64
/// frames decoded, downscaled) and as a still image, under small limits. Every failure must be
/// a typed [`MediaError`]; a panic is the finding.
#[doc(hidden)]
pub fn fuzz_one(bytes: &[u8]) {
    let limits =
        MediaLimits { max_duration_s: 60.0, max_pixels: 1920 * 1080, max_file_bytes: 1 << 24, max_decoded_frames: 64 };
    let Ok(dir) = tempfile::tempdir() else { return };
    let path = dir.path().join("input");
    if std::fs::write(&path, bytes).is_ok() && probe(&path, &limits).is_ok() {
        let opts = DecodeOptions { max_side: Some(64), ..DecodeOptions::default() };
        if let Ok(frames) = decode(&path, &opts, &limits) {
            for frame in frames.take(64) {
                if frame.is_err() {
                    break;
                }
            }
        }
    }
    let _ = decode_still(bytes, &limits);
}
