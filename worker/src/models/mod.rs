//! `models` owns what turns inputs into pixels or embeddings, one file per model: the classical
//! video [`baseline`]s, MCVD's score network ([`mcvd`]) with its [`diffusion`] samplers and the
//! FIR resampling op it uses ([`upfirdn`]). CLIP and Stable Diffusion land with the editor issue.

pub mod baseline;
pub mod diffusion;
pub mod mcvd;
pub mod upfirdn;
