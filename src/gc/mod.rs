//! Garbage collection: containerd-style mark and sweep over one store.
//!
//! # Mark
//!
//! Roots, each with the reason it keeps what it reaches:
//! - every image record (its root descriptor, and the snapshot named by its
//!   `berth.io/unpacked.<snapshotter>` and `containerd.io/gc.ref.snapshot.*`
//!   labels);
//! - every container record (its writable snapshot and its image's content);
//! - every resource of an unexpired lease (a pull or import in flight holds
//!   what it fetched and unpacked);
//! - active snapshots and views whose `berth.io/owner` process is alive, and
//!   those with neither an owner nor a container label (made by hand with
//!   `berth-snapshot prepare`).
//!
//! Edges: content labels `containerd.io/gc.ref.content.*` (index →
//! manifests → config and layers) and `containerd.io/gc.ref.snapshot.*`,
//! and snapshot → parent.
//!
//! # Sweep, and why it is safe beside other processes
//!
//! Only one collector runs at a time (`flock` on `<root>/gc.lock`). Other
//! processes never wait for it: what they create is protected by a lease or
//! a record written before it is needed, and the collector re-runs the mark
//! *inside* the write transaction that deletes records, so a lease, image
//! or container that appeared after the first mark still keeps what it
//! names. Snapshots go one by one through
//! [`Snapshotter::remove_unless`](crate::snapshot::Snapshotter::remove_unless),
//! children before parents; content records go in one transaction, and
//! their blob files only after it commits, each inside a short write
//! transaction that first checks no lease or record claims the blob now (a
//! pull leases a blob before it looks whether the file is there).
//!
//! # Crashes
//!
//! A record is always deleted before its data. A process killed in between
//! leaves a blob file or a snapshot directory without a record: an orphan,
//! which the next collection removes (blob files without a record are
//! candidates; snapshot directories go through the snapshotter's cleanup).
//!
//! Test knob: `BERTH_GC_PAUSE_MS` makes the sweep sleep that many
//! milliseconds before each deletion, so a test can kill it midway.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs;
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use crate::content::Digest;
use crate::metadata::{self, now_ns, Db, Labels, SnapshotRecord};
use crate::snapshot::{self, Kind, Snapshotter};
use crate::ErrorKind;

const CONTENT_REF_PREFIX: &str = "containerd.io/gc.ref.content.";
const SNAPSHOT_REF_PREFIX: &str = "containerd.io/gc.ref.snapshot.";
const UNPACKED_PREFIX: &str = crate::image::UNPACKED_LABEL_PREFIX;
const CONTAINER_LABEL: &str = crate::runtime::container::CONTAINER_LABEL;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("gc: {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Removal of something still referenced was refused.
    #[error("{what}: in use by {why}")]
    InUse { what: String, why: String },
    #[error(transparent)]
    Metadata(#[from] metadata::Error),
    #[error(transparent)]
    Snapshot(#[from] snapshot::Error),
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Io { .. } => ErrorKind::Internal,
            Error::InUse { .. } => ErrorKind::FailedPrecondition,
            Error::Metadata(e) => e.kind(),
            Error::Snapshot(e) => e.kind(),
        }
    }
}

/// One object garbage collection knows about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Node {
    /// A blob and its record, by digest.
    Content { digest: String },
    /// A snapshot of one snapshotter, by key.
    Snapshot { snapshotter: String, key: String },
}

impl std::fmt::Display for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Node::Content { digest } => write!(f, "content {digest}"),
            Node::Snapshot { snapshotter, key } => write!(f, "snapshot {snapshotter}/{key}"),
        }
    }
}

impl Node {
    pub fn content(digest: &str) -> Node {
        Node::Content {
            digest: digest.to_string(),
        }
    }
    pub fn snapshot(snapshotter: &str, key: &str) -> Node {
        Node::Snapshot {
            snapshotter: snapshotter.to_string(),
            key: key.to_string(),
        }
    }
    /// The id a user names it by: the digest, or the snapshot key.
    pub fn id(&self) -> &str {
        match self {
            Node::Content { digest } => digest,
            Node::Snapshot { key, .. } => key,
        }
    }
}

/// An object freed (or, in a dry run, that would be freed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Freed {
    #[serde(flatten)]
    pub node: Node,
    /// Bytes on disk: the blob's size, the snapshot's measured usage.
    pub size: u64,
}

/// An object kept, and the root that reaches it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Kept {
    #[serde(flatten)]
    pub node: Node,
    pub size: u64,
    /// E.g. `image docker.io/library/busybox:latest`, `lease pull-…`,
    /// `container web`, `mounted at /mnt`.
    pub reason: String,
}

/// What a collection did, or would do.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub dry_run: bool,
    pub removed: Vec<Freed>,
    /// Total bytes of `removed`.
    pub freed_bytes: u64,
    pub kept: Vec<Kept>,
    /// Orphan snapshot directories and abandoned work snapshots the
    /// snapshotters' cleanup removed.
    pub cleaned: Vec<String>,
}

/// The result of a mark: every reachable object, with the reason of the
/// first root that reached it.
#[derive(Debug, Default)]
pub struct Marks {
    pub reached: HashMap<Node, String>,
    /// Every object the records know, with its size if known.
    pub known: BTreeMap<Node, Option<u64>>,
    /// Snapshot records, to order removals and find sizes.
    pub snapshots: HashMap<Node, SnapshotRecord>,
}

/// Labels of a row: unreadable ones are an error, never "no labels", since
/// a missing reference would let the sweep free what the row points at.
fn parse_labels(what: &str, text: &str) -> rusqlite::Result<Labels> {
    metadata::labels_from_json(what, text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

/// Marks everything reachable, reading through `conn` (a transaction's
/// connection for a consistent view).
pub fn mark(conn: &Connection) -> rusqlite::Result<Marks> {
    let mut m = Marks::default();
    let mut content_labels: HashMap<String, Labels> = HashMap::new();
    {
        let mut stmt = conn.prepare("SELECT digest, size, labels FROM content")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        for row in rows {
            let (digest, size, labels) = row?;
            let labels = parse_labels(&digest, &labels)?;
            m.known.insert(Node::content(&digest), Some(size as u64));
            content_labels.insert(digest, labels);
        }
    }
    for name in snapshot::SNAPSHOTTERS {
        for rec in metadata::snapshot_records(conn, name)? {
            let node = Node::snapshot(name, &rec.key);
            m.known.insert(node.clone(), rec.usage.map(|u| u.size));
            m.snapshots.insert(node, rec);
        }
    }

    let mut queue: VecDeque<(Node, String)> = VecDeque::new();
    {
        let mut stmt = conn.prepare("SELECT name, digest, labels FROM images")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        for row in rows {
            let (name, digest, labels) = row?;
            let why = format!("image {name}");
            queue.push_back((Node::content(&digest), why.clone()));
            let labels = parse_labels(&name, &labels)?;
            for (k, v) in &labels {
                let sn = k
                    .strip_prefix(UNPACKED_PREFIX)
                    .or_else(|| k.strip_prefix(SNAPSHOT_REF_PREFIX));
                if let Some(sn) = sn {
                    queue.push_back((Node::snapshot(sn, v), why.clone()));
                }
            }
        }
    }
    for c in metadata::container_records(conn)? {
        let why = format!("container {}", c.name);
        queue.push_back((Node::snapshot(&c.snapshotter, &c.snapshot_key), why.clone()));
        if let Some(d) = &c.image_digest {
            queue.push_back((Node::content(d), why));
        }
    }
    {
        let mut stmt = conn.prepare(
            "SELECT r.lease_id, r.kind, r.key FROM lease_resources r
             JOIN leases l ON l.id = r.lease_id
             WHERE l.expires_ns IS NULL OR l.expires_ns > ?1",
        )?;
        let rows = stmt.query_map(params![now_ns()], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        for row in rows {
            let (lease, kind, key) = row?;
            let why = format!("lease {lease}");
            if kind == "content" {
                queue.push_back((Node::content(&key), why));
            } else if let Some(sn) = kind.strip_prefix("snapshots/") {
                queue.push_back((Node::snapshot(sn, &key), why));
            }
        }
    }
    for (node, rec) in &m.snapshots {
        if rec.kind == Kind::Committed {
            continue;
        }
        let why = match (
            rec.labels.get(snapshot::OWNER_LABEL),
            rec.labels.get(CONTAINER_LABEL),
        ) {
            (Some(owner), _) if !snapshot::owner_gone(owner) => {
                format!("{} snapshot of live process {owner}", rec.kind)
            }
            (None, None) => format!("{} snapshot made by hand (no owner)", rec.kind),
            _ => continue,
        };
        queue.push_back((node.clone(), why));
    }

    while let Some((node, why)) = queue.pop_front() {
        if m.reached.contains_key(&node) {
            continue;
        }
        match &node {
            Node::Content { digest } => {
                if let Some(labels) = content_labels.get(digest) {
                    for (k, v) in labels {
                        if k.starts_with(CONTENT_REF_PREFIX) {
                            queue.push_back((Node::content(v), why.clone()));
                        } else if let Some(sn) = k.strip_prefix(SNAPSHOT_REF_PREFIX) {
                            queue.push_back((Node::snapshot(sn, v), why.clone()));
                        }
                    }
                }
            }
            Node::Snapshot { snapshotter, .. } => {
                if let Some(parent) = m.snapshots.get(&node).and_then(|r| r.parent.clone()) {
                    queue.push_back((Node::snapshot(snapshotter, &parent), why.clone()));
                }
            }
        }
        m.reached.insert(node, why);
    }
    Ok(m)
}

/// The last mark made on each snapshotter's connection, with that
/// connection's `data_version` then. While no other connection has
/// committed since, the store has only lost records (the sweep's own), so
/// that mark still reaches everything reachable: re-marking the whole
/// store for each of thousands of snapshots would make a prune quadratic.
/// Asked inside the write transaction that deletes, where nobody else can
/// commit.
#[derive(Default)]
struct FreshMarks {
    by_connection: RefCell<HashMap<String, (i64, Marks)>>,
    marks_made: std::cell::Cell<usize>,
}

impl FreshMarks {
    /// Why `node` is reachable, as seen on `conn` (the connection of the
    /// snapshotter `name`), or `None`.
    fn reaches(
        &self,
        name: &str,
        conn: &Connection,
        node: &Node,
    ) -> rusqlite::Result<Option<String>> {
        let version: i64 = conn.pragma_query_value(None, "data_version", |r| r.get(0))?;
        let mut cache = self.by_connection.borrow_mut();
        if let Some((v, m)) = cache.get(name) {
            if *v == version {
                return Ok(m.reached.get(node).cloned());
            }
        }
        let m = mark(conn)?;
        self.marks_made.set(self.marks_made.get() + 1);
        let why = m.reached.get(node).cloned();
        cache.insert(name.to_string(), (version, m));
        Ok(why)
    }
}

/// Digests of the blob files under `<root>/content/blobs/sha256`, with
/// their sizes.
fn blob_files(root: &Path) -> Result<BTreeMap<String, u64>, Error> {
    let dir = blobs_dir(root);
    let mut out = BTreeMap::new();
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(source) => {
            return Err(Error::Io {
                action: "listing",
                path: dir,
                source,
            })
        }
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
            let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
            out.insert(format!("sha256:{name}"), size);
        }
    }
    Ok(out)
}

fn blobs_dir(root: &Path) -> PathBuf {
    root.join("content").join("blobs").join("sha256")
}

fn blob_path(root: &Path, digest: &str) -> Option<PathBuf> {
    let d: Digest = digest.parse().ok()?;
    Some(blobs_dir(root).join(d.hex()))
}

/// Holds the store-wide collector lock (`<root>/gc.lock`) while alive.
pub struct GcLock {
    _lock: nix::fcntl::Flock<fs::File>,
}

impl GcLock {
    /// Waits for any other collector to finish, then holds the lock.
    pub fn acquire(root: &Path) -> Result<GcLock, Error> {
        let path = root.join("gc.lock");
        let lock = crate::lockfile::lock(&path, nix::fcntl::FlockArg::LockExclusive).map_err(
            |source| Error::Io {
                action: "locking",
                path,
                source,
            },
        )?;
        Ok(GcLock { _lock: lock })
    }
}

fn pause() {
    if let Some(ms) = std::env::var("BERTH_GC_PAUSE_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}

/// Depth of a snapshot in its chain (a base is 0), to remove children
/// before parents.
fn depth(m: &Marks, node: &Node) -> usize {
    let mut d = 0;
    let mut cur = m.snapshots.get(node);
    while let Some(rec) = cur {
        let Some(parent) = &rec.parent else { break };
        d += 1;
        if d > 100_000 {
            break;
        }
        cur = m.snapshots.get(&Node::snapshot(&rec.snapshotter, parent));
    }
    d
}

/// Opens the snapshotters that have a directory or records in this store.
fn snapshotters(root: &Path, m: &Marks) -> Vec<Box<dyn Snapshotter>> {
    snapshot::SNAPSHOTTERS
        .iter()
        .filter(|name| {
            root.join("snapshots").join(name).exists()
                || m.snapshots.keys().any(
                    |n| matches!(n, Node::Snapshot { snapshotter, .. } if snapshotter == *name),
                )
        })
        .filter_map(|name| snapshot::open(root, name).ok())
        .collect()
}

/// Records a dry run pretends are already removed (what `berth-rm` would
/// delete before collecting).
#[derive(Debug, Clone, Default)]
pub struct Pretend {
    pub images: Vec<String>,
    pub containers: Vec<String>,
}

/// Collects garbage in the store at `root`. A dry run only marks and says
/// what would be freed and why the rest is kept; it marks as if the
/// records in `pretend` were gone (inside a savepoint it rolls back).
pub fn collect(root: &Path, dry_run: bool, pretend: &Pretend) -> Result<Report, Error> {
    let _lock = GcLock::acquire(root)?;
    let mut db = Db::open(root)?;
    let mut report = Report {
        dry_run,
        ..Report::default()
    };
    let marks = if dry_run && !(pretend.images.is_empty() && pretend.containers.is_empty()) {
        db.read(|c| {
            c.execute_batch("SAVEPOINT gc_dry_run")?;
            let m = (|| {
                for name in &pretend.images {
                    c.execute("DELETE FROM images WHERE name = ?1", [name])?;
                }
                for id in &pretend.containers {
                    c.execute("DELETE FROM containers WHERE id = ?1", [id])?;
                }
                mark(c)
            })();
            c.execute_batch("ROLLBACK TO gc_dry_run; RELEASE gc_dry_run")?;
            m
        })?
    } else {
        db.read(mark)?
    };
    let files = blob_files(root)?;
    let mut candidates: BTreeMap<Node, u64> = BTreeMap::new();
    for (node, size) in &marks.known {
        let size = size.unwrap_or_else(|| match node {
            Node::Content { digest } => files.get(digest).copied().unwrap_or(0),
            Node::Snapshot { .. } => 0,
        });
        match marks.reached.get(node) {
            Some(why) => report.kept.push(Kept {
                node: node.clone(),
                size,
                reason: why.clone(),
            }),
            None => {
                candidates.insert(node.clone(), size);
            }
        }
    }
    for (digest, size) in &files {
        let node = Node::content(digest);
        if marks.known.contains_key(&node) {
            continue;
        }
        match marks.reached.get(&node) {
            Some(why) => report.kept.push(Kept {
                node,
                size: *size,
                reason: why.clone(),
            }),
            None => {
                candidates.insert(node, *size);
            }
        }
    }
    let opened = snapshotters(root, &marks);
    let find = |name: &str| opened.iter().find(|s| s.name() == name);
    // Active snapshots have no measured size; ask the snapshotter.
    for (node, size) in candidates.iter_mut() {
        if let (Node::Snapshot { snapshotter, key }, 0) = (node, *size) {
            if let Some(s) = find(snapshotter) {
                *size = s.usage(key).map(|u| u.size).unwrap_or(0);
            }
        }
    }
    if dry_run {
        for (node, size) in candidates {
            report.freed_bytes += size;
            report.removed.push(Freed { node, size });
        }
        return Ok(report);
    }

    // Snapshots: deepest first, each with the mark re-run inside the
    // transaction that deletes its record.
    let mut snaps: Vec<(usize, Node, u64)> = candidates
        .iter()
        .filter(|(n, _)| matches!(n, Node::Snapshot { .. }))
        .map(|(n, s)| (depth(&marks, n), n.clone(), *s))
        .collect();
    snaps.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    let fresh = FreshMarks::default();
    for (_, node, size) in snaps {
        let Node::Snapshot { snapshotter, key } = &node else {
            continue;
        };
        let Some(s) = find(snapshotter) else {
            report.kept.push(Kept {
                node: node.clone(),
                size,
                reason: format!("snapshotter {snapshotter} cannot be opened"),
            });
            continue;
        };
        pause();
        let keep = |conn: &Connection| fresh.reaches(snapshotter, conn, &node);
        let kept = |reason: String| Kept {
            node: node.clone(),
            size,
            reason,
        };
        match s.remove_unless(key, &keep) {
            Ok(()) => {
                report.freed_bytes += size;
                report.removed.push(Freed {
                    node: node.clone(),
                    size,
                });
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(snapshot::Error::Kept { reason, .. }) => report.kept.push(kept(reason)),
            Err(snapshot::Error::HasChildren { children, .. }) => {
                report
                    .kept
                    .push(kept(format!("parent of {}", children.join(", "))));
            }
            Err(snapshot::Error::InUse { mountpoint, .. }) => {
                report
                    .kept
                    .push(kept(format!("mounted at {}", mountpoint.display())));
            }
            Err(e) => return Err(e.into()),
        }
    }
    // A container's snapshot must not carry the owner label of the process
    // that created it (stores from before that was cleared), or the
    // snapshotters' cleanup below would take it for abandoned work.
    for (node, rec) in &marks.snapshots {
        let Node::Snapshot { snapshotter, key } = node else {
            continue;
        };
        let stale = rec
            .labels
            .get(snapshot::OWNER_LABEL)
            .is_some_and(|o| snapshot::owner_gone(o));
        let held = marks
            .reached
            .get(node)
            .is_some_and(|why| why.starts_with("container "));
        if stale && held && rec.labels.contains_key(CONTAINER_LABEL) {
            if let Some(s) = find(snapshotter) {
                let clear = Labels::from([(snapshot::OWNER_LABEL.to_string(), String::new())]);
                let _ = s.update(key, &clear);
            }
        }
    }
    for s in &opened {
        if let Ok(c) = s.cleanup() {
            for key in c.stale_snapshots {
                report.cleaned.push(format!("{}/{key}", s.name()));
            }
        }
    }

    // Content: records in one transaction that re-runs the mark, then the
    // files of the records it deleted (and of orphan files).
    let contents: Vec<(String, u64)> = candidates
        .iter()
        .filter_map(|(n, s)| match n {
            Node::Content { digest } => Some((digest.clone(), *s)),
            _ => None,
        })
        .collect();
    let (gone, saved) = db.write(|tx| {
        let again = mark(tx)?;
        let mut gone = Vec::new();
        let mut saved = Vec::new();
        for (digest, size) in &contents {
            match again.reached.get(&Node::content(digest)) {
                Some(why) => saved.push((digest.clone(), *size, why.clone())),
                None => {
                    if tx.execute("DELETE FROM content WHERE digest = ?1", [digest])? > 0 {
                        record_content_removal(tx, digest, *size)?;
                    }
                    gone.push((digest.clone(), *size));
                }
            }
        }
        Ok((gone, saved))
    })?;
    for (digest, size, reason) in saved {
        report.kept.push(Kept {
            node: Node::content(&digest),
            size,
            reason,
        });
    }
    // Each file goes inside a write transaction that checks no lease or
    // record claims it now: a pull that leases a blob (a write) and then
    // finds it present waits for this, then sees it gone and fetches it.
    for (digest, size) in gone {
        pause();
        let Some(path) = blob_path(root, &digest) else {
            continue;
        };
        let claimed = db.write(|tx| {
            let lease: Option<String> = tx
                .query_row(
                    "SELECT r.lease_id FROM lease_resources r JOIN leases l ON l.id = r.lease_id
                     WHERE r.kind = 'content' AND r.key = ?1
                       AND (l.expires_ns IS NULL OR l.expires_ns > ?2) LIMIT 1",
                    params![digest, now_ns()],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(lease) = lease {
                return Ok(Some(Ok(format!("lease {lease}"))));
            }
            let recorded: bool = tx
                .query_row("SELECT 1 FROM content WHERE digest = ?1", [&digest], |_| {
                    Ok(())
                })
                .optional()?
                .is_some();
            if recorded {
                return Ok(Some(Ok("recorded again meanwhile".to_string())));
            }
            match fs::remove_file(&path) {
                Ok(()) => Ok(None),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Ok(Some(Err(e))),
            }
        })?;
        match claimed {
            None => {
                report.freed_bytes += size;
                report.removed.push(Freed {
                    node: Node::content(&digest),
                    size,
                });
            }
            Some(Ok(reason)) => report.kept.push(Kept {
                node: Node::content(&digest),
                size,
                reason,
            }),
            Some(Err(source)) => {
                return Err(Error::Io {
                    action: "removing",
                    path,
                    source,
                })
            }
        }
    }
    report.kept.sort_by(|a, b| a.node.cmp(&b.node));
    Ok(report)
}

/// The `content remove` event, on the transaction deleting the record.
fn record_content_removal(tx: &Connection, digest: &str, size: u64) -> rusqlite::Result<()> {
    let attrs = Labels::from([("size".to_string(), size.to_string())]);
    metadata::record_event(
        tx,
        metadata::EventType::Content,
        metadata::events::action::REMOVE,
        digest,
        &attrs,
    )
    .map(drop)
}

/// Why `node` may not be removed by hand: the root that reaches it, or a
/// snapshot child, or `None` when nothing references it.
pub fn referenced_by(db: &Db, node: &Node) -> Result<Option<String>, Error> {
    let m = db.read(mark)?;
    if let Some(why) = m.reached.get(node) {
        return Ok(Some(why.clone()));
    }
    if let Node::Snapshot { snapshotter, key } = node {
        let children = db.read(|c| metadata::snapshot_children(c, snapshotter, key))?;
        if !children.is_empty() {
            return Ok(Some(format!("parent of {}", children.join(", "))));
        }
    }
    // Content named by another blob's labels (even an unreachable one).
    if let Node::Content { digest } = node {
        let by: Option<String> = db.read(|c| {
            let mut stmt = c.prepare("SELECT digest, labels FROM content")?;
            let rows =
                stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
            for row in rows {
                let (d, labels) = row?;
                let labels = parse_labels(&d, &labels)?;
                if labels
                    .iter()
                    .any(|(k, v)| k.starts_with(CONTENT_REF_PREFIX) && v == digest)
                {
                    return Ok(Some(d));
                }
            }
            Ok(None)
        })?;
        if let Some(d) = by {
            return Ok(Some(format!("content {d}")));
        }
    }
    Ok(None)
}

/// Removes one unreferenced content blob: its record (after re-checking,
/// in the deleting transaction, that nothing references it), then its file.
pub fn remove_content(root: &Path, digest: &str) -> Result<Result<u64, String>, Error> {
    let _lock = GcLock::acquire(root)?;
    let mut db = Db::open(root)?;
    let node = Node::content(digest);
    let file_size = blob_path(root, digest)
        .and_then(|p| fs::metadata(p).ok())
        .map(|m| m.len());
    if let Some(why) = referenced_by(&db, &node)? {
        return Ok(Err(why));
    }
    let outcome = db.write(|tx| {
        if let Some(why) = mark(tx)?.reached.get(&node) {
            return Ok(Err(why.clone()));
        }
        let n = tx.execute("DELETE FROM content WHERE digest = ?1", [digest])?;
        if n > 0 {
            record_content_removal(tx, digest, file_size.unwrap_or(0))?;
        }
        Ok(Ok(n))
    })?;
    let n = match outcome {
        Ok(n) => n,
        Err(why) => return Ok(Err(why)),
    };
    if n == 0 && file_size.is_none() {
        return Ok(Err("not found".to_string()));
    }
    if let Some(path) = blob_path(root, digest) {
        let _ = fs::remove_file(path);
    }
    Ok(Ok(file_size.unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::{put_content, put_image, ContentRecord, ImageRecord};
    use std::collections::BTreeSet;
    use std::time::Duration;

    fn blob(root: &Path, data: &[u8]) -> String {
        let d = Digest::of(data);
        fs::create_dir_all(blobs_dir(root)).unwrap();
        fs::write(blobs_dir(root).join(d.hex()), data).unwrap();
        d.to_string()
    }

    fn content(db: &mut Db, digest: &str, size: u64, refs: &[&str]) {
        let labels = refs
            .iter()
            .enumerate()
            .map(|(i, r)| (format!("{CONTENT_REF_PREFIX}l.{i}"), r.to_string()))
            .collect();
        let rec = ContentRecord {
            digest: digest.parse().unwrap(),
            size,
            media_type: None,
            labels,
        };
        db.write(|tx| put_content(tx, &rec)).unwrap();
    }

    #[test]
    fn mark_follows_labels_and_sweep_frees_the_rest_but_not_leased() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let mut db = Db::open(root).unwrap();
        let layer = blob(root, b"layer");
        let lone = blob(root, b"lonely layer");
        let manifest = blob(root, b"manifest");
        let orphan = blob(root, b"orphan file");
        let leased = blob(root, b"leased file");
        content(&mut db, &layer, 5, &[]);
        content(&mut db, &lone, 12, &[]);
        content(&mut db, &manifest, 8, &[&layer]);
        let image = ImageRecord {
            name: "x:1".into(),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: manifest.parse().unwrap(),
            size: 8,
            labels: Labels::new(),
            created_ns: 0,
            updated_ns: 0,
        };
        db.write(|tx| put_image(tx, &image)).unwrap();
        let lease = db.create_lease("test", Duration::from_secs(60)).unwrap();
        db.lease_add(&lease, "content", &leased).unwrap();

        let dry = collect(root, true, &Pretend::default()).unwrap();
        let ids: BTreeSet<&str> = dry.removed.iter().map(|f| f.node.id()).collect();
        assert_eq!(ids, BTreeSet::from([lone.as_str(), orphan.as_str()]));
        let why: HashMap<&str, &str> = dry
            .kept
            .iter()
            .map(|k| (k.node.id(), k.reason.as_str()))
            .collect();
        assert_eq!(why[layer.as_str()], "image x:1");
        assert_eq!(why[leased.as_str()], format!("lease {}", lease.id));

        // Pretending the image gone frees its manifest and layer too.
        let pretend = Pretend {
            images: vec!["x:1".into()],
            containers: vec![],
        };
        let dry = collect(root, true, &pretend).unwrap();
        assert_eq!(dry.removed.len(), 4);
        assert!(db.image("x:1").unwrap().is_some());

        let real = collect(root, false, &Pretend::default()).unwrap();
        assert_eq!(real.removed.len(), 2);
        assert_eq!(real.freed_bytes, 12 + 11);
        assert!(!blobs_dir(root).join(&orphan[7..]).exists());
        assert!(blobs_dir(root).join(&leased[7..]).exists());
        assert!(db.content(&lone.parse().unwrap()).unwrap().is_none());

        // Referenced content is refused by hand, with the reason.
        assert_eq!(
            remove_content(root, &layer).unwrap(),
            Err("image x:1".to_string())
        );
    }

    #[test]
    fn a_mark_is_reused_until_another_connection_commits() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let mut mine = Db::open(root).unwrap();
        let mut other = Db::open(root).unwrap();
        let a = blob(root, b"a");
        content(&mut other, &a, 1, &[]);
        let node = Node::content(&a);
        let fresh = FreshMarks::default();
        let ask = |db: &Db| db.read(|c| fresh.reaches("overlayfs", c, &node)).unwrap();
        assert_eq!(ask(&mine), None);
        assert_eq!(ask(&mine), None);
        assert_eq!(
            fresh.marks_made.get(),
            1,
            "nothing changed: the mark is reused"
        );
        // A new reference committed elsewhere must be seen.
        let img = ImageRecord {
            name: "x".into(),
            digest: a.parse().unwrap(),
            media_type: "m".into(),
            size: 1,
            labels: Labels::new(),
            created_ns: 0,
            updated_ns: 0,
        };
        other.write(|tx| put_image(tx, &img)).unwrap();
        assert_eq!(ask(&mine).as_deref(), Some("image x"));
        assert_eq!(fresh.marks_made.get(), 2);
        // The asking connection's own writes do not count as news.
        mine.write(|tx| tx.execute("DELETE FROM images", []).map(|_| ()))
            .unwrap();
        assert_eq!(ask(&mine).as_deref(), Some("image x"));
        assert_eq!(fresh.marks_made.get(), 2);
    }
}

#[cfg(test)]
mod corrupt_labels {
    use super::*;

    /// A content row whose labels cannot be read stops the mark: treating
    /// them as empty would let the sweep free the blobs they name.
    #[test]
    fn unreadable_labels_stop_the_mark() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = metadata::Db::open(dir.path()).unwrap();
        db.write(|c| {
            c.execute(
                "INSERT INTO content (digest, size, labels, created_ns, updated_ns) VALUES ('sha256:aa', 1, '{not json', 0, 0)",
                [],
            )
        })
        .unwrap();
        let err = db.read(mark).map(|_| ()).unwrap_err();
        assert!(err.to_string().contains("labels"), "{err}");
    }
}
