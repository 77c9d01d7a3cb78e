//! Stage `eval_lm`: an SAE on held-out language-model activations: reconstruction metrics
//! over the eval store, and the perplexity impact of splicing its reconstruction in at the
//! hook. For residual-stream hooks the forward pass resumes *at* the hook from the cached
//! activations (the layers below are not recomputed).

use crate::data::text::TokenizedContexts;
use crate::metrics::perplexity::{CeBaselines, MeanCe, PerplexityImpact};
use crate::metrics::reconstruction::{evaluate, Reconstruction};
use crate::model::hooks::HookPoint;
use crate::model::GptNeoX;
use crate::sae::Sae;
use crate::store::Store;
use crate::Result;
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use std::path::Path;

pub const NAME: &str = "eval_lm";
pub const VERSION: u32 = 1;
const FILE: &str = "metrics.json";

#[derive(Debug, Clone, Serialize)]
pub struct LmEvalParams {
    pub eval_contexts: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LmMetrics {
    pub reconstruction: Reconstruction,
    pub perplexity: PerplexityImpact,
}

#[allow(clippy::too_many_arguments)]
pub fn run(
    params: &LmEvalParams,
    sae: &Sae,
    model: &GptNeoX,
    hook: HookPoint,
    contexts: &TokenizedContexts,
    eval_store: &Store,
    baselines: &CeBaselines,
    batch: usize,
    out: &Path,
) -> Result<()> {
    let ctx = contexts.context_tokens;
    let d = eval_store.dim();
    let n = (contexts.eval.len() / ctx).min(params.eval_contexts);
    let mut rows = vec![0f32; n * ctx * d];
    eval_store.read_rows(0, n * ctx, &mut rows)?;
    let acts = Tensor::from_vec(rows, (n * ctx, d), &Device::Cpu)?;
    let reconstruction = evaluate(sae, &acts, 4096)?;

    let mut ce = MeanCe::default();
    for (i, chunk) in contexts.eval[..n * ctx].chunks(batch * ctx).enumerate() {
        let b = chunk.len() / ctx;
        let t = Tensor::from_slice(chunk, (b, ctx), &Device::Cpu)?;
        let x = acts.narrow(0, i * batch * ctx, b * ctx)?;
        let recon = sae.decode(&sae.encode(&x)?)?.reshape((b, ctx, d))?;
        let logits = if hook.is_residual() {
            model.forward_from(hook, &recon)?
        } else {
            model.forward_with_replacement(&t, hook, &mut |_| Ok(recon.clone()))?
        };
        ce.add(&logits, &t)?;
    }
    let metrics = LmMetrics {
        reconstruction,
        perplexity: PerplexityImpact::new(baselines, ce.mean()),
    };
    super::write_json(&out.join(FILE), &metrics)
}

pub fn load(entry_dir: &Path) -> Result<LmMetrics> {
    super::read_json(&entry_dir.join(FILE))
}
