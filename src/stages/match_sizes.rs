//! Stage `match_sizes`: the MCS feature count of one dictionary against the next larger one
//! trained with the same sparsity and seed (one-to-one matching).

use super::train_sae::{sae_id, TrainSae};
use crate::cache::Entry;
use crate::metrics::mcs::{match_sizes, SizeMatch};
use crate::pipeline::{Graph, Handle, RunCtx, Stage, StageCtx, StageInputs, StageResults};
use crate::results::IntoCell;
use crate::spec::ResolvedSpec;
use crate::Result;
use serde::Serialize;
use std::path::Path;

pub const NAME: &str = "match_sizes";
/// 2: the output lists the matched pairs (for following features across sizes).
/// 3: exact sparse assignment solver; under ties it may pick other (equally good) pairs.
pub const VERSION: u32 = 3;

const FILE: &str = "match.json";

pub struct MatchSizes;

#[derive(Debug, Clone, Serialize)]
pub struct MatchParams {
    pub mcs_threshold: f64,
}

pub struct MatchInputs {
    pub small: Handle<TrainSae>,
    pub large: Handle<TrainSae>,
}

impl StageInputs for MatchInputs {
    fn nodes(&self) -> Vec<usize> {
        vec![self.small.id(), self.large.id()]
    }
}

impl Stage for MatchSizes {
    const NAME: &'static str = NAME;
    const VERSION: u32 = VERSION;
    const DESCRIPTION: &'static str =
        "features shared with the next larger dictionary (one-to-one max cosine similarity)";
    type Params = MatchParams;
    type Inputs = MatchInputs;
    type Output = SizeMatch;

    fn plan(graph: &mut Graph, spec: &ResolvedSpec) -> Result<()> {
        // SAEs are planned in grid order, sorted by (seed, sparsity, d_sae): consecutive ones
        // with the same seed and sparsity are a size and its next larger size.
        let saes = graph.all::<TrainSae>();
        for pair in saes.windows(2) {
            let (small, large) = (pair[0], pair[1]);
            let (s, l) = (graph.params(small), graph.params(large));
            if (s.architecture, s.seed, s.l1.to_bits(), s.k)
                != (l.architecture, l.seed, l.l1.to_bits(), l.k)
            {
                continue;
            }
            let label = format!(
                "d_sae={} vs {} l1={} seed={}",
                s.d_sae, l.d_sae, s.l1, s.seed
            );
            let params = MatchParams {
                mcs_threshold: spec.mcs_threshold,
            };
            graph.add::<Self>(label, params, MatchInputs { small, large })?;
        }
        Ok(())
    }

    fn run(ctx: &StageCtx, params: &MatchParams, inputs: &MatchInputs, out: &Path) -> Result<()> {
        let small = ctx.input(inputs.small)?;
        let large = ctx.input(inputs.large)?;
        let m = match_sizes(&small.w_dec, &large.w_dec, params.mcs_threshold)?;
        super::write_json(&out.join(FILE), &m)
    }

    fn load(_ctx: &RunCtx, entry: &Entry) -> Result<SizeMatch> {
        super::read_json(&entry.file(FILE))
    }

    fn results(out: &mut StageResults<Self>) -> Result<()> {
        let m: SizeMatch = out.read_json(FILE)?;
        let large = out.graph.params(out.inputs().large).d_sae;
        let id = sae_id(out.graph, out.inputs().small);
        out.metrics(
            &id,
            [
                ("next_d_sae", large.cell()),
                ("mean_matched_cos", m.mean_matched_cos.cell()),
                ("features_above", m.features_above.cell()),
                ("fraction_above", m.fraction_above.cell()),
            ],
        );
        Ok(())
    }
}
