//! Stage `direction_ablation`: per analysed SAE, each analysed feature's direction removed
//! at the hook on its max-activating context: the change in log-probability of each actual
//! next token, and the tokens that rise and fall most at the max-activating token.

use super::feature_examples::{plan_per_analysed, FeatureExamples};
use super::sae_node::{sae_id, SaeNode};
use crate::analysis::direction_ablation::{ablate_direction, DirectionAblation, Request};
use crate::analysis::probe::Probe;
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

pub const NAME: &str = "direction_ablation";
/// 2: the model's `exp` (GELU, attention softmax, loss) rounds by shift-and-add (last-bit changes).
pub const VERSION: u32 = 2;
const FILE: &str = "direction_ablation.json";

pub struct DirectionAblationStage;

#[derive(Debug, Clone, Serialize)]
pub struct DirectionParams {
    #[serde(flatten)]
    pub model: ModelKey,
    pub k: usize,
}

pub struct DirectionInputs {
    pub examples: Handle<FeatureExamples>,
    pub sae: SaeNode,
    pub model: ModelRef,
    pub files: TextFiles,
}

impl StageInputs for DirectionInputs {
    fn nodes(&self) -> Vec<usize> {
        vec![self.examples.id(), self.sae.id()]
    }

    fn model(&self) -> Option<&ModelRef> {
        Some(&self.model)
    }
}

impl Stage for DirectionAblationStage {
    const NAME: &'static str = NAME;
    const VERSION: u32 = VERSION;
    const DESCRIPTION: &'static str =
        "next-token log-probability change when a feature's direction is removed at the hook";
    type Params = DirectionParams;
    type Inputs = DirectionInputs;
    type Output = Vec<DirectionAblation>;

    fn plan(graph: &mut Graph, spec: &ResolvedSpec) -> Result<()> {
        let (DataParams::Text(t), Some(setup)) = (&spec.data, &spec.analyses) else {
            return Ok(());
        };
        plan_per_analysed::<Self>(graph, |examples, sae| {
            let params = DirectionParams {
                model: ModelKey::of(t),
                k: setup.top_k,
            };
            let inputs = DirectionInputs {
                examples,
                sae,
                model: ModelRef::of(t),
                files: TextFiles::of(t),
            };
            (params, inputs)
        })
    }

    fn run(ctx: &StageCtx, params: &DirectionParams, inputs: &DirectionInputs, out: &Path) -> Result<()> {
        let examples = ctx.input(inputs.examples)?;
        let sae = inputs.sae.load(ctx)?;
        let model = ctx.model(&inputs.model)?;
        let tokenizer = Tokenizer::from_file(&inputs.files.tokenizer)?;
        let probe = Probe {
            model: &model,
            sae: &sae,
            hook: inputs.model.hook,
            device: &ctx.device,
        };
        let name = |t: u32| token_string(&tokenizer, t);
        let mut all = Vec::with_capacity(examples.len());
        for f in examples.iter() {
            // Examples start with the top ones, largest first.
            let Some(max) = f.examples.first() else {
                continue;
            };
            let req = Request {
                tokens: &max.tokens,
                context: max.context,
                position: max.position,
                feature: f.feature,
                k: params.k,
                vocab: tokenizer.vocab_size(),
            };
            all.push(ablate_direction(&probe, &req, &name)?);
        }
        super::write_json(&out.join(FILE), &all)
    }

    fn load(_ctx: &RunCtx, entry: &Entry) -> Result<Vec<DirectionAblation>> {
        super::read_json(&entry.file(FILE))
    }

    fn results(out: &mut StageResults<Self>) -> Result<()> {
        let all: Vec<DirectionAblation> = out.read_json(FILE)?;
        let id = sae_id(out.graph, out.inputs().sae);
        for a in &all {
            let table = out.tables.table("direction_ablation");
            for (p, &delta) in a.delta_logprob.iter().enumerate() {
                table.push(
                    &id,
                    [
                        ("feature", a.feature.cell()),
                        ("context", a.context.cell()),
                        ("position", p.cell()),
                        ("delta_logprob", (delta as f64).cell()),
                    ],
                );
            }
            let tokens = out.tables.table("direction_ablation_tokens");
            for (side, list) in [("rise", &a.rises), ("fall", &a.falls)] {
                for (rank, t) in list.iter().enumerate() {
                    tokens.push(
                        &id,
                        [
                            ("feature", a.feature.cell()),
                            ("position", a.position.cell()),
                            ("side", side.to_string().cell()),
                            ("rank", rank.cell()),
                            ("token_id", (t.id as u64).cell()),
                            ("token", t.token.clone().cell()),
                            ("delta_logprob", (t.value as f64).cell()),
                        ],
                    );
                }
            }
        }
        Ok(())
    }
}
