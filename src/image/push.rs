//! Pushing a stored image to a registry: the image record's root document
//! (index or manifest) → its manifests → their configs and layers, all read
//! from the content store and sent in dependency order.
//!
//! 1. Walk the stored documents and check every blob is in the store with
//!    the size its descriptor states, before anything is sent: a store that
//!    lacks a blob fails naming it, and the registry is not touched.
//! 2. Push configs and layers concurrently (each: exists? mount? upload).
//! 3. Put each manifest of an index by digest, then the root document under
//!    the destination's tag (or digest), with the exact stored bytes.
//!
//! Nothing in the store is written: a push only reads.

use std::collections::HashSet;
use std::sync::atomic::AtomicBool;

use serde::Serialize;

use super::manifest::{self, Descriptor, DocumentKind, Index, Manifest};
use super::pull::image_name;
use super::workers;
use super::{BlobKind, Error};
use crate::content::{Digest, Store};
use crate::distribution::{BlobAction, BlobUpload, Client, Reference, DEFAULT_CHUNK_SIZE};
use crate::metadata::Db;
use crate::ErrorKind;

#[derive(Debug, Clone)]
pub struct PushOptions {
    pub max_concurrent_uploads: usize,
    /// Blobs larger than this are sent in `PATCH` chunks of this size.
    pub chunk_size: u64,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions {
            max_concurrent_uploads: 3,
            chunk_size: DEFAULT_CHUNK_SIZE,
        }
    }
}

/// Receives push progress; called from upload threads, hence `Sync`.
pub trait PushObserver: Sync {
    /// The blob's turn has come (it may still turn out to exist already).
    fn blob_started(&self, _kind: BlobKind, _digest: &Digest, _size: u64) {}
    fn blob_progress(&self, _digest: &Digest, _bytes: u64) {}
    fn blob_finished(&self, _kind: BlobKind, _digest: &Digest, _size: u64, _action: BlobAction) {}
    /// A manifest or index was put under `reference` (a tag or digest).
    fn manifest_pushed(&self, _kind: BlobKind, _digest: &Digest, _reference: &str) {}
}

/// An observer that ignores everything.
pub struct NoProgress;
impl PushObserver for NoProgress {}

#[derive(Debug, Clone, Serialize)]
pub struct PushedBlob {
    pub kind: BlobKind,
    pub digest: Digest,
    pub size: u64,
    pub action: BlobAction,
}

#[derive(Debug, Clone, Serialize)]
pub struct PushResult {
    /// Where the image went: `registry/repository:tag` (or `@digest`).
    pub name: String,
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    /// Manifests of an index, pushed by digest before it.
    pub manifests: Vec<Digest>,
    pub blobs: Vec<PushedBlob>,
}

struct Job {
    kind: BlobKind,
    desc: Descriptor,
}

/// A manifest to put: digest, media type, stored bytes.
struct Doc {
    kind: BlobKind,
    digest: Digest,
    media_type: String,
    bytes: Vec<u8>,
}

/// Pushes the stored image `source` to `dest`. When both are in one
/// registry, blobs are mounted from `source`'s repository where the
/// registry allows.
pub fn push(
    client: &Client,
    store: &Store,
    db: &Db,
    source: &Reference,
    dest: &Reference,
    opts: &PushOptions,
    observer: &dyn PushObserver,
) -> Result<PushResult, Error> {
    let src_text = source.to_string();
    let dest_text = dest.to_string();
    let invalid = |reason: String, kind: ErrorKind| Error::Invalid {
        reference: src_text.clone(),
        reason,
        kind,
    };
    let name = match (&source.tag, &source.digest) {
        (None, Some(d)) => image_name(source, d),
        _ => format!(
            "{}:{}",
            source.name(),
            source.tag.as_deref().unwrap_or("latest")
        ),
    };
    let record = db.image(&name)?.ok_or_else(|| {
        invalid(
            "no such image in the store (berth-pull or berth-import it first)".into(),
            ErrorKind::NotFound,
        )
    })?;
    if let Some(want) = &source.digest {
        if *want != record.digest {
            return Err(invalid(
                format!("the stored image is {}, not {want}", record.digest),
                ErrorKind::NotFound,
            ));
        }
    }
    if let Some(want) = &dest.digest {
        if *want != record.digest {
            return Err(Error::Invalid {
                reference: dest_text,
                reason: format!(
                    "the destination names digest {want}, but the image is {}",
                    record.digest
                ),
                kind: ErrorKind::InvalidArgument,
            });
        }
    }

    // 1. Walk and check.
    let read = |kind: BlobKind, d: &Digest| {
        store.read(d).map_err(|e| {
            invalid(
                format!("{kind} {d} is not readable in the content store: {e}"),
                e.kind(),
            )
        })
    };
    let root_kind = manifest::classify(&record.media_type)
        .map_err(|e| invalid(e, ErrorKind::InvalidArgument))?;
    let root_bytes = read(
        match root_kind {
            DocumentKind::Index => BlobKind::Index,
            DocumentKind::Manifest => BlobKind::Manifest,
        },
        &record.digest,
    )?;
    if Digest::of(&root_bytes) != record.digest {
        return Err(invalid(
            format!(
                "stored document {} does not match its digest",
                record.digest
            ),
            ErrorKind::DataLoss,
        ));
    }
    let mut children: Vec<Doc> = Vec::new();
    let mut manifests: Vec<(Digest, Manifest)> = Vec::new();
    let parse_manifest = |d: &Digest, bytes: &[u8]| -> Result<Manifest, Error> {
        serde_json::from_slice(bytes).map_err(|e| {
            invalid(
                format!("stored manifest {d}: malformed: {e}"),
                ErrorKind::DataLoss,
            )
        })
    };
    match root_kind {
        DocumentKind::Manifest => {
            manifests.push((
                record.digest.clone(),
                parse_manifest(&record.digest, &root_bytes)?,
            ));
        }
        DocumentKind::Index => {
            let index: Index = serde_json::from_slice(&root_bytes).map_err(|e| {
                invalid(
                    format!("stored index {}: malformed: {e}", record.digest),
                    ErrorKind::DataLoss,
                )
            })?;
            for desc in &index.manifests {
                if manifest::classify(&desc.media_type) != Ok(DocumentKind::Manifest) {
                    return Err(invalid(
                        format!(
                            "index entry {} is a {}, not an image manifest; nested indexes \
                             are not supported",
                            desc.digest, desc.media_type
                        ),
                        ErrorKind::InvalidArgument,
                    ));
                }
                if store.size(&desc.digest).ok().flatten().is_none() {
                    return Err(invalid(
                        format!(
                            "manifest {} listed by the index is not in the content store \
                             (was the image pulled for one platform only? pull it with \
                             --all-platforms to push the whole index)",
                            desc.digest
                        ),
                        ErrorKind::NotFound,
                    ));
                }
                let bytes = read(BlobKind::Manifest, &desc.digest)?;
                manifests.push((desc.digest.clone(), parse_manifest(&desc.digest, &bytes)?));
                children.push(Doc {
                    kind: BlobKind::Manifest,
                    digest: desc.digest.clone(),
                    media_type: desc.media_type.clone(),
                    bytes,
                });
            }
        }
    }
    let mut jobs: Vec<Job> = Vec::new();
    let mut seen = HashSet::new();
    for (_, m) in &manifests {
        let blobs = std::iter::once((BlobKind::Config, &m.config))
            .chain(m.layers.iter().map(|l| (BlobKind::Layer, l)));
        for (kind, desc) in blobs {
            if seen.insert(desc.digest.clone()) {
                jobs.push(Job {
                    kind,
                    desc: desc.clone(),
                });
            }
        }
    }
    for job in &jobs {
        let d = &job.desc.digest;
        let size = store.size(d).map_err(|e| {
            invalid(
                format!("{} {d}: checking the content store: {e}", job.kind),
                e.kind(),
            )
        })?;
        match size {
            None => {
                return Err(invalid(
                    format!("{} {d} is missing from the content store", job.kind),
                    ErrorKind::NotFound,
                ))
            }
            Some(n) if n != job.desc.size => {
                return Err(invalid(
                    format!(
                        "{} {d} is {n} bytes in the content store, but its manifest says {}",
                        job.kind, job.desc.size
                    ),
                    ErrorKind::DataLoss,
                ))
            }
            Some(_) => {}
        }
    }

    // 2. Blobs, concurrently.
    let mount_from = (source.registry == dest.registry && source.repository != dest.repository)
        .then_some(source.repository.as_str());
    let blobs = push_blobs(client, store, dest, &jobs, mount_from, opts, observer)?;

    // 3. Manifests, children first.
    let push_doc = |doc: &Doc, reference: &str| -> Result<(), Error> {
        client
            .put_manifest(dest, reference, &doc.media_type, &doc.bytes)
            .map_err(|source| Error::Push {
                what: doc.kind,
                digest: doc.digest.clone(),
                reference: dest_text.clone(),
                source: Box::new(source),
            })?;
        observer.manifest_pushed(doc.kind, &doc.digest, reference);
        Ok(())
    };
    for child in &children {
        push_doc(child, &child.digest.to_string())?;
    }
    let root = Doc {
        kind: match root_kind {
            DocumentKind::Index => BlobKind::Index,
            DocumentKind::Manifest => BlobKind::Manifest,
        },
        digest: record.digest.clone(),
        media_type: record.media_type.clone(),
        bytes: root_bytes,
    };
    let reference = match &dest.tag {
        Some(tag) => tag.clone(),
        None => record.digest.to_string(),
    };
    push_doc(&root, &reference)?;
    Ok(PushResult {
        name: image_name(dest, &record.digest),
        digest: record.digest.clone(),
        media_type: record.media_type.clone(),
        size: root.bytes.len() as u64,
        manifests: children.iter().map(|c| c.digest.clone()).collect(),
        blobs,
    })
}

fn push_blobs(
    client: &Client,
    store: &Store,
    dest: &Reference,
    jobs: &[Job],
    mount_from: Option<&str>,
    opts: &PushOptions,
    observer: &dyn PushObserver,
) -> Result<Vec<PushedBlob>, Error> {
    let dest_text = dest.to_string();
    let stop = AtomicBool::new(false);
    let (results, failure) =
        workers::run_bounded(jobs.len(), opts.max_concurrent_uploads, &stop, |i| {
            let job = &jobs[i];
            let digest = &job.desc.digest;
            observer.blob_started(job.kind, digest, job.desc.size);
            let open = || -> std::io::Result<Box<dyn std::io::Read + Send>> {
                store
                    .open_blob(digest)
                    .map(|f| Box::new(f) as Box<dyn std::io::Read + Send>)
                    .map_err(|e| std::io::Error::other(e.to_string()))
            };
            let blob = BlobUpload {
                digest,
                size: job.desc.size,
                open: &open,
                mount_from,
                chunk_size: opts.chunk_size,
            };
            let action = client
                .push_blob(dest, &blob, &mut |n| observer.blob_progress(digest, n))
                .map_err(|source| Error::Push {
                    what: job.kind,
                    digest: digest.clone(),
                    reference: dest_text.clone(),
                    source: Box::new(source),
                })?;
            observer.blob_finished(job.kind, digest, job.desc.size, action);
            Ok(PushedBlob {
                kind: job.kind,
                digest: digest.clone(),
                size: job.desc.size,
                action,
            })
        });
    match failure {
        Some(e) => Err(e),
        None => Ok(results.into_values().collect()),
    }
}
