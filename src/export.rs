//! `saerun export RUN --format saelens DIR`: every SAE of a run (trained or imported) as
//! one SAELens folder, from the SAE's own cache entry (weights and `sae.json`). Each
//! folder is built under a hidden name and renamed into place, so DIR never holds a
//! half-written SAE; an existing folder is never overwritten.

use crate::cache::Cache;
use crate::compare::run_ref;
use crate::device::HOST;
use crate::record::StageRecord;
use crate::sae::meta::{SaeMeta, META_FILE};
use crate::sae::{saelens, Sae};
use crate::spec::Architecture;
use crate::stages::{import_sae, train_sae};
use crate::store::atomic::sync_dir;
use crate::{Error, Result};
use serde::Serialize;
use std::fs::File;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// SAELens (`SAE.load_from_disk`): cfg.json + sae_weights.safetensors per SAE.
    Saelens,
}

/// One exported SAE.
#[derive(Debug, Serialize)]
pub struct Exported {
    /// Absolute.
    pub dir: PathBuf,
    /// The stage that made it (`train_sae` or `import_sae`) and its key.
    pub stage: String,
    pub key: String,
    pub label: String,
}

/// The folder name of an SAE: `relu_l1_d512_l1-0.05_s0`, `topk_d512_k32_s0`.
pub fn folder_name(meta: &SaeMeta) -> String {
    match (meta.architecture, meta.k) {
        (Architecture::TopK, Some(k)) => format!("topk_d{}_k{k}_s{}", meta.d_sae, meta.seed),
        _ => format!("relu_l1_d{}_l1-{}_s{}", meta.d_sae, meta.l1, meta.seed),
    }
}

/// Export every SAE of `run` (resolved as `saerun diff` does) into `out`.
pub fn export(
    cache: &Cache,
    results_dir: &Path,
    run: &str,
    _format: ExportFormat,
    out: &Path,
) -> Result<Vec<Exported>> {
    let found = run_ref::resolve(results_dir, run)?;
    let saes: Vec<&StageRecord> = found
        .record
        .stages
        .iter()
        .filter(|s| s.stage == train_sae::NAME || s.stage == import_sae::NAME)
        .collect();
    if saes.is_empty() {
        return Err(Error::input(format!(
            "run {} ({}) has no SAEs to export",
            found.record.run_id,
            found.dir.display()
        )));
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, "cannot create", e))?;
    let mut done = Vec::new();
    for s in saes {
        let entry = cache.lookup(&s.stage, &s.key)?.ok_or_else(|| {
            Error::input(format!(
                "{} {} of run {}: its cache entry {} is not in {} (deleted by `cache gc`, or another --cache-dir); run the spec again to recompute it",
                s.stage,
                s.label,
                found.record.run_id,
                s.key.short(),
                cache.root().display()
            ))
        })?;
        let meta_file = entry.file(META_FILE);
        if !meta_file.is_file() {
            return Err(Error::input(format!(
                "{} {} of run {}: the entry was made by a saerun that did not record what the SAE was trained on ({META_FILE}); run the spec again with this saerun to retrain it",
                s.stage, s.label, found.record.run_id
            )));
        }
        let meta: SaeMeta = crate::stages::read_json(&meta_file)?;
        let sae = Sae::load(&entry.file(train_sae::SAE_FILE), &HOST)?;
        let name = folder_name(&meta);
        let dest = out.join(&name);
        if dest.exists() {
            return Err(Error::input(format!(
                "{} exists; export into an empty directory or remove it",
                dest.display()
            )));
        }
        let tmp = out.join(format!(".{name}.tmp"));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir(&tmp).map_err(|e| Error::io(&tmp, "cannot create", e))?;
        let written = saelens::write(&tmp, &sae, &meta, Some(&s.key.hex()))
            .and_then(|()| publish_dir(&tmp, &dest));
        if written.is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        written?;
        done.push(Exported {
            dir: std::path::absolute(&dest).unwrap_or(dest),
            stage: s.stage.clone(),
            key: s.key.hex(),
            label: s.label.clone(),
        });
    }
    sync_dir(out)?;
    Ok(done)
}

/// fsync every file of `tmp` and `tmp` itself, then rename it to `dest`.
fn publish_dir(tmp: &Path, dest: &Path) -> Result<()> {
    for f in [saelens::CFG_FILE, saelens::WEIGHTS_FILE] {
        let p = tmp.join(f);
        File::open(&p)
            .and_then(|file| file.sync_all())
            .map_err(|e| Error::io(&p, "cannot sync", e))?;
    }
    sync_dir(tmp)?;
    std::fs::rename(tmp, dest).map_err(|e| Error::io(dest, "cannot rename into place", e))
}
