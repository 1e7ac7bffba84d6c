//! Image references: what a user types (`busybox`, `ghcr.io/a/b:v1`,
//! `localhost:5000/x@sha256:…`) parsed and normalised the way docker does.

use std::fmt;
use std::str::FromStr;

use super::{Error, Result};
use crate::content::Digest;

/// The registry a name without a registry component belongs to.
pub const DEFAULT_REGISTRY: &str = "docker.io";
const DEFAULT_TAG: &str = "latest";
const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

/// A normalised image reference.
///
/// Invariants after parsing: `registry` and `repository` are valid and
/// non-empty; at least one of `tag` and `digest` is set (a bare name gets
/// the tag `latest`). When both are set, the digest decides what is fetched
/// and the tag is kept for naming.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// `docker.io`, `ghcr.io`, `localhost:5000`, `[::1]:5000`.
    pub registry: String,
    /// `library/busybox`, `user/img`, `a/b/c`.
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

impl Reference {
    /// Parses and normalises `input`.
    pub fn parse(input: &str) -> Result<Reference> {
        let bad = |reason: &str| Error::InvalidReference {
            input: input.to_string(),
            reason: reason.to_string(),
        };
        if input.is_empty() {
            return Err(bad("empty reference"));
        }
        let (rest, digest) = match input.split_once('@') {
            Some((rest, d)) => {
                let digest = d.parse::<Digest>().map_err(|e| bad(e.reason))?;
                (rest, Some(digest))
            }
            None => (input, None),
        };
        // A ':' after the last '/' separates the tag; earlier ones are ports.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(tag) = tag {
            validate_tag(tag).map_err(bad)?;
        }
        let (registry, repository) = split_registry(name);
        if registry.is_empty() {
            return Err(bad("empty registry name"));
        }
        validate_registry(&registry).map_err(bad)?;
        validate_repository(&repository).map_err(bad)?;
        if registry.len() + 1 + repository.len() > MAX_NAME_LEN {
            return Err(bad("name is longer than 255 characters"));
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, Some(_)) => None,
            (None, None) => Some(DEFAULT_TAG.to_string()),
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// `registry/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// What to ask the registry for: the digest if there is one, else the tag.
    pub fn reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => DEFAULT_TAG.to_string(),
        }
    }

    /// The host (and port) serving the registry API: `docker.io` is served
    /// by `registry-1.docker.io`.
    pub fn api_host(&self) -> &str {
        api_host(&self.registry)
    }

    /// The same repository, pointing at `digest` (tag dropped): for fetching
    /// the manifests an index lists.
    pub fn with_digest(&self, digest: Digest) -> Reference {
        Reference {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            tag: None,
            digest: Some(digest),
        }
    }
}

/// The API host for a registry name (see [`Reference::api_host`]).
pub(crate) fn api_host(registry: &str) -> &str {
    if registry == DEFAULT_REGISTRY {
        "registry-1.docker.io"
    } else {
        registry
    }
}

impl FromStr for Reference {
    type Err = Error;
    fn from_str(s: &str) -> Result<Reference> {
        Reference::parse(s)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// Splits `name` into registry and repository as docker does: the first
/// component is a registry if it contains '.' or ':', is `localhost`, or has
/// uppercase letters (which a repository cannot have).
fn split_registry(name: &str) -> (String, String) {
    let (registry, repo) = match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            (first, rest)
        }
        _ => (DEFAULT_REGISTRY, name),
    };
    let registry = if registry == "index.docker.io" {
        DEFAULT_REGISTRY
    } else {
        registry
    };
    let repo = if registry == DEFAULT_REGISTRY && !repo.contains('/') {
        format!("library/{repo}")
    } else {
        repo.to_string()
    };
    (registry.to_string(), repo)
}

fn validate_tag(tag: &str) -> std::result::Result<(), &'static str> {
    let mut bytes = tag.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !first_ok {
        return Err("tag must start with a letter, digit or '_'");
    }
    if tag.len() > MAX_TAG_LEN {
        return Err("tag is longer than 128 characters");
    }
    if !bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')) {
        return Err("tag may contain only letters, digits, '_', '.' and '-'");
    }
    Ok(())
}

/// `host[:port]` where host is DNS labels or a bracketed IPv6 address.
fn validate_registry(registry: &str) -> std::result::Result<(), &'static str> {
    let (host, port) = if let Some(rest) = registry.strip_prefix('[') {
        let (ip, after) = rest
            .split_once(']')
            .ok_or("registry has an unclosed '[' in its IPv6 address")?;
        if ip.parse::<std::net::Ipv6Addr>().is_err() {
            return Err("registry has an invalid IPv6 address");
        }
        match after {
            "" => (None, None),
            p => (
                None,
                Some(p.strip_prefix(':').ok_or("registry port must follow ':'")?),
            ),
        }
    } else {
        match registry.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(registry), None),
        }
    };
    if let Some(host) = host {
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if !host.split('.').all(label_ok) {
            return Err("registry host must be DNS labels (letters, digits, '-') joined by '.'");
        }
    }
    if let Some(port) = port {
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) || port.len() > 5 {
            return Err("registry port must be a number");
        }
    }
    Ok(())
}

/// Path components: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`, joined by '/'.
fn validate_repository(repo: &str) -> std::result::Result<(), &'static str> {
    if repo.is_empty() {
        return Err("empty repository name");
    }
    if repo.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err("repository name must be lowercase");
    }
    for component in repo.split('/') {
        validate_component(component)?;
    }
    Ok(())
}

fn validate_component(c: &str) -> std::result::Result<(), &'static str> {
    const MSG: &str = "repository components must be lowercase letters and digits, \
                       separated by '.', '_', '__' or dashes";
    if c.is_empty() {
        return Err("repository has an empty path component");
    }
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return Err(MSG);
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: '.', '_', '__' or any number of '-'.
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        match &c[start..i] {
            "." | "_" | "__" => {}
            s if s.bytes().all(|x| x == b'-') => {}
            _ => return Err(MSG),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn parse(s: &str) -> Reference {
        Reference::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn normalises_like_docker() {
        let cases = [
            ("busybox", "docker.io/library/busybox:latest"),
            ("busybox:1.36", "docker.io/library/busybox:1.36"),
            ("library/busybox", "docker.io/library/busybox:latest"),
            ("user/img", "docker.io/user/img:latest"),
            ("docker.io/busybox", "docker.io/library/busybox:latest"),
            ("index.docker.io/user/img:v1", "docker.io/user/img:v1"),
            ("ghcr.io/a/b/c:v1.2", "ghcr.io/a/b/c:v1.2"),
            ("localhost/x", "localhost/x:latest"),
            ("localhost:5000/x:t", "localhost:5000/x:t"),
            ("127.0.0.1:5000/a/b:tag", "127.0.0.1:5000/a/b:tag"),
            ("[::1]:5000/x", "[::1]:5000/x:latest"),
            ("a.b-c_d__e---f", "docker.io/library/a.b-c_d__e---f:latest"),
            ("Host/x", "Host/x:latest"),
        ];
        for (input, want) in cases {
            assert_eq!(parse(input).to_string(), want, "{input}");
        }
    }

    #[test]
    fn digests_win_for_fetching_and_tags_stay_for_naming() {
        let r = parse(&format!("busybox@{D}"));
        assert_eq!(r.tag, None);
        assert_eq!(r.reference(), D);
        assert_eq!(r.to_string(), format!("docker.io/library/busybox@{D}"));

        let r = parse(&format!("localhost:5000/x:v1@{D}"));
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert_eq!(r.reference(), D);
        assert_eq!(r.to_string(), format!("localhost:5000/x:v1@{D}"));
    }

    #[test]
    fn accessors() {
        let r = parse("busybox");
        assert_eq!(r.name(), "docker.io/library/busybox");
        assert_eq!(r.reference(), "latest");
        assert_eq!(r.api_host(), "registry-1.docker.io");
        let r = parse("localhost:5000/x:t");
        assert_eq!(r.registry, "localhost:5000");
        assert_eq!(r.repository, "x");
        assert_eq!(r.api_host(), "localhost:5000");
        let d: Digest = D.parse().unwrap();
        assert_eq!(
            r.with_digest(d).to_string(),
            format!("localhost:5000/x@{D}")
        );
    }

    #[test]
    fn rejects_invalid_references() {
        let long_tag = format!("x:{}", "a".repeat(129));
        let long_name = format!("x/{}", "a".repeat(250));
        let cases = [
            "",
            "UPPER",
            "docker.io/User/img",
            "x:",
            "x:-tag",
            "x:.tag",
            "x:t@g",
            "x:tag!",
            long_tag.as_str(),
            long_name.as_str(),
            "x@sha256:abc",
            "x@md5:d41d8cd98f00b204e9800998ecf8427e",
            "a//b",
            "/a",
            "a/",
            "-a",
            "a-",
            "a..b",
            "a___b",
            "a_-b",
            ".a",
            "host:port/x",
            "host:/x",
            "ho_st.io/x",
            "-host.io/x",
            "[::1/x",
            "[zz]:5000/x",
            ":5000/x",
            "a b",
        ];
        for input in cases {
            let err = Reference::parse(input).expect_err(input);
            assert_eq!(err.kind(), crate::ErrorKind::InvalidArgument, "{input}");
            assert!(err.to_string().starts_with("invalid reference"), "{err}");
        }
    }

    #[test]
    fn tag_length_limit_is_inclusive() {
        let ok = format!("x:{}", "a".repeat(128));
        assert!(Reference::parse(&ok).is_ok());
        let name = format!("h.io/{}", "a".repeat(250));
        assert_eq!(name.len(), 255);
        assert!(Reference::parse(&name).is_ok());
    }

    #[test]
    fn error_names_the_problem() {
        let err = Reference::parse("Busybox/X").unwrap_err().to_string();
        assert!(err.contains("lowercase"), "{err}");
        let err = Reference::parse("x:tag!").unwrap_err().to_string();
        assert!(err.contains("tag"), "{err}");
    }
}
