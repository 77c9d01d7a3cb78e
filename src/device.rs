//! Where tensors live: host memory for buffers, and the compute device a run selects with
//! `run.device`.

use crate::{Error, Result};
use candle_core::{DType, Device, Storage, StorageRef, Tensor};
use std::fmt;

/// Host memory: where the flat-buffer SAE trainer, the data generators and the tables keep
/// their tensors, whatever device a run computes on. The run's compute device is not chosen
/// here; it comes from the run context and reaches the model and the trainer as a parameter.
pub const HOST: Device = Device::Cpu;

/// A contiguous f32 tensor's values in host memory, borrowed: the tensor's storage stays
/// locked for reading while this lives. For kernels that work on slices (`gemm`, vectorised
/// loops) without copying the tensor out.
pub struct HostF32<'a> {
    storage: StorageRef<'a>,
    start: usize,
    end: usize,
}

impl<'a> HostF32<'a> {
    /// `None` unless `t` is f32, contiguous and on the CPU.
    pub fn of(t: &'a Tensor) -> Option<HostF32<'a>> {
        if t.dtype() != DType::F32 {
            return None;
        }
        let (storage, layout) = t.storage_and_layout();
        let (start, end) = layout.contiguous_offsets()?;
        matches!(&*storage, Storage::Cpu(_)).then_some(HostF32 {
            storage,
            start,
            end,
        })
    }

    pub fn as_slice(&self) -> &[f32] {
        // `of` admitted only f32 CPU storage, so the empty fallbacks are never taken.
        match &*self.storage {
            Storage::Cpu(cpu) => cpu
                .as_slice::<f32>()
                .map_or(&[], |s| &s[self.start..self.end]),
            _ => &[],
        }
    }
}

/// The spec key that selects the compute device.
pub const DEVICE_KEY: &str = "run.device";

/// `run.device`: `"cpu"` (the default), `"cuda"` (GPU 0) or `"cuda:N"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    #[default]
    Cpu,
    /// A CUDA GPU by ordinal.
    Cuda(usize),
}

impl DeviceChoice {
    /// Parse a `run.device` value; the error says what was expected.
    pub fn parse(s: &str) -> std::result::Result<DeviceChoice, String> {
        let expected =
            || format!("expected \"cpu\", \"cuda\" or \"cuda:N\" (N a GPU index), got \"{s}\"");
        match s {
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" => Ok(DeviceChoice::Cuda(0)),
            _ => {
                let n = s.strip_prefix("cuda:").ok_or_else(expected)?;
                // `usize::from_str` takes a leading '+'; an ordinal is digits only.
                if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(expected());
                }
                n.parse().map(DeviceChoice::Cuda).map_err(|_| expected())
            }
        }
    }

    /// What the keys of device-dependent stages include (`Stage::SAME_ON_EVERY_DEVICE`):
    /// nothing on the CPU, so caches made before the GPU build stay valid, and the backend
    /// name elsewhere. Not the ordinal: every GPU of a machine computes the same bits, and a
    /// key must come from the spec alone (a report job on another node must find the
    /// entries), so the GPU model cannot enter it either.
    pub fn key_material(self) -> Option<&'static str> {
        match self {
            DeviceChoice::Cpu => None,
            DeviceChoice::Cuda(_) => Some("cuda"),
        }
    }

    /// Whether this binary can compute on the device (CUDA needs the `cuda` feature); the
    /// error says how to get one that can.
    pub fn check_built(self) -> std::result::Result<(), String> {
        match self {
            DeviceChoice::Cuda(_) if !cfg!(feature = "cuda") => Err(format!(
                "\"{self}\": this saerun was built without the `cuda` feature; rebuild with \
                 `cargo build --release --features cuda` (needs nvcc, see the README's GPU \
                 section) or set {DEVICE_KEY} = \"cpu\""
            )),
            _ => Ok(()),
        }
    }

    /// The candle device. Fails (exit 1) when the GPU cannot be opened: no driver, no such
    /// ordinal.
    pub fn open(self) -> Result<Device> {
        self.check_built()
            .map_err(|e| Error::input(format!("{DEVICE_KEY} = {e}")))?;
        match self {
            DeviceChoice::Cpu => Ok(HOST),
            DeviceChoice::Cuda(n) => Device::new_cuda(n).map_err(|e| {
                Error::run(format!(
                    "{DEVICE_KEY} = \"{self}\": cannot open CUDA device {n}: {e}"
                ))
            }),
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceChoice::Cpu => f.write_str("cpu"),
            DeviceChoice::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_forms() {
        assert_eq!(DeviceChoice::parse("cpu"), Ok(DeviceChoice::Cpu));
        assert_eq!(DeviceChoice::parse("cuda"), Ok(DeviceChoice::Cuda(0)));
        assert_eq!(DeviceChoice::parse("cuda:0"), Ok(DeviceChoice::Cuda(0)));
        assert_eq!(DeviceChoice::parse("cuda:3"), Ok(DeviceChoice::Cuda(3)));
        assert_eq!(DeviceChoice::Cuda(3).to_string(), "cuda:3");
        assert_eq!(DeviceChoice::Cpu.to_string(), "cpu");
    }

    #[test]
    fn rejects_everything_else() {
        for bad in [
            "gpu", "cuda:x", "cuda:", "cuda:+1", "cuda:-1", "CUDA", " cpu", "cuda:1:2", "metal", "",
        ] {
            let err = DeviceChoice::parse(bad).expect_err(bad);
            assert!(err.contains(&format!("got \"{bad}\"")), "{bad}: {err}");
            assert!(err.contains("\"cuda:N\""), "{bad}: {err}");
        }
    }

    #[test]
    fn only_non_cpu_devices_enter_keys() {
        assert_eq!(DeviceChoice::Cpu.key_material(), None);
        assert_eq!(DeviceChoice::Cuda(0).key_material(), Some("cuda"));
        assert_eq!(
            DeviceChoice::Cuda(0).key_material(),
            DeviceChoice::Cuda(1).key_material()
        );
    }

    #[test]
    fn cuda_needs_the_feature() {
        assert!(DeviceChoice::Cpu.check_built().is_ok());
        let cuda = DeviceChoice::Cuda(1).check_built();
        if cfg!(feature = "cuda") {
            assert!(cuda.is_ok());
        } else {
            let msg = cuda.unwrap_err();
            assert!(msg.contains("\"cuda:1\""), "{msg}");
            assert!(msg.contains("without the `cuda` feature"), "{msg}");
            let err = DeviceChoice::Cuda(1).open().unwrap_err();
            assert_eq!(err.exit_code(), 2, "{err}");
        }
    }
}
