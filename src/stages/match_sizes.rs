//! Stage `match_sizes`: the MCS feature count of one dictionary against the next larger one
//! trained with the same l1 and seed.

use crate::cache::Entry;
use crate::metrics::mcs::{match_sizes, SizeMatch};
use crate::sae::Sae;
use crate::Result;
use serde::Serialize;
use std::path::Path;

pub const NAME: &str = "match_sizes";
pub const VERSION: u32 = 1;

const FILE: &str = "match.json";

#[derive(Debug, Clone, Serialize)]
pub struct MatchParams {
    pub mcs_threshold: f64,
}

pub fn run(params: &MatchParams, small: &Sae, large: &Sae, out: &Path) -> Result<()> {
    let m = match_sizes(&small.w_dec, &large.w_dec, params.mcs_threshold)?;
    super::write_json(&out.join(FILE), &m)
}

pub fn load(entry: &Entry) -> Result<SizeMatch> {
    super::read_json(&entry.file(FILE))
}
