//! A model, an SAE at one of its hooks, and the device: what the ablations run.

use crate::model::{GptNeoX, HookPoint};
use crate::sae::Sae;
use crate::Result;
use candle_core::{Device, Tensor};

pub struct Probe<'a> {
    pub model: &'a GptNeoX,
    pub sae: &'a Sae,
    pub hook: HookPoint,
    pub device: &'a Device,
}

impl Probe<'_> {
    /// The feature's activation at the last position of each row of `tokens` (rows × len).
    pub fn last_token_activations(
        &self,
        tokens: &[u32],
        rows: usize,
        feature: usize,
    ) -> Result<Vec<f32>> {
        let len = tokens.len() / rows;
        let t = Tensor::from_slice(tokens, (rows, len), self.device)?;
        let acts = self.model.capture(&t, &[self.hook])?.remove(0);
        let last = acts.narrow(1, len - 1, 1)?.squeeze(1)?.contiguous()?;
        Ok(self
            .sae
            .encode(&last)?
            .narrow(1, feature, 1)?
            .flatten_all()?
            .to_vec1()?)
    }
}
