//! The named limits inbound documents are checked against. Changing one changes the wire
//! contract: the JSON Schema and the README's job format quote them.

/// Largest job document accepted, in bytes (a user history of 256 items × 768-d embeddings fits).
pub const MAX_JOB_BYTES: usize = 2 * 1024 * 1024;
/// Longest `job_id`, in bytes.
pub const MAX_JOB_ID_LEN: usize = 128;
/// Longest `tenant`, in bytes.
pub const MAX_TENANT_LEN: usize = 63;
/// Longest model profile name, in bytes.
pub const MAX_PROFILE_LEN: usize = 63;
/// Highest priority (0 is the lowest).
pub const MAX_PRIORITY: u8 = 9;
/// Priority given to a job that names none.
pub const DEFAULT_PRIORITY: u8 = 4;
/// Longest instruction or style prompt, in characters.
pub const MAX_TEXT_CHARS: usize = 2_000;
/// Most liked items in a user history.
pub const MAX_HISTORY_ITEMS: usize = 256;
/// Longest history item id, in bytes.
pub const MAX_ITEM_ID_LEN: usize = 128;
/// Largest embedding dimension accepted in a user history.
pub const MAX_EMBEDDING_DIM: usize = 2_048;
/// Longest media URI, in bytes.
pub const MAX_URI_LEN: usize = 2_048;
/// Longest object key inside a media URI, in bytes (S3's own limit).
pub const MAX_KEY_LEN: usize = 1_024;
/// Most clips an edit job may ask for.
pub const MAX_CLIPS: u8 = 16;
/// Shortest clip an edit job may ask for, in seconds.
pub const MIN_CLIP_SECONDS: f64 = 0.5;
/// Longest clip an edit job may ask for, in seconds.
pub const MAX_CLIP_SECONDS: f64 = 300.0;
/// Smallest output or synthesis side, in pixels.
pub const MIN_SIDE: u32 = 16;
/// Largest output or synthesis side, in pixels.
pub const MAX_SIDE: u32 = 4_096;
/// Most frames a create job may ask for.
pub const MAX_FRAMES: u32 = 1_024;
/// Highest frame rate, in frames per second.
pub const MAX_FPS: u32 = 120;
/// Most sampler steps (the diffusion's own T).
pub const MAX_SAMPLER_STEPS: u32 = 1_000;
/// Longest conditioning range, in seconds.
pub const MAX_CONDITIONING_SECONDS: f64 = 600.0;
/// Shot-cut threshold an edit job gets by default (PySceneDetect's ContentDetector default).
pub const DEFAULT_SHOT_THRESHOLD: f64 = 27.0;
/// Highest shot-cut threshold (the largest possible mean HSV change).
pub const MAX_SHOT_THRESHOLD: f64 = 255.0;
/// Most denoising steps a generated thumbnail may ask for.
pub const MAX_GENERATE_STEPS: u32 = 200;
/// Denoising steps of a generated thumbnail when the job names none.
pub const DEFAULT_GENERATE_STEPS: u32 = 30;
/// img2img strength when the job names none.
pub const DEFAULT_GENERATE_STRENGTH: f64 = 0.6;
/// Largest classifier-free guidance scale.
pub const MAX_GUIDANCE_SCALE: f64 = 30.0;
/// Guidance scale when the job names none (Stable Diffusion's usual 7.5).
pub const DEFAULT_GUIDANCE_SCALE: f64 = 7.5;
/// Most thumbnail candidates per job (each is a full diffusion run).
pub const MAX_GENERATE_CANDIDATES: u8 = 8;
/// Candidates when the job names none.
pub const DEFAULT_GENERATE_CANDIDATES: u8 = 2;
