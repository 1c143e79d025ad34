//! A task's private root. In its own mount namespace a task gets a fresh tmpfs as `/`, the
//! host's top-level entries bound into it, its own paths (declared files, volumes, the private
//! `/tmp`) bound on top, and then `pivot_root`s into it. Every mount point is made in that tmpfs
//! or in weir's own directories, never on the host: a task leaves the host's `/` as it found it,
//! and what it writes at `/` (its working directory, as in a container) goes with it.
//!
//! A mount point whose directory the host lacks (a volume at `/root/.cache` on a host without
//! one) makes that host directory private on the way down: it becomes a directory of the tmpfs
//! with each of the host's entries bound into it, so the task still sees them.
//!
//! This module only plans: [`plan`] returns the steps, which `spawn` runs in the child.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

/// Where the new root is mounted before the task enters it: inside the task's namespace the
/// host's `/tmp` is never part of the view (the task has its own), so covering it hides nothing.
pub(crate) const AT: &str = "/tmp";

/// One step the child takes, in order, before it enters the new root. Every path is where the
/// step happens before the switch, under [`AT`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    /// A directory (one that exists already is fine).
    Dir(PathBuf),
    /// An empty file to mount onto (one that exists already is left as it is).
    File(PathBuf),
    Link {
        target: PathBuf,
        at: PathBuf,
    },
    /// A host path bound, with the mounts below it.
    Mirror {
        host: PathBuf,
        at: PathBuf,
    },
    /// The task's bind `k` (its source is opened before the first mount).
    Bind {
        k: usize,
        at: PathBuf,
    },
    /// An empty read-only tmpfs over a path, where the view has it (weir's data directory).
    Hide(PathBuf),
    /// A fresh tmpfs (the private `/tmp` of a task that exchanges no files with weir).
    Tmpfs(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    /// A directory of the new root's own.
    Private,
    /// The host's entry, bound.
    Mirror {
        dir: bool,
    },
    Link(PathBuf),
}

/// The steps that build a task's root from its bind mounts (host source, task path, in order)
/// and the directories to hide. A task that exchanges no files (`tmpfs_tmp`: no binds, /tmp a
/// fresh tmpfs) keeps the host's root: for it, only the hiding and the tmpfs.
pub(crate) fn plan(binds: &[(PathBuf, PathBuf)], hide: &[PathBuf], tmpfs_tmp: bool) -> Vec<Op> {
    if tmpfs_tmp {
        let mut ops: Vec<Op> = hide.iter().map(|h| Op::Hide(h.clone())).collect();
        ops.extend(
            binds
                .iter()
                .enumerate()
                .map(|(k, (_, t))| Op::Bind { k, at: t.clone() }),
        );
        ops.push(Op::Tmpfs(PathBuf::from("/tmp")));
        return ops;
    }
    let root = Path::new("/");
    let mut tree = BTreeMap::new();
    tree.insert(root.to_path_buf(), Node::Private);
    for (name, node) in top_level() {
        tree.insert(root.join(name), node);
    }
    tree.insert(PathBuf::from("/tmp"), Node::Private);
    let targets: Vec<PathBuf> = binds.iter().map(|(_, t)| resolve(t)).collect();
    for (k, ((host, _), target)) in binds.iter().zip(&targets).enumerate() {
        if inside_bound(&targets[..k], target).is_none() && !target.starts_with("/tmp") {
            make_way(&mut tree, target, host.is_dir());
        }
    }
    let at = |p: &Path| Path::new(AT).join(p.strip_prefix("/").unwrap_or(p));
    let mut ops = Vec::new();
    for (p, node) in &tree {
        if p == root {
            continue;
        }
        ops.extend(match node {
            Node::Private => vec![Op::Dir(at(p))],
            Node::Mirror { dir } => vec![
                if *dir {
                    Op::Dir(at(p))
                } else {
                    Op::File(at(p))
                },
                Op::Mirror {
                    host: p.clone(),
                    at: at(p),
                },
            ],
            Node::Link(target) => vec![Op::Link {
                target: target.clone(),
                at: at(p),
            }],
        });
    }
    ops.extend(hide.iter().map(|h| Op::Hide(at(h))));
    for (k, ((host, _), target)) in binds.iter().zip(&targets).enumerate() {
        // inside an earlier bind (weir's own directory): its directories are made there
        if let Some(outer) = inside_bound(&targets[..k], target).or_else(|| {
            (target.starts_with("/tmp") && target != Path::new("/tmp"))
                .then(|| PathBuf::from("/tmp"))
        }) {
            let mut between: Vec<&Path> = target
                .ancestors()
                .skip(1)
                .take_while(|a| *a != outer)
                .collect();
            between.reverse();
            ops.extend(between.into_iter().map(|d| Op::Dir(at(d))));
        }
        ops.push(if host.is_dir() {
            Op::Dir(at(target))
        } else {
            Op::File(at(target))
        });
        ops.push(Op::Bind { k, at: at(target) });
    }
    ops
}

/// The earlier bind target that `target` lies strictly inside, if any (the deepest).
fn inside_bound(earlier: &[PathBuf], target: &Path) -> Option<PathBuf> {
    earlier
        .iter()
        .filter(|b| target.starts_with(b) && target != b.as_path())
        .max_by_key(|b| b.components().count())
        .cloned()
}

/// `p` with the host's symbolic links in its existing part resolved, as the mount will
/// resolve them (`/bin/x` is `/usr/bin/x` where `/bin` links there).
fn resolve(p: &Path) -> PathBuf {
    if p.starts_with("/tmp") {
        return p.to_path_buf();
    }
    for a in p.ancestors() {
        if let Ok(real) = std::fs::canonicalize(a) {
            return real.join(p.strip_prefix(a).unwrap_or(Path::new("")));
        }
    }
    p.to_path_buf()
}

/// Makes sure a mount point for `target` can be made without writing to the host: each
/// directory on the way that the host lacks, or has with the wrong kind, is made in the
/// tmpfs, and the host directory it would have been made in becomes private.
fn make_way(tree: &mut BTreeMap<PathBuf, Node>, target: &Path, is_dir: bool) {
    let mut way: Vec<&Path> = target.ancestors().collect();
    way.reverse();
    for (i, c) in way.iter().enumerate().skip(1) {
        let last = i + 1 == way.len();
        let want_dir = !last || is_dir;
        let parent = way[i - 1];
        match tree.get(*c) {
            Some(Node::Private) => continue,
            Some(Node::Mirror { dir }) if *dir == want_dir => continue,
            Some(_) => {
                // the host's entry is of the other kind: a fresh one takes its place
                tree.remove(*c);
            }
            None if tree.get(parent) == Some(&Node::Private) => {}
            None => {
                // inside a mirrored directory: the host's own entry, if it is the right kind
                let host = std::fs::symlink_metadata(c);
                if host.is_ok_and(|m| m.is_dir() == want_dir) {
                    continue;
                }
                privatize(tree, parent);
                tree.remove(*c);
            }
        }
        if !last {
            tree.insert(c.to_path_buf(), Node::Private);
        }
    }
}

/// Makes `dir` and each directory above it private, their host entries bound one by one.
fn privatize(tree: &mut BTreeMap<PathBuf, Node>, dir: &Path) {
    let mut way: Vec<&Path> = dir.ancestors().collect();
    way.reverse();
    for d in way {
        if tree.get(d) == Some(&Node::Private) {
            continue;
        }
        tree.insert(d.to_path_buf(), Node::Private);
        for (name, node) in entries(d) {
            tree.entry(d.join(name)).or_insert(node);
        }
    }
}

/// The entries of a host directory, as nodes.
fn entries(dir: &Path) -> Vec<(PathBuf, Node)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| {
            let t = e.file_type().ok()?;
            let node = if t.is_symlink() {
                Node::Link(std::fs::read_link(e.path()).ok()?)
            } else {
                Node::Mirror { dir: t.is_dir() }
            };
            Some((PathBuf::from(e.file_name()), node))
        })
        .collect()
}

/// The host's top-level entries but `/tmp`, read again only when `/` has changed.
fn top_level() -> Vec<(PathBuf, Node)> {
    type Entries = Vec<(PathBuf, Node)>;
    static CACHE: Mutex<Option<(SystemTime, Entries)>> = Mutex::new(None);
    let stamp = std::fs::metadata("/").and_then(|m| m.modified()).ok();
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let (Some(s), Some((at, list))) = (stamp, cache.as_ref())
        && *at == s
    {
        return list.clone();
    }
    let list: Vec<(PathBuf, Node)> = entries(Path::new("/"))
        .into_iter()
        .filter(|(n, _)| n != Path::new("tmp"))
        .collect();
    if let Some(s) = stamp {
        *cache = Some((s, list.clone()));
    }
    list
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(p: &str) -> PathBuf {
        Path::new(AT).join(p.trim_start_matches('/'))
    }

    #[test]
    fn the_hosts_top_level_is_mirrored_and_tmp_is_private() {
        let ops = plan(&[], &[], false);
        assert!(ops.contains(&Op::Mirror {
            host: "/usr".into(),
            at: at("/usr")
        }));
        assert!(ops.contains(&Op::Dir(at("/tmp"))));
        assert!(
            !ops.iter()
                .any(|o| matches!(o, Op::Mirror { host, .. } if host == Path::new("/tmp")))
        );
    }

    #[test]
    fn a_task_that_exchanges_no_files_keeps_the_hosts_root() {
        let ops = plan(&[], &[PathBuf::from("/var/lib/weir")], true);
        assert_eq!(
            ops,
            [Op::Hide("/var/lib/weir".into()), Op::Tmpfs("/tmp".into())]
        );
    }

    #[test]
    fn a_path_the_host_lacks_is_made_in_the_tmpfs() {
        let work = tempfile::tempdir().unwrap();
        let file = work.path().join("f");
        std::fs::write(&file, "").unwrap();
        let binds = vec![
            (work.path().to_path_buf(), PathBuf::from("/no-such-top/a/b")),
            (file.clone(), PathBuf::from("/no-such-file.txt")),
        ];
        let ops = plan(&binds, &[], false);
        let pos = |o: &Op| ops.iter().position(|x| x == o).unwrap();
        assert!(pos(&Op::Dir(at("/no-such-top"))) < pos(&Op::Dir(at("/no-such-top/a"))));
        assert!(
            pos(&Op::Dir(at("/no-such-top/a/b")))
                < pos(&Op::Bind {
                    k: 0,
                    at: at("/no-such-top/a/b")
                })
        );
        assert!(
            pos(&Op::File(at("/no-such-file.txt")))
                < pos(&Op::Bind {
                    k: 1,
                    at: at("/no-such-file.txt")
                })
        );
    }

    #[test]
    fn a_missing_directory_inside_a_host_directory_makes_that_directory_private() {
        let work = tempfile::tempdir().unwrap();
        let binds = vec![(
            work.path().to_path_buf(),
            PathBuf::from("/etc/weir-no-such-dir/x"),
        )];
        let ops = plan(&binds, &[], false);
        // /etc is no longer bound whole: its entries are, and the new directory is the tmpfs's
        assert!(!ops.contains(&Op::Mirror {
            host: "/etc".into(),
            at: at("/etc")
        }));
        assert!(ops.contains(&Op::Dir(at("/etc"))));
        assert!(ops.contains(&Op::Mirror {
            host: "/etc/passwd".into(),
            at: at("/etc/passwd")
        }));
        assert!(ops.contains(&Op::Dir(at("/etc/weir-no-such-dir"))));
        // the rest of the host is still bound whole
        assert!(ops.contains(&Op::Mirror {
            host: "/usr".into(),
            at: at("/usr")
        }));
    }

    #[test]
    fn mount_points_inside_an_earlier_bind_are_made_there() {
        let work = tempfile::tempdir().unwrap();
        let binds = vec![
            (work.path().to_path_buf(), PathBuf::from("/tmp")),
            (work.path().to_path_buf(), PathBuf::from("/tmp/v/w")),
        ];
        let ops = plan(&binds, &[], false);
        let pos = |o: &Op| ops.iter().position(|x| x == o).unwrap();
        assert!(
            pos(&Op::Bind {
                k: 0,
                at: at("/tmp")
            }) < pos(&Op::Dir(at("/tmp/v")))
        );
        assert!(
            pos(&Op::Dir(at("/tmp/v/w")))
                < pos(&Op::Bind {
                    k: 1,
                    at: at("/tmp/v/w")
                })
        );
    }
}
