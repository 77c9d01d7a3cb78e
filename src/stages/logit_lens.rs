//! Stage `logit_lens`: per analysed SAE, each analysed feature's decoder direction through
//! the unembedding: the top and bottom tokens, leaving out `unembed_norms`' tokens.

use super::feature_examples::{plan_per_analysed, FeatureExamples};
use super::sae_node::{sae_id, SaeNode};
use super::unembed_norms::UnembedNorms;
use crate::analysis::logit_lens::{lens, LensLists};
use crate::analysis::tokens::token_string;
use crate::cache::Entry;
use crate::model::Tokenizer;
use crate::pipeline::external::{ModelKey, ModelRef, TextFiles};
use crate::pipeline::{Graph, Handle, RunCtx, Stage, StageCtx, StageInputs, StageResults};
use crate::results::IntoCell;
use crate::spec::resolve::DataParams;
use crate::spec::ResolvedSpec;
use crate::Result;
use serde::Serialize;
use std::path::Path;

pub const NAME: &str = "logit_lens";
pub const VERSION: u32 = 1;
const FILE: &str = "logit_lens.json";

pub struct LogitLens;

#[derive(Debug, Clone, Serialize)]
pub struct LensParams {
    #[serde(flatten)]
    pub model: ModelKey,
    pub k: usize,
    pub max_norm: f64,
}

pub struct LensInputs {
    pub examples: Handle<FeatureExamples>,
    pub sae: SaeNode,
    pub norms: Handle<UnembedNorms>,
    pub model: ModelRef,
    pub files: TextFiles,
}

impl StageInputs for LensInputs {
    fn nodes(&self) -> Vec<usize> {
        vec![self.examples.id(), self.sae.id(), self.norms.id()]
    }

    fn model(&self) -> Option<&ModelRef> {
        Some(&self.model)
    }
}

impl Stage for LogitLens {
    const NAME: &'static str = NAME;
    const VERSION: u32 = VERSION;
    const DESCRIPTION: &'static str =
        "top and bottom tokens of each analysed feature's decoder direction through W_U";
    type Params = LensParams;
    type Inputs = LensInputs;
    type Output = Vec<LensLists>;

    fn plan(graph: &mut Graph, spec: &ResolvedSpec) -> Result<()> {
        let (DataParams::Text(t), Some(setup), Some(norms)) =
            (&spec.data, &spec.analyses, graph.only::<UnembedNorms>())
        else {
            return Ok(());
        };
        plan_per_analysed::<Self>(graph, |examples, sae| {
            let params = LensParams {
                model: ModelKey::of(t),
                k: setup.top_k,
                max_norm: setup.max_norm,
            };
            let inputs = LensInputs {
                examples,
                sae,
                norms,
                model: ModelRef::of(t),
                files: TextFiles::of(t),
            };
            (params, inputs)
        })
    }

    fn run(ctx: &StageCtx, params: &LensParams, inputs: &LensInputs, out: &Path) -> Result<()> {
        let examples = ctx.input(inputs.examples)?;
        let sae = inputs.sae.load(ctx)?;
        let model = ctx.model(&inputs.model)?;
        let tokenizer = Tokenizer::from_file(&inputs.files.tokenizer)?;
        let w_u = model.w_u()?;
        // The excluded tokens come from `unembed_norms`, computed once per model.
        let excluded: Vec<u32> = ctx.input(inputs.norms)?.iter().map(|t| t.id).collect();
        let name = |t: u32| token_string(&tokenizer, t);
        let mut all = Vec::with_capacity(examples.len());
        for f in examples.iter() {
            let direction = sae.w_dec.get(f.feature)?;
            let (top, bottom) = lens(
                &direction,
                &w_u,
                &excluded,
                params.k,
                &name,
            )?;
            all.push(LensLists {
                feature: f.feature,
                top,
                bottom,
            });
        }
        super::write_json(&out.join(FILE), &all)
    }

    fn load(_ctx: &RunCtx, entry: &Entry) -> Result<Vec<LensLists>> {
        super::read_json(&entry.file(FILE))
    }

    fn results(out: &mut StageResults<Self>) -> Result<()> {
        let all: Vec<LensLists> = out.read_json(FILE)?;
        let id = sae_id(out.graph, out.inputs().sae);
        let table = out.tables.table("logit_lens");
        for f in &all {
            for (side, list) in [("top", &f.top), ("bottom", &f.bottom)] {
                for (rank, t) in list.iter().enumerate() {
                    table.push(
                        &id,
                        [
                            ("feature", f.feature.cell()),
                            ("side", side.to_string().cell()),
                            ("rank", rank.cell()),
                            ("token_id", (t.id as u64).cell()),
                            ("token", t.token.clone().cell()),
                            ("logit", (t.value as f64).cell()),
                        ],
                    );
                }
            }
        }
        Ok(())
    }
}
