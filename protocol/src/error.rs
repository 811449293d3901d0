//! Errors of the wire format: why a document was refused ([`ProtocolError`], [`ValidationError`])
//! and the stable [`ErrorCode`]s a failed [`crate::JobResult`] carries.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A stable, machine-readable reason for a failed job. Clients may match on these strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The document is not valid JSON, misses fields, has unknown ones or values out of range.
    InvalidJob,
    /// The document's `v` is not a version this build speaks.
    UnsupportedVersion,
    /// The document is larger than [`crate::limits::MAX_JOB_BYTES`].
    JobTooLarge,
    /// The job's input could not be found or read.
    InputNotFound,
    /// The job's input is over a size, duration or pixel limit.
    InputTooLarge,
    /// The input is not a media file, has no video stream, no frames, or is corrupt.
    InvalidMedia,
    /// The job asks for a model profile no worker serves.
    UnknownProfile,
    /// A model failed to load or produced non-finite values.
    ModelError,
    /// Reading or writing storage failed after retries.
    StorageError,
    /// A fidelity check refused the output.
    UnsafeContent,
    /// The job's deadline passed before it finished.
    DeadlineExceeded,
    /// The job was cancelled.
    Cancelled,
    /// The job failed on every attempt the retry ladder allows.
    RetriesExhausted,
    /// A bug or an unexpected condition in reelforge itself.
    Internal,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidJob => "invalid_job",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::JobTooLarge => "job_too_large",
            ErrorCode::InputNotFound => "input_not_found",
            ErrorCode::InputTooLarge => "input_too_large",
            ErrorCode::InvalidMedia => "invalid_media",
            ErrorCode::UnknownProfile => "unknown_profile",
            ErrorCode::ModelError => "model_error",
            ErrorCode::StorageError => "storage_error",
            ErrorCode::UnsafeContent => "unsafe_content",
            ErrorCode::DeadlineExceeded => "deadline_exceeded",
            ErrorCode::Cancelled => "cancelled",
            ErrorCode::RetriesExhausted => "retries_exhausted",
            ErrorCode::Internal => "internal",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One semantic problem in a document, located by its JSON path (`guidance.history[3].embedding`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {problem}")]
pub struct ValidationError {
    /// Where the problem is, as a dotted JSON path (`.` for the document itself).
    pub path: String,
    /// What is wrong there, in words.
    pub problem: String,
}

impl ValidationError {
    pub(crate) fn new(path: impl Into<String>, problem: impl Into<String>) -> Self {
        Self { path: path.into(), problem: problem.into() }
    }
}

/// Why an inbound document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// Larger than the limit, refused before parsing.
    #[error("document is {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        /// The document's size in bytes.
        size: usize,
        /// The limit it broke.
        limit: usize,
    },
    /// Not JSON, or not a JSON object.
    #[error("not a JSON document: {0}")]
    Syntax(String),
    /// No `v` field.
    #[error("missing field `v` (the wire version; this build speaks v{})", crate::WIRE_VERSION)]
    MissingVersion,
    /// A `v` this build does not speak.
    #[error("unsupported wire version {found} (this build speaks v{})", crate::WIRE_VERSION)]
    UnsupportedVersion {
        /// The `v` found, as written.
        found: String,
    },
    /// Structurally or semantically invalid.
    #[error("invalid document at {0}")]
    Invalid(ValidationError),
    /// Valid, but more than a worker can hold ([`crate::Job::check_memory`]).
    #[error(
        "{what} needs about {} MiB of worker memory ({per_unit} bytes per output pixel and frame), \
         over the budget of {} MiB",
        needs_bytes / (1 << 20),
        budget_bytes / (1 << 20)
    )]
    OverBudget {
        /// What was asked, in words (`1024 frames at 4096x4096`).
        what: String,
        /// The estimate.
        needs_bytes: u64,
        /// The bytes one unit costs in the estimate.
        per_unit: u64,
        /// The budget it broke.
        budget_bytes: u64,
    },
}

impl ProtocolError {
    /// The [`ErrorCode`] a failed result carries for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            ProtocolError::TooLarge { .. } | ProtocolError::OverBudget { .. } => ErrorCode::JobTooLarge,
            ProtocolError::MissingVersion | ProtocolError::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion,
            ProtocolError::Syntax(_) | ProtocolError::Invalid(_) => ErrorCode::InvalidJob,
        }
    }
}

impl From<ValidationError> for ProtocolError {
    fn from(e: ValidationError) -> Self {
        ProtocolError::Invalid(e)
    }
}
