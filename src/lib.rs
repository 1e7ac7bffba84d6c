//! berth: containerd's core as single-shot command-line tools sharing one
//! store directory and one SQLite metadata file, with no daemon.
//!
//! The module tree is the architecture: each core piece is one module with
//! its own `Error` type, and every error can say which [`ErrorKind`] it is,
//! so binaries map failures to stable exit codes in one place (`cli`).

pub mod cgroups;
pub mod cli;
pub mod config;
pub mod content;
pub mod distribution;
pub mod gc;
pub mod image;
pub mod metadata;
pub mod monitor;
pub mod plugin;
pub mod runtime;
pub mod snapshot;
pub mod store_check;

mod error;
mod kind;
mod lockfile;
mod rootfs;
pub use error::Error;
pub use kind::ErrorKind;
