//! `init` owns the one seeded weight initialiser of our models (candle's CPU RNG cannot be
//! seeded): every variable of a freshly built network, in sorted-name order, from one
//! [`SeededNoise`] stream, each filled as the model's rule says ([`Init`]). The same seed gives
//! the same weights, bit for bit, on every machine. Used for the tiny test models, the demo's
//! untrained starting points, and parity fixtures of real-sized configurations.

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use candle_nn::VarMap;

use super::diffusion::SeededNoise;

/// How one variable is filled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// All zeros (biases, zero-initialised output layers).
    Zeros,
    /// All ones (norm scales).
    Ones,
    /// Normal with mean 0 and this standard deviation.
    Normal(f64),
    /// Uniform in ±this bound.
    Uniform(f64),
}

impl Init {
    /// Variance scaling with fan-avg, uniform (NCSN++'s and diffusers' `default_init`): bound
    /// √(3 / ((fan_in + fan_out) / 2)), the receptive field counted in both fans.
    pub fn fan_avg_uniform(shape: &[usize]) -> Init {
        let receptive: usize = shape.iter().skip(2).product();
        let (fan_in, fan_out) = (shape.get(1).copied().unwrap_or(1) * receptive, shape[0] * receptive);
        Init::Uniform((3.0 / ((fan_in + fan_out) as f64 / 2.0)).sqrt())
    }

    /// LeCun normal: standard deviation 1/√fan_in.
    pub fn lecun_normal(shape: &[usize]) -> Init {
        let fan_in: usize = shape.iter().skip(1).product();
        Init::Normal(1.0 / (fan_in.max(1) as f64).sqrt())
    }

    fn values(self, n: usize, rng: &mut SeededNoise) -> Vec<f32> {
        match self {
            Init::Zeros => vec![0.0; n],
            Init::Ones => vec![1.0; n],
            Init::Normal(std) => (0..n).map(|_| (rng.normal() * std) as f32).collect(),
            Init::Uniform(bound) => (0..n).map(|_| ((rng.uniform() * 2.0 - 1.0) * bound) as f32).collect(),
        }
    }
}

/// Fills every variable of `varmap` (sorted by name, one stream from `rng`) as `rule` says for
/// its name and shape; sets the variables and returns their values by name.
pub fn seeded(
    varmap: &VarMap,
    rng: &mut SeededNoise,
    rule: impl Fn(&str, &[usize]) -> Init,
) -> candle_core::Result<HashMap<String, Tensor>> {
    let data = varmap.data().lock().expect("varmap lock");
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    let mut out = HashMap::with_capacity(names.len());
    for name in names {
        let var = &data[name];
        let shape = var.dims().to_vec();
        let n: usize = shape.iter().product();
        let t = Tensor::from_vec(rule(name, &shape).values(n, rng), shape, &Device::Cpu)?;
        var.set(&t)?;
        out.insert(name.clone(), t);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;
    use candle_nn::VarBuilder;

    #[test]
    fn one_seed_gives_the_same_weights_and_each_rule_its_values() {
        let build = || {
            let vm = VarMap::new();
            let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
            candle_nn::linear(8, 4, vb.pp("a")).unwrap();
            candle_nn::layer_norm(4, 1e-5, vb.pp("n")).unwrap();
            vm
        };
        let rule = |name: &str, shape: &[usize]| match name {
            n if n.ends_with("bias") => Init::Zeros,
            n if n.starts_with("n.") => Init::Ones,
            _ => Init::fan_avg_uniform(shape),
        };
        let (a, b) = (build(), build());
        let ta = seeded(&a, &mut SeededNoise::new(7), rule).unwrap();
        let tb = seeded(&b, &mut SeededNoise::new(7), rule).unwrap();
        let w = ta["a.weight"].flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(w, tb["a.weight"].flatten_all().unwrap().to_vec1::<f32>().unwrap());
        let bound = (3.0f64 / 6.0).sqrt() as f32;
        assert!(w.iter().all(|x| x.abs() <= bound) && w.iter().any(|x| *x != 0.0));
        assert!(ta["a.bias"].flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().all(|x| *x == 0.0));
        assert!(ta["n.weight"].flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().all(|x| *x == 1.0));
        // The variables themselves hold the values.
        let held = a.data().lock().unwrap()["a.weight"].as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(held, w);
    }
}
