//! Parsing of the `model.source` / `data.source` spec strings into typed sources.
//!
//! Accepted forms:
//! - models: `path:DIR`, `hf:ORG/NAME`, `hf:ORG/NAME@REVISION`
//! - datasets: `path:FILE_OR_DIR`, `hf-dataset:ORG/NAME`, `hf-dataset:ORG/NAME@REVISION`
//!
//! A revision is a branch, a tag, a `refs/...` name or a 40-hex commit. Parsing is strict
//! because both the repo id and the revision end up in cache paths and URLs: anything
//! that could escape the cache directory (`..`, absolute paths) or break a URL is
//! rejected here with a message that lists the accepted forms.

use std::fmt;
use std::path::PathBuf;

use crate::{Error, Result};

/// Revision used when a hub source names none (the hub's default branch).
pub const DEFAULT_REVISION: &str = "main";

const MODEL_FORMS: &str = "accepted forms: `path:/dir/with/config.json`, `hf:ORG/NAME`, \
     `hf:ORG/NAME@REVISION` (branch, tag or 40-hex commit, e.g. `hf:EleutherAI/pythia-70m@step143000`)";
const DATASET_FORMS: &str = "accepted forms: `path:/file/or/dir`, `hf-dataset:ORG/NAME`, \
     `hf-dataset:ORG/NAME@REVISION` (e.g. `hf-dataset:NeelNanda/pile-10k`)";

/// Where a model's files come from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ModelSource {
    /// A local directory with `config.json`, `*.safetensors` and `tokenizer.json`.
    Path(PathBuf),
    /// A model repository on the Hugging Face hub, e.g. `EleutherAI/pythia-70m` @ `main`.
    Hub { repo: String, revision: String },
}

/// Where a dataset's files come from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DatasetSource {
    /// A local file, or a directory of `*.parquet` / `*.jsonl` / `*.txt` files.
    Path(PathBuf),
    /// A dataset repository on the Hugging Face hub (its Parquet files).
    Hub { repo: String, revision: String },
}

impl ModelSource {
    /// Parses `path:DIR` or `hf:ORG/NAME[@REVISION]`.
    pub fn parse(s: &str) -> Result<Self> {
        let s = s.trim();
        if let Some(rest) = s.strip_prefix("path:") {
            return Ok(ModelSource::Path(parse_path(
                s,
                rest,
                "model.source",
                MODEL_FORMS,
            )?));
        }
        if let Some(rest) = s.strip_prefix("hf:") {
            let (repo, revision) = parse_repo(s, rest, "model.source", MODEL_FORMS)?;
            return Ok(ModelSource::Hub { repo, revision });
        }
        if s.starts_with("hf-dataset:") {
            return Err(Error::input(format!(
                "model.source `{s}` names a dataset repository; a model needs `hf:`; {MODEL_FORMS}"
            )));
        }
        Err(unknown_form(s, "model.source", "hf:", MODEL_FORMS))
    }
}

impl DatasetSource {
    /// Parses `path:FILE_OR_DIR` or `hf-dataset:ORG/NAME[@REVISION]`.
    pub fn parse(s: &str) -> Result<Self> {
        let s = s.trim();
        if let Some(rest) = s.strip_prefix("path:") {
            return Ok(DatasetSource::Path(parse_path(
                s,
                rest,
                "data.source",
                DATASET_FORMS,
            )?));
        }
        if let Some(rest) = s.strip_prefix("hf-dataset:") {
            let (repo, revision) = parse_repo(s, rest, "data.source", DATASET_FORMS)?;
            return Ok(DatasetSource::Hub { repo, revision });
        }
        if s.starts_with("hf:") {
            // `hf:` means a *model* repo; the hub keeps datasets in a separate namespace,
            // so silently accepting it would download the wrong thing (or 404).
            return Err(Error::input(format!(
                "data.source `{s}` uses `hf:`, which names a model repository; \
                 use `hf-dataset:` for a dataset; {DATASET_FORMS}"
            )));
        }
        Err(unknown_form(s, "data.source", "hf-dataset:", DATASET_FORMS))
    }
}

impl fmt::Display for ModelSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelSource::Path(p) => write!(f, "path:{}", p.display()),
            ModelSource::Hub { repo, revision } => write!(f, "hf:{repo}@{revision}"),
        }
    }
}

impl fmt::Display for DatasetSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatasetSource::Path(p) => write!(f, "path:{}", p.display()),
            DatasetSource::Hub { repo, revision } => write!(f, "hf-dataset:{repo}@{revision}"),
        }
    }
}

/// True for a full 40-hex git commit id, which names a snapshot directly (no `refs/` file).
pub fn is_commit_hash(rev: &str) -> bool {
    rev.len() == 40 && rev.bytes().all(|b| b.is_ascii_hexdigit())
}

fn unknown_form(s: &str, key: &str, hub_prefix: &str, forms: &str) -> Error {
    // A bare `ORG/NAME` is the most likely slip; suggest the prefixed form.
    let hint = if !s.is_empty()
        && !s.contains(':')
        && validate_repo_id(s.split('@').next().unwrap_or(s)).is_ok()
    {
        format!(" (did you mean `{hub_prefix}{s}`?)")
    } else {
        String::new()
    };
    Error::input(format!(
        "{key} `{s}` is not a recognised source{hint}; {forms}"
    ))
}

fn parse_path(s: &str, rest: &str, key: &str, forms: &str) -> Result<PathBuf> {
    if rest.trim().is_empty() {
        return Err(Error::input(format!(
            "{key} `{s}` has an empty path; {forms}"
        )));
    }
    // `~/` is expanded because specs are often written by hand and shells don't expand
    // inside `--set key=value` or TOML strings.
    if let Some(tail) = rest.strip_prefix("~/") {
        if let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
            return Ok(PathBuf::from(home).join(tail));
        }
    }
    Ok(PathBuf::from(rest))
}

fn parse_repo(s: &str, rest: &str, key: &str, forms: &str) -> Result<(String, String)> {
    let (repo, revision) = match rest.split_once('@') {
        Some((repo, rev)) => (repo, rev),
        None => (rest, DEFAULT_REVISION),
    };
    validate_repo_id(repo).map_err(|why| {
        Error::input(format!(
            "{key} `{s}`: repository id `{repo}` {why}; {forms}"
        ))
    })?;
    validate_revision(revision).map_err(|why| {
        Error::input(format!("{key} `{s}`: revision `{revision}` {why}; {forms}"))
    })?;
    Ok((repo.to_string(), revision.to_string()))
}

/// Mirrors huggingface_hub's `validate_repo_id`: `NAME` or `ORG/NAME` of `[A-Za-z0-9._-]`,
/// no `--` or `..` (the cache uses `--` as separator), no leading/trailing `-` or `.`.
fn validate_repo_id(repo: &str) -> std::result::Result<(), &'static str> {
    if repo.is_empty() {
        return Err("is empty");
    }
    let parts: Vec<&str> = repo.split('/').collect();
    if parts.len() > 2 {
        return Err("must be `ORG/NAME` (at most one `/`)");
    }
    for part in &parts {
        if part.is_empty() || part.len() > 96 {
            return Err("must be `ORG/NAME` with non-empty parts of at most 96 characters");
        }
        if !part
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err("may only contain letters, digits, `-`, `_` and `.`");
        }
        if part.starts_with(['-', '.']) || part.ends_with(['-', '.']) {
            return Err("may not start or end a part with `-` or `.`");
        }
    }
    if repo.contains("--") || repo.contains("..") {
        return Err("may not contain `--` or `..`");
    }
    Ok(())
}

/// Revisions become `refs/<revision>` cache paths and URL path segments, so only
/// characters that are safe in both are allowed, and no `..` / empty components.
fn validate_revision(rev: &str) -> std::result::Result<(), &'static str> {
    if rev.is_empty() {
        return Err("is empty (write `@main` or leave out the `@`)");
    }
    if !rev
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/' | b'+'))
    {
        return Err("may only contain letters, digits, `-`, `_`, `.`, `+` and `/`");
    }
    if rev
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err("has an empty, `.` or `..` path component");
    }
    Ok(())
}
