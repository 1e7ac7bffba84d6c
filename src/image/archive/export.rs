//! Writing stored images out as an OCI layout or a docker archive.
//!
//! Every blob is copied from the content store and hashed on the way, so
//! a damaged store is reported instead of exported. Tar entries carry a
//! fixed mtime, owner and mode, and are written in a fixed order, so one
//! image exported twice gives the same bytes. A tar file is written under
//! a temporary name and renamed into place when complete.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::json;

use super::{
    blob_path, familiar_name, Error, CONTAINERD_NAME, DOCKER_MANIFEST_JSON, DOCKER_REPOSITORIES,
    INDEX_JSON, OCI_LAYOUT, OCI_LAYOUT_CONTENT, REF_NAME,
};
use crate::content::{Digest, Hasher, Store};
use crate::distribution::Reference;
use crate::image::manifest::{self, DocumentKind, Index, Manifest, Platform};
use crate::image::resolve::stored_name;
use crate::image::resolve_local;
use crate::metadata::Db;
use crate::ErrorKind;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    /// An OCI image layout: every stored platform of each image.
    Oci,
    /// A `docker save` tarball (with the OCI layout inside, as docker 25+
    /// writes it): one platform per image.
    Docker,
}

#[derive(Debug, Clone)]
pub enum Output {
    Dir(PathBuf),
    Tar(PathBuf),
    Stdout,
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Output::Dir(p) => write!(f, "{}/", p.display()),
            Output::Tar(p) => write!(f, "{}", p.display()),
            Output::Stdout => f.write_str("-"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ExportOptions {
    pub format: ExportFormat,
    /// The platform a docker archive is written for.
    pub platform: Platform,
}

#[derive(Debug, Clone, Serialize)]
pub struct ExportedImage {
    pub name: String,
    /// The digest index.json names: the image's root (OCI), or the
    /// platform's manifest (docker).
    pub digest: Digest,
    pub media_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ref_name: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ExportResult {
    pub output: String,
    pub format: ExportFormat,
    pub images: Vec<ExportedImage>,
    pub blobs: usize,
    pub bytes: u64,
}

/// One image, planned: its index.json descriptor, and for docker its
/// manifest.json entry.
struct Planned {
    image: ExportedImage,
    size: u64,
    docker: Option<(Digest, Vec<Digest>)>,
}

/// Writes `references` (stored images) to `output`. `progress` receives
/// one line per step, for stderr.
pub fn export(
    store: &Store,
    db: &Db,
    references: &[Reference],
    output: &Output,
    opts: &ExportOptions,
    progress: &dyn Fn(&str),
) -> Result<ExportResult, Error> {
    let archive = output.to_string();
    let fail = |reason: String, kind: ErrorKind| Error::Input {
        archive: archive.clone(),
        reason,
        kind,
    };
    let mut blobs: Vec<(Digest, u64)> = Vec::new();
    let mut seen = HashSet::new();
    let mut add = |d: &Digest, size: u64| {
        if seen.insert(d.clone()) {
            blobs.push((d.clone(), size));
        }
    };
    let mut planned: Vec<Planned> = Vec::new();
    for reference in references {
        let name = stored_name(reference);
        let record = db.image(&name)?.ok_or_else(|| {
            fail(
                format!("image {name} is not in the store"),
                ErrorKind::NotFound,
            )
        })?;
        let check = |d: &Digest, size: u64, what: &str| -> Result<(), Error> {
            match store.size(d).map_err(|source| Error::Content {
                archive: archive.clone(),
                digest: d.clone(),
                source,
            })? {
                Some(s) if s == size => Ok(()),
                Some(s) => Err(fail(
                    format!(
                        "{name}: {what} {} is {s} bytes in the store, {size} in its descriptor",
                        d.short()
                    ),
                    ErrorKind::DataLoss,
                )),
                None => Err(fail(
                    format!(
                        "{name}: {what} {} is missing from the content store (pulled with another platform, or removed?)",
                        d.short()
                    ),
                    ErrorKind::NotFound,
                )),
            }
        };
        let read_manifest = |d: &Digest| -> Result<Manifest, Error> {
            let bytes = store.read(d).map_err(|source| Error::Content {
                archive: archive.clone(),
                digest: d.clone(),
                source,
            })?;
            serde_json::from_slice(&bytes).map_err(|e| {
                fail(
                    format!("{name}: manifest {}: malformed: {e}", d.short()),
                    ErrorKind::DataLoss,
                )
            })
        };
        let ref_name = reference.tag.clone();
        match opts.format {
            ExportFormat::Oci => {
                check(&record.digest, record.size, "root")?;
                add(&record.digest, record.size);
                let kind = manifest::classify(&record.media_type)
                    .map_err(|e| fail(format!("{name}: {e}"), ErrorKind::InvalidArgument))?;
                let manifests: Vec<Digest> = match kind {
                    DocumentKind::Manifest => vec![record.digest.clone()],
                    DocumentKind::Index => {
                        let bytes =
                            store
                                .read(&record.digest)
                                .map_err(|source| Error::Content {
                                    archive: archive.clone(),
                                    digest: record.digest.clone(),
                                    source,
                                })?;
                        let index: Index = serde_json::from_slice(&bytes).map_err(|e| {
                            fail(
                                format!("{name}: index: malformed: {e}"),
                                ErrorKind::DataLoss,
                            )
                        })?;
                        // A pull stores only the platforms it was asked
                        // for; the layout gets those, and the index keeps
                        // naming the others, as the registry's does.
                        let mut present = Vec::new();
                        for d in &index.manifests {
                            if manifest::classify(&d.media_type) == Ok(DocumentKind::Manifest)
                                && store.size(&d.digest).ok().flatten() == Some(d.size)
                            {
                                add(&d.digest, d.size);
                                present.push(d.digest.clone());
                            }
                        }
                        if present.is_empty() {
                            return Err(fail(
                                format!("{name}: none of the index's manifests is in the store"),
                                ErrorKind::NotFound,
                            ));
                        }
                        present
                    }
                };
                for m in &manifests {
                    let m = read_manifest(m)?;
                    check(&m.config.digest, m.config.size, "config")?;
                    add(&m.config.digest, m.config.size);
                    for l in &m.layers {
                        check(&l.digest, l.size, "layer")?;
                        add(&l.digest, l.size);
                    }
                }
                planned.push(Planned {
                    image: ExportedImage {
                        name: name.clone(),
                        digest: record.digest.clone(),
                        media_type: record.media_type.clone(),
                        ref_name,
                    },
                    size: record.size,
                    docker: None,
                });
            }
            ExportFormat::Docker => {
                let local =
                    resolve_local(store, db, reference, &opts.platform)?.ok_or_else(|| {
                        fail(
                            format!("image {name} is not in the store"),
                            ErrorKind::NotFound,
                        )
                    })?;
                let bytes = store
                    .read(&local.manifest)
                    .map_err(|source| Error::Content {
                        archive: archive.clone(),
                        digest: local.manifest.clone(),
                        source,
                    })?;
                let m = read_manifest(&local.manifest)?;
                add(&local.manifest, bytes.len() as u64);
                check(&m.config.digest, m.config.size, "config")?;
                add(&m.config.digest, m.config.size);
                for l in &m.layers {
                    check(&l.digest, l.size, "layer")?;
                    add(&l.digest, l.size);
                }
                let media_type = m.media_type.clone().unwrap_or_else(|| {
                    if local.manifest == record.digest {
                        record.media_type.clone()
                    } else {
                        manifest::OCI_MANIFEST.to_string()
                    }
                });
                planned.push(Planned {
                    image: ExportedImage {
                        name: name.clone(),
                        digest: local.manifest.clone(),
                        media_type,
                        ref_name,
                    },
                    size: bytes.len() as u64,
                    docker: Some((
                        m.config.digest.clone(),
                        m.layers.iter().map(|l| l.digest.clone()).collect(),
                    )),
                });
            }
        }
        progress(&format!(
            "{name}: {}",
            planned
                .last()
                .map(|p| &p.image.digest)
                .unwrap_or(&record.digest)
        ));
    }

    let index = json!({
        "schemaVersion": 2,
        "mediaType": manifest::OCI_INDEX,
        "manifests": planned.iter().map(|p| {
            let mut annotations = BTreeMap::new();
            annotations.insert(CONTAINERD_NAME, p.image.name.clone());
            if let Some(tag) = &p.image.ref_name {
                annotations.insert(REF_NAME, tag.clone());
            }
            json!({
                "mediaType": p.image.media_type,
                "digest": p.image.digest,
                "size": p.size,
                "annotations": annotations,
            })
        }).collect::<Vec<_>>(),
    });
    let index = to_json(&index);

    let io_fail = |what: String| {
        let archive = archive.clone();
        move |source| Error::Io {
            archive,
            what,
            source,
        }
    };
    let mut sink: Box<dyn Sink> = match output {
        Output::Dir(dir) => Box::new(DirSink::create(dir).map_err(io_fail("creating".into()))?),
        Output::Tar(path) => {
            Box::new(TarSink::file(path).map_err(io_fail("creating the tar file".into()))?)
        }
        Output::Stdout => Box::new(TarSink::new(
            Box::new(BufWriter::with_capacity(1 << 20, io::stdout())) as Box<dyn Write>,
            None,
        )),
    };
    sink.dir("blobs/").map_err(io_fail("writing".into()))?;
    sink.dir("blobs/sha256/")
        .map_err(io_fail("writing".into()))?;
    sink.file(OCI_LAYOUT, OCI_LAYOUT_CONTENT)
        .map_err(io_fail(OCI_LAYOUT.into()))?;
    let mut bytes = 0u64;
    for (digest, size) in &blobs {
        let file = store.open_blob(digest).map_err(|source| Error::Content {
            archive: archive.clone(),
            digest: digest.clone(),
            source,
        })?;
        let mut reader = Verifying {
            inner: file,
            hasher: Hasher::new(),
            read: 0,
        };
        sink.blob(digest, *size, &mut reader)
            .map_err(io_fail(format!("writing blob {}", digest.short())))?;
        let actual = std::mem::take(&mut reader.hasher).finish();
        if &actual != digest || reader.read != *size {
            return Err(fail(
                format!(
                    "blob {} in the content store is damaged: it hashes to {actual} ({} bytes)",
                    digest.short(),
                    reader.read
                ),
                ErrorKind::DataLoss,
            ));
        }
        bytes += size;
    }
    if opts.format == ExportFormat::Docker {
        let entries: Vec<_> = planned
            .iter()
            .filter_map(|p| {
                let (config, layers) = p.docker.as_ref()?;
                let tags: Vec<String> = p
                    .image
                    .ref_name
                    .as_ref()
                    .map(|_| familiar_name(&p.image.name))
                    .into_iter()
                    .collect();
                Some(json!({
                    "Config": blob_path(config),
                    "RepoTags": tags,
                    "Layers": layers.iter().map(blob_path).collect::<Vec<_>>(),
                }))
            })
            .collect();
        sink.file(DOCKER_MANIFEST_JSON, &to_json(&entries))
            .map_err(io_fail(DOCKER_MANIFEST_JSON.into()))?;
        let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for p in &planned {
            let (Some(tag), Some((_, layers))) = (&p.image.ref_name, &p.docker) else {
                continue;
            };
            let familiar = familiar_name(&p.image.name);
            let repo = familiar
                .strip_suffix(&format!(":{tag}"))
                .unwrap_or(&familiar)
                .to_string();
            if let Some(top) = layers.last() {
                repositories
                    .entry(repo)
                    .or_default()
                    .insert(tag.clone(), top.hex().to_string());
            }
        }
        sink.file(DOCKER_REPOSITORIES, &to_json(&repositories))
            .map_err(io_fail(DOCKER_REPOSITORIES.into()))?;
    }
    // index.json last: a reader that stops early finds no index and says so.
    sink.file(INDEX_JSON, &index)
        .map_err(io_fail(INDEX_JSON.into()))?;
    sink.finish().map_err(io_fail("finishing".into()))?;
    Ok(ExportResult {
        output: archive.clone(),
        format: opts.format,
        images: planned.into_iter().map(|p| p.image).collect(),
        blobs: blobs.len(),
        bytes,
    })
}

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    // Serialising a value built from strings and numbers cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

/// Hashes what passes through, to check a blob while it is copied.
struct Verifying<R> {
    inner: R,
    hasher: Hasher,
    read: u64,
}

impl<R: Read> Read for Verifying<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
        Ok(n)
    }
}

/// Where a layout is written: a directory or a tar stream.
trait Sink {
    fn dir(&mut self, path: &str) -> io::Result<()>;
    fn file(&mut self, path: &str, data: &[u8]) -> io::Result<()>;
    fn blob(&mut self, digest: &Digest, size: u64, data: &mut dyn Read) -> io::Result<()>;
    fn finish(self: Box<Self>) -> io::Result<()>;
}

struct DirSink {
    root: PathBuf,
}

impl DirSink {
    fn create(root: &Path) -> io::Result<DirSink> {
        fs::create_dir_all(root)?;
        Ok(DirSink {
            root: root.to_path_buf(),
        })
    }

    /// Writes `path` through a temporary file and a rename, so a reader
    /// never sees half a file.
    fn write_atomic(&self, path: &str, data: &mut dyn Read) -> io::Result<()> {
        let target = self.root.join(path);
        let tmp = self.root.join(format!("{path}.tmp-{}", std::process::id()));
        let result = (|| {
            let mut f = File::create(&tmp)?;
            io::copy(data, &mut f)?;
            f.sync_all()?;
            fs::rename(&tmp, &target)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }
}

impl Sink for DirSink {
    fn dir(&mut self, path: &str) -> io::Result<()> {
        fs::create_dir_all(self.root.join(path))
    }

    fn file(&mut self, path: &str, data: &[u8]) -> io::Result<()> {
        self.write_atomic(path, &mut &data[..])
    }

    fn blob(&mut self, digest: &Digest, size: u64, data: &mut dyn Read) -> io::Result<()> {
        let path = blob_path(digest);
        // A layout that already holds the blob keeps it; it is still read
        // through, so the store's copy is checked either way.
        if fs::metadata(self.root.join(&path)).is_ok_and(|m| m.len() == size) {
            io::copy(data, &mut io::sink())?;
            return Ok(());
        }
        self.write_atomic(&path, data)
    }

    fn finish(self: Box<Self>) -> io::Result<()> {
        File::open(&self.root)?.sync_all()
    }
}

struct TarSink {
    builder: Option<tar::Builder<Box<dyn Write>>>,
    /// (temporary, final) paths of a tar file, renamed on finish.
    rename: Option<(PathBuf, PathBuf)>,
}

impl TarSink {
    fn new(out: Box<dyn Write>, rename: Option<(PathBuf, PathBuf)>) -> TarSink {
        TarSink {
            builder: Some(tar::Builder::new(out)),
            rename,
        }
    }

    fn file(path: &Path) -> io::Result<TarSink> {
        let name = path.file_name().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "the output path has no file name",
            )
        })?;
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".tmp-{}", std::process::id()));
        let tmp = path.with_file_name(tmp_name);
        let file = File::create(&tmp)?;
        Ok(TarSink::new(
            Box::new(BufWriter::with_capacity(1 << 20, file)),
            Some((tmp, path.to_path_buf())),
        ))
    }

    fn builder(&mut self) -> io::Result<&mut tar::Builder<Box<dyn Write>>> {
        self.builder
            .as_mut()
            .ok_or_else(|| io::Error::other("the tar stream is already finished"))
    }

    fn header(kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h
    }
}

impl Sink for TarSink {
    fn dir(&mut self, path: &str) -> io::Result<()> {
        let mut h = Self::header(tar::EntryType::Directory, 0, 0o755);
        self.builder()?.append_data(&mut h, path, io::empty())
    }

    fn file(&mut self, path: &str, data: &[u8]) -> io::Result<()> {
        let mut h = Self::header(tar::EntryType::Regular, data.len() as u64, 0o644);
        self.builder()?.append_data(&mut h, path, data)
    }

    fn blob(&mut self, digest: &Digest, size: u64, data: &mut dyn Read) -> io::Result<()> {
        let mut h = Self::header(tar::EntryType::Regular, size, 0o644);
        self.builder()?
            .append_data(&mut h, blob_path(digest), data.take(size))
    }

    fn finish(mut self: Box<Self>) -> io::Result<()> {
        let result = self.builder()?;
        let result = result.finish().and_then(|()| {
            self.builder
                .take()
                .map_or(Ok(()), |b| b.into_inner().and_then(|mut out| out.flush()))
        });
        match self.rename.take() {
            None => result,
            Some((tmp, target)) => {
                let result = result.and_then(|()| {
                    File::open(&tmp)?.sync_all()?;
                    fs::rename(&tmp, &target)
                });
                if result.is_err() {
                    let _ = fs::remove_file(&tmp);
                }
                result
            }
        }
    }
}

impl Drop for TarSink {
    fn drop(&mut self) {
        // Unfinished (an error on the way): no half-written tar stays.
        if let Some((tmp, _)) = self.rename.take() {
            // Dropping the builder first ends its output; then the file goes.
            self.builder.take();
            let _ = fs::remove_file(tmp);
        }
    }
}
