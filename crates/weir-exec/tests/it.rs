//! The process executor against real processes: results, output capture, stop, and what a task
//! leaves behind.

use std::collections::HashMap;
use std::sync::mpsc::{self, Receiver};
use std::time::Duration;

use weir_core::run::{
    Daemon, Mount, Probe, ProbeCheck, Sidecar, TaskResult, TaskSpec, VolumeSource,
};
use weir_exec::LocalRepo;
use weir_exec::{Capacity, Executor, ProcessConfig, ProcessExecutor, Sandbox, Update};

fn executor(dir: &std::path::Path) -> (ProcessExecutor, Receiver<Update>) {
    let (tx, rx) = mpsc::channel();
    let exec = ProcessExecutor::new(
        ProcessConfig {
            work_root: dir.join("runs"),
            repo: LocalRepo::new(dir.join("artifacts")),
            sandbox: Sandbox::detect(),
            capacity: Capacity::detect(None),
            stream_logs: true,
            db: None,
            isolation: None,
            tied: false,
        },
        tx,
    )
    .unwrap();
    (exec, rx)
}

fn task(node: &str, argv: &[&str]) -> TaskSpec {
    TaskSpec {
        run: "r1".into(),
        node_id: node.into(),
        node_name: node.into(),
        command: argv.iter().map(|s| s.to_string()).collect(),
        ..TaskSpec::default()
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
            Ok(Update::Started { .. } | Update::Ready { .. } | Update::Fetched { .. }) => {}
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
    assert_exits(pid);
    exec.shutdown();
}

/// Waits (an event: the pidfd becomes readable) for process `pid` to exit; fails after 30 s.
fn assert_exits(pid: i32) {
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
        assert_eq!(n, 1, "process {pid} outlived its task");
    }
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

/// A free port on 127.0.0.1 (bound, then released for the task to take).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn a_daemon_is_ready_when_its_probe_passes_and_sidecars_end_with_their_task() {
    let dir = tempfile::tempdir().unwrap();
    let (exec, rx) = executor(dir.path());
    // the daemon listens only after a moment; readiness must wait for it
    let port = free_port();
    let mut d = task(
        "daemon",
        &[
            "sh",
            "-c",
            &format!("sleep 0.3; exec python3 -m http.server {port} --bind 127.0.0.1"),
        ],
    );
    d.daemon = Some(Daemon {
        probe: Some(Probe {
            check: ProbeCheck::Http {
                port,
                path: "/".into(),
            },
            initial_delay_ms: 0,
            period_ms: 100,
        }),
    });
    exec.start(d);
    loop {
        match rx.recv_timeout(Duration::from_secs(60)).unwrap() {
            Update::Ready { node } if node == "daemon" => break,
            Update::Finished { node, result } => panic!("{node} ended before ready: {result:?}"),
            _ => {}
        }
    }
    // ready means answering: a client gets a page now
    let page = std::process::Command::new("python3")
        .args(["-c", &format!("import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:{port}/').status)")])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&page.stdout).trim(), "200");

    // a sidecar serves the task, which queries it; the sidecar goes when the task ends
    let port2 = free_port();
    let mut t = task(
        "with-sidecar",
        &[
            "sh",
            "-c",
            &format!(
                "for i in $(seq 100); do python3 -c \"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{port2}/')\" 2>/dev/null && echo served && exit 0; sleep 0.1; done; exit 1"
            ),
        ],
    );
    // outside /tmp: the sidecar has a private /tmp
    let shared = tempfile::Builder::new()
        .prefix("weir-sidecar-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let pidfile = shared.path().join("sidecar.pid");
    t.sidecars = vec![Sidecar {
        name: "web".into(),
        command: vec!["sh".into(), "-c".into()],
        args: vec![format!(
            "echo $$ > {}; exec python3 -m http.server {port2} --bind 127.0.0.1",
            pidfile.display()
        )],
        env: Vec::new(),
        image: None,
        mounts: Vec::new(),
    }];
    exec.start(t);
    let (done, logs) = finish(&rx, 1);
    assert_eq!(done["with-sidecar"].exit_code, Some(0), "{logs:?}");
    assert_eq!(done["with-sidecar"].stdout, "served");
    // the sidecar's own output reaches the task's log, marked with its name
    assert!(
        logs.iter()
            .any(|(n, l)| n == "with-sidecar" && l.starts_with("[web] ")),
        "{logs:?}"
    );
    // the sidecar was killed with its task
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_exits(pid);
    exec.stop("daemon");
    let (done, _) = finish(&rx, 1);
    assert_eq!(done["daemon"].exit_code, Some(128 + libc::SIGKILL));
    exec.shutdown();
}

#[test]
fn a_volume_mounted_over_weirs_own_directories_hides_nothing_the_task_needs() {
    // The task's work directory lies under D; a volume is mounted at D itself. The mounts that
    // come after it (the task's private /tmp, from under D) must still find their sources.
    let base = tempfile::Builder::new()
        .prefix("weir-shadow-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let vol = tempfile::tempdir().unwrap();
    std::fs::write(vol.path().join("in-volume"), "v\n").unwrap();
    let (exec, rx) = executor(base.path());
    let mut t = task(
        "shadow",
        &[
            "sh",
            "-c",
            &format!(
                "cat {}/in-volume; echo x > /tmp/own; cat /tmp/own",
                base.path().display()
            ),
        ],
    );
    t.mounts = vec![Mount {
        name: "v".into(),
        source: VolumeSource::Host(vol.path().display().to_string()),
        path: base.path().display().to_string(),
        sub_path: None,
        read_only: false,
    }];
    exec.start(t);
    let (done, logs) = finish(&rx, 1);
    assert_eq!(done["shadow"].exit_code, Some(0), "{logs:?}");
    assert_eq!(done["shadow"].stdout, "v\nx");
    exec.shutdown();
}
