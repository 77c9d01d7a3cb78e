//! Stage `ce_baselines`: the SAE-independent cross-entropies on the evaluation contexts:
//! clean, with the hook's activation zeroed, and with it replaced by its training mean.

use crate::data::text::TokenizedContexts;
use crate::metrics::perplexity::{CeBaselines, MeanCe};
use crate::model::hooks::HookPoint;
use crate::model::GptNeoX;
use crate::Result;
use candle_core::{Device, Tensor};
use serde::Serialize;
use std::path::Path;

pub const NAME: &str = "ce_baselines";
pub const VERSION: u32 = 1;
const FILE: &str = "baselines.json";

#[derive(Debug, Clone, Serialize)]
pub struct BaselineParams {
    pub model_hash: String,
    pub processing: String,
    pub dtype: String,
    pub hook: String,
    pub eval_contexts: usize,
}

pub fn run(
    params: &BaselineParams,
    model: &GptNeoX,
    hook: HookPoint,
    contexts: &TokenizedContexts,
    train_mean: &[f32],
    batch: usize,
    out: &Path,
) -> Result<()> {
    let ctx = contexts.context_tokens;
    let n = (contexts.eval.len() / ctx).min(params.eval_contexts);
    let mean = Tensor::from_slice(train_mean, train_mean.len(), &Device::Cpu)?;
    let (mut clean, mut zero, mut mean_ce) =
        (MeanCe::default(), MeanCe::default(), MeanCe::default());
    for chunk in contexts.eval[..n * ctx].chunks(batch * ctx) {
        let b = chunk.len() / ctx;
        let t = Tensor::from_slice(chunk, (b, ctx), &Device::Cpu)?;
        clean.add(&model.forward(&t)?, &t)?;
        zero.add(
            &model.forward_with_replacement(&t, hook, &mut |x| Ok(x.zeros_like()?))?,
            &t,
        )?;
        mean_ce.add(
            &model.forward_with_replacement(&t, hook, &mut |x| {
                Ok(mean.broadcast_as(x.shape())?.contiguous()?)
            })?,
            &t,
        )?;
    }
    let baselines = CeBaselines {
        ce_clean: clean.mean(),
        ce_zero: zero.mean(),
        ce_mean: mean_ce.mean(),
        predictions: clean.count(),
    };
    super::write_json(&out.join(FILE), &baselines)
}

pub fn load(entry_dir: &Path) -> Result<CeBaselines> {
    super::read_json(&entry_dir.join(FILE))
}
