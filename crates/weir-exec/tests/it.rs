//! The process executor against real processes: results, output capture, stop, and what a task
//! leaves behind.

use std::collections::HashMap;
use std::sync::mpsc::{self, Receiver};
use std::time::Duration;

use weir_core::run::{Requests, TaskResult, TaskSpec};
use weir_exec::{Capacity, Executor, ProcessConfig, ProcessExecutor, Sandbox, Update};
use weir_store::LocalRepo;

fn executor(dir: &std::path::Path) -> (ProcessExecutor, Receiver<Update>) {
    let (tx, rx) = mpsc::channel();
    let exec = ProcessExecutor::new(
        ProcessConfig {
            work_root: dir.join("runs"),
            repo: LocalRepo::new(dir.join("artifacts")),
            sandbox: Sandbox::detect(),
            capacity: Capacity::detect(),
            stream_logs: true,
        },
        tx,
    );
    (exec, rx)
}

fn task(node: &str, argv: &[&str]) -> TaskSpec {
    TaskSpec {
        run: "r1".into(),
        node_id: node.into(),
        node_name: node.into(),
        image: None,
        command: argv.iter().map(|s| s.to_string()).collect(),
        args: Vec::new(),
        source: None,
        env: Vec::new(),
        secrets: Vec::new(),
        working_dir: None,
        inputs: Vec::new(),
        output_parameters: Vec::new(),
        output_artifacts: Vec::new(),
        requests: Requests::default(),
        mounts: Vec::new(),
    }
}

/// Collects updates until `n` tasks have finished (a generous bound, not a timing assertion).
fn finish(rx: &Receiver<Update>, n: usize) -> (HashMap<String, TaskResult>, Vec<(String, String)>) {
    let mut done = HashMap::new();
    let mut logs = Vec::new();
    while done.len() < n {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(Update::Finished { node, result }) => {
                done.insert(node, result);
            }
            Ok(Update::Log { node, line }) => logs.push((node, line)),
            Ok(Update::Started { .. }) => {}
            Err(e) => panic!("waiting for {n} tasks, {} finished: {e}", done.len()),
        }
    }
    (done, logs)
}

#[test]
fn many_concurrent_tasks_each_get_their_own_exit_code_and_output() {
    let dir = tempfile::tempdir().unwrap();
    let (exec, rx) = executor(dir.path());
    let n = 120;
    for i in 0..n {
        let script = format!(
            "echo out-{i}; echo err-{i} >&2; printf 'last-{i}'; exit {}",
            i % 4
        );
        exec.start(task(&format!("t{i}"), &["sh", "-c", &script]));
    }
    let (done, logs) = finish(&rx, n);
    for i in 0..n {
        let r = &done[&format!("t{i}")];
        assert_eq!(r.exit_code, Some((i % 4) as i32), "t{i}");
        assert_eq!(r.stdout, format!("out-{i}\nlast-{i}"), "t{i}");
        assert!(r.error.is_none());
        let node = format!("t{i}");
        let mine: Vec<&str> = logs
            .iter()
            .filter(|(n, _)| *n == node)
            .map(|(_, l)| l.as_str())
            .collect();
        assert!(
            mine.contains(&format!("err-{i}").as_str()),
            "{node}: {mine:?}"
        );
        assert!(
            mine.contains(&format!("last-{i}").as_str()),
            "{node}: {mine:?}"
        );
        let log = std::fs::read_to_string(ProcessExecutor::log_path(
            &dir.path().join("runs"),
            "r1",
            &node,
        ))
        .unwrap();
        assert!(log.contains(&format!("out-{i}\n")) && log.contains(&format!("err-{i}\n")));
    }
    exec.shutdown();
}

#[test]
fn a_task_ends_with_its_main_process_and_what_it_left_running_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let (exec, rx) = executor(dir.path());
    // the background sleep keeps the pipes open; the task still ends when `sh` exits
    exec.start(task("bg", &["sh", "-c", "sleep 300 & echo $!"]));
    let (done, _) = finish(&rx, 1);
    let r = &done["bg"];
    assert_eq!(r.exit_code, Some(0));
    let pid: i32 = r.stdout.trim().parse().unwrap();
    // SAFETY: pidfd_open on a pid; the descriptor is closed below.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
    if fd >= 0 {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd; readable once the process has exited.
        let n = unsafe { libc::poll(&mut p, 1, 30_000) };
        unsafe { libc::close(fd) };
        assert_eq!(n, 1, "the background process {pid} outlived its task");
    }
    exec.shutdown();
}

#[test]
fn stop_kills_a_running_task_and_a_missing_program_exits_127() {
    let dir = tempfile::tempdir().unwrap();
    let (exec, rx) = executor(dir.path());
    exec.start(task("long", &["sleep", "300"]));
    loop {
        match rx.recv_timeout(Duration::from_secs(60)).unwrap() {
            Update::Started { node, .. } if node == "long" => break,
            _ => {}
        }
    }
    exec.stop("long");
    exec.start(task("missing", &["no-such-program-weir"]));
    let (done, _) = finish(&rx, 2);
    assert_eq!(done["long"].exit_code, Some(128 + libc::SIGKILL));
    assert_eq!(done["missing"].exit_code, Some(127));
    let log = std::fs::read_to_string(ProcessExecutor::log_path(
        &dir.path().join("runs"),
        "r1",
        "missing",
    ))
    .unwrap();
    assert!(
        log.contains("`no-such-program-weir` not found in PATH"),
        "{log}"
    );
    exec.shutdown();
}
