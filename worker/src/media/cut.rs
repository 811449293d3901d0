//! Cutting: decode a time range of a video at its own frame rate, optionally resize, and
//! re-encode it to H.264 MP4 with [`VideoEncoder`].

use std::path::Path;

use super::decode::{DecodeOptions, decode};
use super::{EncodeOptions, EncodeReport, MediaError, MediaLimits, VideoEncoder};

/// Re-encode `[start_s, end_s)` of `src` into `dst`. `size` is the output (width, height), which
/// must be even; without it the upright source size is kept (rounded down to even).
/// The output frame rate is the source's average rate rounded to an integer (at least 1).
pub fn cut(
    src: &Path,
    start_s: f64,
    end_s: f64,
    dst: &Path,
    size: Option<(u32, u32)>,
    opts: &EncodeOptions,
    limits: &MediaLimits,
) -> Result<EncodeReport, MediaError> {
    if let Some((w, h)) = size
        && (w == 0 || h == 0 || !w.is_multiple_of(2) || !h.is_multiple_of(2))
    {
        return Err(MediaError::InvalidDimensions {
            width: w,
            height: h,
            reason: "cut output needs non-zero even width and height".into(),
        });
    }
    let decode_opts = DecodeOptions { sample_fps: None, start_s, end_s: Some(end_s), max_side: None };
    let mut frames = decode(src, &decode_opts, limits)?;
    let info = frames.info().clone();
    let out_size = size.unwrap_or_else(|| {
        let (w, h) = info.display_size();
        ((w / 2 * 2).max(2), (h / 2 * 2).max(2))
    });
    frames.set_exact_size(out_size);

    let fps = if info.fps.is_finite() && info.fps >= 1.0 {
        // Clamped to a sane range before the cast, so it cannot truncate surprisingly.
        info.fps.round().min(1000.0) as u32
    } else {
        25
    };

    let mut encoder: Option<VideoEncoder> = None;
    for frame in frames {
        let frame = frame?;
        let enc = match encoder.as_mut() {
            Some(enc) => enc,
            None => encoder.insert(VideoEncoder::create(dst, out_size.0, out_size.1, fps, opts)?),
        };
        enc.push(&frame.image)?;
    }
    match encoder {
        Some(enc) => enc.finish(),
        // decode reports NoFrames itself; this is only reachable if it ever stops doing so.
        None => Err(MediaError::NoFrames { path: src.to_path_buf() }),
    }
}
