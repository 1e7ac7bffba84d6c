//! Advisory whole-file locks (`flock`) on the store's lock files: how
//! berth's processes take turns without a daemon. The lock belongs to the
//! open file, so a process killed while holding it releases it.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};

/// Opens (creating owner-only if needed) the lock file `path` and takes
/// the lock `arg` on it, waiting unless `arg` says not to. Held until the
/// returned guard is dropped.
pub(crate) fn lock(path: &Path, arg: FlockArg) -> io::Result<Flock<File>> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path)?;
    Flock::lock(file, arg).map_err(|(_, errno)| errno.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exclusive_lock_excludes_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let held = lock(&path, FlockArg::LockExclusive).unwrap();
        let err = lock(&path, FlockArg::LockExclusiveNonblock).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EWOULDBLOCK));
        drop(held);
        lock(&path, FlockArg::LockExclusiveNonblock).unwrap();
    }
}
