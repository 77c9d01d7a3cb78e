//! Dead-latent resampling, as in Anthropic's "Towards Monosemanticity" (2023) and
//! saprmarks/dictionary_learning's StandardTrainer: a latent that has not fired for a while
//! is re-initialised towards an input the SAE reconstructs badly. Inputs are drawn with
//! probability ∝ their squared reconstruction loss; the decoder atom becomes the input's
//! (centred) direction, the encoder row the same direction scaled to 0.2 × the mean norm of
//! the alive encoder rows, its bias 0, and its optimiser state is cleared.

use super::adam::Adam;
use super::params::SaeParams;
use super::train::BatchSource;
use crate::device::HOST;
use crate::Result;
use candle_core::{Tensor, D};
use rand::distr::{weighted::WeightedIndex, Distribution};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Batches of inputs scored to choose new directions.
const SCORING_BATCHES: usize = 4;

pub fn resample_dead(
    p: &mut SaeParams,
    adam: &mut Adam,
    dead: &[usize],
    source: &mut dyn BatchSource,
    batch_size: usize,
    seed: u64,
) -> Result<()> {
    let d = p.d_in;
    let mut inputs = vec![0f32; SCORING_BATCHES * batch_size * d];
    for chunk in inputs.chunks_mut(batch_size * d) {
        source.next_batch(chunk)?;
    }
    let n = inputs.len() / d;
    let x = Tensor::from_slice(&inputs, (n, d), &HOST)?;
    let sae = p.to_sae()?;
    let err = (sae.decode(&sae.encode(&x)?)? - &x)?;
    let loss: Vec<f32> = err.sqr()?.sum(D::Minus1)?.to_vec1()?;
    let weights: Vec<f64> = loss
        .iter()
        .map(|l| (*l as f64) * (*l as f64) + 1e-12)
        .collect();
    let pick = WeightedIndex::new(&weights)
        .map_err(|e| crate::Error::run(format!("resampling weights: {e}")))?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);

    let is_dead = {
        let mut v = vec![false; p.d_sae];
        dead.iter().for_each(|&j| v[j] = true);
        v
    };
    let alive_norms: Vec<f32> = p
        .w_enc
        .chunks(d)
        .zip(&is_dead)
        .filter(|(_, dead)| !**dead)
        .map(|(row, _)| row.iter().map(|v| v * v).sum::<f32>().sqrt())
        .collect();
    let enc_norm = 0.2
        * if alive_norms.is_empty() {
            1.0
        } else {
            alive_norms.iter().sum::<f32>() / alive_norms.len() as f32
        };

    for &j in dead {
        let i = pick.sample(&mut rng);
        let mut dir: Vec<f32> = inputs[i * d..(i + 1) * d]
            .iter()
            .zip(&p.b_dec)
            .map(|(v, b)| v - b)
            .collect();
        let norm = dir.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
        dir.iter_mut().for_each(|v| *v /= norm);
        p.w_dec[j * d..(j + 1) * d].copy_from_slice(&dir);
        p.w_enc[j * d..(j + 1) * d]
            .iter_mut()
            .zip(&dir)
            .for_each(|(w, v)| *w = v * enc_norm);
        p.b_enc[j] = 0.0;
    }
    // Parameter order in the optimiser: w_enc, b_enc, w_dec, b_dec.
    adam.reset_rows(0, dead, d);
    adam.reset_rows(1, dead, 1);
    adam.reset_rows(2, dead, d);
    Ok(())
}
