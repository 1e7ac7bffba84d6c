//! Registry auth the way Docker Hub and most registries do it: a front that
//! answers 401 with a Bearer challenge, a token endpoint, and scoped tokens.
//!
//! ```text
//! client ── GET /v2/repo/manifests/t ──▶ TokenFront ── 401 WWW-Authenticate: Bearer
//!        ── GET /token?service&scope (Basic user:pass, or anonymous) ──▶ {"token": …}
//!        ── GET /v2/repo/manifests/t, Authorization: Bearer … ──▶ proxied to Registry
//! ```
//!
//! A token grants the scopes it was asked for (anonymous tokens: `pull`
//! only) and is checked against each request's repository and action
//! (`pull` for GET/HEAD, `push` otherwise). [`TokenFront::start_basic`]
//! makes a front that wants HTTP Basic on every request instead.
//!
//! Lifecycle: started on a free loopback port in front of a running plain
//! [`Registry`]; Drop stops the server and joins its threads.

use std::collections::HashMap;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;

use super::http::{self, form_pairs, forward, relay, respond, Request, Server};
use super::registry::{basic_auth, Registry};

pub const SERVICE: &str = "berth-test";

/// How the token endpoint hands out tokens.
#[derive(Debug, Clone)]
pub struct TokenOptions {
    /// Credentials the token endpoint accepts (HTTP Basic on GET, or
    /// `grant_type=password` on POST).
    pub user: Option<(String, String)>,
    /// Whether a token request without credentials gets a pull-only token.
    pub anonymous: bool,
    /// The `expires_in` the token response claims (tokens never actually
    /// expire; use [`TokenFront::revoke_tokens`]).
    pub expires_in: u64,
}

impl TokenOptions {
    /// Tokens for anyone, pull only.
    pub fn anonymous() -> TokenOptions {
        TokenOptions {
            user: None,
            anonymous: true,
            expires_in: 300,
        }
    }

    /// Tokens only for this user.
    pub fn user(user: &str, password: &str) -> TokenOptions {
        TokenOptions {
            user: Some((user.to_string(), password.to_string())),
            anonymous: false,
            expires_in: 300,
        }
    }
}

enum Scheme {
    Bearer(TokenOptions),
    Basic { authorization: String },
}

struct State {
    upstream: String,
    realm: String,
    scheme: Scheme,
    /// token → scopes it grants.
    tokens: Mutex<HashMap<String, Vec<Scope>>>,
    next_token: AtomicU64,
    token_requests: AtomicUsize,
    proxied: AtomicUsize,
    challenges: AtomicUsize,
    scopes_requested: Mutex<Vec<String>>,
}

/// An auth front for a plain [`Registry`]; see the module docs.
pub struct TokenFront {
    state: Arc<State>,
    server: Server,
}

impl TokenFront {
    /// Bearer-token auth in front of `registry` (which must have no auth).
    pub fn start(registry: &Registry, options: TokenOptions) -> TokenFront {
        TokenFront::start_scheme(registry, Scheme::Bearer(options))
    }

    /// HTTP Basic on every request (401 `WWW-Authenticate: Basic`), for
    /// clients that must send credentials without a token dance.
    pub fn start_basic(registry: &Registry, user: &str, password: &str) -> TokenFront {
        let authorization = basic_auth(user, password);
        TokenFront::start_scheme(registry, Scheme::Basic { authorization })
    }

    fn start_scheme(registry: &Registry, scheme: Scheme) -> TokenFront {
        assert!(
            registry.credentials().is_none(),
            "put the TokenFront in front of a registry without auth"
        );
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding token front");
        let addr = listener.local_addr().expect("token front address");
        let state = Arc::new(State {
            upstream: registry.addr().to_string(),
            realm: format!("http://{addr}/token"),
            scheme,
            tokens: Mutex::default(),
            next_token: AtomicU64::new(1),
            token_requests: AtomicUsize::new(0),
            proxied: AtomicUsize::new(0),
            challenges: AtomicUsize::new(0),
            scopes_requested: Mutex::default(),
        });
        let handler_state = state.clone();
        let server = Server::serve(
            listener,
            Arc::new(AtomicBool::new(false)),
            Arc::new(move |conn: TcpStream| handle(&handler_state, conn)),
        );
        TokenFront { state, server }
    }

    /// `127.0.0.1:PORT`: use it as the registry host in references.
    pub fn addr(&self) -> String {
        self.server.addr().to_string()
    }

    pub fn host(&self) -> String {
        self.addr()
    }

    /// `127.0.0.1:PORT/<repo_and_tag>`.
    pub fn reference(&self, repo_and_tag: &str) -> String {
        format!("{}/{repo_and_tag}", self.addr())
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr())
    }

    /// The token endpoint: `http://127.0.0.1:PORT/token`.
    pub fn realm(&self) -> &str {
        &self.state.realm
    }

    /// Requests to the token endpoint, granted or not.
    pub fn token_requests(&self) -> usize {
        self.state.token_requests.load(Ordering::SeqCst)
    }

    /// Requests that passed auth and went to the registry.
    pub fn proxied_requests(&self) -> usize {
        self.state.proxied.load(Ordering::SeqCst)
    }

    /// 401 answers sent to /v2/ requests.
    pub fn challenges(&self) -> usize {
        self.state.challenges.load(Ordering::SeqCst)
    }

    /// Every `scope` the token endpoint was asked for, in order.
    pub fn scopes_requested(&self) -> Vec<String> {
        self.state.scopes_requested.lock().unwrap().clone()
    }

    /// Forgets every token issued: the next request with one gets a 401, as
    /// after expiry.
    pub fn revoke_tokens(&self) {
        self.state.tokens.lock().unwrap().clear();
    }
}

/// `type:name:actions`, e.g. `repository:library/busybox:pull,push`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Scope {
    kind: String,
    name: String,
    actions: Vec<String>,
}

impl Scope {
    fn parse(s: &str) -> Option<Scope> {
        let (kind, rest) = s.split_once(':')?;
        let (name, actions) = rest.rsplit_once(':')?;
        Some(Scope {
            kind: kind.to_string(),
            name: name.to_string(),
            actions: actions.split(',').map(str::to_string).collect(),
        })
    }

    fn allows(&self, needed: &Scope) -> bool {
        self.kind == needed.kind
            && self.name == needed.name
            && needed
                .actions
                .iter()
                .all(|a| self.actions.iter().any(|b| b == a || b == "*"))
    }

    fn render(&self) -> String {
        format!("{}:{}:{}", self.kind, self.name, self.actions.join(","))
    }
}

/// The scope a /v2/ request needs, or None for `/v2/` itself.
fn needed_scope(request: &Request) -> Option<Scope> {
    let rest = request.path().strip_prefix("/v2/")?;
    let name = ["/manifests/", "/blobs/", "/tags/"]
        .iter()
        .filter_map(|marker| rest.rfind(marker).map(|i| &rest[..i]))
        .min_by_key(|name| name.len())?;
    let action = if matches!(request.method.as_str(), "GET" | "HEAD") {
        vec!["pull".to_string()]
    } else {
        vec!["pull".to_string(), "push".to_string()]
    };
    Some(Scope {
        kind: "repository".to_string(),
        name: name.to_string(),
        actions: action,
    })
}

fn handle(state: &State, conn: TcpStream) {
    let Ok(Some(request)) = Request::read(&conn) else {
        return;
    };
    // Errors here are the client going away; nothing to report.
    let _ = if request.path() == "/token" {
        token_endpoint(state, &request, &conn)
    } else if request.path() == "/v2" || request.path().starts_with("/v2/") {
        guarded(state, &request, &conn)
    } else {
        respond(&conn, 404, &[], b"not found\n")
    };
}

fn guarded(state: &State, request: &Request, conn: &TcpStream) -> std::io::Result<()> {
    let authorization = request.header("authorization").unwrap_or("");
    let needed = needed_scope(request);
    let (allowed, challenge) = match &state.scheme {
        Scheme::Basic {
            authorization: expected,
        } => (
            authorization == expected,
            format!("Basic realm=\"{SERVICE}\""),
        ),
        Scheme::Bearer(_) => {
            let token = authorization
                .strip_prefix("Bearer ")
                .map(str::trim)
                .unwrap_or("");
            let grants = state.tokens.lock().unwrap().get(token).cloned();
            let allowed = match (&grants, &needed) {
                (None, _) => false,
                (Some(_), None) => true,
                (Some(grants), Some(needed)) => grants.iter().any(|g| g.allows(needed)),
            };
            let mut challenge = format!("Bearer realm=\"{}\",service=\"{SERVICE}\"", state.realm);
            if let Some(needed) = &needed {
                challenge.push_str(&format!(",scope=\"{}\"", needed.render()));
            }
            if grants.is_some() {
                challenge.push_str(",error=\"insufficient_scope\"");
            }
            (allowed, challenge)
        }
    };
    if !allowed {
        state.challenges.fetch_add(1, Ordering::SeqCst);
        let body = http::registry_error("UNAUTHORIZED", "authentication required");
        return respond(
            conn,
            401,
            &[
                ("Content-Type", "application/json; charset=utf-8"),
                ("Docker-Distribution-Api-Version", "registry/2.0"),
                ("WWW-Authenticate", &challenge),
            ],
            &body,
        );
    }
    state.proxied.fetch_add(1, Ordering::SeqCst);
    match forward(&state.upstream, request, &["authorization"]) {
        Ok(upstream) => relay(conn, upstream).map(|_| ()),
        Err(e) => respond(conn, 502, &[], format!("upstream: {e}\n").as_bytes()),
    }
}

fn token_endpoint(state: &State, request: &Request, conn: &TcpStream) -> std::io::Result<()> {
    state.token_requests.fetch_add(1, Ordering::SeqCst);
    let Scheme::Bearer(options) = &state.scheme else {
        return respond(conn, 404, &[], b"no token endpoint on a Basic front\n");
    };
    // GET: query string and Basic auth. POST: an OAuth2 form.
    let (params, credentials) = match request.method.as_str() {
        "GET" => {
            let query = request.target.split_once('?').map(|(_, q)| q).unwrap_or("");
            let credentials = request.header("authorization").and_then(decode_basic);
            (form_pairs(query), credentials)
        }
        "POST" => {
            let params = form_pairs(&String::from_utf8_lossy(&request.body));
            let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
            let credentials = match get("grant_type").as_deref() {
                Some("password") => get("username").zip(get("password")),
                _ => None,
            };
            (params, credentials)
        }
        _ => return respond(conn, 405, &[], b""),
    };
    let requested: Vec<String> = params
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split(' ').map(str::to_string).collect::<Vec<_>>())
        .filter(|s| !s.is_empty())
        .collect();
    state
        .scopes_requested
        .lock()
        .unwrap()
        .extend(requested.iter().cloned());
    if let Some((_, service)) = params.iter().find(|(k, _)| k == "service") {
        if service != SERVICE {
            let body = format!("{{\"error\":\"unknown service {service:?}\"}}");
            return respond(
                conn,
                400,
                &[("Content-Type", "application/json")],
                body.as_bytes(),
            );
        }
    }
    let anonymous_only = match (&credentials, &options.user) {
        (Some(given), Some(expected)) if given == expected => false,
        (None, _) if options.anonymous => true,
        _ => {
            let body = http::registry_error("UNAUTHORIZED", "bad credentials");
            return respond(
                conn,
                401,
                &[
                    ("Content-Type", "application/json"),
                    ("WWW-Authenticate", &format!("Basic realm=\"{SERVICE}\"")),
                ],
                &body,
            );
        }
    };
    let grants: Vec<Scope> = requested
        .iter()
        .filter_map(|s| Scope::parse(s))
        .map(|mut scope| {
            if anonymous_only {
                scope.actions.retain(|a| a == "pull");
            }
            scope
        })
        .collect();
    let n = state.next_token.fetch_add(1, Ordering::SeqCst);
    let token = format!("berth-test-token-{n}-{:x}", std::process::id());
    state.tokens.lock().unwrap().insert(token.clone(), grants);
    let body = serde_json::json!({
        "token": token,
        "access_token": token,
        "expires_in": options.expires_in,
    })
    .to_string();
    respond(
        conn,
        200,
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
}

/// `Basic base64(user:pass)` → (user, pass).
fn decode_basic(header: &str) -> Option<(String, String)> {
    let encoded = header.strip_prefix("Basic ")?.trim();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}
