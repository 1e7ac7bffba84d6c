//! Mounts: the description a snapshotter hands out ([`Mount`]), performing
//! it ([`Mount::mount`], [`mount_all`]), undoing it ([`unmount`]), and
//! finding whether a snapshot's directory is mounted somewhere.
//!
//! # Long overlay chains
//!
//! `mount(2)` takes all filesystem options in one page (4096 bytes with the
//! NUL), and `lowerdir=` lists every parent's absolute directory: a chain of
//! 128 layers under `/var/lib/berth/snapshots/overlayfs/<id>/fs` needs about
//! 6 KiB. When the options fit, berth calls `mount(2)`, exactly the command
//! [`Mount::command_line`] prints. When they do not, it uses the new mount
//! API (`fsopen`/`fsconfig`/`fsmount`/`move_mount`, Linux 5.2) and hands
//! the layers to overlayfs one at a time as `lowerdir+` (Linux 6.8), which
//! has no total length limit (each path must fit in 256 bytes).
//!
//! The alternative, relative lowerdirs resolved against a changed working
//! directory, needs `chdir`, which is process-wide: unsafe in a threaded
//! program (tests, a future multi-layer unpacker) unless done in a forked
//! child. The new API needs neither, and its kernel log lines ("overlayfs:
//! failed to resolve …") come back in the error.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use serde::{Deserialize, Serialize};

use super::{Error, Result};
use crate::ErrorKind;

/// One mount: `mount -t <type> <source> -o <options> <target>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// Filesystem type (`overlay`), or `bind` for a bind mount.
    #[serde(rename = "type")]
    pub kind: String,
    /// Device or directory mounted: `overlay`, or the directory bound.
    pub source: String,
    /// Where it is mounted, when known; snapshotters leave it empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<PathBuf>,
    /// Mount flags (`ro`, `rbind`, `nosuid`, …) and filesystem options
    /// (`lowerdir=…`), in order.
    pub options: Vec<String>,
}

/// Generic mount flags, as `mount(8)` spells them.
const FLAGS: &[(&str, MsFlags, bool)] = &[
    ("ro", MsFlags::MS_RDONLY, false),
    ("rw", MsFlags::MS_RDONLY, true),
    ("bind", MsFlags::MS_BIND, false),
    ("rbind", MsFlags::MS_BIND.union(MsFlags::MS_REC), false),
    ("nosuid", MsFlags::MS_NOSUID, false),
    ("suid", MsFlags::MS_NOSUID, true),
    ("nodev", MsFlags::MS_NODEV, false),
    ("dev", MsFlags::MS_NODEV, true),
    ("noexec", MsFlags::MS_NOEXEC, false),
    ("exec", MsFlags::MS_NOEXEC, true),
    ("noatime", MsFlags::MS_NOATIME, false),
    ("nodiratime", MsFlags::MS_NODIRATIME, false),
    ("relatime", MsFlags::MS_RELATIME, false),
    ("strictatime", MsFlags::MS_STRICTATIME, false),
    ("sync", MsFlags::MS_SYNCHRONOUS, false),
];

/// Flags a bind mount must apply with a second, remounting call.
const REMOUNT_FLAGS: MsFlags = MsFlags::MS_RDONLY
    .union(MsFlags::MS_NOSUID)
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC)
    .union(MsFlags::MS_NOATIME)
    .union(MsFlags::MS_NODIRATIME)
    .union(MsFlags::MS_RELATIME)
    .union(MsFlags::MS_STRICTATIME);

impl Mount {
    /// A recursive bind mount of `source`.
    pub fn bind(source: &Path, read_only: bool) -> Mount {
        Mount {
            kind: "bind".into(),
            source: source.to_string_lossy().into_owned(),
            target: None,
            options: vec!["rbind".into(), if read_only { "ro" } else { "rw" }.into()],
        }
    }

    /// An overlay of `lower` (nearest first) with, when given, a writable
    /// `(upperdir, workdir)`; read-only without.
    pub fn overlay(lower: &[PathBuf], upper: Option<(&Path, &Path)>) -> Mount {
        let join = |dirs: &[PathBuf]| {
            dirs.iter()
                .map(|d| d.to_string_lossy())
                .collect::<Vec<_>>()
                .join(":")
        };
        let mut options = Vec::new();
        match upper {
            Some((upper, work)) => {
                options.push(format!("workdir={}", work.display()));
                options.push(format!("upperdir={}", upper.display()));
            }
            None => options.push("ro".into()),
        }
        options.push(format!("lowerdir={}", join(lower)));
        Mount {
            kind: "overlay".into(),
            source: "overlay".into(),
            target: None,
            options,
        }
    }

    /// Whether the mount comes out read-only.
    pub fn read_only(&self) -> bool {
        let (flags, _) = self.split_options();
        flags.contains(MsFlags::MS_RDONLY)
    }

    fn is_bind(&self) -> bool {
        let (flags, _) = self.split_options();
        self.kind == "bind" || flags.contains(MsFlags::MS_BIND)
    }

    /// Generic flags, and the rest as filesystem options.
    fn split_options(&self) -> (MsFlags, Vec<&str>) {
        let mut flags = MsFlags::empty();
        let mut data = Vec::new();
        for option in &self.options {
            match FLAGS.iter().find(|(name, _, _)| name == option) {
                Some((_, flag, false)) => flags |= *flag,
                Some((_, flag, true)) => flags &= !*flag,
                None => data.push(option.as_str()),
            }
        }
        (flags, data)
    }

    /// The `mount(8)` command that does the same, shell-quoted.
    pub fn command_line(&self, target: &Path) -> String {
        let target = quote(&target.to_string_lossy());
        let options = quote(&self.options.join(","));
        if self.kind == "bind" {
            format!("mount -o {options} {} {target}", quote(&self.source))
        } else if self.options.is_empty() {
            format!("mount -t {} {} {target}", self.kind, quote(&self.source))
        } else {
            format!(
                "mount -t {} {} -o {options} {target}",
                self.kind,
                quote(&self.source)
            )
        }
    }

    /// Mounts this at `target`, an existing directory.
    pub fn mount(&self, target: &Path) -> Result<()> {
        let fail = |source: io::Error, detail: String| Error::Mount {
            command: self.command_line(target),
            source,
            detail,
        };
        let (flags, data) = self.split_options();
        if self.is_bind() {
            let bind = flags & (MsFlags::MS_BIND | MsFlags::MS_REC) | MsFlags::MS_BIND;
            nix::mount::mount(
                Some(self.source.as_str()),
                target,
                None::<&str>,
                bind,
                None::<&str>,
            )
            .map_err(|e| fail(e.into(), String::new()))?;
            let extra = flags & REMOUNT_FLAGS;
            if !extra.is_empty() {
                let remount = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | extra;
                if let Err(e) =
                    nix::mount::mount(None::<&str>, target, None::<&str>, remount, None::<&str>)
                {
                    let _ = nix::mount::umount2(target, MntFlags::MNT_DETACH);
                    return Err(fail(e.into(), "remounting the bind mount".into()));
                }
            }
            return Ok(());
        }
        let joined = data.join(",");
        if joined.len() < page_size() || self.kind != "overlay" {
            return nix::mount::mount(
                Some(self.source.as_str()),
                target,
                Some(self.kind.as_str()),
                flags,
                Some(joined.as_str()),
            )
            .map_err(|e| fail(e.into(), String::new()));
        }
        new_api::mount(&self.kind, &self.source, &data, flags, target)
            .map_err(|(e, detail)| fail(e, detail))
    }
}

/// Mounts `mounts` in order at `target`; on failure, unmounts those done.
pub fn mount_all(mounts: &[Mount], target: &Path) -> Result<()> {
    for (i, m) in mounts.iter().enumerate() {
        if let Err(e) = m.mount(target) {
            for _ in 0..i {
                let _ = nix::mount::umount2(target, MntFlags::MNT_DETACH);
            }
            return Err(e);
        }
    }
    Ok(())
}

/// Unmounts the filesystem mounted at `target`. Fails with `NotFound` when
/// nothing is mounted there and `FailedPrecondition` when it is busy.
pub fn unmount(target: &Path) -> Result<()> {
    nix::mount::umount2(target, MntFlags::empty()).map_err(|errno| {
        let (reason, kind) = match errno {
            Errno::EINVAL => ("not a mount point".to_string(), ErrorKind::NotFound),
            Errno::ENOENT => ("no such directory".to_string(), ErrorKind::NotFound),
            Errno::EBUSY => (
                "busy: a process has files open or its working directory there".to_string(),
                ErrorKind::FailedPrecondition,
            ),
            Errno::EPERM => (
                "not permitted (needs CAP_SYS_ADMIN)".to_string(),
                ErrorKind::FailedPrecondition,
            ),
            other => (other.desc().to_string(), ErrorKind::Internal),
        };
        Error::Unmount {
            target: target.to_path_buf(),
            reason,
            kind,
        }
    })
}

fn page_size() -> usize {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .map(|n| n as usize)
        .unwrap_or(4096)
}

/// `s` as one shell word.
fn quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@%".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// A mount point in this mount namespace that uses the snapshot directory
/// `data_dir` (`<root>/snapshots/<name>/<id>`): an overlay naming its `fs`
/// or `work` in its options, or a bind mount of its `fs`.
pub(super) fn mounted_using(data_dir: &Path) -> io::Result<Option<PathBuf>> {
    let fs_dir = data_dir.join("fs");
    let work_dir = data_dir.join("work");
    let ours = |p: &str| Path::new(p) == fs_dir || Path::new(p) == work_dir;
    let fs_stat = fs::metadata(&fs_dir).ok();
    let text = fs::read_to_string("/proc/self/mountinfo")?;
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let left: Vec<&str> = left.split(' ').collect();
        let right: Vec<&str> = right.split(' ').collect();
        if left.len() < 5 || right.len() < 3 {
            continue;
        }
        let mountpoint = PathBuf::from(unescape(left[4]));
        if right[0] == "overlay" {
            for option in right[2].split(',') {
                let Some((key, value)) = option.split_once('=') else {
                    continue;
                };
                let dirs = matches!(
                    key,
                    "upperdir" | "workdir" | "lowerdir" | "lowerdir+" | "datadir+"
                );
                if dirs && value.split(':').any(|d| ours(&unescape(d))) {
                    return Ok(Some(mountpoint));
                }
            }
        } else if let Some(stat) = &fs_stat {
            let dev = format!(
                "{}:{}",
                nix::sys::stat::major(stat.dev()),
                nix::sys::stat::minor(stat.dev())
            );
            if left[2] == dev
                && fs::metadata(&mountpoint)
                    .is_ok_and(|m| m.dev() == stat.dev() && m.ino() == stat.ino())
            {
                return Ok(Some(mountpoint));
            }
        }
    }
    Ok(None)
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let digits = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        if let (b'\\', Some(d)) = (bytes[i], digits) {
            let value = d.iter().fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
            if let Ok(b) = u8::try_from(value) {
                out.push(b);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The new mount API, by raw syscalls (libc has no wrappers).
mod new_api {
    use super::*;

    const FSOPEN_CLOEXEC: libc::c_uint = 1;
    const FSCONFIG_SET_FLAG: libc::c_uint = 0;
    const FSCONFIG_SET_STRING: libc::c_uint = 1;
    const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
    const FSMOUNT_CLOEXEC: libc::c_uint = 1;
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;
    const MOUNT_ATTRS: &[(MsFlags, libc::c_uint)] = &[
        (MsFlags::MS_RDONLY, 0x01),
        (MsFlags::MS_NOSUID, 0x02),
        (MsFlags::MS_NODEV, 0x04),
        (MsFlags::MS_NOEXEC, 0x08),
        (MsFlags::MS_NOATIME, 0x10),
        (MsFlags::MS_STRICTATIME, 0x20),
        (MsFlags::MS_NODIRATIME, 0x80),
    ];

    type Failure = (io::Error, String);

    fn cstr(s: &[u8]) -> std::result::Result<CString, Failure> {
        CString::new(s).map_err(|_| {
            (
                io::Error::from(io::ErrorKind::InvalidInput),
                "NUL byte in a mount option".into(),
            )
        })
    }

    /// Mounts filesystem `kind` at `target` with the options `data`, giving
    /// overlay's `lowerdir=a:b:c` as one `lowerdir+` per layer.
    pub(super) fn mount(
        kind: &str,
        source: &str,
        data: &[&str],
        flags: MsFlags,
        target: &Path,
    ) -> std::result::Result<(), Failure> {
        let fs = fsopen(kind)?;
        let run = || -> std::result::Result<OwnedFd, Failure> {
            set_string(&fs, "source", source)?;
            for option in data {
                match option.split_once('=') {
                    Some(("lowerdir", layers)) => {
                        for layer in layers.split(':') {
                            set_string(&fs, "lowerdir+", layer)?;
                        }
                    }
                    Some((key, value)) => set_string(&fs, key, value)?,
                    None => set_flag(&fs, option)?,
                }
            }
            create(&fs)?;
            let attrs = MOUNT_ATTRS
                .iter()
                .filter(|(flag, _)| flags.contains(*flag))
                .fold(0, |acc, (_, attr)| acc | attr);
            fsmount(&fs, attrs)
        };
        let mnt = run().map_err(|(e, detail)| (e, join_detail(detail, kernel_log(&fs))))?;
        move_mount(&mnt, target)
    }

    fn join_detail(a: String, b: String) -> String {
        match (a.is_empty(), b.is_empty()) {
            (_, true) => a,
            (true, false) => b,
            (false, false) => format!("{a}; {b}"),
        }
    }

    fn fsopen(kind: &str) -> std::result::Result<OwnedFd, Failure> {
        let name = cstr(kind.as_bytes())?;
        // SAFETY: fsopen reads the NUL-terminated name and returns a new fd
        // or -1; no memory is retained.
        let fd = unsafe { libc::syscall(libc::SYS_fsopen, name.as_ptr(), FSOPEN_CLOEXEC) };
        if fd < 0 {
            return Err((io::Error::last_os_error(), format!("fsopen {kind}")));
        }
        // SAFETY: the kernel just returned this fd, and nothing else owns it.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
    }

    fn fsconfig(
        fs: &OwnedFd,
        cmd: libc::c_uint,
        key: Option<&CString>,
        value: Option<&CString>,
    ) -> io::Result<()> {
        let key = key.map_or(std::ptr::null(), |k| k.as_ptr());
        let value = value.map_or(std::ptr::null(), |v| v.as_ptr());
        // SAFETY: fs is an open fs-context fd; key and value are NUL-
        // terminated strings (or NULL where the command takes none) that
        // outlive the call; aux is 0 for every command used here.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                fs.as_raw_fd(),
                cmd,
                key,
                value,
                0 as libc::c_int,
            )
        };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    fn set_string(fs: &OwnedFd, key: &str, value: &str) -> std::result::Result<(), Failure> {
        let (k, v) = (cstr(key.as_bytes())?, cstr(value.as_bytes())?);
        fsconfig(fs, FSCONFIG_SET_STRING, Some(&k), Some(&v)).map_err(|e| {
            let hint = if key == "lowerdir+" && e.raw_os_error() == Some(libc::EINVAL) {
                " (overlay's lowerdir+ needs Linux 6.8 or newer)"
            } else {
                ""
            };
            (e, format!("option {key}={value}{hint}"))
        })
    }

    fn set_flag(fs: &OwnedFd, key: &str) -> std::result::Result<(), Failure> {
        let k = cstr(key.as_bytes())?;
        fsconfig(fs, FSCONFIG_SET_FLAG, Some(&k), None).map_err(|e| (e, format!("option {key}")))
    }

    fn create(fs: &OwnedFd) -> std::result::Result<(), Failure> {
        fsconfig(fs, FSCONFIG_CMD_CREATE, None, None)
            .map_err(|e| (e, "creating the filesystem".into()))
    }

    fn fsmount(fs: &OwnedFd, attrs: libc::c_uint) -> std::result::Result<OwnedFd, Failure> {
        // SAFETY: fs is a created fs-context fd; fsmount returns a new fd or -1.
        let fd =
            unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, attrs) };
        if fd < 0 {
            return Err((io::Error::last_os_error(), "fsmount".into()));
        }
        // SAFETY: the kernel just returned this fd, and nothing else owns it.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
    }

    fn move_mount(mnt: &OwnedFd, target: &Path) -> std::result::Result<(), Failure> {
        let empty = cstr(b"")?;
        let to = cstr(target.as_os_str().as_bytes())?;
        // SAFETY: mnt is a detached mount fd; both paths are NUL-terminated
        // and outlive the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_move_mount,
                mnt.as_raw_fd(),
                empty.as_ptr(),
                libc::AT_FDCWD,
                to.as_ptr(),
                MOVE_MOUNT_F_EMPTY_PATH,
            )
        };
        if rc < 0 {
            return Err((io::Error::last_os_error(), "move_mount".into()));
        }
        Ok(())
    }

    /// The messages the filesystem logged into its context ("e overlayfs:
    /// …"), which say more than the errno.
    fn kernel_log(fs: &OwnedFd) -> String {
        let mut lines = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            // SAFETY: reads at most buf.len() bytes into buf, which we own.
            let n = unsafe { libc::read(fs.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            lines.push(
                String::from_utf8_lossy(&buf[..n as usize])
                    .trim()
                    .to_string(),
            );
        }
        lines.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_split_into_flags_and_data() {
        let m = Mount::overlay(
            &[PathBuf::from("/a/fs"), PathBuf::from("/b/fs")],
            Some((Path::new("/c/fs"), Path::new("/c/work"))),
        );
        let (flags, data) = m.split_options();
        assert!(flags.is_empty());
        assert_eq!(
            data,
            ["workdir=/c/work", "upperdir=/c/fs", "lowerdir=/a/fs:/b/fs"]
        );
        assert!(!m.read_only());
        assert_eq!(
            m.command_line(Path::new("/mnt")),
            "mount -t overlay overlay -o workdir=/c/work,upperdir=/c/fs,lowerdir=/a/fs:/b/fs /mnt"
        );
        let view = Mount::overlay(&[PathBuf::from("/a/fs"), PathBuf::from("/b/fs")], None);
        assert!(view.read_only());
        let b = Mount::bind(Path::new("/x y/fs"), true);
        assert!(b.read_only() && b.is_bind());
        assert_eq!(
            b.command_line(Path::new("/mnt")),
            "mount -o rbind,ro '/x y/fs' /mnt"
        );
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape(r"/a\040b"), "/a b");
        assert_eq!(unescape(r"/a\134"), r"/a\");
        assert_eq!(unescape(r"/plain"), "/plain");
        assert_eq!(unescape(r"/end\04"), r"/end\04");
    }

    #[test]
    fn json_uses_type() {
        let v = serde_json::to_value(Mount::bind(Path::new("/s"), false)).unwrap();
        assert_eq!(v["type"], "bind");
        assert!(v.get("target").is_none());
    }
}
