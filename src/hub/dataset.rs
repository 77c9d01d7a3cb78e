//! Resolving a [`DatasetSource`] to local data files: a dataset repo's Parquet files
//! (from the cache, else downloaded), or local `.parquet` / `.jsonl` / `.txt` files.

use std::path::{Path, PathBuf};

use super::cache::{CachedRepo, RepoKind};
use super::config::HubConfig;
use super::download::{HubClient, NetError, RepoListing};
use super::model::preview;
use super::source::{is_commit_hash, DatasetSource};
use super::unavailable::{unavailable, Subject, Why};
use crate::{Error, Result};

/// The branch where the hub's dataset viewer stores an automatic Parquet conversion of
/// datasets that are not Parquet to begin with.
pub const PARQUET_CONVERT_REVISION: &str = "refs/convert/parquet";

/// File extensions taken from a local dataset directory.
pub const LOCAL_DATA_EXTENSIONS: [&str; 3] = ["parquet", "jsonl", "txt"];

impl DatasetSource {
    /// The data files, using the environment's hub settings. For hub datasets these are
    /// Parquet files inside the cache's snapshot directory.
    pub fn resolve_parquet(&self) -> Result<Vec<PathBuf>> {
        self.resolve_parquet_with(&HubConfig::from_env())
    }

    /// Like [`DatasetSource::resolve_parquet`] with explicit hub settings.
    pub fn resolve_parquet_with(&self, cfg: &HubConfig) -> Result<Vec<PathBuf>> {
        match self {
            DatasetSource::Path(p) => local_files(p, self),
            DatasetSource::Hub { repo, revision } => resolve_hub(cfg, repo, revision, self),
        }
    }
}

fn resolve_hub(
    cfg: &HubConfig,
    repo: &str,
    revision: &str,
    source: &DatasetSource,
) -> Result<Vec<PathBuf>> {
    let label = source.to_string();
    let cache = CachedRepo::new(&cfg.cache_dir, RepoKind::Dataset, repo);
    // A pinned commit must give that commit's data, never a later conversion.
    let may_convert = revision != PARQUET_CONVERT_REVISION && !is_commit_hash(revision);
    let mut revisions = vec![revision];
    if may_convert {
        revisions.push(PARQUET_CONVERT_REVISION);
    }

    // Cache first. refs/<rev> is only written after all selected files were fetched, so
    // a ref plus parquet files means a complete set.
    for rev in &revisions {
        if let Some(commit) = cache.commit_for(rev) {
            let chosen = select_parquet(
                &cache.snapshot_files(&commit),
                *rev == PARQUET_CONVERT_REVISION,
            );
            if !chosen.is_empty() {
                let dir = cache.snapshot_dir(&commit);
                return Ok(chosen.iter().map(|f| dir.join(f)).collect());
            }
        }
    }

    let fail = |why: Why<'_>| {
        let subject = Subject {
            kind: RepoKind::Dataset,
            label: &label,
            repo,
            revision,
        };
        unavailable(
            &subject,
            &cfg.endpoint,
            cache.dir(),
            &["*.parquet".to_string()],
            why,
        )
    };
    if cfg.offline {
        return Err(fail(Why::Offline));
    }
    let client = HubClient::new(cfg)?;

    let mut first_listing: Option<RepoListing> = None;
    for rev in &revisions {
        let convert = *rev == PARQUET_CONVERT_REVISION;
        let listing = match client.list(RepoKind::Dataset, repo, rev) {
            Ok(l) => l,
            // The conversion branch is optional: its absence just means "no parquet".
            Err(NetError::NotFound) if convert && first_listing.is_some() => break,
            Err(NetError::NotFound) if !convert && may_convert => continue,
            Err(e) => return Err(fail(Why::Net(&e))),
        };
        let chosen = select_parquet(&listing.files, convert);
        if chosen.is_empty() {
            first_listing.get_or_insert(listing);
            continue;
        }
        client.fetch_all(RepoKind::Dataset, repo, &label, &listing.sha, &chosen)?;
        cache.write_ref(rev, &listing.sha)?;
        let dir = cache.snapshot_dir(&listing.sha);
        tracing::info!(
            "dataset {label}: {} parquet file(s) at {rev} ({})",
            chosen.len(),
            listing.sha
        );
        return Ok(chosen.iter().map(|f| dir.join(f)).collect());
    }
    let files = first_listing.map(|l| l.files).unwrap_or_default();
    Err(Error::input(format!(
        "dataset {label} has no Parquet files (it has: {}){}; \
         use a dataset repository with Parquet data or --set data.source=path:/dir/with/files",
        preview(&files),
        if may_convert {
            format!(", and the hub has no {PARQUET_CONVERT_REVISION} conversion")
        } else {
            String::new()
        }
    )))
}

/// Which Parquet files of a listing make up the dataset: the `train` split when the
/// repository marks splits (pile-10k: `data/train-00000-of-00001-<hash>.parquet`),
/// otherwise all of them. In the `refs/convert/parquet` layout (`<config>/<split>/NNNN.parquet`)
/// only one config is taken, `default` if present, since configs are different datasets.
pub fn select_parquet(files: &[String], convert_layout: bool) -> Vec<String> {
    let mut parquet: Vec<String> = files
        .iter()
        .filter(|f| f.ends_with(".parquet"))
        .cloned()
        .collect();
    parquet.sort();
    if convert_layout {
        let configs: Vec<&str> = parquet.iter().filter_map(|f| f.split('/').next()).collect();
        let config = if configs.contains(&"default") {
            Some("default".to_string())
        } else {
            configs.first().map(|c| c.to_string())
        };
        if let Some(config) = config {
            let prefix = format!("{config}/");
            parquet.retain(|f| f.starts_with(&prefix));
        }
    }
    if parquet.iter().any(|f| is_train(f)) {
        parquet.retain(|f| is_train(f));
    }
    parquet
}

fn is_train(path: &str) -> bool {
    let mut parts = path.split('/').collect::<Vec<_>>();
    let name = parts.pop().unwrap_or_default();
    parts.contains(&"train")
        || name.starts_with("train-")
        || name.starts_with("train_")
        || name.starts_with("train.")
}

fn local_files(path: &Path, source: &DatasetSource) -> Result<Vec<PathBuf>> {
    if path.is_file() {
        // Checked here so that `validate` reports it and `run` fails before any stage
        // runs, as for a directory (which only collects files of these types).
        let known = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| LOCAL_DATA_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()));
        if !known {
            return Err(Error::input(format!(
                "data.source `{source}`: {}: unsupported data file type; accepted extensions: {}",
                path.display(),
                LOCAL_DATA_EXTENSIONS
                    .iter()
                    .map(|e| format!(".{e}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        return Ok(vec![path.to_path_buf()]);
    }
    if !path.is_dir() {
        return Err(Error::input(format!(
            "data.source `{source}`: {} does not exist; give a data file or a directory of \
             .parquet/.jsonl/.txt files",
            path.display()
        )));
    }
    let mut out = Vec::new();
    collect_data_files(path, &mut out).map_err(|e| Error::io(path, "listing", e))?;
    out.sort();
    if out.is_empty() {
        return Err(Error::input(format!(
            "data.source `{source}`: {} contains no .parquet, .jsonl or .txt files",
            path.display()
        )));
    }
    Ok(out)
}

/// Recursive so a copied hub snapshot (`data/train-*.parquet`) works as a `path:` source;
/// hidden entries (`.git`, `.cache`) are skipped.
fn collect_data_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let hidden = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        if path.is_dir() {
            collect_data_files(&path, out)?;
        } else if path.is_file()
            && path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| LOCAL_DATA_EXTENSIONS.contains(&e))
        {
            out.push(path);
        }
    }
    Ok(())
}
