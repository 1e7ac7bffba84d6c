//! Loopback ports and child-process environments.

use std::net::TcpListener;
use std::process::Command;

/// A port on 127.0.0.1 that was free a moment ago.
///
/// It is found by binding port 0 and releasing it, so another process may
/// take it before we do: callers that hand it to a child process must retry
/// with a new port when the child says "address already in use".
/// In-process servers should keep their own `TcpListener` instead.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding 127.0.0.1:0")
}

const PROXY_VARS: &[&str] = &[
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
];

/// Removes proxy settings from a child's environment, so that its traffic to
/// 127.0.0.1 goes straight there.
pub fn no_proxy(cmd: &mut Command) -> &mut Command {
    for var in PROXY_VARS {
        cmd.env_remove(var);
    }
    cmd
}
