//! Entry names: how a tar entry's name becomes a path inside the target, and
//! which names are whiteouts.
//!
//! Names are cleaned lexically, without looking at the filesystem: leading
//! `/` and `./` go, `.` components go, and `..` removes the component before
//! it. A `..` with nothing left to remove would climb above the root, and the
//! entry is refused. Lexical cleaning is deterministic and never depends on
//! symlinks; the filesystem walk that follows (`openat2` with
//! `RESOLVE_IN_ROOT`) keeps symlinks inside the root as a second guard.

/// The prefix that marks a whiteout entry.
pub(super) const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// The whiteout that makes its directory opaque.
pub(super) const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
/// Names with this prefix are aufs bookkeeping (`.wh..wh.plnk`, …).
const META_PREFIX: &[u8] = b".wh..wh.";

/// Why a name cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BadName {
    EscapesRoot,
    ContainsNul,
}

impl BadName {
    pub(super) fn reason(self) -> &'static str {
        match self {
            BadName::EscapesRoot => "escapes the root",
            BadName::ContainsNul => "name contains a NUL byte",
        }
    }
}

/// Cleans a raw entry name into `a/b/c` form: relative, no empty, `.` or
/// `..` components. The root itself is the empty path.
pub(super) fn normalise(raw: &[u8]) -> Result<Vec<u8>, BadName> {
    if raw.contains(&0) {
        return Err(BadName::ContainsNul);
    }
    let mut out: Vec<u8> = Vec::with_capacity(raw.len());
    for comp in raw.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => {
                if out.is_empty() {
                    return Err(BadName::EscapesRoot);
                }
                let cut = out.iter().rposition(|&b| b == b'/').unwrap_or(0);
                out.truncate(cut);
            }
            _ => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(comp);
            }
        }
    }
    Ok(out)
}

/// Where the symlink `target`, found in the directory `dir` (normalised),
/// leads when the root is `/`: absolute targets start at the root, and `..`
/// stops there, as with `RESOLVE_IN_ROOT`.
pub(super) fn resolve_link(dir: &[u8], target: &[u8]) -> Vec<u8> {
    let mut out: Vec<u8> = if target.starts_with(b"/") {
        Vec::new()
    } else {
        dir.to_vec()
    };
    for comp in target.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => {
                let cut = out.iter().rposition(|&b| b == b'/').unwrap_or(0);
                out.truncate(cut);
            }
            _ => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(comp);
            }
        }
    }
    out
}

/// Splits a normalised path into its parent and last component.
/// The root (empty path) splits into two empty parts.
pub(super) fn split(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&[], path),
    }
}

/// Joins a normalised parent path and one component.
pub(super) fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(parent.len() + 1 + name.len());
    out.extend_from_slice(parent);
    if !parent.is_empty() {
        out.push(b'/');
    }
    out.extend_from_slice(name);
    out
}

/// The proper ancestors of a normalised path, deepest first (`a/b/c` gives
/// `a/b`, `a`).
pub(super) fn ancestors(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    path.iter()
        .enumerate()
        .rev()
        .filter(|&(_, &b)| b == b'/')
        .map(move |(i, _)| &path[..i])
}

/// What an entry's last component says about whiteouts.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Whiteout<'a> {
    /// An ordinary name.
    No,
    /// `.wh.<name>`: hide `<name>` of the lower layers.
    Remove(&'a [u8]),
    /// `.wh..wh..opq`: hide every lower entry of the directory.
    Opaque,
    /// `.wh..wh.*` other than the opaque marker: aufs bookkeeping, skipped.
    Meta,
}

/// Classifies a last component. `.wh.`, `.wh..` and `.wh...` name no valid
/// victim and are refused.
pub(super) fn whiteout(name: &[u8]) -> Result<Whiteout<'_>, &'static str> {
    if !name.starts_with(WHITEOUT_PREFIX) {
        return Ok(Whiteout::No);
    }
    if name == OPAQUE_MARKER {
        return Ok(Whiteout::Opaque);
    }
    if name.starts_with(META_PREFIX) {
        return Ok(Whiteout::Meta);
    }
    match &name[WHITEOUT_PREFIX.len()..] {
        b"" | b"." | b".." => Err("whiteout names no entry"),
        victim => Ok(Whiteout::Remove(victim)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> Result<String, BadName> {
        normalise(s.as_bytes()).map(|v| String::from_utf8(v).unwrap())
    }

    #[test]
    fn normalise_strips_leading_slashes_and_dots() {
        assert_eq!(norm("/etc/passwd").unwrap(), "etc/passwd");
        assert_eq!(norm("./etc/passwd").unwrap(), "etc/passwd");
        assert_eq!(norm(".//./etc//passwd/").unwrap(), "etc/passwd");
        assert_eq!(norm("///").unwrap(), "");
        assert_eq!(norm("./").unwrap(), "");
        assert_eq!(norm(".").unwrap(), "");
        assert_eq!(norm("").unwrap(), "");
    }

    #[test]
    fn normalise_resolves_dotdot_lexically() {
        assert_eq!(norm("a/b/../c").unwrap(), "a/c");
        assert_eq!(norm("a/../b").unwrap(), "b");
        assert_eq!(norm("a/b/c/../../..").unwrap(), "");
        assert_eq!(norm(".wh.../../x").unwrap(), "x");
    }

    #[test]
    fn normalise_refuses_escapes() {
        assert_eq!(norm("../escape"), Err(BadName::EscapesRoot));
        assert_eq!(norm("/../escape"), Err(BadName::EscapesRoot));
        assert_eq!(norm("a/../../escape"), Err(BadName::EscapesRoot));
        assert_eq!(norm("etc/../../x"), Err(BadName::EscapesRoot));
        assert_eq!(norm("a/b/../../../x"), Err(BadName::EscapesRoot));
        assert_eq!(normalise(b"a\0b"), Err(BadName::ContainsNul));
    }

    #[test]
    fn normalise_keeps_odd_but_valid_names() {
        assert_eq!(norm("a b/ü\nx").unwrap(), "a b/ü\nx");
        assert_eq!(norm("...").unwrap(), "...");
        assert_eq!(norm("a/..b").unwrap(), "a/..b");
    }

    #[test]
    fn symlink_targets_resolve_inside_the_root() {
        let r = |dir: &str, target: &str| {
            String::from_utf8(resolve_link(dir.as_bytes(), target.as_bytes())).unwrap()
        };
        assert_eq!(r("var", "/run"), "run");
        assert_eq!(r("var", "../run"), "run");
        assert_eq!(r("var", "../../../../run"), "run");
        assert_eq!(r("a/b", "c/./d/"), "a/b/c/d");
        assert_eq!(r("a/b", "../c"), "a/c");
        assert_eq!(r("", "/"), "");
        assert_eq!(r("a", "/../../etc"), "etc");
    }

    #[test]
    fn split_and_join_round_trip() {
        assert_eq!(split(b"a/b/c"), (&b"a/b"[..], &b"c"[..]));
        assert_eq!(split(b"c"), (&b""[..], &b"c"[..]));
        assert_eq!(split(b""), (&b""[..], &b""[..]));
        assert_eq!(join(b"a/b", b"c"), b"a/b/c");
        assert_eq!(join(b"", b"c"), b"c");
        let all: Vec<&[u8]> = ancestors(b"a/b/c").collect();
        assert_eq!(all, vec![&b"a/b"[..], &b"a"[..]]);
        assert_eq!(ancestors(b"a").count(), 0);
    }

    #[test]
    fn whiteout_names() {
        assert_eq!(whiteout(b"file"), Ok(Whiteout::No));
        assert_eq!(whiteout(b".whatever"), Ok(Whiteout::No));
        assert_eq!(whiteout(b".wh.file"), Ok(Whiteout::Remove(b"file")));
        assert_eq!(whiteout(b".wh..hidden"), Ok(Whiteout::Remove(b".hidden")));
        assert_eq!(whiteout(b".wh..wh..opq"), Ok(Whiteout::Opaque));
        assert_eq!(whiteout(b".wh..wh.plnk"), Ok(Whiteout::Meta));
        assert!(whiteout(b".wh.").is_err());
        assert!(whiteout(b".wh..").is_err());
        assert!(whiteout(b".wh...").is_err());
    }
}
