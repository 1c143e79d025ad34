//! Tidy checks: every source file says what it is for, and no debugging leftovers are committed.

use std::path::Path;

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn every_module_is_documented_and_free_of_leftovers() {
    let mut files = Vec::new();
    rust_files(&crate::support::repo_root().join("crates"), &mut files);
    assert!(files.len() > 20, "found the sources");
    let mut problems = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        if !text.trim_start().starts_with("//!") {
            problems.push(format!(
                "{}: does not open with a `//!` line saying what it is for",
                f.display()
            ));
        }
        for bad in [
            concat!("db", "g!("),
            concat!("to", "do!("),
            concat!("unimpl", "emented!("),
        ] {
            if text.contains(bad) {
                problems.push(format!("{}: contains {bad}", f.display()));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
