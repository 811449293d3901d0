//! The sampling schedule: `scheduler_config.json` and DDIM (η = 0) over it, with diffusers'
//! spacings and prediction types.

use super::*;

pub(super) fn spacing() -> String {
    "leading".into()
}
pub(super) fn epsilon() -> String {
    "epsilon".into()
}
pub(super) fn thousand() -> usize {
    1000
}

/// `scheduler/scheduler_config.json` (DDIM, PNDM, Euler, … all share these keys).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchedulerConfig {
    /// `DDIMScheduler`, `PNDMScheduler`, `EulerDiscreteScheduler`, …: we sample with DDIM.
    #[serde(rename = "_class_name", default)]
    pub class_name: String,
    /// Training steps T.
    #[serde(default = "thousand")]
    pub num_train_timesteps: usize,
    /// First β.
    pub beta_start: f64,
    /// Last β.
    pub beta_end: f64,
    /// `scaled_linear` or `linear`.
    pub beta_schedule: String,
    /// `epsilon`, `v_prediction` or `sample`.
    #[serde(default = "epsilon")]
    pub prediction_type: String,
    /// `leading`, `trailing` or `linspace`.
    #[serde(default = "spacing")]
    pub timestep_spacing: String,
    /// Added to `leading` timesteps.
    #[serde(default)]
    pub steps_offset: usize,
    /// Whether the last DDIM step goes to ᾱ = 1 (else ᾱ₀).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_alpha_to_one: Option<bool>,
    /// Every other key.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// What the network predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prediction {
    /// The noise ε (SD 1.x, sd-turbo, 2.1-base).
    Epsilon,
    /// v = √ᾱ ε − √(1−ᾱ) x₀ (SD 2.1 768).
    V,
    /// x₀ itself.
    Sample,
}

/// How inference timesteps are spread (diffusers' `timestep_spacing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spacing {
    /// `i·T/n + offset`.
    Leading,
    /// `T − i·T/n − 1` (sd-turbo).
    Trailing,
    /// Evenly from T−1 to 0.
    Linspace,
}

/// DDIM over a diffusers schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    /// ᾱ_t for t in 0..T.
    pub alphas_cumprod: Vec<f64>,
    /// What the model predicts.
    pub prediction: Prediction,
    /// Timestep spacing.
    pub spacing: Spacing,
    /// Offset of `leading` spacing.
    pub steps_offset: usize,
    /// ᾱ after the last step.
    pub final_alpha: f64,
}

impl SchedulerConfig {
    /// The schedule it describes.
    pub fn schedule(&self) -> Result<Schedule, SdError> {
        let t = self.num_train_timesteps;
        if t < 2 || !(self.beta_start > 0.0 && self.beta_start < self.beta_end && self.beta_end < 1.0) {
            return Err(SdError::Config("scheduler: need T ≥ 2 and 0 < beta_start < beta_end < 1".into()));
        }
        let lin = |a: f64, b: f64, i: usize| a + (b - a) * i as f64 / (t - 1) as f64;
        let betas: Vec<f64> = match self.beta_schedule.as_str() {
            "scaled_linear" => (0..t).map(|i| lin(self.beta_start.sqrt(), self.beta_end.sqrt(), i).powi(2)).collect(),
            "linear" => (0..t).map(|i| lin(self.beta_start, self.beta_end, i)).collect(),
            other => return Err(SdError::Config(format!("scheduler: beta_schedule `{other}`"))),
        };
        let alphas_cumprod = crate::models::diffusion::alphas_cumprod(&betas);
        let prediction = match self.prediction_type.as_str() {
            "epsilon" => Prediction::Epsilon,
            "v_prediction" => Prediction::V,
            "sample" => Prediction::Sample,
            other => return Err(SdError::Config(format!("scheduler: prediction_type `{other}`"))),
        };
        let spacing = self.spacing()?;
        // Euler-family schedulers end at σ = 0, i.e. ᾱ = 1 (their `set_alpha_to_one` is a
        // leftover DDIM key); DDIM and PNDM as configured.
        let to_one = self.class_name.starts_with("Euler") || self.set_alpha_to_one == Some(true);
        let final_alpha = if to_one { 1.0 } else { alphas_cumprod[0] };
        Ok(Schedule { alphas_cumprod, prediction, spacing, steps_offset: self.steps_offset, final_alpha })
    }

    /// The configured `timestep_spacing`.
    pub fn spacing(&self) -> Result<Spacing, SdError> {
        match self.timestep_spacing.as_str() {
            "leading" => Ok(Spacing::Leading),
            "trailing" => Ok(Spacing::Trailing),
            "linspace" => Ok(Spacing::Linspace),
            other => Err(SdError::Config(format!("scheduler: timestep_spacing `{other}`"))),
        }
    }
}

impl Schedule {
    /// T.
    pub fn train_steps(&self) -> usize {
        self.alphas_cumprod.len()
    }

    /// The `n` inference timesteps, descending.
    pub fn timesteps(&self, n: usize) -> Vec<usize> {
        let t = self.train_steps();
        let n = n.clamp(1, t);
        let ratio = t / n;
        let mut ts: Vec<usize> = match self.spacing {
            Spacing::Leading => (0..n).map(|i| (i * ratio + self.steps_offset).min(t - 1)).rev().collect(),
            Spacing::Trailing => {
                let r = t as f64 / n as f64;
                (0..n).map(|i| ((t as f64 - i as f64 * r).round() as usize).saturating_sub(1)).collect()
            }
            Spacing::Linspace => {
                (0..n).map(|i| ((t - 1) as f64 * i as f64 / (n.max(2) - 1) as f64).round() as usize).rev().collect()
            }
        };
        ts.dedup();
        ts
    }

    /// x_t = √ᾱ_t x₀ + √(1−ᾱ_t) ε.
    pub fn add_noise(&self, x0: &Tensor, noise: &Tensor, t: usize) -> candle_core::Result<Tensor> {
        let a = self.alphas_cumprod[t];
        (x0 * a.sqrt())? + (noise * (1.0 - a).sqrt())?
    }

    /// One DDIM step (η = 0) from `t` to `t_prev` (`None`: the end) given the model output.
    pub fn step(&self, out: &Tensor, t: usize, t_prev: Option<usize>, x: &Tensor) -> candle_core::Result<Tensor> {
        let a = self.alphas_cumprod[t];
        let a_prev = t_prev.map_or(self.final_alpha, |p| self.alphas_cumprod[p]);
        let (x0, eps) = match self.prediction {
            Prediction::Epsilon => (((x - (out * (1.0 - a).sqrt())?)? / a.sqrt())?, out.clone()),
            Prediction::V => {
                (((x * a.sqrt())? - (out * (1.0 - a).sqrt())?)?, ((out * a.sqrt())? + (x * (1.0 - a).sqrt())?)?)
            }
            Prediction::Sample => (out.clone(), ((x - (out * a.sqrt())?)? / (1.0 - a).sqrt())?),
        };
        (x0 * a_prev.sqrt())? + (eps * (1.0 - a_prev).sqrt())?
    }
}
