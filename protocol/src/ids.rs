//! Identifiers that become storage prefixes and routing keys: [`JobId`] and [`TenantId`]. Their
//! alphabets are narrow on purpose, so that `{tenant}/{job_id}/` can never escape its prefix.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::ValidationError;
use crate::limits::{MAX_JOB_ID_LEN, MAX_TENANT_LEN};

/// A client-chosen job id, the idempotency key: `[A-Za-z0-9._:-]{1,128}`, not `.` or `..`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
#[schemars(extend("pattern" = r"^[A-Za-z0-9._:-]{1,128}$"))]
pub struct JobId(pub String);

/// A tenant: `[a-z0-9][a-z0-9-]{0,62}`. All of a tenant's objects live under `{tenant}/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
#[schemars(extend("pattern" = r"^[a-z0-9][a-z0-9-]{0,62}$"))]
pub struct TenantId(pub String);

impl JobId {
    /// Checks the alphabet and length; `path` locates the field in error messages.
    pub fn check(&self, path: &str) -> Result<(), ValidationError> {
        let s = &self.0;
        if s.is_empty() || s.len() > MAX_JOB_ID_LEN {
            return Err(ValidationError::new(
                path,
                format!("must be 1 to {MAX_JOB_ID_LEN} bytes long, got {}", s.len()),
            ));
        }
        if let Some(c) = s.chars().find(|c| !(c.is_ascii_alphanumeric() || "._:-".contains(*c))) {
            return Err(ValidationError::new(
                path,
                format!("character {c:?} not allowed (use A-Z, a-z, 0-9, '.', '_', ':', '-')"),
            ));
        }
        if s.contains("..") {
            return Err(ValidationError::new(path, "must not contain `..`"));
        }
        // The id is a path segment of every output key (`{tenant}/{job_id}/…`): `.` alone would
        // name the tenant's own folder, a key every store refuses.
        if s == "." {
            return Err(ValidationError::new(path, "must not be `.`"));
        }
        Ok(())
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TenantId {
    /// Checks the alphabet and length; `path` locates the field in error messages.
    pub fn check(&self, path: &str) -> Result<(), ValidationError> {
        let s = &self.0;
        if s.is_empty() || s.len() > MAX_TENANT_LEN {
            return Err(ValidationError::new(
                path,
                format!("must be 1 to {MAX_TENANT_LEN} bytes long, got {}", s.len()),
            ));
        }
        if let Some(c) = s.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')) {
            return Err(ValidationError::new(path, format!("character {c:?} not allowed (use a-z, 0-9, '-')")));
        }
        if s.starts_with('-') {
            return Err(ValidationError::new(path, "must start with a letter or digit"));
        }
        Ok(())
    }

    /// The tenant as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Display for TenantId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for JobId {
    fn from(s: &str) -> Self {
        JobId(s.to_owned())
    }
}

impl From<&str> for TenantId {
    fn from(s: &str) -> Self {
        TenantId(s.to_owned())
    }
}
