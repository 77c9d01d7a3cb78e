//! A random Pythia-70M-shaped GPT-NeoX checkpoint and the study's batch shape, shared by the
//! model benches: both time this model, saerun loading it from disk like any checkpoint.
#![allow(dead_code)] // each bench uses part of it

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};

pub const D: usize = 512;
pub const LAYERS: usize = 6;
pub const HEADS: usize = 8;
pub const D_MLP: usize = 2048;
pub const VOCAB: usize = 50304;
pub const BATCH: usize = 64;
pub const CTX: usize = 25;
pub const HARVEST_LAYER: usize = 2;

/// Write a random Pythia-70M-shaped checkpoint (HF layout, f16 like the hub's) to `dir`.
pub fn write_random_model(dir: &Path) -> saerun::Result<()> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let dev = Device::Cpu;
    let mut tensors = std::collections::HashMap::new();
    let mut normal = |shape: &[usize], std: f32| -> saerun::Result<Tensor> {
        let n: usize = shape.iter().product();
        // A sum of three uniforms: a cheap bell shape, good enough for timing.
        let v: Vec<f32> = (0..n)
            .map(|_| {
                let u: f32 = rng.random::<f32>() + rng.random::<f32>() + rng.random::<f32>();
                (u - 1.5) * 2.0 * std
            })
            .collect();
        Ok(Tensor::from_vec(v, shape, &dev)?.to_dtype(DType::F16)?)
    };
    let ones = |n: usize| Tensor::ones(n, DType::F16, &dev);
    let zeros = |n: usize| Tensor::zeros(n, DType::F16, &dev);
    tensors.insert(
        "gpt_neox.embed_in.weight".to_string(),
        normal(&[VOCAB, D], 0.02)?,
    );
    for l in 0..LAYERS {
        let p = format!("gpt_neox.layers.{l}");
        for ln in ["input_layernorm", "post_attention_layernorm"] {
            tensors.insert(format!("{p}.{ln}.weight"), ones(D)?);
            tensors.insert(format!("{p}.{ln}.bias"), zeros(D)?);
        }
        for (name, out, inp) in [
            ("attention.query_key_value", 3 * D, D),
            ("attention.dense", D, D),
            ("mlp.dense_h_to_4h", D_MLP, D),
            ("mlp.dense_4h_to_h", D, D_MLP),
        ] {
            tensors.insert(format!("{p}.{name}.weight"), normal(&[out, inp], 0.02)?);
            tensors.insert(format!("{p}.{name}.bias"), normal(&[out], 0.02)?);
        }
    }
    tensors.insert("gpt_neox.final_layer_norm.weight".into(), ones(D)?);
    tensors.insert("gpt_neox.final_layer_norm.bias".into(), zeros(D)?);
    tensors.insert("embed_out.weight".into(), normal(&[VOCAB, D], 0.02)?);
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors"))?;
    let config = serde_json::json!({
        "model_type": "gpt_neox", "architectures": ["GPTNeoXForCausalLM"],
        "vocab_size": VOCAB, "hidden_size": D, "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS, "intermediate_size": D_MLP, "hidden_act": "gelu",
        "rotary_pct": 0.25, "rotary_emb_base": 10000, "max_position_embeddings": 2048,
        "layer_norm_eps": 1e-5, "use_parallel_residual": true, "tie_word_embeddings": false,
        "torch_dtype": "float16"
    });
    std::fs::write(dir.join("config.json"), config.to_string())
        .map_err(|e| saerun::Error::io(dir, "writing config.json in", e))?;
    Ok(())
}
