//! `models` owns what turns inputs into pixels or embeddings, one file per model. For now the
//! classical video baselines ([`baseline`]); CLIP, Stable Diffusion and MCVD land with the editor
//! and creator issues.

pub mod baseline;
