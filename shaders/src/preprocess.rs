//! `preprocess` owns the fused frame preprocess shader (`preprocess.wgsl`): packed RGB24 or
//! planar YUV 4:2:0 (I420, BT.601 limited range) frames to a vision model's NCHW f32 input in one
//! dispatch (colour conversion, Pillow's antialiased bicubic resize in fixed point, center crop,
//! rescale and normalise), bit for bit the worker's `models::preprocess::ImageProcessorConfig`
//! (`pixels`, and `pixels_i420` over `media::I420Image::to_rgb`). The filter tables and the
//! per-channel value table come from the CPU (the worker computes them with its reference code).

use crate::gpu::{Dispatch, Gpu, GpuError, Input, Kernel, grid_1d, to_f32};

/// The shader.
pub const KERNEL: Kernel = Kernel { name: "preprocess_frames", source: include_str!("preprocess.wgsl"), entry: "main" };

/// One axis of a fixed-point resampling: per output position, the first input sample and the
/// 22-bit fixed-point weights of the samples from there on (Pillow's `precompute_coeffs` and
/// `normalize_coeffs_8bpc`; the worker's `models::preprocess::Kernels`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AxisFilter {
    /// First input sample per output position.
    pub starts: Vec<u32>,
    /// Weights per output position.
    pub weights: Vec<Vec<i32>>,
}

impl AxisFilter {
    /// The identity over `len` samples (an axis that is not resized: each output is its input).
    pub fn identity(len: usize) -> Self {
        AxisFilter { starts: (0..len as u32).collect(), weights: vec![vec![1 << 22]; len] }
    }

    /// Output positions.
    pub fn len(&self) -> usize {
        self.starts.len()
    }

    /// True for a filter with no output.
    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    fn taps(&self) -> usize {
        self.weights.iter().map(Vec::len).max().unwrap_or(0).max(1)
    }

    /// Whether every tap reads inside an input of `input` samples.
    fn fits(&self, input: usize) -> bool {
        self.starts.len() == self.weights.len()
            && self.starts.iter().zip(&self.weights).all(|(&s, w)| s as usize + w.len() <= input)
    }
}

/// How the frames' bytes are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PixelFormat {
    /// Packed RGB, 3 bytes a pixel, rows of `width · 3` bytes, no padding.
    #[default]
    Rgb24,
    /// Planar YUV 4:2:0 (I420): the Y plane (`width × height`), then U and V
    /// (`⌈width/2⌉ × ⌈height/2⌉` each), no padding; BT.601 limited range, each chroma sample
    /// shared by its 2×2 block of pixels.
    I420,
}

impl PixelFormat {
    /// Bytes of one `width`×`height` frame.
    pub fn frame_bytes(self, width: usize, height: usize) -> usize {
        match self {
            PixelFormat::Rgb24 => width * height * 3,
            PixelFormat::I420 => width * height + 2 * width.div_ceil(2) * height.div_ceil(2),
        }
    }

    /// The kernels' code for the format (the plan's last word).
    fn code(self) -> u32 {
        match self {
            PixelFormat::Rgb24 => 0,
            PixelFormat::I420 => 1,
        }
    }
}

/// What turns `width`×`height` frames into the model's input: resize to
/// `horizontal.len()`×`vertical.len()`, crop `crop_w`×`crop_h` from the middle (transformers'
/// `center_crop`: top = ⌊(h − crop_h)/2⌋, zeros outside), and look each byte up in `lut`.
#[derive(Debug, Clone, Copy)]
pub struct FramePreprocess<'a> {
    /// How the frames' bytes are laid out.
    pub format: PixelFormat,
    /// Source frame width.
    pub width: usize,
    /// Source frame height.
    pub height: usize,
    /// Width resampling (source width → resized width).
    pub horizontal: &'a AxisFilter,
    /// Height resampling (source height → resized height).
    pub vertical: &'a AxisFilter,
    /// Crop width.
    pub crop_w: usize,
    /// Crop height.
    pub crop_h: usize,
    /// `lut[c·256 + v]`: the input value of byte `v` in channel `c` (3 × 256 values).
    pub lut: &'a [f32],
}

/// The launch plan of one preprocess: 18 parameter words (the kernel's `Params`, the CUDA
/// kernel's `Plan`, in the same order) and the filter table they index. The CUDA kernel in
/// `kernels` takes the same plan, so both GPU paths share one packing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// total, width, height, resized w/h, crop w/h, left, top, taps h/v, where each part of
    /// `table` starts (starts, counts, weights; horizontal, then vertical), then the pixel
    /// format (0 RGB24, 1 I420).
    pub params: [u32; 18],
    /// Per axis: first input sample per output position, tap counts, weights padded to `taps`.
    pub table: Vec<i32>,
}

impl Plan {
    /// Output pixels (each writes its three channels).
    pub fn total(&self) -> usize {
        self.params[0] as usize
    }
}

/// Checks `bytes` bytes (`frames` frames in `p.format`) against `p` and builds the launch plan.
pub fn plan(bytes: usize, frames: usize, p: &FramePreprocess<'_>) -> Result<Plan, GpuError> {
    let shape = |message: String| GpuError::Shape { op: "preprocess_frames", message };
    let (w, h) = (p.width, p.height);
    if bytes != frames * p.format.frame_bytes(w, h) {
        return Err(shape(format!("{bytes} bytes, not {frames} {:?} frames of {w}×{h}", p.format)));
    }
    if !p.horizontal.fits(w) || !p.vertical.fits(h) {
        return Err(shape(format!("a filter reads outside the {w}×{h} frame")));
    }
    if p.lut.len() != 3 * 256 {
        return Err(shape(format!("the value table has {} entries, not 768", p.lut.len())));
    }
    let (rw, rh) = (p.horizontal.len(), p.vertical.len());
    let total = frames * p.crop_w * p.crop_h;
    let (taps_h, taps_v) = (p.horizontal.taps(), p.vertical.taps());
    let mut table: Vec<i32> = Vec::with_capacity(2 * (rw + rh) + rw * taps_h + rh * taps_v);
    let mut part = |f: &AxisFilter, taps: usize| {
        let start = table.len();
        table.extend(f.starts.iter().map(|&s| s as i32));
        let count = table.len();
        table.extend(f.weights.iter().map(|w| w.len() as i32));
        let weights = table.len();
        for w in &f.weights {
            table.extend(w);
            table.extend(std::iter::repeat_n(0, taps - w.len()));
        }
        [start, count, weights].map(|v| v as u32)
    };
    let [start_h, count_h, weights_h] = part(p.horizontal, taps_h);
    let [start_v, count_v, weights_v] = part(p.vertical, taps_v);
    let top = (rh as i64 - p.crop_h as i64).div_euclid(2);
    let left = (rw as i64 - p.crop_w as i64).div_euclid(2);
    let params = [
        total as u32,
        w as u32,
        h as u32,
        rw as u32,
        rh as u32,
        p.crop_w as u32,
        p.crop_h as u32,
        left as i32 as u32,
        top as i32 as u32,
        taps_h as u32,
        taps_v as u32,
        start_h,
        count_h,
        weights_h,
        start_v,
        count_v,
        weights_v,
        p.format.code(),
    ];
    Ok(Plan { params, table })
}

/// `frames` frames (`bytes`, each `p.format.frame_bytes(width, height)` long) to an
/// `(frames, 3, crop_h, crop_w)` f32 tensor, flat.
pub fn preprocess_frames(
    gpu: &Gpu,
    bytes: &[u8],
    frames: usize,
    p: &FramePreprocess<'_>,
) -> Result<Vec<f32>, GpuError> {
    let plan = plan(bytes.len(), frames, p)?;
    let total = plan.total();
    if total == 0 {
        return Ok(Vec::new());
    }
    let words: Vec<u32> = bytes
        .chunks(4)
        .map(|c| {
            let mut b = [0u8; 4];
            b[..c.len()].copy_from_slice(c);
            u32::from_le_bytes(b)
        })
        .collect();
    let d = Dispatch {
        params: &plan.params,
        inputs: &[Input::U32(&words), Input::I32(&plan.table), Input::F32(p.lut)],
        outputs: &[3 * total],
        workgroups: grid_1d(total),
    };
    Ok(to_f32(gpu.run(&KERNEL, &d)?.remove(0)))
}
