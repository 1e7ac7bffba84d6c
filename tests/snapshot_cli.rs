//! `berth-snapshot` end to end: the real binary on a throwaway store,
//! through prepare, mount, write, unmount, commit, view, mounts, ls, tree,
//! info, usage, label, rm and cleanup, with `--format json` output checked
//! and the exit codes of its errors. Mounting needs root; as another user
//! these tests say so and pass.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use nix::mount::MntFlags;
use serde_json::Value;
use tempfile::TempDir;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A store root in a temp dir, removed on drop.
fn temp_root() -> TempDir {
    tempfile::Builder::new()
        .prefix("berth-snap-cli-")
        .tempdir()
        .unwrap()
}

struct Cli {
    root: PathBuf,
    snapshotter: Option<&'static str>,
}

impl Cli {
    fn new(root: &Path, snapshotter: Option<&'static str>) -> Cli {
        Cli {
            root: root.to_path_buf(),
            snapshotter,
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth-snapshot"));
        cmd.arg("--root").arg(&self.root);
        if let Some(name) = self.snapshotter {
            cmd.args(["--snapshotter", name]);
        }
        let out = cmd
            .args(args)
            .env("BERTH_CONFIG", "/dev/null")
            .env_remove("BERTH_ROOT")
            .env_remove("BERTH_LOG")
            .output()
            .expect("running berth-snapshot");
        eprintln!(
            "berth-snapshot {args:?}: exit {:?}\nstdout: {}stderr: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Runs `args`, which must succeed; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "berth-snapshot {args:?} failed");
        String::from_utf8(out.stdout).unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        let text = self.ok(&[&["--format", "json"], args].concat());
        serde_json::from_str(&text).expect("stdout is JSON")
    }

    /// Runs `args`, which must fail with `code`; returns stderr.
    fn fails(&self, code: i32, args: &[&str]) -> String {
        let out = self.run(args);
        assert_eq!(out.status.code(), Some(code), "berth-snapshot {args:?}");
        String::from_utf8(out.stderr).unwrap()
    }
}

/// A directory something is mounted on; detached on drop, even on panic.
struct Target(PathBuf);

impl Target {
    fn new(root: &Path, name: &str) -> Target {
        let path = root.join(name);
        fs::create_dir(&path).unwrap();
        Target(path)
    }

    fn as_str(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, MntFlags::MNT_DETACH);
    }
}

fn keys(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|i| i["key"].as_str().unwrap())
        .collect()
}

fn lifecycle(snapshotter: &'static str) {
    let dir = temp_root();
    let cli = Cli::new(dir.path(), Some(snapshotter));
    let target = Target::new(dir.path(), "mnt");

    assert_eq!(cli.ok(&["prepare", "work"]), "", "prepare is quiet");
    cli.ok(&["mount", target.as_str(), "work"]);
    fs::write(target.0.join("hello"), "world").unwrap();
    cli.ok(&["unmount", target.as_str()]);
    assert!(!target.0.join("hello").exists(), "unmounted");
    cli.ok(&["commit", "base", "work"]);

    let info = cli.json(&["info", "base"]);
    assert_eq!(info["kind"], "committed");
    assert_eq!(info["parent"], Value::Null);
    assert!(info["id"].as_u64().unwrap() > 0);
    let text = cli.ok(&["info", "base"]);
    assert!(text.contains("kind:     committed"), "{text}");

    let child = cli.json(&["prepare", "--label", "a=b", "child", "base"]);
    assert_eq!(child["key"], "child");
    assert_eq!(child["kind"], "active");
    assert_eq!(child["labels"]["a"], "b");
    let expected_type = if snapshotter == "overlayfs" {
        "overlay"
    } else {
        "bind"
    };
    assert_eq!(child["mounts"][0]["type"], expected_type);

    let view = cli.json(&["view", "look", "base"]);
    assert_eq!(view["kind"], "view");

    let line = cli.ok(&["mounts", "/mnt/x", "child"]);
    let prefix = if snapshotter == "overlayfs" {
        "mount -t overlay overlay -o "
    } else {
        "mount -o rbind,rw "
    };
    assert!(
        line.starts_with(prefix) && line.trim_end().ends_with(" /mnt/x"),
        "{line}"
    );
    let mounts = cli.json(&["mounts", "/mnt/x", "child"]);
    assert_eq!(mounts[0]["target"], "/mnt/x");

    cli.ok(&["mount", target.as_str(), "look"]);
    assert_eq!(fs::read_to_string(target.0.join("hello")).unwrap(), "world");
    assert!(
        fs::write(target.0.join("new"), "x").is_err(),
        "a view is read-only"
    );
    cli.ok(&["unmount", target.as_str()]);
    cli.ok(&["mount", target.as_str(), "child"]);
    assert_eq!(fs::read_to_string(target.0.join("hello")).unwrap(), "world");
    let stderr = cli.fails(1, &["rm", "child"]);
    assert!(stderr.contains("in use"), "{stderr}");
    cli.ok(&["unmount", target.as_str()]);

    let all = cli.json(&["ls"]);
    assert_eq!(keys(&all), ["base", "child", "look"]);
    assert_eq!(all[1]["parent"], "base");
    assert_eq!(cli.ok(&["ls", "-q"]), "base\nchild\nlook\n");
    assert_eq!(cli.ok(&["ls", "-q", "--kind", "view"]), "look\n");
    assert_eq!(cli.ok(&["ls", "-q", "--label", "a=b"]), "child\n");
    let table = cli.ok(&["ls"]);
    assert!(table.starts_with("KEY "), "{table}");
    assert!(table.contains("child   base     active"), "{table}");

    let tree = cli.json(&["tree"]);
    assert_eq!(tree[0]["key"], "base");
    assert_eq!(keys(&tree[0]["children"]), ["child", "look"]);
    let text = cli.ok(&["tree"]);
    assert_eq!(
        text,
        "base (committed)\n \\_ child (active)\n \\_ look (view)\n"
    );

    let usage = cli.json(&["usage"]);
    assert_eq!(keys(&usage), ["base", "child", "look"]);
    let base_usage = cli.json(&["usage", "base"]);
    assert!(base_usage["size"].as_u64().unwrap() > 0);
    assert_eq!(base_usage["inodes"], 2, "the root directory and hello");

    let labelled = cli.json(&["label", "child", "x=y"]);
    assert_eq!(labelled["labels"], serde_json::json!({"a": "b", "x": "y"}));
    assert_eq!(cli.ok(&["label", "child", "a="]), "x=y\n");

    let stderr = cli.fails(1, &["rm", "base"]);
    assert!(stderr.contains("has children"), "{stderr}");
    let removed = cli.json(&["rm", "child", "look", "base"]);
    assert_eq!(removed, serde_json::json!(["child", "look", "base"]));
    assert_eq!(cli.ok(&["ls", "-q"]), "");
    let report = cli.json(&["cleanup"]);
    assert_eq!(
        report,
        serde_json::json!({"orphan_dirs": [], "stale_snapshots": []})
    );
}

#[test]
fn lifecycle_overlayfs() {
    if is_root() {
        lifecycle("overlayfs");
    } else {
        eprintln!("skipped: mounting needs root");
    }
}

#[test]
fn lifecycle_native() {
    if is_root() {
        lifecycle("native");
    } else {
        eprintln!("skipped: mounting needs root");
    }
}

#[test]
fn errors_and_exit_codes() {
    if !is_root() {
        eprintln!("skipped: the default snapshotter's probe mounts");
        return;
    }
    let dir = temp_root();
    let cli = Cli::new(dir.path(), None);
    let target = Target::new(dir.path(), "mnt");
    cli.ok(&["prepare", "a"]);
    cli.ok(&["view", "v"]);

    // Usage errors: 2.
    cli.fails(2, &["bogus"]);
    cli.fails(2, &["prepare"]);
    cli.fails(2, &["prepare", "x", "--label", "novalue"]);
    cli.fails(2, &["ls", "--kind", "frozen"]);
    let stderr = cli.fails(2, &["--snapshotter", "zfs", "ls"]);
    assert!(stderr.contains("unknown snapshotter"), "{stderr}");
    cli.fails(2, &["prepare", ""]);

    // Not found: 3.
    for args in [
        &["info", "nope"][..],
        &["prepare", "x", "nope"],
        &["commit", "c", "nope"],
        &["rm", "nope"],
        &["mounts", "/mnt", "nope"],
        &["usage", "nope"],
        &["label", "nope", "k=v"],
    ] {
        let stderr = cli.fails(3, args);
        assert!(stderr.contains("not found"), "{stderr}");
    }
    let stderr = cli.fails(3, &["unmount", target.as_str()]);
    assert!(stderr.contains("not a mount point"), "{stderr}");

    // Failed preconditions and conflicts: 1.
    let stderr = cli.fails(1, &["prepare", "a"]);
    assert!(stderr.contains("already exists"), "{stderr}");
    let stderr = cli.fails(1, &["commit", "c", "v"]);
    assert!(
        stderr.contains("only an active snapshot can be committed"),
        "{stderr}"
    );
    let stderr = cli.fails(1, &["prepare", "x", "a"]);
    assert!(
        stderr.contains("only a committed snapshot can be a parent"),
        "{stderr}"
    );

    // rm goes on past a failure and reports the first one's code.
    cli.fails(3, &["rm", "nope", "a"]);
    assert_eq!(cli.ok(&["ls", "-q"]), "v\n");

    // Store flags also work after the subcommand.
    let out = Command::new(env!("CARGO_BIN_EXE_berth-snapshot"))
        .args(["ls", "-q", "--root"])
        .arg(dir.path())
        .env("BERTH_CONFIG", "/dev/null")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "v\n");
}

#[test]
fn falls_back_to_native_when_overlay_cannot_work() {
    let dir = temp_root();
    // Overlay mount options cannot carry a ':' in a layer path.
    let root = dir.path().join("a:b");
    let cli = Cli::new(&root, None);
    let out = cli.run(&["prepare", "x"]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("note: snapshotter overlayfs cannot work here")
            && stderr.contains("native"),
        "{stderr}"
    );
    let native = Cli::new(&root, Some("native"));
    assert_eq!(native.ok(&["ls", "-q"]), "x\n");
    let explicit = Cli::new(&root, Some("overlayfs"));
    let stderr = explicit.fails(1, &["ls"]);
    assert!(stderr.contains("cannot work here"), "{stderr}");
}

#[test]
fn concurrent_processes_on_one_store() {
    if !is_root() {
        eprintln!("skipped: the default snapshotter's probe mounts");
        return;
    }
    let dir = temp_root();
    let cli = Cli::new(dir.path(), None);
    cli.ok(&["prepare", "w"]);
    cli.ok(&["commit", "base", "w"]);
    let spawn = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_berth-snapshot"))
            .arg("--root")
            .arg(dir.path())
            .args(args)
            .env("BERTH_CONFIG", "/dev/null")
            .output()
    };
    // Same key from four processes: exactly one wins.
    let outs: Vec<Output> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| spawn(&["prepare", "same", "base"]).unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let winners = outs.iter().filter(|o| o.status.success()).count();
    assert_eq!(winners, 1, "exactly one prepare of one key succeeds");
    for out in outs.iter().filter(|o| !o.status.success()) {
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    }
    // Distinct keys on one parent: all succeed.
    std::thread::scope(|s| {
        for i in 0..4 {
            let spawn = &spawn;
            s.spawn(move || {
                let key = format!("k{i}");
                let out = spawn(&["prepare", &key, "base"]).unwrap();
                assert!(out.status.success(), "{out:?}");
                let out = spawn(&["commit", &format!("c{i}"), &key]).unwrap();
                assert!(out.status.success(), "{out:?}");
            });
        }
    });
    let committed = cli.ok(&["ls", "-q", "--kind", "committed"]);
    let mut committed: Vec<&str> = committed.lines().collect();
    committed.sort();
    assert_eq!(committed, ["base", "c0", "c1", "c2", "c3"]);
}

#[test]
fn plugins_lists_both_snapshotters() {
    let dir = temp_root();
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["plugins", "--format", "json", "--root"])
        .arg(dir.path())
        .env("BERTH_CONFIG", "/dev/null")
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    for id in ["overlayfs", "native"] {
        let entry = v
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["kind"] == "snapshotter" && p["id"] == id)
            .unwrap_or_else(|| panic!("no snapshotter {id} in {v}"));
        if is_root() {
            assert_eq!(entry["loaded"], true, "{entry}");
        }
    }
    // The probe cleaned up after itself.
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
}
