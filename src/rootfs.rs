//! Opening paths inside an untrusted directory tree (an image layer, a
//! container's root filesystem) without ever leaving it.
//!
//! Every caller that reads or writes inside such a tree goes through
//! [`open_in_root`], so there is one place that decides how symlinks and
//! `..` planted by an image are resolved: as if the tree were `/`.
//! berth needs `openat2` (Linux 5.6) for this; there is no weaker fallback.

use std::os::fd::{BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};

/// Opens `path` (relative) below `root`, resolving every component as if
/// `root` were `/`: `..` and absolute symlinks stop at `root`, and `/proc`
/// magic links are refused. The empty path is the root itself.
pub(crate) fn open_in_root(
    root: BorrowedFd<'_>,
    path: &[u8],
    flags: OFlag,
) -> nix::Result<OwnedFd> {
    let path: &[u8] = if path.is_empty() { b"." } else { path };
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    // The kernel answers EAGAIN when a rename raced the walk; retrying is
    // what openat2(2) recommends.
    let mut tries = 0;
    loop {
        match openat2(root, path, how) {
            Err(Errno::EAGAIN) if tries < 16 => tries += 1,
            other => return other,
        }
    }
}
