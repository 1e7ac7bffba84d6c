//! Turning a pulled image's layers into committed snapshots, named by
//! chain ID, while the layers download.
//!
//! Layers apply strictly in order (each is a change set on the one before),
//! but each starts as soon as its first bytes are in the ingest file, and
//! the downloads of later layers go on meanwhile. A layer whose chain ID is
//! already committed (an image sharing the base) is not unpacked again.
//!
//! A layer's snapshot is committed only when both checks pass: the diff ID
//! computed while untarring equals the config's, and the compressed blob
//! verified against its digest. Until then it is an active snapshot owned by
//! this process; on failure it is removed, and if the process dies, the
//! snapshotter's cleanup removes it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use super::follow::Follow;
use super::manifest::{ConfigHead, Descriptor};
use super::unpack::{self, ApplyOptions, WhiteoutMode};
use super::Error;
use crate::content::{Digest, Store};
use crate::snapshot::{self, Kind, Labels, Snapshotter, WhiteoutStyle};
use crate::ErrorKind;

/// The chain IDs of a stack of layers: the first is its diff ID; each next
/// one is `sha256("<previous chain ID> <diff ID>")`.
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let next = match out.last() {
            None => diff_id.clone(),
            Some(prev) => Digest::of(format!("{prev} {diff_id}").as_bytes()),
        };
        out.push(next);
    }
    out
}

/// What unpacking one image did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Extracted {
    pub snapshotter: String,
    /// The top layer's chain ID: the committed snapshot a container's
    /// root is prepared on. `None` for an image without layers.
    pub snapshot: Option<String>,
    /// Layers unpacked by this pull; the others were already committed.
    pub layers_unpacked: usize,
}

/// See [`Job::hold`].
pub(super) type Hold<'a> = dyn Fn(&str) -> Result<(), Error> + Sync + 'a;

pub(super) struct Job<'a> {
    pub reference: &'a str,
    pub config: &'a Descriptor,
    /// The config's bytes when the caller has them already (an import,
    /// before its blobs are committed); otherwise read from the store.
    pub config_bytes: Option<&'a [u8]>,
    pub layers: &'a [Descriptor],
    pub follows: &'a HashMap<Digest, Follow>,
    pub stop: &'a AtomicBool,
    /// Called with each layer's chain ID before it is looked up or
    /// committed: the caller records it in its lease, so garbage
    /// collection keeps the snapshot until the image record names it.
    pub hold: Option<&'a Hold<'a>>,
}

/// Unpacks the layers of one manifest in order. Runs on its own thread
/// beside the downloads; `stop` tells the downloads to give up when this
/// fails, and is checked here to give up when a download failed.
pub(super) fn extract(
    snapshotter: &dyn Snapshotter,
    store: &Store,
    job: &Job<'_>,
) -> Result<Extracted, Error> {
    let result = extract_inner(snapshotter, store, job);
    if result.is_err() {
        job.stop.store(true, Ordering::Relaxed);
    }
    result
}

fn extract_inner(
    snapshotter: &dyn Snapshotter,
    store: &Store,
    job: &Job<'_>,
) -> Result<Extracted, Error> {
    let invalid = |reason: String, kind: ErrorKind| Error::Invalid {
        reference: job.reference.to_string(),
        reason,
        kind,
    };
    let wait = |digest: &Digest| -> Result<(), Error> {
        match job.follows.get(digest) {
            Some(f) => f.wait_end().map_err(|why| {
                invalid(
                    format!(
                        "unpacking stopped: blob {} did not arrive: {why}",
                        digest.short()
                    ),
                    ErrorKind::Unavailable,
                )
            }),
            None => Ok(()),
        }
    };
    wait(&job.config.digest)?;
    let config_bytes = match job.config_bytes {
        Some(bytes) => bytes.to_vec(),
        None => store
            .read(&job.config.digest)
            .map_err(|source| Error::Store {
                what: super::BlobKind::Config,
                digest: job.config.digest.clone(),
                reference: job.reference.to_string(),
                source,
            })?,
    };
    let config: ConfigHead = serde_json::from_slice(&config_bytes).map_err(|e| {
        invalid(
            format!("config {}: malformed: {e}", job.config.digest.short()),
            ErrorKind::InvalidArgument,
        )
    })?;
    if config.rootfs.diff_ids.len() != job.layers.len() {
        return Err(invalid(
            format!(
                "the manifest lists {} layers but its config has {} diff_ids",
                job.layers.len(),
                config.rootfs.diff_ids.len()
            ),
            ErrorKind::InvalidArgument,
        ));
    }
    let chain = chain_ids(&config.rootfs.diff_ids);
    let mut out = Extracted {
        snapshotter: snapshotter.name().to_string(),
        snapshot: chain.last().map(|d| d.to_string()),
        layers_unpacked: 0,
    };
    for (i, layer) in job.layers.iter().enumerate() {
        let name = chain[i].to_string();
        if let Some(hold) = job.hold {
            hold(&name)?;
        }
        if is_committed(snapshotter, &name)? {
            continue;
        }
        let parent = (i > 0).then(|| chain[i - 1].to_string());
        let applied = apply_one(
            snapshotter,
            job,
            layer,
            &name,
            parent.as_deref(),
            &config.rootfs.diff_ids[i],
        )?;
        if applied {
            out.layers_unpacked += 1;
        }
    }
    Ok(out)
}

fn is_committed(snapshotter: &dyn Snapshotter, name: &str) -> Result<bool, Error> {
    match snapshotter.stat(name) {
        Ok(info) => Ok(info.kind == Kind::Committed),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Applies one layer into a fresh active snapshot and commits it as
/// `name`. Returns false when another process committed `name` first.
fn apply_one(
    snapshotter: &dyn Snapshotter,
    job: &Job<'_>,
    layer: &Descriptor,
    name: &str,
    parent: Option<&str>,
    want_diff_id: &Digest,
) -> Result<bool, Error> {
    let context = |reason: String, kind: ErrorKind| Error::Invalid {
        reference: job.reference.to_string(),
        reason: format!("unpacking layer {}: {reason}", layer.digest.short()),
        kind,
    };
    let compression =
        unpack::compression_for(&layer.media_type).map_err(|e| context(e.to_string(), e.kind()))?;
    let key = format!(
        "extract-{}-{}-{}",
        std::process::id(),
        crate::metadata::now_ns(),
        &name["sha256:".len()..]
    );
    let labels = Labels::from([(snapshot::OWNER_LABEL.to_string(), snapshot::process_owner())]);
    snapshotter.prepare(&key, parent, &labels)?;
    let result = (|| -> Result<bool, Error> {
        let opts = ApplyOptions {
            whiteouts: match snapshotter.whiteout_style() {
                WhiteoutStyle::Overlay => WhiteoutMode::Overlay,
                WhiteoutStyle::Delete => WhiteoutMode::Delete,
            },
            lower_dirs: snapshotter.lower_dirs(&key)?,
            sync: true,
        };
        let target = snapshotter.upper_dir(&key)?;
        let follow = job
            .follows
            .get(&layer.digest)
            .ok_or_else(|| context("no download for this layer".into(), ErrorKind::Internal))?;
        let applied = unpack::apply_layer(follow.reader(), compression, &target, &opts)
            .map_err(|e| context(e.to_string(), e.kind()))?;
        // The blob must verify before anything made from it is committed.
        follow
            .wait_end()
            .map_err(|why| context(why, ErrorKind::DataLoss))?;
        if &applied.diff_id != want_diff_id {
            return Err(context(
                format!(
                    "diff ID mismatch: the config says {want_diff_id}, the layer's content is {}",
                    applied.diff_id
                ),
                ErrorKind::DataLoss,
            ));
        }
        match snapshotter.commit(name, &key, &Labels::new()) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e.into()),
        }
    })();
    if !matches!(result, Ok(true)) {
        // Best effort: a leftover active snapshot carries our owner label,
        // so cleanup removes it once this process is gone.
        let _ = snapshotter.remove(&key);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_oci_definition() {
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        let chain = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(chain[0], a);
        assert_eq!(chain[1], Digest::of(format!("{a} {b}").as_bytes()));
    }
}
