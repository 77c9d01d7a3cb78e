//! Spec layering: file, then SAERUN_<SECTION>__<KEY> environment variables, then --set
//! flags; last wins, and a layer only replaces the keys it sets. One test function, because
//! environment variables are process-wide.

use saerun::spec::{load_spec, resolve};

#[test]
fn file_then_environment_then_flags() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.toml");
    std::fs::write(
        &path,
        r#"
[experiment]
name = "layers"
seed = 3
[data]
source = "toy"
activation_dim = 16
n_features = 32
[sae]
architecture = "relu_l1"
dict_sizes = 32
l1 = 1e-3
[train]
batch_size = 64
steps = 100
lr = 0.001
"#,
    )
    .unwrap();
    let sets = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();

    // File only. A scalar sweep field is a one-element sweep; unset sections get defaults.
    let (spec, origin) = load_spec(&path, &[]).unwrap();
    let r = resolve(spec, &origin).unwrap();
    assert_eq!(r.schedule.as_ref().unwrap().lr, 0.001);
    assert_eq!(r.grid.len(), 1);
    assert_eq!(r.grid[0].l1, 0.001);
    assert_eq!(r.grid[0].seed, 3);
    assert_eq!(r.mcs_threshold, 0.9);

    // Environment overrides the file, key by key.
    std::env::set_var("SAERUN_TRAIN__LR", "0.002");
    std::env::set_var("SAERUN_CACHE_DIR", "/somewhere"); // a CLI variable, not a spec key
    let (spec, origin) = load_spec(&path, &[]).unwrap();
    let r = resolve(spec, &origin).unwrap();
    assert_eq!(r.schedule.as_ref().unwrap().lr, 0.002);
    assert_eq!(
        r.schedule.as_ref().unwrap().batch_size,
        64,
        "env must not erase sibling file keys"
    );
    assert_eq!(
        origin.locate("train.lr"),
        "environment variable SAERUN_TRAIN__LR"
    );

    // Flags override both; lists and bare strings parse.
    let (spec, origin) = load_spec(
        &path,
        &sets(&[
            "train.lr=3e-3",
            "sae.l1=[0.1, 0.2]",
            "data.source=toy",
            "train.seeds=[1,2]",
        ]),
    )
    .unwrap();
    let r = resolve(spec, &origin).unwrap();
    assert_eq!(r.schedule.as_ref().unwrap().lr, 0.003);
    assert_eq!(r.schedule.as_ref().unwrap().batch_size, 64);
    assert_eq!(r.schedule.as_ref().unwrap().steps, 100);
    assert_eq!(r.grid.len(), 4, "2 l1 × 2 seeds");
    assert_eq!(origin.locate("train.lr"), "--set train.lr=3e-3");
    assert!(
        origin.locate("train.batch_size").contains("line 14"),
        "{}",
        origin.locate("train.batch_size")
    );

    // A later flag wins over an earlier one.
    let (spec, origin) = load_spec(&path, &sets(&["train.lr=0.5", "train.lr=0.25"])).unwrap();
    assert_eq!(resolve(spec, &origin).unwrap().schedule.unwrap().lr, 0.25);

    // `epochs` together with the file's `steps` is ambiguous.
    let (spec, origin) = load_spec(&path, &sets(&["train.epochs=2.5"])).unwrap();
    let err = match resolve(spec, &origin) {
        Ok(_) => panic!("steps and epochs together must be rejected"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("exactly one of"), "{err}");
    std::env::remove_var("SAERUN_TRAIN__LR");
    std::env::remove_var("SAERUN_CACHE_DIR");
}
