//! Luma planes and the resolution-normalised domain: [`Plane`] (f32, row-major), the BT.601
//! luma of an RGB frame, and separable resampling between a frame and the square canonical
//! grid the mark lives on. Marking and detection resample to the same grid, so a resized copy
//! lands on the same coefficients; [`Span`] maps a frame onto part of the grid (a centre crop
//! hypothesis at detection).

use image::RgbImage;

/// A single-channel f32 image.
#[derive(Debug, Clone, PartialEq)]
pub struct Plane {
    /// Width in samples.
    pub width: usize,
    /// Height in samples.
    pub height: usize,
    /// Row-major samples.
    pub data: Vec<f32>,
}

impl Plane {
    /// A zero plane.
    pub fn zeros(width: usize, height: usize) -> Self {
        Plane { width, height, data: vec![0.0; width * height] }
    }

    /// BT.601 luma of `img`, 0..255.
    pub fn luma(img: &RgbImage) -> Self {
        let data = img.pixels().map(|p| 0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32).collect();
        Plane { width: img.width() as usize, height: img.height() as usize, data }
    }

    /// The 8×8 block at block coordinates (bx, by), row-major.
    pub fn block(&self, bx: usize, by: usize, out: &mut [f32; 64]) {
        for y in 0..8 {
            let row = (by * 8 + y) * self.width + bx * 8;
            out[y * 8..y * 8 + 8].copy_from_slice(&self.data[row..row + 8]);
        }
    }

    /// Writes an 8×8 block at block coordinates (bx, by).
    pub fn set_block(&mut self, bx: usize, by: usize, block: &[f32; 64]) {
        for y in 0..8 {
            let row = (by * 8 + y) * self.width + bx * 8;
            self.data[row..row + 8].copy_from_slice(&block[y * 8..y * 8 + 8]);
        }
    }
}

/// Where the whole source lies along one destination axis: `[start, end)` in destination
/// samples (the full axis, or a part of it for a crop hypothesis).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Span {
    /// First destination coordinate covered by the source.
    pub start: f32,
    /// One past the last.
    pub end: f32,
}

impl Span {
    /// The whole destination axis of `len` samples.
    pub fn full(len: usize) -> Self {
        Span { start: 0.0, end: len as f32 }
    }
}

/// Resampling taps of one axis: for each destination sample, the first source index and the
/// weights, or `None` when the sample lies outside the span.
fn axis_taps(src_len: usize, dst_len: usize, span: Span) -> Vec<Option<(usize, Vec<f32>)>> {
    let scale = src_len as f32 / (span.end - span.start);
    // A triangle kernel, widened to the scale when shrinking (an area-like low-pass).
    let support = scale.max(1.0);
    (0..dst_len)
        .map(|j| {
            let centre_dst = j as f32 + 0.5;
            if centre_dst < span.start || centre_dst > span.end {
                return None;
            }
            let centre = (centre_dst - span.start) * scale - 0.5;
            let lo = (centre - support).floor().max(0.0) as usize;
            let hi = ((centre + support).ceil() as usize).min(src_len - 1);
            let mut w: Vec<f32> = (lo..=hi).map(|i| (1.0 - ((i as f32 - centre) / support).abs()).max(0.0)).collect();
            let sum: f32 = w.iter().sum();
            if sum <= 0.0 {
                let nearest = centre.round().clamp(0.0, (src_len - 1) as f32) as usize;
                return Some((nearest, vec![1.0]));
            }
            w.iter_mut().for_each(|x| *x /= sum);
            Some((lo, w))
        })
        .collect()
}

/// Resamples `src` to `dst_w`×`dst_h`, the source covering `xs`×`ys` of the destination;
/// samples outside are 0. Also returns, per destination sample, whether it is covered.
pub fn resample(src: &Plane, dst_w: usize, dst_h: usize, xs: Span, ys: Span) -> (Plane, Vec<bool>) {
    let tx = axis_taps(src.width, dst_w, xs);
    let ty = axis_taps(src.height, dst_h, ys);
    // Horizontal pass: src.height rows × dst_w.
    let mut tmp = vec![0f32; src.height * dst_w];
    for y in 0..src.height {
        let row = &src.data[y * src.width..(y + 1) * src.width];
        for (x, tap) in tx.iter().enumerate() {
            if let Some((lo, w)) = tap {
                tmp[y * dst_w + x] = w.iter().zip(&row[*lo..]).map(|(a, b)| a * b).sum();
            }
        }
    }
    let mut out = Plane::zeros(dst_w, dst_h);
    let mut covered = vec![false; dst_w * dst_h];
    for (y, tap) in ty.iter().enumerate() {
        let Some((lo, w)) = tap else { continue };
        for x in 0..dst_w {
            if tx[x].is_none() {
                continue;
            }
            let mut acc = 0.0;
            for (k, wk) in w.iter().enumerate() {
                acc += wk * tmp[(lo + k) * dst_w + x];
            }
            out.data[y * dst_w + x] = acc;
            covered[y * dst_w + x] = true;
        }
    }
    (out, covered)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_planes_stay_constant() {
        let p = Plane { width: 37, height: 21, data: vec![5.0; 37 * 21] };
        for (w, h) in [(64, 64), (8, 8), (100, 50)] {
            let (r, cov) = resample(&p, w, h, Span::full(w), Span::full(h));
            assert!(cov.iter().all(|&c| c));
            assert!(r.data.iter().all(|x| (x - 5.0).abs() < 1e-4));
        }
        let (_, cov) = resample(&p, 20, 20, Span { start: 2.0, end: 18.0 }, Span::full(20));
        assert!(!cov[0] && cov[10] && !cov[19]);
    }
}
