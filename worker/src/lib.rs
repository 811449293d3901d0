//! `worker` owns what runs a job: the [`runtime`] (consume, run, store, commit, ack), the
//! [`pipeline`]s (edit and create), the [`models`], [`media`] I/O over FFmpeg, [`storage`] of
//! inputs and outputs, the synthetic [`samples`] the demo and tests encode, MCVD's
//! [`training`] and evaluation, and the worker's [`metrics`] and [`http`] server (`/metrics`,
//! `/healthz`, `/readyz`).

pub mod http;
pub mod media;
pub mod metrics;
pub mod models;
pub mod pipeline;
pub mod runtime;
pub mod samples;
pub mod storage;
pub mod training;

pub use runtime::{Worker, WorkerConfig};
