//! Stage `train_sae`: one SAE per grid point, trained on the data stage's training split.

use crate::cache::Entry;
use crate::sae::grads::Activation;
use crate::sae::train::{train, BatchSource, CurvePoint, InMemory, TrainJob};
use crate::sae::Sae;
use crate::spec::resolve::TrainSchedule;
use crate::spec::Architecture;
use crate::Result;
use candle_core::Tensor;
use serde::Serialize;
use std::path::Path;

pub const NAME: &str = "train_sae";
pub const VERSION: u32 = 1;

const SAE_FILE: &str = "sae.safetensors";
const CURVE_FILE: &str = "curve.json";

#[derive(Debug, Clone, Serialize)]
pub struct TrainParams {
    pub architecture: Architecture,
    pub d_in: usize,
    pub d_sae: usize,
    pub l1: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub k: Option<usize>,
    pub seed: u64,
    pub schedule: TrainSchedule,
}

impl TrainParams {
    pub fn activation(&self) -> Activation {
        match (self.architecture, self.k) {
            (Architecture::TopK, Some(k)) => Activation::TopK(k),
            _ => Activation::ReluL1(self.l1),
        }
    }
}

/// Train on samples held in memory (toy data).
pub fn run(
    params: &TrainParams,
    train_data: &Tensor,
    out: &Path,
    on_step: impl FnMut(u64, Option<&CurvePoint>),
) -> Result<()> {
    let mut source = InMemory::new(train_data, params.seed)?;
    run_on(params, &mut source, out, on_step)
}

/// Train on any batch source (an activation store for language models).
pub fn run_on(
    params: &TrainParams,
    source: &mut dyn BatchSource,
    out: &Path,
    on_step: impl FnMut(u64, Option<&CurvePoint>),
) -> Result<()> {
    let job = TrainJob {
        d_sae: params.d_sae,
        activation: params.activation(),
        seed: params.seed,
        schedule: &params.schedule,
        path: crate::sae::grads::StepPath::Fused,
    };
    let (sae, curve) = train(source, &job, on_step)?;
    sae.save(&out.join(SAE_FILE))?;
    super::write_json(&out.join(CURVE_FILE), &curve)
}

pub fn load_sae(entry: &Entry) -> Result<Sae> {
    Sae::load(&entry.file(SAE_FILE), &crate::device::HOST)
}

pub fn load_curve(entry: &Entry) -> Result<Vec<CurvePoint>> {
    super::read_json(&entry.file(CURVE_FILE))
}
