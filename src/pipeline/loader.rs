//! Lazy loading of stage outputs. A node's output is read from its cache entry the first
//! time a computing consumer asks for it, kept while later nodes still name it, and dropped
//! after its last consumer: peak memory follows what the remaining nodes need, not the
//! number of SAEs in a sweep. Reused nodes load nothing.

use super::context::RunCtx;
use super::external::ModelRef;
use super::graph::Graph;
use super::stage::{Handle, NodeId, Stage};
use crate::cache::Entry;
use crate::model::GptNeoX;
use crate::{Error, Result};
use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

/// The outputs currently loaded, shared across the nodes of one execution.
#[derive(Default)]
pub struct Loaded {
    outputs: RefCell<HashMap<NodeId, Rc<dyn Any>>>,
    model: RefCell<Option<(ModelRef, Rc<GptNeoX>)>>,
    peak: Cell<usize>,
}

impl Loaded {
    /// Stage outputs held now.
    pub fn live(&self) -> usize {
        self.outputs.borrow().len()
    }

    /// The most stage outputs held at once so far.
    pub fn peak(&self) -> usize {
        self.peak.get()
    }

    pub fn is_loaded(&self, id: NodeId) -> bool {
        self.outputs.borrow().contains_key(&id)
    }

    pub fn release(&self, id: NodeId) {
        self.outputs.borrow_mut().remove(&id);
    }

    pub fn release_model(&self) {
        self.model.borrow_mut().take();
    }
}

/// Access for one node: the graph, the entries published so far and the shared `Loaded`.
pub struct Loader<'a> {
    pub(super) graph: &'a Graph,
    pub(super) ctx: &'a RunCtx,
    pub(super) entries: &'a [Option<Entry>],
    pub(super) loaded: &'a Loaded,
}

impl Loader<'_> {
    pub fn input<S: Stage>(&self, h: Handle<S>) -> Result<Rc<S::Output>> {
        let id = h.id();
        let existing = self.loaded.outputs.borrow().get(&id).cloned();
        let any = match existing {
            Some(v) => v,
            None => {
                let node = &self.graph.nodes()[id];
                let entry = self.entries[id].as_ref().ok_or_else(|| {
                    Error::run(format!(
                        "internal: {} {} was asked for before it ran",
                        node.stage, node.label
                    ))
                })?;
                let v = node.load(self.ctx, entry)?;
                let mut outputs = self.loaded.outputs.borrow_mut();
                outputs.insert(id, v.clone());
                self.loaded
                    .peak
                    .set(self.loaded.peak.get().max(outputs.len()));
                v
            }
        };
        any.downcast::<S::Output>()
            .map_err(|_| Error::run(format!("internal: node {id} is not a {}", S::NAME)))
    }

    pub fn model(&self, m: &ModelRef) -> Result<Rc<GptNeoX>> {
        if let Some((r, model)) = self.loaded.model.borrow().as_ref() {
            if r.same_weights(m) {
                return Ok(model.clone());
            }
        }
        let model = Rc::new(GptNeoX::load_on(
            &m.dir,
            m.processing,
            m.dtype,
            &self.ctx.device,
        )?);
        *self.loaded.model.borrow_mut() = Some((m.clone(), model.clone()));
        Ok(model)
    }
}
