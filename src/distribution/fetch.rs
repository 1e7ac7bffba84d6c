//! Fetching manifests and blobs: `GET /v2/<name>/manifests/<reference>`
//! and `GET /v2/<name>/blobs/<digest>`.

use std::fmt;
use std::io::{Read, Write};

use ureq::http::Response;
use ureq::Body;

use super::auth::Target;
use super::client::{Client, Req};
use super::{Error, Reference, Result};
use crate::content::Digest;

/// The manifest media types we accept, most capable first: OCI index, OCI
/// manifest, Docker manifest list, Docker schema 2 manifest.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.docker.distribution.manifest.v2+json";

/// Manifests larger than this are refused (as containerd does): a manifest
/// is read into memory, so the limit bounds what a registry can make us hold.
pub const MANIFEST_SIZE_LIMIT: u64 = 4 * 1024 * 1024;

/// Blob data is written to the caller in chunks of this size (the last one
/// of each response may be smaller).
const CHUNK: usize = 64 * 1024;

/// A manifest exactly as the registry served it. `bytes` are the truth: they
/// are what `digest` covers, and are never re-serialised.
#[derive(Clone, PartialEq, Eq)]
pub struct Manifest {
    pub bytes: Vec<u8>,
    /// From `Content-Type`, else the document's `mediaType` field.
    pub media_type: String,
    /// sha256 of `bytes`.
    pub digest: Digest,
}

impl fmt::Debug for Manifest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Manifest")
            .field("media_type", &self.media_type)
            .field("digest", &self.digest)
            .field("len", &self.bytes.len())
            .finish()
    }
}

impl Client {
    /// Fetches the manifest `r` names: by digest if it has one (the bytes
    /// must hash to it), else by tag (the bytes must hash to the
    /// `Docker-Content-Digest` the registry sends, when it sends one).
    pub fn get_manifest(&self, r: &Reference) -> Result<Manifest> {
        self.manifest(r, &r.reference(), r.digest.as_ref())
    }

    /// Fetches manifest `digest` from `r`'s repository (for the manifests an
    /// index lists). The bytes must hash to `digest`.
    pub fn get_manifest_by_digest(&self, r: &Reference, digest: &Digest) -> Result<Manifest> {
        self.manifest(r, &digest.to_string(), Some(digest))
    }

    fn manifest(
        &self,
        r: &Reference,
        reference: &str,
        expected: Option<&Digest>,
    ) -> Result<Manifest> {
        let context = || format!("fetching manifest {reference} from {}", r.name());
        let url = self.api_url(r, &format!("manifests/{reference}"));
        let policy = self.opts().retry.clone();
        let mut attempt = 1;
        let (bytes, content_type, header_digest) = loop {
            let req = Req::get(url.clone()).header("Accept", MANIFEST_ACCEPT);
            let mut resp = self.send_authorized(&target(r), req, &context)?;
            if resp.status().as_u16() != 200 {
                return Err(self.registry_error(context(), resp));
            }
            let header = |name| {
                resp.headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            let content_type = header("content-type");
            let header_digest = header("docker-content-digest");
            if resp.body().content_length().unwrap_or(0) > MANIFEST_SIZE_LIMIT {
                return Err(too_large(context()));
            }
            match read_limited(&mut resp, MANIFEST_SIZE_LIMIT) {
                Ok(bytes) => break (bytes, content_type, header_digest),
                Err(e) if attempt < policy.attempts => {
                    let delay = policy.backoff(attempt);
                    self.debug_log(|| format!("{}: {e}; retrying in {delay:?}", context()));
                    std::thread::sleep(delay);
                    attempt += 1;
                }
                Err(e) => {
                    return Err(Error::Body {
                        context: context(),
                        source: e,
                    })
                }
            }
        };
        if bytes.len() as u64 > MANIFEST_SIZE_LIMIT {
            return Err(too_large(context()));
        }
        let digest = Digest::of(&bytes);
        let mismatch = |expected: &Digest, what: &str| Error::DigestMismatch {
            context: format!("{}{what}", context()),
            expected: expected.clone(),
            actual: digest.clone(),
        };
        if let Some(expected) = expected {
            if *expected != digest {
                return Err(mismatch(expected, ""));
            }
        } else if let Some(sent) = header_digest.and_then(|d| d.trim().parse::<Digest>().ok()) {
            if sent != digest {
                return Err(mismatch(&sent, " (Docker-Content-Digest)"));
            }
        }
        let media_type = media_type_of(content_type.as_deref(), &bytes).ok_or_else(|| {
            Error::InvalidResponse {
                context: context(),
                reason: "cannot tell the manifest's media type: no usable Content-Type \
                         and no mediaType field"
                    .into(),
            }
        })?;
        Ok(Manifest {
            bytes,
            media_type,
            digest,
        })
    }

    /// Streams blob `digest` of `r`'s repository into `out`, starting at
    /// byte `offset` (for resuming a partial download), and returns how many
    /// bytes it wrote. `progress(n)` is called after each write of `n` bytes.
    ///
    /// When a connection breaks mid-body, the download continues from the
    /// current position with a `Range` request (within the retry budget);
    /// what was written stays written. A server that ignores `Range` is
    /// handled by skipping the bytes before the position.
    ///
    /// The digest is *not* verified here: `out` receives only part of the
    /// blob when `offset > 0`. The caller (the content store's writer) hashes
    /// everything, including the data it already had, and must check it.
    pub fn fetch_blob(
        &self,
        r: &Reference,
        digest: &Digest,
        offset: u64,
        out: &mut dyn Write,
        progress: &mut dyn FnMut(u64),
    ) -> Result<u64> {
        let context = || format!("fetching blob {digest} from {}", r.name());
        let url = self.api_url(r, &format!("blobs/{digest}"));
        let policy = self.opts().retry.clone();
        let mut pos = offset;
        let mut failures = 0;
        let mut buf = vec![0u8; CHUNK];
        loop {
            let mut req = Req::get(url.clone());
            if pos > 0 {
                req = req.header("Range", format!("bytes={pos}-"));
            }
            let mut resp = self.send_authorized(&target(r), req, &context)?;
            let skip = match resp.status().as_u16() {
                200 => pos,
                206 => {
                    match content_range_start(&resp) {
                        Some(start) if start != pos => {
                            return Err(Error::InvalidResponse {
                                context: context(),
                                reason: format!(
                                    "asked for bytes from {pos}, got a range starting at {start}"
                                ),
                            })
                        }
                        _ => {}
                    }
                    0
                }
                // Nothing past `pos`: the caller already has the whole blob.
                416 if pos > 0 => return Ok(pos - offset),
                _ => return Err(self.registry_error(context(), resp)),
            };
            let before = pos;
            let mut body = resp.body_mut().as_reader();
            match copy_body(&mut body, skip, out, &mut buf, progress, &mut pos) {
                Ok(()) => return Ok(pos - offset),
                Err(Broken::Write(e)) => {
                    return Err(Error::Io {
                        context: format!("{}: writing", context()),
                        source: e,
                    })
                }
                Err(Broken::Read(e)) => {
                    if pos > before {
                        failures = 0;
                    }
                    failures += 1;
                    if failures >= policy.attempts {
                        return Err(Error::Body {
                            context: format!("{} (at byte {pos})", context()),
                            source: e,
                        });
                    }
                    let delay = policy.backoff(failures);
                    self.debug_log(|| {
                        format!(
                            "{}: body broke at byte {pos} ({e}); resuming in {}ms",
                            context(),
                            delay.as_millis()
                        )
                    });
                    std::thread::sleep(delay);
                }
            }
        }
    }

    /// `<scheme>://<api host>/v2/<repository>/<path>`.
    fn api_url(&self, r: &Reference, path: &str) -> String {
        let host = r.api_host();
        format!(
            "{}://{host}/v2/{}/{path}",
            self.scheme_for(host),
            r.repository
        )
    }
}

fn target(r: &Reference) -> Target<'_> {
    Target {
        registry: &r.registry,
        host: r.api_host(),
        scope: format!("repository:{}:pull", r.repository),
    }
}

fn too_large(context: String) -> Error {
    Error::ManifestTooLarge {
        context,
        limit: MANIFEST_SIZE_LIMIT,
    }
}

/// Reads at most `limit + 1` bytes, so an oversized body is detected
/// without reading all of it.
fn read_limited(resp: &mut Response<Body>, limit: u64) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    resp.body_mut()
        .as_reader()
        .take(limit + 1)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The media type: `Content-Type` unless it is a generic one, else the
/// `mediaType` field, else a guess from the document's shape.
fn media_type_of(content_type: Option<&str>, bytes: &[u8]) -> Option<String> {
    const GENERIC: &[&str] = &[
        "",
        "application/json",
        "text/plain",
        "application/octet-stream",
    ];
    if let Some(ct) = content_type {
        let ct = ct.split(';').next().unwrap_or("").trim();
        if !GENERIC.contains(&ct.to_ascii_lowercase().as_str()) {
            return Some(ct.to_string());
        }
    }
    let doc: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    if let Some(mt) = doc.get("mediaType").and_then(|v| v.as_str()) {
        if !mt.is_empty() {
            return Some(mt.to_string());
        }
    }
    let guess = if doc.get("manifests").is_some() {
        "application/vnd.oci.image.index.v1+json"
    } else if doc.get("layers").is_some() || doc.get("config").is_some() {
        "application/vnd.oci.image.manifest.v1+json"
    } else if doc.get("fsLayers").is_some() {
        "application/vnd.docker.distribution.manifest.v1+json"
    } else {
        return None;
    };
    Some(guess.to_string())
}

/// The first byte of a `Content-Range: bytes <start>-<end>/<size>`.
fn content_range_start(resp: &Response<Body>) -> Option<u64> {
    let v = resp.headers().get("content-range")?.to_str().ok()?;
    let range = v.trim().strip_prefix("bytes")?.trim_start();
    range.split('-').next()?.trim().parse().ok()
}

enum Broken {
    Read(std::io::Error),
    Write(std::io::Error),
}

/// Copies `body` to `out` after discarding `skip` bytes, in `buf`-sized
/// chunks, advancing `pos` by what was written. On a read error, the data
/// already received is written before the error is returned.
fn copy_body(
    body: &mut dyn Read,
    mut skip: u64,
    out: &mut dyn Write,
    buf: &mut [u8],
    progress: &mut dyn FnMut(u64),
    pos: &mut u64,
) -> std::result::Result<(), Broken> {
    loop {
        let mut filled = 0;
        let mut read_error = None;
        while filled < buf.len() {
            match body.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => {
                    // Discard what precedes the position (a 200 to a Range).
                    let dropped = (n as u64).min(skip) as usize;
                    skip -= dropped as u64;
                    if dropped > 0 {
                        buf.copy_within(filled + dropped..filled + n, filled);
                    }
                    filled += n - dropped;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    read_error = Some(e);
                    break;
                }
            }
        }
        if filled > 0 {
            out.write_all(&buf[..filled]).map_err(Broken::Write)?;
            *pos += filled as u64;
            progress(filled as u64);
        }
        if let Some(e) = read_error {
            return Err(Broken::Read(e));
        }
        if filled < buf.len() {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testserver::{reply, test_options, Reply, TestServer};
    use super::*;
    use crate::ErrorKind;

    const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

    fn client() -> Client {
        Client::new(test_options()).unwrap()
    }

    fn blob(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn manifest_by_tag_checks_docker_content_digest() {
        let body = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
        let good = Digest::of(body).to_string();
        let bad = Digest::of(b"other").to_string();
        let mut srv = TestServer::new();
        srv.serve(move |r| {
            let sent = if r.path.ends_with("/good") {
                &good
            } else {
                &bad
            };
            assert_eq!(r.header("accept"), Some(MANIFEST_ACCEPT));
            reply(
                200,
                &[
                    ("Content-Type", "application/json"),
                    ("Docker-Content-Digest", sent),
                ],
                body,
            )
        });
        let c = client();
        let m = c
            .get_manifest(&Reference::parse(&format!("{}/x:good", srv.addr)).unwrap())
            .unwrap();
        assert_eq!(m.bytes, body);
        assert_eq!(m.digest, Digest::of(body));
        // Generic Content-Type: the mediaType field decides.
        assert_eq!(m.media_type, "application/vnd.oci.image.index.v1+json");

        let err = c
            .get_manifest(&Reference::parse(&format!("{}/x:bad", srv.addr)).unwrap())
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::DataLoss);
        assert!(err.to_string().contains("Docker-Content-Digest"), "{err}");
    }

    #[test]
    fn manifest_by_digest_must_match() {
        let body = br#"{"schemaVersion":2}"#;
        let mut srv = TestServer::new();
        srv.serve(move |_| reply(200, &[("Content-Type", OCI_MANIFEST)], body));
        let c = client();
        let r = Reference::parse(&format!("{}/x", srv.addr)).unwrap();
        let wanted = Digest::of(b"something else");
        let err = c.get_manifest_by_digest(&r, &wanted).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::DataLoss);
        let msg = err.to_string();
        assert!(
            msg.contains(&wanted.to_string()) && msg.contains(&Digest::of(body).to_string()),
            "{msg}"
        );
        let m = c.get_manifest_by_digest(&r, &Digest::of(body)).unwrap();
        assert_eq!(m.media_type, OCI_MANIFEST);
        let by_ref = r.with_digest(Digest::of(body));
        assert_eq!(c.get_manifest(&by_ref).unwrap().bytes, body);
        assert!(srv.requests()[2]
            .path
            .ends_with(&Digest::of(body).to_string()));
    }

    #[test]
    fn manifest_too_large_is_refused() {
        let big = vec![b' '; MANIFEST_SIZE_LIMIT as usize + 10];
        let mut srv = TestServer::new();
        srv.serve(move |r| {
            if r.path.ends_with("/chunked") {
                // No Content-Length: the limit must hold while reading.
                let mut out = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                    Connection: close\r\n\r\n"
                    .to_vec();
                out.extend_from_slice(&big);
                out
            } else {
                reply(200, &[("Content-Type", OCI_MANIFEST)], &big)
            }
        });
        let c = client();
        for tag in ["sized", "chunked"] {
            let r = Reference::parse(&format!("{}/x:{tag}", srv.addr)).unwrap();
            let err = c.get_manifest(&r).unwrap_err();
            assert!(
                matches!(err, Error::ManifestTooLarge { .. }),
                "{tag}: {err}"
            );
        }
    }

    #[test]
    fn missing_manifest_is_not_found_with_the_registry_message() {
        let mut srv = TestServer::new();
        srv.serve(|_| {
            reply(
                404,
                &[("Content-Type", "application/json")],
                br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#,
            )
        });
        let r = Reference::parse(&format!("{}/tiny:nope", srv.addr)).unwrap();
        let err = client().get_manifest(&r).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert_eq!(
            err.to_string(),
            format!(
                "fetching manifest nope from {}/tiny: 404 Not Found: \
                 MANIFEST_UNKNOWN: manifest unknown",
                srv.addr
            )
        );
    }

    #[test]
    fn media_type_fallbacks() {
        assert_eq!(
            media_type_of(
                Some("application/vnd.docker.distribution.manifest.v2+json; charset=utf-8"),
                b"{}"
            )
            .as_deref(),
            Some("application/vnd.docker.distribution.manifest.v2+json")
        );
        assert_eq!(
            media_type_of(None, br#"{"manifests":[]}"#).as_deref(),
            Some("application/vnd.oci.image.index.v1+json")
        );
        assert_eq!(
            media_type_of(Some("text/plain"), br#"{"config":{},"layers":[]}"#).as_deref(),
            Some(OCI_MANIFEST)
        );
        assert_eq!(media_type_of(None, b"{}"), None);
        assert_eq!(media_type_of(None, b"not json"), None);
    }

    /// A blob server that breaks the first response after `cut` bytes.
    fn flaky_blob_server(data: Vec<u8>, cut: usize, honour_range: bool) -> TestServer {
        let mut srv = TestServer::new();
        let mut first = true;
        srv.serve(move |r| {
            let start = r
                .header("range")
                .and_then(|v| v.strip_prefix("bytes="))
                .and_then(|v| v.trim_end_matches('-').parse::<usize>().ok())
                .unwrap_or(0);
            if first {
                first = false;
                let mut out = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    data.len()
                )
                .into_bytes();
                out.extend_from_slice(&data[..cut]);
                return out;
            }
            if start > 0 && honour_range {
                let range = format!("bytes {start}-{}/{}", data.len() - 1, data.len());
                reply(206, &[("Content-Range", &range)], &data[start..])
            } else {
                reply(200, &[], &data)
            }
        });
        srv
    }

    #[test]
    fn broken_body_resumes_with_range() {
        let data = blob(300 * 1024 + 17);
        let srv = flaky_blob_server(data.clone(), 100 * 1024 + 5, true);
        let r = Reference::parse(&format!("{}/x", srv.addr)).unwrap();
        let digest = Digest::of(&data);
        let mut out = Vec::new();
        let mut reported = 0;
        let n = client()
            .fetch_blob(&r, &digest, 0, &mut out, &mut |k| reported += k)
            .unwrap();
        assert_eq!(n, data.len() as u64);
        assert_eq!(reported, n);
        assert!(out == data, "resumed bytes differ");
        let reqs = srv.requests();
        assert_eq!(reqs.len(), 2);
        assert_eq!(reqs[0].path, format!("/v2/x/blobs/{digest}"));
        assert_eq!(reqs[0].header("range"), None);
        assert_eq!(reqs[1].header("range"), Some("bytes=102405-"));
    }

    #[test]
    fn resume_against_a_server_ignoring_range() {
        let data = blob(200 * 1024);
        let srv = flaky_blob_server(data.clone(), 70 * 1024, false);
        let r = Reference::parse(&format!("{}/x", srv.addr)).unwrap();
        let mut out = Vec::new();
        let n = client()
            .fetch_blob(&r, &Digest::of(&data), 0, &mut out, &mut |_| {})
            .unwrap();
        assert_eq!(n, data.len() as u64);
        assert!(out == data, "bytes differ after skipping");
    }

    #[test]
    fn fetch_from_an_offset() {
        let data = blob(150 * 1024);
        let mut srv = TestServer::new();
        let copy = data.clone();
        // Answers Range with the whole blob: the client must skip.
        srv.serve(move |_| reply(200, &[], &copy));
        let r = Reference::parse(&format!("{}/x", srv.addr)).unwrap();
        let mut out = Vec::new();
        let n = client()
            .fetch_blob(&r, &Digest::of(&data), 1000, &mut out, &mut |_| {})
            .unwrap();
        assert_eq!(n, data.len() as u64 - 1000);
        assert!(out[..] == data[1000..]);
        assert_eq!(srv.requests()[0].header("range"), Some("bytes=1000-"));
    }

    #[test]
    fn missing_blob_is_not_found() {
        let mut srv = TestServer::new();
        srv.serve(|_| {
            reply(
                404,
                &[],
                br#"{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown to registry"}]}"#,
            )
        });
        let r = Reference::parse(&format!("{}/tiny", srv.addr)).unwrap();
        let d = Digest::of(b"x");
        let err = client()
            .fetch_blob(&r, &d, 0, &mut Vec::new(), &mut |_| {})
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert_eq!(
            err.to_string(),
            format!(
                "fetching blob {d} from {}/tiny: 404 Not Found: BLOB_UNKNOWN: blob unknown to registry",
                srv.addr
            )
        );
    }

    #[test]
    fn stalled_body_times_out_and_resumes() {
        let data = blob(100 * 1024);
        let mut srv = TestServer::new();
        let copy = data.clone();
        srv.serve(move |r| match r.header("range") {
            None => {
                let mut bytes =
                    format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", copy.len())
                        .into_bytes();
                bytes.extend_from_slice(&copy[..1000]);
                Reply {
                    bytes,
                    stall: Some(std::time::Duration::from_secs(3)),
                }
            }
            Some(_) => reply(206, &[], &copy[1000..]).into(),
        });
        let mut opts = test_options();
        opts.read_timeout = std::time::Duration::from_millis(200);
        let started = std::time::Instant::now();
        let r = Reference::parse(&format!("{}/x", srv.addr)).unwrap();
        let mut out = Vec::new();
        Client::new(opts)
            .unwrap()
            .fetch_blob(&r, &Digest::of(&data), 0, &mut out, &mut |_| {})
            .unwrap();
        assert!(out == data, "bytes differ after a stall");
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        assert_eq!(srv.requests()[1].header("range"), Some("bytes=1000-"));
    }

    #[test]
    fn a_body_that_keeps_breaking_gives_up() {
        let mut srv = TestServer::new();
        srv.serve(|_| {
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nConnection: close\r\n\r\n".to_vec()
        });
        let r = Reference::parse(&format!("{}/x", srv.addr)).unwrap();
        let err = client()
            .fetch_blob(&r, &Digest::of(b"x"), 0, &mut Vec::new(), &mut |_| {})
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
        assert_eq!(srv.requests().len() as u32, test_options().retry.attempts);
    }
}
