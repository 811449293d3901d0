//! `yuv` owns planar YUV 4:2:0 frames ([`I420Image`]), the layout most codecs decode to, and
//! their conversion to and from RGB24: BT.601 limited range ("studio swing": Y in 16..=235,
//! chroma in 16..=240 around 128) in 8-bit integer arithmetic, each chroma sample shared by its
//! 2×2 block of pixels. [`I420Image::to_rgb`] is the CPU reference of the fused preprocess
//! kernels' I420 input (WGSL and CUDA do the same integer steps per sample).

use image::RgbImage;

use super::MediaError;

/// One planar YUV 4:2:0 frame: the Y plane (`width × height` bytes), then U, then V
/// (`⌈width/2⌉ × ⌈height/2⌉` bytes each), rows unpadded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct I420Image {
    width: u32,
    height: u32,
    data: Vec<u8>,
}

impl I420Image {
    /// Bytes of a `width`×`height` frame.
    pub fn frame_bytes(width: u32, height: u32) -> usize {
        let (w, h) = (width as usize, height as usize);
        w * h + 2 * w.div_ceil(2) * h.div_ceil(2)
    }

    /// A frame over `data` (Y, U, V planes back to back); an error unless the size fits.
    pub fn new(width: u32, height: u32, data: Vec<u8>) -> Result<Self, MediaError> {
        let want = Self::frame_bytes(width, height);
        if width == 0 || height == 0 || data.len() != want {
            return Err(MediaError::InvalidDimensions {
                width,
                height,
                reason: format!("an I420 frame of this size takes {want} bytes, not {}", data.len()),
            });
        }
        Ok(I420Image { width, height, data })
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// `(width, height)`.
    pub fn dimensions(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    /// The three planes back to back.
    pub fn as_raw(&self) -> &[u8] {
        &self.data
    }

    /// The chroma planes' width.
    fn chroma_width(&self) -> usize {
        (self.width as usize).div_ceil(2)
    }

    /// `(y, u, v)` of pixel `(x, y)`.
    pub fn sample(&self, x: u32, y: u32) -> [u8; 3] {
        let (w, h) = (self.width as usize, self.height as usize);
        let cw = self.chroma_width();
        let chroma = cw * h.div_ceil(2);
        let at = w * h + (y as usize / 2) * cw + x as usize / 2;
        [self.data[y as usize * w + x as usize], self.data[at], self.data[at + chroma]]
    }

    /// The frame as RGB24, pixel by pixel through [`yuv_to_rgb`].
    pub fn to_rgb(&self) -> RgbImage {
        RgbImage::from_fn(self.width, self.height, |x, y| image::Rgb(yuv_to_rgb(self.sample(x, y))))
    }

    /// An RGB image as I420: luma per pixel, chroma from the mean RGB of each 2×2 block (the
    /// pixels inside the image, at the right and bottom edges of odd sizes).
    pub fn from_rgb(img: &RgbImage) -> Result<Self, MediaError> {
        let (w, h) = img.dimensions();
        let mut data = Vec::with_capacity(Self::frame_bytes(w, h));
        data.extend(img.pixels().map(|p| rgb_to_yuv(p.0)[0]));
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        let mut u = Vec::with_capacity((cw * ch) as usize);
        let mut v = Vec::with_capacity((cw * ch) as usize);
        for by in 0..ch {
            for bx in 0..cw {
                let (mut sum, mut n) = ([0u32; 3], 0u32);
                for (x, y) in [(0, 0), (1, 0), (0, 1), (1, 1)].map(|(dx, dy)| (2 * bx + dx, 2 * by + dy)) {
                    if x < w && y < h {
                        let p = img.get_pixel(x, y).0;
                        (0..3).for_each(|c| sum[c] += p[c] as u32);
                        n += 1;
                    }
                }
                let [_, cu, cv] = rgb_to_yuv(sum.map(|s| ((s + n / 2) / n) as u8));
                u.push(cu);
                v.push(cv);
            }
        }
        data.extend(u);
        data.extend(v);
        Self::new(w, h, data)
    }
}

/// BT.601 limited range YUV to RGB in integers: with c = 298·(Y − 16), d = U − 128,
/// e = V − 128: R = (c + 409e + 128) >> 8, G = (c − 100d − 208e + 128) >> 8,
/// B = (c + 516d + 128) >> 8, each clamped to 0..=255 (arithmetic shifts).
pub fn yuv_to_rgb([y, u, v]: [u8; 3]) -> [u8; 3] {
    let c = 298 * (y as i32 - 16);
    let (d, e) = (u as i32 - 128, v as i32 - 128);
    [c + 409 * e + 128, c - 100 * d - 208 * e + 128, c + 516 * d + 128].map(|x| (x >> 8).clamp(0, 255) as u8)
}

/// RGB to BT.601 limited range YUV in integers (the inverse of [`yuv_to_rgb`] up to rounding).
pub fn rgb_to_yuv([r, g, b]: [u8; 3]) -> [u8; 3] {
    let (r, g, b) = (r as i32, g as i32, b as i32);
    let y = ((66 * r + 129 * g + 25 * b + 128) >> 8) + 16;
    let u = ((-38 * r - 74 * g + 112 * b + 128) >> 8) + 128;
    let v = ((112 * r - 94 * g - 18 * b + 128) >> 8) + 128;
    [y, u, v].map(|x| x.clamp(0, 255) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_standard_colours_convert_to_their_rgb() {
        assert_eq!(yuv_to_rgb([235, 128, 128]), [255, 255, 255]);
        assert_eq!(yuv_to_rgb([16, 128, 128]), [0, 0, 0]);
        assert_eq!(yuv_to_rgb([126, 128, 128]), [128, 128, 128]);
        // Full-range primaries map to BT.601's limited-range codes and back.
        assert_eq!(rgb_to_yuv([255, 0, 0]), [82, 90, 240]);
        assert!(yuv_to_rgb([82, 90, 240]).iter().zip([255, 0, 0]).all(|(&a, b)| a.abs_diff(b) <= 1));
        assert_eq!(rgb_to_yuv([255, 255, 255]), [235, 128, 128]);
    }

    #[test]
    fn rgb_survives_a_round_trip_within_rounding() {
        for r in (0..=255u8).step_by(15) {
            for g in (0..=255u8).step_by(17) {
                for b in (0..=255u8).step_by(51) {
                    let back = yuv_to_rgb(rgb_to_yuv([r, g, b]));
                    let err = (0..3).map(|c| (back[c] as i32 - [r, g, b][c] as i32).abs()).max().unwrap();
                    assert!(err <= 3, "{:?} came back as {back:?}", [r, g, b]);
                }
            }
        }
    }

    #[test]
    fn planes_are_laid_out_and_shared_per_block() {
        // 3×3: a 3×3 Y plane, 2×2 U and V planes.
        assert_eq!(I420Image::frame_bytes(3, 3), 9 + 8);
        let data: Vec<u8> = (0..17).collect();
        let img = I420Image::new(3, 3, data).unwrap();
        assert_eq!(img.sample(0, 0), [0, 9, 13]);
        assert_eq!(img.sample(1, 1), [4, 9, 13]);
        assert_eq!(img.sample(2, 1), [5, 10, 14]);
        assert_eq!(img.sample(2, 2), [8, 12, 16]);
        assert!(I420Image::new(3, 3, vec![0; 16]).is_err());
        assert!(I420Image::new(0, 3, vec![]).is_err());
    }

    #[test]
    fn from_rgb_keeps_a_smooth_image() {
        let img = RgbImage::from_fn(33, 19, |x, y| image::Rgb([(x * 7) as u8, (y * 13) as u8, 200 - (x + y) as u8]));
        let back = I420Image::from_rgb(&img).unwrap().to_rgb();
        let worst = img
            .pixels()
            .zip(back.pixels())
            .flat_map(|(a, b)| (0..3).map(move |c| (a.0[c] as i32 - b.0[c] as i32).abs()))
            .max();
        // Chroma is shared by 2×2 blocks, so neighbours' colour bleeds a little.
        assert!(worst.unwrap() <= 12, "worst channel error {worst:?}");
    }
}
