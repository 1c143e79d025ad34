//! Tasks found again after the engine restarts. Each started task's line in its run's append-only
//! `pids` file names its process, its supervisor (with the supervisor's start time, which tells
//! it from a later process given the same pid) and what collecting its outputs needs; a new
//! engine reads it back to watch the task to its end instead of running it again.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use weir_core::run::TaskSpec;

/// What is read from a task's files after its process exits (the task aside).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Outputs {
    /// The host path of the task's `$WEIR_METRICS`.
    pub metrics_file: PathBuf,
    pub param_paths: Vec<(String, PathBuf)>,
    pub art_paths: Vec<PathBuf>,
    /// Output paths the task had to write to: still untouched, they are missing.
    pub untouched: Vec<PathBuf>,
    /// The task's work and run directories (what an isolated task's outputs may lie in).
    pub work: PathBuf,
    pub run_dir: PathBuf,
}

#[derive(Serialize)]
struct RecordRef<'a> {
    task: &'a TaskSpec,
    gpus: &'a [String],
    outputs: Option<&'a Outputs>,
}

/// What a new engine needs to go on watching a task.
#[derive(Deserialize)]
pub(crate) struct Record {
    pub task: TaskSpec,
    pub gpus: Vec<String>,
    pub outputs: Option<Outputs>,
}

/// The JSON part of a task's line.
pub(crate) fn record(task: &TaskSpec, gpus: &[String], outputs: Option<&Outputs>) -> String {
    serde_json::to_string(&RecordRef {
        task,
        gpus,
        outputs,
    })
    .unwrap_or_default()
}

/// How a new engine finds a task's supervisor again: its pid, the numbers it keeps the task's
/// output files at, and the stdout file's inode (which tells it from a later process given the
/// same pid).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Handle {
    pub sup: i32,
    pub fds: [i32; 2],
    pub ino: u64,
}

/// A task's line: `NODE PID` (what a restart kills when the task cannot be watched again), then
/// for one that can: ` SUP FD1 FD2 INO JSON`.
pub(crate) fn line(node: &str, pid: i32, adoptable: Option<(Handle, &str)>) -> String {
    match adoptable {
        Some((h, json)) if !json.is_empty() => format!(
            "{node} {pid} {} {} {} {} {json}\n",
            h.sup, h.fds[0], h.fds[1], h.ino
        ),
        _ => format!("{node} {pid}\n"),
    }
}

/// A task found in the `pids` file.
pub(crate) struct Found {
    pub pid: i32,
    pub handle: Handle,
    pub record: Record,
}

/// The last line for `node` in `pids`, if it can be watched again.
pub(crate) fn find(pids: &Path, node: &str) -> Option<Found> {
    let text = std::fs::read_to_string(pids).ok()?;
    let line = text
        .lines()
        .rev()
        .find(|l| l.split(' ').next() == Some(node))?;
    let mut parts = line.splitn(7, ' ').skip(1);
    let mut num = || parts.next()?.parse::<i64>().ok();
    let (pid, sup, fd1, fd2, ino) = (num()?, num()?, num()?, num()?, num()?);
    let record = serde_json::from_str(parts.next()?).ok()?;
    Some(Found {
        pid: pid as i32,
        handle: Handle {
            sup: sup as i32,
            fds: [fd1 as i32, fd2 as i32],
            ino: ino as u64,
        },
        record,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_line_of_a_node_is_found_and_a_line_without_a_record_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let pids = dir.path().join("pids");
        let task = TaskSpec {
            node_id: "n1".into(),
            ..TaskSpec::default()
        };
        let json = record(&task, &["0".into()], None);
        let h = |sup: i32| Handle {
            sup,
            fds: [5, 6],
            ino: 77,
        };
        let text = [
            line("n1", 10, Some((h(9), &json))),
            line("n2", 20, None),
            line("n1", 30, Some((h(29), &json))),
        ]
        .concat();
        std::fs::write(&pids, text).unwrap();
        let f = find(&pids, "n1").unwrap();
        assert_eq!((f.pid, f.handle), (30, h(29)));
        assert_eq!(f.record.task.node_id, "n1");
        assert_eq!(f.record.gpus, ["0"]);
        assert!(find(&pids, "n2").is_none());
        assert!(find(&pids, "n3").is_none());
    }
}
