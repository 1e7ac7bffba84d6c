//! Layer unpacking: applies one image layer, a tar stream that may be
//! compressed, onto a directory, and computes the layer's diffID on the way.
//!
//! The work is one streaming pass, a pipeline of three threads (see
//! `stream`): one decompresses, one hashes, and the caller's reads tar
//! entries with the `tar` crate and creates them itself (see `entry`). We do not use the
//! `tar` crate's own unpacking: it checks each path through the filesystem
//! by name, which is about twice as slow as GNU tar, and still works with
//! paths. Here every entry is created relative to directory descriptors
//! opened with `openat2(RESOLVE_IN_ROOT)` (see `root`), so neither `..`, an
//! absolute name, nor a symlink planted by this layer, an earlier one or a
//! lower dir can make an entry land outside the target.
//!
//! Whiteouts come in two flavours, one per snapshotter:
//! - [`WhiteoutMode::Delete`] (native snapshotter, the target is a full copy
//!   of the parent): `.wh.<name>` removes `<name>`; `.wh..wh..opq` removes
//!   what the directory held before this layer.
//! - [`WhiteoutMode::Overlay`] (the target is an overlayfs upperdir):
//!   `.wh.<name>` becomes a 0:0 character device, `.wh..wh..opq` the
//!   `trusted.overlay.opaque=y` attribute, and directories the layer needs
//!   but only the lower dirs have are created with their metadata.
//!
//! A failed apply leaves the target half-written; the caller discards it.

mod entry;
mod meta;
mod name;
mod root;
mod stream;
mod sys;
mod whiteout;

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::sync_channel;

pub use stream::{compression_for, Compression};

use crate::content::Digest;
use crate::ErrorKind;

/// How whiteout entries are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhiteoutMode {
    /// The target is an overlayfs upperdir: write overlayfs whiteouts.
    Overlay,
    /// The target holds the parent's full tree: delete what is whited out.
    Delete,
}

#[derive(Debug, Clone)]
pub struct ApplyOptions {
    pub whiteouts: WhiteoutMode,
    /// The parent layers' directories, nearest first. Only read in overlay
    /// mode, to copy metadata of parent directories and to copy up files a
    /// hard link points at.
    pub lower_dirs: Vec<PathBuf>,
    /// Sync the target's filesystem once at the end (one `syncfs`).
    pub sync: bool,
}

/// What applying a layer found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// sha256 of the uncompressed tar stream, trailing padding included.
    pub diff_id: Digest,
    pub uncompressed_size: u64,
    /// Tar entries applied, whiteouts included.
    pub entries: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unsupported layer media type {0:?}")]
    MediaType(String),
    #[error("layer target {}: {source}", path.display())]
    Target {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("reading the layer: {0}")]
    Input(#[source] io::Error),
    #[error("layer {format} stream is corrupt or truncated: {source}")]
    Corrupt {
        format: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("layer tar: {0}")]
    Tar(#[source] io::Error),
    #[error("layer entry {path:?}: bad header: {source}")]
    Header {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("layer entry {path:?}: {reason}")]
    Entry { path: String, reason: String },
    #[error("layer entry {path:?}: reading its contents: {source}")]
    Content {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("layer entry {path:?}: {op}: {source}")]
    Io {
        path: String,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("layer entry {path:?}: setting extended attribute {name}: {source}")]
    Xattr {
        path: String,
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("layer stream: {0}")]
    Thread(String),
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        let truncated = |e: &io::Error| e.kind() == io::ErrorKind::UnexpectedEof;
        match self {
            Error::MediaType(_) | Error::Entry { .. } | Error::Header { .. } => {
                ErrorKind::InvalidArgument
            }
            Error::Target { source, .. } if source.kind() == io::ErrorKind::NotFound => {
                ErrorKind::NotFound
            }
            Error::Input(e) if truncated(e) || e.kind() == io::ErrorKind::InvalidData => {
                ErrorKind::DataLoss
            }
            Error::Corrupt { .. } => ErrorKind::DataLoss,
            Error::Tar(e) | Error::Content { source: e, .. } if truncated(e) => ErrorKind::DataLoss,
            Error::Tar(_) | Error::Content { .. } => ErrorKind::InvalidArgument,
            Error::Target { .. }
            | Error::Input(_)
            | Error::Io { .. }
            | Error::Xattr { .. }
            | Error::Thread(_) => ErrorKind::Internal,
        }
    }
}

/// Applies the layer read from `reader` (compressed as `compression`) onto
/// the directory `target`, in one pass.
///
/// Cost: proportional to the layer's uncompressed size; two extra threads
/// decompress and hash while this one writes. The whole input is read, also past
/// the tar's end, so the diffID covers every byte.
pub fn apply_layer<R: Read + Send>(
    reader: R,
    compression: Compression,
    target: &Path,
    opts: &ApplyOptions,
) -> Result<Applied, Error> {
    let root =
        root::Root::open(target, opts.whiteouts, &opts.lower_dirs).map_err(|(path, e)| {
            Error::Target {
                path,
                source: e.into(),
            }
        })?;
    let (to_hash, hash_rx) = sync_channel(stream::DEPTH);
    let (to_untar, untar_rx) = sync_channel(stream::DEPTH);
    let (recycle, recycled) = sync_channel(3 * stream::DEPTH);
    let abort = AtomicBool::new(false);
    let mut unpacker = entry::Unpacker::new(root);
    let (unpacked, decompressed, produced) = std::thread::scope(|scope| {
        let spawn_error = |e| Error::Thread(format!("starting a stream thread: {e}"));
        let decompressor = std::thread::Builder::new()
            .name("layer-decompress".into())
            .spawn_scoped(scope, || {
                stream::decompress(reader, compression, to_hash, recycled, &abort)
            })
            .map_err(spawn_error)?;
        let recycle_from_hash = recycle.clone();
        let hasher = std::thread::Builder::new()
            .name("layer-hash".into())
            .spawn_scoped(scope, || {
                stream::hash(hash_rx, to_untar, recycle_from_hash, &abort)
            })
            .map_err(spawn_error)?;
        // The reader (and with it the channel) is dropped when `run`
        // returns; decompressing and hashing then go on to the end alone.
        let unpacked = unpacker
            .run(stream::ChannelReader::new(untar_rx, recycle))
            .and_then(|()| unpacker.finish(opts.sync));
        if unpacked.is_err() {
            abort.store(true, Ordering::Relaxed);
        }
        let panicked = |_| Error::Thread("a stream thread panicked".into());
        let decompressed = decompressor.join().map_err(panicked)?;
        let produced = hasher.join().map_err(panicked)?;
        Ok::<_, Error>((unpacked, decompressed, produced))
    })?;
    match (unpacked, decompressed) {
        // A broken stream explains whatever the tar reader saw after it.
        (unpacked, Err(stopped)) => Err(match stopped.into_error() {
            Some(e) => e,
            None => unpacked.err().unwrap_or_else(|| {
                Error::Thread("the decompression stopped without a reason".into())
            }),
        }),
        (Err(e), Ok(())) => Err(e),
        (Ok(()), Ok(())) => Ok(Applied {
            diff_id: produced.diff_id,
            uncompressed_size: produced.size,
            entries: unpacker.entries,
        }),
    }
}
