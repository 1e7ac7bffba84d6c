//! Where the cgroup hierarchies are mounted, read from `/proc/self/mountinfo`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{fs, Error, Result, Version};

const MOUNTINFO: &str = "/proc/self/mountinfo";

/// The cgroup filesystems of this host, as one of the two layouts.
///
/// A hybrid host (v1 controllers plus a controller-less cgroup2, as
/// systemd sets up at `/sys/fs/cgroup/unified`) is [`Version::V1`]: the
/// controllers, which are what we use, live in v1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    pub(crate) layout: Layout,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Layout {
    /// Controller name -> its mountpoint. Co-mounted controllers
    /// (`cpu,cpuacct`) share a mountpoint.
    V1(BTreeMap<String, PathBuf>),
    /// The cgroup2 mountpoint.
    V2(PathBuf),
}

impl Hierarchy {
    /// Finds the cgroup layout of the calling process's mount namespace.
    pub fn detect() -> Result<Hierarchy> {
        let text = fs::read(Path::new(MOUNTINFO))?;
        let h = parse_mountinfo(&text, |p| {
            fs::read_optional(&p.join("cgroup.controllers"))
                .ok()
                .flatten()
                .is_some_and(|c| !c.trim().is_empty())
        });
        h.ok_or(Error::NotMounted)
    }

    /// A cgroup2 hierarchy mounted at `mountpoint`.
    pub fn v2(mountpoint: &Path) -> Hierarchy {
        Hierarchy {
            layout: Layout::V2(mountpoint.to_path_buf()),
        }
    }

    /// A v1 layout from (controller, mountpoint) pairs.
    pub fn v1(controllers: impl IntoIterator<Item = (String, PathBuf)>) -> Hierarchy {
        Hierarchy {
            layout: Layout::V1(controllers.into_iter().collect()),
        }
    }

    pub fn version(&self) -> Version {
        match self.layout {
            Layout::V1(_) => Version::V1,
            Layout::V2(_) => Version::V2,
        }
    }

    /// The mountpoint of a v1 controller, if mounted (always `None` on v2).
    pub fn v1_mountpoint(&self, controller: &str) -> Option<&Path> {
        match &self.layout {
            Layout::V1(m) => m.get(controller).map(PathBuf::as_path),
            Layout::V2(_) => None,
        }
    }
}

/// Picks the layout from mountinfo text. v1 wins as soon as one v1
/// controller is mounted; otherwise the first cgroup2 mount whose root
/// has controllers (`has_controllers` looks at the live file, so a
/// controller-less cgroup2 never counts).
fn parse_mountinfo(text: &str, has_controllers: impl Fn(&Path) -> bool) -> Option<Hierarchy> {
    let mut v1 = BTreeMap::new();
    let mut v2 = None;
    for line in text.lines() {
        // id parent major:minor root mountpoint options [optional...] - fstype source superoptions
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let left: Vec<&str> = left.split(' ').collect();
        let right: Vec<&str> = right.split(' ').collect();
        let (Some(mountpoint), Some(fstype)) = (left.get(4), right.first()) else {
            continue;
        };
        let mountpoint = PathBuf::from(unescape_mountinfo(mountpoint));
        match *fstype {
            "cgroup" => {
                let opts = right.get(2).copied().unwrap_or("");
                for opt in opts.split(',') {
                    // Named hierarchies (name=systemd) hold no controller.
                    if KNOWN_V1.contains(&opt) {
                        v1.entry(opt.to_string())
                            .or_insert_with(|| mountpoint.clone());
                    }
                }
            }
            "cgroup2" if v2.is_none() && has_controllers(&mountpoint) => v2 = Some(mountpoint),
            _ => {}
        }
    }
    if !v1.is_empty() {
        Some(Hierarchy::v1(v1))
    } else {
        v2.map(|p| Hierarchy {
            layout: Layout::V2(p),
        })
    }
}

const KNOWN_V1: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "pids",
    "blkio",
    "freezer",
    "net_cls",
    "net_prio",
    "perf_event",
    "hugetlb",
    "rdma",
    "misc",
];

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
pub(crate) fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let digit = |c: u8| u32::from(c - b'0');
            let v = digit(b[i + 1]) * 64 + digit(b[i + 2]) * 8 + digit(b[i + 3]);
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:5 - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn hybrid_is_v1_with_each_controller() {
        let h = parse_mountinfo(HYBRID, |_| false).unwrap();
        assert_eq!(h.version(), Version::V1);
        assert_eq!(
            h.v1_mountpoint("cpu"),
            Some(Path::new("/sys/fs/cgroup/cpu"))
        );
        assert_eq!(
            h.v1_mountpoint("cpuacct"),
            Some(Path::new("/sys/fs/cgroup/cpu,cpuacct"))
        );
        assert_eq!(h.v1_mountpoint("systemd"), None);
        assert_eq!(h.v1_mountpoint("name=systemd"), None);
    }

    #[test]
    fn pure_v2_needs_controllers() {
        let text = "30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        let h = parse_mountinfo(text, |p| p == Path::new("/sys/fs/cgroup")).unwrap();
        assert_eq!(h, Hierarchy::v2(Path::new("/sys/fs/cgroup")));
        assert!(parse_mountinfo(text, |_| false).is_none());
    }

    #[test]
    fn escaped_mountpoints() {
        assert_eq!(unescape_mountinfo(r"/a\040b\134c"), r"/a b\c");
        assert_eq!(unescape_mountinfo(r"/tail\04"), r"/tail\04");
    }

    #[test]
    fn detect_on_this_host() {
        // Whatever the host is, detection must find something where
        // cgroups are mounted at all.
        if std::path::Path::new("/sys/fs/cgroup").exists() {
            Hierarchy::detect().unwrap();
        }
    }
}
