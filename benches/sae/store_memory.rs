//! `--store-memory`: peak RSS of SAE training from activation stores of 0.5, 1 and 2 GiB.
//!
//! Each store is written to a temp dir with the real `StoreWriter`, then a child process
//! (this bench re-run with `--store-memory-child`) trains one SAE from it exactly as the
//! `train_sae` stage does (`Store::shuffled` → `train`, resampling on) for one epoch, and
//! reports its peak RSS (`VmHWM`): a child per store, so each peak is that training's own.
//! The training's memory should be the model, its optimiser state and the shuffling window
//! (`ShuffleConfig::default`, 256 MiB), whatever the store's size.

use saerun::sae::grads::{Activation, StepPath};
use saerun::sae::train::{train, TrainJob};
use saerun::spec::resolve::ResampleSchedule;
use saerun::store::{Store, StoreDtype, StoreWriter};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

/// The flag that makes this bench the child that trains from one store.
pub const CHILD_FLAG: &str = "--store-memory-child";

/// Store sizes in MiB of f32 rows.
const SIZES_MIB: [usize; 3] = [512, 1024, 2048];
/// The original study's batch (`resid_l2_sweep`); latents default to its smallest
/// dictionary (512, `--latents M` for others): the store's share of memory is the question.
const BATCH: usize = 256;

/// `VmHWM` and `VmRSS` of this process in kB.
fn memory_kb() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// The child: train one SAE of `latents` from the store in `dir` for one epoch; print
/// `peak_kb rss_before_kb steps seconds` on stdout.
pub fn child(flags: &[String]) -> saerun::Result<()> {
    let at = flags
        .iter()
        .position(|f| f == CHILD_FLAG)
        .expect("child flag");
    let dir = Path::new(&flags[at + 1]);
    let latents: usize = flags[at + 2].parse().expect("latents");
    let store = Arc::new(Store::open(dir)?);
    let steps = store.len() / BATCH as u64;
    let mut schedule = super::schedule(BATCH, steps);
    schedule.log_every = 100;
    schedule.resample = Some(ResampleSchedule {
        every: 1000,
        until: steps / 2,
    });
    let job = TrainJob {
        d_sae: latents,
        activation: Activation::ReluL1(1e-3),
        seed: 0,
        schedule: &schedule,
        path: StepPath::Fused,
        checkpoint: None,
        label: format!("store memory m={latents}"),
    };
    let (before, _) = memory_kb();
    let t = Instant::now();
    let mut source = store.shuffled(0);
    let (sae, _) = train(&mut source, &job, |_| {})?;
    drop(sae);
    let (peak, _) = memory_kb();
    println!("{peak} {before} {steps} {:.1}", t.elapsed().as_secs_f64());
    Ok(())
}

/// The parent: for each size, write the store, run the child, print a table row.
pub fn run(flags: &[String]) -> saerun::Result<()> {
    let latents: usize = flags
        .iter()
        .position(|f| f == "--latents")
        .and_then(|i| flags.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(512);
    let exe = std::env::current_exe()
        .map_err(|e| saerun::Error::run(format!("cannot find the bench binary: {e}")))?;
    println!(
        "SAE training from an activation store (d_in {}, f32): one epoch of batches of {BATCH}, \
         {latents} latents, ReLU-L1, resampling every 1000 steps; peak RSS (VmHWM) of a \
         child process per store",
        super::D
    );
    println!(
        "{:>10} {:>10} {:>8} {:>16} {:>16} {:>9}",
        "store", "rows", "steps", "RSS before (MB)", "peak RSS (MB)", "train s"
    );
    let chunk = super::sparse_data(4096, 7);
    for mib in SIZES_MIB {
        let dir = tempfile::tempdir().map_err(|e| saerun::Error::run(format!("temp dir: {e}")))?;
        let rows = (mib << 20) / (super::D * 4);
        let mut w = StoreWriter::create(dir.path(), super::D, StoreDtype::F32, 65_536)?;
        for _ in 0..rows / 4096 {
            w.push(&chunk)?;
        }
        w.finish()?;
        let out = Command::new(&exe)
            .arg(CHILD_FLAG)
            .arg(dir.path())
            .arg(latents.to_string())
            .output()
            .map_err(|e| saerun::Error::run(format!("cannot run the child: {e}")))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let fields: Vec<&str> = text.split_whitespace().collect();
        if !out.status.success() || fields.len() != 4 {
            return Err(saerun::Error::run(format!(
                "store-memory child failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        let mb = |kb: &str| kb.parse::<f64>().unwrap_or(0.0) * 1024.0 / 1e6;
        println!(
            "{:>6} MiB {:>10} {:>8} {:>16.0} {:>16.0} {:>9}",
            mib,
            rows,
            fields[2],
            mb(fields[1]),
            mb(fields[0]),
            fields[3]
        );
    }
    println!("{}", super::machine::describe());
    Ok(())
}
