//! A detached container's log: one JSON object per line, as docker's
//! `json-file` driver writes it (`{"log":"…","stream":"stdout","time":"…"}`),
//! so each line keeps which stream it came from and when.
//!
//! The supervisor is the only writer and appends whole lines; readers
//! (`berth-logs`) may read while it writes and skip a last line that is not
//! complete yet.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::runtime::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}

/// One log line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub log: String,
    pub stream: Stream,
    /// RFC 3339 UTC with nanoseconds.
    pub time: String,
}

/// Appends a container's output to its log, a line per entry. Output
/// without a final newline is held until the newline comes or the log is
/// flushed.
pub struct LogWriter {
    file: File,
    path: PathBuf,
    partial: [Vec<u8>; 2],
}

impl LogWriter {
    pub fn open(path: &Path) -> Result<LogWriter> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| Error::Io {
                action: "opening log",
                path: path.to_path_buf(),
                source,
            })?;
        Ok(LogWriter {
            file,
            path: path.to_path_buf(),
            partial: [Vec::new(), Vec::new()],
        })
    }

    /// Logs `data`; a write error is reported once on stderr (the
    /// supervisor's stderr is gone, so this is best effort) and the output
    /// is dropped rather than blocking the container.
    pub fn write(&mut self, stream: Stream, data: &[u8]) {
        let slot = stream as usize;
        self.partial[slot].extend_from_slice(data);
        let mut out = Vec::new();
        while let Some(pos) = self.partial[slot].iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial[slot].drain(..=pos).collect();
            push_entry(&mut out, stream, &line);
        }
        // A runaway line without newlines is cut, as docker cuts at 16 KiB.
        if self.partial[slot].len() >= 16 * 1024 {
            let line = std::mem::take(&mut self.partial[slot]);
            push_entry(&mut out, stream, &line);
        }
        self.append(&out);
    }

    /// Writes out held partial lines.
    pub fn flush(&mut self) {
        let mut out = Vec::new();
        for stream in [Stream::Stdout, Stream::Stderr] {
            let line = std::mem::take(&mut self.partial[stream as usize]);
            if !line.is_empty() {
                push_entry(&mut out, stream, &line);
            }
        }
        self.append(&out);
    }

    fn append(&mut self, out: &[u8]) {
        if !out.is_empty() {
            if let Err(e) = self.file.write_all(out) {
                eprintln!("berth: writing log {}: {e}", self.path.display());
            }
        }
    }
}

fn push_entry(out: &mut Vec<u8>, stream: Stream, line: &[u8]) {
    let entry = Entry {
        log: String::from_utf8_lossy(line).into_owned(),
        stream,
        time: rfc3339(SystemTime::now()),
    };
    if let Ok(text) = serde_json::to_string(&entry) {
        out.extend_from_slice(text.as_bytes());
        out.push(b'\n');
    }
}

/// `2026-11-28T18:44:44.123456789Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, day) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_nanos()
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's algorithm).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Reads a log from `offset`, calling `each` for every complete line;
/// returns the offset after the last complete line. A missing log has no
/// entries.
pub fn read_from(path: &Path, offset: u64, mut each: impl FnMut(Entry)) -> Result<u64> {
    let io = |source| Error::Io {
        action: "reading log",
        path: path.to_path_buf(),
        source,
    };
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(offset),
        Err(e) => return Err(io(e)),
    };
    file.seek(SeekFrom::Start(offset)).map_err(io)?;
    let mut reader = BufReader::new(file);
    let mut pos = offset;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line).map_err(io)?;
        if n == 0 || line.last() != Some(&b'\n') {
            return Ok(pos);
        }
        pos += n as u64;
        // A line that does not parse is damage, not output: skip it.
        if let Ok(e) = serde_json::from_slice::<Entry>(&line) {
            each(e);
        }
    }
}

/// Follows a log: prints what is there, then polls for more until `done`
/// says the writer is gone and nothing new came.
pub fn follow(
    path: &Path,
    from: u64,
    mut each: impl FnMut(Entry),
    mut done: impl FnMut() -> bool,
) -> Result<()> {
    let mut offset = read_from(path, from, &mut each)?;
    loop {
        let finished = done();
        let next = read_from(path, offset, &mut each)?;
        if next == offset && finished {
            return Ok(());
        }
        offset = next;
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
        let t = UNIX_EPOCH + Duration::new(1_795_891_484, 5);
        assert_eq!(rfc3339(t), "2026-11-28T18:44:44.000000005Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000000000Z");
    }

    #[test]
    fn lines_keep_their_stream_and_partial_lines_wait() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut w = LogWriter::open(&path).unwrap();
        w.write(Stream::Stdout, b"one\ntw");
        w.write(Stream::Stderr, b"err\n");
        let mut got = Vec::new();
        let off = read_from(&path, 0, |e| got.push((e.stream, e.log))).unwrap();
        assert_eq!(
            got,
            vec![
                (Stream::Stdout, "one\n".to_string()),
                (Stream::Stderr, "err\n".to_string())
            ]
        );
        w.write(Stream::Stdout, b"o\n");
        w.write(Stream::Stdout, b"tail");
        w.flush();
        got.clear();
        read_from(&path, off, |e| got.push((e.stream, e.log))).unwrap();
        assert_eq!(
            got,
            vec![
                (Stream::Stdout, "two\n".to_string()),
                (Stream::Stdout, "tail".to_string())
            ]
        );
    }

    #[test]
    fn a_torn_last_line_is_left_for_later() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(
            &path,
            "{\"log\":\"a\\n\",\"stream\":\"stdout\",\"time\":\"t\"}\n{\"log\":\"b",
        )
        .unwrap();
        let mut n = 0;
        let off = read_from(&path, 0, |_| n += 1).unwrap();
        assert_eq!(n, 1);
        assert_eq!(off, 43);
    }
}
