//! The driver in-process, with an executor of the test's own: a run starts and finishes, a run
//! whose driver died is recovered (its orphaned task killed, the task retried), and a stop
//! request reaches a running task.

use std::sync::Mutex;
use std::sync::mpsc::{self, Receiver, Sender};

use weir_core::diag::Diags;
use weir_core::run::{Access, ArtifactRef, Event, Phase, Run, Submission, TaskResult, TaskSpec};
use weir_exec::{Executor, Update};
use weir_store::{Durability, Store};

use super::*;

/// Tasks that start at once and, unless held, succeed at once; a held task runs until stopped.
struct Fake {
    updates: Sender<Update>,
    started: Sender<String>,
    hold: bool,
    running: Mutex<Vec<String>>,
}

impl Fake {
    /// The executor, the channel the driver reads, and the names of the tasks as they start.
    fn boxed(hold: bool) -> (Box<dyn Executor>, Receiver<Update>, Receiver<String>) {
        let (updates, rx) = mpsc::channel();
        let (started, names) = mpsc::channel();
        let fake = Fake {
            updates,
            started,
            hold,
            running: Mutex::default(),
        };
        (Box::new(fake), rx, names)
    }

    fn finish(&self, node: &str, code: i32) {
        let _ = self.updates.send(Update::Finished {
            node: node.to_string(),
            result: TaskResult {
                exit_code: Some(code),
                ..TaskResult::default()
            },
        });
    }
}

impl Executor for Fake {
    fn start(&self, task: TaskSpec) {
        let _ = self.updates.send(Update::Started {
            node: task.node_id.clone(),
            pid: 0,
        });
        let _ = self.started.send(task.node_name.clone());
        if self.hold {
            self.running.lock().unwrap().push(task.node_id);
        } else {
            self.finish(&task.node_id, 0);
        }
    }

    fn fetch(&self, node: &str, _: Vec<ArtifactRef>, _: Vec<Option<Access>>) {
        let _ = self.updates.send(Update::Fetched {
            node: node.to_string(),
            results: Vec::new(),
        });
    }

    fn stop(&self, node: &str) {
        let mut running = self.running.lock().unwrap();
        if let Some(i) = running.iter().position(|n| n == node) {
            running.remove(i);
            self.finish(node, 137);
        }
    }

    fn shutdown(&self) {}
}

/// Watches nothing.
struct Quiet;

impl Watch for Quiet {
    fn wants_logs(&self) -> bool {
        false
    }
    fn log(&mut self, _: &Run, _: &str, _: &str) {}
    fn update(&mut self, _: &Run) {}
    fn tick(&mut self, _: &Run) {}
    fn note(&mut self, _: &str) {}
    fn finish(&mut self, _: &Run) {}
}

fn env(dir: &tempfile::TempDir) -> Env {
    Env {
        db: dir.path().join("weir.db"),
        durability: Durability::Process,
        data: None,
        queue: false,
        isolation: None,
        executor: Default::default(),
        containers: Default::default(),
    }
}

fn submission(yaml: &str) -> Submission {
    let mut d = Diags::new("wf.yaml");
    let def = weir_core::load::load_str(yaml, &mut d)
        .definitions
        .into_iter()
        .next()
        .unwrap();
    assert!(!d.has_errors(), "{:?}", d.items);
    Submission {
        key: None,
        name: def.metadata.name.clone().unwrap(),
        uid: "uid".into(),
        namespace: "default".into(),
        created_at: now_ms(),
        workflow: def,
        library: Vec::new(),
        config_maps: Vec::new(),
        secrets: Vec::new(),
        parameters: Vec::new(),
    }
}

const TWO_STEPS: &str = "kind: Workflow
metadata: {name: two}
spec:
  entrypoint: main
  templates:
  - name: main
    steps: [[{name: a, template: t}], [{name: b, template: t}]]
  - name: t
    retryStrategy: {limit: 1, retryPolicy: Always}
    container: {image: x, command: [true]}
";

fn node_phases(run: &Run) -> Vec<(String, Phase)> {
    let mut v: Vec<_> = run
        .nodes()
        .iter()
        .filter(|n| n.node_type == weir_core::run::NodeType::Pod)
        .map(|n| (n.display_name.clone(), n.phase))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn a_run_starts_its_tasks_in_order_and_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let env = env(&dir);
    let mut store = Store::open(&env.db, env.durability).unwrap();
    let Admitted { run, actions, lock } = admit(&env, &mut store, submission(TWO_STEPS)).unwrap();
    let (exec, rx, started) = Fake::boxed(false);
    let phase = drive_with(&env, store, run, actions, Vec::new(), &mut Quiet, exec, rx).unwrap();
    drop(lock);
    assert_eq!(phase, Phase::Succeeded);
    assert_eq!(
        started.try_iter().collect::<Vec<_>>(),
        ["two[0].a(0)", "two[1].b(0)"]
    );
    // what was stored replays to the same end
    let stored = load_run(&Store::open(&env.db, env.durability).unwrap(), "two").unwrap();
    assert_eq!(stored.phase(), Phase::Succeeded);
    assert_eq!(
        node_phases(&stored),
        [
            ("a(0)".to_string(), Phase::Succeeded),
            ("b(0)".to_string(), Phase::Succeeded)
        ]
    );
}

#[test]
fn a_run_whose_driver_died_is_recovered_its_orphan_killed_and_its_task_started_again() {
    let dir = tempfile::tempdir().unwrap();
    let env = env(&dir);
    // the task's process, spawned before the run is locked: a child holds its parent's files
    // until its exec has closed them, which is after `spawn` returns, so a lock taken first could
    // still be held by the child when the test takes the run over
    use std::os::unix::process::CommandExt;
    let mut orphan = std::process::Command::new("sleep")
        .arg("600")
        .process_group(0)
        .spawn()
        .unwrap();
    let mut store = Store::open(&env.db, env.durability).unwrap();
    let Admitted {
        mut run,
        actions,
        lock,
    } = admit(&env, &mut store, submission(TWO_STEPS)).unwrap();
    // a driver started task `a` as a process, recorded it, and died
    let Some(Action::Start(spec)) = actions.into_iter().find(|a| matches!(a, Action::Start(_)))
    else {
        panic!("task a was not started");
    };
    let started = Event::Started {
        node: spec.node_id.clone(),
        pid: orphan.id(),
    };
    run.step(started.clone(), now_ms());
    store
        .append(
            "two",
            &[(now_ms(), started)],
            run.phase(),
            run.message(),
            None,
        )
        .unwrap();
    drop(run);
    drop(lock);
    // the next process finds the run unfinished and takes it over
    let Delivered::Adopted {
        run,
        actions,
        pending,
        lock,
    } = deliver(&env, &mut store, "two", Vec::new()).unwrap()
    else {
        panic!(
            "the run was not taken over: {:?}",
            load_run(&store, "two").map(|r| (r.phase(), r.message().to_string()))
        );
    };
    assert_eq!(
        pending,
        [Event::Lost {
            node: spec.node_id.clone()
        }]
    );
    let (exec, rx, started) = Fake::boxed(false);
    let phase = drive_with(&env, store, *run, actions, pending, &mut Quiet, exec, rx).unwrap();
    drop(lock);
    // the executor could not watch the orphaned process again: it was killed, not left running
    // beside its second start
    let status = orphan.wait().unwrap();
    assert!(!status.success(), "{status:?}");
    assert_eq!(phase, Phase::Succeeded);
    // `a` again, as the same attempt (weir's stop is not its failure), then `b`
    assert_eq!(
        started.try_iter().collect::<Vec<_>>(),
        [spec.node_name.as_str(), "two[1].b(0)"]
    );
    let stored = load_run(&Store::open(&env.db, env.durability).unwrap(), "two").unwrap();
    let lost = stored
        .nodes()
        .iter()
        .find(|n| n.id == spec.node_id)
        .unwrap();
    assert_eq!(lost.phase, Phase::Succeeded, "{}", lost.message);
    assert!(lost.message.contains("started again"), "{}", lost.message);
}

#[test]
fn a_stop_request_reaches_a_running_task_and_fails_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let env = env(&dir);
    let mut store = Store::open(&env.db, env.durability).unwrap();
    let Admitted { run, actions, lock } = admit(&env, &mut store, submission(TWO_STEPS)).unwrap();
    let (exec, rx, started) = Fake::boxed(true);
    let driving = {
        let env = env.clone();
        std::thread::spawn(move || {
            let phase = drive_with(&env, store, run, actions, Vec::new(), &mut Quiet, exec, rx);
            drop(lock);
            phase
        })
    };
    assert_eq!(started.recv().unwrap(), "two[0].a(0)");
    // another process asks: the driving one is found by its lock, and told through the store
    let mut other = Store::open(&env.db, env.durability).unwrap();
    assert!(matches!(
        deliver(&env, &mut other, "two", vec![Event::Stop]).unwrap(),
        Delivered::Sent
    ));
    let phase = driving.join().unwrap().unwrap();
    assert_eq!(phase, Phase::Failed);
    let stored = load_run(&other, "two").unwrap();
    assert_eq!(stored.message(), "Stopped with strategy 'Stop'");
    // `b` never started
    assert!(started.try_iter().next().is_none());
    assert_eq!(node_phases(&stored)[0].0, "a(0)");
    assert_eq!(node_phases(&stored).len(), 1);
}
