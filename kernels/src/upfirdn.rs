//! FIR resampling (StyleGAN2's `upfirdn2d`, NCSN++ and MCVD's up- and downsampling): upsample each
//! plane by zero insertion, pad, convolve with a square kernel, keep every `down`-th sample. The
//! CPU forward is the direct loop (only the taps on real samples, in row-then-column order; the
//! worker's `upfirdn2d_reference` is its specification and its tests compare the two); the CUDA
//! forward runs one thread per output sample.

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};

/// One resampling: factors and padding, on both axes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FirResample {
    /// Zero-insertion factor (≥ 1).
    pub up: usize,
    /// Output stride (≥ 1).
    pub down: usize,
    /// Zeros before the first sample, after upsampling.
    pub pad0: usize,
    /// Zeros after the last sample, after upsampling.
    pub pad1: usize,
}

impl FirResample {
    /// ×2 upsampling with a kernel of `taps` (≥ 2) taps (pads as StyleGAN2's `upsample_2d`).
    pub fn up2(taps: usize) -> Self {
        let p = taps - 2;
        FirResample { up: 2, down: 1, pad0: p.div_ceil(2) + 1, pad1: p / 2 }
    }

    /// ×2 downsampling with a kernel of `taps` (≥ 2) taps (pads as StyleGAN2's `downsample_2d`).
    pub fn down2(taps: usize) -> Self {
        let p = taps - 2;
        FirResample { up: 1, down: 2, pad0: p.div_ceil(2), pad1: p / 2 }
    }

    /// Output length of an axis of `len` samples with `taps` taps (`None`: the padded axis is
    /// shorter than the kernel).
    pub fn out_len(&self, len: usize, taps: usize) -> Option<usize> {
        let padded = len * self.up + self.pad0 + self.pad1;
        (padded >= taps).then(|| (padded - taps) / self.down + 1)
    }
}

/// `upfirdn2d` of `x` `(B, C, H, W)` with the row-major `taps`×`taps` `kernel`; f32 (other dtypes
/// are converted and back).
pub fn upfirdn2d(x: &Tensor, kernel: &[f32], taps: usize, r: FirResample) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    if taps == 0 || kernel.len() != taps * taps {
        candle_core::bail!("upfirdn2d: {} kernel values, not {taps}×{taps}", kernel.len());
    }
    if r.up == 0 || r.down == 0 {
        candle_core::bail!("upfirdn2d: factors up {} and down {} must be at least 1", r.up, r.down);
    }
    if r.out_len(h, taps).is_none() || r.out_len(w, taps).is_none() {
        candle_core::bail!("upfirdn2d: a {h}×{w} plane padded by {r:?} is smaller than the {taps}-tap kernel");
    }
    let k = Tensor::from_slice(kernel, (taps, taps), x.device())?;
    let dtype = x.dtype();
    x.to_dtype(DType::F32)?.contiguous()?.apply_op2_no_bwd(&k, &Upfirdn { taps, r })?.to_dtype(dtype)
}

/// The candle op behind [`upfirdn2d`] (x, kernel).
struct Upfirdn {
    taps: usize,
    r: FirResample,
}

impl Upfirdn {
    fn out_shape(&self, l: &Layout) -> Result<(usize, usize, usize, usize, usize, usize)> {
        let (b, c, h, w) = l.shape().dims4()?;
        let ho = self.r.out_len(h, self.taps).expect("checked by upfirdn2d");
        let wo = self.r.out_len(w, self.taps).expect("checked by upfirdn2d");
        Ok((b * c, h, w, ho, wo, b))
    }
}

/// First tap on a real sample of an axis whose first padded position is `pos`.
fn first_real(pos: i64, up: i64) -> i64 {
    (up - pos.rem_euclid(up)) % up
}

impl CustomOp2 for Upfirdn {
    fn name(&self) -> &'static str {
        "upfirdn2d"
    }

    fn cpu_fwd(&self, x: &CpuStorage, lx: &Layout, k: &CpuStorage, lk: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, k) = (crate::cpu_f32("upfirdn2d", x, lx)?, crate::cpu_f32("upfirdn2d", k, lk)?);
        let (planes, h, w, ho, wo, b) = self.out_shape(lx)?;
        let (t, up, down, pad0) = (self.taps as i64, self.r.up as i64, self.r.down as i64, self.r.pad0 as i64);
        let mut out = vec![0f32; planes * ho * wo];
        for p in 0..planes {
            let src = &x[p * h * w..(p + 1) * h * w];
            for oy in 0..ho {
                let y0 = oy as i64 * down - pad0;
                let ib = first_real(y0, up);
                for ox in 0..wo {
                    let x0 = ox as i64 * down - pad0;
                    let jb = first_real(x0, up);
                    let mut acc = 0f32;
                    let (mut i, mut sy) = (ib, (y0 + ib).div_euclid(up));
                    while i < t {
                        if (0..h as i64).contains(&sy) {
                            let (mut j, mut sx) = (jb, (x0 + jb).div_euclid(up));
                            while j < t {
                                if (0..w as i64).contains(&sx) {
                                    acc += k[((t - 1 - i) * t + (t - 1 - j)) as usize]
                                        * src[(sy * w as i64 + sx) as usize];
                                }
                                j += up;
                                sx += 1;
                            }
                        }
                        i += up;
                        sy += 1;
                    }
                    out[(p * ho + oy) * wo + ox] = acc;
                }
            }
        }
        let c = planes / b.max(1);
        Ok((CpuStorage::F32(out), Shape::from((b, c, ho, wo))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        x: &candle_core::CudaStorage,
        lx: &Layout,
        k: &candle_core::CudaStorage,
        lk: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        use crate::cuda::{STRIDE_GRID_CAP, UPFIRDN, function, grid, view};
        use candle_core::cuda_backend::WrapErr;
        use candle_core::cuda_backend::cudarc::driver::PushKernelArg;
        let dev = x.device.clone();
        let (planes, h, w, ho, wo, b) = self.out_shape(lx)?;
        let (xv, kv) = (view(x, lx)?, view(k, lk)?);
        let total = planes * ho * wo;
        let mut out = crate::cuda::output::<f32>(&dev, total)?;
        if total > 0 {
            let f = function(&dev, &UPFIRDN, "upfirdn2d")?;
            let i = |v: usize| i32::try_from(v).map_err(candle_core::Error::wrap);
            let (h, w, ho_, wo_, taps) = (i(h)?, i(w)?, i(ho)?, i(wo)?, i(self.taps)?);
            let (up, down, pad0, total_) = (i(self.r.up)?, i(self.r.down)?, i(self.r.pad0)?, total as i64);
            let stream = dev.cuda_stream();
            let mut l = stream.launch_builder(&f);
            l.arg(&xv).arg(&kv).arg(&mut out).arg(&total_).arg(&h).arg(&w).arg(&ho_).arg(&wo_);
            l.arg(&taps).arg(&up).arg(&down).arg(&pad0);
            let mut cfg = grid(total, Some(STRIDE_GRID_CAP));
            cfg.shared_mem_bytes = (self.taps * self.taps * 4) as u32;
            unsafe { l.launch(cfg) }.w()?;
        }
        let c = planes / b.max(1);
        Ok((candle_core::CudaStorage::wrap_cuda_slice(out, dev), Shape::from((b, c, ho, wo))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The definition, literally: build the upsampled, padded plane, then convolve and stride.
    fn by_definition(x: &[f32], h: usize, w: usize, k: &[f32], t: usize, r: FirResample) -> Vec<f32> {
        let (hp, wp) = (h * r.up + r.pad0 + r.pad1, w * r.up + r.pad0 + r.pad1);
        let mut u = vec![0f32; hp * wp];
        for y in 0..h {
            for x_ in 0..w {
                u[(y * r.up + r.pad0) * wp + x_ * r.up + r.pad0] = x[y * w + x_];
            }
        }
        let (ho, wo) = (r.out_len(h, t).unwrap(), r.out_len(w, t).unwrap());
        let mut out = vec![0f32; ho * wo];
        for oy in 0..ho {
            for ox in 0..wo {
                let mut acc = 0f64;
                for i in 0..t {
                    for j in 0..t {
                        acc += f64::from(k[(t - 1 - i) * t + (t - 1 - j)])
                            * f64::from(u[(oy * r.down + i) * wp + ox * r.down + j]);
                    }
                }
                out[oy * wo + ox] = acc as f32;
            }
        }
        out
    }

    #[test]
    fn equals_the_definition_for_up_down_and_odd_padding() {
        let dev = Device::Cpu;
        let k1 = [1f32, 3.0, 3.0, 1.0];
        let k: Vec<f32> = k1.iter().flat_map(|a| k1.iter().map(move |b| a * b / 64.0)).collect();
        for r in [
            FirResample { up: 2, down: 1, pad0: 2, pad1: 1 },
            FirResample { up: 1, down: 2, pad0: 1, pad1: 1 },
            FirResample { up: 3, down: 2, pad0: 0, pad1: 4 },
            FirResample { up: 1, down: 1, pad0: 3, pad1: 0 },
        ] {
            let (b, c, h, w) = (2, 3, 7, 5);
            let x = Tensor::randn(0f32, 1.0, (b, c, h, w), &dev).unwrap();
            let y = upfirdn2d(&x, &k, 4, r).unwrap();
            let xs: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
            let ys: Vec<f32> = y.flatten_all().unwrap().to_vec1().unwrap();
            let per = ys.len() / (b * c);
            for p in 0..b * c {
                let want = by_definition(&xs[p * h * w..(p + 1) * h * w], h, w, &k, 4, r);
                for (g, e) in ys[p * per..(p + 1) * per].iter().zip(&want) {
                    assert!((g - e).abs() <= 1e-5 * (1.0 + e.abs()), "{r:?}: {g} vs {e}");
                }
            }
        }
    }

    #[test]
    fn refuses_bad_kernels_factors_and_tiny_planes() {
        let x = Tensor::ones((1, 1, 2, 2), DType::F32, &Device::Cpu).unwrap();
        let r = FirResample { up: 1, down: 1, pad0: 0, pad1: 0 };
        assert!(upfirdn2d(&x, &[1.0; 3], 2, r).is_err());
        assert!(upfirdn2d(&x, &[1.0; 4], 2, FirResample { up: 0, ..r }).is_err());
        assert!(upfirdn2d(&x, &[1.0; 16], 4, r).is_err());
        assert!(upfirdn2d(&x, &[1.0; 4], 2, r).is_ok());
    }
}
