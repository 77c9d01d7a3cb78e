//! Stage `harvest`: run the model over the token contexts and store the hook's activations
//! (one row per token position, context-major) in two activation stores, `train/` and
//! `eval/`.

use crate::data::text::TokenizedContexts;
use crate::model::hooks::HookPoint;
use crate::model::GptNeoX;
use crate::store::{Store, StoreDtype, StoreWriter};
use crate::Result;
use candle_core::{Device, Tensor};
use indicatif::ProgressBar;
use serde::Serialize;
use std::path::Path;

pub const NAME: &str = "harvest";
pub const VERSION: u32 = 1;

/// Rows per shard: 64k rows of d_model 512 in f32 are 128 MiB.
const ROWS_PER_SHARD: usize = 65_536;

#[derive(Debug, Clone, Serialize)]
pub struct HarvestParams {
    pub model_hash: String,
    pub processing: String,
    pub dtype: String,
    pub hook: String,
    pub store_dtype: StoreDtype,
}

pub fn run(
    params: &HarvestParams,
    model: &GptNeoX,
    hook: HookPoint,
    contexts: &TokenizedContexts,
    batch: usize,
    out: &Path,
    progress: &ProgressBar,
) -> Result<()> {
    let ctx = contexts.context_tokens;
    for (split, tokens) in [("train", &contexts.train), ("eval", &contexts.eval)] {
        let mut writer = StoreWriter::create(
            &out.join(split),
            model.d_model(),
            params.store_dtype,
            ROWS_PER_SHARD,
        )?;
        for chunk in tokens.chunks(batch * ctx) {
            let b = chunk.len() / ctx;
            let t = Tensor::from_slice(chunk, (b, ctx), &Device::Cpu)?;
            let acts = model.capture(&t, &[hook])?.remove(0);
            writer.push(&acts.flatten_all()?.to_vec1::<f32>()?)?;
            progress.inc(b as u64);
        }
        writer.finish()?;
    }
    Ok(())
}

pub fn open_train(entry_dir: &Path) -> Result<Store> {
    Store::open(&entry_dir.join("train"))
}

pub fn open_eval(entry_dir: &Path) -> Result<Store> {
    Store::open(&entry_dir.join("eval"))
}
