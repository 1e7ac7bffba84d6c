use rusqlite::TransactionBehavior;

use super::{Db, Error, Result};

/// Forward migrations, applied in order. Entry `i` takes the schema from
/// version `i` to `i + 1`. Never edit a released entry: append a new one.
const MIGRATIONS: &[&str] = &[
    // 1: images, content and leases.
    r#"
    CREATE TABLE images (
        name        TEXT PRIMARY KEY,
        media_type  TEXT NOT NULL,
        digest      TEXT NOT NULL,
        size        INTEGER NOT NULL,
        labels      TEXT NOT NULL DEFAULT '{}',
        created_ns  INTEGER NOT NULL,
        updated_ns  INTEGER NOT NULL
    );
    CREATE INDEX images_digest ON images(digest);
    CREATE TABLE content (
        digest      TEXT PRIMARY KEY,
        size        INTEGER NOT NULL,
        media_type  TEXT,
        labels      TEXT NOT NULL DEFAULT '{}',
        created_ns  INTEGER NOT NULL,
        updated_ns  INTEGER NOT NULL
    );
    CREATE TABLE leases (
        id          TEXT PRIMARY KEY,
        labels      TEXT NOT NULL DEFAULT '{}',
        created_ns  INTEGER NOT NULL,
        expires_ns  INTEGER
    );
    CREATE TABLE lease_resources (
        lease_id    TEXT NOT NULL REFERENCES leases(id) ON DELETE CASCADE,
        kind        TEXT NOT NULL,
        key         TEXT NOT NULL,
        PRIMARY KEY (lease_id, kind, key)
    );
    "#,
    // 2: snapshots of every snapshotter, and each snapshotter's id counter.
    // A snapshot's data lives in <root>/snapshots/<snapshotter>/<id>/; ids
    // are short numbers that are never reused, so a directory left by a
    // crashed process can never be mistaken for a newer snapshot's. The
    // foreign key makes SQLite itself refuse to drop a parent with children.
    r#"
    CREATE TABLE snapshots (
        snapshotter TEXT NOT NULL,
        key         TEXT NOT NULL,
        id          INTEGER NOT NULL,
        parent      TEXT,
        kind        TEXT NOT NULL CHECK (kind IN ('active', 'view', 'committed')),
        labels      TEXT NOT NULL DEFAULT '{}',
        created_ns  INTEGER NOT NULL,
        updated_ns  INTEGER NOT NULL,
        size        INTEGER,
        inodes      INTEGER,
        PRIMARY KEY (snapshotter, key),
        UNIQUE (snapshotter, id),
        FOREIGN KEY (snapshotter, parent) REFERENCES snapshots (snapshotter, key)
    );
    CREATE INDEX snapshots_parent ON snapshots(snapshotter, parent);
    CREATE TABLE snapshot_ids (
        snapshotter TEXT PRIMARY KEY,
        last_id     INTEGER NOT NULL
    );
    "#,
    // 3: containers. Pids come with their start times (clock ticks since
    // boot, /proc/<pid>/stat field 22) so a reader can tell a live
    // supervisor from a recycled pid; `command` and `labels` are JSON.
    r#"
    CREATE TABLE containers (
        id                TEXT PRIMARY KEY,
        name              TEXT NOT NULL UNIQUE,
        image             TEXT NOT NULL,
        image_digest      TEXT,
        snapshotter       TEXT NOT NULL,
        snapshot_key      TEXT NOT NULL,
        runtime           TEXT NOT NULL,
        spec              TEXT NOT NULL,
        command           TEXT NOT NULL DEFAULT '[]',
        status            TEXT NOT NULL CHECK (status IN ('created', 'running', 'stopped')),
        pid               INTEGER,
        pid_start         INTEGER,
        supervisor_pid    INTEGER,
        supervisor_start  INTEGER,
        exit_code         INTEGER,
        oom_killed        INTEGER NOT NULL DEFAULT 0,
        created_ns        INTEGER NOT NULL,
        started_ns        INTEGER,
        finished_ns       INTEGER,
        labels            TEXT NOT NULL DEFAULT '{}',
        auto_remove       INTEGER NOT NULL DEFAULT 0,
        cgroup_path       TEXT,
        log_path          TEXT
    );
    "#,
    // 4: a container's spec (its config.json, kilobytes each) moves to a
    // table of its own, so reading the containers table for a listing of
    // thousands does not wade through them.
    r#"
    CREATE TABLE container_specs (
        id   TEXT PRIMARY KEY REFERENCES containers (id) ON DELETE CASCADE,
        spec TEXT NOT NULL
    );
    INSERT INTO container_specs (id, spec) SELECT id, spec FROM containers;
    ALTER TABLE containers DROP COLUMN spec;
    "#,
    // 5: the event log (see `metadata::events`). AUTOINCREMENT so an id is
    // never handed out twice, even after the newest rows were deleted: a
    // follower reads `id > last seen`. The time index serves --since and
    // pruning by age.
    r#"
    CREATE TABLE events (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        time_ns     INTEGER NOT NULL,
        type        TEXT NOT NULL
                    CHECK (type IN ('image', 'snapshot', 'container', 'content')),
        action      TEXT NOT NULL,
        subject     TEXT NOT NULL,
        attributes  TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX events_time ON events(time_ns);
    "#,
];

pub(super) const VERSION: i64 = MIGRATIONS.len() as i64;

pub(super) fn migrate(db: &mut Db) -> Result<()> {
    let path = db.path.clone();
    let ctx = |source| Error::Sqlite {
        path: path.clone(),
        source,
    };
    // Cheap check first so the common case takes no write lock.
    let found: i64 = db
        .conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(ctx)?;
    if found == VERSION {
        return Ok(());
    }
    let tx = db
        .conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(ctx)?;
    // Re-read under the lock: another process may have migrated meanwhile.
    let found: i64 = tx
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(ctx)?;
    if found > VERSION {
        return Err(Error::TooNew {
            path: path.clone(),
            found,
            known: VERSION,
        });
    }
    for step in &MIGRATIONS[found as usize..] {
        tx.execute_batch(step).map_err(ctx)?;
    }
    tx.pragma_update(None, "user_version", VERSION)
        .map_err(ctx)?;
    tx.commit().map_err(ctx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_store_gets_current_version_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap();
        let v: i64 = db
            .read(|c| c.pragma_query_value(None, "user_version", |r| r.get(0)))
            .unwrap();
        assert_eq!(v, VERSION);
        drop(db);
        Db::open(dir.path()).unwrap();
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap();
        db.read(|c| c.pragma_update(None, "user_version", VERSION + 1))
            .unwrap();
        drop(db);
        let err = Db::open(dir.path()).unwrap_err();
        assert!(matches!(err, Error::TooNew { .. }), "{err}");
    }

    #[test]
    fn store_at_version_2_migrates_keeping_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        {
            let conn = rusqlite::Connection::open(dir.path().join("meta.db")).unwrap();
            for step in &MIGRATIONS[..2] {
                conn.execute_batch(step).unwrap();
            }
            conn.execute(
                "INSERT INTO images (name, media_type, digest, size, created_ns, updated_ns)
                 VALUES ('a:1', 'm', 'sha256:00', 1, 0, 0)",
                [],
            )
            .unwrap();
            conn.pragma_update(None, "user_version", 2).unwrap();
        }
        let db = Db::open(dir.path()).unwrap();
        let (v, images, containers): (i64, i64, i64) = db
            .read(|c| {
                Ok((
                    c.pragma_query_value(None, "user_version", |r| r.get(0))?,
                    c.query_row("SELECT count(*) FROM images", [], |r| r.get(0))?,
                    c.query_row("SELECT count(*) FROM containers", [], |r| r.get(0))?,
                ))
            })
            .unwrap();
        assert_eq!((v, images, containers), (VERSION, 1, 0));
    }

    #[test]
    fn store_at_version_3_keeps_container_specs() {
        let dir = tempfile::tempdir().unwrap();
        {
            let conn = rusqlite::Connection::open(dir.path().join("meta.db")).unwrap();
            for step in &MIGRATIONS[..3] {
                conn.execute_batch(step).unwrap();
            }
            conn.execute(
                "INSERT INTO containers (id, name, image, snapshotter, snapshot_key, runtime,
                     spec, status, created_ns)
                 VALUES ('c1', 'one', 'img', 'overlayfs', 'container-c1', 'berth',
                     '{\"ociVersion\":\"1.0.2\"}', 'stopped', 7)",
                [],
            )
            .unwrap();
            conn.pragma_update(None, "user_version", 3).unwrap();
        }
        let db = Db::open(dir.path()).unwrap();
        let c = db.container("one").unwrap();
        assert_eq!(c.spec, "{\"ociVersion\":\"1.0.2\"}");
        assert_eq!(c.created_ns, 7);
    }

    #[test]
    fn store_at_version_4_gets_an_empty_event_log() {
        let dir = tempfile::tempdir().unwrap();
        {
            let conn = rusqlite::Connection::open(dir.path().join("meta.db")).unwrap();
            for step in &MIGRATIONS[..4] {
                conn.execute_batch(step).unwrap();
            }
            conn.execute(
                "INSERT INTO images (name, media_type, digest, size, created_ns, updated_ns)
                 VALUES ('a:1', 'm', 'sha256:00', 1, 0, 0)",
                [],
            )
            .unwrap();
            conn.pragma_update(None, "user_version", 4).unwrap();
        }
        let mut db = Db::open(dir.path()).unwrap();
        let (v, images, events): (i64, i64, i64) = db
            .read(|c| {
                Ok((
                    c.pragma_query_value(None, "user_version", |r| r.get(0))?,
                    c.query_row("SELECT count(*) FROM images", [], |r| r.get(0))?,
                    c.query_row("SELECT count(*) FROM events", [], |r| r.get(0))?,
                ))
            })
            .unwrap();
        assert_eq!((v, images, events), (5, 1, 0));
        assert_eq!(VERSION, 5);
        // The table takes events, and its CHECK refuses an unknown type.
        let id = db
            .record_event(
                super::super::EventType::Image,
                "pull",
                "a:1",
                &Default::default(),
            )
            .unwrap();
        assert_eq!(id, 1);
        let bad = db.write(|tx| {
            tx.execute(
                "INSERT INTO events (time_ns, type, action, subject) VALUES (0, 'x', 'y', 'z')",
                [],
            )
        });
        assert!(bad.is_err());
    }

    #[test]
    fn concurrent_first_opens_agree() {
        let dir = tempfile::tempdir().unwrap();
        std::thread::scope(|s| {
            for _ in 0..6 {
                s.spawn(|| Db::open(dir.path()).unwrap());
            }
        });
        Db::open(dir.path()).unwrap();
    }
}
