//! `group_norm` owns the fused GroupNorm + SiLU shader (`group_norm.wgsl`): the normalisation
//! of MCVD's `ActNorm` and attention blocks and of candle_nn's `GroupNorm`, followed by SiLU,
//! in one dispatch of one workgroup per (batch item, group).

use crate::gpu::{Dispatch, Gpu, GpuError, Input, Kernel, f32_bits, groups_1d, to_f32};

/// The shader.
pub const KERNEL: Kernel = Kernel { name: "group_norm_silu", source: include_str!("group_norm.wgsl"), entry: "main" };

/// The shape of a GroupNorm: an `(n, c, h, w)` tensor in `groups` groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NchwGroups {
    /// Batch items.
    pub n: usize,
    /// Channels (a multiple of `groups`).
    pub c: usize,
    /// Height.
    pub h: usize,
    /// Width.
    pub w: usize,
    /// Groups.
    pub groups: usize,
}

/// `silu(group_norm(x) · weight + bias)` of a contiguous NCHW `x`, with candle_nn's arithmetic
/// (mean, then the mean square about it, divided by `sqrt(var + eps)`, `eps` rounded to f32). `weight` and `bias`
/// hold one value per channel (`c`, candle_nn's `GroupNorm`) or per batch item and channel
/// (`n·c`, MCVD's ada-norm scale and shift, row-major).
pub fn group_norm_silu(
    gpu: &Gpu,
    x: &[f32],
    dims: NchwGroups,
    weight: &[f32],
    bias: &[f32],
    eps: f64,
) -> Result<Vec<f32>, GpuError> {
    let NchwGroups { n, c, h, w, groups } = dims;
    let shape = |message: String| GpuError::Shape { op: "group_norm_silu", message };
    if groups == 0 || c % groups != 0 {
        return Err(shape(format!("{groups} groups do not divide {c} channels")));
    }
    if x.len() != n * c * h * w {
        return Err(shape(format!("x has {} values, not {n}×{c}×{h}×{w}", x.len())));
    }
    let per_item = match weight.len() {
        l if l == c => false,
        l if l == n * c => true,
        l => return Err(shape(format!("weight has {l} values, neither {c} nor {}", n * c))),
    };
    if bias.len() != weight.len() {
        return Err(shape(format!("bias has {} values, weight {}", bias.len(), weight.len())));
    }
    if x.is_empty() {
        return Ok(Vec::new());
    }
    let count = (c / groups) * h * w;
    let params = [
        (n * groups) as u32,
        groups as u32,
        c as u32,
        (c / groups) as u32,
        (h * w) as u32,
        u32::from(per_item),
        f32_bits((1.0 / count as f64) as f32),
        f32_bits(eps as f32),
    ];
    let d = Dispatch {
        params: &params,
        inputs: &[Input::F32(x), Input::F32(weight), Input::F32(bias)],
        outputs: &[x.len()],
        workgroups: groups_1d(n * groups),
    };
    Ok(to_f32(gpu.run(&KERNEL, &d)?.remove(0)))
}
