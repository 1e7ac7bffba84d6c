//! Compiled-in plugins: which implementations of each core concept this
//! build carries, and whether each can work on this host.
//!
//! Lifecycle, in every berth process (there is no daemon to keep state):
//!
//! 1. **Registry.** [`registry()`] is an explicit static table of
//!    [`PluginSpec`]s, one per implementation (`content/local`,
//!    `metadata/sqlite`, …), written by hand in `registry.rs`. Nothing
//!    registers itself at link time: the table is the whole truth, and
//!    [`crate::config`] rejects a `[plugins.<kind>.<id>]` table that names
//!    an entry it lacks.
//! 2. **Load.** At startup a binary calls [`load_all`], which runs every
//!    plugin's `init` probe with the store root and that plugin's config
//!    table. A probe checks that the plugin can work here (kernel features,
//!    permissions, library versions) and that its table is valid; it creates
//!    nothing and keeps nothing. The result is a [`PluginStatus`] per plugin:
//!    loaded, or the reason why not, which `berth plugins` shows.
//! 3. **Use.** A command picks an implementation with [`find`] by kind and
//!    id (e.g. the config's `default_snapshotter`) and refuses to go on if
//!    that plugin's probe failed.
//!
//! Probes are cheap (a few `stat`/`access` calls) and side-effect free, so
//! running all of them in every short-lived process costs nothing visible.
//!
//! [`dispatch`] is the other kind of extension: external commands
//! `berth-<name>` that the `berth` front end finds and runs.

pub mod dispatch;
mod list;
mod probe;
mod registry;

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::Serialize;

use crate::config::Config;
pub use list::{render_json, render_table, PluginsArgs, PluginsFormat};
pub use registry::registry;

/// The concepts a plugin can implement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PluginKind {
    /// Content-addressed blob store (`crate::content`).
    Content,
    /// Metadata database: images, containers, leases (`crate::metadata`).
    Metadata,
    /// Registry client: resolve, fetch, push (`crate::distribution`).
    Distribution,
    /// Layered filesystem snapshots for container roots.
    Snapshotter,
    /// OCI runtime that creates and runs containers.
    Runtime,
}

impl PluginKind {
    /// Every kind, in the order `berth plugins` lists them.
    pub const ALL: [PluginKind; 5] = [
        PluginKind::Content,
        PluginKind::Metadata,
        PluginKind::Distribution,
        PluginKind::Snapshotter,
        PluginKind::Runtime,
    ];

    /// The lowercase name used in config keys and output.
    pub fn as_str(self) -> &'static str {
        match self {
            PluginKind::Content => "content",
            PluginKind::Metadata => "metadata",
            PluginKind::Distribution => "distribution",
            PluginKind::Snapshotter => "snapshotter",
            PluginKind::Runtime => "runtime",
        }
    }
}

impl fmt::Display for PluginKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not one of the [`PluginKind`]s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown plugin kind \"{0}\"")]
pub struct UnknownKind(pub String);

impl FromStr for PluginKind {
    type Err = UnknownKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PluginKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == s)
            .ok_or_else(|| UnknownKind(s.to_owned()))
    }
}

/// One compiled-in implementation: an entry of [`registry()`].
#[derive(Debug)]
pub struct PluginSpec {
    pub kind: PluginKind,
    /// Unique within its kind; lowercase, as written in config keys.
    pub id: &'static str,
    /// One line for humans.
    pub description: &'static str,
    /// Features callers may test for, e.g. `"resume"`.
    pub capabilities: &'static [&'static str],
    /// The probe: `Ok` if the plugin can work on this host with its config
    /// table, else the reason it cannot. Must not create or change anything.
    pub init: fn(&InitContext) -> Result<(), String>,
}

/// What a plugin's init probe is given.
#[derive(Debug, Clone, Copy)]
pub struct InitContext<'a> {
    /// The store root (it may not exist yet).
    pub root: &'a Path,
    /// The plugin's `[plugins.<kind>.<id>]` table, if the config has one.
    pub config: Option<&'a toml::Table>,
}

impl InitContext<'_> {
    /// Fails naming the first key of the plugin's table not in `known`;
    /// each probe calls this with the keys it understands.
    pub fn check_keys(&self, known: &[&str]) -> Result<(), String> {
        let Some(table) = self.config else {
            return Ok(());
        };
        match table.keys().find(|key| !known.contains(&key.as_str())) {
            None => Ok(()),
            Some(key) if known.is_empty() => {
                Err(format!("config key \"{key}\": this plugin takes no keys"))
            }
            Some(key) => Err(format!(
                "unknown config key \"{key}\" (known: {})",
                known.join(", ")
            )),
        }
    }
}

/// The outcome of one plugin's probe, as `berth plugins` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PluginStatus {
    pub kind: PluginKind,
    pub id: &'static str,
    pub capabilities: &'static [&'static str],
    /// Whether the probe succeeded.
    pub loaded: bool,
    /// Why the probe failed; `None` when loaded.
    pub error: Option<String>,
}

impl PluginSpec {
    /// Runs this plugin's probe against `root` and its table in `cfg`.
    pub fn probe(&self, root: &Path, cfg: &Config) -> PluginStatus {
        let ctx = InitContext {
            root,
            config: cfg.plugin_table(self.kind, self.id),
        };
        let error = (self.init)(&ctx).err();
        PluginStatus {
            kind: self.kind,
            id: self.id,
            capabilities: self.capabilities,
            loaded: error.is_none(),
            error,
        }
    }
}

/// Runs every registered plugin's probe, in registry order, and records
/// which loaded and why the others did not.
pub fn load_all(root: &Path, cfg: &Config) -> Vec<PluginStatus> {
    registry()
        .iter()
        .map(|spec| spec.probe(root, cfg))
        .collect()
}

/// The compiled-in plugin of `kind` named `id`.
pub fn find(kind: PluginKind, id: &str) -> Option<&'static PluginSpec> {
    registry()
        .iter()
        .find(|spec| spec.kind == kind && spec.id == id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_their_names() {
        for kind in PluginKind::ALL {
            assert_eq!(kind.to_string().parse::<PluginKind>(), Ok(kind));
            assert_eq!(
                serde_json::to_value(kind).ok(),
                Some(serde_json::Value::String(kind.to_string()))
            );
        }
        assert!("Content".parse::<PluginKind>().is_err());
    }

    #[test]
    fn registry_entries_are_unique_and_well_formed() {
        let specs = registry();
        for (i, spec) in specs.iter().enumerate() {
            assert!(
                !spec.id.is_empty()
                    && spec
                        .id
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "bad id {}",
                spec.id
            );
            assert!(!spec.description.is_empty());
            assert!(spec.capabilities.iter().all(|c| !c.is_empty()));
            assert!(
                specs[..i]
                    .iter()
                    .all(|other| (other.kind, other.id) != (spec.kind, spec.id)),
                "duplicate {}/{}",
                spec.kind,
                spec.id
            );
            assert!(std::ptr::eq(find(spec.kind, spec.id).unwrap(), spec));
        }
        assert!(find(PluginKind::Content, "local").is_some());
        assert!(find(PluginKind::Metadata, "sqlite").is_some());
        assert!(find(PluginKind::Distribution, "registry").is_some());
        assert!(find(PluginKind::Content, "nope").is_none());
    }

    #[test]
    fn load_all_reports_every_plugin_and_passes_its_table() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config::from_toml_str(
            "[plugins.metadata.sqlite]\nbogus = 1\n",
            &dir.path().join("config.toml"),
        )
        .unwrap();
        let statuses = load_all(dir.path(), &cfg);
        assert_eq!(statuses.len(), registry().len());
        let content = &statuses[0];
        assert_eq!((content.kind, content.id), (PluginKind::Content, "local"));
        assert!(content.loaded, "{:?}", content.error);
        let sqlite = statuses.iter().find(|s| s.id == "sqlite").unwrap();
        assert!(!sqlite.loaded);
        assert!(sqlite.error.as_deref().unwrap().contains("bogus"));
    }

    #[test]
    fn check_keys_names_the_stray_key() {
        let table: toml::Table = "a = 1\nb = 2\n".parse().unwrap();
        let ctx = InitContext {
            root: Path::new("/"),
            config: Some(&table),
        };
        assert_eq!(ctx.check_keys(&["a", "b"]), Ok(()));
        assert!(ctx.check_keys(&["a"]).unwrap_err().contains("\"b\""));
        assert!(ctx.check_keys(&[]).unwrap_err().contains("takes no keys"));
    }
}
