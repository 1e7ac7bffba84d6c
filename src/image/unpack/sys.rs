//! The few system calls the unpacker needs beyond nix's wrappers: opening a
//! path confined to a root, and extended attributes by descriptor.
//!
//! Everything here works on descriptors, never on absolute paths, so no
//! symlink an image planted can redirect an operation outside the target.

use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, BorrowedFd};

use nix::errno::Errno;
use nix::sys::stat::{FileStat, SFlag};

pub(super) use crate::rootfs::open_in_root;

/// The file type bits of a stat result.
pub(super) fn file_type(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

/// Whether `st` is an overlayfs whiteout: a character device 0:0.
pub(super) fn is_whiteout(st: &FileStat) -> bool {
    file_type(st) == SFlag::S_IFCHR && st.st_rdev == 0
}

/// Sets an extended attribute on an open (not `O_PATH`) descriptor.
pub(super) fn fsetxattr(fd: BorrowedFd<'_>, name: &CStr, value: &[u8]) -> nix::Result<()> {
    // SAFETY: `name` is NUL-terminated, `value` is valid for `value.len()`
    // bytes, and `fd` stays open for the duration of the call.
    let rc = unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    Errno::result(rc).map(drop)
}

/// Sets an extended attribute on the object an `O_PATH | O_NOFOLLOW`
/// descriptor holds (a symlink, a device node, a fifo), through its
/// `/proc/self/fd` entry. The magic link jumps to exactly that object and is
/// not resolved further, so a symlink gets the attribute itself.
pub(super) fn setxattr_opath(fd: BorrowedFd<'_>, name: &CStr, value: &[u8]) -> nix::Result<()> {
    let path = CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .expect("a formatted number has no NUL");
    // SAFETY: both strings are NUL-terminated, `value` is valid for
    // `value.len()` bytes, and `fd` (which the path names) stays open.
    let rc = unsafe {
        libc::setxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    Errno::result(rc).map(drop)
}

/// Reads an extended attribute; `None` if it is not set.
pub(super) fn fgetxattr(fd: BorrowedFd<'_>, name: &CStr) -> nix::Result<Option<Vec<u8>>> {
    let mut buf = vec![0u8; 256];
    loop {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes and `name`
        // is NUL-terminated.
        let rc = unsafe {
            libc::fgetxattr(
                fd.as_raw_fd(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        match Errno::result(rc) {
            Ok(n) => {
                buf.truncate(n as usize);
                return Ok(Some(buf));
            }
            Err(Errno::ENODATA) => return Ok(None),
            Err(Errno::ERANGE) if buf.len() < 1 << 20 => buf.resize(buf.len() * 4, 0),
            Err(e) => return Err(e),
        }
    }
}

/// Lists the extended attribute names of an open descriptor.
pub(super) fn flistxattr(fd: BorrowedFd<'_>) -> nix::Result<Vec<CString>> {
    let mut buf = vec![0u8; 1024];
    let n = loop {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
        let rc = unsafe { libc::flistxattr(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        match Errno::result(rc) {
            Ok(n) => break n as usize,
            Err(Errno::ERANGE) if buf.len() < 1 << 20 => buf.resize(buf.len() * 4, 0),
            Err(Errno::ENOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        }
    };
    Ok(buf[..n]
        .split(|&b| b == 0)
        .filter(|name| !name.is_empty())
        .map(|name| CString::new(name).expect("split on NUL"))
        .collect())
}

/// Copies every extended attribute from one open descriptor to another,
/// except overlayfs's own (`trusted.overlay.*`, `user.overlay.*`), which
/// describe the layer they sit in, not the file.
pub(super) fn copy_xattrs(from: BorrowedFd<'_>, to: BorrowedFd<'_>) -> nix::Result<()> {
    for name in flistxattr(from)? {
        if is_overlay_xattr(name.to_bytes()) {
            continue;
        }
        if let Some(value) = fgetxattr(from, &name)? {
            fsetxattr(to, &name, &value)?;
        }
    }
    Ok(())
}

/// Attributes overlayfs reads to decide what a layer hides. A layer must not
/// bring them in its tar, or it could forge whiteouts and redirects.
pub(super) fn is_overlay_xattr(name: &[u8]) -> bool {
    name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.")
}
