//! Whiteouts, the two ways: deleting what they hide (native snapshotter,
//! the target holds the parent's full tree) or writing overlayfs's own
//! markers (the target is an upperdir, the parents are lower dirs).
//!
//! - `.wh.<name>`: Delete mode removes `<name>` (recursively); Overlay mode
//!   puts a 0:0 character device named `<name>` in its place.
//! - `.wh..wh..opq`: Delete mode removes what the directory held before this
//!   layer, keeping what this layer already wrote there (tar order puts the
//!   marker anywhere among the directory's entries); Overlay mode sets
//!   `trusted.overlay.opaque=y` on the directory.
//!
//! Both resolve their directory inside the root like any other entry, so a
//! whiteout can never remove anything outside the target.

use std::os::fd::{AsFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::openat;
use nix::sys::stat::{mknodat, Mode, SFlag};

use super::entry::Unpacker;
use super::name::join;
use super::root::{list, set_owner_at, DIR_FLAGS};
use super::Error;

impl Unpacker {
    /// `.wh.<victim>` in `parent`.
    pub(super) fn whiteout(
        &mut self,
        raw: &[u8],
        parent: &[u8],
        victim: &[u8],
    ) -> Result<(), Error> {
        let remove = |e| Error::io(raw, "removing the whited-out entry", e);
        if !self.root.overlay() {
            let dir = self
                .root
                .existing_dir(parent)
                .map_err(|e| Error::io(raw, "opening its parent directory", e))?;
            if let Some(dir) = dir {
                self.root.remove(&dir, victim).map_err(remove)?;
            }
            return Ok(());
        }
        // Overlay: a 0:0 character device named like the victim hides it.
        let pfd = self.parent(raw, parent)?;
        self.root.remove(&pfd, victim).map_err(remove)?;
        mknodat(pfd.as_fd(), victim, SFlag::S_IFCHR, Mode::empty(), 0)
            .and_then(|()| set_owner_at(pfd.as_fd(), victim, 0, 0))
            .map_err(|e| Error::io(raw, "creating the whiteout", e))
    }

    /// `.wh..wh..opq` in `dir`.
    pub(super) fn opaque(&mut self, raw: &[u8], dir: &[u8]) -> Result<(), Error> {
        if self.root.overlay() {
            let fd = self.parent(raw, dir)?;
            return self
                .root
                .set_opaque(&fd, dir)
                .map_err(|e| Error::io(raw, "making the directory opaque", e));
        }
        let fd = self
            .root
            .existing_dir(dir)
            .map_err(|e| Error::io(raw, "opening the opaque directory", e))?;
        match fd {
            Some(fd) => self
                .clear_lower(&fd, dir)
                .map_err(|e| Error::io(raw, "clearing the opaque directory", e)),
            None => Ok(()),
        }
    }

    /// Delete mode: removes everything below `dir` that this layer did not
    /// write.
    fn clear_lower(&mut self, dir: &OwnedFd, path: &[u8]) -> nix::Result<()> {
        for name in list(dir.as_fd())? {
            let child = join(path, &name);
            let ours = self
                .layer_paths
                .as_ref()
                .is_some_and(|paths| paths.contains(&child));
            if !ours {
                self.root.remove(dir, &name)?;
                continue;
            }
            match openat(dir.as_fd(), name.as_slice(), DIR_FLAGS, Mode::empty()) {
                Ok(sub) => self.clear_lower(&sub, &child)?,
                Err(Errno::ENOTDIR | Errno::ELOOP) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}
