//! [`lock_exclusive`]: one open database per file, across processes.

use std::fs::{File, TryLockError};
use std::io;
use std::path::{Path, PathBuf};

/// Why [`lock_exclusive`] did not get its lock.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// The lock file could not be opened or created.
    #[error("cannot open {}: {source}", path.display())]
    Open {
        /// The lock file.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// Another open handle (this process or another) holds the lock.
    #[error("{} is locked by another open handle", path.display())]
    InUse {
        /// The lock file.
        path: PathBuf,
    },
    /// Locking failed for another reason.
    #[error("cannot lock {}: {source}", path.display())]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
}

/// Opens (creating, never truncating) the lock file at `path` and takes an exclusive lock
/// on it without waiting. The lock lasts as long as the returned [`File`] is open: keep it
/// for the life of the database handle it guards, so that a second handle (in this or
/// another process) on the same database is refused instead of writing alongside.
///
/// # Errors
/// [`LockError::InUse`] if another open handle holds the lock, [`LockError::Open`] or
/// [`LockError::Lock`] for I/O errors.
pub fn lock_exclusive(path: &Path) -> Result<File, LockError> {
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|source| LockError::Open {
            path: path.to_path_buf(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(LockError::InUse {
            path: path.to_path_buf(),
        }),
        Err(TryLockError::Error(source)) => Err(LockError::Lock {
            path: path.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_until_it_is_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db.lock");
        let first = lock_exclusive(&path).expect("first");
        let second = lock_exclusive(&path);
        assert!(
            matches!(&second, Err(LockError::InUse { path: p }) if *p == path),
            "got {second:?}"
        );
        drop(first);
        let third = lock_exclusive(&path).expect("free again");
        drop(third);
    }

    #[test]
    fn an_existing_file_is_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db.lock");
        std::fs::write(&path, b"pid 1").expect("write");
        drop(lock_exclusive(&path).expect("lock"));
        assert_eq!(std::fs::read(&path).expect("read"), b"pid 1");
    }

    #[test]
    fn a_missing_directory_is_an_open_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("missing").join("db.lock");
        let err = lock_exclusive(&path).expect_err("no directory");
        assert!(matches!(err, LockError::Open { .. }), "got {err:?}");
        assert!(err.to_string().starts_with("cannot open "), "{err}");
    }
}
