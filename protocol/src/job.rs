//! Jobs as submitted: [`Job`] is an [`EditJob`] (GeneRec's AI editor: repurpose a video for a
//! user) or a [`CreateJob`] (the AI creator: synthesise frames with MCVD). [`Job::from_json`] is the
//! one door for untrusted bytes: size guard, version check, strict parse with the JSON path of the
//! first error, then the semantic checks of [`Job::validate`].

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{ProtocolError, ValidationError};
use crate::ids::{JobId, TenantId};
use crate::limits::*;
use crate::media::MediaUri;

/// A job: what to make, for whom, by when. Tagged by `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Job {
    /// Repurpose an existing micro-video: pick clips and a thumbnail (or generate one).
    Edit(EditJob),
    /// Synthesise a new micro-video.
    Create(CreateJob),
}

/// The two kinds of job, as used in queue names and metrics labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// An [`EditJob`].
    Edit,
    /// A [`CreateJob`].
    Create,
}

impl JobKind {
    /// Every kind.
    pub const ALL: [JobKind; 2] = [JobKind::Edit, JobKind::Create];

    /// The kind as written on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Edit => "edit",
            JobKind::Create => "create",
        }
    }
}

impl std::str::FromStr for JobKind {
    type Err = ValidationError;

    /// `edit` or `create`, as on the wire.
    fn from_str(s: &str) -> Result<Self, ValidationError> {
        JobKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| ValidationError::new("kind", format!("unknown job kind {s:?} (edit, create)")))
    }
}

impl std::fmt::Display for JobKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn default_priority() -> u8 {
    DEFAULT_PRIORITY
}

fn default_profile() -> String {
    "default".to_owned()
}

/// GeneRec's AI editor: clips and a thumbnail of `source` that fit the user's guidance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EditJob {
    /// Wire version, always 1.
    #[schemars(extend("const" = 1))]
    pub v: u32,
    /// Client-chosen id, the idempotency key: resubmitting it never runs the job twice.
    pub job_id: JobId,
    /// The tenant the job belongs to; its outputs live under `{tenant}/{job_id}/`.
    pub tenant: TenantId,
    /// 0 (lowest) to 9 (highest).
    #[serde(default = "default_priority")]
    #[schemars(range(min = 0, max = 9))]
    pub priority: u8,
    /// RFC 3339 time after which the job ends `expired` instead of running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<DateTime<Utc>>,
    /// The model profile whose workers should run the job (routing key).
    #[serde(default = "default_profile")]
    pub profile: String,
    /// The video to edit.
    pub source: MediaUri,
    /// What the user wants: instruction, history, style.
    pub guidance: Guidance,
    /// How to cut and what to produce.
    #[serde(default)]
    pub options: EditOptions,
}

/// The instructor's reading of a user: what they asked for and what they liked.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Guidance {
    /// The user's instruction in words ("the goal, in slow motion").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instruction: Option<String>,
    /// Items the user liked (GeneRec's user vector is the mean of their embeddings).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<HistoryItem>,
    /// A style prompt for generated thumbnails and videos.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub style: Option<String>,
}

/// One liked item: its id and either its embedding or a reference to its video or thumbnail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HistoryItem {
    /// The platform's id of the item.
    pub item_id: String,
    /// A precomputed embedding (the worker's CLIP space), finite values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding: Option<Vec<f32>>,
    /// The item's video or thumbnail, to embed on the worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media: Option<MediaUri>,
}

/// Which thumbnail an edit job produces.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ThumbnailMode {
    /// The best existing frame.
    #[default]
    Select,
    /// A diffusion-generated thumbnail (image-to-image from the best frame).
    Generate,
    /// Both.
    Both,
}

/// Width and height in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FrameSize {
    /// Width in pixels (even, 16..=4096).
    pub width: u32,
    /// Height in pixels (even, 16..=4096).
    pub height: u32,
}

fn default_clip_min() -> f64 {
    2.0
}
fn default_clip_max() -> f64 {
    8.0
}
fn default_clips() -> u8 {
    3
}

/// Options of an edit job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EditOptions {
    /// Shortest clip, in seconds.
    #[serde(default = "default_clip_min")]
    pub clip_seconds_min: f64,
    /// Longest clip, in seconds.
    #[serde(default = "default_clip_max")]
    pub clip_seconds_max: f64,
    /// How many clips to cut (top-k, non-overlapping).
    #[serde(default = "default_clips")]
    #[schemars(range(min = 1, max = 16))]
    pub clips: u8,
    /// Select, generate, or both thumbnails.
    #[serde(default)]
    pub thumbnail: ThumbnailMode,
    /// Output size; the source's size (rounded to even) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_size: Option<FrameSize>,
    /// Shot-cut threshold on PySceneDetect's ContentDetector scale (mean HSV change, 0 to 255;
    /// lower cuts more often).
    #[serde(default = "default_shot_threshold")]
    #[schemars(range(min = 0, max = 255))]
    pub shot_threshold: f64,
    /// Diffusion settings of generated thumbnails (`thumbnail`: `generate` or `both`).
    #[serde(default)]
    pub generate: GenerateOptions,
}

fn default_shot_threshold() -> f64 {
    DEFAULT_SHOT_THRESHOLD
}

impl Default for EditOptions {
    fn default() -> Self {
        Self {
            clip_seconds_min: default_clip_min(),
            clip_seconds_max: default_clip_max(),
            clips: default_clips(),
            thumbnail: ThumbnailMode::default(),
            output_size: None,
            shot_threshold: default_shot_threshold(),
            generate: GenerateOptions::default(),
        }
    }
}

fn default_gen_steps() -> u32 {
    DEFAULT_GENERATE_STEPS
}
fn default_strength() -> f64 {
    DEFAULT_GENERATE_STRENGTH
}
fn default_guidance_scale() -> f64 {
    DEFAULT_GUIDANCE_SCALE
}
fn default_candidates() -> u8 {
    DEFAULT_GENERATE_CANDIDATES
}

/// How a thumbnail is generated with Stable Diffusion: image-to-image from the selected frame
/// (or text-to-image when `strength` is 1), guided by the job's instruction and style.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GenerateOptions {
    /// Denoising steps for strength 1 (sd-turbo runs 1–4 whatever is asked).
    #[serde(default = "default_gen_steps")]
    #[schemars(range(min = 1, max = 200))]
    pub steps: u32,
    /// Share of the schedule run on the selected frame: 0 keeps the frame, 1 ignores it.
    #[serde(default = "default_strength")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub strength: f64,
    /// Classifier-free guidance scale; 1 or less turns guidance off.
    #[serde(default = "default_guidance_scale")]
    #[schemars(range(min = 0.0, max = 30.0))]
    pub guidance_scale: f64,
    /// What the image should not show.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub negative_prompt: Option<String>,
    /// Seed: the same seed and inputs give the same thumbnail.
    #[serde(default)]
    pub seed: u64,
    /// Candidates generated; the best by CLIP score against the guidance is kept.
    #[serde(default = "default_candidates")]
    #[schemars(range(min = 1, max = 8))]
    pub candidates: u8,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            steps: default_gen_steps(),
            strength: default_strength(),
            guidance_scale: default_guidance_scale(),
            negative_prompt: None,
            seed: 0,
            candidates: default_candidates(),
        }
    }
}

impl GenerateOptions {
    /// The semantic checks; `path` is where the options sit in the document.
    pub fn validate(&self, path: &str) -> Result<(), ValidationError> {
        let at = |f: &str| format!("{path}.{f}");
        if !(1..=MAX_GENERATE_STEPS).contains(&self.steps) {
            return Err(ValidationError::new(
                at("steps"),
                format!("must be 1 to {MAX_GENERATE_STEPS}, got {}", self.steps),
            ));
        }
        check_finite(&at("strength"), self.strength)?;
        if !(0.0..=1.0).contains(&self.strength) {
            return Err(ValidationError::new(at("strength"), format!("must be 0 to 1, got {}", self.strength)));
        }
        check_finite(&at("guidance_scale"), self.guidance_scale)?;
        if !(0.0..=MAX_GUIDANCE_SCALE).contains(&self.guidance_scale) {
            return Err(ValidationError::new(
                at("guidance_scale"),
                format!("must be 0 to {MAX_GUIDANCE_SCALE}, got {}", self.guidance_scale),
            ));
        }
        check_text(&at("negative_prompt"), &self.negative_prompt)?;
        if !(1..=MAX_GENERATE_CANDIDATES).contains(&self.candidates) {
            return Err(ValidationError::new(
                at("candidates"),
                format!("must be 1 to {MAX_GENERATE_CANDIDATES}, got {}", self.candidates),
            ));
        }
        Ok(())
    }
}

/// What a create job synthesises (MCVD's masks make one model do all four).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CreateMode {
    /// Past frames → future frames.
    Predict,
    /// Past and future frames → the frames between.
    Interpolate,
    /// Nothing → new frames.
    Generate,
    /// SDEdit: noise existing frames to a step, then denoise (GeneRec's content editing).
    Edit,
}

/// Frames of an existing video that condition the synthesis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Conditioning {
    /// The video to read conditioning frames from.
    pub source: MediaUri,
    /// Start of the range, in seconds.
    #[serde(default)]
    pub start_s: f64,
    /// End of the range, in seconds.
    pub end_s: f64,
}

/// The diffusion sampler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SamplerKind {
    /// Ancestral DDPM on a subsampled schedule.
    Ddpm,
    /// Deterministic DDIM (eta 0).
    Ddim,
}

/// Sampler and number of steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Sampler {
    /// DDPM or DDIM.
    pub kind: SamplerKind,
    /// Denoising steps, 1..=1000.
    #[schemars(range(min = 1, max = 1000))]
    pub steps: u32,
}

impl Default for Sampler {
    fn default() -> Self {
        Sampler { kind: SamplerKind::Ddim, steps: 50 }
    }
}

fn default_fps() -> u32 {
    8
}

/// GeneRec's AI creator: a new micro-video, synthesised block by block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateJob {
    /// Wire version, always 1.
    #[schemars(extend("const" = 1))]
    pub v: u32,
    /// Client-chosen id, the idempotency key.
    pub job_id: JobId,
    /// The tenant the job belongs to.
    pub tenant: TenantId,
    /// 0 (lowest) to 9 (highest).
    #[serde(default = "default_priority")]
    #[schemars(range(min = 0, max = 9))]
    pub priority: u8,
    /// RFC 3339 time after which the job ends `expired`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<DateTime<Utc>>,
    /// The model profile whose workers should run the job.
    #[serde(default = "default_profile")]
    pub profile: String,
    /// Predict, interpolate, generate or edit.
    pub mode: CreateMode,
    /// Conditioning frames; required except for `generate`, where it must be absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditioning: Option<Conditioning>,
    /// What the user wants.
    #[serde(default)]
    pub guidance: Guidance,
    /// Frames to produce.
    #[schemars(range(min = 1, max = 1024))]
    pub frames: u32,
    /// Frame rate of the output video.
    #[serde(default = "default_fps")]
    pub fps: u32,
    /// Size of the output frames.
    pub size: FrameSize,
    /// Seed: the same seed and inputs give the same output.
    #[serde(default)]
    pub seed: u64,
    /// Sampler and steps.
    #[serde(default)]
    pub sampler: Sampler,
}

/// Bytes of worker memory a create job costs per output pixel and frame: the frame as RGB
/// bytes (3) and as an f32 RGB tensor (12), rounded up.
pub const CREATE_BYTES_PER_PIXEL_FRAME: u64 = 16;

/// The memory budget a worker gives one job by default: 16 GiB.
pub const DEFAULT_JOB_MEMORY_BYTES: u64 = 16 << 30;

/// The fuzz harness, shared by `fuzz/fuzz_targets/job.rs` (cargo-fuzz, nightly) and the corpus
/// replay in `protocol/tests/fuzz.rs` (stable): parses `bytes` with and without local media;
/// whatever parses must re-parse from its own serialisation unchanged, and its memory estimate
/// must not overflow. Panics when an invariant breaks (that is the finding).
#[doc(hidden)]
pub fn fuzz_one(bytes: &[u8]) {
    for ctx in [ValidationContext::default(), ValidationContext { allow_local_media: true }] {
        if let Ok(job) = Job::from_json(bytes, &ctx) {
            let again = Job::from_json(&job.to_json(), &ctx).expect("a parsed job re-parses");
            assert_eq!(job, again, "a parsed job changed through its serialisation");
            let _ = job.check_memory(DEFAULT_JOB_MEMORY_BYTES);
        }
    }
}

/// What validation may accept beyond the fleet's defaults.
#[derive(Debug, Clone, Copy, Default)]
pub struct ValidationContext {
    /// Admit `file:///` media (the embedded mode only).
    pub allow_local_media: bool,
}

impl Job {
    /// Parses, version-checks and validates an untrusted document.
    pub fn from_json(bytes: &[u8], ctx: &ValidationContext) -> Result<Job, ProtocolError> {
        if bytes.len() > MAX_JOB_BYTES {
            return Err(ProtocolError::TooLarge { size: bytes.len(), limit: MAX_JOB_BYTES });
        }
        let value: Value = serde_json::from_slice(bytes).map_err(|e| ProtocolError::Syntax(e.to_string()))?;
        let job = Job::from_value(value)?;
        job.validate(ctx)?;
        Ok(job)
    }

    /// Version check and strict typed parse of an already-parsed JSON value (no semantic checks).
    pub fn from_value(mut value: Value) -> Result<Job, ProtocolError> {
        let obj = value.as_object_mut().ok_or_else(|| ProtocolError::Syntax("expected a JSON object".into()))?;
        match obj.get("v") {
            None => return Err(ProtocolError::MissingVersion),
            Some(v) if v.as_u64() == Some(crate::WIRE_VERSION as u64) => {}
            Some(v) => {
                return Err(ProtocolError::UnsupportedVersion { found: v.to_string() });
            }
        }
        let kind = match obj.remove("kind") {
            None => {
                return Err(ValidationError::new("kind", "missing field `kind` (edit or create)").into());
            }
            Some(Value::String(k)) => k,
            Some(other) => {
                return Err(ValidationError::new("kind", format!("expected a string, found {other}")).into());
            }
        };
        match kind.as_str() {
            "edit" => typed(value).map(Job::Edit),
            "create" => typed(value).map(Job::Create),
            other => {
                Err(ValidationError::new("kind", format!("unknown kind {other:?}, expected `edit` or `create`")).into())
            }
        }
    }

    /// Refuses a job a worker could not hold in `budget_bytes` of memory: a create job keeps
    /// its output frames as RGB bytes and as f32 tensors ([`CREATE_BYTES_PER_PIXEL_FRAME`] per
    /// output pixel and frame). An edit job's cost depends on its input, which is bounded where
    /// it is decoded (the worker's media limits), so it always passes here.
    pub fn check_memory(&self, budget_bytes: u64) -> Result<(), ProtocolError> {
        let Job::Create(c) = self else { return Ok(()) };
        let pixels = u64::from(c.frames) * u64::from(c.size.width) * u64::from(c.size.height);
        let needs_bytes = pixels.saturating_mul(CREATE_BYTES_PER_PIXEL_FRAME);
        if needs_bytes <= budget_bytes {
            return Ok(());
        }
        Err(ProtocolError::OverBudget {
            what: format!("a create job of {} frames at {}x{}", c.frames, c.size.width, c.size.height),
            needs_bytes,
            per_unit: CREATE_BYTES_PER_PIXEL_FRAME,
            budget_bytes,
        })
    }

    /// The semantic checks: ids, ranges, URIs, cross-field rules.
    pub fn validate(&self, ctx: &ValidationContext) -> Result<(), ValidationError> {
        match self {
            Job::Edit(j) => j.validate(ctx),
            Job::Create(j) => j.validate(ctx),
        }
    }

    /// Edit or create.
    pub fn kind(&self) -> JobKind {
        match self {
            Job::Edit(_) => JobKind::Edit,
            Job::Create(_) => JobKind::Create,
        }
    }

    /// The job's id.
    pub fn job_id(&self) -> &JobId {
        match self {
            Job::Edit(j) => &j.job_id,
            Job::Create(j) => &j.job_id,
        }
    }

    /// The job's tenant.
    pub fn tenant(&self) -> &TenantId {
        match self {
            Job::Edit(j) => &j.tenant,
            Job::Create(j) => &j.tenant,
        }
    }

    /// The job's priority, 0..=9.
    pub fn priority(&self) -> u8 {
        match self {
            Job::Edit(j) => j.priority,
            Job::Create(j) => j.priority,
        }
    }

    /// The job's deadline, if any.
    pub fn deadline(&self) -> Option<DateTime<Utc>> {
        match self {
            Job::Edit(j) => j.deadline,
            Job::Create(j) => j.deadline,
        }
    }

    /// The model profile that routes the job.
    pub fn profile(&self) -> &str {
        match self {
            Job::Edit(j) => &j.profile,
            Job::Create(j) => &j.profile,
        }
    }

    /// The job's guidance.
    pub fn guidance(&self) -> &Guidance {
        match self {
            Job::Edit(j) => &j.guidance,
            Job::Create(j) => &j.guidance,
        }
    }

    /// The job as canonical JSON bytes.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a Job always serialises")
    }
}

fn typed<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, ProtocolError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        ValidationError::new(path, e.into_inner().to_string()).into()
    })
}

struct Common<'a> {
    v: u32,
    job_id: &'a JobId,
    tenant: &'a TenantId,
    priority: u8,
    profile: &'a str,
}

fn check_common(c: Common<'_>) -> Result<(), ValidationError> {
    if c.v != crate::WIRE_VERSION {
        return Err(ValidationError::new("v", format!("unsupported wire version {}", c.v)));
    }
    c.job_id.check("job_id")?;
    c.tenant.check("tenant")?;
    if c.priority > MAX_PRIORITY {
        return Err(ValidationError::new("priority", format!("must be 0 to {MAX_PRIORITY}, got {}", c.priority)));
    }
    let p = c.profile;
    if p.is_empty()
        || p.len() > MAX_PROFILE_LEN
        || !p.chars().all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-' || ch == '_')
    {
        return Err(ValidationError::new(
            "profile",
            format!("must be 1 to {MAX_PROFILE_LEN} of a-z, 0-9, '-', '_', got {p:?}"),
        ));
    }
    Ok(())
}

fn check_text(path: &str, text: &Option<String>) -> Result<(), ValidationError> {
    if let Some(t) = text {
        let n = t.chars().count();
        if n > MAX_TEXT_CHARS {
            return Err(ValidationError::new(path, format!("{n} characters, over the limit of {MAX_TEXT_CHARS}")));
        }
        if t.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
            return Err(ValidationError::new(path, "contains control characters"));
        }
    }
    Ok(())
}

fn check_finite(path: &str, x: f64) -> Result<(), ValidationError> {
    if x.is_finite() { Ok(()) } else { Err(ValidationError::new(path, "must be a finite number")) }
}

impl Guidance {
    /// True when there is nothing to steer by: no instruction, no history, no style.
    pub fn is_empty(&self) -> bool {
        self.instruction.as_deref().is_none_or(|s| s.trim().is_empty())
            && self.history.is_empty()
            && self.style.as_deref().is_none_or(|s| s.trim().is_empty())
    }

    fn validate(&self, ctx: &ValidationContext) -> Result<(), ValidationError> {
        check_text("guidance.instruction", &self.instruction)?;
        check_text("guidance.style", &self.style)?;
        if self.history.len() > MAX_HISTORY_ITEMS {
            return Err(ValidationError::new(
                "guidance.history",
                format!("{} items, over the limit of {MAX_HISTORY_ITEMS}", self.history.len()),
            ));
        }
        let mut dim = None;
        for (i, item) in self.history.iter().enumerate() {
            let path = format!("guidance.history[{i}]");
            if item.item_id.is_empty()
                || item.item_id.len() > MAX_ITEM_ID_LEN
                || item.item_id.chars().any(char::is_control)
            {
                return Err(ValidationError::new(
                    format!("{path}.item_id"),
                    format!("must be 1 to {MAX_ITEM_ID_LEN} bytes without control characters"),
                ));
            }
            match (&item.embedding, &item.media) {
                (Some(_), Some(_)) | (None, None) => {
                    return Err(ValidationError::new(path, "give exactly one of `embedding` or `media`"));
                }
                (Some(e), None) => {
                    let epath = format!("{path}.embedding");
                    if e.is_empty() || e.len() > MAX_EMBEDDING_DIM {
                        return Err(ValidationError::new(
                            epath,
                            format!("dimension must be 1 to {MAX_EMBEDDING_DIM}, got {}", e.len()),
                        ));
                    }
                    if let Some(k) = e.iter().position(|x| !x.is_finite()) {
                        return Err(ValidationError::new(format!("{epath}[{k}]"), "must be finite"));
                    }
                    if e.iter().all(|x| *x == 0.0) {
                        return Err(ValidationError::new(epath, "is all zeros (no direction)"));
                    }
                    match dim {
                        None => dim = Some(e.len()),
                        Some(d) if d != e.len() => {
                            return Err(ValidationError::new(
                                epath,
                                format!("dimension {} differs from the first item's {d}", e.len()),
                            ));
                        }
                        Some(_) => {}
                    }
                }
                (None, Some(m)) => {
                    m.parse(&format!("{path}.media"), ctx.allow_local_media)?;
                }
            }
        }
        Ok(())
    }
}

fn check_size(path: &str, size: &FrameSize) -> Result<(), ValidationError> {
    for (name, v) in [("width", size.width), ("height", size.height)] {
        if !(MIN_SIDE..=MAX_SIDE).contains(&v) || v % 2 != 0 {
            return Err(ValidationError::new(
                format!("{path}.{name}"),
                format!("must be even and {MIN_SIDE} to {MAX_SIDE}, got {v}"),
            ));
        }
    }
    Ok(())
}

impl EditJob {
    /// The semantic checks of an edit job.
    pub fn validate(&self, ctx: &ValidationContext) -> Result<(), ValidationError> {
        check_common(Common {
            v: self.v,
            job_id: &self.job_id,
            tenant: &self.tenant,
            priority: self.priority,
            profile: &self.profile,
        })?;
        self.source.parse("source", ctx.allow_local_media)?;
        self.guidance.validate(ctx)?;
        let o = &self.options;
        check_finite("options.clip_seconds_min", o.clip_seconds_min)?;
        check_finite("options.clip_seconds_max", o.clip_seconds_max)?;
        if !(MIN_CLIP_SECONDS..=MAX_CLIP_SECONDS).contains(&o.clip_seconds_min) {
            return Err(ValidationError::new(
                "options.clip_seconds_min",
                format!("must be {MIN_CLIP_SECONDS} to {MAX_CLIP_SECONDS}, got {}", o.clip_seconds_min),
            ));
        }
        if !(o.clip_seconds_min..=MAX_CLIP_SECONDS).contains(&o.clip_seconds_max) {
            return Err(ValidationError::new(
                "options.clip_seconds_max",
                format!(
                    "must be clip_seconds_min ({}) to {MAX_CLIP_SECONDS}, got {}",
                    o.clip_seconds_min, o.clip_seconds_max
                ),
            ));
        }
        if o.clips == 0 || o.clips > MAX_CLIPS {
            return Err(ValidationError::new("options.clips", format!("must be 1 to {MAX_CLIPS}, got {}", o.clips)));
        }
        if let Some(size) = &o.output_size {
            check_size("options.output_size", size)?;
        }
        check_finite("options.shot_threshold", o.shot_threshold)?;
        if !(0.0..=MAX_SHOT_THRESHOLD).contains(&o.shot_threshold) {
            return Err(ValidationError::new(
                "options.shot_threshold",
                format!("must be 0 to {MAX_SHOT_THRESHOLD}, got {}", o.shot_threshold),
            ));
        }
        o.generate.validate("options.generate")?;
        Ok(())
    }
}

impl CreateJob {
    /// The semantic checks of a create job.
    pub fn validate(&self, ctx: &ValidationContext) -> Result<(), ValidationError> {
        check_common(Common {
            v: self.v,
            job_id: &self.job_id,
            tenant: &self.tenant,
            priority: self.priority,
            profile: &self.profile,
        })?;
        self.guidance.validate(ctx)?;
        match (self.mode, &self.conditioning) {
            (CreateMode::Generate, Some(_)) => {
                return Err(ValidationError::new("conditioning", "must be absent for mode `generate`"));
            }
            (CreateMode::Predict | CreateMode::Interpolate | CreateMode::Edit, None) => {
                return Err(ValidationError::new(
                    "conditioning",
                    format!("required for mode `{}`", self.mode.as_str()),
                ));
            }
            (_, Some(c)) => {
                c.source.parse("conditioning.source", ctx.allow_local_media)?;
                check_finite("conditioning.start_s", c.start_s)?;
                check_finite("conditioning.end_s", c.end_s)?;
                if c.start_s < 0.0 {
                    return Err(ValidationError::new("conditioning.start_s", "must be ≥ 0"));
                }
                if c.end_s <= c.start_s || c.end_s - c.start_s > MAX_CONDITIONING_SECONDS {
                    return Err(ValidationError::new(
                        "conditioning.end_s",
                        format!("must be after start_s and at most {MAX_CONDITIONING_SECONDS} s after it"),
                    ));
                }
            }
            (CreateMode::Generate, None) => {}
        }
        if self.frames == 0 || self.frames > MAX_FRAMES {
            return Err(ValidationError::new("frames", format!("must be 1 to {MAX_FRAMES}, got {}", self.frames)));
        }
        if self.fps == 0 || self.fps > MAX_FPS {
            return Err(ValidationError::new("fps", format!("must be 1 to {MAX_FPS}, got {}", self.fps)));
        }
        check_size("size", &self.size)?;
        if self.sampler.steps == 0 || self.sampler.steps > MAX_SAMPLER_STEPS {
            return Err(ValidationError::new(
                "sampler.steps",
                format!("must be 1 to {MAX_SAMPLER_STEPS}, got {}", self.sampler.steps),
            ));
        }
        Ok(())
    }
}

impl CreateMode {
    /// The mode as written on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            CreateMode::Predict => "predict",
            CreateMode::Interpolate => "interpolate",
            CreateMode::Generate => "generate",
            CreateMode::Edit => "edit",
        }
    }
}
