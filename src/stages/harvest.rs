//! Stage `harvest`: run the model over the token contexts and store the hook's activations
//! (one row per token position, context-major) in two activation stores, `train/` and
//! `eval/`.

use super::tokenize::Tokenize;
use crate::cache::Entry;
use crate::pipeline::external::{ModelKey, ModelRef};
use crate::pipeline::{Graph, Handle, RunCtx, Stage, StageCtx, StageInputs};
use crate::spec::resolve::DataParams;
use crate::spec::ResolvedSpec;
use crate::store::{Store, StoreDtype, StoreWriter};
use crate::Result;
use candle_core::Tensor;
use serde::Serialize;
use std::path::Path;
use std::sync::Arc;

pub const NAME: &str = "harvest";
/// 2: the store is as wide as the hook's activation (d_mlp for `mlp.hook_post`), not
/// always d_model.
/// 3: the model's `exp` (GELU, attention softmax, loss) rounds by shift-and-add (last-bit changes).
pub const VERSION: u32 = 3;

/// Rows per shard: 64k rows of d_model 512 in f32 are 128 MiB.
const ROWS_PER_SHARD: usize = 65_536;

pub struct Harvest;

#[derive(Debug, Clone, Serialize)]
pub struct HarvestParams {
    #[serde(flatten)]
    pub model: ModelKey,
    pub store_dtype: StoreDtype,
}

pub struct HarvestInputs {
    pub tokens: Handle<Tokenize>,
    pub model: ModelRef,
    /// The hook's width (a function of the model and hook, which the key holds).
    pub d_in: usize,
}

impl StageInputs for HarvestInputs {
    fn nodes(&self) -> Vec<usize> {
        vec![self.tokens.id()]
    }

    fn model(&self) -> Option<&ModelRef> {
        Some(&self.model)
    }
}

/// The two stores, memory-mapped.
pub struct Activations {
    pub train: Arc<Store>,
    pub eval: Arc<Store>,
}

impl Stage for Harvest {
    const NAME: &'static str = NAME;
    const VERSION: u32 = VERSION;
    const DESCRIPTION: &'static str = "the hook's activations on every context, in two stores";
    type Params = HarvestParams;
    type Inputs = HarvestInputs;
    type Output = Activations;

    fn plan(graph: &mut Graph, spec: &ResolvedSpec) -> Result<()> {
        let (DataParams::Text(t), Some(tokens)) = (&spec.data, graph.only::<Tokenize>()) else {
            return Ok(());
        };
        let params = HarvestParams {
            model: ModelKey::of(t),
            store_dtype: t.store_dtype,
        };
        let label = format!(
            "{} {} ({})",
            t.model_source,
            t.hook.name(),
            t.processing.as_str()
        );
        let inputs = HarvestInputs {
            tokens,
            model: ModelRef::of(t),
            d_in: t.d_in,
        };
        graph.add::<Self>(label, params, inputs)?;
        Ok(())
    }

    fn run(ctx: &StageCtx, params: &HarvestParams, inputs: &HarvestInputs, out: &Path) -> Result<()> {
        let contexts = ctx.input(inputs.tokens)?;
        let model = ctx.model(&inputs.model)?;
        let (hook, batch) = (inputs.model.hook, inputs.model.batch);
        let ctx_len = contexts.context_tokens;
        let total = (contexts.train.len() + contexts.eval.len()) / ctx_len;
        let bar = ctx.progress.bar(total as u64, "contexts", ctx.label);
        for (split, tokens) in [("train", &contexts.train), ("eval", &contexts.eval)] {
            let mut writer = StoreWriter::create(
                &out.join(split),
                inputs.d_in,
                params.store_dtype,
                ROWS_PER_SHARD,
            )?;
            for chunk in tokens.chunks(batch * ctx_len) {
                let b = chunk.len() / ctx_len;
                let t = Tensor::from_slice(chunk, (b, ctx_len), &ctx.device)?;
                let acts = model.capture(&t, &[hook])?.remove(0);
                writer.push(&acts.flatten_all()?.to_vec1::<f32>()?)?;
                bar.inc(b as u64);
            }
            writer.finish()?;
        }
        bar.finish_and_clear();
        Ok(())
    }

    fn load(_ctx: &RunCtx, entry: &Entry) -> Result<Activations> {
        Ok(Activations {
            train: Arc::new(Store::open(&entry.dir.join("train"))?),
            eval: Arc::new(Store::open(&entry.dir.join("eval"))?),
        })
    }
}
