//! Reconstruction metrics over a whole evaluation set (REFERENCE.md "Metrics"):
//! - `mse`: mean over samples of ‖x − x̂‖² (summed over dimensions);
//! - `fve`: 1 − Σ‖x − x̂‖² / Σ‖x − x̄‖², x̄ the eval-set mean (variance about the mean, not
//!   about zero: the SAELens 6.18 bug);
//! - `l0`: mean number of active latents per sample; `dead`: latents never active.

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

pub fn evaluate(sae: &Sae, x: &Tensor, batch: usize) -> Result<Reconstruction> {
    let (n, _) = x.dims2()?;
    let mean = x.mean(0)?;
    let (mut sse, mut sst, mut active_total) = (0f64, 0f64, 0f64);
    let mut fired = Tensor::zeros(sae.d_sae(), DType::F32, x.device())?;
    for start in (0..n).step_by(batch.max(1)) {
        let xb = x.narrow(0, start, batch.min(n - start))?;
        let f = sae.encode(&xb)?;
        let err = (sae.decode(&f)? - &xb)?;
        sse += err
            .sqr()?
            .sum_all()?
            .to_dtype(DType::F64)?
            .to_scalar::<f64>()?;
        sst += xb
            .broadcast_sub(&mean)?
            .sqr()?
            .sum_all()?
            .to_dtype(DType::F64)?
            .to_scalar::<f64>()?;
        let active = f.gt(0f64)?.to_dtype(DType::F32)?;
        active_total += active.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        fired = (fired + active.sum(0)?)?;
    }
    let fired = fired.to_vec1::<f32>()?;
    Ok(Reconstruction {
        mse: sse / n as f64,
        fve: 1.0 - sse / sst,
        l0: active_total / n as f64,
        dead: fired.iter().filter(|&&c| c == 0.0).count(),
        dense: fired.iter().filter(|&&c| c as f64 > 0.1 * n as f64).count(),
        samples: n,
    })
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
