//! Scale-out on PostgreSQL with real processes: servers, workers, kill -9.

use std::collections::{BTreeMap, HashMap};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use weir_core::run::{NodeType, Phase, Run};

use crate::support::{ApiServer, Proxy, Sandbox, http};

/// A DAG of `layers` × `width` tasks, each depending on its column's task in the layer above;
/// each task body ends by appending its pod name (one line per attempt that ran to the end)
/// to `counter/RUN`.
fn layered_dag(counter: &std::path::Path, layers: usize, width: usize) -> String {
    let mut tasks = String::new();
    for l in 0..layers {
        for w in 0..width {
            let dep = if l == 0 {
                String::new()
            } else {
                format!("\n        depends: t{}-{w}", l - 1)
            };
            tasks += &format!("      - name: t{l}-{w}\n        template: work{dep}\n");
        }
    }
    format!(
        r#"apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata:
  generateName: fan-
spec:
  entrypoint: main
  templates:
  - name: main
    dag:
      tasks:
{tasks}  - name: work
    retryStrategy:
      limit: 20
      retryPolicy: OnTransientError
    script:
      image: alpine
      command: [sh]
      source: |
        sleep 0.$(( 3 + $$ % 7 ))
        echo "{{{{pod.name}}}}" >> {dir}/{{{{workflow.name}}}}
"#,
        dir = counter.display()
    )
}

/// A child process killed when dropped, so a failing test leaves none behind.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Procs {
    sb: Sandbox,
    workers: Vec<Proc>,
}

impl Procs {
    fn worker(&self) -> Proc {
        worker(&self.sb, &["--slots", "tasks=16"])
    }
}

/// A `weir worker` on the sandbox's database, with the tests' short lease. Its tasks run as
/// root (`WEIR_ALLOW_ROOT_TASKS`): they count their runs in files the test shares with them,
/// which an unprivileged task user could not write (the security tests cover that user).
pub fn worker(sb: &Sandbox, args: &[&str]) -> Proc {
    let mut all = vec!["worker"];
    all.extend_from_slice(args);
    Proc(
        sb.cmd(&all)
            .env("WEIR_LEASE_MS", LEASE)
            .env("WEIR_ALLOW_ROOT_TASKS", "true")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

const LEASE: &str = "1500";

pub fn server(sb: &Sandbox) -> ApiServer {
    // SAFETY of the environment: only this test's children read WEIR_LEASE_MS
    ApiServer::start_with(
        sb,
        &["--insecure-local", "--no-worker"],
        &[("WEIR_LEASE_MS", LEASE), ("WEIR_ALLOW_ROOT_TASKS", "true")],
    )
}

#[test]
fn runs_survive_killed_workers_and_a_killed_server_without_running_a_task_twice() {
    let Some(sb) = Sandbox::postgres() else {
        return;
    };
    let started = Instant::now();
    let deadline = started + Duration::from_secs(280);
    let counter = sb.dir_with("counter", &[]);
    let wf = sb.write("fan.yaml", &layered_dag(&counter, 5, 8));
    assert!(sb.weir(&["migrate"]).code == 0);
    let mut servers = [server(&sb), server(&sb)];
    let mut procs = Procs {
        sb,
        workers: Vec::new(),
    };
    for _ in 0..3 {
        let w = procs.worker();
        procs.workers.push(w);
    }
    let body = std::fs::read_to_string(&wf).unwrap();
    let agent = http();
    let mut names = Vec::new();
    for i in 0..50 {
        let url = servers[i % 2].url("/api/v1/workflows/default");
        let text = agent
            .post(&url)
            .header("content-type", "application/yaml")
            .send(body.as_str())
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap();
        let resp: serde_json::Value = serde_json::from_str(&text).unwrap();
        let name = resp["metadata"]["name"].as_str();
        names.push(
            name.unwrap_or_else(|| panic!("submitted: {text}"))
                .to_string(),
        );
    }
    // faults: a worker killed every 3 s (and a new one started), server 0 killed once
    let store = weir_store::Store::open(&procs.sb.db, weir_store::Durability::Process).unwrap();
    let mut kills = 0;
    let mut server_killed = false;
    let mut next_kill = Instant::now() + Duration::from_secs(2);
    loop {
        let done: Vec<_> = store
            .list(&[], 1000)
            .unwrap()
            .into_iter()
            .filter(|r| r.finished_at.is_some())
            .collect();
        if done.len() == names.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {} runs finished in time",
            done.len(),
            names.len()
        );
        if Instant::now() >= next_kill && kills < 6 {
            let victim = kills % procs.workers.len();
            // SIGKILL (dropping the old one kills it), and a new worker in its place
            procs.workers[victim] = procs.worker();
            kills += 1;
            if kills == 2 && !server_killed {
                servers[0].kill();
                server_killed = true;
                // its runs go on in server 1 after their leases expire; a new server joins
                servers[0] = server(&procs.sb);
            }
            next_kill = Instant::now() + Duration::from_secs(3);
        }
        // the store is polled: runs finish in other processes, which notify no one here
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(
        kills >= 2 && server_killed,
        "the faults happened: {kills} worker kills"
    );

    // every run succeeded; every task's attempts are its retry history. A killed worker's
    // tasks die with it and run again once on another worker as the same attempt: an attempt's
    // body ran to the end at most twice (twice only when its worker died after the body ended
    // and before its result was reported)
    let (mut lost_attempts, mut twice) = (0, 0);
    for name in &names {
        let rec = store.load(name).unwrap();
        let phase = rec.summary.phase.clone();
        let run = Run::replay(rec.submission, &rec.events).unwrap();
        let failed: Vec<String> = run
            .nodes()
            .iter()
            .filter(|n| matches!(n.phase, Phase::Failed | Phase::Error))
            .map(|n| {
                format!(
                    "{} {:?} {}: {}",
                    n.name,
                    n.node_type,
                    n.phase.as_str(),
                    n.message
                )
            })
            .collect();
        assert_eq!(
            phase,
            "Succeeded",
            "{name}: {}\n{}",
            rec.summary.message,
            failed.join("\n")
        );
        let lines = std::fs::read_to_string(counter.join(name)).unwrap_or_default();
        let mut ran: HashMap<&str, usize> = HashMap::new();
        for l in lines.lines() {
            *ran.entry(l).or_default() += 1;
        }
        for (pod, n) in &ran {
            assert!(*n <= 2, "{name}: attempt {pod} ran to the end {n} times");
            twice += usize::from(*n == 2);
        }
        let nodes = run.nodes();
        let mut tasks = 0;
        for n in nodes.iter().filter(|n| n.node_type == NodeType::Retry) {
            tasks += 1;
            assert_eq!(n.phase, Phase::Succeeded, "{name}/{}", n.display_name);
            let attempts: Vec<_> = n.children.iter().map(|&c| &nodes[c]).collect();
            let (last, earlier) = attempts.split_last().unwrap();
            assert_eq!(last.phase, Phase::Succeeded);
            assert!(
                ran.contains_key(last.id.as_str()),
                "{name}: {} ran",
                last.id
            );
            for a in earlier {
                // only attempts lost twice (with two workers) were retried
                assert_eq!(
                    a.phase,
                    Phase::Error,
                    "{name}/{}: {}",
                    a.display_name,
                    a.message
                );
                assert!(a.message.contains("lost"), "{}", a.message);
                lost_attempts += 1;
            }
            assert_eq!(
                attempts
                    .iter()
                    .enumerate()
                    .map(|(i, a)| (i as u32, a.attempt))
                    .collect::<BTreeMap<_, _>>()
                    .len(),
                attempts.len()
            );
        }
        assert_eq!(tasks, 40, "{name}");
    }
    procs.workers.clear();
    eprintln!(
        "50 runs x 40 tasks: {kills} workers and 1 server killed, {lost_attempts} attempts lost twice and retried, {twice} attempts ran to the end twice, {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// The issue's crash test with a worker on PostgreSQL: 20 tasks at parallelism 2 with no
/// retryStrategy, the worker killed with SIGKILL mid-run, a new worker: the run Succeeds; a task
/// that had finished before the kill ran once; the tasks running on the killed worker died with
/// it and ran once more on the new one, as the same attempt, not as a retry.
#[test]
fn a_killed_worker_s_running_tasks_run_once_more_elsewhere_without_a_retry() {
    let Some(sb) = Sandbox::postgres() else {
        return;
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let c = sb.dir_with("counters", &[]);
    let mut tasks = String::new();
    for i in 0..20 {
        tasks += &format!(
            "      - {{name: t{i}, template: work, arguments: {{parameters: [{{name: id, value: t{i}}}]}}}}\n"
        );
    }
    let wf = format!(
        "kind: Workflow\nmetadata: {{name: crash20}}\nspec:\n  entrypoint: main\n  parallelism: 2\n  templates:\n  - name: main\n    dag:\n      tasks:\n{tasks}  - name: work\n    inputs: {{parameters: [{{name: id}}]}}\n    container:\n      image: alpine\n      command: [sh, -c]\n      args: ['echo start >> {c}/{{{{inputs.parameters.id}}}}; sleep 0.3; echo done >> {c}/{{{{inputs.parameters.id}}}}']\n",
        c = c.display()
    );
    assert_eq!(sb.weir(&["migrate"]).code, 0);
    let srv = server(&sb);
    let w1 = worker(&sb, &[]);
    let (status, body) = submit(&srv, &wf);
    assert_eq!(status, 200, "{body}");
    wait_for("six tasks to start", deadline, || {
        std::fs::read_dir(&c)
            .map(|d| d.count() >= 6)
            .unwrap_or(false)
    });
    drop(w1);
    let store = weir_store::Store::open(&sb.db, weir_store::Durability::Process).unwrap();
    let phases = |store: &weir_store::Store| {
        let rec = store.load("crash20").unwrap();
        let run = Run::replay(rec.submission, &rec.events).unwrap();
        run.nodes()
            .iter()
            .filter(|n| n.node_type == NodeType::Pod)
            .map(|n| (n.display_name.clone(), n.phase))
            .collect::<BTreeMap<_, _>>()
    };
    let before = phases(&store);
    let _w2 = worker(&sb, &[]);
    wait_for("the run to finish", deadline, || {
        store.load("crash20").unwrap().summary.finished_at.is_some()
    });
    let rec = store.load("crash20").unwrap();
    assert_eq!(rec.summary.phase, "Succeeded", "{}", rec.summary.message);
    let after = phases(&store);
    assert_eq!(after.len(), 20, "one attempt each, no retry: {after:?}");
    let lines = |t: &str, what: &str| {
        std::fs::read_to_string(c.join(t))
            .unwrap_or_default()
            .lines()
            .filter(|l| *l == what)
            .count()
    };
    let mut again = 0;
    for i in 0..20 {
        let t = format!("t{i}");
        assert_eq!(after[&t], Phase::Succeeded);
        let starts = lines(&t, "start");
        if before.get(&t) == Some(&Phase::Succeeded) {
            assert_eq!(starts, 1, "{t} finished before the kill");
        } else {
            assert!((1..=2).contains(&starts), "{t} started {starts} times");
            again += usize::from(starts == 2);
        }
    }
    assert!(again <= 2, "only the two running tasks ran again: {again}");
}

/// Waits for `what` to hold, polling (the processes it watches notify no one here).
fn wait_for(what: &str, deadline: Instant, mut f: impl FnMut() -> bool) {
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_partitioned_workers_tasks_run_elsewhere_and_its_late_results_are_refused() {
    let Some(sb) = Sandbox::postgres() else {
        return;
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let url = sb.db.to_str().unwrap().to_string();
    // postgres://USER@HOST:PORT/DB → the same through the proxy
    let (scheme_user, rest) = url.split_once('@').unwrap();
    let (hostport, db) = rest.split_once('/').unwrap();
    let proxy = Proxy::start(hostport.parse().unwrap());
    let proxied = format!("{scheme_user}@{}/{db}", proxy.addr);
    let counter = sb.dir_with("counter", &[]);
    let wf = sb.write(
        "one.yaml",
        &format!(
            r#"apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata:
  name: part
spec:
  entrypoint: main
  templates:
  - name: main
    retryStrategy:
      limit: 3
      retryPolicy: OnTransientError
    script:
      image: alpine
      command: [sh]
      source: |
        echo "{{{{pod.name}}}}" >> {dir}/started
        sleep 3
        echo "{{{{pod.name}}}}" >> {dir}/done
"#,
            dir = counter.display()
        ),
    );
    assert_eq!(sb.weir(&["migrate"]).code, 0);
    let srv = server(&sb);
    let log = sb.dir.join("w1.log");
    let _w1 = Proc(
        sb.cmd(&["worker"])
            .env("WEIR_DB", &proxied)
            .env("WEIR_LEASE_MS", LEASE)
            .env("WEIR_ALLOW_ROOT_TASKS", "true")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let agent = http();
    agent
        .post(&srv.url("/api/v1/workflows/default"))
        .header("content-type", "application/yaml")
        .send(std::fs::read_to_string(&wf).unwrap().as_str())
        .unwrap();
    let started = counter.join("started");
    wait_for("the task to start on worker 1", deadline, || {
        started.exists()
    });
    // worker 1 is cut off from the database; worker 2 is not
    proxy.cut();
    let _w2 = worker(&sb, &[]);
    let store = weir_store::Store::open(&sb.db, weir_store::Durability::Process).unwrap();
    wait_for("the run to finish", deadline, || {
        store.load("part").unwrap().summary.finished_at.is_some()
    });
    // the network heals: worker 1's result of the first attempt arrives late, and is refused
    proxy.heal();
    wait_for("worker 1 to report its refused result", deadline, || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("was refused")
    });
    let rec = store.load("part").unwrap();
    assert_eq!(rec.summary.phase, "Succeeded", "{}", rec.summary.message);
    let run = Run::replay(rec.submission, &rec.events).unwrap();
    let nodes = run.nodes();
    let retry = nodes
        .iter()
        .find(|n| n.node_type == NodeType::Retry)
        .unwrap();
    let attempts: Vec<_> = retry.children.iter().map(|&c| &nodes[c]).collect();
    // the attempt worker 1 lost went to worker 2 as the same attempt (a lost worker is not the
    // task's failure), and worker 1's late result was refused: worker 2's stands
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    assert_eq!(attempts[0].phase, Phase::Succeeded);
    let started = std::fs::read_to_string(counter.join("started")).unwrap();
    assert_eq!(
        started.lines().filter(|l| *l == attempts[0].id).count(),
        2,
        "on both workers: {started}"
    );
    // and no later event changed the run: the log ends where the run finished
    let finished = store.load("part").unwrap().events.len();
    assert_eq!(finished, rec.events.len());
}

pub fn submit(srv: &ApiServer, yaml: &str) -> (u16, serde_json::Value) {
    crate::support::answer(
        http()
            .post(srv.url("/api/v1/workflows/default"))
            .content_type("application/yaml")
            .send(yaml),
    )
}

#[test]
fn any_server_streams_any_run_and_a_namespace_quota_pushes_back() {
    let Some(sb) = Sandbox::postgres() else {
        return;
    };
    let (a, b) = (server(&sb), server(&sb));
    let _w = worker(&sb, &[]);
    let two_steps = r#"apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata:
  generateName: two-
spec:
  entrypoint: main
  templates:
  - name: main
    steps:
    - - {name: one, template: echo}
    - - {name: two, template: echo}
  - name: echo
    container: {image: alpine, command: [echo, hi]}
"#;
    // submitted to one server, followed on the other
    let (status, wf) = submit(&a, two_steps);
    assert_eq!(status, 200, "{wf}");
    let name = wf["metadata"]["name"].as_str().unwrap().to_string();
    let events = http()
        .get(b.url(&format!("/api/v1/workflow-events/default?name={name}")))
        .call()
        .unwrap();
    let mut sse = crate::support::SseReader::new(events);
    let mut seen = Vec::new();
    while let Some(ev) = sse.next_event() {
        let d: serde_json::Value = serde_json::from_str(&ev.data).unwrap();
        assert_eq!(d["run"], name.as_str(), "{d}");
        for n in d["nodes"].as_array().into_iter().flatten() {
            seen.push((
                n["displayName"].as_str().unwrap_or("").to_string(),
                n["phase"].as_str().unwrap_or("").to_string(),
            ));
        }
        if d["phase"] == "Succeeded" {
            break;
        }
        assert!(d["phase"] != "Failed" && d["phase"] != "Error", "{d}");
    }
    for step in ["one", "two"] {
        assert!(
            seen.contains(&(step.to_string(), "Succeeded".to_string())),
            "{seen:?}"
        );
    }
    // and its state over GET from the other server agrees
    let (status, got) = crate::support::answer(
        http()
            .get(b.url(&format!("/api/v1/workflows/default/{name}")))
            .call(),
    );
    assert_eq!(status, 200);
    assert_eq!(got["status"]["phase"], "Succeeded");

    // a namespace at its quota of unfinished runs gets 429 until one finishes
    let out = sb.weir(&["quota", "default", "--max-runs", "1"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stdout.contains("max_runs 1"), "{}", out.stdout);
    let waiting = r#"apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata:
  name: held
spec:
  entrypoint: wait
  templates:
  - name: wait
    suspend: {}
"#;
    assert_eq!(submit(&a, waiting).0, 200);
    let (status, body) = submit(&b, two_steps);
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "quota_exceeded", "{body}");
    let (status, _) = crate::support::answer(
        http()
            .put(a.url("/api/v1/workflows/default/held/resume"))
            .send(""),
    );
    assert_eq!(status, 200);
    let store = weir_store::Store::open(&sb.db, weir_store::Durability::Process).unwrap();
    wait_for(
        "the held run to finish",
        Instant::now() + Duration::from_secs(60),
        || store.load("held").unwrap().summary.finished_at.is_some(),
    );
    assert_eq!(submit(&b, two_steps).0, 200);
    // the queue's depth is a metric
    let metrics = a.text("/metrics");
    assert!(
        metrics.contains("# TYPE weir_queue_tasks gauge"),
        "{metrics}"
    );
}

#[test]
fn a_sqlite_history_moves_to_postgres_whole_or_not_at_all() {
    let Some(pg) = Sandbox::postgres() else {
        return;
    };
    let lite = Sandbox::new();
    let wf = lite.write(
        "hello.yaml",
        "apiVersion: argoproj.io/v1alpha1\nkind: Workflow\nmetadata:\n  name: hello\nspec:\n  entrypoint: main\n  templates:\n  - name: main\n    container: {image: alpine, command: [echo, hello]}\n",
    );
    let out = lite.weir(&["run", wf.to_str().unwrap(), "--no-logs"]);
    assert_eq!(out.code, 0, "{}", out.all());
    // a run of the same name in another namespace, kept apart under its own key
    let other = lite.write(
        "other.yaml",
        "apiVersion: argoproj.io/v1alpha1\nkind: Workflow\nmetadata:\n  name: hello\n  namespace: ml\nspec:\n  entrypoint: main\n  templates:\n  - name: main\n    container: {image: alpine, command: [echo, other]}\n",
    );
    let out = lite.weir(&["run", other.to_str().unwrap(), "--no-logs"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let out = lite.weir(&["token", "create", "-n", "ml", "--role", "viewer"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let file = lite.dir.join("export.jsonl");
    let out = lite.weir(&["db", "export", file.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.all());

    let out = pg.weir(&["migrate"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stdout.contains("schema version 12"), "{}", out.stdout);
    let out = pg.weir(&["db", "import", file.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.all());
    // the run, replayed from its imported events, is what SQLite had
    let before = lite.json(&["get", "hello", "-o", "json"]);
    let after = pg.json(&["get", "hello", "-o", "json"]);
    assert_eq!(after["status"]["phase"], "Succeeded");
    assert_eq!(after["status"]["nodes"], before["status"]["nodes"]);
    let theirs = pg.json(&["get", "ml/hello", "-o", "json"]);
    assert_eq!(theirs["metadata"]["namespace"], "ml", "{theirs}");
    assert_eq!(theirs["status"]["phase"], "Succeeded", "{theirs}");
    let tokens = pg.weir(&["token", "list", "-n", "ml"]);
    assert_eq!(tokens.code, 0, "{}", tokens.all());
    assert!(tokens.stdout.contains("viewer"), "{}", tokens.stdout);
    // importing again fails on the existing run and changes nothing
    let out = pg.weir(&["db", "import", file.to_str().unwrap()]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("hello"), "{}", out.stderr);
    let list = pg.weir(&["list", "-o", "name"]);
    assert_eq!(
        list.stdout.lines().filter(|l| l.contains("hello")).count(),
        2,
        "{}",
        list.stdout
    );
}

#[test]
fn a_worker_with_its_own_files_sends_logs_and_outputs_back_through_the_store() {
    let Some(sb) = Sandbox::postgres() else {
        return;
    };
    let srv = server(&sb);
    // the worker shares the database only, not the server's data directory
    let elsewhere = sb.dir_with("worker-host", &[]);
    let _w = Proc(
        sb.cmd(&["worker"])
            .env("WEIR_DATA_DIR", &elsewhere)
            .env("WEIR_LEASE_MS", LEASE)
            .env("WEIR_ALLOW_ROOT_TASKS", "true")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let (status, wf) = submit(
        &srv,
        r#"apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata:
  name: remote
spec:
  entrypoint: main
  templates:
  - name: main
    steps:
    - - {name: produce, template: produce}
    - - name: consume
        template: consume
        arguments: {parameters: [{name: a, value: "{{steps.produce.outputs.parameters.answer}}"}]}
  - name: produce
    script:
      image: alpine
      command: [sh]
      source: |
        echo "hello from the worker"
        echo 42 > /tmp/answer
    outputs:
      parameters: [{name: answer, valueFrom: {path: /tmp/answer}}]
  - name: consume
    inputs: {parameters: [{name: a}]}
    container: {image: alpine, command: [sh, -c, "echo got {{inputs.parameters.a}}"]}
"#,
    );
    assert_eq!(status, 200, "{wf}");
    let store = weir_store::Store::open(&sb.db, weir_store::Durability::Process).unwrap();
    wait_for(
        "the run to finish",
        Instant::now() + Duration::from_secs(60),
        || store.load("remote").unwrap().summary.finished_at.is_some(),
    );
    assert_eq!(store.load("remote").unwrap().summary.phase, "Succeeded");
    let log = srv.text("/api/v1/workflows/default/remote/log?follow=false");
    assert!(log.contains("hello from the worker"), "{log}");
    assert!(log.contains("got 42"), "{log}");
    // the task ran in the worker's directory, not the server's
    assert!(elsewhere.join("runs/remote/logs").is_dir());
}
