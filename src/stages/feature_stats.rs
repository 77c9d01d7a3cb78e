//! Stage `feature_stats`: per analysed SAE, statistics of every latent over the scanned eval
//! contexts (frequency, max, mean when active, histogram), in one streaming pass.

use super::harvest::Harvest;
use super::tokenize::Tokenize;
use super::sae_node::{sae_id, SaeNode};
use crate::analysis::scan::scan_codes;
use crate::analysis::stats::{LatentStats, StatsAccumulator, HIST_BINS};
use crate::cache::Entry;
use crate::pipeline::{Graph, Handle, RunCtx, Stage, StageCtx, StageInputs, StageResults};
use crate::results::IntoCell;
use crate::spec::ResolvedSpec;
use crate::Result;
use serde::Serialize;
use std::path::Path;

pub const NAME: &str = "feature_stats";
pub const VERSION: u32 = 1;
const FILE: &str = "stats.json";

pub struct FeatureStats;

#[derive(Debug, Clone, Serialize)]
pub struct StatsParams {
    /// Eval contexts scanned (at most; fewer if the split is smaller).
    pub contexts: usize,
    pub hist_bins: usize,
}

pub struct StatsInputs {
    pub tokens: Handle<Tokenize>,
    pub harvest: Handle<Harvest>,
    pub sae: SaeNode,
}

impl StageInputs for StatsInputs {
    fn nodes(&self) -> Vec<usize> {
        vec![self.tokens.id(), self.harvest.id(), self.sae.id()]
    }
}

/// The SAEs the spec's `[analyses]` admits, in grid order (then the imported ones).
pub fn analysed_saes(graph: &Graph, spec: &ResolvedSpec) -> Vec<SaeNode> {
    let Some(setup) = &spec.analyses else {
        return Vec::new();
    };
    SaeNode::all(graph)
        .into_iter()
        .filter(|&h| setup.admits(&h.point(graph)))
        .collect()
}

/// Eval contexts actually scanned: the spec's number, capped by the split.
pub fn scanned_contexts(wanted: usize, tokens: &crate::data::text::TokenizedContexts) -> usize {
    wanted.min(tokens.eval.len() / tokens.context_tokens)
}

impl Stage for FeatureStats {
    const NAME: &'static str = NAME;
    const VERSION: u32 = VERSION;
    const DESCRIPTION: &'static str =
        "every latent's frequency, max, mean when active and histogram on the eval contexts";
    type Params = StatsParams;
    type Inputs = StatsInputs;
    type Output = Vec<LatentStats>;

    fn plan(graph: &mut Graph, spec: &ResolvedSpec) -> Result<()> {
        let (Some(setup), Some(tokens), Some(harvest)) = (
            &spec.analyses,
            graph.only::<Tokenize>(),
            graph.only::<Harvest>(),
        ) else {
            return Ok(());
        };
        for sae in analysed_saes(graph, spec) {
            let params = StatsParams {
                contexts: setup.contexts,
                hist_bins: HIST_BINS,
            };
            let label = graph.nodes()[sae.id()].label.clone();
            graph.add::<Self>(label, params, StatsInputs { tokens, harvest, sae })?;
        }
        Ok(())
    }

    fn run(ctx: &StageCtx, params: &StatsParams, inputs: &StatsInputs, out: &Path) -> Result<()> {
        let tokens = ctx.input(inputs.tokens)?;
        let store = ctx.input(inputs.harvest)?.eval.clone();
        let sae = inputs.sae.load(ctx)?;
        let n = scanned_contexts(params.contexts, &tokens);
        let mut acc = StatsAccumulator::new(sae.d_sae());
        scan_codes(&store, &sae, n, tokens.context_tokens, &ctx.device, |_, codes| {
            acc.add(codes);
            Ok(())
        })?;
        super::write_json(&out.join(FILE), &acc.finish())
    }

    fn load(_ctx: &RunCtx, entry: &Entry) -> Result<Vec<LatentStats>> {
        super::read_json(&entry.file(FILE))
    }

    fn results(out: &mut StageResults<Self>) -> Result<()> {
        let stats: Vec<LatentStats> = out.read_json(FILE)?;
        let id = sae_id(out.graph, out.inputs().sae);
        let table = out.tables.table("feature_stats");
        for (feature, s) in stats.iter().enumerate() {
            table.push(
                &id,
                [
                    ("feature", feature.cell()),
                    ("frequency", s.frequency.cell()),
                    ("max", (s.max as f64).cell()),
                    ("mean_active", s.mean_active.cell()),
                ],
            );
        }
        let hist = out.tables.table("feature_histograms");
        for (feature, s) in stats.iter().enumerate() {
            let width = s.hist_range as f64 / s.hist.len() as f64;
            for (bin, &count) in s.hist.iter().enumerate().filter(|(_, &c)| c > 0) {
                hist.push(
                    &id,
                    [
                        ("feature", feature.cell()),
                        ("bin_lo", (bin as f64 * width).cell()),
                        ("bin_hi", ((bin + 1) as f64 * width).cell()),
                        ("count", count.cell()),
                    ],
                );
            }
        }
        Ok(())
    }
}
