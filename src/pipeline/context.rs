//! What stages run with. `RunCtx` is built once per run (the compute device, thread count,
//! progress display, cache); `StageCtx` adds, for one node, its label and lazy access to its
//! inputs.

use super::external::ModelRef;
use super::loader::Loader;
use super::stage::{Handle, Stage};
use crate::cache::Cache;
use crate::device::HOST;
use crate::model::GptNeoX;
use crate::progress::Progress;
use crate::Result;
use candle_core::Device;
use std::ops::Deref;
use std::rc::Rc;

pub struct RunCtx {
    /// Where tensors of models and SAEs live. The one place the device is chosen: CPU today
    /// (a `run.device` key arrives with the GPU build).
    pub device: Device,
    /// Worker threads of the CPU kernels (rayon's pool; `RAYON_NUM_THREADS` sets it).
    pub threads: usize,
    pub progress: Progress,
    pub cache: Cache,
}

impl RunCtx {
    pub fn new(cache: Cache, progress: Progress) -> RunCtx {
        RunCtx {
            device: HOST,
            threads: rayon::current_num_threads(),
            progress,
            cache,
        }
    }
}

/// One node's view of the run.
pub struct StageCtx<'a> {
    pub run: &'a RunCtx,
    /// The node's label, for progress bars.
    pub label: &'a str,
    pub(super) loader: Loader<'a>,
}

impl StageCtx<'_> {
    /// The output of an upstream node, loaded on first use and shared until its last
    /// consumer has run.
    pub fn input<S: Stage>(&self, h: Handle<S>) -> Result<Rc<S::Output>> {
        self.loader.input(h)
    }

    /// The language model, loaded once per run.
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
