//! Weight checks: every tensor read is finite, and a tensor the network needs and the file
//! lacks is a typed error.

use super::*;

/// Serves tensors from a file, remembering the first name the network asked for and the file
/// lacked (so a missing tensor is a typed error, not a string).
pub(super) struct Checked {
    tensors: HashMap<String, Tensor>,
    missing: Mutex<Option<String>>,
}

impl SimpleBackend for Checked {
    fn get(&self, s: Shape, name: &str, _: candle_nn::Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let t = self.get_unchecked(name, dtype, dev)?;
        if t.shape() != &s {
            return Err(candle_core::Error::UnexpectedShape {
                msg: format!("shape mismatch for {name}"),
                expected: s,
                got: t.shape().clone(),
            });
        }
        Ok(t)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        match self.tensors.get(name) {
            Some(t) => t.to_dtype(dtype)?.to_device(dev),
            None => {
                self.missing.lock().expect("lock").get_or_insert_with(|| name.to_owned());
                Err(candle_core::Error::CannotFindTensor { path: name.to_owned() })
            }
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
}

/// True when every value of `t` is finite.
pub fn all_finite(t: &Tensor) -> candle_core::Result<bool> {
    if t.dtype().is_int() {
        return Ok(true);
    }
    let s = t.to_dtype(DType::F32)?.flatten_all()?;
    // 0·x is 0 for finite x and NaN for NaN or ±inf; the sum of zeros is 0.
    let z = s.affine(0.0, 0.0)?.sum_all()?.to_scalar::<f32>()?;
    Ok(z == 0.0)
}

pub(super) fn ensure_finite(t: &Tensor, component: &'static str, what: impl FnOnce() -> String) -> Result<(), SdError> {
    if all_finite(t)? { Ok(()) } else { Err(SdError::NonFinite { component, what: what() }) }
}

/// Reads a safetensors file and refuses any non-finite weight.
pub fn load_checked(path: &Path, component: &'static str) -> Result<HashMap<String, Tensor>, SdError> {
    if !path.is_file() {
        return Err(SdError::Io {
            path: path.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no weights"),
        });
    }
    let tensors = candle_core::safetensors::load(path, &Device::Cpu)?;
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    for name in names {
        ensure_finite(&tensors[name], component, || name.clone())?;
    }
    Ok(tensors)
}

/// Builds a network from checked tensors, turning a missing tensor into [`SdError::MissingTensor`].
pub(super) fn build<T>(
    tensors: HashMap<String, Tensor>,
    component: &'static str,
    device: &Device,
    f: impl FnOnce(VarBuilder) -> candle_core::Result<T>,
) -> Result<T, SdError> {
    let backend = std::sync::Arc::new(Checked { tensors, missing: Mutex::new(None) });
    struct Shared(std::sync::Arc<Checked>);
    impl SimpleBackend for Shared {
        fn get(&self, s: Shape, n: &str, h: candle_nn::Init, d: DType, dev: &Device) -> candle_core::Result<Tensor> {
            self.0.get(s, n, h, d, dev)
        }
        fn get_unchecked(&self, n: &str, d: DType, dev: &Device) -> candle_core::Result<Tensor> {
            self.0.get_unchecked(n, d, dev)
        }
        fn contains_tensor(&self, n: &str) -> bool {
            self.0.contains_tensor(n)
        }
    }
    let vb = VarBuilder::from_backend(Box::new(Shared(backend.clone())), DType::F32, device.clone());
    f(vb).map_err(|e| match backend.missing.lock().expect("lock").take() {
        Some(name) => SdError::MissingTensor { component, name },
        None => SdError::Candle(e),
    })
}
