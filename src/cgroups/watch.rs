//! Watching a counter in a cgroup file change, without polling it: what
//! lets a container's waiter see an OOM kill the moment the kernel makes
//! it, even one that does not end the container.
//!
//! A [`FileWatch`] holds a descriptor that becomes readable when the file
//! may have changed, for the caller's own `poll` loop, and the value of one
//! key of the file as last seen. [`FileWatch::check`] drains the descriptor
//! and re-reads the value: notifications only say "look again", the count
//! in the file is the truth, so several kills behind one notification, or
//! a notification for another key, are counted right.
//!
//! - v2: `memory.events` (flat-keyed, `oom_kill N`) is watched with
//!   inotify: the kernel raises a modify event on it at every change. The
//!   same works for any file (a test uses a plain one).
//! - v1: `memory.oom_control` cannot be watched with inotify; the kernel
//!   signals an eventfd registered through `cgroup.event_control`
//!   (`"<eventfd> <fd of memory.oom_control>"`) at each OOM in the group.
//!   Its `oom_kill` count is read on each signal, and again every few
//!   milliseconds for a while when it has not moved yet ([`FileWatch::recheck`]):
//!   the kernel signals before its OOM killer has counted the kill. (The
//!   eventfd is also
//!   signalled when the group is removed; the unchanged count makes that a
//!   no-op.)
//!
//! The value is read only *after* the notification is set up, so a change
//! between the two cannot be missed.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

use super::{fs, Error, Result};

enum Notify {
    Inotify(Inotify),
    EventFd(EventFd),
}

/// One key of a flat-keyed file, and a descriptor that wakes when it may
/// have changed. See the module doc.
pub struct FileWatch {
    path: PathBuf,
    key: String,
    notify: Notify,
    value: u64,
    /// Until when a notification the count did not yet show is awaited.
    pending: Option<Instant>,
}

impl std::fmt::Debug for FileWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileWatch")
            .field("path", &self.path)
            .field("key", &self.key)
            .field("value", &self.value)
            .finish()
    }
}

fn os(action: &'static str, path: &Path, e: Errno) -> Error {
    Error::io(action, path, e.into())
}

impl FileWatch {
    /// Watches `key` in `path` with inotify. A key the file lacks reads
    /// as 0.
    pub fn inotify(path: &Path, key: &str) -> Result<FileWatch> {
        let ino = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)
            .map_err(|e| os("creating an inotify instance for", path, e))?;
        ino.add_watch(path, AddWatchFlags::IN_MODIFY)
            .map_err(|e| os("watching", path, e))?;
        let value = fs::read_keyed(path, key)?.unwrap_or(0);
        Ok(FileWatch {
            path: path.to_path_buf(),
            key: key.to_string(),
            notify: Notify::Inotify(ino),
            value,
            pending: None,
        })
    }

    /// Watches `oom_kill` in a v1 memory group's `memory.oom_control`
    /// through an eventfd registered in its `cgroup.event_control`.
    pub(crate) fn v1_oom(memory_dir: &Path) -> Result<FileWatch> {
        let control_path = memory_dir.join("memory.oom_control");
        let efd = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
            .map_err(|e| os("creating an eventfd for", &control_path, e))?;
        let control = File::open(&control_path)
            .map_err(|source| Error::io("opening", &control_path, source))?;
        // The kernel takes its own references to both files; ours to the
        // control file can go once registered.
        fs::write(
            &memory_dir.join("cgroup.event_control"),
            &format!("{} {}", efd.as_raw_fd(), control.as_raw_fd()),
        )?;
        let value = fs::read_keyed(&control_path, "oom_kill")?.unwrap_or(0);
        Ok(FileWatch {
            path: control_path,
            key: "oom_kill".into(),
            notify: Notify::EventFd(efd),
            value,
            pending: None,
        })
    }

    /// Readable when [`FileWatch::check`] should run.
    pub fn fd(&self) -> BorrowedFd<'_> {
        match &self.notify {
            Notify::Inotify(i) => i.as_fd(),
            Notify::EventFd(e) => e.as_fd(),
        }
    }

    /// The value as last seen.
    pub fn value(&self) -> u64 {
        self.value
    }

    /// The watched file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Drains pending notifications and re-reads the value; returns it
    /// when it changed since the last look. An error (the group is gone)
    /// means the watch has nothing more to say.
    pub fn check(&mut self) -> Result<Option<u64>> {
        let mut signalled = 0u64;
        match &self.notify {
            Notify::Inotify(i) => loop {
                match i.read_events() {
                    Ok(events) if !events.is_empty() => {
                        signalled += events.len() as u64;
                        if events
                            .iter()
                            .any(|e| e.mask.contains(AddWatchFlags::IN_IGNORED))
                        {
                            // The file went away (its group was removed).
                            return Err(Error::io(
                                "watching",
                                &self.path,
                                std::io::ErrorKind::NotFound.into(),
                            ));
                        }
                    }
                    Ok(_) | Err(Errno::EAGAIN) => break,
                    Err(Errno::EINTR) => {}
                    Err(e) => return Err(os("reading inotify events for", &self.path, e)),
                }
            },
            Notify::EventFd(e) => match e.read() {
                Ok(n) => signalled = n,
                Err(Errno::EAGAIN) => {}
                Err(e) => return Err(os("reading the OOM eventfd of", &self.path, e)),
            },
        }
        let eventfd = matches!(self.notify, Notify::EventFd(_));
        let now = match self.read()? {
            Some(v) => v,
            // A kernel without the count: each eventfd signal is one OOM.
            None if eventfd => self.value + signalled,
            None => self.value,
        };
        if now != self.value {
            self.value = now;
            self.pending = None;
            return Ok(Some(now));
        }
        if eventfd && signalled > 0 {
            // v1 signals when the group runs out of memory, before the OOM
            // killer has picked and counted its victim: look again soon.
            self.pending = Some(Instant::now() + V1_COUNT_WAIT);
        } else if self.pending.is_some_and(|until| Instant::now() >= until) {
            self.pending = None;
        }
        Ok(None)
    }

    /// While a notification is not yet reflected in the file: how soon to
    /// call [`FileWatch::check`] again, even if the descriptor stays quiet.
    pub fn recheck(&self) -> Option<Duration> {
        self.pending.map(|_| RECHECK_EVERY)
    }
}

/// How long after a v1 OOM notification the kill count is watched for
/// the kill to show, and how often.
const V1_COUNT_WAIT: Duration = Duration::from_secs(5);
const RECHECK_EVERY: Duration = Duration::from_millis(20);

impl FileWatch {
    fn read(&self) -> Result<Option<u64>> {
        fs::read_keyed(&self.path, &self.key)
    }
}

impl super::Cgroup {
    /// Watches this group's OOM kill count (see the module doc): inotify on
    /// `memory.events` (v2), an eventfd on `memory.oom_control` (v1).
    pub fn watch_oom(&self) -> Result<FileWatch> {
        let rel = self.relative()?;
        match &self.hierarchy.layout {
            super::Layout::V1(c) => FileWatch::v1_oom(&super::v1::dir(c, "memory", rel)?),
            super::Layout::V2(root) => {
                FileWatch::inotify(&root.join(rel).join("memory.events"), "oom_kill")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

    fn readable(w: &FileWatch, ms: u16) -> bool {
        let mut fds = [PollFd::new(w.fd(), PollFlags::POLLIN)];
        poll(&mut fds, PollTimeout::from(ms)).unwrap() > 0
    }

    const EVENTS: &str = "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n";

    /// A fake v2 `memory.events`, changed the way the kernel changes it:
    /// rewritten in place.
    #[test]
    fn inotify_sees_the_count_grow_and_ignores_other_keys() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("memory.events");
        std::fs::write(&file, EVENTS).unwrap();
        let mut w = FileWatch::inotify(&file, "oom_kill").unwrap();
        assert_eq!(w.value(), 0);
        assert!(!readable(&w, 0));
        assert_eq!(w.check().unwrap(), None);

        // Another key changes: a wake-up, but no new kill.
        std::fs::write(&file, EVENTS.replace("max 0", "max 3")).unwrap();
        assert!(readable(&w, 1000));
        assert_eq!(w.check().unwrap(), None);
        assert!(!readable(&w, 0), "check drains the notification");

        // Two kills behind one look are counted as two.
        std::fs::write(&file, EVENTS.replace("oom_kill 0", "oom_kill 1")).unwrap();
        std::fs::write(&file, EVENTS.replace("oom_kill 0", "oom_kill 2")).unwrap();
        assert!(readable(&w, 1000));
        assert_eq!(w.check().unwrap(), Some(2));
        assert_eq!(w.value(), 2);
        assert_eq!(w.check().unwrap(), None);
    }

    #[test]
    fn the_value_is_read_after_the_watch_is_set() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("memory.events");
        std::fs::write(&file, EVENTS.replace("oom_kill 0", "oom_kill 5")).unwrap();
        let mut w = FileWatch::inotify(&file, "oom_kill").unwrap();
        assert_eq!(w.value(), 5);
        assert_eq!(w.check().unwrap(), None);
        // A file without the key reads as 0.
        let other = dir.path().join("other");
        std::fs::write(&other, "a 1\n").unwrap();
        assert_eq!(FileWatch::inotify(&other, "oom_kill").unwrap().value(), 0);
    }

    #[test]
    fn a_removed_file_ends_the_watch() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("memory.events");
        std::fs::write(&file, EVENTS).unwrap();
        let mut w = FileWatch::inotify(&file, "oom_kill").unwrap();
        std::fs::remove_file(&file).unwrap();
        assert!(readable(&w, 1000));
        assert!(w.check().is_err());
    }

    #[test]
    fn a_missing_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let err = FileWatch::inotify(&dir.path().join("nope"), "oom_kill").unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }

    /// The v1 flow on a fake `memory.oom_control`: the eventfd fires before
    /// the count moves, so the watch asks to look again until it does.
    #[test]
    fn eventfd_signal_before_the_count_moves_is_rechecked() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("memory.oom_control");
        let control = |kills: u32| {
            std::fs::write(
                &file,
                format!("oom_kill_disable 0\nunder_oom 0\noom_kill {kills}\n"),
            )
            .unwrap()
        };
        control(0);
        let efd = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK).unwrap();
        let mut w = FileWatch {
            path: file.clone(),
            key: "oom_kill".into(),
            notify: Notify::EventFd(efd),
            value: 0,
            pending: None,
        };
        assert_eq!(w.recheck(), None);
        let Notify::EventFd(e) = &w.notify else {
            unreachable!()
        };
        e.write(1).unwrap();
        assert!(readable(&w, 1000));
        assert_eq!(w.check().unwrap(), None);
        assert!(!readable(&w, 0), "check drains the eventfd");
        assert_eq!(w.recheck(), Some(RECHECK_EVERY));
        // Nothing yet: still pending.
        assert_eq!(w.check().unwrap(), None);
        assert!(w.recheck().is_some());
        control(1);
        assert_eq!(w.check().unwrap(), Some(1));
        assert_eq!(w.recheck(), None);
        // A pending look gives up after its deadline.
        let Notify::EventFd(e) = &w.notify else {
            unreachable!()
        };
        e.write(1).unwrap();
        assert_eq!(w.check().unwrap(), None);
        w.pending = Some(Instant::now());
        assert_eq!(w.check().unwrap(), None);
        assert_eq!(w.recheck(), None);
        // Without the count (old kernels), each signal is one OOM.
        std::fs::write(&file, "oom_kill_disable 0\nunder_oom 0\n").unwrap();
        let Notify::EventFd(e) = &w.notify else {
            unreachable!()
        };
        e.write(2).unwrap();
        assert_eq!(w.check().unwrap(), Some(3));
    }

    #[test]
    fn v2_groups_watch_memory_events() {
        let dir = tempfile::tempdir().unwrap();
        let group = dir.path().join("berth/c1");
        std::fs::create_dir_all(&group).unwrap();
        std::fs::write(group.join("memory.events"), EVENTS).unwrap();
        let h = super::super::Hierarchy::v2(dir.path());
        let cg = super::super::Cgroup::open(&h, "/berth/c1");
        let mut w = cg.watch_oom().unwrap();
        assert_eq!(w.path(), group.join("memory.events"));
        std::fs::write(
            group.join("memory.events"),
            EVENTS.replace("oom_kill 0", "oom_kill 1"),
        )
        .unwrap();
        assert!(readable(&w, 1000));
        assert_eq!(w.check().unwrap(), Some(1));
        assert!(super::super::Cgroup::open(&h, "/").watch_oom().is_err());
    }
}
