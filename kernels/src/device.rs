//! `device` owns the choice of compute device at start: `auto` takes the first CUDA device when
//! this is the `cuda` build and one is usable, and falls back to the CPU otherwise; `cpu` and
//! `cuda[:N]` are explicit (an explicit CUDA device that cannot be used is an error, not a
//! fallback). A CUDA device is only chosen after every kernel source has compiled and loaded on
//! it, so a broken toolchain or driver shows at start. [`Selected::describe`] is the log line.
//! The CPU build never touches CUDA.

use std::fmt;
use std::str::FromStr;

use candle_core::Device;

/// What the operator asked for (`--device`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// The first CUDA device if usable, else the CPU.
    #[default]
    Auto,
    /// The CPU.
    Cpu,
    /// CUDA device N.
    Cuda(usize),
}

impl FromStr for DeviceChoice {
    type Err = DeviceError;

    fn from_str(s: &str) -> Result<Self, DeviceError> {
        match s {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" => Ok(DeviceChoice::Cuda(0)),
            _ => match s.strip_prefix("cuda:").map(str::parse) {
                Some(Ok(n)) => Ok(DeviceChoice::Cuda(n)),
                _ => Err(DeviceError::Unknown(s.to_owned())),
            },
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceChoice::Auto => f.write_str("auto"),
            DeviceChoice::Cpu => f.write_str("cpu"),
            DeviceChoice::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// Why no device could be chosen.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// Not `auto`, `cpu`, `cuda` or `cuda:N`.
    #[error("unknown device {0:?}: expected auto, cpu, cuda or cuda:N")]
    Unknown(String),
    /// CUDA was asked for in the CPU build.
    #[error(
        "this reelforge was built without CUDA; build the CUDA binary (deploy/scripts/build-cuda.sh, \
         cargo feature `cuda`) or use --device cpu"
    )]
    NotBuilt,
    /// The CUDA device could not be opened or the kernels did not compile on it.
    #[error("CUDA device {ordinal} is not usable: {message}")]
    Unusable {
        /// The device asked for.
        ordinal: usize,
        /// The driver's, NVRTC's or candle's message.
        message: String,
    },
}

/// The device chosen, with what the log line and heartbeats say about it.
#[derive(Debug, Clone)]
pub struct Selected {
    /// Where models and ops run.
    pub device: Device,
    /// `cpu` or `cuda:N`.
    pub label: String,
    /// The GPU's name and architecture, or why the CPU was chosen.
    pub detail: String,
}

impl Selected {
    /// One line for the log: the device and why.
    pub fn describe(&self) -> String {
        format!("{} ({})", self.label, self.detail)
    }

    fn cpu(detail: impl Into<String>) -> Self {
        Selected { device: Device::Cpu, label: "cpu".into(), detail: detail.into() }
    }
}

/// Chooses the device for `choice` (see the module docs).
pub fn select(choice: DeviceChoice) -> Result<Selected, DeviceError> {
    match choice {
        DeviceChoice::Cpu => Ok(Selected::cpu("asked for")),
        DeviceChoice::Cuda(n) => open_cuda(n),
        DeviceChoice::Auto => match open_cuda(0) {
            Ok(s) => Ok(s),
            Err(DeviceError::NotBuilt) => Ok(Selected::cpu("auto: built without CUDA")),
            Err(e) => Ok(Selected::cpu(format!("auto: {e}; falling back to the CPU"))),
        },
    }
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(_ordinal: usize) -> Result<Selected, DeviceError> {
    Err(DeviceError::NotBuilt)
}

#[cfg(feature = "cuda")]
fn open_cuda(ordinal: usize) -> Result<Selected, DeviceError> {
    let unusable = |e: &dyn fmt::Display| DeviceError::Unusable { ordinal, message: e.to_string() };
    let device = Device::new_cuda(ordinal).map_err(|e| unusable(&e))?;
    let cuda = device.as_cuda_device().map_err(|e| unusable(&e))?;
    crate::cuda::warm_up(cuda).map_err(|e| unusable(&e))?;
    let ctx = cuda.cuda_stream().context().clone();
    let name = ctx.name().map_err(|e| unusable(&e))?;
    let (major, minor) = ctx.compute_capability().map_err(|e| unusable(&e))?;
    Ok(Selected { device, label: format!("cuda:{ordinal}"), detail: format!("{name}, sm_{major}{minor}") })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_choices() {
        for (s, c) in [("auto", DeviceChoice::Auto), ("cpu", DeviceChoice::Cpu), ("cuda:3", DeviceChoice::Cuda(3))] {
            assert_eq!(s.parse::<DeviceChoice>().unwrap(), c);
            assert_eq!(c.to_string(), s);
        }
        assert_eq!("cuda".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cuda(0));
        for bad in ["gpu", "cuda:", "cuda:x", "CPU"] {
            assert!(matches!(bad.parse::<DeviceChoice>(), Err(DeviceError::Unknown(_))), "{bad}");
        }
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn the_cpu_build_falls_back_on_auto_and_refuses_cuda() {
        let s = select(DeviceChoice::Auto).unwrap();
        assert!(matches!(s.device, Device::Cpu));
        assert_eq!(s.describe(), "cpu (auto: built without CUDA)");
        assert!(matches!(select(DeviceChoice::Cuda(0)), Err(DeviceError::NotBuilt)));
        assert_eq!(select(DeviceChoice::Cpu).unwrap().label, "cpu");
    }
}
