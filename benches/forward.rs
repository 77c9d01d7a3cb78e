//! Forward-pass throughput of a Pythia-70M-shaped GPT-NeoX (random weights: d_model 512,
//! 6 layers, 8 heads, d_mlp 2048, vocab 50304, rotary_pct 0.25, parallel residual) on a
//! 64 × 25-token batch, the shape of the study's activation harvest:
//! - tokens/s up to `blocks.2.hook_resid_post` (`capture`, which stops there),
//! - tokens/s for the full forward pass (logits);
//! - then GFLOP/s of the bare matrix products behind them (MLP in/out, unembedding), candle's
//!   `matmul` against torch's `x @ w` (`torch_ref.py --only gemm`), because both forward passes
//!   spend most of their time there and the ratio of the products bounds the ratio of the passes.
//!
//! In the same invocation it runs the PyTorch reference (`torch_ref.py --only lm`, same model
//! shape and batch, transformers' GPTNeoXForCausalLM on the CPU) and prints both side by side.
//!
//!   cargo bench --bench forward [-- --rounds R --repeats N --torch-ref PATH --no-torch --no-gemm
//!                                   --harvest-only --bf16]
//!
//! `--bf16` runs both models in bfloat16 instead: saerun's `model.dtype = "bf16"` against
//! `benches/torch_forward_bf16_ref.py` (torch_ref's model and timing, `model.to(bfloat16)`);
//! the matrix-product section is then skipped (it is f32).
//!
//! The machine this runs on is shared and noisy, so saerun and torch are measured alternately
//! for R rounds (default 3) and the best round of each is compared (medians are printed too).
//! PATH defaults to `$SAERUN_TORCH_REF`, else `../shared/bench/torch_ref.py` beside the crate.
//! Threads: candle uses `RAYON_NUM_THREADS` (default: all cores); torch its own default.

#[path = "common/machine.rs"]
mod machine;
#[path = "common/pythia70m.rs"]
mod pythia70m;
#[path = "common/timing.rs"]
mod timing;

use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use pythia70m::{write_random_model, BATCH, CTX, D, D_MLP, HARVEST_LAYER, HEADS, LAYERS, VOCAB};
use rand::{Rng, SeedableRng};
use saerun::model::{GptNeoX, HookPoint, Processing};
use timing::{parse_args, run_torch_with, time, Args, TokensTable};

// The saerun binary uses mimalloc (glibc malloc re-mmaps large tensors on every op); measure
// under the same allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn run_torch(script: &Path, repeats: usize, bf16: bool) -> Option<serde_json::Value> {
    // The bf16 reference runs only the lm case and takes no `--only`.
    let only = ["--only".to_string(), "lm".into()];
    let lm = [
        "--lm-batch".to_string(),
        BATCH.to_string(),
        "--lm-ctx".into(),
        CTX.to_string(),
        "--lm-layer".into(),
        HARVEST_LAYER.to_string(),
        // torch_ref times max(3, repeats/2) calls per case; match saerun's counts.
        "--repeats".into(),
        (2 * repeats).to_string(),
    ];
    let args = if bf16 {
        lm.to_vec()
    } else {
        [&only[..], &lm[..]].concat()
    };
    run_torch_with(script, &args)
}

fn main() -> saerun::Result<()> {
    let args = parse_args();
    let tmp = tempfile::tempdir().map_err(|e| saerun::Error::run(e.to_string()))?;
    write_random_model(tmp.path())?;
    let bf16 = args.flags.iter().any(|f| f == "--bf16");
    let (dtype, dtype_name) = if bf16 {
        (DType::BF16, "bf16")
    } else {
        (DType::F32, "f32")
    };
    let model = GptNeoX::load(tmp.path(), Processing::None, dtype)?;
    // The bf16 reference is this crate's own script (../shared's torch_ref.py runs f32 only).
    let torch_ref = if bf16 {
        args.torch_ref.as_ref().map(|_| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/torch_forward_bf16_ref.py")
        })
    } else {
        args.torch_ref.clone()
    };

    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let ids: Vec<u32> = (0..BATCH * CTX)
        .map(|_| rng.random_range(0..50277))
        .collect();
    let tokens = Tensor::from_vec(ids, (BATCH, CTX), &Device::Cpu)?;
    let hook = HookPoint::ResidPost(HARVEST_LAYER);
    let n_tokens = (BATCH * CTX) as f64;

    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "unset".into());
    println!(
        "GPT-NeoX forward, Pythia-70M shape (d {D}, {LAYERS} layers, {HEADS} heads, vocab {VOCAB}), \
         batch {BATCH} x {CTX} tokens, {dtype_name}; {} rounds of {} repeats; RAYON_NUM_THREADS={threads} \
         ({} rayon threads)",
        args.rounds,
        args.repeats,
        rayon::current_num_threads()
    );

    let harvest_only = args.flags.iter().any(|f| f == "--harvest-only");
    let harvest_key = format!("lm_to_block{HARVEST_LAYER}_tokens_per_s");
    let mut table = TokensTable::new(
        [
            format!("to blocks.{HARVEST_LAYER}.hook_resid_post"),
            "full forward (logits)".to_string(),
        ],
        "harvest / full",
    );
    let mut sink = 0usize;
    for _ in 0..args.rounds {
        let harvest = time(args.repeats, 2, || {
            let a = model.capture(&tokens, &[hook]).expect("capture");
            sink += a[0].elem_count();
        });
        // `--harvest-only` (for profiling the pass to the hook alone) skips the full pass.
        let full = if harvest_only {
            f64::NAN
        } else {
            time((args.repeats / 2).max(3), 1, || {
                let l = model.forward(&tokens).expect("forward");
                sink += l.elem_count();
            })
        };
        let torch = torch_ref
            .as_deref()
            .and_then(|p| run_torch(p, args.repeats, bf16));
        table.round(
            [n_tokens / harvest, n_tokens / full],
            torch.as_ref(),
            [&harvest_key, "lm_full_forward_tokens_per_s"],
        );
    }
    std::hint::black_box(sink);

    println!();
    println!("{}", machine::describe());
    table.print();
    if !bf16 && !args.flags.iter().any(|f| f == "--no-gemm") {
        gemm_section(&args)?;
        fma_peak_section(args.rounds);
    }
    Ok(())
}

/// The forward pass's matrix products alone, (tokens, k) @ (k, n) with a contiguous (k, n)
/// right-hand side: candle's `matmul` (the `gemm` crate) against torch's `x @ w`, alternating
/// rounds like the forward pass.
fn gemm_section(args: &Args) -> saerun::Result<()> {
    let m = BATCH * CTX;
    let shapes = [
        ("MLP in (d -> d_mlp)", D, D_MLP),
        ("MLP out (d_mlp -> d)", D_MLP, D),
        ("unembedding (d -> vocab)", D, VOCAB),
    ];
    let dev = Device::Cpu;
    // best GFLOP/s per shape: (saerun, torch)
    let mut best = vec![(f64::NAN, f64::NAN); shapes.len()];
    // Operands made once: drawing 26M normals per round would add seconds to each round.
    let operands = shapes
        .iter()
        .map(|&(_, k, n)| {
            Ok((
                Tensor::randn(0f32, 1.0, (m, k), &dev)?,
                Tensor::randn(0f32, 1.0, (k, n), &dev)?,
            ))
        })
        .collect::<saerun::Result<Vec<_>>>()?;
    for _ in 0..args.rounds {
        for (i, (&(_, k, n), (x, w))) in shapes.iter().zip(&operands).enumerate() {
            let flop = 2.0 * (m * k * n) as f64;
            let repeats = (args.repeats * 2 * 1024 / n).clamp(3, 4 * args.repeats);
            let s = time(repeats, 2, || {
                std::hint::black_box(x.matmul(w).expect("matmul"));
            });
            best[i].0 = best[i].0.max(flop / s / 1e9);
            let torch = args.torch_ref.as_deref().and_then(|p| {
                let gemm = [
                    "--only".to_string(),
                    "gemm".into(),
                    "--batch".into(),
                    m.to_string(),
                    "--d".into(),
                    k.to_string(),
                    "--m".into(),
                    n.to_string(),
                    "--repeats".into(),
                    repeats.div_ceil(2).to_string(),
                ];
                run_torch_with(p, &gemm)
            });
            if let Some(g) = torch
                .as_ref()
                .and_then(|t| t.get("gemm_gflops"))
                .and_then(|v| v.as_f64())
            {
                best[i].1 = best[i].1.max(g);
            }
        }
    }
    println!();
    println!(
        "{:<36} {:>13} {:>12} {:>7}",
        format!("matrix product, {m} rows (GFLOP/s)"),
        "saerun best",
        "torch best",
        "ratio"
    );
    for (&(name, k, n), &(ours, theirs)) in shapes.iter().zip(&best) {
        let label = format!("{name} {k}x{n}");
        if theirs.is_nan() {
            println!("{label:<36} {ours:>13.1} {:>12} {:>7}", "-", "-");
        } else {
            println!(
                "{label:<36} {ours:>13.1} {theirs:>12.1} {:>6.2}x",
                ours / theirs
            );
        }
    }
    Ok(())
}

/// The machine's f32 FMA throughput with the widest vectors it has (AVX-512, else AVX2): one
/// thread per rayon worker, each running 12 independent FMA chains (enough to cover FMA
/// latency on current x86 cores) from registers, so no memory traffic. A ceiling for any
/// matrix product here.
fn fma_peak_section(rounds: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        let Some(isa) = machine::widest_fma() else {
            println!("FMA peak: no AVX2/FMA, skipped");
            return;
        };
        let lanes = if isa == "avx512f" { 16 } else { 8 };
        let threads = rayon::current_num_threads();
        const ITERS: u64 = 100_000_000;
        let mut best = 0f64;
        for _ in 0..rounds {
            // Each thread times its own loop; the rates add up (threads may start a little
            // apart, which wall-clock timing of the whole would count against the machine).
            let rates = rayon::broadcast(|_| {
                let t = Instant::now();
                // SAFETY: `widest_fma` detected the ISA each variant is compiled for.
                let sink = unsafe {
                    if lanes == 16 {
                        fma_chains_512(ITERS)
                    } else {
                        fma_chains(ITERS)
                    }
                };
                std::hint::black_box(sink);
                // 12 chains × lanes × 2 flops per FMA.
                (ITERS * 12 * lanes * 2) as f64 / t.elapsed().as_secs_f64() / 1e9
            });
            best = best.max(rates.iter().sum());
        }
        println!();
        println!(
            "f32 FMA peak ({isa}, {lanes} lanes), {threads} threads (best of {rounds}): {best:.0} GFLOP/s"
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = rounds;
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_chains(iters: u64) -> f32 {
    use std::arch::x86_64::*;
    let b = _mm256_set1_ps(0.999_999);
    let c = _mm256_set1_ps(1e-7);
    let mut acc = [_mm256_set1_ps(1.0); 12];
    for _ in 0..iters {
        // Fully unrolled by the compiler: 12 independent chains kept in registers.
        for a in acc.iter_mut() {
            *a = _mm256_fmadd_ps(*a, b, c);
        }
    }
    let mut total = _mm256_setzero_ps();
    for a in acc {
        total = _mm256_add_ps(total, a);
    }
    let mut lanes = [0f32; 8];
    _mm256_storeu_ps(lanes.as_mut_ptr(), total);
    lanes.iter().sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn fma_chains_512(iters: u64) -> f32 {
    use std::arch::x86_64::*;
    let b = _mm512_set1_ps(0.999_999);
    let c = _mm512_set1_ps(1e-7);
    let mut acc = [_mm512_set1_ps(1.0); 12];
    for _ in 0..iters {
        for a in acc.iter_mut() {
            *a = _mm512_fmadd_ps(*a, b, c);
        }
    }
    let mut total = _mm512_setzero_ps();
    for a in acc {
        total = _mm512_add_ps(total, a);
    }
    _mm512_reduce_add_ps(total)
}
