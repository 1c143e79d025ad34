//! Paths made from names: every path built from a run name, node id or artifact key goes
//! through [`within`], so none can leave the directory it belongs in.

use std::path::{Path, PathBuf};

/// A path made from a name or key that would not stay below its directory.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidPath(pub String);

/// As a task's error.
impl From<InvalidPath> for String {
    fn from(e: InvalidPath) -> String {
        e.0
    }
}

/// `root` joined with `rel`, a relative path of plain names (`a/b.txt`, `./a` too): absolute
/// paths, `..`, NUL and empty paths are refused, so the result is always below `root`. Every
/// path built from a run name, node id or artifact key goes through here.
pub fn within(root: &Path, rel: &str) -> Result<PathBuf, InvalidPath> {
    use std::path::Component;
    let bad = |why: &str| {
        Err(InvalidPath(format!(
            "`{}` {why}",
            rel.chars()
                .take(80)
                .flat_map(char::escape_debug)
                .collect::<String>()
        )))
    };
    if rel.contains('\0') {
        return bad("contains NUL");
    }
    let mut out = root.to_path_buf();
    let mut parts = 0;
    for c in Path::new(rel).components() {
        match c {
            Component::Normal(n) => {
                out.push(n);
                parts += 1;
            }
            Component::CurDir => {}
            Component::ParentDir => return bad("leaves its directory (`..`)"),
            Component::RootDir | Component::Prefix(_) => return bad("is an absolute path"),
        }
    }
    if parts == 0 {
        return bad("is empty");
    }
    Ok(out)
}

/// A task's run directory (`runs/RUN`) and work directory (`runs/RUN/work/NODE`), both confined
/// to the work root.
pub(crate) fn task_dirs(
    work_root: &Path,
    task: &weir_core::run::TaskSpec,
) -> Result<(PathBuf, PathBuf), String> {
    let run_dir = within(work_root, &task.run).map_err(|e| e.to_string())?;
    let work = within(&run_dir.join("work"), &task.node_id).map_err(|e| e.to_string())?;
    Ok((run_dir, work))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn within_stays_below_its_root() {
        let root = Path::new("/data/artifacts");
        assert_eq!(within(root, "a/b.txt").unwrap(), root.join("a/b.txt"));
        assert_eq!(within(root, "./a/").unwrap(), root.join("a"));
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/../../x",
            "/etc/passwd",
            "a\0b",
            "a/./..",
        ] {
            assert!(within(root, bad).is_err(), "{bad:?}");
        }
    }
}
