//! Reading and writing cgroup files: one place that knows cgroupfs quirks.
//!
//! Control files are written in one `write(2)` each and never created: a
//! file that is missing means the controller (or kernel feature) is not
//! there, and the caller should hear that, not find an empty new file.

use std::fs::OpenOptions;
use std::io::{ErrorKind as IoKind, Write};
use std::path::Path;

use super::{Error, Result};

/// Reads a whole control file.
pub(crate) fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::io("reading", path, source))
}

/// Reads a file that may legitimately be absent (a kernel without that
/// feature): `None` then.
pub(crate) fn read_optional(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == IoKind::NotFound => Ok(None),
        Err(source) => Err(Error::io("reading", path, source)),
    }
}

/// Writes `value` to an existing control file in a single write. cgroupfs
/// ignores `O_TRUNC`; a plain file (a test tree) needs it.
pub(crate) fn write(path: &Path, value: &str) -> Result<()> {
    let action = |source| Error::Write {
        path: path.to_path_buf(),
        value: value.to_string(),
        source,
    };
    let mut f = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .map_err(action)?;
    f.write_all(value.as_bytes()).map_err(action)
}

/// The pids in a `cgroup.procs` file.
pub(crate) fn read_pids(path: &Path) -> Result<Vec<i32>> {
    let text = read(path)?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            l.trim().parse().map_err(|_| Error::Parse {
                path: path.to_path_buf(),
                reason: format!("not a pid: {l:?}"),
            })
        })
        .collect()
}

/// The value of `key` in a flat-keyed file (`memory.events`,
/// `memory.oom_control`): lines of `key value`.
pub(crate) fn read_keyed(path: &Path, key: &str) -> Result<Option<u64>> {
    let text = read(path)?;
    for line in text.lines() {
        let mut it = line.split_whitespace();
        if it.next() == Some(key) {
            let v = it.next().unwrap_or("");
            return v.parse().map(Some).map_err(|_| Error::Parse {
                path: path.to_path_buf(),
                reason: format!("{key}: not a number: {v:?}"),
            });
        }
    }
    Ok(None)
}

/// Creates one directory; an existing one is fine (create is idempotent).
pub(crate) fn mkdir(path: &Path) -> Result<bool> {
    match std::fs::create_dir(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == IoKind::AlreadyExists => Ok(false),
        Err(source) => Err(Error::io("creating cgroup", path, source)),
    }
}

/// Reads a small control file into `buf` (cleared first) with as few
/// syscalls as we can: open and read, no `fstat` for a size hint (cgroupfs
/// reports none). A read that comes back short of the room it was given
/// is the end: the kernel hands a seq_file's whole remaining text to one
/// read, and a regular file only returns short at its end. `Ok(false)`
/// when the file does not exist (the controller or feature is absent), or
/// the kernel says the feature is off (`EOPNOTSUPP`, as a disabled
/// `*.pressure` file does).
pub(crate) fn read_into(path: &Path, buf: &mut Vec<u8>) -> Result<bool> {
    use std::io::Read;
    buf.clear();
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == IoKind::NotFound => return Ok(false),
        Err(source) => return Err(Error::io("reading", path, source)),
    };
    let mut room = 4096;
    loop {
        let start = buf.len();
        buf.resize(start + room, 0);
        let n = match f.read(&mut buf[start..]) {
            Ok(n) => n,
            Err(e) if e.kind() == IoKind::Interrupted => {
                buf.truncate(start);
                continue;
            }
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EOPNOTSUPP) | Some(libc::ENODEV)
                ) =>
            {
                buf.clear();
                return Ok(false);
            }
            // The group went away between open and read (its last process
            // exited and someone removed it).
            Err(e) if e.kind() == IoKind::NotFound => {
                buf.clear();
                return Ok(false);
            }
            Err(source) => return Err(Error::io("reading", path, source)),
        };
        buf.truncate(start + n);
        if n < room {
            return Ok(true);
        }
        room *= 2;
    }
}
