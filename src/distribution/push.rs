//! Pushing blobs and manifests: the registry side of `berth-push`.
//!
//! A blob goes up in the cheapest way the registry allows, tried in order:
//!
//! 1. `HEAD /v2/<name>/blobs/<digest>`: the repository already has it.
//! 2. `POST /v2/<name>/blobs/uploads/?mount=<digest>&from=<repo>` when the
//!    blob is known to live in another repository of the same registry:
//!    `201` means the registry linked it without any bytes sent. A `202`
//!    (mount refused) opens an ordinary upload session, used in step 3.
//! 3. `POST /v2/<name>/blobs/uploads/` opens a session (`202` + `Location`),
//!    then either one `PUT <location>?digest=…` with the whole blob (small
//!    blobs), or `PATCH` chunks followed by an empty closing `PUT` (large
//!    ones). Every answer carries the `Location` for the next request,
//!    relative or absolute; we always follow the latest one.
//!
//! Manifests are `PUT /v2/<name>/manifests/<tag or digest>` with their exact
//! stored bytes and their media type as `Content-Type`, so the digest the
//! registry computes is the one we had.
//!
//! Pushing needs the `repository:<name>:pull,push` scope, and `pull` on the
//! mount source; tokens are fetched for exactly that. Retries, TLS and
//! redirects are the transport's, as for a pull. Resuming an interrupted
//! upload is not attempted: a failed blob starts over on the next push.

use std::io::Read;

use serde::Serialize;
use ureq::http::Response;
use ureq::Body;

use super::auth::Target;
use super::client::{query_escape, resolve_url, Client, Method, Req};
use super::{Error, Reference, Result};
use crate::content::Digest;

/// Blobs larger than this are uploaded in `PATCH` chunks of this size;
/// smaller ones in one `PUT`.
pub const DEFAULT_CHUNK_SIZE: u64 = 16 << 20;

/// How a blob reached the destination repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobAction {
    /// Its bytes were sent.
    Uploaded,
    /// The repository already had it.
    Exists,
    /// The registry linked it from another repository (cross-repo mount).
    Mounted,
}

/// One blob to push: what it is, and where its bytes come from.
pub struct BlobUpload<'a> {
    pub digest: &'a Digest,
    pub size: u64,
    /// Opens the blob's bytes from the start (called at most once).
    pub open: &'a dyn Fn() -> std::io::Result<Box<dyn Read + Send>>,
    /// Another repository of the same registry that has the blob.
    pub mount_from: Option<&'a str>,
    /// Blobs larger than this go up in chunks of this size.
    pub chunk_size: u64,
}

const OCTET_STREAM: &str = "application/octet-stream";

impl Client {
    /// Whether `r`'s repository has blob `digest` (`HEAD`). A `404` is
    /// `false`; other failures are errors.
    pub fn blob_exists(&self, r: &Reference, digest: &Digest) -> Result<bool> {
        let context = || format!("checking blob {digest} in {}", r.name());
        let url = self.api_url_for(r, &format!("blobs/{digest}"));
        let resp =
            self.send_authorized(&push_target(r, None), Req::new(Method::Head, url), &context)?;
        match resp.status().as_u16() {
            200 => Ok(true),
            404 => Ok(false),
            _ => Err(self.registry_error(context(), resp)),
        }
    }

    /// Makes sure `r`'s repository has `blob`: checks, mounts or uploads,
    /// and says which. `progress(n)` is told of every `n` bytes sent.
    pub fn push_blob(
        &self,
        r: &Reference,
        blob: &BlobUpload,
        progress: &mut dyn FnMut(u64),
    ) -> Result<BlobAction> {
        let digest = blob.digest;
        if self.blob_exists(r, digest)? {
            return Ok(BlobAction::Exists);
        }
        let target = push_target(r, blob.mount_from);
        let start_url = self.api_url_for(r, "blobs/uploads/");
        let (url, context_text) = match blob.mount_from {
            Some(from) => (
                format!(
                    "{start_url}?mount={}&from={}",
                    query_escape(&digest.to_string()),
                    query_escape(from)
                ),
                format!("mounting blob {digest} from {from} into {}", r.name()),
            ),
            None => (
                start_url,
                format!("starting the upload of blob {digest} to {}", r.name()),
            ),
        };
        let context = || context_text.clone();
        let resp = self.send_authorized(&target, Req::new(Method::Post, url.clone()), &context)?;
        let location = match resp.status().as_u16() {
            201 if blob.mount_from.is_some() => return Ok(BlobAction::Mounted),
            202 => next_location(&url, &resp, &context)?,
            _ => return Err(self.registry_error(context(), resp)),
        };
        drop(resp);
        self.upload(r, &target, blob, location, progress)?;
        Ok(BlobAction::Uploaded)
    }

    /// Sends the blob's bytes into the upload session at `location`.
    fn upload(
        &self,
        r: &Reference,
        target: &Target,
        blob: &BlobUpload,
        mut location: String,
        progress: &mut dyn FnMut(u64),
    ) -> Result<()> {
        let digest = blob.digest;
        let context = || format!("uploading blob {digest} to {}", r.name());
        let io_err = |source| Error::Io {
            context: context(),
            source,
        };
        let mut reader = (blob.open)().map_err(io_err)?;
        let chunk_size = blob.chunk_size.max(1);
        let read_chunk = |reader: &mut dyn Read, len: u64| -> std::io::Result<Vec<u8>> {
            let mut data = Vec::with_capacity(len as usize);
            reader.take(len).read_to_end(&mut data)?;
            if (data.len() as u64) < len {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("the stored blob ends after {} bytes", data.len()),
                ));
            }
            Ok(data)
        };
        let final_body = if blob.size <= chunk_size {
            read_chunk(&mut reader, blob.size).map_err(io_err)?
        } else {
            let mut sent = 0u64;
            while sent < blob.size {
                let len = chunk_size.min(blob.size - sent);
                let data = read_chunk(&mut reader, len).map_err(io_err)?;
                let range = format!("{sent}-{}", sent + len - 1);
                let req = Req::new(Method::Patch, location.clone())
                    .header("Content-Range", range)
                    .body(OCTET_STREAM, data);
                let resp = self.send_authorized(target, req, &context)?;
                if resp.status().as_u16() != 202 {
                    return Err(
                        self.registry_error(format!("{} (chunk at byte {sent})", context()), resp)
                    );
                }
                location = next_location(&location, &resp, &context)?;
                sent += len;
                progress(len);
            }
            Vec::new()
        };
        let monolithic = final_body.len() as u64;
        let sep = if location.contains('?') { '&' } else { '?' };
        let url = format!(
            "{location}{sep}digest={}",
            query_escape(&digest.to_string())
        );
        let req = Req::new(Method::Put, url).body(OCTET_STREAM, final_body);
        let resp = self.send_authorized(target, req, &context)?;
        match resp.status().as_u16() {
            201 | 204 => {
                if monolithic > 0 {
                    progress(monolithic);
                }
                Ok(())
            }
            _ => Err(self.registry_error(context(), resp)),
        }
    }

    /// Puts manifest `bytes` under `reference` (a tag or a digest) in `r`'s
    /// repository with `media_type` as its content type, and returns the
    /// digest the registry reports (checked against the bytes' own).
    pub fn put_manifest(
        &self,
        r: &Reference,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<Digest> {
        let digest = Digest::of(bytes);
        let sep = if reference.contains(':') { '@' } else { ':' };
        let context = || format!("pushing manifest {digest} to {}{sep}{reference}", r.name());
        let url = self.api_url_for(r, &format!("manifests/{reference}"));
        let req = Req::new(Method::Put, url).body(media_type, bytes.to_vec());
        let resp = self.send_authorized(&push_target(r, None), req, &context)?;
        if !matches!(resp.status().as_u16(), 200 | 201 | 202 | 204) {
            return Err(self.registry_error(context(), resp));
        }
        let reported = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<Digest>().ok());
        if let Some(reported) = reported {
            if reported != digest {
                return Err(Error::DigestMismatch {
                    context: format!("{} (Docker-Content-Digest)", context()),
                    expected: digest,
                    actual: reported,
                });
            }
        }
        Ok(digest)
    }

    fn api_url_for(&self, r: &Reference, path: &str) -> String {
        let host = r.api_host();
        format!(
            "{}://{host}/v2/{}/{path}",
            self.scheme_for(host),
            r.repository
        )
    }
}

/// The scopes a push to `r` needs: pull and push on it, pull on the mount
/// source.
fn push_target<'a>(r: &'a Reference, mount_from: Option<&str>) -> Target<'a> {
    let mut scope = format!("repository:{}:pull,push", r.repository);
    if let Some(from) = mount_from {
        scope.push_str(&format!(" repository:{from}:pull"));
    }
    Target {
        registry: &r.registry,
        host: r.api_host(),
        scope,
    }
}

/// The upload session URL an answer points at, resolved against `base`.
fn next_location(
    base: &str,
    resp: &Response<Body>,
    context: &dyn Fn() -> String,
) -> Result<String> {
    let location = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| Error::InvalidResponse {
            context: context(),
            reason: format!("{} without a Location header", resp.status().as_u16()),
        })?;
    resolve_url(base, location).ok_or_else(|| Error::InvalidResponse {
        context: context(),
        reason: format!("unusable Location {location:?}"),
    })
}

#[cfg(test)]
mod tests {
    use super::super::testserver::{reply, test_options, TestServer};
    use super::*;

    fn reference(srv: &TestServer, repo: &str) -> Reference {
        Reference::parse(&format!("{}/{repo}:t", srv.addr)).unwrap()
    }

    #[test]
    fn chunked_upload_follows_relative_and_absolute_locations() {
        let mut srv = TestServer::new();
        let abs = format!("http://{}/up/3?state=c", srv.addr);
        srv.serve(move |r| match (r.method.as_str(), r.path.as_str()) {
            ("HEAD", _) => reply(404, &[], b""),
            ("POST", _) => reply(202, &[("Location", "/up/1?state=a")], b""),
            ("PATCH", p) if p.starts_with("/up/1") => {
                reply(202, &[("Location", "/up/2?state=b")], b"")
            }
            ("PATCH", p) if p.starts_with("/up/2") => reply(202, &[("Location", &abs)], b""),
            ("PUT", p) if p.starts_with("/up/3") => reply(201, &[], b""),
            _ => reply(400, &[], b"unexpected"),
        });
        let client = Client::new(test_options()).unwrap();
        let data = b"0123456789".to_vec();
        let digest = Digest::of(&data);
        let open = || -> std::io::Result<Box<dyn Read + Send>> {
            Ok(Box::new(std::io::Cursor::new(b"0123456789".to_vec())))
        };
        let blob = BlobUpload {
            digest: &digest,
            size: 10,
            open: &open,
            mount_from: None,
            chunk_size: 6,
        };
        let mut sent = 0;
        let action = client
            .push_blob(&reference(&srv, "repo"), &blob, &mut |n| sent += n)
            .unwrap();
        assert_eq!(action, BlobAction::Uploaded);
        assert_eq!(sent, 10);
        let reqs = srv.requests();
        let methods: Vec<&str> = reqs.iter().map(|r| r.method.as_str()).collect();
        assert_eq!(methods, ["HEAD", "POST", "PATCH", "PATCH", "PUT"]);
        assert_eq!(reqs[2].header("content-range"), Some("0-5"));
        assert_eq!(reqs[3].header("content-range"), Some("6-9"));
        assert_eq!(reqs[2].body, b"012345");
        assert_eq!(reqs[3].body, b"6789");
        assert!(
            reqs[4].path.contains("state=c&digest=sha256%3A"),
            "{}",
            reqs[4].path
        );
        assert!(reqs[4].body.is_empty());
    }

    #[test]
    fn existing_and_mounted_blobs_send_no_bytes() {
        let mut srv = TestServer::new();
        srv.serve(|r| match (r.method.as_str(), r.path.as_str()) {
            ("HEAD", p) if p.contains("/have/") => reply(200, &[], b""),
            ("HEAD", _) => reply(404, &[], b""),
            ("POST", p) if p.contains("mount=") && p.contains("from=src") => {
                reply(201, &[("Location", "/v2/x/blobs/d")], b"")
            }
            _ => reply(400, &[], b"unexpected"),
        });
        let client = Client::new(test_options()).unwrap();
        let digest = Digest::of(b"x");
        let open = || -> std::io::Result<Box<dyn Read + Send>> { panic!("no bytes needed") };
        let mut blob = BlobUpload {
            digest: &digest,
            size: 1,
            open: &open,
            mount_from: None,
            chunk_size: DEFAULT_CHUNK_SIZE,
        };
        let r = reference(&srv, "have");
        assert_eq!(
            client.push_blob(&r, &blob, &mut |_| {}).unwrap(),
            BlobAction::Exists
        );
        blob.mount_from = Some("src");
        let r = reference(&srv, "other");
        assert_eq!(
            client.push_blob(&r, &blob, &mut |_| {}).unwrap(),
            BlobAction::Mounted
        );
    }

    #[test]
    fn manifest_put_keeps_bytes_and_media_type_and_reports_errors() {
        let mut srv = TestServer::new();
        srv.serve(|r| {
            if r.path.ends_with("/bad") {
                reply(
                    400,
                    &[],
                    br#"{"errors":[{"code":"MANIFEST_BLOB_UNKNOWN","message":"blob unknown to registry"}]}"#,
                )
            } else {
                let d = Digest::of(&r.body).to_string();
                reply(201, &[("Docker-Content-Digest", &d)], b"")
            }
        });
        let client = Client::new(test_options()).unwrap();
        let bytes = br#"{"schemaVersion":2}"#;
        let r = reference(&srv, "repo");
        let d = client
            .put_manifest(&r, "t", "application/x-test", bytes)
            .unwrap();
        assert_eq!(d, Digest::of(bytes));
        let reqs = srv.requests();
        assert_eq!(reqs[0].method, "PUT");
        assert_eq!(reqs[0].header("content-type"), Some("application/x-test"));
        assert_eq!(reqs[0].body, bytes);
        let err = client
            .put_manifest(&r, "bad", "application/x-test", bytes)
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("MANIFEST_BLOB_UNKNOWN"), "{text}");
        assert!(
            text.contains(&d.to_string()) && text.contains("repo"),
            "{text}"
        );
    }
}
