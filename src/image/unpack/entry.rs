//! Applying tar entries, one at a time, in stream order.
//!
//! Each entry is created relative to its parent's descriptor (see `root`),
//! with a call that never follows the last component: `openat(O_EXCL |
//! O_NOFOLLOW)`, `mkdirat`, `symlinkat`, `linkat`, `mknodat`. Creation is
//! tried first and an existing entry removed only when the kernel says one is
//! there, so a fresh unpack costs no extra lookups. Metadata follows (see
//! `meta`); directory times wait until the end, because creating children
//! changes them. Whiteouts are in `whiteout`.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{
    fchmodat, fstatat, futimens, makedev, mkdirat, mknodat, utimensat, FchmodatFlags, Mode, SFlag,
    UtimensatFlags,
};
use nix::unistd::{linkat, symlinkat, syncfs};
use tar::EntryType;

use super::meta::Meta;
use super::name::{ancestors, normalise, split, whiteout, Whiteout};
use super::root::{set_owner_at, DirTimes, Root, DIR_FLAGS};
use super::stream::{fill, ChannelReader};
use super::sys::{self, file_type, is_whiteout, open_in_root};
use super::Error;

/// Buffer for file contents: one read and one write per MiB.
const FILE_BUFFER: usize = 1024 * 1024;

pub(super) struct Unpacker {
    pub(super) root: Root,
    /// Delete mode: every path this layer wrote (and their ancestors), so an
    /// opaque whiteout removes only what the lower layers had.
    pub(super) layer_paths: Option<HashSet<Vec<u8>>>,
    buf: Vec<u8>,
    pub(super) entries: u64,
}

impl Unpacker {
    pub(super) fn new(root: Root) -> Unpacker {
        let layer_paths = (!root.overlay()).then(HashSet::new);
        Unpacker {
            root,
            layer_paths,
            buf: vec![0; FILE_BUFFER],
            entries: 0,
        }
    }

    /// Applies every entry of the tar stream `reader`.
    pub(super) fn run(&mut self, reader: ChannelReader) -> Result<(), Error> {
        let ended = reader.ended();
        // A malformed header read after the stream ran out is a truncation.
        let tar_error = |e: std::io::Error| {
            if ended.get() && e.kind() != std::io::ErrorKind::UnexpectedEof {
                Error::Tar(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, e))
            } else {
                Error::Tar(e)
            }
        };
        let mut archive = tar::Archive::new(reader);
        for entry in archive.entries().map_err(tar_error)? {
            self.entry(entry.map_err(tar_error)?)?;
        }
        Ok(())
    }

    /// Sets the deferred directory times, and syncs the filesystem if asked.
    pub(super) fn finish(&mut self, sync: bool) -> Result<(), Error> {
        let times = std::mem::take(&mut self.root.dir_times);
        for DirTimes { path, atime, mtime } in &times {
            let fd = match self.root.cached(path) {
                Some(fd) => fd,
                None => match open_in_root(self.root.fd(), path, DIR_FLAGS) {
                    Ok(fd) => fd.into(),
                    // Replaced by a later entry: that one's times apply.
                    Err(Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP) => continue,
                    Err(e) => return Err(Error::io(path, "opening directory", e)),
                },
            };
            futimens(fd.as_fd(), atime, mtime)
                .map_err(|e| Error::io(path, "setting directory times", e))?;
        }
        if sync {
            syncfs(self.root.fd()).map_err(|e| Error::io(b"", "syncing the filesystem", e))?;
        }
        Ok(())
    }

    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), Error> {
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            return Ok(());
        }
        let raw = entry.path_bytes().into_owned();
        let path = normalise(&raw).map_err(|bad| Error::entry(&raw, bad.reason()))?;
        self.entries += 1;
        let (parent, name) = split(&path);
        match whiteout(name).map_err(|reason| Error::entry(&raw, reason))? {
            Whiteout::No => {}
            Whiteout::Meta => return Ok(()),
            Whiteout::Remove(victim) => return self.whiteout(&raw, parent, victim),
            Whiteout::Opaque => return self.opaque(&raw, parent),
        }
        if let Some(paths) = &mut self.layer_paths {
            if paths.insert(path.clone()) {
                for ancestor in ancestors(&path) {
                    if !paths.insert(ancestor.to_vec()) {
                        break;
                    }
                }
            }
        }
        let meta = Meta::read(&mut entry).map_err(|e| Error::header(&raw, e))?;
        // Old tars mark directories with a trailing slash only.
        let is_dir =
            kind.is_dir() || ((kind.is_file() || kind.is_contiguous()) && raw.ends_with(b"/"));
        if path.is_empty() {
            if !is_dir {
                return Err(Error::entry(&raw, "replaces the root with a non-directory"));
            }
            return self.root_dir(&meta);
        }
        if is_dir {
            self.directory(&raw, &path, parent, name, &meta)
        } else if kind.is_file() || kind.is_contiguous() || kind.is_gnu_sparse() {
            self.file(&raw, parent, name, &meta, &mut entry)
        } else if kind.is_symlink() {
            let target = entry
                .link_name_bytes()
                .ok_or_else(|| Error::entry(&raw, "symlink has no target"))?
                .into_owned();
            self.symlink(&raw, parent, name, &target, &meta)
        } else if kind.is_hard_link() {
            let target = entry
                .link_name_bytes()
                .ok_or_else(|| Error::entry(&raw, "hard link has no target"))?
                .into_owned();
            self.hard_link(&raw, &path, parent, name, &target)
        } else if kind.is_character_special() || kind.is_block_special() || kind.is_fifo() {
            let node = match kind {
                EntryType::Char => SFlag::S_IFCHR,
                EntryType::Block => SFlag::S_IFBLK,
                _ => SFlag::S_IFIFO,
            };
            let dev = if node == SFlag::S_IFIFO {
                0
            } else {
                let header = entry.header();
                let major = header.device_major().map_err(|e| Error::header(&raw, e))?;
                let minor = header.device_minor().map_err(|e| Error::header(&raw, e))?;
                makedev(major.unwrap_or(0).into(), minor.unwrap_or(0).into())
            };
            self.node(&raw, parent, name, node, dev, &meta)
        } else {
            Err(Error::entry(
                &raw,
                format!("unsupported entry type {:?}", kind.as_byte() as char),
            ))
        }
    }

    pub(super) fn parent(&mut self, raw: &[u8], parent: &[u8]) -> Result<super::root::Fd, Error> {
        self.root
            .dir(parent)
            .map_err(|e| Error::io(raw, "opening its parent directory", e))
    }

    /// Runs `create`; if something is in the way, removes it and tries once
    /// more.
    fn create(
        &mut self,
        raw: &[u8],
        dir: &OwnedFd,
        name: &[u8],
        what: &'static str,
        mut create: impl FnMut() -> nix::Result<()>,
    ) -> Result<(), Error> {
        match create() {
            Err(Errno::EEXIST) => {
                self.root
                    .remove(dir, name)
                    .map_err(|e| Error::io(raw, "removing the existing entry", e))?;
                create()
            }
            other => other,
        }
        .map_err(|e| Error::io(raw, what, e))
    }

    fn file<R: Read>(
        &mut self,
        raw: &[u8],
        parent: &[u8],
        name: &[u8],
        meta: &Meta,
        entry: &mut tar::Entry<'_, R>,
    ) -> Result<(), Error> {
        let pfd = self.parent(raw, parent)?;
        let mut created = None;
        self.create(raw, &pfd, name, "creating the file", || {
            let flags = OFlag::O_WRONLY
                | OFlag::O_CREAT
                | OFlag::O_EXCL
                | OFlag::O_NOFOLLOW
                | OFlag::O_CLOEXEC;
            created = Some(openat(
                pfd.as_fd(),
                name,
                flags,
                Mode::from_bits_truncate(0o600),
            )?);
            Ok(())
        })?;
        let mut file = File::from(created.expect("created on success"));
        let mut written = 0u64;
        loop {
            let n = fill(entry, &mut self.buf).map_err(|source| Error::Content {
                path: lossy(raw),
                source,
            })?;
            if n == 0 {
                break;
            }
            file.write_all(&self.buf[..n])
                .map_err(|e| Error::io_std(raw, "writing the file", e))?;
            written += n as u64;
            if n < self.buf.len() {
                break;
            }
        }
        // The tar reader reports the end of the stream inside an entry as a
        // short read; a sparse entry expands to more than its stored size.
        if written < entry.size() && !entry.header().entry_type().is_gnu_sparse() {
            return Err(Error::Content {
                path: lossy(raw),
                source: std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("the stream ends after {written} of {} bytes", entry.size()),
                ),
            });
        }
        meta.owner_and_mode(file.as_fd())
            .map_err(|e| Error::io(raw, "setting owner and mode", e))?;
        meta.xattrs(raw, |name, value| sys::fsetxattr(file.as_fd(), name, value))?;
        futimens(file.as_fd(), &meta.atime, &meta.mtime)
            .map_err(|e| Error::io(raw, "setting times", e))
    }

    fn root_dir(&mut self, meta: &Meta) -> Result<(), Error> {
        let root = self.root.fd();
        meta.owner_and_mode(root)
            .map_err(|e| Error::io(b".", "setting owner and mode", e))?;
        meta.xattrs(b".", |name, value| sys::fsetxattr(root, name, value))?;
        self.root.dir_times.push(DirTimes {
            path: Vec::new(),
            atime: meta.atime,
            mtime: meta.mtime,
        });
        Ok(())
    }

    fn directory(
        &mut self,
        raw: &[u8],
        path: &[u8],
        parent: &[u8],
        name: &[u8],
        meta: &Meta,
    ) -> Result<(), Error> {
        let pfd = self.parent(raw, parent)?;
        let mode = Mode::from_bits_truncate(0o700);
        let mut replaced_whiteout = false;
        match mkdirat(pfd.as_fd(), name, mode) {
            Ok(()) => {}
            Err(Errno::EEXIST) => {
                let st = fstatat(pfd.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW)
                    .map_err(|e| Error::io(raw, "inspecting the existing entry", e))?;
                // An existing directory is kept; anything else makes way.
                if file_type(&st) != SFlag::S_IFDIR {
                    replaced_whiteout = self.root.overlay() && is_whiteout(&st);
                    self.create(raw, &pfd, name, "creating the directory", || {
                        mkdirat(pfd.as_fd(), name, mode)
                    })?;
                }
            }
            Err(e) => return Err(Error::io(raw, "creating the directory", e)),
        }
        let fd = openat(pfd.as_fd(), name, DIR_FLAGS, Mode::empty())
            .map_err(|e| Error::io(raw, "opening the directory", e))?;
        meta.owner_and_mode(fd.as_fd())
            .map_err(|e| Error::io(raw, "setting owner and mode", e))?;
        meta.xattrs(raw, |name, value| sys::fsetxattr(fd.as_fd(), name, value))?;
        let fd = self.root.remember_dir(path, fd);
        if replaced_whiteout {
            // The layer deleted this directory, then made a new one: the
            // deleted lower contents must stay hidden.
            self.root
                .set_opaque(&fd, path)
                .map_err(|e| Error::io(raw, "making the directory opaque", e))?;
        }
        self.root.dir_times.push(DirTimes {
            path: path.to_vec(),
            atime: meta.atime,
            mtime: meta.mtime,
        });
        Ok(())
    }

    fn symlink(
        &mut self,
        raw: &[u8],
        parent: &[u8],
        name: &[u8],
        target: &[u8],
        meta: &Meta,
    ) -> Result<(), Error> {
        if target.is_empty() || target.contains(&0) {
            return Err(Error::entry(
                raw,
                "symlink target is empty or has a NUL byte",
            ));
        }
        let pfd = self.parent(raw, parent)?;
        // The target is stored as written, absolute or not: it is only ever
        // followed inside the root, by us or by the container.
        self.create(raw, &pfd, name, "creating the symlink", || {
            symlinkat(target, pfd.as_fd(), name)
        })?;
        self.special_metadata(raw, &pfd, name, meta, false)
    }

    fn node(
        &mut self,
        raw: &[u8],
        parent: &[u8],
        name: &[u8],
        kind: SFlag,
        dev: libc::dev_t,
        meta: &Meta,
    ) -> Result<(), Error> {
        let pfd = self.parent(raw, parent)?;
        self.create(raw, &pfd, name, "creating the node", || {
            mknodat(
                pfd.as_fd(),
                name,
                kind,
                Mode::from_bits_truncate(0o600),
                dev,
            )
        })?;
        self.special_metadata(raw, &pfd, name, meta, true)
    }

    /// Owner, mode, xattrs and times of an entry we cannot open for writing
    /// (symlinks, device nodes, fifos), by name in its parent.
    fn special_metadata(
        &mut self,
        raw: &[u8],
        dir: &OwnedFd,
        name: &[u8],
        meta: &Meta,
        chmod: bool,
    ) -> Result<(), Error> {
        let at = dir.as_fd();
        set_owner_at(at, name, meta.uid, meta.gid)
            .map_err(|e| Error::io(raw, "setting owner", e))?;
        if chmod {
            // `name` was just created by us as a node, not a symlink.
            fchmodat(
                at,
                name,
                Mode::from_bits_truncate(meta.mode),
                FchmodatFlags::FollowSymlink,
            )
            .map_err(|e| Error::io(raw, "setting mode", e))?;
        }
        if !meta.xattrs.is_empty() {
            let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
            let fd = openat(at, name, flags, Mode::empty())
                .map_err(|e| Error::io(raw, "opening for extended attributes", e))?;
            meta.xattrs(raw, |xname, value| {
                sys::setxattr_opath(fd.as_fd(), xname, value)
            })?;
        }
        utimensat(
            at,
            name,
            &meta.atime,
            &meta.mtime,
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(|e| Error::io(raw, "setting times", e))
    }

    fn hard_link(
        &mut self,
        raw: &[u8],
        path: &[u8],
        parent: &[u8],
        name: &[u8],
        target_raw: &[u8],
    ) -> Result<(), Error> {
        let target = normalise(target_raw).map_err(|bad| {
            Error::entry(
                raw,
                format!("hard link target {:?} {}", lossy(target_raw), bad.reason()),
            )
        })?;
        if target.is_empty() {
            return Err(Error::entry(raw, "hard link to the root"));
        }
        if target == path {
            return Ok(());
        }
        let (target_parent, target_name) = split(&target);
        let pfd = self.parent(raw, parent)?;
        let (mut replaced, mut copied_up) = (false, false);
        loop {
            let source = self
                .root
                .existing_dir(target_parent)
                .map_err(|e| Error::io(raw, "opening the link target's directory", e))?;
            let linked = match &source {
                // Both ends are directory descriptors from in-root resolution
                // and single names: the link cannot reach outside the root.
                Some(sfd) => linkat(
                    sfd.as_fd(),
                    target_name,
                    pfd.as_fd(),
                    name,
                    AtFlags::empty(),
                ),
                None => Err(Errno::ENOENT),
            };
            match linked {
                Ok(()) => return Ok(()),
                Err(Errno::EEXIST) if !replaced => {
                    replaced = true;
                    self.root
                        .remove(&pfd, name)
                        .map_err(|e| Error::io(raw, "removing the existing entry", e))?;
                }
                Err(Errno::ENOENT) if self.root.overlay() && !copied_up => {
                    copied_up = true;
                    let found = self
                        .root
                        .copy_up(&target)
                        .map_err(|e| Error::io(raw, "copying the link target up", e))?;
                    if !found {
                        return Err(missing_link_target(raw, &target));
                    }
                }
                Err(Errno::ENOENT) => return Err(missing_link_target(raw, &target)),
                Err(e) => return Err(Error::io(raw, "creating the hard link", e)),
            }
        }
    }
}

fn missing_link_target(raw: &[u8], target: &[u8]) -> Error {
    Error::entry(
        raw,
        format!(
            "hard link target {:?} is neither in this layer nor below it",
            lossy(target)
        ),
    )
}

pub(super) fn lossy(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw).into_owned()
}

impl Error {
    pub(super) fn entry(raw: &[u8], reason: impl Into<Cow<'static, str>>) -> Error {
        Error::Entry {
            path: lossy(raw),
            reason: reason.into().into_owned(),
        }
    }

    pub(super) fn io(raw: &[u8], op: &'static str, e: Errno) -> Error {
        Error::io_std(raw, op, e.into())
    }

    pub(super) fn io_std(raw: &[u8], op: &'static str, source: std::io::Error) -> Error {
        Error::Io {
            path: lossy(raw),
            op,
            source,
        }
    }

    fn header(raw: &[u8], source: std::io::Error) -> Error {
        Error::Header {
            path: lossy(raw),
            source,
        }
    }
}
