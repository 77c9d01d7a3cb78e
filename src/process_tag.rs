//! Names of work in progress that other processes must be able to judge: `<host>.<pid>`.
//! On a cache or results directory shared across machines (a Slurm sweep over NFS or
//! Lustre) a pid alone names no process: another machine's pid 4242 is not ours, and
//! whether it still runs can only be seen on its own host.

use std::path::Path;
use std::sync::OnceLock;

/// The host and pid of a process, as written into file names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessTag {
    /// The host name reduced to `[A-Za-z0-9-]` (so the tag splits on `.`).
    pub host: String,
    pub pid: u32,
}

impl ProcessTag {
    /// This process.
    pub fn current() -> ProcessTag {
        ProcessTag {
            host: this_host().to_string(),
            pid: std::process::id(),
        }
    }

    /// `<host>.<pid>`.
    pub fn name(&self) -> String {
        format!("{}.{}", self.host, self.pid)
    }

    /// Whether the process still runs, where that can be known: `Some` on its own host
    /// (where /proc exists), `None` for another host's process (or without /proc).
    pub fn is_running(&self) -> Option<bool> {
        if self.host != this_host() || !Path::new("/proc/self").exists() {
            return None;
        }
        Some(Path::new(&format!("/proc/{}", self.pid)).exists())
    }
}

/// The host name, reduced to letters, digits and `-` (a name written before hosts were
/// recorded has none: see `record::RunDir`); `localhost` if it cannot be read.
fn this_host() -> &'static str {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| {
        let raw = gethostname::gethostname().to_string_lossy().into_owned();
        let clean: String = raw
            .chars()
            .take(64)
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        if clean.is_empty() {
            "localhost".to_string()
        } else {
            clean
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_runs_and_another_hosts_is_unknown() {
        let me = ProcessTag::current();
        assert!(!me.host.contains('.'), "{}", me.host);
        if Path::new("/proc/self").exists() {
            assert_eq!(me.is_running(), Some(true));
            // Linux pids never exceed 2^22.
            let dead = ProcessTag {
                pid: 4_194_305,
                ..me.clone()
            };
            assert_eq!(dead.is_running(), Some(false));
        }
        let elsewhere = ProcessTag {
            host: format!("{}-elsewhere", me.host),
            pid: 1,
        };
        assert_eq!(elsewhere.is_running(), None);
    }
}
