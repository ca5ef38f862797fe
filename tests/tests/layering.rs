//! repo-core's modules form a DAG (README, Layout): a module may use only itself and
//! the modules listed above it in `ORDER`. Rust does not stop cycles, so this
//! test does, from every `crate::x` path outside comments and test modules.

use std::path::Path;

/// Top-level modules of repo-core, lowest layer first.
const ORDER: &str = "format duration size id encoding crypto hash chunker compress blob pack tree snapshot config \
    backend cache lock dict warning error pattern index mark key_hint keyring repository audit wal reader keys epochs unattended progress verification backup restore check inspect forget \
    prune rekey repair copy unstable lib";

/// `src` without `//` comments and without `#[cfg(test)] mod … { … }` blocks.
fn strip(src: &str) -> String {
    let mut s: String = src
        .lines()
        .map(|l| l.split("//").next().unwrap().to_owned() + "\n")
        .collect();
    while let Some(at) = s
        .find("#[cfg(test)]")
        .filter(|&at| s[at + 12..].trim_start().starts_with("mod "))
    {
        let mut depth = 0;
        let close = s[at..].find(|c| {
            depth += match c {
                '{' => 1,
                '}' => -1,
                _ => 0,
            };
            c == '}' && depth == 0
        });
        s.replace_range(at..close.map_or(s.len(), |c| at + c + 1), "");
    }
    s
}

/// First segment of every `crate::` path; `crate::{a, b::{c}}` gives `a` and `b`.
fn crate_refs(src: &str) -> Vec<String> {
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut out = Vec::new();
    for (at, _) in src
        .match_indices("crate::")
        .filter(|(at, _)| !src[..*at].ends_with(|c| ident(c) || c == '$'))
    {
        let rest = &src[at + 7..];
        let Some(group) = rest.strip_prefix('{') else {
            out.push(rest.chars().take_while(|&c| ident(c)).collect());
            continue;
        };
        let (mut level, mut item, mut done) = (0, String::new(), false);
        for c in group.chars() {
            match c {
                '{' => level += 1,
                '}' if level == 0 => break,
                '}' => level -= 1,
                ',' if level == 0 => {
                    out.push(std::mem::take(&mut item));
                    done = false;
                }
                c if level == 0 && !done && ident(c) => item.push(c),
                _ => done |= !item.is_empty(),
            }
        }
        out.push(item);
    }
    out.retain(|m| !m.is_empty());
    out
}

/// One message per offending file and edge in the `src` directory of a crate.
fn violations(src: &Path) -> Vec<String> {
    let rank = |m: &str| ORDER.split_whitespace().position(|o| o == m);
    let mut problems = Vec::new();
    for e in walkdir::WalkDir::new(src).into_iter().map(Result::unwrap) {
        let rel = e.path().strip_prefix(src).unwrap();
        if e.path().extension().is_none_or(|x| x != "rs") || rel == Path::new("lib.rs") {
            continue;
        }
        let first = rel.iter().next().unwrap().to_string_lossy();
        let module = first.trim_end_matches(".rs");
        let Some(own) = rank(module) else {
            problems.push(format!(
                "{}: `{module}` is not in ORDER; add it there",
                rel.display()
            ));
            continue;
        };
        for used in crate_refs(&strip(&std::fs::read_to_string(e.path()).unwrap())) {
            // `crate::Thing` that names no module is a re-export from lib.rs.
            let is_mod = src.join(format!("{used}.rs")).exists() || src.join(&used).is_dir();
            let target = if is_mod { used.as_str() } else { "lib" };
            if rank(target).is_none_or(|r| r > own) {
                problems.push(format!(
                    "{}: `{module}` uses `{target}`, below it",
                    rel.display()
                ));
            }
        }
    }
    problems
}

#[test]
fn repo_core_modules_use_only_modules_above_them() {
    let problems = violations(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../repo-core/src"));
    assert!(
        problems.is_empty(),
        "layering violations:\n{}",
        problems.join("\n")
    );
}

#[test]
fn checker_finds_upward_edges_and_unlisted_modules() {
    let d = tempfile::tempdir().unwrap();
    let files = [
        ("lib.rs", "pub mod format; pub use crate::prune::X;"),
        (
            "format.rs",
            "use crate::{id, pack::{self, A}};\n// crate::prune\n",
        ),
        (
            "id.rs",
            "fn f() { crate::format::g(); $crate::prune::h(); }\n#[cfg(test)]\nmod tests {\n\
                   fn t() { if x {} crate::prune::h(); }\n}\nfn g() { crate::format::f() }",
        ),
        ("pack.rs", "use crate::Repository;"),
        ("shiny.rs", ""),
    ];
    for (name, text) in files {
        std::fs::write(d.path().join(name), text).unwrap();
    }
    let mut got = violations(d.path());
    got.sort();
    assert_eq!(
        got,
        [
            "format.rs: `format` uses `id`, below it",
            "format.rs: `format` uses `pack`, below it",
            "pack.rs: `pack` uses `lib`, below it",
            "shiny.rs: `shiny` is not in ORDER; add it there",
        ]
    );
}

/// The crate example and `repo-core/examples/` are the proof that a user
/// can work with the public API alone: they must not open the `unstable`
/// door that cairn's own tests use.
#[test]
fn examples_use_only_the_public_api() {
    let core = Path::new(env!("CARGO_MANIFEST_DIR")).join("../repo-core");
    let mut files = vec![core.join("src/lib.rs")];
    for e in std::fs::read_dir(core.join("examples")).unwrap() {
        files.push(e.unwrap().path());
    }
    assert!(files.len() >= 3, "{files:?}");
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let docs: String = if f.ends_with("lib.rs") {
            text.lines().filter(|l| l.starts_with("//!")).collect()
        } else {
            text
        };
        assert!(
            !docs.contains("unstable"),
            "{} uses the unstable door",
            f.display()
        );
        assert!(
            docs.contains("repo_core::"),
            "{} uses no repo_core API",
            f.display()
        );
    }
}
