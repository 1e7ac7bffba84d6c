use std::time::Duration;

use rusqlite::{params, Connection};

use super::{now_ns, Db, Result};

/// A lease protects resources that a multi-step operation (a pull) has
/// written but not yet tied to an image: garbage collection treats every
/// resource of an unexpired lease as in use. A process that dies leaves its
/// lease behind, and the expiry bounds how long that pins anything.
#[derive(Debug, Clone)]
pub struct Lease {
    pub id: String,
}

impl Db {
    /// Creates a lease that expires after `ttl`.
    pub fn create_lease(&mut self, purpose: &str, ttl: Duration) -> Result<Lease> {
        let now = now_ns();
        let id = format!("{purpose}-{}-{now}", std::process::id());
        let expires = now.saturating_add(ttl.as_nanos() as i64);
        self.write(|tx| {
            tx.execute(
                "INSERT INTO leases (id, created_ns, expires_ns) VALUES (?1, ?2, ?3)",
                params![id, now, expires],
            )
        })?;
        Ok(Lease { id })
    }

    /// Records that `lease` holds the resource `kind`/`key` (e.g. content,
    /// a digest).
    pub fn lease_add(&mut self, lease: &Lease, kind: &str, key: &str) -> Result<()> {
        self.write(|tx| add_resource(tx, lease, kind, key))
    }

    /// Resources held by unexpired leases.
    pub fn leased(&self, kind: &str) -> Result<Vec<String>> {
        self.read(|c| {
            let mut stmt = c.prepare(
                "SELECT DISTINCT r.key FROM lease_resources r JOIN leases l ON l.id = r.lease_id
                 WHERE r.kind = ?1 AND (l.expires_ns IS NULL OR l.expires_ns > ?2)",
            )?;
            let rows = stmt.query_map(params![kind, now_ns()], |r| r.get(0))?;
            rows.collect()
        })
    }
}

/// The lease resource kind of snapshots of `snapshotter` (the key is the
/// snapshot key), as containerd names it.
pub fn snapshot_lease_kind(snapshotter: &str) -> String {
    format!("snapshots/{snapshotter}")
}

pub fn add_resource(
    conn: &Connection,
    lease: &Lease,
    kind: &str,
    key: &str,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT OR IGNORE INTO lease_resources (lease_id, kind, key) VALUES (?1, ?2, ?3)",
        params![lease.id, kind, key],
    )?;
    Ok(())
}

/// Deletes a lease and its resource list; used in the same transaction that
/// makes the leased work reachable some other way.
pub fn delete_lease(conn: &Connection, lease: &Lease) -> rusqlite::Result<()> {
    conn.execute("DELETE FROM leases WHERE id = ?1", [&lease.id])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_leases_hold_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = Db::open(dir.path()).unwrap();
        let live = db.create_lease("pull", Duration::from_secs(3600)).unwrap();
        let dead = db.create_lease("pull", Duration::ZERO).unwrap();
        db.lease_add(&live, "content", "a").unwrap();
        db.lease_add(&dead, "content", "b").unwrap();
        assert_eq!(db.leased("content").unwrap(), vec!["a".to_string()]);
        db.write(|tx| delete_lease(tx, &live)).unwrap();
        assert!(db.leased("content").unwrap().is_empty());
    }
}
