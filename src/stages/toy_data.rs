//! Stage `toy_data`: ground-truth features plus train and eval samples.

use crate::cache::Entry;
use crate::data::toy::{generate, ToyParams};
use crate::{Error, Result};
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::Path;

pub const NAME: &str = "toy_data";
pub const VERSION: u32 = 1;

const FILE: &str = "data.safetensors";

pub fn run(params: &ToyParams, out: &Path) -> Result<()> {
    let data = generate(params)?;
    let (features, train, eval) = data.tensors(params)?;
    let tensors: HashMap<String, Tensor> =
        [("features", features), ("train", train), ("eval", eval)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
    candle_core::safetensors::save(&tensors, out.join(FILE))?;
    Ok(())
}

/// The stage's tensors: `features` (n_features, d), `train` (n, d), `eval` (m, d).
pub struct ToySplits {
    pub features: Tensor,
    pub train: Tensor,
    pub eval: Tensor,
}

pub fn load(entry: &Entry) -> Result<ToySplits> {
    let path = entry.file(FILE);
    let mut t = candle_core::safetensors::load(&path, &Device::Cpu)?;
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
