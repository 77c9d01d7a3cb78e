//! The command line as scripts see it: `--json` summaries (run, validate, runs, reproduce),
//! `-q` / `-v`, colour only where asked for (`NO_COLOR`, `--color`, not on pipes), shell
//! completions from the same definitions as parsing, the git commit in `--version`, an
//! example in every command's help, and exit code 2 (no panic) for bad flags.

mod support;
use clap::CommandFactory;
use saerun::cli::Cli;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use support::*;

const ESC: char = '\x1b';

/// Every command path below the top level, e.g. `["cache", "gc"]`, from the same clap
/// definitions the binary parses with.
fn command_paths() -> Vec<Vec<String>> {
    fn walk(cmd: &clap::Command, prefix: &[String], out: &mut Vec<Vec<String>>) {
        for sub in cmd.get_subcommands() {
            let mut path = prefix.to_vec();
            path.push(sub.get_name().to_string());
            out.push(path.clone());
            walk(sub, &path, out);
        }
    }
    let mut out = Vec::new();
    walk(&Cli::command(), &[], &mut out);
    assert!(out.len() >= 10, "too few commands found: {out:?}");
    out
}

/// `saerun ARGS` outside any workspace, with the colour variables under the test's control.
fn saerun(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_saerun"));
    for var in ["NO_COLOR", "CLICOLOR", "CLICOLOR_FORCE", "TERM"] {
        c.env_remove(var);
    }
    c.envs(env.iter().copied())
        .args(args)
        .output()
        .expect("spawn saerun")
}

fn json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "exit {:?}\n{}",
        out.status.code(),
        stderr(out)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}):\n{}", stdout(out)))
}

fn paths(v: &Value) -> Vec<PathBuf> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|p| PathBuf::from(p.as_str().unwrap()))
        .collect()
}

fn no_panic(out: &Output) {
    assert_ne!(out.status.code(), Some(101), "{}", stderr(out));
    assert!(!stderr(out).contains("panicked"), "{}", stderr(out));
}

#[test]
fn run_json_quiet_verbose_and_the_other_json_outputs() {
    let ws = Workspace::new();
    let spec = ws.write("cli.toml", &tiny_toy_spec("cli_json", "[0.2]", 100));
    let spec = spec.to_str().unwrap();

    // A first run computes every stage; stdout is exactly one JSON document.
    let out = ws.run(&["run", spec, "--json"]);
    let first = json(&out);
    assert!(
        stderr(&out).contains("computed in"),
        "per-stage lines on stderr by default:\n{}",
        stderr(&out)
    );
    let run_dir = PathBuf::from(first["run_dir"].as_str().unwrap());
    assert!(run_dir.is_absolute(), "{}", run_dir.display());
    assert!(run_dir.join("run.json").is_file(), "{}", run_dir.display());
    let expected_dir = ws
        .results()
        .join("cli_json")
        .join(first["run_id"].as_str().unwrap());
    assert_eq!(
        run_dir.canonicalize().unwrap(),
        expected_dir.canonicalize().unwrap()
    );
    assert_eq!(
        run_dir.file_name().unwrap().to_str(),
        first["run_id"].as_str()
    );
    assert_eq!(first["experiment"], "cli_json");
    let stages = first["stages"].as_array().unwrap();
    assert_eq!(stages.len(), 6, "data + 2 x (train + eval) + match");
    for s in stages {
        assert_eq!(s["outcome"], "computed", "{s}");
        assert!(s["wall_seconds"].as_f64().unwrap() >= 0.0, "{s}");
        assert_eq!(s["key"].as_str().unwrap().len(), 64, "{s}");
        assert!(s["stage"].is_string() && s["label"].is_string(), "{s}");
    }
    assert_eq!(
        (first["computed"].as_u64(), first["reused"].as_u64()),
        (Some(6), Some(0))
    );
    assert!(first["wall_seconds"].as_f64().unwrap() > 0.0);
    let tables = paths(&first["tables"]);
    for name in ["metrics.parquet", "curves.parquet"] {
        assert!(tables.contains(&run_dir.join(name)), "{name} in {tables:?}");
    }
    let plots = paths(&first["plots"]);
    assert!(plots.contains(&run_dir.join("plots/reconstruction_vs_size.svg")));
    for f in tables.iter().chain(&plots) {
        assert!(f.is_file(), "{}", f.display());
    }
    assert!(Path::new(first["report"].as_str().unwrap()).is_file());
    // The summary is the run record's account of the stages.
    let record: Value =
        serde_json::from_slice(&std::fs::read(run_dir.join("run.json")).unwrap()).unwrap();
    assert_eq!(record["stages"], first["stages"]);

    // -q: nothing on stderr, the JSON on stdout; a second run reuses every stage.
    let out = ws.run(&["-q", "run", spec, "--json"]);
    let second = json(&out);
    assert_eq!(stderr(&out), "", "-q says nothing on stderr");
    assert_eq!(
        (second["computed"].as_u64(), second["reused"].as_u64()),
        (Some(0), Some(6))
    );
    let second_stages = second["stages"].as_array().unwrap();
    for (a, b) in stages.iter().zip(second_stages) {
        assert_eq!(b["outcome"], "reused", "{b}");
        assert_eq!(a["key"], b["key"]);
    }
    assert_ne!(second["run_dir"], first["run_dir"]);

    // -q without --json: the result lines only.
    let out = ws.run(&["run", spec, "--quiet"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stderr(&out), "");
    assert!(
        stdout(&out).contains("0 stages computed, 6 reused"),
        "{}",
        stdout(&out)
    );

    // -v: a line per stage as it starts, with its full key, and one as it ends.
    let out = ws.run(&["run", spec, "-v"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    let starts: Vec<&str> = err.lines().filter(|l| l.starts_with("[start]")).collect();
    assert_eq!(starts.len(), 6, "{err}");
    for (line, s) in starts.iter().zip(stages) {
        let key = s["key"].as_str().unwrap();
        assert!(
            line.contains(s["stage"].as_str().unwrap()) && line.ends_with(&format!("key {key}")),
            "{line} for {s}"
        );
    }
    assert_eq!(
        err.lines().filter(|l| l.ends_with("reused")).count(),
        6,
        "{err}"
    );
    // Repeating a flag is not an error.
    let out = ws.run(&["-v", "run", spec, "-v"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Without -v the keys are not printed.
    let out = ws.run(&["run", spec]);
    assert!(!stderr(&out).contains("[start]"), "{}", stderr(&out));

    // validate --json: the plan and its cache state.
    let plan = json(&ws.run(&["validate", spec, "--json"]));
    assert_eq!(plan["experiment"], "cli_json");
    assert_eq!(
        (plan["cached"].as_u64(), plan["to_compute"].as_u64()),
        (Some(6), Some(0))
    );
    let keys = |v: &Value| -> Vec<Value> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s["key"].clone())
            .collect()
    };
    let mut planned = keys(&plan["stages"]);
    let mut ran = keys(&first["stages"]);
    planned.sort_by_key(|k| k.to_string());
    ran.sort_by_key(|k| k.to_string());
    assert_eq!(planned, ran);
    let changed = json(&ws.run(&["validate", spec, "--json", "--set", "train.steps=120"]));
    assert!(changed["to_compute"].as_u64().unwrap() > 0, "{changed}");

    // runs --json: every run, oldest first.
    let runs = json(&ws.run(&["runs", "--json"]));
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 6, "the runs above");
    assert_eq!(runs[0]["run_id"], first["run_id"]);
    assert!(Path::new(runs[5]["dir"].as_str().unwrap())
        .join("run.json")
        .is_file());

    // reproduce --json against a reference promoted from the first run.
    let out = ws.run(&["promote", first["run_id"].as_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = ws.run(&["-q", "reproduce", spec, "--json"]);
    let rep = json(&out);
    assert_eq!(stderr(&out), "");
    assert_eq!(rep["failed"], 0);
    assert!(rep["passed"].as_u64().unwrap() > 0, "{rep}");
    assert_eq!(rep["run"]["reused"], 6);
    assert!(rep["checks"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["verdict"] == "pass"));
    // A value far off: the JSON still comes out, and the exit code is still 1.
    let reference = ws.path().join("cli.reference.toml");
    let text = std::fs::read_to_string(&reference).unwrap();
    let at = text.find("\nvalue = ").expect("a value in the reference") + 1;
    let end = at + text[at..].find('\n').unwrap();
    std::fs::write(
        &reference,
        format!("{}value = 1e9{}", &text[..at], &text[end..]),
    )
    .unwrap();
    let out = ws.run(&["-q", "reproduce", spec, "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let rep: Value = serde_json::from_slice(&out.stdout).expect("JSON on a failed reproduce");
    assert_eq!(rep["failed"], 1, "{rep}");
    assert!(
        stderr(&out).contains("outside their tolerance"),
        "{}",
        stderr(&out)
    );

    // diff's terminal table: colour only where forced, and never with NO_COLOR.
    let (a, b) = (
        first["run_id"].as_str().unwrap(),
        second["run_id"].as_str().unwrap(),
    );
    let diff = |env: &[(&str, &str)], extra: &[&str]| {
        let mut c = ws.cmd(&["diff", a, b, "--all"]);
        for var in ["NO_COLOR", "CLICOLOR", "CLICOLOR_FORCE", "TERM"] {
            c.env_remove(var);
        }
        let out = c.envs(env.iter().copied()).args(extra).output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
    };
    assert!(!diff(&[], &[]).contains(ESC), "no colour into a pipe");
    assert!(diff(&[("CLICOLOR_FORCE", "1")], &[]).contains(ESC));
    assert!(diff(&[], &["--color", "always"]).contains(ESC));
    assert!(!diff(&[("NO_COLOR", "1"), ("CLICOLOR_FORCE", "1")], &[]).contains(ESC));
    assert!(!diff(&[("CLICOLOR_FORCE", "1")], &["--color", "never"]).contains(ESC));

    // A run's stderr with colour forced but NO_COLOR set: no escape bytes either.
    let mut c = ws.cmd(&["run", spec, "-v"]);
    let out = c
        .env("NO_COLOR", "1")
        .env("CLICOLOR_FORCE", "1")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(!stderr(&out).contains(ESC) && !stdout(&out).contains(ESC));
}

#[test]
fn no_color_turns_off_clap_and_saerun_colour() {
    // clap's own error and help, and saerun's own error line.
    let cases: [&[&str]; 3] = [
        &["no-such-command"],
        &["run", "--help"],
        &["run", "does-not-exist.toml"],
    ];
    for args in cases {
        let forced = saerun(args, &[("CLICOLOR_FORCE", "1")]);
        no_panic(&forced);
        let text = format!("{}{}", stdout(&forced), stderr(&forced));
        assert!(
            text.contains(ESC),
            "{args:?}: CLICOLOR_FORCE colours:\n{text}"
        );
        let always = saerun(&[&["--color", "always"], args].concat(), &[]);
        assert!(
            format!("{}{}", stdout(&always), stderr(&always)).contains(ESC),
            "{args:?}: --color always colours"
        );

        for env in [
            &[("NO_COLOR", "1"), ("CLICOLOR_FORCE", "1")][..],
            &[("NO_COLOR", "1")][..],
            &[][..],
        ] {
            let out = saerun(args, env);
            no_panic(&out);
            let text = format!("{}{}", stdout(&out), stderr(&out));
            assert!(!text.contains(ESC), "{args:?} with {env:?}:\n{text:?}");
            assert_eq!(out.status.code(), forced.status.code());
        }
        let never = saerun(
            &[&["--color=never"], args].concat(),
            &[("CLICOLOR_FORCE", "1")],
        );
        let text = format!("{}{}", stdout(&never), stderr(&never));
        assert!(!text.contains(ESC), "{args:?} --color=never:\n{text:?}");
    }
    // Bad input is exit code 2 whatever the colour.
    let out = saerun(&["run", "does-not-exist.toml"], &[("NO_COLOR", "1")]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).starts_with("error: "), "{}", stderr(&out));
}

#[test]
fn completions_cover_every_command_and_flag() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = saerun(&["completions", shell], &[]);
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        let script = stdout(&out);
        assert!(script.len() > 1000, "{shell}: {script}");
        // fish spells flags `-l json`.
        for word in [
            "run",
            "json",
            "quiet",
            "verbose",
            "color",
            "set",
            "cache-dir",
        ] {
            assert!(script.contains(word), "{shell} completions lack {word}");
        }
        for path in command_paths() {
            let name = path.last().unwrap();
            assert!(
                script.contains(name.as_str()),
                "{shell} completions lack {path:?}"
            );
        }
    }
    // bash: each subcommand is a completion state of its own (clap_complete 4.6 names them
    // `saerun__subcmd__cache__subcmd__gc`).
    let bash = stdout(&saerun(&["completions", "bash"], &[]));
    for flag in ["--json", "--quiet", "--verbose", "--color", "--set"] {
        assert!(bash.contains(flag), "bash completions lack {flag}");
    }
    for path in command_paths() {
        let case = format!("saerun__subcmd__{}", path.join("__subcmd__"));
        assert!(bash.contains(&case), "bash completions lack {case}");
    }
    let out = saerun(&["completions", "tcsh"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("possible values"), "{}", stderr(&out));
    no_panic(&out);
}

#[test]
fn version_names_the_git_commit() {
    let out = saerun(&["--version"], &[]);
    assert!(out.status.success());
    let version = stdout(&out);
    let expected_start = format!("saerun {} (commit ", env!("CARGO_PKG_VERSION"));
    assert!(version.starts_with(&expected_start), "{version}");
    assert_eq!(stdout(&saerun(&["-V"], &[])), version);

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(root)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    if root.join(".cargo_vcs_info.json").is_file() {
        eprintln!("skipping the git checks: built from a packaged crate");
        return;
    }
    let Some(head) = git(&["rev-parse", "--short", "HEAD"]) else {
        assert!(version.contains("commit unknown"), "{version}");
        eprintln!("skipping the git checks: not a git checkout");
        return;
    };
    assert!(version.contains(&head), "{version} lacks HEAD {head}");
    let status = git(&[
        "--no-optional-locks",
        "status",
        "--porcelain",
        "--",
        "src",
        "build.rs",
        "Cargo.toml",
        "Cargo.lock",
    ])
    .unwrap();
    assert_eq!(
        version.contains("+dirty"),
        !status.is_empty(),
        "{version} vs the sources' git status:\n{status}"
    );
}

#[test]
fn every_command_help_has_an_example() {
    let mut all = vec![vec![]];
    all.extend(command_paths());
    for path in all {
        for flag in ["--help", "-h"] {
            let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
            args.push(flag);
            let out = saerun(&args, &[]);
            assert!(out.status.success(), "{args:?}: {}", stderr(&out));
            let help = stdout(&out);
            assert!(help.contains("Example"), "{args:?} has no example:\n{help}");
            assert!(help.contains("saerun "), "{args:?}");
        }
    }
}

#[test]
fn bad_flags_exit_2_with_one_message() {
    let cases: [(&[&str], &str); 6] = [
        (&["-q", "-v", "runs"], "cannot be used with"),
        (
            &["validate", "x.toml", "--graph", "--json"],
            "cannot be used with",
        ),
        (
            &["--color", "sometimes", "runs"],
            "invalid value 'sometimes'",
        ),
        (&["completions"], "<SHELL>"),
        (&["run"], "<SPEC>"),
        (&["diff", "a", "b", "--md", "--json"], "cannot be used with"),
    ];
    for (args, message) in cases {
        let out = saerun(args, &[]);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains(message), "{args:?}: {err}");
        assert_eq!(err.matches("error:").count(), 1, "{args:?}: {err}");
        assert!(stdout(&out).is_empty(), "{args:?}");
        no_panic(&out);
    }
}

#[test]
fn a_closed_stdout_is_not_a_panic() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_saerun"))
        .args(["completions", "zsh"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    no_panic(&out);
}
