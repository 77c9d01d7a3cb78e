//! Resolving a [`ModelSource`] to a local directory: the cache first, the hub on a miss.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::cache::{CachedRepo, RepoKind};
use super::config::HubConfig;
use super::download::HubClient;
use super::source::ModelSource;
use super::unavailable::{unavailable, Subject, Why};
use crate::{Error, Result};

pub const CONFIG_FILE: &str = "config.json";
pub const TOKENIZER_FILE: &str = "tokenizer.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const WEIGHTS_INDEX_FILE: &str = "model.safetensors.index.json";

/// The files a model needs, all inside one local directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFiles {
    /// The local directory (for hub models the snapshot dir `.../snapshots/<commit>`).
    pub dir: PathBuf,
    pub config: PathBuf,
    pub tokenizer: PathBuf,
    /// `model.safetensors`, or the shards named by `model.safetensors.index.json`
    /// (sorted, deduplicated).
    pub weights: Vec<PathBuf>,
    /// The hub commit the files come from; `None` for `path:` sources. Worth recording
    /// with results, since a branch like `main` can move.
    pub commit: Option<String>,
}

impl ModelSource {
    /// A local directory holding `files`, using the environment's hub settings.
    ///
    /// Asking for `model.safetensors` means "the weights": a sharded model satisfies it
    /// with `model.safetensors.index.json` plus the shards it names. Asking for the index
    /// itself also brings its shards.
    pub fn resolve(&self, files: &[&str]) -> Result<PathBuf> {
        self.resolve_with(&HubConfig::from_env(), files)
    }

    /// Like [`ModelSource::resolve`] with explicit hub settings.
    pub fn resolve_with(&self, cfg: &HubConfig, files: &[&str]) -> Result<PathBuf> {
        let files: Vec<String> = files.iter().map(|f| f.to_string()).collect();
        Ok(resolve_files(self, cfg, &files)?.0)
    }
}

/// Resolves what the model loader needs: `config.json`, `tokenizer.json`, and either
/// `model.safetensors` or `model.safetensors.index.json` plus the shards it names.
pub fn resolve_model_files(source: &ModelSource) -> Result<ModelFiles> {
    resolve_model_files_with(source, &HubConfig::from_env())
}

/// Like [`resolve_model_files`] with explicit hub settings.
pub fn resolve_model_files_with(source: &ModelSource, cfg: &HubConfig) -> Result<ModelFiles> {
    let files = [CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE].map(String::from);
    let (dir, commit) = resolve_files(source, cfg, &files)?;
    model_files(&dir, commit)
}

/// The directory (and hub commit) holding `files`, with the weights rule of
/// [`ModelSource::resolve`].
fn resolve_files(
    source: &ModelSource,
    cfg: &HubConfig,
    files: &[String],
) -> Result<(PathBuf, Option<String>)> {
    for f in files {
        check_relative(f, "requested file")?;
    }
    match source {
        ModelSource::Path(dir) => {
            check_local_dir(dir, source)?;
            let present = |f: &str| dir.join(f).is_file();
            let mut missing = Vec::new();
            for f in files {
                let sharded = f == WEIGHTS_INDEX_FILE
                    || (f == WEIGHTS_FILE && !present(WEIGHTS_FILE) && present(WEIGHTS_INDEX_FILE));
                if sharded && present(WEIGHTS_INDEX_FILE) {
                    let shards = read_shards(&dir.join(WEIGHTS_INDEX_FILE))?;
                    missing.extend(shards.into_iter().filter(|s| !present(s)));
                } else if !present(f) {
                    missing.push(if f == WEIGHTS_FILE {
                        format!("{WEIGHTS_FILE} (or {WEIGHTS_INDEX_FILE} with its shards)")
                    } else {
                        f.clone()
                    });
                }
            }
            if !missing.is_empty() {
                return Err(local_missing(dir, source, &missing));
            }
            Ok((dir.clone(), None))
        }
        ModelSource::Hub { repo, revision } => {
            let hub = HubModel::new(cfg, repo, revision, source);
            let (dir, commit) = hub.resolve(files)?;
            Ok((dir, Some(commit)))
        }
    }
}

/// A hub model source bound to its settings and cache folder.
struct HubModel<'a> {
    cfg: &'a HubConfig,
    repo: &'a str,
    revision: &'a str,
    label: String,
    cache: CachedRepo,
}

impl<'a> HubModel<'a> {
    fn new(cfg: &'a HubConfig, repo: &'a str, revision: &'a str, source: &ModelSource) -> Self {
        HubModel {
            cfg,
            repo,
            revision,
            label: source.to_string(),
            cache: CachedRepo::new(&cfg.cache_dir, RepoKind::Model, repo),
        }
    }

    /// Cache first, then the hub: the snapshot dir and commit holding `files`.
    fn resolve(&self, files: &[String]) -> Result<(PathBuf, String)> {
        // Asking for the index means the sharded weights, which makes a request for
        // `model.safetensors` in the same call redundant.
        let wants_index = files.iter().any(|f| f == WEIGHTS_INDEX_FILE);
        let wants_single = !wants_index && files.iter().any(|f| f == WEIGHTS_FILE);
        let others: Vec<String> = files
            .iter()
            .filter(|f| *f != WEIGHTS_FILE && *f != WEIGHTS_INDEX_FILE)
            .cloned()
            .collect();
        let with = |extra: &str| {
            let mut v = others.clone();
            v.push(extra.to_string());
            v
        };
        let indexed = with(WEIGHTS_INDEX_FILE);

        // Cache: the single-file layout (or no weights at all), then the sharded one.
        // `wanted` ends up as what the "not available" message reports missing.
        let mut wanted = if wants_single {
            with(WEIGHTS_FILE)
        } else {
            others.clone()
        };
        if !wants_index {
            if let Some(hit) = self.cached(&wanted) {
                return Ok(hit);
            }
        }
        if wants_index || wants_single {
            wanted = indexed.clone();
            if let Some((dir, commit)) = self.cached(&indexed) {
                let mut all = indexed.clone();
                all.extend(read_shards(&dir.join(WEIGHTS_INDEX_FILE))?);
                if self.cached(&all).is_some() {
                    return Ok((dir, commit));
                }
                wanted = all;
            } else if wants_single {
                wanted = with(WEIGHTS_FILE);
            }
        }

        let (client, sha, listed) = self.list(&wanted)?;
        let has = |f: &str| listed.iter().any(|l| l == f);
        let sharded = wants_index || (wants_single && !has(WEIGHTS_FILE));
        let mut first = others.clone();
        if sharded {
            if !has(WEIGHTS_INDEX_FILE) && wants_single {
                return Err(self.no_safetensors(&listed, &sha));
            }
            first.push(WEIGHTS_INDEX_FILE.to_string());
        } else if wants_single {
            first.push(WEIGHTS_FILE.to_string());
        }
        self.require_listed(&listed, &first, &sha)?;
        client.fetch_all(RepoKind::Model, self.repo, &self.label, &sha, &first)?;
        let dir = self.cache.snapshot_dir(&sha);
        if sharded {
            let shards = read_shards(&dir.join(WEIGHTS_INDEX_FILE))?;
            self.require_listed(&listed, &shards, &sha)?;
            client.fetch_all(RepoKind::Model, self.repo, &self.label, &sha, &shards)?;
        }
        // The ref is written last, so a ref in the cache means a complete set of files.
        self.cache.write_ref(self.revision, &sha)?;
        Ok((dir, sha))
    }

    fn no_safetensors(&self, listed: &[String], sha: &str) -> Error {
        let weights: Vec<&str> = listed
            .iter()
            .map(String::as_str)
            .filter(|f| f.ends_with(".bin") || f.ends_with(".safetensors") || f.ends_with(".pt"))
            .collect();
        Error::input(format!(
            "model {} has neither {WEIGHTS_FILE} nor {WEIGHTS_INDEX_FILE} at commit {sha} \
             (weight files there: {}); saerun loads safetensors weights only: pick a revision \
             that has them or convert the weights and use --set model.source=path:/dir",
            self.label,
            if weights.is_empty() {
                "none".to_string()
            } else {
                weights.join(", ")
            }
        ))
    }

    /// The snapshot dir and commit if every file is cached for this revision.
    fn cached(&self, files: &[String]) -> Option<(PathBuf, String)> {
        let commit = self.cache.commit_for(self.revision)?;
        files
            .iter()
            .all(|f| self.cache.file(&commit, f).is_some())
            .then(|| (self.cache.snapshot_dir(&commit), commit))
    }

    /// After a cache miss: lists the revision on the hub (or fails with the one
    /// "not available" message, naming what the cache lacked).
    fn list(&self, wanted: &[String]) -> Result<(HubClient, String, Vec<String>)> {
        let missing = || -> Vec<String> {
            match self.cache.commit_for(self.revision) {
                Some(c) => wanted
                    .iter()
                    .filter(|f| self.cache.file(&c, f).is_none())
                    .cloned()
                    .collect(),
                None => wanted.to_vec(),
            }
        };
        let fail = |why: Why<'_>| {
            let subject = Subject {
                kind: RepoKind::Model,
                label: &self.label,
                repo: self.repo,
                revision: self.revision,
            };
            unavailable(
                &subject,
                &self.cfg.endpoint,
                self.cache.dir(),
                &missing(),
                why,
            )
        };
        if self.cfg.offline {
            return Err(fail(Why::Offline));
        }
        let client = HubClient::new(self.cfg)?;
        let listing = client
            .list(RepoKind::Model, self.repo, self.revision)
            .map_err(|e| fail(Why::Net(&e)))?;
        Ok((client, listing.sha, listing.files))
    }

    fn require_listed(&self, listed: &[String], files: &[String], sha: &str) -> Result<()> {
        let absent: Vec<&str> = files
            .iter()
            .filter(|f| !listed.contains(f))
            .map(String::as_str)
            .collect();
        if absent.is_empty() {
            return Ok(());
        }
        Err(Error::input(format!(
            "model {} has no {} at commit {sha} (it has: {})",
            self.label,
            absent.join(", "),
            preview(listed)
        )))
    }
}

fn model_files(dir: &Path, commit: Option<String>) -> Result<ModelFiles> {
    let weights = if dir.join(WEIGHTS_FILE).is_file() {
        vec![dir.join(WEIGHTS_FILE)]
    } else {
        read_shards(&dir.join(WEIGHTS_INDEX_FILE))?
            .into_iter()
            .map(|s| dir.join(s))
            .collect()
    };
    Ok(ModelFiles {
        dir: dir.to_path_buf(),
        config: dir.join(CONFIG_FILE),
        tokenizer: dir.join(TOKENIZER_FILE),
        weights,
        commit,
    })
}

/// The shard files named by a `model.safetensors.index.json` (`weight_map` values), sorted
/// and deduplicated; parsed and checked by the model loader's own reader.
pub fn read_shards(index: &Path) -> Result<Vec<String>> {
    let files: BTreeSet<String> = crate::model::weights::read_weight_map(index)?
        .into_iter()
        .map(|(_, file)| file)
        .collect();
    Ok(files.into_iter().collect())
}

/// Rejects names that would escape the directory they are joined onto.
fn check_relative(name: &str, what: &str) -> Result<()> {
    let bad = name.is_empty()
        || name.starts_with('/')
        || name.contains('\\')
        || name
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..");
    if bad {
        return Err(Error::input(format!(
            "{what} `{name}` is not a plain relative file name"
        )));
    }
    Ok(())
}

fn check_local_dir(dir: &Path, source: &ModelSource) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let state = if dir.exists() {
        "is not a directory"
    } else {
        "does not exist"
    };
    Err(Error::input(format!(
        "model.source `{source}`: {} {state}; it must be a directory with {CONFIG_FILE}, \
         {TOKENIZER_FILE} and {WEIGHTS_FILE} (or {WEIGHTS_INDEX_FILE} and its shards)",
        dir.display()
    )))
}

fn local_missing(dir: &Path, source: &ModelSource, missing: &[String]) -> Error {
    Error::input(format!(
        "model.source `{source}`: {} lacks {}",
        dir.display(),
        missing.join(", ")
    ))
}

/// The first few listed files, for messages about what a repository does contain.
pub(crate) fn preview(files: &[String]) -> String {
    const MAX: usize = 12;
    if files.is_empty() {
        return "no files".to_string();
    }
    let mut s = files
        .iter()
        .take(MAX)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if files.len() > MAX {
        s.push_str(&format!(", ... ({} files)", files.len()));
    }
    s
}
