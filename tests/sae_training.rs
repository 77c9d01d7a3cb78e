//! Training options beyond the plain ReLU-L1 loop: TopK, dead-latent resampling and the l1
//! warm-up, each checked on its observable effect.

use candle_core::{Device, Tensor};
use saerun::sae::grads::{Activation, StepPath};
use saerun::sae::train::{train, CurvePoint, InMemory, TrainJob};
use saerun::sae::Sae;
use saerun::spec::resolve::{ResampleSchedule, TrainSchedule};
use saerun::spec::{MseReduction, Schedule};

/// Sparse data: each sample is 2 of 8 random directions in 16 dims.
fn sparse_data(n: usize) -> Tensor {
    use rand::{Rng, SeedableRng};
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let dirs: Vec<f32> = (0..8 * 16).map(|_| r.random_range(-1.0..1.0)).collect();
    let mut out = vec![0f32; n * 16];
    for row in out.chunks_mut(16) {
        for _ in 0..2 {
            let k = r.random_range(0..8);
            let c: f32 = r.random_range(0.5..1.5);
            row.iter_mut()
                .zip(&dirs[k * 16..(k + 1) * 16])
                .for_each(|(x, d)| *x += c * d);
        }
    }
    Tensor::from_vec(out, (n, 16), &Device::Cpu).unwrap()
}

fn schedule(steps: u64) -> TrainSchedule {
    TrainSchedule {
        batch_size: 128,
        steps,
        lr: 1e-2,
        warmup_steps: 0,
        schedule: Schedule::Constant,
        adam_beta1: 0.9,
        adam_beta2: 0.999,
        log_every: 10,
        mse: MseReduction::Sum,
        l1_warmup_steps: 0,
        resample: None,
    }
}

fn run(
    data: &Tensor,
    d_sae: usize,
    activation: Activation,
    s: &TrainSchedule,
) -> (Sae, Vec<CurvePoint>) {
    let job = TrainJob {
        d_sae,
        activation,
        seed: 3,
        schedule: s,
        path: StepPath::Fused,
    };
    train(&mut InMemory::new(data, 3).unwrap(), &job, |_, _| {}).unwrap()
}

#[test]
fn topk_keeps_at_most_k_codes_and_learns() {
    let data = sparse_data(4096);
    let (sae, curve) = run(&data, 32, Activation::TopK(3), &schedule(300));
    assert!(
        curve.iter().all(|p| p.l0 <= 3.0),
        "L0 above k: {:?}",
        curve.iter().map(|p| p.l0).collect::<Vec<_>>()
    );
    assert!(
        curve.last().unwrap().mse < 0.5 * curve.first().unwrap().mse,
        "TopK did not learn"
    );
    // The trained SAE encodes with the same rule: at most k codes per sample.
    assert_eq!(sae.top_k, Some(3));
    let codes = sae.encode(&data.narrow(0, 0, 256).unwrap()).unwrap();
    let per_sample = codes
        .gt(0f64)
        .unwrap()
        .to_dtype(candle_core::DType::F32)
        .unwrap()
        .sum(1)
        .unwrap();
    assert!(per_sample
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .all(|&c| c <= 3.0));
    let dir = tempfile::tempdir().unwrap();
    sae.save(&dir.path().join("sae.safetensors")).unwrap();
    assert_eq!(
        Sae::load(&dir.path().join("sae.safetensors"), &Device::Cpu)
            .unwrap()
            .top_k,
        Some(3)
    );
}

#[test]
fn resampling_revives_dead_latents() {
    let data = sparse_data(4096);
    // A strong l1 on a wide dictionary kills most latents.
    let mut s = schedule(400);
    let (_, without) = run(&data, 64, Activation::ReluL1(2.0), &s);
    s.resample = Some(ResampleSchedule {
        every: 100,
        until: 300,
    });
    let (sae, with) = run(&data, 64, Activation::ReluL1(2.0), &s);
    let resampled = with.last().unwrap().resampled;
    assert!(resampled > 0, "no latent was resampled");
    assert_eq!(without.last().unwrap().resampled, 0);
    // Resampled atoms are unit norm like the rest.
    let norms = sae
        .w_dec
        .sqr()
        .unwrap()
        .sum(1)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert!(norms.iter().all(|n| (n - 1.0).abs() < 1e-4), "{norms:?}");
    // A latent counts as dead when it did not fire since the previous check: at step 100
    // every latent had fired early on, at step 200 some had not. Right after that
    // resampling (the point at 210) fewer latents are dead than without resampling.
    let at = |c: &[CurvePoint], step: u64| c.iter().find(|p| p.step == step).unwrap().dead_fraction;
    let show = |c: &[CurvePoint]| {
        c.iter()
            .map(|p| (p.step, p.dead_fraction, p.resampled))
            .collect::<Vec<_>>()
    };
    assert!(
        at(&with, 210) < at(&without, 210),
        "{:?}\n{:?}",
        show(&with),
        show(&without)
    );
}

#[test]
fn l1_warmup_starts_with_denser_codes() {
    let data = sparse_data(4096);
    let mut s = schedule(200);
    let (_, plain) = run(&data, 32, Activation::ReluL1(0.5), &s);
    s.l1_warmup_steps = 200;
    let (_, warm) = run(&data, 32, Activation::ReluL1(0.5), &s);
    // At the first log point the warmed-up run has felt only 5% of the l1 penalty.
    assert!(
        warm[0].l0 > plain[0].l0,
        "{} vs {}",
        warm[0].l0,
        plain[0].l0
    );
    assert!(warm[0].l1_term > plain[0].l1_term);
}
