//! Whole directory trees: copying one with everything a container root
//! needs kept (the native snapshotter's prepare), measuring one (usage), and
//! deleting one.
//!
//! A copy keeps file types (regular, directory, symlink, fifo, socket,
//! character and block devices), hard links (by an inode map), modes
//! including setuid/setgid/sticky, owners, extended attributes, and access
//! and modification times. File data is reflinked (`FICLONE`) where the
//! filesystem can share blocks, else copied in the kernel with
//! `copy_file_range`, else read and written.
//!
//! Order per entry: create, data, owner, mode, xattrs, times. The owner
//! comes before the mode because `chown` clears setuid bits, and before the
//! xattrs because it drops `security.capability`; directories get their
//! attributes after their content, so a read-only directory is filled
//! first and its mtime is not disturbed by the filling.

use std::collections::{HashMap, HashSet};
use std::ffi::{CString, OsStr};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::AT_FDCWD;
use nix::sys::stat::{Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid};

use super::{Error, Result, Usage};

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl Fn(io::Error) -> Error + 'a {
    move |source| Error::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

fn errno_err<'a>(action: &'static str, path: &'a Path) -> impl Fn(Errno) -> Error + 'a {
    move |errno| Error::Io {
        action,
        path: path.to_path_buf(),
        source: errno.into(),
    }
}

/// Copies the content of directory `src` into the existing, empty
/// directory `dst`, then gives `dst` the attributes of `src`.
pub(super) fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    let meta = fs::symlink_metadata(src).map_err(io_err("copying", src))?;
    let mut links = HashMap::new();
    copy_dir_content(src, dst, &mut links)?;
    copy_attributes(src, dst, &meta)
}

/// Hard-linked inodes seen so far: (dev, ino) of the source → first copy.
type LinkMap = HashMap<(u64, u64), PathBuf>;

fn copy_dir_content(src: &Path, dst: &Path, links: &mut LinkMap) -> Result<()> {
    for entry in fs::read_dir(src).map_err(io_err("copying", src))? {
        let entry = entry.map_err(io_err("copying", src))?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let meta = fs::symlink_metadata(&from).map_err(io_err("copying", &from))?;
        let kind = meta.file_type();
        if kind.is_dir() {
            fs::DirBuilder::new()
                .mode(0o700)
                .create(&to)
                .map_err(io_err("creating", &to))?;
            copy_dir_content(&from, &to, links)?;
            copy_attributes(&from, &to, &meta)?;
            continue;
        }
        if meta.nlink() > 1 {
            let inode = (meta.dev(), meta.ino());
            if let Some(first) = links.get(&inode) {
                fs::hard_link(first, &to).map_err(io_err("linking", &to))?;
                continue;
            }
            links.insert(inode, to.clone());
        }
        if kind.is_file() {
            copy_file_data(&from, &to)?;
        } else if kind.is_symlink() {
            let target = fs::read_link(&from).map_err(io_err("copying", &from))?;
            std::os::unix::fs::symlink(&target, &to).map_err(io_err("creating", &to))?;
        } else {
            // Fifo, socket, character or block device.
            let file_type = SFlag::from_bits_truncate(meta.mode() & libc::S_IFMT);
            let mode = Mode::from_bits_truncate(meta.mode() & 0o7777);
            nix::sys::stat::mknod(&to, file_type, mode, meta.rdev())
                .map_err(errno_err("creating", &to))?;
        }
        copy_attributes(&from, &to, &meta)?;
    }
    Ok(())
}

fn copy_file_data(from: &Path, to: &Path) -> Result<()> {
    let mut src = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(from)
        .map_err(io_err("copying", from))?;
    let mut dst = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)
        .map_err(io_err("creating", to))?;
    if reflink(&src, &dst) {
        return Ok(());
    }
    let len = src.metadata().map_err(io_err("copying", from))?.len();
    let mut done = 0u64;
    while done < len {
        match copy_range(&src, &dst, (len - done) as usize) {
            Ok(0) => break, // The file shrank while we copied.
            Ok(n) => done += n as u64,
            Err(Errno::EXDEV | Errno::ENOSYS | Errno::EOPNOTSUPP | Errno::EINVAL) if done == 0 => {
                io::copy(&mut src, &mut dst).map_err(io_err("copying", from))?;
                return Ok(());
            }
            Err(errno) => return Err(errno_err("copying", from)(errno)),
        }
    }
    Ok(())
}

/// One `copy_file_range` call at both files' current offsets.
fn copy_range(src: &File, dst: &File, len: usize) -> std::result::Result<usize, Errno> {
    let null = std::ptr::null_mut();
    // SAFETY: both fds are open; NULL offsets mean "use and advance the
    // file offsets"; the kernel copies at most len bytes between them.
    let n = unsafe { libc::copy_file_range(src.as_raw_fd(), null, dst.as_raw_fd(), null, len, 0) };
    if n < 0 {
        Err(Errno::last())
    } else {
        Ok(n as usize)
    }
}

/// Shares `src`'s blocks with `dst` (btrfs, xfs); false where unsupported.
fn reflink(src: &File, dst: &File) -> bool {
    // SAFETY: FICLONE takes the source fd as its integer argument; both fds
    // are open for the duration of the call.
    unsafe { libc::ioctl(dst.as_raw_fd(), libc::FICLONE, src.as_raw_fd()) == 0 }
}

/// Gives `to` the owner, mode, xattrs and times of `from` (`meta`).
fn copy_attributes(from: &Path, to: &Path, meta: &fs::Metadata) -> Result<()> {
    copy_owner_and_mode(to, meta)?;
    copy_xattrs(from, to)?;
    let atime = TimeSpec::new(meta.atime(), meta.atime_nsec());
    let mtime = TimeSpec::new(meta.mtime(), meta.mtime_nsec());
    nix::sys::stat::utimensat(
        AT_FDCWD,
        to,
        &atime,
        &mtime,
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(errno_err("setting times of", to))
}

/// Gives `to` the owner and permission bits in `meta`. Without the right to
/// give files away (not root), the owner is left as it is.
pub(super) fn copy_owner_and_mode(to: &Path, meta: &fs::Metadata) -> Result<()> {
    match nix::unistd::fchownat(
        AT_FDCWD,
        to,
        Some(Uid::from_raw(meta.uid())),
        Some(Gid::from_raw(meta.gid())),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    ) {
        Ok(()) => {}
        Err(Errno::EPERM) if !nix::unistd::geteuid().is_root() => {}
        Err(errno) => return Err(errno_err("setting owner of", to)(errno)),
    }
    if !meta.file_type().is_symlink() {
        fs::set_permissions(to, fs::Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(io_err("setting mode of", to))?;
    }
    Ok(())
}

fn cpath(path: &Path) -> CString {
    // Paths from read_dir and our own joins hold no NUL byte.
    CString::new(path.as_os_str().as_bytes()).unwrap_or_default()
}

fn copy_xattrs(from: &Path, to: &Path) -> Result<()> {
    let (src, dst) = (cpath(from), cpath(to));
    let names = xattr_read(from, |buf, len| {
        // SAFETY: src is NUL-terminated; buf points at len writable bytes
        // (or is NULL with len 0, which asks for the size).
        unsafe { libc::llistxattr(src.as_ptr(), buf.cast(), len) }
    })?;
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let cname = CString::new(name).unwrap_or_default();
        let value = match xattr_read(from, |buf, len| {
            // SAFETY: as above; cname is NUL-terminated.
            unsafe { libc::lgetxattr(src.as_ptr(), cname.as_ptr(), buf.cast(), len) }
        }) {
            Ok(v) => v,
            // Removed between list and get.
            Err(Error::Io { source, .. }) if source.raw_os_error() == Some(libc::ENODATA) => {
                continue
            }
            Err(e) => return Err(e),
        };
        // SAFETY: dst and cname are NUL-terminated; value is a live slice.
        let rc = unsafe {
            libc::lsetxattr(
                dst.as_ptr(),
                cname.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        };
        if rc != 0 {
            let e = io::Error::last_os_error();
            // A target filesystem without this xattr namespace.
            if e.raw_os_error() == Some(libc::EOPNOTSUPP) {
                continue;
            }
            return Err(Error::Io {
                action: "setting xattr",
                path: to.join(OsStr::from_bytes(name)),
                source: e,
            });
        }
    }
    Ok(())
}

/// Calls a size-then-fill xattr syscall until the buffer is big enough.
fn xattr_read(path: &Path, call: impl Fn(*mut u8, usize) -> libc::ssize_t) -> Result<Vec<u8>> {
    loop {
        let size = call(std::ptr::null_mut(), 0);
        if size < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EOPNOTSUPP) {
                return Ok(Vec::new());
            }
            return Err(io_err("reading xattrs of", path)(e));
        }
        let mut buf = vec![0u8; size as usize];
        let n = call(buf.as_mut_ptr(), buf.len());
        if n >= 0 {
            buf.truncate(n as usize);
            return Ok(buf);
        }
        let e = io::Error::last_os_error();
        // Grew between the two calls: ask again.
        if e.raw_os_error() != Some(libc::ERANGE) {
            return Err(io_err("reading xattrs of", path)(e));
        }
    }
}

/// Allocated bytes and inodes under `dir`, counting each hard-linked inode
/// once and not descending into other filesystems mounted inside.
pub(super) fn disk_usage(dir: &Path) -> Result<Usage> {
    let root = fs::symlink_metadata(dir).map_err(io_err("measuring", dir))?;
    let dev = root.dev();
    let mut seen = HashSet::new();
    let mut usage = Usage::default();
    let mut stack = vec![(dir.to_path_buf(), root)];
    while let Some((path, meta)) = stack.pop() {
        if meta.nlink() > 1 && !meta.is_dir() && !seen.insert((meta.dev(), meta.ino())) {
            continue;
        }
        usage.inodes += 1;
        usage.size += meta.blocks() * 512;
        if !meta.is_dir() {
            continue;
        }
        for entry in fs::read_dir(&path).map_err(io_err("measuring", &path))? {
            let entry = entry.map_err(io_err("measuring", &path))?;
            let child = entry.path();
            match fs::symlink_metadata(&child) {
                // A directory on another device is a mount point: skip it.
                Ok(m) if m.is_dir() && m.dev() != dev => {}
                Ok(m) => stack.push((child, m)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("measuring", &child)(e)),
            }
        }
    }
    Ok(usage)
}

/// Deletes `path` and everything under it; a path already gone is fine.
pub(super) fn remove_tree(path: &Path) -> Result<()> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("removing", path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_keeps_links_modes_and_times() {
        let dir = tempfile::tempdir().unwrap();
        let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
        fs::create_dir_all(src.join("sub")).unwrap();
        fs::create_dir(&dst).unwrap();
        fs::write(src.join("sub/a"), b"hello").unwrap();
        fs::hard_link(src.join("sub/a"), src.join("b")).unwrap();
        std::os::unix::fs::symlink("sub/a", src.join("link")).unwrap();
        fs::set_permissions(src.join("sub/a"), fs::Permissions::from_mode(0o640)).unwrap();
        fs::set_permissions(src.join("sub"), fs::Permissions::from_mode(0o510)).unwrap();
        nix::unistd::mkfifo(&src.join("fifo"), Mode::from_bits_truncate(0o600)).unwrap();
        let old = TimeSpec::new(1_000_000, 5);
        nix::sys::stat::utimensat(
            AT_FDCWD,
            &src.join("b"),
            &old,
            &old,
            UtimensatFlags::NoFollowSymlink,
        )
        .unwrap();

        copy_tree(&src, &dst).unwrap();
        let a = fs::symlink_metadata(dst.join("sub/a")).unwrap();
        let b = fs::symlink_metadata(dst.join("b")).unwrap();
        assert_eq!(a.ino(), b.ino());
        assert_eq!(a.mode() & 0o7777, 0o640);
        assert_eq!((a.mtime(), a.mtime_nsec()), (1_000_000, 5));
        assert_eq!(fs::read(dst.join("b")).unwrap(), b"hello");
        assert_eq!(fs::read_link(dst.join("link")).unwrap(), Path::new("sub/a"));
        let sub = fs::symlink_metadata(dst.join("sub")).unwrap();
        assert_eq!(sub.mode() & 0o7777, 0o510);
        assert!(fs::symlink_metadata(dst.join("fifo"))
            .unwrap()
            .file_type()
            .is_file()
            .eq(&false));

        let usage = disk_usage(&dst).unwrap();
        // dst, sub, a (= b), link, fifo.
        assert_eq!(usage.inodes, 5);
        fs::set_permissions(dst.join("sub"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(src.join("sub"), fs::Permissions::from_mode(0o755)).unwrap();
        remove_tree(&dst).unwrap();
        remove_tree(&dst).unwrap();
        assert!(!dst.exists());
    }
}
