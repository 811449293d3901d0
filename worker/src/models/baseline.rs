//! Classical frame-synthesis baselines: copy-last-frame, linear extrapolation (prediction) and
//! linear blending (interpolation). The creator falls back to them when no diffusion model is
//! loaded, and MCVD's evaluation compares against them.

use image::RgbImage;

/// `n` copies of the last frame.
pub fn copy_last(last: &RgbImage, n: usize) -> Vec<RgbImage> {
    vec![last.clone(); n]
}

/// `n` frames continuing the per-pixel linear trend of `prev` → `last`, clamped to 0..=255.
pub fn linear_extrapolate(prev: &RgbImage, last: &RgbImage, n: usize) -> Vec<RgbImage> {
    assert_eq!(prev.dimensions(), last.dimensions(), "frames of one video share a size");
    (1..=n)
        .map(|k| {
            let k = k as f32;
            let mut out = RgbImage::new(last.width(), last.height());
            for ((o, p), l) in out.iter_mut().zip(prev.iter()).zip(last.iter()) {
                let (p, l) = (*p as f32, *l as f32);
                *o = (l + k * (l - p)).round().clamp(0.0, 255.0) as u8;
            }
            out
        })
        .collect()
}

/// `n` frames blending linearly from `a` to `b`, exclusive of both ends.
pub fn linear_interpolate(a: &RgbImage, b: &RgbImage, n: usize) -> Vec<RgbImage> {
    assert_eq!(a.dimensions(), b.dimensions(), "frames of one video share a size");
    (1..=n)
        .map(|k| {
            let t = k as f32 / (n + 1) as f32;
            let mut out = RgbImage::new(a.width(), a.height());
            for ((o, x), y) in out.iter_mut().zip(a.iter()).zip(b.iter()) {
                *o = ((1.0 - t) * *x as f32 + t * *y as f32).round() as u8;
            }
            out
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn solid(v: u8) -> RgbImage {
        RgbImage::from_pixel(4, 2, image::Rgb([v, v, v]))
    }

    #[test]
    fn extrapolation_follows_the_trend_and_clamps() {
        let out = linear_extrapolate(&solid(10), &solid(30), 3);
        let vals: Vec<u8> = out.iter().map(|f| f.get_pixel(0, 0).0[0]).collect();
        assert_eq!(vals, [50, 70, 90]);
        let out = linear_extrapolate(&solid(100), &solid(200), 2);
        assert_eq!(out[1].get_pixel(3, 1).0, [255; 3]);
    }

    #[test]
    fn interpolation_is_evenly_spaced() {
        let out = linear_interpolate(&solid(0), &solid(200), 3);
        let vals: Vec<u8> = out.iter().map(|f| f.get_pixel(1, 1).0[2]).collect();
        assert_eq!(vals, [50, 100, 150]);
        assert_eq!(copy_last(&solid(7), 2), vec![solid(7), solid(7)]);
    }
}
