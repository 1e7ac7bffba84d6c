//! The console-socket protocol OCI runtimes share: the runtime creates the
//! container's pseudo-terminal and sends the master end, as one
//! `SCM_RIGHTS` file descriptor, over a unix stream socket the caller
//! listens on.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

use super::{Error, Result};

/// Listens on `path` for the runtime's connection.
pub fn listen(path: &Path) -> Result<UnixListener> {
    UnixListener::bind(path).map_err(|source| Error::Io {
        action: "listening on console socket",
        path: path.to_path_buf(),
        source,
    })
}

/// Accepts one connection and returns the terminal master it carries.
pub fn receive_master(listener: &UnixListener) -> Result<OwnedFd> {
    let os = |action, e: std::io::Error| Error::Os { action, source: e };
    let (stream, _) = listener
        .accept()
        .map_err(|e| os("accepting console socket connection", e))?;
    let mut buf = [0u8; 4096];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut cmsg = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(|e| os("receiving terminal from runtime", e.into()))?;
    let mut fds = Vec::new();
    for c in msg
        .cmsgs()
        .map_err(|e| os("receiving terminal from runtime", e.into()))?
    {
        if let ControlMessageOwned::ScmRights(r) = c {
            fds.extend(r);
        }
    }
    let mut owned: Vec<OwnedFd> = fds
        .into_iter()
        // SAFETY: SCM_RIGHTS installed these descriptors in our table just
        // now; nothing else owns them.
        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .collect();
    match owned.len() {
        1 => Ok(owned.remove(0)),
        n => Err(Error::Os {
            action: "receiving terminal from runtime",
            source: std::io::Error::other(format!("expected one descriptor, got {n}")),
        }),
    }
}

/// Connects to `path` and sends `master` (the runtime side).
pub fn send_master(path: &Path, master: BorrowedFd<'_>) -> Result<()> {
    let stream = UnixStream::connect(path).map_err(|source| Error::Io {
        action: "connecting to console socket",
        path: path.to_path_buf(),
        source,
    })?;
    let fds = [master.as_raw_fd()];
    let name = b"/dev/ptmx";
    sendmsg::<()>(
        stream.as_raw_fd(),
        &[IoSlice::new(name)],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map_err(|e| Error::Os {
        action: "sending terminal to console socket",
        source: e.into(),
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;

    #[test]
    fn a_descriptor_crosses_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("console.sock");
        let listener = listen(&sock).unwrap();
        let (mut r, w) = std::os::unix::net::UnixStream::pair().unwrap();
        let w: OwnedFd = w.into();
        let sender = {
            let sock = sock.clone();
            std::thread::spawn(move || send_master(&sock, w.as_fd()).unwrap())
        };
        let got = receive_master(&listener).unwrap();
        sender.join().unwrap();
        let mut got = std::fs::File::from(got);
        got.write_all(b"hi").unwrap();
        drop(got);
        let mut s = String::new();
        r.read_to_string(&mut s).unwrap();
        assert_eq!(s, "hi");
    }
}
