//! The registry client: talks the OCI distribution / Docker registry v2
//! HTTP API to fetch manifests and blobs, and to push them (`push`).
//!
//! How a pull uses it:
//!
//! 1. Parse what the user typed into a [`Reference`] (`busybox` becomes
//!    `docker.io/library/busybox:latest`).
//! 2. Build one [`Client`] from [`ClientOptions`]; it is cheap to clone and
//!    safe to share between download threads (tokens and connections are
//!    shared too).
//! 3. [`Client::get_manifest`] resolves the tag (or digest) to raw manifest
//!    bytes, verified against the digest the user or registry named.
//! 4. [`Client::fetch_blob`] streams each config and layer into a writer,
//!    resuming with `Range` requests when a connection breaks. It does not
//!    check the digest: the content store's writer hashes what it stores.
//!
//! Authentication happens on demand: a `401` with a `WWW-Authenticate`
//! challenge makes the client find credentials ([`CredentialSources`]) and
//! either send them as Basic auth or trade them for a bearer token, which is
//! cached per registry host and scope. Secrets never appear in `Debug`
//! output, error messages or debug logs.
//!
//! Files, one concept each: `reference` (names), `credentials` (where
//! secrets come from), `auth` (challenges and tokens), `client` (transport:
//! TLS, retries, redirects, logging), `fetch` (manifests and blobs),
//! `push` (blob uploads, cross-repository mounts, manifest PUTs).

mod auth;
mod client;
mod credentials;
mod fetch;
mod push;
mod reference;

#[cfg(test)]
mod testserver;

pub use client::{Client, ClientOptions, HostOptions, RetryPolicy};
pub use credentials::{Credential, CredentialSources};
pub use fetch::{Manifest, MANIFEST_ACCEPT, MANIFEST_SIZE_LIMIT};
pub use push::{BlobAction, BlobUpload, DEFAULT_CHUNK_SIZE};
pub use reference::Reference;

use std::fmt;
use std::path::PathBuf;

use crate::content::Digest;
use crate::ErrorKind;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One entry of a registry's JSON error envelope,
/// `{"errors":[{"code":…,"message":…,"detail":…}]}`.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct RegistryError {
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub detail: Option<serde_json::Value>,
}

impl RegistryError {
    /// Parses an error envelope; `None` when `body` is not one.
    pub fn parse_envelope(body: &[u8]) -> Option<Vec<RegistryError>> {
        #[derive(serde::Deserialize)]
        struct Envelope {
            errors: Vec<RegistryError>,
        }
        let env: Envelope = serde_json::from_slice(body).ok()?;
        if env.errors.is_empty() {
            None
        } else {
            Some(env.errors)
        }
    }
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.code.is_empty(), self.message.is_empty()) {
            (false, false) => write!(f, "{}: {}", self.code, self.message),
            (false, true) => f.write_str(&self.code),
            (true, _) => f.write_str(&self.message),
        }
    }
}

/// What the registry answered when it did not answer with success: the
/// status and, when it sent one, its error envelope (or a short plain-text
/// body).
#[derive(Debug, Clone)]
pub struct RegistryResponse {
    pub status: u16,
    pub errors: Vec<RegistryError>,
    /// The start of a body that was not an error envelope, if any.
    pub text: Option<String>,
}

impl fmt::Display for RegistryResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let reason = ureq::http::StatusCode::from_u16(self.status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("");
        write!(f, "{} {reason}", self.status)?;
        for e in &self.errors {
            write!(f, ": {e}")?;
        }
        if let Some(text) = &self.text {
            write!(f, ": {text}")?;
        }
        Ok(())
    }
}

/// Errors of the distribution module. Every variant carries what the user
/// needs to act: the operation (`fetching blob … from host/repo`), the
/// registry's own words, the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid reference {input:?}: {reason}")]
    InvalidReference { input: String, reason: String },

    /// The registry answered with a non-success status.
    #[error("{context}: {response}")]
    Registry {
        context: String,
        response: RegistryResponse,
    },

    /// The registry could not be reached, or the connection failed.
    #[error("{context}: {method} {url}: {source}")]
    Transport {
        context: String,
        method: &'static str,
        /// With secret-looking query parameters removed.
        url: String,
        #[source]
        source: Box<ureq::Error>,
    },

    /// The connection broke while reading a response body.
    #[error("{context}: reading the response: {source}")]
    Body {
        context: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{context}: digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        context: String,
        expected: Digest,
        actual: Digest,
    },

    #[error("{context}: manifest is larger than the {limit}-byte limit")]
    ManifestTooLarge { context: String, limit: u64 },

    /// The registry answered something we cannot use.
    #[error("{context}: {reason}")]
    InvalidResponse { context: String, reason: String },

    #[error("credentials file {}: {reason}", path.display())]
    CredentialsFile { path: PathBuf, reason: String },

    #[error("credential helper docker-credential-{helper} for {server}: {reason}")]
    CredentialHelper {
        helper: String,
        server: String,
        reason: String,
    },

    #[error("CA certificate file {}: {reason}", path.display())]
    CaFile { path: PathBuf, reason: String },

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidReference { .. } => ErrorKind::InvalidArgument,
            Error::Registry { response, .. } => status_kind(response),
            Error::Transport { source, .. } => transport_kind(source),
            Error::Body { .. } => ErrorKind::Unavailable,
            Error::DigestMismatch { .. } => ErrorKind::DataLoss,
            Error::ManifestTooLarge { .. } => ErrorKind::Internal,
            Error::InvalidResponse { .. } => ErrorKind::Internal,
            Error::CredentialsFile { .. } => ErrorKind::InvalidArgument,
            Error::CredentialHelper { .. } => ErrorKind::Unauthorized,
            Error::CaFile { .. } => ErrorKind::InvalidArgument,
            Error::Io { .. } => ErrorKind::Internal,
        }
    }
}

fn status_kind(r: &RegistryResponse) -> ErrorKind {
    let has = |codes: &[&str]| r.errors.iter().any(|e| codes.contains(&e.code.as_str()));
    if r.status == 404 || has(&["NAME_UNKNOWN", "MANIFEST_UNKNOWN", "BLOB_UNKNOWN"]) {
        ErrorKind::NotFound
    } else if r.status == 401 || r.status == 403 || has(&["UNAUTHORIZED", "DENIED"]) {
        ErrorKind::Unauthorized
    } else if r.status >= 500 || r.status == 429 || r.status == 408 {
        ErrorKind::Unavailable
    } else if has(&["NAME_INVALID", "TAG_INVALID", "DIGEST_INVALID"]) {
        ErrorKind::InvalidArgument
    } else {
        ErrorKind::Internal
    }
}

fn transport_kind(e: &ureq::Error) -> ErrorKind {
    match e {
        ureq::Error::BadUri(_) | ureq::Error::RequireHttpsOnly(_) => ErrorKind::InvalidArgument,
        _ => ErrorKind::Unavailable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, body: &str) -> RegistryResponse {
        RegistryResponse {
            status,
            errors: RegistryError::parse_envelope(body.as_bytes()).unwrap_or_default(),
            text: None,
        }
    }

    #[test]
    fn envelope_is_parsed_and_shown() {
        let body = r#"{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown to registry","detail":"sha256:ab"}]}"#;
        let err = Error::Registry {
            context: "fetching blob sha256:ab from 127.0.0.1:5000/tiny".into(),
            response: response(404, body),
        };
        assert_eq!(
            err.to_string(),
            "fetching blob sha256:ab from 127.0.0.1:5000/tiny: 404 Not Found: \
             BLOB_UNKNOWN: blob unknown to registry"
        );
        assert_eq!(err.kind(), ErrorKind::NotFound);
    }

    #[test]
    fn envelope_parsing_tolerates_missing_fields_and_rejects_other_json() {
        let errs = RegistryError::parse_envelope(br#"{"errors":[{"code":"DENIED"}]}"#).unwrap();
        assert_eq!(errs[0].code, "DENIED");
        assert_eq!(errs[0].to_string(), "DENIED");
        assert!(RegistryError::parse_envelope(b"<html>").is_none());
        assert!(RegistryError::parse_envelope(br#"{"errors":[]}"#).is_none());
        assert!(RegistryError::parse_envelope(br#"{"token":"x"}"#).is_none());
    }

    #[test]
    fn kinds_follow_status_and_codes() {
        let kind = |status, body| status_kind(&response(status, body));
        assert_eq!(kind(404, ""), ErrorKind::NotFound);
        assert_eq!(
            kind(400, r#"{"errors":[{"code":"MANIFEST_UNKNOWN"}]}"#),
            ErrorKind::NotFound
        );
        assert_eq!(
            kind(401, r#"{"errors":[{"code":"NAME_UNKNOWN"}]}"#),
            ErrorKind::NotFound
        );
        assert_eq!(kind(401, ""), ErrorKind::Unauthorized);
        assert_eq!(kind(403, ""), ErrorKind::Unauthorized);
        assert_eq!(kind(503, ""), ErrorKind::Unavailable);
        assert_eq!(kind(500, ""), ErrorKind::Unavailable);
        assert_eq!(kind(429, ""), ErrorKind::Unavailable);
        assert_eq!(
            kind(400, r#"{"errors":[{"code":"TAG_INVALID"}]}"#),
            ErrorKind::InvalidArgument
        );
        assert_eq!(kind(418, ""), ErrorKind::Internal);
    }
}
