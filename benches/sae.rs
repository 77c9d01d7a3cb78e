//! One SAE training step (gradients, Adam, decoder renormalisation: what the training loop
//! does per batch) against PyTorch's dense autograd step (`torch_ref.py --only sae`: ReLU
//! encoder, MSE + l1·L1, Adam, renormalised decoder) on the same shapes, in one invocation.
//!
//!   cargo bench --bench sae [-- --rounds R --repeats N --torch-ref PATH --no-torch
//!                                --only TEXT (cases whose name contains TEXT)]
//!   cargo bench --bench sae -- --store-memory [--latents M]
//!     (peak RSS of training from 0.5 / 1 / 2 GiB stores: see `sae/store_memory.rs`)
//!
//! Cases (d_in 512):
//! - 2048 latents, batch 4096: ReLU-L1 from a fresh SAE (dense codes), ReLU-L1 at trained
//!   sparsity, TopK k = 64 from a fresh SAE;
//! - the original study's shape, batch 256: 4096 and 512 latents at trained sparsity.
//!
//! "Trained sparsity" is the state after training on synthetic sparse data (each sample a
//! non-negative mix of 20 of 4096 random unit directions) for `TRAIN_STEPS` steps of
//! `TRAIN_BATCH` samples with l1 = `L1`; the bench prints the L0 of the timed batch. PyTorch's step is dense
//! whatever the codes are, so one torch figure per shape serves every regime. Rounds
//! alternate saerun and torch; the best round of each is compared.

#[path = "common/machine.rs"]
mod machine;
#[path = "sae/store_memory.rs"]
mod store_memory;
#[path = "common/timing.rs"]
mod timing;

use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use saerun::sae::adam::Adam;
use saerun::sae::grads::{step, Activation, Grads, Scratch, StepPath};
use saerun::sae::params::SaeParams;
use saerun::sae::step::{Batch, Stepper};
use saerun::sae::train::BatchSource;
use saerun::sae::train::{train, InMemory, TrainJob};
use saerun::sae::Sae;
use saerun::spec::resolve::TrainSchedule;
use saerun::spec::{MseReduction, Schedule};
use saerun::store::{Store, StoreDtype, StoreWriter};
use timing::{best_and_median, parse_args, run_torch_with, time};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const D: usize = 512;
/// The trained states: this many steps of batches of `TRAIN_BATCH` at l1 = `L1`.
const TRAIN_STEPS: u64 = 600;
const TRAIN_BATCH: usize = 1024;
const L1: f64 = 0.2;

/// `n` samples of dimension `D`: each a non-negative mix of 20 of 4096 random unit directions.
fn sparse_data(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let atoms = 4096;
    let mut dirs: Vec<f32> = (0..atoms * D).map(|_| rng.random::<f32>() - 0.5).collect();
    for row in dirs.chunks_mut(D) {
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        row.iter_mut().for_each(|v| *v /= norm);
    }
    let mut out = vec![0f32; n * D];
    for x in out.chunks_mut(D) {
        for _ in 0..20 {
            let k = rng.random_range(0..atoms);
            let c: f32 = rng.random::<f32>() * 0.5;
            x.iter_mut()
                .zip(&dirs[k * D..(k + 1) * D])
                .for_each(|(x, d)| *x += c * d);
        }
    }
    out
}

fn schedule(batch: usize, steps: u64) -> TrainSchedule {
    TrainSchedule {
        batch_size: batch,
        steps,
        lr: 1e-3,
        warmup_steps: 0,
        schedule: Schedule::Constant,
        adam_beta1: 0.9,
        adam_beta2: 0.999,
        log_every: steps.max(1),
        mse: MseReduction::Sum,
        l1_warmup_steps: 0,
        resample: None,
    }
}

/// The state a case times from: a fresh SAE, or one trained to sparsity on `data`.
fn initial_state(m: usize, data: &[f32], trained: bool) -> saerun::Result<SaeParams> {
    let x = Tensor::from_slice(data, (data.len() / D, D), &Device::Cpu)?;
    if !trained {
        let mean = x.mean(0)?;
        return SaeParams::from_sae(&Sae::init(D, m, mean, 0)?);
    }
    let s = schedule(TRAIN_BATCH, TRAIN_STEPS);
    let job = TrainJob {
        d_sae: m,
        activation: Activation::ReluL1(L1),
        seed: 0,
        schedule: &s,
        path: StepPath::Fused,
        checkpoint: None,
        label: format!("bench m={m}"),
    };
    let (sae, _) = train(&mut InMemory::new(&x, 0)?, &job, |_| {})?;
    SaeParams::from_sae(&sae)
}

/// Seconds per training step from `p` on the fixed batch `x` (the training loop's step:
/// `Stepper::step`), and the batch's L0.
fn saerun_step(p: &mut SaeParams, x: &[f32], act: Activation, repeats: usize) -> (f64, f64) {
    let mut stepper = Stepper::new(p, 0.9, 0.999, StepPath::Fused);
    let mut fired = vec![0u64; p.d_sae];
    let mut l0 = 0.0;
    let batch = Batch {
        x,
        activation: act,
        mse_scale: 1.0,
        lr: 1e-5,
    };
    let seconds = time(repeats, 2, || {
        l0 = stepper.step(p, &batch, &mut fired).expect("step").stats.l0;
    });
    (seconds, l0)
}

/// The same step unfused, as separate passes: gradients into full buffers, `Adam::step`,
/// `normalise_decoder` (what the training loop did before the fused update).
fn unfused_step(p: &mut SaeParams, x: &[f32], act: Activation, repeats: usize) -> f64 {
    let sizes = [p.w_enc.len(), p.b_enc.len(), p.w_dec.len(), p.b_dec.len()];
    let mut adam = Adam::new(&sizes, 0.9, 0.999);
    let (mut g, mut scratch) = (Grads::default(), Scratch::default());
    let mut fired = vec![0u64; p.d_sae];
    time(repeats, 2, || {
        step(p, x, act, 1.0, &mut g, &mut fired, &mut scratch).expect("step");
        adam.step(
            &mut [&mut p.w_enc, &mut p.b_enc, &mut p.w_dec, &mut p.b_dec],
            &[&g.w_enc, &g.b_enc, &g.w_dec, &g.b_dec],
            1e-5,
        );
        p.normalise_decoder();
    })
}

/// Milliseconds per batch of 256 rows from the activation store's shuffled `BatchSource`
/// (what `train_sae` reads between steps), over two shuffle windows so refills are counted.
fn batch_assembly() -> saerun::Result<(usize, f64)> {
    let dir = tempfile::tempdir().map_err(|e| saerun::Error::run(format!("temp dir: {e}")))?;
    let window_rows = (256 << 20) / (D * 4);
    let rows = 2 * window_rows;
    let mut w = StoreWriter::create(dir.path(), D, StoreDtype::F32, 65_536)?;
    let chunk = sparse_data(4096, 7);
    for _ in 0..rows / 4096 {
        w.push(&chunk)?;
    }
    w.finish()?;
    let store = std::sync::Arc::new(Store::open(dir.path())?);
    let mut src = store.shuffled(1);
    let mut out = vec![0f32; 256 * D];
    let batches = rows / 256;
    let seconds = time(batches, 0, || src.next_batch(&mut out).expect("batch"));
    Ok((rows, seconds * 1e3))
}

struct Case {
    name: &'static str,
    m: usize,
    batch: usize,
    act: Activation,
    trained: bool,
}

fn main() -> saerun::Result<()> {
    let args = parse_args();
    if args.flags.iter().any(|f| f == store_memory::CHILD_FLAG) {
        return store_memory::child(&args.flags);
    }
    if args.flags.iter().any(|f| f == "--store-memory") {
        return store_memory::run(&args.flags);
    }
    let cases = [
        Case {
            name: "ReLU-L1, fresh (dense codes)",
            m: 2048,
            batch: 4096,
            act: Activation::ReluL1(L1),
            trained: false,
        },
        Case {
            name: "ReLU-L1, trained sparsity",
            m: 2048,
            batch: 4096,
            act: Activation::ReluL1(L1),
            trained: true,
        },
        Case {
            name: "TopK k=64, fresh",
            m: 2048,
            batch: 4096,
            act: Activation::TopK(64),
            trained: false,
        },
        Case {
            name: "study shape, trained",
            m: 4096,
            batch: 256,
            act: Activation::ReluL1(L1),
            trained: true,
        },
        Case {
            name: "study shape, trained",
            m: 512,
            batch: 256,
            act: Activation::ReluL1(L1),
            trained: true,
        },
    ];
    println!(
        "SAE training step, d_in {D}; {} rounds of {} steps; trained states: {TRAIN_STEPS} \
         steps of {TRAIN_BATCH} samples at l1 {L1}",
        args.rounds, args.repeats
    );
    let data = sparse_data(65_536, 1);
    // Per case: (saerun, saerun unfused, L0, torch); the timings as (best, median) steps/s.
    let mut rows = Vec::new();
    let only = args
        .flags
        .iter()
        .position(|f| f == "--only")
        .and_then(|i| args.flags.get(i + 1));
    for c in cases
        .iter()
        .filter(|c| only.is_none_or(|o| c.name.contains(o.as_str())))
    {
        let start = initial_state(c.m, &data, c.trained)?;
        let x = &data[..c.batch * D];
        let (mut ours, mut unfused, mut theirs, mut l0) = (Vec::new(), Vec::new(), Vec::new(), 0.0);
        for _ in 0..args.rounds {
            let (s, l) = saerun_step(&mut start.clone(), x, c.act, args.repeats);
            ours.push(Some(1.0 / s));
            l0 = l;
            let s = unfused_step(&mut start.clone(), x, c.act, args.repeats);
            unfused.push(Some(1.0 / s));
            let torch = args.torch_ref.as_deref().and_then(|script| {
                let a = [
                    "--only",
                    "sae",
                    "--d",
                    &D.to_string(),
                    "--m",
                    &c.m.to_string(),
                    "--batch",
                    &c.batch.to_string(),
                    "--repeats",
                    &args.repeats.to_string(),
                ];
                run_torch_with(script, &a.map(String::from))
            });
            theirs.push(
                torch
                    .and_then(|t| t.get("sae_step_s").and_then(|v| v.as_f64()))
                    .map(|s| 1.0 / s),
            );
        }
        rows.push((
            c,
            best_and_median(ours.into_iter()),
            best_and_median(unfused.into_iter()),
            l0,
            best_and_median(theirs.into_iter()),
        ));
    }
    println!();
    println!("{}", machine::describe());
    println!(
        "{:<32} {:>6} {:>6} {:>6} {:>16} {:>16} {:>16} {:>7}",
        "case (ms per step)",
        "latents",
        "batch",
        "L0",
        "saerun best/med",
        "unfused best/med",
        "torch best/med",
        "ratio"
    );
    let ms = |v: f64| 1e3 / v;
    for (c, ours, unfused, l0, theirs) in rows {
        let (ob, om) = ours.expect("saerun timed");
        let (ub, um) = unfused.expect("unfused timed");
        let torch = theirs.map_or("-".to_string(), |(tb, tm)| {
            format!("{:.1}/{:.1}", ms(tb), ms(tm))
        });
        let ratio = theirs.map_or("-".to_string(), |(tb, _)| format!("{:.2}x", ob / tb));
        println!(
            "{:<32} {:>6} {:>6} {:>6.1} {:>16} {:>16} {:>16} {:>7}",
            c.name,
            c.m,
            c.batch,
            l0,
            format!("{:.1}/{:.1}", ms(ob), ms(om)),
            format!("{:.1}/{:.1}", ms(ub), ms(um)),
            torch,
            ratio
        );
    }
    let (rows, ms_per_batch) = batch_assembly()?;
    println!(
        "batch assembly (the training loop's other per-step work): {ms_per_batch:.3} ms per \
         shuffled batch of 256 × {D} f32 from an activation store of {rows} rows (2 windows)"
    );
    println!(
        "unfused = the same step as separate passes (gradients, Adam, renormalisation); \
         ratio = torch's best step time / saerun's best (higher is faster)"
    );
    Ok(())
}
