//! Exclusive advisory file locks shared by the stage cache and hub downloads: the OS
//! releases them when the file is closed or the process dies, so a killed run never blocks
//! the next one.

use std::fs::{File, TryLockError};
use std::io;
use std::path::Path;

/// Opens `path` for locking, creating it if needed (its contents are never used).
pub fn open(path: &Path) -> io::Result<File> {
    File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
}

/// Takes `file`'s exclusive lock; if another holder has it, calls `on_wait` (to tell the
/// user) and blocks until it is released.
pub fn lock_or_wait(file: &File, on_wait: impl FnOnce()) -> io::Result<()> {
    match file.try_lock() {
        Ok(()) => Ok(()),
        Err(TryLockError::WouldBlock) => {
            on_wait();
            file.lock()
        }
        Err(TryLockError::Error(e)) => Err(e),
    }
}
