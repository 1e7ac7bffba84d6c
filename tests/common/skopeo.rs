//! Pushing test images into a [`Registry`] with skopeo, as a real client
//! would, and reading back the digest the registry serves them under.
//!
//! skopeo runs with `--insecure-policy` (no dependence on
//! /etc/containers/policy.json), plain HTTP to 127.0.0.1, no proxy
//! variables, its temp files in a temp dir of ours, and either the
//! registry's own credentials or `--dest-no-creds` (no host auth files).

use std::process::Command;

use berth::content::Digest;

use super::images::{MultiArchImage, OciImage, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST};
use super::net::no_proxy;
use super::registry::Registry;

/// Pushes a single image as OCI; returns the manifest digest the registry
/// reports (equal to `image.manifest_digest`: skopeo keeps the bytes).
pub fn push_oci(image: &OciImage, registry: &Registry, dest: &str) -> Digest {
    skopeo_copy(&image.source(), registry, dest, &["--format", "oci"]);
    let digest = check_pushed(registry, dest, OCI_MANIFEST);
    assert_eq!(
        digest, image.manifest_digest,
        "skopeo changed the OCI manifest while pushing {dest}"
    );
    digest
}

/// Pushes a single image converted to Docker schema 2; the registry then
/// holds an `application/vnd.docker.distribution.manifest.v2+json` manifest
/// with a new digest, which is returned. Layer blobs keep their digests.
pub fn push_docker_v2s2(image: &OciImage, registry: &Registry, dest: &str) -> Digest {
    skopeo_copy(&image.source(), registry, dest, &["--format", "v2s2"]);
    check_pushed(registry, dest, DOCKER_MANIFEST)
}

/// Pushes a multi-platform image with its OCI index and every manifest;
/// returns the index digest (equal to `image.index_digest`).
pub fn push_index(image: &MultiArchImage, registry: &Registry, dest: &str) -> Digest {
    skopeo_copy(
        &image.source(),
        registry,
        dest,
        &["--all", "--preserve-digests"],
    );
    let digest = check_pushed(registry, dest, OCI_INDEX);
    assert_eq!(
        digest, image.index_digest,
        "skopeo changed the index while pushing {dest}"
    );
    digest
}

/// `skopeo copy [extra] SOURCE docker://<registry>/<dest>`. Panics with
/// skopeo's output if it fails.
pub fn skopeo_copy(source: &str, registry: &Registry, dest: &str, extra: &[&str]) {
    let tmp = tempfile::Builder::new()
        .prefix("berth-test-skopeo-")
        .tempdir()
        .expect("creating skopeo temp dir");
    let mut cmd = Command::new("skopeo");
    no_proxy(&mut cmd)
        .env("TMPDIR", tmp.path())
        .arg("--insecure-policy")
        .arg("--tmpdir")
        .arg(tmp.path())
        .args(["copy", "--quiet", "--dest-tls-verify=false"]);
    match registry.credentials() {
        Some((user, password)) => cmd.arg("--dest-creds").arg(format!("{user}:{password}")),
        None => cmd.arg("--dest-no-creds"),
    };
    cmd.args(extra)
        .arg(source)
        .arg(format!("docker://{}", registry.reference(dest)));
    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("running skopeo (apt-get install skopeo): {e}"));
    assert!(
        output.status.success(),
        "{cmd:?} failed with {}:\n{}{}\nregistry log:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        registry.error_log()
    );
}

/// Fetches `dest`'s manifest, checks its media type and that the registry's
/// `Docker-Content-Digest` is the sha256 of what it served; returns it.
fn check_pushed(registry: &Registry, dest: &str, media_type: &str) -> Digest {
    let (repo, tag) = split_reference(dest);
    let reply = registry.manifest(repo, tag);
    assert_eq!(reply.status, 200, "GET manifest {dest}: {}", reply.text());
    assert_eq!(
        reply.header("content-type"),
        Some(media_type),
        "pushed {dest} is not {media_type}: {}",
        reply.text()
    );
    let digest = reply.body_digest();
    let reported: Digest = reply
        .header("docker-content-digest")
        .expect("registry sends Docker-Content-Digest")
        .parse()
        .expect("Docker-Content-Digest parses");
    assert_eq!(reported, digest, "registry digest differs from body digest");
    digest
}

/// `repo/name:tag` → (`repo/name`, `tag`); a missing tag means `latest`.
pub fn split_reference(reference: &str) -> (&str, &str) {
    let slash = reference.rfind('/').map(|i| i + 1).unwrap_or(0);
    match reference[slash..].rfind(':') {
        Some(i) => (&reference[..slash + i], &reference[slash + i + 1..]),
        None => (reference, "latest"),
    }
}
