//! `storage` owns where job inputs come from and outputs go: the [`Store`] trait, object keys
//! under `{tenant}/{job_id}/` ([`output_key`]), object metadata, and the local-directory store
//! of the embedded mode ([`local::LocalStore`]). Writes are durable when they return.

pub mod local;

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
    /// A key outside the job's tenant prefix and not in a shared input bucket.
    #[error("tenant {tenant} may not read {uri}")]
    Forbidden {
        /// The job's tenant.
        tenant: String,
        /// What it tried to read.
        uri: String,
    },
    /// A location this store cannot read (an `s3://` input on the local store, say).
    #[error("this store cannot read {0}")]
    Unsupported(String),
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
    /// True when a later attempt may succeed (the job's message should be requeued).
    pub fn is_transient(&self) -> bool {
        matches!(self, StorageError::Io { .. })
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
}

/// The key of a job's output `name`: `{tenant}/{job_id}/{name}`, checked.
pub fn output_key(tenant: &TenantId, job_id: &JobId, name: &str) -> Result<String, StorageError> {
    let key = format!("{tenant}/{job_id}/{name}");
    protocol::media::check_key(&key).map_err(|reason| StorageError::InvalidKey { key: key.clone(), reason })?;
    Ok(key)
}

/// Tenant isolation for inputs: a job reads `s3://bucket/{tenant}/…` only, unless the bucket is
/// one of the configured shared input buckets.
pub fn check_input_access(tenant: &TenantId, location: &MediaLocation, shared: &[String]) -> Result<(), StorageError> {
    match location {
        MediaLocation::S3 { bucket, key } => {
            if shared.iter().any(|b| b == bucket) || key.starts_with(&format!("{tenant}/")) {
                Ok(())
            } else {
                Err(StorageError::Forbidden { tenant: tenant.to_string(), uri: format!("s3://{bucket}/{key}") })
            }
        }
        MediaLocation::Local(path) => {
            Err(StorageError::Forbidden { tenant: tenant.to_string(), uri: format!("file://{}", path.display()) })
        }
    }
}

/// SHA-256 of bytes, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
