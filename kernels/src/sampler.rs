//! Fused diffusion sampler steps: one elementwise pass per denoising step in place of candle's
//! chain of seven affine and binary ops (each a full read and write of the latent). The scalars
//! are computed in f64 and rounded to f32 exactly as candle rounds `tensor * f64` and
//! `tensor / f64` (a multiply by the f32 reciprocal), so the CPU forward is bit for bit the
//! unfused ops' result.
//!
//! - DDIM (η = 0): x₀ = clamp((x − ε·√(1−ᾱ))/√ᾱ, −1, 1); ε' = (x − x₀·√ᾱ)/√(1−ᾱ);
//!   out = x₀·√ᾱ_prev + ε'·√(1−ᾱ_prev).
//! - Ancestral DDPM on a subsampled schedule (β = 1 − ᾱ/ᾱ_prev): the posterior mean from the
//!   clipped x₀ and x, plus `noise` times the posterior standard deviation (not on the last step).

use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor};

/// DDIM from ᾱ = `alpha_bar` to `alpha_bar_prev` (`None`: to x₀, ᾱ_prev = 1). `x` and `eps`
/// have the same shape; f32 (other dtypes are converted and back).
pub fn ddim_step(x: &Tensor, eps: &Tensor, alpha_bar: f64, alpha_bar_prev: Option<f64>) -> Result<Tensor> {
    let (a, a_prev) = (alpha_bar, alpha_bar_prev.unwrap_or(1.0));
    let op = DdimStep {
        s1: (1.0 - a).sqrt() as f32,
        inv_sa: (1.0 / a.sqrt()) as f32,
        sa: a.sqrt() as f32,
        inv_s1: (1.0 / (1.0 - a).sqrt()) as f32,
        sa_prev: a_prev.sqrt() as f32,
        s1_prev: (1.0 - a_prev).sqrt() as f32,
    };
    let dtype = x.dtype();
    f32c(x)?.apply_op2_no_bwd(&f32c(eps)?, &op)?.to_dtype(dtype)
}

/// Ancestral DDPM from ᾱ = `alpha_bar` to `alpha_bar_prev`; `noise` (the shape of `x`) is added
/// unless this is the last step (`alpha_bar_prev` `None`, where it may be `None`).
pub fn ddpm_step(
    x: &Tensor,
    eps: &Tensor,
    noise: Option<&Tensor>,
    alpha_bar: f64,
    alpha_bar_prev: Option<f64>,
) -> Result<Tensor> {
    let (a, a_prev) = (alpha_bar, alpha_bar_prev.unwrap_or(1.0));
    let beta = 1.0 - a / a_prev;
    let noisy = alpha_bar_prev.is_some();
    let op = DdpmStep {
        s1: (1.0 - a).sqrt() as f32,
        inv_sa: (1.0 / a.sqrt()) as f32,
        c_x0: (a_prev.sqrt() * beta / (1.0 - a)) as f32,
        c_x: ((1.0 - beta).sqrt() * (1.0 - a_prev) / (1.0 - a)) as f32,
        sigma: (beta * (1.0 - a_prev) / (1.0 - a)).sqrt() as f32,
        noisy: i32::from(noisy),
    };
    let noise = match (noisy, noise) {
        (true, Some(n)) => n,
        (true, None) => candle_core::bail!("ddpm_step: every step but the last needs noise"),
        // The last step reads no noise: pass `eps` in its place.
        (false, _) => eps,
    };
    let dtype = x.dtype();
    f32c(x)?.apply_op3_no_bwd(&f32c(eps)?, &f32c(noise)?, &op)?.to_dtype(dtype)
}

fn f32c(t: &Tensor) -> Result<Tensor> {
    t.to_dtype(DType::F32)?.contiguous()
}

fn same(op: &str, a: &Layout, b: &Layout) -> Result<()> {
    if a.shape() != b.shape() {
        candle_core::bail!("{op}: shapes {:?} and {:?} differ", a.shape(), b.shape());
    }
    Ok(())
}

/// The candle op behind [`ddim_step`], and the CUDA kernel's parameters (by value, as its
/// struct `Ddim`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub(crate) struct DdimStep {
    /// √(1−ᾱ).
    s1: f32,
    /// 1/√ᾱ.
    inv_sa: f32,
    /// √ᾱ.
    sa: f32,
    /// 1/√(1−ᾱ).
    inv_s1: f32,
    /// √ᾱ_prev.
    sa_prev: f32,
    /// √(1−ᾱ_prev).
    s1_prev: f32,
}

impl DdimStep {
    fn one(&self, x: f32, e: f32) -> f32 {
        let x0 = ((x - e * self.s1) * self.inv_sa).clamp(-1.0, 1.0);
        let e = (x - x0 * self.sa) * self.inv_s1;
        x0 * self.sa_prev + e * self.s1_prev
    }
}

impl CustomOp2 for DdimStep {
    fn name(&self) -> &'static str {
        "ddim-step"
    }

    fn cpu_fwd(&self, x: &CpuStorage, lx: &Layout, e: &CpuStorage, le: &Layout) -> Result<(CpuStorage, Shape)> {
        same("ddim-step", lx, le)?;
        let (x, e) = (crate::cpu_f32("ddim-step", x, lx)?, crate::cpu_f32("ddim-step", e, le)?);
        let out = x.iter().zip(e).map(|(&x, &e)| self.one(x, e)).collect();
        Ok((CpuStorage::F32(out), lx.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        x: &candle_core::CudaStorage,
        lx: &Layout,
        e: &candle_core::CudaStorage,
        le: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        same("ddim-step", lx, le)?;
        let dev = x.device.clone();
        let vec = crate::cuda::vectorisable(&[lx, le]);
        let (x, e) = (crate::cuda::view(x, lx)?, crate::cuda::view(e, le)?);
        let out = crate::cuda::elementwise(&dev, "ddim_step", &[&x, &e], vec, self)?;
        Ok((candle_core::CudaStorage::wrap_cuda_slice(out, dev), lx.shape().clone()))
    }
}

/// The candle op behind [`ddpm_step`], and the CUDA kernel's parameters (by value, as its
/// struct `Ddpm`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub(crate) struct DdpmStep {
    /// √(1−ᾱ).
    s1: f32,
    /// 1/√ᾱ.
    inv_sa: f32,
    /// The posterior mean's x₀ coefficient.
    c_x0: f32,
    /// The posterior mean's x_t coefficient.
    c_x: f32,
    /// The posterior standard deviation.
    sigma: f32,
    /// 1 to add `noise · sigma` (every step but the last).
    noisy: i32,
}

impl DdpmStep {
    fn one(&self, x: f32, e: f32, z: f32) -> f32 {
        let x0 = ((x - e * self.s1) * self.inv_sa).clamp(-1.0, 1.0);
        let mean = x0 * self.c_x0 + x * self.c_x;
        if self.noisy != 0 { mean + z * self.sigma } else { mean }
    }
}

impl CustomOp3 for DdpmStep {
    fn name(&self) -> &'static str {
        "ddpm-step"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        lx: &Layout,
        e: &CpuStorage,
        le: &Layout,
        z: &CpuStorage,
        lz: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        same("ddpm-step", lx, le)?;
        same("ddpm-step", lx, lz)?;
        let (x, e, z) = (
            crate::cpu_f32("ddpm-step", x, lx)?,
            crate::cpu_f32("ddpm-step", e, le)?,
            crate::cpu_f32("ddpm-step", z, lz)?,
        );
        let out = x.iter().zip(e).zip(z).map(|((&x, &e), &z)| self.one(x, e, z)).collect();
        Ok((CpuStorage::F32(out), lx.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        x: &candle_core::CudaStorage,
        lx: &Layout,
        e: &candle_core::CudaStorage,
        le: &Layout,
        z: &candle_core::CudaStorage,
        lz: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        same("ddpm-step", lx, le)?;
        same("ddpm-step", lx, lz)?;
        let dev = x.device.clone();
        let vec = crate::cuda::vectorisable(&[lx, le, lz]);
        let (x, e, z) = (crate::cuda::view(x, lx)?, crate::cuda::view(e, le)?, crate::cuda::view(z, lz)?);
        let out = crate::cuda::elementwise(&dev, "ddpm_step", &[&x, &e, &z], vec, self)?;
        Ok((candle_core::CudaStorage::wrap_cuda_slice(out, dev), lx.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The unfused candle ops (the worker's schedule did exactly this before the fused op).
    fn unfused_ddim(x: &Tensor, e: &Tensor, a: f64, a_prev: f64) -> Tensor {
        let x0 = ((x - (e * (1.0 - a).sqrt()).unwrap()).unwrap() / a.sqrt()).unwrap().clamp(-1f32, 1f32).unwrap();
        let e = ((x - (&x0 * a.sqrt()).unwrap()).unwrap() / (1.0 - a).sqrt()).unwrap();
        ((x0 * a_prev.sqrt()).unwrap() + (e * (1.0 - a_prev).sqrt()).unwrap()).unwrap()
    }

    fn unfused_ddpm(x: &Tensor, e: &Tensor, z: &Tensor, a: f64, a_prev: Option<f64>) -> Tensor {
        let ap = a_prev.unwrap_or(1.0);
        let beta = 1.0 - a / ap;
        let x0 = ((x - (e * (1.0 - a).sqrt()).unwrap()).unwrap() / a.sqrt()).unwrap().clamp(-1f32, 1f32).unwrap();
        let mean = ((x0 * (ap.sqrt() * beta / (1.0 - a))).unwrap()
            + (x * ((1.0 - beta).sqrt() * (1.0 - ap) / (1.0 - a))).unwrap())
        .unwrap();
        match a_prev {
            Some(_) => (mean + (z * (beta * (1.0 - ap) / (1.0 - a)).sqrt()).unwrap()).unwrap(),
            None => mean,
        }
    }

    fn values(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn steps_equal_the_unfused_ops_bit_for_bit() {
        let dev = Device::Cpu;
        for (shape, a, a_prev) in
            [((2, 3, 8, 8), 0.3, Some(0.6)), ((1, 5, 7, 9), 0.02, Some(0.9)), ((3, 1, 4, 4), 0.7, None)]
        {
            let x = Tensor::randn(0f32, 1.5, shape, &dev).unwrap();
            let e = Tensor::randn(0f32, 1.0, shape, &dev).unwrap();
            let z = Tensor::randn(0f32, 1.0, shape, &dev).unwrap();
            let got = ddim_step(&x, &e, a, a_prev).unwrap();
            assert_eq!(values(&got), values(&unfused_ddim(&x, &e, a, a_prev.unwrap_or(1.0))));
            let got = ddpm_step(&x, &e, Some(&z), a, a_prev).unwrap();
            assert_eq!(values(&got), values(&unfused_ddpm(&x, &e, &z, a, a_prev)));
        }
    }

    #[test]
    fn ddpm_needs_noise_before_the_last_step_and_shapes_must_match() {
        let x = Tensor::ones((1, 4), DType::F32, &Device::Cpu).unwrap();
        assert!(ddpm_step(&x, &x, None, 0.5, Some(0.7)).is_err());
        assert!(ddpm_step(&x, &x, None, 0.5, None).is_ok());
        let y = Tensor::ones((1, 5), DType::F32, &Device::Cpu).unwrap();
        assert!(ddim_step(&x, &y, 0.5, None).is_err());
    }
}
