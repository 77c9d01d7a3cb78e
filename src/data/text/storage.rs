//! On-disk form of [`TokenizedContexts`]: one safetensors file with u32 tensors `train`
//! `(n, context_tokens)` and `eval` `(m, context_tokens)`, and the document counts in its
//! metadata. Safetensors so that Python (`safetensors.numpy.load_file`) can read it too.

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use super::TokenizedContexts;
use crate::{Error, Result};

/// File name inside the directory given to [`save`] / [`load`].
pub const TOKENS_FILE: &str = "tokens.safetensors";
/// Metadata value of `format`; bump when the layout changes.
const FORMAT: &str = "saerun.text_contexts.v1";

/// Writes `dir/tokens.safetensors` (creating `dir`).
pub fn save(ctx: &TokenizedContexts, dir: &Path) -> Result<()> {
    let width = ctx.context_tokens;
    if width == 0 || !ctx.train.len().is_multiple_of(width) || !ctx.eval.len().is_multiple_of(width)
    {
        return Err(Error::run(format!(
            "contexts of {width} tokens cannot hold {} train / {} eval tokens",
            ctx.train.len(),
            ctx.eval.len()
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, "creating", e))?;
    let path = dir.join(TOKENS_FILE);
    let train = le_bytes(&ctx.train);
    let eval = le_bytes(&ctx.eval);
    let tensors = [
        ("train", view(&train, ctx.n_train(), width, &path)?),
        ("eval", view(&eval, ctx.n_eval(), width, &path)?),
    ];
    let metadata = HashMap::from([
        ("format".to_string(), FORMAT.to_string()),
        ("context_tokens".to_string(), width.to_string()),
        (
            "n_train_documents".to_string(),
            ctx.n_train_documents.to_string(),
        ),
        (
            "n_eval_documents".to_string(),
            ctx.n_eval_documents.to_string(),
        ),
    ]);
    safetensors::tensor::serialize_to_file(tensors, Some(metadata), &path)
        .map_err(|e| Error::run(format!("writing {}: {e}", path.display())))
}

/// Reads what [`save`] wrote to `dir`.
pub fn load(dir: &Path) -> Result<TokenizedContexts> {
    let path = dir.join(TOKENS_FILE);
    let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, "reading", e))?;
    let bad = |msg: String| Error::run(format!("{}: {msg}", path.display()));
    let (_, header) =
        SafeTensors::read_metadata(&bytes).map_err(|e| bad(format!("not safetensors: {e}")))?;
    let meta = header.metadata().clone().unwrap_or_default();
    let field = |k: &str| -> Result<usize> {
        meta.get(k)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| bad(format!("metadata {k:?} missing or not a number")))
    };
    if meta.get("format").map(String::as_str) != Some(FORMAT) {
        return Err(bad(format!(
            "format {:?}, expected {FORMAT:?}",
            meta.get("format")
        )));
    }
    let width = field("context_tokens")?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| bad(format!("not safetensors: {e}")))?;
    let matrix = |name: &str| -> Result<Vec<u32>> {
        let t = st
            .tensor(name)
            .map_err(|e| bad(format!("tensor {name:?}: {e}")))?;
        if t.dtype() != Dtype::U32 || t.shape().len() != 2 || t.shape()[1] != width {
            return Err(bad(format!(
                "tensor {name:?} is {:?} {:?}, expected U32 (n, {width})",
                t.dtype(),
                t.shape()
            )));
        }
        Ok(t.data()
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    };
    Ok(TokenizedContexts {
        context_tokens: width,
        train: matrix("train")?,
        eval: matrix("eval")?,
        n_train_documents: field("n_train_documents")?,
        n_eval_documents: field("n_eval_documents")?,
    })
}

fn view<'a>(bytes: &'a [u8], rows: usize, width: usize, path: &Path) -> Result<TensorView<'a>> {
    TensorView::new(Dtype::U32, vec![rows, width], bytes)
        .map_err(|e| Error::run(format!("building tensor for {}: {e}", path.display())))
}

fn le_bytes(ids: &[u32]) -> Vec<u8> {
    ids.iter().flat_map(|v| v.to_le_bytes()).collect()
}
