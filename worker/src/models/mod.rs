//! `models` owns what turns inputs into pixels or embeddings, one file per model: the classical
//! video [`baseline`]s, MCVD's score network ([`mcvd`]) with its [`diffusion`] samplers and the
//! FIR resampling op it uses ([`upfirdn`]), the editor's [`clip`] with its image
//! [`preprocess`]ing, and Stable Diffusion for generated thumbnails ([`sd`]); the one seeded
//! weight initialiser they share ([`init`]).

pub mod baseline;
pub mod clip;
pub mod diffusion;
pub mod init;
pub mod mcvd;
pub mod preprocess;
pub mod sd;
pub mod upfirdn;

/// How results and logs name a checkpoint: `<name>@<12 hex digits of its weights' SHA-256>`.
/// The name is config.json's `_name_or_path` (what transformers and diffusers write, e.g.
/// `openai/clip-vit-base-patch32`) when it has one, else the directory's name; the digest tells
/// two checkpoints of one name apart (a fine-tune in a folder named like its base).
pub fn checkpoint_id(dir: &std::path::Path, weights: &std::path::Path) -> std::io::Result<String> {
    use sha2::Digest;
    use std::io::Read;
    let name = std::fs::read(dir.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v.get("_name_or_path").and_then(|n| n.as_str()).map(str::to_owned))
        .filter(|n| !n.is_empty() && !n.starts_with('/') && !n.contains(".."))
        .or_else(|| dir.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "checkpoint".into());
    let mut hasher = sha2::Sha256::new();
    let mut file = std::fs::File::open(weights)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let digest = hex::encode(hasher.finalize());
    Ok(format!("{name}@{}", &digest[..12]))
}

#[cfg(test)]
mod tests {
    #[test]
    fn checkpoints_are_named_by_their_config_and_their_weights() {
        let dir = tempfile::tempdir().unwrap();
        let ckpt = dir.path().join("clip");
        std::fs::create_dir_all(&ckpt).unwrap();
        std::fs::write(ckpt.join("w.safetensors"), b"weights one").unwrap();
        // No name in the config: the folder's.
        std::fs::write(ckpt.join("config.json"), b"{}").unwrap();
        let a = super::checkpoint_id(&ckpt, &ckpt.join("w.safetensors")).unwrap();
        assert!(a.starts_with("clip@") && a.len() == "clip@".len() + 12, "{a}");
        std::fs::write(ckpt.join("config.json"), br#"{"_name_or_path": "openai/clip-vit-base-patch32"}"#).unwrap();
        let b = super::checkpoint_id(&ckpt, &ckpt.join("w.safetensors")).unwrap();
        assert_eq!(b, format!("openai/clip-vit-base-patch32@{}", &a[5..]));
        // Other weights under the same name: another id.
        std::fs::write(ckpt.join("w.safetensors"), b"weights two").unwrap();
        assert_ne!(super::checkpoint_id(&ckpt, &ckpt.join("w.safetensors")).unwrap(), b);
    }
}
