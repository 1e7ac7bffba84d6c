use std::path::{Path, PathBuf};

use super::parse::{EVENTS_KEYS, REGISTRY_KEYS, TOP_KEYS};
use super::paths::Env;
use super::*;
use crate::ErrorKind;

/// Writes `text` as `config.toml` in a fresh temp dir and loads it
/// explicitly, as `--config` would.
fn load(text: &str) -> (tempfile::TempDir, Result<Config, Error>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text).unwrap();
    let result = Config::load(Some(&path));
    (dir, result)
}

/// Loads `text`, expects an invalid-key error, returns (key, message).
fn invalid(text: &str) -> (String, String) {
    let (dir, result) = load(text);
    let err = result.expect_err("config should be rejected");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    let message = err.to_string();
    let file = dir.path().join("config.toml");
    assert!(
        message.contains(&file.display().to_string()),
        "message does not name the file: {message}"
    );
    match err {
        Error::Invalid { key, .. } => (key, message),
        other => panic!("expected Error::Invalid, got {other:?}"),
    }
}

#[test]
fn good_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), "-----BEGIN CERTIFICATE-----\n").unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(
        &path,
        r#"
root = "/srv/berth"
default_snapshotter = "native"
default_runtime = "runc"
max_concurrent_downloads = 8

[registry."127.0.0.1:5000"]
plain_http = true

[registry."Registry.Example:443"]
insecure = true
ca_file = "ca.pem"

[plugins.content.local]
"#,
    )
    .unwrap();
    let cfg = Config::load(Some(&path)).unwrap();
    assert_eq!(cfg.file.as_deref(), Some(path.as_path()));
    assert_eq!(cfg.root, Some(PathBuf::from("/srv/berth")));
    assert_eq!(cfg.default_snapshotter, "native");
    assert_eq!(cfg.default_runtime, "runc");
    assert_eq!(cfg.max_concurrent_downloads, 8);
    assert_eq!(
        cfg.host("127.0.0.1:5000"),
        RegistryHost {
            plain_http: true,
            ..RegistryHost::default()
        }
    );
    let example = cfg.host("registry.example:443");
    assert!(example.insecure && !example.plain_http);
    assert_eq!(example.ca_file, Some(dir.path().join("ca.pem")));
    assert_eq!(cfg.host("docker.io"), RegistryHost::default());
    assert_eq!(
        cfg.plugin_table(PluginKind::Content, "local"),
        Some(&toml::Table::new())
    );
    assert_eq!(cfg.plugin_table(PluginKind::Metadata, "sqlite"), None);
}

#[test]
fn empty_file_is_all_defaults() {
    let (dir, result) = load("");
    let cfg = result.unwrap();
    assert_eq!(
        cfg,
        Config {
            file: Some(dir.path().join("config.toml")),
            ..Config::default()
        }
    );
    assert_eq!(cfg.default_snapshotter, "overlayfs");
    assert_eq!(cfg.default_runtime, "berth");
    assert_eq!(cfg.max_concurrent_downloads, 3);
}

#[test]
fn unknown_top_key() {
    let (key, message) = invalid("roots = \"/x\"\n");
    assert_eq!(key, "roots");
    assert!(message.contains("known: root,"), "{message}");
}

#[test]
fn unknown_nested_key() {
    let (key, message) = invalid("[registry.\"127.0.0.1:5000\"]\nplain_htp = true\n");
    assert_eq!(key, r#"registry."127.0.0.1:5000".plain_htp"#);
    assert!(message.contains(r#"registry."127.0.0.1:5000".plain_htp"#));
}

#[test]
fn wrong_types() {
    let (key, message) = invalid("max_concurrent_downloads = \"3\"\n");
    assert_eq!(key, "max_concurrent_downloads");
    assert!(
        message.contains("expected an integer, found string"),
        "{message}"
    );

    let (key, _) = invalid("[registry.\"r.example\"]\ninsecure = \"yes\"\n");
    assert_eq!(key, r#"registry."r.example".insecure"#);

    let (key, _) = invalid("registry = 1\n");
    assert_eq!(key, "registry");

    let (key, _) = invalid("[registry]\n\"r.example\" = true\n");
    assert_eq!(key, r#"registry."r.example""#);

    let (key, _) = invalid("root = 5\n");
    assert_eq!(key, "root");
}

#[test]
fn bad_values() {
    for n in [0, 65, -1] {
        let (key, message) = invalid(&format!("max_concurrent_downloads = {n}\n"));
        assert_eq!(key, "max_concurrent_downloads");
        assert!(message.contains("from 1 to 64"), "{message}");
    }
    assert!(load("max_concurrent_downloads = 64\n").1.is_ok());

    let (key, message) = invalid("[registry.\"r.example\"]\nca_file = \"/no/such/ca.pem\"\n");
    assert_eq!(key, r#"registry."r.example".ca_file"#);
    assert!(
        message.contains("/no/such/ca.pem: no such file"),
        "{message}"
    );

    let (key, _) = invalid("[registry.\"https://r.example\"]\n");
    assert_eq!(key, r#"registry."https://r.example""#);

    let (key, _) = invalid("root = \"\"\n");
    assert_eq!(key, "root");

    let (key, _) = invalid("default_runtime = \"\"\n");
    assert_eq!(key, "default_runtime");

    let (key, _) = invalid("[registry.\"R.example\"]\n[registry.\"r.example\"]\n");
    assert!(key.eq_ignore_ascii_case(r#"registry."r.example""#), "{key}");
}

#[test]
fn bad_plugin_kind_or_id() {
    let (key, message) = invalid("[plugins.snapshoter.overlayfs]\n");
    assert_eq!(key, "plugins.snapshoter");
    assert!(message.contains("unknown plugin kind"), "{message}");
    assert!(message.contains("snapshotter"), "{message}");

    let (key, message) = invalid("[plugins.content.remote]\n");
    assert_eq!(key, "plugins.content.remote");
    assert!(message.contains("compiled in: local"), "{message}");

    let (key, _) = invalid("[plugins.content]\nlocal = 1\n");
    assert_eq!(key, "plugins.content.local");
}

#[test]
fn plugin_table_contents_are_left_to_the_plugin() {
    let (_dir, result) = load("[plugins.metadata.sqlite]\nwhatever = [1, 2]\n");
    let cfg = result.unwrap();
    let table = cfg.plugin_table(PluginKind::Metadata, "sqlite").unwrap();
    assert!(table.contains_key("whatever"));
}

#[test]
fn syntax_error_names_the_file() {
    let (dir, result) = load("root = \n");
    let err = result.unwrap_err();
    assert!(matches!(err, Error::Syntax { .. }), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    let message = err.to_string();
    assert!(message.contains(&dir.path().join("config.toml").display().to_string()));
    assert!(message.contains("line 1"), "{message}");
}

#[test]
fn explicit_file_must_exist() {
    let dir = tempfile::tempdir().unwrap();
    let err = Config::load(Some(&dir.path().join("nope.toml"))).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(err.to_string().contains("nope.toml"));

    let err = Config::load(Some(dir.path())).unwrap_err();
    assert!(matches!(err, Error::Read { .. }), "{err:?}");
}

#[test]
fn reference_is_a_valid_config_naming_every_key() {
    let cfg = Config::from_toml_str(CONFIG_REFERENCE, Path::new("/etc/berth/config.toml")).unwrap();
    assert_eq!(cfg.root, Some(PathBuf::from("/var/lib/berth")));
    assert!(cfg.host("127.0.0.1:5000").plain_http);
    let defaults = Config::default();
    assert_eq!(cfg.default_snapshotter, defaults.default_snapshotter);
    assert_eq!(cfg.default_runtime, defaults.default_runtime);
    assert_eq!(
        cfg.max_concurrent_downloads,
        defaults.max_concurrent_downloads
    );
    assert_eq!(cfg.events, defaults.events);
    for key in TOP_KEYS.iter().chain(REGISTRY_KEYS).chain(EVENTS_KEYS) {
        assert!(CONFIG_REFERENCE.contains(key), "reference lacks {key}");
    }
    for spec in crate::plugin::registry() {
        let table = format!("[plugins.{}.{}]", spec.kind, spec.id);
        assert!(CONFIG_REFERENCE.contains(&table), "reference lacks {table}");
    }
}

#[test]
fn root_precedence() {
    let cfg = Config {
        root: Some(PathBuf::from("/from/config")),
        ..Config::default()
    };
    assert_eq!(
        resolve_root(Some(PathBuf::from("/from/flag")), &cfg),
        PathBuf::from("/from/flag")
    );
    assert_eq!(resolve_root(None, &cfg), PathBuf::from("/from/config"));
    assert_eq!(resolve_root(None, &Config::default()), default_root());
}

#[test]
fn default_locations() {
    let root = Env {
        is_root: true,
        home: Some("/root".into()),
        ..Env::default()
    };
    assert_eq!(root.config_path(), Some("/etc/berth/config.toml".into()));
    assert_eq!(root.data_root(), PathBuf::from("/var/lib/berth"));

    let user = Env {
        home: Some("/home/u".into()),
        ..Env::default()
    };
    assert_eq!(
        user.config_path(),
        Some("/home/u/.config/berth/config.toml".into())
    );
    assert_eq!(
        user.data_root(),
        PathBuf::from("/home/u/.local/share/berth")
    );

    let xdg = Env {
        xdg_config_home: Some("/x/conf".into()),
        xdg_data_home: Some("/x/data".into()),
        home: Some("/home/u".into()),
        ..Env::default()
    };
    assert_eq!(xdg.config_path(), Some("/x/conf/berth/config.toml".into()));
    assert_eq!(xdg.data_root(), PathBuf::from("/x/data/berth"));

    // Relative XDG values are ignored, as the spec says.
    let relative = Env {
        xdg_config_home: Some("conf".into()),
        xdg_data_home: Some("data".into()),
        home: Some("/home/u".into()),
        ..Env::default()
    };
    assert_eq!(
        relative.config_path(),
        Some("/home/u/.config/berth/config.toml".into())
    );
    assert_eq!(
        relative.data_root(),
        PathBuf::from("/home/u/.local/share/berth")
    );

    let homeless = Env::default();
    assert_eq!(homeless.config_path(), None);
}

#[test]
fn events_retention() {
    let file = Path::new("/etc/berth/config.toml");
    let cfg = Config::from_toml_str("[events]\nmax_events = 10\nmax_age_days = 0\n", file).unwrap();
    assert_eq!(cfg.events.max_events, 10);
    assert!(cfg.events.max_age.is_zero());
    let cfg = Config::from_toml_str("[events]\nmax_age_days = 2\n", file).unwrap();
    assert_eq!(cfg.events.max_age.as_secs(), 2 * 86_400);
    assert_eq!(
        cfg.events.max_events,
        crate::metadata::Retention::default().max_events
    );
    for (text, key) in [
        ("[events]\nmax_events = -1\n", "events.max_events"),
        ("[events]\nmax_age_days = \"7d\"\n", "events.max_age_days"),
        ("[events]\nmax_age_days = 99999\n", "events.max_age_days"),
        ("[events]\nkeep = 1\n", "events.keep"),
    ] {
        let err = Config::from_toml_str(text, file).unwrap_err();
        assert!(err.to_string().contains(key), "{text}: {err}");
    }
}
