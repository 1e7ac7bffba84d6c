//! A manual walk over the parsed TOML tree, so every complaint can name the
//! exact key as a dotted path (serde's `deny_unknown_fields` names only the
//! field, not where it sits).

use std::path::{Path, PathBuf};

use toml::{Table, Value};

use super::{Config, Error, RegistryHost};
use crate::plugin::{self, PluginKind};

/// The keys allowed at the top level, in reference order.
pub(super) const TOP_KEYS: &[&str] = &[
    "root",
    "default_snapshotter",
    "default_runtime",
    "max_concurrent_downloads",
    "events",
    "registry",
    "plugins",
];

/// The keys allowed in the `[events]` table.
pub(super) const EVENTS_KEYS: &[&str] = &["max_events", "max_age_days"];

/// The keys allowed in a `[registry."<host>"]` table.
pub(super) const REGISTRY_KEYS: &[&str] = &["plain_http", "insecure", "ca_file"];

/// Bounds of `max_concurrent_downloads`.
const DOWNLOADS_MIN: i64 = 1;
const DOWNLOADS_MAX: i64 = 64;

pub(super) fn parse(text: &str, file: &Path) -> Result<Config, Error> {
    let table: Table = text.parse().map_err(|e: toml::de::Error| Error::Syntax {
        path: file.to_path_buf(),
        message: e.to_string().trim_end().to_owned(),
    })?;
    let walk = Walker {
        file,
        dir: file.parent().unwrap_or(Path::new("")),
    };
    let mut cfg = Config {
        file: Some(file.to_path_buf()),
        ..Config::default()
    };
    for (key, value) in &table {
        let at = [key.as_str()];
        match key.as_str() {
            "root" => cfg.root = Some(walk.path(&at, value)?),
            "default_snapshotter" => {
                cfg.default_snapshotter = walk.plugin_id(&at, value, PluginKind::Snapshotter)?
            }
            "default_runtime" => {
                cfg.default_runtime = walk.plugin_id(&at, value, PluginKind::Runtime)?
            }
            "max_concurrent_downloads" => {
                cfg.max_concurrent_downloads = walk.downloads(&at, value)?
            }
            "events" => {
                for (k, value) in walk.table(&at, value)? {
                    let at = ["events", k.as_str()];
                    match k.as_str() {
                        "max_events" => cfg.events.max_events = walk.non_negative(&at, value)?,
                        "max_age_days" => {
                            let days = walk.non_negative(&at, value)?;
                            if days > 100 * 365 {
                                return Err(walk.invalid(&at, "at most 36500 days"));
                            }
                            cfg.events.max_age = std::time::Duration::from_secs(days * 86_400);
                        }
                        _ => return Err(walk.unknown(&at, EVENTS_KEYS)),
                    }
                }
            }
            "registry" => {
                for (host, value) in walk.table(&at, value)? {
                    let at = ["registry", host.as_str()];
                    check_host(host).map_err(|reason| walk.invalid(&at, reason))?;
                    let settings = walk.registry_host(&at, value)?;
                    let lower = host.to_ascii_lowercase();
                    if cfg.registries.insert(lower, settings).is_some() {
                        return Err(
                            walk.invalid(&at, "the same host (ignoring case) appears twice")
                        );
                    }
                }
            }
            "plugins" => walk.plugins(value, &mut cfg)?,
            _ => return Err(walk.unknown(&at, TOP_KEYS)),
        }
    }
    Ok(cfg)
}

struct Walker<'a> {
    file: &'a Path,
    /// The file's directory, against which relative paths are resolved.
    dir: &'a Path,
}

impl Walker<'_> {
    fn invalid(&self, key: &[&str], reason: impl Into<String>) -> Error {
        Error::Invalid {
            path: self.file.to_path_buf(),
            key: dotted(key),
            reason: reason.into(),
        }
    }

    fn unknown(&self, key: &[&str], known: &[&str]) -> Error {
        self.invalid(key, format!("unknown key (known: {})", known.join(", ")))
    }

    fn wrong_type(&self, key: &[&str], expected: &str, found: &Value) -> Error {
        self.invalid(
            key,
            format!("expected {expected}, found {}", found.type_str()),
        )
    }

    fn table<'v>(&self, key: &[&str], value: &'v Value) -> Result<&'v Table, Error> {
        value
            .as_table()
            .ok_or_else(|| self.wrong_type(key, "a table", value))
    }

    fn string<'v>(&self, key: &[&str], value: &'v Value) -> Result<&'v str, Error> {
        value
            .as_str()
            .ok_or_else(|| self.wrong_type(key, "a string", value))
    }

    fn boolean(&self, key: &[&str], value: &Value) -> Result<bool, Error> {
        value
            .as_bool()
            .ok_or_else(|| self.wrong_type(key, "true or false", value))
    }

    /// A non-empty path string; relative ones are taken from the file's
    /// directory.
    fn path(&self, key: &[&str], value: &Value) -> Result<PathBuf, Error> {
        let text = self.string(key, value)?;
        if text.is_empty() {
            return Err(self.invalid(key, "must not be empty"));
        }
        Ok(self.dir.join(text))
    }

    fn downloads(&self, key: &[&str], value: &Value) -> Result<u32, Error> {
        let n = value
            .as_integer()
            .ok_or_else(|| self.wrong_type(key, "an integer", value))?;
        if !(DOWNLOADS_MIN..=DOWNLOADS_MAX).contains(&n) {
            return Err(self.invalid(
                key,
                format!("must be from {DOWNLOADS_MIN} to {DOWNLOADS_MAX}, got {n}"),
            ));
        }
        u32::try_from(n).map_err(|_| self.invalid(key, format!("out of range: {n}")))
    }

    fn non_negative(&self, key: &[&str], value: &Value) -> Result<u64, Error> {
        let n = value
            .as_integer()
            .ok_or_else(|| self.wrong_type(key, "an integer", value))?;
        u64::try_from(n).map_err(|_| self.invalid(key, format!("must be 0 or more, got {n}")))
    }

    /// A plugin id for a `default_*` key. It must name a compiled-in plugin
    /// of `kind` once at least one of that kind is compiled in; until then
    /// (snapshotters and runtimes are still to come) any id is accepted.
    fn plugin_id(&self, key: &[&str], value: &Value, kind: PluginKind) -> Result<String, Error> {
        let id = self.string(key, value)?;
        if id.is_empty() {
            return Err(self.invalid(key, "must not be empty"));
        }
        let known = plugin_ids(kind);
        if !known.is_empty() && !known.contains(&id) {
            return Err(self.invalid(
                key,
                format!(
                    "no {kind} plugin \"{id}\" is compiled in (compiled in: {})",
                    known.join(", ")
                ),
            ));
        }
        Ok(id.to_owned())
    }

    fn registry_host(&self, at: &[&str], value: &Value) -> Result<RegistryHost, Error> {
        let mut host = RegistryHost::default();
        for (key, value) in self.table(at, value)? {
            let at = [at, &[key.as_str()]].concat();
            match key.as_str() {
                "plain_http" => host.plain_http = self.boolean(&at, value)?,
                "insecure" => host.insecure = self.boolean(&at, value)?,
                "ca_file" => {
                    let path = self.path(&at, value)?;
                    if !path.is_file() {
                        return Err(self.invalid(&at, format!("{}: no such file", path.display())));
                    }
                    host.ca_file = Some(path);
                }
                _ => return Err(self.unknown(&at, REGISTRY_KEYS)),
            }
        }
        Ok(host)
    }

    /// `[plugins.<kind>.<id>]`: kind and id must be compiled in; the table
    /// itself is kept for the plugin's init to judge.
    fn plugins(&self, value: &Value, cfg: &mut Config) -> Result<(), Error> {
        for (kind_name, ids) in self.table(&["plugins"], value)? {
            let at = ["plugins", kind_name.as_str()];
            let kind: PluginKind = kind_name.parse().map_err(|_| {
                let kinds: Vec<String> = PluginKind::ALL.iter().map(|k| k.to_string()).collect();
                self.invalid(
                    &at,
                    format!("unknown plugin kind (kinds: {})", kinds.join(", ")),
                )
            })?;
            for (id, table) in self.table(&at, ids)? {
                let at = ["plugins", kind_name.as_str(), id.as_str()];
                let table = self.table(&at, table)?;
                if plugin::find(kind, id).is_none() {
                    let known = plugin_ids(kind);
                    let known = if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    };
                    return Err(self.invalid(
                        &at,
                        format!("no {kind} plugin \"{id}\" is compiled in (compiled in: {known})"),
                    ));
                }
                cfg.plugins.insert((kind, id.clone()), table.clone());
            }
        }
        Ok(())
    }
}

fn plugin_ids(kind: PluginKind) -> Vec<&'static str> {
    plugin::registry()
        .iter()
        .filter(|spec| spec.kind == kind)
        .map(|spec| spec.id)
        .collect()
}

/// A registry table name is `host` or `host:port` (IPv6 in brackets), as
/// written in image references: no scheme, no path.
fn check_host(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("empty host name".to_owned());
    }
    if host.contains("://") {
        return Err("write the host without a scheme (use plain_http = true for http)".to_owned());
    }
    if host.contains(['/', '?', '#', '@']) || host.chars().any(char::is_whitespace) {
        return Err("expected host or host:port, without path or credentials".to_owned());
    }
    let port = if let Some(rest) = host.strip_prefix('[') {
        let (_, after) = rest.split_once(']').ok_or("unclosed '[' in IPv6 address")?;
        match after {
            "" => None,
            _ => Some(after.strip_prefix(':').ok_or("expected ':' after ']'")?),
        }
    } else {
        match host.matches(':').count() {
            0 => None,
            1 => host.rsplit(':').next(),
            _ => return Err("write an IPv6 address in brackets: \"[::1]:5000\"".to_owned()),
        }
    };
    match port {
        Some(port) if !matches!(port.parse::<u16>(), Ok(1..)) => {
            Err(format!("bad port \"{port}\" (expected 1 to 65535)"))
        }
        _ => Ok(()),
    }
}

/// A key path written the way TOML would: bare keys as they are, others
/// quoted, joined with dots.
pub(super) fn dotted(key: &[&str]) -> String {
    key.iter()
        .map(|part| {
            let bare = !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if bare {
                (*part).to_owned()
            } else {
                let escaped = part.replace('\\', "\\\\").replace('"', "\\\"");
                format!("\"{escaped}\"")
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotted_quotes_only_when_needed() {
        assert_eq!(dotted(&["root"]), "root");
        assert_eq!(
            dotted(&["registry", "127.0.0.1:5000", "plain_htp"]),
            r#"registry."127.0.0.1:5000".plain_htp"#
        );
        assert_eq!(dotted(&["a\"b", ""]), r#""a\"b"."""#);
    }

    #[test]
    fn host_names() {
        for good in [
            "docker.io",
            "127.0.0.1:5000",
            "[::1]",
            "[::1]:5000",
            "Localhost:1",
        ] {
            assert_eq!(check_host(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "http://x",
            "x/y",
            "x:0",
            "x:65536",
            "x:port",
            "::1",
            "[::1",
            "[::1]5000",
            "a b",
        ] {
            assert!(check_host(bad).is_err(), "{bad}");
        }
    }
}
