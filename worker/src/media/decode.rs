//! Streaming frame decoder: demuxes and decodes one video stream lazily, converts frames to
//! upright RGB24 (swscale + rotation), optionally downscales, and samples by timestamp.
//! Holds O(1) frames in memory regardless of input length.

use std::path::{Path, PathBuf};

use ffmpeg::format::Pixel;
use ffmpeg::software::scaling;
use ffmpeg_next as ffmpeg;
use image::RgbImage;

use super::probe::{OpenedVideo, open_video};
use super::{MediaError, MediaLimits, ProbeInfo};

/// What to pull out of a video.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeOptions {
    /// Emit at most this many frames per second of media time; `None` emits every frame.
    pub sample_fps: Option<f64>,
    /// First timestamp (seconds from stream start) to emit.
    pub start_s: f64,
    /// Stop before this timestamp; `None` runs to the end.
    pub end_s: Option<f64>,
    /// Downscale (keeping aspect, even dimensions) so the longer side is at most this.
    pub max_side: Option<u32>,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        Self { sample_fps: None, start_s: 0.0, end_s: None, max_side: None }
    }
}

/// One decoded, upright RGB frame.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Position among the frames this decoder emitted (0-based).
    pub index: u64,
    /// Presentation time in seconds from the stream start.
    pub pts_s: f64,
    pub image: RgbImage,
}

/// Owns a swscale context. `SwsContext` has no thread affinity; it is only ever used through
/// `&mut self` of the single decoder or encoder that owns it, so moving it between threads is
/// sound.
pub(super) struct Scaler(pub(super) scaling::Context);

// SAFETY: see the type docs; the context is never shared, only moved.
unsafe impl Send for Scaler {}

/// Lazy iterator over decoded frames; see [`decode`]. After it yields an error it is exhausted.
pub struct FrameDecoder {
    path: PathBuf,
    info: ProbeInfo,
    input: ffmpeg::format::context::Input,
    decoder: ffmpeg::decoder::Video,
    stream_index: usize,
    time_base_s: f64,
    start_ts: i64,
    opts: DecodeOptions,
    /// Output size forced by `cut` (upright dimensions), overriding `max_side`.
    exact_size: Option<(u32, u32)>,
    scaler: Option<Scaler>,
    decoded: ffmpeg::frame::Video,
    rgb: ffmpeg::frame::Video,
    next_sample_s: f64,
    frames_decoded: u64,
    frames_emitted: u64,
    max_decoded_frames: u64,
    /// The largest frame area accepted: checked on every frame, since a stream may change its
    /// resolution after the header that the probe read.
    max_pixels: u64,
    eof_sent: bool,
    done: bool,
}

/// Open `path` for streaming decode. Limits (file size, pixels, duration) and the range are
/// checked here, before any frame is decoded; `max_decoded_frames` is enforced while iterating.
pub fn decode(path: &Path, opts: &DecodeOptions, limits: &MediaLimits) -> Result<FrameDecoder, MediaError> {
    validate_options(opts)?;
    let OpenedVideo { mut input, stream_index, info, time_base_s, start_ts } = open_video(path, limits)?;

    if info.duration_s > 0.0 && opts.start_s >= info.duration_s {
        return Err(MediaError::InvalidRange {
            start_s: opts.start_s,
            end_s: opts.end_s,
            reason: format!("starts at or after the end of the video ({:.3}s)", info.duration_s),
        });
    }

    let corrupt = |reason: String| MediaError::Corrupt { path: path.to_path_buf(), reason };
    let params = input
        .stream(stream_index)
        .map(|s| s.parameters())
        .ok_or_else(|| MediaError::NoVideoStream { path: path.to_path_buf() })?;
    let mut ctx = ffmpeg::codec::Context::from_parameters(params).map_err(|e| corrupt(e.to_string()))?;
    ctx.set_threading(ffmpeg::threading::Config {
        kind: ffmpeg::threading::Type::Frame,
        count: 0,
        ..Default::default()
    });
    let decoder = ctx.decoder().video().map_err(|e| corrupt(format!("cannot open decoder: {e}")))?;

    if opts.start_s > 0.0 {
        // Seek to the keyframe at or before start; frames before start are dropped while decoding.
        let target_s = opts.start_s + start_ts as f64 * time_base_s;
        let ts = (target_s * f64::from(ffmpeg::ffi::AV_TIME_BASE)) as i64;
        if let Err(e) = input.seek(ts, ..ts) {
            tracing::debug!(path = %path.display(), error = %e, "seek failed; decoding from the start");
        }
    }

    Ok(FrameDecoder {
        path: path.to_path_buf(),
        info,
        input,
        decoder,
        stream_index,
        time_base_s,
        start_ts,
        next_sample_s: opts.start_s,
        opts: opts.clone(),
        exact_size: None,
        scaler: None,
        decoded: ffmpeg::frame::Video::empty(),
        rgb: ffmpeg::frame::Video::empty(),
        frames_decoded: 0,
        frames_emitted: 0,
        max_decoded_frames: limits.max_decoded_frames,
        max_pixels: limits.max_pixels,
        eof_sent: false,
        done: false,
    })
}

fn validate_options(opts: &DecodeOptions) -> Result<(), MediaError> {
    let bad = |reason: &str| MediaError::InvalidRange {
        start_s: opts.start_s,
        end_s: opts.end_s,
        reason: reason.to_string(),
    };
    if !opts.start_s.is_finite() || opts.start_s < 0.0 {
        return Err(bad("start must be finite and >= 0"));
    }
    if let Some(end) = opts.end_s
        && (!end.is_finite() || end <= opts.start_s)
    {
        return Err(bad("end must be finite and after start"));
    }
    if let Some(fps) = opts.sample_fps
        && (!fps.is_finite() || fps <= 0.0)
    {
        return Err(bad("sample_fps must be finite and > 0"));
    }
    if opts.max_side == Some(0) {
        return Err(MediaError::InvalidDimensions { width: 0, height: 0, reason: "max_side must be > 0".into() });
    }
    Ok(())
}

impl FrameDecoder {
    /// Metadata of the stream being decoded.
    pub fn info(&self) -> &ProbeInfo {
        &self.info
    }

    /// Force every emitted frame to exactly `size` (upright width, height). Used by `cut`.
    pub(crate) fn set_exact_size(&mut self, size: (u32, u32)) {
        self.exact_size = Some(size);
    }

    fn corrupt(&self, reason: impl Into<String>) -> MediaError {
        MediaError::Corrupt { path: self.path.clone(), reason: reason.into() }
    }

    /// Feed the decoder one more packet of our stream (or EOF). Returns Ok(false) when nothing
    /// more can be fed.
    fn feed(&mut self) -> Result<bool, MediaError> {
        if self.eof_sent {
            return Ok(false);
        }
        let mut packet = ffmpeg::Packet::empty();
        loop {
            match packet.read(&mut self.input) {
                Ok(()) => {
                    if packet.stream() != self.stream_index {
                        continue;
                    }
                    if packet.is_corrupt() {
                        return Err(self.corrupt(format!("truncated or damaged packet at pts {:?}", packet.pts())));
                    }
                    return match self.decoder.send_packet(&packet) {
                        Ok(()) => Ok(true),
                        Err(e) => Err(self.corrupt(format!("decoder rejected packet: {e}"))),
                    };
                }
                Err(ffmpeg::Error::Eof) => {
                    self.eof_sent = true;
                    return match self.decoder.send_eof() {
                        Ok(()) => Ok(true),
                        Err(e) => Err(self.corrupt(format!("decoder flush failed: {e}"))),
                    };
                }
                Err(e) => return Err(self.corrupt(format!("demux failed: {e}"))),
            }
        }
    }

    /// Pull the next decoded frame, feeding packets as needed. Ok(None) at end of stream.
    fn next_decoded(&mut self) -> Result<Option<()>, MediaError> {
        loop {
            match self.decoder.receive_frame(&mut self.decoded) {
                Ok(()) => return Ok(Some(())),
                Err(ffmpeg::Error::Eof) => return Ok(None),
                Err(ffmpeg::Error::Other { errno }) if errno == ffmpeg::util::error::EAGAIN => {
                    if !self.feed()? {
                        return Ok(None);
                    }
                }
                Err(e) => return Err(self.corrupt(format!("decode failed: {e}"))),
            }
        }
    }

    /// Normal end of iteration; a decode that emitted nothing is an error.
    fn end_of_output(&self) -> Result<Option<Frame>, MediaError> {
        if self.frames_emitted == 0 {
            return Err(MediaError::NoFrames { path: self.path.clone() });
        }
        Ok(None)
    }

    fn step(&mut self) -> Result<Option<Frame>, MediaError> {
        loop {
            if self.next_decoded()?.is_none() {
                return self.end_of_output();
            }
            self.frames_decoded += 1;
            if self.frames_decoded > self.max_decoded_frames {
                return Err(MediaError::TooManyFrames { path: self.path.clone(), limit: self.max_decoded_frames });
            }

            let Some(ts) = self.decoded.timestamp().or(self.decoded.pts()) else {
                tracing::debug!(path = %self.path.display(), "skipping frame without timestamp");
                continue;
            };
            // Crafted streams carry any 64-bit timestamps: no overflow, no non-finite times.
            let Some(offset) = ts.checked_sub(self.start_ts) else {
                return Err(self.corrupt(format!("timestamp {ts} out of range")));
            };
            let pts_s = offset as f64 * self.time_base_s;
            if !pts_s.is_finite() {
                return Err(self.corrupt(format!("timestamp {ts} out of range")));
            }
            if pts_s < self.opts.start_s {
                continue;
            }
            if self.opts.end_s.is_some_and(|end| pts_s >= end) {
                return self.end_of_output();
            }
            if let Some(fps) = self.opts.sample_fps {
                if pts_s < self.next_sample_s {
                    continue;
                }
                // The next sample time after this frame, in one step (a timestamp jump far ahead
                // must not make this a loop of billions of additions).
                let step = 1.0 / fps;
                let behind = ((pts_s - self.next_sample_s) / step).floor();
                if behind > 1000.0 {
                    self.next_sample_s += behind * step;
                }
                while self.next_sample_s <= pts_s {
                    self.next_sample_s += step;
                }
            }

            let image = self.convert()?;
            let frame = Frame { index: self.frames_emitted, pts_s, image };
            self.frames_emitted += 1;
            return Ok(Some(frame));
        }
    }

    /// Convert `self.decoded` to an upright RGB image of the requested size.
    fn convert(&mut self) -> Result<RgbImage, MediaError> {
        let (src_w, src_h, src_fmt) = (self.decoded.width(), self.decoded.height(), self.decoded.format());
        if src_w == 0 || src_h == 0 {
            return Err(self.corrupt("decoded frame has no dimensions"));
        }
        if u64::from(src_w) * u64::from(src_h) > self.max_pixels {
            return Err(MediaError::TooManyPixels {
                what: format!("frame {} (the stream changed its resolution)", self.frames_decoded),
                width: src_w,
                height: src_h,
                limit: self.max_pixels,
            });
        }
        let quarter = self.info.rotation % 180 != 0;
        let (dst_w, dst_h) = match self.exact_size {
            // exact_size is upright; swscale runs before rotation.
            Some((w, h)) if quarter => (h, w),
            Some((w, h)) => (w, h),
            None => fit_max_side(src_w, src_h, self.opts.max_side),
        };

        let stale = self.scaler.as_ref().is_none_or(|Scaler(s)| {
            let (i, o) = (s.input(), s.output());
            (i.format, i.width, i.height, o.width, o.height) != (src_fmt, src_w, src_h, dst_w, dst_h)
        });
        if stale {
            let ctx =
                scaling::Context::get(src_fmt, src_w, src_h, Pixel::RGB24, dst_w, dst_h, scaling::Flags::BILINEAR)
                    .map_err(|e| self.corrupt(format!("cannot convert {src_fmt:?} {src_w}x{src_h} to RGB: {e}")))?;
            self.scaler = Some(Scaler(ctx));
            // The output frame was sized for the previous conversion.
            self.rgb = ffmpeg::frame::Video::empty();
        }
        let Some(Scaler(scaler)) = self.scaler.as_mut() else {
            return Err(self.corrupt("no pixel converter"));
        };
        if let Err(e) = scaler.run(&self.decoded, &mut self.rgb) {
            return Err(self.corrupt(format!("pixel conversion failed: {e}")));
        }

        let image = rgb_frame_to_image(&self.rgb, dst_w, dst_h).ok_or_else(|| self.corrupt("bad RGB frame layout"))?;
        Ok(match self.info.rotation {
            90 => image::imageops::rotate90(&image),
            180 => image::imageops::rotate180(&image),
            270 => image::imageops::rotate270(&image),
            _ => image,
        })
    }
}

impl Iterator for FrameDecoder {
    type Item = Result<Frame, MediaError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.step() {
            Ok(Some(frame)) => Some(Ok(frame)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// Size that keeps aspect with the longer side <= `max_side`, both dimensions even (>= 2).
/// Returns the input unchanged when no downscale is needed.
pub(crate) fn fit_max_side(width: u32, height: u32, max_side: Option<u32>) -> (u32, u32) {
    let longer = width.max(height);
    match max_side {
        Some(max) if longer > max => {
            let scale = f64::from(max) / f64::from(longer);
            let even = |v: u32| -> u32 {
                let scaled = (f64::from(v) * scale).floor() as u32;
                (scaled / 2 * 2).max(2)
            };
            (even(width), even(height))
        }
        _ => (width, height),
    }
}

/// Copy a packed RGB24 frame (rows possibly padded to `stride`) into an `RgbImage`.
fn rgb_frame_to_image(frame: &ffmpeg::frame::Video, width: u32, height: u32) -> Option<RgbImage> {
    let row = usize::try_from(width).ok()? * 3;
    let rows = usize::try_from(height).ok()?;
    let stride = frame.stride(0);
    let data = frame.data(0);
    let mut buf = Vec::with_capacity(row * rows);
    for y in 0..rows {
        let start = y.checked_mul(stride)?;
        buf.extend_from_slice(data.get(start..start + row)?);
    }
    RgbImage::from_raw(width, height, buf)
}

#[cfg(test)]
mod tests {
    use super::fit_max_side;

    #[test]
    fn fit_keeps_aspect_and_even_dims() {
        assert_eq!(fit_max_side(320, 240, Some(100)), (100, 74));
        assert_eq!(fit_max_side(240, 320, Some(160)), (120, 160));
        assert_eq!(fit_max_side(1921, 1081, Some(255)), (254, 142));
        assert_eq!(fit_max_side(320, 240, Some(320)), (320, 240));
        assert_eq!(fit_max_side(320, 240, None), (320, 240));
        assert_eq!(fit_max_side(4000, 2, Some(10)), (10, 2));
    }
}
