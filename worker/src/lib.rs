//! `worker` owns what runs a job: the [`runtime`] (consume, run, store, commit, ack), the
//! [`pipeline`]s (edit and create), the [`models`], [`media`] I/O over FFmpeg, [`storage`] of
//! inputs and outputs, the synthetic [`samples`] the demo and tests encode, MCVD's
//! [`training`] and evaluation, the CLIP concept filter of [`safety`], the invisible
//! [`watermark`] (embed, detect, evaluate), the [`provenance`] tags and C2PA [`credentials`] of
//! outputs, and the worker's [`metrics`] and [`http`] server (`/metrics`, `/healthz`, `/readyz`).

pub mod batching;
pub mod credentials;
pub mod http;
pub mod media;
pub mod metrics;
pub mod models;
pub mod pipeline;
pub mod provenance;
pub mod runtime;
pub mod safety;
pub mod samples;
pub mod storage;
pub mod training;
pub mod watermark;

pub use kernels::DeviceChoice;
pub use runtime::{Worker, WorkerConfig};
