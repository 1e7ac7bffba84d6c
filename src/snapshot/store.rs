//! What both snapshotters share: records in the metadata database, the
//! directory `<root>/snapshots/<name>/<id>/` of each snapshot, the lock
//! that keeps `cleanup` away from work in flight, and `cleanup` itself.
//!
//! Transactions here check their preconditions before changing anything
//! and return a refusal as `Ok(Err(..))`, so a refused transaction commits
//! nothing.

use std::collections::HashSet;
use std::fs::{self, File};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use nix::fcntl::{Flock, FlockArg};
use rusqlite::Connection;

use super::{
    mount, tree, CleanupReport, Error, Filter, Info, Kind, Labels, Result, Usage, OWNER_LABEL,
};
use crate::metadata::{
    allocate_snapshot_id, commit_snapshot, delete_snapshot, events::action, insert_snapshot,
    record_event, set_snapshot_labels, snapshot_chain, snapshot_children, snapshot_record, Db,
    EventType, SnapshotRecord,
};

/// The `remove` event of snapshot `rec`, on the transaction deleting it.
fn record_removal(
    tx: &Connection,
    snapshotter: &str,
    rec: &SnapshotRecord,
) -> rusqlite::Result<()> {
    let attrs = Labels::from([
        ("snapshotter".to_string(), snapshotter.to_string()),
        ("kind".to_string(), rec.kind.as_str().to_string()),
    ]);
    record_event(tx, EventType::Snapshot, action::REMOVE, &rec.key, &attrs).map(drop)
}

/// Prefix of the overlay probe's scratch directories (see `overlay::probe`).
pub(super) const PROBE_PREFIX: &str = ".probe-";

/// The [`Snapshotter`](super::Snapshotter) methods every snapshotter
/// answers the same way from its [`Core`] (records, labels, commit,
/// removal, cleanup) or through its own `create`. Expanded inside each
/// `impl Snapshotter`, which then adds only what differs: mounts, lower
/// dirs and whiteout style. The type needs fields `core: Core` and a
/// `create(key, parent, kind, labels)` method.
macro_rules! delegate_to_core {
    () => {
        fn name(&self) -> &'static str {
            self.core.name()
        }

        fn stat(&self, key: &str) -> Result<Info> {
            self.core.record(key).map(super::store::info)
        }

        fn update(&self, key: &str, labels: &Labels) -> Result<Info> {
            self.core.update(key, labels)
        }

        fn usage(&self, key: &str) -> Result<Usage> {
            self.core.usage(key)
        }

        fn prepare(&self, key: &str, parent: Option<&str>, labels: &Labels) -> Result<Vec<Mount>> {
            self.create(key, parent, Kind::Active, labels)
        }

        fn view(&self, key: &str, parent: Option<&str>, labels: &Labels) -> Result<Vec<Mount>> {
            self.create(key, parent, Kind::View, labels)
        }

        fn commit(&self, name: &str, key: &str, labels: &Labels) -> Result<Info> {
            self.core.commit(name, key, labels)
        }

        fn remove(&self, key: &str) -> Result<()> {
            self.core.remove(key, &|_| Ok(None))
        }
        fn remove_unless(&self, key: &str, keep: &super::KeepCheck<'_>) -> Result<()> {
            self.core.remove(key, keep)
        }

        fn walk(&self, filter: &Filter) -> Result<Vec<Info>> {
            self.core.walk(filter)
        }

        fn upper_dir(&self, key: &str) -> Result<PathBuf> {
            Ok(self.core.fs_dir(self.core.active(key)?.id))
        }

        fn cleanup(&self) -> Result<CleanupReport> {
            self.core.cleanup()
        }
    };
}
pub(super) use delegate_to_core;

pub(super) struct Core {
    name: &'static str,
    /// `<root>/snapshots/<name>`.
    dir: PathBuf,
    db: Mutex<Db>,
}

/// A refusal inside a transaction: nothing was changed yet.
type Checked<T> = rusqlite::Result<Result<T>>;

impl Core {
    /// Opens (creating owner-only directories as needed) the records and
    /// directory of snapshotter `name` in the store at `root`.
    pub(super) fn open(root: &Path, name: &'static str) -> Result<Core> {
        let root = std::path::absolute(root).map_err(|source| Error::Io {
            action: "resolving store root",
            path: root.to_path_buf(),
            source,
        })?;
        if root.to_str().is_none() {
            return Err(Error::Unavailable {
                name: name.into(),
                reason: format!("store root {} is not valid UTF-8", root.display()),
            });
        }
        let dir = root.join("snapshots").join(name);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|source| Error::Io {
                action: "creating",
                path: dir.clone(),
                source,
            })?;
        let db = Db::open(&root)?;
        Ok(Core {
            name,
            dir,
            db: Mutex::new(db),
        })
    }

    pub(super) fn name(&self) -> &'static str {
        self.name
    }

    /// `<root>/snapshots/<name>/<id>`.
    pub(super) fn data_dir(&self, id: u64) -> PathBuf {
        self.dir.join(id.to_string())
    }

    /// The snapshot's tree: overlay's upper dir, native's whole copy.
    pub(super) fn fs_dir(&self, id: u64) -> PathBuf {
        self.data_dir(id).join("fs")
    }

    /// Overlay's workdir, on the same filesystem as `fs`.
    pub(super) fn work_dir(&self, id: u64) -> PathBuf {
        self.data_dir(id).join("work")
    }

    fn db(&self) -> MutexGuard<'_, Db> {
        // A panic elsewhere while holding the connection leaves no
        // transaction open (rusqlite rolls back on drop), so it is usable.
        self.db.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock(&self, arg: FlockArg) -> Result<Flock<File>> {
        let path = self.dir.join("lock");
        let io = |source| Error::Io {
            action: "locking",
            path: path.clone(),
            source,
        };
        crate::lockfile::lock(&path, arg).map_err(io)
    }

    fn not_found(&self, key: &str) -> Error {
        Error::NotFound {
            snapshotter: self.name.into(),
            key: key.into(),
        }
    }

    fn wrong_kind(&self, key: &str, what: String) -> Error {
        Error::WrongKind {
            snapshotter: self.name.into(),
            key: key.into(),
            what,
        }
    }

    pub(super) fn record(&self, key: &str) -> Result<SnapshotRecord> {
        self.db()
            .snapshot(self.name, key)?
            .ok_or_else(|| self.not_found(key))
    }

    /// Snapshot `key` followed by its parents, nearest first.
    pub(super) fn chain(&self, key: &str) -> Result<Vec<SnapshotRecord>> {
        let chain = self.db().read(|c| snapshot_chain(c, self.name, key))?;
        if chain.is_empty() {
            return Err(self.not_found(key));
        }
        Ok(chain)
    }

    /// The record of the active snapshot `key`, or why it is not one.
    pub(super) fn active(&self, key: &str) -> Result<SnapshotRecord> {
        let rec = self.record(key)?;
        if rec.kind != Kind::Active {
            return Err(self.wrong_kind(
                key,
                format!("is {}, not an active snapshot", article(rec.kind)),
            ));
        }
        Ok(rec)
    }

    /// Key free, parent committed: the parent's record.
    fn check_new(
        &self,
        conn: &Connection,
        key: &str,
        parent: Option<&str>,
    ) -> Checked<Option<SnapshotRecord>> {
        if snapshot_record(conn, self.name, key)?.is_some() {
            return Ok(Err(Error::AlreadyExists {
                snapshotter: self.name.into(),
                key: key.into(),
            }));
        }
        let Some(parent) = parent else {
            return Ok(Ok(None));
        };
        Ok(match snapshot_record(conn, self.name, parent)? {
            None => Err(self.not_found(parent)),
            Some(p) if p.kind != Kind::Committed => Err(self.wrong_kind(
                parent,
                format!(
                    "is {}; only a committed snapshot can be a parent",
                    article(p.kind)
                ),
            )),
            Some(p) => Ok(Some(p)),
        })
    }

    /// Creates snapshot `key`: takes an id, makes `<id>/fs` (and `<id>/work`
    /// with `work`), lets `populate` fill `fs` from the parent's `fs`, and
    /// only then inserts the record. Any failure removes the directory.
    pub(super) fn create(
        &self,
        key: &str,
        parent: Option<&str>,
        kind: Kind,
        labels: &Labels,
        work: bool,
        populate: impl FnOnce(&Path, Option<&Path>) -> Result<()>,
    ) -> Result<SnapshotRecord> {
        check_key(key)?;
        let _lock = self.lock(FlockArg::LockShared)?;
        let (id, parent_rec) = self.db().write(|tx| {
            Ok(match self.check_new(tx, key, parent)? {
                Err(e) => Err(e),
                Ok(p) => Ok((allocate_snapshot_id(tx, self.name)?, p)),
            })
        })??;
        let data = self.data_dir(id);
        let build = || -> Result<SnapshotRecord> {
            let mkdir = |path: &Path, mode: u32| {
                fs::DirBuilder::new()
                    .mode(mode)
                    .create(path)
                    .map_err(|source| Error::Io {
                        action: "creating",
                        path: path.to_path_buf(),
                        source,
                    })
            };
            mkdir(&data, 0o700)?;
            let fs_dir = self.fs_dir(id);
            mkdir(&fs_dir, 0o755)?;
            if work {
                mkdir(&self.work_dir(id), 0o700)?;
            }
            let parent_fs = parent_rec.as_ref().map(|p| self.fs_dir(p.id));
            populate(&fs_dir, parent_fs.as_deref())?;
            let rec = SnapshotRecord {
                snapshotter: self.name.into(),
                key: key.into(),
                id,
                parent: parent.map(str::to_string),
                kind,
                labels: labels.clone(),
                created_ns: 0,
                updated_ns: 0,
                usage: None,
            };
            self.db().write(|tx| {
                Ok(match self.check_new(tx, key, parent)? {
                    Err(e) => Err(e),
                    // Removed and made again meanwhile: we copied the old one.
                    Ok(p) if p.as_ref().map(|p| p.id) != parent_rec.as_ref().map(|p| p.id) => {
                        Err(self.not_found(parent.unwrap_or_default()))
                    }
                    Ok(_) => {
                        insert_snapshot(tx, &rec)?;
                        snapshot_record(tx, self.name, key)?.ok_or_else(|| self.not_found(key))
                    }
                })
            })?
        };
        let result = build();
        if result.is_err() {
            let _ = tree::remove_tree(&data);
        }
        result
    }

    pub(super) fn commit(&self, name: &str, key: &str, labels: &Labels) -> Result<Info> {
        check_key(name)?;
        let rec = self.record(key)?;
        if rec.kind != Kind::Active {
            return Err(self.wrong_kind(
                key,
                format!(
                    "is {}; only an active snapshot can be committed",
                    article(rec.kind)
                ),
            ));
        }
        let usage = tree::disk_usage(&self.fs_dir(rec.id))?;
        let committed = self.db().write(|tx| {
            match snapshot_record(tx, self.name, key)? {
                Some(now) if now.id == rec.id && now.kind == Kind::Active => {}
                _ => return Ok(Err(self.not_found(key))),
            }
            if name != key && snapshot_record(tx, self.name, name)?.is_some() {
                return Ok(Err(Error::AlreadyExists {
                    snapshotter: self.name.into(),
                    key: name.into(),
                }));
            }
            commit_snapshot(tx, self.name, key, name, labels, usage)?;
            let mut attrs = Labels::from([
                ("snapshotter".to_string(), self.name.to_string()),
                ("key".to_string(), key.to_string()),
            ]);
            if let Some(p) = &rec.parent {
                attrs.insert("parent".into(), p.clone());
            }
            record_event(tx, EventType::Snapshot, action::COMMIT, name, &attrs)?;
            Ok(snapshot_record(tx, self.name, name)?.ok_or_else(|| self.not_found(name)))
        })??;
        Ok(info(committed))
    }

    pub(super) fn update(&self, key: &str, labels: &Labels) -> Result<Info> {
        let rec = self.db().write(|tx| {
            let Some(rec) = snapshot_record(tx, self.name, key)? else {
                return Ok(Err(self.not_found(key)));
            };
            let mut merged = rec.labels;
            for (k, v) in labels {
                if v.is_empty() {
                    merged.remove(k);
                } else {
                    merged.insert(k.clone(), v.clone());
                }
            }
            set_snapshot_labels(tx, self.name, key, &merged)?;
            Ok(snapshot_record(tx, self.name, key)?.ok_or_else(|| self.not_found(key)))
        })??;
        Ok(info(rec))
    }

    pub(super) fn remove(&self, key: &str, keep: &super::KeepCheck<'_>) -> Result<()> {
        let _lock = self.lock(FlockArg::LockShared)?;
        let rec = self.record(key)?;
        let has_children = |conn: &Connection| -> Checked<()> {
            let children = snapshot_children(conn, self.name, key)?;
            Ok(if children.is_empty() {
                Ok(())
            } else {
                Err(Error::HasChildren {
                    snapshotter: self.name.into(),
                    key: key.into(),
                    children,
                })
            })
        };
        self.db().read(has_children)??;
        let data = self.data_dir(rec.id);
        if let Some(mountpoint) = self.mounted(&data)? {
            return Err(Error::InUse {
                snapshotter: self.name.into(),
                key: key.into(),
                mountpoint,
            });
        }
        self.db().write(|tx| {
            match snapshot_record(tx, self.name, key)? {
                Some(now) if now.id == rec.id => {}
                _ => return Ok(Err(self.not_found(key))),
            }
            if let Err(e) = has_children(tx)? {
                return Ok(Err(e));
            }
            if let Some(reason) = keep(tx)? {
                return Ok(Err(Error::Kept {
                    snapshotter: self.name.into(),
                    key: key.into(),
                    reason,
                }));
            }
            delete_snapshot(tx, self.name, key)?;
            record_removal(tx, self.name, &rec)?;
            Ok(Ok(()))
        })??;
        // The record is gone; if this fails, `cleanup` finds an orphan.
        tree::remove_tree(&data)
    }

    pub(super) fn walk(&self, filter: &Filter) -> Result<Vec<Info>> {
        Ok(self
            .db()
            .snapshots(self.name)?
            .into_iter()
            .map(info)
            .filter(|i| filter.matches(i))
            .collect())
    }

    pub(super) fn usage(&self, key: &str) -> Result<Usage> {
        let rec = self.record(key)?;
        match rec.usage {
            Some(usage) if rec.kind == Kind::Committed => Ok(usage),
            _ => tree::disk_usage(&self.fs_dir(rec.id)),
        }
    }

    fn mounted(&self, data: &Path) -> Result<Option<PathBuf>> {
        mount::mounted_using(data).map_err(|source| Error::Io {
            action: "reading",
            path: "/proc/self/mountinfo".into(),
            source,
        })
    }

    pub(super) fn cleanup(&self) -> Result<CleanupReport> {
        let _lock = self.lock(FlockArg::LockExclusive)?;
        let mut report = CleanupReport::default();
        let boot = boot_id();
        // Bound first: a guard in the `for` expression would live for the
        // whole loop, and the loop locks the connection again.
        let records = self.db().snapshots(self.name)?;
        for rec in records {
            if rec.kind == Kind::Committed {
                continue;
            }
            let data = self.data_dir(rec.id);
            let missing = fs::symlink_metadata(&data).is_err();
            let abandoned = rec
                .labels
                .get(OWNER_LABEL)
                .is_some_and(|owner| owner_gone(owner, boot.as_deref()));
            if !(missing || abandoned) || self.mounted(&data)?.is_some() {
                continue;
            }
            let removed = self.db().write(|tx| {
                let same =
                    snapshot_record(tx, self.name, &rec.key)?.is_some_and(|n| n.id == rec.id);
                if !same || !snapshot_children(tx, self.name, &rec.key)?.is_empty() {
                    return Ok(false);
                }
                delete_snapshot(tx, self.name, &rec.key)?;
                record_removal(tx, self.name, &rec)?;
                Ok(true)
            })?;
            if removed {
                tree::remove_tree(&data)?;
                report.stale_snapshots.push(rec.key);
            }
        }
        // No prepare or remove is in flight (we hold the lock exclusively),
        // so a numbered directory without a record is debris.
        let ids: HashSet<u64> = self
            .db()
            .snapshots(self.name)?
            .iter()
            .map(|r| r.id)
            .collect();
        let entries = fs::read_dir(&self.dir).map_err(|source| Error::Io {
            action: "listing",
            path: self.dir.clone(),
            source,
        })?;
        for entry in entries.flatten() {
            let file_name = entry.file_name();
            let Some(name) = file_name.to_str() else {
                continue;
            };
            let path = entry.path();
            if let Ok(id) = name.parse::<u64>() {
                if ids.contains(&id) || self.mounted(&path)?.is_some() {
                    continue;
                }
            } else if abandoned_probe(name) {
                // Maybe killed between its mount and its unmount.
                let _ = nix::mount::umount2(&path.join("merged"), nix::mount::MntFlags::MNT_DETACH);
            } else {
                continue;
            }
            tree::remove_tree(&path)?;
            report.orphan_dirs.push(path);
        }
        Ok(report)
    }
}

/// A scratch directory `.probe-<pid>-<nanos>` of an overlay probe whose
/// process is gone.
fn abandoned_probe(name: &str) -> bool {
    name.strip_prefix(PROBE_PREFIX)
        .and_then(|rest| rest.split('-').next())
        .and_then(|pid| pid.parse::<u32>().ok())
        .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
}

pub(super) fn info(rec: SnapshotRecord) -> Info {
    Info {
        key: rec.key,
        parent: rec.parent,
        kind: rec.kind,
        labels: rec.labels,
        created_ns: rec.created_ns,
        updated_ns: rec.updated_ns,
        id: rec.id,
    }
}

fn article(kind: Kind) -> String {
    match kind {
        Kind::Active => "an active snapshot".into(),
        Kind::View => "a view".into(),
        Kind::Committed => "a committed snapshot".into(),
    }
}

pub(super) fn check_key(key: &str) -> Result<()> {
    let reason = if key.is_empty() {
        "must not be empty"
    } else if key.contains('\0') {
        "must not contain a NUL byte"
    } else {
        return Ok(());
    };
    Err(Error::InvalidKey {
        key: key.into(),
        reason: reason.into(),
    })
}

fn boot_id() -> Option<String> {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
}

/// `<boot id>:<pid>:<start time>` of process `pid`, if it exists.
pub(super) fn owner_of(pid: u32) -> Option<String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses; fields
    // after its closing parenthesis start at field 3, the state.
    let rest = &stat[stat.rfind(')')? + 1..];
    let start = rest.split_whitespace().nth(22 - 3)?;
    Some(format!("{}:{pid}:{start}", boot_id()?))
}

/// [`owner_gone`] with this boot's id.
pub(super) fn owner_gone_now(owner: &str) -> bool {
    owner_gone(owner, boot_id().as_deref())
}

/// Whether the process an [`OWNER_LABEL`] value names is gone. A value we
/// cannot read is taken as alive: cleanup only deletes what it is sure of.
fn owner_gone(owner: &str, boot: Option<&str>) -> bool {
    let mut parts = owner.rsplitn(3, ':');
    let (Some(_start), Some(pid), Some(owner_boot)) = (parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let Ok(pid) = pid.parse::<u32>() else {
        return false;
    };
    match boot {
        Some(boot) if boot != owner_boot => true,
        _ => owner_of(pid).as_deref() != Some(owner),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_live_and_die() {
        let me = super::super::process_owner();
        assert!(me.contains(&format!(":{}:", std::process::id())), "{me}");
        let boot = boot_id();
        assert!(!owner_gone(&me, boot.as_deref()));
        let other_boot = me.replacen(boot.as_deref().unwrap(), "x", 1);
        assert!(owner_gone(&other_boot, boot.as_deref()));
        // Same pid, another start time: a reused pid.
        let (head, _) = me.rsplit_once(':').unwrap();
        assert!(owner_gone(&format!("{head}:1"), boot.as_deref()));
        assert!(!owner_gone("garbage", boot.as_deref()));
    }

    #[test]
    fn keys_must_be_text() {
        assert!(check_key("a").is_ok());
        assert!(check_key("").is_err());
        assert!(check_key("a\0b").is_err());
    }
}
