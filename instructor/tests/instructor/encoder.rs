//! The text encoder against sentence-transformers: token ids identical and cosine ≥ 0.9999 per
//! sentence on `fixtures/minilm.json` (made by `fixtures/minilm.py` with sentence-transformers on
//! the same all-MiniLM-L6-v2 directory), batched and one by one; and clear errors for a missing
//! or corrupt model directory.

use std::path::Path;

use candle_core::Device;
use instructor::encoder::cosine;
use instructor::{EncoderError, TextEncoder};
use serde::Deserialize;

use super::{load, model_dir};

#[derive(Deserialize)]
struct Fixture {
    max_seq_length: usize,
    dim: usize,
    items: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    text: String,
    input_ids: Vec<u32>,
    embedding: Vec<f32>,
}

fn fixture() -> Fixture {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/minilm.json");
    serde_json::from_slice(&std::fs::read(&path).expect("fixture")).expect("fixture parses")
}

#[test]
fn token_ids_and_vectors_match_sentence_transformers() {
    let enc = load();
    let fx = fixture();
    assert_eq!(enc.dim(), fx.dim);
    assert_eq!(enc.max_tokens(), fx.max_seq_length);
    assert!(fx.items.len() >= 50, "the fixture holds {} sentences", fx.items.len());
    assert!(fx.items.iter().any(|i| i.input_ids.len() == fx.max_seq_length), "some fixture sentence must be truncated");
    for it in &fx.items {
        assert_eq!(enc.token_ids(&it.text).expect("tokenise"), it.input_ids, "token ids of {:?}", it.text);
    }
    let texts: Vec<&str> = fx.items.iter().map(|i| i.text.as_str()).collect();
    // Batched (length-sorted, padded) and one at a time must both match.
    let batched = enc.encode(&texts).expect("encode");
    let single = TextEncoder::load(&model_dir(), &Device::Cpu).expect("load").with_batch(1);
    let alone = single.encode(&texts).expect("encode");
    for ((it, b), a) in fx.items.iter().zip(&batched).zip(&alone) {
        for (how, v) in [("batched", b), ("alone", a)] {
            assert_eq!(v.len(), fx.dim);
            let c = cosine(v, &it.embedding);
            assert!(c >= 0.9999, "{how}: cosine {c} for {:?}", it.text);
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-4, "{how}: norm {norm} for {:?}", it.text);
        }
    }
}

#[test]
fn a_missing_or_corrupt_model_is_a_clear_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let tmp = tmp.path();
    // Empty directory: config.json is named.
    let err = TextEncoder::load(tmp, &Device::Cpu).err().expect("an empty dir fails");
    assert!(matches!(err, EncoderError::Missing { file: "config.json", .. }), "{err}");
    // Everything but the weights.
    let src = model_dir();
    for f in ["config.json", "sentence_bert_config.json", "modules.json", "tokenizer.json"] {
        std::fs::copy(src.join(f), tmp.join(f)).expect("copy");
    }
    std::fs::create_dir_all(tmp.join("1_Pooling")).expect("mkdir");
    std::fs::copy(src.join("1_Pooling/config.json"), tmp.join("1_Pooling/config.json")).expect("copy");
    let err = TextEncoder::load(tmp, &Device::Cpu).err().expect("no weights fails");
    assert!(matches!(err, EncoderError::Missing { file: "model.safetensors", .. }), "{err}");
    // Truncated weights.
    let bytes = std::fs::read(src.join("model.safetensors")).expect("read");
    std::fs::write(tmp.join("model.safetensors"), &bytes[..bytes.len() / 2]).expect("write");
    let err = TextEncoder::load(tmp, &Device::Cpu).err().expect("truncated weights fail");
    assert!(matches!(err, EncoderError::Weights { .. }), "{err}");
    // A config that is not JSON.
    std::fs::write(tmp.join("config.json"), b"{ not json").expect("write");
    let err = TextEncoder::load(tmp, &Device::Cpu).err().expect("bad config fails");
    assert!(matches!(err, EncoderError::Json { .. }), "{err}");
    assert!(err.to_string().contains("config.json"), "{err}");
}
