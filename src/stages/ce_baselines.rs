//! Stage `ce_baselines`: the SAE-independent cross-entropies on the evaluation contexts:
//! clean, with the hook's activation zeroed, and with it replaced by its training mean.

use super::harvest::Harvest;
use super::tokenize::Tokenize;
use crate::cache::Entry;
use crate::metrics::perplexity::{CeBaselines as Baselines, MeanCe};
use crate::pipeline::external::{ModelKey, ModelRef};
use crate::pipeline::{Graph, Handle, RunCtx, Stage, StageCtx, StageInputs};
use crate::spec::resolve::DataParams;
use crate::spec::ResolvedSpec;
use crate::model::{Losses, HookPoint, Pass, UnembeddingPrecision};
use crate::Result;
use candle_core::Tensor;
use serde::Serialize;
use std::path::Path;

pub const NAME: &str = "ce_baselines";
/// 2: the loss is computed in chunks without materialising the logits (last-bit changes).
/// 3: on the CPU, the unembedding and the loss in vocabulary tiles; at a residual hook each
/// ablated pass runs one sequence for the whole batch (last-bit changes).
/// 4: the model's `exp` (GELU, attention softmax, loss) rounds by shift-and-add (last-bit changes).
pub const VERSION: u32 = 4;
const FILE: &str = "baselines.json";

pub struct CeBaselines;

#[derive(Debug, Clone, Serialize)]
pub struct BaselineParams {
    #[serde(flatten)]
    pub model: ModelKey,
    pub eval_contexts: usize,
    #[serde(skip_serializing_if = "UnembeddingPrecision::is_f32")]
    pub unembedding: UnembeddingPrecision,
}

pub struct BaselineInputs {
    pub tokens: Handle<Tokenize>,
    pub harvest: Handle<Harvest>,
    pub model: ModelRef,
}

impl StageInputs for BaselineInputs {
    fn nodes(&self) -> Vec<usize> {
        vec![self.tokens.id(), self.harvest.id()]
    }

    fn model(&self) -> Option<&ModelRef> {
        Some(&self.model)
    }
}

impl Stage for CeBaselines {
    const NAME: &'static str = NAME;
    const VERSION: u32 = VERSION;
    const DESCRIPTION: &'static str =
        "clean, zero-ablated and mean-ablated cross-entropy on the eval contexts";
    type Params = BaselineParams;
    type Inputs = BaselineInputs;
    type Output = Baselines;

    fn plan(graph: &mut Graph, spec: &ResolvedSpec) -> Result<()> {
        let (DataParams::Text(t), Some(tokens), Some(harvest)) = (
            &spec.data,
            graph.only::<Tokenize>(),
            graph.only::<Harvest>(),
        ) else {
            return Ok(());
        };
        let params = BaselineParams {
            model: ModelKey::of(t),
            eval_contexts: t.eval_contexts,
            unembedding: t.eval_unembedding,
        };
        let label = format!("clean / zero / mean CE at {}", t.hook.name());
        let inputs = BaselineInputs {
            tokens,
            harvest,
            model: ModelRef::of(t),
        };
        graph.add::<Self>(label, params, inputs)?;
        Ok(())
    }

    fn run(ctx: &StageCtx, params: &BaselineParams, inputs: &BaselineInputs, out: &Path) -> Result<()> {
        let contexts = ctx.input(inputs.tokens)?;
        let model = ctx.model(&inputs.model)?;
        let train_mean = ctx.input(inputs.harvest)?.train.stats().mean.clone();
        let (hook, batch) = (inputs.model.hook, inputs.model.batch);
        let ctx_len = contexts.context_tokens;
        let n = (contexts.eval.len() / ctx_len).min(params.eval_contexts);
        let mean = Tensor::from_slice(&train_mean, train_mean.len(), &ctx.device)?;
        let (mut clean, mut zero, mut mean_ce) =
            (MeanCe::default(), MeanCe::default(), MeanCe::default());
        for chunk in contexts.eval[..n * ctx_len].chunks(batch * ctx_len) {
            let b = chunk.len() / ctx_len;
            let t = Tensor::from_slice(chunk, (b, ctx_len), &ctx.device)?;
            let [c, z, m] = baseline_nlls(&model.losses(params.unembedding), hook, &mean, &t)?;
            clean.add_sum(c);
            zero.add_sum(z);
            mean_ce.add_sum(m);
        }
        let baselines = Baselines {
            ce_clean: clean.mean(),
            ce_zero: zero.mean(),
            ce_mean: mean_ce.mean(),
            predictions: clean.count(),
        };
        super::write_json(&out.join(FILE), &baselines)
    }

    fn load(_ctx: &RunCtx, entry: &Entry) -> Result<Baselines> {
        super::read_json(&entry.file(FILE))
    }
}

/// Summed next-token NLL and prediction count of one batch of `tokens` (b, s): clean, with
/// the activation at `hook` zeroed, and with it replaced by `mean` (d). Losses are computed
/// without materialising the logits. At a residual-stream hook each ablated pass runs once
/// for the whole batch (`Losses::next_token_nll_uniform`: the ablated activation is the
/// same at every position, so everything after the hook is too).
pub fn baseline_nlls(
    losses: &Losses,
    hook: HookPoint,
    mean: &Tensor,
    tokens: &Tensor,
) -> Result<[(f64, usize); 3]> {
    let clean = losses.next_token_nll(Pass::Clean(tokens), tokens)?;
    let zero = losses.next_token_nll_uniform(tokens, hook, &mean.zeros_like()?)?;
    let mean_ablated = losses.next_token_nll_uniform(tokens, hook, mean)?;
    Ok([clean, zero, mean_ablated])
}
