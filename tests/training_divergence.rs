//! A training that diverges stops at the first NaN or infinity with the step, the term that
//! went bad and a hint; exit code 1, nothing of the failed stage cached, no run recorded.

mod support;
use support::*;

#[test]
fn absurd_learning_rate_stops_with_step_term_and_hint() {
    let ws = Workspace::new();
    let spec = ws.write("toy.toml", &tiny_toy_spec("diverge", "[0.1]", 200));
    let out = ws.run(&["run", spec.to_str().unwrap(), "--set", "train.lr=1e30"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    for needle in [
        "train_sae d_sae=64 l1=0.1 seed=1",
        "at step ",
        "the loss term `mse` is NaN",
        "lower `train.lr` (now 1e30)",
    ] {
        assert!(err.contains(needle), "stderr lacks {needle:?}:\n{err}");
    }
    let stages: Vec<String> = ws.cache_entries().into_iter().map(|(s, _)| s).collect();
    assert_eq!(stages, ["toy_data"], "only the data stage may be cached");
    assert!(ws.runs().is_empty(), "a failed run was recorded");
    let tmp = std::fs::read_dir(ws.cache().join("v1/tmp"))
        .unwrap()
        .count();
    assert_eq!(tmp, 0, "the failed stage left files in tmp/");
}
