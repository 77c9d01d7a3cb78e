//! Stage `import_sae`: an SAE trained elsewhere (`[sae] source = "saelens:DIR"`), converted
//! into saerun's `Sae` and recorded with what it was trained on, so that `eval_lm` and the
//! analyses read it exactly as they read a trained one. Its key is the content hash of the
//! SAELens folder's two files (never its path), checked again when the stage runs.

use crate::cache::Entry;
use crate::pipeline::{Graph, RunCtx, Stage, StageCtx, StageInputs};
use crate::sae::meta::META_FILE;
use crate::sae::saelens;
use crate::sae::Sae;
use crate::spec::resolve::content_hash;
use crate::spec::{GridPoint, ResolvedSpec};
use crate::{Error, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};

pub const NAME: &str = "import_sae";
pub const VERSION: u32 = 1;

pub struct ImportSae;

#[derive(Debug, Clone, Serialize)]
pub struct ImportParams {
    pub format: &'static str,
    /// blake3 of cfg.json and sae_weights.safetensors.
    pub content_hash: String,
}

pub struct ImportInputs {
    /// The SAELens folder: a location, not key material.
    pub dir: PathBuf,
    /// The SAE's identity (from its cfg.json, so determined by the content hash).
    pub point: GridPoint,
}

impl StageInputs for ImportInputs {
    fn nodes(&self) -> Vec<usize> {
        Vec::new()
    }
}

impl Stage for ImportSae {
    const NAME: &'static str = NAME;
    const VERSION: u32 = VERSION;
    const DESCRIPTION: &'static str = "an SAE trained elsewhere, read from SAELens' format";
    // Reads files on the host: the same weights whatever device the run computes on.
    const SAME_ON_EVERY_DEVICE: bool = true;
    type Params = ImportParams;
    type Inputs = ImportInputs;
    type Output = Sae;

    fn plan(graph: &mut Graph, spec: &ResolvedSpec) -> Result<()> {
        for import in &spec.imports {
            let params = ImportParams {
                format: "saelens",
                content_hash: import.content_hash.clone(),
            };
            let inputs = ImportInputs {
                dir: import.dir.clone(),
                point: import.point,
            };
            graph.add::<Self>(import.name.clone(), params, inputs)?;
        }
        Ok(())
    }

    fn run(_ctx: &StageCtx, params: &ImportParams, inputs: &ImportInputs, out: &Path) -> Result<()> {
        let dir = &inputs.dir;
        let files = [dir.join(saelens::CFG_FILE), dir.join(saelens::WEIGHTS_FILE)];
        if content_hash(&files)? != params.content_hash {
            return Err(Error::input(format!(
                "{}: the files changed after the spec was checked; run again",
                dir.display()
            )));
        }
        let cfg = saelens::read_cfg(dir)?;
        let sae = saelens::load(dir, &cfg)?;
        sae.save(&out.join(super::train_sae::SAE_FILE))?;
        super::write_json(&out.join(META_FILE), &cfg.meta)
    }

    fn load(ctx: &RunCtx, entry: &Entry) -> Result<Sae> {
        Sae::load(&entry.file(super::train_sae::SAE_FILE), &ctx.device)
    }
}
