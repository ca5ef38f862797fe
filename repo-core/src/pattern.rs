//! Path patterns: the one glob dialect of backup excludes, restore includes
//! and excludes, and `find` (SPEC §15, README "Patterns").
//!
//! The rules are restic's:
//! - `*`, `?` and `[…]` never match a `/`; `**` matches any number of
//!   directories;
//! - a pattern without `/` is matched against the entry's name, at any depth;
//! - a pattern starting with `/` is matched against the whole path from the
//!   snapshot's (or file system's) root;
//! - any other pattern with a `/` may match at any depth (`log/*.gz` matches
//!   `/var/log/a.gz`);
//! - a trailing `/` is ignored; `\` escapes the next character.
//!
//! Callers that walk a tree apply a match to the entry and everything below
//! it; that is their business, not the pattern's.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::error::{Error, Result};

/// One compiled pattern (see the module doc for the rules).
#[derive(Debug, Clone)]
pub struct PathPattern {
    set: PathPatterns,
}

impl PathPattern {
    /// Compiles `pattern`.
    pub fn new(pattern: &str) -> Result<Self> {
        Ok(Self {
            set: PathPatterns::new([pattern])?,
        })
    }

    /// True if the entry `name` at `path` (raw bytes, `/`-separated) matches.
    pub fn matches(&self, path: &[u8], name: &[u8]) -> bool {
        self.set.matches(path, name)
    }

    /// False when the pattern looks at names only, so [`PathPattern::matches`]
    /// may be given an empty path (a walk then need not build one per entry).
    pub fn needs_path(&self) -> bool {
        self.set.by_path.is_some()
    }
}

/// Several patterns; an entry matches when any of them does. Matching costs
/// two glob-set lookups whatever the number of patterns.
#[derive(Debug, Clone, Default)]
pub struct PathPatterns {
    by_name: Option<GlobSet>,
    by_path: Option<GlobSet>,
}

impl PathPatterns {
    /// Compiles every pattern; the first invalid one is named in the error.
    pub fn new<S: AsRef<str>>(patterns: impl IntoIterator<Item = S>) -> Result<Self> {
        let (mut names, mut paths) = (GlobSetBuilder::new(), GlobSetBuilder::new());
        let (mut n_names, mut n_paths) = (0, 0);
        for pattern in patterns {
            let pattern = pattern.as_ref();
            let pat = pattern.trim_end_matches('/');
            if pat.is_empty() {
                return Err(Error::InvalidArgument(format!(
                    "pattern {pattern:?} matches no name"
                )));
            }
            let by_name = !pat.contains('/');
            let full = if by_name || pat.starts_with('/') || pat.starts_with("**") {
                pat.to_string()
            } else {
                format!("**/{pat}")
            };
            let glob = GlobBuilder::new(&full)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| Error::InvalidArgument(format!("pattern {pattern:?}: {e}")))?;
            if by_name {
                names.add(glob);
                n_names += 1;
            } else {
                paths.add(glob);
                n_paths += 1;
            }
        }
        let build = |b: GlobSetBuilder, n: usize| -> Result<Option<GlobSet>> {
            if n == 0 {
                return Ok(None);
            }
            b.build()
                .map(Some)
                .map_err(|e| Error::InvalidArgument(e.to_string()))
        };
        Ok(Self {
            by_name: build(names, n_names)?,
            by_path: build(paths, n_paths)?,
        })
    }

    /// True when no pattern was given.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_none() && self.by_path.is_none()
    }

    /// True if the entry `name` at `path` (raw bytes, `/`-separated) matches
    /// any pattern.
    pub fn matches(&self, path: &[u8], name: &[u8]) -> bool {
        let os = |b: &[u8]| Path::new(OsStr::from_bytes(b)).to_path_buf();
        self.by_name.as_ref().is_some_and(|g| g.is_match(os(name)))
            || self.by_path.as_ref().is_some_and(|g| g.is_match(os(path)))
    }

    /// [`matches`](Self::matches) for a file-system path; its name is the
    /// last component.
    pub fn matches_path(&self, path: &Path) -> bool {
        let name = path.file_name().map_or(&[][..], |n| n.as_bytes());
        self.matches(path.as_os_str().as_bytes(), name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_and_path_patterns() {
        let p = PathPattern::new("*.log").unwrap();
        assert!(p.matches(b"/var/log/a.log", b"a.log"));
        assert!(!p.matches(b"/var/a.log/x", b"x"));
        let p = PathPattern::new("/var/*/a.log").unwrap();
        assert!(p.matches(b"/var/log/a.log", b"a.log"));
        assert!(
            !p.matches(b"/var/log/deep/a.log", b"a.log"),
            "* crossed a /"
        );
        let p = PathPattern::new("log/*.log").unwrap();
        assert!(p.matches(b"/var/log/a.log", b"a.log"));
        assert!(p.matches(b"/log/a.log", b"a.log"));
        assert!(!p.matches(b"/var/logs/a.log", b"a.log"));
        let p = PathPattern::new("/srv/**/*.db").unwrap();
        assert!(p.matches(b"/srv/a/b/c.db", b"c.db"));
        let p = PathPattern::new("caf\u{e9}*").unwrap();
        assert!(
            !p.matches(b"/caf\xe9", b"caf\xe9"),
            "latin-1 bytes are not é"
        );
        let p = PathPattern::new("caf?").unwrap();
        assert!(
            p.matches(b"/caf\xe9", b"caf\xe9"),
            "? matches a non-UTF-8 byte"
        );
        let p = PathPattern::new("/tmp/").unwrap();
        assert!(p.matches(b"/tmp", b"tmp"), "a trailing / is ignored");
        assert!(PathPattern::new("/").is_err());
        assert!(PathPattern::new("a[").is_err());
    }

    #[test]
    fn a_set_matches_when_any_pattern_does() {
        let set = PathPatterns::new(["*.tmp", "/etc/*.conf"]).unwrap();
        assert!(set.matches_path(Path::new("/home/a/x.tmp")));
        assert!(set.matches_path(Path::new("/etc/a.conf")));
        assert!(!set.matches_path(Path::new("/etc/sub/a.conf")));
        assert!(PathPatterns::new(Vec::<String>::new()).unwrap().is_empty());
        let err = PathPatterns::new(["ok", "b["]).unwrap_err().to_string();
        assert!(err.contains("\"b[\""), "{err}");
    }
}
