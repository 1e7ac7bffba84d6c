//! Finding a stored image again: from a reference to the manifest for a
//! platform, its config, and the snapshot its layers were unpacked into.
//! Reads only; a container is prepared from what this returns.

use super::extract::chain_ids;
use super::manifest::{self, ConfigHead, DocumentKind, Index, Manifest, Platform};
use super::pull::image_name;
use super::Error;
use crate::content::{Digest, Store};
use crate::distribution::Reference;
use crate::metadata::{Db, ImageRecord};
use crate::ErrorKind;

/// A stored image, resolved for one platform.
#[derive(Debug, Clone)]
pub struct LocalImage {
    pub record: ImageRecord,
    /// The platform's manifest (the record's own digest for a manifest).
    pub manifest: Digest,
    pub config_digest: Digest,
    /// The image config blob, as stored.
    pub config: Vec<u8>,
    /// Chain ID of the top layer: the snapshot a container's root is
    /// prepared on. `None` for an image without layers.
    pub top_chain_id: Option<String>,
}

/// The name an image is recorded under for `reference`. A reference always
/// has a tag or a digest (a bare name gets `latest`); the name a pull
/// records uses the tag when there is one.
pub fn stored_name(reference: &Reference) -> String {
    match (&reference.tag, &reference.digest) {
        (None, Some(d)) => image_name(reference, d),
        _ => format!(
            "{}:{}",
            reference.name(),
            reference.tag.as_deref().unwrap_or("latest")
        ),
    }
}

/// Looks `reference` up in the store. `Ok(None)` when no image has that
/// name; an error when the record exists but what it points at is missing
/// or unreadable, or it has no manifest for `platform`.
pub fn resolve_local(
    store: &Store,
    db: &Db,
    reference: &Reference,
    platform: &Platform,
) -> Result<Option<LocalImage>, Error> {
    let name = stored_name(reference);
    let record = match db.image(&name)? {
        Some(r) => r,
        None => return Ok(None),
    };
    let text = reference.to_string();
    let invalid = |reason: String, kind: ErrorKind| Error::Invalid {
        reference: text.clone(),
        reason,
        kind,
    };
    if let Some(want) = &reference.digest {
        if *want != record.digest {
            return Ok(None);
        }
    }
    let read = |d: &Digest, what: &str| {
        store
            .read(d)
            .map_err(|e| invalid(format!("{what} {}: {e}", d.short()), e.kind()))
    };
    let manifest_digest = match manifest::classify(&record.media_type)
        .map_err(|e| invalid(e, ErrorKind::InvalidArgument))?
    {
        DocumentKind::Manifest => record.digest.clone(),
        DocumentKind::Index => {
            let index: Index = serde_json::from_slice(&read(&record.digest, "index")?)
                .map_err(|e| invalid(format!("index: {e}"), ErrorKind::DataLoss))?;
            index
                .manifests
                .iter()
                .filter(|d| manifest::classify(&d.media_type) == Ok(DocumentKind::Manifest))
                .find(|d| d.platform.as_ref().is_some_and(|p| platform.matches(p)))
                .map(|d| d.digest.clone())
                .ok_or_else(|| {
                    invalid(
                        format!("no manifest for platform {platform} in the stored index"),
                        ErrorKind::NotFound,
                    )
                })?
        }
    };
    let m: Manifest = serde_json::from_slice(&read(&manifest_digest, "manifest")?)
        .map_err(|e| invalid(format!("manifest: {e}"), ErrorKind::DataLoss))?;
    let config = read(&m.config.digest, "config")?;
    let head: ConfigHead = serde_json::from_slice(&config)
        .map_err(|e| invalid(format!("config: {e}"), ErrorKind::DataLoss))?;
    let top_chain_id = chain_ids(&head.rootfs.diff_ids)
        .last()
        .map(|d| d.to_string());
    Ok(Some(LocalImage {
        record,
        manifest: manifest_digest,
        config_digest: m.config.digest,
        config,
        top_chain_id,
    }))
}
