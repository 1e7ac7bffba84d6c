use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

use super::extract::{self, Extracted};
use super::follow::Follow;
use super::manifest::{self, ConfigHead, Descriptor, DocumentKind, Index, Manifest, Platform};
use super::workers;
use super::Error;
use crate::content::{self, Digest, Store};
use crate::distribution::{Client, Reference};
use crate::metadata::{self, ContentRecord, Db, ImageRecord, Labels};
use crate::snapshot::Snapshotter;
use crate::ErrorKind;

/// A pull that has not finished in this long is presumed dead; its lease
/// stops protecting what it fetched.
const LEASE_TTL: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Clone, Default)]
pub enum PlatformChoice {
    /// The host's platform.
    #[default]
    Host,
    Only(Platform),
    All,
}

#[derive(Debug, Clone)]
pub struct PullOptions {
    pub platform: PlatformChoice,
    pub max_concurrent_downloads: usize,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            platform: PlatformChoice::Host,
            max_concurrent_downloads: 3,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobKind {
    Index,
    Manifest,
    Config,
    Layer,
}

impl fmt::Display for BlobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BlobKind::Index => "index",
            BlobKind::Manifest => "manifest",
            BlobKind::Config => "config",
            BlobKind::Layer => "layer",
        })
    }
}

/// Receives pull progress; the CLI turns it into bars or log lines. Called
/// from download threads, hence `Sync`.
pub trait Observer: Sync {
    fn resolved(&self, _reference: &str, _digest: &Digest, _media_type: &str) {}
    /// A blob download begins; `offset` > 0 when it resumes earlier data.
    fn blob_started(&self, _kind: BlobKind, _digest: &Digest, _size: u64, _offset: u64) {}
    fn blob_progress(&self, _digest: &Digest, _bytes: u64) {}
    fn blob_finished(&self, _kind: BlobKind, _digest: &Digest, _fetched: u64) {}
    /// The blob was already in the store; nothing was downloaded.
    fn blob_present(&self, _kind: BlobKind, _digest: &Digest, _size: u64) {}
}

#[derive(Debug, Clone, Serialize)]
pub struct PulledBlob {
    pub kind: BlobKind,
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    /// Bytes this pull downloaded for the blob (0 when already present).
    pub fetched: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PullResult {
    /// The image name recorded in the store.
    pub name: String,
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    pub platforms: Vec<String>,
    /// Bytes downloaded by this pull: manifests plus blobs.
    pub bytes_fetched: u64,
    pub manifests: Vec<Digest>,
    pub blobs: Vec<PulledBlob>,
    /// Where the layers were unpacked, unless the pull was told not to.
    pub unpacked: Option<Extracted>,
}

/// Image label naming the top snapshot the image was unpacked into, one
/// per snapshotter: `berth.io/unpacked.<snapshotter>` = chain ID.
pub const UNPACKED_LABEL_PREFIX: &str = "berth.io/unpacked.";

/// A manifest this pull fetched, with its size and media type as the
/// registry served them.
struct Pulled {
    digest: Digest,
    size: u64,
    media_type: String,
    manifest: Manifest,
}

struct Job {
    kind: BlobKind,
    desc: Descriptor,
}

/// Pulls `reference` into `store` and `db`. See the module docs for the
/// order of writes that makes this safe to kill at any point.
pub fn pull(
    client: &Client,
    store: &Store,
    db: &mut Db,
    reference: &Reference,
    opts: &PullOptions,
    unpack_into: Option<&dyn Snapshotter>,
    observer: &dyn Observer,
) -> Result<PullResult, Error> {
    let ref_text = reference.to_string();
    let invalid = |reason: String, kind: ErrorKind| Error::Invalid {
        reference: ref_text.clone(),
        reason,
        kind,
    };
    let root = client
        .get_manifest(reference)
        .map_err(|source| Error::Resolve {
            reference: ref_text.clone(),
            source: Box::new(source),
        })?;
    observer.resolved(&ref_text, &root.digest, &root.media_type);
    let mut bytes_fetched = root.bytes.len() as u64;

    let lease = db.create_lease("pull", LEASE_TTL)?;
    let mut records: Vec<ContentRecord> = Vec::new();
    let mut manifests: Vec<Pulled> = Vec::new();
    // The platform of each manifest as the index states it, to pick the one
    // to unpack when several are pulled.
    let mut index_platforms: Vec<Option<Platform>> = Vec::new();
    let root_kind = manifest::classify(&root.media_type)
        .map_err(|reason| invalid(reason, ErrorKind::InvalidArgument))?;

    let store_doc = |db: &mut Db, kind: BlobKind, digest: &Digest, bytes: &[u8]| {
        db.lease_add(&lease, "content", &digest.to_string())?;
        store
            .write_blob(digest, bytes)
            .map_err(|source| Error::Store {
                what: kind,
                digest: digest.clone(),
                reference: ref_text.clone(),
                source,
            })
    };

    match root_kind {
        DocumentKind::Manifest => {
            let m = parse_manifest(&ref_text, &root.digest, &root.bytes)?;
            store_doc(db, BlobKind::Manifest, &root.digest, &root.bytes)?;
            manifests.push(Pulled {
                digest: root.digest.clone(),
                size: root.bytes.len() as u64,
                media_type: root.media_type.clone(),
                manifest: m,
            });
            index_platforms.push(None);
        }
        DocumentKind::Index => {
            let index: Index = serde_json::from_slice(&root.bytes).map_err(|e| {
                invalid(
                    format!("index {}: malformed JSON: {e}", root.digest.short()),
                    ErrorKind::InvalidArgument,
                )
            })?;
            store_doc(db, BlobKind::Index, &root.digest, &root.bytes)?;
            let chosen = choose_manifests(&index, &opts.platform)
                .map_err(|reason| invalid(reason, ErrorKind::NotFound))?;
            let mut labels = Labels::new();
            for (i, desc) in chosen.iter().enumerate() {
                let doc = client
                    .get_manifest_by_digest(reference, &desc.digest)
                    .map_err(|source| Error::Fetch {
                        what: BlobKind::Manifest,
                        digest: desc.digest.clone(),
                        reference: ref_text.clone(),
                        source: Box::new(source),
                    })?;
                bytes_fetched += doc.bytes.len() as u64;
                if manifest::classify(&doc.media_type) != Ok(DocumentKind::Manifest) {
                    return Err(invalid(
                        format!(
                            "index entry {} is not an image manifest ({})",
                            desc.digest.short(),
                            doc.media_type
                        ),
                        ErrorKind::InvalidArgument,
                    ));
                }
                let m = parse_manifest(&ref_text, &desc.digest, &doc.bytes)?;
                store_doc(db, BlobKind::Manifest, &desc.digest, &doc.bytes)?;
                labels.insert(
                    format!("containerd.io/gc.ref.content.m.{i}"),
                    desc.digest.to_string(),
                );
                manifests.push(Pulled {
                    digest: desc.digest.clone(),
                    size: doc.bytes.len() as u64,
                    media_type: doc.media_type.clone(),
                    manifest: m,
                });
                index_platforms.push(desc.platform.clone());
            }
            records.push(ContentRecord {
                digest: root.digest.clone(),
                size: root.bytes.len() as u64,
                media_type: Some(root.media_type.clone()),
                labels,
            });
        }
    }

    // Every blob once, configs first so a bad config fails before the
    // big layers are fetched.
    let mut jobs: Vec<Job> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for m in manifests.iter().map(|p| &p.manifest) {
        if seen.insert(m.config.digest.clone()) {
            if m.config.size > manifest::MAX_CONFIG_SIZE {
                return Err(invalid(
                    format!(
                        "config {} is {} bytes, more than the {} a config may have",
                        m.config.digest.short(),
                        m.config.size,
                        manifest::MAX_CONFIG_SIZE
                    ),
                    ErrorKind::InvalidArgument,
                ));
            }
            jobs.push(Job {
                kind: BlobKind::Config,
                desc: m.config.clone(),
            });
        }
    }
    for m in manifests.iter().map(|p| &p.manifest) {
        for layer in &m.layers {
            if seen.insert(layer.digest.clone()) {
                jobs.push(Job {
                    kind: BlobKind::Layer,
                    desc: layer.clone(),
                });
            }
        }
    }
    db.write(|tx| {
        for job in &jobs {
            metadata::add_resource(tx, &lease, "content", &job.desc.digest.to_string())?;
        }
        Ok(())
    })?;

    // Unpack one manifest: the only one, or the host's among several.
    let to_unpack = unpack_into.and_then(|snapshotter| {
        let host = Platform::host();
        let i = if manifests.len() == 1 {
            0
        } else {
            index_platforms
                .iter()
                .position(|p| p.as_ref().is_some_and(|p| host.matches(p)))?
        };
        Some((snapshotter, &manifests[i].manifest))
    });
    let follows: HashMap<Digest, Follow> = jobs
        .iter()
        .map(|j| (j.desc.digest.clone(), Follow::new()))
        .collect();
    let stop = AtomicBool::new(false);
    // The unpacker runs on its own thread, so it holds snapshots in the
    // lease through its own connection.
    let hold_db = match (&to_unpack, db.path().parent()) {
        (Some(_), Some(root)) => Some(std::sync::Mutex::new(Db::open(root)?)),
        _ => None,
    };
    let hold = |key: &str| -> Result<(), Error> {
        if let (Some(db), Some((snapshotter, _))) = (&hold_db, &to_unpack) {
            let mut db = db.lock().unwrap_or_else(|p| p.into_inner());
            db.lease_add(
                &lease,
                &metadata::snapshot_lease_kind(snapshotter.name()),
                key,
            )?;
        }
        Ok(())
    };
    let (fetched, extracted) = std::thread::scope(|s| {
        let extraction = to_unpack.map(|(snapshotter, m)| {
            let job = extract::Job {
                reference: &ref_text,
                config: &m.config,
                config_bytes: None,
                layers: &m.layers,
                follows: &follows,
                stop: &stop,
                hold: Some(&hold),
            };
            s.spawn(move || extract::extract(snapshotter, store, &job))
        });
        let fetched = fetch_all(
            client, store, reference, &jobs, opts, &follows, &stop, observer,
        );
        // Downloads that never started will not start now; release the
        // unpacker if it waits for one.
        for follow in follows.values() {
            follow.fail("an earlier download failed".to_string());
        }
        let extracted = extraction.map(|h| {
            h.join().unwrap_or_else(|_| {
                Err(invalid(
                    "the unpack thread panicked".into(),
                    ErrorKind::Internal,
                ))
            })
        });
        (fetched, extracted)
    });
    let fetched = fetched?;
    let extracted = extracted.transpose()?;
    bytes_fetched += fetched.iter().map(|b| b.fetched).sum::<u64>();

    let mut platforms = Vec::new();
    let mut config_snapshot_labels: Vec<(Digest, String, String)> = Vec::new();
    for pulled in &manifests {
        let (digest, m) = (&pulled.digest, &pulled.manifest);
        let config = read_config(store, &ref_text, &m.config)?;
        let platform = Platform {
            architecture: config.architecture.clone(),
            os: config.os.clone(),
            variant: config.variant.clone(),
        };
        if let (DocumentKind::Manifest, PlatformChoice::Only(want)) = (root_kind, &opts.platform) {
            if !want.matches(&platform) {
                return Err(invalid(
                    format!("image is for {platform}, not the requested {want}"),
                    ErrorKind::NotFound,
                ));
            }
        }
        if config.rootfs.diff_ids.len() != m.layers.len() {
            return Err(invalid(
                format!(
                    "manifest {} lists {} layers but its config has {} diff_ids",
                    digest.short(),
                    m.layers.len(),
                    config.rootfs.diff_ids.len()
                ),
                ErrorKind::InvalidArgument,
            ));
        }
        platforms.push(platform.to_string());
        let mut labels = Labels::new();
        if let Some(x) = extracted
            .as_ref()
            .filter(|_| to_unpack.is_some_and(|(_, um)| um.config.digest == m.config.digest))
        {
            if let Some(top) = &x.snapshot {
                config_snapshot_labels.push((
                    m.config.digest.clone(),
                    x.snapshotter.clone(),
                    top.clone(),
                ));
            }
        }
        labels.insert(
            "containerd.io/gc.ref.content.config".to_string(),
            m.config.digest.to_string(),
        );
        for (i, layer) in m.layers.iter().enumerate() {
            labels.insert(
                format!("containerd.io/gc.ref.content.l.{i}"),
                layer.digest.to_string(),
            );
        }
        records.push(ContentRecord {
            digest: digest.clone(),
            size: pulled.size,
            media_type: Some(pulled.media_type.clone()),
            labels,
        });
    }
    for job in &jobs {
        let mut labels = Labels::new();
        // The config names the unpacked snapshot, as containerd's does, so
        // garbage collection keeps the snapshot while the image is kept.
        for (config, snapshotter, top) in &config_snapshot_labels {
            if *config == job.desc.digest {
                labels.insert(
                    format!("containerd.io/gc.ref.snapshot.{snapshotter}"),
                    top.clone(),
                );
            }
        }
        records.push(ContentRecord {
            digest: job.desc.digest.clone(),
            size: job.desc.size,
            media_type: Some(job.desc.media_type.clone()),
            labels,
        });
    }
    let mut image_labels = Labels::new();
    if let Some(x) = &extracted {
        if let Some(top) = &x.snapshot {
            image_labels.insert(
                format!("{UNPACKED_LABEL_PREFIX}{}", x.snapshotter),
                top.clone(),
            );
        }
    }

    let name = image_name(reference, &root.digest);
    let image = ImageRecord {
        name: name.clone(),
        media_type: root.media_type.clone(),
        digest: root.digest.clone(),
        size: root.bytes.len() as u64,
        labels: image_labels,
        created_ns: 0,
        updated_ns: 0,
    };
    db.write(|tx| {
        for rec in &records {
            metadata::put_content(tx, rec)?;
        }
        metadata::put_image(tx, &image)?;
        let attrs = Labels::from([("digest".to_string(), image.digest.to_string())]);
        metadata::record_event(
            tx,
            metadata::EventType::Image,
            metadata::events::action::PULL,
            &image.name,
            &attrs,
        )?;
        metadata::delete_lease(tx, &lease)
    })?;

    Ok(PullResult {
        name,
        digest: root.digest.clone(),
        media_type: root.media_type.clone(),
        size: root.bytes.len() as u64,
        platforms,
        bytes_fetched,
        manifests: manifests.iter().map(|p| p.digest.clone()).collect(),
        blobs: fetched,
        unpacked: extracted,
    })
}

/// The name a pulled image is recorded under: `registry/repo:tag`, or
/// `registry/repo@digest` when pulled by digest alone.
pub(crate) fn image_name(reference: &Reference, digest: &Digest) -> String {
    match &reference.tag {
        Some(tag) => format!("{}:{tag}", reference.name()),
        None => format!("{}@{digest}", reference.name()),
    }
}

fn parse_manifest(reference: &str, digest: &Digest, bytes: &[u8]) -> Result<Manifest, Error> {
    serde_json::from_slice(bytes).map_err(|e| Error::Invalid {
        reference: reference.to_string(),
        reason: format!("manifest {}: malformed: {e}", digest.short()),
        kind: ErrorKind::InvalidArgument,
    })
}

fn read_config(store: &Store, reference: &str, desc: &Descriptor) -> Result<ConfigHead, Error> {
    let bytes = store.read(&desc.digest).map_err(|source| Error::Store {
        what: BlobKind::Config,
        digest: desc.digest.clone(),
        reference: reference.to_string(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|e| Error::Invalid {
        reference: reference.to_string(),
        reason: format!("config {}: malformed: {e}", desc.digest.short()),
        kind: ErrorKind::InvalidArgument,
    })
}

pub(super) fn choose_manifests<'a>(
    index: &'a Index,
    choice: &PlatformChoice,
) -> Result<Vec<&'a Descriptor>, String> {
    let images: Vec<&Descriptor> = index
        .manifests
        .iter()
        .filter(|d| manifest::classify(&d.media_type) == Ok(DocumentKind::Manifest))
        // Attestation manifests (buildkit's "unknown/unknown") are not images.
        .filter(|d| {
            d.platform
                .as_ref()
                .is_none_or(|p| p.os != "unknown" && p.architecture != "unknown")
        })
        .collect();
    let want = match choice {
        PlatformChoice::All => return Ok(images),
        PlatformChoice::Host => Platform::host(),
        PlatformChoice::Only(p) => p.clone(),
    };
    if let Some(found) = images
        .iter()
        .find(|d| d.platform.as_ref().is_some_and(|p| want.matches(p)))
    {
        return Ok(vec![found]);
    }
    let available: Vec<String> = images
        .iter()
        .filter_map(|d| d.platform.as_ref().map(|p| p.to_string()))
        .collect();
    Err(format!(
        "no image for platform {want} in the index (it has: {})",
        if available.is_empty() {
            "no platform-tagged images".to_string()
        } else {
            available.join(", ")
        }
    ))
}

/// Downloads every job's blob with at most `max_concurrent_downloads`
/// threads. The first failure stops new downloads from starting; blobs
/// already committed stay (they are verified, and the lease holds them).
#[allow(clippy::too_many_arguments)]
fn fetch_all(
    client: &Client,
    store: &Store,
    reference: &Reference,
    jobs: &[Job],
    opts: &PullOptions,
    follows: &HashMap<Digest, Follow>,
    stop: &AtomicBool,
    observer: &dyn Observer,
) -> Result<Vec<PulledBlob>, Error> {
    let (results, failure) =
        workers::run_bounded(jobs.len(), opts.max_concurrent_downloads, stop, |i| {
            let job = &jobs[i];
            let follow = &follows[&job.desc.digest];
            let outcome = fetch_one(client, store, reference, job, follow, observer);
            match &outcome {
                Ok(_) => follow.complete(),
                Err(e) => follow.fail(e.to_string()),
            }
            outcome
        });
    if let Some(e) = failure {
        return Err(e);
    }
    if stop.load(Ordering::Relaxed) && results.len() < jobs.len() {
        // The unpacker failed and stopped the downloads; its error is the
        // one to report.
        return Ok(Vec::new());
    }
    Ok(results.into_values().collect())
}

fn fetch_one(
    client: &Client,
    store: &Store,
    reference: &Reference,
    job: &Job,
    follow: &Follow,
    observer: &dyn Observer,
) -> Result<PulledBlob, Error> {
    let desc = &job.desc;
    let store_err = |source: content::Error| Error::Store {
        what: job.kind,
        digest: desc.digest.clone(),
        reference: reference.to_string(),
        source,
    };
    let done = |fetched| PulledBlob {
        kind: job.kind,
        digest: desc.digest.clone(),
        media_type: desc.media_type.clone(),
        size: desc.size,
        fetched,
    };
    let present = |observer: &dyn Observer| -> Result<PulledBlob, Error> {
        follow.start(store.open_blob(&desc.digest).map_err(store_err)?, desc.size);
        observer.blob_present(job.kind, &desc.digest, desc.size);
        Ok(done(0))
    };
    if store.size(&desc.digest).map_err(store_err)? == Some(desc.size) {
        return present(observer);
    }
    let mut writer = store.writer(&desc.digest.to_string()).map_err(store_err)?;
    // Another process may have committed it while we waited for the lock.
    if store.size(&desc.digest).map_err(store_err)? == Some(desc.size) {
        return present(observer);
    }
    if writer.offset() > desc.size {
        writer.reset().map_err(store_err)?;
    }
    let offset = writer.offset();
    follow.start(writer.reopen().map_err(store_err)?, offset);
    observer.blob_started(job.kind, &desc.digest, desc.size, offset);
    let fetched = AtomicU64::new(0);
    if offset < desc.size {
        client
            .fetch_blob(reference, &desc.digest, offset, &mut writer, &mut |n| {
                fetched.fetch_add(n, Ordering::Relaxed);
                follow.advance(n);
                observer.blob_progress(&desc.digest, n);
            })
            .map_err(|source| Error::Fetch {
                what: job.kind,
                digest: desc.digest.clone(),
                reference: reference.to_string(),
                source: Box::new(source),
            })?;
    }
    writer.commit(desc.size, &desc.digest).map_err(store_err)?;
    let fetched = fetched.into_inner();
    observer.blob_finished(job.kind, &desc.digest, fetched);
    Ok(done(fetched))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(platform: Option<&str>) -> Descriptor {
        Descriptor {
            media_type: manifest::OCI_MANIFEST.to_string(),
            digest: Digest::of(platform.unwrap_or("none").as_bytes()),
            size: 1,
            platform: platform.map(|p| p.parse().unwrap()),
            annotations: Default::default(),
        }
    }

    #[test]
    fn index_platform_selection() {
        let index = Index {
            schema_version: 2,
            media_type: None,
            manifests: vec![
                desc(Some("linux/amd64")),
                desc(Some("linux/arm64/v8")),
                desc(Some("unknown/unknown")),
            ],
        };
        let arm = PlatformChoice::Only("linux/arm64".parse().unwrap());
        assert_eq!(
            choose_manifests(&index, &arm).unwrap()[0],
            &index.manifests[1]
        );
        assert_eq!(
            choose_manifests(&index, &PlatformChoice::All)
                .unwrap()
                .len(),
            2
        );
        let s390 = PlatformChoice::Only("linux/s390x".parse().unwrap());
        let err = choose_manifests(&index, &s390).unwrap_err();
        assert!(err.contains("linux/amd64, linux/arm64/v8"), "{err}");
    }
}
