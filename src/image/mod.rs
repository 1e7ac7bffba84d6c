//! Images: names pointing at manifests, the pull that brings an image
//! from a registry into the content store and the metadata database, and
//! the push that sends a stored image to a registry (`push`).
//!
//! A pull resolves the reference to a root document (index or manifest),
//! picks the platform(s), stores every manifest, config and layer blob
//! (verified, concurrently, resumable), then writes the content records and
//! the image record in one transaction. Until that transaction, a lease
//! holds everything the pull wrote, so a concurrent garbage collection
//! cannot take it, and a killed pull leaves no image pointing at missing
//! blobs.

pub mod archive;
mod extract;
mod follow;
pub mod manifest;
mod pull;
mod push;
mod resolve;
pub mod unpack;
mod workers;

pub use extract::{chain_ids, Extracted};
pub use manifest::{Descriptor, Platform};
pub use pull::{
    pull, BlobKind, Observer, PlatformChoice, PullOptions, PullResult, PulledBlob,
    UNPACKED_LABEL_PREFIX,
};
pub use push::{push, NoProgress, PushObserver, PushOptions, PushResult, PushedBlob};
pub use resolve::{resolve_local, stored_name, LocalImage};

use crate::content::Digest;
use crate::{content, distribution, metadata, ErrorKind};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("resolving {reference}: {source}")]
    Resolve {
        reference: String,
        #[source]
        source: Box<distribution::Error>,
    },
    #[error("pulling {what} {} from {reference}: {source}", digest.short())]
    Fetch {
        what: BlobKind,
        digest: Digest,
        reference: String,
        #[source]
        source: Box<distribution::Error>,
    },
    #[error("pulling {what} {} from {reference}: {source}", digest.short())]
    Store {
        what: BlobKind,
        digest: Digest,
        reference: String,
        #[source]
        source: content::Error,
    },
    #[error("pushing {what} {} to {reference}: {source}", digest.short())]
    Push {
        what: BlobKind,
        digest: Digest,
        reference: String,
        #[source]
        source: Box<distribution::Error>,
    },
    #[error("{reference}: {reason}")]
    Invalid {
        reference: String,
        reason: String,
        kind: ErrorKind,
    },
    #[error(transparent)]
    Metadata(#[from] metadata::Error),
    #[error(transparent)]
    Snapshot(#[from] crate::snapshot::Error),
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Resolve { source, .. }
            | Error::Fetch { source, .. }
            | Error::Push { source, .. } => source.kind(),
            Error::Store { source, .. } => source.kind(),
            Error::Invalid { kind, .. } => *kind,
            Error::Metadata(e) => e.kind(),
            Error::Snapshot(e) => e.kind(),
        }
    }
}
