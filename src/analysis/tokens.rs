//! Token ids as text for tables and the browser: each id decoded on its own (byte-level BPE
//! pieces of a multi-byte character decode to U+FFFD), ids beyond the tokenizer's vocabulary
//! (the model's padding rows) as `<id N>`.

use crate::model::Tokenizer;

pub fn token_string(tokenizer: &Tokenizer, id: u32) -> String {
    if (id as usize) >= tokenizer.vocab_size() {
        return format!("<id {id}>");
    }
    tokenizer
        .decode(&[id])
        .unwrap_or_else(|_| format!("<id {id}>"))
}

pub fn token_strings(tokenizer: &Tokenizer, ids: &[u32]) -> Vec<String> {
    ids.iter().map(|&id| token_string(tokenizer, id)).collect()
}
