//! Fused GroupNorm + affine + SiLU: `y = silu(norm(x) · a + b)`, where `norm` normalises each
//! (item, group) of an NCHW tensor to zero mean and unit variance (biased variance, `eps`
//! inside the square root, as `torch.nn.GroupNorm`) and `a`, `b` are per item and channel
//! `(B, C)`: a per-channel affine broadcast over the batch, or the scale + 1 and shift an
//! embedding supplies (MCVD's ada-norm). One pass for the statistics, one to write: three
//! tensor-sized memory passes fewer than the unfused ops.

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};

/// `silu(group_norm(x) · a + b)` for `x` `(B, C, H, W)` and `a`, `b` broadcastable to `(B, C)`.
/// f32 on the CPU (other dtypes are converted and back).
pub fn group_norm_silu(x: &Tensor, a: &Tensor, b: &Tensor, groups: usize, eps: f64) -> Result<Tensor> {
    let (bsz, c, _, _) = x.dims4()?;
    if groups == 0 || c % groups != 0 {
        candle_core::bail!("group_norm_silu: {c} channels do not split into {groups} groups");
    }
    let dtype = x.dtype();
    let per_item = |t: &Tensor| -> Result<Tensor> { t.to_dtype(DType::F32)?.broadcast_as((bsz, c))?.contiguous() };
    let y = x.to_dtype(DType::F32)?.contiguous()?.apply_op3_no_bwd(
        &per_item(a)?,
        &per_item(b)?,
        &GroupNormSilu { groups, eps: eps as f32 },
    )?;
    y.to_dtype(dtype)
}

/// The candle op behind [`group_norm_silu`] (inputs contiguous f32: x, a, b).
struct GroupNormSilu {
    groups: usize,
    eps: f32,
}

impl CustomOp3 for GroupNormSilu {
    fn name(&self) -> &'static str {
        "group-norm-silu"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        lx: &Layout,
        a: &CpuStorage,
        la: &Layout,
        b: &CpuStorage,
        lb: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = "group-norm-silu";
        let (x, a, b) = (crate::cpu_f32(op, x, lx)?, crate::cpu_f32(op, a, la)?, crate::cpu_f32(op, b, lb)?);
        let dims = lx.shape().dims();
        let (bsz, c) = (dims[0], dims[1]);
        let hw: usize = dims[2..].iter().product();
        Ok((CpuStorage::F32(forward(x, a, b, bsz, c, hw, self.groups, self.eps)), lx.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        x: &candle_core::CudaStorage,
        lx: &Layout,
        a: &candle_core::CudaStorage,
        la: &Layout,
        b: &candle_core::CudaStorage,
        lb: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        use crate::cuda::{BLOCK, GROUP_NORM, function};
        use candle_core::cuda_backend::WrapErr;
        use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
        let dev = x.device.clone();
        let (x, a, b) = (crate::cuda::view(x, lx)?, crate::cuda::view(a, la)?, crate::cuda::view(b, lb)?);
        let dims = lx.shape().dims();
        let (bsz, c) = (dims[0], dims[1]);
        let hw: usize = dims[2..].iter().product();
        let mut y = crate::cuda::output::<f32>(&dev, x.len())?;
        if !x.is_empty() {
            let f = function(&dev, &GROUP_NORM, "group_norm_silu")?;
            let (groups, channels, plane) =
                (self.groups as i32, c as i32, i32::try_from(hw).map_err(candle_core::Error::wrap)?);
            let blocks = u32::try_from(bsz * self.groups).map_err(candle_core::Error::wrap)?;
            let stream = dev.cuda_stream();
            let mut l = stream.launch_builder(&f);
            l.arg(&x).arg(&a).arg(&b).arg(&mut y).arg(&groups).arg(&channels).arg(&plane).arg(&self.eps);
            let cfg = LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 };
            unsafe { l.launch(cfg) }.w()?;
        }
        Ok((candle_core::CudaStorage::wrap_cuda_slice(y, dev), lx.shape().clone()))
    }
}

/// The reference loop: `x` `(B, C, HW)`, `a`, `b` `(B, C)`, all contiguous.
#[allow(clippy::too_many_arguments)]
pub fn forward(x: &[f32], a: &[f32], b: &[f32], bsz: usize, c: usize, hw: usize, groups: usize, eps: f32) -> Vec<f32> {
    let cg = c / groups;
    let mut y = vec![0f32; x.len()];
    for n in 0..bsz {
        for g in 0..groups {
            let start = (n * c + g * cg) * hw;
            let chunk = &x[start..start + cg * hw];
            // Mean then centred sum of squares, in f64: stable for large groups.
            let mean = chunk.iter().map(|&v| f64::from(v)).sum::<f64>() / chunk.len() as f64;
            let var = chunk.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / chunk.len() as f64;
            let inv = 1.0 / (var + f64::from(eps)).sqrt();
            for ci in 0..cg {
                let ch = g * cg + ci;
                let (sa, sb) = (a[n * c + ch], b[n * c + ch]);
                let off = (n * c + ch) * hw;
                for i in 0..hw {
                    let v = ((f64::from(x[off + i]) - mean) * inv) as f32 * sa + sb;
                    y[off + i] = v / (1.0 + (-v).exp());
                }
            }
        }
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{D, Device};

    /// The unfused candle ops the fused op replaces.
    fn unfused(x: &Tensor, a: &Tensor, b: &Tensor, groups: usize, eps: f64) -> Tensor {
        let (n, c, h, w) = x.dims4().unwrap();
        let g = x.reshape((n, groups, (c / groups) * h * w)).unwrap();
        let mean = g.mean_keepdim(D::Minus1).unwrap();
        let centred = g.broadcast_sub(&mean).unwrap();
        let var = centred.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
        let normed =
            centred.broadcast_div(&(var + eps).unwrap().sqrt().unwrap()).unwrap().reshape((n, c, h, w)).unwrap();
        let a = a.broadcast_as((n, c)).unwrap().reshape((n, c, 1, 1)).unwrap();
        let b = b.broadcast_as((n, c)).unwrap().reshape((n, c, 1, 1)).unwrap();
        normed.broadcast_mul(&a).unwrap().broadcast_add(&b).unwrap().silu().unwrap()
    }

    fn relative(y: &Tensor, r: &Tensor) -> f32 {
        let d = (y - r).unwrap().sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap().sqrt();
        d / r.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap().sqrt()
    }

    #[test]
    fn equals_the_unfused_ops_per_item_and_per_channel() {
        let dev = Device::Cpu;
        for (n, c, h, w, groups) in [(2, 8, 5, 7, 2), (3, 32, 8, 8, 8), (1, 12, 1, 33, 3)] {
            let x = Tensor::randn(0.5f32, 3.0, (n, c, h, w), &dev).unwrap();
            // Per item and channel (ada-norm) and per channel broadcast over the batch.
            let a = Tensor::randn(1f32, 0.2, (n, c), &dev).unwrap();
            let b = Tensor::randn(0f32, 0.2, (n, c), &dev).unwrap();
            let y = group_norm_silu(&x, &a, &b, groups, 1e-6).unwrap();
            assert!(relative(&y, &unfused(&x, &a, &b, groups, 1e-6)) < 1e-5);
            let a = Tensor::randn(1f32, 0.2, c, &dev).unwrap();
            let b = Tensor::randn(0f32, 0.2, c, &dev).unwrap();
            let y = group_norm_silu(&x, &a, &b, groups, 1e-6).unwrap();
            assert!(relative(&y, &unfused(&x, &a, &b, groups, 1e-6)) < 1e-5);
        }
    }

    #[test]
    fn refuses_groups_that_do_not_divide_the_channels() {
        let x = Tensor::zeros((1, 6, 2, 2), DType::F32, &Device::Cpu).unwrap();
        let a = Tensor::ones(6, DType::F32, &Device::Cpu).unwrap();
        assert!(group_norm_silu(&x, &a, &a, 4, 1e-6).is_err());
    }
}
