//! Typed error for everything in `media`: probing, decoding, cutting, encoding and stills.

use std::path::PathBuf;

/// Every failure the media module can report. Variants that concern a file carry its path.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// The input could not be opened as a media container at all (random bytes, empty file,
    /// an MP4 whose `moov` index is missing, ...).
    #[error("{path}: not a readable media file: {reason}", path = path.display())]
    NotMedia { path: PathBuf, reason: String },

    /// The container opened but holds no video stream (e.g. audio-only).
    #[error("{path}: no video stream", path = path.display())]
    NoVideoStream { path: PathBuf },

    /// The container opened but decoding produced no frames (in the requested range).
    #[error("{path}: no frames decoded", path = path.display())]
    NoFrames { path: PathBuf },

    /// Demuxing or decoding failed mid-stream (truncated or damaged data).
    #[error("{path}: corrupt media: {reason}", path = path.display())]
    Corrupt { path: PathBuf, reason: String },

    /// The media is longer than `MediaLimits::max_duration_s`.
    #[error("{path}: duration {duration_s:.3}s exceeds the limit of {limit_s:.3}s", path = path.display())]
    TooLong { path: PathBuf, duration_s: f64, limit_s: f64 },

    /// Width x height is above `MediaLimits::max_pixels`. `what` names the file or says "still image".
    #[error("{what}: {width}x{height} exceeds the pixel limit of {limit}")]
    TooManyPixels { what: String, width: u32, height: u32, limit: u64 },

    /// The file is bigger than `MediaLimits::max_file_bytes`.
    #[error("{path}: {bytes} bytes exceeds the file size limit of {limit}", path = path.display())]
    FileTooLarge { path: PathBuf, bytes: u64, limit: u64 },

    /// More frames were decoded than `MediaLimits::max_decoded_frames` allows.
    #[error("{path}: more than {limit} frames decoded", path = path.display())]
    TooManyFrames { path: PathBuf, limit: u64 },

    /// A time range (or sample rate) is unusable: negative, empty, not finite or past the end.
    #[error("invalid range [{start_s}, {end_s:?}): {reason}")]
    InvalidRange { start_s: f64, end_s: Option<f64>, reason: String },

    /// Frame or output dimensions are unusable (odd for yuv420p, zero, or a size mismatch).
    #[error("invalid dimensions {width}x{height}: {reason}")]
    InvalidDimensions { width: u32, height: u32, reason: String },

    /// Encoding or muxing failed. `target` is the output path or "jpeg"/"png".
    #[error("{target}: encode failed: {reason}")]
    Encode { target: String, reason: String },

    /// A still image could not be decoded (unknown format or damaged data).
    #[error("invalid still image: {reason}")]
    InvalidStill { reason: String },

    #[error(transparent)]
    Io(#[from] std::io::Error),
}
