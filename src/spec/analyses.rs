//! `[analyses]` resolved: which trained SAEs are analysed, and the typed parameters the
//! analysis stages hash into their keys.

use super::load::SpecOrigin;
use super::resolve::GridPoint;
use super::{AnalysesSection, Spec};
use crate::Result;
use serde::Serialize;

/// Which features of an analysed SAE get examples, logit lens and ablations.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FeatureSelect {
    /// The n most frequently active on the scanned contexts.
    TopN(usize),
    /// A seeded random sample of n latents (from those active at least once).
    Random {
        n: usize,
        seed: u64,
    },
    Ids(Vec<usize>),
    All,
}

/// How a feature's activation range is cut into bins for the uniform examples.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Bins {
    /// Bins [0, w), [w, 2w), ... up to the feature's max.
    Width(f64),
    /// n equal bins from 0 to the feature's max.
    Count(usize),
}

#[derive(Debug, Clone)]
pub struct AnalysisSetup {
    filter: AnalysesSection,
    pub contexts: usize,
    pub select: FeatureSelect,
    pub top_k: usize,
    pub bins: Bins,
    pub seed: u64,
    pub max_norm: f64,
}

impl AnalysisSetup {
    /// Whether the SAE at `point` is analysed.
    pub fn admits(&self, point: &GridPoint) -> bool {
        let f = &self.filter;
        let has = |list: &Option<super::sweep::OneOrMany<f64>>, v: f64| {
            list.as_ref().is_none_or(|l| {
                l.values()
                    .iter()
                    .any(|x| (x - v).abs() <= 1e-9 * v.abs().max(1.0))
            })
        };
        has(&f.ratios, point.ratio)
            && f.d_sae
                .as_ref()
                .is_none_or(|l| l.values().contains(&point.d_sae))
            && (point.k.is_some() || has(&f.l1, point.l1))
            && f.k
                .as_ref()
                .is_none_or(|l| point.k.is_some_and(|k| l.values().contains(&k)))
            && f.seeds
                .as_ref()
                .is_none_or(|l| l.values().contains(&point.seed))
    }
}

/// `None` when the spec has no `[analyses]`. `eval_contexts` is the default scan size;
/// `is_text` says whether there is a language model to analyse with.
pub fn resolve_analyses(
    spec: &Spec,
    origin: &SpecOrigin,
    grid: &[GridPoint],
    eval_contexts: Option<usize>,
) -> Result<Option<AnalysisSetup>> {
    let Some(a) = spec.analyses.as_ref().filter(|a| a.enabled) else {
        return Ok(None);
    };
    let e = |key: &str, what: String| origin.error(&format!("analyses.{key}"), what);
    let select = match a.features.as_str() {
        "top_n" => FeatureSelect::TopN(a.n_features),
        "random" => FeatureSelect::Random {
            n: a.n_features,
            seed: a.seed,
        },
        "all" => FeatureSelect::All,
        "ids" => match &a.feature_ids {
            Some(ids) if !ids.is_empty() => FeatureSelect::Ids(ids.clone()),
            _ => {
                return Err(e(
                    "feature_ids",
                    "is required (non-empty) when features = \"ids\"".into(),
                ))
            }
        },
        other => {
            return Err(e(
                "features",
                format!("expected \"top_n\", \"random\", \"ids\" or \"all\", got \"{other}\""),
            ))
        }
    };
    if a.feature_ids.is_some() && !matches!(select, FeatureSelect::Ids(_)) {
        return Err(e(
            "feature_ids",
            "applies only with features = \"ids\"".into(),
        ));
    }
    if matches!(
        select,
        FeatureSelect::TopN(0) | FeatureSelect::Random { n: 0, .. }
    ) {
        return Err(e("n_features", "must be > 0".into()));
    }
    let bins = match (a.bin_width, a.n_bins) {
        (Some(_), Some(_)) => {
            return Err(e("n_bins", "give `bin_width` or `n_bins`, not both".into()))
        }
        (Some(w), None) if !(w.is_finite() && w > 0.0) => {
            return Err(e("bin_width", format!("must be > 0, got {w}")))
        }
        (Some(w), None) => Bins::Width(w),
        (None, Some(0)) => return Err(e("n_bins", "must be > 0".into())),
        (None, Some(n)) => Bins::Count(n),
        (None, None) => Bins::Width(1.0),
    };
    if a.top_k == 0 {
        return Err(e("top_k", "must be > 0".into()));
    }
    if a.logit_lens_max_norm.is_nan() || a.logit_lens_max_norm <= 0.0 {
        return Err(e(
            "logit_lens_max_norm",
            format!("must be > 0, got {}", a.logit_lens_max_norm),
        ));
    }
    let Some(eval_contexts) = eval_contexts else {
        return Err(origin.error(
            "analyses",
            "needs text data and a model (logit lens and ablations run the language model)",
        ));
    };
    let contexts = match a.contexts {
        Some(0) => return Err(e("contexts", "must be > 0".into())),
        Some(n) => n,
        None => eval_contexts,
    };
    let setup = AnalysisSetup {
        filter: a.clone(),
        contexts,
        select,
        top_k: a.top_k,
        bins,
        seed: a.seed,
        max_norm: a.logit_lens_max_norm,
    };
    if !grid.iter().any(|p| setup.admits(p)) {
        return Err(origin.error(
            "analyses",
            "its filters (ratios / d_sae / l1 / k / seeds) admit none of the sweep's SAEs",
        ));
    }
    Ok(Some(setup))
}
