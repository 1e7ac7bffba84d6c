//! Resolving `--user` against the image's own `/etc/passwd` and `/etc/group`.
//!
//! Those files come from an untrusted image: `/etc/passwd` may be a symlink
//! to `/etc/shadow` of the host, or to a FIFO, or be gigabytes long. They are
//! opened with `openat2(RESOLVE_IN_ROOT)`, so every symlink is resolved as if
//! the root filesystem were `/`. Only regular files are read, and at most
//! [`MAX_DB_SIZE`] bytes of them.

use std::fs::File;
use std::io::Read;
use std::os::fd::AsFd;
use std::path::Path;

use nix::fcntl::OFlag;

use super::{Error, Result};

/// The most of `/etc/passwd` or `/etc/group` that is read.
pub const MAX_DB_SIZE: u64 = 4 << 20;

/// Who the container process runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups from `/etc/group` membership, without `gid`.
    pub additional_gids: Vec<u32>,
    /// The home directory from `/etc/passwd`, `/` without an entry.
    pub home: String,
}

#[derive(Debug, Clone)]
struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

#[derive(Debug, Clone)]
struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

/// Resolves `spec` (`name|uid[:group|gid]`, or empty for root) against the
/// databases in `rootfs`. Numeric ids need no entry; names must have one.
pub fn resolve(rootfs: &Path, spec: &str) -> Result<ResolvedUser> {
    let bad = |reason: String| Error::flag("--user", spec, reason);
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if user_part.is_empty() && group_part.is_none() {
        return resolve(rootfs, "0");
    }
    if user_part.is_empty() || group_part == Some("") {
        return Err(bad("expected name|uid[:group|gid]".into()));
    }
    let passwd = parse_passwd(&read_db(rootfs, "passwd")?);
    let entry = match user_part.parse::<u32>() {
        Ok(uid) => passwd
            .iter()
            .find(|e| e.uid == uid)
            .cloned()
            .or(Some(PasswdEntry {
                name: String::new(),
                uid,
                gid: 0,
                home: "/".into(),
            })),
        Err(_) => passwd.iter().find(|e| e.name == user_part).cloned(),
    }
    .ok_or_else(|| {
        bad(format!(
            "no user \"{user_part}\" in the image's /etc/passwd"
        ))
    })?;

    let groups = parse_group(&read_db(rootfs, "group")?);
    let gid = match group_part {
        None => entry.gid,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => groups
                .iter()
                .find(|e| e.name == g)
                .map(|e| e.gid)
                .ok_or_else(|| bad(format!("no group \"{g}\" in the image's /etc/group")))?,
        },
    };
    let mut additional_gids = Vec::new();
    if !entry.name.is_empty() {
        for g in &groups {
            if g.gid != gid && g.members.contains(&entry.name) && !additional_gids.contains(&g.gid)
            {
                additional_gids.push(g.gid);
            }
        }
    }
    Ok(ResolvedUser {
        uid: entry.uid,
        gid,
        additional_gids,
        home: if entry.home.is_empty() {
            "/".into()
        } else {
            entry.home
        },
    })
}

fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 4 {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_string(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: f.get(5).unwrap_or(&"").to_string(),
            })
        })
        .collect()
}

fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 3 {
                return None;
            }
            Some(GroupEntry {
                name: f[0].to_string(),
                gid: f[2].parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .map(str::trim)
                            .filter(|m| !m.is_empty())
                            .map(String::from)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// `rootfs/etc/<name>` as text, or empty when it is missing (or is not a
/// regular file inside the root). Never reads outside `rootfs`.
fn read_db(rootfs: &Path, name: &str) -> Result<String> {
    let rel = format!("etc/{name}");
    let io = |source| Error::Io {
        action: "reading",
        path: rootfs.join(&rel),
        source,
    };
    let file = match open_in_root(rootfs, &rel) {
        Ok(f) => f,
        Err(e) if is_missing(&e) => return Ok(String::new()),
        Err(e) => return Err(io(e)),
    };
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Ok(String::new());
    }
    let mut bytes = Vec::new();
    file.take(MAX_DB_SIZE).read_to_end(&mut bytes).map_err(io)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Errors meaning "no usable file there": missing, or a symlink we refused,
/// or a path through something that is not a directory.
fn is_missing(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOENT) | Some(libc::ELOOP) | Some(libc::ENOTDIR) | Some(libc::EXDEV)
    )
}

/// Opens `rel` (relative, `/`-separated) read-only under `root`, resolving
/// symlinks as if `root` were `/` (see [`crate::rootfs`]).
pub fn open_in_root(root: &Path, rel: &str) -> std::io::Result<File> {
    let root_fd = File::open(root)?;
    let fd = crate::rootfs::open_in_root(
        root_fd.as_fd(),
        rel.as_bytes(),
        OFlag::O_RDONLY | OFlag::O_NONBLOCK,
    )?;
    Ok(File::from(fd))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn rootfs() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("etc")).unwrap();
        fs::write(
            d.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\n# comment\napp:x:1000:1000::/home/app:/bin/sh\n",
        )
        .unwrap();
        fs::write(
            d.path().join("etc/group"),
            "root:x:0:\napp:x:1000:\nwheel:x:10:root,app\naudio:x:29:app\n",
        )
        .unwrap();
        d
    }

    #[test]
    fn names_and_ids() {
        let r = rootfs();
        let u = resolve(r.path(), "app").unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (1000, 1000, "/home/app"));
        assert_eq!(u.additional_gids, vec![10, 29]);
        let u = resolve(r.path(), "app:wheel").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 10));
        assert_eq!(u.additional_gids, vec![29]);
        let u = resolve(r.path(), "1000:5").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 5));
        let u = resolve(r.path(), "4242").unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (4242, 0, "/"));
        assert!(u.additional_gids.is_empty());
        let u = resolve(r.path(), "").unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (0, 0, "/root"));
    }

    #[test]
    fn unknown_names_are_invalid() {
        let r = rootfs();
        for spec in ["nobody", "app:nogroup", ":1", "app:"] {
            let e = resolve(r.path(), spec).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::InvalidArgument, "{spec}: {e}");
            assert!(e.to_string().contains("--user"), "{e}");
        }
    }

    #[test]
    fn missing_databases_allow_numeric_ids_only() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(resolve(d.path(), "7:8").unwrap().uid, 7);
        assert!(resolve(d.path(), "app").is_err());
    }

    #[test]
    fn symlinked_passwd_is_not_followed_outside() {
        let outside = tempfile::tempdir().unwrap();
        let evil = outside.path().join("passwd");
        fs::write(&evil, "evil:x:4242:4242::/evil:/bin/sh\n").unwrap();
        let r = tempfile::tempdir().unwrap();
        fs::create_dir_all(r.path().join("etc")).unwrap();
        std::os::unix::fs::symlink(&evil, r.path().join("etc/passwd")).unwrap();
        // The absolute target resolves inside the rootfs, where it is absent.
        assert!(resolve(r.path(), "evil").is_err());
        // A relative escape is clamped to the root too.
        fs::remove_file(r.path().join("etc/passwd")).unwrap();
        let depth = "../".repeat(r.path().components().count() + 2);
        std::os::unix::fs::symlink(
            format!("{depth}{}", evil.display()),
            r.path().join("etc/passwd"),
        )
        .unwrap();
        assert!(resolve(r.path(), "evil").is_err());
    }

    #[test]
    fn symlink_inside_root_is_resolved_in_root() {
        let r = rootfs();
        fs::rename(
            r.path().join("etc/passwd"),
            r.path().join("etc/passwd.real"),
        )
        .unwrap();
        std::os::unix::fs::symlink("/etc/passwd.real", r.path().join("etc/passwd")).unwrap();
        assert_eq!(resolve(r.path(), "app").unwrap().uid, 1000);
    }
}
