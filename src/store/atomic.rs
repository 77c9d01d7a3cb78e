//! Crash-safe file publication: write a temp file in the same directory, fsync it, rename
//! it into place, fsync the directory (rename alone is atomic but not durable).

use crate::{Error, Result};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The temp name used while `name` is being written. Hidden and suffixed so that neither a
/// reader nor a directory listing mistakes it for a finished file.
pub(crate) fn tmp_name(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!(".{name}.tmp"))
}

/// Whether a file name is one of our temp names (left behind by a killed writer).
pub(crate) fn is_tmp_name(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(".tmp")
}

/// Create `path` for writing; it must not exist (a stale one is removed by the caller).
pub(crate) fn create_new(path: &Path) -> Result<File> {
    File::options()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| Error::io(path, "cannot create", e))
}

/// fsync `file`, then rename `tmp` to `dest`.
pub(crate) fn publish(file: File, tmp: &Path, dest: &Path) -> Result<()> {
    file.sync_all()
        .map_err(|e| Error::io(tmp, "cannot sync", e))?;
    drop(file);
    fs::rename(tmp, dest).map_err(|e| Error::io(dest, "cannot rename into place", e))
}

/// Write `bytes` to `dir/name` atomically (temp file + fsync + rename + directory fsync).
pub(crate) fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let tmp = tmp_name(dir, name);
    let _ = fs::remove_file(&tmp);
    let mut file = create_new(&tmp)?;
    let written = file
        .write_all(bytes)
        .map_err(|e| Error::io(&tmp, "cannot write", e))
        .and_then(|()| publish(file, &tmp, &dir.join(name)));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written?;
    sync_dir(dir)
}

/// fsync a directory so that renames into it survive a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, "cannot sync directory", e))
}
