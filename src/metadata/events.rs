//! The event log: one row per change to an image, snapshot, container or
//! blob, in the `events` table (migration 5).
//!
//! Lifecycle and guarantees:
//! - Whoever makes a change records its event with [`record_event`] on the
//!   *same* transaction that makes it, so a process killed at any instant
//!   leaves both or neither. Events that change no record (a signal sent, an
//!   OOM kill seen while a container runs, an image pushed) get a short
//!   transaction of their own.
//! - Ids come from `AUTOINCREMENT`: increasing, never reused, and, because
//!   every write is one `BEGIN IMMEDIATE` transaction, committed in id
//!   order. A follower that remembers the last id it printed and reads
//!   `id > last` therefore misses nothing and sees nothing twice.
//! - Old rows are pruned on insert, every [`PRUNE_EVERY`]th event, to the
//!   process's [`Retention`] (newest `max_events` rows, none older than
//!   `max_age`), and by `berth-rm --prune`. Pruning on insert keeps the
//!   table bounded without a daemon or anyone remembering to prune; doing it
//!   only every few hundred inserts keeps the cost of one insert flat (one
//!   indexed range delete, amortised).

use std::sync::OnceLock;
use std::time::Duration;

use rusqlite::{params, Connection};
use serde::Serialize;

use super::{labels_from_json, labels_to_json, now_ns, ContainerRecord, Db, Labels, Result};

/// What an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    Image,
    Snapshot,
    Container,
    Content,
}

impl EventType {
    pub const ALL: [EventType; 4] = [
        EventType::Image,
        EventType::Snapshot,
        EventType::Container,
        EventType::Content,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Image => "image",
            EventType::Snapshot => "snapshot",
            EventType::Container => "container",
            EventType::Content => "content",
        }
    }

    pub fn parse(s: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The actions berth records, by type. Containers: `create`, `start`,
/// `oom` (the kernel's OOM killer struck inside it), `kill` (a signal sent
/// by berth-kill or berth-rm -f), `die` (its init ended; `exitCode`),
/// `remove`. Images: `pull`, `import`, `tag`, `push`, `remove`.
/// Snapshots: `commit`, `remove`. Content: `remove`.
pub mod action {
    pub const CREATE: &str = "create";
    pub const START: &str = "start";
    pub const OOM: &str = "oom";
    pub const KILL: &str = "kill";
    pub const DIE: &str = "die";
    pub const REMOVE: &str = "remove";
    pub const PULL: &str = "pull";
    pub const IMPORT: &str = "import";
    pub const TAG: &str = "tag";
    pub const PUSH: &str = "push";
    pub const COMMIT: &str = "commit";
}

/// One recorded event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Increasing, never reused (see the module doc).
    pub id: i64,
    /// When it was recorded: nanoseconds since the epoch.
    pub time_ns: i64,
    pub kind: EventType,
    pub action: String,
    /// The container id, image name, snapshot key or digest.
    pub subject: String,
    /// Details: `name`, `image`, `exitCode`, `signal`, `snapshotter`, …
    pub attributes: Labels,
}

/// How many events to keep. Zero disables a bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub max_events: u64,
    pub max_age: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            max_events: 100_000,
            max_age: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// Pruning runs on every insert whose id is a multiple of this.
pub const PRUNE_EVERY: i64 = 256;

static RETENTION: OnceLock<Retention> = OnceLock::new();

/// Sets the retention this process prunes to on insert (from the config
/// file's `[events]` table). The first call wins; without one the
/// [`Retention::default`] applies.
pub fn set_retention(r: Retention) {
    let _ = RETENTION.set(r);
}

/// The retention this process prunes to.
pub fn retention() -> Retention {
    RETENTION.get().copied().unwrap_or_default()
}

/// Records an event on `conn` (the caller's transaction) and returns its
/// id. Every [`PRUNE_EVERY`]th insert prunes old events, in the same
/// transaction.
pub fn record_event(
    conn: &Connection,
    kind: EventType,
    action: &str,
    subject: &str,
    attributes: &Labels,
) -> rusqlite::Result<i64> {
    let now = now_ns();
    conn.execute(
        "INSERT INTO events (time_ns, type, action, subject, attributes)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            now,
            kind.as_str(),
            action,
            subject,
            labels_to_json(attributes)
        ],
    )?;
    let id = conn.last_insert_rowid();
    if id % PRUNE_EVERY == 0 {
        prune_events(conn, retention(), now)?;
    }
    Ok(id)
}

/// A container event's subject and attributes: its id, name and image,
/// plus `extra`.
pub fn record_container_event(
    conn: &Connection,
    rec: &ContainerRecord,
    action: &str,
    extra: &[(&str, String)],
) -> rusqlite::Result<i64> {
    let mut attrs = Labels::from([
        ("name".to_string(), rec.name.clone()),
        ("image".to_string(), rec.image.clone()),
    ]);
    for (k, v) in extra {
        attrs.insert(k.to_string(), v.clone());
    }
    record_event(conn, EventType::Container, action, &rec.id, &attrs)
}

/// Deletes events beyond `r`'s bounds as of `now_ns`; returns how many.
pub fn prune_events(conn: &Connection, r: Retention, now_ns: i64) -> rusqlite::Result<usize> {
    let mut n = 0;
    if r.max_events > 0 {
        let last: i64 =
            conn.query_row("SELECT coalesce(max(id), 0) FROM events", [], |r| r.get(0))?;
        // Ids are dense but for rows pruning took (all below the kept
        // range), so `last - max_events` is the newest id to drop: one
        // indexed range delete, however big the table. A gap could only
        // make it keep fewer.
        let cut = last.saturating_sub(i64::try_from(r.max_events).unwrap_or(i64::MAX));
        n += conn.execute("DELETE FROM events WHERE id <= ?1", [cut])?;
    }
    if !r.max_age.is_zero() {
        let age = i64::try_from(r.max_age.as_nanos()).unwrap_or(i64::MAX);
        n += conn.execute(
            "DELETE FROM events WHERE time_ns < ?1",
            [now_ns.saturating_sub(age)],
        )?;
    }
    Ok(n)
}

/// Which events [`events_after`] returns: ids above `after_id`, recorded
/// from `since_ns` up to and including `until_ns`, oldest first, at most
/// `limit`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventRange {
    pub after_id: i64,
    pub since_ns: Option<i64>,
    pub until_ns: Option<i64>,
    pub limit: Option<u64>,
}

fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Event> {
    let id: i64 = row.get(0)?;
    let what = format!("event {id}");
    let kind: String = row.get(2)?;
    let kind = EventType::parse(&kind).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            2,
            rusqlite::types::Type::Text,
            Box::new(super::Error::Corrupt {
                what: what.clone(),
                reason: format!("unknown type {kind:?}"),
            }),
        )
    })?;
    let attrs: String = row.get(5)?;
    let attributes = labels_from_json(&what, &attrs).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(5, rusqlite::types::Type::Text, Box::new(e))
    })?;
    Ok(Event {
        id,
        time_ns: row.get(1)?,
        kind,
        action: row.get(3)?,
        subject: row.get(4)?,
        attributes,
    })
}

/// The events in `range`, oldest first.
pub fn events_after(conn: &Connection, range: &EventRange) -> rusqlite::Result<Vec<Event>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, time_ns, type, action, subject, attributes FROM events
         WHERE id > ?1 AND time_ns >= ?2 AND time_ns <= ?3
         ORDER BY id LIMIT ?4",
    )?;
    let limit = range
        .limit
        .and_then(|l| i64::try_from(l).ok())
        .unwrap_or(-1);
    let rows = stmt.query_map(
        params![
            range.after_id,
            range.since_ns.unwrap_or(i64::MIN),
            range.until_ns.unwrap_or(i64::MAX),
            limit
        ],
        from_row,
    )?;
    rows.collect()
}

/// The id of the newest event, 0 when there is none.
pub fn last_event_id(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("SELECT coalesce(max(id), 0) FROM events", [], |r| r.get(0))
}

impl Db {
    /// Records one event in a transaction of its own: for what changes no
    /// record (a signal sent, an OOM kill in a running container, a push).
    pub fn record_event(
        &mut self,
        kind: EventType,
        action: &str,
        subject: &str,
        attributes: &Labels,
    ) -> Result<i64> {
        self.write(|tx| record_event(tx, kind, action, subject, attributes))
    }

    /// [`events_after`] outside any write lock.
    pub fn events(&self, range: &EventRange) -> Result<Vec<Event>> {
        self.read(|c| events_after(c, range))
    }

    /// [`last_event_id`].
    pub fn last_event_id(&self) -> Result<i64> {
        self.read(last_event_id)
    }

    /// Prunes events to `r` now; returns how many went.
    pub fn prune_events(&mut self, r: Retention) -> Result<usize> {
        self.write(|tx| prune_events(tx, r, now_ns()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap();
        (dir, db)
    }

    fn attrs(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn insert_and_read_back_in_order() {
        let (_dir, mut db) = db();
        assert_eq!(db.last_event_id().unwrap(), 0);
        let a = db
            .record_event(
                EventType::Image,
                action::PULL,
                "docker.io/library/busybox:latest",
                &attrs(&[("digest", "sha256:00")]),
            )
            .unwrap();
        let b = db
            .write(|tx| {
                record_event(
                    tx,
                    EventType::Container,
                    action::DIE,
                    "c1",
                    &attrs(&[("exitCode", "137"), ("name", "web")]),
                )
            })
            .unwrap();
        assert!(b > a);
        assert_eq!(db.last_event_id().unwrap(), b);
        let all = db.events(&EventRange::default()).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].kind, EventType::Image);
        assert_eq!(all[0].action, "pull");
        assert_eq!(all[1].subject, "c1");
        assert_eq!(all[1].attributes["exitCode"], "137");
        assert!(all[0].time_ns <= all[1].time_ns);

        let after = db
            .events(&EventRange {
                after_id: a,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(after.iter().map(|e| e.id).collect::<Vec<_>>(), vec![b]);
        let limited = db
            .events(&EventRange {
                limit: Some(1),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(limited.len(), 1);
        assert_eq!(limited[0].id, a);
    }

    #[test]
    fn time_range_is_inclusive() {
        let (_dir, mut db) = db();
        for (i, t) in [100i64, 200, 300].into_iter().enumerate() {
            db.write(|tx| {
                record_event(
                    tx,
                    EventType::Snapshot,
                    "commit",
                    &format!("k{i}"),
                    &Labels::new(),
                )?;
                tx.execute(
                    "UPDATE events SET time_ns = ?1 WHERE id = last_insert_rowid()",
                    [t],
                )
            })
            .unwrap();
        }
        let keys = |since, until| -> Vec<String> {
            db.events(&EventRange {
                since_ns: since,
                until_ns: until,
                ..Default::default()
            })
            .unwrap()
            .into_iter()
            .map(|e| e.subject)
            .collect()
        };
        assert_eq!(keys(Some(200), None), ["k1", "k2"]);
        assert_eq!(keys(None, Some(200)), ["k0", "k1"]);
        assert_eq!(keys(Some(150), Some(250)), ["k1"]);
        assert!(keys(Some(301), None).is_empty());
    }

    #[test]
    fn a_rolled_back_change_leaves_no_event() {
        let (_dir, mut db) = db();
        let r: Result<()> = db.write(|tx| {
            record_event(tx, EventType::Image, action::REMOVE, "x", &Labels::new())?;
            Err(rusqlite::Error::InvalidQuery)
        });
        assert!(r.is_err());
        assert!(db.events(&EventRange::default()).unwrap().is_empty());
    }

    #[test]
    fn prune_by_count_and_age() {
        let (_dir, mut db) = db();
        let now = now_ns();
        db.write(|tx| {
            for i in 0..10i64 {
                record_event(
                    tx,
                    EventType::Content,
                    "remove",
                    &i.to_string(),
                    &Labels::new(),
                )?;
                // Event i is 10 - i hours old.
                tx.execute(
                    "UPDATE events SET time_ns = ?1 WHERE id = last_insert_rowid()",
                    [now - (10 - i) * 3_600_000_000_000],
                )?;
            }
            Ok(())
        })
        .unwrap();
        let subjects = |db: &Db| -> Vec<String> {
            db.events(&EventRange::default())
                .unwrap()
                .into_iter()
                .map(|e| e.subject)
                .collect()
        };
        let by_count = Retention {
            max_events: 6,
            max_age: Duration::ZERO,
        };
        assert_eq!(db.write(|tx| prune_events(tx, by_count, now)).unwrap(), 4);
        assert_eq!(subjects(&db), ["4", "5", "6", "7", "8", "9"]);
        // Idempotent.
        assert_eq!(db.write(|tx| prune_events(tx, by_count, now)).unwrap(), 0);
        let by_age = Retention {
            max_events: 0,
            max_age: Duration::from_secs(3 * 3600),
        };
        assert_eq!(db.write(|tx| prune_events(tx, by_age, now)).unwrap(), 3);
        assert_eq!(subjects(&db), ["7", "8", "9"]);
        // Ids are never reused after pruning: a follower's `id > last`
        // stays right.
        let last = db.last_event_id().unwrap();
        db.prune_events(Retention {
            max_events: 1,
            max_age: Duration::ZERO,
        })
        .unwrap();
        db.write(|tx| tx.execute("DELETE FROM events", [])).unwrap();
        let next = db
            .record_event(EventType::Image, "pull", "n", &Labels::new())
            .unwrap();
        assert!(next > last);
    }

    #[test]
    fn insert_prunes_every_nth() {
        let (_dir, mut db) = db();
        // Old events, then enough new ones to reach a pruning insert.
        db.write(|tx| {
            for i in 0..PRUNE_EVERY - 1 {
                record_event(tx, EventType::Image, "pull", &i.to_string(), &Labels::new())?;
            }
            tx.execute("UPDATE events SET time_ns = 1", [])
        })
        .unwrap();
        assert_eq!(
            db.events(&EventRange::default()).unwrap().len() as i64,
            PRUNE_EVERY - 1
        );
        // The default retention keeps 7 days: this insert (id PRUNE_EVERY)
        // drops every event from 1970.
        let id = db
            .record_event(EventType::Image, "pull", "new", &Labels::new())
            .unwrap();
        assert_eq!(id, PRUNE_EVERY);
        let left = db.events(&EventRange::default()).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].subject, "new");
    }

    #[test]
    fn container_events_carry_name_and_image() {
        let (_dir, mut db) = db();
        let rec = ContainerRecord {
            id: "a".repeat(64),
            name: "web".into(),
            image: "docker.io/library/busybox:latest".into(),
            image_digest: None,
            snapshotter: "overlayfs".into(),
            snapshot_key: "container-a".into(),
            runtime: "runc".into(),
            spec: String::new(),
            command: vec![],
            status: super::super::ContainerStatus::Created,
            pid: None,
            pid_start: None,
            supervisor_pid: None,
            supervisor_start: None,
            exit_code: None,
            oom_killed: false,
            created_ns: 0,
            started_ns: None,
            finished_ns: None,
            labels: Labels::new(),
            auto_remove: false,
            cgroup_path: None,
            log_path: None,
        };
        db.write(|tx| record_container_event(tx, &rec, action::DIE, &[("exitCode", "3".into())]))
            .unwrap();
        let e = db.events(&EventRange::default()).unwrap().remove(0);
        assert_eq!(e.subject, rec.id);
        assert_eq!(
            e.attributes,
            attrs(&[
                ("exitCode", "3"),
                ("image", "docker.io/library/busybox:latest"),
                ("name", "web")
            ])
        );
    }
}
