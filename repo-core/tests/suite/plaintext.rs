//! Acceptance: no file name or content of the source appears in any
//! repository file (issue 2).

use std::fs;

use super::init_repo;

#[test]
fn repository_holds_no_plaintext() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    fs::create_dir_all(src.join("Very-Distinct-Directory-Name")).unwrap();
    let secret_name = "Unmistakable-File-Name-4711.txt";
    let secret_content = "THE-SECRET-CONTENT-LINE-0xC0FFEE ".repeat(2000);
    fs::write(
        src.join("Very-Distinct-Directory-Name").join(secret_name),
        &secret_content,
    )
    .unwrap();
    let repo = init_repo(d.path());
    repo.backup()
        .path(&src)
        .tag("Tag-Should-Be-Hidden")
        .run()
        .unwrap();
    repo.backup()
        .stream("Stream-Name-Hidden.sql", secret_content.as_bytes())
        .run()
        .unwrap();
    let needles: [&[u8]; 6] = [
        b"Very-Distinct-Directory-Name",
        secret_name.as_bytes(),
        b"THE-SECRET-CONTENT-LINE",
        b"Tag-Should-Be-Hidden",
        b"Stream-Name-Hidden",
        src.as_os_str().as_encoded_bytes(),
    ];
    let mut files = 0;
    for e in walkdir::WalkDir::new(d.path().join("repo")) {
        let e = e.unwrap();
        if !e.file_type().is_file() {
            continue;
        }
        files += 1;
        let bytes = fs::read(e.path()).unwrap();
        for n in needles {
            assert!(
                !bytes.windows(n.len()).any(|w| w == n),
                "{} contains {:?}",
                e.path().display(),
                String::from_utf8_lossy(n)
            );
        }
    }
    assert!(
        files >= 5,
        "expected config, key, packs, index, snapshots; found {files} files"
    );
}
