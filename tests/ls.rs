//! `berth-ls` end to end: every kind in table, JSON, template and `-q`
//! forms, filters, `--no-trunc`, a dead supervisor listed as stopped, and
//! `--check` / `--repair` on healthy and damaged stores.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use berth::content::{Digest, Store};
use berth::metadata::{put_content, ContentRecord, Labels};
use common::*;

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ls(env: &Env, args: &[&str]) -> Output {
    let out = env.cmd("berth-ls", args).output().unwrap();
    eprintln!(
        "berth-ls {args:?}: {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        stdout(&out),
        stderr(&out)
    );
    out
}

/// `berth-ls ARGS`, which must succeed; its stdout.
fn ls_ok(env: &Env, args: &[&str]) -> String {
    let out = ls(env, args);
    assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
    stdout(&out)
}

fn ls_json(env: &Env, args: &[&str]) -> Vec<serde_json::Value> {
    let mut full = args.to_vec();
    full.extend(["--format", "json"]);
    let text = ls_ok(env, &full);
    assert_eq!(text.lines().count(), 1, "one array on one line: {text}");
    serde_json::from_str::<Vec<serde_json::Value>>(&text).expect("a JSON array")
}

fn lines(text: &str) -> Vec<&str> {
    text.lines().collect()
}

#[test]
fn containers_in_every_form_with_filters() {
    let env = Env::new();
    let img = env.image.as_str();
    let a = env.run("berth", &["--name", "alpha", "-l", "team=x", img, "true"]);
    assert_eq!(a.status.code(), Some(0), "{}", stderr(&a));
    let b = env.run("berth", &["--name", "beta", img, "sh", "-c", "exit 3"]);
    assert_eq!(b.status.code(), Some(3), "{}", stderr(&b));
    let (ida, idb) = (env.container("alpha").id, env.container("beta").id);

    // Table: docker's columns, newest first, short ids.
    let table = ls_ok(&env, &[]);
    assert_eq!(ls_ok(&env, &["containers"]), table);
    let rows = lines(&table);
    assert_eq!(rows.len(), 3, "{table}");
    for col in [
        "CONTAINER ID",
        "NAME",
        "IMAGE",
        "COMMAND",
        "STATUS",
        "CREATED",
    ] {
        assert!(rows[0].contains(col), "{table}");
    }
    assert!(
        rows[1].starts_with(&idb[..12]) && rows[1].contains("beta"),
        "{table}"
    );
    assert!(rows[1].contains("Exited (3) "), "{table}");
    assert!(rows[1].contains("\"sh -c 'exit 3'\""), "{table}");
    assert!(
        rows[2].contains("Exited (0)") && rows[2].contains("alpha"),
        "{table}"
    );
    assert!(rows[2].contains(" ago"), "{table}");
    assert!(!table.contains(&ida), "ids truncated: {table}");
    let full = ls_ok(&env, &["--no-trunc"]);
    assert!(full.contains(&ida) && full.contains(&idb), "{full}");

    // JSON: one array, docker-like keys.
    let json = ls_json(&env, &[]);
    assert_eq!(json.len(), 2);
    assert_eq!(json[0]["Name"], "beta");
    assert_eq!(json[0]["ID"], idb[..12]);
    assert_eq!(json[0]["State"], "stopped");
    assert_eq!(json[0]["ExitCode"], 3);
    assert_eq!(json[1]["Labels"]["team"], "x");
    assert_eq!(json[1]["Image"], img);
    assert_eq!(ls_json(&env, &["--no-trunc"])[0]["ID"], idb);

    // Templates: the JSON keys, with \t and \n escapes.
    let t = ls_ok(
        &env,
        &["--format", "{{.Name}}\\t{{.ExitCode}}\\t{{.Labels}}"],
    );
    assert_eq!(t, "beta\t3\t\nalpha\t0\tteam=x\n");
    let bad = ls(&env, &["--format", "{{.Name}} {{.Bogus}}"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("\"Bogus\""), "{}", stderr(&bad));

    // -q: ids, short unless --no-trunc.
    assert_eq!(
        ls_ok(&env, &["-q"]),
        format!("{}\n{}\n", &idb[..12], &ida[..12])
    );
    assert_eq!(
        ls_ok(&env, &["-q", "--no-trunc"]),
        format!("{idb}\n{ida}\n")
    );

    // Filters.
    let q = |f: &[&str]| -> Vec<String> {
        let mut args = vec!["--format", "{{.Name}}"];
        for x in f {
            args.extend(["--filter", x]);
        }
        ls_ok(&env, &args).lines().map(str::to_string).collect()
    };
    assert_eq!(q(&["label=team"]), ["alpha"]);
    assert_eq!(q(&["label=team=x"]), ["alpha"]);
    assert!(q(&["label=team=y"]).is_empty());
    assert_eq!(q(&["status=stopped"]), ["beta", "alpha"]);
    assert_eq!(q(&["status=exited"]), ["beta", "alpha"]);
    assert!(q(&["status=running"]).is_empty());
    assert!(q(&["status=created"]).is_empty());
    assert_eq!(q(&["status=running", "status=stopped"]), ["beta", "alpha"]);
    assert_eq!(q(&["name=bet"]), ["beta"]);
    assert_eq!(q(&[&format!("image={img}")]), ["beta", "alpha"]);
    assert!(q(&["image=docker.io/library/nothing:1"]).is_empty());
    assert_eq!(q(&["status=stopped", "name=alp"]), ["alpha"]);
    for bad in ["status=sleeping", "dangling=true", "nope=1", "label"] {
        let out = ls(&env, &["--filter", bad]);
        assert_eq!(out.status.code(), Some(2), "{bad}");
    }
}

#[test]
fn images_snapshots_and_content_in_every_form() {
    let env = Env::new();
    let img = env.image.as_str();
    let root = env.root.path();
    let image = env.db().image(img).unwrap().expect("the pulled image");

    // Images.
    let table = ls_ok(&env, &["images"]);
    let rows = lines(&table);
    for col in ["NAME", "DIGEST", "PLATFORM(S)", "SIZE", "UNPACKED"] {
        assert!(rows[0].contains(col), "{table}");
    }
    assert!(rows[1].starts_with(img), "{table}");
    assert!(rows[1].contains(&image.digest.short()), "{table}");
    assert!(!rows[1].contains(&image.digest.to_string()), "{table}");
    assert!(rows[1].contains("linux/"), "{table}");
    assert!(ls_ok(&env, &["images", "--no-trunc"]).contains(&image.digest.to_string()));
    let json = ls_json(&env, &["images"]);
    assert_eq!(json.len(), 1);
    assert_eq!(json[0]["Name"], img);
    assert_eq!(json[0]["Digest"], image.digest.to_string());
    assert!(json[0]["Size"].as_u64().unwrap() > 0, "{json:?}");
    assert!(json[0]["Platforms"][0]
        .as_str()
        .unwrap()
        .starts_with("linux/"));
    let unpacked = json[0]["Unpacked"][0].as_str().unwrap().to_string();
    assert!(
        ["overlayfs", "native"].contains(&unpacked.as_str()),
        "{json:?}"
    );
    assert_eq!(ls_ok(&env, &["images", "-q"]), format!("{img}\n"));
    assert_eq!(
        ls_ok(&env, &["images", "--format", "{{.Name}} {{.Unpacked}}"]),
        format!("{img} {unpacked}\n")
    );
    assert_eq!(
        ls_ok(&env, &["images", "-q", "--filter", "name=busybox"]),
        format!("{img}\n")
    );
    assert_eq!(
        ls_ok(&env, &["images", "-q", "--filter", "name=nothing"]),
        ""
    );
    // No container uses it yet: dangling.
    assert_eq!(
        ls_ok(&env, &["images", "-q", "--filter", "dangling=true"]),
        format!("{img}\n")
    );
    let out = env.run("berth", &["--name", "user", img, "true"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        ls_ok(&env, &["images", "-q", "--filter", "dangling=true"]),
        ""
    );
    assert_eq!(
        ls_ok(&env, &["images", "-q", "--filter", "dangling=false"]),
        format!("{img}\n")
    );
    let id = env.container("user").id;

    // Snapshots: the image's layers and the container's writable one.
    let json = ls_json(&env, &["snapshots"]);
    let key = format!("container-{id}");
    let mine = json
        .iter()
        .find(|s| s["Key"] == key.as_str())
        .expect("container snapshot");
    assert_eq!(mine["Kind"], "active");
    assert_eq!(mine["Snapshotter"], unpacked.as_str());
    assert!(mine["Size"].is_null(), "measured only with --size");
    let sized = ls_json(&env, &["snapshots", "--size"]);
    let mine = sized.iter().find(|s| s["Key"] == key.as_str()).unwrap();
    assert!(mine["Size"].is_u64(), "{mine}");
    assert!(json
        .iter()
        .any(|s| s["Kind"] == "committed" && s["Size"].is_u64()));
    let table = ls_ok(&env, &["snapshots"]);
    for col in ["KEY", "PARENT", "KIND", "SIZE", "SNAPSHOTTER"] {
        assert!(table.lines().next().unwrap().contains(col), "{table}");
    }
    assert!(table.contains(&key), "{table}");
    let keys = ls_ok(&env, &["snapshots", "-q"]);
    assert_eq!(keys.lines().count(), json.len());
    assert!(keys.lines().any(|k| k == key));
    assert_eq!(
        ls_ok(
            &env,
            &[
                "snapshots",
                "--format",
                "{{.Key}}|{{.Kind}}",
                "--filter",
                "name=container-"
            ]
        ),
        format!("{key}|active\n")
    );
    let other = if unpacked == "native" {
        "overlayfs"
    } else {
        "native"
    };
    assert_eq!(
        ls_ok(&env, &["snapshots", "-q", "--snapshotter", other]),
        ""
    );
    assert_eq!(
        ls_ok(&env, &["snapshots", "-q", "--filter", "dangling=true"]),
        ""
    );
    let sn = berth::snapshot::open(root, "native").unwrap();
    sn.prepare("loose", None, &Labels::from([("tag".into(), "t".into())]))
        .unwrap();
    assert_eq!(
        ls_ok(&env, &["snapshots", "-q", "--filter", "dangling=true"]),
        "loose\n"
    );
    assert_eq!(
        ls_ok(&env, &["snapshots", "-q", "--filter", "label=tag=t"]),
        "loose\n"
    );
    assert!(!ls_ok(&env, &["snapshots", "-q", "--filter", "dangling=false"]).contains("loose"));

    // Content: every blob of the image, none dangling, until one is added.
    let json = ls_json(&env, &["content"]);
    assert!(json.len() >= 3, "manifest, config, layers: {json:?}");
    let manifest = json
        .iter()
        .find(|c| c["Digest"] == image.digest.to_string().as_str())
        .expect("the manifest");
    assert!(manifest["Labels"]["containerd.io/gc.ref.content.config"].is_string());
    assert!(json.iter().all(|c| c["Size"].as_u64().unwrap() > 0));
    let digests = ls_ok(&env, &["content", "-q"]);
    assert_eq!(digests.lines().count(), json.len());
    assert!(digests.lines().all(|d| d.len() == 71), "{digests}");
    let table = ls_ok(&env, &["content"]);
    for col in ["DIGEST", "SIZE", "MEDIA TYPE", "LABELS"] {
        assert!(table.lines().next().unwrap().contains(col), "{table}");
    }
    assert!(table.contains(&image.digest.short()) && !table.contains(&image.digest.to_string()));
    assert!(ls_ok(&env, &["content", "--no-trunc"]).contains(&image.digest.to_string()));
    assert_eq!(
        ls_ok(
            &env,
            &[
                "content",
                "-q",
                "--filter",
                "label=containerd.io/gc.ref.content.config"
            ]
        ),
        format!("{}\n", image.digest)
    );
    assert_eq!(
        ls_ok(&env, &["content", "-q", "--filter", "dangling=true"]),
        ""
    );
    let data = b"a blob nothing refers to";
    let loose = Digest::of(data);
    Store::open(root).unwrap().write_blob(&loose, data).unwrap();
    env.db()
        .write(|tx| {
            put_content(
                tx,
                &ContentRecord {
                    digest: loose.clone(),
                    size: data.len() as u64,
                    media_type: Some("text/plain".into()),
                    labels: Labels::new(),
                },
            )
        })
        .unwrap();
    assert_eq!(
        ls_ok(&env, &["content", "-q", "--filter", "dangling=true"]),
        format!("{loose}\n")
    );
    assert_eq!(
        ls_ok(
            &env,
            &[
                "content",
                "--format",
                "{{.Digest}} {{.Size}} {{.MediaType}}",
                "--filter",
                "dangling=true"
            ]
        ),
        format!("{loose} {} text/plain\n", data.len())
    );
    assert_eq!(
        ls_ok(&env, &["content", "-q", "--filter", "dangling=false"])
            .lines()
            .count(),
        json.len()
    );
    let bad = ls(&env, &["content", "--format", "{{.ID}}"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("\"ID\""), "{}", stderr(&bad));
}

#[test]
fn a_dead_supervisor_is_listed_stopped() {
    let env = Env::new();
    let out = env.run(
        "berth",
        &["-d", "--name", "orphan", &env.image, "sleep", "1000"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let state = |env: &Env| {
        ls_ok(
            env,
            &[
                "--format",
                "{{.State}} {{.Status}}",
                "--filter",
                "name=orphan",
            ],
        )
    };
    assert!(state(&env).starts_with("running Up "), "{}", state(&env));
    assert_eq!(
        ls_ok(&env, &["-q", "--filter", "status=running"])
            .lines()
            .count(),
        1
    );
    // Read the record directly: the harness's own reads would reconcile.
    let c = env.db().container("orphan").unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(c.supervisor_pid.unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = state(&env);
        if s.starts_with("stopped ") {
            assert!(s.contains("Exited (unknown)"), "{s}");
            break;
        }
        assert!(Instant::now() < deadline, "still listed: {s}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Written back, not only shown.
    let stored = env.db().container("orphan").unwrap();
    assert_eq!(stored.status, berth::metadata::ContainerStatus::Stopped);
    assert_eq!(ls_ok(&env, &["-q", "--filter", "status=running"]), "");
}

/// `berth-ls --check`: its exit code and stdout.
fn check(env: &Env, extra: &[&str]) -> (i32, String) {
    let mut args = vec!["--check"];
    args.extend_from_slice(extra);
    let out = ls(env, &args);
    (out.status.code().unwrap(), stdout(&out))
}

fn age(path: &Path) {
    let status = std::process::Command::new("touch")
        .args(["-d", "2 hours ago"])
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn check_finds_damage_and_repair_removes_orphans() {
    let env = Env::new();
    let root = env.root.path();
    let out = env.run("berth", &["--name", "c1", &env.image, "true"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(check(&env, &[]), (0, String::new()));
    let json = ls_ok(&env, &["--check", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["sound"], true);

    let image = env.db().image(&env.image).unwrap().unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&Store::open(root).unwrap().read(&image.digest).unwrap()).unwrap();
    let layer: Digest = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let layer_path = env.root.blob_path(&layer);
    let original = std::fs::read(&layer_path).unwrap();

    // A corrupted blob.
    let mut bad = original.clone();
    bad[0] ^= 0xff;
    std::fs::write(&layer_path, &bad).unwrap();
    let (code, text) = check(&env, &[]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains(&format!("damaged: blob {layer}: data hashes to")),
        "{text}"
    );
    // Damaged but referenced: --repair reports it and leaves it.
    let (code, text) = check(&env, &["--repair"]);
    assert_eq!(code, 1, "{text}");
    assert!(layer_path.exists());
    std::fs::write(&layer_path, &original).unwrap();
    assert_eq!(check(&env, &[]).0, 0);

    // A deleted blob: its record and the image that reaches it say so.
    std::fs::remove_file(&layer_path).unwrap();
    let (code, text) = check(&env, &[]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains(&format!("missing: content {layer}: blob file")),
        "{text}"
    );
    assert!(
        text.contains(&format!("missing: image {}: {layer}", env.image)),
        "{text}"
    );
    std::fs::write(&layer_path, &original).unwrap();
    assert_eq!(check(&env, &[]).0, 0);

    // A snapshot directory removed.
    let c = env.container("c1");
    let rec = env
        .db()
        .snapshot(&c.snapshotter, &c.snapshot_key)
        .unwrap()
        .unwrap();
    let dir = root
        .join("snapshots")
        .join(&c.snapshotter)
        .join(rec.id.to_string());
    let aside = root.join("aside");
    std::fs::rename(&dir, &aside).unwrap();
    let (code, text) = check(&env, &[]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains(&format!(
            "missing: snapshot {}/{}: directory",
            c.snapshotter, c.snapshot_key
        )),
        "{text}"
    );
    std::fs::rename(&aside, &dir).unwrap();
    assert_eq!(check(&env, &[]).0, 0);

    // Orphans: a snapshot dir, a container dir, a blob without a record.
    let orphan_snap = root.join("snapshots").join(&c.snapshotter).join("999999");
    std::fs::create_dir_all(orphan_snap.join("fs")).unwrap();
    let orphan_ctr: PathBuf = root.join("containers").join("f".repeat(64));
    std::fs::create_dir_all(orphan_ctr.join("rootfs")).unwrap();
    age(&orphan_ctr);
    let data = b"orphan blob";
    let orphan_blob = env.root.blob_path(&Digest::of(data));
    std::fs::write(&orphan_blob, data).unwrap();
    let (code, text) = check(&env, &[]);
    assert_eq!(code, 1, "{text}");
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(
        text.contains(&format!("orphan: snapshot dir {}", orphan_snap.display())),
        "{text}"
    );
    assert!(
        text.contains(&format!("orphan: container dir {}", orphan_ctr.display())),
        "{text}"
    );
    assert!(
        text.contains(&format!("orphan: blob {}", Digest::of(data))),
        "{text}"
    );
    // A fresh container dir may be a berth-run still creating it.
    let young = root.join("containers").join("e".repeat(64));
    std::fs::create_dir_all(&young).unwrap();
    assert_eq!(check(&env, &[]).1.lines().count(), 3);
    std::fs::remove_dir(&young).unwrap();

    let (code, text) = check(&env, &["--repair"]);
    assert_eq!(code, 0, "{text}");
    assert_eq!(
        text.lines().filter(|l| l.starts_with("removed ")).count(),
        3,
        "{text}"
    );
    for p in [&orphan_snap, &orphan_ctr, &orphan_blob] {
        assert!(!p.exists(), "{} left", p.display());
    }
    assert_eq!(check(&env, &[]), (0, String::new()));
    // Everything referenced survived the repair: the image still runs.
    let out = env.run("berth", &["--rm", &env.image, "true"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}
