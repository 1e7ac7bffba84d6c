//! The store check behind `berth-ls --check`: is every byte and every
//! record where the others say it is?
//!
//! What is checked, in one pass over each table and directory:
//! - every blob file under `content/blobs/sha256/` hashes to its name;
//! - every content record has its blob file, of the recorded size;
//! - every image's root descriptor, and every blob it reaches through the
//!   `containerd.io/gc.ref.content.*` labels, has a record and a file;
//! - every snapshot record has its directory and its parent's record;
//! - every container's writable snapshot exists;
//! - no *orphans*: snapshot directories without a record, container
//!   directories without a record, blob files without a content record.
//!
//! Work in flight is not mistaken for debris: snapshot directories are
//! listed under the snapshotter's lock taken exclusively (so prepares and
//! removes in flight finish first, as `Snapshotter::cleanup` does), a blob
//! held by a live lease or written while an ingest is in progress is not an
//! orphan, and a container directory younger than [`CONTAINER_GRACE`] or
//! with a mount under it is being created or is in use.
//!
//! [`check`] with `repair` removes orphans (never damaged data that
//! something references: that is reported, for a person to decide).

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use nix::fcntl::{Flock, FlockArg};
use serde::Serialize;

use crate::content::{self, Digest, Hasher};
use crate::metadata::{ContentRecord, Db};
use crate::snapshot::SNAPSHOTTERS;

/// Label prefix naming the blobs a blob references.
pub const CONTENT_REF_PREFIX: &str = "containerd.io/gc.ref.content.";

/// A container directory this young without a record is taken to be one
/// whose `berth-run` has not yet written the record.
pub const CONTAINER_GRACE: Duration = Duration::from_secs(60);

/// What kind of problem a [`Problem`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProblemKind {
    /// Data that is there but wrong (a blob that does not hash to its name).
    Damaged,
    /// Something a record points at is not there.
    Missing,
    /// Data no record accounts for; `--repair` removes it.
    Orphan,
}

impl ProblemKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemKind::Damaged => "damaged",
            ProblemKind::Missing => "missing",
            ProblemKind::Orphan => "orphan",
        }
    }
}

/// One thing wrong with the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub kind: ProblemKind,
    /// What it is about: `blob sha256:…`, `image NAME`, `snapshot native/KEY`, …
    pub object: String,
    pub message: String,
    /// For an orphan, the file or directory `--repair` removes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {}: {}",
            self.kind.as_str(),
            self.object,
            self.message
        )
    }
}

/// What [`check`] found, and with `repair`, what it removed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub problems: Vec<Problem>,
    pub removed: Vec<PathBuf>,
}

impl Report {
    pub fn sound(&self) -> bool {
        self.problems.is_empty()
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> crate::Error + '_ {
    move |source| {
        content::Error::Io {
            path: path.to_path_buf(),
            source,
        }
        .into()
    }
}

/// Entries of `dir`, or none when it does not exist.
fn entries(dir: &Path) -> Result<Vec<fs::DirEntry>, crate::Error> {
    match fs::read_dir(dir) {
        Ok(rd) => rd.collect::<io::Result<Vec<_>>>().map_err(io_err(dir)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io_err(dir)(e)),
    }
}

/// Mount points visible in this mount namespace.
fn mount_points() -> Vec<PathBuf> {
    let Ok(text) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .collect()
}

fn mounted_under(mounts: &[PathBuf], dir: &Path) -> bool {
    mounts.iter().any(|m| m.starts_with(dir))
}

fn remove(path: &Path) -> Result<(), crate::Error> {
    let res = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) => Err(e),
    };
    match res {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// Whether some writer holds an ingest under `content/ingest/`.
fn ingest_in_progress(root: &Path) -> Result<bool, crate::Error> {
    for entry in entries(&root.join("content").join("ingest"))? {
        let lock = entry.path().join("lock");
        let Ok(file) = File::open(&lock) else {
            continue;
        };
        if let Err((_, errno)) = Flock::lock(file, FlockArg::LockSharedNonblock) {
            if errno == nix::errno::Errno::EWOULDBLOCK {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

fn hash_file(path: &Path) -> io::Result<(Digest, u64)> {
    let mut file = File::open(path)?;
    let mut hasher = Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((hasher.finish(), total))
}

/// Checks the store at `root`; with `repair`, removes the orphans it finds
/// (they are still reported, and listed in [`Report::removed`]). Run it
/// again after a repair to see what is left.
pub fn check(root: &Path, repair: bool) -> Result<Report, crate::Error> {
    let mut report = Report::default();
    let db = Db::open(root)?;
    let mut problem = |kind, object: String, message: String, path: Option<PathBuf>| {
        report.problems.push(Problem {
            kind,
            object,
            message,
            path,
        })
    };

    // Content: records against files, and every file's hash.
    let records: Vec<ContentRecord> = db.contents()?;
    let by_digest: HashMap<String, &ContentRecord> =
        records.iter().map(|r| (r.digest.to_string(), r)).collect();
    let blobs_dir = root.join("content").join("blobs").join("sha256");
    let leased: HashSet<(String, String)> = db.leased_all()?.into_iter().collect();
    let ingesting = ingest_in_progress(root)?;
    let mut files: HashMap<String, u64> = HashMap::new();
    let mut orphans: Vec<PathBuf> = Vec::new();
    let mut removed: Vec<PathBuf> = Vec::new();
    let mut blob_entries = entries(&blobs_dir)?;
    blob_entries.sort_by_key(|e| e.file_name());
    for entry in blob_entries {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let digest = format!("sha256:{name}");
        let Ok(expected) = digest.parse::<Digest>() else {
            problem(
                ProblemKind::Orphan,
                format!("file {}", path.display()),
                "not named by a sha256 digest".into(),
                Some(path.clone()),
            );
            orphans.push(path);
            continue;
        };
        let (actual, size) = hash_file(&path).map_err(io_err(&path))?;
        files.insert(digest.clone(), size);
        if actual != expected {
            problem(
                ProblemKind::Damaged,
                format!("blob {digest}"),
                format!("data hashes to {actual}"),
                None,
            );
        }
        if !by_digest.contains_key(&digest)
            && !leased.contains(&("content".to_string(), digest.clone()))
            && !ingesting
        {
            problem(
                ProblemKind::Orphan,
                format!("blob {digest}"),
                "no content record".into(),
                Some(path.clone()),
            );
            orphans.push(path);
        }
    }
    for rec in &records {
        let digest = rec.digest.to_string();
        match files.get(&digest) {
            None => problem(
                ProblemKind::Missing,
                format!("content {digest}"),
                format!(
                    "blob file {} missing",
                    blobs_dir.join(rec.digest.hex()).display()
                ),
                None,
            ),
            Some(&size) if size != rec.size => problem(
                ProblemKind::Damaged,
                format!("content {digest}"),
                format!("blob file has {size} bytes, record says {}", rec.size),
                None,
            ),
            Some(_) => {}
        }
    }

    // Images: the root and everything reachable through content labels.
    for image in db.images()? {
        let mut seen: HashSet<String> = HashSet::new();
        let mut queue = vec![(image.digest.to_string(), "root".to_string())];
        while let Some((digest, via)) = queue.pop() {
            if !seen.insert(digest.clone()) {
                continue;
            }
            let Some(rec) = by_digest.get(&digest) else {
                problem(
                    ProblemKind::Missing,
                    format!("image {}", image.name),
                    format!("{digest} ({via}) has no content record"),
                    None,
                );
                continue;
            };
            if !files.contains_key(&digest) {
                problem(
                    ProblemKind::Missing,
                    format!("image {}", image.name),
                    format!("{digest} ({via}) has no blob file"),
                    None,
                );
            }
            for (label, target) in &rec.labels {
                if let Some(rest) = label.strip_prefix(CONTENT_REF_PREFIX) {
                    queue.push((target.clone(), rest.to_string()));
                }
            }
        }
    }

    // Snapshots, under each snapshotter's lock so nothing half-made is
    // taken for debris.
    let mounts = mount_points();
    let mut snapshot_keys: HashSet<(String, String)> = HashSet::new();
    for &name in SNAPSHOTTERS {
        let dir = root.join("snapshots").join(name);
        if !dir.is_dir() {
            // Records without a directory are still checked below.
            for rec in db.snapshots(name)? {
                snapshot_keys.insert((name.to_string(), rec.key.clone()));
                problem(
                    ProblemKind::Missing,
                    format!("snapshot {name}/{}", rec.key),
                    format!(
                        "directory {} missing",
                        dir.join(rec.id.to_string()).display()
                    ),
                    None,
                );
            }
            continue;
        }
        let lock_path = dir.join("lock");
        // The snapshotter's own lock: prepares and removes in flight finish
        // first, and none starts until the check is done.
        let _lock = crate::lockfile::lock(&lock_path, FlockArg::LockExclusive)
            .map_err(io_err(&lock_path))?;
        let recs = db.snapshots(name)?;
        let keys: HashSet<&str> = recs.iter().map(|r| r.key.as_str()).collect();
        let ids: HashSet<u64> = recs.iter().map(|r| r.id).collect();
        for rec in &recs {
            snapshot_keys.insert((name.to_string(), rec.key.clone()));
            let data = dir.join(rec.id.to_string());
            if !data.is_dir() {
                problem(
                    ProblemKind::Missing,
                    format!("snapshot {name}/{}", rec.key),
                    format!("directory {} missing", data.display()),
                    None,
                );
            }
            if let Some(parent) = &rec.parent {
                if !keys.contains(parent.as_str()) {
                    problem(
                        ProblemKind::Missing,
                        format!("snapshot {name}/{}", rec.key),
                        format!("parent {parent} has no record"),
                        None,
                    );
                }
            }
        }
        let mut dir_entries = entries(&dir)?;
        dir_entries.sort_by_key(|e| e.file_name());
        for entry in dir_entries {
            let Some(id) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            let path = entry.path();
            if ids.contains(&id) || mounted_under(&mounts, &path) {
                continue;
            }
            problem(
                ProblemKind::Orphan,
                format!("snapshot dir {}", path.display()),
                format!("no {name} snapshot record has id {id}"),
                Some(path.clone()),
            );
            if repair {
                // Under the lock: nothing can be creating it now.
                remove(&path)?;
                removed.push(path);
            }
        }
    }

    // Containers: their snapshot, and directories without records.
    let containers = db.containers()?;
    let mut container_ids: HashSet<&str> = HashSet::new();
    for c in &containers {
        container_ids.insert(c.id.as_str());
        if !snapshot_keys.contains(&(c.snapshotter.clone(), c.snapshot_key.clone())) {
            problem(
                ProblemKind::Missing,
                format!("container {} ({})", &c.id[..c.id.len().min(12)], c.name),
                format!(
                    "snapshot {}/{} has no record",
                    c.snapshotter, c.snapshot_key
                ),
                None,
            );
        }
    }
    let now = SystemTime::now();
    let mut container_entries = entries(&root.join("containers"))?;
    container_entries.sort_by_key(|e| e.file_name());
    for entry in container_entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if container_ids.contains(name.as_str()) || mounted_under(&mounts, &path) {
            continue;
        }
        let young = entry
            .metadata()
            .and_then(|m| m.modified())
            .map(|t| now.duration_since(t).unwrap_or_default() < CONTAINER_GRACE)
            .unwrap_or(true);
        if young {
            continue;
        }
        problem(
            ProblemKind::Orphan,
            format!("container dir {}", path.display()),
            "no container record".into(),
            Some(path.clone()),
        );
        orphans.push(path);
    }

    if repair {
        for path in &orphans {
            remove(path)?;
        }
        removed.extend(orphans);
    }
    report.removed = removed;
    Ok(report)
}
