//! Media references in jobs: [`MediaUri`] (as written on the wire) and [`MediaLocation`] (parsed
//! and checked). `s3://bucket/key` everywhere; `file:///absolute/path` only where the
//! [`crate::ValidationContext`] allows local media (the embedded mode).

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::ValidationError;
use crate::limits::{MAX_KEY_LEN, MAX_URI_LEN};

/// A media reference as written in a job: `s3://bucket/key` or (embedded mode) `file:///path`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
#[schemars(extend("pattern" = r"^(s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/.+|file:///.+)$"))]
pub struct MediaUri(pub String);

/// A parsed, checked media reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaLocation {
    /// An object in an S3 bucket.
    S3 {
        /// The bucket name (S3 naming rules).
        bucket: String,
        /// The object key: relative, no `..` segment, no control characters.
        key: String,
    },
    /// A file on the local disk (embedded mode only).
    Local(PathBuf),
}

impl MediaUri {
    /// Parses and checks the reference. `allow_local` admits `file:///` URIs.
    pub fn parse(&self, path: &str, allow_local: bool) -> Result<MediaLocation, ValidationError> {
        let s = &self.0;
        if s.len() > MAX_URI_LEN {
            return Err(ValidationError::new(
                path,
                format!("URI is {} bytes, over the limit of {MAX_URI_LEN}", s.len()),
            ));
        }
        if s.chars().any(char::is_control) {
            return Err(ValidationError::new(path, "URI contains control characters"));
        }
        if let Some(rest) = s.strip_prefix("s3://") {
            let (bucket, key) = rest
                .split_once('/')
                .ok_or_else(|| ValidationError::new(path, "expected s3://bucket/key, found no key"))?;
            check_bucket(bucket).map_err(|p| ValidationError::new(path, p))?;
            check_key(key).map_err(|p| ValidationError::new(path, p))?;
            Ok(MediaLocation::S3 { bucket: bucket.to_owned(), key: key.to_owned() })
        } else if let Some(rest) = s.strip_prefix("file://") {
            if !allow_local {
                return Err(ValidationError::new(
                    path,
                    "local files are accepted only in embedded mode; use s3://bucket/key",
                ));
            }
            if !rest.starts_with('/') {
                return Err(ValidationError::new(path, "expected file:///absolute/path"));
            }
            if rest.split('/').any(|seg| seg == "..") {
                return Err(ValidationError::new(path, "path must not contain `..` segments"));
            }
            Ok(MediaLocation::Local(PathBuf::from(rest)))
        } else {
            Err(ValidationError::new(path, format!("unsupported URI {s:?}: expected s3://bucket/key")))
        }
    }
}

impl From<&str> for MediaUri {
    fn from(s: &str) -> Self {
        MediaUri(s.to_owned())
    }
}

/// Checks an S3 bucket name (3–63 of `a-z 0-9 . -`, starting and ending alphanumeric).
pub fn check_bucket(bucket: &str) -> Result<(), String> {
    let ok_len = (3..=63).contains(&bucket.len());
    let ok_chars = bucket.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-');
    let ok_ends = bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
        && bucket.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok_len && ok_chars && ok_ends && !bucket.contains("..") {
        Ok(())
    } else {
        Err(format!("invalid bucket name {bucket:?} (3-63 of a-z, 0-9, '.', '-')"))
    }
}

/// Checks an object key: 1..=1024 bytes, relative, no empty or `..`/`.` segments, no backslash
/// and no control characters.
pub fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(format!("key must be 1 to {MAX_KEY_LEN} bytes long, got {}", key.len()));
    }
    if key.starts_with('/') {
        return Err("key must be relative (it starts with '/')".into());
    }
    if key.chars().any(char::is_control) {
        return Err("key contains control characters".into());
    }
    if key.contains('\\') {
        return Err("key contains a backslash".into());
    }
    for seg in key.split('/') {
        match seg {
            ".." => return Err("key must not contain `..` segments".into()),
            "." => return Err("key must not contain `.` segments".into()),
            "" => {
                return Err("key must not contain empty segments (`//` or a trailing `/`)".into());
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str, local: bool) -> Result<MediaLocation, ValidationError> {
        MediaUri::from(s).parse("source", local)
    }

    #[test]
    fn s3_uris() {
        assert_eq!(
            parse("s3://in-bucket/t1/a/b.mp4", false).unwrap(),
            MediaLocation::S3 { bucket: "in-bucket".into(), key: "t1/a/b.mp4".into() }
        );
        for bad in [
            "s3://b/x.mp4",
            "s3://in-bucket",
            "s3://in-bucket/",
            "s3://in-bucket//etc/passwd",
            "s3://in-bucket/a/../b",
            "s3://in-bucket/a/./b",
            "s3://in-bucket/a\u{7}b",
            "s3://In_Bucket/a",
            "http://x/y",
            "/etc/passwd",
        ] {
            let e = parse(bad, true).unwrap_err();
            assert_eq!(e.path, "source", "{bad}");
        }
    }

    #[test]
    fn local_only_when_allowed() {
        assert_eq!(parse("file:///tmp/a.mp4", true).unwrap(), MediaLocation::Local("/tmp/a.mp4".into()));
        assert!(parse("file:///tmp/a.mp4", false).unwrap_err().problem.contains("embedded"));
        assert!(parse("file://tmp/a.mp4", true).is_err());
        assert!(parse("file:///tmp/../etc/passwd", true).is_err());
    }
}
