//! Network side: repository listings through the hub's `/api/{models|datasets}/...` route
//! and file downloads through the `/resolve/` route, both with `ureq` (rustls).
//!
//! A download writes the cache exactly as Python's huggingface_hub does: the content goes
//! to `blobs/<etag>` (the `X-Linked-Etag` of an LFS file, else the `ETag`), and
//! `snapshots/<commit>/<file>` is a relative symlink to it; a commit-pinned download writes
//! no `refs/<sha>`. Metadata comes from a `HEAD` on the resolve URL that follows only
//! relative redirects (a renamed repository), so an LFS file's `302` to the CDN still
//! carries `X-Linked-Etag`/`X-Linked-Size`/`X-Repo-Commit`; the `GET` then follows the
//! redirect to the CDN.
//!
//! Reliability on a bad network:
//! - every request has a DNS/connect limit ([`HubConfig::connect_timeout`]) and an *idle*
//!   limit, "no byte received for N s": `HF_HUB_ETAG_TIMEOUT` for the listing and the
//!   metadata request, `HF_HUB_DOWNLOAD_TIMEOUT` for the transfer. It is ureq's
//!   `timeout_per_read` (ureq >= 3.5), which bounds each read of the socket (header and body
//!   alike) and restarts after every read that returned bytes. ureq's `timeout_recv_body`
//!   would be wrong here: it is one budget for the whole body and would cut off a large
//!   file that is still arriving.
//! - a transfer is saved into a temporary file inside `blobs/` and renamed to
//!   `blobs/<etag>` only once its size matches the size the hub announced; the snapshot
//!   symlink is created after that. A failed download leaves nothing behind (the temporary
//!   file is deleted; one left by a killed process is removed by the next download into
//!   the same repository, under the repository's download lock).
//! - a stall, a reset connection, a truncated body or an HTTP 5xx/429 is retried
//!   [`HubConfig::retries`] times with exponential back-off, resuming with a `Range`
//!   request from the bytes already received. 404/401/403 are never retried.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use ureq::config::RedirectAuthHeaders;
use ureq::Agent;

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
    /// The hub was reached but a transfer failed: stalled, connection reset, truncated
    /// body, HTTP 5xx (after the retries).
    Transfer(String),
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
            NetError::Transfer(why) | NetError::Other(why) => write!(f, "{why}"),
        }
    }
}

impl NetError {
    /// The reason without the "could not reach the hub" framing.
    fn reason(&self) -> String {
        match self {
            NetError::Unreachable(why) | NetError::Transfer(why) | NetError::Other(why) => {
                why.clone()
            }
            other => other.to_string(),
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

/// One failed attempt: the error and whether trying again may help.
struct Failure {
    error: NetError,
    retry: bool,
}

impl Failure {
    fn fatal(error: NetError) -> Self {
        Failure {
            error,
            retry: false,
        }
    }

    fn transient(error: NetError) -> Self {
        Failure { error, retry: true }
    }

    /// A reply with an error status: 404/401/403 are final, 5xx and 429 worth retrying.
    fn status(code: u16, what: &str) -> Self {
        match code {
            404 => Failure::fatal(NetError::NotFound),
            401 | 403 => Failure::fatal(NetError::Denied(code)),
            429 | 500..=599 => Failure::transient(NetError::Transfer(format!(
                "the server answered HTTP {code} to {what}"
            ))),
            _ => Failure::fatal(NetError::Other(format!(
                "the server answered HTTP {code} to {what}"
            ))),
        }
    }
}

/// What the resolve URL's `HEAD` says about a file.
#[derive(Debug, Clone)]
struct Remote {
    /// Blob name: `X-Linked-Etag` (LFS, sha256) or `ETag` (git blob id), unquoted.
    etag: String,
    /// `X-Linked-Size`, else `Content-Length` (None if the server sent neither).
    size: Option<u64>,
}

/// A configured connection to one hub endpoint and cache root.
pub struct HubClient {
    /// Listing requests: follows redirects, idle limit `etag_timeout`.
    api: Agent,
    /// Metadata `HEAD`: redirects are followed by hand (relative ones only).
    head: Agent,
    /// Transfers: follows redirects (to the CDN), idle limit `download_timeout`.
    data: Agent,
    cfg: HubConfig,
}

fn agent(cfg: &HubConfig, idle: Duration, redirects: u32, global: Option<Duration>) -> Agent {
    let connect = cfg.connect_timeout;
    Agent::config_builder()
        .timeout_resolve(Some(connect))
        .timeout_connect(Some(connect))
        // "No byte for `idle`": bounds every socket read, restarts after each one.
        .timeout_per_read(Some(idle))
        .timeout_per_write(Some(idle.max(connect)))
        .timeout_global(global)
        .max_redirects(redirects)
        // The token goes to the hub (and a renamed repository's new URL on the same
        // host), never to the CDN a file is redirected to.
        .redirect_auth_headers(RedirectAuthHeaders::SameHost)
        .http_status_as_error(false)
        .user_agent(concat!("saerun/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

impl HubClient {
    pub fn new(cfg: &HubConfig) -> Result<Self> {
        // The listing and metadata replies are small: a hub that accepts the connection but
        // trickles (or never finishes) its answer must not hang the run either.
        let small = Some(
            cfg.connect_timeout
                .max(cfg.etag_timeout)
                .max(Duration::from_secs(1))
                * 6,
        );
        Ok(HubClient {
            api: agent(cfg, cfg.etag_timeout, 10, small),
            head: agent(cfg, cfg.etag_timeout, 0, small),
            data: agent(cfg, cfg.download_timeout, 10, None),
            cfg: cfg.clone(),
        })
    }

    fn get(&self, agent: &Agent, url: &str) -> ureq::RequestBuilder<ureq::typestate::WithoutBody> {
        let mut req = agent.get(url);
        if let Some(token) = &self.cfg.token {
            req = req.header("Authorization", &format!("Bearer {token}"));
        }
        req
    }

    /// Lists a revision's files: `GET {endpoint}/api/{models|datasets}/{repo}/revision/{rev}`.
    /// A hub that cannot be connected to fails at once (the run reports it in seconds);
    /// a reachable hub that answers 5xx or stalls is retried like a download.
    pub fn list(
        &self,
        kind: RepoKind,
        repo: &str,
        revision: &str,
    ) -> std::result::Result<RepoListing, NetError> {
        let url = format!(
            "{}/api/{}/{repo}/revision/{}",
            self.cfg.endpoint,
            kind.plural(),
            encode(revision, false)
        );
        self.with_retries(&format!("the file listing of {repo}@{revision}"), |_| {
            self.list_once(&url)
        })
    }

    fn list_once(&self, url: &str) -> std::result::Result<RepoListing, Failure> {
        let reply = self.get(&self.api, url).call();
        let mut reply = match reply {
            Ok(r) => r,
            Err(e) => {
                let text = e.to_string();
                let f = net_failure(e, self.cfg.etag_timeout, "HF_HUB_ETAG_TIMEOUT");
                // Retry a hub that answered and then broke off; connection refused, DNS
                // failure, connect timeout mean nobody is there: fail fast.
                return Err(match f.error {
                    NetError::Transfer(_) if f.retry => f,
                    _ => Failure::fatal(NetError::Unreachable(text)),
                });
            }
        };
        let code = reply.status().as_u16();
        if !(200..=299).contains(&code) {
            return Err(Failure::status(code, "the file listing"));
        }
        let body = reply.body_mut().read_to_string().map_err(|e| {
            let mut f = net_failure(e, self.cfg.etag_timeout, "HF_HUB_ETAG_TIMEOUT");
            f.error = NetError::Unreachable(format!("reading the file listing: {}", f.error));
            f
        })?;
        let info: InfoReply = serde_json::from_str(&body).map_err(|e| {
            Failure::fatal(NetError::Other(format!(
                "the hub's file listing is not the expected JSON: {e}"
            )))
        })?;
        let sha = info
            .sha
            .filter(|s| !s.is_empty() && !s.contains(['/', '\\']) && s != "..")
            .ok_or_else(|| {
                Failure::fatal(NetError::Other(
                    "the hub's file listing has no commit `sha`".to_string(),
                ))
            })?;
        Ok(RepoListing {
            sha,
            files: info.siblings.into_iter().map(|s| s.rfilename).collect(),
        })
    }

    /// Runs `attempt` (given the attempt number) until it succeeds, fails for good, or the
    /// retries are spent, sleeping [`HubConfig::backoff`] between attempts.
    fn with_retries<T>(
        &self,
        what: &str,
        mut attempt: impl FnMut(u32) -> std::result::Result<T, Failure>,
    ) -> std::result::Result<T, NetError> {
        let mut n = 0;
        loop {
            match attempt(n) {
                Ok(v) => return Ok(v),
                Err(f) if f.retry && n < self.cfg.retries => {
                    let wait = self.cfg.backoff(n);
                    tracing::warn!(
                        "{what}: {} (attempt {} of {}); retrying in {:.1} s",
                        f.error,
                        n + 1,
                        self.cfg.retries + 1,
                        wait.as_secs_f64()
                    );
                    std::thread::sleep(wait);
                    n += 1;
                }
                Err(f) => {
                    return Err(match f.error {
                        NetError::Transfer(why) if n > 0 => {
                            NetError::Transfer(format!("{why} (gave up after {} attempts)", n + 1))
                        }
                        NetError::Unreachable(why) if n > 0 => NetError::Unreachable(format!(
                            "{why}; gave up after {} attempts",
                            n + 1
                        )),
                        e => e,
                    })
                }
            }
        }
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
        // One saerun process downloads into a repository at a time; a second one started
        // meanwhile waits, then takes what the first downloaded.
        let lock = lock_repo_downloads(&cache, repo)?;
        // Temporary files are private (0600); a blob gets the mode of a freshly created
        // file (0666 less the umask), as Python gives it. The lock file was created so.
        let blob_mode = lock.metadata().ok().map(|m| m.permissions());
        if let Some(p) = cache.file(commit, filename) {
            return Ok(p);
        }
        cache.remove_dangling(commit, filename);
        let blobs = cache.dir().join("blobs");
        std::fs::create_dir_all(&blobs).map_err(|e| local(&blobs, "create", e))?;
        remove_stale_temp_files(&blobs);
        let prefix = match kind {
            RepoKind::Model => "",
            RepoKind::Dataset => "datasets/",
        };
        let url = format!(
            "{}/{prefix}{repo}/resolve/{}/{}",
            self.cfg.endpoint,
            encode(commit, false),
            encode(filename, true)
        );
        tracing::info!(
            "downloading {filename} of {repo}@{commit} from {}",
            self.cfg.endpoint
        );
        let mut remote: Option<Remote> = None;
        // Kept across attempts so a retry resumes where the previous one stopped; deleted
        // on drop, so a failed download leaves nothing in blobs/.
        let mut partial: Option<tempfile::NamedTempFile> = None;
        let blob = self.with_retries(&format!("downloading {filename} of {repo}"), |_| {
            let remote = match &remote {
                Some(r) => r.clone(),
                None => remote.insert(self.metadata(&url, commit)?).clone(),
            };
            let blob = blobs.join(&remote.etag);
            // Same content already cached (another commit, or Python): link it.
            if let (Ok(meta), Some(size)) = (std::fs::metadata(&blob), remote.size) {
                if meta.is_file() && meta.len() == size {
                    return Ok(blob);
                }
            }
            if partial.is_none() {
                let tmp = tempfile::Builder::new()
                    .prefix(TEMP_PREFIX)
                    .suffix(".tmp")
                    .tempfile_in(&blobs)
                    .map_err(|e| Failure::fatal(local(&blobs, "create a file in", e)))?;
                partial = Some(tmp);
            }
            let tmp = partial.as_mut().expect("just set");
            self.transfer(&url, filename, &remote, tmp.as_file_mut())?;
            let tmp = partial.take().expect("present");
            if let Some(mode) = &blob_mode {
                let _ = tmp.as_file().set_permissions(mode.clone());
            }
            tmp.persist(&blob)
                .map_err(|e| Failure::fatal(local(&blob, "save", e.error)))?;
            Ok(blob)
        })?;
        let link = cache.snapshot_dir(commit).join(filename);
        link_blob(&blob, &link).map_err(|e| local(&link, "create", e))?;
        cache.file(commit, filename).ok_or_else(|| {
            NetError::Other(format!(
                "downloaded {filename} but {} does not lead to it",
                link.display()
            ))
        })
    }

    /// `HEAD` on the resolve URL: the blob name, the size, and a check that the server
    /// files it under `commit`.
    fn metadata(&self, url: &str, commit: &str) -> std::result::Result<Remote, Failure> {
        let mut url = url.to_string();
        let mut hops = 0;
        let reply = loop {
            let mut req = self.head.head(&url).header("Accept-Encoding", "identity");
            if let Some(token) = &self.cfg.token {
                req = req.header("Authorization", &format!("Bearer {token}"));
            }
            let reply = req
                .call()
                .map_err(|e| net_failure(e, self.cfg.etag_timeout, "HF_HUB_ETAG_TIMEOUT"))?;
            let code = reply.status().as_u16();
            let location = header(&reply, "location");
            // Like huggingface_hub: follow relative redirects (renamed repository) only;
            // an absolute one goes to the CDN and its reply carries the metadata.
            match location {
                Some(loc) if (300..400).contains(&code) && is_relative(&loc) && hops < 10 => {
                    url = format!("{}{loc}", origin(&url));
                    hops += 1;
                }
                _ => break reply,
            }
        };
        let code = reply.status().as_u16();
        if !(200..400).contains(&code) {
            return Err(Failure::status(code, "the file's metadata request"));
        }
        let etag = header(&reply, "x-linked-etag")
            .or_else(|| header(&reply, "etag"))
            .map(|e| {
                e.trim()
                    .trim_start_matches("W/")
                    .trim_matches('"')
                    .to_string()
            })
            .filter(|e| !e.is_empty() && !e.contains(['/', '\\']) && e != "..")
            .ok_or_else(|| missing_header("ETag"))?;
        let server_commit =
            header(&reply, "x-repo-commit").ok_or_else(|| missing_header("X-Repo-Commit"))?;
        if server_commit.trim() != commit {
            return Err(Failure::fatal(NetError::Other(format!(
                "the server files this file under commit {} instead of {commit}",
                server_commit.trim()
            ))));
        }
        // A redirect's own Content-Length is that of its (empty) body, not the file's.
        let size = header(&reply, "x-linked-size")
            .or_else(|| {
                (200..300)
                    .contains(&code)
                    .then(|| header(&reply, "content-length"))
                    .flatten()
            })
            .and_then(|s| s.trim().parse().ok());
        Ok(Remote { etag, size })
    }

    /// One `GET` of the file into `file`, resuming after the bytes `file` already holds.
    fn transfer(
        &self,
        url: &str,
        filename: &str,
        remote: &Remote,
        file: &mut File,
    ) -> std::result::Result<(), Failure> {
        let io =
            |e: std::io::Error| Failure::fatal(NetError::Other(format!("saving {filename}: {e}")));
        let mut have = file.metadata().map_err(io)?.len();
        // Known from the metadata request, else from this reply's headers.
        let mut size = remote.size;
        if size.is_some_and(|s| have > s) {
            file.set_len(0).map_err(io)?;
            have = 0;
        }
        if size != Some(have) || have == 0 {
            let mut req = self
                .get(&self.data, url)
                .header("Accept-Encoding", "identity");
            if have > 0 {
                req = req.header("Range", &format!("bytes={have}-"));
            }
            let idle = self.cfg.download_timeout;
            let mut reply = req
                .call()
                .map_err(|e| net_failure(e, idle, "HF_HUB_DOWNLOAD_TIMEOUT"))?;
            let code = reply.status().as_u16();
            let length =
                header(&reply, "content-length").and_then(|l| l.trim().parse::<u64>().ok());
            match code {
                206 if have > 0 => {
                    let start = header(&reply, "content-range").and_then(|r| {
                        r.strip_prefix("bytes ")?
                            .split('-')
                            .next()?
                            .trim()
                            .parse::<u64>()
                            .ok()
                    });
                    size = size.or_else(|| {
                        header(&reply, "content-range")?
                            .rsplit('/')
                            .next()?
                            .trim()
                            .parse()
                            .ok()
                    });
                    if start != Some(have) {
                        file.set_len(0).map_err(io)?;
                        return Err(Failure::transient(NetError::Transfer(format!(
                            "the server resumed at the wrong offset ({start:?} instead of {have})"
                        ))));
                    }
                }
                200..=299 => {
                    // Whole file (the server ignored the range, or nothing was kept).
                    if have > 0 {
                        file.set_len(0).map_err(io)?;
                        have = 0;
                    }
                    size = size.or(length);
                }
                _ => return Err(Failure::status(code, "the download")),
            }
            use std::io::Seek;
            file.seek(std::io::SeekFrom::Start(have)).map_err(io)?;
            let bar = self.progress_bar(filename, size, have);
            let mut reader = reply.body_mut().as_reader();
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let n = match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        // Keep what arrived: the next attempt resumes after it.
                        let _ = file.flush();
                        let mut f =
                            net_failure(ureq::Error::from(e), idle, "HF_HUB_DOWNLOAD_TIMEOUT");
                        f.error = NetError::Transfer(format!(
                            "{} ({})",
                            f.error.reason(),
                            got_of(have, size)
                        ));
                        return Err(f);
                    }
                };
                file.write_all(&buf[..n]).map_err(io)?;
                have += n as u64;
                bar.set_position(have);
                if size.is_some_and(|s| have > s) {
                    file.set_len(0).map_err(io)?;
                    return Err(Failure::transient(NetError::Transfer(format!(
                        "the server sent more than the announced {} bytes",
                        size.unwrap_or_default()
                    ))));
                }
            }
            bar.finish_and_clear();
        }
        if let Some(size) = size {
            if have != size {
                return Err(Failure::transient(NetError::Transfer(format!(
                    "{CUT_SHORT} ({})",
                    got_of(have, Some(size))
                ))));
            }
        }
        file.sync_all().map_err(io)?;
        Ok(())
    }

    fn progress_bar(&self, filename: &str, size: Option<u64>, at: u64) -> indicatif::ProgressBar {
        if !self.cfg.progress {
            return indicatif::ProgressBar::hidden();
        }
        let bar = indicatif::ProgressBar::new(size.unwrap_or(0));
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(filename.to_string());
        bar.set_position(at);
        bar
    }
}

/// A body that ended before its announced size: the connection was closed or reset.
const CUT_SHORT: &str = "the connection was closed or reset before the end of the file";

/// Temporary files of transfers in progress start with this (inside `blobs/`).
const TEMP_PREFIX: &str = ".saerun-download-";

/// Removes transfers left in `blobs/` by a killed saerun process. Called under the
/// repository's download lock, so no live saerun process is writing any of them.
fn remove_stale_temp_files(blobs: &Path) {
    let Ok(entries) = std::fs::read_dir(blobs) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// `snapshots/<commit>/<file>` → relative symlink to `blobs/<etag>` (a copy where symlinks
/// are unavailable, as Python does on Windows without developer mode).
fn link_blob(blob: &Path, link: &Path) -> std::io::Result<()> {
    let dir = link.parent().expect("snapshot path has a parent");
    std::fs::create_dir_all(dir)?;
    if link.is_file() {
        return Ok(());
    }
    if link.symlink_metadata().is_ok() {
        std::fs::remove_file(link)?;
    }
    // link = <repo>/snapshots/<commit>/<a>/<b>/<file>; blob = <repo>/blobs/<etag>.
    let repo_dir = blob
        .parent()
        .and_then(Path::parent)
        .expect("blob inside <repo>/blobs");
    let depth = dir
        .strip_prefix(repo_dir)
        .map(|rel| rel.components().count())
        .unwrap_or(0);
    let mut target = PathBuf::new();
    for _ in 0..depth {
        target.push("..");
    }
    target.push("blobs");
    target.push(blob.file_name().expect("blob has a name"));
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(&target, link)
    }
    #[cfg(windows)]
    {
        std::os::windows::fs::symlink_file(&target, link)
            .or_else(|_| std::fs::copy(blob, link).map(|_| ()))
    }
}

fn got_of(have: u64, size: Option<u64>) -> String {
    match size {
        Some(size) => format!("got {have} of {size} bytes"),
        None => format!("got {have} bytes"),
    }
}

fn local(path: &Path, what: &str, e: std::io::Error) -> NetError {
    NetError::Other(format!("cannot {what} {}: {e}", path.display()))
}

fn missing_header(name: &str) -> Failure {
    Failure::fatal(NetError::Other(format!(
        "the server's reply lacks the `{name}` header (is HF_ENDPOINT a Hugging Face hub or mirror?)"
    )))
}

fn header(reply: &ureq::http::Response<ureq::Body>, name: &str) -> Option<String> {
    reply
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Sorts a ureq error into a user-facing reason and whether to retry. `idle`/`var` name
/// the "no data" limit that applied to the request.
fn net_failure(e: ureq::Error, idle: Duration, var: &str) -> Failure {
    use std::io::ErrorKind;
    use ureq::Timeout;
    match e {
        ureq::Error::Timeout(Timeout::PerRead) => Failure::transient(NetError::Transfer(format!(
            "stalled: no data received for {} s ({var})",
            secs(idle)
        ))),
        ureq::Error::Timeout(t @ (Timeout::Resolve | Timeout::Connect)) => Failure::transient(
            NetError::Unreachable(format!("{t:?} timed out").to_lowercase()),
        ),
        ureq::Error::Timeout(t) => Failure::transient(NetError::Transfer(format!(
            "timed out ({})",
            format!("{t:?}").to_lowercase()
        ))),
        ureq::Error::HostNotFound | ureq::Error::ConnectionFailed => {
            Failure::transient(NetError::Unreachable(e.to_string()))
        }
        ureq::Error::Io(io) => match io.kind() {
            ErrorKind::ConnectionRefused
            | ErrorKind::NotConnected
            | ErrorKind::AddrNotAvailable => {
                Failure::transient(NetError::Unreachable(io.to_string()))
            }
            ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe => {
                Failure::transient(NetError::Transfer(format!(
                    "the connection was reset ({io})"
                )))
            }
            // ureq reports a connection reset in the middle of a body as the body ending
            // early, so both read the same.
            ErrorKind::UnexpectedEof => {
                Failure::transient(NetError::Transfer(CUT_SHORT.to_string()))
            }
            ErrorKind::TimedOut => Failure::transient(NetError::Transfer(format!(
                "stalled: no data received for {} s ({var})",
                secs(idle)
            ))),
            _ => Failure::transient(NetError::Unreachable(format!("network error: {io}"))),
        },
        ureq::Error::BodyStalled => Failure::transient(NetError::Transfer(
            "the body stopped making progress".to_string(),
        )),
        // A malformed or cut-off HTTP message: likely a broken connection.
        ureq::Error::Protocol(p) => {
            Failure::transient(NetError::Transfer(format!("broken HTTP reply: {p}")))
        }
        other => Failure::fatal(NetError::Unreachable(other.to_string())),
    }
}

fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{s:.0}")
    } else {
        format!("{s}")
    }
}

/// Percent-encodes a URL path part the way huggingface_hub's `quote` does; `/` is kept
/// in file paths and encoded (`%2F`) in revisions (`refs/convert/parquet`).
fn encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        let plain = b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (keep_slash && b == b'/');
        if plain {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn is_relative(location: &str) -> bool {
    location.starts_with('/') && !location.starts_with("//")
}

/// `scheme://host[:port]` of an absolute URL.
fn origin(url: &str) -> &str {
    let after_scheme = url.find("://").map(|i| i + 3).unwrap_or(0);
    match url[after_scheme..].find('/') {
        Some(i) => &url[..after_scheme + i],
        None => url,
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

impl HubClient {
    /// Fetches every file of `commit` not yet cached. A failure here comes after the
    /// listing succeeded, so it is a transfer problem (exit 1), not bad input, unless the
    /// hub says the file is missing or forbidden (exit 2). Nothing partial stays in the
    /// cache; files completed before the failure stay and are not fetched again.
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
                     cache: {} (nothing partial was kept; run again to retry)",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_parts_are_encoded_like_huggingface_hub() {
        assert_eq!(
            encode("refs/convert/parquet", false),
            "refs%2Fconvert%2Fparquet"
        );
        assert_eq!(encode("data/a b+c.parquet", true), "data/a%20b%2Bc.parquet");
        assert_eq!(origin("http://127.0.0.1:8080/a/b"), "http://127.0.0.1:8080");
        assert!(is_relative("/api/x") && !is_relative("//cdn/x") && !is_relative("https://x/"));
    }
}
