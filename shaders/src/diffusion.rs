//! `diffusion` owns the fused sampler steps (`ddim.wgsl`, `ddpm.wgsl`): one elementwise pass
//! per denoising step in place of candle's chain of affine and binary ops, with the arithmetic
//! of the worker's `Schedule::ddim_step` and `Schedule::ddpm_step`.

use crate::gpu::{Dispatch, Gpu, GpuError, Input, Kernel, f32_bits, grid_1d, to_f32};

/// The DDIM shader.
pub const DDIM: Kernel = Kernel { name: "ddim_step", source: include_str!("ddim.wgsl"), entry: "main" };

/// The DDPM shader.
pub const DDPM: Kernel = Kernel { name: "ddpm_step", source: include_str!("ddpm.wgsl"), entry: "main" };

fn same_len(op: &'static str, x: &[f32], other: &[f32], what: &str) -> Result<(), GpuError> {
    if other.len() == x.len() {
        Ok(())
    } else {
        Err(GpuError::Shape { op, message: format!("{what} has {} values, x {}", other.len(), x.len()) })
    }
}

/// DDIM (η = 0) from a step with ᾱ = `alpha_bar` to one with `alpha_bar_prev` (`None`: to x₀,
/// ᾱ = 1): x₀ predicted from `x` and `eps` and clipped to [−1, 1], ε recomputed from the clipped
/// x₀, then `x₀·√ᾱ_prev + ε·√(1−ᾱ_prev)`. `x` and `eps` are any shape, flat.
pub fn ddim_step(
    gpu: &Gpu,
    x: &[f32],
    eps: &[f32],
    alpha_bar: f64,
    alpha_bar_prev: Option<f64>,
) -> Result<Vec<f32>, GpuError> {
    same_len("ddim_step", x, eps, "eps")?;
    if x.is_empty() {
        return Ok(Vec::new());
    }
    let (a, a_prev) = (alpha_bar, alpha_bar_prev.unwrap_or(1.0));
    let params = [
        x.len() as u32,
        f32_bits((1.0 - a).sqrt() as f32),
        f32_bits((1.0 / a.sqrt()) as f32),
        f32_bits(a.sqrt() as f32),
        f32_bits((1.0 / (1.0 - a).sqrt()) as f32),
        f32_bits(a_prev.sqrt() as f32),
        f32_bits((1.0 - a_prev).sqrt() as f32),
    ];
    let d = Dispatch {
        params: &params,
        inputs: &[Input::F32(x), Input::F32(eps)],
        outputs: &[x.len()],
        workgroups: grid_1d(x.len()),
    };
    Ok(to_f32(gpu.run(&DDIM, &d)?.remove(0)))
}

/// Ancestral DDPM from ᾱ = `alpha_bar` to `alpha_bar_prev` on a subsampled schedule (β of the
/// jump 1 − ᾱ/ᾱ_prev): the posterior mean from the clipped x₀ and `x`, plus `noise` times the
/// posterior standard deviation unless this is the last step (`alpha_bar_prev` `None`, where
/// `noise` is not read and may be empty).
pub fn ddpm_step(
    gpu: &Gpu,
    x: &[f32],
    eps: &[f32],
    noise: &[f32],
    alpha_bar: f64,
    alpha_bar_prev: Option<f64>,
) -> Result<Vec<f32>, GpuError> {
    same_len("ddpm_step", x, eps, "eps")?;
    if alpha_bar_prev.is_some() {
        same_len("ddpm_step", x, noise, "noise")?;
    }
    if x.is_empty() {
        return Ok(Vec::new());
    }
    let (a, a_prev) = (alpha_bar, alpha_bar_prev.unwrap_or(1.0));
    let beta = 1.0 - a / a_prev;
    let var = beta * (1.0 - a_prev) / (1.0 - a);
    let params = [
        x.len() as u32,
        u32::from(alpha_bar_prev.is_some()),
        f32_bits((1.0 - a).sqrt() as f32),
        f32_bits((1.0 / a.sqrt()) as f32),
        f32_bits((a_prev.sqrt() * beta / (1.0 - a)) as f32),
        f32_bits(((1.0 - beta).sqrt() * (1.0 - a_prev) / (1.0 - a)) as f32),
        f32_bits(var.sqrt() as f32),
    ];
    // The last step reads no noise; bind `eps` in its place.
    let noise = if alpha_bar_prev.is_some() { noise } else { eps };
    let d = Dispatch {
        params: &params,
        inputs: &[Input::F32(x), Input::F32(eps), Input::F32(noise)],
        outputs: &[x.len()],
        workgroups: grid_1d(x.len()),
    };
    Ok(to_f32(gpu.run(&DDPM, &d)?.remove(0)))
}
