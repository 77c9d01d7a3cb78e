//! Stage `unembed_norms`: once per model, the tokens the logit lens leaves out: those whose
//! W_U column norm exceeds the threshold (tokens the tokenizer never produces, whose large
//! norms would dominate every list).

use super::feature_stats::analysed_saes;
use crate::analysis::logit_lens::{column_norms, excluded_tokens};
use crate::analysis::tokens::token_string;
use crate::analysis::TokenValue;
use crate::cache::Entry;
use crate::model::Tokenizer;
use crate::pipeline::external::{ModelKey, ModelRef, TextFiles};
use crate::pipeline::{Graph, RunCtx, Stage, StageCtx, StageInputs, StageResults};
use crate::results::IntoCell;
use crate::spec::resolve::DataParams;
use crate::spec::ResolvedSpec;
use crate::Result;
use serde::Serialize;
use std::path::Path;

pub const NAME: &str = "unembed_norms";
pub const VERSION: u32 = 1;
const FILE: &str = "excluded.json";

pub struct UnembedNorms;

#[derive(Debug, Clone, Serialize)]
pub struct NormParams {
    #[serde(flatten)]
    pub model: ModelKey,
    pub tokenizer_hash: String,
    pub max_norm: f64,
}

pub struct NormInputs {
    pub model: ModelRef,
    pub files: TextFiles,
}

impl StageInputs for NormInputs {
    fn nodes(&self) -> Vec<usize> {
        Vec::new()
    }

    fn model(&self) -> Option<&ModelRef> {
        Some(&self.model)
    }
}

impl Stage for UnembedNorms {
    const NAME: &'static str = NAME;
    const VERSION: u32 = VERSION;
    const DESCRIPTION: &'static str =
        "tokens the logit lens excludes: W_U column norm above the threshold";
    type Params = NormParams;
    type Inputs = NormInputs;
    /// The excluded tokens, with their norms as values.
    type Output = Vec<TokenValue>;

    fn plan(graph: &mut Graph, spec: &ResolvedSpec) -> Result<()> {
        let (DataParams::Text(t), Some(setup)) = (&spec.data, &spec.analyses) else {
            return Ok(());
        };
        if analysed_saes(graph, spec).is_empty() {
            return Ok(());
        }
        let params = NormParams {
            model: ModelKey::of(t),
            tokenizer_hash: t.tokenizer_hash.clone(),
            max_norm: setup.max_norm,
        };
        let label = format!("{} W_U norms > {}", t.model_source, setup.max_norm);
        let inputs = NormInputs {
            model: ModelRef::of(t),
            files: TextFiles::of(t),
        };
        graph.add::<Self>(label, params, inputs)?;
        Ok(())
    }

    fn run(ctx: &StageCtx, params: &NormParams, inputs: &NormInputs, out: &Path) -> Result<()> {
        let model = ctx.model(&inputs.model)?;
        let tokenizer = Tokenizer::from_file(&inputs.files.tokenizer)?;
        let norms = column_norms(&model.w_u()?)?;
        let excluded: Vec<TokenValue> = excluded_tokens(&norms, params.max_norm)
            .into_iter()
            .map(|id| TokenValue {
                id,
                token: token_string(&tokenizer, id),
                value: norms[id as usize],
            })
            .collect();
        super::write_json(&out.join(FILE), &excluded)
    }

    fn load(_ctx: &RunCtx, entry: &Entry) -> Result<Vec<TokenValue>> {
        super::read_json(&entry.file(FILE))
    }

    fn results(out: &mut StageResults<Self>) -> Result<()> {
        let excluded: Vec<TokenValue> = out.read_json(FILE)?;
        let table = out.tables.table("logit_lens_excluded");
        for t in excluded {
            table.push_plain([
                ("token_id", (t.id as u64).cell()),
                ("token", t.token.cell()),
                ("norm", (t.value as f64).cell()),
            ]);
        }
        Ok(())
    }
}
