//! Stage `feature_examples`: per analysed SAE, chooses the features to analyse (from their
//! statistics) and finds each one's top and uniform-bin examples in one pass over the
//! scanned contexts. Every later analysis works on these features and examples.

use super::feature_stats::{scanned_contexts, FeatureStats, StatsInputs};
use super::harvest::Harvest;
use super::tokenize::Tokenize;
use super::sae_node::{sae_id, SaeNode};
use crate::analysis::examples::{Example, ExampleFinder, ExampleKind, Hit};
use crate::analysis::scan::{context_activations, scan_codes};
use crate::analysis::select::select_features;
use crate::analysis::tokens::token_strings;
use crate::cache::Entry;
use crate::model::Tokenizer;
use crate::pipeline::external::TextFiles;
use crate::pipeline::{Graph, Handle, RunCtx, Stage, StageCtx, StageInputs, StageResults};
use crate::results::IntoCell;
use crate::spec::analyses::{Bins, FeatureSelect};
use crate::spec::resolve::DataParams;
use crate::spec::ResolvedSpec;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

pub const NAME: &str = "feature_examples";
pub const VERSION: u32 = 1;
const FILE: &str = "examples.json";

pub struct FeatureExamples;

#[derive(Debug, Clone, Serialize)]
pub struct ExampleParams {
    pub contexts: usize,
    pub select: FeatureSelect,
    pub top_k: usize,
    pub bins: Bins,
    pub seed: u64,
}

pub struct ExampleInputs {
    pub tokens: Handle<Tokenize>,
    pub harvest: Handle<Harvest>,
    pub sae: SaeNode,
    pub stats: Handle<FeatureStats>,
    /// For the tokenizer (identified in the key through the tokenize stage).
    pub files: TextFiles,
}

impl StageInputs for ExampleInputs {
    fn nodes(&self) -> Vec<usize> {
        vec![
            self.tokens.id(),
            self.harvest.id(),
            self.sae.id(),
            self.stats.id(),
        ]
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureExamplesOf {
    pub feature: usize,
    /// Top examples (largest first), then one per non-empty bin.
    pub examples: Vec<Example>,
}

/// Adds one node of `S` per analysed SAE (one per `feature_examples` node), labelled like
/// the SAE: how every analysis downstream of the examples is planned.
pub fn plan_per_analysed<S: Stage>(
    graph: &mut Graph,
    make: impl Fn(Handle<FeatureExamples>, SaeNode) -> (S::Params, S::Inputs),
) -> Result<()> {
    for examples in graph.all::<FeatureExamples>() {
        let sae = graph.inputs(examples).sae;
        let (params, inputs) = make(examples, sae);
        let label = graph.nodes()[sae.id()].label.clone();
        graph.add::<S>(label, params, inputs)?;
    }
    Ok(())
}

impl Stage for FeatureExamples {
    const NAME: &'static str = NAME;
    const VERSION: u32 = VERSION;
    const DESCRIPTION: &'static str =
        "the analysed features and their top and uniform-bin examples with whole contexts";
    type Params = ExampleParams;
    type Inputs = ExampleInputs;
    type Output = Vec<FeatureExamplesOf>;

    fn plan(graph: &mut Graph, spec: &ResolvedSpec) -> Result<()> {
        let (DataParams::Text(t), Some(setup)) = (&spec.data, &spec.analyses) else {
            return Ok(());
        };
        for stats in graph.all::<FeatureStats>() {
            let &StatsInputs {
                tokens,
                harvest,
                sae,
            } = graph.inputs(stats);
            let d_sae = sae.point(graph).d_sae;
            if let FeatureSelect::Ids(ids) = &setup.select {
                if let Some(bad) = ids.iter().find(|&&i| i >= d_sae) {
                    return Err(Error::input(format!(
                        "`analyses.feature_ids`: latent {bad} does not exist in the analysed SAE {} ({d_sae} latents)",
                        graph.nodes()[sae.id()].label
                    )));
                }
            }
            let params = ExampleParams {
                contexts: setup.contexts,
                select: setup.select.clone(),
                top_k: setup.top_k,
                bins: setup.bins,
                seed: setup.seed,
            };
            let inputs = ExampleInputs {
                tokens,
                harvest,
                sae,
                stats,
                files: TextFiles::of(t),
            };
            let label = graph.nodes()[sae.id()].label.clone();
            graph.add::<Self>(label, params, inputs)?;
        }
        Ok(())
    }

    fn run(ctx: &StageCtx, params: &ExampleParams, inputs: &ExampleInputs, out: &Path) -> Result<()> {
        let tokens = ctx.input(inputs.tokens)?;
        let store = ctx.input(inputs.harvest)?.eval.clone();
        let sae = inputs.sae.load(ctx)?;
        let stats = ctx.input(inputs.stats)?;
        let features = select_features(&params.select, &stats)?;
        let mut finders: Vec<ExampleFinder> = features
            .iter()
            .map(|&f| ExampleFinder::new(params.top_k, params.bins, stats[f].max, params.seed, f))
            .collect();
        let (n, len, m) = (
            scanned_contexts(params.contexts, &tokens),
            tokens.context_tokens,
            sae.d_sae(),
        );
        scan_codes(&store, &sae, n, len, &ctx.device, |first, codes| {
            for (row, code) in codes.chunks(m).enumerate() {
                for (finder, &f) in finders.iter_mut().zip(&features) {
                    if code[f] > 0.0 {
                        finder.offer(Hit {
                            context: first + row / len,
                            position: row % len,
                            activation: code[f],
                        });
                    }
                }
            }
            Ok(())
        })?;

        let tokenizer = Tokenizer::from_file(&inputs.files.tokenizer)?;
        let mut all = Vec::with_capacity(features.len());
        for (finder, &feature) in finders.into_iter().zip(&features) {
            let mut examples = Vec::new();
            for (kind, hit) in finder.finish() {
                let ids = tokens.eval_context(hit.context).to_vec();
                examples.push(Example {
                    kind,
                    context: hit.context,
                    position: hit.position,
                    activation: hit.activation,
                    strings: token_strings(&tokenizer, &ids),
                    acts: context_activations(&store, &sae, hit.context, len, feature, &ctx.device)?,
                    tokens: ids,
                });
            }
            all.push(FeatureExamplesOf { feature, examples });
        }
        super::write_json(&out.join(FILE), &all)
    }

    fn load(_ctx: &RunCtx, entry: &Entry) -> Result<Vec<FeatureExamplesOf>> {
        super::read_json(&entry.file(FILE))
    }

    fn results(out: &mut StageResults<Self>) -> Result<()> {
        let all: Vec<FeatureExamplesOf> = out.read_json(FILE)?;
        let id = sae_id(out.graph, out.inputs().sae);
        for f in &all {
            for (i, ex) in f.examples.iter().enumerate() {
                let (kind, rank, bin, lo, hi) = match ex.kind {
                    ExampleKind::Top { rank } => ("top", Some(rank), None, None, None),
                    ExampleKind::Bin { bin, lo, hi } => {
                        ("bin", None, Some(bin), Some(lo as f64), Some(hi as f64))
                    }
                };
                let text: String = ex.strings[..=ex.position].concat();
                out.tables.table("feature_examples").push(
                    &id,
                    [
                        ("feature", f.feature.cell()),
                        ("example", i.cell()),
                        ("kind", kind.to_string().cell()),
                        ("rank", rank.cell()),
                        ("bin", bin.cell()),
                        ("bin_lo", lo.cell()),
                        ("bin_hi", hi.cell()),
                        ("context", ex.context.cell()),
                        ("position", ex.position.cell()),
                        ("activation", (ex.activation as f64).cell()),
                        ("text", text.cell()),
                    ],
                );
                let tokens = out.tables.table("feature_example_tokens");
                for (p, (&tok, s)) in ex.tokens.iter().zip(&ex.strings).enumerate() {
                    tokens.push(
                        &id,
                        [
                            ("feature", f.feature.cell()),
                            ("example", i.cell()),
                            ("position", p.cell()),
                            ("token_id", (tok as u64).cell()),
                            ("token", s.clone().cell()),
                            ("activation", (ex.acts[p] as f64).cell()),
                        ],
                    );
                }
            }
        }
        Ok(())
    }
}
