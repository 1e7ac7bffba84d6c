use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use super::{labels_from_json, labels_to_json, now_ns, Db, Error, Labels, Result};
use crate::content::Digest;

/// A name (`docker.io/library/busybox:latest`) pointing at a root
/// descriptor: a manifest or an index.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImageRecord {
    pub name: String,
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    pub labels: Labels,
    pub created_ns: i64,
    pub updated_ns: i64,
}

/// What the store knows about one blob beyond its bytes: its media type and
/// labels, among them the `containerd.io/gc.ref.content.*` references to
/// the blobs it names, which garbage collection follows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContentRecord {
    pub digest: Digest,
    pub size: u64,
    pub media_type: Option<String>,
    pub labels: Labels,
}

fn parse_digest(what: &str, text: String) -> rusqlite::Result<Digest> {
    text.parse().map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            Box::new(Error::Corrupt {
                what: what.to_string(),
                reason: format!("{e}"),
            }),
        )
    })
}

fn image_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<(ImageRecord, String)> {
    let name: String = row.get(0)?;
    let labels: String = row.get(4)?;
    Ok((
        ImageRecord {
            media_type: row.get(1)?,
            digest: parse_digest(&name, row.get(2)?)?,
            size: row.get::<_, i64>(3)? as u64,
            labels: Labels::new(),
            created_ns: row.get(5)?,
            updated_ns: row.get(6)?,
            name,
        },
        labels,
    ))
}

const IMAGE_COLUMNS: &str = "name, media_type, digest, size, labels, created_ns, updated_ns";

/// Inserts or replaces the image `rec.name`, keeping its creation time.
pub fn put_image(conn: &Connection, rec: &ImageRecord) -> rusqlite::Result<()> {
    let now = now_ns();
    conn.execute(
        "INSERT INTO images (name, media_type, digest, size, labels, created_ns, updated_ns)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)
         ON CONFLICT(name) DO UPDATE SET media_type = excluded.media_type,
             digest = excluded.digest, size = excluded.size,
             labels = excluded.labels, updated_ns = excluded.updated_ns",
        params![
            rec.name,
            rec.media_type,
            rec.digest.to_string(),
            rec.size as i64,
            labels_to_json(&rec.labels),
            now
        ],
    )?;
    Ok(())
}

/// Inserts or updates a content record. Labels given here are merged over
/// the existing ones, so two images naming one blob keep both's labels.
pub fn put_content(conn: &Connection, rec: &ContentRecord) -> rusqlite::Result<()> {
    let now = now_ns();
    let existing: Option<String> = conn
        .query_row(
            "SELECT labels FROM content WHERE digest = ?1",
            [rec.digest.to_string()],
            |r| r.get(0),
        )
        .optional()?;
    let mut labels: Labels = existing
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    labels.extend(rec.labels.clone());
    conn.execute(
        "INSERT INTO content (digest, size, media_type, labels, created_ns, updated_ns)
         VALUES (?1, ?2, ?3, ?4, ?5, ?5)
         ON CONFLICT(digest) DO UPDATE SET size = excluded.size,
             media_type = COALESCE(excluded.media_type, content.media_type),
             labels = excluded.labels, updated_ns = excluded.updated_ns",
        params![
            rec.digest.to_string(),
            rec.size as i64,
            rec.media_type,
            labels_to_json(&labels),
            now
        ],
    )?;
    Ok(())
}

/// Deletes the image `name`. Returns whether it existed.
pub fn delete_image(conn: &Connection, name: &str) -> rusqlite::Result<bool> {
    Ok(conn.execute("DELETE FROM images WHERE name = ?1", [name])? > 0)
}

impl Db {
    pub fn image(&self, name: &str) -> Result<Option<ImageRecord>> {
        let row = self.read(|c| {
            c.query_row(
                &format!("SELECT {IMAGE_COLUMNS} FROM images WHERE name = ?1"),
                [name],
                image_from_row,
            )
            .optional()
        })?;
        row.map(|(mut rec, labels)| {
            rec.labels = labels_from_json(&rec.name, &labels)?;
            Ok(rec)
        })
        .transpose()
    }

    pub fn images(&self) -> Result<Vec<ImageRecord>> {
        let rows = self.read(|c| {
            let mut stmt =
                c.prepare(&format!("SELECT {IMAGE_COLUMNS} FROM images ORDER BY name"))?;
            let rows = stmt.query_map([], image_from_row)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        rows.into_iter()
            .map(|(mut rec, labels)| {
                rec.labels = labels_from_json(&rec.name, &labels)?;
                Ok(rec)
            })
            .collect()
    }

    pub fn content(&self, digest: &Digest) -> Result<Option<ContentRecord>> {
        let row = self.read(|c| {
            c.query_row(
                "SELECT size, media_type, labels FROM content WHERE digest = ?1",
                [digest.to_string()],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, Option<String>>(1)?,
                        r.get::<_, String>(2)?,
                    ))
                },
            )
            .optional()
        })?;
        row.map(|(size, media_type, labels)| {
            Ok(ContentRecord {
                digest: digest.clone(),
                size: size as u64,
                media_type,
                labels: labels_from_json(&digest.to_string(), &labels)?,
            })
        })
        .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, data: &[u8]) -> ImageRecord {
        ImageRecord {
            name: name.to_string(),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: Digest::of(data),
            size: data.len() as u64,
            labels: Labels::from([("k".to_string(), "v".to_string())]),
            created_ns: 0,
            updated_ns: 0,
        }
    }

    #[test]
    fn images_round_trip_and_keep_creation_time() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = Db::open(dir.path()).unwrap();
        db.write(|tx| put_image(tx, &record("a:1", b"one")))
            .unwrap();
        let first = db.image("a:1").unwrap().unwrap();
        assert_eq!(first.digest, Digest::of(b"one"));
        assert_eq!(first.labels["k"], "v");
        db.write(|tx| put_image(tx, &record("a:1", b"two")))
            .unwrap();
        let second = db.image("a:1").unwrap().unwrap();
        assert_eq!(second.digest, Digest::of(b"two"));
        assert_eq!(second.created_ns, first.created_ns);
        assert!(db.image("b:1").unwrap().is_none());
        assert_eq!(db.images().unwrap().len(), 1);
    }

    #[test]
    fn content_labels_merge() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = Db::open(dir.path()).unwrap();
        let d = Digest::of(b"blob");
        let mk = |k: &str| ContentRecord {
            digest: d.clone(),
            size: 4,
            media_type: None,
            labels: Labels::from([(k.to_string(), "x".to_string())]),
        };
        db.write(|tx| put_content(tx, &mk("a"))).unwrap();
        db.write(|tx| put_content(tx, &mk("b"))).unwrap();
        let rec = db.content(&d).unwrap().unwrap();
        assert_eq!(rec.labels.len(), 2);
    }
}
