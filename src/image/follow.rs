//! Reading a blob while it is still being downloaded.
//!
//! A pull unpacks each layer while it downloads: the download thread
//! appends to the ingest file and announces how far it got; the unpack
//! thread reads the same file through its own descriptor, never past what
//! has been announced, and waits for more. The ingest file is the buffer,
//! so a slow unpacker never stalls the network and a resumed download's
//! earlier bytes are read like any others. Nothing read this way becomes
//! visible to other processes before the blob's digest is verified: the
//! snapshot made from it is committed only after the blob is.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Condvar, Mutex};

#[derive(Debug, Clone, PartialEq)]
enum End {
    Open,
    Complete,
    Failed(String),
}

#[derive(Debug)]
struct State {
    file: Option<File>,
    written: u64,
    end: End,
}

/// One blob's download, as seen by its reader. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Follow {
    inner: Arc<(Mutex<State>, Condvar)>,
}

impl Default for Follow {
    fn default() -> Self {
        Follow::new()
    }
}

impl Follow {
    pub fn new() -> Follow {
        Follow {
            inner: Arc::new((
                Mutex::new(State {
                    file: None,
                    written: 0,
                    end: End::Open,
                }),
                Condvar::new(),
            )),
        }
    }

    fn update(&self, f: impl FnOnce(&mut State)) {
        let (lock, cond) = &*self.inner;
        f(&mut lock.lock().unwrap_or_else(|p| p.into_inner()));
        cond.notify_all();
    }

    /// The data starts: `file` reads it from offset 0, of which `written`
    /// bytes are already there (a resumed or already complete blob).
    pub fn start(&self, file: File, written: u64) {
        self.update(|s| {
            s.file = Some(file);
            s.written = written;
        });
    }

    pub fn advance(&self, bytes: u64) {
        self.update(|s| s.written += bytes);
    }

    /// Every byte is written and verified.
    pub fn complete(&self) {
        self.update(|s| s.end = End::Complete);
    }

    /// The download failed; the reader gets this message as an error.
    pub fn fail(&self, why: String) {
        self.update(|s| {
            if s.end == End::Open {
                s.end = End::Failed(why);
            }
        });
    }

    /// Blocks until the download has ended; true when it completed.
    pub fn wait_end(&self) -> Result<(), String> {
        let (lock, cond) = &*self.inner;
        let mut s = lock.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            match &s.end {
                End::Open => s = cond.wait(s).unwrap_or_else(|p| p.into_inner()),
                End::Complete => return Ok(()),
                End::Failed(why) => return Err(why.clone()),
            }
        }
    }

    pub fn reader(&self) -> FollowReader {
        FollowReader {
            follow: self.clone(),
            file: None,
            pos: 0,
        }
    }
}

/// Reads the blob from the start, waiting at the download's edge.
pub struct FollowReader {
    follow: Follow,
    file: Option<File>,
    pos: u64,
}

impl Read for FollowReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let limit = {
            let (lock, cond) = &*self.follow.inner;
            let mut s = lock.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                if let End::Failed(why) = &s.end {
                    return Err(io::Error::other(why.clone()));
                }
                if s.file.is_some() && (s.written > self.pos || s.end == End::Complete) {
                    break;
                }
                s = cond.wait(s).unwrap_or_else(|p| p.into_inner());
            }
            if self.file.is_none() {
                self.file = s.file.as_ref().map(File::try_clone).transpose()?;
            }
            s.written
        };
        let Some(file) = &self.file else {
            return Ok(0);
        };
        let want = buf.len().min((limit - self.pos) as usize);
        if want == 0 {
            return Ok(0);
        }
        let n = file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "blob file is shorter than the bytes announced",
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, Write};

    #[test]
    fn reader_follows_a_growing_file() {
        let mut file = tempfile::tempfile().unwrap();
        let follow = Follow::new();
        let data: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let reader_side = follow.clone();
        let handle = std::thread::spawn(move || {
            let mut out = Vec::new();
            reader_side.reader().read_to_end(&mut out).unwrap();
            out
        });
        follow.start(file.try_clone().unwrap(), 0);
        for chunk in data.chunks(7000) {
            file.write_all(chunk).unwrap();
            follow.advance(chunk.len() as u64);
        }
        follow.complete();
        assert_eq!(handle.join().unwrap(), data);
        file.rewind().unwrap();
    }

    #[test]
    fn failure_reaches_the_reader() {
        let follow = Follow::new();
        let mut r = follow.reader();
        follow.fail("digest mismatch".into());
        let err = r.read(&mut [0u8; 10]).unwrap_err();
        assert!(err.to_string().contains("digest mismatch"));
        assert!(follow.wait_end().is_err());
    }
}
