//! Stage `tokenize`: documents → fixed-length token contexts, split into train and eval at
//! the document level. Keyed on the content hashes of the data files and tokenizer.

use crate::cache::Entry;
use crate::data::text::{self, ContextParams, TokenizedContexts};
use crate::model::tokenizer::Tokenizer;
use crate::pipeline::external::TextFiles;
use crate::pipeline::{Graph, RunCtx, Stage, StageCtx, StageInputs};
use crate::spec::resolve::DataParams;
use crate::spec::ResolvedSpec;
use crate::Result;
use serde::Serialize;
use std::path::Path;

pub const NAME: &str = "tokenize";
pub const VERSION: u32 = 1;

pub struct Tokenize;

#[derive(Debug, Clone, Serialize)]
pub struct TokenizeParams {
    pub data_hash: String,
    pub text_column: String,
    pub tokenizer_hash: String,
    pub context: ContextParams,
}

impl StageInputs for TextFiles {
    fn nodes(&self) -> Vec<usize> {
        Vec::new()
    }
}

impl Stage for Tokenize {
    const NAME: &'static str = NAME;
    const VERSION: u32 = VERSION;
    const DESCRIPTION: &'static str =
        "documents to fixed-length token contexts, split into train and eval by document";
    // Host-only: CPU and GPU runs share the entry.
    const SAME_ON_EVERY_DEVICE: bool = true;
    type Params = TokenizeParams;
    type Inputs = TextFiles;
    type Output = TokenizedContexts;

    fn plan(graph: &mut Graph, spec: &ResolvedSpec) -> Result<()> {
        let DataParams::Text(t) = &spec.data else {
            return Ok(());
        };
        let params = TokenizeParams {
            data_hash: t.data_hash.clone(),
            text_column: t.text_column.clone(),
            tokenizer_hash: t.tokenizer_hash.clone(),
            context: t.context.clone(),
        };
        let label = format!(
            "{} ({}-token contexts)",
            t.data_source, t.context.context_tokens
        );
        graph.add::<Self>(label, params, TextFiles::of(t))?;
        Ok(())
    }

    fn run(_ctx: &StageCtx, params: &TokenizeParams, files: &TextFiles, out: &Path) -> Result<()> {
        let docs = text::load_first_documents(
            &files.data_files,
            &params.text_column,
            params.context.max_documents,
        )?;
        let tokenizer = Tokenizer::from_file(&files.tokenizer)?;
        let contexts = text::tokenize(&docs, &tokenizer, &params.context, &files.data_source)?;
        text::save(&contexts, out)
    }

    fn load(_ctx: &RunCtx, entry: &Entry) -> Result<TokenizedContexts> {
        text::load(&entry.dir)
    }
}
