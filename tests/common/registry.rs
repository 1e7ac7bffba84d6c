//! The reference registry (`docker-registry serve`, distribution v2) as a
//! child process on 127.0.0.1, one per test.
//!
//! Lifecycle: `start*` writes `config.yml` into a fresh temp dir (storage,
//! logs and htpasswd live there too), starts the registry on a free port and
//! returns once it has answered `GET /v2/` and logged it. Drop kills and
//! reaps the process, then removes the temp dir. Its access log (one line
//! per request, written when the response is done) is how tests count
//! requests; the harness's readiness probes are left out of the counts.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use berth::content::Digest;
use tempfile::TempDir;

use super::client::{Reply, ACCEPT_ALL_MANIFESTS};
use super::net::{free_port, no_proxy};

const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
const PORT_ATTEMPTS: usize = 5;
/// The readiness probe's User-Agent; its requests are left out of counts.
const PROBE_AGENT: &str = "berth-test-readiness-probe";

/// How to start a [`Registry`].
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Require HTTP Basic auth with this user and password (bcrypt htpasswd,
    /// made with `htpasswd -B` from apache2-utils).
    pub htpasswd: Option<(String, String)>,
}

/// A running reference registry. See the module docs for its lifecycle.
pub struct Registry {
    // Declared before `dir`: the process dies before its files go.
    child: ChildGuard,
    dir: TempDir,
    port: u16,
    addr: String,
    credentials: Option<(String, String)>,
}

/// One line of the registry's access log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedRequest {
    pub method: String,
    /// Path and query as requested.
    pub path: String,
    pub status: u16,
    /// Body bytes sent, as the registry counted them.
    pub bytes: u64,
    pub user_agent: String,
}

impl Registry {
    /// A registry without auth.
    pub fn start() -> Registry {
        Registry::start_with(RegistryOptions::default())
    }

    /// A registry that answers 401 unless given these Basic credentials.
    pub fn start_with_htpasswd(user: &str, password: &str) -> Registry {
        Registry::start_with(RegistryOptions {
            htpasswd: Some((user.to_string(), password.to_string())),
        })
    }

    pub fn start_with(options: RegistryOptions) -> Registry {
        let mut dir = tempfile::Builder::new()
            .prefix("berth-test-registry-")
            .tempdir()
            .expect("creating registry temp dir");
        if let Some((user, password)) = &options.htpasswd {
            write_htpasswd(&dir.path().join("htpasswd"), user, password);
        }
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port();
            let config = dir.path().join("config.yml");
            fs::write(&config, config_yaml(dir.path(), port, &options))
                .expect("writing config.yml");
            let stdout = File::create(dir.path().join("access.log")).expect("creating access.log");
            let stderr =
                File::create(dir.path().join("registry.log")).expect("creating registry.log");
            let child = no_proxy(&mut Command::new("docker-registry"))
                .arg("serve")
                .arg(&config)
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(stdout)
                .stderr(stderr)
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("starting docker-registry (apt-get install docker-registry): {e}")
                });
            let mut registry = Registry {
                child: ChildGuard(child),
                dir,
                port,
                addr: format!("127.0.0.1:{port}"),
                credentials: options.htpasswd.clone(),
            };
            match registry.wait_ready() {
                Ready::Yes => return registry,
                Ready::PortTaken => {
                    // Someone took the port between our probe and its bind.
                    let Registry { child, dir: d, .. } = registry;
                    drop(child);
                    dir = d;
                }
            }
        }
        panic!("docker-registry: no free port after {PORT_ATTEMPTS} attempts");
    }

    fn wait_ready(&mut self) -> Ready {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(status) = self.child.0.try_wait().expect("polling docker-registry") {
                let log = self.error_log();
                if log.contains("address already in use") {
                    return Ready::PortTaken;
                }
                panic!("docker-registry exited with {status} before answering; its log:\n{log}");
            }
            // Ready once *our* registry has logged our probe: a port taken
            // by another server in between would answer the probe too.
            if self.raw_access_log().contains(PROBE_AGENT) {
                return Ready::Yes;
            }
            probe_v2(&self.addr);
            if Instant::now() > deadline {
                panic!(
                    "docker-registry on {} did not answer GET /v2/ within {STARTUP_TIMEOUT:?}; its log:\n{}",
                    self.addr,
                    self.error_log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The registry host as image references spell it: `127.0.0.1:PORT`.
    pub fn host(&self) -> &str {
        &self.addr
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT/<repo_and_tag>`, e.g. `reference("library/busybox:1")`.
    pub fn reference(&self, repo_and_tag: &str) -> String {
        format!("{}/{repo_and_tag}", self.addr)
    }

    /// `http://127.0.0.1:PORT<path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// The Basic credentials this registry requires, if any.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.credentials
            .as_ref()
            .map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// The temp dir holding config, storage and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The filesystem storage root (`docker/registry/v2/…` below it).
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The registry's own log (stderr, level warn).
    pub fn error_log(&self) -> String {
        fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// The raw access log (stdout, combined log format), once it has
    /// stopped growing.
    pub fn access_log(&self) -> String {
        self.settle_access_log();
        self.raw_access_log()
    }

    fn raw_access_log(&self) -> String {
        fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    /// Every request the registry has finished answering so far, except
    /// the harness's own readiness probes.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.access_log()
            .lines()
            .filter_map(parse_access_line)
            .filter(|r| r.user_agent != PROBE_AGENT)
            .collect()
    }

    /// How many `method` requests had a path containing `path_part`.
    pub fn count_requests(&self, method: &str, path_part: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.method.eq_ignore_ascii_case(method) && r.path.contains(path_part))
            .count()
    }

    /// How many `GET …/blobs/<digest>` requests the registry answered.
    pub fn blob_gets(&self, digest: &Digest) -> usize {
        self.count_requests("GET", &format!("/blobs/{digest}"))
    }

    /// Sends a request straight to the registry, with its credentials if it
    /// has any.
    pub fn fetch(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
        let auth = self.credentials.as_ref().map(|(u, p)| basic_auth(u, p));
        let mut all: Vec<(&str, &str)> = headers.to_vec();
        if let Some(auth) = &auth {
            all.push(("Authorization", auth));
        }
        Reply::fetch(method, &self.url(path), &all)
    }

    /// `GET /v2/<repo>/manifests/<reference>` accepting every manifest type.
    pub fn manifest(&self, repo: &str, reference: &str) -> Reply {
        self.fetch(
            "GET",
            &format!("/v2/{repo}/manifests/{reference}"),
            &[("Accept", ACCEPT_ALL_MANIFESTS)],
        )
    }

    /// `GET /v2/<repo>/blobs/<digest>`.
    pub fn blob(&self, repo: &str, digest: &Digest) -> Reply {
        self.fetch("GET", &format!("/v2/{repo}/blobs/{digest}"), &[])
    }

    /// The access log is written after each response; wait until it has
    /// stopped growing so a count taken right after a client exits is whole.
    fn settle_access_log(&self) {
        let path = self.dir.path().join("access.log");
        let size = || fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut last = size();
        loop {
            std::thread::sleep(Duration::from_millis(50));
            let now = size();
            if now == last || Instant::now() > deadline {
                return;
            }
            last = now;
        }
    }
}

enum Ready {
    Yes,
    PortTaken,
}

/// Kills and reaps the registry when dropped.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `Basic base64(user:password)`.
pub fn basic_auth(user: &str, password: &str) -> String {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {token}")
}

fn config_yaml(dir: &Path, port: u16, options: &RegistryOptions) -> String {
    let mut yaml = format!(
        "version: 0.1
log:
  level: warn
  formatter: text
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:{port}
  secret: berth-test-not-a-secret
",
        root = dir.join("data").display()
    );
    if options.htpasswd.is_some() {
        yaml.push_str(&format!(
            "auth:
  htpasswd:
    realm: berth-test
    path: {}
",
            dir.join("htpasswd").display()
        ));
    }
    yaml
}

fn write_htpasswd(path: &Path, user: &str, password: &str) {
    let output = Command::new("htpasswd")
        .args(["-B", "-b", "-n", user, password])
        .output()
        .unwrap_or_else(|e| panic!("running htpasswd (apt-get install apache2-utils): {e}"));
    assert!(
        output.status.success(),
        "htpasswd failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line = String::from_utf8(output.stdout).expect("htpasswd prints ASCII");
    let mut file = File::create(path).expect("creating htpasswd file");
    file.write_all(line.trim_end().as_bytes())
        .and_then(|_| file.write_all(b"\n"))
        .expect("writing htpasswd file");
}

/// Sends `GET /v2/`; the status, or None if nothing answers yet.
fn probe_v2(addr: &str) -> Option<u16> {
    let mut stream =
        TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_millis(200)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    let request = format!(
        "GET /v2/ HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: {PROBE_AGENT}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut head = [0u8; 64];
    let n = stream.read(&mut head).ok()?;
    let line = String::from_utf8_lossy(&head[..n]);
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Parses `127.0.0.1 - - [date] "GET /v2/ HTTP/1.1" 200 2 "referer" "agent"`.
fn parse_access_line(line: &str) -> Option<LoggedRequest> {
    let (_, rest) = line.split_once('"')?;
    let (request, rest) = rest.split_once('"')?;
    let mut request = request.split_whitespace();
    let method = request.next()?.to_string();
    let path = request.next()?.to_string();
    let mut numbers = rest.split_whitespace();
    let status = numbers.next()?.parse().ok()?;
    let bytes = numbers.next()?.parse().unwrap_or(0);
    // Then "referer" "user agent".
    let user_agent = rest.rsplit('"').nth(1).unwrap_or("").to_string();
    Some(LoggedRequest {
        method,
        path,
        status,
        bytes,
        user_agent,
    })
}
