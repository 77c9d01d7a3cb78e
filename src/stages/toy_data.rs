//! Stage `toy_data`: ground-truth features plus train and eval samples.

use crate::cache::Entry;
use crate::data::toy::{generate, ToyParams};
use crate::pipeline::{Graph, RunCtx, Stage, StageCtx};
use crate::spec::resolve::DataParams;
use crate::spec::ResolvedSpec;
use crate::{Error, Result};
use candle_core::Tensor;
use std::collections::HashMap;
use std::path::Path;

pub const NAME: &str = "toy_data";
pub const VERSION: u32 = 1;

const FILE: &str = "data.safetensors";

pub struct ToyData;

/// The stage's tensors: `features` (n_features, d), `train` (n, d), `eval` (m, d).
pub struct ToySplits {
    pub features: Tensor,
    pub train: Tensor,
    pub eval: Tensor,
}

impl Stage for ToyData {
    const NAME: &'static str = NAME;
    const VERSION: u32 = VERSION;
    const DESCRIPTION: &'static str = "synthetic ground-truth features and train/eval samples";
    // Host-only: CPU and GPU runs share the entry.
    const SAME_ON_EVERY_DEVICE: bool = true;
    type Params = ToyParams;
    type Inputs = ();
    type Output = ToySplits;

    fn plan(graph: &mut Graph, spec: &ResolvedSpec) -> Result<()> {
        if let DataParams::Toy(toy) = &spec.data {
            let label = format!(
                "{} features in {} dims, {} samples{}",
                toy.n_features,
                toy.activation_dim,
                toy.train_samples,
                if toy.correlated { ", correlated" } else { "" }
            );
            graph.add::<Self>(label, toy.clone(), ())?;
        }
        Ok(())
    }

    fn run(_ctx: &StageCtx, params: &ToyParams, _inputs: &(), out: &Path) -> Result<()> {
        let data = generate(params)?;
        let (features, train, eval) = data.tensors(params)?;
        let tensors: HashMap<String, Tensor> =
            [("features", features), ("train", train), ("eval", eval)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
        // candle's error would not name the file (a full disk read "I/O error: No space
        // left on device" with no path).
        let path = out.join(FILE);
        candle_core::safetensors::save(&tensors, &path)
            .map_err(|e| Error::run(format!("cannot write {}: {e}", path.display())))?;
        Ok(())
    }

    fn load(ctx: &RunCtx, entry: &Entry) -> Result<ToySplits> {
        let path = entry.file(FILE);
        let mut t = candle_core::safetensors::load(&path, &ctx.device)?;
        let mut take = |k: &str| {
            t.remove(k)
                .ok_or_else(|| Error::run(format!("{}: missing tensor `{k}`", path.display())))
        };
        Ok(ToySplits {
            features: take("features")?,
            train: take("train")?,
            eval: take("eval")?,
        })
    }
}
