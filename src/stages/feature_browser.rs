//! Stage `feature_browser`: the static feature browser of a run's analysed SAEs, copied into
//! `<run dir>/features/`. Keyed on every analysis output it shows, so it is rebuilt only when
//! one of them changes.

use super::ablated_text::AblatedTextStage;
use super::direction_ablation::DirectionAblationStage;
use super::feature_examples::FeatureExamples;
use super::feature_stats::FeatureStats;
use super::logit_lens::LogitLens;
use super::match_sizes::MatchSizes;
use super::sae_node::{sae_id, SaeNode};
use crate::browser::{self, Across, Browser, SaeView};
use crate::cache::Entry;
use crate::pipeline::{Graph, Handle, RunCtx, Stage, StageCtx, StageInputs};
use crate::results::SaeId;
use crate::spec::ResolvedSpec;
use crate::{Error, Result};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::path::Path;

pub const NAME: &str = "feature_browser";
pub const VERSION: u32 = 1;

pub struct FeatureBrowser;

#[derive(Debug, Clone, Serialize)]
pub struct BrowserParams {
    pub title: String,
}

/// One analysed SAE's analysis nodes.
pub struct AnalysedSae {
    pub sae: SaeNode,
    /// Its identity in tables (derived from the training node, so not part of the key).
    pub id: SaeId,
    pub stats: Handle<FeatureStats>,
    pub examples: Handle<FeatureExamples>,
    pub lens: Handle<LogitLens>,
    pub ablated: Handle<AblatedTextStage>,
    pub direction: Handle<DirectionAblationStage>,
}

pub struct BrowserInputs {
    pub saes: Vec<AnalysedSae>,
    /// Size matches with an analysed SAE on either side, and their SAEs' identities.
    pub matches: Vec<(Handle<MatchSizes>, SaeId, SaeId)>,
}

impl StageInputs for BrowserInputs {
    fn nodes(&self) -> Vec<usize> {
        let mut out = Vec::new();
        for a in &self.saes {
            out.extend([
                a.sae.id(),
                a.stats.id(),
                a.examples.id(),
                a.lens.id(),
                a.ablated.id(),
                a.direction.id(),
            ]);
        }
        out.extend(self.matches.iter().map(|(m, _, _)| m.id()));
        out
    }
}

/// The node of stage `S` planned for `examples`.
fn for_examples<S: Stage>(
    graph: &Graph,
    examples: Handle<FeatureExamples>,
    of: impl Fn(&S::Inputs) -> Handle<FeatureExamples>,
) -> Result<Handle<S>> {
    graph
        .all::<S>()
        .into_iter()
        .find(|&h| of(graph.inputs(h)) == examples)
        .ok_or_else(|| Error::run(format!("internal: no {} node for an analysed SAE", S::NAME)))
}

impl Stage for FeatureBrowser {
    const NAME: &'static str = NAME;
    const VERSION: u32 = VERSION;
    const DESCRIPTION: &'static str = "static HTML pages of every analysed feature";
    const RUN_DIR: Option<&'static str> = Some("features");
    // Renders on the host; its inputs' keys already carry the device.
    const SAME_ON_EVERY_DEVICE: bool = true;
    type Params = BrowserParams;
    type Inputs = BrowserInputs;
    type Output = ();

    fn plan(graph: &mut Graph, spec: &ResolvedSpec) -> Result<()> {
        let mut saes = Vec::new();
        for examples in graph.all::<FeatureExamples>() {
            let i = graph.inputs(examples);
            saes.push(AnalysedSae {
                sae: i.sae,
                id: sae_id(graph, i.sae),
                stats: i.stats,
                examples,
                lens: for_examples::<LogitLens>(graph, examples, |x| x.examples)?,
                ablated: for_examples::<AblatedTextStage>(graph, examples, |x| x.examples)?,
                direction: for_examples::<DirectionAblationStage>(graph, examples, |x| x.examples)?,
            });
        }
        if saes.is_empty() {
            return Ok(());
        }
        let analysed: HashSet<_> = saes.iter().map(|a| a.sae.id()).collect();
        let matches = graph
            .all::<MatchSizes>()
            .into_iter()
            .filter_map(|m| {
                let i = graph.inputs(m);
                (analysed.contains(&i.small.id()) || analysed.contains(&i.large.id()))
                    .then(|| (m, sae_id(graph, SaeNode::Trained(i.small)), sae_id(graph, SaeNode::Trained(i.large))))
            })
            .collect();
        let title = spec.spec.experiment.name.clone();
        let label = format!("{} analysed dictionaries", saes.len());
        graph.add::<Self>(label, BrowserParams { title }, BrowserInputs { saes, matches })?;
        Ok(())
    }

    fn run(ctx: &StageCtx, params: &BrowserParams, inputs: &BrowserInputs, out: &Path) -> Result<()> {
        let mut loaded = Vec::new();
        for a in &inputs.saes {
            loaded.push((
                ctx.input(a.stats)?,
                ctx.input(a.examples)?,
                ctx.input(a.lens)?,
                ctx.input(a.ablated)?,
                ctx.input(a.direction)?,
            ));
        }
        // Which features of each analysed SAE have pages, by training key.
        let analysed: HashMap<_, HashSet<usize>> = inputs
            .saes
            .iter()
            .zip(&loaded)
            .map(|(a, l)| (a.id.train_key, l.1.iter().map(|f| f.feature).collect()))
            .collect();
        let mut views = Vec::new();
        for (a, (stats, examples, lens, ablated, direction)) in inputs.saes.iter().zip(&loaded) {
            let key = a.id.train_key;
            let mut view = SaeView {
                id: a.id.clone(),
                stats,
                features: examples,
                lens,
                ablated,
                direction,
                smaller: None,
                larger: None,
            };
            for (m, small, large) in &inputs.matches {
                let pairs = &ctx.input(*m)?.pairs;
                let neighbour = |id: &SaeId, partner| Across {
                    id: id.clone(),
                    partner,
                    analysed: analysed.get(&id.train_key).cloned().unwrap_or_default(),
                };
                if small.train_key == key {
                    let partner = pairs
                        .iter()
                        .enumerate()
                        .filter_map(|(f, p)| p.map(|(g, c)| (f, (g as usize, c))))
                        .collect();
                    view.larger = Some(neighbour(large, partner));
                } else if large.train_key == key {
                    let partner = pairs
                        .iter()
                        .enumerate()
                        .filter_map(|(f, p)| p.map(|(g, c)| (g as usize, (f, c))))
                        .collect();
                    view.smaller = Some(neighbour(small, partner));
                }
            }
            views.push(view);
        }
        let browser = Browser {
            title: params.title.clone(),
            saes: views,
        };
        browser::write(&browser, out)
    }

    fn load(_ctx: &RunCtx, _entry: &Entry) -> Result<()> {
        Ok(())
    }
}
