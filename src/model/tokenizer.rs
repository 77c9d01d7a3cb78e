//! A thin wrapper over the `tokenizers` crate for a model's `tokenizer.json`.
//!
//! Encoding never adds special tokens: Pythia was trained without a BOS token, and the study's
//! data (documents cut to 25 tokens) is tokenized the same way.

use std::path::Path;

use crate::{Error, Result};

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
}

impl Tokenizer {
    /// Load a Hugging Face `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        if !path.is_file() {
            return Err(Error::input(format!(
                "{}: tokenizer file not found",
                path.display()
            )));
        }
        let inner = tokenizers::Tokenizer::from_file(path).map_err(|e| {
            Error::input(format!(
                "{}: not a valid tokenizer.json: {e}",
                path.display()
            ))
        })?;
        Ok(Self { inner })
    }

    /// Token ids of `text`, without special tokens.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| Error::run(format!("tokenizing failed: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Token ids of several texts (in parallel inside `tokenizers`).
    pub fn encode_batch(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
        let encs = self
            .inner
            .encode_batch(texts.to_vec(), false)
            .map_err(|e| Error::run(format!("tokenizing failed: {e}")))?;
        Ok(encs.into_iter().map(|e| e.get_ids().to_vec()).collect())
    }

    /// The text of `ids` (special tokens kept, so nothing silently disappears).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, false)
            .map_err(|e| Error::run(format!("detokenizing failed: {e}")))
    }

    /// The vocabulary entry of one id (byte-level BPE form, e.g. "Ġthe"), if it exists.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Size of the tokenizer's vocabulary including added tokens (may be smaller than the
    /// model's padded embedding, e.g. 50277 vs 50304 for Pythia).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}
