//! Pull and push progress on stderr: an indicatif bar per blob on a terminal, one
//! plain line per event in CI logs, nothing with `-q`.

use std::collections::HashMap;
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{human_size, ProgressMode};
use crate::content::Digest;
use crate::image::{BlobKind, Observer};

/// What pull and push progress share: a bar per blob on a terminal, plain
/// lines otherwise, nothing when silent.
pub struct BlobBars {
    prog: String,
    mode: ProgressMode,
    multi: MultiProgress,
    bars: Mutex<HashMap<Digest, ProgressBar>>,
}

impl BlobBars {
    pub fn new(prog: &str, mode: ProgressMode) -> BlobBars {
        let target = match mode {
            ProgressMode::Bars => ProgressDrawTarget::stderr(),
            _ => ProgressDrawTarget::hidden(),
        };
        BlobBars {
            prog: prog.to_string(),
            mode,
            multi: MultiProgress::with_draw_target(target),
            bars: Mutex::new(HashMap::new()),
        }
    }

    pub fn mode(&self) -> ProgressMode {
        self.mode
    }

    /// A line of its own: above the bars on a terminal, `prog: text` in logs.
    pub fn line(&self, text: std::fmt::Arguments<'_>) {
        match self.mode {
            ProgressMode::Lines => eprintln!("{}: {text}", self.prog),
            ProgressMode::Bars => {
                let _ = self.multi.println(text.to_string());
            }
            ProgressMode::Silent => {}
        }
    }

    /// Starts a bar for `digest` at `position` of `size` (terminals only).
    pub fn start(&self, kind: BlobKind, digest: &Digest, size: u64, position: u64) {
        if self.mode != ProgressMode::Bars {
            return;
        }
        let bar = self.multi.add(ProgressBar::new(size));
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_prefix(format!("{kind:<8} {}", digest.short()));
        bar.set_position(position);
        self.bars
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(digest.clone(), bar);
    }

    pub fn bar(&self, digest: &Digest) -> Option<ProgressBar> {
        self.bars
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(digest)
            .cloned()
    }
}

/// Pull progress: a bar per blob, or a line per event.
pub struct PullProgress(BlobBars);

impl PullProgress {
    pub fn new(prog: &str, mode: ProgressMode) -> PullProgress {
        PullProgress(BlobBars::new(prog, mode))
    }

    fn line(&self, text: std::fmt::Arguments<'_>) {
        self.0.line(text)
    }

    fn bar(&self, digest: &Digest) -> Option<ProgressBar> {
        self.0.bar(digest)
    }
}

impl Observer for PullProgress {
    fn resolved(&self, reference: &str, digest: &Digest, media_type: &str) {
        self.line(format_args!(
            "{reference}: resolved to {digest} ({media_type})"
        ));
    }

    fn blob_started(&self, kind: BlobKind, digest: &Digest, size: u64, offset: u64) {
        match self.0.mode() {
            ProgressMode::Lines => {
                if offset > 0 {
                    self.line(format_args!(
                        "{kind} {}: resuming at {} of {}",
                        digest.short(),
                        human_size(offset),
                        human_size(size)
                    ));
                } else {
                    self.line(format_args!(
                        "{kind} {}: downloading {}",
                        digest.short(),
                        human_size(size)
                    ));
                }
            }
            ProgressMode::Bars => self.0.start(kind, digest, size, offset),
            ProgressMode::Silent => {}
        }
    }

    fn blob_progress(&self, digest: &Digest, bytes: u64) {
        if let Some(bar) = self.bar(digest) {
            bar.inc(bytes);
        }
    }

    fn blob_finished(&self, kind: BlobKind, digest: &Digest, fetched: u64) {
        match self.bar(digest) {
            Some(bar) => bar.finish(),
            None => self.line(format_args!(
                "{kind} {}: done, fetched {}",
                digest.short(),
                human_size(fetched)
            )),
        }
    }

    fn blob_present(&self, kind: BlobKind, digest: &Digest, _size: u64) {
        self.line(format_args!("{kind} {}: already present", digest.short()));
    }
}
