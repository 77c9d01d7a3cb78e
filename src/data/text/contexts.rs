//! Token ids → fixed-length contexts: the special tokens used as BOS/separator, fast
//! prefix encoding for truncation, and the truncate / pack cutters.

use rayon::prelude::*;

use crate::model::tokenizer::Tokenizer;
use crate::{Error, Result};

/// Tokens that mark a sequence start, in order of preference. GPT-style tokenizers (Pythia,
/// GPT-2) have one end-of-text token that serves as BOS, EOS and document separator.
pub const BOS_CANDIDATES: [&str; 5] = [
    "<|endoftext|>",
    "<|begin_of_text|>",
    "<s>",
    "<bos>",
    "[BOS]",
];
pub const EOS_CANDIDATES: [&str; 5] =
    ["<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>", "[EOS]"];

/// The id put at position 0 of every context by `prepend_bos`: a BOS token, else the EOS
/// token (what TransformerLens does for Pythia: `<|endoftext|>`, id 0).
pub fn bos_id(tokenizer: &Tokenizer) -> Option<u32> {
    first_known(tokenizer, &BOS_CANDIDATES).or_else(|| eos_id(tokenizer))
}

/// The end-of-document id that separates documents in pack mode, if the tokenizer has one.
pub fn eos_id(tokenizer: &Tokenizer) -> Option<u32> {
    first_known(tokenizer, &EOS_CANDIDATES)
}

fn first_known(tokenizer: &Tokenizer, candidates: &[&str]) -> Option<u32> {
    candidates.iter().find_map(|t| tokenizer.token_to_id(t))
}

/// First guess of how many bytes of text hold a given number of tokens. English averages
/// ~4–5 bytes per token; a too-small guess only costs a retry with 4× the bytes.
const BYTES_PER_TOKEN_GUESS: usize = 16;
/// Pre-tokenizer splits at the end of a cut text whose tokens may differ from the full
/// text's: the word (or whitespace run, or added token) the cut went through, and the one
/// before it, whose split can depend on look-ahead (`\s+(?!\S)` in GPT-2's regex).
const UNSTABLE_TAIL_SPLITS: usize = 2;

/// The first `n_tokens` token ids of each text (all of them for shorter texts), identical
/// to encoding the whole text and truncating, but encoding only a prefix of long texts.
///
/// Why this is exact: the tokenizer splits text into pre-tokens (words, whitespace runs,
/// added tokens) and encodes each independently, so cutting the text can only change the
/// tokens of the last splits. The encoding's word ids tell which split each token came
/// from; tokens before the last `UNSTABLE_TAIL_SPLITS` splits are final. When they are
/// fewer than `n_tokens`, the prefix grows (finally to the whole text).
pub fn encode_prefixes(
    texts: &[&str],
    tokenizer: &Tokenizer,
    n_tokens: usize,
) -> Result<Vec<Vec<u32>>> {
    texts
        .par_iter()
        .map(|t| encode_prefix(t, tokenizer, n_tokens))
        .collect()
}

fn encode_prefix(text: &str, tokenizer: &Tokenizer, n_tokens: usize) -> Result<Vec<u32>> {
    let inner = tokenizer.inner();
    let mut budget = n_tokens.saturating_mul(BYTES_PER_TOKEN_GUESS).max(256);
    loop {
        if budget >= text.len() {
            let mut ids = encode_full(text, tokenizer)?;
            ids.truncate(n_tokens);
            return Ok(ids);
        }
        let cut = floor_char_boundary(text, budget);
        let enc = inner
            .encode(&text[..cut], false)
            .map_err(|e| Error::run(format!("tokenizing failed: {e}")))?;
        if stable_len(enc.get_word_ids()) >= n_tokens {
            return Ok(enc.get_ids()[..n_tokens].to_vec());
        }
        budget = budget.saturating_mul(4);
    }
}

/// Number of leading tokens that lie before the last `UNSTABLE_TAIL_SPLITS` splits.
fn stable_len(word_ids: &[Option<u32>]) -> usize {
    let mut seen = 0;
    let mut prev = None;
    for i in (0..word_ids.len()).rev() {
        // A token without a word id cannot be attributed to a split: trust nothing.
        let Some(w) = word_ids[i] else { return 0 };
        if prev != Some(w) {
            seen += 1;
            if seen > UNSTABLE_TAIL_SPLITS {
                return i + 1;
            }
            prev = Some(w);
        }
    }
    0
}

/// `str::floor_char_boundary` (stable only since Rust 1.91; the crate supports 1.89).
fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    if i >= s.len() {
        return s.len();
    }
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// All token ids of `text`, without special tokens and without computing offsets.
pub fn encode_full(text: &str, tokenizer: &Tokenizer) -> Result<Vec<u32>> {
    let enc = tokenizer
        .inner()
        .encode_fast(text, false)
        .map_err(|e| Error::run(format!("tokenizing failed: {e}")))?;
    Ok(enc.get_ids().to_vec())
}

/// All token ids of each text, in parallel.
pub fn encode_all(texts: &[&str], tokenizer: &Tokenizer) -> Result<Vec<Vec<u32>>> {
    texts
        .par_iter()
        .map(|t| encode_full(t, tokenizer))
        .collect()
}

/// Truncate mode: one context per document that has at least `doc_tokens` tokens, its
/// first `doc_tokens` tokens after the optional BOS. Row-major, `doc_tokens + bos` wide.
pub fn truncate(docs: &[Vec<u32>], doc_tokens: usize, bos: Option<u32>) -> Vec<u32> {
    let width = doc_tokens + usize::from(bos.is_some());
    let mut out = Vec::with_capacity(docs.len() * width);
    for d in docs.iter().filter(|d| d.len() >= doc_tokens) {
        out.extend(bos);
        out.extend_from_slice(&d[..doc_tokens]);
    }
    out
}

/// Pack mode: the documents concatenated (with `separator` between consecutive ones) and
/// cut into consecutive chunks of `doc_tokens`, each after the optional BOS; the incomplete
/// last chunk is dropped.
pub fn pack(
    docs: &[Vec<u32>],
    doc_tokens: usize,
    bos: Option<u32>,
    separator: Option<u32>,
) -> Vec<u32> {
    let width = doc_tokens + usize::from(bos.is_some());
    let total: usize = docs.iter().map(Vec::len).sum::<usize>()
        + separator.map_or(0, |_| docs.len().saturating_sub(1));
    let mut out = Vec::with_capacity(total / doc_tokens.max(1) * width);
    let stream = docs.iter().enumerate().flat_map(|(i, d)| {
        let sep = if i > 0 { separator } else { None };
        sep.into_iter().chain(d.iter().copied())
    });
    let mut chunk = Vec::with_capacity(doc_tokens);
    for id in stream {
        chunk.push(id);
        if chunk.len() == doc_tokens {
            out.extend(bos);
            out.append(&mut chunk);
        }
    }
    out
}
