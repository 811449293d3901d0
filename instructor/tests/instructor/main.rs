//! The instructor's tests, one binary (ripgrep's layout): the text encoder against
//! sentence-transformers ([`encoder`]), and the reading and decision against the labelled test
//! splits and their baselines ([`reading`]).

use std::path::PathBuf;

use candle_core::Device;
use instructor::TextEncoder;

mod encoder;
mod reading;

/// The model directory: `$REELFORGE_MINILM`, else where `deploy/scripts/lib.sh` puts it.
fn model_dir() -> PathBuf {
    std::env::var_os("REELFORGE_MINILM").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var("HOME").expect("HOME")).join(".cache/reelforge/models/all-MiniLM-L6-v2")
    })
}

/// all-MiniLM-L6-v2, loaded; a missing model fails the test with the way to fetch it.
fn load() -> TextEncoder {
    TextEncoder::load(&model_dir(), &Device::Cpu).unwrap_or_else(|e| {
        panic!("{e}\n(the test command fetches the model: source deploy/scripts/lib.sh && ensure_minilm)")
    })
}
