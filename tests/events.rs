//! `berth-events` end to end: real pulls, snapshots and containers (OOM
//! kills included) on a throwaway store, read back through the binary, in
//! one go and following. Followers are killed by a drop guard, so a failing
//! test leaves no process behind; [`Env`] cleans up containers.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Output, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use berth::metadata::ContainerStatus;
use common::*;
use serde_json::Value;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `berth-events ARGS --format json`, parsed, one value per line.
fn events(env: &Env, args: &[&str]) -> Vec<Value> {
    let mut full = args.to_vec();
    full.extend_from_slice(&["--format", "json"]);
    let out = env.cmd("berth-events", &full).output().unwrap();
    assert!(
        out.status.success(),
        "berth-events {full:?}: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

fn actions(evs: &[Value]) -> Vec<String> {
    evs.iter()
        .map(|e| e["Action"].as_str().unwrap().to_string())
        .collect()
}

fn ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: {:?}\n{}\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// A running `berth-events -f`, its stdout read line by line on a thread;
/// killed and reaped on drop.
struct Follower {
    child: Child,
    lines: Receiver<String>,
}

impl Follower {
    fn start(env: &Env, args: &[&str]) -> Follower {
        let mut full = vec!["-f"];
        full.extend_from_slice(args);
        let mut child = env
            .cmd("berth-events", &full)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Follower { child, lines }
    }

    /// Lines until one satisfies `done`, or panics after `timeout`.
    fn until(&self, timeout: Duration, done: impl Fn(&str) -> bool) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    let stop = done(&l);
                    seen.push(l);
                    if stop {
                        return seen;
                    }
                }
                Err(_) => panic!("no matching event within {timeout:?}; saw {seen:#?}"),
            }
        }
    }

    /// Signals the follower and returns its exit code.
    fn stop(&mut self, sig: nix::sys::signal::Signal) -> Option<i32> {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, sig).unwrap();
        wait_exit(&mut self.child)
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_exit(child: &mut Child) -> Option<i32> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        assert!(Instant::now() < deadline, "berth-events did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Makes the follower prove it is reading: tags the image under fresh
/// names until one of those tag events comes through.
fn sync(env: &Env, f: &Follower) {
    for i in 0.. {
        let target = format!("127.0.0.1:1/sync/marker:{i}");
        ok(
            &env.cmd("berth-tag", &[&env.image, &target])
                .output()
                .unwrap(),
            "berth-tag",
        );
        let deadline = Instant::now() + Duration::from_secs(2);
        while let Ok(l) = f
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            if l.contains("sync/marker") {
                return;
            }
        }
        assert!(i < 15, "the follower never showed a tag event");
    }
}

#[test]
fn oom_kill_yields_oom_and_die_events() {
    let env = Env::new();
    for rt in ["berth", "runc"] {
        let name = format!("oom-{rt}");
        let out = env.run(
            rt,
            &[
                "--name",
                &name,
                "--memory",
                "16m",
                &env.image,
                "tail",
                "/dev/zero",
            ],
        );
        assert_eq!(out.status.code(), Some(137), "{rt}");
        let c = env.container(&name);
        assert!(c.oom_killed, "{rt}: OOM not recorded: {c:?}");
        assert_eq!(c.exit_code, Some(137));
        let id = c.id;
        let evs = events(&env, &["--filter", &format!("container={name}")]);
        assert_eq!(
            actions(&evs),
            ["create", "start", "oom", "die"],
            "{rt}: {evs:#?}"
        );
        for e in &evs {
            assert_eq!(e["Type"], "container");
            assert_eq!(e["ID"], id.as_str());
            assert_eq!(e["Attributes"]["name"], name.as_str());
            assert_eq!(e["Attributes"]["image"], env.image.as_str());
        }
        let die = &evs[3]["Attributes"];
        assert_eq!(die["exitCode"], "137", "{rt}");
        assert_eq!(die["oomKilled"], "true", "{rt}");
        assert_eq!(die["signal"], "SIGKILL", "{rt}");
        // The same, through the action filter.
        let ooms = events(
            &env,
            &[
                "--filter",
                "event=oom",
                "--filter",
                &format!("container={id}"),
            ],
        );
        assert_eq!(ooms.len(), 1, "{rt}: {ooms:#?}");
    }
}

#[test]
fn oom_kill_of_a_child_is_an_event_while_the_container_runs() {
    let env = Env::new();
    for rt in ["berth", "runc"] {
        let name = format!("child-oom-{rt}");
        let out = env.run(
            rt,
            &[
                "-d",
                "--name",
                &name,
                "--memory",
                "16m",
                &env.image,
                "sh",
                "-c",
                "tail /dev/zero; sleep 1000",
            ],
        );
        ok(&out, "berth-run -d");
        let filter = format!("container={name}");
        let deadline = Instant::now() + Duration::from_secs(30);
        let oom = loop {
            let evs = events(&env, &["--filter", &filter, "--filter", "event=oom"]);
            if let Some(e) = evs.into_iter().next() {
                break e;
            }
            assert!(Instant::now() < deadline, "{rt}: no oom event");
            std::thread::sleep(Duration::from_millis(100));
        };
        assert_eq!(oom["Attributes"]["oomKills"], "1", "{rt}");
        // Seen while it runs: the shell lives on after its child was killed.
        let c = env.container(&name);
        assert_eq!(c.status, ContainerStatus::Running, "{rt}");
        ok(
            &env.cmd("berth-rm", &["-f", &name]).output().unwrap(),
            "berth-rm -f",
        );
        let evs = events(&env, &["--filter", &filter]);
        assert_eq!(
            actions(&evs),
            ["create", "start", "oom", "kill", "die", "remove"],
            "{rt}: {evs:#?}"
        );
        // The one kill was recorded live; the exit did not record it again.
        assert_eq!(evs[3]["Attributes"]["signal"], "SIGKILL");
        assert_eq!(evs[4]["Attributes"]["exitCode"], "137");
        assert_eq!(evs[4]["Attributes"]["oomKilled"], "true");
        env.assert_released(&c.id);
    }
}

#[test]
fn follow_shows_a_container_run_after_it_started() {
    let env = Env::new();
    let mut f = Follower::start(&env, &["--format", "json"]);
    sync(&env, &f);
    let out = env.run(
        "runc",
        &["--name", "followed", &env.image, "sh", "-c", "exit 3"],
    );
    assert_eq!(out.status.code(), Some(3));
    let lines = f.until(Duration::from_secs(20), |l| {
        l.contains("\"die\"") && l.contains("followed")
    });
    let evs: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|e: &Value| e["Attributes"]["name"] == "followed")
        .collect();
    assert_eq!(actions(&evs), ["create", "start", "die"], "{lines:#?}");
    assert_eq!(evs[2]["Attributes"]["exitCode"], "3");
    // Ids only grow, and follow printed none twice.
    let seqs: Vec<i64> = lines
        .iter()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["Seq"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert_eq!(f.stop(nix::sys::signal::Signal::SIGTERM), Some(0));

    // SIGINT ends it cleanly too; the human format is one line per event.
    let mut f = Follower::start(&env, &[]);
    sync(&env, &f);
    ok(
        &env.cmd("berth-tag", &[&env.image, "127.0.0.1:1/x/human:1"])
            .output()
            .unwrap(),
        "berth-tag",
    );
    let line = f.until(Duration::from_secs(10), |l| l.contains("x/human"));
    let line = line.last().unwrap();
    assert!(
        line.contains(" image tag 127.0.0.1:1/x/human:1 (digest=sha256:"),
        "{line}"
    );
    assert!(line.ends_with(&format!("source={})", env.image)), "{line}");
    assert_eq!(f.stop(nix::sys::signal::Signal::SIGINT), Some(0));
}

#[test]
fn follow_ends_quietly_when_its_reader_goes() {
    let env = Env::new();
    let mut child = env
        .cmd("berth-events", &["-f", "--since", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let guard = KillOnDrop(child.id() as i32);
    let stdout: ChildStdout = child.stdout.take().unwrap();
    let mut reader = BufReader::new(stdout);
    let mut first = String::new();
    reader.read_line(&mut first).unwrap();
    // The oldest event: the first layer the pull committed.
    assert!(first.contains(" snapshot commit sha256:"), "{first}");
    drop(reader);
    // The next events find the pipe closed.
    for i in 0..3 {
        let target = format!("127.0.0.1:1/gone/reader:{i}");
        ok(
            &env.cmd("berth-tag", &[&env.image, &target])
                .output()
                .unwrap(),
            "berth-tag",
        );
    }
    assert_eq!(wait_exit(&mut child), Some(0));
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.is_empty(), "{err}");
    drop(guard);
}

struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

#[test]
fn image_and_snapshot_events() {
    let env = Env::new();
    // The pull in Env::new: the image, and a commit per layer.
    let pulls = events(&env, &["--filter", "type=image"]);
    assert_eq!(actions(&pulls), ["pull"]);
    assert_eq!(pulls[0]["ID"], env.image.as_str());
    let digest = pulls[0]["Attributes"]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(digest.starts_with("sha256:"), "{digest}");
    let commits = events(&env, &["--filter", "type=snapshot"]);
    assert!(!commits.is_empty());
    assert!(actions(&commits).iter().all(|a| a == "commit"));
    let top = commits.last().unwrap()["ID"].as_str().unwrap().to_string();

    // Snapshots by hand.
    for args in [
        vec!["prepare", "work", top.as_str()],
        vec!["commit", "mine", "work"],
        vec!["rm", "mine"],
    ] {
        ok(
            &env.cmd("berth-snapshot", &args).output().unwrap(),
            "berth-snapshot",
        );
    }
    let snaps = events(&env, &["--filter", "type=snapshot", "--since", "0"]);
    let tail: Vec<(String, String)> = snaps
        .iter()
        .rev()
        .take(2)
        .rev()
        .map(|e| {
            (
                e["Action"].as_str().unwrap().into(),
                e["ID"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        tail,
        [
            ("commit".into(), "mine".into()),
            ("remove".into(), "mine".into())
        ]
    );
    assert_eq!(snaps[snaps.len() - 2]["Attributes"]["key"], "work");
    assert_eq!(snaps[snaps.len() - 2]["Attributes"]["parent"], top.as_str());

    // Tag, then remove both names: the second removal frees the layers.
    ok(
        &env.cmd("berth-tag", &[&env.image, "127.0.0.1:1/other/name:2"])
            .output()
            .unwrap(),
        "berth-tag",
    );
    for name in ["127.0.0.1:1/other/name:2", env.image.as_str()] {
        ok(
            &env.cmd("berth-rm", &["image", name]).output().unwrap(),
            "berth-rm image",
        );
    }
    let imgs = events(&env, &["--filter", "type=image"]);
    assert_eq!(actions(&imgs), ["pull", "tag", "remove", "remove"]);
    assert_eq!(imgs[2]["ID"], "127.0.0.1:1/other/name:2");
    assert_eq!(imgs[3]["ID"], env.image.as_str());
    assert_eq!(imgs[3]["Attributes"]["digest"], digest.as_str());
    // `image=` matches by name or digest.
    assert_eq!(
        actions(&events(&env, &["--filter", &format!("image={digest}")])),
        ["pull", "tag", "remove", "remove"]
    );
    assert_eq!(
        actions(&events(
            &env,
            &["--filter", &format!("image={}", env.image)]
        )),
        ["pull", "remove"]
    );
    let removed = events(
        &env,
        &["--filter", "event=remove", "--filter", "type=snapshot"],
    );
    assert!(
        removed.iter().any(|e| e["ID"] == top.as_str()),
        "the image's top layer was collected: {removed:#?}"
    );
    let blobs = events(&env, &["--filter", "type=content"]);
    assert!(!blobs.is_empty());
    assert!(actions(&blobs).iter().all(|a| a == "remove"));
    // Nothing left in the store, the event log aside: the check agrees.
    ok(
        &env.cmd("berth-ls", &["--check"]).output().unwrap(),
        "berth-ls --check",
    );
}

#[test]
fn since_until_and_filters_select() {
    let env = Env::new();
    for i in 0..3 {
        ok(
            &env.cmd("berth-tag", &[&env.image, &format!("127.0.0.1:1/t/n:{i}")])
                .output()
                .unwrap(),
            "berth-tag",
        );
    }
    let all = events(&env, &[]);
    let tags: Vec<&Value> = all.iter().filter(|e| e["Action"] == "tag").collect();
    assert_eq!(tags.len(), 3);
    let nano = |e: &Value| e["TimeNano"].as_i64().unwrap();
    let mid = nano(tags[1]);
    let unix = |ns: i64| format!("{}.{:09}", ns / 1_000_000_000, ns % 1_000_000_000);
    let subjects = |evs: Vec<Value>| -> Vec<String> {
        evs.into_iter()
            .filter(|e| e["Action"] == "tag")
            .map(|e| e["ID"].as_str().unwrap().to_string())
            .collect()
    };
    let n = |i: u32| format!("127.0.0.1:1/t/n:{i}");
    // Unix seconds with nanoseconds, both bounds inclusive.
    assert_eq!(
        subjects(events(&env, &["--since", &unix(mid)])),
        [n(1), n(2)]
    );
    assert_eq!(
        subjects(events(&env, &["--until", &unix(mid)])),
        [n(0), n(1)]
    );
    assert_eq!(
        subjects(events(
            &env,
            &["--since", &unix(mid), "--until", &unix(mid)]
        )),
        [n(1)]
    );
    // RFC 3339, as the events print their own times.
    let rfc = tags[1]["Time"].as_str().unwrap();
    assert_eq!(subjects(events(&env, &["--since", rfc])), [n(1), n(2)]);
    // Durations before now.
    assert_eq!(events(&env, &["--since", "1h"]).len(), all.len());
    assert!(events(&env, &["--until", "1h"]).is_empty());
    assert!(events(&env, &["--since", "2099-01-01"]).is_empty());
    // Keys AND, values of one key OR.
    let both = events(
        &env,
        &[
            "--filter",
            "event=tag",
            "--filter",
            "event=pull",
            "--filter",
            "type=image",
        ],
    );
    assert_eq!(actions(&both), ["pull", "tag", "tag", "tag"]);
    assert!(events(
        &env,
        &["--filter", "event=tag", "--filter", "type=snapshot"]
    )
    .is_empty());
    // A template over the JSON keys.
    let out = env
        .cmd(
            "berth-events",
            &[
                "--filter",
                "event=tag",
                "--format",
                "{{.Action}} {{.ID}} {{.Attributes.source}}",
            ],
        )
        .output()
        .unwrap();
    ok(&out, "template");
    assert_eq!(
        text(&out.stdout).lines().next().unwrap(),
        format!("tag {} {}", n(0), env.image)
    );
    // Bad times and filters are usage errors (exit 2), said plainly.
    for args in [
        vec!["--since", "yesterday"],
        vec!["--until", "2026-13-01"],
        vec!["--filter", "type=volume"],
        vec!["--filter", "colour=red"],
        vec!["--format", "{{.Nope}}"],
    ] {
        let out = env.cmd("berth-events", &args).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains("berth-events: error:"),
            "{args:?}"
        );
    }
}

#[test]
fn import_and_push_events() {
    let env = Env::new();
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("image.tar");
    let archive = archive.to_str().unwrap();
    ok(
        &env.cmd("berth-export", &[&env.image, "-o", archive])
            .output()
            .unwrap(),
        "berth-export",
    );
    ok(
        &env.cmd(
            "berth-import",
            &["--name", "127.0.0.1:1/imported/img:1", archive],
        )
        .output()
        .unwrap(),
        "berth-import",
    );
    let (repo, _) = env.image.rsplit_once(':').unwrap();
    let dest = format!("{repo}:pushed");
    ok(
        &env.cmd("berth-push", &[&env.image, &dest])
            .output()
            .unwrap(),
        "berth-push",
    );
    let imgs = events(&env, &["--filter", "type=image"]);
    assert_eq!(actions(&imgs), ["pull", "import", "push"], "{imgs:#?}");
    let digest = &imgs[0]["Attributes"]["digest"];
    assert_eq!(imgs[1]["ID"], "127.0.0.1:1/imported/img:1");
    assert_eq!(&imgs[1]["Attributes"]["digest"], digest);
    assert_eq!(imgs[2]["ID"], env.image.as_str());
    assert_eq!(imgs[2]["Attributes"]["destination"], dest.as_str());
    assert_eq!(&imgs[2]["Attributes"]["digest"], digest);
}

#[test]
fn prune_applies_the_configured_retention() {
    let env = Env::new();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "[events]\nmax_events = 2\nmax_age_days = 0\n").unwrap();
    for i in 0..3 {
        let target = format!("127.0.0.1:1/p/n:{i}");
        ok(
            &env.cmd("berth-tag", &[&env.image, &target])
                .output()
                .unwrap(),
            "berth-tag",
        );
    }
    assert!(events(&env, &[]).len() > 2);
    // A dry run prunes nothing.
    let dry = env
        .cmd("berth-rm", &["--prune", "--dry-run"])
        .env("BERTH_CONFIG", &config)
        .output()
        .unwrap();
    ok(&dry, "berth-rm --prune --dry-run");
    assert!(events(&env, &[]).len() > 2);
    let out = env
        .cmd("berth-rm", &["--prune"])
        .env("BERTH_CONFIG", &config)
        .output()
        .unwrap();
    ok(&out, "berth-rm --prune");
    let left = events(&env, &[]);
    let ids: Vec<&str> = left.iter().map(|e| e["ID"].as_str().unwrap()).collect();
    assert_eq!(ids, ["127.0.0.1:1/p/n:1", "127.0.0.1:1/p/n:2"]);
    // Through the dispatcher, the same binary.
    let out = std::process::Command::new(bin("berth"))
        .args(["events", "--root"])
        .arg(env.root.path())
        .args(["--filter", "event=tag", "--format", "{{.ID}}"])
        .env("BERTH_CONFIG", "/dev/null")
        .output()
        .unwrap();
    ok(&out, "berth events");
    assert_eq!(text(&out.stdout), "127.0.0.1:1/p/n:1\n127.0.0.1:1/p/n:2\n");
}
