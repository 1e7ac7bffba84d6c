//! The metadata database: one SQLite file, `<root>/meta.db`, shared by every
//! berth process.
//!
//! Guarantees under many processes:
//! - The file runs in WAL mode, so readers never block the writer and the
//!   writer never blocks readers.
//! - Every write is one short `BEGIN IMMEDIATE` transaction: it takes the
//!   write lock up front instead of upgrading a read lock midway, which is
//!   what makes SQLite return `SQLITE_BUSY` without waiting. With the long
//!   busy timeout below, concurrent writers queue instead of failing.
//! - The schema carries a version (`PRAGMA user_version`) and is migrated
//!   forward inside one transaction, so two processes opening a fresh store
//!   at once agree on one schema.
//!
//! A process killed at any instant leaves either the whole transaction or
//! none of it. Each change to an image, snapshot, container or blob records
//! its event (see [`events`]) in the transaction that makes it, so the
//! event log never tells of a change that did not happen, nor misses one. Work that spans several transactions (a pull) protects what it
//! has written so far with a *lease*, which garbage collection treats as a
//! root until the lease is deleted or expires.

mod containers;
pub mod events;
mod images;
mod leases;
mod list;
mod schema;
mod snapshots;

pub use containers::{
    container_records, delete_container, find_container, insert_container, process_start_time,
    reconcile, set_container_process, set_container_running, set_container_started,
    set_container_stopped, ContainerRecord, ContainerStatus,
};
pub use events::{record_container_event, record_event, Event, EventRange, EventType, Retention};
pub use images::{delete_image, put_content, put_image, ContentRecord, ImageRecord};
pub use leases::{add_resource, delete_lease, snapshot_lease_kind, Lease};
pub use snapshots::{
    allocate_snapshot_id, commit_snapshot, delete_snapshot, insert_snapshot, set_snapshot_labels,
    snapshot_chain, snapshot_children, snapshot_record, snapshot_records, SnapshotRecord,
};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use crate::ErrorKind;

/// Free-form key/value labels, stored as a JSON object.
pub type Labels = BTreeMap<String, String>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("metadata {path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("metadata {path}: schema version {found} is newer than this berth understands ({known}); upgrade berth")]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("metadata: {what}: not found")]
    NotFound { what: String },
    /// A unique name or id is taken.
    #[error("metadata: {what}")]
    AlreadyExists { what: String },
    /// A short id matches more than one record.
    #[error("metadata: {what}: ambiguous, matches more than one; give more characters")]
    Ambiguous { what: String },
    #[error("metadata: {what}: corrupt record: {reason}")]
    Corrupt { what: String, reason: String },
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::AlreadyExists { .. } => ErrorKind::AlreadyExists,
            Error::Ambiguous { .. } => ErrorKind::InvalidArgument,
            Error::TooNew { .. } => ErrorKind::FailedPrecondition,
            Error::Corrupt { .. } => ErrorKind::DataLoss,
            Error::Sqlite { .. } => ErrorKind::Internal,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Long enough that a queue of writers from many processes drains before
/// anyone gives up; each transaction is milliseconds.
const BUSY_TIMEOUT: Duration = Duration::from_secs(60);
/// Address space for mapping the database file; pages past it are read
/// the ordinary way.
const MMAP_SIZE: i64 = 1 << 30;

/// An open connection to `<root>/meta.db`.
pub struct Db {
    conn: Connection,
    path: PathBuf,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("path", &self.path).finish()
    }
}

impl Db {
    /// Opens (creating and migrating if needed) the database under `root`.
    pub fn open(root: &Path) -> Result<Db> {
        let path = root.join("meta.db");
        let ctx = |source| Error::Sqlite {
            path: path.clone(),
            source,
        };
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(ctx)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(ctx)?;
        set_wal(&conn).map_err(ctx)?;
        // NORMAL is crash-safe in WAL mode (a commit may be lost on power
        // failure, never half-applied) and saves an fsync per transaction.
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(ctx)?;
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(ctx)?;
        // Sorts and temporary indexes in memory: listing 10,000 containers
        // otherwise spills its ORDER BY to a file under /var/tmp.
        conn.pragma_update(None, "temp_store", "MEMORY")
            .map_err(ctx)?;
        // Reads straight from the mapped file instead of copying each page
        // into a private cache: a listing of 10,000 containers otherwise
        // spends a third of its time filling and freeing that cache.
        conn.pragma_update(None, "mmap_size", MMAP_SIZE)
            .map_err(ctx)?;
        let mut db = Db { conn, path };
        schema::migrate(&mut db)?;
        restrict_permissions(&db.path);
        Ok(db)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` in one IMMEDIATE transaction, committing when it returns Ok.
    pub fn write<T>(
        &mut self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<T> {
        let path = self.path.clone();
        let ctx = |source| Error::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(ctx)?;
        let out = f(&tx).map_err(ctx)?;
        tx.commit().map_err(ctx)?;
        Ok(out)
    }

    /// Runs a read-only query outside any write lock.
    pub fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T> {
        f(&self.conn).map_err(|source| Error::Sqlite {
            path: self.path.clone(),
            source,
        })
    }
}

/// Switching to WAL needs a moment of exclusive access; on a fresh file two
/// processes can collide here before the busy handler applies, so retry.
fn set_wal(conn: &Connection) -> rusqlite::Result<()> {
    let mut delay = Duration::from_millis(5);
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    loop {
        match conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0))
        {
            Ok(_) => return Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_millis(200));
            }
            Err(e) => return Err(e),
        }
    }
}

fn restrict_permissions(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    // Best effort: the store root is already 0700; this only tightens the
    // file itself when someone created the root with a looser umask.
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
}

pub(crate) fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

pub(crate) fn labels_to_json(labels: &Labels) -> String {
    serde_json::to_string(labels).unwrap_or_else(|_| "{}".to_string())
}

pub(crate) fn labels_from_json(what: &str, text: &str) -> Result<Labels> {
    serde_json::from_str(text).map_err(|e| Error::Corrupt {
        what: what.to_string(),
        reason: format!("labels: {e}"),
    })
}
