//! `berth-run`, `berth-kill` and `berth-logs` end to end: a real registry,
//! a busybox image pulled into a throwaway store, containers run with the
//! built-in runtime and with runc. Each test checks what a user sees (exit
//! codes, output, files) and that nothing is left behind: no container
//! process, cgroup or mount.

mod common;

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use berth::metadata::ContainerStatus;
use common::*;

const RUNTIMES: &[&str] = &["berth", "runc"];

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn exit_codes() {
    let env = Env::new();
    let img = env.image.as_str();
    for rt in RUNTIMES {
        let cases: &[(&[&str], i32)] = &[
            (&["--rm", img, "true"], 0),
            (&["--rm", img, "sh", "-c", "exit 3"], 3),
            (&["--rm", img, "no-such-command"], 127),
            (&["--rm", img, "/etc/passwd"], 126),
            (&["--rm", "--memory", "lots", img, "true"], 125),
            (&["--rm", "--cpus", "0", img, "true"], 125),
            (&["--rm", "--user", "nosuchuser", img, "true"], 125),
            (&["--rm", "-v", "relative:/x", img, "true"], 125),
            (&["--rm", "127.0.0.1:1/no/such:image", "true"], 125),
        ];
        for (args, want) in cases {
            let out = env.run(rt, args);
            assert_eq!(
                out.status.code(),
                Some(*want),
                "{rt} {args:?}: {}",
                stderr(&out)
            );
            if *want >= 125 {
                assert!(
                    stderr(&out).contains("berth-run: error:"),
                    "{rt} {args:?}: no clear message: {}",
                    stderr(&out)
                );
            }
        }
        // The default command comes from the image.
        let out = env.run(rt, &["--rm", img]);
        assert_eq!(stdout(&out), "default-cmd\n");
    }
    // Nothing of any of those is left: no record, snapshot, directory.
    assert!(env.containers().is_empty(), "{:?}", env.containers());
    let snaps = env.db().snapshots("overlayfs").unwrap();
    assert!(
        snaps.iter().all(|s| !s.key.starts_with("container-")),
        "{snaps:?}"
    );
    let dirs = std::fs::read_dir(env.root.path().join("containers"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(dirs, 0, "container directories left");
}

#[test]
fn a_stopped_container_keeps_its_record_and_rm_removes_it() {
    let env = Env::new();
    for rt in RUNTIMES {
        let name = format!("keep-{rt}");
        let out = env.run(
            rt,
            &[
                "--name",
                &name,
                &env.image,
                "sh",
                "-c",
                "echo hi > /file; exit 4",
            ],
        );
        assert_eq!(out.status.code(), Some(4));
        let c = env.container(&name);
        assert_eq!(c.status, ContainerStatus::Stopped);
        assert_eq!(c.exit_code, Some(4));
        assert!(!c.oom_killed);
        assert_eq!(c.runtime, *rt);
        env.assert_released(&c.id);
        // Its writable snapshot survives with the change.
        let snap = env.db().snapshot("overlayfs", &c.snapshot_key).unwrap();
        assert!(snap.is_some(), "snapshot of a kept container is gone");
        // A second container cannot take the name.
        let out = env.run(rt, &["--name", &name, &env.image, "true"]);
        assert_eq!(out.status.code(), Some(125));
        assert!(stderr(&out).contains(&name), "{}", stderr(&out));
    }
}

#[test]
fn sigterm_to_berth_run_reaches_the_container() {
    let env = Env::new();
    for rt in RUNTIMES {
        let mut child = env
            .cmd(
                "berth-run",
                &[
                    "--runtime",
                    rt,
                    "--rm",
                    &env.image,
                    "sh",
                    "-c",
                    "trap 'echo got-term; exit 7' TERM; echo ready; while true; do sleep 0.1; done",
                ],
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = child.stdout.take().unwrap();
        let mut seen = String::new();
        read_until(&mut out, &mut seen, "ready\n", Duration::from_secs(20));
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let status = wait_timeout(&mut child, Duration::from_secs(20));
        out.read_to_string(&mut seen).unwrap();
        assert_eq!(seen, "ready\ngot-term\n", "{rt}");
        assert_eq!(status.code(), Some(7), "{rt}");
    }
}

#[test]
fn killed_by_a_signal_exits_128_plus_n() {
    let env = Env::new();
    for rt in RUNTIMES {
        let name = format!("victim-{rt}");
        let mut child = env
            .cmd(
                "berth-run",
                &[
                    "--runtime",
                    rt,
                    "--rm",
                    "--name",
                    &name,
                    &env.image,
                    "sleep",
                    "1000",
                ],
            )
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while env
            .db()
            .container(&name)
            .map_or(true, |c| c.status != ContainerStatus::Running)
        {
            assert!(Instant::now() < deadline, "{rt}: container never ran");
            std::thread::sleep(Duration::from_millis(20));
        }
        let kill = env.cmd("berth-kill", &[&name]).output().unwrap();
        assert!(kill.status.success(), "{}", stderr(&kill));
        let status = wait_timeout(&mut child, Duration::from_secs(20));
        assert_eq!(status.code(), Some(137), "{rt}");
    }
}

fn read_until(r: &mut impl Read, seen: &mut String, want: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 4096];
    while !seen.contains(want) {
        assert!(
            Instant::now() < deadline,
            "waited for {want:?}; got {seen:?}"
        );
        let n = r.read(&mut buf).unwrap();
        assert!(n > 0, "EOF while waiting for {want:?}; got {seen:?}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("process did not exit in {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads from a pty master until `want` shows up.
fn pty_read_until(master: &OwnedFd, seen: &mut String, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 4096];
    while !seen.contains(want) {
        assert!(
            Instant::now() < deadline,
            "waited for {want:?}; got {seen:?}"
        );
        let mut fds = [nix::poll::PollFd::new(
            std::os::fd::AsFd::as_fd(master),
            nix::poll::PollFlags::POLLIN,
        )];
        let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(200u16));
        match nix::unistd::read(master, &mut buf) {
            Ok(0) => panic!("pty closed while waiting for {want:?}; got {seen:?}"),
            Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(nix::errno::Errno::EAGAIN) => {}
            Err(e) => panic!("reading pty: {e}; got {seen:?}"),
        }
    }
}

#[test]
fn interactive_terminal() {
    let env = Env::new();
    for rt in RUNTIMES {
        let pty = nix::pty::openpty(None, None).unwrap();
        let slave = std::fs::File::from(pty.slave);
        nix::fcntl::fcntl(
            &pty.master,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .unwrap();
        let mut cmd = env.cmd(
            "berth-run",
            &["--runtime", rt, "-it", "--rm", &env.image, "sh"],
        );
        cmd.stdin(slave.try_clone().unwrap())
            .stdout(slave.try_clone().unwrap())
            .stderr(slave);
        // SAFETY: setsid and TIOCSCTTY are async-signal-safe.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                libc::setsid();
                libc::ioctl(0, libc::TIOCSCTTY, 0);
                Ok(())
            });
        }
        let mut child = cmd.spawn().unwrap();
        let mut seen = String::new();
        pty_read_until(&pty.master, &mut seen, "# ");
        let mut m = std::fs::File::from(pty.master.try_clone().unwrap());
        m.write_all(b"tty; echo sum-$((40+2))\n").unwrap();
        pty_read_until(&pty.master, &mut seen, "sum-42");
        assert!(
            seen.contains("/dev/pts/0"),
            "{rt}: not on a terminal: {seen:?}"
        );
        m.write_all(b"exit 5\n").unwrap();
        let status = wait_timeout(&mut child, Duration::from_secs(20));
        assert_eq!(status.code(), Some(5), "{rt}: {seen:?}");
    }
}

#[test]
fn detached_logs_kill_and_recorded_exit() {
    let env = Env::new();
    for rt in RUNTIMES {
        let name = format!("svc-{rt}");
        let out = env.run(
            rt,
            &[
                "-d",
                "--name",
                &name,
                &env.image,
                "sh",
                "-c",
                "echo to-out; echo to-err >&2; while true; do sleep 0.1; done",
            ],
        );
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let id = stdout(&out).trim().to_string();
        assert_eq!(id.len(), 64, "{id}");
        let c = env.container(&name);
        assert_eq!(c.id, id);
        assert_eq!(c.status, ContainerStatus::Running);

        // Logs: each stream to its own.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let logs = env.cmd("berth-logs", &[&name]).output().unwrap();
            assert!(logs.status.success(), "{}", stderr(&logs));
            if stdout(&logs) == "to-out\n" && stderr(&logs) == "to-err\n" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "logs: {:?} / {:?}",
                stdout(&logs),
                stderr(&logs)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // -f follows until the container stops.
        let mut follow = env
            .cmd("berth-logs", &["-f", "--timestamps", &name[..]])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();

        let kill = env
            .cmd("berth-kill", &["-s", "TERM", &name])
            .output()
            .unwrap();
        // pid 1 ignores TERM without a handler: the container is still up.
        assert!(kill.status.success(), "{}", stderr(&kill));
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(env.container(&name).status, ContainerStatus::Running);
        let kill = env.cmd("berth-kill", &[&name]).output().unwrap();
        assert!(kill.status.success(), "{}", stderr(&kill));
        assert_eq!(stdout(&kill).trim(), name);
        let c = env.wait_stopped(&name);
        assert_eq!(c.exit_code, Some(137));
        assert!(c.finished_ns.is_some());
        let status = wait_timeout(&mut follow, Duration::from_secs(20));
        assert!(status.success());
        let mut followed = String::new();
        follow
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut followed)
            .unwrap();
        assert!(
            followed.ends_with(" to-out\n") && followed.starts_with("20"),
            "{followed:?}"
        );
        // The supervisor is gone too, and released everything.
        let sup = c.supervisor_pid.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while berth::metadata::process_start_time(sup) == c.supervisor_start {
            assert!(Instant::now() < deadline, "supervisor {sup} still alive");
            std::thread::sleep(Duration::from_millis(50));
        }
        env.assert_released(&c.id);
        // Killing a stopped container is an error.
        let again = env.cmd("berth-kill", &[&name]).output().unwrap();
        assert!(!again.status.success());
        assert!(stderr(&again).contains("not running"), "{}", stderr(&again));
        // A detached container that cannot start says why, with
        // berth-run's exit code, and leaves nothing.
        let before = env.containers().len();
        let out = env.run(rt, &["-d", &env.image, "no-such-command"]);
        assert_eq!(out.status.code(), Some(127), "{}", stderr(&out));
        assert!(stderr(&out).contains("no-such-command"), "{}", stderr(&out));
        assert_eq!(env.containers().len(), before);
    }
}

#[test]
fn a_dead_supervisor_shows_as_stopped() {
    let env = Env::new();
    let out = env.run(
        "berth",
        &["-d", "--name", "orphan", &env.image, "sleep", "1000"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let c = env.container("orphan");
    let (pid, sup) = (c.pid.unwrap(), c.supervisor_pid.unwrap());
    for p in [sup, pid] {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(p),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
    }
    let c = env.wait_stopped("orphan");
    assert_eq!(c.exit_code, None);

    // With only its supervisor killed, the container is ended when found,
    // not left running unseen behind a "stopped" record.
    let out = env.run(
        "berth",
        &["-d", "--name", "orphan2", &env.image, "sleep", "1000"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let c = env.container("orphan2");
    let (pid, start) = (c.pid.unwrap(), c.pid_start);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(c.supervisor_pid.unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    env.wait_stopped("orphan2");
    let deadline = Instant::now() + Duration::from_secs(10);
    while berth::metadata::process_start_time(pid) == start {
        assert!(Instant::now() < deadline, "container init {pid} still runs");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn rm_removes_container_and_snapshot() {
    let env = Env::new();
    for rt in RUNTIMES {
        let out = env.run(rt, &["--rm", "--name", "gone", &env.image, "touch", "/x"]);
        assert_eq!(out.status.code(), Some(0));
        assert!(env.containers().is_empty());
        let snaps = env.db().snapshots("overlayfs").unwrap();
        assert!(
            snaps.iter().all(|s| !s.key.starts_with("container-")),
            "{snaps:?}"
        );
        // Detached with --rm: removed by the supervisor.
        let out = env.run(rt, &["-d", "--rm", "--name", "gone-d", &env.image, "true"]);
        assert_eq!(out.status.code(), Some(0));
        let deadline = Instant::now() + Duration::from_secs(20);
        while !env.containers().is_empty() {
            assert!(Instant::now() < deadline, "{:?}", env.containers());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn volumes_and_read_only_root() {
    let env = Env::new();
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("in.txt"), "from-host").unwrap();
    let vol = format!("{}:/data", host.path().display());
    let vol_ro = format!("{}:/data:ro", host.path().display());
    for rt in RUNTIMES {
        let out = env.run(
            rt,
            &[
                "--rm",
                "-v",
                &vol,
                &env.image,
                "sh",
                "-c",
                &format!("cat /data/in.txt; echo {rt} > /data/out.txt"),
            ],
        );
        assert_eq!(out.status.code(), Some(0));
        assert_eq!(stdout(&out), "from-host");
        assert_eq!(
            std::fs::read_to_string(host.path().join("out.txt")).unwrap(),
            format!("{rt}\n")
        );
        let out = env.run(
            rt,
            &["--rm", "-v", &vol_ro, &env.image, "touch", "/data/nope"],
        );
        assert_ne!(out.status.code(), Some(0));
        assert!(!host.path().join("nope").exists());
        let out = env.run(
            rt,
            &[
                "--rm",
                "--read-only",
                &env.image,
                "sh",
                "-c",
                "touch /x || echo refused; touch /tmp/y || echo tmp-refused",
            ],
        );
        assert!(stdout(&out).starts_with("refused"), "{}", stdout(&out));
    }
}

#[test]
fn isolation() {
    let env = Env::new();
    let script = "\
        echo procs=$(ls /proc | grep -c '^[0-9]'); \
        echo 1 > /proc/sys/kernel/ns_last_pid 2>/dev/null && echo proc-sys-writable; \
        touch /sys/kernel/x 2>/dev/null && echo sys-writable; \
        mknod /tmp/mem c 1 1 && (head -c 1 /tmp/mem >/dev/null 2>&1 && echo mem-readable || echo mem-denied); \
        cut -d' ' -f2 /proc/self/mounts | tr '\\n' ' '";
    for rt in RUNTIMES {
        let out = env.run(rt, &["--rm", &env.image, "sh", "-c", script]);
        let text = stdout(&out);
        let lines: Vec<&str> = text.lines().collect();
        // The shell, the subshell, ls and grep: no host process.
        let procs: usize = lines[0].trim_start_matches("procs=").parse().unwrap();
        assert!(procs <= 4, "{rt}: {text}");
        assert!(!text.contains("writable"), "{rt}: {text}");
        assert!(text.contains("mem-denied"), "{rt}: {text}");
        // Only the container's own mounts: none of the host's.
        let allowed = [
            "/proc",
            "/dev",
            "/sys",
            "/etc/hosts",
            "/etc/hostname",
            "/etc/resolv.conf",
        ];
        for m in lines.last().unwrap().split_whitespace() {
            assert!(
                m == "/"
                    || allowed
                        .iter()
                        .any(|a| m == *a || m.starts_with(&format!("{a}/"))),
                "{rt}: host mount {m} visible in the container"
            );
        }
        // Without CAP_MKNOD, mknod itself fails.
        let out = env.run(
            rt,
            &[
                "--rm",
                "--cap-drop",
                "MKNOD",
                &env.image,
                "sh",
                "-c",
                "mknod /tmp/n c 1 3 || echo no-mknod",
            ],
        );
        assert!(stdout(&out).contains("no-mknod"), "{rt}");
    }
}

#[test]
fn crun_on_this_host_is_reported_not_hidden() {
    let env = Env::new();
    if Path::new("/sys/fs/cgroup/unified").exists() && Path::new("/sys/fs/cgroup/memory").exists() {
        let out = env.run("crun", &["--rm", &env.image, "true"]);
        assert_eq!(out.status.code(), Some(125));
        assert!(stderr(&out).contains("crun"), "{}", stderr(&out));
        assert!(env.containers().is_empty());
    }
}
