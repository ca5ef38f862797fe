//! Dependency hygiene (issue 13): every crate a manifest declares is used, no
//! version is pinned exactly, and the project never points at files outside
//! itself. `cargo machete` would do the first, but building it would add
//! minutes to CI; this reads the manifests with a few lines of parsing.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Dependencies that are used without being named in Rust code, each with
/// the reason. (None today; an entry here needs its reason.)
const USED_WITHOUT_A_PATH: &[(&str, &str)] = &[];

/// The keys of the tables of `manifest` whose header satisfies `wanted`
/// (`[dependencies]`, `[target.'cfg(unix)'.dev-dependencies]`, …), in order.
fn table_keys(manifest: &str, wanted: impl Fn(&str) -> bool) -> Vec<String> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in manifest.lines().map(str::trim) {
        if let Some(header) = line.strip_prefix('[') {
            inside = wanted(header.trim_end_matches(']'));
            continue;
        }
        if !inside || line.is_empty() || line.starts_with('#') {
            continue;
        }
        let key = line
            .split(['=', '.'])
            .next()
            .unwrap()
            .trim()
            .trim_matches('"');
        if !key.is_empty() {
            out.push(key.to_owned());
        }
    }
    out
}

fn is_deps(header: &str) -> bool {
    header == "dependencies" || header.ends_with(".dependencies")
}

fn is_dev_deps(header: &str) -> bool {
    header == "dev-dependencies" || header.ends_with(".dev-dependencies")
}

/// The members of the workspace, plus the fuzz crate (a workspace of its own).
fn members() -> Vec<String> {
    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let start = manifest.find("members = [").expect("a members list") + 11;
    let end = start + manifest[start..].find(']').unwrap();
    let mut out: Vec<String> = manifest[start..end]
        .split(',')
        .map(|m| m.trim().trim_matches('"').to_owned())
        .filter(|m| !m.is_empty())
        .collect();
    out.push("fuzz".to_owned());
    out
}

/// Every `.rs` file below `dir` without its `//` comments, skipping build
/// output.
fn rust_sources(dir: &Path) -> String {
    let mut all = String::new();
    let walk = walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_entry(|e| e.file_name() != "target");
    for e in walk.map(Result::unwrap) {
        if e.path().extension().is_some_and(|x| x == "rs") {
            for line in std::fs::read_to_string(e.path()).unwrap().lines() {
                all += line.split("//").next().unwrap();
                all.push('\n');
            }
        }
    }
    all
}

/// Whether `src` names crate `name` in a path: `use name`, `name::`,
/// `extern crate name` or a macro `name!` (not preceded by an identifier
/// character or `::`, so `foo_name::` and `x::name::` do not count).
fn names_crate(src: &str, name: &str) -> bool {
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    src.match_indices(name).any(|(at, _)| {
        let before = &src[..at];
        let after = &src[at + name.len()..];
        if before.ends_with(ident) || before.ends_with("::") || after.starts_with(ident) {
            return false;
        }
        after.starts_with("::")
            || after.starts_with('!')
            || before.trim_end().ends_with("use")
            || before.trim_end().ends_with("extern crate")
    })
}

/// A crate's name as Rust code spells it.
fn rust_name(dep: &str) -> String {
    dep.replace('-', "_")
}

#[test]
fn every_declared_dependency_is_used() {
    let mut unused = Vec::new();
    for member in members() {
        let dir = root().join(&member);
        let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        let package = manifest
            .lines()
            .find_map(|l| l.trim().strip_prefix("name = "))
            .map(|n| n.trim_matches('"').to_owned())
            .unwrap_or_default();
        let src = rust_sources(&dir);
        let declared = table_keys(&manifest, |h| is_deps(h) || is_dev_deps(h));
        for dep in declared {
            if dep == package || USED_WITHOUT_A_PATH.iter().any(|(d, _)| *d == dep) {
                continue;
            }
            if !names_crate(&src, &rust_name(&dep)) {
                unused.push(format!("{member}: {dep}"));
            }
        }
    }
    assert!(unused.is_empty(), "declared but never used: {unused:?}");
}

#[test]
fn dev_dependencies_do_not_repeat_dependencies() {
    let mut repeated = Vec::new();
    for member in members() {
        let manifest = std::fs::read_to_string(root().join(&member).join("Cargo.toml")).unwrap();
        let normal = table_keys(&manifest, is_deps);
        for dep in table_keys(&manifest, is_dev_deps) {
            // Repeating a dependency is right only to turn on test-only features.
            let adds_features = manifest
                .lines()
                .any(|l| l.starts_with(&format!("{dep} = {{")) && l.contains("features"));
            if normal.contains(&dep) && !adds_features {
                repeated.push(format!("{member}: {dep}"));
            }
        }
    }
    assert!(
        repeated.is_empty(),
        "dev-dependencies already available as dependencies: {repeated:?}"
    );
}

#[test]
fn every_workspace_dependency_is_declared_by_a_member() {
    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let used: Vec<String> = members()
        .iter()
        .flat_map(|m| {
            let manifest = std::fs::read_to_string(root().join(m).join("Cargo.toml")).unwrap();
            table_keys(&manifest, |h| is_deps(h) || is_dev_deps(h))
        })
        .collect();
    let unused: Vec<String> = table_keys(&manifest, |h| h == "workspace.dependencies")
        .into_iter()
        .filter(|d| !used.contains(d))
        .collect();
    assert!(
        unused.is_empty(),
        "workspace dependencies no member uses: {unused:?}"
    );
}

#[test]
fn no_dependency_is_pinned_exactly() {
    // `=x.y.z` in a library breaks the resolution of every project that also
    // depends on another version; the golden vectors catch a format change.
    for member in [".", "repo-core", "repo-cli", "benches", "tests", "fuzz"] {
        let manifest = std::fs::read_to_string(root().join(member).join("Cargo.toml")).unwrap();
        for line in manifest.lines() {
            assert!(
                !line.contains("\"=") && !line.contains("version = \"="),
                "{member}/Cargo.toml pins a version exactly: {line}"
            );
        }
    }
}

#[test]
fn the_project_names_no_file_outside_itself() {
    // Built at run time so that this file does not match itself.
    let outside = [
        ["..", "/shared"].concat(),
        ["/work", "/"].concat(),
        ["shared", "/research"].concat(),
        ["shared", "/bench"].concat(),
        ["STYLE", ".md"].concat(),
        ["STYLE", " §"].concat(),
    ];
    let mut found = Vec::new();
    let walk = walkdir::WalkDir::new(root())
        .into_iter()
        .filter_entry(|e| !matches!(e.file_name().to_str(), Some("target" | ".git")));
    for e in walk.map(Result::unwrap) {
        let text_kind = e
            .path()
            .extension()
            .and_then(|x| x.to_str())
            .is_some_and(|x| ["rs", "md", "toml", "py", "sh", "txt"].contains(&x));
        let script = e.path().parent().and_then(Path::file_name) == Some(".ci".as_ref());
        if !e.file_type().is_file() || !(text_kind || script) {
            continue;
        }
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        for (n, line) in text.lines().enumerate() {
            if let Some(what) = outside.iter().find(|o| line.contains(o.as_str())) {
                let rel = e.path().strip_prefix(root()).unwrap_or(e.path());
                found.push(format!("{}:{}: {what}", rel.display(), n + 1));
            }
        }
    }
    assert!(
        found.is_empty(),
        "references to files outside the project: {found:#?}"
    );
}

#[test]
fn the_crate_name_matcher_needs_a_path() {
    assert!(names_crate("use memmap2::Mmap;", "memmap2"));
    assert!(names_crate(
        "let x = serde_json::to_string(&v);",
        "serde_json"
    ));
    assert!(names_crate("use rand;", "rand"));
    assert!(names_crate(
        "fuzz_target!(|d| ()); libfuzzer_sys::fuzz_target!",
        "libfuzzer_sys"
    ));
    assert!(!names_crate("// memmap2 would count pages", "memmap2"));
    assert!(!names_crate("use my_rand::x;", "rand"));
    assert!(!names_crate("let r = core::rand::x;", "rand"));
    assert!(!names_crate("hostname_of()", "hostname"));
}
