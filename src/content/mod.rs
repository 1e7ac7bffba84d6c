//! The content store: immutable blobs addressed by their sha256 digest.
//!
//! Lifecycle of a blob:
//! 1. A writer is opened with [`Store::writer`] under an *ingest ref* (a name
//!    the caller picks, e.g. the blob's digest). The ref's directory under
//!    `content/ingest/` is locked with `flock`, so two processes fetching the
//!    same blob never write one file at once: the second waits, then finds the
//!    blob committed.
//! 2. Bytes are appended. If the process dies, the partial data stays in the
//!    ingest area; the next writer for the same ref resumes at its offset
//!    (the partial bytes are re-read once to rebuild the hash).
//! 3. [`Writer::commit`] checks size and digest, syncs the data, and renames
//!    it to `content/blobs/sha256/<hex>`. The rename is the only way a blob
//!    becomes visible, so readers never see a partial or unverified blob. A
//!    blob that fails verification is deleted from the ingest area.
//!
//! Labels and references between blobs (manifest → config and layers) live
//! in the metadata database, not here: this module only guards bytes.

mod digest;
mod store;

pub use digest::{Digest, Hasher, ParseDigestError};
pub use store::{Store, Writer};

use crate::ErrorKind;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("content {digest}: not found")]
    NotFound { digest: Digest },
    #[error("content {digest}: size mismatch: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        digest: Digest,
        expected: u64,
        actual: u64,
    },
    #[error("content {expected}: digest mismatch: data hashes to {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("content store {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::SizeMismatch { .. } | Error::DigestMismatch { .. } => ErrorKind::DataLoss,
            Error::Io { .. } => ErrorKind::Internal,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
