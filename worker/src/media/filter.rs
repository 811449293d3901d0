//! The frame-filter hook: a [`FrameFilter`] is applied to every RGB frame after the final
//! scaling and before encoding (the watermark uses it). [`SharedFilter`] carries one inside
//! [`super::EncodeOptions`].

use std::fmt;
use std::sync::Arc;

use image::RgbImage;

/// Changes a frame in place just before it is encoded.
pub trait FrameFilter: Send + Sync {
    /// Filters one frame (its size must not change).
    fn apply(&self, frame: &mut RgbImage);
}

/// A shared filter; equal when it is the same filter.
#[derive(Clone)]
pub struct SharedFilter(pub Arc<dyn FrameFilter>);

impl fmt::Debug for SharedFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SharedFilter(..)")
    }
}

impl PartialEq for SharedFilter {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}
