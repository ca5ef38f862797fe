//! Progress reporting hooks; the CLI implements them with a progress bar.

use crate::warning::Warning;
use std::path::Path;

/// Receives progress events from long operations. All methods default to
/// doing nothing, so an implementation overrides only what it shows.
pub trait Progress: Send + Sync {
    /// Total amount of work, when known (bytes).
    fn set_total(&self, _bytes: u64) {}
    /// `n` more bytes processed.
    fn add_bytes(&self, _n: u64) {}
    /// One more file done.
    fn add_file(&self, _path: &Path) {}
    /// A non-fatal problem (unreadable file, file changed while read, …).
    fn warn(&self, _warning: &Warning) {}
}

/// Reports nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {}
