//! Small file-system helpers: directory fsync, atomic file replacement, the directory lock.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use imbus_log::LogError;

/// Makes the entries of a directory (created, renamed, deleted files) durable.
pub(crate) fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Replaces `path` with `contents` atomically: a temporary file is written and fsynced,
/// renamed over `path`, and the directory is fsynced.
pub(crate) fn write_atomic(path: &Path, contents: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::other(format!("{} has no parent directory", path.display())))?;
    let mut tmp_name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    fsync_dir(dir)
}

/// An I/O error that names the file it happened on.
pub(crate) fn io_at(path: &Path, what: &str, e: io::Error) -> LogError {
    LogError::Io(io::Error::new(
        e.kind(),
        format!("{what} {}: {e}", path.display()),
    ))
}

/// An exclusive lock on a log directory, held for the lifetime of the open log so two
/// processes (or two opens in one process) cannot write the same files.
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: File,
    path: PathBuf,
}

impl DirLock {
    pub(crate) fn acquire(dir: &Path) -> Result<Self, LogError> {
        let path = dir.join(crate::LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io_at(&path, "cannot open lock file", e))?;
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(Self { _file: file, path }),
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => Err(LogError::Io(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!(
                    "log directory {} is already open in another process or log instance (lock file {} is held)",
                    dir.display(),
                    path.display()
                ),
            ))),
            Err(e) => Err(io_at(&path, "cannot lock", e.into())),
        }
    }
}

/// Whether a log holds the lock of `dir` now (in another process, or in this one).
pub(crate) fn dir_locked(dir: &Path) -> bool {
    let Ok(file) = OpenOptions::new()
        .read(true)
        .open(dir.join(crate::LOCK_FILE))
    else {
        return false;
    };
    // A lock taken here is released when `file` is closed, at the end of this function.
    matches!(
        rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockShared),
        Err(e) if e == rustix::io::Errno::WOULDBLOCK
    )
}

impl Drop for DirLock {
    fn drop(&mut self) {
        // The lock is released when the file is closed; nothing else to do.
        tracing::debug!(path = %self.path.display(), "log directory unlocked");
    }
}
