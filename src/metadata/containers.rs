//! Container records: one row per container, whatever runtime runs it.
//!
//! Lifecycle of a record: inserted `created` once the runtime has created
//! the container; `running` with the pids (and their start times) of the
//! container's init and of the process supervising it once started;
//! `stopped` with the exit code when the supervisor saw the init exit;
//! deleted with the container.
//!
//! A supervisor can die without recording the exit (killed, host reboot).
//! Readers therefore *reconcile*: a `created` or `running` record whose
//! supervisor (or, without one, whose init) is no longer the process that
//! was recorded, compared by pid *and* start time so a recycled pid is not
//! mistaken for it, is marked `stopped` with an unknown exit code.
//!
//! Like the other tables' functions, these take a connection so callers
//! compose them into one short `Db::write` transaction; the `Db` methods
//! read outside any write lock.

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use super::{labels_from_json, labels_to_json, now_ns, Db, Error, Labels, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerStatus {
    Created,
    Running,
    Stopped,
}

impl ContainerStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerStatus::Created => "created",
            ContainerStatus::Running => "running",
            ContainerStatus::Stopped => "stopped",
        }
    }

    fn parse(s: &str) -> Option<ContainerStatus> {
        match s {
            "created" => Some(ContainerStatus::Created),
            "running" => Some(ContainerStatus::Running),
            "stopped" => Some(ContainerStatus::Stopped),
            _ => None,
        }
    }
}

/// One container as the database stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContainerRecord {
    /// 64 hex characters.
    pub id: String,
    /// Unique among containers.
    pub name: String,
    /// The image name as given (normalised).
    pub image: String,
    pub image_digest: Option<String>,
    pub snapshotter: String,
    /// The container's writable snapshot.
    pub snapshot_key: String,
    /// The runtime plugin id or path.
    pub runtime: String,
    /// The `config.json` text.
    pub spec: String,
    pub command: Vec<String>,
    pub status: ContainerStatus,
    /// The container's init and its start time (clock ticks since boot).
    pub pid: Option<i32>,
    pub pid_start: Option<u64>,
    /// The process waiting for the init, and its start time.
    pub supervisor_pid: Option<i32>,
    pub supervisor_start: Option<u64>,
    /// `None` while not stopped, or when nobody saw the exit.
    pub exit_code: Option<i32>,
    pub oom_killed: bool,
    pub created_ns: i64,
    pub started_ns: Option<i64>,
    pub finished_ns: Option<i64>,
    pub labels: Labels,
    pub auto_remove: bool,
    pub cgroup_path: Option<String>,
    pub log_path: Option<String>,
}

/// What every read selects, in [`from_row`]'s order; the spec comes from
/// its own table (migration 4).
pub(super) const COLUMNS: &str =
    "id, name, image, image_digest, snapshotter, snapshot_key, runtime, \
     (SELECT spec FROM container_specs s WHERE s.id = containers.id), \
     command, status, pid, pid_start, supervisor_pid, supervisor_start, exit_code, oom_killed, \
     created_ns, started_ns, finished_ns, labels, auto_remove, cgroup_path, log_path";

/// The spec's place in [`COLUMNS`], which a listing replaces with `''`.
pub(super) const SPEC_COLUMN: &str =
    "(SELECT spec FROM container_specs s WHERE s.id = containers.id)";

const INSERT_COLUMNS: &str = "id, name, image, image_digest, snapshotter, snapshot_key, runtime, \
     command, status, pid, pid_start, supervisor_pid, supervisor_start, exit_code, oom_killed, \
     created_ns, started_ns, finished_ns, labels, auto_remove, cgroup_path, log_path";

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

pub(super) fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<ContainerRecord> {
    let id: String = row.get(0)?;
    let what = || format!("container {id}");
    let command: Vec<String> = serde_json::from_str(row.get_ref(8)?.as_str()?)
        .map_err(|e| corrupt(8, &what(), format!("command: {e}")))?;
    let status = row.get_ref(9)?.as_str()?;
    let status = ContainerStatus::parse(status)
        .ok_or_else(|| corrupt(9, &what(), format!("unknown status {status:?}")))?;
    let labels = match row.get_ref(19)?.as_str()? {
        // Most containers have none; skip the parser for them.
        "{}" => Labels::new(),
        text => labels_from_json(&what(), text).map_err(|e| corrupt(19, &what(), e.to_string()))?,
    };
    Ok(ContainerRecord {
        name: row.get(1)?,
        image: row.get(2)?,
        image_digest: row.get(3)?,
        snapshotter: row.get(4)?,
        snapshot_key: row.get(5)?,
        runtime: row.get(6)?,
        spec: row.get(7)?,
        command,
        status,
        pid: row.get(10)?,
        pid_start: row.get::<_, Option<i64>>(11)?.map(|v| v as u64),
        supervisor_pid: row.get(12)?,
        supervisor_start: row.get::<_, Option<i64>>(13)?.map(|v| v as u64),
        exit_code: row.get(14)?,
        oom_killed: row.get(15)?,
        created_ns: row.get(16)?,
        started_ns: row.get(17)?,
        finished_ns: row.get(18)?,
        labels,
        auto_remove: row.get(20)?,
        cgroup_path: row.get(21)?,
        log_path: row.get(22)?,
        id,
    })
}

/// Inserts `rec`. A taken name or id is [`Error::AlreadyExists`], returned
/// inside `Ok` so the caller's transaction can still commit or roll back
/// as it chooses.
pub fn insert_container(conn: &Connection, rec: &ContainerRecord) -> rusqlite::Result<Result<()>> {
    let taken: Option<(String, String)> = conn
        .query_row(
            "SELECT id, name FROM containers WHERE id = ?1 OR name = ?2",
            params![rec.id, rec.name],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    if let Some((id, name)) = taken {
        let what = if name == rec.name {
            format!("container name \"{name}\" is already in use by container {id}")
        } else {
            format!("container id {id}")
        };
        return Ok(Err(Error::AlreadyExists { what }));
    }
    let command = serde_json::to_string(&rec.command).unwrap_or_else(|_| "[]".to_owned());
    conn.execute(
        &format!(
            "INSERT INTO containers ({INSERT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8,
             ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22)"
        ),
        params![
            rec.id,
            rec.name,
            rec.image,
            rec.image_digest,
            rec.snapshotter,
            rec.snapshot_key,
            rec.runtime,
            command,
            rec.status.as_str(),
            rec.pid,
            rec.pid_start.map(|v| v as i64),
            rec.supervisor_pid,
            rec.supervisor_start.map(|v| v as i64),
            rec.exit_code,
            rec.oom_killed,
            rec.created_ns,
            rec.started_ns,
            rec.finished_ns,
            labels_to_json(&rec.labels),
            rec.auto_remove,
            rec.cgroup_path,
            rec.log_path,
        ],
    )?;
    conn.execute(
        "INSERT INTO container_specs (id, spec) VALUES (?1, ?2)",
        params![rec.id, rec.spec],
    )?;
    Ok(Ok(()))
}

/// Finds a container the way docker does: exact id, then exact name, then
/// a unique id prefix. No match is [`Error::NotFound`]; a prefix of several
/// ids is [`Error::Ambiguous`].
pub fn find_container(conn: &Connection, query: &str) -> rusqlite::Result<Result<ContainerRecord>> {
    let not_found = || {
        Err(Error::NotFound {
            what: format!("container {query}"),
        })
    };
    if query.is_empty() {
        return Ok(not_found());
    }
    for column in ["id", "name"] {
        let exact = conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM containers WHERE {column} = ?1"),
                [query],
                from_row,
            )
            .optional()?;
        if let Some(rec) = exact {
            return Ok(Ok(rec));
        }
    }
    // substr, not LIKE: a query holding `%` or `_` must not match as a
    // pattern.
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM containers WHERE substr(id, 1, length(?1)) = ?1 ORDER BY id LIMIT 2"
    ))?;
    let mut found: Vec<ContainerRecord> = stmt
        .query_map([query], from_row)?
        .collect::<rusqlite::Result<_>>()?;
    Ok(match found.len() {
        0 => not_found(),
        1 => Ok(found.remove(0)),
        _ => Err(Error::Ambiguous {
            what: format!("container id prefix {query}"),
        }),
    })
}

/// Every container, oldest first.
pub fn container_records(conn: &Connection) -> rusqlite::Result<Vec<ContainerRecord>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM containers ORDER BY created_ns, id"
    ))?;
    let rows = stmt.query_map([], from_row)?;
    rows.collect()
}

/// Records the process of created container `id` and the process waiting
/// for it, before it is started: a reader can then tell when both are gone.
/// The status stays `created`. Returns whether it exists.
pub fn set_container_process(
    conn: &Connection,
    id: &str,
    pid: i32,
    pid_start: u64,
    supervisor_pid: Option<i32>,
    supervisor_start: Option<u64>,
) -> rusqlite::Result<bool> {
    let n = conn.execute(
        "UPDATE containers SET pid = ?2, pid_start = ?3, supervisor_pid = ?4,
             supervisor_start = ?5
         WHERE id = ?1",
        params![
            id,
            pid,
            pid_start as i64,
            supervisor_pid,
            supervisor_start.map(|v| v as i64)
        ],
    )?;
    Ok(n > 0)
}

/// Marks created container `id` running from `started_ns`, once its
/// runtime started it. Returns whether it was created.
pub fn set_container_started(
    conn: &Connection,
    id: &str,
    started_ns: i64,
) -> rusqlite::Result<bool> {
    let n = conn.execute(
        "UPDATE containers SET status = 'running', started_ns = ?2
         WHERE id = ?1 AND status = 'created'",
        params![id, started_ns],
    )?;
    Ok(n > 0)
}

/// Marks container `id` running. Returns whether it exists.
pub fn set_container_running(
    conn: &Connection,
    id: &str,
    pid: i32,
    pid_start: u64,
    supervisor_pid: Option<i32>,
    supervisor_start: Option<u64>,
    started_ns: i64,
) -> rusqlite::Result<bool> {
    let n = conn.execute(
        "UPDATE containers SET status = 'running', pid = ?2, pid_start = ?3,
             supervisor_pid = ?4, supervisor_start = ?5, started_ns = ?6,
             exit_code = NULL, oom_killed = 0, finished_ns = NULL
         WHERE id = ?1",
        params![
            id,
            pid,
            pid_start as i64,
            supervisor_pid,
            supervisor_start.map(|v| v as i64),
            started_ns
        ],
    )?;
    Ok(n > 0)
}

/// Marks container `id` stopped; `exit_code` is `None` when nobody saw the
/// exit. The pids stay, for the record. Returns whether it exists.
pub fn set_container_stopped(
    conn: &Connection,
    id: &str,
    exit_code: Option<i32>,
    oom_killed: bool,
    finished_ns: i64,
) -> rusqlite::Result<bool> {
    let n = conn.execute(
        "UPDATE containers SET status = 'stopped', exit_code = ?2, oom_killed = ?3,
             finished_ns = ?4
         WHERE id = ?1",
        params![id, exit_code, oom_killed, finished_ns],
    )?;
    Ok(n > 0)
}

/// Removes container `id`'s record. Returns whether it existed.
pub fn delete_container(conn: &Connection, id: &str) -> rusqlite::Result<bool> {
    conn.execute("DELETE FROM container_specs WHERE id = ?1", [id])?;
    Ok(conn.execute("DELETE FROM containers WHERE id = ?1", [id])? > 0)
}

/// Marks `rec` stopped (exit code unknown, finished now) if it is created
/// or running but the process answering for it is gone: its supervisor
/// when it has one, else its init. `alive(pid, start_time)` says whether
/// that pid is still the process that started then. A record without a
/// pid and start time to check is left alone: whoever is creating it may
/// not have recorded them yet. Returns whether `rec` changed.
pub fn reconcile(rec: &mut ContainerRecord, alive: impl Fn(i32, u64) -> bool) -> bool {
    if rec.status == ContainerStatus::Stopped {
        return false;
    }
    let watched = match rec.supervisor_pid {
        Some(pid) => Some(pid).zip(rec.supervisor_start),
        None => rec.pid.zip(rec.pid_start),
    };
    match watched {
        Some((pid, start)) if !alive(pid, start) => {
            rec.status = ContainerStatus::Stopped;
            rec.exit_code = None;
            rec.finished_ns = Some(now_ns());
            true
        }
        _ => false,
    }
}

/// The start time of process `pid`, in clock ticks since boot (field 22 of
/// `/proc/<pid>/stat`); `None` if there is no such process, or it has
/// exited and only waits to be reaped (a zombie).
pub fn process_start_time(pid: i32) -> Option<u64> {
    if pid <= 0 {
        return None;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_time(&stat)
}

/// The command name (field 2) is in parentheses and may itself hold
/// spaces and `)`, so fields are counted from after the last `)`, where
/// field 3 begins.
fn parse_start_time(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    if matches!(fields.next(), Some("Z" | "X" | "x")) {
        return None;
    }
    fields.nth(22 - 4)?.parse().ok()
}

/// The fields a reconciled record's update is guarded on: the record
/// changes only if nobody else changed it since it was read.
struct Watched {
    status: ContainerStatus,
    pid: Option<i32>,
    pid_start: Option<u64>,
    supervisor_pid: Option<i32>,
    supervisor_start: Option<u64>,
}

impl Watched {
    fn of(rec: &ContainerRecord) -> Watched {
        Watched {
            status: rec.status,
            pid: rec.pid,
            pid_start: rec.pid_start,
            supervisor_pid: rec.supervisor_pid,
            supervisor_start: rec.supervisor_start,
        }
    }
}

fn alive(pid: i32, start: u64) -> bool {
    process_start_time(pid) == Some(start)
}

impl Db {
    /// The container `query` names (see [`find_container`]), as recorded.
    pub fn container(&self, query: &str) -> Result<ContainerRecord> {
        self.read(|c| find_container(c, query))?
    }

    /// Every container as recorded, oldest first.
    pub fn containers(&self) -> Result<Vec<ContainerRecord>> {
        self.read(container_records)
    }

    /// Every container, with dead ones marked stopped (see [`reconcile`])
    /// and that written back.
    pub fn containers_reconciled(&mut self) -> Result<Vec<ContainerRecord>> {
        let mut recs = self.containers()?;
        self.reconcile_all(&mut recs)?;
        Ok(recs)
    }

    /// [`Db::container`], reconciled and written back like
    /// [`Db::containers_reconciled`].
    pub fn container_reconciled(&mut self, query: &str) -> Result<ContainerRecord> {
        let mut recs = vec![self.container(query)?];
        self.reconcile_all(&mut recs)?;
        recs.pop().ok_or_else(|| Error::NotFound {
            what: format!("container {query}"),
        })
    }

    /// Writes back the records `reconcile` changed, in one transaction,
    /// with a `die` event (no exit code) for each. A
    /// row another process changed since we read it (it recorded the real
    /// exit, or started it again) is not overwritten: it is read back
    /// instead, and a row deleted meanwhile is dropped from `recs`.
    pub(super) fn reconcile_all(&mut self, recs: &mut Vec<ContainerRecord>) -> Result<()> {
        // What each changed record said before, for the guarded update.
        let mut changed: Vec<(usize, Watched)> = Vec::new();
        for (i, rec) in recs.iter_mut().enumerate() {
            let before = Watched::of(rec);
            if reconcile(rec, alive) {
                changed.push((i, before));
            }
        }
        if changed.is_empty() {
            return Ok(());
        }
        // A container whose waiter died would run on unseen, shown stopped,
        // with nobody to record its end or release it: end it now.
        for &(i, _) in &changed {
            if let (Some(pid), Some(start)) = (recs[i].pid, recs[i].pid_start) {
                if alive(pid, start) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        let updates = self.write(|tx| {
            let mut updates = Vec::new();
            for (i, old) in &changed {
                let new = &recs[*i];
                let n = tx.execute(
                    "UPDATE containers SET status = 'stopped', exit_code = NULL,
                         finished_ns = ?2
                     WHERE id = ?1 AND status = ?3 AND pid IS ?4 AND pid_start IS ?5
                         AND supervisor_pid IS ?6 AND supervisor_start IS ?7",
                    params![
                        new.id,
                        new.finished_ns,
                        old.status.as_str(),
                        old.pid,
                        old.pid_start.map(|v| v as i64),
                        old.supervisor_pid,
                        old.supervisor_start.map(|v| v as i64),
                    ],
                )?;
                if n > 0 {
                    // Nobody saw the exit: a `die` without an exit code.
                    super::events::record_container_event(
                        tx,
                        new,
                        super::events::action::DIE,
                        &[],
                    )?;
                } else {
                    let now = tx
                        .query_row(
                            &format!("SELECT {COLUMNS} FROM containers WHERE id = ?1"),
                            [&new.id],
                            from_row,
                        )
                        .optional()?;
                    updates.push((*i, now));
                }
            }
            Ok(updates)
        })?;
        let mut gone = Vec::new();
        for (i, now) in updates {
            match now {
                Some(rec) => recs[i] = rec,
                None => gone.push(i),
            }
        }
        for i in gone.into_iter().rev() {
            recs.remove(i);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id_char: char, name: &str) -> ContainerRecord {
        ContainerRecord {
            id: id_char.to_string().repeat(64),
            name: name.to_owned(),
            image: "docker.io/library/busybox:latest".into(),
            image_digest: Some(format!("sha256:{}", "e".repeat(64))),
            snapshotter: "overlayfs".into(),
            snapshot_key: format!("container-{name}"),
            runtime: "runc".into(),
            spec: "{\"ociVersion\":\"1.0.2\"}".into(),
            command: vec!["sh".into(), "-c".into(), "echo 'hi there'".into()],
            status: ContainerStatus::Created,
            pid: None,
            pid_start: None,
            supervisor_pid: None,
            supervisor_start: None,
            exit_code: None,
            oom_killed: false,
            created_ns: 1,
            started_ns: None,
            finished_ns: None,
            labels: Labels::from([("k".to_owned(), "v".to_owned())]),
            auto_remove: true,
            cgroup_path: Some("/berth/x".into()),
            log_path: None,
        }
    }

    fn db() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap();
        (dir, db)
    }

    #[test]
    fn round_trip_and_duplicate_name() {
        let (_dir, mut db) = db();
        let rec = record('a', "web");
        db.write(|tx| insert_container(tx, &rec)).unwrap().unwrap();
        assert_eq!(db.container("web").unwrap(), rec);
        assert_eq!(db.containers().unwrap(), std::slice::from_ref(&rec));

        let err = db
            .write(|tx| insert_container(tx, &record('b', "web")))
            .unwrap()
            .unwrap_err();
        assert!(matches!(err, Error::AlreadyExists { .. }), "{err}");
        assert!(err.to_string().contains("\"web\""), "{err}");
        assert_eq!(err.kind(), crate::ErrorKind::AlreadyExists);
        let err = db
            .write(|tx| insert_container(tx, &record('a', "other")))
            .unwrap()
            .unwrap_err();
        assert!(matches!(err, Error::AlreadyExists { .. }), "{err}");
        assert_eq!(db.containers().unwrap().len(), 1);
    }

    #[test]
    fn lookup_by_id_name_and_prefix() {
        let (_dir, mut db) = db();
        let mut a = record('a', "first");
        a.id = format!("ab{}", "0".repeat(62));
        let mut b = record('b', "second");
        b.id = format!("ac{}", "0".repeat(62));
        // A name that is also a prefix of another container's id: the exact
        // name wins, as with docker.
        let mut c = record('c', "ab");
        c.id = "c".repeat(64);
        for r in [&a, &b, &c] {
            db.write(|tx| insert_container(tx, r)).unwrap().unwrap();
        }
        assert_eq!(db.container(&a.id).unwrap().name, "first");
        assert_eq!(db.container("second").unwrap().id, b.id);
        assert_eq!(db.container("ab").unwrap().id, c.id);
        assert_eq!(db.container("ac").unwrap().id, b.id);
        assert_eq!(db.container("cc").unwrap().id, c.id);
        let err = db.container("a").unwrap_err();
        assert!(matches!(err, Error::Ambiguous { .. }), "{err}");
        for q in ["zz", "", "%", "a_"] {
            let err = db.container(q).unwrap_err();
            assert!(matches!(err, Error::NotFound { .. }), "{q}: {err}");
        }
    }

    #[test]
    fn running_stopped_deleted() {
        let (_dir, mut db) = db();
        let rec = record('a', "web");
        db.write(|tx| insert_container(tx, &rec)).unwrap().unwrap();
        assert!(db
            .write(|tx| set_container_running(tx, &rec.id, 10, 100, Some(9), Some(90), 5))
            .unwrap());
        let got = db.container("web").unwrap();
        assert_eq!(got.status, ContainerStatus::Running);
        assert_eq!(
            (
                got.pid,
                got.pid_start,
                got.supervisor_pid,
                got.supervisor_start
            ),
            (Some(10), Some(100), Some(9), Some(90))
        );
        assert_eq!(got.started_ns, Some(5));
        assert!(db
            .write(|tx| set_container_stopped(tx, &rec.id, Some(137), true, 6))
            .unwrap());
        let got = db.container("web").unwrap();
        assert_eq!(
            (got.status, got.exit_code, got.oom_killed, got.finished_ns),
            (ContainerStatus::Stopped, Some(137), true, Some(6))
        );
        assert!(!db
            .write(|tx| set_container_stopped(tx, "nope", None, false, 6))
            .unwrap());
        assert!(db.write(|tx| delete_container(tx, &rec.id)).unwrap());
        assert!(!db.write(|tx| delete_container(tx, &rec.id)).unwrap());
        assert!(matches!(
            db.container("web").unwrap_err(),
            Error::NotFound { .. }
        ));
    }

    #[test]
    fn reconcile_watches_supervisor_then_pid() {
        let mut rec = record('a', "web");
        // Nothing recorded to check yet.
        assert!(!reconcile(&mut rec, |_, _| false));
        assert_eq!(rec.status, ContainerStatus::Created);

        rec.status = ContainerStatus::Running;
        rec.pid = Some(10);
        rec.pid_start = Some(100);
        rec.supervisor_pid = Some(9);
        rec.supervisor_start = Some(90);
        // The supervisor is what counts, while there is one.
        assert!(!reconcile(&mut rec, |pid, start| (pid, start) == (9, 90)));
        let mut dead = rec.clone();
        assert!(reconcile(&mut dead, |pid, start| (pid, start) == (10, 100)));
        assert_eq!(dead.status, ContainerStatus::Stopped);
        assert_eq!(dead.exit_code, None);
        assert!(dead.finished_ns.is_some());
        // Stopped stays stopped.
        assert!(!reconcile(&mut dead, |_, _| false));

        // Without a supervisor, the init; a recycled pid (same pid, other
        // start time) is not it.
        rec.supervisor_pid = None;
        rec.supervisor_start = None;
        rec.exit_code = Some(3);
        assert!(!reconcile(&mut rec.clone(), |pid, start| (pid, start) == (10, 100)));
        assert!(reconcile(&mut rec, |pid, start| (pid, start) == (10, 101)));
        assert_eq!(
            (rec.status, rec.exit_code),
            (ContainerStatus::Stopped, None)
        );
    }

    #[test]
    fn start_times() {
        let me = std::process::id() as i32;
        let start = process_start_time(me).unwrap();
        assert_eq!(process_start_time(me), Some(start));
        assert_eq!(process_start_time(0), None);
        assert_eq!(process_start_time(-1), None);
        assert_eq!(process_start_time(i32::MAX), None);
        // Parentheses and spaces in the command name do not shift fields.
        let stat = "42 (a) b (c) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 \
                    987654 1000 100 18446744073709551615";
        assert_eq!(parse_start_time(stat), Some(987654));
        assert_eq!(parse_start_time("42 (x"), None);
        // A zombie has exited: it is not the process that started then.
        let zombie = stat.replace(") S ", ") Z ");
        assert_eq!(parse_start_time(&zombie), None);
    }

    #[test]
    fn reconciled_reads_write_back() {
        let (_dir, mut db) = db();
        let me = std::process::id() as i32;
        let my_start = process_start_time(me).unwrap();
        let live = record('a', "live");
        let dead = record('b', "dead");
        let stopped = record('c', "stopped");
        for r in [&live, &dead, &stopped] {
            db.write(|tx| insert_container(tx, r)).unwrap().unwrap();
        }
        db.write(|tx| {
            set_container_running(tx, &live.id, me, my_start, None, None, 1)?;
            // Our pid, another start time: a recycled pid.
            set_container_running(tx, &dead.id, 1, 1, Some(me), Some(my_start + 1), 1)?;
            set_container_stopped(tx, &stopped.id, Some(0), false, 2)
        })
        .unwrap();

        let all = db.containers_reconciled().unwrap();
        let status = |name: &str| all.iter().find(|r| r.name == name).unwrap().status;
        assert_eq!(status("live"), ContainerStatus::Running);
        assert_eq!(status("dead"), ContainerStatus::Stopped);
        assert_eq!(status("stopped"), ContainerStatus::Stopped);
        // Written back, not only reported.
        let stored = db.container("dead").unwrap();
        assert_eq!(stored.status, ContainerStatus::Stopped);
        assert_eq!(stored.exit_code, None);
        assert!(stored.finished_ns.is_some());
        // With a `die` event, once, without an exit code.
        let events = db.events(&super::super::EventRange::default()).unwrap();
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(
            (events[0].subject.as_str(), events[0].action.as_str()),
            (dead.id.as_str(), "die")
        );
        assert!(!events[0].attributes.contains_key("exitCode"));
        db.containers_reconciled().unwrap();
        assert_eq!(db.events(&Default::default()).unwrap().len(), 1);
        assert_eq!(db.container("stopped").unwrap().exit_code, Some(0));

        // One container: the same, through its name.
        db.write(|tx| set_container_running(tx, &dead.id, 1, 1, Some(me), Some(my_start + 1), 3))
            .unwrap();
        let one = db.container_reconciled("dead").unwrap();
        assert_eq!(one.status, ContainerStatus::Stopped);
        assert_eq!(
            db.container("dead").unwrap().status,
            ContainerStatus::Stopped
        );
        assert_eq!(
            db.container_reconciled("live").unwrap().status,
            ContainerStatus::Running
        );
    }
}
