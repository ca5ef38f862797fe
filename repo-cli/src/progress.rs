//! A terminal progress display implementing [`repo_core::Progress`]: a bytes
//! bar with throughput and ETA once the total is known, a spinner before.
//! Hidden when stderr is not a terminal, with `-q`, and with `--json`;
//! warnings are still printed (above the bar when it is shown) unless `-q`.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::output::Output;

const SPINNER: &str = "{spinner} [{elapsed_precise}] {bytes} ({bytes_per_sec}), {msg}";
const BAR: &str =
    "[{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec}, ETA {eta}) {msg}";

/// Progress on stderr.
#[derive(Debug)]
pub struct TermProgress {
    bar: ProgressBar,
    files: AtomicU64,
    out: Output,
}

impl TermProgress {
    /// A spinner on stderr, or a hidden one when it must not be shown.
    pub fn new(out: Output) -> Self {
        let visible = !out.quiet && !out.json && std::io::stderr().is_terminal();
        let bar = if visible {
            let b = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            if let Ok(style) = ProgressStyle::with_template(SPINNER) {
                b.set_style(style);
            }
            b.enable_steady_tick(Duration::from_millis(120));
            b
        } else {
            ProgressBar::hidden()
        };
        Self {
            bar,
            files: AtomicU64::new(0),
            out,
        }
    }

    /// Removes the display (call before printing a summary).
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }

    fn eprint(&self, line: &str) {
        // suspend() clears the bar, runs the closure, and redraws the bar below.
        self.bar.suspend(|| eprintln!("{line}"));
    }
}

impl repo_core::Progress for TermProgress {
    fn set_total(&self, bytes: u64) {
        if let Ok(style) = ProgressStyle::with_template(BAR) {
            self.bar.set_style(style.progress_chars("=> "));
        }
        self.bar.set_length(bytes);
    }

    fn add_bytes(&self, n: u64) {
        self.bar.inc(n);
    }

    fn add_file(&self, path: &Path) {
        let n = self.files.fetch_add(1, Relaxed) + 1;
        self.bar.set_message(format!("{n} files"));
        if !self.out.quiet && self.out.verbose >= 2 {
            self.eprint(&path.display().to_string());
        }
    }

    fn warn(&self, warning: &repo_core::Warning) {
        if !self.out.quiet {
            self.eprint(&format!("cairn: warning: {warning}"));
        }
    }
}

impl Drop for TermProgress {
    fn drop(&mut self) {
        // An error path must not leave a half-drawn bar on the terminal.
        self.bar.finish_and_clear();
    }
}
