//! The target directory as a confined root: every path is opened relative to
//! descriptors, parents are resolved with `openat2(RESOLVE_IN_ROOT)`, and the
//! last component is always handled with a `*at()` call that does not follow
//! it. Nothing a layer (or an earlier layer, or a lower dir) planted can lead
//! an operation outside the target.
//!
//! Resolving a parent is the costly part of an entry, and tar streams list
//! many entries of one directory in a row, so opened parents are kept in a
//! small cache keyed by their normalised path. A cached descriptor stays
//! right while the names leading to it stay the same; removing a directory
//! or a symlink may change what a path means, so it empties the cache.
//!
//! In overlay mode the target is an upperdir and the parent layers are
//! lower dirs: a directory an entry needs but only a lower dir has is
//! created with that lower dir's owner, mode, extended attributes and times
//! (what overlayfs's copy-up would do), and a hard link to a file only a
//! lower dir has copies the file up first.

use std::collections::{HashMap, HashSet};
use std::ffi::CStr;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::rc::Rc;

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{openat, readlinkat, AtFlags, OFlag};
use nix::sys::stat::{
    fchmod, fchmodat, fstatat, futimens, mkdirat, mknodat, utimensat, FchmodatFlags, FileStat,
    Mode, SFlag, UtimensatFlags,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};

use super::name::{ancestors, resolve_link, split};
use super::sys::{self, file_type, is_whiteout, open_in_root};
use super::WhiteoutMode;

/// The xattr overlayfs reads to make a directory opaque.
pub(super) const OPAQUE_XATTR: &CStr = c"trusted.overlay.opaque";

/// Dangling symlinks followed while creating one directory (the kernel's
/// own limit for a path walk).
const MAX_SYMLINK_HOPS: u32 = 40;

/// Opened parents kept at most; far below any descriptor limit.
const CACHE_LIMIT: usize = 128;

pub(super) const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

pub(super) type Fd = Rc<OwnedFd>;

/// A directory's times, applied when the layer is done: writing its
/// children would change them again.
pub(super) struct DirTimes {
    pub path: Vec<u8>,
    pub atime: TimeSpec,
    pub mtime: TimeSpec,
}

pub(super) struct Root {
    fd: Fd,
    whiteouts: WhiteoutMode,
    lowers: Vec<OwnedFd>,
    cache: HashMap<Vec<u8>, Fd>,
    /// Directories this layer made opaque (overlay mode): lower dirs are not
    /// consulted below them.
    opaque: HashSet<Vec<u8>>,
    pub dir_times: Vec<DirTimes>,
}

impl Root {
    pub(super) fn open(
        target: &Path,
        whiteouts: WhiteoutMode,
        lower_dirs: &[std::path::PathBuf],
    ) -> Result<Root, (std::path::PathBuf, Errno)> {
        let open_dir = |path: &Path| {
            nix::fcntl::open(path, DIR_FLAGS & !OFlag::O_NOFOLLOW, Mode::empty())
                .map_err(|e| (path.to_path_buf(), e))
        };
        let fd = open_dir(target)?;
        let lowers = match whiteouts {
            WhiteoutMode::Overlay => lower_dirs
                .iter()
                .map(|p| open_dir(p))
                .collect::<Result<_, _>>()?,
            WhiteoutMode::Delete => Vec::new(),
        };
        Ok(Root {
            fd: Rc::new(fd),
            whiteouts,
            lowers,
            cache: HashMap::new(),
            opaque: HashSet::new(),
            dir_times: Vec::new(),
        })
    }

    pub(super) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    pub(super) fn overlay(&self) -> bool {
        matches!(self.whiteouts, WhiteoutMode::Overlay)
    }

    /// Forgets every cached parent: call after anything that may change
    /// what a path resolves to.
    pub(super) fn forget_dirs(&mut self) {
        self.cache.clear();
    }

    /// The cached directory at `path`, if any.
    pub(super) fn cached(&self, path: &[u8]) -> Option<Fd> {
        self.cache.get(path).cloned()
    }

    fn remember(&mut self, path: &[u8], fd: Fd) {
        if self.cache.len() >= CACHE_LIMIT {
            self.cache.clear();
        }
        self.cache.insert(path.to_vec(), fd);
    }

    /// Remembers a directory the caller just opened, for its children.
    pub(super) fn remember_dir(&mut self, path: &[u8], fd: OwnedFd) -> Fd {
        let fd = Rc::new(fd);
        self.remember(path, fd.clone());
        fd
    }

    /// The directory at `path`, created (with its missing parents) if absent.
    pub(super) fn dir(&mut self, path: &[u8]) -> nix::Result<Fd> {
        self.dir_following(path, 0)
    }

    /// `dir`, having followed `hops` dangling symlinks on the way.
    fn dir_following(&mut self, path: &[u8], hops: u32) -> nix::Result<Fd> {
        if path.is_empty() {
            return Ok(self.fd.clone());
        }
        if let Some(fd) = self.cache.get(path) {
            return Ok(fd.clone());
        }
        let fd = match open_in_root(self.fd.as_fd(), path, OFlag::O_RDONLY | OFlag::O_DIRECTORY) {
            Ok(fd) => fd,
            Err(Errno::ENOENT | Errno::ENOTDIR) => self.make_dir(path, hops)?,
            Err(e) => return Err(e),
        };
        Ok(self.remember_dir(path, fd))
    }

    /// The directory at `path` if it exists; never creates anything.
    pub(super) fn existing_dir(&mut self, path: &[u8]) -> nix::Result<Option<Fd>> {
        if path.is_empty() {
            return Ok(Some(self.fd.clone()));
        }
        if let Some(fd) = self.cache.get(path) {
            return Ok(Some(fd.clone()));
        }
        match open_in_root(self.fd.as_fd(), path, OFlag::O_RDONLY | OFlag::O_DIRECTORY) {
            Ok(fd) => Ok(Some(self.remember_dir(path, fd))),
            Err(Errno::ENOENT | Errno::ENOTDIR) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates the missing directory `path`, its parent first.
    fn make_dir(&mut self, path: &[u8], hops: u32) -> nix::Result<OwnedFd> {
        let (parent, name) = split(path);
        let pfd = self.dir_following(parent, hops)?;
        match fstatat(pfd.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Err(Errno::ENOENT) => self.create_dir(&pfd, path, name),
            Ok(st) if file_type(&st) == SFlag::S_IFDIR => {
                openat(pfd.as_fd(), name, DIR_FLAGS, Mode::empty())
            }
            Ok(st) if self.overlay() && is_whiteout(&st) => {
                // This layer deleted the directory and now puts something
                // in it again: a fresh, opaque directory, so the deleted
                // lower contents stay hidden.
                unlinkat(pfd.as_fd(), name, UnlinkatFlags::NoRemoveDir)?;
                let fd = self.create_default_dir(&pfd, name)?;
                sys::fsetxattr(fd.as_fd(), OPAQUE_XATTR, b"y")?;
                self.opaque.insert(path.to_vec());
                Ok(fd)
            }
            Ok(st) if file_type(&st) == SFlag::S_IFLNK => {
                // A symlink to a directory that does not exist yet (say
                // `var/run -> /run` before `run/` exists): create the
                // directory it names, inside the root, as the kernel would
                // resolve it there.
                if hops >= MAX_SYMLINK_HOPS {
                    return Err(Errno::ELOOP);
                }
                let target = readlinkat(pfd.as_fd(), name)?;
                let resolved = resolve_link(parent, target.as_bytes());
                let fd = self.dir_following(&resolved, hops + 1)?;
                fd.try_clone().map_err(|_| Errno::EMFILE)
            }
            // A file, a device, a fifo.
            Ok(_) => Err(Errno::ENOTDIR),
            Err(e) => Err(e),
        }
    }

    /// Creates a parent directory no entry describes. In overlay mode it
    /// copies the metadata of the lower dir that shows through; otherwise
    /// (or if no lower has it) it is 0755 and owned by root.
    fn create_dir(&mut self, pfd: &OwnedFd, path: &[u8], name: &[u8]) -> nix::Result<OwnedFd> {
        if let Some(lower) = self.find_lower(path)? {
            if file_type(&lower.stat) == SFlag::S_IFDIR {
                let src = openat(lower.parent.as_fd(), name, DIR_FLAGS, Mode::empty())?;
                mkdirat(pfd.as_fd(), name, Mode::from_bits_truncate(0o700))?;
                let fd = openat(pfd.as_fd(), name, DIR_FLAGS, Mode::empty())?;
                copy_metadata(fd.as_fd(), src.as_fd(), &lower.stat)?;
                self.dir_times.push(DirTimes {
                    path: path.to_vec(),
                    atime: atime(&lower.stat),
                    mtime: mtime(&lower.stat),
                });
                return Ok(fd);
            }
        }
        self.create_default_dir(pfd, name)
    }

    fn create_default_dir(&mut self, pfd: &OwnedFd, name: &[u8]) -> nix::Result<OwnedFd> {
        mkdirat(pfd.as_fd(), name, Mode::from_bits_truncate(0o755))?;
        let fd = openat(pfd.as_fd(), name, DIR_FLAGS, Mode::empty())?;
        // The umask may have cut bits from mkdir's mode.
        fchmod(fd.as_fd(), Mode::from_bits_truncate(0o755))?;
        Ok(fd)
    }

    /// Removes whatever `name` is in `dir`, recursively for a directory.
    /// Returns whether something was there.
    pub(super) fn remove(&mut self, dir: &OwnedFd, name: &[u8]) -> nix::Result<bool> {
        let st = match fstatat(dir.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::ENOENT) => return Ok(false),
            Err(e) => return Err(e),
        };
        match file_type(&st) {
            SFlag::S_IFDIR => {
                remove_tree(dir.as_fd(), name)?;
                self.forget_dirs();
            }
            kind => {
                unlinkat(dir.as_fd(), name, UnlinkatFlags::NoRemoveDir)?;
                if kind == SFlag::S_IFLNK {
                    self.forget_dirs();
                }
            }
        }
        Ok(true)
    }

    /// Makes the directory `dir` (at `path`) hide lower contents (overlay).
    pub(super) fn set_opaque(&mut self, dir: &OwnedFd, path: &[u8]) -> nix::Result<()> {
        sys::fsetxattr(dir.as_fd(), OPAQUE_XATTR, b"y")?;
        self.opaque.insert(path.to_vec());
        Ok(())
    }

    /// Finds `path` in the lower dirs the way overlayfs would show it: the
    /// nearest lower that has it wins, a whiteout hides it, and an opaque or
    /// non-directory ancestor hides the lowers below. Lower dirs are only
    /// read, and walked one component at a time without following symlinks.
    fn find_lower(&self, path: &[u8]) -> nix::Result<Option<LowerEntry>> {
        if path.is_empty() || ancestors(path).any(|a| self.opaque.contains(a)) {
            return Ok(None);
        }
        let comps: Vec<&[u8]> = path.split(|&b| b == b'/').collect();
        for lower in &self.lowers {
            let mut dir: Option<OwnedFd> = None;
            let mut hides_below = false;
            for (i, comp) in comps.iter().enumerate() {
                let at = dir.as_ref().map_or(lower.as_fd(), |d| d.as_fd());
                let st = match fstatat(at, *comp, AtFlags::AT_SYMLINK_NOFOLLOW) {
                    Ok(st) => st,
                    Err(Errno::ENOENT) => break,
                    Err(e) => return Err(e),
                };
                if is_whiteout(&st) {
                    return Ok(None);
                }
                if i + 1 == comps.len() {
                    let parent = match dir {
                        Some(d) => d,
                        None => lower.try_clone().map_err(|_| Errno::EMFILE)?,
                    };
                    return Ok(Some(LowerEntry { parent, stat: st }));
                }
                if file_type(&st) != SFlag::S_IFDIR {
                    return Ok(None);
                }
                let next = openat(at, *comp, DIR_FLAGS, Mode::empty())?;
                if sys::fgetxattr(next.as_fd(), OPAQUE_XATTR)?.as_deref() == Some(b"y") {
                    hides_below = true;
                }
                dir = Some(next);
            }
            if hides_below {
                return Ok(None);
            }
        }
        Ok(None)
    }

    /// Overlay mode: copies `path` up from the lower dir that shows it, so
    /// that a hard link can be made to it. Returns false if no lower has it.
    pub(super) fn copy_up(&mut self, path: &[u8]) -> nix::Result<bool> {
        let Some(lower) = self.find_lower(path)? else {
            return Ok(false);
        };
        let (parent, name) = split(path);
        let pfd = self.dir(parent)?;
        let st = &lower.stat;
        let (at, name) = (pfd.as_fd(), name);
        match file_type(st) {
            SFlag::S_IFREG => {
                let src = openat(
                    lower.parent.as_fd(),
                    name,
                    OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )?;
                let dst = openat(
                    at,
                    name,
                    OFlag::O_WRONLY
                        | OFlag::O_CREAT
                        | OFlag::O_EXCL
                        | OFlag::O_NOFOLLOW
                        | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o600),
                )?;
                let (mut src, mut dst) = (File::from(src), File::from(dst));
                std::io::copy(&mut src, &mut dst).map_err(io_errno)?;
                copy_metadata(dst.as_fd(), src.as_fd(), st)?;
                futimens(dst.as_fd(), &atime(st), &mtime(st))?;
            }
            SFlag::S_IFLNK => {
                let target = readlinkat(lower.parent.as_fd(), name)?;
                symlinkat(target.as_bytes(), at, name)?;
                set_owner_at(at, name, st.st_uid, st.st_gid)?;
                utimensat(
                    at,
                    name,
                    &atime(st),
                    &mtime(st),
                    UtimensatFlags::NoFollowSymlink,
                )?;
            }
            SFlag::S_IFDIR => return Err(Errno::EPERM),
            kind => {
                mknodat(at, name, kind, Mode::from_bits_truncate(0o600), st.st_rdev)?;
                set_owner_at(at, name, st.st_uid, st.st_gid)?;
                fchmodat(
                    at,
                    name,
                    Mode::from_bits_truncate(st.st_mode & 0o7777),
                    FchmodatFlags::FollowSymlink,
                )?;
                utimensat(
                    at,
                    name,
                    &atime(st),
                    &mtime(st),
                    UtimensatFlags::NoFollowSymlink,
                )?;
            }
        }
        Ok(true)
    }
}

/// A lower dir's entry: its (open) parent directory and its stat.
struct LowerEntry {
    parent: OwnedFd,
    stat: FileStat,
}

/// Owner, then mode (chown clears set-id bits), then extended attributes
/// (chown also drops `security.capability`), from a lower object to a new one.
fn copy_metadata(to: BorrowedFd<'_>, from: BorrowedFd<'_>, st: &FileStat) -> nix::Result<()> {
    fchown(
        to,
        Some(Uid::from_raw(st.st_uid)),
        Some(Gid::from_raw(st.st_gid)),
    )?;
    fchmod(to, Mode::from_bits_truncate(st.st_mode & 0o7777))?;
    sys::copy_xattrs(from, to)
}

pub(super) fn set_owner_at(
    dir: BorrowedFd<'_>,
    name: &[u8],
    uid: u32,
    gid: u32,
) -> nix::Result<()> {
    fchownat(
        dir,
        name,
        Some(Uid::from_raw(uid)),
        Some(Gid::from_raw(gid)),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )
}

fn atime(st: &FileStat) -> TimeSpec {
    TimeSpec::new(st.st_atime, st.st_atime_nsec)
}

fn mtime(st: &FileStat) -> TimeSpec {
    TimeSpec::new(st.st_mtime, st.st_mtime_nsec)
}

fn io_errno(e: std::io::Error) -> Errno {
    e.raw_os_error().map_or(Errno::EIO, Errno::from_raw)
}

/// The names in a directory, without `.` and `..`.
pub(super) fn list(dir: BorrowedFd<'_>) -> nix::Result<Vec<Vec<u8>>> {
    let mut d = Dir::openat(dir, ".", DIR_FLAGS, Mode::empty())?;
    let mut names = Vec::new();
    for entry in d.iter() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(name.to_vec());
        }
    }
    Ok(names)
}

/// Removes the directory `name` in `dir` and everything below it, never
/// following a symlink.
fn remove_tree(dir: BorrowedFd<'_>, name: &[u8]) -> nix::Result<()> {
    let sub = openat(dir, name, DIR_FLAGS, Mode::empty())?;
    clear_dir(sub.as_fd())?;
    drop(sub);
    unlinkat(dir, name, UnlinkatFlags::RemoveDir)
}

/// Removes everything inside `dir`.
fn clear_dir(dir: BorrowedFd<'_>) -> nix::Result<()> {
    for name in list(dir)? {
        match unlinkat(dir, name.as_slice(), UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(Errno::EISDIR) => remove_tree(dir, &name)?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
