//! Semantic checks and resolution: turns a type-checked `Spec` into the typed parameters
//! the stages are keyed on. Ratios become absolute sizes, epochs become steps, defaults are
//! filled in, and sweep lists are expanded into grid points. Every check names the key and
//! where its value came from.

use super::{Architecture, RatioBase, Schedule, Spec, SpecOrigin};
use crate::data::toy::ToyParams;
use crate::Result;
use serde::Serialize;

/// Data a spec asks for. Only toy data exists so far; text sources slot in as variants.
#[derive(Debug, Clone, Serialize)]
pub enum DataParams {
    Toy(ToyParams),
}

impl DataParams {
    pub fn activation_dim(&self) -> usize {
        match self {
            DataParams::Toy(t) => t.activation_dim,
        }
    }
}

/// Optimiser and schedule, shared by every grid point.
#[derive(Debug, Clone, Serialize)]
pub struct TrainSchedule {
    pub batch_size: usize,
    pub steps: u64,
    pub lr: f64,
    pub warmup_steps: u64,
    pub schedule: Schedule,
    pub adam_beta1: f64,
    pub adam_beta2: f64,
    pub log_every: u64,
}

/// One SAE to train.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct GridPoint {
    pub architecture: Architecture,
    pub d_sae: usize,
    /// `d_sae` over the ratio base, for tables and plots.
    pub ratio: f64,
    pub l1: f64,
    pub seed: u64,
}

#[derive(Debug, Clone)]
pub struct ResolvedSpec {
    pub spec: Spec,
    pub data: DataParams,
    pub schedule: TrainSchedule,
    /// Sorted by (seed, l1, d_sae) so that each size's next-larger neighbour follows it.
    pub grid: Vec<GridPoint>,
    pub eval_samples: usize,
    pub mcs_threshold: f64,
}

pub fn resolve(spec: Spec, origin: &SpecOrigin) -> Result<ResolvedSpec> {
    let e = |key: &str, what: String| origin.error(key, what);

    let name = &spec.experiment.name;
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        || name.starts_with('.')
    {
        return Err(e(
            "experiment.name",
            format!("expected a non-empty name of letters, digits, '_', '-', '.' (it names a directory), got \"{name}\""),
        ));
    }

    if spec.eval.samples == 0 {
        return Err(e("eval.samples", "must be > 0".into()));
    }
    let threshold = spec.eval.mcs_threshold;
    if !(threshold > 0.0 && threshold <= 1.0) {
        return Err(e(
            "eval.mcs_threshold",
            format!("must be in (0, 1], got {threshold}"),
        ));
    }

    let data = resolve_data(&spec, origin)?;
    let train_samples = match &data {
        DataParams::Toy(t) => t.train_samples,
    };
    let schedule = resolve_schedule(&spec, origin, train_samples)?;

    // Dictionary sizes.
    let sae = &spec.sae;
    let base = match sae.ratio_base {
        RatioBase::ActivationDim => data.activation_dim(),
        RatioBase::NFeatures => match &data {
            DataParams::Toy(t) => t.n_features,
        },
    };
    let sizes: Vec<(usize, f64)> = match (&sae.dict_ratios, &sae.dict_sizes) {
        (Some(_), Some(_)) | (None, None) => {
            return Err(e(
                "sae",
                "give exactly one of `dict_ratios` (multiples of the ratio base) or `dict_sizes` (absolute)".into(),
            ))
        }
        (Some(ratios), None) => {
            let mut out = Vec::new();
            for &r in ratios.values() {
                if !(r.is_finite() && r > 0.0) {
                    return Err(e("sae.dict_ratios", format!("every ratio must be > 0, got {r}")));
                }
                let d = (r * base as f64).round() as usize;
                if d == 0 {
                    return Err(e("sae.dict_ratios", format!("ratio {r} × {base} rounds to 0 latents")));
                }
                out.push((d, d as f64 / base as f64));
            }
            out
        }
        (None, Some(sizes)) => {
            let mut out = Vec::new();
            for &d in sizes.values() {
                if d == 0 {
                    return Err(e("sae.dict_sizes", "every size must be > 0, got 0".into()));
                }
                out.push((d, d as f64 / base as f64));
            }
            out
        }
    };
    for &l1 in sae.l1.values() {
        if !(l1.is_finite() && l1 >= 0.0) {
            return Err(e(
                "sae.l1",
                format!("every coefficient must be ≥ 0, got {l1}"),
            ));
        }
    }
    let seeds = match &spec.train.seeds {
        Some(s) => s.values().to_vec(),
        None => vec![spec.experiment.seed],
    };

    let mut grid = Vec::new();
    for &seed in &seeds {
        for &l1 in sae.l1.values() {
            for &(d_sae, ratio) in &sizes {
                grid.push(GridPoint {
                    architecture: sae.architecture,
                    d_sae,
                    ratio,
                    l1,
                    seed,
                });
            }
        }
    }
    grid.sort_by(|a, b| {
        (a.seed, a.l1, a.d_sae)
            .partial_cmp(&(b.seed, b.l1, b.d_sae))
            .expect("finite values were checked")
    });
    grid.dedup();

    Ok(ResolvedSpec {
        eval_samples: spec.eval.samples,
        mcs_threshold: threshold,
        data,
        schedule,
        grid,
        spec,
    })
}

fn resolve_data(spec: &Spec, origin: &SpecOrigin) -> Result<DataParams> {
    let d = &spec.data;
    let e = |key: &str, what: String| origin.error(key, what);
    match d.source.as_str() {
        "toy" => {
            let defaults = ToyParams::interim_report_default();
            let t = ToyParams {
                activation_dim: d.activation_dim.unwrap_or(defaults.activation_dim),
                n_features: d.n_features.unwrap_or(defaults.n_features),
                mean_active: d.mean_active.unwrap_or(defaults.mean_active),
                prob_decay: d.prob_decay.unwrap_or(defaults.prob_decay),
                correlated: d.correlated.unwrap_or(defaults.correlated),
                train_samples: d.train_samples.unwrap_or(defaults.train_samples),
                eval_samples: spec.eval.samples,
                seed: spec.experiment.seed,
            };
            if t.activation_dim == 0 {
                return Err(e("data.activation_dim", "must be > 0".into()));
            }
            if t.n_features == 0 {
                return Err(e("data.n_features", "must be > 0".into()));
            }
            if !(t.mean_active > 0.0 && t.mean_active <= t.n_features as f64) {
                return Err(e(
                    "data.mean_active",
                    format!(
                        "must be in (0, n_features = {}], got {}",
                        t.n_features, t.mean_active
                    ),
                ));
            }
            if !(t.prob_decay > 0.0 && t.prob_decay <= 1.0) {
                return Err(e(
                    "data.prob_decay",
                    format!("must be in (0, 1], got {}", t.prob_decay),
                ));
            }
            if t.train_samples == 0 {
                return Err(e("data.train_samples", "must be > 0".into()));
            }
            Ok(DataParams::Toy(t))
        }
        other => Err(e(
            "data.source",
            format!("unsupported data source \"{other}\"; expected \"toy\""),
        )),
    }
}

fn resolve_schedule(
    spec: &Spec,
    origin: &SpecOrigin,
    train_samples: usize,
) -> Result<TrainSchedule> {
    let t = &spec.train;
    let e = |key: &str, what: String| origin.error(key, what);
    if t.batch_size == 0 {
        return Err(e("train.batch_size", "must be > 0".into()));
    }
    let steps = match (t.steps, t.epochs) {
        (Some(_), Some(_)) | (None, None) => {
            return Err(e("train", "give exactly one of `steps` or `epochs`".into()))
        }
        (Some(0), None) => return Err(e("train.steps", "must be > 0".into())),
        (Some(s), None) => s,
        (None, Some(ep)) => {
            if !(ep.is_finite() && ep > 0.0) {
                return Err(e("train.epochs", format!("must be > 0, got {ep}")));
            }
            (ep * train_samples as f64 / t.batch_size as f64).ceil() as u64
        }
    };
    if !(t.lr.is_finite() && t.lr > 0.0) {
        return Err(e("train.lr", format!("must be > 0, got {}", t.lr)));
    }
    if t.warmup_steps > steps {
        return Err(e(
            "train.warmup_steps",
            format!(
                "must be ≤ the number of steps ({steps}), got {}",
                t.warmup_steps
            ),
        ));
    }
    for (key, b) in [
        ("train.adam_beta1", t.adam_beta1),
        ("train.adam_beta2", t.adam_beta2),
    ] {
        if !(0.0..1.0).contains(&b) {
            return Err(e(key, format!("must be in [0, 1), got {b}")));
        }
    }
    if t.log_every == 0 {
        return Err(e("train.log_every", "must be > 0".into()));
    }
    Ok(TrainSchedule {
        batch_size: t.batch_size,
        steps,
        lr: t.lr,
        warmup_steps: t.warmup_steps,
        schedule: t.schedule,
        adam_beta1: t.adam_beta1,
        adam_beta2: t.adam_beta2,
        log_every: t.log_every,
    })
}
