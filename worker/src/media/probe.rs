//! Probing: opens a container, selects its video stream, reads codec, size, frame rate, duration,
//! rotation and bit rate, and enforces the [`MediaLimits`] guards before anything is decoded.
//! Also owns the shared "open and validate" step that decoding builds on.

use std::path::{Path, PathBuf};

use ffmpeg::codec::packet::side_data::Type as SideDataType;
use ffmpeg::format::stream::Disposition;
use ffmpeg::media::Type as MediaType;
use ffmpeg_next as ffmpeg;

use super::{MediaError, MediaLimits, init};

/// What [`probe`] learns about a video file. `width`/`height` are the stored (coded) dimensions;
/// see [`ProbeInfo::display_size`] for the upright size after `rotation`.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeInfo {
    /// Demuxer name as ffmpeg reports it, e.g. `"mov,mp4,m4a,3gp,3g2,mj2"`.
    pub container: String,
    /// Video codec short name, e.g. `"h264"`.
    pub codec: String,
    pub duration_s: f64,
    pub fps: f64,
    pub width: u32,
    pub height: u32,
    /// Degrees clockwise to rotate stored frames so they display upright: 0, 90, 180 or 270.
    pub rotation: i32,
    pub frame_count: Option<u64>,
    pub bit_rate: Option<u64>,
}

impl ProbeInfo {
    /// Upright (width, height): swapped when `rotation` is 90 or 270.
    pub fn display_size(&self) -> (u32, u32) {
        if self.rotation % 180 == 0 { (self.width, self.height) } else { (self.height, self.width) }
    }
}

/// Open `path`, read its video stream's metadata and check it against `limits`.
pub fn probe(path: &Path, limits: &MediaLimits) -> Result<ProbeInfo, MediaError> {
    open_video(path, limits).map(|opened| opened.info)
}

/// An opened, validated container positioned at its start.
pub(crate) struct OpenedVideo {
    pub input: ffmpeg::format::context::Input,
    pub stream_index: usize,
    pub info: ProbeInfo,
    /// Seconds per stream timestamp tick.
    pub time_base_s: f64,
    /// Stream start timestamp in ticks (0 when unknown); pts are reported relative to it.
    pub start_ts: i64,
}

pub(crate) fn open_video(path: &Path, limits: &MediaLimits) -> Result<OpenedVideo, MediaError> {
    init();
    let owned = || path.to_path_buf();
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(MediaError::NotMedia { path: owned(), reason: "not a regular file".into() });
    }
    if meta.len() > limits.max_file_bytes {
        return Err(MediaError::FileTooLarge { path: owned(), bytes: meta.len(), limit: limits.max_file_bytes });
    }
    if meta.len() == 0 {
        return Err(MediaError::NotMedia { path: owned(), reason: "empty file".into() });
    }

    let input =
        ffmpeg::format::input(path).map_err(|e| MediaError::NotMedia { path: owned(), reason: e.to_string() })?;
    let stream_index = pick_video_stream(&input).ok_or_else(|| MediaError::NoVideoStream { path: owned() })?;
    let stream = input.stream(stream_index).ok_or_else(|| MediaError::NoVideoStream { path: owned() })?;

    let params = stream.parameters();
    let codec_id = params.id();
    let decoder =
        ffmpeg::codec::Context::from_parameters(params).and_then(|ctx| ctx.decoder().video()).map_err(|e| {
            MediaError::NotMedia { path: owned(), reason: format!("cannot open a {} decoder: {e}", codec_id.name()) }
        })?;
    let (width, height) = (decoder.width(), decoder.height());
    if width == 0 || height == 0 {
        return Err(MediaError::NotMedia { path: owned(), reason: "video stream has no dimensions".into() });
    }

    let time_base = stream.time_base();
    let time_base_s = rational_to_f64(time_base.numerator(), time_base.denominator()).unwrap_or(0.0);
    let start_ts = match stream.start_time() {
        ts if ts == ffmpeg::ffi::AV_NOPTS_VALUE => 0,
        ts => ts,
    };

    let fps = {
        let avg = stream.avg_frame_rate();
        let raw = stream.rate();
        rational_to_f64(avg.numerator(), avg.denominator())
            .or_else(|| rational_to_f64(raw.numerator(), raw.denominator()))
            .unwrap_or(0.0)
    };

    let stream_duration = stream.duration();
    let duration_s = if stream_duration > 0 && time_base_s > 0.0 {
        stream_duration as f64 * time_base_s
    } else if input.duration() > 0 {
        input.duration() as f64 / f64::from(ffmpeg::ffi::AV_TIME_BASE)
    } else {
        0.0
    };

    let frame_count = u64::try_from(stream.frames()).ok().filter(|&n| n > 0);
    let bit_rate = u64::try_from(input.bit_rate()).ok().filter(|&n| n > 0);
    let rotation = stream_rotation(&stream);

    let info = ProbeInfo {
        container: input.format().name().to_string(),
        codec: codec_id.name().to_string(),
        duration_s,
        fps,
        width,
        height,
        rotation,
        frame_count,
        bit_rate,
    };
    drop(decoder);
    check_limits(path, &info, limits)?;

    tracing::debug!(path = %path.display(), ?info, "probed video");
    Ok(OpenedVideo { input, stream_index, info, time_base_s, start_ts })
}

fn check_limits(path: &Path, info: &ProbeInfo, limits: &MediaLimits) -> Result<(), MediaError> {
    let pixels = u64::from(info.width) * u64::from(info.height);
    if pixels > limits.max_pixels {
        return Err(MediaError::TooManyPixels {
            what: path.display().to_string(),
            width: info.width,
            height: info.height,
            limit: limits.max_pixels,
        });
    }
    if info.duration_s > limits.max_duration_s {
        return Err(MediaError::TooLong {
            path: PathBuf::from(path),
            duration_s: info.duration_s,
            limit_s: limits.max_duration_s,
        });
    }
    Ok(())
}

/// The default video stream, skipping cover-art pictures.
fn pick_video_stream(input: &ffmpeg::format::context::Input) -> Option<usize> {
    let usable = |s: &ffmpeg::format::stream::Stream| {
        s.parameters().medium() == MediaType::Video && !s.disposition().contains(Disposition::ATTACHED_PIC)
    };
    if let Some(best) = input.streams().best(MediaType::Video)
        && usable(&best)
    {
        return Some(best.index());
    }
    input.streams().find(|s| usable(s)).map(|s| s.index())
}

fn rational_to_f64(num: i32, den: i32) -> Option<f64> {
    (num > 0 && den > 0).then(|| f64::from(num) / f64::from(den))
}

/// Clockwise rotation to display upright, from the display matrix or the legacy `rotate` tag.
fn stream_rotation(stream: &ffmpeg::format::stream::Stream) -> i32 {
    let from_matrix = stream
        .side_data()
        .find(|sd| sd.kind() == SideDataType::DisplayMatrix)
        .and_then(|sd| display_matrix_rotation(sd.data()));
    let degrees = from_matrix.or_else(|| stream.metadata().get("rotate").and_then(|v| v.trim().parse::<f64>().ok()));
    degrees.map_or(0, snap_quarter_turn)
}

/// Clockwise angle encoded by an ffmpeg display matrix (nine native-endian 16.16/2.30 fixed-point
/// i32s, row-major). This is the negation of `av_display_rotation_get`, which returns the
/// counter-clockwise angle the matrix applies.
pub(crate) fn display_matrix_rotation(data: &[u8]) -> Option<f64> {
    let entry = |i: usize| -> Option<f64> {
        let bytes: [u8; 4] = data.get(i * 4..i * 4 + 4)?.try_into().ok()?;
        Some(f64::from(i32::from_ne_bytes(bytes)) / 65536.0)
    };
    let (m0, m1, m3, m4) = (entry(0)?, entry(1)?, entry(3)?, entry(4)?);
    let (s0, s1) = (m0.hypot(m3), m1.hypot(m4));
    if s0 == 0.0 || s1 == 0.0 {
        return None;
    }
    Some((m1 / s1).atan2(m0 / s0).to_degrees())
}

fn snap_quarter_turn(degrees: f64) -> i32 {
    if !degrees.is_finite() {
        return 0;
    }
    let quarters = (degrees / 90.0).round().rem_euclid(4.0);
    // `quarters` is one of 0.0..=3.0 here, so the cast is exact.
    (quarters as i32) * 90
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(m: [i32; 9]) -> Vec<u8> {
        m.iter().flat_map(|v| v.to_ne_bytes()).collect()
    }

    #[test]
    fn display_matrix_angles() {
        let one = 65536;
        let identity = matrix([one, 0, 0, 0, one, 0, 0, 0, 1 << 30]);
        assert_eq!(display_matrix_rotation(&identity).map(snap_quarter_turn), Some(0));
        // What FFmpeg 5.1 writes for `rotate=90`: a 90 degree counter-clockwise matrix.
        let ccw90 = matrix([0, -one, 0, one, 0, 0, 0, 0, 1 << 30]);
        assert_eq!(display_matrix_rotation(&ccw90).map(snap_quarter_turn), Some(270));
        let cw90 = matrix([0, one, 0, -one, 0, 0, 0, 0, 1 << 30]);
        assert_eq!(display_matrix_rotation(&cw90).map(snap_quarter_turn), Some(90));
        let flip = matrix([-one, 0, 0, 0, -one, 0, 0, 0, 1 << 30]);
        assert_eq!(display_matrix_rotation(&flip).map(snap_quarter_turn), Some(180));
        assert_eq!(display_matrix_rotation(&[0u8; 36]), None);
        assert_eq!(display_matrix_rotation(&[1u8; 7]), None);
    }

    #[test]
    fn snapping() {
        assert_eq!(snap_quarter_turn(-90.0), 270);
        assert_eq!(snap_quarter_turn(89.4), 90);
        assert_eq!(snap_quarter_turn(360.0), 0);
        assert_eq!(snap_quarter_turn(f64::NAN), 0);
    }
}
