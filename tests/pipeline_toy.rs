//! The toy pipeline end to end at a small setting: ground-truth recovery, outputs, and the
//! cache's reuse rules (unchanged spec → zero stages; one more l1 → only the new grid
//! points; another spec asking for the same data → the data stage is shared).

mod support;
use saerun::report::tables;
use support::*;

fn metrics(ws: &Workspace, experiment: &str) -> polars::prelude::DataFrame {
    let exp = ws.results().join(experiment);
    let mut runs: Vec<_> = std::fs::read_dir(&exp)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    runs.sort();
    tables::read(&runs.last().unwrap().join("metrics.parquet")).unwrap()
}

fn column_f64(df: &polars::prelude::DataFrame, name: &str) -> Vec<f64> {
    let ca = df.column(name).unwrap().f64().unwrap();
    (0..ca.len())
        .map(|i| ca.get(i).unwrap_or(f64::NAN))
        .collect()
}

fn column_u64(df: &polars::prelude::DataFrame, name: &str) -> Vec<Option<u64>> {
    let ca = df.column(name).unwrap().u64().unwrap();
    (0..ca.len()).map(|i| ca.get(i)).collect()
}

#[test]
fn toy_pipeline_recovers_ground_truth_and_reuses_the_cache() {
    let ws = Workspace::new();
    let spec = ws.write("toy.toml", &tiny_toy_spec("toy_small", "[0.2]", 1500));
    let out = ws.run(&["run", spec.to_str().unwrap()]);
    assert!(out.status.success(), "run failed:\n{}", stderr(&out));

    // 1 data + 2 × (train + eval) + 1 match.
    let runs = ws.runs();
    assert_eq!(runs.len(), 1);
    assert_eq!(outcomes(&runs[0]), (6, 0));

    let df = metrics(&ws, "toy_small");
    assert_eq!(df.height(), 2);
    let sizes = column_u64(&df, "d_sae");
    assert_eq!(sizes, vec![Some(64), Some(128)]);
    let mmcs = column_f64(&df, "mmcs_truth");
    for (d, m) in sizes.iter().zip(&mmcs) {
        assert!(*m >= 0.9, "d_sae {d:?}: MMCS with ground truth {m} < 0.9");
    }
    let fve = column_f64(&df, "fve");
    assert!(fve.iter().all(|v| *v > 0.8 && *v <= 1.0), "fve {fve:?}");
    // The 64-latent dictionary is matched against the 128-latent one; most of its atoms
    // are true features, so most should reappear.
    let above = column_u64(&df, "features_above");
    assert!(above[0].unwrap() >= 40, "feature count {above:?}");
    assert_eq!(above[1], None, "the largest size has no larger neighbour");

    let run_dir = ws
        .results()
        .join("toy_small")
        .join(runs[0]["run_id"].as_str().unwrap());
    for f in [
        "spec.toml",
        "run.json",
        "metrics.parquet",
        "curves.parquet",
        "report.html",
        "plots/reconstruction_vs_size.png",
        "plots/reconstruction_vs_size.svg",
        "plots/l0_vs_size.png",
        "plots/feature_count_vs_size.svg",
        "plots/mmcs_vs_l1.png",
        "plots/training_curves.png",
    ] {
        assert!(run_dir.join(f).is_file(), "missing {f}");
    }
    let curves = tables::read(&run_dir.join("curves.parquet")).unwrap();
    assert_eq!(curves.height(), 2 * 1500 / 50);
    let svg = std::fs::read_to_string(run_dir.join("plots/reconstruction_vs_size.svg")).unwrap();
    assert!(
        svg.contains("Reconstruction loss"),
        "plot text missing from the SVG"
    );

    // Unchanged spec: zero stages executed, a new run record.
    let out = ws.run(&["run", spec.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let runs = ws.runs();
    assert_eq!(runs.len(), 2, "earlier runs are kept");
    assert_eq!(outcomes(&runs[1]), (0, 6));

    // validate shows everything cached.
    let out = ws.run(&["validate", spec.to_str().unwrap()]);
    assert!(
        stdout(&out).contains("6 of 6 stages cached; 0 to compute"),
        "{}",
        stdout(&out)
    );

    // One more l1 value: only its 2 train + 2 eval + 1 match stages are computed. Writing
    // 0.2 as 2e-1 must not change the existing keys.
    let spec2 = ws.write(
        "toy2.toml",
        &tiny_toy_spec("toy_small", "[2e-1, 0.3]", 1500),
    );
    let out = ws.run(&["run", spec2.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(outcomes(&ws.runs()[2]), (5, 6));

    // A different experiment asking for the same data shares the data stage, and a changed
    // training parameter retrains.
    let other = tiny_toy_spec("toy_other", "[0.2]", 1500).replace("lr = 3e-3", "lr = 2e-3");
    let spec3 = ws.write("toy3.toml", &other);
    let out = ws.run(&["run", spec3.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let run = ws
        .runs()
        .into_iter()
        .find(|r| r["experiment"] == "toy_other")
        .unwrap();
    let data_stage = run["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stage"] == "toy_data")
        .unwrap();
    assert_eq!(data_stage["outcome"], "reused");
    assert_eq!(outcomes(&run), (5, 1));
}

#[test]
fn gc_keeps_what_runs_reference() {
    let ws = Workspace::new();
    let spec = ws.write("toy.toml", &tiny_toy_spec("toy_gc", "[0.2]", 100));
    assert!(ws.run(&["run", spec.to_str().unwrap()]).status.success());
    let before = ws.cache_entries();
    // Entries no run references: compute a second grid point, then delete its run.
    let spec2 = ws.write("toy2.toml", &tiny_toy_spec("toy_gc2", "[0.05]", 100));
    assert!(ws.run(&["run", spec2.to_str().unwrap()]).status.success());
    std::fs::remove_dir_all(ws.results().join("toy_gc2")).unwrap();
    assert_eq!(ws.cache_entries().len(), before.len() + 5);

    // A run directory left by a process that died (pids never exceed 2^22 on Linux).
    let dead_run = ws.results().join("toy_gc/.partial-20990101-000000.4194305");
    std::fs::create_dir_all(&dead_run).unwrap();

    let dry = ws.run(&["cache", "gc", "--min-age", "0"]);
    assert!(dry.status.success());
    assert!(
        stdout(&dry).contains("5 unreferenced entries"),
        "{}",
        stdout(&dry)
    );
    assert!(
        stdout(&dry).contains("1 unfinished run directories"),
        "{}",
        stdout(&dry)
    );
    assert_eq!(
        ws.cache_entries().len(),
        before.len() + 5,
        "dry run must not delete"
    );

    let real = ws.run(&["cache", "gc", "--yes", "--min-age", "0"]);
    assert!(real.status.success(), "{}", stderr(&real));
    assert_eq!(ws.cache_entries(), before);
    assert!(!dead_run.exists());

    let ls = ws.run(&["cache", "ls"]);
    assert!(
        stdout(&ls).contains(&format!("{} entries", before.len())),
        "{}",
        stdout(&ls)
    );
}
