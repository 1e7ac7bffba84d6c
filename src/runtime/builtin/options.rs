//! OCI mount options (`nosuid`, `ro`, `rbind`, `mode=755`…) into the
//! flags, propagation and data string that mount(2) takes.

use nix::mount::MsFlags;

/// What one spec mount's `options` ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct MountOptions {
    /// Flags for the mount call itself (`MS_BIND`/`MS_REC` included).
    pub flags: MsFlags,
    /// Propagation to set after mounting (`MS_PRIVATE`, `MS_SLAVE`… with
    /// `MS_REC` for the `r` forms).
    pub propagation: Vec<MsFlags>,
    /// Filesystem-specific options, comma-joined (`mode=755,size=65536k`).
    pub data: String,
}

/// Parses `options`. Unknown `key=value` and bare words are filesystem data,
/// as mount(8) treats them.
pub(super) fn parse(options: &[String]) -> MountOptions {
    let mut out = MountOptions {
        flags: MsFlags::empty(),
        propagation: Vec::new(),
        data: String::new(),
    };
    let mut data: Vec<&str> = Vec::new();
    for o in options {
        // (set, clear)
        let flag: Option<(MsFlags, MsFlags)> = match o.as_str() {
            "defaults" => Some((MsFlags::empty(), MsFlags::empty())),
            "ro" => Some((MsFlags::MS_RDONLY, MsFlags::empty())),
            "rw" => Some((MsFlags::empty(), MsFlags::MS_RDONLY)),
            "nosuid" => Some((MsFlags::MS_NOSUID, MsFlags::empty())),
            "suid" => Some((MsFlags::empty(), MsFlags::MS_NOSUID)),
            "nodev" => Some((MsFlags::MS_NODEV, MsFlags::empty())),
            "dev" => Some((MsFlags::empty(), MsFlags::MS_NODEV)),
            "noexec" => Some((MsFlags::MS_NOEXEC, MsFlags::empty())),
            "exec" => Some((MsFlags::empty(), MsFlags::MS_NOEXEC)),
            "sync" => Some((MsFlags::MS_SYNCHRONOUS, MsFlags::empty())),
            "async" => Some((MsFlags::empty(), MsFlags::MS_SYNCHRONOUS)),
            "dirsync" => Some((MsFlags::MS_DIRSYNC, MsFlags::empty())),
            "remount" => Some((MsFlags::MS_REMOUNT, MsFlags::empty())),
            "mand" => Some((MsFlags::MS_MANDLOCK, MsFlags::empty())),
            "nomand" => Some((MsFlags::empty(), MsFlags::MS_MANDLOCK)),
            "atime" => Some((MsFlags::empty(), MsFlags::MS_NOATIME)),
            "noatime" => Some((MsFlags::MS_NOATIME, MsFlags::empty())),
            "diratime" => Some((MsFlags::empty(), MsFlags::MS_NODIRATIME)),
            "nodiratime" => Some((MsFlags::MS_NODIRATIME, MsFlags::empty())),
            "relatime" => Some((MsFlags::MS_RELATIME, MsFlags::empty())),
            "norelatime" => Some((MsFlags::empty(), MsFlags::MS_RELATIME)),
            "strictatime" => Some((MsFlags::MS_STRICTATIME, MsFlags::empty())),
            "nostrictatime" => Some((MsFlags::empty(), MsFlags::MS_STRICTATIME)),
            "bind" => Some((MsFlags::MS_BIND, MsFlags::empty())),
            "rbind" => Some((MsFlags::MS_BIND | MsFlags::MS_REC, MsFlags::empty())),
            _ => None,
        };
        if let Some((set, clear)) = flag {
            out.flags.insert(set);
            out.flags.remove(clear);
            continue;
        }
        let propagation = match o.as_str() {
            "private" => Some(MsFlags::MS_PRIVATE),
            "rprivate" => Some(MsFlags::MS_PRIVATE | MsFlags::MS_REC),
            "shared" => Some(MsFlags::MS_SHARED),
            "rshared" => Some(MsFlags::MS_SHARED | MsFlags::MS_REC),
            "slave" => Some(MsFlags::MS_SLAVE),
            "rslave" => Some(MsFlags::MS_SLAVE | MsFlags::MS_REC),
            "unbindable" => Some(MsFlags::MS_UNBINDABLE),
            "runbindable" => Some(MsFlags::MS_UNBINDABLE | MsFlags::MS_REC),
            _ => None,
        };
        match propagation {
            Some(p) => out.propagation.push(p),
            None => data.push(o),
        }
    }
    out.data = data.join(",");
    out
}

/// The propagation `linux.rootfsPropagation` names; `None` for an unknown one.
pub(super) fn root_propagation(name: &str) -> Option<MsFlags> {
    match parse(&[name.to_string()]).propagation.as_slice() {
        [p] => Some(*p),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(s: &[&str]) -> MountOptions {
        parse(&s.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn flags_and_data_split() {
        let o = opts(&["nosuid", "strictatime", "mode=755", "size=65536k"]);
        assert_eq!(o.flags, MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME);
        assert_eq!(o.data, "mode=755,size=65536k");
        assert!(o.propagation.is_empty());
    }

    #[test]
    fn later_options_undo_earlier_ones() {
        let o = opts(&["noexec", "nosuid", "nodev", "exec", "ro", "rw"]);
        assert_eq!(o.flags, MsFlags::MS_NOSUID | MsFlags::MS_NODEV);
    }

    #[test]
    fn binds_and_propagation() {
        let o = opts(&["rbind", "rprivate", "ro"]);
        assert_eq!(
            o.flags,
            MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_RDONLY
        );
        assert_eq!(o.propagation, [MsFlags::MS_PRIVATE | MsFlags::MS_REC]);
        assert_eq!(o.data, "");
    }

    #[test]
    fn devpts_words_are_data() {
        let o = opts(&["nosuid", "noexec", "newinstance", "ptmxmode=0666"]);
        assert_eq!(o.data, "newinstance,ptmxmode=0666");
    }

    #[test]
    fn root_propagation_names() {
        assert_eq!(
            root_propagation("rslave"),
            Some(MsFlags::MS_SLAVE | MsFlags::MS_REC)
        );
        assert_eq!(root_propagation("sideways"), None);
    }
}
