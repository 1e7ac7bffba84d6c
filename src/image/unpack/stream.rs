//! The byte stream of a layer: decompression and the diffID, each on its
//! own thread.
//!
//! Decompressing and hashing are pure CPU work; creating files is mostly
//! system calls. The three run as a pipeline (decompress → hash → untar) so
//! they overlap: on a two-core machine the scheduler puts the hashing
//! wherever a core idles, which beats a fixed split of the work (the untar
//! side is the slow one for layers of tiny files, decompression for layers
//! of big ones). The bytes travel in chunks through bounded channels, so
//! memory stays at a few MiB whatever the layer's size, and emptied chunks
//! go back to the decompressor to be reused instead of reallocated.
//!
//! The hash stage sees every decompressed byte, also those after the tar's
//! end-of-archive marker: when the untar side stops reading, decompression
//! and hashing go on to the end of the input, so the diffID always covers
//! the whole uncompressed stream and the compressed stream is checked to
//! its last byte (gzip's CRC trailer, zstd's frame end).

use std::cell::Cell;
use std::io::{self, BufReader, Read};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};

use super::Error;
use crate::content::{Digest, Hasher};

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    fn name(self) -> &'static str {
        match self {
            Compression::None => "tar",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }
}

/// The compression a layer media type announces.
pub fn compression_for(media_type: &str) -> Result<Compression, Error> {
    match media_type {
        "application/vnd.oci.image.layer.v1.tar"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar"
        | "application/vnd.docker.image.rootfs.diff.tar" => Ok(Compression::None),
        "application/vnd.oci.image.layer.v1.tar+gzip"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        | "application/vnd.docker.image.rootfs.diff.tar.gzip"
        | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Ok(Compression::Gzip),
        "application/vnd.oci.image.layer.v1.tar+zstd"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => Ok(Compression::Zstd),
        other => Err(Error::MediaType(other.to_string())),
    }
}

/// Size of one decompressed chunk handed to the untar thread.
pub(super) const CHUNK: usize = 512 * 1024;
/// Chunks in flight between two stages.
pub(super) const DEPTH: usize = 4;
/// Read buffer in front of the decompressor.
const INPUT_BUFFER: usize = 256 * 1024;

/// What the hash stage learnt from the whole stream.
pub(super) struct Produced {
    pub diff_id: Digest,
    pub size: u64,
}

/// Why the decompression stopped early.
pub(super) enum ProduceError {
    /// The caller's reader failed.
    Input(io::Error),
    /// The compressed data is corrupt or truncated.
    Corrupt(&'static str, io::Error),
    /// The untar side failed and asked us to stop.
    Aborted,
}

impl ProduceError {
    pub(super) fn into_error(self) -> Option<Error> {
        match self {
            ProduceError::Input(e) => Some(Error::Input(e)),
            ProduceError::Corrupt(format, source) => Some(Error::Corrupt { format, source }),
            ProduceError::Aborted => None,
        }
    }
}

/// Marks errors that came from the caller's reader, so they can be told
/// apart from decoding errors after passing through the decoder.
#[derive(Debug)]
struct InputFailed(io::Error);

impl std::fmt::Display for InputFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for InputFailed {}

struct Input<R>(R);

impl<R: Read> Read for Input<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0
            .read(buf)
            .map_err(|e| io::Error::new(e.kind(), InputFailed(e)))
    }
}

fn classify(compression: Compression, e: io::Error) -> ProduceError {
    if e.get_ref().is_some_and(|inner| inner.is::<InputFailed>()) {
        let inner = e.into_inner().expect("checked above");
        match inner.downcast::<InputFailed>() {
            Ok(input) => return ProduceError::Input(input.0),
            Err(other) => return ProduceError::Input(io::Error::other(other)),
        }
    }
    ProduceError::Corrupt(compression.name(), e)
}

/// Stage 1: decompresses `reader` to its end into chunks for the hash
/// stage. Stops early only on an error or when `abort` is set.
pub(super) fn decompress<R: Read>(
    reader: R,
    compression: Compression,
    tx: SyncSender<Vec<u8>>,
    recycled: Receiver<Vec<u8>>,
    abort: &AtomicBool,
) -> Result<(), ProduceError> {
    let input = Input(reader);
    let mut decoder: Box<dyn Read> = match compression {
        Compression::None => Box::new(input),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(BufReader::with_capacity(
            INPUT_BUFFER,
            input,
        ))),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(BufReader::with_capacity(INPUT_BUFFER, input))
                .map_err(|e| classify(compression, e))?,
        ),
    };
    loop {
        if abort.load(Ordering::Relaxed) {
            return Err(ProduceError::Aborted);
        }
        let mut chunk = recycled.try_recv().unwrap_or_default();
        chunk.resize(CHUNK, 0);
        let n = fill(&mut decoder, &mut chunk).map_err(|e| classify(compression, e))?;
        if n == 0 {
            return Ok(());
        }
        chunk.truncate(n);
        if tx.send(chunk).is_err() {
            // The hash stage only leaves early when told to abort.
            return Err(ProduceError::Aborted);
        }
    }
}

/// Stage 2: hashes every chunk in order and passes it on to the untar side
/// while that listens; after the tar's end it keeps hashing alone, so the
/// diffID covers the whole stream. Returns when stage 1 is done.
pub(super) fn hash(
    rx: Receiver<Vec<u8>>,
    tx: SyncSender<Vec<u8>>,
    recycle: SyncSender<Vec<u8>>,
    abort: &AtomicBool,
) -> Produced {
    let mut hasher = Hasher::new();
    let mut size = 0u64;
    let mut tx = Some(tx);
    for chunk in rx {
        hasher.update(&chunk);
        size += chunk.len() as u64;
        let unused = match &tx {
            Some(sender) => match sender.send(chunk) {
                Ok(()) => None,
                Err(returned) => {
                    tx = None;
                    Some(returned.0)
                }
            },
            None => Some(chunk),
        };
        if let Some(chunk) = unused {
            let _ = recycle.try_send(chunk);
        }
        if abort.load(Ordering::Relaxed) {
            break;
        }
    }
    Produced {
        diff_id: hasher.finish(),
        size,
    }
}

/// Reads until `buf` is full or the stream ends; returns the bytes read.
pub(super) fn fill(reader: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The untar side of the pipeline: a `Read` over the chunks the hash stage
/// passes on. The end of the channel reads as the end of the stream;
/// whether it was a clean end is the decompressor's to say.
pub(super) struct ChannelReader {
    rx: Receiver<Vec<u8>>,
    recycle: SyncSender<Vec<u8>>,
    chunk: Vec<u8>,
    pos: usize,
    ended: Rc<Cell<bool>>,
}

impl ChannelReader {
    pub(super) fn new(rx: Receiver<Vec<u8>>, recycle: SyncSender<Vec<u8>>) -> ChannelReader {
        ChannelReader {
            rx,
            recycle,
            chunk: Vec::new(),
            pos: 0,
            ended: Rc::default(),
        }
    }

    /// Becomes true once the reader has seen the end of the stream.
    pub(super) fn ended(&self) -> Rc<Cell<bool>> {
        self.ended.clone()
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.chunk.len() {
            let used = std::mem::take(&mut self.chunk);
            self.pos = 0;
            if used.capacity() > 0 {
                // A full recycle queue only means one more allocation later.
                let _ = self.recycle.try_send(used);
            }
            match self.rx.recv() {
                Ok(chunk) => self.chunk = chunk,
                Err(_) => {
                    self.ended.set(true);
                    return Ok(0);
                }
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types() {
        let cases = [
            ("application/vnd.oci.image.layer.v1.tar", Compression::None),
            (
                "application/vnd.oci.image.layer.v1.tar+gzip",
                Compression::Gzip,
            ),
            (
                "application/vnd.oci.image.layer.v1.tar+zstd",
                Compression::Zstd,
            ),
            (
                "application/vnd.oci.image.layer.nondistributable.v1.tar",
                Compression::None,
            ),
            (
                "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
                Compression::Gzip,
            ),
            (
                "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
                Compression::Zstd,
            ),
            (
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
                Compression::Gzip,
            ),
            (
                "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
                Compression::Gzip,
            ),
        ];
        for (media_type, want) in cases {
            assert_eq!(compression_for(media_type).unwrap(), want, "{media_type}");
        }
        for bad in [
            "application/vnd.oci.image.layer.v1.tar+bzip2",
            "application/vnd.oci.image.config.v1+json",
            "",
        ] {
            let err = compression_for(bad).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::InvalidArgument, "{bad}");
        }
    }

    #[test]
    fn channel_reader_reassembles_chunks() {
        let (tx, rx) = std::sync::mpsc::sync_channel(4);
        let (rtx, _rrx) = std::sync::mpsc::sync_channel(4);
        tx.send(b"hello ".to_vec()).unwrap();
        tx.send(Vec::new()).unwrap();
        tx.send(b"world".to_vec()).unwrap();
        drop(tx);
        let mut out = String::new();
        ChannelReader::new(rx, rtx)
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, "hello world");
    }
}
