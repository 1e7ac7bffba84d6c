//! Runs the real `berth` binary: dispatch to `berth-<name>` programs on
//! PATH, usage text, errors and `berth plugins`.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};

/// Tests that write a script and then exec it run one at a time: a script
/// still open for writing in a child forked by a parallel test makes exec
/// fail with ETXTBSY.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `berth` with a clean environment: PATH = `path` only, no BERTH_* vars,
/// and an empty config file so the host's /etc/berth is never read.
fn berth(path: &Path, config: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
    cmd.env_remove("BERTH_ROOT")
        .env("BERTH_CONFIG", config)
        .env("PATH", path);
    cmd
}

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("bin")).unwrap();
        std::fs::write(dir.path().join("config.toml"), "").unwrap();
        Fixture { dir }
    }

    fn bin(&self) -> PathBuf {
        self.dir.path().join("bin")
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    fn script(&self, name: &str, body: &str) {
        let path = self.bin().join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn berth(&self) -> Command {
        berth(&self.bin(), &self.config())
    }

    fn run(&self, args: &[&str]) -> Output {
        self.berth().args(args).output().unwrap()
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn dispatches_args_and_exit_code_unchanged() {
    let _serial = serial();
    let fx = Fixture::new();
    fx.script(
        "berth-hello",
        r#"echo "pid $$"; for a in "$@"; do echo "arg [$a]"; done; echo oops >&2; exit 7"#,
    );
    let child = fx
        .berth()
        .args(["hello", "a b", "--flag", ""])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!("pid {pid}\narg [a b]\narg [--flag]\narg []\n"),
        "berth must exec the command in place, with its arguments as given"
    );
    assert_eq!(text(&out.stderr), "oops\n");
}

#[test]
fn signals_pass_through() {
    let _serial = serial();
    let fx = Fixture::new();
    fx.script("berth-die", "kill -TERM $$");
    let out = fx.run(&["die"]);
    assert_eq!(out.status.signal(), Some(libc::SIGTERM), "{:?}", out.status);
}

#[test]
fn help_lists_external_commands_and_forwards_help() {
    let _serial = serial();
    let fx = Fixture::new();
    fx.script("berth-hello", r#"echo "hello got $*""#);
    fx.script("berth-pull", "echo pulled");

    for args in [&["--help"][..], &["help"], &[]] {
        let out = fx.run(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        let usage = text(&out.stdout);
        let external = usage
            .split("External commands")
            .nth(1)
            .unwrap_or_else(|| panic!("no external commands section:\n{usage}"));
        assert!(external.contains("  hello "), "{usage}");
        assert!(usage.contains("  pull "), "{usage}");
        assert!(usage.contains("  plugins "), "{usage}");
    }

    let out = fx.run(&["help", "hello"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out.stdout), "hello got --help\n");

    let out = fx.run(&["help", "plugins"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("--format"));
}

#[test]
fn unknown_command_is_a_usage_error() {
    let fx = Fixture::new();
    let out = fx.run(&["frobnicate", "x"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr),
        "berth: 'frobnicate' is not a berth command (no berth-frobnicate beside berth or on \
         PATH). See 'berth --help'.\n"
    );
    assert!(out.stdout.is_empty());

    let out = fx.run(&["--frobnicate"]);
    assert_eq!(out.status.code(), Some(2));

    let out = fx.run(&["../bin/berth-x"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn version() {
    let fx = Fixture::new();
    let out = fx.run(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        text(&out.stdout),
        format!("berth {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn plugins_as_json() {
    let fx = Fixture::new();
    let root = fx.dir.path().join("store");
    let out = fx
        .berth()
        .args(["plugins", "--format", "json", "--root"])
        .arg(&root)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let plugins = value.as_array().expect("one JSON array");
    let local = plugins
        .iter()
        .find(|p| p["kind"] == "content" && p["id"] == "local")
        .expect("content/local listed");
    assert_eq!(local["loaded"], true, "{local}");
    assert_eq!(local["error"], serde_json::Value::Null);
    assert_eq!(
        local["capabilities"],
        serde_json::json!(["ingest", "resume", "labels"])
    );
    let runtimes: Vec<&str> = plugins
        .iter()
        .filter(|p| p["kind"] == "runtime")
        .filter_map(|p| p["id"].as_str())
        .collect();
    assert_eq!(runtimes, ["berth", "runc", "crun"]);
    assert!(!root.exists(), "listing plugins must not create the store");
}

#[test]
fn plugins_as_table_shows_why_not() {
    let fx = Fixture::new();
    // A file where the store should be: content/local cannot work.
    let root = fx.dir.path().join("file");
    std::fs::write(&root, "").unwrap();
    let out = fx
        .berth()
        .args(["plugins"])
        .env("BERTH_ROOT", &root)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["KIND", "ID", "CAPABILITIES", "STATUS"]);
    let local = table
        .lines()
        .find(|l| l.starts_with("content ") && l.contains(" local "))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        local.contains("error: ") && local.contains("not a directory"),
        "{local}"
    );
    assert!(table
        .lines()
        .any(|l| l.starts_with("metadata ") && l.ends_with(" ok")));
}

#[test]
fn bad_config_names_key_and_file() {
    let fx = Fixture::new();
    std::fs::write(
        fx.config(),
        "[registry.\"127.0.0.1:5000\"]\nplain_htp = true\n",
    )
    .unwrap();
    let out = fx.run(&["plugins"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(r#"registry."127.0.0.1:5000".plain_htp"#),
        "{stderr}"
    );
    assert!(
        stderr.contains(&fx.config().display().to_string()),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn missing_explicit_config_is_not_found() {
    let fx = Fixture::new();
    let missing = fx.dir.path().join("nope.toml");
    let out = fx
        .berth()
        .args(["plugins", "--config"])
        .arg(&missing)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out.stderr).contains("nope.toml"));
}

#[test]
fn plugins_flag_errors_are_usage_errors() {
    let fx = Fixture::new();
    let out = fx.run(&["plugins", "--format", "yaml"]);
    assert_eq!(out.status.code(), Some(2));
}
