//! Whole-table reads for listings and the store check: one statement per
//! table, so listing stays fast however many rows there are.

use super::{labels_from_json, Db, Error, Result};
use super::{ContainerRecord, ContentRecord, Labels};
use crate::content::Digest;

/// `columns` (a comma-separated select list) with the plain column
/// `name` replaced by the expression `with`.
fn replace_column(columns: &str, name: &str, with: &str) -> String {
    columns
        .split(',')
        .map(|c| {
            if c.trim() == name {
                format!(" {with}")
            } else {
                c.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

impl Db {
    /// Every container, reconciled like [`Db::containers_reconciled`],
    /// oldest first, but without the spec (left empty): a listing has no
    /// use for each container's `config.json` text, and reading it for
    /// thousands of containers is most of the work. Nor are the cgroup and
    /// log paths, which no listing shows. Unless `full`, the fields a table
    /// does not show are left empty too (image digest, snapshotter,
    /// snapshot key, runtime, labels): every string read is an allocation,
    /// and a listing reads many.
    pub fn containers_listing(&mut self, full: bool) -> Result<Vec<ContainerRecord>> {
        let lean: &[&str] = if full {
            &["cgroup_path", "log_path"]
        } else {
            &[
                "cgroup_path",
                "log_path",
                "image_digest",
                "snapshotter",
                "snapshot_key",
                "runtime",
                "labels",
            ]
        };
        let mut recs = self.containers_without(lean)?;
        self.reconcile_all(&mut recs)?;
        Ok(recs)
    }

    /// Every container as recorded, oldest first, without the spec and
    /// without reconciling: for readers that check each container's
    /// process themselves every time they look, like a monitor sampling
    /// every second, and must not take the write lock to do it.
    pub fn containers_brief(&self) -> Result<Vec<ContainerRecord>> {
        self.containers_without(&[])
    }

    /// Every container as recorded, oldest first, with the spec and the
    /// `left_out` columns read as empty.
    fn containers_without(&self, left_out: &[&str]) -> Result<Vec<ContainerRecord>> {
        let mut columns = super::containers::COLUMNS.replace(super::containers::SPEC_COLUMN, "''");
        for column in left_out {
            let empty = match *column {
                "labels" => "'{}'",
                "snapshotter" | "snapshot_key" | "runtime" => "''",
                _ => "NULL",
            };
            columns = replace_column(&columns, column, empty);
        }
        let mut recs = self.read(|c| {
            let mut stmt = c.prepare_cached(&format!("SELECT {columns} FROM containers"))?;
            let rows = stmt.query_map([], super::containers::from_row)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        recs.sort_by(|a, b| (a.created_ns, &a.id).cmp(&(b.created_ns, &b.id)));
        Ok(recs)
    }

    /// Every content record, by digest.
    pub fn contents(&self) -> Result<Vec<ContentRecord>> {
        let rows = self.read(|c| {
            let mut stmt =
                c.prepare("SELECT digest, size, media_type, labels FROM content ORDER BY digest")?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, String>(3)?,
                ))
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        rows.into_iter()
            .map(|(digest, size, media_type, labels)| {
                let parsed: Digest = digest.parse().map_err(|e| Error::Corrupt {
                    what: format!("content {digest}"),
                    reason: format!("{e}"),
                })?;
                let labels: Labels = labels_from_json(&digest, &labels)?;
                Ok(ContentRecord {
                    digest: parsed,
                    size: size as u64,
                    media_type,
                    labels,
                })
            })
            .collect()
    }

    /// Every resource (`kind`, `key`) held by an unexpired lease.
    pub fn leased_all(&self) -> Result<Vec<(String, String)>> {
        self.read(|c| {
            let mut stmt = c.prepare(
                "SELECT DISTINCT r.kind, r.key FROM lease_resources r
                 JOIN leases l ON l.id = r.lease_id
                 WHERE l.expires_ns IS NULL OR l.expires_ns > ?1",
            )?;
            let rows = stmt.query_map([super::now_ns()], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::put_content;

    #[test]
    fn lean_listing_leaves_out_only_what_it_names() {
        let lean = replace_column("id, labels, (SELECT x FROM t), log_path", "labels", "'{}'");
        assert_eq!(lean, "id, '{}', (SELECT x FROM t), log_path");
        let mut all = crate::metadata::containers::COLUMNS.to_string();
        for c in [
            "image_digest",
            "snapshotter",
            "snapshot_key",
            "runtime",
            "labels",
            "cgroup_path",
            "log_path",
        ] {
            let next = replace_column(&all, c, "NULL");
            assert_ne!(next, all, "{c} is not a column of the listing");
            all = next;
        }
    }

    #[test]
    fn contents_lists_every_record() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = Db::open(dir.path()).unwrap();
        for data in [&b"a"[..], b"b"] {
            let rec = ContentRecord {
                digest: Digest::of(data),
                size: 1,
                media_type: Some("m".into()),
                labels: Labels::from([("k".to_string(), "v".to_string())]),
            };
            db.write(|tx| put_content(tx, &rec)).unwrap();
        }
        let all = db.contents().unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].labels["k"], "v");
        assert!(db.leased_all().unwrap().is_empty());
        assert!(
            crate::metadata::containers::COLUMNS.contains(crate::metadata::containers::SPEC_COLUMN)
        );
        assert!(db.containers_listing(true).unwrap().is_empty());
        assert!(db.containers_listing(false).unwrap().is_empty());
        assert!(db.containers_brief().unwrap().is_empty());
    }
}
