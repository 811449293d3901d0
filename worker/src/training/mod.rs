//! `training` owns MCVD's trainer ([`McvdTrainer`]: the masked denoising loss, AdamW, EMA,
//! checkpoints with resume), its [`data`] (synthetic moving shapes, folders of videos) and its
//! [`eval`]uation (PSNR/SSIM against the classical baselines).
//!
//! A checkpoint directory holds `config.json` and `model.safetensors` (the EMA weights, what
//! the worker loads), plus `train_state.safetensors` (raw weights and AdamW moments) and
//! `train_state.json` (step, RNG state) for `--resume`.
//!
//! The optimiser is AdamW with decoupled weight decay, the same update as candle-nn's
//! `AdamW`, written here because candle-nn keeps its moments private and a resumed run must
//! restore them.

pub mod data;
pub mod eval;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

use crate::media::MediaError;
use crate::models::diffusion::{Schedule, SeededNoise};
use crate::models::mcvd::{self, Mcvd, McvdConfig, McvdError};

/// Raw weights and optimiser moments.
pub const STATE_TENSORS_FILE: &str = "train_state.safetensors";
/// Step counter and RNG state.
pub const STATE_FILE: &str = "train_state.json";

/// Why training failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The model failed.
    #[error(transparent)]
    Model(#[from] McvdError),
    /// A tensor operation failed.
    #[error("training: {0}")]
    Candle(#[from] candle_core::Error),
    /// Decoding training videos failed.
    #[error(transparent)]
    Media(#[from] MediaError),
    /// The data set is unusable.
    #[error("training data: {0}")]
    Data(String),
    /// The loss became NaN or infinite.
    #[error("loss is not finite at step {0}")]
    Diverged(usize),
    /// Checkpoint I/O.
    #[error("checkpoint {path}: {message}")]
    Checkpoint {
        /// The file.
        path: std::path::PathBuf,
        /// What went wrong.
        message: String,
    },
}

#[derive(Debug, Serialize, Deserialize)]
struct TrainState {
    step: usize,
    rng_state: u64,
}

/// MCVD's trainer: owns the weights, their EMA and the optimiser state.
pub struct McvdTrainer {
    cfg: McvdConfig,
    varmap: VarMap,
    model: Mcvd,
    /// Sorted variable names, the order of every per-variable list below.
    names: Vec<String>,
    vars: Vec<Var>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    ema: Vec<Tensor>,
    schedule: Schedule,
    step: usize,
    rng: SeededNoise,
}

impl McvdTrainer {
    /// A fresh model initialised from `seed`.
    pub fn new(cfg: &McvdConfig, seed: u64) -> Result<Self, TrainError> {
        let (varmap, model) = mcvd::init_model(cfg, seed)?;
        Self::assemble(cfg, varmap, model, 0, SeededNoise::new(seed.wrapping_add(1)))
    }

    fn assemble(
        cfg: &McvdConfig,
        varmap: VarMap,
        model: Mcvd,
        step: usize,
        rng: SeededNoise,
    ) -> Result<Self, TrainError> {
        let (names, vars): (Vec<String>, Vec<Var>) = {
            let data = varmap.data().lock().expect("varmap lock");
            let mut pairs: Vec<(String, Var)> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            pairs.sort_by(|a, b| a.0.cmp(&b.0));
            pairs.into_iter().unzip()
        };
        let zeros = |v: &Var| v.as_tensor().zeros_like();
        let m = vars.iter().map(zeros).collect::<Result<_, _>>()?;
        let v = vars.iter().map(zeros).collect::<Result<_, _>>()?;
        let ema = vars.iter().map(|v| v.as_tensor().copy().map(|t| t.detach())).collect::<Result<_, _>>()?;
        Ok(McvdTrainer {
            cfg: cfg.clone(),
            varmap,
            model,
            names,
            vars,
            m,
            v,
            ema,
            schedule: Schedule::for_config(cfg),
            step,
            rng,
        })
    }

    /// Resumes from a checkpoint directory written by [`save`](Self::save).
    pub fn resume(dir: &Path) -> Result<Self, TrainError> {
        let cfg = McvdConfig::load(dir)?;
        let bad = |file: &str, message: String| TrainError::Checkpoint { path: dir.join(file), message };
        let state: TrainState =
            serde_json::from_slice(&std::fs::read(dir.join(STATE_FILE)).map_err(|e| bad(STATE_FILE, e.to_string()))?)
                .map_err(|e| bad(STATE_FILE, e.to_string()))?;
        let tensors = candle_core::safetensors::load(dir.join(STATE_TENSORS_FILE), &Device::Cpu)?;
        let ema_tensors = candle_core::safetensors::load(dir.join(mcvd::WEIGHTS_FILE), &Device::Cpu)?;
        let (varmap, model) = mcvd::init_model(&cfg, 0)?;
        let mut t = Self::assemble(&cfg, varmap, model, state.step, SeededNoise::from_state(state.rng_state))?;
        let get = |map: &HashMap<String, Tensor>, key: &str, file: &str| {
            map.get(key).cloned().ok_or_else(|| bad(file, format!("missing tensor `{key}`")))
        };
        for (i, name) in t.names.iter().enumerate() {
            t.vars[i].set(&get(&tensors, &format!("param.{name}"), STATE_TENSORS_FILE)?)?;
            t.m[i] = get(&tensors, &format!("adam_m.{name}"), STATE_TENSORS_FILE)?;
            t.v[i] = get(&tensors, &format!("adam_v.{name}"), STATE_TENSORS_FILE)?;
            t.ema[i] = get(&ema_tensors, name, mcvd::WEIGHTS_FILE)?;
        }
        Ok(t)
    }

    /// The configuration being trained.
    pub fn config(&self) -> &McvdConfig {
        &self.cfg
    }

    /// Optimiser steps taken.
    pub fn step(&self) -> usize {
        self.step
    }

    /// The trainer's random source (batches, masks, steps, noise).
    pub fn rng(&mut self) -> &mut SeededNoise {
        &mut self.rng
    }

    /// MCVD's masked denoising loss on a batch `(B, sequence_frames·C, S, S)`: mean squared
    /// error between ε and the network's prediction at uniformly drawn steps, with the past
    /// block zeroed with probability `prob_mask_cond` and the future block with
    /// `prob_mask_future`, per sequence.
    pub fn loss(&mut self, batch: &Tensor) -> Result<Tensor, TrainError> {
        let cfg = &self.cfg;
        let (b, _, s, _) = batch.dims4()?;
        let c = cfg.channels;
        let past = batch.narrow(1, 0, cfg.num_frames_cond * c)?;
        let x0 = batch.narrow(1, cfg.num_frames_cond * c, cfg.num_frames * c)?;
        let future = batch.narrow(1, (cfg.num_frames_cond + cfg.num_frames) * c, cfg.num_frames_future * c)?;
        let mut mask = |p: f64| -> candle_core::Result<Tensor> {
            let keep: Vec<f32> = (0..b).map(|_| if self.rng.uniform() < p { 0.0 } else { 1.0 }).collect();
            Tensor::from_vec(keep, (b, 1, 1, 1), &Device::Cpu)
        };
        let past = past.broadcast_mul(&mask(cfg.prob_mask_cond)?)?;
        let future = future.broadcast_mul(&mask(cfg.prob_mask_future)?)?;
        let cond = Tensor::cat(&[past, future], 1)?;
        let t: Vec<usize> = (0..b).map(|_| self.rng.below(self.schedule.len())).collect();
        let noise = self.rng.normal_tensor(&[b, cfg.x_channels(), s, s])?;
        let xt = self.schedule.q_sample(&x0, &noise, &t)?;
        let tt = Tensor::from_vec(t.iter().map(|&t| t as f32).collect::<Vec<_>>(), b, &Device::Cpu)?;
        let eps = self.model.forward(&xt, &tt, &cond, Some(&mut self.rng))?;
        Ok((eps - noise)?.sqr()?.mean_all()?)
    }

    /// One optimiser step on `batch`; returns the loss before the step.
    pub fn train_step(&mut self, batch: &Tensor) -> Result<f32, TrainError> {
        let loss = self.loss(batch)?;
        let value = loss.to_scalar::<f32>()?;
        if !value.is_finite() {
            return Err(TrainError::Diverged(self.step));
        }
        let grads = loss.backward()?;
        let grads: Vec<Option<Tensor>> = self.vars.iter().map(|v| grads.get(v.as_tensor()).cloned()).collect();
        let mut sq = 0f64;
        for g in grads.iter().flatten() {
            sq += f64::from(g.sqr()?.sum_all()?.to_scalar::<f32>()?);
        }
        let clip = if self.cfg.grad_clip > 0.0 { (self.cfg.grad_clip / (sq.sqrt() + 1e-6)).min(1.0) } else { 1.0 };
        self.step += 1;
        let cfg = &self.cfg;
        let lr = cfg.lr * (self.step as f64 / cfg.warmup.max(1) as f64).min(1.0);
        let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8);
        let (c1, c2) = (1.0 - b1.powi(self.step as i32), 1.0 - b2.powi(self.step as i32));
        // EMA warm-up: short runs are not dominated by the initial weights.
        let rate = cfg.ema_rate.min((1.0 + self.step as f64) / (10.0 + self.step as f64));
        for (i, g) in grads.into_iter().enumerate() {
            let theta = self.vars[i].as_tensor();
            if let Some(g) = g {
                let g = (g * clip)?.detach();
                self.m[i] = ((&self.m[i] * b1)? + (&g * (1.0 - b1))?)?.detach();
                self.v[i] = ((&self.v[i] * b2)? + (g.sqr()? * (1.0 - b2))?)?.detach();
                let update = ((&self.m[i] / c1)? / ((&self.v[i] / c2)?.sqrt()? + eps)?)?;
                let next = ((theta * (1.0 - lr * cfg.weight_decay))? - (update * lr)?)?;
                self.vars[i].set(&next.detach())?;
            }
            let theta = self.vars[i].as_tensor();
            self.ema[i] = ((&self.ema[i] * rate)? + (theta * (1.0 - rate))?)?.detach();
        }
        Ok(value)
    }

    /// The EMA weights by name (what sampling uses).
    pub fn ema_tensors(&self) -> HashMap<String, Tensor> {
        self.names.iter().cloned().zip(self.ema.iter().cloned()).collect()
    }

    /// A model over a copy of the EMA weights.
    pub fn ema_model(&self) -> Result<Mcvd, TrainError> {
        Ok(Mcvd::from_tensors(self.ema_tensors(), &self.cfg)?)
    }

    /// The model being trained (raw weights, shared with the optimiser).
    pub fn model(&self) -> &Mcvd {
        &self.model
    }

    /// A model over a copy of the raw weights.
    pub fn raw_model(&self) -> Result<Mcvd, TrainError> {
        let vb = VarBuilder::from_tensors(mcvd::varmap_tensors(&self.varmap)?, DType::F32, &Device::Cpu);
        Ok(Mcvd::new(vb, &self.cfg)?)
    }

    /// Writes the checkpoint directory (see the module docs).
    pub fn save(&self, dir: &Path) -> Result<(), TrainError> {
        mcvd::save_checkpoint(dir, &self.cfg, &self.ema_tensors())?;
        let mut state = HashMap::new();
        for (i, name) in self.names.iter().enumerate() {
            state.insert(format!("param.{name}"), self.vars[i].as_tensor().copy()?.detach());
            state.insert(format!("adam_m.{name}"), self.m[i].clone());
            state.insert(format!("adam_v.{name}"), self.v[i].clone());
        }
        candle_core::safetensors::save(&state, dir.join(STATE_TENSORS_FILE))?;
        let json = serde_json::to_vec_pretty(&TrainState { step: self.step, rng_state: self.rng.state() })
            .expect("state serialises");
        std::fs::write(dir.join(STATE_FILE), json)
            .map_err(|e| TrainError::Checkpoint { path: dir.join(STATE_FILE), message: e.to_string() })
    }
}

/// Trains for `steps` more steps on `data` in batches of `batch_size`, saving to `out` every
/// `save_every` steps (0: only at the end) and at the end; `on_step(step, loss)` follows
/// progress. Returns the losses.
pub fn train(
    trainer: &mut McvdTrainer,
    data: &data::TrainData,
    steps: usize,
    batch_size: usize,
    out: &Path,
    save_every: usize,
    mut on_step: impl FnMut(usize, f32),
) -> Result<Vec<f32>, TrainError> {
    let mut losses = Vec::with_capacity(steps);
    for _ in 0..steps {
        let cfg = trainer.config().clone();
        let batch = data.batch(&cfg, batch_size.max(1), trainer.rng())?;
        let loss = trainer.train_step(&batch)?;
        losses.push(loss);
        on_step(trainer.step(), loss);
        if save_every > 0 && trainer.step().is_multiple_of(save_every) {
            trainer.save(out)?;
        }
    }
    trainer.save(out)?;
    Ok(losses)
}
