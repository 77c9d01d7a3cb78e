//! The bad-input corpus: a table of malformed specs, files and environments, each run
//! through the real binary and held to the project's rules:
//!
//! - bad input (a spec key, a model or data file): exit code 2, ONE message naming the
//!   file, key or line and what was expected, no panic, nothing in the cache (no entry, no
//!   temporary directory) and no results directory;
//! - a failing environment (unwritable cache or results directory, full disk): exit code
//!   1, one message naming the path, no panic, a consistent cache (`saerun cache verify`
//!   passes, no temporary directories, no entry without manifest), no run record or partial
//!   run directory, and a later run without the fault completes.
//!
//! Every case runs in its own workspace; the runner checks every case and reports all
//! failures at the end. Most cases use small fixtures written here (the two-layer GPT-NeoX
//! of `tests/fixtures/gpt_neox/parallel` with a word-level tokenizer); the few that need
//! the tiny-pythia checkpoint or its tokenizer are skipped when SAERUN_SHARED_DIR is unset.

mod support;
use support::*;

use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

// ---------------------------------------------------------------- fixtures

/// The two-layer test GPT-NeoX (d_model 64, vocab 512) with a word-level tokenizer whose
/// 200 words all map to ids below the model's vocabulary.
fn write_model(dir: &Path) -> PathBuf {
    let model = dir.join("model");
    std::fs::create_dir_all(&model).unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gpt_neox/parallel");
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture.join(f), model.join(f)).unwrap();
    }
    let mut vocab = HashMap::new();
    vocab.insert("[UNK]".to_string(), 0u32);
    for i in 0..200u32 {
        vocab.insert(word(i as usize), i + 1);
    }
    let wl = tokenizers::models::wordlevel::WordLevel::builder()
        .vocab(vocab.into_iter().collect())
        .unk_token("[UNK]".into())
        .build()
        .unwrap();
    let mut tk = tokenizers::Tokenizer::new(wl);
    tk.with_pre_tokenizer(Some(tokenizers::pre_tokenizers::whitespace::Whitespace));
    tk.save(model.join("tokenizer.json"), false).unwrap();
    model
}

fn word(i: usize) -> String {
    format!("w{i}")
}

/// `n` paragraphs (documents) of `words` words each, separated by blank lines.
fn corpus(n: usize, words: usize) -> String {
    (0..n)
        .map(|d| {
            (0..words)
                .map(|w| word((d * 7 + w * 3) % 200))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// A text spec over `model/` and `data.txt` in the workspace (relative paths).
const TEXT_SPEC: &str = r#"[experiment]
name = "bad_text"
seed = 1

[model]
source = "path:model"
dtype = "f32"
batch_size = 8

[hook]
name = "blocks.1.hook_resid_post"

[data]
source = "path:data.txt"
context_tokens = 8
packing = "pack"
eval_fraction = 0.2

[sae]
architecture = "relu_l1"
dict_sizes = [128]
l1 = 0.01

[train]
batch_size = 32
steps = 10
lr = 1e-3
log_every = 5

[eval]
contexts = 8
"#;

/// `text` with the first `from` replaced by `to`; the fixture must contain `from`, or the
/// case would silently test the unmodified input.
fn edit(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "fixture lacks {from:?}:\n{text}");
    text.replacen(from, to, 1)
}

/// 1-based line of the first line starting with `prefix`.
fn line_of(text: &str, prefix: &str) -> usize {
    text.lines()
        .position(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starts with {prefix:?}"))
        + 1
}

/// The tensors of a safetensors file as (name, dtype, shape, bytes).
type RawTensor = (String, safetensors::Dtype, Vec<usize>, Vec<u8>);
type RawTensors = Vec<RawTensor>;

fn read_tensors(path: &Path) -> RawTensors {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out: RawTensors = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.dtype(), v.shape().to_vec(), v.data().to_vec()))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn write_tensors(path: &Path, tensors: &RawTensors) {
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, dt, shape, data)| {
            let v = safetensors::tensor::TensorView::new(*dt, shape.clone(), data).unwrap();
            (n.clone(), v)
        })
        .collect();
    std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

/// Rewrites `model/model.safetensors` with `f` applied to its tensors.
fn edit_weights(model: &Path, f: impl FnOnce(&mut RawTensors)) {
    let path = model.join("model.safetensors");
    let mut t = read_tensors(&path);
    f(&mut t);
    write_tensors(&path, &t);
}

fn tensor_mut<'a>(t: &'a mut RawTensors, name: &str) -> &'a mut RawTensor {
    t.iter_mut()
        .find(|x| x.0 == name)
        .unwrap_or_else(|| panic!("fixture has no tensor {name}"))
}

/// Rewrites `model/config.json` with `f` applied to its JSON object.
fn edit_config(model: &Path, f: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) {
    let path = model.join("config.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    f(v.as_object_mut().unwrap());
    std::fs::write(&path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

fn write_parquet(path: &Path, column: &str, values: &[String]) {
    use polars::prelude::*;
    let mut df = DataFrame::new(values.len(), vec![Column::new(column.into(), values)]).unwrap();
    let file = std::fs::File::create(path).unwrap();
    ParquetWriter::new(file).finish(&mut df).unwrap();
}

/// A tmpfs mounted for the length of a case (unmounted on drop); `None` where the sandbox
/// does not allow mounting.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, options: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(dir.to_path_buf()))
    }
}

fn remount(dir: &Path, options: &str) {
    let status = Command::new("mount")
        .args(["-o", &format!("remount,{options}")])
        .arg(dir)
        .status()
        .unwrap();
    assert!(status.success(), "remount {} {options}", dir.display());
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

// ---------------------------------------------------------------- the table

/// What a case expects.
#[derive(Clone, Copy, PartialEq)]
enum Expect {
    /// Bad input: exit 2, nothing in the cache, no results directory.
    Input,
    /// A failing environment: exit 1, a consistent cache, no run record; then a run
    /// without the fault completes.
    Env,
}

/// One invocation, built by a case in its workspace.
struct Inv {
    /// `saerun <cmd> <spec> <extra>` for each of `cmds`.
    spec: PathBuf,
    extra: Vec<String>,
    cmds: &'static [&'static str],
    env: Vec<(String, String)>,
    cache: Option<PathBuf>,
    results: Option<PathBuf>,
    /// RLIMIT_FSIZE (bytes) for the child.
    fsize_limit: Option<u64>,
    needles: Vec<String>,
    expect: Expect,
    /// Env cases: undo the fault before the rerun (a remount, say).
    repair: Option<Box<dyn FnOnce()>>,
    /// Keeps a mount alive for the case.
    _mount: Option<Tmpfs>,
}

impl Inv {
    fn new(spec: PathBuf, expect: Expect, needles: &[&str]) -> Inv {
        Inv {
            spec,
            extra: Vec::new(),
            cmds: &["validate", "run"],
            env: Vec::new(),
            cache: None,
            results: None,
            fsize_limit: None,
            needles: needles.iter().map(|s| s.to_string()).collect(),
            expect,
            repair: None,
            _mount: None,
        }
    }
    fn needle(mut self, n: impl Into<String>) -> Inv {
        self.needles.push(n.into());
        self
    }
    fn set(mut self, s: &str) -> Inv {
        self.extra.push("--set".into());
        self.extra.push(s.into());
        self
    }
    fn run_only(mut self) -> Inv {
        self.cmds = &["run"];
        self
    }
}

/// A case's workspace and helpers to write its inputs.
struct Ctx<'a> {
    ws: &'a Workspace,
    shared: Option<&'a Path>,
}

impl Ctx<'_> {
    fn path(&self, rel: &str) -> PathBuf {
        self.ws.path().join(rel)
    }
    fn spec(&self, text: &str) -> PathBuf {
        self.ws.write("spec.toml", text)
    }
    fn toy(&self) -> String {
        tiny_toy_spec("bad", "[0.05]", 100)
    }
    /// A toy spec rejected with `needles` (each invocation also checks the file name).
    fn toy_bad(&self, text: &str, needles: &[&str]) -> Inv {
        Inv::new(self.spec(text), Expect::Input, needles).needle("spec.toml")
    }
    /// Inputs rejected at validation with `needles` naming the file at fault.
    fn file_bad(&self, text: &str, needles: &[&str]) -> Inv {
        Inv::new(self.spec(text), Expect::Input, needles)
    }
    /// Writes the test model and a corpus of `n_docs` documents; returns the model dir.
    fn text_inputs(&self, n_docs: usize, words: usize) -> PathBuf {
        std::fs::write(self.path("data.txt"), corpus(n_docs, words)).unwrap();
        write_model(self.ws.path())
    }
    /// The text spec over the test model, with `data.txt` holding `corpus(30, 40)`.
    fn text(&self) -> (String, PathBuf) {
        (TEXT_SPEC.to_string(), self.text_inputs(30, 40))
    }
    /// A copy of tiny-pythia's directory (weights and config linked, tokenizer copied).
    fn pythia(&self) -> PathBuf {
        let src = self.shared.expect("shared case").join("data/tiny-pythia");
        let dir = self.path("pythia");
        std::fs::create_dir_all(&dir).unwrap();
        for f in ["config.json", "model.safetensors"] {
            std::os::unix::fs::symlink(src.join(f), dir.join(f)).unwrap();
        }
        std::fs::copy(src.join("tokenizer.json"), dir.join("tokenizer.json")).unwrap();
        dir
    }
    /// TEXT_SPEC pointed at tiny-pythia (4 layers, d_model 128) and `data`.
    fn pythia_spec(&self, data: &str) -> String {
        self.pythia();
        let t = edit(TEXT_SPEC, "path:model", "path:pythia");
        edit(&t, "path:data.txt", data)
    }
}

type Build = Box<dyn Fn(&Ctx) -> Inv>;

struct Case {
    name: &'static str,
    needs_shared: bool,
    build: Build,
}

fn case(name: &'static str, build: impl Fn(&Ctx) -> Inv + 'static) -> Case {
    Case {
        name,
        needs_shared: false,
        build: Box::new(build),
    }
}

fn shared_case(name: &'static str, build: impl Fn(&Ctx) -> Inv + 'static) -> Case {
    Case {
        name,
        needs_shared: true,
        build: Box::new(build),
    }
}

fn cases() -> Vec<Case> {
    use Expect::*;
    vec![
        // ------------------------------------------------------------ specs
        case("spec: missing file", |c| {
            Inv::new(
                c.path("nope.toml"),
                Input,
                &["cannot read spec file", "nope.toml", "No such file"],
            )
        }),
        case("spec: invalid TOML", |c| {
            let t = edit(&c.toy(), "steps = 100", "steps = = 100");
            let line = line_of(&t, "steps");
            c.toy_bad(&t, &["invalid TOML", &format!("line {line}")])
        }),
        case("spec: unknown key", |c| {
            let t = edit(&c.toy(), "lr = 3e-3", "lr = 3e-3\nlearning_rate = 0.1");
            let line = line_of(&t, "learning_rate");
            c.toy_bad(
                &t,
                &[
                    "`train.learning_rate`",
                    &format!("line {line}"),
                    "unknown key; expected one of",
                    "lr",
                ],
            )
        }),
        case("spec: unknown section", |c| {
            let t = format!("{}\n[modle]\nname = \"x\"\n", c.toy());
            c.toy_bad(&t, &["`modle`", "unknown key", "model"])
        }),
        case("spec: wrong type", |c| {
            let t = edit(&c.toy(), "batch_size = 256", "batch_size = \"big\"");
            let line = line_of(&t, "batch_size");
            c.toy_bad(
                &t,
                &[
                    "`train.batch_size`",
                    &format!("line {line}"),
                    "found string \"big\", expected usize",
                ],
            )
        }),
        case("spec: wrong type in a sweep list", |c| {
            let t = tiny_toy_spec("bad", "[0.05, \"x\"]", 100);
            c.toy_bad(&t, &["`sae.l1.1`", "found string \"x\", expected f64"])
        }),
        case("spec: empty sweep list", |c| {
            let t = tiny_toy_spec("bad", "[]", 100);
            c.toy_bad(&t, &["`sae.l1`", "non-empty"])
        }),
        case("spec: duplicate sweep value", |c| {
            let t = tiny_toy_spec("bad", "[0.05, 0.01, 0.05]", 100);
            let line = line_of(&t, "l1 =");
            c.toy_bad(
                &t,
                &[
                    "`sae.l1`",
                    &format!("line {line}"),
                    "0.05 appears twice",
                    "distinct values",
                ],
            )
        }),
        case("spec: duplicate seed", |c| {
            let t = edit(&c.toy(), "lr = 3e-3", "lr = 3e-3\nseeds = [1, 1]");
            c.toy_bad(&t, &["`train.seeds`", "1 appears twice"])
        }),
        case("spec: zero dictionary size", |c| {
            let t = edit(&c.toy(), "dict_ratios = [1, 2]", "dict_sizes = [64, 0]");
            c.toy_bad(&t, &["`sae.dict_sizes`", "must be > 0, got 0"])
        }),
        case("spec: negative dictionary ratio", |c| {
            let t = edit(&c.toy(), "dict_ratios = [1, 2]", "dict_ratios = [1, -2]");
            c.toy_bad(&t, &["`sae.dict_ratios`", "must be > 0, got -2"])
        }),
        case("spec: negative size (unsigned key)", |c| {
            let t = edit(&c.toy(), "activation_dim = 32", "activation_dim = -32");
            c.toy_bad(&t, &["`data.activation_dim`", "-32"])
        }),
        case("spec: zero activation_dim", |c| {
            let t = edit(&c.toy(), "activation_dim = 32", "activation_dim = 0");
            c.toy_bad(&t, &["`data.activation_dim`", "must be > 0"])
        }),
        case("spec: resample_until without resample_every", |c| {
            let t = edit(&c.toy(), "lr = 3e-3", "lr = 3e-3\nresample_until = 50");
            c.toy_bad(
                &t,
                &["`train.resample_until`", "needs `train.resample_every`"],
            )
        }),
        case("spec: zero lr", |c| {
            let t = edit(&c.toy(), "lr = 3e-3", "lr = 0");
            c.toy_bad(&t, &["`train.lr`", "must be > 0, got 0"])
        }),
        case("spec: negative lr", |c| {
            let t = edit(&c.toy(), "lr = 3e-3", "lr = -0.001");
            let line = line_of(&t, "lr =");
            c.toy_bad(
                &t,
                &[
                    "`train.lr`",
                    &format!("line {line}"),
                    "must be > 0, got -0.001",
                ],
            )
        }),
        case("spec: zero batch", |c| {
            let t = edit(&c.toy(), "batch_size = 256", "batch_size = 0");
            c.toy_bad(&t, &["`train.batch_size`", "must be > 0"])
        }),
        case("spec: negative batch", |c| {
            let t = edit(&c.toy(), "batch_size = 256", "batch_size = -256");
            c.toy_bad(&t, &["`train.batch_size`", "-256", "expected usize"])
        }),
        case("spec: missing [experiment] section", |c| {
            let t = c.toy();
            let t = t[t.find("[data]").unwrap()..].to_string();
            c.toy_bad(&t, &["`experiment`", "is required but missing"])
        }),
        case("spec: zero steps", |c| {
            let t = edit(&c.toy(), "steps = 100", "steps = 0");
            c.toy_bad(&t, &["`train.steps`", "must be > 0"])
        }),
        case("spec: warm-up longer than training", |c| {
            let t = edit(&c.toy(), "warmup_steps = 50", "warmup_steps = 500");
            c.toy_bad(
                &t,
                &[
                    "`train.warmup_steps`",
                    "≤ the number of steps (100), got 500",
                ],
            )
        }),
        case("spec: k > d_sae", |c| {
            let t = edit(
                &c.toy(),
                "architecture = \"relu_l1\"",
                "architecture = \"topk\"",
            );
            let t = edit(&t, "dict_ratios = [1, 2]", "dict_sizes = [16, 32]");
            let t = edit(&t, "l1 = [0.05]", "k = [4, 20]");
            c.toy_bad(&t, &["`sae.k`", "k = 20 exceeds a dictionary size"])
        }),
        case("spec: unknown architecture", |c| {
            let t = edit(&c.toy(), "\"relu_l1\"", "\"gated\"");
            c.toy_bad(
                &t,
                &[
                    "`sae.architecture`",
                    "unknown value \"gated\"",
                    "relu_l1",
                    "topk",
                ],
            )
        }),
        case("spec: l1 given for topk", |c| {
            let t = edit(&c.toy(), "\"relu_l1\"", "\"topk\"");
            let t = edit(&t, "l1 = [0.05]", "l1 = [0.05]\nk = 4");
            c.toy_bad(&t, &["`sae.l1`", "does not apply to architecture \"topk\""])
        }),
        case("spec: missing [sae] section", |c| {
            let t = c.toy();
            let start = t.find("[sae]").unwrap();
            let end = t.find("[train]").unwrap();
            let t = format!("{}{}", &t[..start], &t[end..]);
            c.toy_bad(&t, &["`sae`", "is required but missing"])
        }),
        case("spec: missing required key", |c| {
            let t = edit(&c.toy(), "source = \"toy\"\n", "");
            c.toy_bad(&t, &["`data.source`", "is required but missing"])
        }),
        case("spec: text data without [model]", |c| {
            let (t, _) = c.text();
            let start = t.find("[model]").unwrap();
            let end = t.find("[hook]").unwrap();
            let t = format!("{}{}", &t[..start], &t[end..]);
            c.toy_bad(&t, &["`model`", "needs a [model] section"])
        }),
        case("spec: conflicting steps and epochs", |c| {
            let t = edit(&c.toy(), "steps = 100", "epochs = 2\nsteps = 100");
            c.toy_bad(&t, &["`train`", "exactly one of `steps` or `epochs`"])
        }),
        case("spec: conflicting dict_ratios and dict_sizes", |c| {
            let t = edit(
                &c.toy(),
                "dict_ratios = [1, 2]",
                "dict_ratios = [1, 2]\ndict_sizes = [64]",
            );
            c.toy_bad(
                &t,
                &["`sae`", "exactly one of `dict_ratios`", "`dict_sizes`"],
            )
        }),
        case("spec: toy data with a [model] section", |c| {
            let t = format!("{}\n[model]\nsource = \"path:model\"\n", c.toy());
            c.toy_bad(&t, &["`model`", "toy data is not read from a model"])
        }),
        case("spec: text key on toy data", |c| {
            let t = edit(
                &c.toy(),
                "train_samples = 16384",
                "train_samples = 16384\ncontext_tokens = 8",
            );
            c.toy_bad(
                &t,
                &["`data.context_tokens`", "applies only to text sources"],
            )
        }),
        case("spec: unsupported data source", |c| {
            let t = edit(&c.toy(), "source = \"toy\"", "source = \"s3://bucket\"");
            c.toy_bad(
                &t,
                &[
                    "`data.source`",
                    "unsupported data source",
                    "expected \"toy\"",
                ],
            )
        }),
        case("spec: bad hook name", |c| {
            let (t, _) = c.text();
            let t = edit(&t, "blocks.1.hook_resid_post", "blocks.1.hook_resid_middle");
            c.toy_bad(
                &t,
                &[
                    "`hook.name`",
                    "unknown hook \"blocks.1.hook_resid_middle\"",
                    "valid hooks",
                ],
            )
        }),
        case("spec: hook layer out of range", |c| {
            let (t, _) = c.text();
            let t = edit(&t, "blocks.1.hook_resid_post", "blocks.2.hook_resid_post");
            c.toy_bad(
                &t,
                &[
                    "`hook.name`",
                    "layer 2 is out of range",
                    "the model has 2 layers",
                ],
            )
        }),
        case("spec: unknown model dtype", |c| {
            let (t, _) = c.text();
            let t = edit(&t, "dtype = \"f32\"", "dtype = \"f8\"");
            c.toy_bad(
                &t,
                &["`model.dtype`", "expected \"f32\", \"f16\" or \"bf16\""],
            )
        }),
        case("spec: context_tokens too small", |c| {
            let (t, _) = c.text();
            let t = edit(&t, "context_tokens = 8", "context_tokens = 1");
            c.toy_bad(&t, &["`data.context_tokens`", "must be ≥ 2, got 1"])
        }),
        case("--set without '='", |c| {
            Inv::new(
                c.spec(&c.toy()),
                Input,
                &["--set nonsense", "expected `section.key=value`"],
            )
            .set("nonsense")
        }),
        case("--set with an empty key part", |c| {
            Inv::new(
                c.spec(&c.toy()),
                Input,
                &["--set train..lr=1", "dotted key"],
            )
            .set("train..lr=1")
        }),
        case("--set with a wrong type", |c| {
            Inv::new(
                c.spec(&c.toy()),
                Input,
                &["--set train.steps=many", "`train.steps`", "string \"many\""],
            )
            .set("train.steps=many")
        }),
        case("--set with a bad value", |c| {
            Inv::new(
                c.spec(&c.toy()),
                Input,
                &["--set train.lr=0", "`train.lr`", "must be > 0"],
            )
            .set("train.lr=0")
        }),
        case("--set unknown key", |c| {
            Inv::new(
                c.spec(&c.toy()),
                Input,
                &["--set train.lrate=0.1", "`train.lrate`", "unknown key"],
            )
            .set("train.lrate=0.1")
        }),
        case("env override with a bad value", |c| {
            let mut inv = Inv::new(
                c.spec(&c.toy()),
                Input,
                &[
                    "environment variable SAERUN_TRAIN__LR",
                    "`train.lr`",
                    "must be > 0, got -1",
                ],
            );
            inv.env.push(("SAERUN_TRAIN__LR".into(), "-1".into()));
            inv
        }),
        case("env override with a wrong type", |c| {
            let mut inv = Inv::new(
                c.spec(&c.toy()),
                Input,
                &[
                    "environment variable SAERUN_TRAIN__BATCH_SIZE",
                    "`train.batch_size`",
                    "string \"big\"",
                ],
            );
            inv.env
                .push(("SAERUN_TRAIN__BATCH_SIZE".into(), "big".into()));
            inv
        }),
        case("env override of an unknown key", |c| {
            let mut inv = Inv::new(
                c.spec(&c.toy()),
                Input,
                &["SAERUN_TRAIN__LRATE", "`train.lrate`", "unknown key"],
            );
            inv.env.push(("SAERUN_TRAIN__LRATE".into(), "0.1".into()));
            inv
        }),
        // ------------------------------------------------------------ model files
        case("model: directory missing", |c| {
            let (t, _) = c.text();
            let t = edit(&t, "path:model", "path:no-such-model");
            c.file_bad(
                &t,
                &[
                    "model.source `path:no-such-model`",
                    "does not exist",
                    "config.json",
                ],
            )
        }),
        case("model: no weights file", |c| {
            let (t, m) = c.text();
            std::fs::remove_file(m.join("model.safetensors")).unwrap();
            c.file_bad(
                &t,
                &[
                    "model.source `path:model`",
                    "lacks model.safetensors",
                    "index.json",
                ],
            )
        }),
        case("model: empty safetensors", |c| {
            let (t, m) = c.text();
            std::fs::write(m.join("model.safetensors"), b"").unwrap();
            c.file_bad(
                &t,
                &["model/model.safetensors", "not a valid safetensors file"],
            )
        }),
        case("model: truncated safetensors", |c| {
            let (t, m) = c.text();
            let p = m.join("model.safetensors");
            let bytes = std::fs::read(&p).unwrap();
            std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
            c.file_bad(
                &t,
                &["model/model.safetensors", "not a valid safetensors file"],
            )
        }),
        case("model: corrupt safetensors header", |c| {
            let (t, m) = c.text();
            let p = m.join("model.safetensors");
            let mut bytes = std::fs::read(&p).unwrap();
            for b in &mut bytes[8..40] {
                *b = b'#';
            }
            std::fs::write(&p, &bytes).unwrap();
            c.file_bad(
                &t,
                &["model/model.safetensors", "not a valid safetensors file"],
            )
        }),
        case("model: tensor with the wrong shape", |c| {
            let (t, m) = c.text();
            edit_weights(&m, |w| {
                let x = tensor_mut(w, "gpt_neox.layers.1.attention.dense.weight");
                x.2 = vec![64, 32];
                x.3.truncate(64 * 32 * 4);
            });
            c.file_bad(
                &t,
                &[
                    "model/model.safetensors",
                    "gpt_neox.layers.1.attention.dense.weight",
                    "shape [64, 32]",
                    "expected [64, 64]",
                ],
            )
        }),
        case("model: tensor with the wrong dtype", |c| {
            let (t, m) = c.text();
            edit_weights(&m, |w| {
                tensor_mut(w, "gpt_neox.final_layer_norm.bias").1 = safetensors::Dtype::I32;
            });
            c.file_bad(
                &t,
                &[
                    "model/model.safetensors",
                    "gpt_neox.final_layer_norm.bias",
                    "dtype I32 is not a float type",
                ],
            )
        }),
        case("model: tensor missing", |c| {
            let (t, m) = c.text();
            edit_weights(&m, |w| {
                w.retain(|x| x.0 != "gpt_neox.layers.0.mlp.dense_4h_to_h.bias")
            });
            c.file_bad(
                &t,
                &[
                    "gpt_neox.layers.0.mlp.dense_4h_to_h.bias",
                    "missing from the checkpoint",
                ],
            )
        }),
        case("model: config.json missing a field", |c| {
            let (t, m) = c.text();
            edit_config(&m, |cfg| {
                cfg.remove("hidden_size");
            });
            c.file_bad(&t, &["model/config.json", "missing field hidden_size"])
        }),
        case("model: config.json with an unsupported activation", |c| {
            let (t, m) = c.text();
            edit_config(&m, |cfg| {
                cfg.insert("hidden_act".into(), "swish".into());
            });
            c.file_bad(
                &t,
                &[
                    "model/config.json",
                    "hidden_act \"swish\" is not supported",
                    "expected \"gelu\"",
                ],
            )
        }),
        case("model: config.json not JSON", |c| {
            let (t, m) = c.text();
            std::fs::write(m.join("config.json"), "{\"hidden_size\": 64,").unwrap();
            c.file_bad(&t, &["model/config.json", "not valid JSON"])
        }),
        case("model: config.json of another architecture", |c| {
            let (t, m) = c.text();
            edit_config(&m, |cfg| {
                cfg.insert("model_type".into(), "llama".into());
            });
            c.file_bad(
                &t,
                &["model/config.json", "model_type is \"llama\"", "gpt_neox"],
            )
        }),
        case("model: config.json disagrees with the weights", |c| {
            let (t, m) = c.text();
            edit_config(&m, |cfg| {
                cfg.insert("intermediate_size".into(), 128.into());
            });
            c.file_bad(
                &t,
                &[
                    "gpt_neox.layers.0.mlp.dense_h_to_4h.weight",
                    "shape [256, 64]",
                    "expected [128, 64]",
                ],
            )
        }),
        case("model: corrupt tokenizer.json", |c| {
            let (t, m) = c.text();
            let p = m.join("tokenizer.json");
            let text = std::fs::read_to_string(&p).unwrap();
            std::fs::write(&p, &text[..text.len() / 2]).unwrap();
            c.file_bad(&t, &["model/tokenizer.json", "not a valid tokenizer.json"])
        }),
        // ------------------------------------------------------------ data files
        case("data: file missing", |c| {
            let (t, _) = c.text();
            let t = edit(&t, "path:data.txt", "path:missing.txt");
            c.file_bad(&t, &["data.source `path:missing.txt`", "does not exist"])
        }),
        case("data: unsupported file type", |c| {
            let (t, _) = c.text();
            std::fs::write(c.path("data.csv"), "text\nhello\n").unwrap();
            let t = edit(&t, "path:data.txt", "path:data.csv");
            c.file_bad(
                &t,
                &[
                    "data.csv",
                    "unsupported data file type",
                    "accepted extensions: .parquet",
                ],
            )
        }),
        case("data: Parquet without the text column", |c| {
            let (t, _) = c.text();
            let docs: Vec<String> = (0..30).map(|i| corpus(1, 40 + i)).collect();
            write_parquet(&c.path("data.parquet"), "content", &docs);
            let t = edit(&t, "path:data.txt", "path:data.parquet");
            Inv::new(
                c.spec(&t),
                Input,
                &[
                    "data.parquet",
                    "no column \"text\"",
                    "columns are: \"content\"",
                ],
            )
            .run_only()
        }),
        case("data: Parquet column of numbers", |c| {
            let (t, _) = c.text();
            use polars::prelude::*;
            let mut df =
                DataFrame::new(3, vec![Column::new("text".into(), &[1i64, 2, 3])]).unwrap();
            ParquetWriter::new(std::fs::File::create(c.path("data.parquet")).unwrap())
                .finish(&mut df)
                .unwrap();
            let t = edit(&t, "path:data.txt", "path:data.parquet");
            Inv::new(
                c.spec(&t),
                Input,
                &["data.parquet", "column \"text\"", "expected strings"],
            )
            .run_only()
        }),
        case("data: corrupt Parquet", |c| {
            let (t, _) = c.text();
            std::fs::write(c.path("data.parquet"), b"PAR1 this is not parquet").unwrap();
            let t = edit(&t, "path:data.txt", "path:data.parquet");
            Inv::new(
                c.spec(&t),
                Input,
                &["data.parquet", "not a readable Parquet file"],
            )
            .run_only()
        }),
        case("data: JSONL with a broken line", |c| {
            let (t, _) = c.text();
            let mut lines: Vec<String> = (0..30)
                .map(|i| serde_json::json!({ "text": corpus(1, 40 + i) }).to_string())
                .collect();
            lines[6] = "{\"text\": \"unterminated".into();
            std::fs::write(c.path("data.jsonl"), lines.join("\n")).unwrap();
            let t = edit(&t, "path:data.txt", "path:data.jsonl");
            Inv::new(c.spec(&t), Input, &["data.jsonl:7", "not valid JSON"]).run_only()
        }),
        case("data: JSONL line without the field", |c| {
            let (t, _) = c.text();
            let mut lines: Vec<String> = (0..30)
                .map(|i| serde_json::json!({ "text": corpus(1, 40 + i) }).to_string())
                .collect();
            lines[3] = serde_json::json!({ "body": "x" }).to_string();
            std::fs::write(c.path("data.jsonl"), lines.join("\n")).unwrap();
            let t = edit(&t, "path:data.txt", "path:data.jsonl");
            Inv::new(
                c.spec(&t),
                Input,
                &["data.jsonl:4", "no field \"text\"", "fields are: \"body\""],
            )
            .run_only()
        }),
        case("data: invalid UTF-8", |c| {
            let (t, _) = c.text();
            let mut bytes = corpus(30, 40).into_bytes();
            let at = bytes.iter().position(|&b| b == b'\n').unwrap() + 5;
            bytes[at] = 0xff;
            std::fs::write(c.path("data.txt"), &bytes).unwrap();
            Inv::new(
                c.spec(&t),
                Input,
                &[
                    "data.txt",
                    &format!("not valid UTF-8 at byte {at} (line 3)"),
                ],
            )
            .run_only()
        }),
        case("data: empty file", |c| {
            let (t, _) = c.text();
            std::fs::write(c.path("data.txt"), "\n\n").unwrap();
            Inv::new(c.spec(&t), Input, &["data.txt", "holds no documents"]).run_only()
        }),
        case("data: fewer documents than needed", |c| {
            let (t, _) = c.text();
            std::fs::write(c.path("data.txt"), corpus(1, 400)).unwrap();
            Inv::new(
                c.spec(&t),
                Input,
                &["path:data.txt", "1 document(s)", "at least 2 are needed"],
            )
            .run_only()
        }),
        case("data: documents shorter than a context", |c| {
            let (t, _) = c.text();
            std::fs::write(c.path("data.txt"), corpus(30, 5)).unwrap();
            let t = edit(&t, "packing = \"pack\"", "packing = \"truncate\"");
            Inv::new(
                c.spec(&t),
                Input,
                &[
                    "path:data.txt",
                    "the longest has 5 tokens",
                    "a context has 8 tokens",
                ],
            )
            .run_only()
        }),
        // ------------------------------------------------------------ with tiny-pythia
        shared_case("pythia: hook layer out of range", |c| {
            let t = c.pythia_spec("path:data.txt");
            std::fs::write(c.path("data.txt"), corpus(30, 40)).unwrap();
            let t = edit(&t, "blocks.1.hook_resid_post", "blocks.4.hook_resid_post");
            c.toy_bad(
                &t,
                &[
                    "`hook.name`",
                    "layer 4 is out of range",
                    "the model has 4 layers",
                ],
            )
        }),
        shared_case("pythia: truncated tokenizer.json", |c| {
            let t = c.pythia_spec("path:data.txt");
            std::fs::write(c.path("data.txt"), corpus(30, 40)).unwrap();
            let p = c.path("pythia/tokenizer.json");
            let text = std::fs::read(&p).unwrap();
            std::fs::write(&p, &text[..text.len() / 3]).unwrap();
            c.file_bad(&t, &["pythia/tokenizer.json", "not a valid tokenizer.json"])
        }),
        shared_case("pythia: Shakespeare lines shorter than a context", |c| {
            let shake = c.shared.unwrap().join("data/tinyshakespeare.txt");
            let t = c.pythia_spec(&format!("path:{}", shake.display()));
            let t = edit(&t, "packing = \"pack\"", "packing = \"truncate\"");
            let t = edit(&t, "context_tokens = 8", "context_tokens = 4000");
            Inv::new(
                c.spec(&t),
                Input,
                &[
                    "tinyshakespeare.txt",
                    "none of the",
                    "a context has 4000 tokens",
                ],
            )
            .run_only()
        }),
        shared_case("pythia: one Shakespeare document", |c| {
            let shake = c.shared.unwrap().join("data/tinyshakespeare.txt");
            let text = std::fs::read_to_string(shake).unwrap();
            let first = text.split("\n\n").next().unwrap();
            std::fs::write(c.path("one.txt"), first).unwrap();
            let t = c.pythia_spec("path:one.txt");
            Inv::new(c.spec(&t), Input, &["path:one.txt", "1 document(s)"]).run_only()
        }),
        // ------------------------------------------------------------ environment
        case("env: cache dir under a regular file", |c| {
            std::fs::write(c.path("blocker"), "a file, not a directory").unwrap();
            let mut inv = Inv::new(c.spec(&c.toy()), Env, &["blocker/cache"]);
            inv.cache = Some(c.path("blocker/cache"));
            let blocker = c.path("blocker");
            inv.repair = Some(Box::new(move || std::fs::remove_file(&blocker).unwrap()));
            inv
        }),
        case("env: results dir under a regular file", |c| {
            std::fs::write(c.path("blocker"), "a file, not a directory").unwrap();
            let mut inv = Inv::new(c.spec(&c.toy()), Env, &["blocker/results"]).run_only();
            inv.results = Some(c.path("blocker/results"));
            let blocker = c.path("blocker");
            inv.repair = Some(Box::new(move || std::fs::remove_file(&blocker).unwrap()));
            inv
        }),
        case("env: file size limit (RLIMIT_FSIZE)", |c| {
            let mut inv = Inv::new(
                c.spec(&c.toy()),
                Env,
                &[
                    "cannot write",
                    "cache/v1/tmp/",
                    "data.safetensors",
                    "File too large",
                ],
            )
            .run_only();
            inv.fsize_limit = Some(256 << 10);
            inv
        }),
        case("env: full disk (tmpfs)", |c| {
            let dir = c.path("small");
            let Some(mount) = Tmpfs::mount(&dir, "size=1m") else {
                eprintln!("note: cannot mount a tmpfs here; the full-disk case falls back to RLIMIT_FSIZE only");
                let mut inv =
                    Inv::new(c.spec(&c.toy()), Env, &["cannot write", "File too large"]).run_only();
                inv.fsize_limit = Some(64 << 10);
                return inv;
            };
            let mut inv = Inv::new(
                c.spec(&c.toy()),
                Env,
                &["cannot write", "small/cache/v1/tmp/", "No space left"],
            )
            .run_only();
            inv.cache = Some(dir.join("cache"));
            let target = mount.0.clone();
            inv.repair = Some(Box::new(move || remount(&target, "size=64m")));
            inv._mount = Some(mount);
            inv
        }),
        case("env: read-only cache (tmpfs)", |c| {
            let dir = c.path("ro");
            let Some(mount) = Tmpfs::mount(&dir, "ro,size=1m") else {
                eprintln!("note: cannot mount a tmpfs here; the read-only case uses a cache under a regular file");
                std::fs::write(c.path("ro-file"), "x").unwrap();
                let mut inv = Inv::new(c.spec(&c.toy()), Env, &["ro-file/cache"]);
                inv.cache = Some(c.path("ro-file/cache"));
                let f = c.path("ro-file");
                inv.repair = Some(Box::new(move || std::fs::remove_file(&f).unwrap()));
                return inv;
            };
            let mut inv = Inv::new(
                c.spec(&c.toy()),
                Env,
                &["ro/cache", "Read-only file system"],
            );
            inv.cache = Some(dir.join("cache"));
            let target = mount.0.clone();
            inv.repair = Some(Box::new(move || remount(&target, "rw,size=64m")));
            inv._mount = Some(mount);
            inv
        }),
    ]
}

// ---------------------------------------------------------------- the runner

fn command(ws: &Workspace, inv: &Inv, cmd_args: &[&str], limited: bool) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_saerun"));
    for (k, _) in std::env::vars() {
        if k.starts_with("SAERUN_") {
            c.env_remove(k);
        }
    }
    c.args(cmd_args)
        .arg("--cache-dir")
        .arg(cache_of(ws, inv))
        .arg("--results-dir")
        .arg(results_of(ws, inv))
        .current_dir(ws.path())
        // Panics must show as panics, never be hidden behind an abort.
        .env("RUST_BACKTRACE", "0");
    if limited {
        for (k, v) in &inv.env {
            c.env(k, v);
        }
        if let Some(limit) = inv.fsize_limit {
            // SAFETY: only async-signal-safe libc calls between fork and exec.
            unsafe {
                c.pre_exec(move || {
                    // Writes past the limit then fail with EFBIG instead of killing the
                    // process with SIGXFSZ: the program's error path is what is tested.
                    libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                    let lim = libc::rlimit {
                        rlim_cur: limit,
                        rlim_max: limit,
                    };
                    if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
    }
    c
}

fn cache_of(ws: &Workspace, inv: &Inv) -> PathBuf {
    inv.cache.clone().unwrap_or_else(|| ws.cache())
}

fn results_of(ws: &Workspace, inv: &Inv) -> PathBuf {
    inv.results.clone().unwrap_or_else(|| ws.results())
}

fn dir_entries(p: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(p)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// Problems with the cache: entries without manifest, leftover temporary directories,
/// entries moved aside as corrupt, or a failing `saerun cache verify`.
fn cache_problems(ws: &Workspace, inv: &Inv) -> Vec<String> {
    let mut out = Vec::new();
    let root = cache_of(ws, inv).join("v1");
    for stage in dir_entries(&root.join("entries")) {
        for entry in dir_entries(&stage) {
            if !entry.join("manifest.json").is_file() {
                out.push(format!("cache entry without manifest: {}", entry.display()));
            }
        }
    }
    for sub in ["tmp", "corrupt"] {
        let left = dir_entries(&root.join(sub));
        if !left.is_empty() {
            out.push(format!("cache {sub}/ not empty: {left:?}"));
        }
    }
    if root.is_dir() {
        let verify = command(ws, inv, &["cache", "verify"], false)
            .output()
            .unwrap();
        if !verify.status.success() {
            out.push(format!(
                "`saerun cache verify` failed: {}{}",
                stdout(&verify),
                stderr(&verify)
            ));
        }
    }
    out
}

fn entries(ws: &Workspace, inv: &Inv) -> usize {
    dir_entries(&cache_of(ws, inv).join("v1/entries"))
        .iter()
        .map(|s| dir_entries(s).len())
        .sum()
}

/// Everything wrong with one invocation's outcome.
fn check_output(out: &Output, inv: &Inv, code: i32) -> Vec<String> {
    let mut problems = Vec::new();
    let err = stderr(out);
    if out.status.code() != Some(code) {
        problems.push(format!("exit status {:?}, expected {code}", out.status));
    }
    if err.contains("panicked") || err.contains("RUST_BACKTRACE") {
        problems.push("panicked".into());
    }
    let messages: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    if messages.len() != 1 {
        problems.push(format!("{} `error:` lines, expected one", messages.len()));
    }
    // The message is one line: nothing but progress lines ("[ 1/9] ...") around it.
    let other: Vec<&str> = err
        .lines()
        .filter(|l| !l.starts_with("error:") && !l.trim().is_empty())
        .filter(|l| !l.trim_start().starts_with('['))
        .collect();
    if !other.is_empty() {
        problems.push(format!("stray stderr lines: {other:?}"));
    }
    let message = messages.first().copied().unwrap_or("");
    for n in &inv.needles {
        if !message.contains(n.as_str()) {
            problems.push(format!("message lacks {n:?}"));
        }
    }
    if !problems.is_empty() {
        problems.push(format!("stderr was:\n{err}"));
    }
    problems
}

/// Runs one case; its failures, each prefixed by the case name.
fn run_case(case: &Case, shared: Option<&Path>) -> Vec<String> {
    let ws = Workspace::new();
    let ctx = Ctx { ws: &ws, shared };
    let mut inv = (case.build)(&ctx);
    let mut problems = Vec::new();
    let spec = inv.spec.to_str().unwrap().to_string();
    for cmd in inv.cmds {
        let mut args = vec![*cmd, spec.as_str()];
        args.extend(inv.extra.iter().map(String::as_str));
        let out = command(&ws, &inv, &args, true).output().unwrap();
        let code = match inv.expect {
            Expect::Input => 2,
            Expect::Env => 1,
        };
        for p in check_output(&out, &inv, code) {
            problems.push(format!("{cmd}: {p}"));
        }
        let results = results_of(&ws, &inv);
        match inv.expect {
            Expect::Input => {
                if entries(&ws, &inv) > 0 {
                    problems.push(format!("{cmd}: cache entries written on bad input"));
                }
                if results.exists() {
                    problems.push(format!("{cmd}: results directory created on bad input"));
                }
            }
            Expect::Env => {
                if !ws.runs().is_empty() || results_tree_has_runs(&results) {
                    problems.push(format!(
                        "{cmd}: a run directory was left in {}",
                        results.display()
                    ));
                }
            }
        }
        for p in cache_problems(&ws, &inv) {
            problems.push(format!("{cmd}: {p}"));
        }
    }
    if inv.expect == Expect::Env {
        // The fault removed, the same cache and results directories give a complete run.
        if let Some(repair) = inv.repair.take() {
            repair();
        }
        let out = command(&ws, &inv, &["run", &spec], false).output().unwrap();
        if !out.status.success() {
            problems.push(format!("rerun without the fault failed:\n{}", stderr(&out)));
        }
        for p in cache_problems(&ws, &inv) {
            problems.push(format!("after the rerun: {p}"));
        }
    }
    problems
        .into_iter()
        .map(|p| format!("[{}] {p}", case.name))
        .collect()
}

/// Any directory below `<results>/<experiment>/` (a run, or a `.partial-` one).
fn results_tree_has_runs(results: &Path) -> bool {
    dir_entries(results)
        .iter()
        .any(|exp| !dir_entries(exp).is_empty())
}

#[test]
fn bad_input_corpus() {
    let shared = std::env::var_os("SAERUN_SHARED_DIR").map(PathBuf::from);
    // The fixtures themselves must be valid, so each case fails for its own fault only:
    // the toy and text specs validate, the text one (the base of the cases found only at
    // run time) also runs to the end, and so does the tiny-pythia variant's validation.
    for (name, text, model, cmd) in [
        (
            "toy",
            tiny_toy_spec("bad", "[0.05]", 100),
            false,
            "validate",
        ),
        ("text", TEXT_SPEC.to_string(), true, "run"),
        ("pythia", String::new(), false, "validate"),
    ] {
        let ws = Workspace::new();
        let ctx = Ctx {
            ws: &ws,
            shared: shared.as_deref(),
        };
        if model {
            ctx.text_inputs(30, 40);
        }
        let text = match name {
            "pythia" if shared.is_none() => continue,
            "pythia" => {
                std::fs::write(ctx.path("data.txt"), corpus(30, 40)).unwrap();
                ctx.pythia_spec("path:data.txt")
            }
            _ => text,
        };
        let spec = ctx.spec(&text);
        let out = ws.run(&[cmd, spec.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "the {name} fixture fails `{cmd}`: {}",
            stderr(&out)
        );
    }

    let all = cases();
    let mut failures = Vec::new();
    let (mut ran, mut skipped) = (0, 0);
    for case in &all {
        if case.needs_shared && shared.is_none() {
            skipped += 1;
            continue;
        }
        ran += 1;
        failures.extend(run_case(case, shared.as_deref()));
    }
    eprintln!("bad-input corpus: {ran} cases run, {skipped} skipped (they need SAERUN_SHARED_DIR)");
    assert!(ran >= 40, "only {ran} cases ran");
    assert!(
        failures.is_empty(),
        "{} problems:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
