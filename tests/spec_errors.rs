//! Bad input: one clear message naming the file, key and (where the format gives it) the
//! line; exit code 2; nothing written to the cache or results.

mod support;
use support::*;

fn base() -> String {
    tiny_toy_spec("bad", "[0.05]", 100)
}

/// Runs `validate` and `run` on a spec and checks both fail with exit code 2 and a
/// message containing every needle, leaving the cache and results empty.
fn assert_rejected(ws: &Workspace, spec_text: &str, extra: &[&str], needles: &[&str]) {
    let spec = ws.write("spec.toml", spec_text);
    for cmd in ["validate", "run"] {
        let mut args = vec![cmd, spec.to_str().unwrap()];
        args.extend_from_slice(extra);
        let out = ws.run(&args);
        let err = stderr(&out);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{cmd}: expected exit 2, stderr: {err}"
        );
        for n in needles {
            assert!(err.contains(n), "{cmd}: stderr lacks {n:?}:\n{err}");
        }
        assert!(!err.contains("panicked"), "{err}");
        assert_eq!(
            err.trim().lines().count(),
            1,
            "one message expected, got:\n{err}"
        );
        assert!(ws.cache_entries().is_empty(), "cache written on bad input");
        assert!(ws.runs().is_empty(), "results written on bad input");
    }
}

#[test]
fn unknown_key_names_file_key_and_line() {
    let ws = Workspace::new();
    let text = base().replace("lr = 3e-3", "lr = 3e-3\nlearning_rate = 0.1");
    let line = text
        .lines()
        .position(|l| l.starts_with("learning_rate"))
        .unwrap()
        + 1;
    assert_rejected(
        &ws,
        &text,
        &[],
        &[
            "spec.toml",
            "`train.learning_rate`",
            &format!("line {line}"),
            "unknown key",
        ],
    );
}

#[test]
fn unknown_section_is_rejected() {
    let ws = Workspace::new();
    let text = format!("{}\n[modle]\nname = \"x\"\n", base());
    assert_rejected(&ws, &text, &[], &["`modle`", "unknown key"]);
}

#[test]
fn wrong_type_names_key_and_expected_type() {
    let ws = Workspace::new();
    let text = base().replace("batch_size = 256", "batch_size = \"big\"");
    let line = text
        .lines()
        .position(|l| l.starts_with("batch_size"))
        .unwrap()
        + 1;
    assert_rejected(
        &ws,
        &text,
        &[],
        &["`train.batch_size`", &format!("line {line}"), "string"],
    );
}

#[test]
fn empty_sweep_list_is_rejected() {
    let ws = Workspace::new();
    let text = tiny_toy_spec("bad", "[]", 100);
    assert_rejected(&ws, &text, &[], &["`sae.l1`", "non-empty"]);
}

#[test]
fn non_positive_size_and_lr_are_rejected() {
    let ws = Workspace::new();
    let text = base().replace("dict_ratios = [1, 2]", "dict_sizes = [64, 0]");
    assert_rejected(&ws, &text, &[], &["`sae.dict_sizes`", "> 0", "line"]);
    let text = base().replace("dict_ratios = [1, 2]", "dict_ratios = [1, -2]");
    assert_rejected(&ws, &text, &[], &["`sae.dict_ratios`", "> 0"]);
    let text = base().replace("lr = 3e-3", "lr = -0.001");
    let line = text.lines().position(|l| l.starts_with("lr =")).unwrap() + 1;
    assert_rejected(
        &ws,
        &text,
        &[],
        &["`train.lr`", "> 0", &format!("line {line}")],
    );
    let text = base().replace("dict_ratios = [1, 2]", "dict_ratios = [1, 2e9]");
    assert_rejected(&ws, &text, &[], &["`sae.dict_ratios`", "supported"]);
    let text = base().replace("lr = 3e-3", "lr = 0");
    assert_rejected(&ws, &text, &[], &["`train.lr`", "> 0"]);
}

#[test]
fn bad_values_from_flags_and_environment_name_their_origin() {
    let ws = Workspace::new();
    assert_rejected(
        &ws,
        &base(),
        &["--set", "train.lr=0"],
        &["--set train.lr=0", "`train.lr`"],
    );
    assert_rejected(
        &ws,
        &base(),
        &["--set", "train.steps=many"],
        &["--set train.steps=many", "`train.steps`"],
    );
    assert_rejected(
        &ws,
        &base(),
        &["--set", "nonsense"],
        &["--set nonsense", "key=value"],
    );

    let spec = ws.write("spec.toml", &base());
    let out = ws
        .cmd(&["validate", spec.to_str().unwrap()])
        .env("SAERUN_TRAIN__LR", "-1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("environment variable SAERUN_TRAIN__LR"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn unreadable_and_malformed_files() {
    let ws = Workspace::new();
    let out = ws.run(&["run", "does-not-exist.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("cannot read spec file does-not-exist.toml"),
        "{}",
        stderr(&out)
    );

    let text = base().replace("steps = 100", "steps = = 100");
    let line = text.lines().position(|l| l.starts_with("steps")).unwrap() + 1;
    assert_rejected(
        &ws,
        &text,
        &[],
        &["spec.toml", "invalid TOML", &format!("line {line}")],
    );
}

#[test]
fn missing_required_keys_and_conflicts() {
    let ws = Workspace::new();
    let text = base().replace("source = \"toy\"\n", "");
    assert_rejected(&ws, &text, &[], &["`data.source`", "missing"]);
    let text = base().replace("steps = 100", "epochs = 2\nsteps = 100");
    assert_rejected(
        &ws,
        &text,
        &[],
        &["`train`", "exactly one of `steps` or `epochs`"],
    );
    let text = base().replace("source = \"toy\"", "source = \"parquet\"");
    assert_rejected(&ws, &text, &[], &["`data.source`", "unsupported"]);
    let text = base().replace("architecture = \"relu_l1\"", "architecture = \"gated\"");
    assert_rejected(&ws, &text, &[], &["`sae.architecture`", "relu_l1"]);
}

#[test]
fn analyses_section_values_are_checked() {
    let ws = Workspace::new();
    let with = |section: &str| format!("{}\n[analyses]\n{section}\n", base());
    assert_rejected(
        &ws,
        &with("features = \"best\""),
        &[],
        &["spec.toml", "`analyses.features`", "\"top_n\""],
    );
    assert_rejected(
        &ws,
        &with("bin_width = 0.5\nn_bins = 10"),
        &[],
        &["`analyses.n_bins`", "not both"],
    );
    assert_rejected(
        &ws,
        &with("n_features = 0"),
        &[],
        &["`analyses.n_features`"],
    );
    assert_rejected(
        &ws,
        &with("feature_ids = [1, 2]"),
        &[],
        &["`analyses.feature_ids`", "features = \"ids\""],
    );
    // Valid values, but toy data has no language model to analyse with.
    assert_rejected(
        &ws,
        &with("n_features = 5"),
        &[],
        &["`analyses`", "text data"],
    );
}
