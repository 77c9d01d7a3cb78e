//! config.json dialects and validation, and hook-name parsing.

use std::path::Path;

use saerun::model::config::Activation;
use saerun::model::{GptNeoXConfig, HookPoint};
use saerun::Error;
use serde_json::{json, Value};

fn fixture_config(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/gpt_neox")
        .join(name)
        .join("config.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn parse(v: &Value) -> saerun::Result<GptNeoXConfig> {
    GptNeoXConfig::from_json_str(&v.to_string(), "some/dir/config.json")
}

fn input_err(v: &Value) -> String {
    match parse(v) {
        Err(Error::Input(m)) => m,
        other => panic!("expected an input error, got {other:?}"),
    }
}

#[test]
fn both_dialects_are_read() {
    let pythia = fixture_config("parallel");
    assert!(pythia.get("rotary_pct").is_some() && pythia.get("rope_parameters").is_none());
    let c = parse(&pythia).unwrap();
    assert_eq!(c.rotary_pct, 0.25);
    assert_eq!(c.rotary_emb_base, 10000.0);
    assert_eq!(c.rotary_ndims(), 4);
    assert!(c.use_parallel_residual);
    assert_eq!(c.torch_dtype, Some(candle_core::DType::F32));
    assert_eq!(c.hidden_act, Activation::GeluErf);

    let recent = fixture_config("sequential");
    assert!(recent.get("rope_parameters").is_some() && recent.get("rotary_pct").is_none());
    let c = parse(&recent).unwrap();
    assert_eq!(c.rotary_pct, 1.0);
    assert_eq!(c.rotary_emb_base, 500.0);
    assert_eq!(c.rotary_ndims(), 16);
    assert!(!c.use_parallel_residual);
    assert_eq!(c.torch_dtype, Some(candle_core::DType::BF16));

    // The same model written in the other dialect parses to the same config.
    let mut converted = pythia.clone();
    let o = converted.as_object_mut().unwrap();
    let pct = o.remove("rotary_pct").unwrap();
    let base = o.remove("rotary_emb_base").unwrap();
    let dtype = o.remove("torch_dtype").unwrap();
    o.insert(
        "rope_parameters".into(),
        json!({"rope_type": "default", "partial_rotary_factor": pct, "rope_theta": base}),
    );
    o.insert("dtype".into(), dtype);
    assert_eq!(parse(&converted).unwrap(), parse(&pythia).unwrap());

    // Both dialects at once are fine when they agree.
    let mut both = pythia.clone();
    both["rope_parameters"] = json!({"partial_rotary_factor": 0.25, "rope_theta": 10000});
    assert_eq!(parse(&both).unwrap(), parse(&pythia).unwrap());
}

#[test]
fn the_shared_tiny_pythia_config_parses() {
    // Written by transformers 4.24 (Pythia dialect); it lives in the repo's shared folder.
    let text = r#"{"architectures":["GPTNeoXForCausalLM"],"bos_token_id":0,"eos_token_id":0,
      "hidden_act":"gelu","hidden_size":128,"initializer_range":0.02,"intermediate_size":512,
      "layer_norm_eps":1e-05,"max_position_embeddings":128,"model_type":"gpt_neox",
      "num_attention_heads":4,"num_hidden_layers":4,"rotary_emb_base":10000,"rotary_pct":0.25,
      "tie_word_embeddings":false,"torch_dtype":"float16","transformers_version":"4.24.0",
      "use_cache":true,"use_parallel_residual":true,"vocab_size":50304}"#;
    let c = GptNeoXConfig::from_json_str(text, "config.json").unwrap();
    assert_eq!((c.head_dim(), c.rotary_ndims()), (32, 8));
    assert_eq!(c.torch_dtype, Some(candle_core::DType::F16));
}

#[test]
fn missing_fields_are_named_with_the_file() {
    for (dialect, field) in [
        ("parallel", "hidden_size"),
        ("parallel", "rotary_pct"),
        ("parallel", "rotary_emb_base"),
        ("parallel", "use_parallel_residual"),
        ("parallel", "layer_norm_eps"),
        ("sequential", "num_attention_heads"),
        ("sequential", "intermediate_size"),
    ] {
        let mut v = fixture_config(dialect);
        v.as_object_mut().unwrap().remove(field);
        let m = input_err(&v);
        assert!(
            m.contains(field) && m.contains("some/dir/config.json"),
            "{m}"
        );
    }
    let mut v = fixture_config("sequential");
    v["rope_parameters"]
        .as_object_mut()
        .unwrap()
        .remove("partial_rotary_factor");
    let m = input_err(&v);
    assert!(
        m.contains("partial_rotary_factor") && m.contains("config.json"),
        "{m}"
    );
}

#[test]
fn contradictory_fields_are_rejected() {
    let mut v = fixture_config("parallel");
    v["rope_parameters"] = json!({"partial_rotary_factor": 0.5, "rope_theta": 10000});
    let m = input_err(&v);
    assert!(
        m.contains("rotary_pct") && m.contains("partial_rotary_factor"),
        "{m}"
    );

    let mut v = fixture_config("parallel");
    v["rope_parameters"] = json!({"partial_rotary_factor": 0.25, "rope_theta": 500});
    let m = input_err(&v);
    assert!(
        m.contains("rotary_emb_base") && m.contains("rope_theta"),
        "{m}"
    );

    let mut v = fixture_config("parallel");
    v["dtype"] = json!("bfloat16");
    let m = input_err(&v);
    assert!(m.contains("torch_dtype") && m.contains("dtype"), "{m}");
}

#[test]
fn invalid_values_are_rejected() {
    let cases: Vec<(&str, Value)> = vec![
        ("hidden_size", json!(65)),    // not divisible by 4 heads
        ("hidden_size", json!("64")),  // wrong type
        ("rotary_pct", json!(0.0)),    // no rotary dims
        ("rotary_pct", json!(0.1875)), // 16 dims per head -> 3 rotary dims: odd, cannot pair
        ("rotary_pct", json!(1.5)),
        ("hidden_act", json!("relu")),
        ("model_type", json!("llama")),
        ("use_parallel_residual", json!("yes")),
    ];
    for (field, value) in cases {
        let mut v = fixture_config("parallel");
        v[field] = value;
        let m = input_err(&v);
        assert!(m.contains(field), "{field}: {m}");
    }
    let mut v = fixture_config("sequential");
    v["rope_parameters"]["rope_type"] = json!("linear");
    assert!(input_err(&v).contains("rope_type"));
    assert!(matches!(
        GptNeoXConfig::from_json_str("[1]", "x/config.json"),
        Err(Error::Input(m)) if m.contains("x/config.json")
    ));
    assert!(matches!(
        GptNeoXConfig::from_file(Path::new("/nonexistent/config.json")),
        Err(Error::Io { .. })
    ));
}

#[test]
fn hook_names_round_trip() {
    let all = HookPoint::all(6);
    assert_eq!(all.len(), 2 + 6 * 6);
    for h in &all {
        assert_eq!(HookPoint::parse(&h.name(), 6).unwrap(), *h);
        assert_eq!(h.to_string(), h.name());
    }
    assert_eq!(
        HookPoint::parse("blocks.2.hook_resid_post", 6).unwrap(),
        HookPoint::ResidPost(2)
    );
    assert_eq!(
        HookPoint::parse("blocks.5.attn.hook_z", 6).unwrap(),
        HookPoint::AttnZ(5)
    );
    assert_eq!(
        HookPoint::parse("blocks.0.mlp.hook_post", 6).unwrap(),
        HookPoint::MlpPost(0)
    );
    assert_eq!(HookPoint::parse("hook_embed", 6).unwrap(), HookPoint::Embed);
    assert_eq!(
        HookPoint::parse("ln_final.hook_normalized", 6).unwrap(),
        HookPoint::LnFinalNormalized
    );
}

#[test]
fn bad_hook_names_list_the_valid_ones() {
    for bad in [
        "blocks.6.hook_resid_post",
        "blocks.2.hook_resid_mid",
        "blocks.x.hook_resid_post",
        "blocks.02.hook_resid_post",
        "blocks.-1.hook_resid_post",
        "hook_pos_embed",
        "",
        "blocks.2",
    ] {
        match HookPoint::parse(bad, 6) {
            Err(Error::Input(m)) => {
                assert!(
                    m.contains("hook_resid_post") && m.contains("0..=5"),
                    "{bad}: {m}"
                );
                assert!(
                    m.contains("hook_embed") && m.contains("ln_final.hook_normalized"),
                    "{m}"
                );
            }
            other => panic!("{bad:?}: expected an input error, got {other:?}"),
        }
    }
    let m = match HookPoint::parse("blocks.6.hook_resid_post", 6) {
        Err(Error::Input(m)) => m,
        _ => unreachable!(),
    };
    assert!(m.contains("out of range"), "{m}");
}
