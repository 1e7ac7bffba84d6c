//! Snapshot records: one row per snapshot of every snapshotter, keyed by
//! (snapshotter, key). The rules of the snapshot lifecycle (a parent must be
//! committed, a parent with children stays) are checked by
//! `crate::snapshot`, inside the transaction that changes the rows; these
//! functions only read and write rows, so they compose into one
//! transaction.

use rusqlite::{params, Connection, OptionalExtension};

use super::{labels_from_json, labels_to_json, now_ns, Db, Error, Labels, Result};
use crate::snapshot::{Kind, Usage};

/// One snapshot as the database stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRecord {
    /// The snapshotter plugin id (`overlayfs`, `native`) owning it.
    pub snapshotter: String,
    pub key: String,
    /// Short number naming its directory, unique within the snapshotter
    /// and never reused.
    pub id: u64,
    /// The committed snapshot it is based on.
    pub parent: Option<String>,
    pub kind: Kind,
    pub labels: Labels,
    pub created_ns: i64,
    pub updated_ns: i64,
    /// Disk usage measured when it was committed; `None` before.
    pub usage: Option<Usage>,
}

const COLUMNS: &str =
    "snapshotter, key, id, parent, kind, labels, created_ns, updated_ns, size, inodes";

fn corrupt(column: usize, what: &str, reason: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        column,
        rusqlite::types::Type::Text,
        Box::new(Error::Corrupt {
            what: what.to_string(),
            reason,
        }),
    )
}

fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<SnapshotRecord> {
    let snapshotter: String = row.get(0)?;
    let key: String = row.get(1)?;
    let what = format!("snapshot {snapshotter}/{key}");
    let kind: String = row.get(4)?;
    let kind = kind
        .parse::<Kind>()
        .map_err(|e| corrupt(4, &what, e.to_string()))?;
    let labels: String = row.get(5)?;
    let labels = labels_from_json(&what, &labels).map_err(|e| corrupt(5, &what, e.to_string()))?;
    let size: Option<i64> = row.get(8)?;
    let inodes: Option<i64> = row.get(9)?;
    Ok(SnapshotRecord {
        id: row.get::<_, i64>(2)? as u64,
        parent: row.get(3)?,
        kind,
        labels,
        created_ns: row.get(6)?,
        updated_ns: row.get(7)?,
        usage: size.zip(inodes).map(|(size, inodes)| Usage {
            size: size as u64,
            inodes: inodes as u64,
        }),
        snapshotter,
        key,
    })
}

/// The snapshot `key` of `snapshotter`, if it exists.
pub fn snapshot_record(
    conn: &Connection,
    snapshotter: &str,
    key: &str,
) -> rusqlite::Result<Option<SnapshotRecord>> {
    conn.query_row(
        &format!("SELECT {COLUMNS} FROM snapshots WHERE snapshotter = ?1 AND key = ?2"),
        params![snapshotter, key],
        from_row,
    )
    .optional()
}

/// Every snapshot of `snapshotter`, oldest (lowest id) first.
pub fn snapshot_records(
    conn: &Connection,
    snapshotter: &str,
) -> rusqlite::Result<Vec<SnapshotRecord>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM snapshots WHERE snapshotter = ?1 ORDER BY id"
    ))?;
    let rows = stmt.query_map([snapshotter], from_row)?;
    rows.collect()
}

/// The snapshot `key` followed by its parent, grandparent, … up to the
/// base, read in one statement so the chain is consistent. Empty when
/// `key` does not exist.
pub fn snapshot_chain(
    conn: &Connection,
    snapshotter: &str,
    key: &str,
) -> rusqlite::Result<Vec<SnapshotRecord>> {
    let columns = COLUMNS
        .split(", ")
        .map(|c| format!("s.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut stmt = conn.prepare(&format!(
        "WITH RECURSIVE chain(key, depth) AS (
             SELECT ?2, 0
             UNION ALL
             SELECT s.parent, chain.depth + 1 FROM snapshots s JOIN chain
                 ON s.snapshotter = ?1 AND s.key = chain.key
             WHERE s.parent IS NOT NULL AND chain.depth < 100000
         )
         SELECT {columns} FROM chain JOIN snapshots s
             ON s.snapshotter = ?1 AND s.key = chain.key
         ORDER BY chain.depth"
    ))?;
    let rows = stmt.query_map(params![snapshotter, key], from_row)?;
    rows.collect()
}

/// Keys of the snapshots whose parent is `key`.
pub fn snapshot_children(
    conn: &Connection,
    snapshotter: &str,
    key: &str,
) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn
        .prepare("SELECT key FROM snapshots WHERE snapshotter = ?1 AND parent = ?2 ORDER BY key")?;
    let rows = stmt.query_map(params![snapshotter, key], |r| r.get(0))?;
    rows.collect()
}

/// Takes the next id of `snapshotter`'s counter: 1, 2, 3, … Ids are never
/// handed out twice, even after the snapshot holding one is removed.
pub fn allocate_snapshot_id(conn: &Connection, snapshotter: &str) -> rusqlite::Result<u64> {
    conn.query_row(
        "INSERT INTO snapshot_ids (snapshotter, last_id) VALUES (?1, 1)
         ON CONFLICT(snapshotter) DO UPDATE SET last_id = last_id + 1
         RETURNING last_id",
        [snapshotter],
        |r| r.get::<_, i64>(0),
    )
    .map(|id| id as u64)
}

/// Inserts `rec`, stamping its creation and update times with now.
pub fn insert_snapshot(conn: &Connection, rec: &SnapshotRecord) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO snapshots (snapshotter, key, id, parent, kind, labels, created_ns,
                                updated_ns, size, inodes)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8, ?9)",
        params![
            rec.snapshotter,
            rec.key,
            rec.id as i64,
            rec.parent,
            rec.kind.as_str(),
            labels_to_json(&rec.labels),
            now_ns(),
            rec.usage.map(|u| u.size as i64),
            rec.usage.map(|u| u.inodes as i64),
        ],
    )?;
    Ok(())
}

/// Turns snapshot `key` into the committed snapshot `name` with `labels`
/// and its measured `usage`. Returns the number of rows changed (0 or 1).
pub fn commit_snapshot(
    conn: &Connection,
    snapshotter: &str,
    key: &str,
    name: &str,
    labels: &Labels,
    usage: Usage,
) -> rusqlite::Result<usize> {
    conn.execute(
        "UPDATE snapshots SET key = ?3, kind = 'committed', labels = ?4, updated_ns = ?5,
                              size = ?6, inodes = ?7
         WHERE snapshotter = ?1 AND key = ?2",
        params![
            snapshotter,
            key,
            name,
            labels_to_json(labels),
            now_ns(),
            usage.size as i64,
            usage.inodes as i64
        ],
    )
}

/// Replaces the labels of snapshot `key`. Returns the rows changed.
pub fn set_snapshot_labels(
    conn: &Connection,
    snapshotter: &str,
    key: &str,
    labels: &Labels,
) -> rusqlite::Result<usize> {
    conn.execute(
        "UPDATE snapshots SET labels = ?3, updated_ns = ?4 WHERE snapshotter = ?1 AND key = ?2",
        params![snapshotter, key, labels_to_json(labels), now_ns()],
    )
}

/// Deletes snapshot `key`. Returns the rows changed. SQLite refuses (a
/// foreign key error) while another snapshot names it as parent.
pub fn delete_snapshot(conn: &Connection, snapshotter: &str, key: &str) -> rusqlite::Result<usize> {
    conn.execute(
        "DELETE FROM snapshots WHERE snapshotter = ?1 AND key = ?2",
        params![snapshotter, key],
    )
}

impl Db {
    /// The snapshot `key` of `snapshotter`, if it exists.
    pub fn snapshot(&self, snapshotter: &str, key: &str) -> Result<Option<SnapshotRecord>> {
        self.read(|c| snapshot_record(c, snapshotter, key))
    }

    /// Every snapshot of `snapshotter`, oldest first.
    pub fn snapshots(&self, snapshotter: &str) -> Result<Vec<SnapshotRecord>> {
        self.read(|c| snapshot_records(c, snapshotter))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: &str, id: u64, parent: Option<&str>, kind: Kind) -> SnapshotRecord {
        SnapshotRecord {
            snapshotter: "native".into(),
            key: key.into(),
            id,
            parent: parent.map(str::to_string),
            kind,
            labels: Labels::from([("a".to_string(), "b".to_string())]),
            created_ns: 0,
            updated_ns: 0,
            usage: None,
        }
    }

    #[test]
    fn ids_count_per_snapshotter_and_never_repeat() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = Db::open(dir.path()).unwrap();
        let next = |db: &mut Db, s: &str| db.write(|tx| allocate_snapshot_id(tx, s)).unwrap();
        assert_eq!(next(&mut db, "native"), 1);
        assert_eq!(next(&mut db, "native"), 2);
        assert_eq!(next(&mut db, "overlayfs"), 1);
        assert_eq!(next(&mut db, "native"), 3);
    }

    #[test]
    fn chain_commit_and_parent_protection() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = Db::open(dir.path()).unwrap();
        db.write(|tx| {
            insert_snapshot(tx, &record("base", 1, None, Kind::Committed))?;
            insert_snapshot(tx, &record("mid", 2, Some("base"), Kind::Committed))?;
            insert_snapshot(tx, &record("work", 3, Some("mid"), Kind::Active))
        })
        .unwrap();
        let chain = db.read(|c| snapshot_chain(c, "native", "work")).unwrap();
        let keys: Vec<&str> = chain.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(keys, ["work", "mid", "base"]);
        assert_eq!(chain[0].labels["a"], "b");
        assert!(db
            .read(|c| snapshot_chain(c, "overlayfs", "work"))
            .unwrap()
            .is_empty());

        // The foreign key refuses to drop a parent.
        assert!(db.write(|tx| delete_snapshot(tx, "native", "mid")).is_err());
        let usage = Usage {
            size: 10,
            inodes: 2,
        };
        let n = db
            .write(|tx| commit_snapshot(tx, "native", "work", "top", &Labels::new(), usage))
            .unwrap();
        assert_eq!(n, 1);
        let top = db.snapshot("native", "top").unwrap().unwrap();
        assert_eq!(
            (top.kind, top.id, top.usage),
            (Kind::Committed, 3, Some(usage))
        );
        assert!(top.labels.is_empty());
        assert_eq!(
            db.read(|c| snapshot_children(c, "native", "mid")).unwrap(),
            ["top"]
        );
        assert_eq!(db.snapshots("native").unwrap().len(), 3);
    }
}
