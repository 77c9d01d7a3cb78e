//! `[sae] source = "saelens:DIR"`: SAEs trained elsewhere, evaluated and analysed instead of
//! a training grid. DIR is one SAELens SAE folder (cfg.json + sae_weights.safetensors) or a
//! folder of such folders (what `saerun export --format saelens` writes). Each SAE is
//! checked against the spec here, before anything runs: its hook must be the spec's hook,
//! its d_in the hook's width, its processing the spec's `model.processing`, and its model
//! the spec's (by content hash when the cfg.json records one, as saerun's exports do;
//! otherwise by the Hugging Face name).

use super::load::SpecOrigin;
use super::resolve::{content_hash, GridPoint, TextSetup};
use crate::sae::saelens::{self, SaeLensCfg, CFG_FILE, WEIGHTS_FILE};
use crate::{Error, Result};
use std::path::{Path, PathBuf};

/// One SAE to import, resolved and checked.
#[derive(Debug, Clone)]
pub struct ImportedSae {
    pub dir: PathBuf,
    /// The folder's name, for labels.
    pub name: String,
    /// blake3 of cfg.json and the weights: the import's identity in stage keys.
    pub content_hash: String,
    pub cfg: SaeLensCfg,
    /// Its identity in tables, and for `[analyses]` filters (ratio = d_sae / d_in).
    pub point: GridPoint,
}

const KEY: &str = "sae.source";
const FORMS: &str = "expected \"saelens:DIR\", DIR a SAELens SAE folder (cfg.json and sae_weights.safetensors) or a folder of them";

/// The SAEs `source` names, checked against the text setup `t`.
pub fn resolve_imports(
    source: &str,
    t: &TextSetup,
    origin: &SpecOrigin,
) -> Result<Vec<ImportedSae>> {
    let e = |what: String| origin.error(KEY, what);
    let Some(dir) = source.strip_prefix("saelens:").filter(|d| !d.is_empty()) else {
        return Err(e(format!("unsupported source \"{source}\"; {FORMS}")));
    };
    let dir = PathBuf::from(dir);
    if !dir.is_dir() {
        return Err(e(format!("{} is not a directory; {FORMS}", dir.display())));
    }
    let folders = if dir.join(CFG_FILE).is_file() {
        vec![dir.clone()]
    } else {
        let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(|err| e(format!("cannot list {}: {err}", dir.display())))?
            .filter_map(|entry| entry.ok().map(|x| x.path()))
            .filter(|p| p.join(CFG_FILE).is_file())
            .collect();
        v.sort();
        v
    };
    if folders.is_empty() {
        return Err(e(format!(
            "{} holds no {CFG_FILE}, nor do its sub-folders; {FORMS}",
            dir.display()
        )));
    }
    folders
        .iter()
        .map(|f| import_one(f, t).map_err(|err| e(err.to_string())))
        .collect()
}

fn import_one(dir: &Path, t: &TextSetup) -> Result<ImportedSae> {
    let cfg = saelens::read_cfg(dir)?;
    let file = dir.join(CFG_FILE);
    let bad = |what: String| Error::input(format!("{}: {what}", file.display()));
    let m = &cfg.meta;
    let Some(on) = &m.trained_on else {
        return Err(bad(format!(
            "key `metadata.hook_name`: expected the hook the SAE reads (the spec's \"{}\"), got nothing",
            t.hook.name()
        )));
    };
    if on.hook != t.hook.name() {
        return Err(bad(format!(
            "key `metadata.hook_name`: the SAE reads \"{}\", but the spec's hook.name is \"{}\"",
            on.hook,
            t.hook.name()
        )));
    }
    if m.d_in != t.d_in {
        return Err(bad(format!(
            "key `d_in`: {} does not match the width of {} in this model ({})",
            m.d_in,
            t.hook.name(),
            t.d_in
        )));
    }
    if on.processing != t.processing {
        return Err(bad(format!(
            "key `metadata.model_from_pretrained_kwargs`: the SAE was trained on activations with processing \"{}\", but the spec's model.processing is \"{}\"",
            on.processing, t.processing
        )));
    }
    match &on.model_hash {
        Some(hash) if *hash != t.model_hash => {
            return Err(bad(format!(
                "key `metadata.saerun.model_hash`: the SAE was trained on another model ({}, content hash {}…) than the spec's {} ({}…)",
                on.model_source,
                &hash[..hash.len().min(12)],
                t.model_source,
                &t.model_hash[..12]
            )))
        }
        Some(_) => {}
        None => {
            // Only a hub name can be compared by name; a local model has no name to match.
            if let Some(repo) = t.model_source.strip_prefix("hf:") {
                let repo = repo.split('@').next().unwrap_or(repo);
                let short = repo.rsplit('/').next().unwrap_or(repo);
                let name = on.model_source.as_str();
                if !(name.eq_ignore_ascii_case(repo) || name.eq_ignore_ascii_case(short)) {
                    return Err(bad(format!(
                        "key `metadata.model_name`: the SAE was trained on \"{name}\", but the spec's model.source is {}",
                        t.model_source
                    )));
                }
            }
        }
    }
    let weights = dir.join(WEIGHTS_FILE);
    if !weights.is_file() {
        return Err(Error::input(format!(
            "{}: missing; a SAELens SAE folder holds {CFG_FILE} and {WEIGHTS_FILE}",
            weights.display()
        )));
    }
    let content_hash = content_hash(&[file.clone(), weights])?;
    let point = GridPoint {
        architecture: m.architecture,
        d_sae: m.d_sae,
        ratio: m.d_sae as f64 / m.d_in as f64,
        l1: m.l1,
        k: m.k,
        seed: m.seed,
    };
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| dir.display().to_string());
    Ok(ImportedSae {
        dir: dir.to_path_buf(),
        name,
        content_hash,
        cfg,
        point,
    })
}
