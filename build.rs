//! Records the git commit the binary was built from (run records report it).
use std::process::Command;

fn main() {
    let commit = Command::new("git")
        .args(["describe", "--always", "--dirty", "--abbrev=12"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=SAERUN_GIT_COMMIT={commit}");
    // Ask git where HEAD and the index are: in a worktree `.git` is a file, and watching a
    // path that does not exist would rerun this script (and rebuild the crate) every time.
    for file in ["HEAD", "index"] {
        let path = Command::new("git")
            .args(["rev-parse", "--git-path", file])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_string())
            .filter(|s| std::path::Path::new(s).exists());
        match path {
            Some(p) => println!("cargo:rerun-if-changed={p}"),
            // Not a git checkout (a source tarball): nothing to watch but this script.
            None => println!("cargo:rerun-if-changed=build.rs"),
        }
    }
}
