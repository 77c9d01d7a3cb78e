//! Reconstruction metrics over a whole evaluation set (REFERENCE.md "Metrics"):
//! - `mse`: mean over samples of ‖x − x̂‖² (summed over dimensions);
//! - `fve`: 1 − Σ‖x − x̂‖² / Σ‖x − x̄‖², x̄ the eval-set mean (variance about the mean, not
//!   about zero: the SAELens 6.18 bug);
//! - `l0`: mean number of active latents per sample; `dead`: latents never active.

use crate::sae::reconstruct::Reconstructed;
use crate::sae::Sae;
use crate::Result;
use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Reconstruction {
    pub mse: f64,
    pub fve: f64,
    pub l0: f64,
    pub dead: usize,
    /// Latents active on more than 10% of samples.
    pub dense: usize,
    pub samples: usize,
}

/// The metrics of `sae` over the rows of `x`, encoded `batch` rows at a time.
pub fn evaluate(sae: &Sae, x: &Tensor, batch: usize) -> Result<Reconstruction> {
    let (n, _) = x.dims2()?;
    let mut sums = ReconstructionSums::new(x, sae.d_sae())?;
    for start in (0..n).step_by(batch.max(1)) {
        let xb = x.narrow(0, start, batch.min(n - start))?;
        sums.add(&xb, &sae.reconstruct(&xb)?)?;
    }
    sums.finish()
}

/// The running sums behind `Reconstruction`, batch by batch, for callers that use the
/// reconstructions for more than these metrics (`eval_lm` splices them into the model).
pub struct ReconstructionSums {
    /// The eval set's mean, for the variance in `fve`.
    mean: Tensor,
    sse: f64,
    sst: f64,
    active: f64,
    /// Per latent, the samples it was active on.
    fired: Tensor,
    samples: usize,
}

impl ReconstructionSums {
    /// Sums for an eval set of rows `x` (samples, d), of which the batches given to `add`
    /// are parts, and a dictionary of `d_sae` latents.
    pub fn new(x: &Tensor, d_sae: usize) -> Result<ReconstructionSums> {
        Ok(ReconstructionSums {
            mean: x.mean(0)?,
            sse: 0.0,
            sst: 0.0,
            active: 0.0,
            fired: Tensor::zeros(d_sae, DType::F32, x.device())?,
            samples: 0,
        })
    }

    /// A batch of rows `x` (b, d) and its reconstruction.
    pub fn add(&mut self, x: &Tensor, r: &Reconstructed) -> Result<()> {
        let sum = |t: Tensor| -> Result<f64> {
            Ok(t.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?)
        };
        self.sse += sum((&r.x_hat - x)?.sqr()?)?;
        self.sst += sum(x.broadcast_sub(&self.mean)?.sqr()?)?;
        self.active += sum(r.fired.clone())?;
        self.fired = (&self.fired + &r.fired)?;
        self.samples += x.dim(0)?;
        Ok(())
    }

    pub fn finish(self) -> Result<Reconstruction> {
        let n = self.samples;
        let fired = self.fired.to_vec1::<f32>()?;
        Ok(Reconstruction {
            mse: self.sse / n as f64,
            fve: 1.0 - self.sse / self.sst,
            l0: self.active / n as f64,
            dead: fired.iter().filter(|&&c| c == 0.0).count(),
            dense: fired.iter().filter(|&&c| c as f64 > 0.1 * n as f64).count(),
            samples: n,
        })
    }
}

impl Reconstruction {
    /// The metrics table's reconstruction columns.
    pub fn columns(&self) -> [(&'static str, crate::results::Cell); 5] {
        use crate::results::IntoCell;
        [
            ("mse", self.mse.cell()),
            ("fve", self.fve.cell()),
            ("l0", self.l0.cell()),
            ("dead", self.dead.cell()),
            ("dense", self.dense.cell()),
        ]
    }
}
