//! Still images: JPEG/PNG encode, and guarded JPEG/PNG decode that checks the pixel count from
//! the header before allocating or decoding anything.

use std::io::Cursor;

use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::PngEncoder;
use image::{ImageEncoder, ImageFormat, ImageReader, RgbImage};

use super::{MediaError, MediaLimits};

/// Encode `img` as baseline JPEG; `quality` is 1..=100.
pub fn encode_jpeg(img: &RgbImage, quality: u8) -> Result<Vec<u8>, MediaError> {
    if !(1..=100).contains(&quality) {
        return Err(encode_err("jpeg", format!("quality {quality} out of range 1..=100")));
    }
    let mut out = Vec::new();
    JpegEncoder::new_with_quality(&mut out, quality)
        .encode_image(img)
        .map_err(|e| encode_err("jpeg", e.to_string()))?;
    Ok(out)
}

/// Encode `img` as PNG.
pub fn encode_png(img: &RgbImage) -> Result<Vec<u8>, MediaError> {
    let mut out = Vec::new();
    PngEncoder::new(&mut out)
        .write_image(img.as_raw(), img.width(), img.height(), image::ExtendedColorType::Rgb8)
        .map_err(|e| encode_err("png", e.to_string()))?;
    Ok(out)
}

/// Decode JPEG or PNG bytes to RGB. The dimensions are read from the header and checked against
/// `limits.max_pixels` before decoding; the decoder also runs under matching allocation limits.
pub fn decode_still(bytes: &[u8], limits: &MediaLimits) -> Result<RgbImage, MediaError> {
    let invalid = |reason: String| MediaError::InvalidStill { reason };
    let reader = || -> Result<ImageReader<Cursor<&[u8]>>, MediaError> {
        let reader = ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| invalid(e.to_string()))?;
        match reader.format() {
            Some(ImageFormat::Jpeg | ImageFormat::Png) => Ok(reader),
            Some(other) => Err(invalid(format!("unsupported format {other:?}"))),
            None => Err(invalid("not a JPEG or PNG".into())),
        }
    };

    let (width, height) = reader()?.into_dimensions().map_err(|e| invalid(e.to_string()))?;
    let too_many = || MediaError::TooManyPixels { what: "still image".into(), width, height, limit: limits.max_pixels };
    if u64::from(width) * u64::from(height) > limits.max_pixels {
        return Err(too_many());
    }

    let mut decode_limits = image::Limits::default();
    decode_limits.max_image_width = Some(width);
    decode_limits.max_image_height = Some(height);
    // RGBA16 is the widest layout these decoders produce; allow it plus headroom for internals.
    decode_limits.max_alloc = Some(u64::from(width) * u64::from(height) * 8 + (64 << 20));
    let mut reader = reader()?;
    reader.limits(decode_limits);
    let img = reader.decode().map_err(|e| match e {
        image::ImageError::Limits(_) => too_many(),
        other => invalid(other.to_string()),
    })?;
    Ok(img.into_rgb8())
}

fn encode_err(target: &str, reason: String) -> MediaError {
    MediaError::Encode { target: target.into(), reason }
}
