//! `storage` owns where job inputs come from and outputs go: the [`Store`] trait, object keys
//! under `{tenant}/{job_id}/` ([`output_key`]), object metadata, and the local-directory store
//! of the embedded mode ([`local::LocalStore`]), the S3 store of the fleet ([`s3::S3Store`]), and
//! tenant isolation of inputs ([`check_input_access`], and [`check_local_input_access`] for
//! local files). Writes are durable when they return.

pub mod local;
pub mod s3;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use protocol::{JobId, MediaLocation, TenantId};

/// The name of a job's commit marker, written last.
pub const RESULT_FILE: &str = "result.json";

/// Storage failures.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A key that could escape its prefix or carries control characters.
    #[error("invalid object key {key:?}: {reason}")]
    InvalidKey {
        /// The key.
        key: String,
        /// Why.
        reason: String,
    },
    /// The input does not exist.
    #[error("input not found: {0}")]
    NotFound(String),
    /// The input is over the size limit.
    #[error("input {what} is {size} bytes, over the limit of {limit}")]
    TooLarge {
        /// Which input.
        what: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A location this store cannot read (an `s3://` input on the local store, say).
    #[error("this store cannot read {0}")]
    Unsupported(String),
    /// The input lies outside the job's tenant prefix and outside every shared input bucket.
    #[error("tenant {tenant} may not read {location}")]
    Forbidden {
        /// The job's tenant.
        tenant: String,
        /// The refused location (`s3://bucket/key`).
        location: String,
    },
    /// Object metadata that cannot travel as an HTTP header.
    #[error("invalid metadata entry {name:?}: {reason}")]
    InvalidMetadata {
        /// The entry's name.
        name: String,
        /// Why.
        reason: String,
    },
    /// The store's configuration is unusable (no region, a part size S3 refuses, ...).
    #[error("storage configuration: {0}")]
    Config(String),
    /// The object store refused a request or could not be reached.
    #[error("object store {op} {target}: {message}")]
    Remote {
        /// The operation (`PutObject`, `UploadPart`, ...).
        op: &'static str,
        /// The object (`s3://bucket/key`).
        target: String,
        /// The HTTP status, when the server answered.
        status: Option<u16>,
        /// The S3 error code (`AccessDenied`, `SlowDown`, ...), when the server sent one.
        code: Option<String>,
        /// What went wrong, with its causes.
        message: String,
        /// True for network failures, timeouts, 5xx and throttling; false for 4xx refusals.
        transient: bool,
    },
    /// An I/O failure; worth retrying.
    #[error("storage I/O on {path}: {source}")]
    Io {
        /// The file or object.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl StorageError {
    /// True when a later attempt may succeed (the task goes up the retry ladder).
    pub fn is_transient(&self) -> bool {
        matches!(self, StorageError::Io { .. } | StorageError::Remote { transient: true, .. })
    }
}

/// Metadata stored with an output (`x-amz-meta-*` on S3, a sidecar on disk).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectMeta {
    /// MIME type.
    pub content_type: String,
    /// Free-form entries (ai-generated, generator, model ids, watermark, job id).
    pub entries: BTreeMap<String, String>,
}

/// What a put stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    /// Where it is (`file:///…` or `s3://bucket/key`).
    pub uri: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// SHA-256 of its bytes, lowercase hex.
    pub sha256: String,
}

/// Where inputs are read from and outputs written to.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Makes an input readable as a local file (downloading it into `scratch` when remote) and
    /// returns its path. Refuses inputs over `max_bytes`.
    async fn fetch(&self, location: &MediaLocation, scratch: &Path, max_bytes: u64) -> Result<PathBuf, StorageError>;
    /// Stores a local file under `key`; durable when it returns.
    async fn put_file(&self, key: &str, file: &Path, meta: &ObjectMeta) -> Result<StoredObject, StorageError>;
    /// Stores bytes under `key`; durable when it returns.
    async fn put_bytes(&self, key: &str, bytes: &[u8], meta: &ObjectMeta) -> Result<StoredObject, StorageError>;
    /// Reads an object, `None` when absent.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError>;
    /// Removes an object (and its metadata); removing an absent one is not an error.
    async fn delete(&self, key: &str) -> Result<(), StorageError>;
    /// The keys under `prefix` (objects only, not their metadata), sorted.
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError>;
    /// The key of an object this store wrote, from the URI its put returned; `None` for a URI
    /// that is not this store's.
    fn key_of(&self, uri: &str) -> Option<String>;
    /// The directory outputs live under, for stores on the local file system (so that a local
    /// input inside it can be checked against the job's tenant, [`check_local_input_access`]).
    fn local_root(&self) -> Option<&Path> {
        None
    }
}

/// The key of a job's output `name`: `{tenant}/{job_id}/{name}`, checked.
pub fn output_key(tenant: &TenantId, job_id: &JobId, name: &str) -> Result<String, StorageError> {
    let key = format!("{tenant}/{job_id}/{name}");
    protocol::media::check_key(&key).map_err(|reason| StorageError::InvalidKey { key: key.clone(), reason })?;
    Ok(key)
}

/// Tenant isolation of inputs: a job may read `s3://` objects only under its own `{tenant}/`
/// prefix, unless the bucket is one of `shared_input_buckets` (read-only libraries every tenant
/// may use). Keys with traversal or control characters are refused first. Local files are the
/// embedded mode's, which has a single tenant, and pass.
pub fn check_input_access(
    tenant: &TenantId,
    location: &MediaLocation,
    shared_input_buckets: &[String],
) -> Result<(), StorageError> {
    let MediaLocation::S3 { bucket, key } = location else {
        return Ok(());
    };
    protocol::media::check_key(key).map_err(|reason| StorageError::InvalidKey { key: key.clone(), reason })?;
    if shared_input_buckets.iter().any(|b| b == bucket) {
        return Ok(());
    }
    match key.strip_prefix(tenant.0.as_str()) {
        Some(rest) if rest.starts_with('/') => Ok(()),
        _ => Err(StorageError::Forbidden { tenant: tenant.to_string(), location: format!("s3://{bucket}/{key}") }),
    }
}

/// Tenant isolation of local inputs (the embedded mode): a `file://` input inside the local
/// store's `root` must lie under the job's own `{tenant}/` directory there, so one tenant's
/// job cannot read another tenant's outputs (symbolic links and `..` are resolved first).
/// Files outside the store pass; a missing file is left for the fetch to report.
pub fn check_local_input_access(tenant: &TenantId, path: &Path, root: &Path) -> Result<(), StorageError> {
    let (Ok(path), Ok(root)) = (path.canonicalize(), root.canonicalize()) else {
        return Ok(());
    };
    if path.starts_with(&root) && !path.starts_with(root.join(&tenant.0)) {
        return Err(StorageError::Forbidden {
            tenant: tenant.to_string(),
            location: format!("file://{}", path.display()),
        });
    }
    Ok(())
}

/// SHA-256 of bytes, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3(bucket: &str, key: &str) -> MediaLocation {
        MediaLocation::S3 { bucket: bucket.into(), key: key.into() }
    }

    #[test]
    fn inputs_stay_under_the_tenant_prefix() {
        let t = TenantId("acme".into());
        let shared = vec!["stock-footage".to_string()];
        assert!(check_input_access(&t, &s3("media", "acme/in/a.mp4"), &shared).is_ok());
        for key in ["other/in/a.mp4", "acme-evil/a.mp4", "acmea.mp4", "acme", "in/acme/a.mp4"] {
            assert!(
                matches!(check_input_access(&t, &s3("media", key), &shared), Err(StorageError::Forbidden { .. })),
                "{key}"
            );
        }
        let err = check_input_access(&t, &s3("media", "other/a.mp4"), &shared).unwrap_err();
        assert!(!err.is_transient());
        assert!(err.to_string().contains("s3://media/other/a.mp4"), "{err}");
        // A job that asks for another tenant's input fails as invalid; it is not requeued.
        let failed = crate::pipeline::PipelineError::from(err);
        assert_eq!(failed.code(), protocol::ErrorCode::InvalidJob);
        assert!(!failed.is_transient());
    }

    #[test]
    fn shared_buckets_are_readable_by_every_tenant() {
        let t = TenantId("acme".into());
        let shared = vec!["stock-footage".to_string()];
        assert!(check_input_access(&t, &s3("stock-footage", "cats/1.mp4"), &shared).is_ok());
        // The same key in a bucket that is not shared is refused.
        assert!(check_input_access(&t, &s3("stock-footage2", "cats/1.mp4"), &shared).is_err());
        assert!(check_input_access(&t, &s3("stock-footage", "cats/1.mp4"), &[]).is_err());
    }

    #[test]
    fn traversal_and_control_characters_are_refused_even_in_shared_buckets() {
        let t = TenantId("acme".into());
        let shared = vec!["stock-footage".to_string()];
        for (bucket, key) in [
            ("media", "acme/../other/a.mp4"),
            ("media", "acme/./a.mp4"),
            ("media", "/acme/a.mp4"),
            ("media", "acme//a.mp4"),
            ("media", "acme/a\u{0}.mp4"),
            ("stock-footage", "../x"),
            ("stock-footage", "a\\b"),
        ] {
            assert!(
                matches!(check_input_access(&t, &s3(bucket, key), &shared), Err(StorageError::InvalidKey { .. })),
                "{bucket}/{key}"
            );
        }
    }

    #[test]
    fn local_inputs_pass_and_outputs_are_checked() {
        let t = TenantId("acme".into());
        let local = MediaLocation::Local("/tmp/in.mp4".into());
        assert!(check_input_access(&t, &local, &[]).is_ok());
        let j = JobId("j1".into());
        assert_eq!(output_key(&t, &j, "clip-0.mp4").unwrap(), "acme/j1/clip-0.mp4");
        assert!(output_key(&t, &j, "../../other/x").is_err());
    }

    #[test]
    fn local_inputs_inside_the_store_stay_under_the_tenant() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        for f in ["acme/j1/clip-01.mp4", "other/j2/clip-01.mp4"] {
            std::fs::create_dir_all(root.join(f).parent().unwrap()).unwrap();
            std::fs::write(root.join(f), b"x").unwrap();
        }
        std::fs::write(dir.path().join("in.mp4"), b"x").unwrap();
        let t = TenantId("acme".into());
        assert!(check_local_input_access(&t, &root.join("acme/j1/clip-01.mp4"), &root).is_ok());
        assert!(check_local_input_access(&t, &dir.path().join("in.mp4"), &root).is_ok());
        for p in [root.join("other/j2/clip-01.mp4"), root.join("acme/../other/j2/clip-01.mp4")] {
            let err = check_local_input_access(&t, &p, &root).unwrap_err();
            assert!(matches!(err, StorageError::Forbidden { .. }), "{}", p.display());
        }
        // Through a symbolic link placed outside the store.
        std::os::unix::fs::symlink(root.join("other/j2/clip-01.mp4"), dir.path().join("link.mp4")).unwrap();
        assert!(check_local_input_access(&t, &dir.path().join("link.mp4"), &root).is_err());
        // A tenant whose name is a prefix of another's gets no access to it.
        let short = TenantId("oth".into());
        assert!(check_local_input_access(&short, &root.join("other/j2/clip-01.mp4"), &root).is_err());
    }

    #[test]
    fn another_tenants_outputs_are_not_inputs() {
        // Outputs live at {tenant}/{job_id}/...; as an s3:// input of another tenant's job they
        // are refused like any foreign key.
        let t2 = TenantId("t2".into());
        let err = check_input_access(&t2, &s3("outputs", "t1/job-1/clip-01.mp4"), &[]).unwrap_err();
        assert!(matches!(err, StorageError::Forbidden { .. }));
        assert!(output_key(&t2, &JobId("x".into()), "../../t1/job-1/clip-01.mp4").is_err());
    }

    #[test]
    fn transient_errors_are_the_retryable_ones() {
        let remote = |status, transient| StorageError::Remote {
            op: "PutObject",
            target: "s3://b/k".into(),
            status,
            code: None,
            message: "x".into(),
            transient,
        };
        assert!(remote(Some(503), true).is_transient());
        assert!(!remote(Some(403), false).is_transient());
        assert!(!StorageError::NotFound("x".into()).is_transient());
        assert!(!StorageError::Config("x".into()).is_transient());
    }
}
