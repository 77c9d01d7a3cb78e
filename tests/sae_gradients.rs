//! The trainer's hand-written gradients agree with candle's autograd on the same loss, the
//! generic (any-device) step agrees with the fused CPU one, and training is deterministic for
//! a seed.

use candle_core::{Device, Tensor, Var};
use saerun::sae::grads::{
    dense_step, dense_step_on, step, Activation, BatchStats, Grads, Scratch, StepPath,
    SPARSE_MAX_DENSITY,
};
use saerun::sae::params::SaeParams;
use saerun::sae::train::{train, CurvePoint, InMemory, TrainJob};
use saerun::sae::Sae;
use saerun::spec::resolve::TrainSchedule;
use saerun::spec::Schedule;

fn random(shape: (usize, usize), seed: u64) -> Tensor {
    use rand::{Rng, SeedableRng};
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let v: Vec<f32> = (0..shape.0 * shape.1)
        .map(|_| r.random_range(-1.0..1.0))
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// The SAE's parameters (w_enc, b_enc, w_dec, b_dec) as autograd variables.
fn tracked(sae: &Sae) -> [Var; 4] {
    [&sae.w_enc, &sae.b_enc, &sae.w_dec, &sae.b_dec].map(|t| Var::from_tensor(t).unwrap())
}

/// ReLU((x − b_dec) W_encᵀ + b_enc) through candle ops, for autograd.
fn encode(vars: &[Var; 4], x: &Tensor) -> Tensor {
    let [w_enc, b_enc, _, b_dec] = vars.each_ref().map(|v| v.as_tensor());
    x.broadcast_sub(b_dec)
        .unwrap()
        .matmul(&w_enc.t().unwrap())
        .unwrap()
        .broadcast_add(b_enc)
        .unwrap()
        .relu()
        .unwrap()
}

/// f W_dec + b_dec through candle ops, for autograd.
fn decode(vars: &[Var; 4], f: &Tensor) -> Tensor {
    let [_, _, w_dec, b_dec] = vars.each_ref().map(|v| v.as_tensor());
    f.matmul(w_dec).unwrap().broadcast_add(b_dec).unwrap()
}

/// One training step of the sparse-capable CPU path (`grads::step`) from fresh buffers:
/// its batch statistics, gradients and per-latent firing counts.
fn run_step(sae: &Sae, x: &Tensor, activation: Activation) -> (BatchStats, Grads, Vec<u64>) {
    run_step_on(&StepPath::Fused, sae, x, activation)
}

/// As `run_step`, through either path.
fn run_step_on(
    path: &StepPath,
    sae: &Sae,
    x: &Tensor,
    activation: Activation,
) -> (BatchStats, Grads, Vec<u64>) {
    let params = SaeParams::from_sae(sae).unwrap();
    let xs = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let mut grads = Grads::default();
    let mut fired = vec![0u64; params.d_sae];
    let (g, f) = (&mut grads, &mut fired);
    let stats = match path {
        StepPath::Fused => step(&params, &xs, activation, 1.0, g, f, &mut Scratch::default()),
        StepPath::Generic(dev) => {
            dense_step_on(&params, &xs, activation, 1.0, dev).and_then(|r| r.to_host(g, f))
        }
    }
    .unwrap();
    (stats, grads, fired)
}

/// Each of `grads` (w_enc, b_enc, w_dec, b_dec) within 1e-5 of the largest |reference|.
fn assert_grads_close(grads: &Grads, reference: [Vec<f32>; 4]) {
    let ours = [&grads.w_enc, &grads.b_enc, &grads.w_dec, &grads.b_dec];
    for (name, (mine, want)) in ["w_enc", "b_enc", "w_dec", "b_dec"]
        .iter()
        .zip(ours.iter().zip(&reference))
    {
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
        let diff = mine
            .iter()
            .zip(want)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            diff <= 1e-5 * scale,
            "{name}: max |Δ| = {diff} (scale {scale})"
        );
    }
}

#[test]
fn hand_written_gradients_match_autograd() {
    let (b, d, n, l1) = (37, 12, 29, 0.07);
    let x = random((b, d), 1);
    let mut sae = Sae::init(d, n, random((1, d), 2).squeeze(0).unwrap(), 3).unwrap();
    sae.b_enc = (random((1, n), 4).squeeze(0).unwrap() * 0.3).unwrap();
    let ours = dense_step(&sae, &x, l1, 1.0).unwrap();

    let vars = tracked(&sae);
    let f = encode(&vars, &x);
    let x_hat = decode(&vars, &f);
    let mse = ((x_hat - &x).unwrap().sqr().unwrap().sum_all().unwrap() / b as f64).unwrap();
    let l1_term = (f.abs().unwrap().sum_all().unwrap() / b as f64).unwrap();
    let loss = (&mse + (&l1_term * l1).unwrap()).unwrap();
    let grads = loss.backward().unwrap();

    let scalar = |t: &Tensor| t.to_scalar::<f32>().unwrap();
    assert!((scalar(&ours.mse) - scalar(&mse)).abs() < 1e-6);
    assert!((scalar(&ours.l1_term) - scalar(&l1_term)).abs() < 1e-5);
    for (name, (mine, var)) in ["w_enc", "b_enc", "w_dec", "b_dec"]
        .iter()
        .zip(ours.grads.iter().zip(&vars))
    {
        let reference = grads.get(var.as_tensor()).expect("gradient exists");
        let diff = (mine - reference)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap();
        let scale = reference
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap();
        let (diff, scale) = (scalar(&diff), scalar(&scale));
        assert!(
            diff <= 1e-5 * scale.max(1.0),
            "{name}: max |Δ| = {diff} (scale {scale})"
        );
    }
}

/// The sparse path (only active sample–latent pairs) gives the dense path's gradients.
#[test]
fn sparse_gradients_match_dense() {
    let (b, d, n, l1) = (64, 24, 200, 0.05);
    let x = random((b, d), 11);
    let mut sae = Sae::init(d, n, random((1, d), 12).squeeze(0).unwrap(), 13).unwrap();
    // Negative encoder biases leave a few codes active, as after some training.
    sae.b_enc = ((random((1, n), 14).squeeze(0).unwrap() * 0.2).unwrap() - 1.5).unwrap(); // ~2.5% active
    let reference = dense_step(&sae, &x, l1, 1.0).unwrap();
    let density = reference
        .active
        .mean_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap() as f64;
    assert!(
        density > 0.0 && density <= SPARSE_MAX_DENSITY,
        "density {density} must select the sparse path"
    );

    let (stats, grads, fired) = run_step(&sae, &x, Activation::ReluL1(l1));

    let scalar = |t: &Tensor| t.to_scalar::<f32>().unwrap() as f64;
    assert!((stats.mse - scalar(&reference.mse)).abs() < 1e-6);
    assert!((stats.l1_term - scalar(&reference.l1_term)).abs() < 1e-5);
    let counts = reference.active.sum(0).unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(fired, counts.iter().map(|&c| c as u64).collect::<Vec<_>>());
    let dense = reference
        .grads
        .map(|g| g.flatten_all().unwrap().to_vec1::<f32>().unwrap());
    assert_grads_close(&grads, dense);
}

/// TopK: only the k largest positive pre-activations carry codes and gradients; checked
/// against autograd through the same selection mask, with no L1 term.
#[test]
fn topk_gradients_match_autograd() {
    let (b, d, n, k) = (16, 10, 40, 3);
    let x = random((b, d), 21);
    let sae = Sae::init(d, n, random((1, d), 22).squeeze(0).unwrap(), 23).unwrap();
    let (stats, grads, _) = run_step(&sae, &x, Activation::TopK(k));
    assert!(stats.l0 <= k as f64 && stats.l0 > 0.0);

    let pre = sae.pre_activations(&x).unwrap();
    let rows = pre.to_vec2::<f32>().unwrap();
    let mut mask = vec![0f32; b * n];
    for (r, row) in rows.iter().enumerate() {
        let chosen = saerun::sae::grads::top_k(row, k);
        assert!(chosen.len() <= k);
        for (j, _) in chosen {
            mask[r * n + j as usize] = 1.0;
        }
    }
    let mask = Tensor::from_vec(mask, (b, n), &Device::Cpu).unwrap();
    let vars = tracked(&sae);
    let f = (encode(&vars, &x) * &mask).unwrap();
    let x_hat = decode(&vars, &f);
    let loss = ((x_hat - &x).unwrap().sqr().unwrap().sum_all().unwrap() / b as f64).unwrap();
    let reference = loss.backward().unwrap();
    assert!((stats.mse - loss.to_scalar::<f32>().unwrap() as f64).abs() < 1e-5);
    let autograd = [0, 1, 2, 3].map(|i| {
        let g = reference.get(vars[i].as_tensor()).unwrap();
        g.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    });
    assert_grads_close(&grads, autograd);
}

fn schedule(steps: u64) -> TrainSchedule {
    TrainSchedule {
        batch_size: 64,
        steps,
        lr: 1e-2,
        warmup_steps: 5,
        schedule: Schedule::Cosine,
        adam_beta1: 0.9,
        adam_beta2: 0.999,
        log_every: 20,
        mse: saerun::spec::MseReduction::Mean,
        l1_warmup_steps: 0,
        resample: None,
    }
}

/// `train` on `data` with one seed for initialisation and batch order.
fn train_with(
    data: &Tensor,
    seed: u64,
    d_sae: usize,
    activation: Activation,
    schedule: &TrainSchedule,
    path: StepPath,
) -> (Sae, Vec<CurvePoint>) {
    let job = TrainJob {
        d_sae,
        activation,
        seed,
        schedule,
        path,
        checkpoint: None,
        label: "test".into(),
    };
    train(&mut InMemory::new(data, seed).unwrap(), &job, |_| {}).unwrap()
}

#[test]
fn training_is_deterministic_for_a_seed() {
    let data = random((512, 8), 9);
    let schedule = schedule(60);
    let run = |seed| {
        let relu = Activation::ReluL1(0.01);
        train_with(&data, seed, 16, relu, &schedule, StepPath::Fused)
    };
    let (a, ca) = run(1);
    let (b, cb) = run(1);
    let (c, _) = run(2);
    let same = |x: &Tensor, y: &Tensor| {
        x.flatten_all().unwrap().to_vec1::<f32>().unwrap()
            == y.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    };
    assert!(same(&a.w_dec, &b.w_dec) && same(&a.w_enc, &b.w_enc) && same(&a.b_dec, &b.b_dec));
    assert_eq!(
        ca.iter().map(|p| p.loss).collect::<Vec<_>>(),
        cb.iter().map(|p| p.loss).collect::<Vec<_>>()
    );
    assert!(
        !same(&a.w_dec, &c.w_dec),
        "a different seed must give a different SAE"
    );
    // Decoder atoms stay unit norm.
    let norms = a
        .w_dec
        .sqr()
        .unwrap()
        .sum(1)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert!(norms.iter().all(|n| (n - 1.0).abs() < 1e-5), "{norms:?}");
    // Loss goes down.
    assert!(ca.last().unwrap().loss < ca.first().unwrap().loss);
}

/// The generic step (dense candle ops, what a GPU runs) gives the fused step's statistics,
/// firing counts and gradients: ReLU-L1 through both of the fused step's sub-paths (sparse
/// and dense), and TopK with more and with fewer than k positive pre-activations.
#[test]
fn generic_step_matches_fused() {
    let (b, d, n) = (64, 24, 200);
    let x = random((b, d), 31);
    let mut sae = Sae::init(d, n, random((1, d), 32).squeeze(0).unwrap(), 33).unwrap();
    let jitter = (random((1, n), 34).squeeze(0).unwrap() * 0.2).unwrap();
    let generic = StepPath::Generic(Device::Cpu);
    // An encoder bias of -1.5 leaves ~2.5% of the codes active, 0 about half.
    for (b_enc, activation) in [
        (-1.5, Activation::ReluL1(0.05)),
        (0.0, Activation::ReluL1(0.05)),
        (0.0, Activation::TopK(5)),
        (-1.5, Activation::TopK(8)),
    ] {
        sae.b_enc = (&jitter + b_enc).unwrap();
        let (want, reference, want_fired) = run_step(&sae, &x, activation);
        let (got, grads, fired) = run_step_on(&generic, &sae, &x, activation);
        assert_eq!(fired, want_fired, "{activation:?}: firing counts");
        assert_eq!(got.l0, want.l0, "{activation:?}: L0");
        assert!(
            (got.mse - want.mse).abs() <= 1e-6 * want.mse
                && (got.l1_term - want.l1_term).abs() <= 1e-6 * want.l1_term,
            "{activation:?}: generic {got:?}, fused {want:?}"
        );
        assert_grads_close(
            &grads,
            [
                reference.w_enc,
                reference.b_enc,
                reference.w_dec,
                reference.b_dec,
            ],
        );
    }
}

/// Hundreds of steps of `train` through either path end in the same SAE and curve: the
/// per-step differences stay at rounding level instead of compounding (measured: losses
/// within 1e-7 relative, parameters within 5e-7). This l1 brings L0 to ~7 of 64 latents, so
/// the fused ReLU steps take the sparse sub-path, not the dense one the generic path shares.
#[test]
fn generic_training_matches_fused() {
    let data = random((2048, 16), 41);
    let schedule = schedule(300);
    for activation in [Activation::ReluL1(0.1), Activation::TopK(4)] {
        let run = |path| train_with(&data, 5, 64, activation, &schedule, path);
        let (fused, want) = run(StepPath::Fused);
        let (generic, got) = run(StepPath::Generic(Device::Cpu));
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert!(
                (g.loss - w.loss).abs() <= 1e-6 * w.loss && g.l0 == w.l0,
                "{activation:?} at step {}: generic {g:?}, fused {w:?}",
                w.step
            );
        }
        for (name, a, b) in [
            ("w_enc", &generic.w_enc, &fused.w_enc),
            ("b_enc", &generic.b_enc, &fused.b_enc),
            ("w_dec", &generic.w_dec, &fused.w_dec),
            ("b_dec", &generic.b_dec, &fused.b_dec),
        ] {
            let diff = (a - b).unwrap().abs().unwrap().flatten_all().unwrap();
            let diff = diff.max(0).unwrap().to_scalar::<f32>().unwrap();
            eprintln!("{activation:?} {name}: max |generic - fused| {diff}");
            assert!(diff <= 1e-5, "{activation:?} {name}: max |Δ| = {diff}");
        }
    }
}

/// The fused update (`Stepper`: Adam and the renormalisation applied row by row where the
/// sparse gradients are made) is, to the bit, gradients then `Adam::step` then
/// `normalise_decoder`: parameters and both moments after several steps at changing learning
/// rates and batches (so latents unused in a step carry momentum from earlier ones),
/// ReLU-L1 on both sub-paths and TopK. Also the NaN/inf report: a sample of 1e30 overflows
/// the gradients, and both report the same first bad buffer.
#[test]
fn fused_update_is_gradients_then_adam_then_renormalisation() {
    use saerun::sae::adam::Adam;
    use saerun::sae::step::{Batch, Stepper, PARAM_NAMES};
    let (b, d, n) = (64, 24, 200);
    let x = random((4 * b, d), 51)
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let mut blown_up = x.clone();
    blown_up[5 * d + 3] = 1e30;
    let mut sae = Sae::init(d, n, random((1, d), 52).squeeze(0).unwrap(), 53).unwrap();
    let jitter = (random((1, n), 54).squeeze(0).unwrap() * 0.2).unwrap();
    for (b_enc, activation, batch) in [
        (-1.5, Activation::ReluL1(0.05), &x),
        (0.0, Activation::ReluL1(0.05), &x),
        (-1.5, Activation::TopK(6), &x),
        (-1.5, Activation::ReluL1(0.05), &blown_up),
    ] {
        sae.b_enc = (&jitter + b_enc).unwrap();
        let start = SaeParams::from_sae(&sae).unwrap();
        let (mut fused_p, mut plain_p) = (start.clone(), start.clone());
        let mut stepper = Stepper::new(&start, 0.9, 0.999, StepPath::Fused);
        let sizes = [n * d, n, n * d, d];
        let mut adam = Adam::new(&sizes, 0.9, 0.999);
        let (mut fired_fused, mut fired_plain) = (vec![0u64; n], vec![0u64; n]);
        let (mut grads, mut scratch) = (Grads::default(), Scratch::default());
        for (i, lr) in [1e-3, 3e-3, 2e-3, 5e-4].into_iter().enumerate() {
            let batch = &batch[i * b * d..(i + 1) * b * d];
            let step_batch = Batch {
                x: batch,
                activation,
                mse_scale: 1.0,
                lr,
            };
            let fused = stepper
                .step(&mut fused_p, &step_batch, &mut fired_fused)
                .unwrap();
            let p = &mut plain_p;
            let (g, f, s) = (&mut grads, &mut fired_plain, &mut scratch);
            let stats = step(p, batch, activation, 1.0, g, f, s).unwrap();
            let bad = adam.step(
                &mut [&mut p.w_enc, &mut p.b_enc, &mut p.w_dec, &mut p.b_dec],
                &[&g.w_enc, &g.b_enc, &g.w_dec, &g.b_dec],
                lr,
            );
            p.normalise_decoder();
            let case = format!("{activation:?}, b_enc {b_enc}, step {i}");
            assert_eq!(fused.bad_gradient, bad.map(|i| PARAM_NAMES[i]), "{case}");
            if bad.is_some() {
                break;
            }
            assert_eq!(fused.stats.l0, stats.l0, "{case}");
            assert_eq!(fused.stats.mse.to_bits(), stats.mse.to_bits(), "{case}");
            assert_eq!(fired_fused, fired_plain, "{case}");
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            for (name, (a, b)) in PARAM_NAMES.iter().zip([
                (&fused_p.w_enc, &plain_p.w_enc),
                (&fused_p.b_enc, &plain_p.b_enc),
                (&fused_p.w_dec, &plain_p.w_dec),
                (&fused_p.b_dec, &plain_p.b_dec),
            ]) {
                assert!(bits(a) == bits(b), "{case}: {name} differs");
            }
            for (k, ((m1, v1), (m2, v2))) in stepper
                .adam
                .moments()
                .iter()
                .zip(adam.moments())
                .enumerate()
            {
                assert!(
                    bits(m1) == bits(m2) && bits(v1) == bits(v2),
                    "{case}: moments of {} differ",
                    PARAM_NAMES[k]
                );
            }
        }
        if batch[5 * d + 3] == 1e30 {
            assert!(
                stepper.adam.steps_taken() == 1,
                "the blown-up batch must be reported at once"
            );
        }
    }
}
