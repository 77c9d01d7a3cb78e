//! The original study's feature analyses, as plain functions the analysis stages call:
//! statistics over every latent (`stats`), which features to look at (`select`), top and
//! uniform-bin examples (`examples`), the logit lens (`logit_lens`), ablated text
//! (`ablated_text`) and direction ablation (`direction_ablation`). Definitions follow
//! ../shared/REFERENCE.md, "The analyses".

pub mod ablated_text;
pub mod direction_ablation;
pub mod examples;
pub mod logit_lens;
pub mod probe;
pub mod scan;
pub mod select;
pub mod stats;
pub mod tokens;

use serde::{Deserialize, Serialize};

/// A token with a value (a logit-lens logit, a change in log-probability, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenValue {
    pub id: u32,
    pub token: String,
    pub value: f32,
}
