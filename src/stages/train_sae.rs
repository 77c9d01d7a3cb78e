//! Stage `train_sae`: one SAE per grid point, trained on the data stage's training split —
//! toy samples in memory or an activation store; the grid is planned once for both.

use super::harvest::Harvest;
use super::toy_data::ToyData;
use crate::cache::Entry;
use crate::pipeline::{Graph, Handle, RunCtx, Stage, StageCtx, StageInputs, StageResults};
use crate::results::{IntoCell, SaeId, CURVES};
use crate::sae::grads::{Activation, StepPath};
use crate::sae::checkpoint::Checkpointing;
use crate::sae::train::{train, BatchSource, CurvePoint, InMemory, TrainEvent, TrainJob};
use crate::sae::meta::{SaeMeta, TrainedOn, META_FILE};
use crate::sae::Sae;
use crate::spec::resolve::{DataParams, GridPoint, TextSetup, TrainSchedule};
use crate::spec::{Architecture, ResolvedSpec};
use crate::{Error, Result};
use serde::Serialize;
use std::path::Path;

pub const NAME: &str = "train_sae";
/// 2: the entry records what the SAE was trained on (`sae.json`); `d_in` is the hook's
/// width (it was d_model for every hook).
/// 3: dense steps (early in training) run on host buffers (`grads::dense_grads`), not
/// candle ops; the trained SAEs differ from version 2's in the last bits.
pub const VERSION: u32 = 3;

pub(crate) const SAE_FILE: &str = "sae.safetensors";
const CURVE_FILE: &str = "curve.json";
/// In the node's checkpoint area, not in its entry.
const CHECKPOINT_FILE: &str = "train_state.safetensors";

pub struct TrainSae;

#[derive(Debug, Clone, Serialize)]
pub struct TrainParams {
    pub architecture: Architecture,
    /// The width of the training data (the hook's activation, or the toy dimension).
    pub d_in: usize,
    pub d_sae: usize,
    pub l1: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub k: Option<usize>,
    pub seed: u64,
    pub schedule: TrainSchedule,
}

impl TrainParams {
    pub fn activation(&self) -> Activation {
        match (self.architecture, self.k) {
            (Architecture::TopK, Some(k)) => Activation::TopK(k),
            _ => Activation::ReluL1(self.l1),
        }
    }

    /// `d_sae=512 l1=0.05 seed=0` or `d_sae=512 k=32 seed=0`.
    pub fn label(&self) -> String {
        match self.k {
            Some(k) => format!("d_sae={} k={k} seed={}", self.d_sae, self.seed),
            None => format!("d_sae={} l1={} seed={}", self.d_sae, self.l1, self.seed),
        }
    }
}

/// Where training samples come from.
#[derive(Debug, Clone, Copy)]
pub enum TrainData {
    Toy(Handle<ToyData>),
    Store(Handle<Harvest>),
}

pub struct TrainInputs {
    pub data: TrainData,
    /// The grid point's dictionary ratio (relative to the spec's ratio base), for tables.
    pub ratio: f64,
    /// The model, hook and contexts behind the activations (`None` for toy data), recorded
    /// in the entry. Determined by the data input's key except `model_source`, a location.
    pub trained_on: Option<TrainedOn>,
}

impl StageInputs for TrainInputs {
    fn nodes(&self) -> Vec<usize> {
        match self.data {
            TrainData::Toy(h) => vec![h.id()],
            TrainData::Store(h) => vec![h.id()],
        }
    }
}

/// The SAE trained by `node`, as it is identified in result tables.
pub fn sae_id(graph: &Graph, node: Handle<TrainSae>) -> SaeId {
    let p = graph.params(node);
    SaeId {
        architecture: p.architecture,
        d_sae: p.d_sae,
        l1: p.l1,
        k: p.k,
        seed: p.seed,
        train_key: graph.node(node).key,
    }
}

/// What text data an SAE of this spec is trained on.
pub fn trained_on(t: &TextSetup) -> TrainedOn {
    TrainedOn {
        model_source: t.model_source.clone(),
        model_hash: Some(t.model_hash.clone()),
        processing: t.processing,
        model_dtype: format!("{:?}", t.dtype).to_lowercase(),
        hook: t.hook.name(),
        context_tokens: t.context.context_tokens,
        prepend_bos: t.context.prepend_bos,
        data_source: t.data_source.clone(),
    }
}

fn params_for(spec: &ResolvedSpec, schedule: &TrainSchedule, point: &GridPoint) -> TrainParams {
    TrainParams {
        architecture: point.architecture,
        d_in: spec.data.activation_dim(),
        d_sae: point.d_sae,
        l1: point.l1,
        k: point.k,
        seed: point.seed,
        schedule: schedule.clone(),
    }
}

impl Stage for TrainSae {
    const NAME: &'static str = NAME;
    const VERSION: u32 = VERSION;
    const DESCRIPTION: &'static str = "one sparse autoencoder per grid point";
    const GRID_POINT: bool = true;
    type Params = TrainParams;
    type Inputs = TrainInputs;
    type Output = Sae;

    fn plan(graph: &mut Graph, spec: &ResolvedSpec) -> Result<()> {
        let Some(schedule) = &spec.schedule else {
            return Ok(()); // imported SAEs: nothing to train
        };
        let data = match (graph.only::<ToyData>(), graph.only::<Harvest>()) {
            (Some(toy), _) => TrainData::Toy(toy),
            (None, Some(store)) => TrainData::Store(store),
            (None, None) => return Err(Error::run("internal: no training data was planned")),
        };
        let on = match &spec.data {
            DataParams::Text(t) => Some(trained_on(t)),
            DataParams::Toy(_) => None,
        };
        for point in &spec.grid {
            let params = params_for(spec, schedule, point);
            let inputs = TrainInputs {
                data,
                ratio: point.ratio,
                trained_on: on.clone(),
            };
            graph.add::<Self>(params.label(), params, inputs)?;
        }
        Ok(())
    }

    fn run(ctx: &StageCtx, params: &TrainParams, inputs: &TrainInputs, out: &Path) -> Result<()> {
        let mut source: Box<dyn BatchSource> = match inputs.data {
            TrainData::Toy(h) => Box::new(InMemory::new(&ctx.input(h)?.train, params.seed)?),
            TrainData::Store(h) => Box::new(ctx.input(h)?.train.shuffled(params.seed)),
        };
        let job = TrainJob {
            d_sae: params.d_sae,
            activation: params.activation(),
            seed: params.seed,
            schedule: &params.schedule,
            path: StepPath::for_device(&ctx.device),
            checkpoint: ctx.checkpoints().map(|(dir, every)| Checkpointing {
                file: dir.join(CHECKPOINT_FILE),
                every,
                job: ctx.key.hex(),
            }),
            label: params.label(),
        };
        let bar = ctx.progress.steps(params.schedule.steps, ctx.label);
        let trained = train(source.as_mut(), &job, |event| match event {
            TrainEvent::Resumed(done) => {
                bar.set_position(done);
                ctx.progress.println(&format!(
                    "        {NAME} {}: resuming from its checkpoint after step {done}",
                    ctx.label
                ));
            }
            TrainEvent::Step(done, point) => {
                bar.set_position(done);
                if let Some(p) = point {
                    bar.set_message(format!("loss {:.4} L0 {:.1}", p.loss, p.l0));
                }
            }
        });
        bar.finish_and_clear();
        let (sae, curve) = trained?;
        sae.save(&out.join(SAE_FILE))?;
        let meta = SaeMeta {
            architecture: params.architecture,
            d_in: sae.d_in(),
            d_sae: params.d_sae,
            l1: params.l1,
            k: params.k,
            seed: params.seed,
            trained_on: inputs.trained_on.clone(),
        };
        super::write_json(&out.join(META_FILE), &meta)?;
        super::write_json(&out.join(CURVE_FILE), &curve)
    }

    fn load(ctx: &RunCtx, entry: &Entry) -> Result<Sae> {
        Sae::load(&entry.file(SAE_FILE), &ctx.device)
    }

    fn results(out: &mut StageResults<Self>) -> Result<()> {
        let id = sae_id(out.graph, out.node);
        let curve: Vec<CurvePoint> = out.read_json(CURVE_FILE)?;
        let ratio = out.inputs().ratio;
        out.metrics(
            &id,
            [
                ("ratio", ratio.cell()),
                ("final_loss", curve.last().map(|p| p.loss).cell()),
            ],
        );
        let curves = out.tables.table(CURVES);
        for p in &curve {
            curves.push(
                &id,
                [
                    ("step", p.step.cell()),
                    ("lr", p.lr.cell()),
                    ("loss", p.loss.cell()),
                    ("mse", p.mse.cell()),
                    ("l1_term", p.l1_term.cell()),
                    ("l0", p.l0.cell()),
                    ("dead_fraction", p.dead_fraction.cell()),
                    ("resampled", p.resampled.cell()),
                    ("elapsed_s", p.elapsed_s.cell()),
                ],
            );
        }
        Ok(())
    }

    fn detail(params: &TrainParams) -> Option<String> {
        Some(format!("{} steps", params.schedule.steps))
    }
}
