//! [`S3Store`]: the fleet's object store over aws-sdk-s3. It owns the client's configuration
//! (endpoint, region and credentials from the standard AWS chain; path-style addressing and
//! checksums "when required" for self-hosted servers; explicit retries and timeouts), output
//! uploads (single `PutObject` up to a threshold, multipart above it, aborted on failure; SHA-256
//! computed while the file is read), input downloads streamed to a scratch file under a size
//! limit, and the mapping of SDK failures to [`StorageError`] (transient: retried on the ladder; permanent:
//! fail the job).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{BehaviorVersion, Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;
use protocol::MediaLocation;
use sha2::Digest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::warn;

use super::{ObjectMeta, StorageError, Store, StoredObject, sha256_hex};

/// S3's smallest part (every part but the last).
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// S3's largest part.
pub const MAX_PART_SIZE: u64 = 5 * 1024 * 1024 * 1024;
/// S3's largest number of parts in one upload.
pub const MAX_PARTS: u64 = 10_000;
/// Default [`S3Config::multipart_threshold`]: 16 MiB.
pub const DEFAULT_MULTIPART_THRESHOLD: u64 = 16 * 1024 * 1024;
/// Default [`S3Config::part_size`]: 8 MiB.
pub const DEFAULT_PART_SIZE: u64 = 8 * 1024 * 1024;
/// Parts of one multipart upload in flight at once (memory: this many parts).
pub const UPLOAD_CONCURRENCY: usize = 4;
/// Attempts per request, the first included, before a transient failure is returned.
pub const MAX_ATTEMPTS: u32 = 4;

/// Where the S3 store connects and how it uploads. Credentials are not here: they come from the
/// standard AWS chain (`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, profiles, web identity, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Config {
    /// Endpoint URL of a self-hosted server (`http://127.0.0.1:3900`); `None` uses AWS's, or
    /// `AWS_ENDPOINT_URL` from the environment.
    pub endpoint: Option<String>,
    /// Region; `None` takes it from the chain (`AWS_REGION`, profile).
    pub region: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`), which self-hosted servers usually need.
    pub force_path_style: bool,
    /// The bucket outputs are written to, under `{tenant}/{job_id}/`.
    pub output_bucket: String,
    /// Buckets every tenant may read inputs from, outside its own prefix.
    pub shared_input_buckets: Vec<String>,
    /// Files larger than this many bytes are uploaded in parts.
    pub multipart_threshold: u64,
    /// Bytes per part of a multipart upload (5 MiB to 5 GiB).
    pub part_size: u64,
}

impl S3Config {
    /// A configuration writing to `output_bucket` with the default endpoint chain, virtual-host
    /// addressing, no shared input buckets and the default multipart sizes.
    pub fn new(output_bucket: impl Into<String>) -> Self {
        S3Config {
            endpoint: None,
            region: None,
            force_path_style: false,
            output_bucket: output_bucket.into(),
            shared_input_buckets: Vec::new(),
            multipart_threshold: DEFAULT_MULTIPART_THRESHOLD,
            part_size: DEFAULT_PART_SIZE,
        }
    }

    fn check(&self) -> Result<(), StorageError> {
        protocol::media::check_bucket(&self.output_bucket).map_err(StorageError::Config)?;
        if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&self.part_size) {
            return Err(StorageError::Config(format!(
                "part_size must be {MIN_PART_SIZE} to {MAX_PART_SIZE} bytes, got {}",
                self.part_size
            )));
        }
        if self.multipart_threshold > MAX_PART_SIZE {
            return Err(StorageError::Config(format!(
                "multipart_threshold must be at most {MAX_PART_SIZE} bytes (S3's single PUT limit)"
            )));
        }
        Ok(())
    }
}

/// An S3 (or S3-compatible) object store.
#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
    cfg: Arc<S3Config>,
}

impl S3Store {
    /// Connects with credentials and defaults from the standard AWS chain.
    pub async fn connect(cfg: S3Config) -> Result<Self, StorageError> {
        Self::connect_with(cfg, aws_config::defaults(BehaviorVersion::latest())).await
    }

    /// Connects through a caller's config loader (with its own credentials provider, say);
    /// `cfg`'s endpoint and region, and this store's retry and timeout settings, override it.
    pub async fn connect_with(cfg: S3Config, mut loader: aws_config::ConfigLoader) -> Result<Self, StorageError> {
        cfg.check()?;
        if let Some(region) = &cfg.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(endpoint) = &cfg.endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        let shared = loader.load().await;
        if shared.region().is_none() {
            return Err(StorageError::Config("no region: set the region in the configuration or AWS_REGION".into()));
        }
        // Retries: the SDK's standard mode (exponential backoff with jitter) retries network
        // failures, timeouts, 5xx and throttling; 4xx refusals are returned at once.
        let retry = RetryConfig::standard()
            .with_max_attempts(MAX_ATTEMPTS)
            .with_initial_backoff(Duration::from_millis(200))
            .with_max_backoff(Duration::from_secs(5));
        // Per-attempt timeouts: connecting, and silence while reading a response. No total
        // deadline: a large part on a slow link is not an error while bytes flow.
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            .read_timeout(Duration::from_secs(60))
            .build();
        let conf = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(cfg.force_path_style)
            .retry_config(retry)
            .timeout_config(timeouts)
            // Self-hosted servers may refuse the SDK's default CRC32 / aws-chunked uploads.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .build();
        Ok(S3Store { client: Client::from_conf(conf), cfg: Arc::new(cfg) })
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &S3Config {
        &self.cfg
    }

    /// The SDK client (for tools and tests that need requests this store does not make).
    pub fn client(&self) -> &Client {
        &self.client
    }

    fn target(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.cfg.output_bucket)
    }

    async fn put_single(&self, key: &str, body: Bytes, meta: &ObjectMeta) -> Result<(), StorageError> {
        self.client
            .put_object()
            .bucket(&self.cfg.output_bucket)
            .key(key)
            .content_type(&meta.content_type)
            .set_metadata(Some(metadata(meta)))
            .content_length(body.len() as i64)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| remote("PutObject", self.target(key), e))?;
        Ok(())
    }

    /// Uploads `file` in parts, reading it once; returns its size and SHA-256.
    async fn put_multipart(
        &self,
        key: &str,
        file: &mut tokio::fs::File,
        meta: &ObjectMeta,
    ) -> Result<(u64, String), StorageError> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.cfg.output_bucket)
            .key(key)
            .content_type(&meta.content_type)
            .set_metadata(Some(metadata(meta)))
            .send()
            .await
            .map_err(|e| remote("CreateMultipartUpload", self.target(key), e))?;
        let upload_id = created
            .upload_id()
            .map(str::to_owned)
            .ok_or_else(|| remote_permanent("CreateMultipartUpload", self.target(key), "no upload id in the answer"))?;
        match self.upload_parts(key, &upload_id, file).await {
            Ok(done) => Ok(done),
            Err(e) => {
                // Best effort: a server that is down cannot abort either; its lifecycle rules
                // (or a later abort) reclaim the parts. No object was created.
                if let Err(abort) = self
                    .client
                    .abort_multipart_upload()
                    .bucket(&self.cfg.output_bucket)
                    .key(key)
                    .upload_id(&upload_id)
                    .send()
                    .await
                {
                    warn!(key, upload_id = %upload_id, error = %DisplayErrorContext(&abort), "multipart abort failed");
                }
                Err(e)
            }
        }
    }

    async fn upload_parts(
        &self,
        key: &str,
        upload_id: &str,
        file: &mut tokio::fs::File,
    ) -> Result<(u64, String), StorageError> {
        let mut hasher = sha2::Sha256::new();
        let mut total = 0u64;
        let mut parts = Vec::new();
        let mut in_flight = tokio::task::JoinSet::new();
        for part_number in 1.. {
            if part_number as u64 > MAX_PARTS {
                return Err(StorageError::Config(format!(
                    "{key} needs more than {MAX_PARTS} parts of {} bytes: raise part_size",
                    self.cfg.part_size
                )));
            }
            let mut chunk = Vec::with_capacity(self.cfg.part_size as usize);
            (&mut *file)
                .take(self.cfg.part_size)
                .read_to_end(&mut chunk)
                .await
                .map_err(|source| StorageError::Io { path: key.to_owned(), source })?;
            if chunk.is_empty() && part_number > 1 {
                break;
            }
            hasher.update(&chunk);
            total += chunk.len() as u64;
            let last = (chunk.len() as u64) < self.cfg.part_size;
            while in_flight.len() >= UPLOAD_CONCURRENCY {
                parts.push(joined(in_flight.join_next().await)?);
            }
            let request = self
                .client
                .upload_part()
                .bucket(&self.cfg.output_bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(part_number)
                .content_length(chunk.len() as i64)
                .body(ByteStream::from(chunk));
            let target = self.target(key);
            in_flight.spawn(async move {
                let out = request.send().await.map_err(|e| remote("UploadPart", target, e))?;
                Ok(CompletedPart::builder().part_number(part_number).set_e_tag(out.e_tag().map(str::to_owned)).build())
            });
            if last {
                break;
            }
        }
        while let Some(r) = in_flight.join_next().await {
            parts.push(joined(Some(r))?);
        }
        parts.sort_by_key(|p| p.part_number());
        self.client
            .complete_multipart_upload()
            .bucket(&self.cfg.output_bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            .send()
            .await
            .map_err(|e| remote("CompleteMultipartUpload", self.target(key), e))?;
        Ok((total, hex::encode(hasher.finalize())))
    }
}

fn joined(
    r: Option<Result<Result<CompletedPart, StorageError>, tokio::task::JoinError>>,
) -> Result<CompletedPart, StorageError> {
    match r {
        Some(Ok(part)) => part,
        Some(Err(e)) => Err(StorageError::Io { path: "<upload part>".into(), source: std::io::Error::other(e) }),
        None => unreachable!("joined only while parts are in flight"),
    }
}

fn check_key(key: &str) -> Result<(), StorageError> {
    protocol::media::check_key(key).map_err(|reason| StorageError::InvalidKey { key: key.to_owned(), reason })
}

/// Metadata travels as `x-amz-meta-{name}: {value}` headers: names are lowercase tokens,
/// values printable ASCII.
fn check_meta(meta: &ObjectMeta) -> Result<(), StorageError> {
    let bad =
        |name: &str, reason: &str| StorageError::InvalidMetadata { name: name.to_owned(), reason: reason.to_owned() };
    for (name, value) in &meta.entries {
        if name.is_empty()
            || !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        {
            return Err(bad(name, "names are a-z, 0-9, '-' and '_'"));
        }
        if !value.chars().all(|c| c == ' ' || c.is_ascii_graphic()) {
            return Err(bad(name, "values are printable ASCII"));
        }
    }
    if meta.content_type.is_empty() || !meta.content_type.chars().all(|c| c.is_ascii_graphic() || c == ' ') {
        return Err(bad("content-type", "must be a printable ASCII MIME type"));
    }
    Ok(())
}

fn metadata(meta: &ObjectMeta) -> HashMap<String, String> {
    meta.entries.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn remote_permanent(op: &'static str, target: String, message: &str) -> StorageError {
    StorageError::Remote { op, target, status: None, code: None, message: message.to_owned(), transient: false }
}

/// Maps an SDK failure (after the SDK's own retries) to a [`StorageError::Remote`]: network
/// failures, timeouts, unreadable answers, 5xx, 408 and 429 are transient; other 4xx and
/// requests that could not be built are not.
fn remote<E>(op: &'static str, target: String, err: SdkError<E>) -> StorageError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let (status, transient) = match &err {
        SdkError::ServiceError(e) => {
            let s = e.raw().status().as_u16();
            (Some(s), s >= 500 || s == 408 || s == 429)
        }
        SdkError::DispatchFailure(e) => (None, !e.is_user()),
        SdkError::TimeoutError(_) | SdkError::ResponseError(_) => (None, true),
        SdkError::ConstructionFailure(_) => (None, false),
        _ => (None, true),
    };
    StorageError::Remote {
        op,
        target,
        status,
        code: err.code().map(str::to_owned),
        message: DisplayErrorContext(&err).to_string(),
        transient,
    }
}

/// True when an S3 failure means "no such object/bucket".
fn is_missing<E: ProvideErrorMetadata>(err: &SdkError<E>) -> bool {
    match err {
        SdkError::ServiceError(e) => {
            e.raw().status().as_u16() == 404 || matches!(err.code(), Some("NoSuchKey" | "NoSuchBucket" | "NotFound"))
        }
        _ => false,
    }
}

fn io(path: &Path, source: std::io::Error) -> StorageError {
    StorageError::Io { path: path.display().to_string(), source }
}

#[async_trait]
impl Store for S3Store {
    /// Streams `s3://bucket/key` to a new file in `scratch`. The size limit is checked against
    /// the answer's `Content-Length` before any byte is written and again while streaming; on
    /// any failure the partial file is removed.
    async fn fetch(&self, location: &MediaLocation, scratch: &Path, max_bytes: u64) -> Result<PathBuf, StorageError> {
        let (bucket, key) = match location {
            MediaLocation::S3 { bucket, key } => (bucket, key),
            MediaLocation::Local(path) => {
                return Err(StorageError::Unsupported(format!(
                    "file://{} (local files are read only in the embedded mode)",
                    path.display()
                )));
            }
        };
        check_key(key)?;
        let uri = format!("s3://{bucket}/{key}");
        let out = match self.client.get_object().bucket(bucket).key(key).send().await {
            Ok(out) => out,
            Err(e) if is_missing(&e) => return Err(StorageError::NotFound(uri)),
            Err(e) => return Err(remote("GetObject", uri, e)),
        };
        if let Some(len) = out.content_length().and_then(|l| u64::try_from(l).ok())
            && len > max_bytes
        {
            return Err(StorageError::TooLarge { what: uri, size: len, limit: max_bytes });
        }
        let ext =
            Path::new(key.as_str()).extension().and_then(|e| e.to_str()).map(|e| format!(".{e}")).unwrap_or_default();
        // Dropped (and so deleted) on every early return below.
        let tmp =
            tempfile::Builder::new().prefix("input-").suffix(&ext).tempfile_in(scratch).map_err(|s| io(scratch, s))?;
        let mut file = tokio::fs::File::from_std(tmp.reopen().map_err(|s| io(tmp.path(), s))?);
        let mut body = out.body;
        let mut written = 0u64;
        while let Some(chunk) = body.try_next().await.map_err(|e| StorageError::Remote {
            op: "GetObject",
            target: uri.clone(),
            status: None,
            code: None,
            message: DisplayErrorContext(&e).to_string(),
            transient: true,
        })? {
            written += chunk.len() as u64;
            if written > max_bytes {
                return Err(StorageError::TooLarge { what: uri, size: written, limit: max_bytes });
            }
            file.write_all(&chunk).await.map_err(|s| io(tmp.path(), s))?;
        }
        file.flush().await.map_err(|s| io(tmp.path(), s))?;
        drop(file);
        let (_, path) = tmp.keep().map_err(|e| io(scratch, e.error))?;
        Ok(path)
    }

    async fn put_file(&self, key: &str, file: &Path, meta: &ObjectMeta) -> Result<StoredObject, StorageError> {
        check_key(key)?;
        check_meta(meta)?;
        let mut f = tokio::fs::File::open(file).await.map_err(|s| io(file, s))?;
        let len = f.metadata().await.map_err(|s| io(file, s))?.len();
        let (bytes, sha256) = if len > self.cfg.multipart_threshold {
            self.put_multipart(key, &mut f, meta).await?
        } else {
            let mut buf = Vec::with_capacity(len as usize);
            f.read_to_end(&mut buf).await.map_err(|s| io(file, s))?;
            let sha = sha256_hex(&buf);
            let n = buf.len() as u64;
            self.put_single(key, Bytes::from(buf), meta).await?;
            (n, sha)
        };
        Ok(StoredObject { uri: self.target(key), bytes, sha256 })
    }

    /// One `PutObject` whatever the size (results and small sidecars).
    async fn put_bytes(&self, key: &str, bytes: &[u8], meta: &ObjectMeta) -> Result<StoredObject, StorageError> {
        check_key(key)?;
        check_meta(meta)?;
        let sha256 = sha256_hex(bytes);
        self.put_single(key, Bytes::copy_from_slice(bytes), meta).await?;
        Ok(StoredObject { uri: self.target(key), bytes: bytes.len() as u64, sha256 })
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        check_key(key)?;
        let out = match self.client.get_object().bucket(&self.cfg.output_bucket).key(key).send().await {
            Ok(out) => out,
            Err(e) if matches!(&e, SdkError::ServiceError(s) if s.err().is_no_such_key()) => {
                return Ok(None);
            }
            Err(e) => return Err(remote("GetObject", self.target(key), e)),
        };
        let data = out.body.collect().await.map_err(|e| StorageError::Remote {
            op: "GetObject",
            target: self.target(key),
            status: None,
            code: None,
            message: DisplayErrorContext(&e).to_string(),
            transient: true,
        })?;
        Ok(Some(data.into_bytes().to_vec()))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let out = self
                .client
                .list_objects_v2()
                .bucket(&self.cfg.output_bucket)
                .prefix(prefix)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| remote("ListObjectsV2", self.target(prefix), e))?;
            keys.extend(out.contents().iter().filter_map(|o| o.key().map(str::to_owned)));
            match out.next_continuation_token() {
                Some(t) if out.is_truncated() == Some(true) => token = Some(t.to_owned()),
                _ => break,
            }
        }
        keys.sort();
        Ok(keys)
    }

    fn key_of(&self, uri: &str) -> Option<String> {
        let key = uri.strip_prefix("s3://")?.strip_prefix(self.cfg.output_bucket.as_str())?.strip_prefix('/')?;
        check_key(key).ok().map(|_| key.to_owned())
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        check_key(key)?;
        match self.client.delete_object().bucket(&self.cfg.output_bucket).key(key).send().await {
            Ok(_) => Ok(()),
            Err(e) if is_missing(&e) => Ok(()),
            Err(e) => Err(remote("DeleteObject", self.target(key), e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_is_checked() {
        assert!(S3Config::new("outputs").check().is_ok());
        let mut c = S3Config::new("outputs");
        c.part_size = 1024;
        assert!(matches!(c.check(), Err(StorageError::Config(_))));
        let c = S3Config::new("Bad_Bucket");
        assert!(matches!(c.check(), Err(StorageError::Config(_))));
        let mut c = S3Config::new("outputs");
        c.multipart_threshold = MAX_PART_SIZE + 1;
        assert!(c.check().is_err());
    }

    #[test]
    fn metadata_must_fit_in_headers() {
        let mut meta = ObjectMeta { content_type: "video/mp4".into(), ..Default::default() };
        meta.entries.insert("ai-generated".into(), "true".into());
        meta.entries.insert("models".into(), "clip-vit-b32,sd-turbo".into());
        assert!(check_meta(&meta).is_ok());
        let mut bad = meta.clone();
        bad.entries.insert("Upper".into(), "x".into());
        assert!(matches!(check_meta(&bad), Err(StorageError::InvalidMetadata { .. })));
        let mut bad = meta.clone();
        bad.entries.insert("ok".into(), "line\nbreak".into());
        assert!(check_meta(&bad).is_err());
        let mut bad = meta.clone();
        bad.entries.insert("ok".into(), "café".into());
        assert!(check_meta(&bad).is_err());
        let mut bad = meta;
        bad.content_type = String::new();
        assert!(check_meta(&bad).is_err());
    }
}
