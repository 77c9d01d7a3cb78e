//! The feature analyses end to end on the trained tiny GPT-NeoX in ../shared (path from
//! SAERUN_SHARED_DIR): result tables, the feature browser's pages and links, and the pages
//! rendered by a real headless browser (no blank page, no script error).

mod support;
use saerun::report::tables;
use std::path::PathBuf;
use support::*;

#[test]
fn analyses_write_tables_and_a_browser_that_renders() {
    let Some(shared) = shared_dir() else { return };
    let ws = Workspace::new();
    let spec = spec_path("tiny_pythia_sweep.toml");
    let (model, data) = tiny_pythia_sources(&shared);
    let out = ws.run(&[
        "run",
        &spec,
        "--set",
        &model,
        "--set",
        &data,
        "--set",
        "sae.dict_ratios=[1, 2]",
        "--set",
        "sae.l1=0.05",
        "--set",
        "train.steps=300",
        "--set",
        "eval.contexts=128",
        "--set",
        "analyses.n_features=6",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let run = &ws.runs()[0];
    let dir = ws
        .results()
        .join("tiny_pythia_sweep")
        .join(run["run_id"].as_str().unwrap());

    // Long tables, joinable with metrics.parquet on the identity columns.
    let metrics = tables::read(&dir.join("metrics.parquet")).unwrap();
    let keys: Vec<String> = {
        let c = metrics.column("train_key").unwrap().str().unwrap();
        (0..c.len())
            .map(|i| c.get(i).unwrap().to_string())
            .collect()
    };
    for (table, rows_at_least) in [
        ("feature_stats", 128 + 256),
        ("feature_histograms", 1),
        ("feature_examples", 2 * 6),
        ("feature_example_tokens", 2 * 6 * 25),
        ("logit_lens", 2 * 6 * 2 * 10),
        ("ablated_text", 1),
        ("direction_ablation", 2 * 6),
        ("direction_ablation_tokens", 2 * 6 * 2 * 10),
    ] {
        let df = tables::read(&dir.join(format!("{table}.parquet"))).unwrap();
        assert!(
            df.height() >= rows_at_least,
            "{table}: {} rows",
            df.height()
        );
        let c = df.column("train_key").unwrap().str().unwrap().clone();
        for i in 0..c.len() {
            assert!(
                keys.iter().any(|k| Some(k.as_str()) == c.get(i)),
                "{table} row {i}"
            );
        }
    }

    // Pages: an index, 6 features per dictionary, no broken link anywhere.
    let features = dir.join("features");
    let pages = chromium::html_files(&features);
    assert_eq!(pages.len(), 1 + 2 * 6, "{pages:?}");
    let report = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(
        report.contains("features/index.html"),
        "report links the browser"
    );
    let mut broken = chromium::broken_links(&dir.join("report.html"));
    for p in &pages {
        broken.extend(chromium::broken_links(p));
    }
    assert!(broken.is_empty(), "broken links: {broken:#?}");
    // Every feature of the smaller dictionary is matched one-to-one in the larger one, and
    // the larger one's pages know the smaller one.
    let page_of = |size: &str| -> Vec<&PathBuf> {
        pages
            .iter()
            .filter(|p| p.to_string_lossy().contains(size))
            .collect()
    };
    for p in page_of("d_sae128") {
        let text = std::fs::read_to_string(p).unwrap();
        assert!(
            text.contains("next larger d_sae=256 l1=0.05: feature "),
            "{}",
            p.display()
        );
    }
    let larger = page_of("d_sae256")[0];
    let text = std::fs::read_to_string(larger).unwrap();
    assert!(text.contains("next smaller"), "{}", larger.display());

    let Some(bin) = chromium::binary() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium is required in CI (.ci/run installs it)"
        );
        eprintln!("skipped the browser rendering: no chromium on PATH");
        return;
    };
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("browser-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let profile = tempfile::tempdir().unwrap();
    let to_check = [
        features.join("index.html"),
        larger.clone(),
        pages
            .iter()
            .find(|p| p.to_string_lossy().contains("d_sae128"))
            .unwrap()
            .clone(),
        dir.join("report.html"),
    ];
    for (i, page) in to_check.iter().enumerate() {
        let dom = chromium::dom(&bin, profile.path(), page);
        assert!(
            dom.contains("data-ready=\"1\"") || page.ends_with("report.html"),
            "{}: scripts did not finish:\n{dom}",
            page.display()
        );
        assert!(
            !dom.contains("data-error=\""),
            "{}: script error:\n{dom}",
            page.display()
        );
        let png = shots.join(format!("page{i}.png"));
        chromium::screenshot(&bin, profile.path(), page, &png, 1600);
        let (ink, colours) = chromium::ink(&png);
        assert!(
            ink > 0.02 && colours > 8,
            "{} looks blank: ink {ink:.4}, {colours} colours",
            png.display()
        );
        eprintln!(
            "screenshot {} (ink {ink:.3}, {colours} colours)",
            png.display()
        );
    }
}
