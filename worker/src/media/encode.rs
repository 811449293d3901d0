//! H.264/MP4 encoder: takes RGB frames, converts them to yuv420p with swscale, encodes with
//! libx264 (CRF + preset) and muxes to MP4 with `+faststart` and optional container metadata.

use std::path::{Path, PathBuf};

use ffmpeg::format::Pixel;
use ffmpeg::software::scaling;
use ffmpeg::{Dictionary, Rational};
use ffmpeg_next as ffmpeg;
use image::RgbImage;

use super::decode::Scaler;
use super::filter::SharedFilter;
use super::{MediaError, init};

/// Encoder settings.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodeOptions {
    /// x264 constant rate factor, 0..=51 (lower is better quality).
    pub crf: u8,
    /// x264 preset name, e.g. "veryfast".
    pub preset: String,
    /// MP4 container metadata, e.g. `("comment", "ai-generated")`. Keys other than the
    /// standard ones (title, comment, …) are written as `mdta` keys (`use_metadata_tags`).
    pub metadata: Vec<(String, String)>,
    /// Applied to every frame before it is encoded (the watermark).
    pub filter: Option<SharedFilter>,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        Self { crf: 20, preset: "veryfast".into(), metadata: Vec::new(), filter: None }
    }
}

/// Summary of a finished encode.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodeReport {
    pub frames: u64,
    /// `frames / fps`.
    pub duration_s: f64,
    /// Size of the written file.
    pub bytes: u64,
}

/// Streaming H.264 MP4 writer. Call [`VideoEncoder::finish`]; dropping it early leaves an
/// unplayable partial file behind.
pub struct VideoEncoder {
    path: PathBuf,
    output: ffmpeg::format::context::Output,
    encoder: ffmpeg::encoder::Video,
    scaler: Scaler,
    rgb: ffmpeg::frame::Video,
    yuv: ffmpeg::frame::Video,
    width: u32,
    height: u32,
    fps: u32,
    encoder_time_base: Rational,
    stream_time_base: Rational,
    frames: u64,
    filter: Option<SharedFilter>,
    filtered: Option<RgbImage>,
}

impl VideoEncoder {
    /// Create `path` (always MP4, whatever the extension) for `width`x`height` frames at `fps`.
    /// Dimensions must be even and non-zero (yuv420p).
    pub fn create(path: &Path, width: u32, height: u32, fps: u32, opts: &EncodeOptions) -> Result<Self, MediaError> {
        init();
        if width == 0 || height == 0 || !width.is_multiple_of(2) || !height.is_multiple_of(2) {
            return Err(MediaError::InvalidDimensions {
                width,
                height,
                reason: "H.264 yuv420p output needs non-zero even width and height".into(),
            });
        }
        if i32::try_from(width).is_err() || i32::try_from(height).is_err() {
            return Err(MediaError::InvalidDimensions { width, height, reason: "dimensions too large".into() });
        }
        let fail = |reason: String| MediaError::Encode { target: path.display().to_string(), reason };
        let fps_i = i32::try_from(fps).ok().filter(|&f| f > 0).ok_or_else(|| fail(format!("invalid fps {fps}")))?;
        if opts.crf > 51 {
            return Err(fail(format!("crf {} out of range 0..=51", opts.crf)));
        }

        let mut output =
            ffmpeg::format::output_as(path, "mp4").map_err(|e| fail(format!("cannot create output: {e}")))?;
        let codec =
            ffmpeg::encoder::find_by_name("libx264").ok_or_else(|| fail("libx264 encoder not available".into()))?;
        let global_header = output.format().flags().contains(ffmpeg::format::Flags::GLOBAL_HEADER);

        let encoder_time_base = Rational::new(1, fps_i);
        let mut enc = ffmpeg::codec::Context::new_with_codec(codec)
            .encoder()
            .video()
            .map_err(|e| fail(format!("cannot allocate encoder: {e}")))?;
        enc.set_width(width);
        enc.set_height(height);
        enc.set_format(Pixel::YUV420P);
        enc.set_time_base(encoder_time_base);
        enc.set_frame_rate(Some(Rational::new(fps_i, 1)));
        if global_header {
            enc.set_flags(ffmpeg::codec::Flags::GLOBAL_HEADER);
        }
        let mut x264_opts = Dictionary::new();
        x264_opts.set("crf", &opts.crf.to_string());
        x264_opts.set("preset", &opts.preset);
        let encoder = enc
            .open_with(x264_opts)
            .map_err(|e| fail(format!("cannot open libx264 (preset {:?}): {e}", opts.preset)))?;

        {
            let mut stream = output.add_stream(codec).map_err(|e| fail(format!("cannot add stream: {e}")))?;
            stream.set_parameters(&encoder);
            stream.set_time_base(encoder_time_base);
            stream.set_avg_frame_rate(Rational::new(fps_i, 1));
        }
        if !opts.metadata.is_empty() {
            let mut meta = Dictionary::new();
            for (k, v) in &opts.metadata {
                meta.set(k, v);
            }
            output.set_metadata(meta);
        }
        let mut mux_opts = Dictionary::new();
        mux_opts.set("movflags", if opts.metadata.is_empty() { "+faststart" } else { "+faststart+use_metadata_tags" });
        output.write_header_with(mux_opts).map_err(|e| fail(format!("cannot write header: {e}")))?;
        // The MP4 muxer picks its own time base during write_header.
        let stream_time_base =
            output.stream(0).map(|s| s.time_base()).ok_or_else(|| fail("output stream vanished".into()))?;

        let scaler =
            scaling::Context::get(Pixel::RGB24, width, height, Pixel::YUV420P, width, height, scaling::Flags::BILINEAR)
                .map_err(|e| fail(format!("cannot create RGB->YUV converter: {e}")))?;

        Ok(Self {
            path: path.to_path_buf(),
            output,
            encoder,
            scaler: Scaler(scaler),
            rgb: ffmpeg::frame::Video::new(Pixel::RGB24, width, height),
            yuv: ffmpeg::frame::Video::empty(),
            width,
            height,
            fps,
            encoder_time_base,
            stream_time_base,
            frames: 0,
            filter: opts.filter.clone(),
            filtered: None,
        })
    }

    fn fail(&self, reason: impl Into<String>) -> MediaError {
        MediaError::Encode { target: self.path.display().to_string(), reason: reason.into() }
    }

    /// Encode one frame; it must match the size given to [`VideoEncoder::create`]. The
    /// options' filter, if any, is applied to a copy first.
    pub fn push(&mut self, frame: &RgbImage) -> Result<(), MediaError> {
        let mut filtered = self.filtered.take();
        let frame = match &self.filter {
            Some(f) => {
                let buf = filtered.get_or_insert_with(|| frame.clone());
                buf.clone_from(frame);
                f.0.apply(buf);
                &*buf
            }
            None => frame,
        };
        let out = self.push_raw(frame);
        self.filtered = filtered;
        out
    }

    fn push_raw(&mut self, frame: &RgbImage) -> Result<(), MediaError> {
        if frame.dimensions() != (self.width, self.height) {
            return Err(MediaError::InvalidDimensions {
                width: frame.width(),
                height: frame.height(),
                reason: format!("encoder expects {}x{}", self.width, self.height),
            });
        }
        let row = self.width as usize * 3;
        let stride = self.rgb.stride(0);
        let dst = self.rgb.data_mut(0);
        for (y, src_row) in frame.as_raw().chunks_exact(row).enumerate() {
            let start = y * stride;
            match dst.get_mut(start..start + row) {
                Some(d) => d.copy_from_slice(src_row),
                None => return Err(self.fail("RGB frame buffer too small")),
            }
        }
        if let Err(e) = self.scaler.0.run(&self.rgb, &mut self.yuv) {
            return Err(self.fail(format!("RGB->YUV conversion failed: {e}")));
        }
        let pts = i64::try_from(self.frames).map_err(|_| self.fail("frame counter overflow"))?;
        self.yuv.set_pts(Some(pts));
        if let Err(e) = self.encoder.send_frame(&self.yuv) {
            return Err(self.fail(format!("encoder rejected frame {pts}: {e}")));
        }
        self.frames += 1;
        self.drain()
    }

    /// Write every packet the encoder has ready.
    fn drain(&mut self) -> Result<(), MediaError> {
        let mut packet = ffmpeg::Packet::empty();
        loop {
            match self.encoder.receive_packet(&mut packet) {
                Ok(()) => {
                    packet.set_stream(0);
                    packet.rescale_ts(self.encoder_time_base, self.stream_time_base);
                    if let Err(e) = packet.write_interleaved(&mut self.output) {
                        return Err(self.fail(format!("cannot write packet: {e}")));
                    }
                }
                Err(ffmpeg::Error::Eof) => return Ok(()),
                Err(ffmpeg::Error::Other { errno }) if errno == ffmpeg::util::error::EAGAIN => {
                    return Ok(());
                }
                Err(e) => return Err(self.fail(format!("encoder failed: {e}"))),
            }
        }
    }

    /// Flush the encoder, write the trailer (moving `moov` to the front) and report.
    pub fn finish(mut self) -> Result<EncodeReport, MediaError> {
        if self.frames == 0 {
            return Err(self.fail("no frames were pushed"));
        }
        if let Err(e) = self.encoder.send_eof() {
            return Err(self.fail(format!("encoder flush failed: {e}")));
        }
        self.drain()?;
        if let Err(e) = self.output.write_trailer() {
            return Err(self.fail(format!("cannot write trailer: {e}")));
        }
        let bytes = std::fs::metadata(&self.path)?.len();
        let report = EncodeReport { frames: self.frames, duration_s: self.frames as f64 / f64::from(self.fps), bytes };
        tracing::debug!(path = %self.path.display(), ?report, "encoded video");
        Ok(report)
    }
}
