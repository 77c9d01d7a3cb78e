//! Property tests (proptest) of the spec loader, the `--set` parser and the stage-key
//! canonicaliser, mostly on toy specs (no model files needed), in-process through the
//! library API:
//!
//! * no input panics: arbitrary bytes, mangled spec files and arbitrary `--set` flags give
//!   `Ok` or one clean, non-empty error message;
//! * equal specs give equal keys: a valid spec written with keys and tables in any order,
//!   tables as headers, dotted keys or inline tables, floats as `1e-3` / `0.001` /
//!   `1.0E-3` / `0.0010` / `10e-4`, integers as `1_000` / `+1000` / `0x3e8`, defaults
//!   written or omitted, sweep lists reordered or given as a scalar, and any
//!   value moved to a `--set` flag (overriding a decoy in the file) gives the same set of
//!   (stage, key) pairs; so do a dictionary ratio and the absolute size it resolves to, and
//!   `epochs` and the step count it resolves to;
//! * any changed parameter changes exactly the keys that depend on it: data parameters
//!   every key, training parameters every key but the data stage's, the MCS threshold only
//!   the evaluation keys, a sweep value only the nodes of the grid points it touches, and
//!   the name and description none;
//! * the canonicaliser itself: invariant to map key order and float spelling (`-0.0` is
//!   `0.0`), exact (the canonical text reads back to the very float), and injective on
//!   distinct values (an integer and the equal float are distinct types: parameters are
//!   typed, so `lr = 1` in a spec is the float 1.0 in the key).
//!
//! Language-model specs run on the tiny GPT-NeoX in `../shared` (`SAERUN_SHARED_DIR`, which
//! `.ci/run` sets; they pass trivially without it): equal spellings, a ratio of d_model vs
//! its size, and which keys a hook, learning-rate or context-length change rekeys.
//!
//! CI runs the default case counts below (about 10,000 cases in all; about 12 s in release
//! on a loaded 2-core machine). Run longer, e.g. after touching `spec/` or `cache/key.rs`:
//!
//! ```text
//! PROPTEST_CASES=100000 cargo test --release --test spec_properties -- --skip lm_
//! PROPTEST_CASES=1000 SAERUN_SHARED_DIR=../shared cargo test --release --test spec_properties lm_
//! ```
//!
//! `PROPTEST_CASES` replaces every property's case count (6,000 per property took under
//! two minutes here); the `lm_` properties hash the model files in every case, hence their
//! separate, smaller count. A failure prints its minimal input; add it as a plain test
//! (no failure files are written). Spec variables `SAERUN_<SECTION>__<KEY>` in the
//! environment would leak into every load: the tests refuse to run with one set.

use proptest::prelude::*;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use saerun::cache::key::{canonical_params, canonical_value, stage_key};
use saerun::pipeline::Graph;
use saerun::spec::{load_spec, resolve, ResolvedSpec};
use saerun::stages::{eval_sae, match_sizes, toy_data, train_sae};
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

// ---------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------

/// `default` cases, or `PROPTEST_CASES` when set. No failure files: a failure prints its
/// minimal input, which becomes a plain regression test below.
fn config(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn no_spec_environment() {
    let leaked: Vec<String> = std::env::vars()
        .map(|(k, _)| k)
        .filter(|k| k.starts_with("SAERUN_") && k.contains("__"))
        .collect();
    assert!(
        leaked.is_empty(),
        "unset {leaked:?}: spec variables would override every generated spec"
    );
}

/// Load (file text + `--set` flags), resolve and plan.
fn plan(text: &str, sets: &[String]) -> saerun::Result<(ResolvedSpec, Graph)> {
    no_spec_environment();
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), text).expect("write spec");
    let (spec, origin) = load_spec(file.path(), sets)?;
    let resolved = resolve(spec, &origin)?;
    let graph = Graph::build(&resolved)?;
    Ok((resolved, graph))
}

/// Every (stage, key) pair of the graph, sorted.
fn keys(graph: &Graph) -> Vec<(&'static str, String)> {
    let mut out: Vec<_> = graph
        .nodes()
        .iter()
        .map(|n| (n.stage, n.key.hex()))
        .collect();
    out.sort();
    out
}

fn plan_ok(r: &Rendered) -> (ResolvedSpec, Graph) {
    match plan(&r.text, &r.sets) {
        Ok(p) => p,
        Err(e) => panic!("generated spec rejected: {e}\n{r}"),
    }
}

/// A load/resolve/plan outcome on arbitrary input: fine either way, but an error is one
/// non-empty message (one line where the input puts no line break into it).
fn check_outcome(
    outcome: saerun::Result<(ResolvedSpec, Graph)>,
    one_line: bool,
) -> Result<(), TestCaseError> {
    if let Err(e) = outcome {
        let msg = e.to_string();
        prop_assert!(!msg.trim().is_empty(), "empty error message");
        prop_assert!(
            !one_line || msg.trim_end().lines().count() == 1,
            "error spans several lines:\n{msg}"
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// A valid toy spec, as a model that can be written out in many equal ways
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Sparsity {
    L1(Vec<f64>),
    K(Vec<u64>),
}

#[derive(Debug, Clone)]
enum Dict {
    /// Ratios and whether the base is `n_features` (else `activation_dim`, the default).
    Ratios(Vec<f64>, bool),
    Sizes(Vec<u64>),
}

#[derive(Debug, Clone, Copy)]
enum Length {
    Steps(u64),
    Epochs(f64),
}

#[derive(Debug, Clone)]
struct Toy {
    name: String,
    description: String,
    seed: u64,
    activation_dim: u64,
    n_features: u64,
    mean_active: f64,
    prob_decay: f64,
    correlated: bool,
    train_samples: u64,
    sparsity: Sparsity,
    dict: Dict,
    batch_size: u64,
    length: Length,
    lr: f64,
    warmup_steps: u64,
    schedule: &'static str,
    adam_beta1: f64,
    adam_beta2: f64,
    seeds: Option<Vec<u64>>,
    log_every: u64,
    mse: &'static str,
    l1_warmup_steps: u64,
    resample: Option<(u64, Option<u64>)>,
    eval_samples: u64,
    mcs_threshold: f64,
}

/// `m / 10^e`: the nearest double to a short decimal, like the values people write.
fn decimal(m: std::ops::Range<u32>, e: std::ops::Range<i32>) -> impl Strategy<Value = f64> {
    (m, e).prop_map(|(m, e)| m as f64 / 10f64.powi(e))
}

fn seed_value() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..10, 0..=i64::MAX as u64]
}

/// The dictionary sizes `resolve` gives (only to keep `k` valid; the properties compare
/// against what `resolve` actually does).
fn sizes_of(dict: &Dict, dim: u64, nf: u64) -> Vec<u64> {
    match dict {
        Dict::Sizes(s) => s.clone(),
        Dict::Ratios(r, nf_base) => {
            let base = if *nf_base { nf } else { dim } as f64;
            r.iter().map(|r| (r * base).round() as u64).collect()
        }
    }
}

fn toy() -> impl Strategy<Value = Toy> {
    let data = (
        prop_oneof![1 => Just(256u64), 4 => 1u64..=64],
        prop_oneof![1 => Just(512u64), 4 => 1u64..=128],
        any::<bool>(),
        prop_oneof![1 => Just(262_144u64), 4 => 1u64..=100_000],
        prop_oneof![1 => Just(0.99), 1 => Just(1.0), 3 => (0.0f64..1.0).prop_map(|x| 1.0 - x)],
        prop_oneof![
            1 => Just(None),
            4 => (1e-9f64..=1.0).prop_map(Some),
        ],
    );
    let ratio = prop_oneof![(2u32..=32).prop_map(|n| n as f64 / 4.0), 0.5f64..8.0];
    let dict = prop_oneof![
        (
            prop::collection::vec(ratio, 1..=4).prop_map(distinct),
            any::<bool>()
        )
            .prop_map(|(r, b)| Dict::Ratios(r, b)),
        prop::collection::vec(1u64..=2048, 1..=4).prop_map(|s| Dict::Sizes(distinct(s))),
    ];
    let length = prop_oneof![
        4 => prop_oneof![1u64..=20, 1u64..=100_000].prop_map(Length::Steps),
        1 => (1e-3f64..20.0).prop_map(Length::Epochs),
    ];
    let train = (
        prop_oneof![1 => Just(1024u64), 4 => 1u64..=4096],
        prop_oneof![1 => Just(1e-3), 2 => decimal(1..1000, 3..9), 2 => 1e-7f64..1.0],
        prop::sample::select(vec!["constant", "linear", "cosine"]),
        prop_oneof![1 => Just(0.9), 1 => Just(0.0), 2 => 0.0f64..1.0],
        prop_oneof![1 => Just(0.999), 2 => 0.0f64..1.0],
        prop::option::of(prop::collection::vec(seed_value(), 1..=3).prop_map(distinct)),
        prop_oneof![1 => Just(100u64), 2 => 1u64..=1000],
        prop::sample::select(vec!["sum", "mean"]),
    );
    let header = (
        prop::sample::select(vec!["toy", "exp-1", "sweep_2", "a.b"]),
        prop_oneof![Just(String::new()), "[ -~]{0,20}", any::<String>()],
        seed_value(),
        prop_oneof![1 => Just(16_384u64), 2 => 1u64..=100_000],
        prop_oneof![1 => Just(0.9), 1 => Just(1.0), 2 => (0.0f64..1.0).prop_map(|x| 1.0 - x)],
    );
    (data, dict, length, train, header).prop_flat_map(|(data, dict, length, train, header)| {
        let (dim, nf, correlated, samples, decay, frac) = data;
        let min_size = *sizes_of(&dict, dim, nf).iter().min().unwrap();
        let sparsity = prop_oneof![
            prop::collection::vec(
                prop_oneof![Just(0.0), decimal(1..1000, 1..8), 0.0f64..10.0],
                1..=3
            )
            .prop_map(|l1| Sparsity::L1(distinct(l1))),
            prop::collection::vec(1..=min_size.min(64), 1..=3)
                .prop_map(|k| Sparsity::K(distinct(k))),
        ];
        let max_steps = match length {
            Length::Steps(s) => s,
            Length::Epochs(_) => 0, // the resolved count is ≥ 1; keep warm-ups at 0
        };
        let warmups = (
            prop_oneof![Just(0u64), 0..=max_steps],
            prop_oneof![Just(0u64), 0..=max_steps],
            prop::option::of((1u64..=max_steps.max(1), prop::option::of(0u64..=max_steps))),
        );
        (sparsity, warmups).prop_map(move |(sparsity, (warmup, l1_warmup, resample))| {
            let (batch, lr, schedule, b1, b2, seeds, log_every, mse) = train.clone();
            let (name, description, seed, eval_samples, mcs) = header.clone();
            Toy {
                name: name.to_string(),
                description,
                seed,
                activation_dim: dim,
                n_features: nf,
                // Default 5 only where it is valid; else a fraction of n_features.
                mean_active: match frac {
                    None if nf >= 5 => 5.0,
                    None => nf as f64 / 2.0,
                    Some(f) => f * nf as f64,
                },
                prob_decay: decay,
                correlated,
                train_samples: samples,
                sparsity,
                dict: dict.clone(),
                batch_size: batch,
                length,
                lr,
                warmup_steps: warmup,
                schedule,
                adam_beta1: b1,
                adam_beta2: b2,
                seeds,
                log_every,
                mse,
                l1_warmup_steps: l1_warmup,
                resample,
                eval_samples,
                mcs_threshold: mcs,
            }
        })
    })
}

impl Toy {
    /// The spec as (section, key, value, may be omitted because it is the default).
    fn entries(&self) -> Vec<Entry> {
        let mut out = Vec::new();
        let mut add = |section, key, value: V, default: Option<V>| {
            let omittable = default.as_ref() == Some(&value);
            out.push(Entry {
                section,
                key,
                value,
                omittable,
            });
        };
        let f = V::Float;
        let i = V::Int;
        add("experiment", "name", V::Str(self.name.clone()), None);
        add(
            "experiment",
            "description",
            V::Str(self.description.clone()),
            Some(V::Str(String::new())),
        );
        add("experiment", "seed", i(self.seed), Some(i(0)));
        add("data", "source", V::Str("toy".into()), None);
        add(
            "data",
            "activation_dim",
            i(self.activation_dim),
            Some(i(256)),
        );
        add("data", "n_features", i(self.n_features), Some(i(512)));
        add("data", "mean_active", f(self.mean_active), Some(f(5.0)));
        add("data", "prob_decay", f(self.prob_decay), Some(f(0.99)));
        add(
            "data",
            "correlated",
            V::Bool(self.correlated),
            Some(V::Bool(false)),
        );
        add(
            "data",
            "train_samples",
            i(self.train_samples),
            Some(i(262_144)),
        );
        match &self.sparsity {
            Sparsity::L1(l1) => {
                add("sae", "architecture", V::Str("relu_l1".into()), None);
                add(
                    "sae",
                    "l1",
                    V::Sweep(l1.iter().map(|&x| f(x)).collect()),
                    None,
                );
            }
            Sparsity::K(k) => {
                add("sae", "architecture", V::Str("topk".into()), None);
                add(
                    "sae",
                    "k",
                    V::Sweep(k.iter().map(|&x| i(x)).collect()),
                    None,
                );
            }
        }
        match &self.dict {
            Dict::Ratios(r, nf_base) => {
                add(
                    "sae",
                    "dict_ratios",
                    V::Sweep(r.iter().map(|&x| f(x)).collect()),
                    None,
                );
                let base = if *nf_base {
                    "n_features"
                } else {
                    "activation_dim"
                };
                add(
                    "sae",
                    "ratio_base",
                    V::Str(base.into()),
                    Some(V::Str("activation_dim".into())),
                );
            }
            Dict::Sizes(s) => add(
                "sae",
                "dict_sizes",
                V::Sweep(s.iter().map(|&x| i(x)).collect()),
                None,
            ),
        }
        add("train", "batch_size", i(self.batch_size), Some(i(1024)));
        match self.length {
            Length::Steps(s) => add("train", "steps", i(s), None),
            Length::Epochs(e) => add("train", "epochs", f(e), None),
        }
        add("train", "lr", f(self.lr), Some(f(1e-3)));
        add("train", "warmup_steps", i(self.warmup_steps), Some(i(0)));
        add(
            "train",
            "schedule",
            V::Str(self.schedule.into()),
            Some(V::Str("constant".into())),
        );
        add("train", "adam_beta1", f(self.adam_beta1), Some(f(0.9)));
        add("train", "adam_beta2", f(self.adam_beta2), Some(f(0.999)));
        // No seeds = [experiment.seed]: the omitted list and the explicit one are equal.
        let seeds = self.seeds.clone().unwrap_or_else(|| vec![self.seed]);
        let seeds = V::Sweep(seeds.into_iter().map(i).collect());
        let default_seeds = self.seeds.is_none().then(|| seeds.clone());
        add("train", "seeds", seeds, default_seeds);
        add("train", "log_every", i(self.log_every), Some(i(100)));
        add(
            "train",
            "mse",
            V::Str(self.mse.into()),
            Some(V::Str("sum".into())),
        );
        add(
            "train",
            "l1_warmup_steps",
            i(self.l1_warmup_steps),
            Some(i(0)),
        );
        if let Some((every, until)) = self.resample {
            add("train", "resample_every", i(every), None);
            if let Some(u) = until {
                add("train", "resample_until", i(u), None);
            }
        }
        add("eval", "samples", i(self.eval_samples), Some(i(16_384)));
        add("eval", "mcs_threshold", f(self.mcs_threshold), Some(f(0.9)));
        out
    }
}

#[derive(Debug, Clone, PartialEq)]
enum V {
    Int(u64),
    Float(f64),
    Str(String),
    Bool(bool),
    /// A sweep field: order does not matter, one value may be a scalar (a repeated value is
    /// an error: see tests/bad_inputs.rs).
    Sweep(Vec<V>),
}

#[derive(Debug, Clone)]
struct Entry {
    section: &'static str,
    key: &'static str,
    value: V,
    omittable: bool,
}

// ---------------------------------------------------------------------------------------
// Writing a spec out: plainly, or in a random but equal style
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Rendered {
    text: String,
    sets: Vec<String>,
}

impl std::fmt::Display for Rendered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "--- spec ---\n{}", self.text)?;
        for s in &self.sets {
            writeln!(f, "--set {s}")?;
        }
        Ok(())
    }
}

/// The sections of `entries`, in first-seen order.
fn sections_of(entries: &[Entry]) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for e in entries {
        if !out.contains(&e.section) {
            out.push(e.section);
        }
    }
    out
}

fn plain_value(v: &V) -> String {
    match v {
        V::Int(n) => n.to_string(),
        V::Float(x) => format!("{x:?}"),
        V::Str(s) => toml::Value::String(s.clone()).to_string(),
        V::Bool(b) => b.to_string(),
        V::Sweep(items) => format!(
            "[{}]",
            items.iter().map(plain_value).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// One `[section]` per section in the usual order, keys in order, floats as Rust prints
/// them, every value written.
fn render_plain(entries: &[Entry]) -> Rendered {
    let mut text = String::new();
    for s in sections_of(entries) {
        text.push_str(&format!("[{s}]\n"));
        for e in entries.iter().filter(|e| e.section == s) {
            text.push_str(&format!("{} = {}\n", e.key, plain_value(&e.value)));
        }
        text.push('\n');
    }
    Rendered {
        text,
        sets: Vec::new(),
    }
}

/// Underscores between some digits (TOML allows one between any two digits).
fn underscores(digits: &str, rng: &mut ChaCha8Rng) -> String {
    let mut out = String::new();
    let chars: Vec<char> = digits.chars().collect();
    for (i, c) in chars.iter().enumerate() {
        out.push(*c);
        if i + 1 < chars.len()
            && c.is_ascii_digit()
            && chars[i + 1].is_ascii_digit()
            && rng.random_bool(0.2)
        {
            out.push('_');
        }
    }
    out
}

/// An integer in one of TOML's equal spellings.
fn spell_int(n: u64, rng: &mut ChaCha8Rng) -> String {
    match rng.random_range(0..7) {
        0 => n.to_string(),
        1 => underscores(&n.to_string(), rng),
        2 => format!("+{n}"),
        3 => format!("0x{}", underscores(&format!("{n:x}"), rng)),
        4 => format!("0x{n:X}"),
        5 => format!("0o{n:o}"),
        _ => format!("0b{n:b}"),
    }
}

/// A float in one of many spellings of the same decimal number: `0.001`, `0.0010`,
/// `1e-3`, `1.0E-3`, `10e-4`, `0.01e-1`, `+1e-03`, `0.000_1e1`, or an integer when the
/// value is one. Each spelling denotes exactly the shortest decimal that round-trips `x`,
/// so a correct parser gives back `x` bit for bit.
fn spell_float(x: f64, rng: &mut ChaCha8Rng) -> String {
    if x == 0.0 {
        // -0.0 equals 0.0: a spec may write either for a zero parameter.
        let zeros = [
            "0.0", "+0.0", "0e0", "0.000", "0E+5", "0", "-0", "-0.0", "-0e0",
        ];
        return zeros.choose(rng).unwrap().to_string();
    }
    if x < 0.0 {
        let positive = spell_float(-x, rng);
        return format!("-{}", positive.trim_start_matches('+'));
    }
    // x = digits × 10^power, digits without leading zeros.
    let sci = format!("{x:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap();
    let exp: i64 = exp.parse().unwrap();
    let mut digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let mut power = exp - (digits.len() as i64 - 1);
    // Trailing zeros change nothing.
    for _ in 0..rng.random_range(0..3) {
        digits.push('0');
        power -= 1;
    }
    let n = digits.len() as i64;
    let sign = if rng.random_bool(0.1) { "+" } else { "" };
    let spelled = match rng.random_range(0..3) {
        // Positional: 12345 × 10^-7 = 0.0012345.
        0 if power >= 0 && n + power <= 18 && rng.random_bool(0.5) => {
            format!("{digits}{}", "0".repeat(power as usize))
        }
        0 if power >= 0 => format!("{digits}{}.0", "0".repeat(power as usize)),
        0 if -power < n => {
            let point = (n + power) as usize;
            format!(
                "{}.{}",
                underscores(&digits[..point], rng),
                underscores(&digits[point..], rng)
            )
        }
        0 => format!("0.{}{digits}", "0".repeat((-power - n) as usize)),
        // Scientific with the point after `i` digits: 1.2345e-3, 12.345e-4, 12345e-7.
        _ => {
            let i = rng.random_range(1..=n) as usize;
            let e = power + (n - i as i64);
            let frac = &digits[i..];
            let m = if frac.is_empty() {
                if rng.random_bool(0.5) {
                    digits.clone()
                } else {
                    format!("{digits}.0")
                }
            } else {
                format!("{}.{}", &digits[..i], frac)
            };
            let e_char = if rng.random_bool(0.5) { 'e' } else { 'E' };
            let exponent = match (e >= 0, rng.random_range(0..3)) {
                (true, 0) => format!("+{e}"),
                (_, 1) => format!("{}0{}", if e < 0 { "-" } else { "" }, e.abs()),
                _ => e.to_string(),
            };
            format!("{m}{e_char}{exponent}")
        }
    };
    format!("{sign}{spelled}")
}

fn spell_str(s: &str, rng: &mut ChaCha8Rng) -> String {
    let literal_ok = !s.contains('\'') && !s.chars().any(|c| c.is_control());
    if literal_ok && rng.random_bool(0.3) {
        format!("'{s}'")
    } else {
        toml::Value::String(s.to_string()).to_string()
    }
}

/// `multiline`: arrays may span lines (not inside an inline table or a flag).
fn spell_value(v: &V, rng: &mut ChaCha8Rng, multiline: bool) -> String {
    match v {
        V::Int(n) => spell_int(*n, rng),
        V::Float(x) => spell_float(*x, rng),
        V::Str(s) => spell_str(s, rng),
        V::Bool(b) => b.to_string(),
        V::Sweep(items) => {
            if items.len() == 1 && rng.random_bool(0.4) {
                return spell_value(&items[0], rng, multiline);
            }
            let mut items = items.clone();
            items.shuffle(rng);
            let sep = if multiline && rng.random_bool(0.2) {
                ",\n  "
            } else if rng.random_bool(0.5) {
                ", "
            } else {
                ","
            };
            let spelled: Vec<String> = items
                .iter()
                .map(|x| spell_value(x, rng, multiline))
                .collect();
            let trailing = if rng.random_bool(0.2) { "," } else { "" };
            format!("[{}{trailing}]", spelled.join(sep))
        }
    }
}

/// A value of the same kind that differs: what a `--set` flag overrides.
fn decoy(v: &V) -> V {
    match v {
        V::Int(n) => V::Int(n / 2 + 1),
        V::Float(x) => V::Float(x * 2.0 + 1.0),
        V::Str(s) => V::Str(format!("{s}x")),
        V::Bool(b) => V::Bool(!b),
        V::Sweep(items) => V::Sweep(vec![decoy(&items[0])]),
    }
}

fn spell_key(key: &str, rng: &mut ChaCha8Rng) -> String {
    match rng.random_range(0..8) {
        0 => format!("\"{key}\""),
        1 => format!("'{key}'"),
        _ => key.to_string(),
    }
}

/// A `--set` value: TOML, or a bare string where that parses as no other TOML value.
fn spell_flag_value(v: &V, rng: &mut ChaCha8Rng) -> String {
    if let V::Str(s) = v {
        let bare_ok = !s.is_empty()
            && s.trim() == s
            && !s.contains('\n')
            && format!("v = {s}").parse::<toml::Table>().is_err();
        if bare_ok && rng.random_bool(0.5) {
            return s.clone();
        }
    }
    spell_value(v, rng, false)
}

#[derive(Clone, Copy, PartialEq)]
enum Layout {
    Header,
    Dotted,
    Inline,
}

/// The same spec in a random style decided by `seed`.
fn render_styled(entries: &[Entry], seed: u64) -> Rendered {
    let rng = &mut ChaCha8Rng::seed_from_u64(seed);
    let mut sets = Vec::new();
    let mut file: BTreeMap<&str, Vec<(String, String)>> = BTreeMap::new();
    for e in entries {
        if e.omittable && rng.random_bool(0.5) {
            continue;
        }
        let via_flag = rng.random_bool(0.2);
        if via_flag {
            // A decoy in the file or an earlier flag, overridden by the flag (last wins).
            match rng.random_range(0..4) {
                0 => file.entry(e.section).or_default().push((
                    spell_key(e.key, rng),
                    spell_value(&decoy(&e.value), rng, false),
                )),
                1 => sets.push(format!(
                    "{}.{}={}",
                    e.section,
                    e.key,
                    spell_flag_value(&decoy(&e.value), rng)
                )),
                _ => {}
            }
            let eq = [" = ", "=", "= "].choose(rng).unwrap();
            sets.push(format!(
                "{}.{}{eq}{}",
                e.section,
                e.key,
                spell_flag_value(&e.value, rng)
            ));
        } else {
            file.entry(e.section)
                .or_default()
                .push((spell_key(e.key, rng), spell_value(&e.value, rng, true)));
        }
    }
    let mut sections = sections_of(entries);
    sections.shuffle(rng);
    let layouts: Vec<Layout> = sections
        .iter()
        .map(|_| match rng.random_range(0..6) {
            0 => Layout::Dotted,
            1 => Layout::Inline,
            _ => Layout::Header,
        })
        .collect();
    let (mut root, mut tables) = (String::new(), String::new());
    for (s, layout) in sections.iter().zip(layouts) {
        let mut items = file.remove(s).unwrap_or_default();
        items.shuffle(rng);
        // Inline tables are one line: re-spell multi-line arrays on one line.
        let layout = if layout == Layout::Inline && items.iter().any(|(_, v)| v.contains('\n')) {
            Layout::Header
        } else {
            layout
        };
        match layout {
            Layout::Header => {
                if items.is_empty() && rng.random_bool(0.5) {
                    continue;
                }
                tables.push_str(&format!("[{}]\n", spell_key(s, rng)));
                for (k, v) in items {
                    let comment = if rng.random_bool(0.1) { "  # note" } else { "" };
                    tables.push_str(&format!("{k} = {v}{comment}\n"));
                }
                if rng.random_bool(0.5) {
                    tables.push('\n');
                }
            }
            Layout::Dotted => {
                for (k, v) in items {
                    root.push_str(&format!("{s}.{k} = {v}\n"));
                }
            }
            Layout::Inline => {
                let body: Vec<String> = items.iter().map(|(k, v)| format!("{k} = {v}")).collect();
                root.push_str(&format!("{s} = {{ {} }}\n", body.join(", ")));
            }
        }
    }
    let lead = if rng.random_bool(0.3) {
        "# a spec\n\n"
    } else {
        ""
    };
    Rendered {
        text: format!("{lead}{root}\n{tables}"),
        sets,
    }
}

// ---------------------------------------------------------------------------------------
// Changing one parameter, and which keys that must change
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq)]
enum Effect {
    /// Name, description: no key changes.
    Nothing,
    /// Data parameters: every key changes.
    All,
    /// Training parameters: every key but the data stage's.
    Train,
    /// The MCS threshold: only the evaluation and matching keys.
    Eval,
    /// A sweep value: new nodes for the grid points it touches, the others keep their keys.
    Grid,
}

fn next_up(x: f64) -> f64 {
    f64::from_bits(x.to_bits() + 1)
}

fn next_down(x: f64) -> f64 {
    f64::from_bits(x.to_bits() - 1)
}

const MUTATIONS: usize = 26;

/// Mutation `which` of `t`: a valid spec that differs in one parameter.
fn mutate(t: &Toy, which: usize) -> (Toy, Effect, &'static str) {
    let mut m = t.clone();
    let shift = |b: f64| if b < 0.5 { b + 0.25 } else { b - 0.25 };
    let step_up = |w: u64, max: u64| if w < max { w + 1 } else { w - 1 };
    let steps = match t.length {
        Length::Steps(s) => s,
        Length::Epochs(_) => 1, // resolves to ≥ 1
    };
    let what = match which {
        0 => {
            m.name = format!("{}2", t.name);
            (Effect::Nothing, "experiment.name")
        }
        1 => {
            m.description = format!("{}!", t.description);
            (Effect::Nothing, "experiment.description")
        }
        2 => {
            m.seed = t.seed ^ 1;
            (Effect::All, "experiment.seed")
        }
        3 => {
            m.activation_dim += 1;
            (Effect::All, "data.activation_dim")
        }
        4 => {
            m.n_features += 1;
            (Effect::All, "data.n_features")
        }
        5 => {
            // One ulp: 0.1 and 0.10000000000000002 are different parameters.
            m.mean_active = next_down(t.mean_active);
            (Effect::All, "data.mean_active")
        }
        6 => {
            m.prob_decay = if t.prob_decay < 1.0 {
                next_up(t.prob_decay)
            } else {
                0.5
            };
            (Effect::All, "data.prob_decay")
        }
        7 => {
            m.correlated = !t.correlated;
            (Effect::All, "data.correlated")
        }
        8 => {
            m.train_samples += 1;
            (Effect::All, "data.train_samples")
        }
        9 => {
            m.eval_samples += 1;
            (Effect::All, "eval.samples")
        }
        10 => {
            m.lr = next_up(t.lr);
            (Effect::Train, "train.lr")
        }
        11 => {
            m.batch_size += 1;
            (Effect::Train, "train.batch_size")
        }
        12 => match t.length {
            Length::Steps(s) => {
                m.length = Length::Steps(s + 1);
                (Effect::Train, "train.steps")
            }
            // Epochs resolve to a step count that a small change may keep.
            Length::Epochs(_) => {
                m.lr = next_down(t.lr);
                (Effect::Train, "train.lr")
            }
        },
        13 => {
            m.warmup_steps = step_up(t.warmup_steps, steps);
            (Effect::Train, "train.warmup_steps")
        }
        14 => {
            m.schedule = match t.schedule {
                "constant" => "linear",
                "linear" => "cosine",
                _ => "constant",
            };
            (Effect::Train, "train.schedule")
        }
        15 => {
            m.adam_beta1 = shift(t.adam_beta1);
            (Effect::Train, "train.adam_beta1")
        }
        16 => {
            m.adam_beta2 = shift(t.adam_beta2);
            (Effect::Train, "train.adam_beta2")
        }
        17 => {
            m.log_every += 1;
            (Effect::Train, "train.log_every")
        }
        18 => {
            m.mse = if t.mse == "sum" { "mean" } else { "sum" };
            (Effect::Train, "train.mse")
        }
        19 => {
            m.l1_warmup_steps = step_up(t.l1_warmup_steps, steps);
            (Effect::Train, "train.l1_warmup_steps")
        }
        20 => {
            m.resample = match t.resample {
                None => Some((1, None)),
                Some((every, until)) => Some((every + 1, until)),
            };
            (Effect::Train, "train.resample_every")
        }
        21 => {
            m.mcs_threshold = shift(t.mcs_threshold);
            (Effect::Eval, "eval.mcs_threshold")
        }
        22 => {
            let mut seeds = t.seeds.clone().unwrap_or_else(|| vec![t.seed]);
            seeds[0] = (0..).find(|s| !seeds.contains(s)).unwrap();
            m.seeds = Some(seeds);
            (Effect::Grid, "train.seeds")
        }
        23 => match &t.sparsity {
            Sparsity::L1(l1) => {
                let mut l1 = l1.clone();
                l1[0] = next_up(l1.iter().cloned().fold(0.0, f64::max));
                m.sparsity = Sparsity::L1(l1);
                (Effect::Grid, "sae.l1")
            }
            Sparsity::K(k) => {
                let mut k = k.clone();
                let new = k.iter().max().unwrap() + 1;
                k[0] = new;
                m.sparsity = Sparsity::K(k);
                // k must not exceed any size: add a size large enough.
                // (Two ratios can round to one size: keep each size once.)
                m.dict = Dict::Sizes({
                    let mut s = distinct(sizes_of(&t.dict, t.activation_dim, t.n_features));
                    s.retain(|&d| d >= new);
                    s.push(new + 4096);
                    s
                });
                (Effect::Grid, "sae.k")
            }
        },
        24 => {
            match &t.dict {
                Dict::Sizes(s) => {
                    let mut s = s.clone();
                    s[0] = s.iter().max().unwrap() + 1;
                    m.dict = Dict::Sizes(s);
                }
                Dict::Ratios(r, b) => {
                    let mut r = r.clone();
                    r.push(r.iter().cloned().fold(0.0, f64::max) + 1.0);
                    m.dict = Dict::Ratios(r, *b);
                }
            }
            (Effect::Grid, "sae.dict_sizes / dict_ratios")
        }
        _ => {
            m.sparsity = match t.sparsity {
                Sparsity::L1(_) => Sparsity::K(vec![1]),
                Sparsity::K(_) => Sparsity::L1(vec![1e-3]),
            };
            (Effect::Grid, "sae.architecture")
        }
    };
    (m, what.0, what.1)
}

/// A trained SAE's identity, to match train nodes across two graphs.
type Point = (String, usize, u64, Option<usize>, u64);

fn train_points(graph: &Graph) -> BTreeMap<Point, String> {
    graph
        .all::<train_sae::TrainSae>()
        .into_iter()
        .map(|h| {
            let p = graph.params(h);
            let id = (
                format!("{:?}", p.architecture),
                p.d_sae,
                (p.l1 + 0.0).to_bits(), // -0.0 + 0.0 = 0.0: one point, as in the key
                p.k,
                p.seed,
            );
            (id, graph.node(h).key.hex())
        })
        .collect()
}

fn stage_keys(graph: &Graph, stages: &[&str]) -> BTreeSet<String> {
    graph
        .nodes()
        .iter()
        .filter(|n| stages.contains(&n.stage))
        .map(|n| n.key.hex())
        .collect()
}

fn check_effect(
    before: &Graph,
    after: &Graph,
    effect: Effect,
    what: &str,
) -> Result<(), TestCaseError> {
    let all = [
        toy_data::NAME,
        train_sae::NAME,
        eval_sae::NAME,
        match_sizes::NAME,
    ];
    let downstream = &all[1..];
    let evals = [eval_sae::NAME, match_sizes::NAME];
    let disjoint = |stages: &[&str]| {
        stage_keys(before, stages)
            .intersection(&stage_keys(after, stages))
            .count()
            == 0
    };
    let same = |stages: &[&str]| stage_keys(before, stages) == stage_keys(after, stages);
    match effect {
        Effect::Nothing => prop_assert_eq!(keys(before), keys(after), "{} changed a key", what),
        Effect::All => prop_assert!(disjoint(&all), "{what} left a key unchanged"),
        Effect::Train => {
            prop_assert!(same(&[toy_data::NAME]), "{what} changed the data key");
            prop_assert!(disjoint(downstream), "{what} left a training key unchanged");
        }
        Effect::Eval => {
            prop_assert!(same(&all[..2]), "{what} changed a data or training key");
            prop_assert!(disjoint(&evals), "{what} left an evaluation key unchanged");
        }
        Effect::Grid => {
            prop_assert!(same(&[toy_data::NAME]), "{what} changed the data key");
            let (b, a) = (train_points(before), train_points(after));
            prop_assert_ne!(&b, &a, "{} changed no SAE", what);
            let old: BTreeSet<&String> = b.values().collect();
            for (point, key) in &a {
                match b.get(point) {
                    Some(k) => prop_assert_eq!(k, key, "{} rekeyed an untouched SAE", what),
                    None => prop_assert!(!old.contains(key), "{what}: new SAE, old key"),
                }
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Properties: equal specs, equal keys; changed parameter, changed keys
// ---------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(1000))]

    /// Any equal spelling of a spec (layout, order, float and integer spelling, defaults,
    /// sweep-list order, `--set` flags over decoys) plans the same keys.
    #[test]
    fn equal_specs_give_equal_keys(t in toy(), style in any::<u64>()) {
        let entries = t.entries();
        let plain = render_plain(&entries);
        let (resolved, graph) = plan_ok(&plain);
        let expected = keys(&graph);
        // Keys are unique within a graph, one train node per grid point.
        prop_assert_eq!(
            expected.iter().collect::<BTreeSet<_>>().len(),
            expected.len()
        );
        prop_assert_eq!(graph.all::<train_sae::TrainSae>().len(), resolved.grid.len());
        let styled = render_styled(&entries, style);
        match plan(&styled.text, &styled.sets) {
            Ok((_, g)) => prop_assert_eq!(
                keys(&g), expected, "keys differ:\n{}\n{}", plain, styled
            ),
            Err(e) => prop_assert!(false, "equal spelling rejected: {}\n{}", e, styled),
        }
    }
}

proptest! {
    #![proptest_config(config(1000))]

    /// Changing one parameter changes the keys that depend on it and no others.
    #[test]
    fn changed_parameter_changes_dependent_keys(
        t in toy(),
        which in 0..MUTATIONS,
        style in any::<u64>(),
    ) {
        let (m, effect, what) = mutate(&t, which);
        let (_, before) = plan_ok(&render_plain(&t.entries()));
        // The changed spec in another style, so spelling cannot hide or fake a change.
        let (_, after) = plan_ok(&render_styled(&m.entries(), style));
        check_effect(&before, &after, effect, what)?;
    }
}

proptest! {
    #![proptest_config(config(300))]

    /// A dictionary ratio keys like the absolute size it resolves to.
    #[test]
    fn ratio_and_its_size_give_equal_keys(t in toy(), r in prop::collection::vec(
        prop_oneof![(2u32..=32).prop_map(|n| n as f64 / 4.0), 0.5f64..8.0], 1..=4)
        .prop_map(distinct),
        nf_base in any::<bool>(),
    ) {
        let mut t = t;
        if let Sparsity::K(_) = t.sparsity {
            t.sparsity = Sparsity::L1(vec![1e-3]);
        }
        t.dict = Dict::Ratios(r, nf_base);
        let (resolved, graph) = plan_ok(&render_plain(&t.entries()));
        let sizes: BTreeSet<u64> = resolved.grid.iter().map(|p| p.d_sae as u64).collect();
        let mut s = t.clone();
        s.dict = Dict::Sizes(sizes.into_iter().collect());
        let (_, by_size) = plan_ok(&render_plain(&s.entries()));
        prop_assert_eq!(keys(&graph), keys(&by_size));
    }

    /// `epochs` keys like the step count it resolves to.
    #[test]
    fn epochs_and_their_steps_give_equal_keys(t in toy(), epochs in 1e-3f64..20.0) {
        let mut t = t;
        t.length = Length::Epochs(epochs);
        t.warmup_steps = 0;
        t.l1_warmup_steps = 0;
        let (resolved, graph) = plan_ok(&render_plain(&t.entries()));
        let mut s = t.clone();
        s.length = Length::Steps(resolved.schedule.as_ref().unwrap().steps);
        let (_, by_steps) = plan_ok(&render_plain(&s.entries()));
        prop_assert_eq!(keys(&graph), keys(&by_steps));
    }
}

/// The brief's example: ratio 2 of 512 dimensions is 1024 latents.
#[test]
fn ratio_two_of_512_is_size_1024() {
    let spec = |dict: &str| {
        format!(
            "[experiment]\nname = \"r\"\n[data]\nsource = \"toy\"\nactivation_dim = 512\n\
             n_features = 1024\n[sae]\narchitecture = \"relu_l1\"\n{dict}\nl1 = 1e-3\n\
             [train]\nsteps = 1000\n"
        )
    };
    let (_, by_ratio) = plan(&spec("dict_ratios = 2"), &[]).unwrap();
    let (_, by_size) = plan(&spec("dict_sizes = [1_024]"), &[]).unwrap();
    let (_, by_flag) = plan(
        &spec("dict_ratios = 1"),
        &["sae.dict_ratios=2.0".to_string()],
    )
    .unwrap();
    assert_eq!(keys(&by_ratio), keys(&by_size));
    assert_eq!(keys(&by_ratio), keys(&by_flag));
}

// ---------------------------------------------------------------------------------------
// Properties: nothing panics
// ---------------------------------------------------------------------------------------

/// TOML values of every type and edge, as written in a file or a flag.
fn value_token() -> impl Strategy<Value = String> {
    let fixed = prop::sample::select(vec![
        "0",
        "-1",
        "1",
        "2",
        "9223372036854775807",
        "-9223372036854775808",
        "18446744073709551615",
        "1e308",
        "1e309",
        "-1e308",
        "5e-324",
        "1e-300",
        "nan",
        "+nan",
        "-nan",
        "inf",
        "-inf",
        "-0.0",
        "0.0",
        "0.5",
        "1.5",
        "1.0",
        "\"\"",
        "\"x\"",
        "''",
        "[]",
        "[0]",
        "[0, -1]",
        "[1e-300]",
        "[[1]]",
        "[nan]",
        "[inf]",
        "[\"a\", 1]",
        "{}",
        "{a = 1}",
        "true",
        "false",
        "1979-05-27T07:32:00Z",
        "1979-05-27",
        "07:32:00",
        "'a'",
        "toy",
        "relu_l1",
        "topk",
        "n_features",
        "activation_dim",
        "mean",
        "sum",
        "linear",
        "cosine",
        "constant",
        "\"toy\"",
        "\"relu_l1\"",
        "\"topk\"",
        "\"n_features\"",
        "[0.0, 0.0]",
        "[1, 1]",
        "4194305",
        "[4194304]",
        "1e7",
        "0x7fffffffffffffff",
        "\"../x\"",
        "\".hidden\"",
        "\"a/b\"",
    ])
    .prop_map(str::to_string);
    prop_oneof![
        4 => fixed,
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => any::<f64>().prop_map(|x| format!("{x:?}")),
        1 => "[ -~]{0,12}",
    ]
}

/// Every key of the spec, some keys that do not exist, and odd paths.
fn key_path() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "experiment.name",
        "experiment.description",
        "experiment.seed",
        "data.source",
        "data.activation_dim",
        "data.n_features",
        "data.mean_active",
        "data.prob_decay",
        "data.correlated",
        "data.train_samples",
        "data.text_column",
        "data.context_tokens",
        "data.packing",
        "data.eval_fraction",
        "data.max_documents",
        "data.store_dtype",
        "sae.architecture",
        "sae.dict_ratios",
        "sae.ratio_base",
        "sae.dict_sizes",
        "sae.l1",
        "sae.k",
        "train.batch_size",
        "train.steps",
        "train.epochs",
        "train.lr",
        "train.warmup_steps",
        "train.schedule",
        "train.adam_beta1",
        "train.adam_beta2",
        "train.seeds",
        "train.log_every",
        "train.mse",
        "train.l1_warmup_steps",
        "train.resample_every",
        "train.resample_until",
        "eval.samples",
        "eval.mcs_threshold",
        "eval.contexts",
        "model.source",
        "hook.name",
        "analyses.enabled",
        "analyses.l1",
        "analyses.top_k",
        "analyses.logit_lens_max_norm",
        "train.nope",
        "nope.x",
        "train",
        "sae",
        "sae.l1.x",
        "experiment.name.sub",
        "a.b.c.d",
        "x",
    ])
    .prop_map(str::to_string)
}

proptest! {
    #![proptest_config(config(600))]

    /// Arbitrary bytes as a spec file.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        no_spec_environment();
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), &bytes).unwrap();
        let outcome = load_spec(file.path(), &[])
            .and_then(|(spec, origin)| resolve(spec, &origin))
            .and_then(|r| Graph::build(&r).map(|g| (r, g)));
        check_outcome(outcome, false)?;
    }

    /// A valid spec mangled line by line: lines deleted, repeated, swapped, re-valued,
    /// garbage inserted, the text cut short.
    #[test]
    fn mangled_specs_never_panic(
        t in toy(),
        edits in prop::collection::vec((0usize..6, any::<usize>(), value_token(), key_path()), 1..6),
        cut in prop::option::of(any::<usize>()),
    ) {
        let text = render_plain(&t.entries()).text;
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        let mut one_line = true;
        for (op, at, value, key) in edits {
            let i = at % lines.len().max(1);
            match op {
                0 if !lines.is_empty() => { lines.remove(i); }
                1 if !lines.is_empty() => { let l = lines[i].clone(); lines.insert(i, l); }
                2 if !lines.is_empty() => {
                    let j = at / 7 % lines.len();
                    lines.swap(i, j);
                }
                3 => {
                    // Replace a value (or add a key) with any TOML value.
                    let k = key.rsplit('.').next().unwrap().to_string();
                    match lines.get(i).and_then(|l| l.split_once(" = ")) {
                        Some((k, _)) => { let k = k.to_string(); lines[i] = format!("{k} = {value}"); }
                        None => lines.insert(i, format!("{k} = {value}")),
                    }
                }
                4 => lines.insert(i, format!("[{}]", key.rsplit_once('.').map_or(key.as_str(), |p| p.0))),
                _ => {
                    // Garbage may hold a quoted key with a line break in it.
                    one_line = false;
                    lines.insert(i, value);
                }
            }
        }
        let mut text = lines.join("\n");
        if let Some(c) = cut {
            let mut c = c % (text.len() + 1);
            while !text.is_char_boundary(c) { c -= 1; }
            text.truncate(c);
        }
        check_outcome(plan(&text, &[]), one_line)?;
    }

    /// Any `--set` flag on a valid spec: known and unknown keys, any TOML (or not) value.
    #[test]
    fn any_set_flag_never_panics(
        t in toy(),
        flags in prop::collection::vec((key_path(), value_token()), 1..4),
    ) {
        let text = render_plain(&t.entries()).text;
        let sets: Vec<String> = flags.iter().map(|(k, v)| format!("{k}={v}")).collect();
        check_outcome(plan(&text, &sets), true)?;
    }

    /// Arbitrary strings as `--set` flags: no `=`, empty key parts, odd characters.
    #[test]
    fn arbitrary_set_strings_never_panic(
        t in toy(),
        flags in prop::collection::vec(
            prop_oneof![any::<String>(), "[a-z. ]{0,8}=?[ -~]{0,10}", "[.=]{0,6}"], 1..4),
    ) {
        let text = render_plain(&t.entries()).text;
        let one_line = !flags.iter().any(|f| f.contains(['\n', '\r']));
        check_outcome(plan(&text, &flags), one_line)?;
    }
}

// ---------------------------------------------------------------------------------------
// Properties of the canonicaliser itself
// ---------------------------------------------------------------------------------------

/// A JSON-like value with maps written in a chosen order.
#[derive(Debug, Clone)]
enum Cv {
    U(u64),
    I(i64),
    F(f64),
    S(String),
    B(bool),
    L(Vec<Cv>),
    M(Vec<(String, Cv)>),
}

impl Serialize for Cv {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Cv::U(n) => s.serialize_u64(*n),
            Cv::I(n) => s.serialize_i64(*n),
            Cv::F(x) => s.serialize_f64(*x),
            Cv::S(v) => s.serialize_str(v),
            Cv::B(b) => s.serialize_bool(*b),
            Cv::L(items) => items.serialize(s),
            Cv::M(entries) => {
                let mut m = s.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    m.serialize_entry(k, v)?;
                }
                m.end()
            }
        }
    }
}

fn finite() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>().prop_filter("finite", |x| x.is_finite()),
        decimal(0..100_000, 0..12),
        Just(0.0),
        Just(-0.0),
    ]
}

fn cv() -> impl Strategy<Value = Cv> {
    let leaf = prop_oneof![
        any::<u64>().prop_map(Cv::U),
        any::<i64>().prop_map(Cv::I),
        finite().prop_map(Cv::F),
        ".{0,6}".prop_map(Cv::S),
        any::<bool>().prop_map(Cv::B),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Cv::L),
            prop::collection::btree_map("[a-z_]{1,6}", inner, 0..4)
                .prop_map(|m| Cv::M(m.into_iter().collect())),
        ]
    })
}

/// The same value with every map's entries in another order.
fn reorder(v: &Cv, rng: &mut ChaCha8Rng) -> Cv {
    match v {
        Cv::L(items) => Cv::L(items.iter().map(|x| reorder(x, rng)).collect()),
        Cv::M(entries) => {
            let mut e: Vec<(String, Cv)> = entries
                .iter()
                .map(|(k, x)| (k.clone(), reorder(x, rng)))
                .collect();
            e.shuffle(rng);
            Cv::M(e)
        }
        other => other.clone(),
    }
}

fn canonical<P: Serialize>(p: &P) -> String {
    canonical_params(p).expect("finite parameters encode")
}

/// What a float is as a spec value: `x` written in TOML and read back.
fn toml_float(spelled: &str) -> f64 {
    let t: toml::Table = format!("v = {spelled}").parse().expect("valid TOML float");
    match &t["v"] {
        toml::Value::Float(x) => *x,
        toml::Value::Integer(n) => *n as f64,
        other => panic!("{spelled} read as {other:?}"),
    }
}

proptest! {
    #![proptest_config(config(1000))]

    /// Map key order does not matter; encoding is a fixed point.
    #[test]
    fn canonical_form_ignores_key_order(v in cv(), seed in any::<u64>()) {
        let rng = &mut ChaCha8Rng::seed_from_u64(seed);
        let c = canonical(&v);
        prop_assert_eq!(&c, &canonical(&reorder(&v, rng)));
        let value = canonical_value(&v).unwrap();
        prop_assert_eq!(&c, &value.to_string());
        prop_assert_eq!(&c, &canonical(&value));
    }

    /// Every spelling of a float reads back to a value with the same canonical form and key.
    #[test]
    fn canonical_form_ignores_float_spelling(x in finite(), seed in any::<u64>()) {
        let rng = &mut ChaCha8Rng::seed_from_u64(seed);
        let spelled = spell_float(x, rng);
        let read = toml_float(&spelled);
        prop_assert!(read == x, "{} read as {:?}, not {:?}", spelled, read, x);
        prop_assert_eq!(canonical(&read), canonical(&x), "{}", spelled);
        prop_assert_eq!(
            stage_key("s", 1, &read, &[]).unwrap(),
            stage_key("s", 1, &x, &[]).unwrap()
        );
    }

    /// The canonical text and value hold the float exactly (what a manifest records is
    /// what was hashed).
    #[test]
    fn canonical_form_keeps_floats_exact(x in finite()) {
        let text = canonical(&x);
        let read: f64 = text.parse().unwrap();
        prop_assert!(read == x, "{} reads as {:?}, not {:?}", text, read, x);
        prop_assert_eq!(canonical_value(&x).unwrap().as_f64(), Some(x));
    }

    /// Different numbers, strings and types encode differently: the nearest other float
    /// too, and an integer and the equal float (parameters are typed: a field is one or
    /// the other, whatever the spec wrote).
    #[test]
    fn canonical_form_is_injective(
        x in finite(), y in finite(), n in any::<u64>(), m in any::<u64>(),
        a in ".{0,8}", b in ".{0,8}",
    ) {
        if x != y {
            prop_assert_ne!(canonical(&x), canonical(&y));
        }
        if x != 0.0 && x.is_finite() {
            let up = if x > 0.0 { next_up(x) } else { next_down(x) };
            if up.is_finite() {
                prop_assert_ne!(canonical(&x), canonical(&up));
            }
        }
        if n != m {
            prop_assert_ne!(canonical(&n), canonical(&m));
        }
        prop_assert_ne!(canonical(&n), canonical(&(n as f64)));
        if a != b {
            prop_assert_ne!(canonical(&a), canonical(&b));
        }
    }

    /// Stage keys separate stage name, version, parameters and inputs.
    #[test]
    fn stage_keys_are_injective(
        s1 in "[a-z_]{0,6}", s2 in "[a-z_]{0,6}", v1 in 0u32..3, v2 in 0u32..3,
        p1 in cv(), p2 in cv(), i1 in 0usize..3, i2 in 0usize..3,
    ) {
        let inputs: Vec<_> = (0..3).map(|i| stage_key("in", 1, &i, &[]).unwrap()).collect();
        let k1 = stage_key(&s1, v1, &p1, &inputs[..i1]).unwrap();
        let k2 = stage_key(&s2, v2, &p2, &inputs[..i2]).unwrap();
        let same = s1 == s2 && v1 == v2 && canonical(&p1) == canonical(&p2) && i1 == i2;
        prop_assert_eq!(k1 == k2, same);
    }
}

/// Stage parameters are typed: `lr = 1` in a spec is the float 1.0 in the key.
#[test]
fn integer_spelling_of_a_float_parameter_keys_as_the_float() {
    let spec = |lr: &str| {
        format!(
            "[experiment]\nname = \"i\"\n[data]\nsource = \"toy\"\nactivation_dim = 8\n\
             n_features = 16\n[sae]\narchitecture = \"relu_l1\"\ndict_sizes = 16\nl1 = 0\n\
             [train]\nsteps = 10\nlr = {lr}\n"
        )
    };
    let (_, int) = plan(&spec("1"), &[]).unwrap();
    let (_, float) = plan(&spec("1.0"), &[]).unwrap();
    assert_eq!(keys(&int), keys(&float));
}

/// A map and a struct with the same fields in another order encode alike.
#[test]
fn struct_field_order_does_not_matter() {
    #[derive(Serialize)]
    struct A {
        lr: f64,
        steps: u64,
        name: &'static str,
    }
    #[derive(Serialize)]
    struct B {
        name: &'static str,
        steps: u64,
        lr: f64,
    }
    let a = A {
        lr: 1e-3,
        steps: 1000,
        name: "x",
    };
    let b = B {
        name: "x",
        steps: 1000,
        lr: 0.001,
    };
    let mut m = std::collections::HashMap::new();
    m.insert("steps", serde_json::json!(1000));
    m.insert("name", serde_json::json!("x"));
    m.insert("lr", serde_json::json!(0.001));
    assert_eq!(canonical(&a), canonical(&b));
    assert_eq!(canonical(&a), canonical(&m));
}

// ---------------------------------------------------------------------------------------
// Language-model specs, on the tiny GPT-NeoX in ../shared (SAERUN_SHARED_DIR, set by
// .ci/run; skipped without it). Resolving hashes the model files, so fewer cases.
// ---------------------------------------------------------------------------------------

fn shared() -> Option<std::path::PathBuf> {
    std::env::var_os("SAERUN_SHARED_DIR").map(std::path::PathBuf::from)
}

#[derive(Debug, Clone)]
struct Lm {
    layer: u64,
    /// Hooks as wide as d_model (128), so that ratios multiply the right width.
    hook: &'static str,
    context_tokens: u64,
    packing: &'static str,
    dict: Dict,
    l1: Vec<f64>,
    lr: f64,
    steps: u64,
    batch_size: u64,
    seed: u64,
    eval_contexts: u64,
    /// `eval.unembedding`: absent, or spelled out.
    unembedding: Option<&'static str>,
}

fn lm() -> impl Strategy<Value = Lm> {
    (
        (
            0u64..4,
            prop::sample::select(vec![
                "hook_resid_pre",
                "hook_resid_post",
                "hook_attn_out",
                "hook_mlp_out",
            ]),
            2u64..=64,
            prop::sample::select(vec!["truncate", "pack"]),
        ),
        prop_oneof![
            prop::collection::vec((1u32..=16).prop_map(|n| n as f64 / 2.0), 1..=3)
                .prop_map(|r| Dict::Ratios(distinct(r), false)),
            prop::collection::vec(1u64..=1024, 1..=3).prop_map(|s| Dict::Sizes(distinct(s))),
        ],
        prop::collection::vec(
            prop_oneof![Just(0.0), decimal(1..1000, 1..6), 0.0f64..1.0],
            1..=2,
        )
        .prop_map(distinct),
        (
            prop_oneof![Just(1e-3), decimal(1..1000, 3..8)],
            1u64..=10_000,
            1u64..=2048,
            seed_value(),
            1u64..=4096,
        ),
        prop::sample::select(vec![None, Some("f32"), Some("bf16")]),
    )
        .prop_map(
            |(
                (layer, hook, context_tokens, packing),
                dict,
                l1,
                (lr, steps, batch, seed, ec),
                unembedding,
            )| Lm {
                layer,
                hook,
                context_tokens,
                packing,
                dict,
                l1,
                lr,
                steps,
                batch_size: batch,
                seed,
                eval_contexts: ec,
                unembedding,
            },
        )
}

impl Lm {
    fn entries(&self, shared: &std::path::Path) -> Vec<Entry> {
        let e = |section, key, value| Entry {
            section,
            key,
            value,
            omittable: false,
        };
        let s = |v: &str| V::Str(v.to_string());
        let dict = match &self.dict {
            Dict::Ratios(r, _) => e(
                "sae",
                "dict_ratios",
                V::Sweep(r.iter().map(|&x| V::Float(x)).collect()),
            ),
            Dict::Sizes(d) => e(
                "sae",
                "dict_sizes",
                V::Sweep(d.iter().map(|&x| V::Int(x)).collect()),
            ),
        };
        let mut entries = vec![
            e("experiment", "name", s("lm")),
            e("experiment", "seed", V::Int(self.seed)),
            e(
                "model",
                "source",
                s(&format!(
                    "path:{}",
                    shared.join("data/tiny-pythia").display()
                )),
            ),
            e(
                "hook",
                "name",
                s(&format!("blocks.{}.{}", self.layer, self.hook)),
            ),
            e(
                "data",
                "source",
                s(&format!(
                    "path:{}",
                    shared.join("data/tinyshakespeare.txt").display()
                )),
            ),
            e("data", "context_tokens", V::Int(self.context_tokens)),
            e("data", "packing", s(self.packing)),
            e("sae", "architecture", s("relu_l1")),
            dict,
            e(
                "sae",
                "l1",
                V::Sweep(self.l1.iter().map(|&x| V::Float(x)).collect()),
            ),
            e("train", "steps", V::Int(self.steps)),
            e("train", "lr", V::Float(self.lr)),
            e("train", "batch_size", V::Int(self.batch_size)),
            e("eval", "contexts", V::Int(self.eval_contexts)),
        ];
        if let Some(u) = self.unembedding {
            entries.push(e("eval", "unembedding", s(u)));
        }
        entries
    }
}

proptest! {
    #![proptest_config(config(24))]

    /// Equal LM specs (any spelling; a ratio of d_model or its size) give equal keys.
    #[test]
    fn lm_equal_specs_give_equal_keys(t in lm(), style in any::<u64>()) {
        let Some(shared) = shared() else { return Ok(()) };
        let entries = t.entries(&shared);
        let (resolved, graph) = plan_ok(&render_plain(&entries));
        let styled = render_styled(&entries, style);
        let (_, g) = plan_ok(&styled);
        prop_assert_eq!(keys(&g), keys(&graph), "{}", styled);
        let mut by_size = t.clone();
        by_size.dict = Dict::Sizes(
            resolved.grid.iter().map(|p| p.d_sae as u64).collect::<BTreeSet<_>>().into_iter().collect(),
        );
        let (_, g) = plan_ok(&render_plain(&by_size.entries(&shared)));
        prop_assert_eq!(keys(&g), keys(&graph));
    }

    /// A hook, a training, a tokenisation and a loss-precision change each rekey what depends
    /// on them only; spelling out the default `eval.unembedding` rekeys nothing.
    #[test]
    fn lm_changes_rekey_what_depends_on_them(t in lm(), which in 0usize..5) {
        let Some(shared) = shared() else { return Ok(()) };
        use saerun::stages::{ce_baselines, eval_lm, harvest, tokenize};
        let (_, before) = plan_ok(&render_plain(&t.entries(&shared)));
        let mut m = t.clone();
        let (kept, changed): (&[&str], &[&str]) = match which {
            0 => {
                m.layer = (t.layer + 1) % 4;
                (&[tokenize::NAME], &[harvest::NAME, train_sae::NAME, eval_lm::NAME])
            }
            1 => {
                m.lr = next_up(t.lr);
                (
                    &[tokenize::NAME, harvest::NAME, ce_baselines::NAME],
                    &[train_sae::NAME, eval_lm::NAME, match_sizes::NAME],
                )
            }
            2 => {
                m.context_tokens = t.context_tokens + 1;
                (
                    &[],
                    &[tokenize::NAME, harvest::NAME, ce_baselines::NAME, train_sae::NAME, eval_lm::NAME],
                )
            }
            3 => {
                m.unembedding = if t.unembedding == Some("bf16") { None } else { Some("bf16") };
                (
                    &[tokenize::NAME, harvest::NAME, train_sae::NAME, match_sizes::NAME],
                    &[ce_baselines::NAME, eval_lm::NAME],
                )
            }
            _ => {
                m.unembedding = match t.unembedding {
                    None => Some("f32"),
                    Some("f32") => None,
                    other => other,
                };
                (
                    &[tokenize::NAME, harvest::NAME, ce_baselines::NAME, train_sae::NAME, eval_lm::NAME],
                    &[],
                )
            }
        };
        let (_, after) = plan_ok(&render_plain(&m.entries(&shared)));
        prop_assert_eq!(stage_keys(&before, kept), stage_keys(&after, kept), "{:?}", which);
        prop_assert!(
            stage_keys(&before, changed).is_disjoint(&stage_keys(&after, changed)),
            "{:?}: a dependent key did not change", which
        );
    }

    /// Any hook name or layer on the real model: a hook or a clean error, never a panic.
    #[test]
    fn lm_any_hook_never_panics(t in lm(), hook in prop_oneof![
        "blocks\\.[0-9]{1,25}\\.[a-z_.]{0,16}", any::<String>(), Just("hook_embed".to_string()),
    ]) {
        let Some(shared) = shared() else { return Ok(()) };
        let text = render_plain(&t.entries(&shared)).text;
        let flag = format!("hook.name={}", toml::Value::String(hook.clone()));
        check_outcome(plan(&text, &[flag]), !hook.contains(['\n', '\r']))?;
    }
}

/// The first occurrence of each value: sweep lists with a repeated value are rejected.
fn distinct<T: PartialEq>(values: Vec<T>) -> Vec<T> {
    let mut out: Vec<T> = Vec::with_capacity(values.len());
    for v in values {
        if !out.contains(&v) {
            out.push(v);
        }
    }
    out
}
