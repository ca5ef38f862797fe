//! The documents agree with themselves and with the code (issue 13): every
//! `SPEC §N` cited anywhere in the project is a section of SPEC.md, every
//! `docs/x.md §N` a section of that document, and the argon2id defaults SPEC
//! states are the ones new keys get.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use repo_core::crypto::KdfParams;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
}

/// Section numbers of a Markdown document: `## 7. Packs` gives `7`,
/// `### 7.2 Header` gives `7.2`.
fn sections(doc: &str) -> BTreeSet<String> {
    doc.lines()
        .filter(|l| l.starts_with("## ") || l.starts_with("### "))
        .filter_map(|l| l.trim_start_matches('#').split_whitespace().next())
        .map(|n| n.trim_end_matches('.').to_owned())
        .filter(|n| n.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .collect()
}

/// The section numbers that follow `prefix` in `text`, each with its line:
/// `SPEC §7.2` gives `7.2`, `SPEC §13, §22` gives both.
fn cited(text: &str, prefix: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        for (at, _) in line.match_indices(prefix) {
            let mut rest = &line[at + prefix.len()..];
            loop {
                let num: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_digit() || *c == '.')
                    .collect();
                let num = num.trim_end_matches('.').to_owned();
                if num.is_empty() {
                    break;
                }
                rest = &rest[num.len()..];
                out.push((n + 1, num));
                // A list goes on: `§13, §22` or `§13 and §22`.
                match rest
                    .strip_prefix(", §")
                    .or_else(|| rest.strip_prefix(" and §"))
                {
                    Some(r) => rest = r,
                    None => break,
                }
            }
        }
    }
    out
}

/// Every tracked-looking text file of the project (not build output).
fn project_files() -> Vec<PathBuf> {
    walkdir::WalkDir::new(root())
        .into_iter()
        .filter_entry(|e| !matches!(e.file_name().to_str(), Some("target" | ".git")))
        .map(Result::unwrap)
        .filter(|e| e.file_type().is_file())
        .filter(|e| {
            e.path()
                .extension()
                .is_some_and(|x| ["rs", "md", "py", "sh", "toml"].iter().any(|k| x == *k))
        })
        .map(|e| e.into_path())
        .collect()
}

#[test]
fn every_cited_section_exists() {
    let spec = sections(&read("SPEC.md"));
    let mut missing = Vec::new();
    for path in project_files() {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let rel = path.strip_prefix(root()).unwrap().display().to_string();
        let mut check = |text: &str, prefix: &str, known: &BTreeSet<String>, doc: &str| {
            for (line, num) in cited(text, prefix) {
                if !known.contains(&num) {
                    missing.push(format!("{rel}:{line}: {doc} §{num}"));
                }
            }
        };
        check(&text, "SPEC §", &spec, "SPEC");
        check(&text, "SPEC.md §", &spec, "SPEC");
        if rel == "SPEC.md" {
            // Inside SPEC.md a bare § is SPEC's own, unless it is an RFC's.
            check(&text.replace("RFC 8878 §", "RFC 8878 "), "§", &spec, "SPEC");
        }
        for entry in std::fs::read_dir(root().join("docs")).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            let own = sections(&read(&format!("docs/{name}")));
            check(&text, &format!("docs/{name} §"), &own, &name);
            if rel == format!("docs/{name}") {
                // A bare § in a behaviour document is its own section.
                check(&text.replace("SPEC §", "SPEC "), "§", &own, &name);
            }
        }
    }
    assert!(
        missing.is_empty(),
        "cited sections that do not exist: {missing:#?}"
    );
}

#[test]
fn spec_states_the_kdf_defaults_the_code_uses() {
    let d = KdfParams::default();
    let spec = read("SPEC.md");
    let mut stated = 0;
    for (at, _) in spec.match_indices("t = 3, p = ") {
        let p: String = spec[at + 11..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        assert_eq!(d.iterations, 3);
        assert_eq!(
            p,
            d.parallelism.to_string(),
            "SPEC states p = {p} near byte {at}"
        );
        stated += 1;
    }
    assert!(stated >= 2, "SPEC states the defaults in §4 and §17");
    assert!(spec.contains(&format!("m = {} KiB", fmt_thousands(d.memory_kib))));
}

fn fmt_thousands(n: u32) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[test]
fn the_citation_parser_reads_lists() {
    let got = cited("see SPEC §13, §22.1 and §6 but not §x", "SPEC §");
    let nums: Vec<&str> = got.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(nums, ["13", "22.1", "6"]);
    assert_eq!(fmt_thousands(65536), "65,536");
}
