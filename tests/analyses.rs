//! The feature analyses against direct recomputation through the model, on the committed
//! GPT-NeoX fixture (random weights are enough: these are identities, not statistics):
//! a planted logit-lens feature, the norm filter, ablated text (exactly zero at hook_embed,
//! where the final token's embedding cannot depend on earlier tokens), direction ablation,
//! and the seeded uniform-bin draw.

use candle_core::{DType, Device, Tensor, D};
use saerun::analysis::ablated_text::ablate_each_earlier_token;
use saerun::analysis::direction_ablation::{ablate_direction, Request};
use saerun::analysis::examples::{ExampleFinder, ExampleKind, Hit};
use saerun::analysis::logit_lens::{column_norms, excluded_tokens, lens};
use saerun::analysis::probe::Probe;
use saerun::analysis::select::select_features;
use saerun::analysis::stats::StatsAccumulator;
use saerun::model::{GptNeoX, HookPoint, Processing};
use saerun::sae::Sae;
use saerun::spec::analyses::{Bins, FeatureSelect};
use std::collections::HashSet;
use std::path::Path;

const DEV: Device = Device::Cpu;

fn model() -> GptNeoX {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gpt_neox/parallel");
    GptNeoX::load(&dir, Processing::TransformerLens, DType::F32).unwrap()
}

/// A random SAE whose `feature` fires everywhere (large encoder bias).
fn sae_firing(d: usize, feature: usize) -> Sae {
    let mut sae = Sae::init(d, 16, Tensor::zeros(d, DType::F32, &DEV).unwrap(), 3).unwrap();
    let mut b = vec![0f32; 16];
    b[feature] = 5.0;
    sae.b_enc = Tensor::from_vec(b, 16, &DEV).unwrap();
    sae
}

fn tokens() -> Vec<u32> {
    vec![5, 17, 300, 42, 9, 250, 77, 3, 101, 64]
}

#[test]
fn logit_lens_ranks_a_planted_token_first_and_filters_by_norm() {
    let m = model();
    let w_u = m.w_u().unwrap();
    let norms = column_norms(&w_u).unwrap();
    let planted = 123u32;
    let column = w_u
        .narrow(1, planted as usize, 1)
        .unwrap()
        .squeeze(1)
        .unwrap();
    let direction = (&column / norms[planted as usize] as f64).unwrap();
    let mut sae = sae_firing(m.d_model(), 4);
    let mut rows: Vec<Vec<f32>> = sae.w_dec.to_vec2().unwrap();
    rows[4] = direction.to_vec1().unwrap();
    sae.w_dec = Tensor::new(rows, &DEV).unwrap();
    let name = |t: u32| format!("t{t}");

    // Every token with a norm up to the planted one's is kept; among them the planted
    // token is the only one with cosine 1.
    let max_norm = norms[planted as usize];
    let excluded = excluded_tokens(&norms, max_norm as f64);
    let (top, bottom) = lens(&sae.w_dec.get(4).unwrap(), &w_u, &excluded, 5, &name).unwrap();
    assert_eq!(top[0].id, planted, "top tokens {top:?}");
    assert!((top[0].value - max_norm).abs() < 1e-4);
    assert!(top.windows(2).all(|w| w[0].value >= w[1].value));
    assert!(bottom.windows(2).all(|w| w[0].value <= w[1].value));

    // The filter keeps exactly the tokens at or below the threshold.
    let threshold = {
        let mut sorted = norms.clone();
        sorted.sort_by(f32::total_cmp);
        sorted[sorted.len() / 2]
    };
    let vocab = norms.len();
    let (all, _) = lens(
        &sae.w_dec.get(4).unwrap(),
        &w_u,
        &excluded_tokens(&norms, threshold as f64),
        vocab,
        &name,
    )
    .unwrap();
    let kept: HashSet<u32> = all.iter().map(|t| t.id).collect();
    let expected: HashSet<u32> = (0..vocab as u32)
        .filter(|&t| norms[t as usize] <= threshold)
        .collect();
    assert_eq!(kept, expected);
    assert!(
        expected.len() < vocab,
        "the threshold must exclude something"
    );
}

fn last_activation(m: &GptNeoX, sae: &Sae, hook: HookPoint, seq: &[u32], f: usize) -> f32 {
    let t = Tensor::from_slice(seq, (1, seq.len()), &DEV).unwrap();
    let x = m.capture(&t, &[hook]).unwrap().remove(0);
    let last = x.narrow(1, seq.len() - 1, 1).unwrap().squeeze(1).unwrap();
    sae.encode(&last).unwrap().to_vec2::<f32>().unwrap()[0][f]
}

#[test]
fn ablated_text_is_zero_at_the_embedding_and_matches_recomputation() {
    let m = model();
    let f = 4;
    let sae = sae_firing(m.d_model(), f);
    let prefix = tokens();

    let embed = Probe {
        model: &m,
        sae: &sae,
        hook: HookPoint::Embed,
        device: &DEV,
    };
    let (original, deltas) = ablate_each_earlier_token(&embed, &prefix, f).unwrap();
    assert!(
        original > 0.0,
        "the feature must fire for the test to mean anything"
    );
    assert_eq!(deltas.len(), prefix.len() - 1);
    assert!(
        deltas.iter().all(|&d| d == 0.0),
        "hook_embed deltas {deltas:?}"
    );

    let hook = HookPoint::ResidPost(1);
    let resid = Probe {
        model: &m,
        sae: &sae,
        hook,
        device: &DEV,
    };
    let (original, deltas) = ablate_each_earlier_token(&resid, &prefix, f).unwrap();
    assert!(
        deltas.iter().any(|&d| d.abs() > 1e-4),
        "resid_post deltas {deltas:?}"
    );
    assert!((original - last_activation(&m, &sae, hook, &prefix, f)).abs() < 1e-5);
    for deleted in [0, 3, prefix.len() - 2] {
        let mut seq = prefix.clone();
        seq.remove(deleted);
        let direct = last_activation(&m, &sae, hook, &seq, f) - original;
        assert!(
            (deltas[deleted] - direct).abs() < 1e-4,
            "deleting {deleted}: batched {} vs direct {direct}",
            deltas[deleted]
        );
    }
}

#[test]
fn direction_ablation_matches_forward_with_replacement() {
    let m = model();
    let f = 4;
    let sae = sae_firing(m.d_model(), f);
    let toks = tokens();
    let s = toks.len();
    for hook in [HookPoint::ResidPost(0), HookPoint::MlpOut(1)] {
        let probe = Probe {
            model: &m,
            sae: &sae,
            hook,
            device: &DEV,
        };
        let req = Request {
            tokens: &toks,
            context: 0,
            position: 6,
            feature: f,
            k: 5,
            vocab: 500,
        };
        let got = ablate_direction(&probe, &req, &|t| format!("t{t}")).unwrap();

        // Direct: replace the hook's activation by x − f(x)·d, full forward from tokens.
        let t = Tensor::from_slice(&toks, (1, s), &DEV).unwrap();
        let direction = sae.w_dec.narrow(0, f, 1).unwrap();
        let ablated = m
            .forward_with_replacement(&t, hook, &mut |x| {
                let d = x.dim(2)?;
                let rows = x.reshape((s, d))?;
                let codes = sae.encode(&rows)?.narrow(1, f, 1)?;
                Ok((rows - codes.matmul(&direction)?)?.reshape((1, s, d))?)
            })
            .unwrap();
        let lp =
            |l: &Tensor| candle_nn::ops::log_softmax(&l.squeeze(0).unwrap(), D::Minus1).unwrap();
        let diff: Vec<Vec<f32>> = (lp(&ablated) - lp(&m.forward(&t).unwrap()))
            .unwrap()
            .to_vec2()
            .unwrap();
        for i in 0..s - 1 {
            let want = diff[i][toks[i + 1] as usize];
            assert!(
                (got.delta_logprob[i] - want).abs() < 1e-4,
                "{hook} position {i}"
            );
        }
        assert!(
            got.delta_logprob.iter().any(|v| v.abs() > 1e-4),
            "{hook}: no effect at all"
        );
        let best = (0..500)
            .max_by(|&a, &b| diff[6][a].total_cmp(&diff[6][b]))
            .unwrap();
        assert_eq!(got.rises[0].id as usize, best);
        assert!(got.rises.iter().chain(&got.falls).all(|t| t.id < 500));
    }
}

#[test]
fn uniform_bins_draw_one_token_per_nonempty_bin_uniformly() {
    // Activations in bins 0, 1, 3 and 5 (width 1); bins 2 and 4 stay empty.
    let acts = [0.2f32, 0.9, 1.1, 1.5, 1.7, 1.9, 3.3, 5.5];
    let hits: Vec<Hit> = acts
        .iter()
        .enumerate()
        .map(|(i, &a)| Hit {
            context: i,
            position: i % 3,
            activation: a,
        })
        .collect();
    let draw = |seed: u64| {
        let mut finder = ExampleFinder::new(2, Bins::Width(1.0), 5.5, seed, 7);
        for h in &hits {
            finder.offer(*h);
        }
        finder.finish()
    };
    let out = draw(11);
    let bins: Vec<usize> = out
        .iter()
        .filter_map(|(k, h)| match k {
            ExampleKind::Bin { bin, lo, hi } => {
                assert!(
                    h.activation >= *lo && h.activation < *hi,
                    "{h:?} outside [{lo}, {hi})"
                );
                Some(*bin)
            }
            ExampleKind::Top { .. } => None,
        })
        .collect();
    assert_eq!(bins, vec![0, 1, 3, 5]);
    let tops: Vec<f32> = out.iter().take(2).map(|(_, h)| h.activation).collect();
    assert_eq!(tops, vec![5.5, 3.3]);
    assert_eq!(draw(11), out, "the draw depends only on the seed");

    // Bin 1 holds four tokens: each is drawn about a quarter of the time over seeds.
    let mut counts = [0usize; 4];
    let seeds = 4000;
    for seed in 0..seeds {
        let pick = draw(seed)
            .into_iter()
            .find(|(k, _)| matches!(k, ExampleKind::Bin { bin: 1, .. }))
            .unwrap()
            .1;
        counts[pick.context - 2] += 1;
    }
    for c in counts {
        let p = c as f64 / seeds as f64;
        assert!(
            (p - 0.25).abs() < 0.03,
            "reservoir draw frequencies {counts:?}"
        );
    }
}

#[test]
fn feature_selection_by_frequency_ids_and_sample() {
    let mut acc = StatsAccumulator::new(4);
    // Latent 2 fires on 3 tokens, latent 0 on 2, latent 3 on 1, latent 1 never.
    acc.add(&[1.0, 0.0, 2.0, 0.0, 0.5, 0.0, 1.0, 0.0, 0.0, 0.0, 3.0, 4.0]);
    let stats = acc.finish();
    assert_eq!(
        select_features(&FeatureSelect::TopN(2), &stats).unwrap(),
        vec![2, 0]
    );
    assert_eq!(
        select_features(&FeatureSelect::All, &stats).unwrap(),
        vec![0, 2, 3]
    );
    let sample = select_features(&FeatureSelect::Random { n: 2, seed: 1 }, &stats).unwrap();
    assert_eq!(sample.len(), 2);
    assert!(
        sample.iter().all(|f| [0, 2, 3].contains(f)),
        "never-active latents are not sampled"
    );
    let err = select_features(&FeatureSelect::Ids(vec![1, 9]), &stats).unwrap_err();
    assert!(err.to_string().contains("analyses.feature_ids"), "{err}");
}
