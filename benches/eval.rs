//! The evaluation passes of the study, per batch of 64 × 25 tokens of a Pythia-70M-shaped
//! GPT-NeoX (random weights) with an SAE of 4096 latents at `blocks.2.hook_resid_post`
//! (random, with its encoder bias set for L0 ≈ 64 as a trained one has), timed as the
//! stages run them:
//! - spliced CE (`eval_lm`'s `spliced_nll`): encode and decode the cached activations (and
//!   add them to the reconstruction metrics), resume the forward pass at the hook from the
//!   reconstruction, and take the next-token loss without materialising the logits;
//! - CE baselines (`ce_baselines`' `baseline_nlls`): clean, zero- and mean-ablated losses;
//! - both again with `eval.unembedding = "bf16"` (the losses' unembedding from bf16 inputs).
//!
//! In the same invocation, alternating rounds, the PyTorch way of doing the same
//! (`benches/torch_eval_ref.py`: a hooked full forward from the tokens, full logits, then
//! cross-entropy). Tokens/s, best and median of R rounds.
//!
//!   cargo bench --bench eval [-- --rounds R --repeats N --torch-ref PATH --no-torch --bf16]
//!
//! `--bf16` runs the model in bfloat16 on both sides instead (saerun's `model.dtype = "bf16"`,
//! where the unembedding precision makes no difference: its inputs are bf16 already; the
//! script's `--dtype bfloat16`, its SAE in bf16 too). saerun's SAE stays f32 (a few percent
//! of the arithmetic).
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
use saerun::metrics::reconstruction::ReconstructionSums;
use saerun::model::{GptNeoX, HookPoint, Losses, Processing, UnembeddingPrecision};
use saerun::sae::Sae;
use saerun::stages::ce_baselines::baseline_nlls;
use saerun::stages::eval_lm::spliced_nll;
use timing::{parse_args, run_torch_with, time, TokensTable};

// As the saerun binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const LATENTS: usize = 4096;
/// Active latents per token, as in a trained SAE of the study.
const L0: usize = 64;

fn main() -> saerun::Result<()> {
    let mut args = parse_args();
    // The torch side of this bench is its own script, not ../shared's torch_ref.py.
    if args.torch_ref.is_some() && std::env::var_os("SAERUN_TORCH_REF").is_none() {
        args.torch_ref =
            Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/torch_eval_ref.py"));
    }
    let tmp = tempfile::tempdir().map_err(|e| saerun::Error::run(e.to_string()))?;
    pythia70m::write_random_model(tmp.path())?;
    let bf16_model = args.flags.iter().any(|f| f == "--bf16");
    let dtype = if bf16_model { DType::BF16 } else { DType::F32 };
    let model = GptNeoX::load(tmp.path(), Processing::None, dtype)?;
    let f32 = model.losses(UnembeddingPrecision::F32);
    // `eval.unembedding = "bf16"`: the losses' unembedding from bf16-rounded inputs.
    let bf16 = model.losses(UnembeddingPrecision::Bf16);
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
    // A trained SAE fires a few dozen of its thousands of latents per token: the encoder bias
    // is set so that L0 is about `L0` (the same in the PyTorch script).
    let mut sae = Sae::init(d, LATENTS, Tensor::zeros(d, DType::F32, &Device::Cpu)?, 0)?;
    let mut pre = sae
        .pre_activations(&acts)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let cut = pre.len() - pre.len() * L0 / LATENTS;
    let (_, threshold, _) = pre.select_nth_unstable_by(cut, f32::total_cmp);
    let threshold = *threshold;
    let l0 = pre.iter().filter(|&&v| v > threshold).count() as f64 / (batch * ctx) as f64;
    sae.b_enc = Tensor::full(-threshold, LATENTS, &Device::Cpu)?;
    let n_tokens = (batch * ctx) as f64;

    println!(
        "Evaluation passes, Pythia-70M shape, batch {batch} x {ctx} tokens, {}, SAE {d} -> \
         {LATENTS} (L0 {l0:.1}) at {}; {} rounds of {} repeats; {} rayon threads",
        if bf16_model { "bf16" } else { "f32" },
        hook.name(),
        args.rounds,
        args.repeats,
        rayon::current_num_threads()
    );
    let mut table = TokensTable::new(
        [
            "spliced CE (SAE at the hook)".into(),
            "CE baselines (clean, zero, mean)".into(),
        ],
        "spliced / baselines",
    );
    let mut table_bf16 = TokensTable::new(
        [
            "spliced CE, bf16 unembedding".into(),
            "CE baselines, bf16 unembedding".into(),
        ],
        "spliced / baselines, bf16 unembedding",
    );
    let mut sink = 0f64;
    // What eval_lm accumulates across its batches (reconstruction metrics from the same codes).
    let mut sums = ReconstructionSums::new(&acts, sae.d_sae())?;
    for _ in 0..args.rounds {
        // Tokens/s of the spliced pass and of the baselines, with the losses at one precision.
        let mut time_both = |losses: &Losses| {
            let spliced = time(args.repeats, 1, || {
                sink += spliced_nll(losses, &sae, hook, &acts, &tokens, &mut sums)
                    .expect("spliced")
                    .0;
            });
            let baselines = time(args.repeats, 1, || {
                let [c, z, m] = baseline_nlls(losses, hook, &mean, &tokens).expect("baselines");
                sink += c.0 + z.0 + m.0;
            });
            [n_tokens / spliced, n_tokens / baselines]
        };
        let ours = time_both(&f32);
        // A bf16 model's losses are the same at either unembedding precision.
        let ours_bf16 = if bf16_model {
            [f64::NAN; 2]
        } else {
            time_both(&bf16)
        };
        let torch = args
            .torch_ref
            .as_deref()
            .and_then(|p| run_torch(p, args.repeats, bf16_model));
        table.round(
            ours,
            torch.as_ref(),
            ["spliced_tokens_per_s", "baselines_tokens_per_s"],
        );
        if !bf16_model {
            table_bf16.round(
                ours_bf16,
                torch.as_ref(),
                ["spliced_tokens_per_s", "baselines_tokens_per_s"],
            );
        }
    }
    std::hint::black_box(sink);

    println!();
    println!("{}", machine::describe());
    table.print();
    if !bf16_model {
        println!("PyTorch as above (f32), saerun with `eval.unembedding = \"bf16\"`:");
        table_bf16.print();
    }
    Ok(())
}

fn run_torch(script: &Path, repeats: usize, bf16: bool) -> Option<serde_json::Value> {
    let args: Vec<String> = [
        "--dtype",
        if bf16 { "bfloat16" } else { "float32" },
        "--batch",
        &pythia70m::BATCH.to_string(),
        "--ctx",
        &pythia70m::CTX.to_string(),
        "--layer",
        &pythia70m::HARVEST_LAYER.to_string(),
        "--m",
        &LATENTS.to_string(),
        "--l0",
        &L0.to_string(),
        "--repeats",
        &repeats.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    run_torch_with(&PathBuf::from(script), &args)
}
