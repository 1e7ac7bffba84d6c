use std::io;
use std::path::PathBuf;

use crate::ErrorKind;

/// Why the config file could not be used. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file given with `--config` / `BERTH_CONFIG` does not exist.
    #[error("config {}: no such file", path.display())]
    NotFound { path: PathBuf },

    /// The file exists but could not be read (permissions, a directory…).
    #[error("config {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The file is not valid TOML; `message` is the parser's, with line and
    /// column.
    #[error("config {}: {message}", path.display())]
    Syntax { path: PathBuf, message: String },

    /// A key is unknown or its value is wrong; `key` is the dotted path as
    /// TOML writes it, e.g. `registry."127.0.0.1:5000".plain_htp`.
    #[error("config {}: {key}: {reason}", path.display())]
    Invalid {
        path: PathBuf,
        key: String,
        reason: String,
    },
}

impl Error {
    /// The kind callers map to an exit code: a bad file is an invalid
    /// argument, a missing explicit file is not found.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::Read { .. } => ErrorKind::Internal,
            Error::Syntax { .. } | Error::Invalid { .. } => ErrorKind::InvalidArgument,
        }
    }
}
