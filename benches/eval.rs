//! The evaluation passes of the study, per batch of 64 × 25 tokens of a Pythia-70M-shaped
//! GPT-NeoX (random weights) with an SAE of 4096 latents at `blocks.2.hook_resid_post`, timed
//! as the stages run them:
//! - spliced CE (`eval_lm`'s `spliced_nll`): encode and decode the cached activations, resume
//!   the forward pass at the hook from the reconstruction, and take the next-token loss
//!   without materialising the logits;
//! - CE baselines (`ce_baselines`' `baseline_nlls`): clean, zero- and mean-ablated losses.
//!
//! In the same invocation, alternating rounds, the PyTorch way of doing the same
//! (`benches/torch_eval_ref.py`: a hooked full forward from the tokens, full logits, then
//! cross-entropy). Tokens/s, best and median of R rounds.
//!
//!   cargo bench --bench eval [-- --rounds R --repeats N --torch-ref PATH --no-torch]
//!
//! PATH defaults to `benches/torch_eval_ref.py`; `SAERUN_BENCH_PYTHON` names a Python with torch
//! and transformers. Threads: `RAYON_NUM_THREADS` (saerun), `OMP_NUM_THREADS` (torch).

#[path = "common/machine.rs"]
mod machine;
#[path = "common/pythia70m.rs"]
mod pythia70m;
#[path = "common/timing.rs"]
mod timing;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use saerun::model::{GptNeoX, HookPoint, Processing};
use saerun::sae::Sae;
use saerun::stages::ce_baselines::baseline_nlls;
use saerun::stages::eval_lm::spliced_nll;
use timing::{best_and_median, parse_args, run_torch_with, time};

// As the saerun binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const LATENTS: usize = 4096;

fn main() -> saerun::Result<()> {
    let mut args = parse_args();
    // The torch side of this bench is its own script, not ../shared's torch_ref.py.
    if args.torch_ref.is_some() && std::env::var_os("SAERUN_TORCH_REF").is_none() {
        args.torch_ref =
            Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/torch_eval_ref.py"));
    }
    let tmp = tempfile::tempdir().map_err(|e| saerun::Error::run(e.to_string()))?;
    pythia70m::write_random_model(tmp.path())?;
    let model = GptNeoX::load(tmp.path(), Processing::None, DType::F32)?;
    let (batch, ctx, d) = (pythia70m::BATCH, pythia70m::CTX, pythia70m::D);

    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let ids: Vec<u32> = (0..batch * ctx)
        .map(|_| rng.random_range(0..50277))
        .collect();
    let tokens = Tensor::from_vec(ids, (batch, ctx), &Device::Cpu)?;
    let hook = HookPoint::ResidPost(pythia70m::HARVEST_LAYER);
    // What the stages read from the activation store: the hook's activations, and their mean.
    let acts = model.capture(&tokens, &[hook])?[0].reshape((batch * ctx, d))?;
    let mean = acts.mean(0)?;
    let sae = Sae::init(d, LATENTS, Tensor::zeros(d, DType::F32, &Device::Cpu)?, 0)?;
    let n_tokens = (batch * ctx) as f64;

    println!(
        "Evaluation passes, Pythia-70M shape, batch {batch} x {ctx} tokens, f32, SAE {d} -> \
         {LATENTS} at {}; {} rounds of {} repeats; {} rayon threads",
        hook.name(),
        args.rounds,
        args.repeats,
        rayon::current_num_threads()
    );
    // Per round, tokens/s: [saerun spliced, saerun baselines, torch spliced, torch baselines].
    let mut rows: Vec<[Option<f64>; 4]> = Vec::new();
    let mut torch_version = None;
    let mut sink = 0f64;
    for round in 0..args.rounds {
        let spliced = time(args.repeats, 1, || {
            sink += spliced_nll(&model, &sae, hook, &acts, &tokens)
                .expect("spliced")
                .0;
        });
        let baselines = time(args.repeats, 1, || {
            let [c, z, m] = baseline_nlls(&model, hook, &mean, &tokens).expect("baselines");
            sink += c.0 + z.0 + m.0;
        });
        let torch = args
            .torch_ref
            .as_deref()
            .and_then(|p| run_torch(p, args.repeats));
        let get = |k: &str| {
            torch
                .as_ref()
                .and_then(|v| v.get(k))
                .and_then(|v| v.as_f64())
        };
        let row = [
            Some(n_tokens / spliced),
            Some(n_tokens / baselines),
            get("spliced_tokens_per_s"),
            get("baselines_tokens_per_s"),
        ];
        let fmt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0}"));
        println!(
            "round {round}: saerun {} / {} tok/s, torch {} / {} tok/s (spliced / baselines)",
            fmt(row[0]),
            fmt(row[1]),
            fmt(row[2]),
            fmt(row[3])
        );
        if let Some(t) = &torch {
            torch_version = Some(format!(
                "torch {} with {} threads",
                t.get("torch").and_then(|v| v.as_str()).unwrap_or("?"),
                t.get("threads").map(|v| v.to_string()).unwrap_or_default()
            ));
        }
        rows.push(row);
    }
    std::hint::black_box(sink);

    println!();
    println!("{}", machine::describe());
    println!(
        "{:<36} {:>12} {:>14} {:>11} {:>13} {:>7}",
        "case (tokens/s)", "saerun best", "saerun median", "torch best", "torch median", "ratio"
    );
    for (name, ours, theirs) in [
        ("spliced CE (SAE at the hook)", 0, 2),
        ("CE baselines (clean, zero, mean)", 1, 3),
    ] {
        let (ob, om) =
            best_and_median(rows.iter().map(|r| r[ours])).unwrap_or((f64::NAN, f64::NAN));
        match best_and_median(rows.iter().map(|r| r[theirs])) {
            Some((tb, tm)) => println!(
                "{name:<36} {ob:>12.0} {om:>14.0} {tb:>11.0} {tm:>13.0} {:>6.2}x",
                ob / tb
            ),
            None => println!(
                "{name:<36} {ob:>12.0} {om:>14.0} {:>11} {:>13} {:>7}",
                "-", "-", "-"
            ),
        }
    }
    println!("ratio = best saerun / best torch");
    if let Some(v) = torch_version {
        println!("{v}");
    }
    Ok(())
}

fn run_torch(script: &Path, repeats: usize) -> Option<serde_json::Value> {
    let args: Vec<String> = [
        "--batch",
        &pythia70m::BATCH.to_string(),
        "--ctx",
        &pythia70m::CTX.to_string(),
        "--layer",
        &pythia70m::HARVEST_LAYER.to_string(),
        "--m",
        &LATENTS.to_string(),
        "--repeats",
        &repeats.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    run_torch_with(&PathBuf::from(script), &args)
}
