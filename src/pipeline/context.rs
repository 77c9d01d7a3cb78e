//! What stages run with. `RunCtx` is built once per run (the compute device, thread count,
//! progress display, cache); `StageCtx` adds, for one node, its label and lazy access to its
//! inputs.

use super::external::ModelRef;
use super::loader::Loader;
use super::stage::{Handle, Stage};
use crate::cache::{Cache, StageKey};
use crate::device::HOST;
use crate::model::GptNeoX;
use crate::progress::Progress;
use crate::Result;
use candle_core::Device;
use std::ops::Deref;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

pub struct RunCtx {
    /// Where tensors of models and SAEs live: `run.device`, opened by `pipeline::run`
    /// (the CPU until then). Stages pick their code path from it (`Kernels::for_device`,
    /// `StepPath::for_device`).
    pub device: Device,
    /// Worker threads of the CPU kernels (rayon's pool; `RAYON_NUM_THREADS` sets it).
    pub threads: usize,
    pub progress: Progress,
    pub cache: Cache,
    /// Wall time between checkpoints of long stages (`None`: never checkpoint).
    pub checkpoint_every: Option<Duration>,
}

impl RunCtx {
    pub fn new(cache: Cache, progress: Progress) -> RunCtx {
        RunCtx {
            device: HOST,
            threads: rayon::current_num_threads(),
            progress,
            cache,
            checkpoint_every: None,
        }
    }
}

/// One node's view of the run.
pub struct StageCtx<'a> {
    pub run: &'a RunCtx,
    /// The node's label, for progress bars.
    pub label: &'a str,
    /// The node's key: names its checkpoint area (`Cache::checkpoint_dir`).
    pub key: StageKey,
    pub(super) loader: Loader<'a>,
}

impl StageCtx<'_> {
    /// The output of an upstream node, loaded on first use and shared until its last
    /// consumer has run.
    pub fn input<S: Stage>(&self, h: Handle<S>) -> Result<Rc<S::Output>> {
        self.loader.input(h)
    }

    /// Where this node may keep state to resume from after a kill, and how often to save
    /// it; `None` when checkpoints are off. The area survives a killed run, is removed once
    /// the node's entry is published, and by `cache gc` otherwise.
    pub fn checkpoints(&self) -> Option<(PathBuf, Duration)> {
        let every = self.run.checkpoint_every?;
        Some((self.run.cache.checkpoint_dir(&self.key), every))
    }

    /// The language model, loaded on first use and kept while consecutive nodes run it
    /// (see `execute`: it is dropped before a node that does not use it).
    pub fn model(&self, m: &ModelRef) -> Result<Rc<GptNeoX>> {
        self.loader.model(m)
    }
}

impl Deref for StageCtx<'_> {
    type Target = RunCtx;

    fn deref(&self) -> &RunCtx {
        self.run
    }
}
