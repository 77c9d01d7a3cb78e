//! The one message shown when a hub model/dataset can be neither found in the cache nor
//! fetched: what was asked for, why it failed, where the cache was searched, and how to
//! point the spec at a local copy instead.

use std::path::Path;

use super::cache::RepoKind;
use super::download::NetError;
use crate::Error;

/// Why the hub could not supply what the cache lacked.
pub enum Why<'a> {
    /// `HF_HUB_OFFLINE` is set: the hub was deliberately not contacted.
    Offline,
    /// The hub was asked and failed.
    Net(&'a NetError),
}

/// Builds the `Error::Input` for a source that is neither cached nor obtainable.
pub fn unavailable(
    kind: RepoKind,
    source: &str,
    endpoint: &str,
    repo_cache_dir: &Path,
    missing: &[String],
    why: Why<'_>,
) -> Error {
    let (what, key, example) = match kind {
        RepoKind::Model => ("model", "model.source", "path:/dir/with/config.json"),
        RepoKind::Dataset => ("dataset", "data.source", "path:/dir/with/parquet/files"),
    };
    let reason = match why {
        Why::Offline => "HF_HUB_OFFLINE is set, so the hub was not contacted".to_string(),
        Why::Net(e) => format!("{e} [endpoint {endpoint}]"),
    };
    let cached = if repo_cache_dir.is_dir() {
        if missing.is_empty() {
            "present but incomplete".to_string()
        } else {
            format!("missing {}", missing.join(", "))
        }
    } else {
        "not cached".to_string()
    };
    let download_hint = match kind {
        RepoKind::Model => "`huggingface-cli download REPO`",
        RepoKind::Dataset => "`huggingface-cli download --repo-type dataset REPO`",
    };
    Error::input(format!(
        "{what} {source} is not available: {reason}.\n  \
         cache searched: {} ({cached})\n  \
         to fix: fetch it where the hub is reachable ({download_hint}, same HF_HOME/HF_HUB_CACHE) \
         and unset HF_HUB_OFFLINE if needed, or use a local copy: --set {key}={example}",
        repo_cache_dir.display()
    ))
}
