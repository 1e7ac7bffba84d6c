//! What a tar header says about an entry besides its name and type, and
//! how it is put on the created file.
//!
//! Metadata goes on in the order that keeps it: owner, then mode (a chown
//! clears set-id bits), then extended attributes (a chown drops
//! `security.capability`), then times.

use std::ffi::{CStr, CString};
use std::io::Read;
use std::os::fd::BorrowedFd;

use nix::errno::Errno;
use nix::sys::stat::{fchmod, Mode};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, Gid, Uid};

use super::entry::lossy;
use super::sys::is_overlay_xattr;
use super::Error;

/// What a header says about an entry, besides its name and type.
pub(super) struct Meta {
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
    pub atime: TimeSpec,
    pub mtime: TimeSpec,
    pub xattrs: Vec<(CString, Vec<u8>)>,
}

impl Meta {
    pub(super) fn read<R: Read>(entry: &mut tar::Entry<'_, R>) -> std::io::Result<Meta> {
        let header = entry.header();
        let id = |v: u64| {
            u32::try_from(v).map_err(|_| std::io::Error::other("uid or gid does not fit 32 bits"))
        };
        let old = header.as_old();
        let uid = id(number(header.uid(), &old.uid)?)?;
        let gid = id(number(header.gid(), &old.gid)?)?;
        let mode = number(header.mode().map(u64::from), &old.mode)? as u32 & 0o7777;
        let seconds = number(header.mtime(), &old.mtime)?;
        let seconds = i64::try_from(seconds).unwrap_or(i64::MAX);
        let mut mtime = TimeSpec::new(seconds, 0);
        let mut atime = None;
        let mut xattrs = Vec::new();
        if let Some(extensions) = entry.pax_extensions()? {
            for extension in extensions {
                let extension = extension?;
                let key = extension.key_bytes();
                if key == b"mtime" {
                    mtime = pax_time(extension.value_bytes()).unwrap_or(mtime);
                } else if key == b"atime" {
                    atime = pax_time(extension.value_bytes());
                } else if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                    // A layer may not forge overlayfs whiteouts or redirects.
                    if is_overlay_xattr(name) {
                        continue;
                    }
                    let name = CString::new(name)
                        .map_err(|_| std::io::Error::other("xattr name has a NUL byte"))?;
                    xattrs.push((name, extension.value_bytes().to_vec()));
                }
            }
        }
        Ok(Meta {
            uid,
            gid,
            mode,
            atime: atime.unwrap_or(mtime),
            mtime,
            xattrs,
        })
    }

    pub(super) fn owner_and_mode(&self, fd: BorrowedFd<'_>) -> nix::Result<()> {
        fchown(
            fd,
            Some(Uid::from_raw(self.uid)),
            Some(Gid::from_raw(self.gid)),
        )?;
        fchmod(fd, Mode::from_bits_truncate(self.mode))
    }

    /// Sets the extended attributes with `set`.
    ///
    /// Errors are reported, with one exception: `user.*` attributes are
    /// skipped where the filesystem does not support them (EOPNOTSUPP) or
    /// the kernel refuses them for the file type (EPERM on symlinks and
    /// device nodes). They are optional annotations; `security.*` and
    /// `trusted.*` ones (file capabilities, SELinux labels) change what the
    /// container can do, so losing one silently would be wrong.
    pub(super) fn xattrs(
        &self,
        raw: &[u8],
        mut set: impl FnMut(&CStr, &[u8]) -> nix::Result<()>,
    ) -> Result<(), Error> {
        for (name, value) in &self.xattrs {
            match set(name, value) {
                Ok(()) => {}
                Err(Errno::EOPNOTSUPP | Errno::EPERM) if name.to_bytes().starts_with(b"user.") => {}
                Err(e) => {
                    return Err(Error::Xattr {
                        path: lossy(raw),
                        name: name.to_string_lossy().into_owned(),
                        source: e.into(),
                    })
                }
            }
        }
        Ok(())
    }
}

/// A numeric header field; an empty one (all NULs or spaces, as some
/// writers leave fields they do not use) reads as 0, like Go's archive/tar.
fn number(parsed: std::io::Result<u64>, field: &[u8]) -> std::io::Result<u64> {
    match parsed {
        Err(_) if field.iter().all(|&b| b == 0 || b == b' ') => Ok(0),
        other => other,
    }
}

/// Parses a PAX time, `<seconds>[.<fraction>]`, possibly negative.
fn pax_time(value: &[u8]) -> Option<TimeSpec> {
    let text = std::str::from_utf8(value).ok()?;
    let (negative, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let seconds: i64 = whole.parse().ok()?;
    let mut nanos: i64 = 0;
    for (i, digit) in fraction.bytes().take(9).enumerate() {
        nanos += i64::from(digit - b'0') * 10i64.pow(8 - i as u32);
    }
    Some(match (negative, nanos) {
        (false, _) => TimeSpec::new(seconds, nanos),
        (true, 0) => TimeSpec::new(-seconds, 0),
        (true, _) => TimeSpec::new(-seconds - 1, 1_000_000_000 - nanos),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_times() {
        let t = |s: &str| pax_time(s.as_bytes()).map(|t| (t.tv_sec(), t.tv_nsec()));
        assert_eq!(t("1700000000"), Some((1_700_000_000, 0)));
        assert_eq!(t("1700000000.5"), Some((1_700_000_000, 500_000_000)));
        assert_eq!(t("1.123456789123"), Some((1, 123_456_789)));
        assert_eq!(t("-1.25"), Some((-2, 750_000_000)));
        assert_eq!(t(""), None);
        assert_eq!(t("1e9"), None);
        assert_eq!(t(".5"), None);
    }
}
