//! The stages of the pipeline, one file each (see `pipeline::stage::Stage`), and the
//! registry: the one list that says which stages exist. Registry order is planning order,
//! so a stage comes after every stage it reads.
//!
//!   toy:  toy_data ──► train_sae ──► eval_sae
//!   text: tokenize ──► harvest ──► ce_baselines
//!                         └──► train_sae ──► eval_lm
//!         or, with `[sae] source`: import_sae ──► eval_lm (and the analyses)
//!         pairs of consecutive sizes of train_sae ──► match_sizes
//!   analyses (text, per analysed SAE): feature_stats ──► feature_examples ──► logit_lens
//!         (with unembed_norms, once per model), ablated_text, direction_ablation

pub mod sae_node;

use crate::pipeline::StageInfo;
use crate::{Error, Result};
use serde::{de::DeserializeOwned, Serialize};
use std::path::Path;

/// Declares each stage module and lists its stage type in `REGISTRY`: adding a stage is one
/// line here plus its file.
macro_rules! registry {
    ($($module:ident :: $stage:ident),* $(,)?) => {
        $(pub mod $module;)*
        /// Every stage, in planning order.
        pub const REGISTRY: &[StageInfo] = &[$(StageInfo::of::<$module::$stage>()),*];
    };
}

registry! {
    toy_data::ToyData,
    tokenize::Tokenize,
    harvest::Harvest,
    ce_baselines::CeBaselines,
    train_sae::TrainSae,
    import_sae::ImportSae,
    eval_sae::EvalSae,
    eval_lm::EvalLm,
    match_sizes::MatchSizes,
    feature_stats::FeatureStats,
    feature_examples::FeatureExamples,
    unembed_norms::UnembedNorms,
    logit_lens::LogitLens,
    ablated_text::AblatedTextStage,
    direction_ablation::DirectionAblationStage,
    feature_browser::FeatureBrowser,
}

pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value)
        .map_err(|e| Error::run(format!("cannot encode {}: {e}", path.display())))?;
    std::fs::write(path, bytes).map_err(|e| Error::io(path, "cannot write", e))
}

pub(crate) fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, "cannot read", e))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::run(format!("cannot decode {}: {e}", path.display())))
}
