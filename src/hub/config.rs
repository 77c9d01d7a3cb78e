//! Hub settings (endpoint, cache directory, offline switch, token, timeouts, retries), read
//! from the same environment variables as Python's `huggingface_hub` so both share one cache
//! and behave alike on a bad network.
//!
//! The settings are an explicit struct rather than ambient `std::env` reads deep inside
//! the resolver so tests (and callers with their own overrides) can run side by side
//! without racing on process-global environment variables.

use std::path::PathBuf;
use std::time::Duration;

/// The public hub, used when `HF_ENDPOINT` is unset.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// How to reach the hub and where its cache lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubConfig {
    /// Base URL without trailing slash (`HF_ENDPOINT`, default `https://huggingface.co`).
    pub endpoint: String,
    /// The hub cache root holding `models--ORG--NAME/` etc.
    /// (`HF_HUB_CACHE`, else `HUGGINGFACE_HUB_CACHE`, else `$HF_HOME/hub`).
    pub cache_dir: PathBuf,
    /// Never touch the network (`HF_HUB_OFFLINE` / `TRANSFORMERS_OFFLINE` = 1/true/yes/on).
    pub offline: bool,
    /// Bearer token (`HF_TOKEN`, else the file `HF_TOKEN_PATH` or `$HF_HOME/token`).
    pub token: Option<String>,
    /// Draw download progress bars (off with `HF_HUB_DISABLE_PROGRESS_BARS=1`).
    pub progress: bool,
    /// Limit for DNS resolution and TCP/TLS connect of every request to the hub.
    /// Kept short so an unreachable hub fails in seconds, not after the OS's ~2 min.
    pub connect_timeout: Duration,
    /// How long the listing and file-metadata requests may go without receiving a byte
    /// (`HF_HUB_ETAG_TIMEOUT`, seconds, default 10).
    pub etag_timeout: Duration,
    /// How long a file transfer may go without receiving a byte before it counts as
    /// stalled (`HF_HUB_DOWNLOAD_TIMEOUT`, seconds, default 10). An idle limit, not a total:
    /// a large file that keeps arriving is never cut off.
    pub download_timeout: Duration,
    /// How many times a failed transfer is retried (stall, reset, truncated body, HTTP
    /// 5xx/429) before the run fails (`SAERUN_HUB_RETRIES`, default 5). Never for 404/401/403.
    pub retries: u32,
    /// Wait before the first retry; doubled for each further one, capped at
    /// [`MAX_RETRY_BACKOFF`] (huggingface_hub's `http_backoff` uses 1 s and 8 s).
    pub retry_backoff: Duration,
}

/// Default for `HF_HUB_ETAG_TIMEOUT` and `HF_HUB_DOWNLOAD_TIMEOUT`, as in huggingface_hub.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default connect (and DNS) timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default number of retries of a failed transfer.
pub const DEFAULT_RETRIES: u32 = 5;
/// Default wait before the first retry.
pub const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_secs(1);
/// Longest wait between two retries.
pub const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(8);

impl HubConfig {
    /// Settings from the process environment (what production uses).
    pub fn from_env() -> Self {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Settings from an arbitrary variable lookup; `from_env` with the lookup injected,
    /// so the precedence rules can be tested without mutating the real environment.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Self {
        // Python treats empty variables as unset (`os.getenv(...) or default`).
        let var = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        let home = var("HOME").map(PathBuf::from).or_else(std::env::home_dir);
        let expand = |v: String| -> PathBuf {
            match (v.strip_prefix("~/"), &home) {
                (Some(tail), Some(h)) => h.join(tail),
                _ => PathBuf::from(v),
            }
        };
        let hf_home = var("HF_HOME").map(expand).unwrap_or_else(|| {
            let xdg = var("XDG_CACHE_HOME").map(expand).unwrap_or_else(|| {
                home.clone()
                    .unwrap_or_else(|| PathBuf::from("."))
                    .join(".cache")
            });
            xdg.join("huggingface")
        });
        let cache_dir = var("HF_HUB_CACHE")
            .or_else(|| var("HUGGINGFACE_HUB_CACHE"))
            .map(expand)
            .unwrap_or_else(|| hf_home.join("hub"));
        let endpoint = var("HF_ENDPOINT")
            .map(|e| e.trim().trim_end_matches('/').to_string())
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        let offline = var("HF_HUB_OFFLINE")
            .or_else(|| var("TRANSFORMERS_OFFLINE"))
            .is_some_and(|v| is_true(&v));
        let token = var("HF_TOKEN")
            .or_else(|| var("HUGGING_FACE_HUB_TOKEN"))
            .map(|t| t.trim().to_string())
            .or_else(|| {
                let path = var("HF_TOKEN_PATH")
                    .map(expand)
                    .unwrap_or_else(|| hf_home.join("token"));
                std::fs::read_to_string(path)
                    .ok()
                    .map(|t| t.trim().to_string())
                    .filter(|t| !t.is_empty())
            });
        let progress = !var("HF_HUB_DISABLE_PROGRESS_BARS").is_some_and(|v| is_true(&v));
        let seconds = |k: &str| -> Option<Duration> {
            let v = var(k)?;
            match v.trim().parse::<f64>() {
                Ok(s) if s.is_finite() && s > 0.0 => Some(Duration::from_secs_f64(s)),
                _ => {
                    tracing::warn!("ignoring {k}={v:?}: expected a positive number of seconds");
                    None
                }
            }
        };
        let retries = var("SAERUN_HUB_RETRIES").and_then(|v| match v.trim().parse::<u32>() {
            Ok(n) => Some(n),
            Err(_) => {
                tracing::warn!("ignoring SAERUN_HUB_RETRIES={v:?}: expected a whole number");
                None
            }
        });
        HubConfig {
            endpoint,
            cache_dir,
            offline,
            token,
            progress,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            etag_timeout: seconds("HF_HUB_ETAG_TIMEOUT").unwrap_or(DEFAULT_TIMEOUT),
            download_timeout: seconds("HF_HUB_DOWNLOAD_TIMEOUT").unwrap_or(DEFAULT_TIMEOUT),
            retries: retries.unwrap_or(DEFAULT_RETRIES),
            retry_backoff: DEFAULT_RETRY_BACKOFF,
        }
    }

    /// Settings for a given endpoint and cache root: online, no token, no progress bars,
    /// default timeouts and retries. Convenient for tests and for callers that manage their
    /// own cache.
    pub fn new(endpoint: impl Into<String>, cache_dir: impl Into<PathBuf>) -> Self {
        HubConfig {
            endpoint: endpoint.into().trim_end_matches('/').to_string(),
            cache_dir: cache_dir.into(),
            offline: false,
            token: None,
            progress: false,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            etag_timeout: DEFAULT_TIMEOUT,
            download_timeout: DEFAULT_TIMEOUT,
            retries: DEFAULT_RETRIES,
            retry_backoff: DEFAULT_RETRY_BACKOFF,
        }
    }

    /// The wait before retry number `attempt` (0-based): `retry_backoff * 2^attempt`,
    /// capped at [`MAX_RETRY_BACKOFF`] (or at `retry_backoff` if that is larger).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let wait = self
            .retry_backoff
            .saturating_mul(1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX));
        wait.min(MAX_RETRY_BACKOFF.max(self.retry_backoff))
    }
}

/// huggingface_hub's `_is_true`: `1`, `ON`, `YES`, `TRUE`, case-insensitive.
pub fn is_true(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_uppercase().as_str(),
        "1" | "ON" | "YES" | "TRUE"
    )
}
