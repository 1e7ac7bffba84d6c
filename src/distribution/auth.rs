//! Registry authentication: `WWW-Authenticate` challenges, Basic auth, and
//! bearer tokens (the docker token flow).
//!
//! The dance, per request: send with whatever the client already knows
//! works for the host (a cached token for this scope, or Basic); on a `401`,
//! read the challenge, get a token from its realm (or prepare Basic), and
//! send once more. Tokens are cached per (host, scope) until they expire;
//! the cache is shared by every clone of the client.
//!
//! Token requests are `GET realm?service=…&scope=…`, with Basic credentials
//! when we have some. An identity (refresh) token from a credential helper
//! can only be used in the OAuth2 form, so that one case is a
//! `POST realm` with `grant_type=refresh_token`.

use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ureq::http::Response;
use ureq::Body;

use super::client::{query_escape, redact_url, Client, Method, Req};
use super::credentials::Credential;
use super::{Error, Result};

/// Token lifetime when the server does not say (the docker spec's default).
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
const TOKEN_BODY_LIMIT: u64 = 1024 * 1024;

/// One challenge of a `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Challenge {
    /// Lowercased: `basic`, `bearer`.
    pub scheme: String,
    /// Parameter names lowercased, values unquoted.
    pub params: Vec<(String, String)>,
}

impl Challenge {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses a `WWW-Authenticate` value, which may hold several challenges:
/// `Bearer realm="https://a/token",service="a",scope="repository:x:pull"`.
pub(super) fn parse_challenges(header: &str) -> Vec<Challenge> {
    let mut out: Vec<Challenge> = Vec::new();
    let s = header.as_bytes();
    let mut i = 0;
    let is_token = |b: u8| !b.is_ascii_whitespace() && b != b',' && b != b'=' && b != b'"';
    while i < s.len() {
        while i < s.len() && (s[i].is_ascii_whitespace() || s[i] == b',') {
            i += 1;
        }
        let start = i;
        while i < s.len() && is_token(s[i]) {
            i += 1;
        }
        if start == i {
            // Stray '=' or '"': skip it rather than loop forever.
            i += 1;
            continue;
        }
        let word = &header[start..i];
        let mut j = i;
        while j < s.len() && s[j].is_ascii_whitespace() {
            j += 1;
        }
        if j < s.len() && s[j] == b'=' {
            // A parameter of the current challenge.
            i = j + 1;
            while i < s.len() && s[i].is_ascii_whitespace() {
                i += 1;
            }
            let value = if i < s.len() && s[i] == b'"' {
                let mut v = String::new();
                i += 1;
                let mut chars = header[i..].char_indices();
                let mut end = header.len() - i;
                while let Some((k, c)) = chars.next() {
                    match c {
                        '"' => {
                            end = k + 1;
                            break;
                        }
                        '\\' => {
                            if let Some((_, n)) = chars.next() {
                                v.push(n);
                            }
                        }
                        c => v.push(c),
                    }
                }
                i += end;
                v
            } else {
                let vs = i;
                while i < s.len() && s[i] != b',' && !s[i].is_ascii_whitespace() {
                    i += 1;
                }
                header[vs..i].to_string()
            };
            if let Some(ch) = out.last_mut() {
                ch.params.push((word.to_ascii_lowercase(), value));
            }
        } else {
            out.push(Challenge {
                scheme: word.to_ascii_lowercase(),
                params: Vec::new(),
            });
        }
    }
    out
}

/// A string that never shows itself in `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// How a host wants to be authenticated, learnt from its challenges.
#[derive(Debug, Clone)]
enum HostScheme {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

#[derive(Debug, Clone)]
struct Token {
    value: Secret,
    expires: Instant,
}

/// Per-client authentication state, shared by all clones.
#[derive(Default)]
pub(super) struct AuthCache {
    /// API host → scheme it challenged us with.
    schemes: Mutex<HashMap<String, HostScheme>>,
    /// (API host, scope) → token.
    tokens: Mutex<HashMap<(String, String), Token>>,
    /// Registry → credential found for it (`None`: anonymous).
    credentials: Mutex<HashMap<String, Option<Credential>>>,
}

impl fmt::Debug for AuthCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tokens = self.tokens.lock().map_or(0, |t| t.len());
        f.debug_struct("AuthCache")
            .field("cached_tokens", &tokens)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What a request is for: whose credentials, which host, which scope.
pub(super) struct Target<'a> {
    /// The registry name credentials are stored under (`docker.io`).
    pub registry: &'a str,
    /// The API host tokens are cached for (`registry-1.docker.io`).
    pub host: &'a str,
    /// `repository:<name>:pull`; several are separated by spaces
    /// (`repository:a:pull,push repository:b:pull`).
    pub scope: String,
}

impl Client {
    /// Sends `req` to `target`, authenticating as the registry asks.
    /// Returns the final response, whatever its status.
    pub(super) fn send_authorized(
        &self,
        target: &Target,
        mut req: Req,
        context: &dyn Fn() -> String,
    ) -> Result<Response<Body>> {
        req.authorization = self.known_authorization(target, context)?;
        let sent = req.authorization.clone();
        let resp = self.send(&req, context)?;
        if resp.status().as_u16() != 401 {
            return Ok(resp);
        }
        let challenges: Vec<Challenge> = resp
            .headers()
            .get_all("www-authenticate")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(parse_challenges)
            .collect();
        let bearer = challenges.iter().find(|c| c.scheme == "bearer");
        let basic = challenges.iter().find(|c| c.scheme == "basic");
        let authorization = if let Some(ch) = bearer {
            let Some(realm) = ch.param("realm") else {
                return Err(Error::InvalidResponse {
                    context: context(),
                    reason: "bearer challenge without a realm".into(),
                });
            };
            let scheme = HostScheme::Bearer {
                realm: realm.to_string(),
                service: ch.param("service").map(str::to_string),
            };
            lock(&self.inner.auth.schemes).insert(target.host.to_string(), scheme.clone());
            // A token we just sent was refused: this fetches a fresh one.
            let token = self.fetch_token(target, &scheme, context)?;
            format!("Bearer {}", token.0)
        } else if basic.is_some() {
            lock(&self.inner.auth.schemes).insert(target.host.to_string(), HostScheme::Basic);
            let header = self
                .credential(target.registry)?
                .filter(|c| c.as_identity_token().is_none())
                .map(|c| c.basic_header());
            match header {
                Some(h) if sent.as_ref() != Some(&h) => h,
                // Nothing (new) to offer: the 401 stands.
                _ => return Ok(resp),
            }
        } else {
            return Ok(resp);
        };
        drop(resp);
        req.authorization = Some(authorization);
        self.send(&req, context)
    }

    /// The `Authorization` value to send up front, from what we learnt of
    /// the host earlier (fetching a token for a new scope if needed).
    fn known_authorization(
        &self,
        target: &Target,
        context: &dyn Fn() -> String,
    ) -> Result<Option<String>> {
        let scheme = lock(&self.inner.auth.schemes).get(target.host).cloned();
        match scheme {
            None => Ok(None),
            Some(HostScheme::Basic) => Ok(self
                .credential(target.registry)?
                .filter(|c| c.as_identity_token().is_none())
                .map(|c| c.basic_header())),
            Some(scheme @ HostScheme::Bearer { .. }) => {
                let key = (target.host.to_string(), target.scope.clone());
                let cached = lock(&self.inner.auth.tokens)
                    .get(&key)
                    .filter(|t| t.expires > Instant::now())
                    .map(|t| t.value.clone());
                let token = match cached {
                    Some(t) => t,
                    None => self.fetch_token(target, &scheme, context)?,
                };
                Ok(Some(format!("Bearer {}", token.0)))
            }
        }
    }

    /// Asks the realm for a token for `target.scope` and caches it.
    fn fetch_token(
        &self,
        target: &Target,
        scheme: &HostScheme,
        context: &dyn Fn() -> String,
    ) -> Result<Secret> {
        let HostScheme::Bearer { realm, service } = scheme else {
            return Err(Error::InvalidResponse {
                context: context(),
                reason: "token requested for a host without a bearer challenge".into(),
            });
        };
        let token_context = || {
            format!(
                "{}: requesting a token from {} for scope {}",
                context(),
                redact_url(realm),
                target.scope
            )
        };
        if super::client::origin(realm).is_none() {
            return Err(Error::InvalidResponse {
                context: token_context(),
                reason: "the realm is not an http(s) URL".into(),
            });
        }
        self.debug_log(|| {
            format!(
                "requesting token for scope {} from {}",
                target.scope,
                redact_url(realm)
            )
        });
        let credential = self.credential(target.registry)?;
        let mut query = Vec::new();
        if let Some(s) = service {
            query.push(format!("service={}", query_escape(s)));
        }
        // Several scopes (push with a cross-repository mount) are separated
        // by spaces in `target.scope` and sent as repeated parameters.
        for scope in target.scope.split_whitespace() {
            query.push(format!("scope={}", query_escape(scope)));
        }
        let req = match credential.as_ref().and_then(|c| c.as_identity_token()) {
            Some(refresh) => {
                query.push("grant_type=refresh_token".into());
                query.push(format!("refresh_token={}", query_escape(refresh)));
                query.push("client_id=berth".into());
                Req {
                    method: Method::Post,
                    url: realm.clone(),
                    headers: Vec::new(),
                    authorization: None,
                    body: Some((
                        "application/x-www-form-urlencoded".to_string(),
                        query.join("&").into_bytes(),
                    )),
                }
            }
            None => {
                let sep = if realm.contains('?') { '&' } else { '?' };
                let mut req = Req::get(format!("{realm}{sep}{}", query.join("&")));
                req.authorization = credential.map(|c| c.basic_header());
                req
            }
        };
        let mut resp = self.send(&req, &token_context)?;
        if resp.status().as_u16() != 200 {
            return Err(self.registry_error(token_context(), resp));
        }
        #[derive(serde::Deserialize)]
        struct TokenResponse {
            #[serde(default)]
            token: String,
            #[serde(default)]
            access_token: String,
            #[serde(default)]
            expires_in: u64,
        }
        let mut body = Vec::new();
        resp.body_mut()
            .as_reader()
            .take(TOKEN_BODY_LIMIT)
            .read_to_end(&mut body)
            .map_err(|e| Error::Body {
                context: token_context(),
                source: e,
            })?;
        // Never quote the body: it holds the token.
        let parsed: TokenResponse =
            serde_json::from_slice(&body).map_err(|_| Error::InvalidResponse {
                context: token_context(),
                reason: "the token response is not the expected JSON".into(),
            })?;
        let value = if !parsed.token.is_empty() {
            parsed.token
        } else if !parsed.access_token.is_empty() {
            parsed.access_token
        } else {
            return Err(Error::InvalidResponse {
                context: token_context(),
                reason: "the token response has neither \"token\" nor \"access_token\"".into(),
            });
        };
        let lifetime = Duration::from_secs(parsed.expires_in).max(DEFAULT_TOKEN_LIFETIME);
        // Renew a little early so a token does not expire in flight.
        let expires = Instant::now() + lifetime.mul_f64(0.9);
        let token = Secret(value);
        lock(&self.inner.auth.tokens).insert(
            (target.host.to_string(), target.scope.clone()),
            Token {
                value: token.clone(),
                expires,
            },
        );
        Ok(token)
    }

    /// The credential for `registry`: `--user` if given, else looked up
    /// once and remembered.
    fn credential(&self, registry: &str) -> Result<Option<Credential>> {
        if let Some(c) = &self.opts().credential {
            return Ok(Some(c.clone()));
        }
        if let Some(c) = lock(&self.inner.auth.credentials).get(registry) {
            return Ok(c.clone());
        }
        let found = self.opts().credential_sources.lookup(registry)?;
        lock(&self.inner.auth.credentials).insert(registry.to_string(), found.clone());
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testserver::{reply, test_options, TestServer};
    use super::super::{Client, Credential, Reference};
    use super::*;

    #[test]
    fn parses_docker_hub_challenge() {
        let h = r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#;
        let c = parse_challenges(h);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(c[0].param("realm"), Some("https://auth.docker.io/token"));
        assert_eq!(c[0].param("service"), Some("registry.docker.io"));
        assert_eq!(c[0].param("scope"), Some("repository:library/busybox:pull"));
    }

    #[test]
    fn parses_several_challenges_quotes_and_commas() {
        let h = r#"Basic realm="Registry Realm", Bearer realm=https://a/t, scope="repository:a:pull,push", error="x\"y""#;
        let c = parse_challenges(h);
        assert_eq!(c.len(), 2, "{c:?}");
        assert_eq!(c[0].scheme, "basic");
        assert_eq!(c[0].param("realm"), Some("Registry Realm"));
        assert_eq!(c[1].param("realm"), Some("https://a/t"));
        assert_eq!(c[1].param("scope"), Some("repository:a:pull,push"));
        assert_eq!(c[1].param("error"), Some("x\"y"));
    }

    #[test]
    fn parses_odd_challenges_without_panicking() {
        assert_eq!(parse_challenges("Basic")[0].scheme, "basic");
        assert!(parse_challenges("").is_empty());
        assert_eq!(
            parse_challenges("BEARER Realm = \"r\"")[0].param("realm"),
            Some("r")
        );
        for junk in [
            "=",
            "\"",
            "Bearer realm=\"unterminated",
            ",,,",
            "Bearer ==x",
        ] {
            let _ = parse_challenges(junk);
        }
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        assert_eq!(format!("{:?}", Secret("tok".into())), "<redacted>");
        let mut opts = test_options();
        opts.credential = Some(Credential::new("alice", "hunter2"));
        let c = Client::new(opts).unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    fn manifest_ok() -> Vec<u8> {
        reply(
            200,
            &[("Content-Type", "application/vnd.oci.image.manifest.v1+json")],
            br#"{"schemaVersion":2}"#,
        )
    }

    #[test]
    fn bearer_token_is_fetched_once_and_reused() {
        let mut srv = TestServer::new();
        let realm = format!("http://{}/token", srv.addr);
        srv.serve(move |r| {
            if r.path.starts_with("/token") {
                return reply(200, &[], br#"{"access_token":"tok-123","expires_in":300}"#);
            }
            match r.header("authorization") {
                Some("Bearer tok-123") => manifest_ok(),
                _ => reply(
                    401,
                    &[(
                        "WWW-Authenticate",
                        &format!(
                            r#"Bearer realm="{realm}",service="test",scope="repository:repo:pull""#
                        ),
                    )],
                    br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
                ),
            }
        });
        let mut opts = test_options();
        opts.credential = Some(Credential::new("alice", "pw"));
        let c = Client::new(opts).unwrap();
        let r = Reference::parse(&format!("{}/repo:v1", srv.addr)).unwrap();
        c.get_manifest(&r).unwrap();
        c.clone().get_manifest(&r).unwrap();
        let reqs = srv.requests();
        let paths: Vec<&str> = reqs.iter().map(|r| r.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/v2/repo/manifests/v1",
                "/token?service=test&scope=repository%3Arepo%3Apull",
                "/v2/repo/manifests/v1",
                "/v2/repo/manifests/v1",
            ]
        );
        // The token request carried the credentials as Basic auth.
        assert_eq!(reqs[1].header("authorization"), Some("Basic YWxpY2U6cHc="));
    }

    #[test]
    fn refused_token_is_unauthorized() {
        let mut srv = TestServer::new();
        let realm = format!("http://{}/token", srv.addr);
        srv.serve(move |r| {
            if r.path.starts_with("/token") {
                return reply(
                    401,
                    &[],
                    br#"{"errors":[{"code":"UNAUTHORIZED","message":"bad creds"}]}"#,
                );
            }
            reply(
                401,
                &[("WWW-Authenticate", &format!("Bearer realm=\"{realm}\""))],
                b"",
            )
        });
        let c = Client::new(test_options()).unwrap();
        let r = Reference::parse(&format!("{}/repo", srv.addr)).unwrap();
        let err = c.get_manifest(&r).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Unauthorized);
        let msg = err.to_string();
        assert!(
            msg.contains("requesting a token") && msg.contains("bad creds"),
            "{msg}"
        );
    }

    #[test]
    fn basic_challenge_gets_basic_auth_then_sends_it_up_front() {
        let mut srv = TestServer::new();
        srv.serve(|r| match r.header("authorization") {
            Some("Basic dXNlcjpwYXNz") => manifest_ok(),
            _ => reply(401, &[("WWW-Authenticate", "Basic realm=\"reg\"")], b""),
        });
        let mut opts = test_options();
        opts.credential = Some(Credential::new("user", "pass"));
        let c = Client::new(opts).unwrap();
        let r = Reference::parse(&format!("{}/repo", srv.addr)).unwrap();
        c.get_manifest(&r).unwrap();
        c.get_manifest(&r).unwrap();
        let statuses: Vec<Option<String>> = srv
            .requests()
            .iter()
            .map(|r| r.header("authorization").map(str::to_string))
            .collect();
        assert_eq!(
            statuses,
            [
                None,
                Some("Basic dXNlcjpwYXNz".into()),
                Some("Basic dXNlcjpwYXNz".into())
            ]
        );
    }

    #[test]
    fn basic_challenge_without_credentials_is_unauthorized() {
        let mut srv = TestServer::new();
        srv.serve(|_| reply(401, &[("WWW-Authenticate", "Basic realm=\"reg\"")], b""));
        let c = Client::new(test_options()).unwrap();
        let r = Reference::parse(&format!("{}/repo", srv.addr)).unwrap();
        let err = c.get_manifest(&r).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Unauthorized);
        assert_eq!(srv.requests().len(), 1);
    }

    #[test]
    fn identity_token_uses_the_oauth2_post_form() {
        let mut srv = TestServer::new();
        let realm = format!("http://{}/oauth", srv.addr);
        srv.serve(move |r| {
            if r.method == "POST" {
                return reply(200, &[], br#"{"access_token":"acc"}"#);
            }
            match r.header("authorization") {
                Some("Bearer acc") => manifest_ok(),
                _ => reply(
                    401,
                    &[(
                        "WWW-Authenticate",
                        &format!("Bearer realm=\"{realm}\",service=\"s\""),
                    )],
                    b"",
                ),
            }
        });
        let mut opts = test_options();
        opts.credential = Some(Credential::identity_token("refresh-me"));
        let c = Client::new(opts).unwrap();
        let r = Reference::parse(&format!("{}/repo", srv.addr)).unwrap();
        c.get_manifest(&r).unwrap();
        let post = srv
            .requests()
            .into_iter()
            .find(|r| r.method == "POST")
            .unwrap();
        let body = String::from_utf8(post.body).unwrap();
        assert!(body.contains("grant_type=refresh_token"), "{body}");
        assert!(body.contains("refresh_token=refresh-me"), "{body}");
        assert!(body.contains("scope=repository%3Arepo%3Apull"), "{body}");
    }
}
