//! `upfirdn` owns FIR resampling of feature maps (StyleGAN2's `upfirdn2d`, used by NCSN++ and
//! MCVD with the kernel [1, 3, 3, 1]): upsample by zero insertion, pad, convolve with a fixed
//! separable kernel, downsample by striding. [`upfirdn2d`] runs on candle tensors (a padded
//! single-channel conv2d, differentiable, any device); [`upsample_2d`] and [`downsample_2d`]
//! are the ×2 cases NCSN++ uses, in separable polyphase form; [`upfirdn2d_reference`] is the
//! plain CPU loop all of them are tested against and that GPU kernels can be checked with later.

use candle_core::{Result, Tensor};

/// The FIR kernel of NCSN++ and MCVD (a binomial filter, outer product with itself).
pub const FIR_KERNEL: [f32; 4] = [1.0, 3.0, 3.0, 1.0];

/// One resampling: `up` and `down` factors and the padding on each side (after upsampling);
/// the fused op's own type, with StyleGAN2's ×2 cases (`Resample::up2`, `Resample::down2`).
pub use kernels::FirResample as Resample;

/// The 2-D kernel of a separable 1-D kernel, normalised to sum to `gain`.
pub fn kernel_2d(k: &[f32], gain: f32) -> Vec<f32> {
    let sum: f32 = k.iter().sum();
    let mut out = Vec::with_capacity(k.len() * k.len());
    for a in k {
        for b in k {
            out.push(a * b / (sum * sum) * gain);
        }
    }
    out
}

/// `upfirdn2d` on a `(B, C, H, W)` tensor with a square `taps`×`taps` kernel (row-major).
pub fn upfirdn2d(x: &Tensor, kernel: &[f32], taps: usize, r: Resample) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let mut y = x.reshape((b * c, 1, h, w))?;
    if r.up > 1 {
        y = y
            .reshape((b * c, 1, h, 1, w, 1))?
            .pad_with_zeros(3, 0, r.up - 1)?
            .pad_with_zeros(5, 0, r.up - 1)?
            .reshape((b * c, 1, h * r.up, w * r.up))?;
    }
    y = y.pad_with_zeros(2, r.pad0, r.pad1)?.pad_with_zeros(3, r.pad0, r.pad1)?;
    // conv2d correlates; upfirdn2d convolves: flip the kernel.
    let flipped: Vec<f32> = kernel.iter().rev().copied().collect();
    let k = Tensor::from_vec(flipped, (1, 1, taps, taps), x.device())?.to_dtype(x.dtype())?;
    let y = y.conv2d(&k, 0, r.down, 1, 1)?;
    let (_, _, ho, wo) = y.dims4()?;
    y.reshape((b, c, ho, wo))
}

/// ×2 FIR upsampling as in NCSN++'s BigGAN blocks (kernel gain 4 keeps the mean): the same
/// result as [`upfirdn2d`] with [`FIR_KERNEL`] and [`Resample::up2`], computed separably in
/// polyphase form (even outputs `(x[i-1] + 3x[i])/4`, odd `(3x[i] + x[i+1])/4`, zeros beyond
/// the border), which is many times faster than the zero-inserted convolution on candle's CPU.
pub fn upsample_2d(x: &Tensor) -> Result<Tensor> {
    if fused(x) {
        let taps = FIR_KERNEL.len();
        return kernels::upfirdn2d(x, &kernel_2d(&FIR_KERNEL, 4.0), taps, Resample::up2(taps));
    }
    let x = up_axis(x, 3)?;
    up_axis(&x, 2)
}

/// ×2 FIR downsampling as in NCSN++'s BigGAN blocks: [`upfirdn2d`] with [`FIR_KERNEL`] and
/// [`Resample::down2`], separably: `(x[2i-1] + 3x[2i] + 3x[2i+1] + x[2i+2])/8`.
pub fn downsample_2d(x: &Tensor) -> Result<Tensor> {
    if fused(x) {
        let taps = FIR_KERNEL.len();
        return kernels::upfirdn2d(x, &kernel_2d(&FIR_KERNEL, 1.0), taps, Resample::down2(taps));
    }
    let x = down_axis(x, 3)?;
    down_axis(&x, 2)
}

/// Whether to run the fused `kernels::upfirdn2d` (one pass, CUDA) instead of the separable
/// candle ops: on a CUDA device, outside training (the fused op has no gradient).
fn fused(x: &Tensor) -> bool {
    x.device().is_cuda() && !x.track_op()
}

fn up_axis(x: &Tensor, d: usize) -> Result<Tensor> {
    let n = x.dim(d)?;
    let p = x.pad_with_zeros(d, 1, 1)?;
    let (left, right) = (p.narrow(d, 0, n)?, p.narrow(d, 2, n)?);
    let even = ((left + (x * 3.0)?)? * 0.25)?;
    let odd = (((x * 3.0)? + right)? * 0.25)?;
    let mut dims = x.dims().to_vec();
    dims[d] *= 2;
    Tensor::stack(&[even, odd], d + 1)?.reshape(dims)
}

fn down_axis(x: &Tensor, d: usize) -> Result<Tensor> {
    let n = x.dim(d)?;
    let mut split = x.dims().to_vec();
    split[d] = n / 2;
    split.insert(d + 1, 2);
    let pairs = x.reshape(split)?;
    let even = pairs.narrow(d + 1, 0, 1)?.squeeze(d + 1)?;
    let odd = pairs.narrow(d + 1, 1, 1)?.squeeze(d + 1)?;
    let half = n / 2;
    let odd_prev = odd.pad_with_zeros(d, 1, 0)?.narrow(d, 0, half)?;
    let even_next = even.pad_with_zeros(d, 0, 1)?.narrow(d, 1, half)?;
    ((odd_prev + even_next)? + ((even + odd)? * 3.0)?)? * 0.125
}

/// The direct definition, on `n` planes of `h`×`w` samples (row-major): each output sample is
/// `Σ k[i][j] · padded_up[y·down + taps-1-i][x·down + taps-1-j]`.
pub fn upfirdn2d_reference(
    x: &[f32],
    n: usize,
    h: usize,
    w: usize,
    kernel: &[f32],
    taps: usize,
    r: Resample,
) -> Vec<f32> {
    let (hu, wu) = (h * r.up + r.pad0 + r.pad1, w * r.up + r.pad0 + r.pad1);
    // An axis shorter than the kernel has no output.
    let (ho, wo) = (r.out_len(h, taps).unwrap_or(0), r.out_len(w, taps).unwrap_or(0));
    // The upsampled, padded plane, read through a function rather than materialised.
    let sample = |p: usize, yy: usize, xx: usize| -> f32 {
        if yy < r.pad0 || xx < r.pad0 {
            return 0.0;
        }
        let (uy, ux) = (yy - r.pad0, xx - r.pad0);
        if uy % r.up != 0 || ux % r.up != 0 {
            return 0.0;
        }
        let (sy, sx) = (uy / r.up, ux / r.up);
        if sy >= h || sx >= w {
            return 0.0;
        }
        x[p * h * w + sy * w + sx]
    };
    let mut out = vec![0.0; n * ho * wo];
    for p in 0..n {
        for oy in 0..ho {
            for ox in 0..wo {
                let mut acc = 0.0;
                for i in 0..taps {
                    for j in 0..taps {
                        let (yy, xx) = (oy * r.down + i, ox * r.down + j);
                        debug_assert!(yy < hu && xx < wu);
                        acc += kernel[(taps - 1 - i) * taps + (taps - 1 - j)] * sample(p, yy, xx);
                    }
                }
                out[p * ho * wo + oy * wo + ox] = acc;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn planes(n: usize, h: usize, w: usize) -> Vec<f32> {
        (0..n * h * w).map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0).collect()
    }

    fn check(r: Resample, kernel: &[f32], taps: usize) {
        let (b, c, h, w) = (2, 3, 8, 6);
        let data = planes(b * c, h, w);
        let x = Tensor::from_vec(data.clone(), (b, c, h, w), &Device::Cpu).unwrap();
        let got = upfirdn2d(&x, kernel, taps, r).unwrap();
        let (ho, wo) = (r.out_len(h, taps).unwrap(), r.out_len(w, taps).unwrap());
        assert_eq!(got.dims4().unwrap(), (b, c, ho, wo));
        let got = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let want = upfirdn2d_reference(&data, b * c, h, w, kernel, taps, r);
        for (g, e) in got.iter().zip(&want) {
            assert!((g - e).abs() < 1e-5, "{g} vs {e}");
        }
    }

    #[test]
    fn tensor_version_matches_the_direct_loop() {
        let k = kernel_2d(&FIR_KERNEL, 4.0);
        check(Resample::up2(4), &k, 4);
        let k = kernel_2d(&FIR_KERNEL, 1.0);
        check(Resample::down2(4), &k, 4);
        // An asymmetric kernel catches a missing flip.
        let k: Vec<f32> = (0..9).map(|i| i as f32).collect();
        check(Resample { up: 1, down: 1, pad0: 1, pad1: 1 }, &k, 3);
    }

    /// The kernels crate's fused op (what MCVD runs on CUDA) against the reference, for the
    /// resamplings MCVD uses and an asymmetric kernel.
    #[test]
    fn the_fused_kernels_op_matches_the_direct_loop() {
        let (b, c, h, w) = (2, 3, 8, 6);
        let data = planes(b * c, h, w);
        let x = Tensor::from_vec(data.clone(), (b, c, h, w), &Device::Cpu).unwrap();
        let odd: Vec<f32> = (0..9).map(|i| i as f32 - 3.0).collect();
        for (k, taps, r) in [
            (kernel_2d(&FIR_KERNEL, 4.0), 4, Resample::up2(4)),
            (kernel_2d(&FIR_KERNEL, 1.0), 4, Resample::down2(4)),
            (odd, 3, Resample { up: 2, down: 3, pad0: 2, pad1: 1 }),
        ] {
            let got = kernels::upfirdn2d(&x, &k, taps, r).unwrap();
            assert_eq!(got.dims4().unwrap(), (b, c, r.out_len(h, taps).unwrap(), r.out_len(w, taps).unwrap()));
            let want = upfirdn2d_reference(&data, b * c, h, w, &k, taps, r);
            for (g, e) in got.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().zip(&want) {
                assert!((g - e).abs() <= 1e-5 * (1.0 + e.abs()), "{r:?}: {g} vs {e}");
            }
        }
    }

    #[test]
    fn polyphase_fast_paths_match_the_general_op() {
        let (b, c, h, w) = (2, 3, 8, 6);
        let data = planes(b * c, h, w);
        let x = Tensor::from_vec(data.clone(), (b, c, h, w), &Device::Cpu).unwrap();
        for (fast, gain, r) in
            [(upsample_2d(&x).unwrap(), 4.0, Resample::up2(4)), (downsample_2d(&x).unwrap(), 1.0, Resample::down2(4))]
        {
            let k = kernel_2d(&FIR_KERNEL, gain);
            let want = upfirdn2d_reference(&data, b * c, h, w, &k, 4, r);
            assert_eq!(fast.dims4().unwrap(), (b, c, r.out_len(h, 4).unwrap(), r.out_len(w, 4).unwrap()));
            let got = fast.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            for (g, e) in got.iter().zip(&want) {
                assert!((g - e).abs() < 1e-5, "{g} vs {e}");
            }
        }
    }

    #[test]
    fn resampling_keeps_constants_and_halves_or_doubles_sizes() {
        let x = Tensor::ones((1, 2, 8, 8), candle_core::DType::F32, &Device::Cpu).unwrap();
        let up = upsample_2d(&x).unwrap();
        assert_eq!(up.dims4().unwrap(), (1, 2, 16, 16));
        let down = downsample_2d(&x).unwrap();
        assert_eq!(down.dims4().unwrap(), (1, 2, 4, 4));
        // Away from the zero-padded border a constant stays constant.
        let v = up.get(0).unwrap().get(0).unwrap().get(8).unwrap().get(8).unwrap();
        assert!((v.to_scalar::<f32>().unwrap() - 1.0).abs() < 1e-6);
        let v = down.get(0).unwrap().get(1).unwrap().get(2).unwrap().get(2).unwrap();
        assert!((v.to_scalar::<f32>().unwrap() - 1.0).abs() < 1e-6);
    }
}
