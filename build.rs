//! Records the git commit the binary was built from: run records report it and
//! `saerun --version` shows it.
//!
//! - `SAERUN_GIT_COMMIT`: the commit (12 hex digits), with `+dirty` when the sources that
//!   go into the binary (`src/`, `build.rs`, `Cargo.toml`, `Cargo.lock`) differ from it or
//!   `src/` has untracked files; `unknown` when neither git nor cargo's packaging metadata
//!   tell.
//! - `SAERUN_BUILD_INFO`: the same for people, e.g. `commit 0123456789ab+dirty`, `commit
//!   0123456789ab (from a packaged crate)` or `commit unknown: not built from a git
//!   checkout`.
//!
//! A crate packaged by `cargo package` / `cargo publish` (a crates.io tarball, a vendored
//! copy) carries `.cargo_vcs_info.json` with the commit it was packaged from; it is read
//! before asking git, because a vendored copy may sit inside some other project's checkout.
use std::path::Path;
use std::process::Command;

/// The paths whose changes make the binary differ from the commit.
const SOURCES: [&str; 4] = ["src", "build.rs", "Cargo.toml", "Cargo.lock"];

fn git(args: &[&str]) -> Option<String> {
    Command::new("git")
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
}

/// From `.cargo_vcs_info.json`: `{"git": {"sha1": "...", "dirty": true}, ...}`.
fn packaged_commit() -> Option<(String, bool)> {
    let text = std::fs::read_to_string(".cargo_vcs_info.json").ok()?;
    let sha = text
        .split("\"sha1\"")
        .nth(1)?
        .split('"')
        .nth(1)?
        .to_string();
    if sha.len() < 12 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let dirty = text.contains("\"dirty\": true") || text.contains("\"dirty\":true");
    Some((sha[..12].to_string(), dirty))
}

fn main() {
    println!("cargo:rerun-if-changed=.cargo_vcs_info.json");
    let (commit, info) = if let Some((sha, dirty)) = packaged_commit() {
        let commit = if dirty { format!("{sha}+dirty") } else { sha };
        let info = format!("commit {commit} (from a packaged crate)");
        (commit, info)
    } else if let Some(sha) = git(&["rev-parse", "--short=12", "HEAD"]).filter(|s| !s.is_empty()) {
        // `--no-optional-locks`: only look; do not refresh (rewrite) the index, which would
        // rerun this script on the next build.
        let mut args = vec!["--no-optional-locks", "status", "--porcelain", "--"];
        args.extend(SOURCES);
        let dirty = git(&args).is_none_or(|s| !s.is_empty());
        let commit = if dirty { format!("{sha}+dirty") } else { sha };
        watch_git();
        (commit.clone(), format!("commit {commit}"))
    } else {
        (
            "unknown".to_string(),
            "commit unknown: not built from a git checkout".to_string(),
        )
    };
    println!("cargo:rustc-env=SAERUN_GIT_COMMIT={commit}");
    println!("cargo:rustc-env=SAERUN_BUILD_INFO={info}");
    for source in SOURCES {
        println!("cargo:rerun-if-changed={source}");
    }
}

/// Rerun when the commit changes (the sources are watched in `main`; staging does not
/// change what differs from the commit, so the index is not watched: it changes on every
/// `git add` and would rebuild the crate each time). Git is asked where the files are: in a
/// worktree `.git` is a file, and watching a path that does not exist would rerun this
/// script (and rebuild the crate) every time. A commit moves the branch's ref, not HEAD
/// (which names the branch), so the ref is watched too, and `packed-refs` where refs are
/// packed.
fn watch_git() {
    let mut files = vec!["HEAD".to_string(), "packed-refs".to_string()];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        files.push(branch);
    }
    for file in files {
        if let Some(path) =
            git(&["rev-parse", "--git-path", &file]).filter(|p| Path::new(p).exists())
        {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}
