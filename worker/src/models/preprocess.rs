//! `preprocess` owns turning RGB (or I420) frames into a vision model's input exactly as Hugging Face's
//! `CLIPImageProcessor` does: resize the shortest side with Pillow's bicubic resampling
//! (antialiased, 8-bit fixed point, horizontal pass then vertical, each rounded to `u8`), center
//! crop, rescale to [0, 1], normalise per channel, and lay the batch out NCHW in `f32`.
//! [`ImageProcessorConfig`] mirrors `preprocessor_config.json`. This CPU code is the reference
//! the fused preprocess kernels (issue 9) are checked against.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use image::RgbImage;

use crate::media::I420Image;
use serde::{Deserialize, Serialize};

/// `preprocessor_config.json` of a CLIP checkpoint (the fields that change the pixels).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageProcessorConfig {
    /// Resize at all.
    #[serde(default = "yes")]
    pub do_resize: bool,
    /// Target of the resize: `{"shortest_edge": 224}` (older files: a bare number).
    #[serde(default = "default_size")]
    pub size: SizeSpec,
    /// PIL resample filter; only 3 (bicubic) is supported.
    #[serde(default = "default_resample")]
    pub resample: u32,
    /// Center crop after the resize.
    #[serde(default = "yes")]
    pub do_center_crop: bool,
    /// The crop: `{"height": 224, "width": 224}` (older files: a bare number).
    #[serde(default = "default_size_square")]
    pub crop_size: SizeSpec,
    /// Multiply by `rescale_factor`.
    #[serde(default = "yes")]
    pub do_rescale: bool,
    /// Usually 1/255.
    #[serde(default = "default_rescale")]
    pub rescale_factor: f64,
    /// Subtract `image_mean` and divide by `image_std`.
    #[serde(default = "yes")]
    pub do_normalize: bool,
    /// Per-channel mean (OpenAI CLIP's by default).
    #[serde(default = "default_mean")]
    pub image_mean: [f64; 3],
    /// Per-channel standard deviation.
    #[serde(default = "default_std")]
    pub image_std: [f64; 3],
}

/// A size as `preprocessor_config.json` writes it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SizeSpec {
    /// `{"shortest_edge": n}`.
    Shortest {
        /// The shortest side after resizing.
        shortest_edge: u32,
    },
    /// `{"height": h, "width": w}`.
    Exact {
        /// Height in pixels.
        height: u32,
        /// Width in pixels.
        width: u32,
    },
    /// A bare number (older processors): shortest edge for `size`, square for `crop_size`.
    Number(u32),
}

fn yes() -> bool {
    true
}
fn default_size() -> SizeSpec {
    SizeSpec::Shortest { shortest_edge: 224 }
}
fn default_size_square() -> SizeSpec {
    SizeSpec::Exact { height: 224, width: 224 }
}
fn default_resample() -> u32 {
    3
}
fn default_rescale() -> f64 {
    1.0 / 255.0
}
fn default_mean() -> [f64; 3] {
    [0.48145466, 0.4578275, 0.40821073]
}
fn default_std() -> [f64; 3] {
    [0.26862954, 0.26130258, 0.27577711]
}

impl Default for ImageProcessorConfig {
    fn default() -> Self {
        serde_json::from_str("{}").expect("every field has a default")
    }
}

/// Why preprocessing could not run.
#[derive(Debug, thiserror::Error)]
pub enum PreprocessError {
    /// `preprocessor_config.json` could not be read or parsed.
    #[error("{path}: {msg}")]
    Config {
        /// The file.
        path: String,
        /// What was wrong.
        msg: String,
    },
    /// A setting this implementation does not reproduce.
    #[error("unsupported preprocessing: {0}")]
    Unsupported(String),
    /// An empty image or batch.
    #[error("empty input: {0}")]
    Empty(&'static str),
    /// Building the tensor failed.
    #[error(transparent)]
    Tensor(#[from] candle_core::Error),
}

impl ImageProcessorConfig {
    /// Reads `preprocessor_config.json` from `dir`, or the defaults (OpenAI CLIP's) when absent.
    pub fn load(dir: &Path) -> Result<Self, PreprocessError> {
        let path = dir.join("preprocessor_config.json");
        let err = |msg: String| PreprocessError::Config { path: path.display().to_string(), msg };
        let cfg: Self = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| err(e.to_string()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::default(),
            Err(e) => return Err(err(e.to_string())),
        };
        cfg.check()?;
        Ok(cfg)
    }

    /// A processor for a model whose input is `side`×`side` (CLIP's defaults otherwise).
    pub fn square(side: u32) -> Self {
        ImageProcessorConfig {
            size: SizeSpec::Shortest { shortest_edge: side },
            crop_size: SizeSpec::Exact { height: side, width: side },
            ..Self::default()
        }
    }

    /// Refuses settings whose pixels this code would not reproduce.
    pub fn check(&self) -> Result<(), PreprocessError> {
        if self.resample != 3 {
            return Err(PreprocessError::Unsupported(format!("resample {} (only 3, bicubic)", self.resample)));
        }
        if matches!(self.size, SizeSpec::Exact { .. }) {
            return Err(PreprocessError::Unsupported("size as height/width (only shortest_edge)".into()));
        }
        if !self.do_center_crop || !self.do_resize {
            return Err(PreprocessError::Unsupported("a model input without resize and center crop".into()));
        }
        let (h, w) = self.crop();
        if h == 0 || w == 0 || self.shortest_edge() == 0 || self.image_std.contains(&0.0) {
            return Err(PreprocessError::Unsupported("zero size or standard deviation".into()));
        }
        Ok(())
    }

    /// The shortest side after resizing.
    pub fn shortest_edge(&self) -> u32 {
        match self.size {
            SizeSpec::Shortest { shortest_edge } => shortest_edge,
            SizeSpec::Number(n) => n,
            SizeSpec::Exact { height, width } => height.min(width),
        }
    }

    /// The crop as (height, width).
    pub fn crop(&self) -> (u32, u32) {
        match self.crop_size {
            SizeSpec::Exact { height, width } => (height, width),
            SizeSpec::Number(n) | SizeSpec::Shortest { shortest_edge: n } => (n, n),
        }
    }

    /// The size `CLIPImageProcessor` resizes a `w`×`h` image to: the shortest side becomes
    /// [`shortest_edge`](Self::shortest_edge), the longest `int(edge * long / short)`.
    pub fn resized_size(&self, w: u32, h: u32) -> (u32, u32) {
        let edge = self.shortest_edge() as u64;
        let (short, long) = (w.min(h) as u64, w.max(h) as u64);
        let long_new = (edge * long / short) as u32;
        if w <= h { (edge as u32, long_new) } else { (long_new, edge as u32) }
    }

    /// One image as CHW `f32` values (`3 × crop_h × crop_w`).
    pub fn pixels(&self, img: &RgbImage) -> Result<Vec<f32>, PreprocessError> {
        if img.width() == 0 || img.height() == 0 {
            return Err(PreprocessError::Empty("a 0-pixel image"));
        }
        let (rw, rh) = self.resized_size(img.width(), img.height());
        let resized = resize_bicubic(img, rw, rh);
        let (ch, cw) = self.crop();
        let cropped = center_crop(&resized, cw, ch);
        let plane = (ch * cw) as usize;
        let mut out = vec![0f32; 3 * plane];
        for (i, p) in cropped.pixels().enumerate() {
            for c in 0..3 {
                out[c * plane + i] = self.channel_value(c, p.0[c]);
            }
        }
        Ok(out)
    }

    /// One I420 frame as CHW `f32` values: [`pixels`](Self::pixels) of its BT.601 RGB
    /// ([`I420Image::to_rgb`]), the reference of the fused kernels' I420 input.
    pub fn pixels_i420(&self, img: &I420Image) -> Result<Vec<f32>, PreprocessError> {
        self.pixels(&img.to_rgb())
    }

    /// The model-input value of byte `v` in channel `c`: rescaled and normalised in f64, then
    /// rounded to f32 (a 256-entry table per channel; the WGSL preprocess looks it up).
    pub fn channel_value(&self, c: usize, v: u8) -> f32 {
        let scale = if self.do_rescale { self.rescale_factor } else { 1.0 };
        let mut v = v as f64 * scale;
        if self.do_normalize {
            v = (v - self.image_mean[c]) / self.image_std[c];
        }
        v as f32
    }

    /// A batch as an `(N, 3, crop_h, crop_w)` f32 tensor on `device` ([`tensor`](Self::tensor)
    /// of RGB frames).
    pub fn batch(&self, images: &[RgbImage], device: &Device) -> Result<Tensor, PreprocessError> {
        self.tensor(Frames::Rgb(images), device, DType::F32)
    }

    /// [`batch`](Self::batch) of I420 frames, as [`pixels_i420`](Self::pixels_i420) gives them.
    pub fn batch_i420(&self, images: &[I420Image], device: &Device) -> Result<Tensor, PreprocessError> {
        self.tensor(Frames::I420(images), device, DType::F32)
    }

    /// A batch as an `(N, 3, crop_h, crop_w)` tensor of `dtype` on `device`: each frame's
    /// [`pixels`](Self::pixels) (or [`pixels_i420`](Self::pixels_i420)), cast from f32. On a CUDA
    /// device, frames of one size go through the fused `kernels` preprocess in one launch, bit for
    /// bit the CPU: bytes are uploaded (a quarter of the f32 values for RGB24, an eighth for
    /// I420), and f16 is written by the kernel itself.
    pub fn tensor(&self, frames: Frames<'_>, device: &Device, dtype: DType) -> Result<Tensor, PreprocessError> {
        if frames.is_empty() {
            return Err(PreprocessError::Empty("an empty batch"));
        }
        #[cfg(feature = "cuda")]
        if let Device::Cuda(cuda) = device
            && let Some((format, size, bytes)) = frames.packed()
        {
            return self.tensor_cuda(&bytes, format, size, frames.len(), cuda, dtype);
        }
        let (ch, cw) = self.crop();
        let mut data = Vec::with_capacity(frames.len() * 3 * (ch * cw) as usize);
        match frames {
            Frames::Rgb(images) => {
                for img in images {
                    data.extend(self.pixels(img)?);
                }
            }
            Frames::I420(images) => {
                for img in images {
                    data.extend(self.pixels_i420(img)?);
                }
            }
        }
        let t = Tensor::from_vec(data, (frames.len(), 3, ch as usize, cw as usize), device)?;
        Ok(if dtype == DType::F32 { t } else { t.to_dtype(dtype)? })
    }
}

/// A batch of frames to preprocess.
#[derive(Debug, Clone, Copy)]
pub enum Frames<'a> {
    /// Packed RGB24 images.
    Rgb(&'a [RgbImage]),
    /// Planar YUV 4:2:0 frames.
    I420(&'a [I420Image]),
}

impl Frames<'_> {
    /// Frames in the batch.
    pub fn len(&self) -> usize {
        match self {
            Frames::Rgb(f) => f.len(),
            Frames::I420(f) => f.len(),
        }
    }

    /// True for no frames.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The fused kernels' input: the format, the common size and every frame's bytes back to
    /// back; `None` when the frames differ in size or are empty.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    fn packed(&self) -> Option<(shaders::PixelFormat, (u32, u32), Vec<u8>)> {
        fn pack<I: Raw>(images: &[I]) -> Option<((u32, u32), Vec<u8>)> {
            let size = images.first()?.size();
            if size.0 == 0 || size.1 == 0 || images.iter().any(|i| i.size() != size) {
                return None;
            }
            Some((size, images.iter().flat_map(|i| i.bytes().iter().copied()).collect()))
        }
        let (format, (size, bytes)) = match self {
            Frames::Rgb(f) => (shaders::PixelFormat::Rgb24, pack(f)?),
            Frames::I420(f) => (shaders::PixelFormat::I420, pack(f)?),
        };
        Some((format, size, bytes))
    }
}

/// A frame's size and bytes, as the fused kernels take them.
trait Raw {
    fn size(&self) -> (u32, u32);
    fn bytes(&self) -> &[u8];
}

impl Raw for RgbImage {
    fn size(&self) -> (u32, u32) {
        self.dimensions()
    }
    fn bytes(&self) -> &[u8] {
        self.as_raw()
    }
}

impl Raw for I420Image {
    fn size(&self) -> (u32, u32) {
        self.dimensions()
    }
    fn bytes(&self) -> &[u8] {
        self.as_raw()
    }
}

#[cfg(feature = "cuda")]
impl ImageProcessorConfig {
    /// A batch of `frames` same-sized frames (`bytes`, in `format`) on a CUDA device, in one
    /// fused kernel writing f32, or f16 for an f16 `dtype` (other dtypes are cast from f32).
    fn tensor_cuda(
        &self,
        bytes: &[u8],
        format: shaders::PixelFormat,
        (w, h): (u32, u32),
        frames: usize,
        cuda: &candle_core::CudaDevice,
        dtype: DType,
    ) -> Result<Tensor, PreprocessError> {
        use candle_core::{CudaStorage, Storage, op::BackpropOp};
        let wrap = candle_core::Error::wrap;
        let (ch, cw) = self.crop();
        let (plan, lut) = gpu_plan(self, format, w, h, frames)?;
        let stream = cuda.cuda_stream();
        let bytes = stream.clone_htod(bytes).map_err(wrap)?;
        let table = stream.clone_htod(&plan.table).map_err(wrap)?;
        let lut = stream.clone_htod(&lut).map_err(wrap)?;
        let params = kernels::cuda::PreprocessPlan(plan.params.map(|v| v as i32));
        let (bytes, table, lut) = (bytes.slice(..), table.slice(..), lut.slice(..));
        let storage = if dtype == DType::F16 {
            let out = kernels::cuda::preprocess_frames::<kernels::cuda::f16>(cuda, &bytes, &table, &lut, params)?;
            CudaStorage::wrap_cuda_slice(out, cuda.clone())
        } else {
            let out = kernels::cuda::preprocess_frames::<f32>(cuda, &bytes, &table, &lut, params)?;
            CudaStorage::wrap_cuda_slice(out, cuda.clone())
        };
        let shape = (frames, 3, ch as usize, cw as usize);
        let t = Tensor::from_storage(Storage::Cuda(storage), shape, BackpropOp::none(), false);
        Ok(if t.dtype() == dtype { t } else { t.to_dtype(dtype)? })
    }
}

/// `transformers.image_transforms.center_crop`: top = (h − ch) // 2, left = (w − cw) // 2,
/// padding with zeros where the image is smaller than the crop.
pub fn center_crop(img: &RgbImage, cw: u32, ch: u32) -> RgbImage {
    let (w, h) = (img.width() as i64, img.height() as i64);
    let top = (h - ch as i64).div_euclid(2);
    let left = (w - cw as i64).div_euclid(2);
    RgbImage::from_fn(cw, ch, |x, y| {
        let (sx, sy) = (left + x as i64, top + y as i64);
        if sx >= 0 && sy >= 0 && sx < w && sy < h { *img.get_pixel(sx as u32, sy as u32) } else { image::Rgb([0; 3]) }
    })
}

/// Pillow's `Image.resize(size, Image.BICUBIC)` on an RGB image, bit for bit: per-axis kernels
/// widened by the downscale factor (antialiasing), normalised, converted to 22-bit fixed point,
/// horizontal pass first, each pass rounded and clamped to `u8`.
pub fn resize_bicubic(img: &RgbImage, out_w: u32, out_h: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    let mut cur = img.clone();
    if out_w != w {
        let k = Kernels::new(w, out_w);
        let mut next = RgbImage::new(out_w, h);
        for y in 0..h {
            for x in 0..out_w {
                let (start, weights) = k.at(x);
                let mut acc = [ROUNDING; 3];
                for (i, wt) in weights.iter().enumerate() {
                    let p = cur.get_pixel(start + i as u32, y).0;
                    for c in 0..3 {
                        acc[c] += p[c] as i32 * wt;
                    }
                }
                next.put_pixel(x, y, image::Rgb(acc.map(clip8)));
            }
        }
        cur = next;
    }
    if out_h != h {
        let k = Kernels::new(h, out_h);
        let cw = cur.width();
        let mut next = RgbImage::new(cw, out_h);
        for y in 0..out_h {
            let (start, weights) = k.at(y);
            for x in 0..cw {
                let mut acc = [ROUNDING; 3];
                for (i, wt) in weights.iter().enumerate() {
                    let p = cur.get_pixel(x, start + i as u32).0;
                    for c in 0..3 {
                        acc[c] += p[c] as i32 * wt;
                    }
                }
                next.put_pixel(x, y, image::Rgb(acc.map(clip8)));
            }
        }
        cur = next;
    }
    cur
}

/// Pillow's fixed-point precision for 8-bit images: 32 − 8 − 2 bits.
const PRECISION_BITS: u32 = 22;
const ROUNDING: i32 = 1 << (PRECISION_BITS - 1);

fn clip8(v: i32) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Pillow's bicubic filter (a = −0.5), support 2.
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// The GPU preprocess's tables for `w`×`h` frames under one config (the WGSL and CUDA kernels
/// take the same), and the sizes that go with them.
#[derive(Debug, Clone)]
pub struct GpuTables {
    /// Width resampling: Pillow's filter, or the identity where the width is kept (as the CPU
    /// skips that pass).
    pub horizontal: shaders::AxisFilter,
    /// Height resampling, likewise.
    pub vertical: shaders::AxisFilter,
    /// `lut[c·256 + v]`: the model-input value of byte `v` in channel `c`.
    pub lut: Vec<f32>,
    /// Source frame size.
    size: (u32, u32),
    /// `(crop_h, crop_w)`.
    crop: (u32, u32),
}

impl GpuTables {
    /// The preprocess of frames in `format` over these tables.
    pub fn frame(&self, format: shaders::PixelFormat) -> shaders::FramePreprocess<'_> {
        shaders::FramePreprocess {
            format,
            width: self.size.0 as usize,
            height: self.size.1 as usize,
            horizontal: &self.horizontal,
            vertical: &self.vertical,
            crop_w: self.crop.1 as usize,
            crop_h: self.crop.0 as usize,
            lut: &self.lut,
        }
    }
}

/// The GPU preprocess's tables for `w`×`h` frames under `cfg`.
pub fn gpu_tables(cfg: &ImageProcessorConfig, w: u32, h: u32) -> GpuTables {
    let (rw, rh) = cfg.resized_size(w, h);
    let axis = |from: u32, to: u32| {
        if from == to {
            shaders::AxisFilter::identity(to as usize)
        } else {
            let k = Kernels::new(from, to);
            shaders::AxisFilter { starts: k.starts, weights: k.weights }
        }
    };
    let lut = (0..3).flat_map(|c| (0..=255u8).map(move |v| cfg.channel_value(c, v))).collect();
    GpuTables { horizontal: axis(w, rw), vertical: axis(h, rh), lut, size: (w, h), crop: cfg.crop() }
}

/// The GPU preprocess's launch plan for `frames` frames of `w`×`h` in `format` under `cfg`, and
/// its value table: what the CUDA kernel takes ([`gpu_tables`] packed by
/// `shaders::preprocess::plan`).
pub fn gpu_plan(
    cfg: &ImageProcessorConfig,
    format: shaders::PixelFormat,
    w: u32,
    h: u32,
    frames: usize,
) -> Result<(shaders::preprocess::Plan, Vec<f32>), PreprocessError> {
    let tables = gpu_tables(cfg, w, h);
    let plan =
        shaders::preprocess::plan(frames * format.frame_bytes(w as usize, h as usize), frames, &tables.frame(format))
            .map_err(|e| PreprocessError::Unsupported(e.to_string()))?;
    Ok((plan, tables.lut))
}

/// Per output position: the first input index and the fixed-point weights (Pillow's
/// `precompute_coeffs` + `normalize_coeffs_8bpc`). Public so that the WGSL preprocess can be
/// given the very same tables.
pub struct Kernels {
    /// First input index per output position.
    pub starts: Vec<u32>,
    /// 22-bit fixed-point weights per output position.
    pub weights: Vec<Vec<i32>>,
}

impl Kernels {
    /// The tables resampling an axis of `in_size` samples to `out_size`.
    pub fn new(in_size: u32, out_size: u32) -> Self {
        let scale = in_size as f64 / out_size as f64;
        let filterscale = scale.max(1.0);
        let support = 2.0 * filterscale;
        let mut starts = Vec::with_capacity(out_size as usize);
        let mut weights = Vec::with_capacity(out_size as usize);
        for xx in 0..out_size {
            let center = (xx as f64 + 0.5) * scale;
            // C's (int) cast truncates toward zero.
            let xmin = ((center - support + 0.5) as i64).max(0);
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64);
            let mut k: Vec<f64> =
                (xmin..xmax).map(|x| bicubic((x as f64 - center + 0.5) * (1.0 / filterscale))).collect();
            let total: f64 = k.iter().sum();
            if total != 0.0 {
                k.iter_mut().for_each(|w| *w /= total);
            }
            let fixed = k
                .iter()
                .map(|w| {
                    let v = w * (1u32 << PRECISION_BITS) as f64;
                    if *w < 0.0 { (v - 0.5) as i32 } else { (v + 0.5) as i32 }
                })
                .collect();
            starts.push(xmin as u32);
            weights.push(fixed);
        }
        Kernels { starts, weights }
    }

    fn at(&self, i: u32) -> (u32, &[i32]) {
        (self.starts[i as usize], &self.weights[i as usize])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resized_size_follows_the_shortest_edge() {
        let p = ImageProcessorConfig::default();
        assert_eq!(p.resized_size(320, 240), (298, 224));
        assert_eq!(p.resized_size(150, 200), (224, 298));
        assert_eq!(p.resized_size(1280, 720), (398, 224));
        assert_eq!(p.resized_size(224, 224), (224, 224));
    }

    #[test]
    fn identity_resize_keeps_pixels() {
        let img = RgbImage::from_fn(17, 9, |x, y| image::Rgb([x as u8 * 9, y as u8 * 20, (x * y) as u8]));
        assert_eq!(resize_bicubic(&img, 17, 9), img);
    }

    #[test]
    fn flat_image_stays_flat_at_any_scale() {
        let img = RgbImage::from_pixel(50, 30, image::Rgb([200, 10, 77]));
        for (w, h) in [(13, 7), (101, 61), (50, 90)] {
            let out = resize_bicubic(&img, w, h);
            assert!(out.pixels().all(|p| p.0 == [200, 10, 77]), "{w}x{h}");
        }
    }

    #[test]
    fn center_crop_takes_the_middle() {
        let img = RgbImage::from_fn(6, 4, |x, y| image::Rgb([x as u8, y as u8, 0]));
        let c = center_crop(&img, 2, 2);
        assert_eq!(c.get_pixel(0, 0).0, [2, 1, 0]);
        assert_eq!(c.get_pixel(1, 1).0, [3, 2, 0]);
    }

    #[test]
    fn tensor_stacks_rgb_and_i420_frames_in_the_asked_dtype() {
        let cfg = ImageProcessorConfig::square(16);
        let rgb: Vec<RgbImage> = (0..2u8)
            .map(|f| RgbImage::from_fn(23, 17, |x, y| image::Rgb([x as u8 * 11 + f, y as u8 * 15, 90 + f * 40])))
            .collect();
        let yuv: Vec<I420Image> = rgb.iter().map(|i| I420Image::from_rgb(i).unwrap()).collect();
        let t = cfg.tensor(Frames::I420(&yuv), &Device::Cpu, DType::F16).unwrap();
        assert_eq!((t.dims(), t.dtype()), (&[2, 3, 16, 16][..], DType::F16));
        let want: Vec<half::f16> =
            yuv.iter().flat_map(|i| cfg.pixels_i420(i).unwrap()).map(half::f16::from_f32).collect();
        assert_eq!(t.flatten_all().unwrap().to_vec1::<half::f16>().unwrap(), want);
        let t = cfg.batch(&rgb, &Device::Cpu).unwrap();
        let want: Vec<f32> = rgb.iter().flat_map(|i| cfg.pixels(i).unwrap()).collect();
        assert_eq!(t.flatten_all().unwrap().to_vec1::<f32>().unwrap(), want);
        assert!(matches!(cfg.batch_i420(&[], &Device::Cpu), Err(PreprocessError::Empty(_))));
    }

    #[test]
    fn only_same_sized_frames_are_packed_for_the_kernels() {
        let a = RgbImage::from_pixel(4, 2, image::Rgb([1, 2, 3]));
        let b = RgbImage::from_pixel(2, 4, image::Rgb([4, 5, 6]));
        let (format, size, bytes) = Frames::Rgb(&[a.clone(), a.clone()]).packed().unwrap();
        assert_eq!((format, size, bytes.len()), (shaders::PixelFormat::Rgb24, (4, 2), 48));
        assert!(Frames::Rgb(&[a, b]).packed().is_none());
        let y = I420Image::new(3, 3, (0..17).collect()).unwrap();
        let (format, size, bytes) = Frames::I420(&[y.clone(), y]).packed().unwrap();
        assert_eq!((format, size, bytes[17..].to_vec()), (shaders::PixelFormat::I420, (3, 3), (0..17).collect()));
    }

    #[test]
    fn config_parses_old_and_new_size_forms() {
        let new: ImageProcessorConfig =
            serde_json::from_str(r#"{"size": {"shortest_edge": 336}, "crop_size": {"height": 336, "width": 336}}"#)
                .unwrap();
        assert_eq!((new.shortest_edge(), new.crop()), (336, (336, 336)));
        let old: ImageProcessorConfig = serde_json::from_str(r#"{"size": 224, "crop_size": 224}"#).unwrap();
        assert_eq!((old.shortest_edge(), old.crop()), (224, (224, 224)));
        let bad: ImageProcessorConfig = serde_json::from_str(r#"{"resample": 2}"#).unwrap();
        assert!(bad.check().is_err());
    }
}
