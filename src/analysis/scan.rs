//! One pass over the SAE's codes on the scanned eval contexts, a chunk of whole contexts at
//! a time, so memory stays bounded (chunk rows × d_sae floats) whatever the number of
//! contexts.

use crate::sae::Sae;
use crate::store::Store;
use crate::Result;
use candle_core::{Device, Tensor};

/// Contexts per chunk: 64 × 25 tokens × 2048 latents × 4 B = 13 MB of codes.
const CHUNK_CONTEXTS: usize = 64;

/// Calls `visit(first_context, codes)` for consecutive chunks of the first `n_contexts`
/// contexts of `store`; `codes` is row-major (contexts × positions) × d_sae.
pub fn scan_codes(
    store: &Store,
    sae: &Sae,
    n_contexts: usize,
    context_tokens: usize,
    device: &Device,
    mut visit: impl FnMut(usize, &[f32]) -> Result<()>,
) -> Result<()> {
    let d = store.dim();
    let mut rows = Vec::new();
    for first in (0..n_contexts).step_by(CHUNK_CONTEXTS) {
        let n = CHUNK_CONTEXTS.min(n_contexts - first);
        rows.resize(n * context_tokens * d, 0.0);
        store.read_rows(
            (first * context_tokens) as u64,
            n * context_tokens,
            &mut rows,
        )?;
        let x = Tensor::from_slice(&rows, (n * context_tokens, d), device)?;
        let codes: Vec<f32> = sae.encode(&x)?.flatten_all()?.to_vec1()?;
        visit(first, &codes)?;
    }
    Ok(())
}

/// One latent's activation at every position of one context.
pub fn context_activations(
    store: &Store,
    sae: &Sae,
    context: usize,
    context_tokens: usize,
    feature: usize,
    device: &Device,
) -> Result<Vec<f32>> {
    let d = store.dim();
    let mut rows = vec![0f32; context_tokens * d];
    store.read_rows((context * context_tokens) as u64, context_tokens, &mut rows)?;
    let x = Tensor::from_vec(rows, (context_tokens, d), device)?;
    Ok(sae
        .encode(&x)?
        .narrow(1, feature, 1)?
        .flatten_all()?
        .to_vec1()?)
}
