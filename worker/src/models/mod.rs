//! `models` owns what turns inputs into pixels or embeddings, one file per model: the classical
//! video [`baseline`]s, MCVD's score network ([`mcvd`]) with its [`diffusion`] samplers and the
//! FIR resampling op it uses ([`upfirdn`]), the editor's [`clip`] with its image
//! [`preprocess`]ing, and Stable Diffusion for generated thumbnails ([`sd`]).

pub mod baseline;
pub mod clip;
pub mod diffusion;
pub mod mcvd;
pub mod preprocess;
pub mod sd;
pub mod upfirdn;
