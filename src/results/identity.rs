//! The identity of a trained SAE in result tables. `diff` and `reproduce` match runs on the
//! first five fields (they survive a stage-version bump); `train_key` pins the exact cache
//! entry.

use super::table::Value;
use crate::cache::StageKey;
use crate::spec::Architecture;

#[derive(Debug, Clone, PartialEq)]
pub struct SaeId {
    pub architecture: Architecture,
    pub d_sae: usize,
    /// 0 for TopK.
    pub l1: f64,
    /// TopK only.
    pub k: Option<usize>,
    pub seed: u64,
    pub train_key: StageKey,
}

/// Column names of the identity, in table order.
pub const ID_COLUMNS: [&str; 6] = ["architecture", "d_sae", "l1", "k", "seed", "train_key"];

impl SaeId {
    pub fn values(&self) -> [Option<Value>; 6] {
        let arch = match self.architecture {
            Architecture::ReluL1 => "relu_l1",
            Architecture::TopK => "topk",
        };
        [
            Some(Value::Str(arch.to_string())),
            Some(Value::U64(self.d_sae as u64)),
            Some(Value::F64(self.l1)),
            self.k.map(|k| Value::U64(k as u64)),
            Some(Value::U64(self.seed)),
            Some(Value::Str(self.train_key.hex())),
        ]
    }

    /// `d_sae=512 l1=0.05` or `d_sae=512 k=32`; with the seed when `with_seed`.
    pub fn label(&self, with_seed: bool) -> String {
        let sparsity = match self.k {
            Some(k) => format!("k={k}"),
            None => format!("l1={}", self.l1),
        };
        let mut s = format!("d_sae={} {sparsity}", self.d_sae);
        if with_seed {
            s.push_str(&format!(" seed={}", self.seed));
        }
        s
    }
}
