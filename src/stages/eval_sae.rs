//! Stage `eval_sae`: reconstruction metrics on the held-out toy split and recovery of the
//! ground-truth features.

use super::toy_data::ToyData;
use super::train_sae::{sae_id, TrainSae};
use crate::cache::Entry;
use crate::metrics::mcs::{truth_recovery, TruthRecovery};
use crate::metrics::reconstruction::{evaluate, Reconstruction};
use crate::pipeline::{Graph, Handle, RunCtx, Stage, StageCtx, StageInputs, StageResults};
use crate::results::IntoCell;
use crate::spec::ResolvedSpec;
use crate::Result;
use serde::{Deserialize, Serialize};
use std::path::Path;

pub const NAME: &str = "eval_sae";
/// 2: reconstructions on host buffers, the decoder sparse when few codes fire (last-bit
/// changes).
pub const VERSION: u32 = 2;

const FILE: &str = "metrics.json";
const BATCH: usize = 4096;

pub struct EvalSae;

#[derive(Debug, Clone, Serialize)]
pub struct EvalParams {
    pub mcs_threshold: f64,
}

pub struct EvalInputs {
    pub data: Handle<ToyData>,
    pub sae: Handle<TrainSae>,
}

impl StageInputs for EvalInputs {
    fn nodes(&self) -> Vec<usize> {
        vec![self.data.id(), self.sae.id()]
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalMetrics {
    pub reconstruction: Reconstruction,
    pub truth: Option<TruthRecovery>,
}

impl Stage for EvalSae {
    const NAME: &'static str = NAME;
    const VERSION: u32 = VERSION;
    const DESCRIPTION: &'static str =
        "reconstruction on held-out toy samples and recovery of the true features";
    type Params = EvalParams;
    type Inputs = EvalInputs;
    type Output = EvalMetrics;

    fn plan(graph: &mut Graph, spec: &ResolvedSpec) -> Result<()> {
        let Some(data) = graph.only::<ToyData>() else {
            return Ok(());
        };
        for sae in graph.all::<TrainSae>() {
            let params = EvalParams {
                mcs_threshold: spec.mcs_threshold,
            };
            let label = graph.node(sae).label.clone();
            graph.add::<Self>(label, params, EvalInputs { data, sae })?;
        }
        Ok(())
    }

    fn run(ctx: &StageCtx, params: &EvalParams, inputs: &EvalInputs, out: &Path) -> Result<()> {
        let splits = ctx.input(inputs.data)?;
        let sae = ctx.input(inputs.sae)?;
        let metrics = EvalMetrics {
            reconstruction: evaluate(&sae, &splits.eval, BATCH)?,
            truth: Some(truth_recovery(
                &splits.features,
                &sae.w_dec,
                params.mcs_threshold,
            )?),
        };
        super::write_json(&out.join(FILE), &metrics)
    }

    fn load(_ctx: &RunCtx, entry: &Entry) -> Result<EvalMetrics> {
        super::read_json(&entry.file(FILE))
    }

    fn results(out: &mut StageResults<Self>) -> Result<()> {
        let m: EvalMetrics = out.read_json(FILE)?;
        let id = sae_id(out.graph, out.inputs().sae);
        out.metrics(&id, m.reconstruction.columns());
        out.metrics(
            &id,
            [
                ("mmcs_truth", m.truth.as_ref().map(|t| t.mmcs).cell()),
                ("truth_recovered", m.truth.as_ref().map(|t| t.recovered).cell()),
            ],
        );
        Ok(())
    }
}
