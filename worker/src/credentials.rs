//! `credentials` owns C2PA content credentials: every output (MP4 clip or video, JPEG
//! thumbnail) gets a C2PA manifest, signed with the operator's certificate chain and private key
//! (`--c2pa-cert`, `--c2pa-key`), that says it was made by reelforge with a trained algorithmic
//! model (IPTC digital source type) and carries the watermark payload. Signing runs after the
//! safety check and before upload, through the c2pa crate with its pure-Rust crypto.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use c2pa::{Builder, Context, SigningAlg};
use protocol::OutputKind;

use crate::pipeline::Artifact;

/// IPTC digital source type of wholly generated media (the creator, generated thumbnails).
pub const TRAINED_ALGORITHMIC: &str = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia";
/// IPTC digital source type of media edited with a trained model (the editor's clips and
/// selected thumbnails: the user's footage, cut, re-encoded and watermarked).
pub const COMPOSITE_TRAINED: &str =
    "http://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia";

/// Why credentials could not be set up or attached.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// The certificate or key file could not be read.
    #[error("{path}: {msg}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        msg: String,
    },
    /// An unknown signing algorithm name.
    #[error("unknown C2PA signing algorithm {0:?} (es256, es384, es512, ps256, ps384, ps512, ed25519)")]
    Algorithm(String),
    /// The c2pa crate refused.
    #[error("C2PA: {0}")]
    C2pa(#[from] c2pa::Error),
    /// A manifest signed at set-up did not verify (the key does not match the certificate, or
    /// the certificate is not a C2PA signing certificate).
    #[error("C2PA self-test: a test manifest did not verify: {0}")]
    SelfTest(String),
}

/// A configured C2PA signer (keys parsed once, at start).
pub struct ContentCredentials {
    signer: c2pa::BoxedSigner,
    alg: SigningAlg,
}

impl std::fmt::Debug for ContentCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContentCredentials").field("alg", &self.alg).finish_non_exhaustive()
    }
}

impl ContentCredentials {
    /// Reads a PEM certificate chain (signer first) and a PEM (PKCS#8) private key; `alg` is
    /// `es256` and friends. A small test image is signed and verified here, so a key that does
    /// not match its certificate stops the worker at start, not every job later.
    pub fn from_files(cert: &Path, key: &Path, alg: &str) -> Result<Self, CredentialsError> {
        let read =
            |p: &Path| std::fs::read(p).map_err(|e| CredentialsError::File { path: p.into(), msg: e.to_string() });
        let alg = alg.parse::<SigningAlg>().map_err(|_| CredentialsError::Algorithm(alg.into()))?;
        let signer = c2pa::create_signer::from_keys(&read(cert)?, &read(key)?, alg, None)?;
        let this = ContentCredentials { signer, alg };
        this.self_test()?;
        Ok(this)
    }

    fn self_test(&self) -> Result<(), CredentialsError> {
        let img = image::RgbImage::from_fn(16, 16, |x, y| image::Rgb([(x * 16) as u8, (y * 16) as u8, 128]));
        let jpeg = crate::media::encode_jpeg(&img, 90).map_err(|e| CredentialsError::SelfTest(e.to_string()))?;
        let definition = serde_json::json!({
            "claim_generator_info": [{ "name": "reelforge" }],
            "title": "self-test",
            "assertions": [{ "label": "c2pa.actions", "data": { "actions": [{
                "action": "c2pa.created", "digitalSourceType": TRAINED_ALGORITHMIC }]}}],
        });
        let mut builder = Builder::from_context(Context::new()).with_definition(definition)?;
        let (mut src, mut dst) = (Cursor::new(jpeg), Cursor::new(Vec::new()));
        builder.sign(self.signer.as_ref(), "image/jpeg", &mut src, &mut dst)?;
        dst.set_position(0);
        let reader = c2pa::Reader::from_context(Context::new()).with_stream("image/jpeg", dst)?;
        // The worker need not trust its own certificate (verifiers bring their trust lists):
        // every failure but "untrusted" means the key, the certificate or the manifest is bad.
        let failures: Vec<String> = reader
            .validation_status()
            .unwrap_or_default()
            .iter()
            .filter(|s| matches!(s.kind(), c2pa::status_tracker::LogKind::Failure))
            .map(|s| s.code().to_owned())
            .filter(|c| c != "signingCredential.untrusted")
            .collect();
        if failures.is_empty() { Ok(()) } else { Err(CredentialsError::SelfTest(failures.join(", "))) }
    }

    /// Embeds a signed manifest into `artifact`'s file in place. `generator` names the model
    /// role (`reelforge-editor`, `reelforge-creator`), `generated` says whether the pixels are
    /// wholly synthetic, `watermark` is the payload's hex.
    pub fn attach(
        &self,
        artifact: &Artifact,
        generator: &str,
        generated: bool,
        watermark: Option<&str>,
    ) -> Result<(), CredentialsError> {
        let format = match artifact.kind {
            OutputKind::Thumbnail => "image/jpeg",
            OutputKind::Clip | OutputKind::Video => "video/mp4",
        };
        let source_type = if generated { TRAINED_ALGORITHMIC } else { COMPOSITE_TRAINED };
        let mut assertions = vec![serde_json::json!({
            "label": "c2pa.actions",
            "data": { "actions": [{
                "action": "c2pa.created",
                "digitalSourceType": source_type,
                "softwareAgent": { "name": generator, "version": env!("CARGO_PKG_VERSION") },
            }]},
        })];
        if let Some(w) = watermark {
            assertions.push(serde_json::json!({ "label": "org.reelforge.watermark", "data": { "payload": w } }));
        }
        let definition = serde_json::json!({
            "claim_generator_info": [{ "name": "reelforge", "version": env!("CARGO_PKG_VERSION") }],
            "title": artifact.name,
            "format": format,
            "assertions": assertions,
        });
        let mut builder = Builder::from_context(Context::new()).with_definition(definition)?;
        let signed = signed_path(&artifact.path);
        let _ = std::fs::remove_file(&signed);
        builder.sign_file(self.signer.as_ref(), &artifact.path, &signed)?;
        std::fs::rename(&signed, &artifact.path)
            .map_err(|e| CredentialsError::File { path: artifact.path.clone(), msg: e.to_string() })?;
        Ok(())
    }
}

fn signed_path(path: &Path) -> PathBuf {
    let ext = path.extension().map(|e| e.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_extension(format!("c2pa.{ext}"))
}
