//! Which hardware runs the model: `auto`, `cpu`, `cuda` or `metal` (`mlx`).
//!
//! A device that is asked for and cannot be had is an error naming the fix,
//! never a silent fallback: a user who asked for the GPU wants to know.

use std::fmt;
use std::str::FromStr;

use candle_core::Device;

use super::EmbedError;

/// The device a user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// Metal if compiled in and present, then CUDA, then the CPU.
    #[default]
    Auto,
    /// The CPU.
    Cpu,
    /// The first NVIDIA GPU (needs the `cuda` feature).
    Cuda,
    /// The Apple GPU (needs the `metal` feature); `mlx` means this too.
    Metal,
}

impl FromStr for DeviceChoice {
    type Err = EmbedError;

    fn from_str(s: &str) -> Result<Self, EmbedError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" | "" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda),
            "metal" | "mlx" | "mps" => Ok(Self::Metal),
            _ => Err(EmbedError::UnknownDevice {
                value: s.to_owned(),
            }),
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Cpu => "cpu",
            Self::Cuda => "cuda",
            Self::Metal => "metal",
        })
    }
}

impl DeviceChoice {
    /// Opens the device, or says what to build or pass instead.
    pub fn open(self) -> Result<Device, EmbedError> {
        match self {
            Self::Cpu => Ok(Device::Cpu),
            Self::Cuda => open_cuda(),
            Self::Metal => open_metal(),
            Self::Auto => {
                let (device, why) = match open_metal() {
                    Ok(d) => (d, "metal"),
                    Err(metal) => match open_cuda() {
                        Ok(d) => (d, "cuda"),
                        Err(cuda) => {
                            tracing::debug!(%metal, %cuda, "no GPU device");
                            (Device::Cpu, "cpu (no GPU back end compiled in or present)")
                        }
                    },
                };
                tracing::info!(device = why, "device auto-selected");
                Ok(device)
            }
        }
    }
}

/// A short name for logs and status: `cpu`, `cuda:0`, `metal`.
pub(super) fn describe(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".to_owned(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

fn open_cuda() -> Result<Device, EmbedError> {
    if !candle_core::utils::cuda_is_available() {
        return Err(EmbedError::DeviceNotCompiled {
            device: "cuda",
            feature: "cuda",
        });
    }
    Device::new_cuda(0).map_err(|e| EmbedError::DeviceUnavailable {
        device: "cuda",
        reason: e.to_string(),
    })
}

fn open_metal() -> Result<Device, EmbedError> {
    if !candle_core::utils::metal_is_available() {
        return Err(EmbedError::DeviceNotCompiled {
            device: "metal",
            feature: "metal",
        });
    }
    Device::new_metal(0).map_err(|e| EmbedError::DeviceUnavailable {
        device: "metal",
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_spelling() {
        for (s, d) in [
            ("auto", DeviceChoice::Auto),
            ("CPU", DeviceChoice::Cpu),
            ("cuda", DeviceChoice::Cuda),
            ("metal", DeviceChoice::Metal),
            ("mlx", DeviceChoice::Metal),
        ] {
            assert_eq!(s.parse::<DeviceChoice>().unwrap(), d, "{s}");
        }
        let err = "tpu".parse::<DeviceChoice>().unwrap_err().to_string();
        assert!(err.contains("auto, cpu, cuda, metal"), "{err}");
    }

    #[test]
    fn auto_always_opens_something() {
        DeviceChoice::Auto.open().unwrap();
        assert!(matches!(DeviceChoice::Cpu.open().unwrap(), Device::Cpu));
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_not_compiled_names_the_feature_and_the_flag() {
        let err = DeviceChoice::Cuda.open().unwrap_err().to_string();
        assert!(err.contains("--features cuda"), "{err}");
        assert!(err.contains("--device cpu"), "{err}");
    }

    #[cfg(not(feature = "metal"))]
    #[test]
    fn metal_not_compiled_names_the_feature_and_the_flag() {
        let err = "mlx"
            .parse::<DeviceChoice>()
            .unwrap()
            .open()
            .unwrap_err()
            .to_string();
        assert!(err.contains("--features metal"), "{err}");
        assert!(err.contains("--device cpu"), "{err}");
    }
}
