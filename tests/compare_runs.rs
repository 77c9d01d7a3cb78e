//! `saerun runs`, `diff`, `promote` and `reproduce` on small toy runs: a diff names exactly
//! the spec key that differs and exactly the affected SAEs; references pass at their
//! tolerance's edge and fail just beyond it.

mod support;
use saerun::compare::diff::{RowStatus, RunDiff};
use support::*;

fn run_spec(ws: &Workspace, name: &str, text: &str) {
    let spec = ws.write(name, text);
    let out = ws.run(&["run", spec.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
}

fn diff_json(ws: &Workspace, a: &str, b: &str, extra: &[&str]) -> RunDiff {
    let mut args = vec!["diff", a, b, "--json"];
    args.extend_from_slice(extra);
    let out = ws.run(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let d: RunDiff = serde_json::from_str(&text).expect("diff --json parses");
    // Round trip: the document re-encodes to the same JSON.
    let again: serde_json::Value = serde_json::to_value(&d).unwrap();
    assert_eq!(
        again,
        serde_json::from_str::<serde_json::Value>(&text).unwrap()
    );
    d
}

#[test]
fn diff_names_the_changed_key_and_the_affected_saes() {
    let ws = Workspace::new();
    run_spec(&ws, "a.toml", &tiny_toy_spec("cmp", "[0.2]", 150));
    run_spec(&ws, "b.toml", &tiny_toy_spec("cmp", "[0.2, 0.3]", 150));
    let runs = stdout(&ws.run(&["runs", "cmp"]));
    assert!(runs.contains("2 runs under"), "{runs}");
    assert!(runs.contains("mean mmcs_truth"), "{runs}");

    // One more l1 value: exactly `sae.l1` differs; the shared SAEs are reused, so identical
    // and hidden; the two new ones are only in B.
    let d = diff_json(&ws, "cmp@~1", "cmp@latest", &[]);
    assert!(d.same_experiment);
    let keys: Vec<&str> = d.spec.iter().map(|c| c.key.as_str()).collect();
    assert_eq!(keys, ["sae.l1"]);
    assert_eq!(d.rows.len(), 2, "{:#?}", d.rows);
    assert!(d
        .rows
        .iter()
        .all(|r| r.status == RowStatus::OnlyB && r.sae.l1 == 0.3));
    let all = diff_json(&ws, "cmp@~1", "cmp@latest", &["--all"]);
    assert_eq!(
        all.rows
            .iter()
            .filter(|r| r.status == RowStatus::Same)
            .count(),
        2
    );

    // A changed learning rate changes every SAE; --threshold hides small changes.
    run_spec(
        &ws,
        "c.toml",
        &tiny_toy_spec("cmp", "[0.2, 0.3]", 150).replace("lr = 3e-3", "lr = 2e-3"),
    );
    let d = diff_json(&ws, "cmp@~1", "cmp@latest", &[]);
    assert_eq!(d.spec.len(), 1);
    assert_eq!(d.spec[0].key, "train.lr");
    assert_eq!(d.rows.len(), 4);
    assert!(d.rows.iter().all(|r| r.status == RowStatus::Changed));
    let loose = diff_json(&ws, "cmp@~1", "cmp@latest", &["--threshold", "1e9"]);
    assert!(loose.rows.is_empty(), "nothing moves by more than 1e9");
    let plots = ws.path().join("overlay");
    let out = ws.run(&[
        "diff",
        "cmp@~1",
        "cmp@latest",
        "--plots",
        plots.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let svg = std::fs::read_to_string(plots.join("reconstruction_vs_size.svg")).unwrap();
    assert!(
        svg.contains("A 20") && svg.contains("B 20"),
        "one line per run in the legend"
    );

    // Different experiments: said at the top of every format.
    run_spec(&ws, "o.toml", &tiny_toy_spec("other", "[0.2]", 150));
    let text = stdout(&ws.run(&["diff", "cmp@latest", "other@latest"]));
    assert!(text.starts_with("note: different experiments"), "{text}");
    let md = stdout(&ws.run(&["diff", "cmp@latest", "other@latest", "--md"]));
    assert!(md.starts_with("> **Different experiments:**"), "{md}");
    assert!(
        !text.contains('\x1b'),
        "no colour when stdout is not a terminal"
    );

    let bad = ws.run(&["diff", "cmp@~9", "cmp@latest"]);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    assert!(
        stderr(&bad).contains("fewer than 10 runs"),
        "{}",
        stderr(&bad)
    );
}

#[test]
fn promote_then_reproduce_passes_and_a_perturbed_value_fails() {
    let ws = Workspace::new();
    let spec = ws.write("toy.toml", &tiny_toy_spec("repro", "[0.2]", 150));
    assert!(ws.run(&["run", spec.to_str().unwrap()]).status.success());
    let out = ws.run(&["promote", "repro@latest"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let reference = ws.path().join("toy.reference.toml");
    assert!(reference.is_file(), "promote writes beside the spec");
    let text = std::fs::read_to_string(&reference).unwrap();

    let reproduce = |ws: &Workspace| ws.run(&["reproduce", spec.to_str().unwrap()]);
    let out = reproduce(&ws);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains(" 0 failed"), "{}", stdout(&out));

    // Move the MMCS of the first SAE to the edge of its tolerance (±0.02), then beyond it.
    let mut doc: toml::Table = toml::from_str(&text).unwrap();
    let expect = doc["expect"].as_array_mut().unwrap();
    let i = expect
        .iter()
        .position(|e| e["metric"].as_str() == Some("mmcs_truth"))
        .unwrap();
    let value = expect[i]["value"].as_float().unwrap();
    for (shift, passes) in [(0.0199, true), (0.0201, false)] {
        let mut edited = doc.clone();
        edited["expect"].as_array_mut().unwrap()[i]["value"] = toml::Value::Float(value + shift);
        std::fs::write(&reference, toml::to_string(&edited).unwrap()).unwrap();
        let out = reproduce(&ws);
        assert_eq!(
            out.status.success(),
            passes,
            "shift {shift}: {}",
            stdout(&out)
        );
        if !passes {
            assert_eq!(out.status.code(), Some(1));
            assert!(stdout(&out).contains("FAIL"), "{}", stdout(&out));
            assert!(stdout(&out).contains("1 failed"), "{}", stdout(&out));
        }
    }
    // A reference stands in for a run in `diff`: here it differs in exactly one value.
    let edited_file = ws.path().join("edited.reference.toml");
    let mut edited = doc.clone();
    edited["expect"].as_array_mut().unwrap()[i]["value"] = toml::Value::Float(value + 0.5);
    std::fs::write(&edited_file, toml::to_string(&edited).unwrap()).unwrap();
    let d = diff_json(&ws, "repro@latest", edited_file.to_str().unwrap(), &[]);
    assert!(d.spec.is_empty());
    assert_eq!(d.rows.len(), 1, "{:#?}", d.rows);
    assert_eq!(d.rows[0].metrics.len(), 1);
    assert_eq!(d.rows[0].metrics[0].metric, "mmcs_truth");

    // Informational values never fail.
    let mut edited = doc.clone();
    let e = &mut edited["expect"].as_array_mut().unwrap()[i];
    e["value"] = toml::Value::Float(value + 1.0);
    e.as_table_mut()
        .unwrap()
        .insert("informational".into(), toml::Value::Boolean(true));
    std::fs::write(&reference, toml::to_string(&edited).unwrap()).unwrap();
    let out = reproduce(&ws);
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(stdout(&out).contains("1 informational"), "{}", stdout(&out));
}

#[test]
fn committed_references_parse_and_belong_to_their_specs() {
    use saerun::compare::reference;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments");
    let mut found = 0;
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        let path = entry.path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(".reference.toml") else {
            continue;
        };
        found += 1;
        let r = reference::load(&path).unwrap();
        let spec: toml::Table =
            toml::from_str(&std::fs::read_to_string(dir.join(format!("{stem}.toml"))).unwrap())
                .unwrap();
        assert_eq!(
            spec["experiment"]["name"].as_str(),
            Some(r.experiment.as_str()),
            "{name}"
        );
        assert!(!r.expect.is_empty() && !r.source.is_empty(), "{name}");
        for e in &r.expect {
            assert!(e.tolerance() >= 0.0 && e.value.is_finite(), "{name}: {e:?}");
        }
    }
    assert!(
        found >= 3,
        "toy_small, tiny_pythia_sweep and resid_l2_sweep have references"
    );
}
