//! Snapshots: the layered filesystem trees container roots are made of,
//! after containerd's snapshotter model.
//!
//! # Lifecycle
//!
//! ```text
//!                 prepare(key, parent)          commit(name, key)
//!   (nothing) ───────────────────────▶ active ────────────────────▶ committed
//!       │                                 │                             │
//!       │  view(key, parent)              │ remove(key)                 │ remove(name):
//!       └──────────────────────▶ view ────┴─────────────────────────────┴─▶ gone,
//!                                                                        refused while it has children
//! ```
//!
//! - [`Snapshotter::prepare`] creates an **active** snapshot: a writable tree
//!   holding the committed `parent`'s content (or nothing). Its
//!   [`Snapshotter::mounts`] mount it read-write; an unpacker may instead
//!   write into [`Snapshotter::upper_dir`] directly.
//! - [`Snapshotter::commit`] turns an active snapshot into a **committed**
//!   one under a new name. Committed snapshots are immutable and serve as
//!   parents; the active key is gone afterwards.
//! - [`Snapshotter::view`] is a read-only active snapshot: it mounts
//!   read-only and cannot be committed.
//! - [`Snapshotter::remove`] deletes a snapshot of any kind, but never a
//!   snapshot that is some other snapshot's parent, nor one that is mounted
//!   in this mount namespace.
//!
//! Keys and names share one namespace per snapshotter. A parent must be
//! committed.
//!
//! # Many processes at once
//!
//! Records live in the shared metadata database (table `snapshots`), data
//! under `<root>/snapshots/<snapshotter>/<id>/`. Each state change is one
//! `BEGIN IMMEDIATE` transaction that re-checks its preconditions, so
//! processes racing on the same key get exactly one winner (the others see
//! `AlreadyExists` or `NotFound`), a parent cannot lose its last record
//! while a child is being created on it, and distinct keys never conflict.
//! Creating and removing take a shared `flock` on
//! `<root>/snapshots/<snapshotter>/lock`; [`Snapshotter::cleanup`] takes it
//! exclusively, so it never mistakes a half-made snapshot for debris.
//!
//! # Crashes
//!
//! A snapshot becomes visible only when its record is inserted, which is the
//! last step of prepare/view, after its directory is complete. A process
//! killed before that leaves a directory without a record, which nothing
//! uses and `cleanup` deletes. Commit is one transaction (the data is keyed
//! by id and never moves), so a killed commit leaves the snapshot active,
//! never half-committed; a process killed between prepare and commit leaves
//! an **active** snapshot, never a committed one. A remove deletes the
//! record first, then the directory; a crash in between leaves an orphan
//! directory for `cleanup`.
//!
//! An active snapshot may rightly outlive the process that prepared it
//! (`berth-snapshot prepare` exits at once). A process that wants its work
//! snapshot to die with it labels it with [`OWNER_LABEL`] =
//! [`process_owner()`]; `cleanup` removes such an active snapshot or view
//! once that process is gone. Commit does not carry the label over.

pub mod mount;
mod native;
mod overlay;
mod store;
mod tree;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Serialize;

pub use mount::{unmount, Mount};
pub use native::Native;
pub use overlay::Overlay;

pub use crate::metadata::Labels;
use crate::{metadata, ErrorKind};

/// The snapshotters compiled in, by plugin id.
pub const SNAPSHOTTERS: &[&str] = &[overlay::NAME, native::NAME];

/// Label naming the process whose work snapshot this is; see
/// [`process_owner`].
pub const OWNER_LABEL: &str = "berth.io/owner";

/// A snapshotter: creates, mounts, commits and removes snapshots in one
/// store. See the [module docs](self) for the lifecycle and the guarantees
/// under concurrent processes and crashes.
///
/// Every method is safe to call from several threads and processes at once.
pub trait Snapshotter: Send + Sync {
    /// The plugin id: `overlayfs` or `native`.
    fn name(&self) -> &'static str;

    /// What is known about snapshot `key`.
    fn stat(&self, key: &str) -> Result<Info>;

    /// Sets `labels` on snapshot `key`; a label given with an empty value is
    /// removed, labels not named stay. Returns the updated info.
    fn update(&self, key: &str, labels: &Labels) -> Result<Info>;

    /// Disk space and inodes used by snapshot `key` itself (not its
    /// parents). May take time proportional to the snapshot's size: active
    /// snapshots and views are walked on each call; committed ones were
    /// measured once, at commit.
    fn usage(&self, key: &str) -> Result<Usage>;

    /// How to mount snapshot `key`: read-write for an active snapshot,
    /// read-only for a view or a committed snapshot. Mount them in order at
    /// one target with [`mount::mount_all`].
    fn mounts(&self, key: &str) -> Result<Vec<Mount>>;

    /// Creates the active snapshot `key` on the committed snapshot `parent`
    /// (empty without one) and returns its mounts.
    fn prepare(&self, key: &str, parent: Option<&str>, labels: &Labels) -> Result<Vec<Mount>>;

    /// Creates the read-only snapshot `key` of the committed `parent` and
    /// returns its mounts.
    fn view(&self, key: &str, parent: Option<&str>, labels: &Labels) -> Result<Vec<Mount>>;

    /// Turns the active snapshot `key` into the committed snapshot `name`,
    /// which gets exactly `labels`. Nothing may write to `key` any more.
    fn commit(&self, name: &str, key: &str, labels: &Labels) -> Result<Info>;

    /// Removes snapshot `key` and its data. Refused while it has children or
    /// while a mount in this mount namespace uses its directory (an overlay
    /// view of exactly one parent is a bind of the parent's directory, so
    /// removing it while mounted is allowed and harmless).
    fn remove(&self, key: &str) -> Result<()>;

    /// [`Snapshotter::remove`], except that inside the transaction that
    /// deletes the record `keep` is asked first (with that transaction's
    /// connection): when it names a reason, nothing is removed and
    /// [`Error::Kept`] carries the reason. Garbage collection uses it to
    /// re-check, atomically with the deletion, that nothing created after
    /// its mark (a lease, an image, a container) references `key`.
    fn remove_unless(&self, key: &str, keep: &KeepCheck<'_>) -> Result<()>;

    /// Every snapshot that `filter` matches, oldest first.
    fn walk(&self, filter: &Filter) -> Result<Vec<Info>>;

    /// The directory where changes to the active snapshot `key` are written
    /// directly, without mounting: overlay's upperdir, native's full tree.
    fn upper_dir(&self, key: &str) -> Result<PathBuf>;

    /// The parents' directories of snapshot `key`, nearest first, which an
    /// unpacker reads to see what a layer's whiteouts hide. Empty for
    /// snapshotters whose upper dir already holds the whole tree (native).
    fn lower_dirs(&self, key: &str) -> Result<Vec<PathBuf>>;

    /// How a deletion must be written into [`Snapshotter::upper_dir`].
    fn whiteout_style(&self) -> WhiteoutStyle;

    /// Deletes what crashed processes left: directories without a record,
    /// active snapshots and views whose [`OWNER_LABEL`] process is gone,
    /// and active snapshots and views whose directory is missing. Waits for
    /// prepares and removes in flight to finish first.
    fn cleanup(&self) -> Result<CleanupReport>;
}

/// The question [`Snapshotter::remove_unless`] asks inside its deleting
/// transaction: `Some(reason)` keeps the snapshot.
pub type KeepCheck<'a> = dyn Fn(&rusqlite::Connection) -> rusqlite::Result<Option<String>> + 'a;

/// Opens the snapshotter `name` (one of [`SNAPSHOTTERS`]) in the store at
/// `root`, creating its directory if needed. It opens its own connection to
/// the metadata database `<root>/meta.db`; other connections in the same
/// or other processes see its changes as soon as each call returns.
pub fn open(root: &Path, name: &str) -> Result<Box<dyn Snapshotter>> {
    match name {
        overlay::NAME => Ok(Box::new(Overlay::open(root)?)),
        native::NAME => Ok(Box::new(Native::open(root)?)),
        _ => Err(Error::UnknownSnapshotter {
            name: name.to_string(),
        }),
    }
}

/// The value of [`OWNER_LABEL`] naming this process: boot id, pid and start
/// time, so a reused pid or a reboot does not pass for the same process.
pub fn process_owner() -> String {
    store::owner_of(std::process::id()).unwrap_or_default()
}

/// Whether the process an [`OWNER_LABEL`] value names is known to be gone
/// (a value that cannot be read counts as alive).
pub fn owner_gone(owner: &str) -> bool {
    store::owner_gone_now(owner)
}

/// The state of a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Writable; may be committed.
    Active,
    /// Read-only; cannot be committed.
    View,
    /// Immutable; may be a parent.
    Committed,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Active => "active",
            Kind::View => "view",
            Kind::Committed => "committed",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = String;

    fn from_str(s: &str) -> Result<Kind, String> {
        match s {
            "active" => Ok(Kind::Active),
            "view" => Ok(Kind::View),
            "committed" => Ok(Kind::Committed),
            _ => Err(format!(
                "unknown snapshot kind \"{s}\" (active, view or committed)"
            )),
        }
    }
}

/// What is known about one snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Info {
    pub key: String,
    /// The committed snapshot this one is based on.
    pub parent: Option<String>,
    pub kind: Kind,
    pub labels: Labels,
    /// Nanoseconds since the Unix epoch.
    pub created_ns: i64,
    /// Nanoseconds since the Unix epoch of the last change (commit, labels).
    pub updated_ns: i64,
    /// The number naming its directory, `<root>/snapshots/<snapshotter>/<id>`.
    pub id: u64,
}

/// Space a snapshot takes: allocated bytes (`st_blocks` × 512) and inodes,
/// each hard-linked inode counted once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Usage {
    pub size: u64,
    pub inodes: u64,
}

/// How a layer's deletions are written into an active snapshot's upper dir.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WhiteoutStyle {
    /// Overlayfs whiteouts: a deleted path becomes a character device 0:0,
    /// a directory whose lower content is hidden gets the xattr
    /// `trusted.overlay.opaque=y`.
    Overlay,
    /// The upper dir holds the whole tree: delete the path from it.
    Delete,
}

/// Which snapshots [`Snapshotter::walk`] returns; the default matches all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub kind: Option<Kind>,
    /// Only children of this snapshot.
    pub parent: Option<String>,
    /// Labels that must be present; with `Some(value)`, with that value.
    pub labels: Vec<(String, Option<String>)>,
}

impl Filter {
    pub fn matches(&self, info: &Info) -> bool {
        self.kind.is_none_or(|k| k == info.kind)
            && self
                .parent
                .as_ref()
                .is_none_or(|p| info.parent.as_ref() == Some(p))
            && self
                .labels
                .iter()
                .all(|(k, v)| match (info.labels.get(k), v) {
                    (Some(have), Some(want)) => have == want,
                    (Some(_), None) => true,
                    (None, _) => false,
                })
    }
}

/// What [`Snapshotter::cleanup`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CleanupReport {
    /// Directories with no record (a prepare or remove cut short).
    pub orphan_dirs: Vec<PathBuf>,
    /// Active snapshots and views removed because their owner process is
    /// gone or their directory was missing.
    pub stale_snapshots: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("snapshot {snapshotter}/{key}: not found")]
    NotFound { snapshotter: String, key: String },
    #[error("snapshot {snapshotter}/{key}: already exists")]
    AlreadyExists { snapshotter: String, key: String },
    #[error("snapshot {snapshotter}/{key}: {what}")]
    WrongKind {
        snapshotter: String,
        key: String,
        /// What was wrong, e.g. "is a view; only an active snapshot can be committed".
        what: String,
    },
    #[error("snapshot {snapshotter}/{key}: has children ({}); remove them first", children.join(", "))]
    HasChildren {
        snapshotter: String,
        key: String,
        children: Vec<String>,
    },
    #[error("snapshot {snapshotter}/{key}: in use: mounted at {}", mountpoint.display())]
    InUse {
        snapshotter: String,
        key: String,
        mountpoint: PathBuf,
    },
    /// [`Snapshotter::remove_unless`] found a reason to keep it.
    #[error("snapshot {snapshotter}/{key}: kept: {reason}")]
    Kept {
        snapshotter: String,
        key: String,
        reason: String,
    },
    #[error("invalid snapshot key \"{key}\": {reason}")]
    InvalidKey { key: String, reason: String },
    #[error("unknown snapshotter \"{name}\" (compiled in: {})", SNAPSHOTTERS.join(", "))]
    UnknownSnapshotter { name: String },
    #[error("snapshotter {name} cannot work here: {reason}")]
    Unavailable { name: String, reason: String },
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{command}: {source}{}", if detail.is_empty() { String::new() } else { format!(" ({detail})") })]
    Mount {
        /// The mount as a command line, for the user to retry or inspect.
        command: String,
        #[source]
        source: std::io::Error,
        /// What the kernel said beyond the errno, if anything.
        detail: String,
    },
    #[error("unmounting {}: {reason}", target.display())]
    Unmount {
        target: PathBuf,
        reason: String,
        kind: ErrorKind,
    },
    #[error(transparent)]
    Metadata(#[from] metadata::Error),
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::AlreadyExists { .. } => ErrorKind::AlreadyExists,
            Error::WrongKind { .. }
            | Error::HasChildren { .. }
            | Error::InUse { .. }
            | Error::Kept { .. } => ErrorKind::FailedPrecondition,
            Error::InvalidKey { .. } | Error::UnknownSnapshotter { .. } => {
                ErrorKind::InvalidArgument
            }
            Error::Unavailable { .. } => ErrorKind::Unavailable,
            Error::Io { .. } | Error::Mount { .. } => ErrorKind::Internal,
            Error::Unmount { kind, .. } => *kind,
            Error::Metadata(e) => e.kind(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
