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
        checkpoint: None,
        label: "test".into(),
    };
    train(&mut InMemory::new(data, 3).unwrap(), &job, |_| {}).unwrap()
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

/// Everything a run's result consists of, bit for bit (curve times excluded: wall clock).
fn fingerprint(sae: &Sae, curve: &[CurvePoint]) -> (Vec<u32>, Vec<String>) {
    let mut bits = Vec::new();
    for t in [&sae.w_enc, &sae.b_enc, &sae.w_dec, &sae.b_dec] {
        let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
        bits.extend(v.iter().map(|x| x.to_bits()));
    }
    let points = curve
        .iter()
        .map(|p| {
            format!(
                "{} {:e} {:e} {:e} {:e} {:e} {:e} {}",
                p.step, p.lr, p.loss, p.mse, p.l1_term, p.l0, p.dead_fraction, p.resampled
            )
        })
        .collect();
    (bits, points)
}

/// A training resumed from a checkpoint taken after k steps ends bit-identical to one that
/// ran through, for ReLU-L1 (l1 warm-up, resampling) and TopK, at checkpoints before and
/// after a resampling and on a logging step.
#[test]
fn resumed_training_is_bit_identical() {
    use saerun::sae::checkpoint::Checkpointing;
    use saerun::sae::train::TrainEvent;
    use std::time::Duration;

    let data = sparse_data(1000); // 1000 samples, batches of 128: epochs wrap mid-batch
    let mut s = schedule(120);
    s.l1_warmup_steps = 30;
    s.warmup_steps = 10;
    s.schedule = Schedule::Linear;
    s.resample = Some(ResampleSchedule {
        every: 25,
        until: 100,
    });
    let dir = tempfile::tempdir().unwrap();
    for activation in [Activation::ReluL1(1.0), Activation::TopK(3)] {
        let job = |checkpoint: Option<Checkpointing>| TrainJob {
            d_sae: 32,
            activation,
            seed: 3,
            schedule: &s,
            path: StepPath::Fused,
            checkpoint,
            label: "test".into(),
        };
        let policy = |file: &str, every: Duration| Checkpointing {
            file: dir.path().join(file),
            every,
            job: format!("{activation:?}"),
        };
        let (sae, curve) =
            train(&mut InMemory::new(&data, 3).unwrap(), &job(None), |_| {}).unwrap();
        let expected = fingerprint(&sae, &curve);
        assert!(
            curve.last().unwrap().resampled > 0,
            "test needs a resampling"
        );

        // Checkpoint after every step; keep copies of the state after some steps. The file
        // for step k is written after the event of step k, so it is copied at step k + 1.
        let keep = [1u64, 24, 25, 26, 40, 77, 118];
        let every_step = policy("every.safetensors", Duration::ZERO);
        let through = train(
            &mut InMemory::new(&data, 3).unwrap(),
            &job(Some(every_step.clone())),
            |event| {
                if let TrainEvent::Step(done, _) = event {
                    if keep.contains(&(done - 1)) {
                        let copy = dir.path().join(format!("after-{}", done - 1));
                        std::fs::copy(&every_step.file, copy).unwrap();
                    }
                }
            },
        )
        .unwrap();
        assert!(
            fingerprint(&through.0, &through.1) == expected,
            "saving changed the result"
        );

        for k in keep {
            let file = format!("after-{k}");
            let mut resumed_at = None;
            let (sae, curve) = train(
                &mut InMemory::new(&data, 3).unwrap(),
                &job(Some(policy(&file, Duration::from_secs(3600)))),
                |event| {
                    if let TrainEvent::Resumed(done) = event {
                        resumed_at = Some(done);
                    }
                },
            )
            .unwrap();
            assert_eq!(resumed_at, Some(k), "{activation:?}");
            assert!(
                fingerprint(&sae, &curve) == expected,
                "{activation:?} resumed after {k} differs from the uninterrupted run"
            );
        }

        // A checkpoint written for another job is ignored: training starts at step 0.
        let mut foreign = policy("after-40", Duration::from_secs(3600));
        foreign.job = "another job".into();
        let mut resumed = false;
        let (sae, curve) = train(
            &mut InMemory::new(&data, 3).unwrap(),
            &job(Some(foreign)),
            |e| resumed |= matches!(e, TrainEvent::Resumed(_)),
        )
        .unwrap();
        assert!(!resumed);
        assert!(fingerprint(&sae, &curve) == expected);
        // So is a damaged one (here: cut in half).
        let cut = dir.path().join("after-40");
        let bytes = std::fs::read(&cut).unwrap();
        std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
        let (sae, curve) = train(
            &mut InMemory::new(&data, 3).unwrap(),
            &job(Some(policy("after-40", Duration::from_secs(3600)))),
            |_| {},
        )
        .unwrap();
        assert!(fingerprint(&sae, &curve) == expected);
    }
}

fn train_error(data: &Tensor, s: &TrainSchedule) -> String {
    let job = TrainJob {
        d_sae: 32,
        activation: Activation::ReluL1(0.05),
        seed: 3,
        schedule: s,
        path: StepPath::Fused,
        checkpoint: None,
        label: "d_sae=32 l1=0.05 seed=3".into(),
    };
    match train(&mut InMemory::new(data, 3).unwrap(), &job, |_| {}) {
        Err(saerun::Error::Run(m)) => m,
        other => panic!("expected a run error, got {:?}", other.map(|_| ())),
    }
}

/// Non-finite values stop training with the step, the term that went bad and a hint.
#[test]
fn non_finite_values_stop_training_with_step_and_term() {
    // An infinity in the data: the batch that holds it is named as the cause.
    let mut values: Vec<f32> = sparse_data(256).flatten_all().unwrap().to_vec1().unwrap();
    for sample in (0..256).step_by(10) {
        values[sample * 16 + 5] = f32::INFINITY;
    }
    let bad_data = Tensor::from_vec(values, (256, 16), &Device::Cpu).unwrap();
    let msg = train_error(&bad_data, &schedule(50));
    assert!(msg.contains("d_sae=32 l1=0.05 seed=3"), "{msg}");
    assert!(msg.contains("training batch of step 1 holds inf"), "{msg}");
    assert!(msg.contains("training data itself is bad"), "{msg}");

    // An absurd learning rate: the first update throws the weights out of range, the next
    // step's reconstruction error overflows.
    let mut s = schedule(50);
    s.lr = 1e30;
    let msg = train_error(&sparse_data(256), &s);
    assert!(
        msg.contains("the loss term `mse` is NaN at step 2"),
        "{msg}"
    );
    assert!(msg.contains("lower `train.lr` (now 1e30)"), "{msg}");
}
