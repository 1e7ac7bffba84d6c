//! Images as files: OCI image layouts (a directory or a tar of one) and
//! `docker save` tarballs, written by [`export`] and read by [`import`].
//!
//! An OCI layout is `oci-layout`, `index.json` (one descriptor per image,
//! named by annotations) and `blobs/sha256/<hex>`. A docker archive has
//! `manifest.json` (config and layer paths per image, with its tags) and,
//! since docker 25, the same OCI layout beside it; older ones keep each
//! layer as an uncompressed `<id>/layer.tar` and the config as `<hex>.json`,
//! with no manifest blob at all.
//!
//! Import is built for input that can be read only once (a pipe) and that
//! may be hostile: entries are streamed into the content store's ingest
//! area as they come, each verified against the digest its name claims,
//! and nothing becomes a blob or a record before the whole archive is read
//! and every blob the images need is there. Then the blobs are committed
//! under a lease and one transaction writes the records, as a pull does.

mod export;
mod import;

pub use export::{export, ExportFormat, ExportOptions, ExportResult, ExportedImage, Output};
pub use import::{import, ImportOptions, ImportResult, ImportedImage, Input};

use crate::content::{self, Digest};
use crate::{metadata, snapshot, ErrorKind};

/// The annotation naming an image in an OCI layout: a tag (`1.0`), or a
/// whole reference when a tool writes one.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// The annotation containerd (and docker 25+) puts the full image name in.
pub const CONTAINERD_NAME: &str = "io.containerd.image.name";

const OCI_LAYOUT: &str = "oci-layout";
const OCI_LAYOUT_CONTENT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
const INDEX_JSON: &str = "index.json";
const DOCKER_MANIFEST_JSON: &str = "manifest.json";
const DOCKER_REPOSITORIES: &str = "repositories";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The archive (or what was asked of it) is wrong: unsafe, malformed,
    /// incomplete, or an image is not in the store.
    #[error("{archive}: {reason}")]
    Input {
        archive: String,
        reason: String,
        kind: ErrorKind,
    },
    #[error("{archive}: {what}: {source}")]
    Io {
        archive: String,
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{archive}: blob {}: {source}", digest.short())]
    Content {
        archive: String,
        digest: Digest,
        #[source]
        source: content::Error,
    },
    #[error(transparent)]
    Metadata(#[from] metadata::Error),
    #[error(transparent)]
    Image(#[from] Box<super::Error>),
    #[error(transparent)]
    Snapshot(#[from] snapshot::Error),
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Input { kind, .. } => *kind,
            Error::Io { .. } => ErrorKind::Internal,
            Error::Content { source, .. } => source.kind(),
            Error::Metadata(e) => e.kind(),
            Error::Image(e) => e.kind(),
            Error::Snapshot(e) => e.kind(),
        }
    }
}

impl From<super::Error> for Error {
    fn from(e: super::Error) -> Self {
        Error::Image(Box::new(e))
    }
}

/// A tar entry's or file's path inside an archive, made relative and
/// normal (`./a//b` → `a/b`). Absolute paths and `..` are refused: berth
/// never writes archive paths to disk, but a name that tries to leave the
/// archive is a sign of a hostile or broken file.
pub(crate) fn clean_path(raw: &std::path::Path) -> Result<String, String> {
    use std::path::Component;
    let mut parts: Vec<&str> = Vec::new();
    for c in raw.components() {
        match c {
            Component::Normal(p) => parts.push(
                p.to_str()
                    .ok_or_else(|| format!("entry name {raw:?} is not UTF-8"))?,
            ),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(format!(
                    "unsafe entry name {:?}: it contains '..'",
                    raw.display()
                ))
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!(
                    "unsafe entry name {:?}: it is absolute",
                    raw.display()
                ))
            }
        }
    }
    Ok(parts.join("/"))
}

/// The digest a path under `blobs/` names: only `blobs/sha256/<64 hex>` is
/// a blob path.
pub(crate) fn blob_digest(path: &str) -> Result<Digest, String> {
    let bad = || format!("{path:?} is not a blob path (blobs/sha256/<64 hex digits>)");
    let rest = path.strip_prefix("blobs/").ok_or_else(bad)?;
    let (alg, hex) = rest.split_once('/').ok_or_else(bad)?;
    if alg != "sha256" {
        return Err(format!(
            "{path:?}: digest algorithm {alg:?} is not supported (only sha256)"
        ));
    }
    if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(bad());
    }
    format!("sha256:{hex}").parse().map_err(|_| bad())
}

/// `blobs/sha256/<hex>` for `digest`.
pub(crate) fn blob_path(digest: &Digest) -> String {
    format!("blobs/{}/{}", digest.algorithm(), digest.hex())
}

/// The short form docker prints and writes in `RepoTags`:
/// `docker.io/library/busybox:1` → `busybox:1`, `docker.io/a/b:1` → `a/b:1`.
pub(crate) fn familiar_name(name: &str) -> String {
    let rest = match name.strip_prefix("docker.io/") {
        Some(r) => r,
        None => return name.to_string(),
    };
    rest.strip_prefix("library/")
        .filter(|r| !r.contains('/'))
        .unwrap_or(rest)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn entry_paths_are_cleaned_or_refused() {
        assert_eq!(
            clean_path(Path::new("./blobs//sha256/x")).unwrap(),
            "blobs/sha256/x"
        );
        assert_eq!(clean_path(Path::new("./")).unwrap(), "");
        assert!(clean_path(Path::new("../x")).unwrap_err().contains(".."));
        assert!(clean_path(Path::new("a/../../x")).is_err());
        assert!(clean_path(Path::new("/etc/x"))
            .unwrap_err()
            .contains("absolute"));
    }

    #[test]
    fn blob_paths() {
        let d = Digest::of(b"x");
        assert_eq!(blob_digest(&blob_path(&d)).unwrap(), d);
        assert!(blob_digest("blobs/sha256/abc").is_err());
        assert!(blob_digest("blobs/sha512/abc")
            .unwrap_err()
            .contains("sha512"));
        assert!(blob_digest(&format!("blobs/sha256/{}/x", d.hex())).is_err());
        assert!(blob_digest(&format!("blobs/sha256/{}", d.hex().to_uppercase())).is_err());
    }

    #[test]
    fn familiar_names() {
        assert_eq!(familiar_name("docker.io/library/busybox:1"), "busybox:1");
        assert_eq!(familiar_name("docker.io/a/b:1"), "a/b:1");
        assert_eq!(familiar_name("127.0.0.1:5000/x:1"), "127.0.0.1:5000/x:1");
    }
}
