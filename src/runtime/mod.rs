//! Runtime: what a container runs with.
//!
//! For now this is the OCI runtime spec (`config.json`) builder: an image's
//! config plus docker-style `run` flags become one [`Spec`] that an OCI
//! runtime (runc, crun) executes as-is. Building a spec has one side effect:
//! the files bind-mounted into the container (`hosts`, `hostname`,
//! `resolv.conf`) are written into the container's own directory.
//!
//! Nothing here trusts the image: its `/etc/passwd` and `/etc/group` are read
//! with every path resolved inside the root filesystem (see [`user`]).

mod spec;
pub mod user;

use std::path::PathBuf;

pub use oci_spec::runtime::Spec;
pub use spec::{
    build_spec, parse_size, parse_ulimit, ImageConfig, Network, RunOptions, DEFAULT_CAPABILITIES,
    DEFAULT_PATH, STOP_SIGNAL_ANNOTATION,
};

use crate::ErrorKind;

/// Errors from building a container's runtime spec.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag's value is malformed or names something that is not there.
    #[error("{flag} {value}: {reason}")]
    InvalidFlag {
        flag: &'static str,
        value: String,
        reason: String,
    },
    /// The image config or the combination of image and flags is unusable.
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The JSON we assembled was refused by the spec types: a bug.
    #[error("building runtime spec: {0}")]
    Spec(String),
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidFlag { .. } | Error::InvalidArgument(_) => ErrorKind::InvalidArgument,
            Error::Io { .. } | Error::Spec(_) => ErrorKind::Internal,
        }
    }

    pub(crate) fn flag(
        flag: &'static str,
        value: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Error::InvalidFlag {
            flag,
            value: value.into(),
            reason: reason.into(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
