//! Text data: documents from Parquet / JSONL / plain-text files, tokenized into
//! fixed-length contexts and split into train and eval sets at document level.
//!
//! - [`documents`]: files → documents ([`load_documents`], [`load_first_documents`]).
//! - [`split`]: the seeded document-level train/eval split.
//! - [`contexts`]: BOS/EOS lookup, fast prefix encoding, truncate and pack.
//! - [`storage`]: [`save`] / [`load`] of [`TokenizedContexts`] (`tokens.safetensors`).
//!
//! The original study (pile-10k, each document cut to 25 tokens) is `Packing::Truncate`
//! with `context_tokens = 25`.

pub mod contexts;
pub mod documents;
pub mod split;
pub mod storage;

use serde::{Deserialize, Serialize};

use crate::model::tokenizer::Tokenizer;
use crate::{Error, Result};

pub use contexts::{bos_id, encode_prefixes, eos_id};
pub use documents::{load_documents, load_first_documents, DOCUMENT_EXTENSIONS};
pub use split::{split_documents, DocumentSplit};
pub use storage::{load, save, TOKENS_FILE};

/// How documents become contexts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Packing {
    /// Each document → its first context; documents shorter than a context are dropped
    /// (the original study's "each document cut to 25 tokens").
    Truncate,
    /// Documents concatenated (separated by the tokenizer's end-of-text token when it has
    /// one) and cut into consecutive contexts; the incomplete last one is dropped.
    Pack,
}

/// Everything that determines the contexts (besides the documents and the tokenizer);
/// serialised into the data stage's cache key.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContextParams {
    /// Tokens per context, BOS included.
    pub context_tokens: usize,
    pub packing: Packing,
    /// Put the BOS id at position 0 of every context (Pythia's tokenizer adds none itself).
    pub prepend_bos: bool,
    /// Fraction of documents held out for evaluation (at least one document).
    pub eval_fraction: f64,
    /// Use only the first N documents (before splitting).
    pub max_documents: Option<usize>,
    /// Seed of the train/eval split.
    pub seed: u64,
}

impl ContextParams {
    /// Checks that do not need the data; `what` names where the values came from.
    pub fn validate(&self, what: &str) -> Result<()> {
        let min = if self.prepend_bos { 2 } else { 1 };
        if self.context_tokens < min {
            return Err(Error::input(format!(
                "{what}: context_tokens must be at least {min}{}, got {}",
                if self.prepend_bos {
                    " (the BOS token plus one document token)"
                } else {
                    ""
                },
                self.context_tokens
            )));
        }
        if !(0.0..1.0).contains(&self.eval_fraction) {
            return Err(Error::input(format!(
                "{what}: eval_fraction must be in [0, 1), got {}",
                self.eval_fraction
            )));
        }
        if let Some(m) = self.max_documents.filter(|&m| m < 2) {
            return Err(Error::input(format!(
                "{what}: max_documents must be at least 2 (one train and one eval document), got {m}"
            )));
        }
        Ok(())
    }

    /// Document tokens per context (the BOS, if any, takes one position).
    pub fn document_tokens(&self) -> usize {
        self.context_tokens - usize::from(self.prepend_bos)
    }
}

/// Train and eval contexts as row-major `(n, context_tokens)` u32 matrices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenizedContexts {
    pub context_tokens: usize,
    /// `n_train × context_tokens`, row-major.
    pub train: Vec<u32>,
    /// `n_eval × context_tokens`, row-major.
    pub eval: Vec<u32>,
    /// Documents assigned to the train split (in truncate mode, those shorter than a
    /// context are among them but give no context).
    pub n_train_documents: usize,
    /// Documents assigned to the eval split.
    pub n_eval_documents: usize,
}

impl TokenizedContexts {
    pub fn n_train(&self) -> usize {
        self.train.len() / self.context_tokens.max(1)
    }
    pub fn n_eval(&self) -> usize {
        self.eval.len() / self.context_tokens.max(1)
    }
    /// Train context `i` (panics when `i >= n_train()`, like slice indexing).
    pub fn train_context(&self, i: usize) -> &[u32] {
        &self.train[i * self.context_tokens..(i + 1) * self.context_tokens]
    }
    /// Eval context `i` (panics when `i >= n_eval()`).
    pub fn eval_context(&self, i: usize) -> &[u32] {
        &self.eval[i * self.context_tokens..(i + 1) * self.context_tokens]
    }
}

/// Tokenizes `docs` into train and eval contexts. `origin` names the data source in
/// errors (e.g. `hf-dataset:NeelNanda/pile-10k`). Deterministic for given inputs and
/// `p.seed`, whatever the number of threads.
pub fn tokenize(
    docs: &[String],
    tokenizer: &Tokenizer,
    p: &ContextParams,
    origin: &str,
) -> Result<TokenizedContexts> {
    p.validate(origin)?;
    let docs = &docs[..p.max_documents.map_or(docs.len(), |m| m.min(docs.len()))];
    if docs.len() < 2 {
        return Err(Error::input(format!(
            "{origin}: {} document(s); at least 2 are needed so that the eval split \
             (whole documents) is not empty",
            docs.len()
        )));
    }
    let bos = if p.prepend_bos {
        Some(bos_id(tokenizer).ok_or_else(|| {
            Error::input(format!(
                "{origin}: prepend_bos is set but the tokenizer has none of the BOS/EOS \
                 tokens {:?} {:?}",
                contexts::BOS_CANDIDATES,
                contexts::EOS_CANDIDATES
            ))
        })?)
    } else {
        None
    };
    let doc_tokens = p.document_tokens();
    let split = split_documents(docs.len(), p.eval_fraction, p.seed);

    // Train and eval documents are encoded in one parallel pass, in split order.
    let order: Vec<&str> = split
        .train
        .iter()
        .chain(&split.eval)
        .map(|&i| docs[i].as_str())
        .collect();
    let mut encoded = match p.packing {
        Packing::Truncate => contexts::encode_prefixes(&order, tokenizer, doc_tokens)?,
        Packing::Pack => contexts::encode_all(&order, tokenizer)?,
    };
    let eval_docs = encoded.split_off(split.train.len());
    let train_docs = encoded;

    let cut = |docs: &[Vec<u32>]| match p.packing {
        Packing::Truncate => contexts::truncate(docs, doc_tokens, bos),
        Packing::Pack => contexts::pack(docs, doc_tokens, bos, eos_id(tokenizer)),
    };
    let train = cut(&train_docs);
    let eval = cut(&eval_docs);
    for (name, docs, ctx) in [("train", &train_docs, &train), ("eval", &eval_docs, &eval)] {
        if ctx.is_empty() {
            return Err(too_short(origin, name, docs, p));
        }
    }
    Ok(TokenizedContexts {
        context_tokens: p.context_tokens,
        train,
        eval,
        n_train_documents: split.train.len(),
        n_eval_documents: split.eval.len(),
    })
}

/// The error for a split that yields no context. In truncate mode every document of that
/// split was shorter than a context, so `encode_prefixes` encoded each one completely
/// and the longest length reported is exact.
fn too_short(origin: &str, split: &str, docs: &[Vec<u32>], p: &ContextParams) -> Error {
    let longest = docs.iter().map(Vec::len).max().unwrap_or(0);
    let bos_note = if p.prepend_bos {
        format!(", {} after the BOS token", p.document_tokens())
    } else {
        String::new()
    };
    match p.packing {
        Packing::Truncate => Error::input(format!(
            "{origin}: none of the {} {split} documents is at least one context long: the \
             longest has {longest} tokens, a context has {} tokens{bos_note} (use fewer \
             context_tokens, packing = \"pack\", or more documents)",
            docs.len(),
            p.context_tokens
        )),
        Packing::Pack => {
            let total: usize = docs.iter().map(Vec::len).sum();
            Error::input(format!(
                "{origin}: the {} {split} documents hold {total} tokens in all (the longest \
                 has {longest}), less than one context of {} tokens{bos_note} (use fewer \
                 context_tokens or more documents)",
                docs.len(),
                p.context_tokens
            ))
        }
    }
}
