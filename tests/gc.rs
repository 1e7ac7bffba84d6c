//! Garbage collection and `berth-rm` end to end: images sharing a base,
//! pruning containers, a pull racing a prune loop, a removal killed midway,
//! and dry runs that tell the truth.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use berth::image::chain_ids;
use berth::metadata::{ContainerStatus, Db};
use common::*;
use serde_json::Value;

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn cmd(root: &Path, bin_name: &str, args: &[&str]) -> Command {
    let mut c = Command::new(bin(bin_name));
    c.arg("--root")
        .arg(root)
        .args(args)
        .env("BERTH_CONFIG", "/dev/null")
        .env_remove("BERTH_ROOT")
        .env_remove("BERTH_LOG")
        .env_remove("BERTH_GC_PAUSE_MS")
        .stdin(Stdio::null());
    c
}

fn ok(root: &Path, bin_name: &str, args: &[&str]) -> Output {
    let out = cmd(root, bin_name, args).output().unwrap();
    assert!(
        out.status.success(),
        "{bin_name} {args:?}: {:?}\n{}",
        out.status.code(),
        stderr(&out)
    );
    out
}

/// Two images on one busybox base, each with its own top layer.
struct Pair {
    _registry: Registry,
    a: OciImage,
    b: OciImage,
    a_ref: String,
    b_ref: String,
}

fn pair() -> Pair {
    let registry = Registry::start();
    let a = ImageBuilder::new("a")
        .file_layer(&[("a.txt", b"only in image a")])
        .random_layer(200_000, 1)
        .build();
    let b = ImageBuilder::new("b")
        .file_layer(&[("b.txt", b"only in image b")])
        .build();
    push_oci(&a, &registry, "gc/a:1");
    push_oci(&b, &registry, "gc/b:1");
    Pair {
        a_ref: registry.reference("gc/a:1"),
        b_ref: registry.reference("gc/b:1"),
        _registry: registry,
        a,
        b,
    }
}

fn pull_both(root: &Path, p: &Pair) {
    ok(root, "berth-pull", &["-q", &p.a_ref]);
    ok(root, "berth-pull", &["-q", &p.b_ref]);
}

/// Every snapshot record of the store: (snapshotter, key).
fn snapshots(root: &Path) -> BTreeSet<(String, String)> {
    let db = Db::open(root).unwrap();
    let mut out = BTreeSet::new();
    for s in berth::snapshot::SNAPSHOTTERS {
        for r in db.snapshots(s).unwrap() {
            out.insert((s.to_string(), r.key));
        }
    }
    out
}

fn snapshot_keys(root: &Path) -> BTreeSet<String> {
    snapshots(root).into_iter().map(|(_, k)| k).collect()
}

fn chain(image: &Image) -> Vec<String> {
    chain_ids(&image.diff_ids())
        .iter()
        .map(|d| d.to_string())
        .collect()
}

/// (kind, id) → size of the objects a `--format json` report lists under
/// `gc.removed`.
fn gc_removed(json: &Value) -> BTreeMap<(String, String), u64> {
    json["gc"]["removed"]
        .as_array()
        .unwrap_or_else(|| panic!("no gc.removed in {json}"))
        .iter()
        .map(|o| {
            let kind = o["kind"].as_str().unwrap().to_string();
            let id = match kind.as_str() {
                "content" => o["digest"].as_str().unwrap().to_string(),
                _ => o["key"].as_str().unwrap().to_string(),
            };
            ((kind, id), o["size"].as_u64().unwrap())
        })
        .collect()
}

/// The store is consistent: every record points at data that exists, and
/// no blob file or snapshot directory lacks a record.
fn assert_consistent(root: &Path) {
    let db = Db::open(root).unwrap();
    let blobs_dir = root.join("content/blobs/sha256");
    let files: BTreeSet<String> = std::fs::read_dir(&blobs_dir)
        .map(|d| {
            d.flatten()
                .map(|e| format!("sha256:{}", e.file_name().to_string_lossy()))
                .collect()
        })
        .unwrap_or_default();
    let records: BTreeSet<String> = db
        .read(|c| {
            let mut s = c.prepare("SELECT digest FROM content")?;
            let rows = s.query_map([], |r| r.get::<_, String>(0))?;
            rows.collect()
        })
        .unwrap();
    assert_eq!(files, records, "blob files and content records differ");
    for img in db.images().unwrap() {
        assert!(
            records.contains(&img.digest.to_string()),
            "image {} points at missing {}",
            img.name,
            img.digest
        );
    }
    for s in berth::snapshot::SNAPSHOTTERS {
        let recs = db.snapshots(s).unwrap();
        let dir = root.join("snapshots").join(s);
        let ids: BTreeSet<String> = recs.iter().map(|r| r.id.to_string()).collect();
        for r in &recs {
            assert!(
                dir.join(r.id.to_string()).is_dir(),
                "{s}/{}: no data",
                r.key
            );
            if let Some(p) = &r.parent {
                assert!(recs.iter().any(|x| &x.key == p), "{s}/{}: no parent", r.key);
            }
        }
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if name.bytes().all(|b| b.is_ascii_digit()) {
                    assert!(ids.contains(&name), "{s}/{name}: directory without record");
                }
            }
        }
        for img in db.images().unwrap() {
            for (k, v) in &img.labels {
                if k == &format!("berth.io/unpacked.{s}") {
                    assert!(recs.iter().any(|r| &r.key == v), "{}: {v} gone", img.name);
                }
            }
        }
    }
}

#[test]
fn removing_one_of_two_images_keeps_the_shared_base() {
    let p = pair();
    let root = TempRoot::new();
    let root = root.path();
    pull_both(root, &p);
    let (ca, cb) = (chain(&p.a), chain(&p.b));
    assert_eq!(ca[0], cb[0], "the images share their base layer");
    assert_eq!(p.a.layers[0].digest, p.b.layers[0].digest);
    let before = snapshot_keys(root);
    for k in ca.iter().chain(&cb) {
        assert!(before.contains(k), "{k} not unpacked: {before:?}");
    }

    let out = ok(root, "berth-rm", &["image", &p.a_ref, "--format", "json"]);
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["removed"][0]["kind"], "image");
    let removed = gc_removed(&json);

    // Freed: A's manifest, config and two own layers, with their sizes, and
    // A's own two snapshots.
    let mut want: BTreeMap<(String, String), u64> = BTreeMap::new();
    let content = |d: &Digest| ("content".to_string(), d.to_string());
    want.insert(content(&p.a.manifest_digest), p.a.manifest.len() as u64);
    want.insert(content(&p.a.config_digest), p.a.config.len() as u64);
    for l in &p.a.layers[1..] {
        want.insert(content(&l.digest), l.size);
    }
    let freed_content: BTreeMap<_, _> = removed
        .iter()
        .filter(|((k, _), _)| k == "content")
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    assert_eq!(freed_content, want);
    let freed_snaps: BTreeSet<String> = removed
        .keys()
        .filter(|(k, _)| k == "snapshot")
        .map(|(_, id)| id.clone())
        .collect();
    assert_eq!(freed_snaps, ca[1..].iter().cloned().collect());
    // The random layer's snapshot holds its 200 kB file.
    let big = removed[&("snapshot".to_string(), ca[2].clone())];
    assert!(big >= 200_000, "snapshot size {big}");
    let total: u64 = removed.values().sum();
    assert_eq!(json["gc"]["freed_bytes"].as_u64().unwrap(), total);

    // Kept: the base and all of B.
    let after = snapshot_keys(root);
    assert_eq!(
        after,
        cb.iter().cloned().collect::<BTreeSet<_>>(),
        "snapshots left"
    );
    for d in p.b.blob_digests() {
        assert!(
            root.join("content/blobs/sha256").join(d.hex()).is_file(),
            "{d} of B removed"
        );
    }
    for d in p.a.blob_digests() {
        let shared = p.b.blob_digests().contains(&d);
        assert_eq!(
            root.join("content/blobs/sha256").join(d.hex()).is_file(),
            shared,
            "{d}"
        );
    }
    assert_consistent(root);
    // B still runs its unpacked snapshots: removing the base by hand is
    // refused, naming the image.
    let out = cmd(root, "berth-rm", &["snapshot", &cb[0]])
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("in use by"), "{}", stderr(&out));
    assert!(stderr(&out).contains("gc/b:1"), "{}", stderr(&out));
    let out = cmd(
        root,
        "berth-rm",
        &["content", &p.b.layers[0].digest.to_string()],
    )
    .output()
    .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("gc/b:1"), "{}", stderr(&out));
    // One line per failure, and the exit code says so.
    let out = cmd(root, "berth-rm", &["image", "nope:1", "nope:2"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(stderr(&out).lines().count(), 2, "{}", stderr(&out));
}

#[test]
fn prune_frees_stopped_containers_and_force_removes_a_running_one() {
    let env = Env::new();
    let root = env.root.path();
    for name in ["p1", "p2"] {
        let out = env.run(
            "berth",
            &[
                "--name",
                name,
                &env.image,
                "dd",
                "if=/dev/zero",
                "of=/f",
                "bs=1024",
                "count=1024",
            ],
        );
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    let stopped: Vec<_> = ["p1", "p2"].iter().map(|n| env.container(n)).collect();
    let keys_before = snapshot_keys(root);
    for c in &stopped {
        assert!(keys_before.contains(&c.snapshot_key));
    }
    let out = env
        .cmd(
            "berth-run",
            &["-d", "--name", "busy", &env.image, "sleep", "1000"],
        )
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let running = env.container("busy");
    assert_eq!(running.status, ContainerStatus::Running);

    // A dry run tells what the prune frees, the writable snapshots and
    // their megabyte each included, and removes nothing.
    let keys_now = snapshot_keys(root);
    let dry = ok(
        root,
        "berth-rm",
        &["--prune", "--dry-run", "--format", "json"],
    );
    let dry: Value = serde_json::from_slice(&dry.stdout).unwrap();
    assert_eq!(snapshot_keys(root), keys_now);
    let out = env
        .cmd("berth-rm", &["--prune", "--format", "json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let real: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids = |v: &Value| -> BTreeSet<String> {
        v["removed"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["id"].as_str().unwrap().to_string())
            .collect()
    };
    let want: BTreeSet<String> = stopped.iter().map(|c| c.id.clone()).collect();
    assert_eq!(ids(&real), want, "{real}");
    assert_eq!(ids(&dry), want, "{dry}");
    let freed = gc_removed(&real);
    for c in &stopped {
        let size = freed[&("snapshot".to_string(), c.snapshot_key.clone())];
        assert!(size >= 1 << 20, "{} frees {size} bytes", c.snapshot_key);
    }
    assert_eq!(gc_removed(&dry), freed);
    assert_eq!(dry["gc"]["freed_bytes"], real["gc"]["freed_bytes"]);
    let keys = snapshot_keys(root);
    for c in &stopped {
        assert!(!keys.contains(&c.snapshot_key), "{} kept", c.snapshot_key);
        assert!(!root.join("containers").join(&c.id).exists());
    }
    // The running container, its snapshot and the image stay.
    assert!(keys.contains(&running.snapshot_key));
    assert_eq!(env.containers().len(), 1);
    assert_eq!(env.db().images().unwrap().len(), 1);

    // Running: refused without -f, removed with it.
    let out = env.cmd("berth-rm", &["busy"]).output().unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("running"), "{}", stderr(&out));
    assert_eq!(env.container("busy").status, ContainerStatus::Running);
    let out = env
        .cmd("berth-rm", &["-f", "container", "busy"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), running.id);
    assert!(env.containers().is_empty());
    assert_eq!(
        berth::metadata::process_start_time(running.pid.unwrap()),
        None,
        "the container's process survived"
    );
    assert!(!snapshot_keys(root).contains(&running.snapshot_key));
    env.assert_released(&running.id);
    assert_consistent(root);
    // The image still runs.
    let out = env.run("berth", &["--rm", &env.image, "true"]);
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn a_pull_racing_a_prune_loop_completes_and_runs() {
    let env = Env::new();
    let registry = Registry::start();
    let big = ImageBuilder::new("big")
        .random_layer(3_000_000, 7)
        .random_layer(3_000_000, 8)
        .file_layer(&[("marker", b"m")])
        .random_layer(2_000_000, 9)
        .build();
    push_oci(&big, &registry, "gc/big:1");
    let reference = registry.reference("gc/big:1");
    let root = env.root.path().to_path_buf();
    let stop = AtomicBool::new(false);
    let prunes = std::thread::scope(|s| {
        let pruner = s.spawn(|| {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let out = cmd(&root, "berth-rm", &["--prune"]).output().unwrap();
                assert!(out.status.success(), "prune: {}", stderr(&out));
                n += 1;
            }
            n
        });
        // Let the loop get going first.
        std::thread::sleep(Duration::from_millis(100));
        for _ in 0..3 {
            let out = cmd(&root, "berth-pull", &["-q", &reference])
                .output()
                .unwrap();
            let fine = out.status.success();
            if !fine {
                stop.store(true, Ordering::Relaxed);
            }
            assert!(fine, "pull: {}", stderr(&out));
            // Drop it again so the next pull fetches and unpacks anew.
            ok(&root, "berth-rm", &["image", &reference]);
        }
        let out = cmd(&root, "berth-pull", &["-q", &reference])
            .output()
            .unwrap();
        stop.store(true, Ordering::Relaxed);
        assert!(out.status.success(), "pull: {}", stderr(&out));
        pruner.join().unwrap()
    });
    assert!(prunes > 1, "the prune loop ran {prunes} times");
    let out = env.run("berth", &["--rm", &reference, "cat", "/marker"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "m");
    assert_consistent(&root);
}

#[test]
fn a_removal_killed_midway_leaves_a_consistent_store() {
    let p = pair();
    for delay_ms in [150u64, 450, 750, 1050] {
        let root = TempRoot::new();
        let root = root.path();
        pull_both(root, &p);
        let mut child = cmd(root, "berth-rm", &["image", &p.a_ref])
            .env("BERTH_GC_PAUSE_MS", "200")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill().unwrap();
        child.wait().unwrap();
        // Records never point at missing data, even now.
        let db = Db::open(root).unwrap();
        for s in berth::snapshot::SNAPSHOTTERS {
            for r in db.snapshots(s).unwrap() {
                assert!(root
                    .join("snapshots")
                    .join(s)
                    .join(r.id.to_string())
                    .is_dir());
            }
        }
        let records: Vec<String> = db
            .read(|c| {
                let mut s = c.prepare("SELECT digest FROM content")?;
                let rows = s.query_map([], |r| r.get::<_, String>(0))?;
                rows.collect()
            })
            .unwrap();
        for d in records {
            let d: Digest = d.parse().unwrap();
            assert!(
                root.join("content/blobs/sha256").join(d.hex()).is_file(),
                "{d}"
            );
        }
        // Rerun: the image name may already be gone; collect anyway.
        let out = cmd(root, "berth-rm", &["image", &p.a_ref])
            .output()
            .unwrap();
        if !out.status.success() {
            assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
            ok(root, "berth-rm", &["--prune"]);
        }
        assert_consistent(root);
        assert_eq!(snapshot_keys(root), chain(&p.b).into_iter().collect());
        let out = ok(root, "berth-run", &["--rm", &p.b_ref, "cat", "/b.txt"]);
        assert_eq!(
            stdout(&out),
            "only in image b",
            "after kill at {delay_ms} ms"
        );
    }
}

#[test]
fn dry_run_lists_what_a_real_run_removes_and_why_the_rest_stays() {
    let p = pair();
    let root = TempRoot::new();
    let root = root.path();
    pull_both(root, &p);
    let out = ok(
        root,
        "berth-rm",
        &["image", &p.a_ref, "--dry-run", "--format", "json"],
    );
    let dry: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(dry["dry_run"], true);
    // Nothing moved.
    assert_eq!(Db::open(root).unwrap().images().unwrap().len(), 2);
    assert_eq!(snapshot_keys(root).len(), 4);
    // Why the kept ones stay: B's image reaches them.
    let kept = dry["gc"]["kept"].as_array().unwrap();
    let base_layer = p.b.layers[0].digest.to_string();
    let reason = |id: &str| {
        kept.iter()
            .find(|k| k["digest"] == id || k["key"] == id)
            .map(|k| k["reason"].as_str().unwrap().to_string())
            .unwrap_or_else(|| panic!("{id} not in kept: {kept:?}"))
    };
    assert!(
        reason(&base_layer).starts_with("image "),
        "{}",
        reason(&base_layer)
    );
    assert!(reason(&base_layer).contains("gc/b:1"));
    assert!(reason(&chain(&p.b)[0]).contains("gc/b:1"));
    assert!(reason(&p.b.config_digest.to_string()).contains("gc/b:1"));
    assert!(kept
        .iter()
        .all(|k| !k["reason"].as_str().unwrap().contains("gc/a:1")));

    let out = ok(root, "berth-rm", &["image", &p.a_ref, "--format", "json"]);
    let real: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(gc_removed(&dry), gc_removed(&real));
    assert_eq!(dry["gc"]["freed_bytes"], real["gc"]["freed_bytes"]);
    assert_eq!(gc_removed(&real).len(), 4 + 2);

    // The table form of a prune dry run names the same reasons.
    let out = ok(root, "berth-rm", &["--prune", "--dry-run"]);
    assert!(stdout(&out).contains("keep content"), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("would free 0 bytes"),
        "{}",
        stdout(&out)
    );
}
