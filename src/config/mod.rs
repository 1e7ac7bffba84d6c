//! The one TOML configuration file every berth binary reads.
//!
//! Lifecycle: a binary parses its flags ([`ConfigArgs`] gives it `--config`
//! and `--root` with their environment variables), calls [`Config::load`]
//! once, resolves the store root with [`resolve_root`], and hands the config
//! to [`crate::plugin::load_all`]. Nothing is cached between processes: each
//! run reads the file anew, so an edit takes effect at the next command.
//!
//! Loading is strict. An unknown key, a value of the wrong type or out of
//! range, a `ca_file` that does not exist, or a `[plugins.<kind>.<id>]` table
//! naming a plugin that is not compiled in, is an [`Error`] naming the file
//! and the key as a dotted path (`registry."127.0.0.1:5000".plain_htp`), so a
//! typo never silently falls back to a default.
//!
//! Keys (the same text as [`CONFIG_REFERENCE`]):
//!
//! - `root`: store root directory. `--root` / `BERTH_ROOT` wins over it; the
//!   default is `/var/lib/berth` for root, else `$XDG_DATA_HOME/berth`
//!   (fallback `~/.local/share/berth`).
//! - `default_snapshotter` (`"overlayfs"`): the snapshotter plugin id used
//!   when a command names none.
//! - `default_runtime` (`"berth"`): the runtime plugin id `berth-run` uses
//!   when it is given none.
//! - `max_concurrent_downloads` (`3`, from 1 to 64): layers one pull fetches
//!   at once.
//! - `[events]`: `max_events` (`100000`) and `max_age_days` (`7`) bound the
//!   event log; 0 turns a bound off.
//! - `[registry."<host>"]`, host or host:port as written in references:
//!   - `plain_http` (`false`): speak HTTP instead of HTTPS;
//!   - `insecure` (`false`): skip TLS certificate verification;
//!   - `ca_file` (none): an extra PEM CA bundle; must exist.
//! - `[plugins.<kind>.<id>]`: a table handed to that plugin's init, which
//!   validates it. No plugin compiled in so far takes any key.
//!
//! Relative paths in the file are relative to the directory holding it.
//!
//! The annotated reference file:
//!
#![doc = concat!("```toml\n", include_str!("reference.toml"), "```")]

mod error;
mod parse;
mod paths;

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

pub use error::Error;
pub use paths::{default_config_path, default_root};

use crate::plugin::PluginKind;

/// Every key of the config file with its meaning and default, as an
/// annotated TOML file. It is the text for the README and the man page, and
/// it is itself a valid config file (a unit test loads it).
pub const CONFIG_REFERENCE: &str = include_str!("reference.toml");

/// Where the store lives when neither flag, environment nor config says.
pub const ROOT_DEFAULT_SYSTEM: &str = "/var/lib/berth";

/// The parsed, validated configuration. [`Config::default`] is what a
/// missing default file means.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file this was read from; `None` when no file was found.
    pub file: Option<PathBuf>,
    /// The `root` key (made absolute against the file's directory).
    pub root: Option<PathBuf>,
    /// The `default_snapshotter` key: a snapshotter plugin id.
    pub default_snapshotter: String,
    /// The `default_runtime` key: a runtime plugin id.
    pub default_runtime: String,
    /// The `max_concurrent_downloads` key, within 1..=64.
    pub max_concurrent_downloads: u32,
    /// The `[events]` table: how many events to keep, and for how long.
    pub events: crate::metadata::Retention,
    /// The `[registry."<host>"]` tables, keyed by lowercased `host[:port]`.
    pub registries: BTreeMap<String, RegistryHost>,
    /// The `[plugins.<kind>.<id>]` tables; read with [`Config::plugin_table`].
    plugins: BTreeMap<(PluginKind, String), toml::Table>,
}

/// Settings for one registry host: a `[registry."<host>"]` table, or the
/// defaults when the host has none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistryHost {
    /// Speak plain HTTP instead of HTTPS.
    pub plain_http: bool,
    /// Skip TLS certificate verification.
    pub insecure: bool,
    /// An extra PEM CA bundle to trust for this host (an existing file).
    pub ca_file: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            file: None,
            root: None,
            default_snapshotter: "overlayfs".to_owned(),
            default_runtime: "berth".to_owned(),
            max_concurrent_downloads: 3,
            events: crate::metadata::Retention::default(),
            registries: BTreeMap::new(),
            plugins: BTreeMap::new(),
        }
    }
}

impl Config {
    /// Loads the config file.
    ///
    /// With `explicit` (from `--config` or `BERTH_CONFIG`), that file must
    /// exist. Without, the default location ([`default_config_path`]) is
    /// read if it exists, and a missing file yields [`Config::default`].
    pub fn load(explicit: Option<&Path>) -> Result<Config, Error> {
        let (path, required) = match explicit {
            Some(path) => (path.to_path_buf(), true),
            None => match default_config_path() {
                Some(path) => (path, false),
                None => return Ok(Config::default()),
            },
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => Config::from_toml_str(&text, &path),
            Err(e) if is_missing(&e) && !required => Ok(Config::default()),
            Err(e) if is_missing(&e) => Err(Error::NotFound { path }),
            Err(source) => Err(Error::Read { path, source }),
        }
    }

    /// Parses and validates config text as if read from `file` (used in
    /// messages and to resolve relative paths).
    pub fn from_toml_str(text: &str, file: &Path) -> Result<Config, Error> {
        parse::parse(text, file)
    }

    /// The settings for a registry host (`host` or `host:port`, matched
    /// case-insensitively); the defaults when the file has no table for it.
    pub fn host(&self, host: &str) -> RegistryHost {
        self.registries
            .get(&host.to_ascii_lowercase())
            .cloned()
            .unwrap_or_default()
    }

    /// The `[plugins.<kind>.<id>]` table, if the file has one.
    pub fn plugin_table(&self, kind: PluginKind, id: &str) -> Option<&toml::Table> {
        self.plugins.get(&(kind, id.to_owned()))
    }
}

/// The store root: the `--root` flag (clap also fills it from `BERTH_ROOT`),
/// else the config's `root`, else [`default_root`].
pub fn resolve_root(flag: Option<PathBuf>, cfg: &Config) -> PathBuf {
    flag.or_else(|| cfg.root.clone())
        .unwrap_or_else(default_root)
}

/// The `--config` and `--root` flags every berth binary shares; flatten it
/// into a clap parser with `#[command(flatten)]`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConfigArgs {
    /// Store root directory [default: `root` from the config file, else
    /// /var/lib/berth as root, ~/.local/share/berth otherwise]
    #[arg(long, env = "BERTH_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Config file, which must exist [default: /etc/berth/config.toml as
    /// root, ~/.config/berth/config.toml otherwise, if present]
    #[arg(long, env = "BERTH_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

impl ConfigArgs {
    /// Loads the config file these flags point at ([`Config::load`]).
    pub fn load(&self) -> Result<Config, Error> {
        Config::load(self.config.as_deref())
    }

    /// The store root these flags and `cfg` select ([`resolve_root`]).
    pub fn root(&self, cfg: &Config) -> PathBuf {
        resolve_root(self.root.clone(), cfg)
    }
}

/// A default-location file that does not exist, or whose parent is a file,
/// means "no config", not an error.
fn is_missing(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR)
}

#[cfg(test)]
mod tests;
