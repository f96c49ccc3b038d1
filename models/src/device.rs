use fedchain_model_core::{ModelError, Result};
use std::fmt;
use std::str::FromStr;
use tch::{Cuda, Device};

/// Which device to train on, as asked by the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// The first CUDA GPU when libtorch sees one, else the CPU.
    #[default]
    Auto,
    /// The CPU.
    Cpu,
    /// A specific CUDA GPU; an error when it is not there.
    Cuda(usize),
}

impl FromStr for DeviceChoice {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" | "gpu" => Ok(DeviceChoice::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|i| i.parse().ok())
                .map(DeviceChoice::Cuda)
                .ok_or_else(|| {
                    ModelError::Device(format!(
                        "unknown device '{s}'; use auto, cpu, cuda or cuda:N"
                    ))
                }),
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceChoice::Auto => f.write_str("auto"),
            DeviceChoice::Cpu => f.write_str("cpu"),
            DeviceChoice::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

/// Resolves a choice to a libtorch device. `Auto` picks CUDA when `tch::Cuda::is_available()`.
///
/// Asking for CUDA where libtorch sees none is an error rather than a silent fall-back, because a
/// hospital that provisioned a GPU wants to know when it is not used.
pub fn pick_device(choice: DeviceChoice) -> Result<Device> {
    match choice {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Auto => Ok(if Cuda::is_available() {
            Device::Cuda(0)
        } else {
            Device::Cpu
        }),
        DeviceChoice::Cuda(i) => {
            let count = Cuda::device_count().max(0) as usize;
            if i < count {
                Ok(Device::Cuda(i))
            } else if count == 0 {
                Err(ModelError::Device(
                    "CUDA was requested, but libtorch sees no CUDA device (no NVIDIA driver, no GPU, \
                     or a binary built without libtorch_cuda); use --device cpu or auto"
                        .into(),
                ))
            } else {
                Err(ModelError::Device(format!(
                    "cuda:{i} was requested, but only {count} CUDA device(s) are visible"
                )))
            }
        }
    }
}

/// A one-line description for logs, e.g. `cuda:0 (1 CUDA device visible)` or
/// `cpu (2 threads; no CUDA device visible)`.
pub fn describe_device(device: Device) -> String {
    let count = Cuda::device_count();
    match device {
        Device::Cuda(i) => format!("cuda:{i} ({count} CUDA device(s) visible)"),
        _ => {
            let why = if count > 0 {
                format!("{count} CUDA device(s) visible but not selected")
            } else {
                "no CUDA device visible".to_string()
            };
            format!("cpu ({} threads; {why})", tch::get_num_threads())
        }
    }
}
