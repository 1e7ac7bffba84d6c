//! Default locations of the config file and the store root, following the
//! XDG base directory spec for ordinary users and FHS paths for root.

use std::ffi::OsString;
use std::path::PathBuf;

use super::ROOT_DEFAULT_SYSTEM;

/// The config file read when none is given: `/etc/berth/config.toml` for
/// root (euid 0), else `$XDG_CONFIG_HOME/berth/config.toml`, falling back to
/// `~/.config/berth/config.toml`. `None` when a non-root user has no home.
pub fn default_config_path() -> Option<PathBuf> {
    Env::current().config_path()
}

/// The store root used when neither `--root`, `BERTH_ROOT` nor the config
/// names one: `/var/lib/berth` for root (euid 0), else
/// `$XDG_DATA_HOME/berth`, falling back to `~/.local/share/berth`.
pub fn default_root() -> PathBuf {
    Env::current().data_root()
}

/// The parts of the process environment the defaults depend on, gathered
/// once so the rules can be tested without touching the real environment.
#[derive(Debug, Default)]
pub(super) struct Env {
    pub is_root: bool,
    pub xdg_config_home: Option<OsString>,
    pub xdg_data_home: Option<OsString>,
    pub home: Option<PathBuf>,
}

impl Env {
    fn current() -> Env {
        let euid = nix::unistd::geteuid();
        let home = absolute(std::env::var_os("HOME")).or_else(|| {
            nix::unistd::User::from_uid(euid)
                .ok()
                .flatten()
                .map(|user| user.dir)
                .filter(|dir| dir.is_absolute())
        });
        Env {
            is_root: euid.is_root(),
            xdg_config_home: std::env::var_os("XDG_CONFIG_HOME"),
            xdg_data_home: std::env::var_os("XDG_DATA_HOME"),
            home,
        }
    }

    pub(super) fn config_path(&self) -> Option<PathBuf> {
        if self.is_root {
            return Some(PathBuf::from("/etc/berth/config.toml"));
        }
        let base = absolute(self.xdg_config_home.clone())
            .or_else(|| self.home.as_ref().map(|home| home.join(".config")))?;
        Some(base.join("berth").join("config.toml"))
    }

    pub(super) fn data_root(&self) -> PathBuf {
        if self.is_root {
            return PathBuf::from(ROOT_DEFAULT_SYSTEM);
        }
        absolute(self.xdg_data_home.clone())
            .or_else(|| self.home.as_ref().map(|home| home.join(".local/share")))
            .map(|base| base.join("berth"))
            // No home at all: the system path, whose permission check in
            // `berth plugins` then tells the user to pass --root.
            .unwrap_or_else(|| PathBuf::from(ROOT_DEFAULT_SYSTEM))
    }
}

/// The XDG spec says relative values are invalid and must be ignored.
fn absolute(value: Option<OsString>) -> Option<PathBuf> {
    value.map(PathBuf::from).filter(|path| path.is_absolute())
}
