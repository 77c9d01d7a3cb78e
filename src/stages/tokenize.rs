//! Stage `tokenize`: documents → fixed-length token contexts, split into train and eval at
//! the document level. Keyed on the content hashes of the data files and tokenizer.

use crate::data::text::{self, ContextParams, TokenizedContexts};
use crate::model::tokenizer::Tokenizer;
use crate::Result;
use serde::Serialize;
use std::path::{Path, PathBuf};

pub const NAME: &str = "tokenize";
pub const VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize)]
pub struct TokenizeParams {
    pub data_hash: String,
    pub text_column: String,
    pub tokenizer_hash: String,
    pub context: ContextParams,
}

/// Where the files behind the hashes are (not part of the key).
pub struct TokenizeInputs<'a> {
    pub data_source: &'a str,
    pub data_files: &'a [PathBuf],
    pub tokenizer: &'a Path,
}

pub fn run(params: &TokenizeParams, inputs: &TokenizeInputs, out: &Path) -> Result<()> {
    let docs = text::load_first_documents(
        inputs.data_files,
        &params.text_column,
        params.context.max_documents,
    )?;
    let tokenizer = Tokenizer::from_file(inputs.tokenizer)?;
    let contexts = text::tokenize(&docs, &tokenizer, &params.context, inputs.data_source)?;
    text::save(&contexts, out)
}

pub fn load(dir: &Path) -> Result<TokenizedContexts> {
    text::load(dir)
}
