//! The GPT-NeoX forward pass against Hugging Face transformers (fixtures written by
//! scripts/make_gpt_neox_fixtures.py), hooks, replacement, resuming, TransformerLens processing
//! and sharded checkpoints.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, D};
use saerun::model::{GptNeoX, HookPoint, Processing};
use saerun::Error;

const TOL: f32 = 1e-4;

fn fixture_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/gpt_neox")
        .join(name)
}

struct Fixture {
    dir: PathBuf,
    expected: HashMap<String, Tensor>,
}

impl Fixture {
    fn open(name: &str) -> Self {
        let dir = fixture_dir(name);
        let expected =
            candle_core::safetensors::load(dir.join("expected.safetensors"), &Device::Cpu)
                .expect("fixture expected.safetensors");
        Fixture { dir, expected }
    }

    fn get(&self, key: &str) -> &Tensor {
        self.expected
            .get(key)
            .unwrap_or_else(|| panic!("fixture lacks {key}"))
    }

    fn tokens(&self) -> Tensor {
        self.get("input_ids").to_dtype(DType::U32).unwrap()
    }

    fn model(&self, processing: Processing) -> GptNeoX {
        GptNeoX::load(&self.dir, processing, DType::F32).expect("load fixture model")
    }
}

/// Max |a - b|, NaN if either side has a NaN (candle's `max` would skip it).
fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    let flat = |t: &Tensor| {
        t.to_dtype(DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    flat(a)
        .iter()
        .zip(flat(b))
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, |m, d| {
            if d.is_nan() || m.is_nan() {
                f32::NAN
            } else {
                m.max(d)
            }
        })
}

fn assert_close(what: &str, a: &Tensor, b: &Tensor, tol: f32) {
    let d = max_abs_diff(a, b);
    assert!(d <= tol, "{what}: max |diff| = {d} > {tol}");
}

fn minus_token_mean(x: &Tensor) -> Tensor {
    x.broadcast_sub(&x.mean_keepdim(D::Minus1).unwrap())
        .unwrap()
}

fn log_probs(logits: &Tensor) -> Tensor {
    candle_nn::ops::log_softmax(logits, D::Minus1).unwrap()
}

/// Every hook of the raw model against the module outputs transformers recorded. All
/// comparisons are made before failing, so a failure shows where the divergence starts.
fn check_against_transformers(name: &str) {
    let fx = Fixture::open(name);
    let model = fx.model(Processing::None);
    let tokens = fx.tokens();
    let n = model.n_layers();
    let (b, s) = tokens.dims2().unwrap();

    let logits = model.forward(&tokens).unwrap();
    assert_eq!(logits.dtype(), DType::F32);
    let hooks = HookPoint::all(n);
    let acts = model.capture(&tokens, &hooks).unwrap();
    let act = |h: HookPoint| &acts[hooks.iter().position(|x| *x == h).unwrap()];

    let mut pairs: Vec<(String, Tensor, &Tensor)> = Vec::new();
    pairs.push((
        "hook_embed".into(),
        act(HookPoint::Embed).clone(),
        fx.get("hidden_states.0"),
    ));
    for l in 0..n {
        let e = |k: &str| fx.get(&format!("blocks.{l}.{k}"));
        pairs.push((
            format!("resid_pre {l}"),
            act(HookPoint::ResidPre(l)).clone(),
            fx.get(&format!("hidden_states.{l}")),
        ));
        let z = act(HookPoint::AttnZ(l));
        assert_eq!(z.dims(), &[b, s, model.n_heads(), model.d_head()]);
        pairs.push((
            format!("z {l}"),
            z.reshape((b, s, model.d_model())).unwrap(),
            e("attn.hook_z"),
        ));
        pairs.push((
            format!("attn_out {l}"),
            act(HookPoint::AttnOut(l)).clone(),
            e("hook_attn_out"),
        ));
        pairs.push((
            format!("mlp post {l}"),
            act(HookPoint::MlpPost(l)).clone(),
            e("mlp.hook_post"),
        ));
        pairs.push((
            format!("mlp_out {l}"),
            act(HookPoint::MlpOut(l)).clone(),
            e("hook_mlp_out"),
        ));
        if l + 1 < n {
            // transformers' last hidden state is after the final layer norm.
            pairs.push((
                format!("resid_post {l}"),
                act(HookPoint::ResidPost(l)).clone(),
                fx.get(&format!("hidden_states.{}", l + 1)),
            ));
        }
    }
    let normalized = act(HookPoint::LnFinalNormalized);
    pairs.push((
        "ln_final".into(),
        normalized.clone(),
        fx.get("ln_final.hook_normalized"),
    ));
    pairs.push((
        "last hidden state".into(),
        normalized.clone(),
        fx.get(&format!("hidden_states.{n}")),
    ));
    pairs.push(("logits".into(), logits, fx.get("logits")));

    let report: Vec<String> = pairs
        .iter()
        .map(|(what, got, want)| (what, max_abs_diff(got, want)))
        // NaN must fail too, hence not `d > TOL`.
        .filter(|(_, d)| d.is_nan() || *d > TOL)
        .map(|(what, d)| format!("{what}: max |diff| {d}"))
        .collect();
    assert!(
        report.is_empty(),
        "{name} differs from transformers:\n{}",
        report.join("\n")
    );
}

#[test]
fn parallel_residual_rotary_quarter_f32_matches_transformers() {
    check_against_transformers("parallel");
}

#[test]
fn sequential_residual_full_rotary_bf16_matches_transformers() {
    check_against_transformers("sequential");
}

#[test]
fn reduced_precision_compute_is_close() {
    let fx = Fixture::open("parallel");
    let tokens = fx.tokens();
    for (dtype, tol) in [(DType::F16, 0.1f32), (DType::BF16, 0.5)] {
        let model = GptNeoX::load(&fx.dir, Processing::None, dtype).unwrap();
        // A bf16 model on the CPU always takes the packed weights (`vdpbf16ps` where the CPU
        // has AVX512_BF16, `gemm` on the f32 values elsewhere); f16 runs candle's ops.
        assert_eq!(model.packed_bf16(), dtype == DType::BF16, "{dtype:?}");
        let logits = model.forward(&tokens).unwrap();
        assert_eq!(logits.dtype(), DType::F32);
        assert_close(&format!("{dtype:?} logits"), &logits, fx.get("logits"), tol);
    }
}

#[test]
fn transformer_lens_processing_centres_the_residual_and_keeps_log_probs() {
    for name in ["parallel", "sequential"] {
        let fx = Fixture::open(name);
        let raw = fx.model(Processing::None);
        let tl = fx.model(Processing::TransformerLens);
        let tokens = fx.tokens();
        let n = raw.n_layers();

        let hooks = HookPoint::all(n);
        let a_raw = raw.capture(&tokens, &hooks).unwrap();
        let a_tl = tl.capture(&tokens, &hooks).unwrap();
        for ((h, r), t) in hooks.iter().zip(&a_raw).zip(&a_tl) {
            let ctx = format!("{name} {h}");
            match h {
                HookPoint::Embed
                | HookPoint::ResidPre(_)
                | HookPoint::ResidPost(_)
                | HookPoint::AttnOut(_)
                | HookPoint::MlpOut(_) => assert_close(&ctx, t, &minus_token_mean(r), TOL),
                // Folding the LN changes nothing up to the GELU.
                HookPoint::MlpPost(_) => assert_close(&ctx, t, r, TOL),
                HookPoint::AttnZ(_) | HookPoint::LnFinalNormalized => {}
            }
        }
        // TL's resid_post really is centred (and the raw one is not, or the test proves nothing).
        let tl_post = &a_tl[hooks
            .iter()
            .position(|h| *h == HookPoint::ResidPost(0))
            .unwrap()];
        let raw_post = &a_raw[hooks
            .iter()
            .position(|h| *h == HookPoint::ResidPost(0))
            .unwrap()];
        let mean_abs = |x: &Tensor| {
            x.mean(D::Minus1)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        };
        assert!(mean_abs(tl_post) < 1e-5);
        assert!(mean_abs(raw_post) > 1e-2);

        let lp_raw = log_probs(&raw.forward(&tokens).unwrap());
        let lp_tl = log_probs(&tl.forward(&tokens).unwrap());
        assert_close(&format!("{name} log-probs"), &lp_tl, &lp_raw, TOL);
        assert_close(
            &format!("{name} log-probs vs HF"),
            &lp_raw,
            &log_probs(fx.get("logits")),
            TOL,
        );
    }
}

#[test]
fn transformer_lens_hook_z_excludes_value_bias() {
    let fx = Fixture::open("parallel");
    let raw = fx.model(Processing::None);
    let tl = fx.model(Processing::TransformerLens);
    let tokens = fx.tokens();
    let (nh, hd) = (raw.n_heads(), raw.d_head());
    let weights =
        candle_core::safetensors::load(fx.dir.join("model.safetensors"), &Device::Cpu).unwrap();
    for l in 0..raw.n_layers() {
        let w = |k: &str| &weights[&format!("gpt_neox.layers.{l}.{k}")];
        // fold_ln first moves ln1's bias into the value bias (b_V + W_V·ln1_b), then
        // fold_value_biases moves all of it into b_O.
        let qkv_w = w("attention.query_key_value.weight");
        let ln_b = w("input_layernorm.bias");
        let folded = (w("attention.query_key_value.bias")
            + qkv_w
                .matmul(&ln_b.unsqueeze(1).unwrap())
                .unwrap()
                .squeeze(1)
                .unwrap())
        .unwrap();
        // Per-head fused layout: (heads, [q, k, v], d_head).
        let b_v = folded
            .reshape((nh, 3, hd))
            .unwrap()
            .narrow(1, 2, 1)
            .unwrap()
            .squeeze(1)
            .unwrap();
        let z_raw = &raw.capture(&tokens, &[HookPoint::AttnZ(l)]).unwrap()[0];
        let z_tl = &tl.capture(&tokens, &[HookPoint::AttnZ(l)]).unwrap()[0];
        assert_close(
            "z_tl = z_raw - b_V",
            z_tl,
            &z_raw.broadcast_sub(&b_v).unwrap(),
            TOL,
        );
    }
}

#[test]
fn unembedding_accessor_reproduces_logits_in_both_conventions() {
    let fx = Fixture::open("parallel");
    let tokens = fx.tokens();
    for processing in [Processing::None, Processing::TransformerLens] {
        let model = fx.model(processing);
        let w_u = model.w_u().unwrap();
        assert_eq!(w_u.dims(), &[model.d_model(), model.vocab_size()]);
        let normalized = &model
            .capture(&tokens, &[HookPoint::LnFinalNormalized])
            .unwrap()[0];
        let mut logits = normalized.broadcast_matmul(&w_u).unwrap();
        match model.b_u().unwrap() {
            Some(b) => logits = logits.broadcast_add(&b).unwrap(),
            None => assert_eq!(processing, Processing::None),
        }
        assert_close(
            &format!("{processing} W_U"),
            &logits,
            &model.forward(&tokens).unwrap(),
            TOL,
        );
        if processing == Processing::TransformerLens {
            // center_unembed: every row of W_U has zero mean over the vocabulary.
            let row_means = w_u.mean(1).unwrap().abs().unwrap().max_all().unwrap();
            assert!(row_means.to_scalar::<f32>().unwrap() < 1e-6);
        }
    }
}

#[test]
fn capture_returns_requested_order_and_duplicates() {
    let fx = Fixture::open("parallel");
    let model = fx.model(Processing::None);
    let tokens = fx.tokens();
    let hooks = [
        HookPoint::ResidPost(0),
        HookPoint::Embed,
        HookPoint::ResidPost(0),
        HookPoint::ResidPre(1),
    ];
    let acts = model.capture(&tokens, &hooks).unwrap();
    assert_eq!(acts.len(), 4);
    assert_close("resid_post 0", &acts[0], fx.get("hidden_states.1"), TOL);
    assert_close("embed", &acts[1], fx.get("hidden_states.0"), TOL);
    assert_eq!(max_abs_diff(&acts[0], &acts[2]), 0.0);
    assert_eq!(max_abs_diff(&acts[0], &acts[3]), 0.0);
    assert!(model.capture(&tokens, &[]).unwrap().is_empty());
    let err = model
        .capture(&tokens, &[HookPoint::ResidPost(2)])
        .unwrap_err();
    assert!(matches!(err, Error::Input(_)), "{err}");
}

#[test]
fn replacement_splices_into_the_rest_of_the_forward_pass() {
    let fx = Fixture::open("sequential");
    let model = fx.model(Processing::TransformerLens);
    let tokens = fx.tokens();
    let clean = model.forward(&tokens).unwrap();

    // Identity replacement anywhere leaves the logits bit-identical.
    for h in HookPoint::all(model.n_layers()) {
        let mut calls = 0;
        let out = model
            .forward_with_replacement(&tokens, h, &mut |x| {
                calls += 1;
                Ok(x.clone())
            })
            .unwrap();
        assert_eq!(calls, 1, "{h}");
        assert_eq!(max_abs_diff(&out, &clean), 0.0, "{h}");
    }

    // Zero-ablating the residual stream after block 0 equals resuming from zeros.
    let post0 = &model.capture(&tokens, &[HookPoint::ResidPost(0)]).unwrap()[0];
    let ablated = model
        .forward_with_replacement(&tokens, HookPoint::ResidPost(0), &mut |x| {
            Ok(x.zeros_like()?)
        })
        .unwrap();
    let resumed = model
        .forward_from(HookPoint::ResidPost(0), &post0.zeros_like().unwrap())
        .unwrap();
    assert_close("zero ablation", &ablated, &resumed, 1e-5);
    assert!(
        max_abs_diff(&ablated, &clean) > 0.1,
        "ablation had no effect"
    );

    // Ablating one MLP's output changes the logits, and only positions are affected causally:
    // changing the last position's hook_mlp_out leaves earlier positions' logits alone.
    let (_, s) = tokens.dims2().unwrap();
    let changed = model
        .forward_with_replacement(&tokens, HookPoint::MlpOut(0), &mut |x| {
            let keep = x.narrow(1, 0, s - 1)?;
            let last = (x.narrow(1, s - 1, 1)? * 3.0)?;
            Ok(Tensor::cat(&[&keep, &last], 1)?)
        })
        .unwrap();
    assert_eq!(
        max_abs_diff(
            &changed.narrow(1, 0, s - 1).unwrap(),
            &clean.narrow(1, 0, s - 1).unwrap()
        ),
        0.0
    );
    assert!(max_abs_diff(&changed, &clean) > 0.1);

    // A replacement of the wrong shape is the caller's error.
    let err = model
        .forward_with_replacement(
            &tokens,
            HookPoint::AttnZ(1),
            &mut |x| Ok(x.narrow(1, 0, 1)?),
        )
        .unwrap_err();
    assert!(matches!(err, Error::Input(_)), "{err}");
}

#[test]
fn resuming_from_cached_residual_activations_gives_the_same_logits() {
    for processing in [Processing::None, Processing::TransformerLens] {
        let fx = Fixture::open("parallel");
        let model = fx.model(processing);
        let tokens = fx.tokens();
        let clean = model.forward(&tokens).unwrap();
        let resumable: Vec<HookPoint> = HookPoint::all(model.n_layers())
            .into_iter()
            .filter(|h| h.is_residual())
            .collect();
        let acts = model.capture(&tokens, &resumable).unwrap();
        for (h, a) in resumable.iter().zip(&acts) {
            let out = model.forward_from(*h, a).unwrap();
            assert_close(&format!("{processing} resume at {h}"), &out, &clean, 1e-5);
        }
        for h in [
            HookPoint::AttnOut(0),
            HookPoint::AttnZ(1),
            HookPoint::MlpPost(0),
            HookPoint::MlpOut(1),
        ] {
            let a = &model.capture(&tokens, &[h]).unwrap()[0];
            let err = model.forward_from(h, a).unwrap_err();
            assert!(
                matches!(err, Error::Input(ref m) if m.contains("resume")),
                "{err}"
            );
        }
        let wrong = Tensor::zeros((2, 3, model.d_model() + 1), DType::F32, &Device::Cpu).unwrap();
        assert!(matches!(
            model.forward_from(HookPoint::Embed, &wrong),
            Err(Error::Input(_))
        ));
    }
}

#[test]
fn bad_tokens_are_input_errors() {
    let fx = Fixture::open("parallel");
    let model = fx.model(Processing::None);
    let too_big = Tensor::new(&[[1u32, model.vocab_size() as u32]], &Device::Cpu).unwrap();
    assert!(matches!(model.forward(&too_big), Err(Error::Input(m)) if m.contains("out of range")));
    let flat = Tensor::new(&[1u32, 2], &Device::Cpu).unwrap();
    assert!(matches!(model.forward(&flat), Err(Error::Input(_))));
    let float = Tensor::new(&[[1f32, 2.0]], &Device::Cpu).unwrap();
    assert!(matches!(model.forward(&float), Err(Error::Input(_))));
    // i64 ids (as numpy/torch produce them) are accepted.
    let i64_ids = fx.get("input_ids");
    assert_close(
        "i64 ids",
        &model.forward(i64_ids).unwrap(),
        fx.get("logits"),
        TOL,
    );
}

#[test]
fn sharded_checkpoint_loads_identically() {
    let fx = Fixture::open("parallel");
    let tmp = tempfile::tempdir().unwrap();
    let all =
        candle_core::safetensors::load(fx.dir.join("model.safetensors"), &Device::Cpu).unwrap();
    let mut names: Vec<&String> = all.keys().collect();
    names.sort();
    let (first, second) = names.split_at(names.len() / 2);
    let mut weight_map = serde_json::Map::new();
    for (file, part) in [
        ("model-00001-of-00002.safetensors", first),
        ("model-00002-of-00002.safetensors", second),
    ] {
        let shard: HashMap<String, Tensor> = part
            .iter()
            .map(|n| ((*n).clone(), all[*n].clone()))
            .collect();
        candle_core::safetensors::save(&shard, tmp.path().join(file)).unwrap();
        for n in part {
            weight_map.insert((*n).clone(), serde_json::Value::from(file));
        }
    }
    let index = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": weight_map});
    std::fs::write(
        tmp.path().join("model.safetensors.index.json"),
        index.to_string(),
    )
    .unwrap();
    std::fs::copy(fx.dir.join("config.json"), tmp.path().join("config.json")).unwrap();

    let sharded = GptNeoX::load(tmp.path(), Processing::None, DType::F32).unwrap();
    let single = fx.model(Processing::None);
    let tokens = fx.tokens();
    assert_eq!(
        max_abs_diff(
            &sharded.forward(&tokens).unwrap(),
            &single.forward(&tokens).unwrap()
        ),
        0.0
    );

    // An index pointing at the wrong shard is reported, naming the index file.
    let mut bad = index.clone();
    let moved = first[0].clone();
    bad["weight_map"][&moved] = serde_json::Value::from("model-00002-of-00002.safetensors");
    std::fs::write(
        tmp.path().join("model.safetensors.index.json"),
        bad.to_string(),
    )
    .unwrap();
    let err = GptNeoX::load(tmp.path(), Processing::None, DType::F32)
        .err()
        .unwrap();
    assert!(
        matches!(&err, Error::Input(m) if m.contains(&moved) && m.contains("index.json")),
        "{err}"
    );
}

#[test]
fn missing_or_misshapen_tensors_are_input_errors() {
    let fx = Fixture::open("parallel");
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(fx.dir.join("config.json"), tmp.path().join("config.json")).unwrap();
    let mut all =
        candle_core::safetensors::load(fx.dir.join("model.safetensors"), &Device::Cpu).unwrap();
    let name = "gpt_neox.layers.1.mlp.dense_h_to_4h.bias".to_string();
    let kept = all.remove(&name).unwrap();
    candle_core::safetensors::save(&all, tmp.path().join("model.safetensors")).unwrap();
    let err = GptNeoX::load(tmp.path(), Processing::None, DType::F32)
        .err()
        .unwrap();
    assert!(
        matches!(&err, Error::Input(m) if m.contains(&name)),
        "{err}"
    );

    all.insert(name.clone(), kept.narrow(0, 0, 10).unwrap());
    candle_core::safetensors::save(&all, tmp.path().join("model.safetensors")).unwrap();
    let err = GptNeoX::load(tmp.path(), Processing::None, DType::F32)
        .err()
        .unwrap();
    assert!(
        matches!(&err, Error::Input(m) if m.contains(&name) && m.contains("shape")),
        "{err}"
    );

    let empty = tempfile::tempdir().unwrap();
    std::fs::copy(fx.dir.join("config.json"), empty.path().join("config.json")).unwrap();
    assert!(matches!(
        GptNeoX::load(empty.path(), Processing::None, DType::F32),
        Err(Error::Input(_))
    ));
}

#[test]
fn processing_names_are_stable() {
    assert_eq!(Processing::None.as_str(), "none");
    assert_eq!(Processing::TransformerLens.as_str(), "transformer_lens");
    let p: Processing = serde_json::from_str("\"transformer_lens\"").unwrap();
    assert_eq!(p, Processing::TransformerLens);
    let p: Processing = serde_json::from_str("\"none\"").unwrap();
    assert_eq!(p, Processing::None);
    assert!(serde_json::from_str::<Processing>("\"tl\"").is_err());
    assert!(matches!("fold".parse::<Processing>(), Err(Error::Input(_))));
    assert_eq!("none".parse::<Processing>().unwrap(), Processing::None);
}

/// `next_token_nll` (chunked unembedding, no full logits) against the NLL of transformers'
/// logits, and against the logits paths for each kind of pass. The fixture's 2 × 12 tokens are
/// repeated 15 times so the 330 predictions span two chunks of 256.
#[test]
fn chunked_next_token_nll_matches_the_logits() {
    use saerun::metrics::perplexity::next_token_nll;
    use saerun::model::Pass;
    let fx = Fixture::open("parallel");
    let model = fx.model(Processing::None);
    let repeat = |t: &Tensor| Tensor::cat(&vec![t.clone(); 15], 0).unwrap();
    let tokens = repeat(&fx.tokens());
    let reference = repeat(fx.get("logits"));
    let (want, count) = next_token_nll(&reference, &tokens).unwrap();
    assert_eq!(count, 30 * 11);
    let close = |what: &str, (got, n): (f64, usize), want: f64| {
        assert_eq!(n, count, "{what}");
        assert!(
            (got - want).abs() <= 1e-5 * want.abs(),
            "{what}: {got} vs {want}"
        );
    };
    close(
        "clean vs transformers",
        model.next_token_nll(Pass::Clean(&tokens), &tokens).unwrap(),
        want,
    );

    // A replacement at a non-residual hook, and resuming from a residual one.
    let hook = HookPoint::MlpOut(0);
    let mut scale = |x: &Tensor| Ok((x * 0.5)?);
    let logits = model
        .forward_with_replacement(&tokens, hook, &mut scale)
        .unwrap();
    let pass = Pass::Replace {
        tokens: &tokens,
        hook,
        f: &mut scale,
    };
    close(
        "replacement",
        model.next_token_nll(pass, &tokens).unwrap(),
        next_token_nll(&logits, &tokens).unwrap().0,
    );
    let resid = HookPoint::ResidPost(0);
    let x = (&model.capture(&tokens, &[resid]).unwrap()[0] * 1.1).unwrap();
    let pass = Pass::From {
        hook: resid,
        activation: &x,
    };
    close(
        "resumed",
        model.next_token_nll(pass, &tokens).unwrap(),
        next_token_nll(&model.forward_from(resid, &x).unwrap(), &tokens)
            .unwrap()
            .0,
    );

    // The same vector at every position (zero and mean ablation): one sequence's pass for
    // the batch at a residual hook, a full replacing pass elsewhere; against the logits of
    // the whole batch resumed from (or replaced by) that activation.
    let (b, s) = tokens.dims2().unwrap();
    for (hook, width) in [(resid, 64), (HookPoint::MlpOut(0), 64)] {
        let mean = x.mean((0, 1)).unwrap();
        assert_eq!(mean.dims(), [width], "the fixture's d_model");
        for (what, value) in [("zero", mean.zeros_like().unwrap()), ("mean", mean)] {
            let everywhere = value
                .broadcast_as((b, s, width))
                .unwrap()
                .contiguous()
                .unwrap();
            let logits = if hook.is_residual() {
                model.forward_from(hook, &everywhere).unwrap()
            } else {
                let mut set = |_: &Tensor| Ok(everywhere.clone());
                model
                    .forward_with_replacement(&tokens, hook, &mut set)
                    .unwrap()
            };
            close(
                &format!("{what} at {hook}"),
                model.next_token_nll_uniform(&tokens, hook, &value).unwrap(),
                next_token_nll(&logits, &tokens).unwrap().0,
            );
        }
    }
}

/// `eval.unembedding = "bf16"`: the chunked loss (the CPU's packed kernel, and the generic
/// kernels' rounded weights) equals the NLL of logits computed in f64 from the bf16-rounded
/// final-LN output and W_U (plus b_U, which TransformerLens processing adds); the
/// one-sequence path of zero and mean ablation equals the chunked loss of the whole batch
/// resumed from that activation.
#[test]
fn bf16_unembedding_losses_match_bf16_rounded_logits() {
    use saerun::metrics::perplexity::next_token_nll;
    use saerun::model::{Kernels, Pass, UnembeddingPrecision};
    let fx = Fixture::open("parallel");
    let tokens = Tensor::cat(&vec![fx.tokens(); 15], 0).unwrap();
    let round = |t: &Tensor| {
        t.to_dtype(DType::BF16)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
    };
    for processing in [Processing::None, Processing::TransformerLens] {
        let model = fx.model(processing);
        let b_u = model.b_u().unwrap();
        assert_eq!(b_u.is_some(), processing == Processing::TransformerLens);
        let normalized = &model
            .capture(&tokens, &[HookPoint::LnFinalNormalized])
            .unwrap()[0];
        let (b, s, d) = normalized.dims3().unwrap();
        let mut logits = round(normalized)
            .reshape((b * s, d))
            .unwrap()
            .matmul(&round(&model.w_u().unwrap()))
            .unwrap();
        if let Some(b_u) = &b_u {
            logits = logits
                .broadcast_add(&b_u.to_dtype(DType::F64).unwrap())
                .unwrap();
        }
        let logits = logits.reshape((b, s, ())).unwrap();
        let (want, count) = next_token_nll(&logits, &tokens).unwrap();
        let (f32_nll, _) = model.next_token_nll(Pass::Clean(&tokens), &tokens).unwrap();
        // The rounding is real: f32 inputs give another sum (by far more than the tolerance).
        assert!(
            (f32_nll - want).abs() > 1e-5 * want.abs(),
            "{f32_nll} vs {want}"
        );

        let resid = HookPoint::ResidPost(0);
        let x = &model.capture(&tokens, &[resid]).unwrap()[0];
        let mean = x.mean((0, 1)).unwrap();
        for kernels in [Kernels::Fused, Kernels::Generic] {
            let model = fx.model(processing).with_kernels(kernels);
            let m = model.losses(UnembeddingPrecision::Bf16);
            let (got, n) = m.next_token_nll(Pass::Clean(&tokens), &tokens).unwrap();
            assert_eq!(n, count);
            assert!(
                (got - want).abs() <= 1e-6 * want.abs(),
                "{processing:?} {kernels:?} clean: {got} vs {want} (f32 unembedding: {f32_nll})"
            );
            for (what, value) in [("zero", mean.zeros_like().unwrap()), ("mean", mean.clone())] {
                let everywhere = value.broadcast_as(x.dims()).unwrap().contiguous().unwrap();
                let pass = Pass::From {
                    hook: resid,
                    activation: &everywhere,
                };
                let (batch, _) = m.next_token_nll(pass, &tokens).unwrap();
                let (uniform, n) = m.next_token_nll_uniform(&tokens, resid, &value).unwrap();
                assert_eq!(n, count);
                assert!(
                    (uniform - batch).abs() <= 1e-6 * batch.abs(),
                    "{processing:?} {kernels:?} {what}: one sequence {uniform} vs the batch {batch}"
                );
            }
        }
    }
}
