use crate::{
    cgroups, config, content, distribution, gc, image, metadata, monitor, runtime, snapshot,
    ErrorKind,
};

/// Any berth library error. Each module keeps its own error type with the
/// context a user needs; this enum only gathers them so a binary has one
/// thing to map onto an exit code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Cgroups(#[from] cgroups::Error),
    #[error(transparent)]
    Config(#[from] config::Error),
    #[error(transparent)]
    Content(#[from] content::Error),
    #[error(transparent)]
    Metadata(#[from] metadata::Error),
    #[error(transparent)]
    Monitor(#[from] monitor::Error),
    #[error(transparent)]
    Distribution(#[from] Box<distribution::Error>),
    #[error(transparent)]
    Gc(#[from] gc::Error),
    #[error(transparent)]
    Image(#[from] image::Error),
    #[error(transparent)]
    Archive(#[from] image::archive::Error),
    #[error(transparent)]
    Runtime(#[from] runtime::Error),
    #[error(transparent)]
    Snapshot(#[from] snapshot::Error),
    /// Arguments that parse but do not make sense together.
    #[error("{0}")]
    Usage(String),
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Cgroups(e) => e.kind(),
            Error::Config(e) => e.kind(),
            Error::Content(e) => e.kind(),
            Error::Metadata(e) => e.kind(),
            Error::Monitor(e) => e.kind(),
            Error::Distribution(e) => e.kind(),
            Error::Gc(e) => e.kind(),
            Error::Image(e) => e.kind(),
            Error::Archive(e) => e.kind(),
            Error::Runtime(e) => e.kind(),
            Error::Snapshot(e) => e.kind(),
            Error::Usage(_) => ErrorKind::InvalidArgument,
        }
    }
}

impl From<distribution::Error> for Error {
    fn from(e: distribution::Error) -> Self {
        Error::Distribution(Box::new(e))
    }
}
