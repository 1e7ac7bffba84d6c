//! Reading an OCI layout or a docker archive into the store.
//!
//! Order of work, and what a failure at each step leaves:
//! 1. Every entry is read once, in archive order. Files under `blobs/` are
//!    written to the content store's ingest area (one private ingest per
//!    blob, never shared with other processes) and checked against the
//!    digest their name claims; other payload files (an old docker
//!    archive's `layer.tar` and `<hex>.json`) are ingested the same way
//!    and named by the digest they hash to. `index.json` and
//!    `manifest.json` are kept in memory. Unsafe names, links outside the
//!    archive, devices, a digest mismatch or a truncated stream stop here.
//! 2. The images are worked out and checked: each root, manifest, config
//!    and layer must be in the archive with the size its descriptor says
//!    (a blob the store already has must still be in the archive: an
//!    archive is checked as a whole).
//! 3. Layers are unpacked from the ingest files into snapshots (committed
//!    snapshots are named by chain ID and verified by diff ID, as a pull
//!    makes them).
//! 4. A lease is taken on every blob, the blobs are committed (renamed
//!    into `blobs/sha256/`), and one transaction writes the content
//!    records, the image records, and drops the lease.
//!
//! Until step 4 nothing is visible in `content/blobs` or the database: a
//! failure removes the ingests, and a killed import leaves only private
//! ingest files. Blobs the images do not reach are never committed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{
    blob_digest, clean_path, Error, CONTAINERD_NAME, DOCKER_CONFIG, DOCKER_MANIFEST_JSON,
    DOCKER_REPOSITORIES, INDEX_JSON, OCI_LAYOUT, REF_NAME,
};
use crate::content::{Digest, Hasher, Store, Writer};
use crate::distribution::Reference;
use crate::image::extract::{self, Extracted};
use crate::image::follow::Follow;
use crate::image::manifest::{
    self, ConfigHead, Descriptor, DocumentKind, Index, Manifest, Platform,
};
use crate::image::resolve::stored_name;
use crate::image::UNPACKED_LABEL_PREFIX;
use crate::metadata::{self, ContentRecord, Db, ImageRecord, Labels};
use crate::snapshot::Snapshotter;
use crate::ErrorKind;

/// index.json, manifest.json and the like are read into memory; nothing
/// this large is one.
const MAX_DOCUMENT: u64 = manifest::MAX_CONFIG_SIZE;
const LEASE_TTL: Duration = Duration::from_secs(24 * 3600);
/// Symlink chains longer than this are refused.
const MAX_LINK_HOPS: usize = 8;

#[derive(Debug, Clone)]
pub enum Input {
    /// A directory (OCI layout) or a tar file, told apart by looking.
    Path(PathBuf),
    /// A tar stream on standard input, read once.
    Stdin,
}

impl std::fmt::Display for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Input::Path(p) => write!(f, "{}", p.display()),
            Input::Stdin => f.write_str("stdin"),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Name for the image; only when the archive holds exactly one.
    pub name: Option<Reference>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ImportedImage {
    pub name: String,
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    /// Where the name came from: `option` (--name), `annotation`
    /// (index.json), `repo-tag` (manifest.json) or `generated`.
    pub named_by: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unpacked: Option<Extracted>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ImportResult {
    pub images: Vec<ImportedImage>,
    /// Blobs the images reference.
    pub blobs: usize,
    /// Bytes of blobs this import added to the store.
    pub bytes_stored: u64,
}

/// Imports `input`; `snapshotter` unpacks each image's host platform.
/// `progress` receives one line per step, for stderr.
pub fn import(
    store: &Store,
    db: &mut Db,
    input: &Input,
    opts: &ImportOptions,
    snapshotter: Option<&dyn Snapshotter>,
    progress: &dyn Fn(&str),
) -> Result<ImportResult, Error> {
    let mut c = Collector::new(store, input.to_string());
    match input {
        Input::Stdin => c.read_tar(io::stdin().lock())?,
        Input::Path(p) => {
            let meta = fs::metadata(p).map_err(|e| c.io(format!("opening {}", p.display()), e))?;
            if meta.is_dir() {
                c.read_dir(p, "")?;
            } else {
                let file =
                    File::open(p).map_err(|e| c.io(format!("opening {}", p.display()), e))?;
                c.read_tar(file)?;
            }
        }
    }
    progress(&format!(
        "read {} blob(s), {} to store",
        c.blobs.len(),
        crate::cli::human_size(c.new_bytes())
    ));
    let plan = c.plan(opts)?;
    c.commit(db, plan, snapshotter, progress)
}

/// A verified blob from the archive, not yet visible in the store.
struct Held {
    size: u64,
    /// `None` when the store has the blob already (the archive's copy was
    /// hashed to check it, and dropped).
    writer: Option<Writer>,
}

/// Where the archive's blobs wait until everything is checked. Dropping it
/// removes every ingest not committed.
struct Collector<'a> {
    store: &'a Store,
    archive: String,
    blobs: HashMap<Digest, Held>,
    /// Payload files outside `blobs/` (old docker archives), by path.
    by_path: HashMap<String, Digest>,
    /// Symbolic links, path → target path (within the archive).
    links: HashMap<String, String>,
    index_json: Option<Vec<u8>>,
    manifest_json: Option<Vec<u8>>,
    /// Manifests made for old docker archives, which have none.
    made: HashMap<Digest, Vec<u8>>,
    seq: u64,
}

impl Drop for Collector<'_> {
    fn drop(&mut self) {
        for (_, held) in self.blobs.drain() {
            if let Some(w) = held.writer {
                w.abort();
            }
        }
    }
}

/// One image to record: its root and the manifests under it.
struct Planned {
    names: Vec<(String, &'static str)>,
    root: Descriptor,
    manifests: Vec<PlannedManifest>,
}

struct PlannedManifest {
    digest: Digest,
    /// As the descriptor naming it says.
    media_type: String,
    manifest: Manifest,
    config: Vec<u8>,
    platform: Platform,
}

#[derive(Deserialize)]
struct DockerEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
}

impl<'a> Collector<'a> {
    fn new(store: &'a Store, archive: String) -> Collector<'a> {
        Collector {
            store,
            archive,
            blobs: HashMap::new(),
            by_path: HashMap::new(),
            links: HashMap::new(),
            index_json: None,
            manifest_json: None,
            made: HashMap::new(),
            seq: 0,
        }
    }

    fn fail(&self, reason: impl Into<String>, kind: ErrorKind) -> Error {
        Error::Input {
            archive: self.archive.clone(),
            reason: reason.into(),
            kind,
        }
    }

    fn io(&self, what: String, source: io::Error) -> Error {
        Error::Io {
            archive: self.archive.clone(),
            what,
            source,
        }
    }

    /// A read error inside the archive: a stream that ends early is the
    /// usual cause.
    fn read_err(&self, path: &str, e: io::Error) -> Error {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            self.fail(
                format!("truncated archive: {path} ends before its declared size"),
                ErrorKind::DataLoss,
            )
        } else {
            self.fail(format!("reading {path}: {e}"), ErrorKind::DataLoss)
        }
    }

    fn new_bytes(&self) -> u64 {
        self.blobs
            .values()
            .filter(|h| h.writer.is_some())
            .map(|h| h.size)
            .sum()
    }

    fn read_tar(&mut self, input: impl Read) -> Result<(), Error> {
        let mut input = BufReader::with_capacity(1 << 20, input);
        let head = input.fill_buf().map_err(|e| self.io("reading".into(), e))?;
        if head.is_empty() {
            return Err(self.fail("empty input: not a tar archive", ErrorKind::InvalidArgument));
        }
        if head.starts_with(&[0x1f, 0x8b]) {
            return self.read_entries(flate2::read::GzDecoder::new(input));
        }
        self.read_entries(input)
    }

    fn read_entries(&mut self, input: impl Read) -> Result<(), Error> {
        let mut archive = tar::Archive::new(input);
        let entries = archive.entries().map_err(|e| {
            self.fail(
                format!("not a tar archive: {e}"),
                ErrorKind::InvalidArgument,
            )
        })?;
        for entry in entries {
            let mut entry = entry.map_err(|e| {
                self.fail(
                    format!("truncated or malformed tar archive: {e}"),
                    ErrorKind::DataLoss,
                )
            })?;
            let raw = entry
                .path()
                .map_err(|e| self.fail(format!("bad entry name: {e}"), ErrorKind::InvalidArgument))?
                .into_owned();
            let path = clean_path(&raw).map_err(|r| self.fail(r, ErrorKind::InvalidArgument))?;
            let kind = entry.header().entry_type();
            match kind {
                tar::EntryType::Directory
                | tar::EntryType::XGlobalHeader
                | tar::EntryType::XHeader => {}
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let size = entry.size();
                    self.file(&path, &mut entry, size)?;
                }
                tar::EntryType::Symlink => {
                    let target = entry
                        .link_name()
                        .map_err(|e| {
                            self.fail(format!("{path}: bad link: {e}"), ErrorKind::InvalidArgument)
                        })?
                        .ok_or_else(|| {
                            self.fail(format!("{path}: link without target"), ErrorKind::InvalidArgument)
                        })?
                        .into_owned();
                    self.link(&path, &target)?;
                }
                other => {
                    return Err(self.fail(
                        format!(
                            "entry {path:?} is a {}: only files, directories and symlinks between them belong in an image archive",
                            type_name(other)
                        ),
                        ErrorKind::InvalidArgument,
                    ))
                }
            }
        }
        Ok(())
    }

    /// Reads a layout directory; `rel` is the path inside it so far.
    fn read_dir(&mut self, dir: &Path, rel: &str) -> Result<(), Error> {
        let mut names: Vec<_> = fs::read_dir(dir)
            .map_err(|e| self.io(format!("reading {}", dir.display()), e))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(|e| self.io(format!("reading {}", dir.display()), e))?;
        names.sort();
        for name in names {
            let full = dir.join(&name);
            let path = clean_path(&Path::new(rel).join(&name))
                .map_err(|r| self.fail(r, ErrorKind::InvalidArgument))?;
            let meta = fs::symlink_metadata(&full)
                .map_err(|e| self.io(format!("reading {}", full.display()), e))?;
            let ft = meta.file_type();
            if ft.is_dir() {
                self.read_dir(&full, &path)?;
            } else if ft.is_file() {
                let mut f = File::open(&full).map_err(|e| self.io(format!("opening {path}"), e))?;
                self.file(&path, &mut f, meta.len())?;
            } else if ft.is_symlink() {
                let target =
                    fs::read_link(&full).map_err(|e| self.io(format!("reading link {path}"), e))?;
                self.link(&path, &target)?;
            } else {
                return Err(self.fail(
                    format!("{path:?} is not a file, directory or symlink"),
                    ErrorKind::InvalidArgument,
                ));
            }
        }
        Ok(())
    }

    /// Records a symlink as an alias; it is never created on disk, and it
    /// must point inside the archive.
    fn link(&mut self, path: &str, target: &Path) -> Result<(), Error> {
        let base = Path::new(path).parent().unwrap_or(Path::new(""));
        let joined = if target.is_absolute() {
            target.to_path_buf()
        } else {
            base.join(target)
        };
        // `a/../b` inside the archive is fine; only leaving it is not.
        let mut parts: Vec<String> = Vec::new();
        for c in joined.components() {
            use std::path::Component;
            match c {
                Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
                Component::CurDir => {}
                Component::ParentDir if parts.pop().is_some() => {}
                _ => {
                    return Err(self.fail(
                        format!(
                            "unsafe symlink {path:?} -> {:?}: it points outside the archive",
                            target.display()
                        ),
                        ErrorKind::InvalidArgument,
                    ))
                }
            }
        }
        self.links.insert(path.to_string(), parts.join("/"));
        Ok(())
    }

    fn file(&mut self, path: &str, data: &mut dyn Read, size: u64) -> Result<(), Error> {
        let small = |c: &Self, data: &mut dyn Read| -> Result<Vec<u8>, Error> {
            if size > MAX_DOCUMENT {
                return Err(c.fail(
                    format!("{path} is {size} bytes; that is too large for it"),
                    ErrorKind::InvalidArgument,
                ));
            }
            let mut buf = Vec::with_capacity(size as usize);
            data.take(size)
                .read_to_end(&mut buf)
                .map_err(|e| c.read_err(path, e))?;
            if (buf.len() as u64) < size {
                return Err(c.read_err(path, io::ErrorKind::UnexpectedEof.into()));
            }
            Ok(buf)
        };
        let base = path.rsplit('/').next().unwrap_or(path);
        match path {
            OCI_LAYOUT | DOCKER_REPOSITORIES => {
                small(self, data)?;
            }
            INDEX_JSON => self.index_json = Some(small(self, data)?),
            DOCKER_MANIFEST_JSON => self.manifest_json = Some(small(self, data)?),
            p if p.starts_with("blobs/") => {
                let digest =
                    blob_digest(p).map_err(|r| self.fail(r, ErrorKind::InvalidArgument))?;
                self.ingest(path, data, size, Some(digest))?;
            }
            // An old docker archive's per-layer metadata: not needed.
            _ if path.contains('/') && (base == "json" || base == "VERSION") => {
                small(self, data)?;
            }
            _ => {
                let digest = self.ingest(path, data, size, None)?;
                // `<hex>.json` is a config named by its digest.
                if let Some(hex) = base.strip_suffix(".json") {
                    if hex.len() == 64 && hex != digest.hex() {
                        return Err(self.fail(
                            format!("{path}: content hashes to {digest}, not what its name says"),
                            ErrorKind::DataLoss,
                        ));
                    }
                }
                self.by_path.insert(path.to_string(), digest);
            }
        }
        Ok(())
    }

    /// Streams one payload file into a private ingest, verifying it
    /// against `expected` when its name gives a digest. Returns its digest.
    fn ingest(
        &mut self,
        path: &str,
        data: &mut dyn Read,
        size: u64,
        expected: Option<Digest>,
    ) -> Result<Digest, Error> {
        let mismatch = |c: &Self, actual: Digest, got: u64| {
            c.fail(
                format!("{path}: content does not match its name: {got} bytes hashing to {actual}"),
                ErrorKind::DataLoss,
            )
        };
        let known = expected
            .as_ref()
            .is_some_and(|d| self.blobs.contains_key(d) || self.in_store(d).is_some());
        if known {
            // Already held or stored: hash the archive's copy only.
            let mut hasher = Hasher::new();
            let got = copy_hashing(&mut data.take(size), &mut hasher, &mut io::sink())
                .map_err(|e| self.read_err(path, e))?;
            if got < size {
                return Err(self.read_err(path, io::ErrorKind::UnexpectedEof.into()));
            }
            let actual = hasher.finish();
            let digest = expected.unwrap_or_else(|| actual.clone());
            if actual != digest {
                return Err(mismatch(self, actual, got));
            }
            self.blobs.entry(digest.clone()).or_insert(Held {
                size: got,
                writer: None,
            });
            return Ok(digest);
        }
        self.seq += 1;
        let reference = format!(
            "import-{}-{}-{}",
            std::process::id(),
            crate::metadata::now_ns(),
            self.seq
        );
        let content_err = |c: &Self, source: crate::content::Error| match &expected {
            Some(digest) => Error::Content {
                archive: c.archive.clone(),
                digest: digest.clone(),
                source,
            },
            None => c.fail(format!("storing {path}: {source}"), source.kind()),
        };
        let mut writer = self
            .store
            .writer(&reference)
            .map_err(|e| content_err(self, e))?;
        if writer.offset() != 0 {
            writer.reset().map_err(|e| content_err(self, e))?;
        }
        let copied = io::copy(&mut data.take(size), &mut writer);
        let got = match copied {
            Ok(n) if n == size => n,
            Ok(_) => {
                writer.abort();
                return Err(self.read_err(path, io::ErrorKind::UnexpectedEof.into()));
            }
            Err(e) => {
                writer.abort();
                return Err(self.read_err(path, e));
            }
        };
        let actual = writer.digest();
        if let Some(want) = &expected {
            if *want != actual {
                writer.abort();
                return Err(mismatch(self, actual, got));
            }
        }
        if self.blobs.contains_key(&actual) || self.in_store(&actual).is_some() {
            writer.abort();
            self.blobs.entry(actual.clone()).or_insert(Held {
                size: got,
                writer: None,
            });
        } else {
            self.blobs.insert(
                actual.clone(),
                Held {
                    size: got,
                    writer: Some(writer),
                },
            );
        }
        Ok(actual)
    }

    fn in_store(&self, digest: &Digest) -> Option<u64> {
        self.store.size(digest).ok().flatten()
    }

    /// The size of a blob the archive holds. A blob the store has but the
    /// archive lacks does not count: an archive must be whole.
    fn available(&self, digest: &Digest) -> Option<u64> {
        if let Some(bytes) = self.made.get(digest) {
            return Some(bytes.len() as u64);
        }
        self.blobs.get(digest).map(|h| h.size)
    }

    fn open(&self, digest: &Digest) -> Result<File, Error> {
        let content_err = |source| Error::Content {
            archive: self.archive.clone(),
            digest: digest.clone(),
            source,
        };
        match self.blobs.get(digest).and_then(|h| h.writer.as_ref()) {
            Some(w) => w.reopen().map_err(content_err),
            None => self.store.open_blob(digest).map_err(content_err),
        }
    }

    fn read_small(&self, digest: &Digest, what: &str) -> Result<Vec<u8>, Error> {
        if let Some(bytes) = self.made.get(digest) {
            return Ok(bytes.clone());
        }
        let size = self.available(digest).unwrap_or(0);
        if size > MAX_DOCUMENT {
            return Err(self.fail(
                format!("{what} {} is {size} bytes: too large", digest.short()),
                ErrorKind::InvalidArgument,
            ));
        }
        let mut buf = Vec::new();
        self.open(digest)?
            .read_to_end(&mut buf)
            .map_err(|e| self.io(format!("reading {what} {}", digest.short()), e))?;
        Ok(buf)
    }

    /// Checks that `desc` is present with its size.
    fn require(&self, desc: &Descriptor, what: &str, of: &str) -> Result<(), Error> {
        match self.available(&desc.digest) {
            Some(size) if size == desc.size => Ok(()),
            Some(size) => Err(self.fail(
                format!(
                    "{what} {} of {of} is {size} bytes, but its descriptor says {}",
                    desc.digest.short(),
                    desc.size
                ),
                ErrorKind::DataLoss,
            )),
            None => Err(self.fail(
                format!(
                    "{what} {} of {of} is missing from the archive",
                    desc.digest.short()
                ),
                ErrorKind::DataLoss,
            )),
        }
    }

    fn manifest(&self, desc: &Descriptor, of: &str) -> Result<PlannedManifest, Error> {
        self.require(desc, "manifest", of)?;
        let bytes = self.read_small(&desc.digest, "manifest")?;
        let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| {
            self.fail(
                format!("manifest {}: malformed: {e}", desc.digest.short()),
                ErrorKind::InvalidArgument,
            )
        })?;
        let of = format!("manifest {}", desc.digest.short());
        self.require(&m.config, "config", &of)?;
        for layer in &m.layers {
            self.require(layer, "layer", &of)?;
        }
        let config = self.read_small(&m.config.digest, "config")?;
        let head: ConfigHead = serde_json::from_slice(&config).map_err(|e| {
            self.fail(
                format!("config {}: malformed: {e}", m.config.digest.short()),
                ErrorKind::InvalidArgument,
            )
        })?;
        if head.rootfs.diff_ids.len() != m.layers.len() {
            return Err(self.fail(
                format!(
                    "{of} lists {} layers but its config has {} diff_ids",
                    m.layers.len(),
                    head.rootfs.diff_ids.len()
                ),
                ErrorKind::InvalidArgument,
            ));
        }
        Ok(PlannedManifest {
            digest: desc.digest.clone(),
            media_type: desc.media_type.clone(),
            platform: Platform {
                architecture: head.architecture,
                os: head.os,
                variant: head.variant,
            },
            manifest: m,
            config,
        })
    }

    /// Resolves a path `manifest.json` names, through symlinks.
    fn resolve_path(&self, path: &str) -> Result<Digest, Error> {
        let mut p =
            clean_path(Path::new(path)).map_err(|r| self.fail(r, ErrorKind::InvalidArgument))?;
        for _ in 0..MAX_LINK_HOPS {
            if let Some(target) = self.links.get(&p) {
                p = target.clone();
                continue;
            }
            if p.starts_with("blobs/") {
                return blob_digest(&p).map_err(|r| self.fail(r, ErrorKind::InvalidArgument));
            }
            return self.by_path.get(&p).cloned().ok_or_else(|| {
                self.fail(
                    format!("manifest.json names {path}, which is missing from the archive"),
                    ErrorKind::DataLoss,
                )
            });
        }
        Err(self.fail(
            format!("{path}: too many levels of symbolic links"),
            ErrorKind::InvalidArgument,
        ))
    }

    /// The layer's compression, from its first bytes (docker archives
    /// carry no media types).
    fn layer_media_type(&self, digest: &Digest) -> Result<&'static str, Error> {
        let mut head = [0u8; 4];
        let mut f = self.open(digest)?;
        let n = f
            .read(&mut head)
            .map_err(|e| self.io(format!("reading layer {}", digest.short()), e))?;
        Ok(match &head[..n] {
            [0x1f, 0x8b, ..] => "application/vnd.docker.image.rootfs.diff.tar.gzip",
            [0x28, 0xb5, 0x2f, 0xfd] => "application/vnd.oci.image.layer.v1.tar+zstd",
            _ => "application/vnd.docker.image.rootfs.diff.tar",
        })
    }

    fn plan(&mut self, opts: &ImportOptions) -> Result<Vec<Planned>, Error> {
        let docker: Option<Vec<DockerEntry>> = match &self.manifest_json {
            None => None,
            Some(bytes) => Some(serde_json::from_slice(bytes).map_err(|e| {
                self.fail(
                    format!("manifest.json: malformed: {e}"),
                    ErrorKind::InvalidArgument,
                )
            })?),
        };
        let mut planned = Vec::new();
        if let Some(bytes) = &self.index_json {
            let index: Index = serde_json::from_slice(bytes).map_err(|e| {
                self.fail(
                    format!("index.json: malformed: {e}"),
                    ErrorKind::InvalidArgument,
                )
            })?;
            for root in &index.manifests {
                let of = format!("index.json entry {}", root.digest.short());
                let kind = manifest::classify(&root.media_type)
                    .map_err(|r| self.fail(format!("{of}: {r}"), ErrorKind::InvalidArgument))?;
                let manifests = match kind {
                    DocumentKind::Manifest => vec![self.manifest(root, &of)?],
                    DocumentKind::Index => {
                        self.require(root, "index", &of)?;
                        let nested: Index =
                            serde_json::from_slice(&self.read_small(&root.digest, "index")?)
                                .map_err(|e| {
                                    self.fail(
                                        format!("index {}: malformed: {e}", root.digest.short()),
                                        ErrorKind::InvalidArgument,
                                    )
                                })?;
                        // Platforms left out of the archive (as a pull of
                        // one platform leaves them out) are skipped; every
                        // manifest that is here must be whole.
                        let mut found = Vec::new();
                        for d in &nested.manifests {
                            if manifest::classify(&d.media_type) == Ok(DocumentKind::Manifest)
                                && self.available(&d.digest).is_some()
                            {
                                found.push(self.manifest(d, &of)?);
                            }
                        }
                        if found.is_empty() {
                            return Err(self.fail(
                                format!("{of}: none of the index's manifests is in the archive"),
                                ErrorKind::DataLoss,
                            ));
                        }
                        found
                    }
                };
                let mut names = Vec::new();
                let ann = &root.annotations;
                if let Some(n) = ann.get(CONTAINERD_NAME) {
                    names.push((n.clone(), "annotation"));
                } else if let Some(n) = ann.get(REF_NAME).filter(|n| is_full_reference(n)) {
                    names.push((n.clone(), "annotation"));
                } else if let Some(entries) = &docker {
                    // docker 25+: the tags are in manifest.json.
                    for e in entries {
                        let same = self
                            .resolve_path(&e.config)
                            .is_ok_and(|d| manifests.iter().any(|m| m.manifest.config.digest == d));
                        if same {
                            for t in e.repo_tags.iter().flatten() {
                                names.push((t.clone(), "repo-tag"));
                            }
                        }
                    }
                }
                if names.is_empty() {
                    let tag = ann.get(REF_NAME).map(String::as_str).unwrap_or("latest");
                    names.push((
                        format!("import-{}:{tag}", &root.digest.hex()[..12]),
                        "generated",
                    ));
                }
                planned.push(Planned {
                    names,
                    root: root.clone(),
                    manifests,
                });
            }
        } else if let Some(entries) = &docker {
            for (i, e) in entries.iter().enumerate() {
                let of = format!("manifest.json entry {i}");
                let config_digest = self.resolve_path(&e.config)?;
                let config_size = self.available(&config_digest).ok_or_else(|| {
                    self.fail(
                        format!("{of}: config {} is missing from the archive", e.config),
                        ErrorKind::DataLoss,
                    )
                })?;
                let mut layers = Vec::new();
                for l in &e.layers {
                    let d = self.resolve_path(l)?;
                    let size = self.available(&d).ok_or_else(|| {
                        self.fail(
                            format!("{of}: layer {l} is missing from the archive"),
                            ErrorKind::DataLoss,
                        )
                    })?;
                    layers.push(json!({
                        "mediaType": self.layer_media_type(&d)?,
                        "size": size,
                        "digest": d,
                    }));
                }
                // The old docker form has no manifest blob: make the one a
                // registry would serve for this image.
                let doc = json!({
                    "schemaVersion": 2,
                    "mediaType": manifest::DOCKER_MANIFEST,
                    "config": {"mediaType": DOCKER_CONFIG, "size": config_size, "digest": config_digest},
                    "layers": layers,
                });
                let bytes = serde_json::to_vec_pretty(&doc)
                    .map_err(|e| self.fail(format!("{of}: {e}"), ErrorKind::Internal))?;
                let root = Descriptor {
                    media_type: manifest::DOCKER_MANIFEST.to_string(),
                    digest: Digest::of(&bytes),
                    size: bytes.len() as u64,
                    platform: None,
                    annotations: BTreeMap::new(),
                };
                self.made.insert(root.digest.clone(), bytes);
                let m = self.manifest(&root, &of)?;
                let mut names: Vec<(String, &'static str)> = e
                    .repo_tags
                    .iter()
                    .flatten()
                    .map(|t| (t.clone(), "repo-tag"))
                    .collect();
                if names.is_empty() {
                    names.push((
                        format!("import-{}:latest", &root.digest.hex()[..12]),
                        "generated",
                    ));
                }
                planned.push(Planned {
                    names,
                    root,
                    manifests: vec![m],
                });
            }
        } else {
            return Err(self.fail(
                "not an image archive: it has neither index.json (OCI layout) nor manifest.json (docker archive); is it truncated?",
                ErrorKind::DataLoss,
            ));
        }
        if planned.is_empty() {
            return Err(self.fail("the archive holds no image", ErrorKind::InvalidArgument));
        }
        if let Some(name) = &opts.name {
            if planned.len() != 1 {
                return Err(self.fail(
                    format!(
                        "--name needs an archive with one image; this one has {}",
                        planned.len()
                    ),
                    ErrorKind::InvalidArgument,
                ));
            }
            planned[0].names = vec![(stored_name(name), "option")];
        }
        // Names as references, normalised the way a pull records them.
        for p in &mut planned {
            for (name, _) in &mut p.names {
                let r: Reference = name.parse().map_err(|e| {
                    self.fail(
                        format!("image name {name:?} in the archive: {e}"),
                        ErrorKind::InvalidArgument,
                    )
                })?;
                *name = stored_name(&r);
            }
        }
        Ok(planned)
    }

    fn commit(
        mut self,
        db: &mut Db,
        planned: Vec<Planned>,
        snapshotter: Option<&dyn Snapshotter>,
        progress: &dyn Fn(&str),
    ) -> Result<ImportResult, Error> {
        // Content records, with the references garbage collection follows.
        let mut records: BTreeMap<Digest, ContentRecord> = BTreeMap::new();
        let mut record = |digest: &Digest, size: u64, media_type: &str, labels: Labels| {
            let rec = records.entry(digest.clone()).or_insert(ContentRecord {
                digest: digest.clone(),
                size,
                media_type: Some(media_type.to_string()),
                labels: Labels::new(),
            });
            rec.labels.extend(labels);
        };
        for p in &planned {
            if manifest::classify(&p.root.media_type) == Ok(DocumentKind::Index) {
                let labels = p
                    .manifests
                    .iter()
                    .enumerate()
                    .map(|(i, m)| {
                        (
                            format!("containerd.io/gc.ref.content.m.{i}"),
                            m.digest.to_string(),
                        )
                    })
                    .collect();
                record(&p.root.digest, p.root.size, &p.root.media_type, labels);
            }
            for m in &p.manifests {
                let mut labels = Labels::new();
                labels.insert(
                    "containerd.io/gc.ref.content.config".into(),
                    m.manifest.config.digest.to_string(),
                );
                for (i, l) in m.manifest.layers.iter().enumerate() {
                    labels.insert(
                        format!("containerd.io/gc.ref.content.l.{i}"),
                        l.digest.to_string(),
                    );
                }
                let size = self.available(&m.digest).unwrap_or(0);
                record(&m.digest, size, &m.media_type, labels);
                record(
                    &m.manifest.config.digest,
                    m.manifest.config.size,
                    &m.manifest.config.media_type,
                    Labels::new(),
                );
                for l in &m.manifest.layers {
                    record(&l.digest, l.size, &l.media_type, Labels::new());
                }
            }
        }

        // One lease holds the snapshots unpacked below and the blobs until
        // the records name them; the unpacker adds snapshots to it through
        // its own connection.
        let lease = db.create_lease("import", LEASE_TTL)?;
        let hold_db = match db.path().parent() {
            Some(root) if snapshotter.is_some() => Some(std::sync::Mutex::new(Db::open(root)?)),
            _ => None,
        };
        let hold = |key: &str| -> Result<(), crate::image::Error> {
            if let (Some(db), Some(s)) = (&hold_db, snapshotter) {
                let mut db = db.lock().unwrap_or_else(|p| p.into_inner());
                db.lease_add(&lease, &metadata::snapshot_lease_kind(s.name()), key)?;
            }
            Ok(())
        };
        // Unpack each image's host platform from the verified ingests.
        let host = Platform::host();
        let mut unpacked: Vec<Option<Extracted>> = Vec::new();
        let mut done: HashMap<Digest, Extracted> = HashMap::new();
        for p in &planned {
            let Some(snapshotter) = snapshotter else {
                unpacked.push(None);
                continue;
            };
            let chosen = if p.manifests.len() == 1 {
                p.manifests.first()
            } else {
                p.manifests.iter().find(|m| host.matches(&m.platform))
            };
            let Some(m) = chosen else {
                progress(&format!(
                    "{}: no manifest for {host} in the archive; not unpacked",
                    p.names[0].0
                ));
                unpacked.push(None);
                continue;
            };
            if let Some(x) = done.get(&m.manifest.config.digest) {
                unpacked.push(Some(x.clone()));
                continue;
            }
            let mut follows = HashMap::new();
            for l in &m.manifest.layers {
                let f = Follow::new();
                f.start(self.open(&l.digest)?, l.size);
                f.complete();
                follows.insert(l.digest.clone(), f);
            }
            let stop = AtomicBool::new(false);
            let job = extract::Job {
                reference: &p.names[0].0,
                config: &m.manifest.config,
                config_bytes: Some(&m.config),
                layers: &m.manifest.layers,
                follows: &follows,
                stop: &stop,
                hold: Some(&hold),
            };
            progress(&format!(
                "{}: unpacking {} layer(s) into {}",
                p.names[0].0,
                m.manifest.layers.len(),
                snapshotter.name()
            ));
            let x = extract::extract(snapshotter, self.store, &job)?;
            if let Some(top) = &x.snapshot {
                record(
                    &m.manifest.config.digest,
                    m.manifest.config.size,
                    &m.manifest.config.media_type,
                    Labels::from([(
                        format!("containerd.io/gc.ref.snapshot.{}", x.snapshotter),
                        top.clone(),
                    )]),
                );
            }
            done.insert(m.manifest.config.digest.clone(), x.clone());
            unpacked.push(Some(x));
        }

        // Make the blobs visible: under the lease, then one transaction.
        db.write(|tx| {
            for d in records.keys() {
                metadata::add_resource(tx, &lease, "content", &d.to_string())?;
            }
            Ok(())
        })?;
        let reachable: HashSet<&Digest> = records.keys().collect();
        let mut bytes_stored = 0u64;
        for digest in reachable.iter().copied() {
            if let Some(bytes) = self.made.get(digest) {
                self.store
                    .write_blob(digest, bytes)
                    .map_err(|source| Error::Content {
                        archive: self.archive.clone(),
                        digest: digest.clone(),
                        source,
                    })?;
                continue;
            }
            let Some(held) = self.blobs.get_mut(digest) else {
                continue;
            };
            if let Some(w) = held.writer.take() {
                let size = held.size;
                w.commit(size, digest).map_err(|source| Error::Content {
                    archive: self.archive.clone(),
                    digest: digest.clone(),
                    source,
                })?;
                bytes_stored += size;
            }
        }
        let mut images = Vec::new();
        let mut image_records = Vec::new();
        for (p, x) in planned.iter().zip(unpacked) {
            let mut labels = Labels::new();
            if let Some((x, top)) = x.as_ref().and_then(|x| x.snapshot.as_ref().map(|t| (x, t))) {
                labels.insert(
                    format!("{UNPACKED_LABEL_PREFIX}{}", x.snapshotter),
                    top.clone(),
                );
            }
            for (name, named_by) in &p.names {
                images.push(ImportedImage {
                    name: name.clone(),
                    digest: p.root.digest.clone(),
                    media_type: p.root.media_type.clone(),
                    size: p.root.size,
                    named_by,
                    unpacked: x.clone(),
                });
                image_records.push(ImageRecord {
                    name: name.clone(),
                    media_type: p.root.media_type.clone(),
                    digest: p.root.digest.clone(),
                    size: p.root.size,
                    labels: labels.clone(),
                    created_ns: 0,
                    updated_ns: 0,
                });
            }
        }
        let blobs = records.len();
        db.write(|tx| {
            for rec in records.values() {
                metadata::put_content(tx, rec)?;
            }
            for rec in &image_records {
                metadata::put_image(tx, rec)?;
                let attrs = Labels::from([("digest".to_string(), rec.digest.to_string())]);
                metadata::record_event(
                    tx,
                    metadata::EventType::Image,
                    metadata::events::action::IMPORT,
                    &rec.name,
                    &attrs,
                )?;
            }
            metadata::delete_lease(tx, &lease)
        })?;
        for i in &images {
            progress(&format!("{}: imported {}", i.name, i.digest));
        }
        Ok(ImportResult {
            images,
            blobs,
            bytes_stored,
        })
    }
}

/// Whether an index.json `ref.name` is a whole reference rather than a
/// tag: a tag cannot hold '/', ':' or '@'.
fn is_full_reference(name: &str) -> bool {
    name.contains(['/', ':', '@'])
}

fn copy_hashing(
    from: &mut dyn Read,
    hasher: &mut Hasher,
    to: &mut dyn io::Write,
) -> io::Result<u64> {
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        to.write_all(&buf[..n])?;
        total += n as u64;
    }
}

fn type_name(t: tar::EntryType) -> &'static str {
    match t {
        tar::EntryType::Link => "hard link",
        tar::EntryType::Char => "character device",
        tar::EntryType::Block => "block device",
        tar::EntryType::Fifo => "FIFO",
        tar::EntryType::GNUSparse => "sparse file",
        _ => "special entry",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ref_names_that_are_whole_references() {
        assert!(!is_full_reference("latest"));
        assert!(!is_full_reference("v1.2-rc"));
        assert!(is_full_reference("busybox:1"));
        assert!(is_full_reference("127.0.0.1:5000/a/b"));
    }

    #[test]
    fn symlinks_stay_inside_the_archive() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut c = Collector::new(&store, "test".into());
        c.link("a/layer.tar", Path::new("../b.tar")).unwrap();
        assert_eq!(c.links["a/layer.tar"], "b.tar");
        assert!(c.link("a/x", Path::new("../../etc/passwd")).is_err());
        assert!(c.link("x", Path::new("/etc/passwd")).is_err());
        c.link("loop1", Path::new("loop2")).unwrap();
        c.link("loop2", Path::new("loop1")).unwrap();
        let err = c.resolve_path("loop1").unwrap_err().to_string();
        assert!(err.contains("symbolic links"), "{err}");
    }

    #[test]
    fn a_failed_import_leaves_no_ingest() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        {
            let mut c = Collector::new(&store, "test".into());
            let data = b"some layer";
            let d = c.ingest("x/layer.tar", &mut &data[..], 10, None).unwrap();
            assert_eq!(d, Digest::of(data));
            let wrong = Digest::of(b"other");
            let path = format!("blobs/sha256/{}", wrong.hex());
            assert!(c.ingest(&path, &mut &data[..], 10, Some(wrong)).is_err());
            assert!(c
                .ingest("short", &mut &data[..], 20, None)
                .unwrap_err()
                .to_string()
                .contains("truncated"));
        }
        let ingest = fs::read_dir(dir.path().join("content/ingest")).unwrap();
        assert_eq!(ingest.count(), 0);
        assert_eq!(store.size(&Digest::of(b"some layer")).unwrap(), None);
    }
}
