//! Interface counters of a process's network namespace, from
//! `/proc/<pid>/net/dev` (which shows the namespace of that process, not
//! ours).

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{Error, NetTotals, Result};

/// One interface's counters since it was created.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Interface {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

/// The interfaces of `pid`'s network namespace; `None` when the process
/// is gone.
pub fn read(pid: i32) -> Result<Option<Vec<Interface>>> {
    let path = PathBuf::from(format!("/proc/{pid}/net/dev"));
    read_file(&path)
}

pub(crate) fn read_file(path: &Path) -> Result<Option<Vec<Interface>>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        // The process exited (ENOENT), or is exiting and its namespace is
        // already gone (EINVAL).
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                || e.raw_os_error() == Some(libc::EINVAL)
                || e.raw_os_error() == Some(libc::ESRCH) =>
        {
            return Ok(None)
        }
        Err(source) => {
            return Err(Error::Io {
                action: "reading",
                path: path.to_path_buf(),
                source,
            })
        }
    };
    parse(&text).map(Some).map_err(|reason| Error::Parse {
        path: path.to_path_buf(),
        reason,
    })
}

/// Parses `net/dev`: two header lines, then `name: ` and sixteen numbers,
/// the first eight received (bytes packets errs drop fifo frame compressed
/// multicast), the next eight sent (bytes packets errs drop fifo colls
/// carrier compressed).
pub fn parse(text: &str) -> std::result::Result<Vec<Interface>, String> {
    let mut out = Vec::new();
    for line in text.lines() {
        // Header lines have a `|` and no `:` before it.
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        if name.contains('|') {
            continue;
        }
        let mut n = [0u64; 16];
        let mut fields = rest.split_ascii_whitespace();
        for slot in n.iter_mut() {
            let f = fields
                .next()
                .ok_or_else(|| format!("too few fields in {line:?}"))?;
            *slot = f.parse().map_err(|_| format!("not a number in {line:?}"))?;
        }
        out.push(Interface {
            name: name.trim().to_string(),
            rx_bytes: n[0],
            rx_packets: n[1],
            rx_errors: n[2],
            rx_dropped: n[3],
            tx_bytes: n[8],
            tx_packets: n[9],
            tx_errors: n[10],
            tx_dropped: n[11],
        });
    }
    Ok(out)
}

/// Every interface summed, loopback included (see the module docs of
/// `monitor`).
pub fn totals(ifaces: &[Interface]) -> NetTotals {
    let mut t = NetTotals::default();
    for i in ifaces {
        t.rx_bytes = t.rx_bytes.saturating_add(i.rx_bytes);
        t.tx_bytes = t.tx_bytes.saturating_add(i.tx_bytes);
        t.rx_packets = t.rx_packets.saturating_add(i.rx_packets);
        t.tx_packets = t.tx_packets.saturating_add(i.tx_packets);
    }
    t
}
