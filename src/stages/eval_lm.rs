//! Stage `eval_lm`: an SAE on held-out language-model activations: reconstruction metrics
//! over the eval store, and the perplexity impact of splicing its reconstruction in at the
//! hook. For residual-stream hooks the forward pass resumes *at* the hook from the cached
//! activations (the layers below are not recomputed).

use super::ce_baselines::CeBaselines;
use super::harvest::Harvest;
use super::tokenize::Tokenize;
use super::sae_node::{sae_id, SaeNode};
use crate::cache::Entry;
use crate::metrics::perplexity::{MeanCe, PerplexityImpact};
use crate::metrics::reconstruction::{Reconstruction, ReconstructionSums};
use crate::pipeline::external::ModelRef;
use crate::pipeline::{Graph, Handle, RunCtx, Stage, StageCtx, StageInputs, StageResults};
use crate::spec::resolve::DataParams;
use crate::spec::ResolvedSpec;
use crate::model::{Losses, HookPoint, UnembeddingPrecision};
use crate::sae::Sae;
use crate::Result;
use candle_core::Tensor;
use serde::{Deserialize, Serialize};
use std::path::Path;

pub const NAME: &str = "eval_lm";
/// 2: the loss is computed in chunks without materialising the logits (last-bit changes).
/// 3: on the CPU, the unembedding and the loss in vocabulary tiles (last-bit changes).
/// 4: the model's `exp` (GELU, attention softmax, loss) rounds by shift-and-add; the SAE's
/// reconstruction on host buffers, its decoder sparse when few codes fire (last-bit changes).
pub const VERSION: u32 = 4;
const FILE: &str = "metrics.json";

pub struct EvalLm;

#[derive(Debug, Clone, Serialize)]
pub struct LmEvalParams {
    pub eval_contexts: usize,
    #[serde(skip_serializing_if = "UnembeddingPrecision::is_f32")]
    pub unembedding: UnembeddingPrecision,
}

pub struct LmEvalInputs {
    pub tokens: Handle<Tokenize>,
    pub harvest: Handle<Harvest>,
    pub sae: SaeNode,
    pub baselines: Handle<CeBaselines>,
    pub model: ModelRef,
}

impl StageInputs for LmEvalInputs {
    fn nodes(&self) -> Vec<usize> {
        vec![
            self.tokens.id(),
            self.harvest.id(),
            self.sae.id(),
            self.baselines.id(),
        ]
    }

    fn model(&self) -> Option<&ModelRef> {
        Some(&self.model)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LmMetrics {
    pub reconstruction: Reconstruction,
    pub perplexity: PerplexityImpact,
}

impl Stage for EvalLm {
    const NAME: &'static str = NAME;
    const VERSION: u32 = VERSION;
    const DESCRIPTION: &'static str =
        "reconstruction on held-out activations and the perplexity impact of splicing the SAE in";
    type Params = LmEvalParams;
    type Inputs = LmEvalInputs;
    type Output = LmMetrics;

    fn plan(graph: &mut Graph, spec: &ResolvedSpec) -> Result<()> {
        let (DataParams::Text(t), Some(tokens), Some(harvest), Some(baselines)) = (
            &spec.data,
            graph.only::<Tokenize>(),
            graph.only::<Harvest>(),
            graph.only::<CeBaselines>(),
        ) else {
            return Ok(());
        };
        for sae in SaeNode::all(graph) {
            let params = LmEvalParams {
                eval_contexts: t.eval_contexts,
                unembedding: t.eval_unembedding,
            };
            let inputs = LmEvalInputs {
                tokens,
                harvest,
                sae,
                baselines,
                model: ModelRef::of(t),
            };
            let label = graph.nodes()[sae.id()].label.clone();
            graph.add::<Self>(label, params, inputs)?;
        }
        Ok(())
    }

    fn run(ctx: &StageCtx, params: &LmEvalParams, inputs: &LmEvalInputs, out: &Path) -> Result<()> {
        let contexts = ctx.input(inputs.tokens)?;
        let eval_store = ctx.input(inputs.harvest)?.eval.clone();
        let sae = inputs.sae.load(ctx)?;
        let baselines = ctx.input(inputs.baselines)?;
        let model = ctx.model(&inputs.model)?;
        let losses = model.losses(params.unembedding);
        let (hook, batch) = (inputs.model.hook, inputs.model.batch);

        let ctx_len = contexts.context_tokens;
        let d = eval_store.dim();
        let n = (contexts.eval.len() / ctx_len).min(params.eval_contexts);
        let mut rows = vec![0f32; n * ctx_len * d];
        eval_store.read_rows(0, n * ctx_len, &mut rows)?;
        let acts = Tensor::from_vec(rows, (n * ctx_len, d), &ctx.device)?;

        // One reconstruction per batch serves both the reconstruction metrics and the splice.
        let mut sums = ReconstructionSums::new(&acts, sae.d_sae())?;
        let mut ce = MeanCe::default();
        for (i, chunk) in contexts.eval[..n * ctx_len]
            .chunks(batch * ctx_len)
            .enumerate()
        {
            let b = chunk.len() / ctx_len;
            let t = Tensor::from_slice(chunk, (b, ctx_len), &ctx.device)?;
            let x = acts.narrow(0, i * batch * ctx_len, b * ctx_len)?;
            ce.add_sum(spliced_nll(&losses, &sae, hook, &x, &t, &mut sums)?);
        }
        let metrics = LmMetrics {
            reconstruction: sums.finish()?,
            perplexity: PerplexityImpact::new(&baselines, ce.mean()),
        };
        super::write_json(&out.join(FILE), &metrics)
    }

    fn load(_ctx: &RunCtx, entry: &Entry) -> Result<LmMetrics> {
        super::read_json(&entry.file(FILE))
    }

    fn results(out: &mut StageResults<Self>) -> Result<()> {
        let m: LmMetrics = out.read_json(FILE)?;
        let id = sae_id(out.graph, out.inputs().sae);
        out.metrics(&id, m.reconstruction.columns());
        out.metrics(&id, m.perplexity.columns());
        Ok(())
    }
}

/// Summed next-token NLL and prediction count of one batch of `tokens` (b, s) with the SAE's
/// reconstruction of `acts` (b·s rows, the activations at `hook`) in place of the activation;
/// the reconstruction and firing counts are also added to `sums`. At a residual-stream hook the pass
/// resumes there from the reconstruction; the loss is computed without materialising the
/// logits.
pub fn spliced_nll(
    losses: &Losses,
    sae: &Sae,
    hook: HookPoint,
    acts: &Tensor,
    tokens: &Tensor,
    sums: &mut ReconstructionSums,
) -> Result<(f64, usize)> {
    let (b, s) = tokens.dims2()?;
    let reconstructed = sae.reconstruct(acts)?;
    sums.add(acts, &reconstructed)?;
    let recon = reconstructed.x_hat.reshape((b, s, acts.dim(1)?))?;
    losses.next_token_nll_with(tokens, hook, &recon)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The default loss precision stays out of the key's parameters (`ce_baselines` the same
    /// way), so runs cached before `eval.unembedding` existed are found again; bf16 enters it.
    #[test]
    fn f32_unembedding_leaves_the_parameters_as_they_were() {
        let json = |unembedding| {
            serde_json::to_string(&LmEvalParams {
                eval_contexts: 5,
                unembedding,
            })
            .unwrap()
        };
        assert_eq!(json(UnembeddingPrecision::F32), r#"{"eval_contexts":5}"#);
        assert_eq!(
            json(UnembeddingPrecision::Bf16),
            r#"{"eval_contexts":5,"unembedding":"bf16"}"#
        );
    }
}
