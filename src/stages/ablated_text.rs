//! Stage `ablated_text`: per analysed SAE, for each analysed feature's max-activating example
//! and each uniform-bin example: the change in the feature's activation at the example's
//! token when each earlier token is deleted.

use super::feature_examples::{plan_per_analysed, FeatureExamples};
use super::sae_node::{sae_id, SaeNode};
use crate::analysis::ablated_text::{ablate_each_earlier_token, AblatedText};
use crate::analysis::examples::ExampleKind;
use crate::analysis::probe::Probe;
use crate::cache::Entry;
use crate::pipeline::external::{ModelKey, ModelRef};
use crate::pipeline::{Graph, Handle, RunCtx, Stage, StageCtx, StageInputs, StageResults};
use crate::results::IntoCell;
use crate::spec::resolve::DataParams;
use crate::spec::ResolvedSpec;
use crate::Result;
use serde::{Deserialize, Serialize};
use std::path::Path;

pub const NAME: &str = "ablated_text";
/// 2: the model's `exp` (GELU, attention softmax, loss) rounds by shift-and-add (last-bit changes).
pub const VERSION: u32 = 2;
const FILE: &str = "ablated_text.json";

pub struct AblatedTextStage;

#[derive(Debug, Clone, Serialize)]
pub struct AblatedParams {
    #[serde(flatten)]
    pub model: ModelKey,
}

pub struct AblatedInputs {
    pub examples: Handle<FeatureExamples>,
    pub sae: SaeNode,
    pub model: ModelRef,
}

impl StageInputs for AblatedInputs {
    fn nodes(&self) -> Vec<usize> {
        vec![self.examples.id(), self.sae.id()]
    }

    fn model(&self) -> Option<&ModelRef> {
        Some(&self.model)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureAblatedText {
    pub feature: usize,
    pub items: Vec<AblatedText>,
}

impl Stage for AblatedTextStage {
    const NAME: &'static str = NAME;
    const VERSION: u32 = VERSION;
    const DESCRIPTION: &'static str =
        "activation change at an example's token when each earlier token is deleted";
    type Params = AblatedParams;
    type Inputs = AblatedInputs;
    type Output = Vec<FeatureAblatedText>;

    fn plan(graph: &mut Graph, spec: &ResolvedSpec) -> Result<()> {
        let DataParams::Text(t) = &spec.data else {
            return Ok(());
        };
        plan_per_analysed::<Self>(graph, |examples, sae| {
            let params = AblatedParams {
                model: ModelKey::of(t),
            };
            let inputs = AblatedInputs {
                examples,
                sae,
                model: ModelRef::of(t),
            };
            (params, inputs)
        })
    }

    fn run(ctx: &StageCtx, _params: &AblatedParams, inputs: &AblatedInputs, out: &Path) -> Result<()> {
        let examples = ctx.input(inputs.examples)?;
        let sae = inputs.sae.load(ctx)?;
        let model = ctx.model(&inputs.model)?;
        let probe = Probe {
            model: &model,
            sae: &sae,
            hook: inputs.model.hook,
            device: &ctx.device,
        };
        let bar = ctx.progress.bar(examples.len() as u64, "features", ctx.label);
        let mut all = Vec::with_capacity(examples.len());
        for f in examples.iter() {
            let mut items = Vec::new();
            for (i, ex) in f.examples.iter().enumerate() {
                // The max-activating example and every uniform-bin sample, as in the post.
                if matches!(ex.kind, ExampleKind::Top { rank } if rank > 0) {
                    continue;
                }
                let prefix = &ex.tokens[..=ex.position];
                let (original, deltas) = ablate_each_earlier_token(&probe, prefix, f.feature)?;
                items.push(AblatedText {
                    example: i,
                    context: ex.context,
                    position: ex.position,
                    original,
                    deltas,
                });
            }
            all.push(FeatureAblatedText {
                feature: f.feature,
                items,
            });
            bar.inc(1);
        }
        bar.finish_and_clear();
        super::write_json(&out.join(FILE), &all)
    }

    fn load(_ctx: &RunCtx, entry: &Entry) -> Result<Vec<FeatureAblatedText>> {
        super::read_json(&entry.file(FILE))
    }

    fn results(out: &mut StageResults<Self>) -> Result<()> {
        let all: Vec<FeatureAblatedText> = out.read_json(FILE)?;
        let id = sae_id(out.graph, out.inputs().sae);
        let table = out.tables.table("ablated_text");
        for f in &all {
            for item in &f.items {
                for (deleted, &delta) in item.deltas.iter().enumerate() {
                    table.push(
                        &id,
                        [
                            ("feature", f.feature.cell()),
                            ("example", item.example.cell()),
                            ("context", item.context.cell()),
                            ("position", item.position.cell()),
                            ("original", (item.original as f64).cell()),
                            ("deleted_position", deleted.cell()),
                            ("delta", (delta as f64).cell()),
                        ],
                    );
                }
            }
        }
        Ok(())
    }
}
