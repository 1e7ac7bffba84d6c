//! Conformance of the built-in runtime against runc, through berth-run:
//! for each set of flags, the probe (tests/common/probe.rs) run with
//! `--runtime berth` must print exactly what it prints with
//! `--runtime runc`. Same image, same store, same spec builder; the only
//! difference is who sets the container up.

mod common;

use common::*;

fn diff(a: &str, b: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    let mut out = String::new();
    for i in 0..a.len().max(b.len()) {
        let (x, y) = (
            a.get(i).copied().unwrap_or(""),
            b.get(i).copied().unwrap_or(""),
        );
        if x != y {
            out.push_str(&format!("line {}:\n  berth: {x}\n  runc:  {y}\n", i + 1));
        }
    }
    out
}

#[test]
fn builtin_runtime_matches_runc() {
    let env = Env::new();
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("file"), "data\n").unwrap();
    let host2 = tempfile::tempdir().unwrap();
    let ro = format!("{}:/data:ro", host.path().display());
    let rw = format!("{}:/data2", host2.path().display());
    let cases: Vec<(&str, Vec<&str>)> = vec![
        ("defaults", vec![]),
        ("user by name", vec!["--user", "nobody"]),
        ("user by ids", vec!["--user", "1000:1000"]),
        (
            "capabilities",
            vec!["--cap-add", "SYS_ADMIN", "--cap-drop", "CHOWN"],
        ),
        ("no capabilities", vec!["--cap-drop", "ALL"]),
        ("privileged", vec!["--privileged"]),
        ("read-only root", vec!["--read-only"]),
        (
            "limits",
            vec!["--memory", "64m", "--pids-limit", "50", "--cpus", "0.5"],
        ),
        (
            "ulimits",
            vec!["--ulimit", "nofile=100:200", "--ulimit", "nproc=500"],
        ),
        ("host network", vec!["--network", "host"]),
        ("tmpfs", vec!["--tmpfs", "/run:size=1m"]),
        ("volumes", vec!["-v", &ro, "-v", &rw]),
        (
            "workdir and env",
            vec!["-w", "/tmp", "-e", "FOO=bar", "-e", "PATH=/bin"],
        ),
        ("interactive", vec!["-i"]),
    ];
    let mut failures = Vec::new();
    for (what, flags) in &cases {
        let mut outputs = Vec::new();
        for rt in ["berth", "runc"] {
            let mut args = vec!["--rm", "--hostname", "probe"];
            args.extend(flags.iter().copied());
            args.extend([env.image.as_str(), "sh", "-c", PROBE]);
            let out = env.run(rt, &args);
            assert!(
                out.status.success(),
                "{what} under {rt}: exit {:?}: {}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
            );
            outputs.push(normalise_probe(&String::from_utf8_lossy(&out.stdout)));
        }
        if outputs[0] != outputs[1] {
            failures.push(format!("{what}:\n{}", diff(&outputs[0], &outputs[1])));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
