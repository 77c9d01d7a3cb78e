//! Where tensors live.

/// Host memory: where the flat-buffer SAE trainer, the data generators and the tables keep
/// their tensors, whatever device a run computes on. The run's compute device is not chosen
/// here; it comes from the run context and reaches the model and the trainer as a parameter.
pub const HOST: candle_core::Device = candle_core::Device::Cpu;
