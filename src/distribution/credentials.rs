//! Where registry credentials come from, in the order docker and podman
//! users expect:
//!
//! 1. an explicit credential (`--user`), handled by the client;
//! 2. `$REGISTRY_AUTH_FILE` (podman's `auth.json`, same `auths` format);
//! 3. `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`: first
//!    `credHelpers[host]`, then `credsStore`, then the inline `auths` entry.
//!
//! A missing file or helper means "anonymous", not an error; a file we
//! cannot parse is an error naming the file, because silently pulling
//! anonymously would hide the user's mistake.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine;

use super::{Error, Result};

/// A username and secret for one registry. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub username: String,
    pub password: String,
}

/// The username docker's helpers use to say "the secret is an identity
/// (refresh) token, not a password".
const IDENTITY_TOKEN_USER: &str = "<token>";

impl Credential {
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Credential {
        Credential {
            username: username.into(),
            password: password.into(),
        }
    }

    /// A credential holding an OAuth2 identity (refresh) token.
    pub fn identity_token(token: impl Into<String>) -> Credential {
        Credential::new(IDENTITY_TOKEN_USER, token)
    }

    /// The identity token, when this credential is one.
    pub fn as_identity_token(&self) -> Option<&str> {
        (self.username == IDENTITY_TOKEN_USER).then_some(self.password.as_str())
    }

    /// The `Authorization` header value for Basic auth.
    pub(crate) fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// The places credentials are looked up, captured once from the
/// environment (or set explicitly, for tests and embedding).
#[derive(Debug, Clone, Default)]
pub struct CredentialSources {
    /// `$REGISTRY_AUTH_FILE`.
    pub auth_file: Option<PathBuf>,
    /// The docker `config.json`.
    pub docker_config: Option<PathBuf>,
    /// Directories searched for `docker-credential-*` helpers (`$PATH`).
    pub helper_path: Option<OsString>,
}

impl CredentialSources {
    /// Sources as the environment names them: `$REGISTRY_AUTH_FILE`,
    /// `$DOCKER_CONFIG/config.json` or `$HOME/.docker/config.json`, `$PATH`.
    pub fn from_env() -> CredentialSources {
        let env_path = |name| std::env::var_os(name).filter(|v| !v.is_empty());
        let docker_config = match env_path("DOCKER_CONFIG") {
            Some(dir) => Some(PathBuf::from(dir).join("config.json")),
            None => env_path("HOME").map(|h| PathBuf::from(h).join(".docker/config.json")),
        };
        CredentialSources {
            auth_file: env_path("REGISTRY_AUTH_FILE").map(PathBuf::from),
            docker_config,
            helper_path: env_path("PATH"),
        }
    }

    /// No sources: always anonymous.
    pub fn none() -> CredentialSources {
        CredentialSources::default()
    }

    /// The credential for `registry` (`docker.io`, `ghcr.io`,
    /// `localhost:5000`), or `None` for anonymous access.
    pub fn lookup(&self, registry: &str) -> Result<Option<Credential>> {
        for path in [&self.auth_file, &self.docker_config].into_iter().flatten() {
            let Some(config) = read_config(path)? else {
                continue;
            };
            if let Some(c) = self.lookup_in(&config, path, registry)? {
                return Ok(Some(c));
            }
        }
        Ok(None)
    }

    fn lookup_in(
        &self,
        config: &ConfigFile,
        path: &Path,
        registry: &str,
    ) -> Result<Option<Credential>> {
        let helper = config
            .cred_helpers
            .iter()
            .find(|(k, _)| normalise_key(k) == registry)
            .map(|(_, v)| v)
            .or(config.creds_store.as_ref())
            .filter(|h| !h.is_empty());
        if let Some(helper) = helper {
            if let Some(c) = self.run_helper(helper, registry)? {
                return Ok(Some(c));
            }
        }
        // Prefer an exact key over one that only normalises to the host.
        let mut entries: Vec<(&String, &AuthEntry)> = config
            .auths
            .iter()
            .filter(|(k, _)| normalise_key(k) == registry)
            .collect();
        entries.sort_by_key(|(k, _)| k.as_str() != registry);
        for (_, entry) in entries {
            if let Some(c) = entry.credential(path)? {
                return Ok(Some(c));
            }
        }
        Ok(None)
    }

    /// Runs `docker-credential-<helper> get`. A helper that is not installed
    /// or has nothing stored for the server yields `None`.
    fn run_helper(&self, helper: &str, registry: &str) -> Result<Option<Credential>> {
        let server = helper_server_url(registry);
        let fail = |reason: String| Error::CredentialHelper {
            helper: helper.to_string(),
            server: server.clone(),
            reason,
        };
        let Some(exe) = self.find_helper(helper) else {
            return Ok(None);
        };
        let mut child = Command::new(&exe)
            .arg("get")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| fail(format!("starting {}: {e}", exe.display())))?;
        if let Some(mut stdin) = child.stdin.take() {
            // A helper may exit without reading; its exit status tells.
            let _ = stdin.write_all(server.as_bytes());
        }
        let out = child
            .wait_with_output()
            .map_err(|e| fail(format!("waiting for it: {e}")))?;
        if !out.status.success() {
            let msg = format!(
                "{} {}",
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
            let msg = msg.trim();
            if msg.contains("credentials not found") {
                return Ok(None);
            }
            return Err(fail(format!("{}: {}", out.status, truncate(msg, 300))));
        }
        #[derive(serde::Deserialize)]
        struct HelperOutput {
            #[serde(rename = "Username", default)]
            username: String,
            #[serde(rename = "Secret", default)]
            secret: String,
        }
        // Never echo the output: it holds the secret.
        let parsed: HelperOutput = serde_json::from_slice(&out.stdout)
            .map_err(|e| fail(format!("unreadable output ({})", json_problem(&e))))?;
        if parsed.secret.is_empty() {
            return Ok(None);
        }
        Ok(Some(Credential::new(parsed.username, parsed.secret)))
    }

    fn find_helper(&self, helper: &str) -> Option<PathBuf> {
        let name = format!("docker-credential-{helper}");
        let path = self.helper_path.as_ref()?;
        std::env::split_paths(path)
            .map(|dir| dir.join(&name))
            .find(|p| p.is_file())
    }
}

/// What is wrong with some JSON, without quoting any of it.
fn json_problem(e: &serde_json::Error) -> &'static str {
    match e.classify() {
        serde_json::error::Category::Io => "I/O error",
        serde_json::error::Category::Syntax => "not JSON",
        serde_json::error::Category::Data => "unexpected JSON fields",
        serde_json::error::Category::Eof => "truncated JSON",
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// The server URL docker's helpers store credentials under.
fn helper_server_url(registry: &str) -> String {
    if registry == super::reference::DEFAULT_REGISTRY {
        "https://index.docker.io/v1/".to_string()
    } else {
        registry.to_string()
    }
}

/// `https://index.docker.io/v1/` → `docker.io`; `https://host/x` → `host`.
fn normalise_key(key: &str) -> &str {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = key.split('/').next().unwrap_or(key);
    match host {
        "index.docker.io" | "registry-1.docker.io" => super::reference::DEFAULT_REGISTRY,
        h => h,
    }
}

#[derive(serde::Deserialize, Default)]
struct ConfigFile {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
    #[serde(rename = "credHelpers", default)]
    cred_helpers: HashMap<String, String>,
    #[serde(rename = "credsStore", default)]
    creds_store: Option<String>,
}

#[derive(serde::Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

impl AuthEntry {
    fn credential(&self, path: &Path) -> Result<Option<Credential>> {
        if let Some(token) = self.identitytoken.as_ref().filter(|t| !t.is_empty()) {
            return Ok(Some(Credential::identity_token(token.clone())));
        }
        if let Some(auth) = self.auth.as_ref().filter(|a| !a.is_empty()) {
            let bad = || Error::CredentialsFile {
                path: path.to_path_buf(),
                reason: "an \"auth\" field is not base64 of \"user:password\"".into(),
            };
            let raw = base64::engine::general_purpose::STANDARD_PAD_INDIFFERENT
                .decode(auth.trim())
                .map_err(|_| bad())?;
            let raw = String::from_utf8(raw).map_err(|_| bad())?;
            let (user, pass) = raw.split_once(':').ok_or_else(bad)?;
            return Ok(Some(Credential::new(user, pass.trim_end_matches('\n'))));
        }
        match (&self.username, &self.password) {
            (Some(u), Some(p)) if !u.is_empty() || !p.is_empty() => {
                Ok(Some(Credential::new(u.clone(), p.clone())))
            }
            _ => Ok(None),
        }
    }
}

/// Reads a config file; `None` when it does not exist.
fn read_config(path: &Path) -> Result<Option<ConfigFile>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Error::CredentialsFile {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })
        }
    };
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(Some(ConfigFile::default()));
    }
    // serde_json's own messages may quote values (secrets): say only where.
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| Error::CredentialsFile {
            path: path.to_path_buf(),
            reason: format!(
                "malformed ({}) at line {} column {}",
                json_problem(&e),
                e.line(),
                e.column()
            ),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn sources(dir: &Path, docker: &str) -> CredentialSources {
        let path = dir.join("config.json");
        std::fs::write(&path, docker).unwrap();
        CredentialSources {
            auth_file: None,
            docker_config: Some(path),
            helper_path: Some(dir.as_os_str().to_owned()),
        }
    }

    fn helper(dir: &Path, name: &str, script: &str) {
        let path = dir.join(format!("docker-credential-{name}"));
        std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn auth_field_and_key_forms() {
        let dir = tempfile::tempdir().unwrap();
        // "alice:s3cret" and "bob:pw:with:colons"
        let s = sources(
            dir.path(),
            r#"{"auths":{
                "https://index.docker.io/v1/":{"auth":"YWxpY2U6czNjcmV0"},
                "https://ghcr.io":{"auth":"Ym9iOnB3OndpdGg6Y29sb25z"},
                "localhost:5000":{"username":"u","password":"p"},
                "empty.io":{}
            }}"#,
        );
        assert_eq!(
            s.lookup("docker.io").unwrap(),
            Some(Credential::new("alice", "s3cret"))
        );
        assert_eq!(
            s.lookup("ghcr.io").unwrap(),
            Some(Credential::new("bob", "pw:with:colons"))
        );
        assert_eq!(
            s.lookup("localhost:5000").unwrap(),
            Some(Credential::new("u", "p"))
        );
        assert_eq!(s.lookup("empty.io").unwrap(), None);
        assert_eq!(s.lookup("quay.io").unwrap(), None);
    }

    #[test]
    fn identity_token_entry() {
        let dir = tempfile::tempdir().unwrap();
        let s = sources(
            dir.path(),
            r#"{"auths":{"r.io":{"username":"x","identitytoken":"refresh"}}}"#,
        );
        let c = s.lookup("r.io").unwrap().unwrap();
        assert_eq!(c.as_identity_token(), Some("refresh"));
    }

    #[test]
    fn missing_files_are_anonymous_and_malformed_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let s = CredentialSources {
            auth_file: Some(dir.path().join("nope.json")),
            docker_config: Some(dir.path().join("nope2.json")),
            helper_path: None,
        };
        assert_eq!(s.lookup("docker.io").unwrap(), None);
        assert_eq!(CredentialSources::none().lookup("x.io").unwrap(), None);

        let s = sources(dir.path(), "{not json");
        let err = s.lookup("docker.io").unwrap_err();
        assert!(err.to_string().contains("config.json"), "{err}");
        assert_eq!(err.kind(), crate::ErrorKind::InvalidArgument);

        let s = sources(dir.path(), r#"{"auths":{"r.io":{"auth":"!!!"}}}"#);
        let err = s.lookup("r.io").unwrap_err();
        assert!(err.to_string().contains("config.json"), "{err}");
    }

    #[test]
    fn auth_file_comes_before_docker_config() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = sources(
            dir.path(),
            r#"{"auths":{"r.io":{"username":"docker","password":"1"}}}"#,
        );
        let auth = dir.path().join("auth.json");
        std::fs::write(
            &auth,
            r#"{"auths":{"r.io":{"username":"podman","password":"2"}}}"#,
        )
        .unwrap();
        s.auth_file = Some(auth);
        assert_eq!(s.lookup("r.io").unwrap().unwrap().username, "podman");
        // Hosts only the docker config knows still resolve.
        assert_eq!(s.lookup("other.io").unwrap(), None);
    }

    #[test]
    fn credential_helpers() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("stdin.log");
        helper(
            dir.path(),
            "fake",
            &format!(
                r#"[ "$1" = get ] || exit 3
cat > {}
echo '{{"ServerURL":"x","Username":"helper-user","Secret":"helper-secret"}}'"#,
                log.display()
            ),
        );
        helper(
            dir.path(),
            "store",
            r#"echo '{"Username":"<token>","Secret":"refresh-tok"}'"#,
        );
        helper(
            dir.path(),
            "empty",
            "echo 'credentials not found in native keychain'; exit 1",
        );
        helper(dir.path(), "broken", "echo boom >&2; exit 2");
        let s = sources(
            dir.path(),
            r#"{"credsStore":"store",
                "credHelpers":{"fake.io":"fake","empty.io":"empty","gone.io":"missing","broken.io":"broken"},
                "auths":{"empty.io":{"auth":"dTpw"},"gone.io":{"auth":"dTpw"}}}"#,
        );
        assert_eq!(
            s.lookup("fake.io").unwrap(),
            Some(Credential::new("helper-user", "helper-secret"))
        );
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "fake.io");
        let c = s.lookup("docker.io").unwrap().unwrap();
        assert_eq!(c.as_identity_token(), Some("refresh-tok"));
        // Nothing stored or no helper installed: fall back to inline auths.
        assert_eq!(
            s.lookup("empty.io").unwrap(),
            Some(Credential::new("u", "p"))
        );
        assert_eq!(
            s.lookup("gone.io").unwrap(),
            Some(Credential::new("u", "p"))
        );
        let err = s.lookup("broken.io").unwrap_err().to_string();
        assert!(
            err.contains("docker-credential-broken") && err.contains("boom"),
            "{err}"
        );
    }

    #[test]
    fn debug_redacts_the_secret() {
        let c = Credential::new("alice", "hunter2");
        let shown = format!("{c:?}");
        assert!(
            shown.contains("alice") && !shown.contains("hunter2"),
            "{shown}"
        );
        assert_eq!(c.basic_header(), "Basic YWxpY2U6aHVudGVyMg==");
    }

    #[test]
    fn key_normalisation() {
        assert_eq!(normalise_key("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(normalise_key("http://localhost:5000/v2/"), "localhost:5000");
        assert_eq!(normalise_key("ghcr.io"), "ghcr.io");
        assert_eq!(
            helper_server_url("docker.io"),
            "https://index.docker.io/v1/"
        );
    }
}
