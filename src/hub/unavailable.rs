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

/// What is being resolved, for the message.
pub struct Subject<'a> {
    pub kind: RepoKind,
    /// The source as the user wrote it (canonical form), e.g. `hf:ORG/NAME@main`.
    pub label: &'a str,
    pub repo: &'a str,
    pub revision: &'a str,
}

/// Builds the `Error::Input` for a source that is neither cached nor obtainable.
pub fn unavailable(
    subject: &Subject<'_>,
    endpoint: &str,
    repo_cache_dir: &Path,
    missing: &[String],
    why: Why<'_>,
) -> Error {
    let (what, key, example) = match subject.kind {
        RepoKind::Model => ("model", "model.source", "path:/dir/with/config.json"),
        RepoKind::Dataset => ("dataset", "data.source", "path:/dir/with/parquet/files"),
    };
    let reason = match why {
        Why::Offline => "HF_HUB_OFFLINE is set, so the hub was not contacted".to_string(),
        Why::Net(e) => format!("{e} [endpoint {endpoint}]"),
    };
    let cached = if repo_cache_dir.is_dir() && !missing.is_empty() {
        format!("cached copy lacks {}", missing.join(", "))
    } else {
        "not cached".to_string()
    };
    // The exact command that fills this cache, so the user can run it on a machine
    // with hub access (same HF_HOME / HF_HUB_CACHE) and copy the cache over.
    let mut download = format!("hf download {}", subject.repo);
    if subject.kind == RepoKind::Dataset {
        download.push_str(" --repo-type dataset");
    }
    if subject.revision != super::source::DEFAULT_REVISION {
        download.push_str(&format!(" --revision {}", subject.revision));
    }
    let online = match why {
        Why::Offline => "unset HF_HUB_OFFLINE to download it, or ",
        Why::Net(_) => "",
    };
    Error::input(format!(
        "{what} {} is not available: {reason}.\n  \
         cache searched: {} ({cached})\n  \
         to fix: {online}fill the cache where the hub is reachable (`{download}`), \
         or use a local copy: --set {key}={example}",
        subject.label,
        repo_cache_dir.display()
    ))
}
