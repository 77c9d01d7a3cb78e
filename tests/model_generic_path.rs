//! The generic kernels (plain candle ops: the path every non-CPU device takes) give the fused
//! CPU kernels' results. Both run here on the CPU, so a GPU-less machine checks the code a GPU
//! would run. Fixture models always; the trained tiny Pythia when `SAERUN_SHARED_DIR` is set.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use saerun::model::{GptNeoX, HookPoint, Kernels, Processing};

/// Max |fused − generic| on any f32 output (logits and every hook). Both paths compute in f32
/// and differ only in summation order and the exp/erf approximations: measured 3.3e-6 on the
/// fixtures' logits and 8.6e-6 on the tiny Pythia's (values up to ~25). Interleaved rope,
/// swapped cos/sin or a mask one column off move the fixtures' logits by more than 3;
/// tanh-GELU in place of the erf one by 1e-3.
const F32_TOL: f32 = 3e-5;

/// bf16 keeps 8 significant bits: an output rounds to a spacing of 2^-8 to 2^-7 of its
/// largest value, and one rounding that falls the other way (from a last-bit f32 difference)
/// propagates. The fused path's linear layers also round at other points (once after bias
/// and GELU, where candle rounds the product, the sum and the GELU; logits not rounded at
/// all). Relative to each output's largest |value|; measured up to 0.016 with either packed
/// kernel (`vdpbf16ps` on an AMD EPYC, `gemm` on an Intel Xeon without AVX512_BF16), 0.0057
/// when the fused path ran candle's ops as well.
const BF16_TOL: f32 = 0.02;

fn fixture_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/gpt_neox")
        .join(name)
}

fn fixture_tokens(dir: &Path) -> Tensor {
    let expected = candle_core::safetensors::load(dir.join("expected.safetensors"), &Device::Cpu)
        .expect("fixture expected.safetensors");
    expected["input_ids"].to_dtype(DType::U32).unwrap()
}

/// Max |a − b| (NaN when either side has one) and max |b|.
fn max_abs_diff(a: &Tensor, b: &Tensor) -> (f32, f32) {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    let flat = |t: Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let diffs = flat((a - b).unwrap().abs().unwrap());
    let scale = flat(b.abs().unwrap()).into_iter().fold(0f32, f32::max);
    if diffs.iter().any(|d| d.is_nan()) {
        return (f32::NAN, scale);
    }
    (diffs.into_iter().fold(0f32, f32::max), scale)
}

/// Run `tokens` through the model in `dir` with each kernel set: full forward (logits) and a
/// capture of every hook. Fails listing every output further apart than `tol`: absolute in
/// f32, relative to the output's largest magnitude in lower precision.
fn assert_paths_agree(dir: &Path, tokens: &Tensor, dtype: DType, tol: f32) {
    let (mut worst_logits, mut worst, mut worst_rel) = (0f32, 0f32, 0f32);
    for processing in [Processing::None, Processing::TransformerLens] {
        let fused = GptNeoX::load(dir, processing, dtype).unwrap();
        assert_eq!(fused.kernels(), Kernels::Fused, "the CPU default");
        let generic = GptNeoX::load(dir, processing, dtype)
            .unwrap()
            .with_kernels(Kernels::Generic);
        let hooks = HookPoint::all(fused.n_layers());
        let mut diffs = vec![(
            "logits".to_string(),
            max_abs_diff(
                &fused.forward(tokens).unwrap(),
                &generic.forward(tokens).unwrap(),
            ),
        )];
        worst_logits = worst_logits.max(diffs[0].1 .0);
        let (a, b) = (
            fused.capture(tokens, &hooks).unwrap(),
            generic.capture(tokens, &hooks).unwrap(),
        );
        for ((h, a), b) in hooks.iter().zip(&a).zip(&b) {
            diffs.push((h.name(), max_abs_diff(a, b)));
        }
        let allowed = |scale: f32| {
            if dtype == DType::F32 {
                tol
            } else {
                tol * scale
            }
        };
        for (_, (d, scale)) in &diffs {
            (worst, worst_rel) = (worst.max(*d), worst_rel.max(d / scale));
        }
        let bad: Vec<String> = diffs
            .iter()
            .filter(|(_, (d, scale))| d.is_nan() || *d > allowed(*scale))
            .map(|(what, (d, scale))| format!("{what}: max |diff| {d}, max |value| {scale}"))
            .collect();
        assert!(
            bad.is_empty(),
            "{} {processing:?} {dtype:?}: generic kernels differ from fused (tol {tol}):\n{}",
            dir.display(),
            bad.join("\n")
        );
    }
    eprintln!(
        "{} {dtype:?}: max |diff| {worst_logits} on logits, {worst} on any output \
         ({worst_rel} of its largest value)",
        dir.display()
    );
}

#[test]
fn kernels_follow_the_device() {
    assert_eq!(Kernels::for_device(&Device::Cpu), Kernels::Fused);
}

/// Quarter rotary (rope on 4 of 16 head dims) with a parallel residual; full rotary with a
/// sequential one.
#[test]
fn generic_kernels_match_fused_on_fixtures() {
    for name in ["parallel", "sequential"] {
        let dir = fixture_dir(name);
        let tokens = fixture_tokens(&dir);
        assert_paths_agree(&dir, &tokens, DType::F32, F32_TOL);
        assert_paths_agree(&dir, &tokens, DType::BF16, BF16_TOL);
    }
}

#[test]
fn generic_kernels_match_fused_on_tiny_pythia() {
    let Some(shared) = std::env::var_os("SAERUN_SHARED_DIR") else {
        eprintln!("SAERUN_SHARED_DIR is not set: skipping the tiny-pythia generic-path check");
        return;
    };
    let dir = PathBuf::from(shared).join("data/tiny-pythia");
    // Two contexts of 48 ids spread over the vocabulary, deterministic.
    let ids: Vec<u32> = (0..96u32).map(|i| (i * 7919 + 13) % 50_000).collect();
    let tokens = Tensor::from_vec(ids, (2, 48), &Device::Cpu).unwrap();
    assert_paths_agree(&dir, &tokens, DType::F32, F32_TOL);
}
