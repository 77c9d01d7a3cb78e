//! Network side: repository listings through the hub's `/api/{models|datasets}/...`
//! route and file downloads through hf-hub 0.5's sync API (`ureq`, rustls).
//!
//! hf-hub writes downloads the way Python does: `blobs/<etag>.part` renamed to
//! `blobs/<etag>` once complete, then a relative symlink `snapshots/<commit>/<file>`.
//! What it lacks (and is handled here): `HF_HUB_OFFLINE`, `HF_HUB_CACHE`, connect
//! timeouts. The listing request goes first, with short resolve/connect timeouts, so
//! an unreachable hub is detected in seconds before hf-hub's timeout-less agent is used.

use std::fs::File;
use std::path::PathBuf;
use std::time::Duration;

use hf_hub::api::sync::{Api, ApiBuilder, ApiError};
use hf_hub::{Repo, RepoType};
use serde::Deserialize;

use super::cache::{CachedRepo, RepoKind};
use super::config::HubConfig;
use crate::{file_lock, Error, Result};

/// Why a hub request failed, sorted by what the user can do about it.
#[derive(Debug, Clone)]
pub enum NetError {
    /// DNS, connect, TLS or timeout failure: the hub could not be talked to.
    Unreachable(String),
    /// HTTP 404: no such repository, revision or file.
    NotFound,
    /// HTTP 401/403: private or gated repository, token missing or insufficient.
    Denied(u16),
    /// Anything else (other HTTP status, malformed reply, local I/O while saving).
    Other(String),
}

impl std::fmt::Display for NetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NetError::Unreachable(why) => write!(f, "could not reach the hub ({why})"),
            NetError::NotFound => {
                write!(f, "the hub has no such repository or revision (HTTP 404)")
            }
            NetError::Denied(code) => write!(
                f,
                "the hub refused access (HTTP {code}): the repository may be private or gated; \
                 set HF_TOKEN or run `huggingface-cli login`"
            ),
            NetError::Other(why) => write!(f, "{why}"),
        }
    }
}

/// The files of one revision of a repository, as listed by the hub.
#[derive(Debug, Clone)]
pub struct RepoListing {
    /// The commit the revision resolved to.
    pub sha: String,
    /// Repository-relative paths (`siblings[].rfilename`).
    pub files: Vec<String>,
}

#[derive(Deserialize)]
struct InfoReply {
    sha: Option<String>,
    #[serde(default)]
    siblings: Vec<Sibling>,
}

#[derive(Deserialize)]
struct Sibling {
    rfilename: String,
}

/// A configured connection to one hub endpoint and cache root.
pub struct HubClient {
    api: Api,
    cfg: HubConfig,
}

impl HubClient {
    pub fn new(cfg: &HubConfig) -> Result<Self> {
        let api = ApiBuilder::new()
            .with_endpoint(cfg.endpoint.clone())
            .with_cache_dir(cfg.cache_dir.clone())
            // Explicit token: hf-hub would otherwise read `<cache_dir>/../token`, which
            // is wrong whenever HF_HUB_CACHE is not `$HF_HOME/hub`.
            .with_token(cfg.token.clone())
            .with_progress(cfg.progress)
            // Resumes an interrupted transfer from the `.part` file a couple of times;
            // only reached after the listing proved the hub reachable.
            .with_retries(2)
            .with_user_agent("saerun", env!("CARGO_PKG_VERSION"))
            .build()
            .map_err(|e| Error::run(format!("cannot set up the hub client: {e}")))?;
        Ok(HubClient {
            api,
            cfg: cfg.clone(),
        })
    }

    fn repo(&self, kind: RepoKind, repo: &str, revision: &str) -> Repo {
        let ty = match kind {
            RepoKind::Model => RepoType::Model,
            RepoKind::Dataset => RepoType::Dataset,
        };
        Repo::with_revision(repo.to_string(), ty, revision.to_string())
    }

    /// Lists a revision's files: `GET {endpoint}/api/{models|datasets}/{repo}/revision/{rev}`.
    pub fn list(
        &self,
        kind: RepoKind,
        repo: &str,
        revision: &str,
    ) -> std::result::Result<RepoListing, NetError> {
        let t = self.cfg.connect_timeout;
        let reply = self
            .api
            .repo(self.repo(kind, repo, revision))
            .info_request()
            .config()
            .timeout_resolve(Some(t))
            .timeout_connect(Some(t))
            // The listing is small; a hub that accepts the connection but never answers
            // must not hang the run either.
            .timeout_global(Some(t.max(Duration::from_secs(1)) * 6))
            .http_status_as_error(false)
            .build()
            .call();
        let mut reply = match reply {
            Ok(r) => r,
            Err(e) => return Err(NetError::Unreachable(e.to_string())),
        };
        match reply.status().as_u16() {
            200..=299 => {}
            404 => return Err(NetError::NotFound),
            code @ (401 | 403) => return Err(NetError::Denied(code)),
            code => {
                return Err(NetError::Other(format!(
                    "the hub answered HTTP {code} to the file listing"
                )))
            }
        }
        let body = reply
            .body_mut()
            .read_to_string()
            .map_err(|e| NetError::Unreachable(format!("reading the file listing: {e}")))?;
        let info: InfoReply = serde_json::from_str(&body).map_err(|e| {
            NetError::Other(format!(
                "the hub's file listing is not the expected JSON: {e}"
            ))
        })?;
        let sha = info
            .sha
            .filter(|s| !s.is_empty() && !s.contains(['/', '\\']))
            .ok_or_else(|| {
                NetError::Other("the hub's file listing has no commit `sha`".to_string())
            })?;
        Ok(RepoListing {
            sha,
            files: info.siblings.into_iter().map(|s| s.rfilename).collect(),
        })
    }

    /// Downloads one file of `commit` into the cache (unless already there) and returns
    /// its snapshot path. Pinning the commit (not the branch) keeps all files of one
    /// resolve consistent even if the branch moves meanwhile.
    pub fn fetch(
        &self,
        kind: RepoKind,
        repo: &str,
        commit: &str,
        filename: &str,
    ) -> std::result::Result<PathBuf, NetError> {
        let cache = CachedRepo::new(&self.cfg.cache_dir, kind, repo);
        if let Some(p) = cache.file(commit, filename) {
            return Ok(p);
        }
        // hf-hub's own per-blob lock gives up after 5 s, so a second saerun starting while
        // the first downloads a large file would fail. Wait for the first instead, then
        // take what it downloaded.
        let _lock = lock_repo_downloads(&cache, repo)?;
        if let Some(p) = cache.file(commit, filename) {
            return Ok(p);
        }
        cache.remove_dangling(commit, filename);
        let sha_ref = cache.ref_path(commit);
        let had_sha_ref = sha_ref.exists();
        tracing::info!(
            "downloading {filename} of {repo}@{commit} from {}",
            self.cfg.endpoint
        );
        let result = self
            .api
            .repo(self.repo(kind, repo, commit))
            .download(filename)
            .map_err(classify);
        // hf-hub writes `refs/<revision>` even when the revision is a commit; Python never
        // does, and a `refs/<sha>` would show up as a bogus branch in `huggingface-cli scan-cache`.
        if !had_sha_ref {
            let _ = std::fs::remove_file(&sha_ref);
        }
        result?;
        // The server decides the snapshot dir (X-Repo-Commit); a mirror answering with
        // another commit would leave the file where the caller will not look.
        cache.file(commit, filename).ok_or_else(|| {
            NetError::Other(format!(
                "downloaded {filename} but the server filed it under a commit other than {commit}"
            ))
        })
    }
}

/// The repository's saerun download lock, blocking (with a log line) while another process
/// holds it.
fn lock_repo_downloads(cache: &CachedRepo, repo: &str) -> std::result::Result<File, NetError> {
    let path = cache.download_lock_path();
    let io_err = |what: &str, e: std::io::Error| {
        NetError::Other(format!("cannot {what} {}: {e}", path.display()))
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| io_err("create the folder of", e))?;
    }
    let file = file_lock::open(&path).map_err(|e| io_err("open", e))?;
    file_lock::lock_or_wait(&file, || {
        tracing::info!("waiting for another saerun process downloading {repo}")
    })
    .map_err(|e| io_err("lock", e))?;
    Ok(file)
}

fn classify(e: ApiError) -> NetError {
    match e {
        ApiError::RequestError(e) => {
            // ureq's error type is not nameable without a direct dependency; its Display
            // for HTTP statuses is the stable `http status: <code>`.
            let text = e.to_string();
            match text.strip_prefix("http status: ").map(str::trim) {
                Some("404") => NetError::NotFound,
                Some(code @ ("401" | "403")) => NetError::Denied(code.parse().unwrap_or(403)),
                Some(code) => NetError::Other(format!("the hub answered HTTP {code}")),
                None => NetError::Unreachable(text),
            }
        }
        ApiError::TooManyRetries(inner) => classify(*inner),
        ApiError::MissingHeader(h) => NetError::Other(format!(
            "the server's reply lacks the `{h}` header (is HF_ENDPOINT a Hugging Face hub or mirror?)"
        )),
        other => NetError::Other(other.to_string()),
    }
}

impl HubClient {
    /// Fetches every file of `commit` not yet cached. A failure here comes after the
    /// listing succeeded, so it is a transfer problem (exit 1), not bad input; the
    /// `.part` file stays in `blobs/` and the next run resumes it.
    pub fn fetch_all(
        &self,
        kind: RepoKind,
        repo: &str,
        source: &str,
        commit: &str,
        files: &[String],
    ) -> Result<()> {
        for file in files {
            self.fetch(kind, repo, commit, file).map_err(|e| {
                let msg = format!(
                    "downloading {file} of {source} (commit {commit}) from {} failed: {e}\n  \
                     cache: {} (run again to resume)",
                    self.cfg.endpoint,
                    CachedRepo::new(&self.cfg.cache_dir, kind, repo)
                        .dir()
                        .display()
                );
                match e {
                    NetError::Denied(_) | NetError::NotFound => Error::input(msg),
                    _ => Error::run(msg),
                }
            })?;
        }
        Ok(())
    }
}
