//! Hashing and compression through native tools.
//!
//! Tests build in the dev profile, where sha2 and zlib-rs run unoptimised
//! (measured: sha256 of 64 MiB 3 s, gzip -1 of it 37 s). `sha256sum` and
//! `gzip` do the same work in well under a second or a few seconds, so big
//! buffers go through them; small ones stay in-process.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use berth::content::Digest;

/// Below this, hashing in-process is faster than starting `sha256sum`.
const IN_PROCESS_LIMIT: usize = 1 << 20;

/// Runs `cmd`, feeding it `input` on stdin, and returns its stdout.
/// Panics with its stderr if it fails.
pub fn pipe_through(cmd: &mut Command, input: &[u8]) -> Vec<u8> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
    let mut stdin = child.stdin.take().expect("piped stdin");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut out = Vec::new();
    std::thread::scope(|s| {
        s.spawn(move || {
            // A write error means the child died; its status tells why.
            let _ = stdin.write_all(input);
        });
        stdout
            .read_to_end(&mut out)
            .unwrap_or_else(|e| panic!("reading from {cmd:?}: {e}"));
    });
    let output = child.wait_with_output().expect("waiting for child");
    assert!(
        output.status.success(),
        "{cmd:?} failed with {}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    out
}

/// gzip without name or timestamp, so equal input gives equal output.
pub fn gzip(data: &[u8], level: u32) -> Vec<u8> {
    assert!((1..=9).contains(&level), "gzip level {level}");
    pipe_through(
        Command::new("gzip").arg("-n").arg(format!("-{level}")),
        data,
    )
}

pub fn gunzip(data: &[u8]) -> Vec<u8> {
    pipe_through(Command::new("gzip").arg("-dc"), data)
}

/// The sha256 of `data`.
pub fn sha256(data: &[u8]) -> Digest {
    if data.len() < IN_PROCESS_LIMIT {
        return Digest::of(data);
    }
    parse_sha256sum(&pipe_through(&mut Command::new("sha256sum"), data))
}

/// The sha256 of each file, in order.
pub fn sha256_files(paths: &[&Path]) -> Vec<Digest> {
    if paths.is_empty() {
        return Vec::new();
    }
    let output = Command::new("sha256sum")
        .arg("--")
        .args(paths)
        .output()
        .expect("running sha256sum");
    assert!(
        output.status.success(),
        "sha256sum failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).expect("sha256sum prints ASCII");
    let digests: Vec<Digest> = text
        .lines()
        .map(|line| parse_sha256sum(line.as_bytes()))
        .collect();
    assert_eq!(digests.len(), paths.len(), "sha256sum output: {text}");
    digests
}

fn parse_sha256sum(out: &[u8]) -> Digest {
    let text = String::from_utf8_lossy(out);
    let hex = text.split_whitespace().next().unwrap_or("");
    format!("sha256:{hex}")
        .parse()
        .unwrap_or_else(|e| panic!("sha256sum printed {text:?}: {e}"))
}
