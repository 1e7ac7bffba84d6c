//! The transport under every registry request: which scheme and TLS
//! settings a host gets, retries with backoff, redirects that never carry
//! our `Authorization` to another host, and the `--debug` request log.
//!
//! One logical request ([`Client::send`]) may become several HTTP exchanges:
//! retried after connection errors and 429/5xx answers, and followed through
//! redirects (registries send blob GETs to object storage). Authentication
//! sits one layer up, in `auth`.

use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ureq::http::Response;
use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};
use ureq::{Agent, Body};

use super::auth::AuthCache;
use super::credentials::{Credential, CredentialSources};
use super::{Error, RegistryError, RegistryResponse, Result};

/// How often and how patiently to retry.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Total tries of one request, the first included.
    pub attempts: u32,
    /// Wait before the first retry; doubles each time.
    pub initial_backoff: Duration,
    /// Longest wait between tries (a `Retry-After` may ask for up to 30 s).
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(3),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `n` (1-based).
    pub(super) fn backoff(&self, n: u32) -> Duration {
        let factor = 1u32 << n.saturating_sub(1).min(16);
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

/// The longest `Retry-After` we honour.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);
const MAX_REDIRECTS: usize = 10;
/// How much of an error body we read to find the registry's error envelope.
const ERROR_BODY_LIMIT: u64 = 64 * 1024;

/// Settings for one registry host (`host` or `host:port`).
#[derive(Debug, Clone, Default)]
pub struct HostOptions {
    /// Talk plain HTTP to this host.
    pub plain_http: bool,
    /// Skip TLS certificate verification for this host.
    pub insecure: bool,
    /// A PEM bundle of extra CA certificates trusted for this host.
    pub ca_file: Option<PathBuf>,
}

/// Everything a [`Client`] is built from.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Plain HTTP for every host. Loopback hosts (`localhost`,
    /// `127.0.0.0/8`, `::1`) get plain HTTP regardless, as with docker.
    pub plain_http: bool,
    /// Skip TLS certificate verification for every host.
    pub insecure: bool,
    /// Extra CA bundles (PEM) trusted for every host. When set, the trusted
    /// roots are the system bundle (`/etc/ssl/certs/…`) plus these, instead
    /// of the built-in Mozilla roots.
    pub ca_files: Vec<PathBuf>,
    /// Per-host settings, keyed by registry name (`docker.io`,
    /// `localhost:5000`).
    pub hosts: HashMap<String, HostOptions>,
    /// Use this credential for every registry (`--user`), instead of looking
    /// one up in `credential_sources`.
    pub credential: Option<Credential>,
    pub credential_sources: CredentialSources,
    /// Log every request to stderr (secrets redacted).
    pub debug: bool,
    pub user_agent: String,
    pub connect_timeout: Duration,
    /// Longest wait for any single read, headers or body: a stalled
    /// connection fails (and is retried) instead of hanging.
    pub read_timeout: Duration,
    pub retry: RetryPolicy,
}

impl Default for ClientOptions {
    /// Defaults, with credentials looked up where the environment says.
    fn default() -> Self {
        ClientOptions {
            plain_http: false,
            insecure: false,
            ca_files: Vec::new(),
            hosts: HashMap::new(),
            credential: None,
            credential_sources: CredentialSources::from_env(),
            debug: false,
            user_agent: concat!("berth/", env!("CARGO_PKG_VERSION")).to_string(),
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(60),
            retry: RetryPolicy::default(),
        }
    }
}

/// A registry client. Cloning is cheap and clones share connections,
/// tokens and looked-up credentials, so download threads each take one.
#[derive(Clone)]
pub struct Client {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub(super) opts: ClientOptions,
    /// Roots for hosts without their own CA file, when `ca_files` is set.
    global_roots: Option<Arc<Vec<Certificate<'static>>>>,
    /// Roots for hosts with their own CA file.
    host_roots: HashMap<String, Arc<Vec<Certificate<'static>>>>,
    agents: Mutex<HashMap<AgentKey, Agent>>,
    pub(super) auth: AuthCache,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct AgentKey {
    insecure: bool,
    /// `None`: built-in roots; `Some("")`: global roots; else a host's.
    roots: Option<String>,
    /// Bypass any proxy from the environment (loopback hosts).
    direct: bool,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("opts", &self.inner.opts)
            .field("auth", &self.inner.auth)
            .finish_non_exhaustive()
    }
}

/// An HTTP method we use.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Method {
    Get,
    Head,
    Post,
    Put,
    Patch,
}

impl Method {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
        }
    }
}

/// One logical request. Deliberately not `Debug`: it may hold secrets.
pub(super) struct Req {
    pub method: Method,
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
    /// The `Authorization` value; dropped on redirects to another host.
    pub authorization: Option<String>,
    /// Content type and body, for POST, PUT and PATCH.
    pub body: Option<(String, Vec<u8>)>,
}

impl Req {
    pub(super) fn get(url: String) -> Req {
        Req::new(Method::Get, url)
    }

    pub(super) fn new(method: Method, url: String) -> Req {
        Req {
            method,
            url,
            headers: Vec::new(),
            authorization: None,
            body: None,
        }
    }

    pub(super) fn body(mut self, content_type: impl Into<String>, data: Vec<u8>) -> Req {
        self.body = Some((content_type.into(), data));
        self
    }

    pub(super) fn header(mut self, name: &'static str, value: impl Into<String>) -> Req {
        self.headers.push((name, value.into()));
        self
    }
}

impl Client {
    /// Builds a client; fails only on unreadable CA files.
    pub fn new(opts: ClientOptions) -> Result<Client> {
        let mut global: Vec<Certificate<'static>> = Vec::new();
        for path in &opts.ca_files {
            global.extend(load_pem_certs(path)?);
        }
        let mut host_roots = HashMap::new();
        for (host, h) in &opts.hosts {
            if let Some(path) = &h.ca_file {
                let mut roots = if global.is_empty() {
                    system_roots()
                } else {
                    global.clone()
                };
                roots.extend(load_pem_certs(path)?);
                host_roots.insert(host.clone(), Arc::new(roots));
            }
        }
        let global_roots = (!global.is_empty()).then(|| {
            let mut roots = system_roots();
            roots.extend(global);
            Arc::new(roots)
        });
        Ok(Client {
            inner: Arc::new(Inner {
                opts,
                global_roots,
                host_roots,
                agents: Mutex::new(HashMap::new()),
                auth: AuthCache::default(),
            }),
        })
    }

    pub(super) fn opts(&self) -> &ClientOptions {
        &self.inner.opts
    }

    /// `http` or `https` for a registry host.
    pub(super) fn scheme_for(&self, authority: &str) -> &'static str {
        let host = self.host_options(authority);
        if self.opts().plain_http
            || host.is_some_and(|h| h.plain_http)
            || is_loopback(host_of(authority))
        {
            "http"
        } else {
            "https"
        }
    }

    /// The options for `authority`, accepting `docker.io` for its API host.
    fn host_options(&self, authority: &str) -> Option<&HostOptions> {
        self.host_entry(authority).map(|(_, h)| h)
    }

    fn host_entry(&self, authority: &str) -> Option<(&String, &HostOptions)> {
        let hosts = &self.opts().hosts;
        hosts.get_key_value(authority).or_else(|| match authority {
            "registry-1.docker.io" | "index.docker.io" => hosts.get_key_value("docker.io"),
            _ => None,
        })
    }

    /// Writes one line to stderr when debugging. Callers never pass secrets.
    pub(super) fn debug_log(&self, msg: impl FnOnce() -> String) {
        if self.opts().debug {
            eprintln!("berth: registry: {}", msg());
        }
    }

    /// Sends `req`, retrying transient failures and following redirects.
    /// Returns whatever status the last try got; a transport error becomes
    /// [`Error::Transport`] with `context`.
    pub(super) fn send(&self, req: &Req, context: &dyn Fn() -> String) -> Result<Response<Body>> {
        let policy = &self.opts().retry;
        let mut attempt = 1;
        loop {
            let (delay, why) = match self.send_following_redirects(req) {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    if !retryable_status(status) || attempt >= policy.attempts {
                        return Ok(resp);
                    }
                    let delay = retry_after(&resp).unwrap_or_else(|| policy.backoff(attempt));
                    (delay, format!("status {status}"))
                }
                Err((e, url)) => {
                    if !is_transient(&e) || attempt >= policy.attempts {
                        return Err(Error::Transport {
                            context: context(),
                            method: req.method.as_str(),
                            url: redact_url(&url),
                            source: Box::new(e),
                        });
                    }
                    (policy.backoff(attempt), e.to_string())
                }
            };
            self.debug_log(|| {
                format!(
                    "{} {}: {why}; retrying in {}ms (try {}/{})",
                    req.method.as_str(),
                    redact_url(&req.url),
                    delay.as_millis(),
                    attempt + 1,
                    policy.attempts
                )
            });
            std::thread::sleep(delay);
            attempt += 1;
        }
    }

    /// One try: the request and any redirects. `Authorization` goes only
    /// to the origin it was meant for.
    fn send_following_redirects(
        &self,
        req: &Req,
    ) -> std::result::Result<Response<Body>, (ureq::Error, String)> {
        let mut url = req.url.clone();
        let mut authorization = req.authorization.as_deref();
        for _ in 0..=MAX_REDIRECTS {
            let resp = self
                .send_once(req, &url, authorization)
                .map_err(|e| (e, url.clone()))?;
            if !matches!(resp.status().as_u16(), 301 | 302 | 303 | 307 | 308) {
                return Ok(resp);
            }
            let location = resp.headers().get("location").and_then(|v| v.to_str().ok());
            let Some(next) = location.and_then(|l| resolve_url(&url, l)) else {
                return Ok(resp);
            };
            let dropped = authorization.is_some() && origin(&next) != origin(&url);
            if dropped {
                authorization = None;
            }
            self.debug_log(|| {
                format!(
                    "following redirect to {}{}",
                    redact_url(&next),
                    if dropped {
                        " (without Authorization)"
                    } else {
                        ""
                    }
                )
            });
            url = next;
        }
        Err((ureq::Error::TooManyRedirects, url))
    }

    fn send_once(
        &self,
        req: &Req,
        url: &str,
        authorization: Option<&str>,
    ) -> std::result::Result<Response<Body>, ureq::Error> {
        let agent = self.agent_for(url);
        let start = Instant::now();
        // Headers common to every method; the builders differ in type
        // (with or without a body), hence the macro.
        macro_rules! prepare {
            ($builder:expr) => {{
                let mut b = $builder;
                for (k, v) in &req.headers {
                    b = b.header(*k, v);
                }
                if let Some(a) = authorization {
                    b = b.header("Authorization", a);
                }
                b
            }};
        }
        macro_rules! with_body {
            ($builder:expr) => {{
                let b = prepare!($builder);
                match &req.body {
                    Some((content_type, data)) => b
                        .header("Content-Type", content_type.as_str())
                        .send(&data[..]),
                    None => b.send_empty(),
                }
            }};
        }
        let result = match req.method {
            Method::Get => prepare!(agent.get(url)).call(),
            Method::Head => prepare!(agent.head(url)).call(),
            Method::Post => with_body!(agent.post(url)),
            Method::Put => with_body!(agent.put(url)),
            Method::Patch => with_body!(agent.patch(url)),
        };
        self.debug_log(|| {
            let auth = match authorization.and_then(|a| a.split_whitespace().next()) {
                Some(scheme) => format!(" [{scheme} auth]"),
                None => String::new(),
            };
            let outcome = match &result {
                Ok(resp) => {
                    let len = resp
                        .body()
                        .content_length()
                        .map_or("unknown length".to_string(), |n| format!("{n} bytes"));
                    format!("{}, {len}", resp.status())
                }
                Err(e) => format!("error: {e}"),
            };
            format!(
                "{} {}{auth} -> {outcome} in {}ms",
                req.method.as_str(),
                redact_url(url),
                start.elapsed().as_millis()
            )
        });
        result
    }

    /// The agent for the host of `url`, built on first use.
    fn agent_for(&self, url: &str) -> Agent {
        let authority = origin(url).map_or("", |(_, a)| a);
        let entry = self.host_entry(authority);
        let host = entry.map(|(_, h)| h);
        let roots = match entry {
            Some((name, h)) if h.ca_file.is_some() => Some(name.clone()),
            _ if self.inner.global_roots.is_some() => Some(String::new()),
            _ => None,
        };
        let key = AgentKey {
            insecure: self.opts().insecure || host.is_some_and(|h| h.insecure),
            roots,
            direct: is_loopback(host_of(authority)),
        };
        let mut agents = self.inner.agents.lock().unwrap_or_else(|p| p.into_inner());
        agents
            .entry(key.clone())
            .or_insert_with(|| self.build_agent(&key))
            .clone()
    }

    fn build_agent(&self, key: &AgentKey) -> Agent {
        let opts = self.opts();
        let mut tls = TlsConfig::builder().disable_verification(key.insecure);
        let roots = match key.roots.as_deref() {
            None => None,
            Some("") => self.inner.global_roots.clone(),
            Some(host) => self.inner.host_roots.get(host).cloned(),
        };
        if let Some(roots) = roots {
            tls = tls.root_certs(RootCerts::Specific(roots));
        }
        let mut config = Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_connect(Some(opts.connect_timeout))
            .timeout_per_read(Some(opts.read_timeout))
            .timeout_per_write(Some(opts.read_timeout))
            .user_agent(opts.user_agent.as_str())
            .accept_encoding("identity")
            .tls_config(tls.build());
        if key.direct {
            config = config.proxy(None);
        }
        config.build().new_agent()
    }

    /// Turns a non-success response into [`Error::Registry`], keeping the
    /// registry's error envelope (or the start of a text body).
    pub(super) fn registry_error(&self, context: String, mut resp: Response<Body>) -> Error {
        let status = resp.status().as_u16();
        let mut body = Vec::new();
        let _ = resp
            .body_mut()
            .as_reader()
            .take(ERROR_BODY_LIMIT)
            .read_to_end(&mut body);
        let errors = RegistryError::parse_envelope(&body).unwrap_or_default();
        let text = if errors.is_empty() {
            short_text(&body)
        } else {
            None
        };
        Error::Registry {
            context,
            response: RegistryResponse {
                status,
                errors,
                text,
            },
        }
    }
}

/// The first line of a textual body, shortened; `None` for empty or binary.
fn short_text(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let line = text.lines().map(str::trim).find(|l| !l.is_empty())?;
    let short: String = line.chars().take(200).collect();
    Some(short)
}

fn retryable_status(status: u16) -> bool {
    matches!(status, 429 | 500 | 502 | 503 | 504)
}

/// `Retry-After` in seconds (the HTTP-date form is ignored), capped.
fn retry_after(resp: &Response<Body>) -> Option<Duration> {
    let secs: u64 = resp
        .headers()
        .get("retry-after")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

/// Errors worth another try: the network, not our configuration.
fn is_transient(e: &ureq::Error) -> bool {
    matches!(
        e,
        ureq::Error::Io(_)
            | ureq::Error::Timeout(_)
            | ureq::Error::ConnectionFailed
            | ureq::Error::Protocol(_)
            | ureq::Error::BodyStalled
    )
}

/// Loads every certificate of a PEM bundle.
fn load_pem_certs(path: &Path) -> Result<Vec<Certificate<'static>>> {
    let fail = |reason: String| Error::CaFile {
        path: path.to_path_buf(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(PemItem::Certificate(c)) => certs.push(c),
            Ok(_) => {}
            Err(e) => return Err(fail(format!("malformed PEM: {e}"))),
        }
    }
    if certs.is_empty() {
        return Err(fail("no PEM certificates found".into()));
    }
    Ok(certs)
}

/// The system's CA bundle, for when extra CAs must be added to it.
fn system_roots() -> Vec<Certificate<'static>> {
    const BUNDLES: &[&str] = &[
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
        "/etc/ssl/ca-bundle.pem",
        "/etc/ssl/cert.pem",
    ];
    BUNDLES
        .iter()
        .find_map(|p| load_pem_certs(Path::new(p)).ok())
        .unwrap_or_default()
}

/// `localhost`, `127.0.0.0/8` and `::1`.
pub(super) fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The host of `host[:port]` or `[v6][:port]`.
pub(super) fn host_of(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => authority,
    }
}

/// Scheme and authority of an absolute http(s) URL.
pub(super) fn origin(url: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return None;
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    // Userinfo in a URL would be credentials: refuse such URLs.
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    Some((scheme, authority))
}

/// Resolves a `Location` header against the URL it answered.
pub(super) fn resolve_url(base: &str, location: &str) -> Option<String> {
    if origin(location).is_some() {
        return Some(location.to_string());
    }
    let (scheme, authority) = origin(base)?;
    if let Some(rest) = location.strip_prefix("//") {
        let url = format!("{scheme}://{rest}");
        return origin(&url).is_some().then_some(url);
    }
    if location.starts_with('/') {
        return Some(format!("{scheme}://{authority}{location}"));
    }
    // Relative to the base path's directory.
    let path_start = scheme.len() + 3 + authority.len();
    let path = &base[path_start..];
    let path = path.split(['?', '#']).next().unwrap_or("");
    let dir = path.rfind('/').map_or("/", |i| &path[..=i]);
    Some(format!("{scheme}://{authority}{dir}{location}"))
}

/// `url` fit for logs and errors: query parameters other than a few known
/// harmless ones (presigned storage URLs carry signatures there) become `…`.
pub(super) fn redact_url(url: &str) -> String {
    const HARMLESS: &[&str] = &["service", "scope", "n", "last", "digest", "account"];
    let Some((base, query)) = url.split_once('?') else {
        return url.to_string();
    };
    let params: Vec<String> = query
        .split('&')
        .map(|p| match p.split_once('=') {
            Some((k, _)) if !HARMLESS.contains(&k) => format!("{k}=…"),
            _ => p.to_string(),
        })
        .collect();
    format!("{base}?{}", params.join("&"))
}

/// Percent-encodes a query component.
pub(super) fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::testserver::{reply, test_options, TestServer};
    use super::*;

    #[test]
    fn loopback_hosts_get_plain_http() {
        let mut opts = test_options();
        opts.hosts.insert(
            "plain.io".into(),
            HostOptions {
                plain_http: true,
                ..Default::default()
            },
        );
        let c = Client::new(opts).unwrap();
        assert_eq!(c.scheme_for("localhost:5000"), "http");
        assert_eq!(c.scheme_for("127.0.0.53:80"), "http");
        assert_eq!(c.scheme_for("[::1]:5000"), "http");
        assert_eq!(c.scheme_for("plain.io"), "http");
        assert_eq!(c.scheme_for("ghcr.io"), "https");
        assert_eq!(c.scheme_for("128.0.0.1"), "https");
        let mut forced = test_options();
        forced.plain_http = true;
        assert_eq!(Client::new(forced).unwrap().scheme_for("ghcr.io"), "http");
    }

    #[test]
    fn url_helpers() {
        assert_eq!(
            origin("https://a.io:5000/v2/"),
            Some(("https", "a.io:5000"))
        );
        assert_eq!(origin("https://user:pw@a.io/"), None);
        assert_eq!(origin("ftp://a.io/"), None);
        let base = "http://a.io/v2/x/blobs/sha256:1?x=1";
        assert_eq!(resolve_url(base, "/s3/b").unwrap(), "http://a.io/s3/b");
        assert_eq!(resolve_url(base, "c").unwrap(), "http://a.io/v2/x/blobs/c");
        assert_eq!(resolve_url(base, "//b.io/k").unwrap(), "http://b.io/k");
        assert_eq!(
            resolve_url(base, "https://c.io/k?s=1").unwrap(),
            "https://c.io/k?s=1"
        );
        assert_eq!(host_of("[::1]:5000"), "::1");
        assert_eq!(host_of("localhost:5000"), "localhost");
        assert_eq!(host_of("a.io"), "a.io");
        assert_eq!(
            query_escape("repository:a/b:pull"),
            "repository%3Aa%2Fb%3Apull"
        );
    }

    #[test]
    fn redaction_keeps_signatures_out_of_logs() {
        let url = "https://s3.io/blob?X-Amz-Signature=abc&X-Amz-Credential=k&scope=x";
        let shown = redact_url(url);
        assert!(!shown.contains("abc") && !shown.contains("=k"), "{shown}");
        assert!(shown.contains("scope=x"), "{shown}");
        assert_eq!(redact_url("http://a/v2/"), "http://a/v2/");
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = RetryPolicy::default();
        assert_eq!(p.backoff(1), Duration::from_millis(200));
        assert_eq!(p.backoff(2), Duration::from_millis(400));
        assert_eq!(p.backoff(4), Duration::from_millis(1600));
        assert_eq!(p.backoff(5), Duration::from_secs(3));
        assert_eq!(p.backoff(40), Duration::from_secs(3));
    }

    #[test]
    fn retries_5xx_and_429_then_succeeds() {
        let mut srv = TestServer::new();
        let mut n = 0;
        srv.serve(move |_| {
            n += 1;
            match n {
                1 => reply(503, &[], b"busy"),
                2 => reply(429, &[("Retry-After", "0")], b""),
                _ => reply(200, &[], b"ok"),
            }
        });
        let c = Client::new(test_options()).unwrap();
        let req = Req::get(format!("http://{}/v2/", srv.addr));
        let mut resp = c.send(&req, &|| "pinging".into()).unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        assert_eq!(resp.body_mut().read_to_string().unwrap(), "ok");
        assert_eq!(srv.requests().len(), 3);
    }

    #[test]
    fn gives_up_after_the_retry_budget() {
        let mut srv = TestServer::new();
        srv.serve(|_| reply(502, &[], b"bad gateway"));
        let c = Client::new(test_options()).unwrap();
        let req = Req::get(format!("http://{}/v2/", srv.addr));
        let resp = c.send(&req, &|| "pinging".into()).unwrap();
        assert_eq!(resp.status().as_u16(), 502);
        assert_eq!(srv.requests().len() as u32, test_options().retry.attempts);
        let err = c.registry_error("pinging".into(), resp);
        assert_eq!(err.to_string(), "pinging: 502 Bad Gateway: bad gateway");
        assert_eq!(err.kind(), crate::ErrorKind::Unavailable);
    }

    #[test]
    fn connection_refused_is_unavailable() {
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let c = Client::new(test_options()).unwrap();
        let req = Req::get(format!("http://{addr}/v2/"));
        let err = c.send(&req, &|| "pinging".into()).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Unavailable);
        assert!(err.to_string().starts_with("pinging: GET http://"), "{err}");
    }

    #[test]
    fn redirects_drop_authorization_across_hosts() {
        let mut storage = TestServer::new();
        storage.serve(|_| reply(200, &[], b"blob"));
        let target = format!("http://{}/bucket/blob?X-Amz-Signature=s", storage.addr);
        let mut registry = TestServer::new();
        let (t, same) = (target.clone(), registry.addr.clone());
        registry.serve(move |r| {
            if r.path.starts_with("/v2/") {
                reply(307, &[("Location", &format!("http://{same}/moved"))], b"")
            } else {
                reply(302, &[("Location", &t)], b"")
            }
        });
        let c = Client::new(test_options()).unwrap();
        let mut req = Req::get(format!("http://{}/v2/x/blobs/y", registry.addr));
        req.authorization = Some("Bearer secret-token".into());
        let mut resp = c.send(&req, &|| "fetching".into()).unwrap();
        assert_eq!(resp.body_mut().read_to_string().unwrap(), "blob");
        let reg = registry.requests();
        assert_eq!(reg.len(), 2);
        // Same origin keeps it, the storage host never sees it.
        assert_eq!(reg[1].header("authorization"), Some("Bearer secret-token"));
        let st = storage.requests();
        assert_eq!(st.len(), 1);
        assert_eq!(st[0].header("authorization"), None);
    }

    #[test]
    fn client_is_shareable_between_threads() {
        fn check<T: Clone + Send + Sync + 'static>() {}
        check::<Client>();
    }

    #[test]
    fn bad_ca_files_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate").unwrap();
        let mut opts = test_options();
        opts.ca_files.push(path.clone());
        let err = Client::new(opts).unwrap_err();
        assert!(err.to_string().contains("ca.pem"), "{err}");
        assert_eq!(err.kind(), crate::ErrorKind::InvalidArgument);
    }
}
