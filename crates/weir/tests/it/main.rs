//! End-to-end tests of the `weir` binary: real processes, a real SQLite database, real files.

mod argo;
mod browser;
mod cluster;
mod conformance;
mod docker;
mod images;
mod security;
mod server;
mod support;
mod tidy;

use std::time::Duration;

use support::{Sandbox, WebServer, count, free_port, node, wait_for};

#[test]
fn ml_example_runs_to_succeeded() {
    let sb = Sandbox::new();
    let example = support::repo_root().join("examples/ml-pipeline.yaml");
    let out = sb.weir(&[
        "run",
        example.to_str().unwrap(),
        "-p",
        "learning-rate=0.1",
        "--name",
        "ml",
        "--no-logs",
    ]);
    assert_eq!(out.code, 0, "{}", out.all());
    let wf = sb.json(&["get", "ml", "-o", "json"]);
    assert_eq!(wf["status"]["phase"], "Succeeded");
    let nodes = wf["status"]["nodes"].as_object().unwrap();
    let by_name = |n: &str| {
        nodes
            .values()
            .find(|x| x["displayName"] == n)
            .cloned()
            .unwrap_or_default()
    };
    let select = by_name("select");
    let best = select["outputs"]["parameters"][1]["value"]
        .as_str()
        .unwrap()
        .parse::<f64>()
        .unwrap();
    assert!(best > 0.5, "best score {best}");
    let trains: Vec<_> = nodes
        .values()
        .filter(|x| {
            x["displayName"]
                .as_str()
                .unwrap_or("")
                .starts_with("train(")
        })
        .collect();
    assert_eq!(trains.len(), 3);
    assert!(trains.iter().all(|t| {
        t["outputs"]["artifacts"][0]["blake3"]
            .as_str()
            .is_some_and(|h| h.len() == 64)
    }));
    let train_logs = sb.weir(&["logs", "ml", "train"]).stdout;
    assert_eq!(
        train_logs
            .lines()
            .filter(|l| l.starts_with("variant=") && l.contains("accuracy="))
            .count(),
        3,
        "{train_logs}"
    );
    let deploy = by_name("deploy");
    assert_eq!(
        deploy["phase"],
        if best >= 0.80 { "Succeeded" } else { "Skipped" }
    );
}

#[test]
fn bad_input_is_one_clear_message_with_location_and_exit_2() {
    let sb = Sandbox::new();
    let cases = [
        (
            "syntax.yaml",
            "kind: Workflow\nmetadata:\n  name: x\nspec:\n  entrypoint: [a\n",
            "syntax.yaml:6:1: error: invalid YAML",
        ),
        (
            "ref.yaml",
            "kind: Workflow\nmetadata: {name: x}\nspec:\n  entrypoint: main\n  templates:\n  - name: main\n    steps:\n    - - name: a\n        template: nosuch\n",
            "ref.yaml:9:19: error: spec.templates[0].steps[0][0].template: step `a`: template `nosuch` not found",
        ),
        (
            "cycle.yaml",
            "kind: Workflow\nmetadata: {name: x}\nspec:\n  entrypoint: d\n  templates:\n  - name: d\n    dag:\n      tasks:\n      - {name: a, template: t, dependencies: [b]}\n      - {name: b, template: t, dependencies: [a]}\n  - name: t\n    container: {image: x, command: [true]}\n",
            "cycle.yaml:8:7: error: spec.templates[0].dag: dependency cycle: a -> b -> a",
        ),
        (
            "param.yaml",
            "kind: Workflow\nmetadata: {name: x}\nspec:\n  entrypoint: t\n  arguments:\n    parameters:\n    - name: message\n  templates:\n  - name: t\n    container: {image: x, command: [true]}\n",
            "param.yaml:7:7: error: spec.arguments.parameters[0]: workflow parameter `message` is required: give it with -p message=VALUE",
        ),
        (
            "when.yaml",
            "kind: Workflow\nmetadata: {name: x}\nspec:\n  entrypoint: main\n  templates:\n  - name: main\n    steps:\n    - - name: a\n        template: t\n        when: \"{{workflow.name}} == (\"\n  - name: t\n    container: {image: x, command: [true]}\n",
            "when.yaml:10:15: error: spec.templates[0].steps[0][0].when: invalid `when` expression",
        ),
    ];
    for (file, text, expect) in cases {
        let path = sb.write(file, text);
        let out = sb.weir(&["run", path.to_str().unwrap()]);
        assert_eq!(out.code, 2, "{file}: {}", out.all());
        assert!(
            out.stderr.contains(expect),
            "{file}: expected {expect:?} in:\n{}",
            out.stderr
        );
        assert_eq!(
            out.stderr.lines().filter(|l| l.contains("error:")).count(),
            1,
            "{file}: one message:\n{}",
            out.stderr
        );
        assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
        let lint = sb.weir(&["lint", path.to_str().unwrap()]);
        assert_eq!(lint.code, 2, "lint {file}: {}", lint.all());
    }
    let list = sb.weir(&["list", "-o", "name"]);
    assert_eq!(list.stdout.trim(), "", "nothing was stored");
}

#[test]
fn corrupt_database_is_a_clear_error() {
    let sb = Sandbox::new();
    std::fs::write(
        &sb.db,
        "this is not sqlite at all, just some text that is long enough to not be a header",
    )
    .unwrap();
    let out = sb.weir(&["list"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stderr.contains("not a weir database") || out.stderr.contains("not a database"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("panicked"));
}

#[test]
fn secrets_are_masked_in_logs_and_output() {
    let sb = Sandbox::new();
    let wf = sb.write(
        "secret.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata: {name: creds}\nstringData:\n  password: hunter2-s3cr3t\n---\n\
         kind: Workflow\nmetadata: {name: sec}\nspec:\n  entrypoint: t\n  templates:\n  - name: t\n    outputs:\n      parameters:\n      - {name: echoed, valueFrom: {path: /tmp/p}}\n    container:\n      image: alpine\n      command: [sh, -c]\n      args: ['echo \"pw=$PW\"; echo \"from=$password\" >&2; printf %s \"$PW\" > /tmp/p']\n      env:\n      - name: PW\n        valueFrom: {secretKeyRef: {name: creds, key: password}}\n      envFrom:\n      - secretRef: {name: creds}\n",
    );
    let out = sb.weir(&["run", wf.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stdout.contains("pw=***"), "{}", out.stdout);
    assert!(!out.all().contains("hunter2"), "{}", out.all());
    let logs = sb.weir(&["logs", "sec"]);
    assert!(
        logs.stdout.contains("pw=***") && logs.stdout.contains("from=***"),
        "{}",
        logs.stdout
    );
    for args in [
        &["get", "sec"][..],
        &["get", "sec", "-o", "json"],
        &["get", "sec", "-o", "yaml"],
        &["logs", "sec"],
    ] {
        let o = sb.weir(args);
        assert!(!o.all().contains("hunter2"), "{args:?} leaks: {}", o.all());
    }
    let logs_on_disk = support::read_tree(&sb.dir.join("runs/sec/logs"));
    assert!(
        !logs_on_disk.contains("hunter2"),
        "captured log files are masked: {logs_on_disk}"
    );
    assert!(logs_on_disk.contains("pw=***"));
}

/// A 20-task DAG whose tasks record each execution that ran to completion.
fn counted_dag(sb: &Sandbox) -> std::path::PathBuf {
    let mut tasks = String::new();
    for i in 0..20 {
        let deps = if i < 4 {
            String::new()
        } else {
            format!(
                ", dependencies: [t{}, t{}]",
                i - 4,
                (i - 3) % 4 + (i / 4 - 1) * 4
            )
        };
        tasks.push_str(&format!("      - {{name: t{i}, template: work, arguments: {{parameters: [{{name: id, value: t{i}}}]}}{deps}}}\n"));
    }
    let counters = sb.dir_with("counters", &[]);
    sb.write(
        "dag20.yaml",
        &format!(
            "kind: Workflow\nmetadata: {{name: dag20}}\nspec:\n  entrypoint: main\n  templates:\n  - name: main\n    dag:\n      tasks:\n{tasks}  - name: work\n    inputs: {{parameters: [{{name: id}}]}}\n    retryStrategy: {{limit: 3, retryPolicy: Always}}\n    container:\n      image: alpine\n      command: [sh, -c]\n      args: ['sleep 0.2; echo ran >> {}/{{{{inputs.parameters.id}}}}']\n",
            counters.display()
        ),
    )
}

/// Runs `wf` and kills `weir run` outright (SIGKILL) once six of its tasks have left a file in
/// `counters`.
fn kill_9_when_six_started(sb: &Sandbox, wf: &std::path::Path, counters: &std::path::Path) {
    let mut child = sb.spawn(&["run", wf.to_str().unwrap(), "--no-logs"]);
    wait_for(Duration::from_secs(60), || {
        std::fs::read_dir(counters)
            .map(|d| d.count() >= 6)
            .unwrap_or(false)
    });
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn kill_9_then_resume_finishes_without_rerunning_succeeded_nodes() {
    let sb = Sandbox::new();
    let wf = counted_dag(&sb);
    let counters = sb.dir.join("counters");
    kill_9_when_six_started(&sb, &wf, &counters);
    let before = sb.json(&["get", "dag20", "-o", "json"]);
    assert_eq!(before["status"]["phase"], "Running");
    let succeeded: Vec<String> = before["status"]["nodes"]
        .as_object()
        .unwrap()
        .values()
        .filter(|n| n["type"] == "Retry" && n["phase"] == "Succeeded")
        .map(|n| n["displayName"].as_str().unwrap().to_string())
        .collect();
    assert!(!succeeded.is_empty());
    let out = sb.weir(&["resume", "dag20", "--no-logs"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let after = sb.json(&["get", "dag20", "-o", "json"]);
    assert_eq!(after["status"]["phase"], "Succeeded");
    for t in &succeeded {
        assert_eq!(
            count(&counters.join(t)),
            1,
            "{t} succeeded before the kill and must not run again"
        );
    }
    for i in 0..20 {
        assert!(count(&counters.join(format!("t{i}"))) >= 1, "t{i} ran");
    }
}

/// The issue's crash test: 20 tasks at parallelism 2 with no retryStrategy, `kill -9` of
/// `weir run` mid-run, `weir resume`: the run Succeeds and every task ran exactly once: those
/// that had finished are not run again, and those running when weir died went on without it
/// and were watched again to their end (their supervisor kept their exit status).
#[test]
fn kill_9_mid_run_then_resume_succeeds_without_a_retry_strategy() {
    let sb = Sandbox::new();
    let counters = sb.dir_with("counters", &[]);
    let mut tasks = String::new();
    for i in 0..20 {
        tasks.push_str(&format!(
            "      - {{name: t{i}, template: work, arguments: {{parameters: [{{name: id, value: t{i}}}]}}}}\n"
        ));
    }
    let wf = sb.write(
        "crash20.yaml",
        &format!(
            "kind: Workflow\nmetadata: {{name: crash20}}\nspec:\n  entrypoint: main\n  parallelism: 2\n  templates:\n  - name: main\n    dag:\n      tasks:\n{tasks}  - name: work\n    inputs: {{parameters: [{{name: id}}]}}\n    container:\n      image: alpine\n      command: [sh, -c]\n      args: ['echo start >> {c}/{{{{inputs.parameters.id}}}}; sleep 0.2; echo done >> {c}/{{{{inputs.parameters.id}}}}']\n",
            c = counters.display()
        ),
    );
    // kill it while tasks run: after a few have finished and two more have started
    kill_9_when_six_started(&sb, &wf, &counters);
    let before = sb.json(&["get", "crash20", "-o", "json"]);
    assert!(
        (0..20).any(|i| node(&before, &format!("t{i}"))["phase"] == "Running"),
        "tasks were running when weir was killed: {before}"
    );
    let phase_of =
        |wf: &serde_json::Value, t: &str| node(wf, t)["phase"].as_str().unwrap_or("").to_string();
    let finished: Vec<String> = (0..20)
        .map(|i| format!("t{i}"))
        .filter(|t| phase_of(&before, t) == "Succeeded")
        .collect();
    assert!(!finished.is_empty(), "{before}");
    let out = sb.weir(&["resume", "crash20", "--no-logs"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let after = sb.json(&["get", "crash20", "-o", "json"]);
    assert_eq!(after["status"]["phase"], "Succeeded", "{after}");
    let starts = |t: &str| {
        std::fs::read_to_string(counters.join(t))
            .unwrap_or_default()
            .lines()
            .filter(|l| *l == "start")
            .count()
    };
    for t in &finished {
        assert_eq!(
            starts(t),
            1,
            "{t} finished before the kill and must not run again"
        );
    }
    for i in 0..20 {
        let t = format!("t{i}");
        let text = std::fs::read_to_string(counters.join(&t)).unwrap_or_default();
        assert_eq!(starts(&t), 1, "{t}: {text}");
        assert_eq!(
            text.lines().filter(|l| *l == "done").count(),
            1,
            "{t}: {text}"
        );
        // one attempt, no retry node
        assert_eq!(node(&after, &t)["type"], "Pod", "{after}");
    }
}

/// Item 11 of issue 15, both ways a task outlives `weir run` killed with SIGKILL: `a` ends while
/// no weir runs (its supervisor keeps its exit status), `b` still runs when `weir resume`
/// starts (watched again through its supervisor's pidfd). Neither runs twice; their output
/// parameters and logs are collected as if weir had never stopped.
#[test]
fn tasks_outlive_a_killed_weir_and_are_collected_by_resume() {
    let sb = Sandbox::new();
    let m = sb.dir_with("marks", &[]);
    let task = |name: &str| {
        format!(
            "  - name: {name}\n    outputs: {{parameters: [{{name: v, valueFrom: {{path: /tmp/v}}}}]}}\n    script:\n      image: alpine\n      command: [sh]\n      source: |\n        echo started >> {m}/{name}.started\n        while [ ! -e {m}/{name}.go ]; do sleep 0.02; done\n        echo {name}-value > /tmp/v\n        echo {name} says hello\n        touch {m}/{name}.finished\n",
            m = m.display()
        )
    };
    let wf = sb.write(
        "outlive.yaml",
        &format!(
            "kind: Workflow\nmetadata: {{name: outlive}}\nspec:\n  entrypoint: main\n  templates:\n  - name: main\n    dag:\n      tasks:\n      - {{name: a, template: a}}\n      - {{name: b, template: b}}\n      - {{name: c, template: c, dependencies: [a, b], arguments: {{parameters: [{{name: x, value: '{{{{tasks.a.outputs.parameters.v}}}} {{{{tasks.b.outputs.parameters.v}}}}'}}]}}}}\n{a}{b}  - name: c\n    inputs: {{parameters: [{{name: x}}]}}\n    container: {{image: alpine, command: [echo, '{{{{inputs.parameters.x}}}}']}}\n",
            a = task("a"),
            b = task("b")
        ),
    );
    let mut child = sb.spawn(&["run", wf.to_str().unwrap(), "--no-logs"]);
    wait_for(Duration::from_secs(60), || {
        m.join("a.started").exists() && m.join("b.started").exists()
    });
    child.kill().unwrap();
    child.wait().unwrap();
    // a ends while no weir runs; its supervisor writes its status next to its output
    std::fs::write(m.join("a.go"), "").unwrap();
    let status_written = || {
        let mut stack = vec![sb.dir.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "exit") {
                    return true;
                }
            }
        }
        false
    };
    wait_for(Duration::from_secs(60), status_written);
    let before = sb.json(&["get", "outlive", "-o", "json"]);
    assert_eq!(node(&before, "a")["phase"], "Running", "{before}");
    assert_eq!(node(&before, "b")["phase"], "Running", "{before}");
    // b is still running when resume starts, and ends under it
    let resume = sb.spawn(&["resume", "outlive", "--no-logs"]);
    std::fs::write(m.join("b.go"), "").unwrap();
    let out = resume.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let after = sb.json(&["get", "outlive", "-o", "json"]);
    assert_eq!(after["status"]["phase"], "Succeeded", "{after}");
    for t in ["a", "b"] {
        let started = std::fs::read_to_string(m.join(format!("{t}.started"))).unwrap();
        assert_eq!(started.lines().count(), 1, "{t} ran once");
        assert_eq!(node(&after, t)["type"], "Pod", "{after}");
        let logs = sb.weir(&["logs", "outlive", t]);
        assert!(
            logs.stdout.contains(&format!("{t} says hello")),
            "{}",
            logs.all()
        );
    }
    assert_eq!(
        node(&after, "c")["inputs"]["parameters"][0]["value"],
        "a-value b-value",
        "{after}"
    );
}

/// A task's output is held in memory files that weir frees as it reads them (all but the last
/// MiB): a task printing several MiB on both streams has every line in its log, in order, and
/// the end of its stdout as its result.
#[test]
fn output_larger_than_what_weir_retains_is_logged_whole() {
    let sb = Sandbox::new();
    let wf = sb.write(
        "big.yaml",
        "kind: Workflow\nmetadata: {name: big}\nspec:\n  entrypoint: main\n  templates:\n  - name: main\n    script:\n      image: python\n      command: [python3]\n      source: |\n        import sys\n        for i in range(60000):\n            print(f'out {i:06d} ' + 'x' * 60)\n            if i % 10 == 0:\n                print(f'err {i:06d}', file=sys.stderr)\n        print('last line')\n",
    );
    let out = sb.weir(&["run", wf.to_str().unwrap(), "--no-logs"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let logs = sb.weir(&["logs", "big"]);
    let outs: Vec<&str> = logs.stdout.lines().filter(|l| l.contains("out ")).collect();
    assert_eq!(outs.len(), 60000, "every stdout line");
    assert!(outs.windows(2).all(|w| w[0] < w[1]), "in order, each once");
    let errs = logs.stdout.lines().filter(|l| l.contains("err ")).count();
    assert_eq!(errs, 6000, "every stderr line");
    let got = sb.json(&["get", "big", "-o", "json"]);
    let result = got["status"]["nodes"]["big"]["outputs"]["result"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        result.ends_with(&format!("out 059999 {}\nlast line", "x".repeat(60))),
        "{}",
        &result[result.len().saturating_sub(200)..]
    );
}

#[test]
fn retry_reruns_only_failed_nodes() {
    let sb = Sandbox::new();
    let marks = sb.dir_with("marks", &[]);
    let m = marks.display();
    let wf = sb.write(
        "flaky.yaml",
        &format!(
            "kind: Workflow\nmetadata: {{name: flaky}}\nspec:\n  entrypoint: main\n  templates:\n  - name: main\n    steps:\n    - - {{name: a, template: ok}}\n    - - {{name: b, template: once}}\n  - name: ok\n    container: {{image: x, command: [sh, -c, 'echo . >> {m}/a']}}\n  - name: once\n    container: {{image: x, command: [sh, -c, 'echo . >> {m}/b; [ $(wc -l < {m}/b) -gt 1 ]']}}\n"
        ),
    );
    let out = sb.weir(&["run", wf.to_str().unwrap()]);
    assert_eq!(out.code, 1, "{}", out.all());
    let out = sb.weir(&["retry", "flaky", "--no-logs"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(
        count(&marks.join("a")),
        1,
        "a succeeded the first time and was reused"
    );
    assert_eq!(count(&marks.join("b")), 2);
    assert_eq!(sb.phase("flaky"), "Succeeded");
}

#[test]
fn terminate_and_stop_a_live_run() {
    let sb = Sandbox::new();
    let wf = sb.write(
        "slow.yaml",
        "kind: Workflow\nmetadata: {name: slow}\nspec:\n  entrypoint: main\n  onExit: bye\n  templates:\n  - name: main\n    container: {image: x, command: [sh, -c, 'echo started; sleep 60']}\n  - name: bye\n    container: {image: x, command: [sh, -c, 'echo exit handler ran']}\n",
    );
    for (verb, handler_runs) in [("stop", true), ("terminate", false)] {
        let db = format!("{verb}.db");
        let sb2 = sb.with_db(&db);
        let mut child = sb2.spawn(&["run", wf.to_str().unwrap()]);
        wait_for(Duration::from_secs(30), || {
            sb2.weir(&["logs", "slow"]).stdout.contains("started")
        });
        let out = sb2.weir(&[verb, "slow"]);
        assert_eq!(out.code, 0, "{}", out.all());
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(1));
        let wf = sb2.json(&["get", "slow", "-o", "json"]);
        assert_eq!(wf["status"]["phase"], "Failed");
        let logs = sb2.weir(&["logs", "slow"]).stdout;
        assert_eq!(
            logs.contains("exit handler ran"),
            handler_runs,
            "{verb}: {logs}"
        );
    }
}

#[test]
fn suspend_template_waits_for_resume_with_supplied_value() {
    let sb = Sandbox::new();
    let wf = sb.write(
        "approve.yaml",
        "kind: Workflow\nmetadata: {name: approve}\nspec:\n  entrypoint: main\n  templates:\n  - name: main\n    steps:\n    - - {name: wait, template: approval}\n    - - name: go\n        template: say\n        arguments: {parameters: [{name: msg, value: '{{steps.wait.outputs.parameters.answer}}'}]}\n  - name: approval\n    suspend: {}\n    outputs:\n      parameters:\n      - name: answer\n        enum: [yes, no]\n        valueFrom: {supplied: {}}\n  - name: say\n    inputs: {parameters: [{name: msg}]}\n    container: {image: x, command: [echo, 'answer={{inputs.parameters.msg}}']}\n",
    );
    let mut child = sb.spawn(&["run", wf.to_str().unwrap()]);
    wait_for(Duration::from_secs(30), || {
        sb.weir(&["get", "approve"]).stdout.contains("Suspended")
    });
    // a value outside the enum is refused, and the run keeps waiting
    let out = sb.weir(&["resume", "approve", "-p", "answer=maybe"]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(
        out.stderr
            .contains("-p answer: `maybe` is not one of yes, no (node `wait`)"),
        "{}",
        out.all()
    );
    assert!(sb.weir(&["get", "approve"]).stdout.contains("Suspended"));
    let out = sb.weir(&["resume", "approve", "-p", "answer=yes"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(child.wait().unwrap().code(), Some(0));
    assert!(sb.weir(&["logs", "approve"]).stdout.contains("answer=yes"));
}

#[test]
fn list_get_logs_and_delete() {
    let sb = Sandbox::new();
    let wf = sb.write("hello.yaml", "kind: Workflow\nmetadata: {generateName: hello-}\nspec:\n  entrypoint: t\n  templates:\n  - name: t\n    container: {image: x, command: [echo, hello from weir]}\n");
    assert_eq!(sb.weir(&["run", wf.to_str().unwrap()]).code, 0);
    let name = sb.weir(&["list", "-o", "name"]).stdout.trim().to_string();
    assert!(name.starts_with("hello-") && name.len() == 11, "{name}");
    assert!(sb.weir(&["list"]).stdout.contains("Succeeded"));
    assert_eq!(
        sb.weir(&["logs", "@latest"]).stdout.trim(),
        format!("{name}: hello from weir")
    );
    assert!(
        sb.weir(&["get", &name, "-o", "yaml"])
            .stdout
            .contains("phase: Succeeded")
    );
    assert_eq!(sb.weir(&["delete", &name]).code, 0);
    assert_eq!(sb.weir(&["list", "-o", "name"]).stdout.trim(), "");
    assert_eq!(sb.weir(&["get", &name]).code, 1);
}

#[test]
fn concurrent_tasks_have_private_tmp() {
    let sb = Sandbox::new();
    let wf = sb.write(
        "tmp.yaml",
        "kind: Workflow\nmetadata: {name: tmp}\nspec:\n  entrypoint: main\n  templates:\n  - name: main\n    steps:\n    - - {name: w, template: w, withItems: [a, b, c, d], arguments: {parameters: [{name: v, value: '{{item}}'}]}}\n  - name: w\n    inputs: {parameters: [{name: v}]}\n    outputs: {parameters: [{name: out, valueFrom: {path: /tmp/out.txt}}]}\n    container: {image: x, command: [sh, -c, 'echo {{inputs.parameters.v}} > /tmp/out.txt; sleep 0.3; cat /tmp/out.txt']}\n",
    );
    let out = sb.weir(&["run", wf.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.all());
    let wf = sb.json(&["get", "tmp", "-o", "json"]);
    for n in wf["status"]["nodes"]
        .as_object()
        .unwrap()
        .values()
        .filter(|n| n["type"] == "Pod")
    {
        let item = n["displayName"]
            .as_str()
            .unwrap()
            .chars()
            .rev()
            .nth(1)
            .unwrap()
            .to_string();
        assert_eq!(n["outputs"]["parameters"][0]["value"], item, "{n}");
        assert_eq!(n["outputs"]["result"], item);
    }
}

/// Start/end stamps written by tasks (millisecond clock of the host).
fn overlaps(dir: &std::path::Path) -> usize {
    let mut spans = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let t = std::fs::read_to_string(e.path()).unwrap();
        let v: Vec<u128> = t.split_whitespace().map(|x| x.parse().unwrap()).collect();
        spans.push((v[0], v[1]));
    }
    spans
        .iter()
        .map(|&(s, _)| spans.iter().filter(|&&(a, b)| a <= s && s < b).count())
        .max()
        .unwrap_or(0)
}

#[test]
fn gpu_requests_get_distinct_devices_and_impossible_requests_fail() {
    let sb = Sandbox::new();
    let stamps = sb.dir_with("gpu-stamps", &[]);
    let wf = sb.write(
        "gpu.yaml",
        &format!(
            "kind: Workflow\nmetadata: {{name: gpu}}\nspec:\n  entrypoint: main\n  templates:\n  - name: main\n    steps:\n    - - {{name: train, template: train, withItems: [a, b, c, d]}}\n      - {{name: cpu-only, template: cpu}}\n  - name: train\n    container:\n      image: x\n      command: [sh, -c, 'echo \"$(date +%s%3N)\" > {s}/$$; echo dev=$CUDA_VISIBLE_DEVICES; sleep 0.3; echo \"$(date +%s%3N)\" >> {s}/$$']\n      resources: {{limits: {{nvidia.com/gpu: 1}}}}\n  - name: cpu\n    container: {{image: x, command: [sh, -c, 'echo cpu-only=[$CUDA_VISIBLE_DEVICES]']}}\n",
            s = stamps.display()
        ),
    );
    let mut cmd = sb.cmd(&["run", wf.to_str().unwrap()]);
    cmd.env("WEIR_GPUS", "g0,g1");
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let devs: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.split("dev=").nth(1))
        .collect();
    assert_eq!(devs.len(), 4);
    assert!(devs.iter().all(|d| *d == "g0" || *d == "g1"), "{devs:?}");
    assert!(
        stdout.contains("cpu-only=[]"),
        "tasks without a GPU request see no GPU: {stdout}"
    );
    assert!(
        overlaps(&stamps) <= 2,
        "at most two one-GPU tasks at once on two GPUs"
    );

    let greedy = sb.write("greedy.yaml", "kind: Workflow\nmetadata: {name: greedy}\nspec:\n  entrypoint: t\n  templates:\n  - name: t\n    container: {image: x, command: [true], resources: {requests: {nvidia.com/gpu: 3}}}\n");
    let mut cmd = sb.cmd(&["run", greedy.to_str().unwrap()]);
    cmd.env("WEIR_GPUS", "g0,g1");
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("requests 3 GPU(s) but this machine has 2")
    );
}

#[test]
fn cpu_requests_limit_concurrency() {
    let sb = Sandbox::new();
    let stamps = sb.dir_with("cpu-stamps", &[]);
    let cores = std::thread::available_parallelism().unwrap().get();
    let items: Vec<String> = (0..cores * 2 + 1).map(|i| i.to_string()).collect();
    let wf = sb.write(
        "cpu.yaml",
        &format!(
            "kind: Workflow\nmetadata: {{name: cpu}}\nspec:\n  entrypoint: main\n  templates:\n  - name: main\n    steps:\n    - - {{name: w, template: w, withItems: [{}]}}\n  - name: w\n    container:\n      image: x\n      command: [sh, -c, 'echo \"$(date +%s%3N)\" > {s}/$$; sleep 0.3; echo \"$(date +%s%3N)\" >> {s}/$$']\n      resources: {{requests: {{cpu: '1'}}}}\n",
            items.join(", "),
            s = stamps.display()
        ),
    );
    let out = sb.weir(&["run", wf.to_str().unwrap(), "--no-logs"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let max = overlaps(&stamps);
    assert!(
        max >= 1 && max <= cores,
        "{max} one-CPU tasks ran at once on {cores} cores"
    );
}

#[test]
fn memoized_steps_are_reused_across_runs_until_deleted() {
    let sb = Sandbox::new();
    let marks = sb.dir_with("memo-marks", &[]);
    let wf = sb.write(
        "memo.yaml",
        &format!(
            "kind: Workflow\nmetadata: {{generateName: memo-}}\nspec:\n  entrypoint: main\n  arguments: {{parameters: [{{name: x, value: '7'}}]}}\n  templates:\n  - name: main\n    steps:\n    - - {{name: sq, template: square, arguments: {{parameters: [{{name: n, value: '{{{{workflow.parameters.x}}}}'}}]}}}}\n    - - {{name: show, template: show, arguments: {{parameters: [{{name: v, value: '{{{{steps.sq.outputs.result}}}}'}}]}}}}\n  - name: square\n    inputs: {{parameters: [{{name: n}}]}}\n    memoize: {{key: 'sq-{{{{inputs.parameters.n}}}}', maxAge: 1h, cache: {{configMap: {{name: squares}}}}}}\n    container: {{image: x, command: [sh, -c, 'echo . >> {m}/ran; echo $(({{{{inputs.parameters.n}}}} * {{{{inputs.parameters.n}}}}))']}}\n  - name: show\n    inputs: {{parameters: [{{name: v}}]}}\n    container: {{image: x, command: [echo, 'square={{{{inputs.parameters.v}}}}']}}\n",
            m = marks.display()
        ),
    );
    for _ in 0..2 {
        let out = sb.weir(&["run", wf.to_str().unwrap()]);
        assert_eq!(out.code, 0, "{}", out.all());
        assert!(out.stdout.contains("square=49"), "{}", out.stdout);
    }
    assert_eq!(
        count(&marks.join("ran")),
        1,
        "the second run reused the memoized result"
    );
    assert!(sb.weir(&["cache", "list"]).stdout.contains("sq-7"));
    assert_eq!(sb.weir(&["cache", "delete", "squares"]).code, 0);
    assert_eq!(sb.weir(&["run", wf.to_str().unwrap()]).code, 0);
    assert_eq!(count(&marks.join("ran")), 2);
}

#[test]
fn database_from_a_newer_weir_is_refused_clearly() {
    let sb = Sandbox::new();
    assert_eq!(sb.weir(&["list"]).code, 0, "creates the database");
    let status = std::process::Command::new("python3")
        .args(["-c", "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute('PRAGMA user_version=99'); c.commit()", sb.db.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = sb.weir(&["list"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stderr
            .contains("schema version 99 is newer than this weir understands"),
        "{}",
        out.stderr
    );
}

#[test]
fn suspending_a_run_holds_new_tasks_until_resumed() {
    let sb = Sandbox::new();
    let gate = sb.dir.join("gate");
    let wf = sb.write(
        "hold.yaml",
        &format!(
            "kind: Workflow\nmetadata: {{name: hold}}\nspec:\n  entrypoint: main\n  templates:\n  - name: main\n    steps:\n    - - {{name: a, template: a}}\n    - - {{name: b, template: b}}\n  - name: a\n    container: {{image: x, command: [sh, -c, 'echo a-started; while [ ! -e {g} ]; do sleep 0.05; done']}}\n  - name: b\n    container: {{image: x, command: [echo, b-ran]}}\n",
            g = gate.display()
        ),
    );
    let mut child = sb.spawn(&["run", wf.to_str().unwrap()]);
    wait_for(Duration::from_secs(30), || {
        sb.weir(&["logs", "hold"]).stdout.contains("a-started")
    });
    assert_eq!(sb.weir(&["suspend", "hold"]).code, 0);
    wait_for(Duration::from_secs(30), || {
        sb.weir(&["get", "hold"]).stdout.contains("Suspended")
    });
    std::fs::write(&gate, "").unwrap();
    let node_phase = |name: &str| {
        let wf = sb.json(&["get", "hold", "-o", "json"]);
        wf["status"]["nodes"]
            .as_object()
            .unwrap()
            .values()
            .find(|n| n["displayName"] == name)
            .map(|n| n["phase"].as_str().unwrap().to_string())
    };
    wait_for(Duration::from_secs(30), || node_phase("b").is_some());
    assert_eq!(node_phase("a").as_deref(), Some("Succeeded"));
    assert_eq!(
        node_phase("b").as_deref(),
        Some("Pending"),
        "b is held while the run is suspended"
    );
    assert!(!sb.weir(&["logs", "hold"]).stdout.contains("b-ran"));
    assert_eq!(sb.weir(&["resume", "hold"]).code, 0);
    assert_eq!(child.wait().unwrap().code(), Some(0));
    assert!(sb.weir(&["logs", "hold"]).stdout.contains("b-ran"));
}

#[test]
fn tasks_without_declared_files_get_their_own_tmpfs() {
    let sb = Sandbox::new();
    let wf = sb.write(
        "light.yaml",
        "kind: Workflow\nmetadata: {name: light}\nspec:\n  entrypoint: main\n  templates:\n  - name: main\n    steps:\n    - - {name: w, template: w, withItems: [a, b, c], arguments: {parameters: [{name: v, value: '{{item}}'}]}}\n  - name: w\n    inputs: {parameters: [{name: v}]}\n    container: {image: x, command: [sh, -c, 'echo {{inputs.parameters.v}} > /tmp/mine; sleep 0.3; echo saw-$(cat /tmp/mine)-$(ls /tmp | wc -l)']}\n",
    );
    let out = sb.weir(&["run", wf.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.all());
    for v in ["a", "b", "c"] {
        assert!(
            out.stdout.contains(&format!("saw-{v}-1")),
            "each task sees only its own /tmp/mine: {}",
            out.stdout
        );
    }
    assert!(
        !std::path::Path::new("/tmp/mine").exists(),
        "nothing reached the host's /tmp"
    );
}

#[test]
fn volumes_map_to_run_and_claim_scoped_directories() {
    let sb = Sandbox::new();
    let wf = sb.write(
        "vol.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {mode: fast}\n---\n\
         kind: Workflow\nmetadata: {generateName: vol-}\nspec:\n  entrypoint: main\n  volumeClaimTemplates:\n  - metadata: {name: work}\n    spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}\n  volumes:\n  - {name: keep, persistentVolumeClaim: {claimName: weir-it-claim}}\n  - {name: cfg, configMap: {name: settings}}\n  templates:\n  - name: main\n    steps:\n    - - {name: write, template: write}\n    - - {name: read, template: read}\n  - name: write\n    container:\n      image: x\n      command: [sh, -c, 'echo from-write > /mnt/work/msg; echo run >> /mnt/keep/runs']\n      volumeMounts: [{name: work, mountPath: /mnt/work}, {name: keep, mountPath: /mnt/keep}]\n  - name: read\n    container:\n      image: x\n      command: [sh, -c, 'echo got=$(cat /mnt/work/msg) mode=$(cat /tmp/cfg/mode) runs=$(wc -l < /mnt/keep/runs)']\n      volumeMounts: [{name: work, mountPath: /mnt/work}, {name: keep, mountPath: /mnt/keep}, {name: cfg, mountPath: /tmp/cfg}]\n",
    );
    let first = sb.weir(&["run", wf.to_str().unwrap()]);
    assert_eq!(first.code, 0, "{}", first.all());
    assert!(
        first.stdout.contains("got=from-write mode=fast runs=1"),
        "{}",
        first.stdout
    );
    let second = sb.weir(&["run", wf.to_str().unwrap()]);
    assert!(
        second.stdout.contains("runs=2"),
        "an existing claim outlives the run: {}",
        second.stdout
    );
}

#[test]
fn kubernetes_only_fields_are_warned_about_with_their_location_and_ignored() {
    let sb = Sandbox::new();
    let wf = sb.write(
        "k8s.yaml",
        "kind: Workflow\nmetadata: {name: k8s}\nspec:\n  entrypoint: t\n  serviceAccountName: runner\n  templates:\n  - name: t\n    nodeSelector: {gpu: 'true'}\n    container: {image: x, command: [echo, ok]}\n",
    );
    let out = sb.weir(&["run", wf.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stderr.contains("k8s.yaml:5:23: warning: spec.serviceAccountName: has no effect when running on one host"), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("k8s.yaml:8:19: warning: spec.templates[0].nodeSelector:"),
        "{}",
        out.stderr
    );
}

#[test]
fn synchronization_locks_are_shared_by_runs_of_one_database() {
    let sb = Sandbox::new();
    let shared = sb.dir_with("shared", &[]);
    let go = sb.dir.join("go");
    // Each task takes `in` for its whole life; a second holder at the same time fails.
    let crit = format!(
        "mkdir {s}/in || exit 1; while [ ! -e {go} ]; do sleep 0.05; done; rmdir {s}/in",
        s = shared.display(),
        go = go.display()
    );
    let wf = sb.write(
        "wf-mutex.yaml",
        &format!(
            "kind: Workflow\nmetadata: {{generateName: wfm-}}\nspec:\n  entrypoint: crit\n  synchronization:\n    mutexes: [{{name: shared-dir}}]\n  templates:\n  - name: crit\n    container: {{image: x, command: [sh, -c, '{crit}']}}\n"
        ),
    );
    let mut first = sb.spawn(&["run", wf.to_str().unwrap(), "--no-logs"]);
    wait_for(Duration::from_secs(30), || shared.join("in").exists());
    let mut second = sb.spawn(&["run", wf.to_str().unwrap(), "--no-logs"]);
    // the second run waits for the lock, and says so
    wait_for(Duration::from_secs(30), || {
        let l = sb.weir(&["sync", "list"]).stdout;
        // one holder and one waiter on the lock's line
        l.lines()
            .any(|r| r.starts_with("default/Mutex/shared-dir") && r.matches("wfm-").count() == 2)
    });
    let list = sb.json(&["list", "-o", "json"]);
    let waiting: Vec<&serde_json::Value> = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            r["message"]
                .as_str()
                .is_some_and(|m| m == "Waiting for lock: default/Mutex/shared-dir")
        })
        .collect();
    assert_eq!(waiting.len(), 1, "{list}");
    std::fs::write(&go, "").unwrap();
    assert_eq!(first.wait().unwrap().code(), Some(0));
    assert_eq!(second.wait().unwrap().code(), Some(0));
    let after = sb.weir(&["sync", "list"]).stdout;
    assert!(!after.contains("wfm-"), "locks are given back: {after}");

    // template level: a semaphore of 2 from a ConfigMap, a database semaphore set by `weir sync`
    let stamps = sb.dir_with("stamps", &[]);
    let tmpl = sb.write(
        "tmpl.yaml",
        &format!(
            "kind: Workflow\nmetadata: {{name: sem}}\nspec:\n  entrypoint: main\n  templates:\n  - name: main\n    steps:\n    - - {{name: w, template: w, withItems: [1, 2, 3, 4, 5]}}\n      - {{name: d, template: d, withItems: [1, 2, 3]}}\n  - name: w\n    synchronization:\n      semaphores: [{{configMapKeyRef: {{name: limits, key: w}}}}]\n    container: {{image: x, command: [sh, -c, 'echo \"$(date +%s%3N)\" > {s}/$$; sleep 0.3; echo \"$(date +%s%3N)\" >> {s}/$$']}}\n  - name: d\n    synchronization:\n      semaphores: [{{database: {{key: d}}}}]\n    container: {{image: x, command: [true]}}\n---\nkind: ConfigMap\napiVersion: v1\nmetadata: {{name: limits}}\ndata: {{w: '2'}}\n",
            s = stamps.display()
        ),
    );
    let out = sb.weir(&["run", tmpl.to_str().unwrap(), "--no-logs"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.all().contains("database semaphore `default/Database/d` has no limit; set one with `weir sync limit default/Database/d N`"),
        "{}",
        out.all()
    );
    let max = overlaps(&stamps);
    assert!((1..=2).contains(&max), "{max} tasks held a semaphore of 2");
    std::fs::remove_dir_all(&stamps).unwrap();
    std::fs::create_dir_all(&stamps).unwrap();
    let out = sb.weir(&["sync", "limit", "d", "1"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let out = sb.weir(&["run", tmpl.to_str().unwrap(), "--name", "sem2", "--no-logs"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let max = overlaps(&stamps);
    assert!((1..=2).contains(&max), "{max} tasks held a semaphore of 2");
}

#[test]
fn daemon_steps_and_sidecars_serve_later_steps_on_loopback() {
    let sb = Sandbox::new();
    let (p1, p2) = (free_port(), free_port());
    let get = |port: u16, host: &str| {
        format!(
            "python3 -c \"import urllib.request; print(urllib.request.urlopen('http://{host}:{port}/').status)\""
        )
    };
    let wf = sb.write(
        "daemon.yaml",
        &format!(
            "kind: Workflow
metadata: {{name: daemon}}
spec:
  entrypoint: main
  templates:
  - name: main
    steps:
    - - {{name: server, template: server}}
    - - {{name: client, template: client, arguments: {{parameters: [{{name: ip, value: '{{{{steps.server.ip}}}}'}}]}}}}
      - {{name: with-sidecar, template: with-sidecar}}
      - {{name: with-init, template: with-init}}
  - name: with-init
    volumes: [{{name: work, emptyDir: {{}}}}]
    initContainers:
    - {{name: prepare, image: alpine, command: [sh, -c, 'echo prepared > /work/f; echo init ran'], mirrorVolumeMounts: true}}
    container:
      image: alpine
      command: [cat, /work/f]
      volumeMounts: [{{name: work, mountPath: /work}}]
  - name: server
    daemon: true
    container:
      image: python:3
      command: [sh, -c, 'sleep 0.2; exec python3 -m http.server {p1} --bind 127.0.0.1']
      readinessProbe: {{httpGet: {{path: /, port: {p1}}}}}
  - name: client
    inputs: {{parameters: [{{name: ip}}]}}
    container: {{image: python:3, command: [sh, -c, '{c1}']}}
  - name: with-sidecar
    container:
      image: python:3
      command: [sh, -c, 'for i in $(seq 100); do {c2} 2>/dev/null && exit 0; sleep 0.1; done; exit 1']
    sidecars:
    - name: web
      image: python:3
      command: [python3, -m, http.server, '{p2}', --bind, 127.0.0.1]
",
            c1 = get(p1, "{{inputs.parameters.ip}}").replace('\'', "''"),
            c2 = get(p2, "127.0.0.1").replace('\'', "''"),
        ),
    );
    let out = sb.weir(&["run", wf.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.all());
    let wf = sb.json(&["get", "daemon", "-o", "json"]);
    let nodes: Vec<&serde_json::Value> = wf["status"]["nodes"]
        .as_object()
        .unwrap()
        .values()
        .collect();
    let by_name = |n: &str| {
        nodes
            .iter()
            .find(|x| x["displayName"] == n)
            .unwrap_or_else(|| panic!("no node {n}"))
    };
    assert_eq!(by_name("client")["outputs"]["result"], "200");
    assert_eq!(by_name("with-sidecar")["outputs"]["result"], "200");
    assert_eq!(by_name("with-init")["outputs"]["result"], "prepared");
    let logs = sb.weir(&["logs", "daemon", "with-init"]).stdout;
    assert!(logs.contains("[prepare] init ran"), "{logs}");
    // an init container that fails fails its task, whose own program never runs
    let marker = sb.dir.join("main-ran");
    let bad = sb.write(
        "bad-init.yaml",
        &format!("kind: Workflow\nmetadata: {{name: bad-init}}\nspec:\n  entrypoint: t\n  templates:\n  - name: t\n    initContainers: [{{name: check, image: a, command: [sh, -c, 'exit 3']}}]\n    container: {{image: a, command: [touch, {}]}}\n", marker.display()),
    );
    let out = sb.weir(&["run", bad.to_str().unwrap()]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stdout.contains("exit code 3"), "{}", out.all());
    assert!(!marker.exists());
    let logs = sb.weir(&["logs", "bad-init"]).stdout;
    assert!(
        logs.contains("init container `check` failed with exit code 3"),
        "{logs}"
    );
    assert!(
        by_name("server")["message"]
            .as_str()
            .unwrap()
            .starts_with("daemoned"),
        "{}",
        by_name("server")
    );
    // weir has exited, and with it every process it started: nothing listens on either port
    for port in [p1, p2] {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "{port}"
        );
    }
    // the sidecar's output is in its task's log, marked with its name
    let logs = sb.weir(&["logs", "daemon", "with-sidecar"]).stdout;
    assert!(logs.contains("[web] "), "{logs}");
}

#[test]
fn a_container_set_shares_its_workspace_and_main_gives_its_outputs() {
    let sb = Sandbox::new();
    let wf = sb.write(
        "set.yaml",
        "kind: Workflow
metadata: {name: set}
spec:
  entrypoint: main
  templates:
  - name: main
    dag:
      tasks:
      - {name: group, template: group}
      - {name: check, template: check, dependencies: [group], arguments: {parameters: [{name: r, value: '{{tasks.group.outputs.result}}'}, {name: p, value: '{{tasks.group.outputs.parameters.out}}'}]}}
  - name: group
    volumes: [{name: workspace, emptyDir: {}}]
    containerSet:
      volumeMounts: [{name: workspace, mountPath: /workspace}]
      containers:
      - {name: a, image: alpine, command: [sh, -c, 'echo from-a > /workspace/out']}
      - {name: main, image: alpine, command: [sh, -c, 'cat /workspace/out; echo main-was-here'], dependencies: [a]}
    outputs:
      parameters: [{name: out, valueFrom: {path: /workspace/out}}]
  - name: check
    inputs: {parameters: [{name: r}, {name: p}]}
    container: {image: alpine, command: [sh, -c, 'test \"{{inputs.parameters.p}}\" = from-a && echo \"{{inputs.parameters.r}}\"']}
",
    );
    let out = sb.weir(&["run", wf.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.all());
    let wf = sb.json(&["get", "set", "-o", "json"]);
    let check = node(&wf, "check");
    assert_eq!(check["outputs"]["result"], "from-a\nmain-was-here");
}

#[test]
fn http_templates_call_a_server_and_judge_the_answer() {
    let sb = Sandbox::new();
    let site = sb.dir_with("site", &[("ok.txt", "hello from the server")]);
    let web = WebServer::start(&site);
    let wf = sb.write(
        "http.yaml",
        &format!(
            "kind: Workflow
metadata: {{name: http}}
spec:
  entrypoint: main
  templates:
  - name: main
    steps:
    - - {{name: good, template: get, arguments: {{parameters: [{{name: url, value: 'http://127.0.0.1:{p}/ok.txt'}}]}}}}
      - {{name: bad, template: get, continueOn: {{failed: true}}, arguments: {{parameters: [{{name: url, value: 'http://127.0.0.1:{p}/missing'}}]}}}}
      - {{name: is-404, template: expect-404}}
      - {{name: body, template: body-says-hello}}
    - - {{name: use, template: echo, arguments: {{parameters: [{{name: m, value: '{{{{steps.good.outputs.result}}}}'}}]}}}}
  - name: get
    inputs: {{parameters: [{{name: url}}]}}
    http: {{url: '{{{{inputs.parameters.url}}}}'}}
  - name: expect-404
    http:
      url: 'http://127.0.0.1:{p}/missing'
      successCondition: response.statusCode == 404
  - name: body-says-hello
    http:
      url: 'http://127.0.0.1:{p}/ok.txt'
      successCondition: 'response.body contains \"hello\" && response.headers[\"Content-Type\"][0] == \"text/plain\"'
  - name: echo
    inputs: {{parameters: [{{name: m}}]}}
    container: {{image: alpine, command: [echo, '{{{{inputs.parameters.m}}}}']}}
",
            p = web.1
        ),
    );
    let out = sb.weir(&["run", wf.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.all());
    let wf = sb.json(&["get", "http", "-o", "json"]);
    let nodes: Vec<&serde_json::Value> = wf["status"]["nodes"]
        .as_object()
        .unwrap()
        .values()
        .collect();
    let node = |n: &str| *nodes.iter().find(|x| x["displayName"] == n).unwrap();
    assert_eq!(node("good")["phase"], "Succeeded");
    assert_eq!(node("bad")["phase"], "Failed");
    assert_eq!(node("bad")["message"], "HTTP status 404");
    assert_eq!(node("is-404")["phase"], "Succeeded");
    assert_eq!(node("body")["phase"], "Succeeded");
    assert_eq!(node("use")["outputs"]["result"], "hello from the server");
}

#[test]
fn ttl_pod_gc_and_artifact_gc_remove_what_they_name() {
    let sb = Sandbox::new();
    let gc = sb.write(
        "gc.yaml",
        "kind: Workflow
metadata: {name: gc}
spec:
  entrypoint: main
  podGC: {strategy: OnPodCompletion}
  artifactGC: {strategy: OnWorkflowCompletion}
  templates:
  - name: main
    steps:
    - - {name: make, template: make}
  - name: make
    outputs:
      artifacts:
      - {name: out, path: /tmp/out.txt}
      - {name: kept, path: /tmp/kept.txt, artifactGC: {strategy: Never}}
    container: {image: alpine, command: [sh, -c, 'echo made; echo data > /tmp/out.txt; echo k > /tmp/kept.txt']}
",
    );
    let out = sb.weir(&["run", gc.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.all());
    // the task's work directory is gone, its log stays; the run's artifacts are gone
    let work = sb.dir.join("runs/gc/work");
    let left: Vec<_> = std::fs::read_dir(&work)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    assert!(sb.weir(&["logs", "gc"]).stdout.contains("made"));
    // the workflow's artifactGC removed `out`; `kept` says Never
    let run = sb.json(&["get", "gc", "-o", "json"]);
    let arts = &node(&run, "make")["outputs"]["artifacts"];
    let stored = |name: &str| {
        let a = arts
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == name)
            .unwrap();
        sb.dir
            .join("artifacts")
            .join(a["key"].as_str().unwrap())
            .exists()
    };
    assert!(!stored("out") && stored("kept"), "{arts}");
    assert_eq!(sb.phase("gc"), "Succeeded");

    // a time to live of 0: the run is gone the next time the database is opened
    let ttl = sb.write(
        "ttl.yaml",
        "kind: Workflow\nmetadata: {name: ttl}\nspec:\n  entrypoint: t\n  ttlStrategy: {secondsAfterSuccess: 0, secondsAfterFailure: 3600}\n  templates:\n  - name: t\n    container: {image: alpine, command: [echo, hi]}\n",
    );
    let out = sb.weir(&["run", ttl.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.all());
    let get = sb.weir(&["get", "ttl"]);
    assert_ne!(get.code, 0, "{}", get.all());
    assert!(get.all().contains("run `ttl` not found"), "{}", get.all());
    assert!(!sb.dir.join("runs/ttl").exists());
    // the other run is untouched
    assert_eq!(sb.phase("gc"), "Succeeded");
}

#[test]
fn prometheus_metrics_of_templates_and_workflows_are_recorded() {
    let sb = Sandbox::new();
    let wf = sb.write(
        "m.yaml",
        "kind: Workflow
metadata: {generateName: m-}
spec:
  entrypoint: main
  metrics:
    prometheus:
    - {name: runs_total, help: Runs by status, labels: [{key: status, value: '{{workflow.status}}'}], counter: {value: '1'}}
  templates:
  - name: main
    metrics:
      prometheus:
      - {name: picked, help: The number picked, when: '{{status}} == Succeeded', histogram: {buckets: [5, 10], value: '{{outputs.parameters.n}}'}}
      - {name: last_exit, help: Exit code, gauge: {realtime: false, value: '{{exitCode}}'}}
    outputs:
      parameters: [{name: n, valueFrom: {path: /tmp/n}}]
    container: {image: alpine, command: [sh, -c, 'echo 7 > /tmp/n']}
",
    );
    for _ in 0..2 {
        let out = sb.weir(&["run", wf.to_str().unwrap(), "--no-logs"]);
        assert_eq!(out.code, 0, "{}", out.all());
    }
    let text = sb.weir(&["metrics"]).stdout;
    for line in [
        "# TYPE runs_total counter",
        "runs_total{status=\"Succeeded\"} 2",
        "# TYPE picked histogram",
        "picked_bucket{le=\"5\"} 0",
        "picked_bucket{le=\"10\"} 2",
        "picked_bucket{le=\"+Inf\"} 2",
        "picked_sum 14",
        "picked_count 2",
        "last_exit 0",
    ] {
        assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
    }
}

#[test]
fn key_only_artifacts_pass_through_the_local_repository() {
    let sb = Sandbox::new();
    // a top-level directory no one has: the tasks see it empty and make their own directories
    let top = format!("/weir-it-{}", std::process::id());
    let wf = sb.write(
        "keys.yaml",
        &format!(
            "kind: Workflow
metadata: {{name: keys}}
spec:
  entrypoint: main
  templates:
  - name: main
    dag:
      tasks:
      - {{name: split, template: split}}
      - name: map
        template: map
        depends: split
        arguments:
          parameters: [{{name: id, value: '{{{{item}}}}'}}]
          artifacts: [{{name: part, s3: {{key: '{{{{workflow.name}}}}/parts/{{{{item}}}}.txt'}}}}]
        withItems: ['1', '2']
      - {{name: reduce, template: reduce, depends: map}}
  - name: split
    container: {{image: alpine, command: [sh, -c, 'mkdir {top}/out && echo 10 > {top}/out/1.txt && echo 20 > {top}/out/2.txt']}}
    outputs:
      artifacts: [{{name: parts, path: {top}/out, archive: {{none: {{}}}}, s3: {{key: '{{{{workflow.name}}}}/parts/'}}}}]
  - name: map
    inputs:
      parameters: [{{name: id}}]
      artifacts: [{{name: part, path: {top}/in/part.txt}}]
    container: {{image: alpine, command: [sh, -c, 'mkdir {top}/out && expr $(cat {top}/in/part.txt) + 1 > {top}/out/r.txt']}}
    outputs:
      artifacts: [{{name: r, path: {top}/out/r.txt, archive: {{none: {{}}}}, s3: {{key: '{{{{workflow.name}}}}/results/{{{{inputs.parameters.id}}}}.txt'}}}}]
  - name: reduce
    inputs:
      artifacts: [{{name: results, path: {top}/results, s3: {{key: '{{{{workflow.name}}}}/results'}}}}]
    container: {{image: alpine, command: [sh, -c, 'cat {top}/results/1.txt {top}/results/2.txt']}}
"
        ),
    );
    let out = sb.weir(&["run", wf.to_str().unwrap()]);
    let _ = std::fs::remove_dir(&top);
    assert_eq!(out.code, 0, "{}", out.all());
    let wf = sb.json(&["get", "keys", "-o", "json"]);
    let reduce = node(&wf, "reduce");
    assert_eq!(reduce["outputs"]["result"], "11\n21");
    // stored under the keys the workflow named
    assert!(sb.dir.join("artifacts/keys/parts/1.txt").is_file());
    assert!(sb.dir.join("artifacts/keys/results/2.txt").is_file());
}

#[test]
fn data_templates_list_and_transform_stored_keys() {
    let sb = Sandbox::new();
    let wf = sb.write(
        "data.yaml",
        "kind: Workflow
metadata: {name: data}
spec:
  entrypoint: main
  templates:
  - name: main
    steps:
    - - {name: logs, template: make-logs}
    - - {name: list, template: list-logs}
    - - name: process
        template: process
        withParam: '{{steps.list.outputs.result}}'
        arguments:
          artifacts: [{name: file, s3: {key: '{{item}}'}}]
  - name: make-logs
    container: {image: alpine, command: [sh, -c, 'mkdir -p /tmp/logs/a && echo one > /tmp/logs/a/main.log && echo two > /tmp/logs/b.main.log && echo x > /tmp/logs/other.txt']}
    outputs:
      artifacts: [{name: logs, path: /tmp/logs, archive: {none: {}}, s3: {key: '{{workflow.name}}/logs'}}]
  - name: list-logs
    data:
      source:
        artifactPaths: {name: logs, s3: {key: '{{workflow.name}}/logs'}}
      transformation:
      - expression: 'filter(data, {# endsWith \"main.log\"})'
  - name: process
    inputs:
      artifacts: [{name: file, path: /tmp/f}]
    container: {image: alpine, command: [cat, /tmp/f]}
",
    );
    let out = sb.weir(&["run", wf.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.all());
    let wf = sb.json(&["get", "data", "-o", "json"]);
    assert_eq!(
        node(&wf, "list")["outputs"]["result"],
        r#"["data/logs/a/main.log","data/logs/b.main.log"]"#
    );
    let mut results: Vec<String> = wf["status"]["nodes"]
        .as_object()
        .unwrap()
        .values()
        .filter(|n| n["displayName"].as_str().unwrap().starts_with("process("))
        .map(|n| n["outputs"]["result"].as_str().unwrap().to_string())
        .collect();
    results.sort();
    assert_eq!(results, ["one", "two"]);
}

#[test]
fn a_resource_template_creating_a_workflow_runs_it_as_a_child_run() {
    let sb = Sandbox::new();
    let wf = sb.write(
        "parent.yaml",
        "kind: Workflow
metadata: {name: parent}
spec:
  entrypoint: main
  templates:
  - name: main
    steps:
    - - {name: ok, template: child, arguments: {parameters: [{name: code, value: '0'}]}}
      - {name: bad, template: child, continueOn: {failed: true}, arguments: {parameters: [{name: code, value: '3'}]}}
    - - {name: report, template: echo, arguments: {parameters: [{name: m, value: '{{steps.ok.outputs.parameters.phase}}'}]}}
  - name: child
    inputs: {parameters: [{name: code}]}
    resource:
      action: create
      successCondition: status.phase == Succeeded
      manifest: |
        apiVersion: argoproj.io/v1alpha1
        kind: Workflow
        metadata:
          generateName: child-{{inputs.parameters.code}}-
        spec:
          entrypoint: t
          templates:
          - name: t
            container: {image: alpine, command: [sh, -c, 'exit {{inputs.parameters.code}}']}
    outputs:
      parameters:
      - {name: name, valueFrom: {jsonPath: '{.metadata.name}'}}
      - {name: phase, valueFrom: {jsonPath: '{.status.phase}'}}
  - name: echo
    inputs: {parameters: [{name: m}]}
    container: {image: alpine, command: [echo, '{{inputs.parameters.m}}']}
",
    );
    let out = sb.weir(&["run", wf.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.all());
    let wf = sb.json(&["get", "parent", "-o", "json"]);
    assert_eq!(node(&wf, "ok")["phase"], "Succeeded");
    assert_eq!(node(&wf, "bad")["phase"], "Failed");
    assert_eq!(node(&wf, "report")["outputs"]["result"], "Succeeded");
    // the children are runs of their own, in the same database
    let child = node(&wf, "ok")["outputs"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "name")
        .unwrap()["value"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(child.starts_with("child-0-"), "{child}");
    let list = sb.weir(&["list"]).stdout;
    assert!(
        list.lines()
            .any(|l| l.starts_with(&child) && l.contains("Succeeded")),
        "{list}"
    );
    assert!(
        list.lines()
            .any(|l| l.starts_with("child-3-") && l.contains("Failed")),
        "{list}"
    );
}

#[test]
fn outputs_at_existing_system_paths_are_read_where_they_are() {
    let sb = Sandbox::new();
    let wf = sb.write(
        "sys.yaml",
        "kind: Workflow\nmetadata: {name: sys}\nspec:\n  entrypoint: t\n  templates:\n  - name: t\n    container: {image: alpine, command: ['true']}\n    outputs:\n      parameters: [{name: passwd, valueFrom: {path: /etc/passwd}}]\n",
    );
    let out = sb.weir(&["run", wf.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.all());
    let wf = sb.json(&["get", "sys", "-o", "json"]);
    let v = node(&wf, "sys")["outputs"]["parameters"][0]["value"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(v.starts_with("root:"), "{v}");
}

#[test]
fn https_templates_verify_certificates_unless_told_not_to() {
    let sb = Sandbox::new();
    let site = sb.dir_with("tls-site", &[("ok.txt", "over tls")]);
    // a certificate authority of our own, and the site's certificate signed by it
    crate::support::test_pki(&sb.dir);
    let (ca, cert, key) = (
        sb.dir.join("ca.pem"),
        sb.dir.join("server.pem"),
        sb.dir.join("server.key"),
    );
    let web = WebServer::serve(&site, Some((&cert, &key)));
    let port = web.1;
    let wf = sb.write(
        "https.yaml",
        &format!(
            "kind: Workflow
metadata: {{name: https}}
spec:
  entrypoint: main
  templates:
  - name: main
    steps:
    - - {{name: trusting, template: insecure}}
      - {{name: checking, template: verified, continueOn: {{error: true, failed: true}}}}
  - name: insecure
    http: {{url: 'https://127.0.0.1:{port}/ok.txt', insecureSkipVerify: true}}
  - name: verified
    http: {{url: 'https://127.0.0.1:{port}/ok.txt'}}
"
        ),
    );
    let out = sb.weir(&["run", wf.to_str().unwrap()]);
    drop(web);
    assert_eq!(out.code, 0, "{}", out.all());
    let wf = sb.json(&["get", "https", "-o", "json"]);
    assert_eq!(node(&wf, "trusting")["outputs"]["result"], "over tls");
    // a self-signed certificate is refused when it is verified
    let checking = node(&wf, "checking");
    assert_eq!(checking["phase"], "Error", "{checking}");
    assert!(
        checking["message"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("certificate"),
        "{checking}"
    );
    // with the authority in the platform's trust store (`SSL_CERT_FILE` here), it is verified
    let web = WebServer::serve(&site, Some((&cert, &key)));
    let again = sb.write(
        "https-trusted.yaml",
        &format!(
            "kind: Workflow\nmetadata: {{name: https-trusted}}\nspec:\n  entrypoint: verified\n  templates:\n  - name: verified\n    http: {{url: 'https://127.0.0.1:{}/ok.txt'}}\n",
            web.1
        ),
    );
    let out = sb
        .cmd(&["run", again.to_str().unwrap()])
        .env("SSL_CERT_FILE", &ca)
        .output()
        .unwrap();
    drop(web);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let wf = sb.json(&["get", "https-trusted", "-o", "json"]);
    assert_eq!(wf["status"]["phase"], "Succeeded", "{wf}");
}

#[test]
fn tasks_report_metrics_and_a_malformed_report_is_an_error_on_its_node_only() {
    let sb = Sandbox::new();
    let wf = sb.write(
        "metrics.yaml",
        r#"apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata:
  name: tracked
spec:
  entrypoint: main
  arguments:
    parameters: [{name: lr, value: "0.1"}]
  templates:
  - name: main
    dag:
      tasks:
      - {name: good, template: good}
      - {name: bad, template: bad}
  - name: good
    script:
      image: alpine
      command: [sh]
      source: |
        for s in 1 2 3; do echo "{\"name\":\"loss\",\"value\":0.$((4 - s)),\"step\":$s}" >> "$WEIR_METRICS"; done
        echo "::weir-metric accuracy=0.75"
  - name: bad
    script:
      image: alpine
      command: [sh]
      source: echo "::weir-metric accuracy=high"
"#,
    );
    let o = sb.weir(&["run", wf.to_str().unwrap(), "--no-logs"]);
    assert_eq!(o.code, 1, "{}", o.all());
    let run = sb.json(&["get", "tracked", "-o", "json"]);
    let good = node(&run, "good");
    assert_eq!(good["phase"], "Succeeded");
    let metrics = good["outputs"]["metrics"].as_array().unwrap();
    assert_eq!(metrics.len(), 4, "{metrics:?}");
    // printed lines as they came, then the file's lines in order
    assert_eq!(
        metrics[0],
        serde_json::json!({"name": "accuracy", "value": 0.75})
    );
    assert_eq!(
        metrics[3],
        serde_json::json!({"name": "loss", "value": 0.1, "step": 3})
    );
    let bad = node(&run, "bad");
    assert_eq!(bad["phase"], "Error");
    assert!(
        bad["message"]
            .as_str()
            .unwrap()
            .contains("::weir-metric line: `high` is not a number"),
        "{bad}"
    );
    // compare: the parameters and each metric's final value
    let o = sb.weir(&["runs", "compare", "tracked"]);
    assert_eq!(o.code, 0, "{}", o.all());
    assert!(
        o.stdout.contains("param lr") && o.stdout.contains("0.1"),
        "{}",
        o.stdout
    );
    assert!(o.stdout.contains("metric accuracy"), "{}", o.stdout);
    let v = sb.json(&["runs", "compare", "tracked", "-o", "json"]);
    assert_eq!(v[0]["final"]["loss"], 0.1);
    assert_eq!(v[0]["final"]["accuracy"], 0.75);
}

#[test]
fn step_caching_reruns_only_what_a_changed_input_reaches() {
    let sb = Sandbox::new();
    let log = sb.dir.join("executions");
    let log = log.to_str().unwrap();
    // a → b and c → d: a's output is its parameter's parity (plus its tens), so 1 and 3 give b
    // the same input
    let wf = sb.write(
        "cached.yaml",
        &format!(
            r#"apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata:
  generateName: cached-
  annotations:
    weir.dev/cache: "true"
spec:
  entrypoint: main
  arguments:
    parameters: [{{name: x, value: "1"}}, {{name: y, value: "10"}}]
  templates:
  - name: main
    dag:
      tasks:
      - {{name: a, template: parity, arguments: {{parameters: [{{name: n, value: "{{{{workflow.parameters.x}}}}"}}]}}}}
      - {{name: b, template: consume, dependencies: [a], arguments: {{artifacts: [{{name: in, from: "{{{{tasks.a.outputs.artifacts.out}}}}"}}]}}}}
      - {{name: c, template: parity, arguments: {{parameters: [{{name: n, value: "{{{{workflow.parameters.y}}}}"}}]}}}}
      - {{name: d, template: consume, dependencies: [c], arguments: {{artifacts: [{{name: in, from: "{{{{tasks.c.outputs.artifacts.out}}}}"}}]}}}}
  - name: parity
    inputs: {{parameters: [{{name: n}}]}}
    outputs: {{artifacts: [{{name: out, path: /tmp/out.txt}}]}}
    script:
      image: alpine
      command: [sh]
      source: |
        echo "parity {{{{inputs.parameters.n}}}}" >> {log}
        n={{{{inputs.parameters.n}}}}
        echo $(( n % 2 + 10 * (n / 10) )) > /tmp/out.txt
  - name: consume
    inputs: {{artifacts: [{{name: in, path: /tmp/in.txt}}]}}
    outputs: {{parameters: [{{name: seen, valueFrom: {{path: /tmp/in.txt}}}}]}}
    script:
      image: alpine
      command: [sh]
      source: |
        echo "consume $(cat /tmp/in.txt)" >> {log}
"#
        ),
    );
    let runs = std::cell::Cell::new(0);
    let run = |params: &[&str]| -> (serde_json::Value, Vec<String>) {
        let before = std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .count();
        let mut args = vec!["run", wf.to_str().unwrap(), "-o", "json"];
        for p in params {
            args.extend(["-p", p]);
        }
        let o = sb.weir(&args);
        assert_eq!(o.code, 0, "{}", o.all());
        runs.set(runs.get() + 1);
        let all = std::fs::read_to_string(log).unwrap_or_default();
        let new = all.lines().skip(before).map(str::to_string).collect();
        (serde_json::from_str(&o.stdout).unwrap(), new)
    };
    let (_, ran) = run(&[]);
    assert_eq!(ran.len(), 4, "first run: everything runs: {ran:?}");
    // the same inputs: nothing runs, every task reuses the first run's outputs
    let (second, ran) = run(&[]);
    assert!(ran.is_empty(), "{ran:?}");
    let first_name =
        |wf: &serde_json::Value| node(wf, "b")["cachedFrom"].as_str().map(str::to_string);
    assert!(first_name(&second).is_some_and(|r| r.starts_with("cached-")));
    assert_eq!(
        node(&second, "d")["outputs"]["parameters"][0]["value"],
        "10"
    );
    // x changes parity: a and its consumer run again; c and d stay cached
    let (third, ran) = run(&["x=2"]);
    let mut ran_sorted = ran.clone();
    ran_sorted.sort();
    assert_eq!(ran_sorted, vec!["consume 0", "parity 2"], "{ran:?}");
    assert!(node(&third, "c")["cachedFrom"].is_string());
    assert!(node(&third, "a")["cachedFrom"].is_null());
    // x changes but not its parity: a runs, yet b's input is the same content: b is cached
    let (_, ran) = run(&["x=3"]);
    assert_eq!(
        ran,
        vec!["parity 3"],
        "like make: an identical output stops the rebuild"
    );
    // --no-cache runs everything again
    let before = std::fs::read_to_string(log).unwrap().lines().count();
    let o = sb.weir(&["run", wf.to_str().unwrap(), "--no-cache", "--no-logs"]);
    assert_eq!(o.code, 0, "{}", o.all());
    assert_eq!(
        std::fs::read_to_string(log).unwrap().lines().count(),
        before + 4
    );
    assert_eq!(runs.get(), 4);
}

#[test]
fn a_changed_input_file_fetched_over_http_reruns_only_what_depends_on_it() {
    let sb = Sandbox::new();
    let site = sb.dir_with(
        "site",
        &[("data.csv", "1,2\n3,4\n"), ("labels.txt", "a b\n")],
    );
    let web = WebServer::start(&site);
    let log = sb.dir.join("executions");
    let log = log.to_str().unwrap();
    let wf = sb.write(
        "fetch.yaml",
        &format!(
            r#"apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata:
  generateName: fetch-
  annotations:
    weir.dev/cache: "true"
spec:
  entrypoint: main
  templates:
  - name: main
    dag:
      tasks:
      - {{name: prep, template: copy, arguments: {{artifacts: [{{name: in, http: {{url: "http://127.0.0.1:{port}/data.csv"}}}}]}}}}
      - {{name: train, template: use, dependencies: [prep], arguments: {{artifacts: [{{name: in, from: "{{{{tasks.prep.outputs.artifacts.out}}}}"}}]}}}}
      - {{name: label, template: copy, arguments: {{artifacts: [{{name: in, http: {{url: "http://127.0.0.1:{port}/labels.txt"}}}}]}}}}
      - {{name: report, template: use, dependencies: [label], arguments: {{artifacts: [{{name: in, from: "{{{{tasks.label.outputs.artifacts.out}}}}"}}]}}}}
  - name: copy
    inputs: {{artifacts: [{{name: in, path: /tmp/in}}]}}
    outputs: {{artifacts: [{{name: out, path: /tmp/out}}]}}
    script:
      image: alpine
      command: [sh]
      source: |
        echo "copy $(head -c 3 /tmp/in)" >> {log}
        cp /tmp/in /tmp/out
  - name: use
    inputs: {{artifacts: [{{name: in, path: /tmp/in}}]}}
    script:
      image: alpine
      command: [sh]
      source: |
        echo "use $(head -c 3 /tmp/in)" >> {log}
"#,
            port = web.1
        ),
    );
    let run = || {
        let before = std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .count();
        let o = sb.weir(&["run", wf.to_str().unwrap(), "-o", "json"]);
        assert_eq!(o.code, 0, "{}", o.all());
        let all = std::fs::read_to_string(log).unwrap_or_default();
        let mut new: Vec<String> = all.lines().skip(before).map(str::to_string).collect();
        new.sort();
        (
            serde_json::from_str::<serde_json::Value>(&o.stdout).unwrap(),
            new,
        )
    };
    let (first, ran) = run();
    assert_eq!(ran, vec!["copy 1,2", "copy a b", "use 1,2", "use a b"]);
    // the fetched input is recorded with its digest
    let prep = node(&first, "prep");
    assert_eq!(prep["phase"], "Succeeded");
    // the data file changes: the tasks it reaches run again, the others are cached
    std::fs::write(site.join("data.csv"), "5,6\n").unwrap();
    let (second, ran) = run();
    assert_eq!(ran, vec!["copy 5,6", "use 5,6"]);
    assert!(node(&second, "label")["cachedFrom"].is_string());
    assert!(node(&second, "report")["cachedFrom"].is_string());
    // a URL that is not there: a clear error on that node; what else ran is kept
    let bad = sb.write(
        "missing.yaml",
        &std::fs::read_to_string(&wf)
            .unwrap()
            .replace("/labels.txt", "/nope.txt"),
    );
    let o = sb.weir(&["run", bad.to_str().unwrap(), "-o", "json"]);
    assert_eq!(o.code, 1, "{}", o.all());
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    let label = node(&v, "label");
    assert_eq!(label["phase"], "Error");
    assert!(
        label["message"].as_str().unwrap().contains("nope.txt: 404"),
        "{label}"
    );
    assert_eq!(node(&v, "prep")["phase"], "Succeeded");
}

#[test]
fn lineage_traces_a_model_back_to_its_dataset_and_parameters() {
    let sb = Sandbox::new();
    let example = support::repo_root().join("examples/ml-pipeline.yaml");
    let o = sb.weir(&[
        "run",
        example.to_str().unwrap(),
        "--name",
        "ml",
        "--no-logs",
        "-p",
        "learning-rate=0.02",
    ]);
    assert_eq!(o.code, 0, "{}", o.all());
    let v = sb.json(&[
        "lineage",
        "ml/train(2:epochs:150,name:large)/model",
        "-o",
        "json",
    ]);
    assert_eq!(v["artifact"], "model");
    let train = &v["producedBy"][0];
    assert_eq!(train["template"], "train");
    assert_eq!(train["parameters"]["learning-rate"], "0.02");
    assert_eq!(train["parameters"]["epochs"], "150");
    let dataset = &train["inputs"][0];
    assert_eq!(dataset["artifact"], "dataset");
    let prep = &dataset["producedBy"][0];
    assert_eq!(
        (
            prep["nodeName"].as_str(),
            prep["parameters"]["samples"].as_str()
        ),
        (Some("preprocess"), Some("400"))
    );
    // the text form names the same chain
    let text = sb
        .weir(&["lineage", "ml/train(2:epochs:150,name:large)/model"])
        .stdout;
    for part in [
        "model",
        "produced by train(2:epochs:150,name:large)",
        "learning-rate=0.02",
        "dataset",
        "produced by preprocess",
        "samples=400",
    ] {
        assert!(text.contains(part), "{part}: {text}");
    }
    // downstream from the dataset's digest: the three training runs used it
    let digest = dataset["blake3"].as_str().unwrap();
    let down = sb.json(&["lineage", &digest[..12], "--downstream", "-o", "json"]);
    assert_eq!(down["usedBy"].as_array().unwrap().len(), 3, "{down}");
    let o = sb.weir(&["lineage", "not-a-target"]);
    assert_eq!(o.code, 2, "{}", o.all());
    let o = sb.weir(&["lineage", "deadbeefdeadbeef"]);
    assert!(
        o.code == 2 && o.stderr.contains("no artifact with digest"),
        "{}",
        o.all()
    );
}

#[test]
fn a_run_records_what_reproduces_it_and_rerun_insists_on_the_same_inputs() {
    let sb = Sandbox::new();
    let site = sb.dir_with("site", &[("data.csv", "1,2\n")]);
    let web = WebServer::start(&site);
    // the workflow file lives in a git work tree of its own
    let proj = sb.dir_with("proj", &[]);
    let git = |args: &[&str]| support::git(&proj, args);
    git(&["init", "-q"]);
    let wf = proj.join("repro.yaml");
    std::fs::write(
        &wf,
        format!(
            r#"apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata:
  name: repro
spec:
  entrypoint: main
  templates:
  - name: main
    inputs: {{artifacts: [{{name: data, path: /tmp/data.csv, http: {{url: "http://127.0.0.1:{}/data.csv"}}}}]}}
    outputs: {{artifacts: [{{name: total, path: /tmp/total.txt}}]}}
    script:
      image: python:3
      command: [python3]
      source: |
        total = sum(int(x) for line in open("/tmp/data.csv") for x in line.split(","))
        open("/tmp/total.txt", "w").write(str(total))
"#,
            web.1
        ),
    )
    .unwrap();
    git(&["add", "."]);
    git(&["commit", "-q", "-m", "the workflow"]);
    let head = git(&["rev-parse", "HEAD"]);
    let o = sb.weir(&["run", wf.to_str().unwrap(), "--no-logs"]);
    assert_eq!(o.code, 0, "{}", o.all());
    let v = sb.json(&["get", "repro", "-o", "json"]);
    let ann = &v["metadata"]["annotations"];
    assert_eq!(ann["weir.dev/spec-hash"].as_str().map(str::len), Some(64));
    assert_eq!(ann["weir.dev/weir-version"], env!("CARGO_PKG_VERSION"));
    assert!(ann["weir.dev/os"].as_str().unwrap().starts_with("Linux"));
    assert!(
        ann["weir.dev/interpreters"]
            .as_str()
            .unwrap()
            .starts_with("python3: Python 3"),
        "{ann}"
    );
    assert_eq!(ann["weir.dev/git-commit"], head.as_str(), "{ann}");

    // the same input: the rerun runs every task again and gets the same outputs
    let o = sb.weir(&["rerun", "repro", "--no-logs"]);
    assert_eq!(o.code, 0, "{}", o.all());
    assert!(
        o.stdout
            .contains("1 of 1 output artifacts are identical to repro's"),
        "{}",
        o.stdout
    );
    // the input changed: refused, naming the input and both digests
    std::fs::write(site.join("data.csv"), "1,3\n").unwrap();
    let o = sb.weir(&["rerun", "repro", "--no-logs"]);
    assert_eq!(o.code, 1, "{}", o.all());
    let last = sb.json(&["get", "@latest", "-o", "json"]);
    let msg = last["status"]["message"].as_str().unwrap();
    assert!(
        msg.contains("data.csv changed since the run being rerun"),
        "{msg}"
    );
    // the input is gone: a clear error
    std::fs::remove_file(site.join("data.csv")).unwrap();
    let o = sb.weir(&["rerun", "repro", "--no-logs"]);
    assert_eq!(o.code, 1, "{}", o.all());
    let last = sb.json(&["get", "@latest", "-o", "json"]);
    assert!(
        last["status"]["message"].as_str().unwrap().contains("404"),
        "{last}"
    );
}

#[test]
fn artifacts_come_from_and_go_to_an_s3_compatible_store() {
    let sb = Sandbox::new();
    let s3 = support::S3Server::start();
    s3.put("/ml-data", b"");
    s3.put("/ml-data/datasets/data.csv", b"1,2\n3,4\n");
    let secrets = sb.write(
        "secrets.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s3-creds\nstringData:\n  accessKey: AKIDEXAMPLE\n  secretKey: wJalrXUtnFEMI-s3cret-K7MDENG\n",
    );
    let loc = |bucket: &str, key: &str| {
        format!(
            "{{bucket: {bucket}, key: \"{key}\", endpoint: \"127.0.0.1:{}\", insecure: true, accessKeySecret: {{name: s3-creds, key: accessKey}}, secretKeySecret: {{name: s3-creds, key: secretKey}}}}",
            s3.port
        )
    };
    let wf = |input_bucket: &str| {
        format!(
            r#"apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata:
  generateName: s3-
spec:
  entrypoint: main
  templates:
  - name: main
    steps:
    - - name: prep
        template: prep
    - - name: use
        template: use
        arguments: {{artifacts: [{{name: in, from: "{{{{steps.prep.outputs.artifacts.out}}}}"}}]}}
  - name: prep
    inputs: {{artifacts: [{{name: data, path: /tmp/data.csv, s3: {input}}}]}}
    outputs: {{artifacts: [{{name: out, path: /tmp/out, s3: {output}}}]}}
    script:
      image: alpine
      command: [sh]
      source: |
        mkdir -p /tmp/out && sort -r /tmp/data.csv > /tmp/out/sorted.csv
  - name: use
    inputs: {{artifacts: [{{name: in, path: /tmp/in}}]}}
    script:
      image: alpine
      command: [sh]
      source: cat /tmp/in/sorted.csv
"#,
            input = loc(input_bucket, "datasets/data.csv"),
            output = loc("ml-data", "runs/{{workflow.name}}/out.tgz"),
        )
    };
    let file = sb.write("s3.yaml", &wf("ml-data"));
    let o = sb.weir(&[
        "run",
        file.to_str().unwrap(),
        "--with",
        secrets.to_str().unwrap(),
        "-o",
        "json",
    ]);
    assert_eq!(o.code, 0, "{}", o.all());
    assert!(
        !o.stdout.contains("s3cret"),
        "secrets stay out of the output"
    );
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    let name = v["metadata"]["name"].as_str().unwrap();
    assert_eq!(node(&v, "use")["outputs"]["result"], "3,4\n1,2");
    // the output went to the bucket as a tar.gz
    let tgz = s3
        .get(&format!("/ml-data/runs/{name}/out.tgz"))
        .expect("the uploaded artifact");
    assert_eq!(&tgz[..2], b"\x1f\x8b");
    // lineage names where the input came from
    let lin = sb.json(&["lineage", &format!("{name}/prep/out"), "-o", "json"]);
    let fetched = lin["producedBy"][0]["inputs"][0]["fetchedFrom"]
        .as_str()
        .unwrap();
    assert!(
        fetched.starts_with("s3://ml-data/datasets/data.csv"),
        "{lin}"
    );
    assert!(!lin.to_string().contains("s3cret") && !lin.to_string().contains("AKIDEXAMPLE"));
    // a bucket that does not exist: a clear error on the node, nothing else lost
    let file = sb.write("s3-missing.yaml", &wf("no-such-bucket"));
    let o = sb.weir(&[
        "run",
        file.to_str().unwrap(),
        "--with",
        secrets.to_str().unwrap(),
        "-o",
        "json",
    ]);
    assert_eq!(o.code, 1, "{}", o.all());
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    let prep = node(&v, "prep");
    assert_eq!(prep["phase"], "Error");
    let msg = prep["message"].as_str().unwrap();
    assert!(
        msg.contains("s3://no-such-bucket/datasets/data.csv"),
        "{msg}"
    );
}

#[test]
fn the_ml_example_keeps_its_artifacts_in_a_default_s3_repository() {
    let sb = Sandbox::new();
    let s3 = support::S3Server::start();
    s3.put("/artifacts", b"");
    let secrets = sb.write(
        "secrets.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: repo-creds\nstringData:\n  accessKey: AKID\n  secretKey: sekrit-value\n",
    );
    let repo = format!(
        "s3://artifacts/weir?endpoint=127.0.0.1:{}&insecure=true&access=repo-creds/accessKey&secret=repo-creds/secretKey",
        s3.port
    );
    let example = support::repo_root().join("examples/ml-pipeline.yaml");
    let o = sb.weir(&[
        "run",
        example.to_str().unwrap(),
        "--name",
        "ml-s3",
        "--with",
        secrets.to_str().unwrap(),
        "--artifact-repository",
        &repo,
        "-o",
        "json",
    ]);
    assert_eq!(o.code, 0, "{}", o.all());
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    let mut urls = Vec::new();
    for n in v["status"]["nodes"].as_object().unwrap().values() {
        for a in n["outputs"]["artifacts"].as_array().into_iter().flatten() {
            urls.push(
                a["url"]
                    .as_str()
                    .expect("every artifact is in the repository")
                    .to_string(),
            );
        }
    }
    assert_eq!(urls.len(), 4, "the dataset and three models: {urls:?}");
    for u in &urls {
        let path = u.trim_start_matches("s3:/");
        assert!(path.starts_with("/artifacts/weir/ml-s3/"), "{u}");
        let bytes = s3
            .get(path)
            .unwrap_or_else(|| panic!("{u} is not in the bucket"));
        assert_eq!(&bytes[..2], b"\x1f\x8b");
    }
    assert!(!o.stdout.contains("sekrit-value"));

    // Argo's own way: spec.artifactRepositoryRef naming a ConfigMap entry
    let cm = sb.write(
        "repos.yaml",
        &format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: artifact-repositories\ndata:\n  minio: |\n    s3:\n      bucket: artifacts\n      keyPrefix: from-ref\n      endpoint: 127.0.0.1:{}\n      insecure: true\n      accessKeySecret: {{name: repo-creds, key: accessKey}}\n      secretKeySecret: {{name: repo-creds, key: secretKey}}\n",
            s3.port
        ),
    );
    let wf = sb.write(
        "ref.yaml",
        "apiVersion: argoproj.io/v1alpha1\nkind: Workflow\nmetadata:\n  name: by-ref\nspec:\n  entrypoint: main\n  artifactRepositoryRef: {configMap: artifact-repositories, key: minio}\n  templates:\n  - name: main\n    outputs: {artifacts: [{name: note, path: /tmp/note.txt, archive: {none: {}}}]}\n    script:\n      image: alpine\n      command: [sh]\n      source: echo hello > /tmp/note.txt\n",
    );
    let o = sb.weir(&[
        "run",
        wf.to_str().unwrap(),
        "--with",
        secrets.to_str().unwrap(),
        "--with",
        cm.to_str().unwrap(),
        "--no-logs",
    ]);
    assert_eq!(o.code, 0, "{}", o.all());
    assert_eq!(
        s3.get("/artifacts/from-ref/by-ref/by-ref/note").as_deref(),
        Some(&b"hello\n"[..])
    );

    // a key-only artifact keeps its key under the repository's prefix
    let keyed = sb.write(
        "keyed.yaml",
        "apiVersion: argoproj.io/v1alpha1\nkind: Workflow\nmetadata:\n  name: keyed\nspec:\n  entrypoint: main\n  artifactRepositoryRef: {configMap: artifact-repositories, key: minio}\n  templates:\n  - name: main\n    outputs: {artifacts: [{name: r, path: /tmp/r.txt, archive: {none: {}}, s3: {key: reports/today.txt}}]}\n    script: {image: alpine, command: [sh], source: echo report > /tmp/r.txt}\n",
    );
    let o = sb.weir(&[
        "run",
        keyed.to_str().unwrap(),
        "--with",
        secrets.to_str().unwrap(),
        "--with",
        cm.to_str().unwrap(),
        "--no-logs",
    ]);
    assert_eq!(o.code, 0, "{}", o.all());
    assert_eq!(
        s3.get("/artifacts/from-ref/reports/today.txt").as_deref(),
        Some(&b"report\n"[..])
    );
}

#[test]
fn a_path_that_climbs_out_of_its_directory_is_refused_on_its_node() {
    let sb = Sandbox::new();
    let wf = sb.write(
        "escape.yaml",
        "apiVersion: argoproj.io/v1alpha1\nkind: Workflow\nmetadata:\n  name: escape\nspec:\n  entrypoint: main\n  templates:\n  - name: main\n    steps:\n    - - {name: fine, template: fine}\n      - {name: loot, template: loot}\n  - name: fine\n    script: {image: alpine, command: [sh], source: echo fine}\n  - name: loot\n    outputs: {artifacts: [{name: passwd, path: \"../../etc/passwd\"}]}\n    script: {image: alpine, command: [sh], source: echo hi}\n",
    );
    let o = sb.weir(&["run", wf.to_str().unwrap(), "-o", "json"]);
    assert_eq!(o.code, 1, "{}", o.all());
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    let loot = node(&v, "loot");
    assert_eq!(loot["phase"], "Error");
    assert!(
        loot["message"].as_str().unwrap().contains(
            "outputs.artifacts.passwd: path `../../etc/passwd` climbs out of its directory"
        ),
        "{loot}"
    );
    assert!(
        loot["outputs"]["artifacts"].is_null(),
        "nothing was read: {loot}"
    );
    assert_eq!(node(&v, "fine")["phase"], "Succeeded");
}

#[test]
fn s3_inputs_take_part_in_step_caching_and_wrong_credentials_are_named() {
    let sb = Sandbox::new();
    let s3 = support::S3Server::start();
    s3.put("/inputs", b"");
    s3.put("/inputs/data.csv", b"1,2\n");
    s3.put("/inputs/labels.txt", b"a b\n");
    let secrets = sb.write(
        "secrets.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: c\nstringData:\n  a: AKIDNOTKNOWN\n  s: not-the-secret\n",
    );
    let log = sb.dir.join("executions");
    let wf = |port: u16| {
        let input = |key: &str| {
            format!(
                "{{name: in, s3: {{bucket: inputs, key: {key}, endpoint: \"127.0.0.1:{port}\", insecure: true, accessKeySecret: {{name: c, key: a}}, secretKeySecret: {{name: c, key: s}}}}}}"
            )
        };
        format!(
            r#"apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata:
  generateName: s3c-
  annotations: {{weir.dev/cache: "true"}}
spec:
  entrypoint: main
  templates:
  - name: main
    dag:
      tasks:
      - {{name: data, template: read, arguments: {{artifacts: [{data}]}}}}
      - {{name: labels, template: read, arguments: {{artifacts: [{labels}]}}}}
  - name: read
    inputs: {{artifacts: [{{name: in, path: /tmp/in}}]}}
    script:
      image: alpine
      command: [sh]
      source: echo "read $(head -c 3 /tmp/in)" >> {log}
"#,
            data = input("data.csv"),
            labels = input("labels.txt"),
            log = log.display()
        )
    };
    let file = sb.write("s3c.yaml", &wf(s3.port));
    let run = || {
        let before = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .count();
        let o = sb.weir(&[
            "run",
            file.to_str().unwrap(),
            "--with",
            secrets.to_str().unwrap(),
            "--no-logs",
        ]);
        assert_eq!(o.code, 0, "{}", o.all());
        let mut new: Vec<String> = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .skip(before)
            .map(str::to_string)
            .collect();
        new.sort();
        new
    };
    assert_eq!(run(), vec!["read 1,2", "read a b"]);
    assert!(run().is_empty(), "the same objects: both cached");
    // a new version of one object, written through the store's API by a weir task
    let writer = sb.write(
        "writer.yaml",
        &format!(
            "apiVersion: argoproj.io/v1alpha1\nkind: Workflow\nmetadata:\n  generateName: writer-\nspec:\n  entrypoint: main\n  templates:\n  - name: main\n    outputs: {{artifacts: [{{name: d, path: /tmp/d, archive: {{none: {{}}}}, s3: {{bucket: inputs, key: data.csv, endpoint: \"127.0.0.1:{}\", insecure: true, accessKeySecret: {{name: c, key: a}}, secretKeySecret: {{name: c, key: s}}}}}}]}}\n    script: {{image: alpine, command: [sh], source: \"printf '5,6\\\\n' > /tmp/d\"}}\n",
            s3.port
        ),
    );
    let o = sb.weir(&[
        "run",
        writer.to_str().unwrap(),
        "--with",
        secrets.to_str().unwrap(),
        "--no-logs",
    ]);
    assert_eq!(o.code, 0, "{}", o.all());
    assert_eq!(run(), vec!["read 5,6"], "only what read the changed object");

    // a store that checks credentials, and these are not its: named on the node
    let strict = support::S3Server::start_with(&[("INITIAL_NO_AUTH_ACTION_COUNT", "0")]);
    let file = sb.write("strict.yaml", &wf(strict.port));
    let o = sb.weir(&[
        "run",
        file.to_str().unwrap(),
        "--with",
        secrets.to_str().unwrap(),
        "-o",
        "json",
    ]);
    assert_eq!(o.code, 1, "{}", o.all());
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    let msg = node(&v, "data")["message"].as_str().unwrap().to_string();
    assert!(
        msg.contains("s3://inputs/data.csv")
            && msg.contains("access denied: check the credentials"),
        "{msg}"
    );
    assert!(!o.stdout.contains("not-the-secret"));
}

#[test]
fn git_inputs_are_cloned_at_their_revision() {
    let sb = Sandbox::new();
    let repo = sb.dir.join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    let git = |args: &[&str]| {
        support::git(&repo, args);
    };
    git(&["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("model.txt"), "v1\n").unwrap();
    git(&["add", "."]);
    git(&["commit", "-q", "-m", "one"]);
    git(&["tag", "v1"]);
    std::fs::write(repo.join("model.txt"), "v2\n").unwrap();
    git(&["commit", "-q", "-am", "two"]);
    let wf = |rev: &str| {
        sb.write(
            "git.yaml",
            &format!(
                "apiVersion: argoproj.io/v1alpha1\nkind: Workflow\nmetadata:\n  generateName: git-\nspec:\n  entrypoint: main\n  templates:\n  - name: main\n    inputs: {{artifacts: [{{name: src, path: /tmp/src, git: {{repo: \"file://{}\", revision: {rev}}}}}]}}\n    script:\n      image: alpine\n      command: [sh]\n      source: cat /tmp/src/model.txt; test ! -e /tmp/src/.git || echo has-git\n",
                repo.display()
            ),
        )
    };
    let o = sb.weir(&["run", wf("v1").to_str().unwrap(), "-o", "json"]);
    assert_eq!(o.code, 0, "{}", o.all());
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    let n = v["status"]["nodes"]
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap()
        .clone();
    assert_eq!(n["outputs"]["result"], "v1");
    let o = sb.weir(&["run", wf("main").to_str().unwrap(), "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    let n = v["status"]["nodes"]
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap()
        .clone();
    assert_eq!(n["outputs"]["result"], "v2");
    // a revision that does not exist: a clear error
    let o = sb.weir(&["run", wf("no-such-rev").to_str().unwrap(), "-o", "json"]);
    assert_eq!(o.code, 1, "{}", o.all());
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert!(
        v["status"]["message"]
            .as_str()
            .unwrap()
            .contains("no-such-rev"),
        "{v}"
    );
}

#[test]
fn identical_artifacts_are_stored_once_and_kept_while_a_run_refers_to_them() {
    let sb = Sandbox::new();
    let wf = sb.write(
        "same.yaml",
        "apiVersion: argoproj.io/v1alpha1\nkind: Workflow\nmetadata:\n  generateName: same-\nspec:\n  entrypoint: main\n  templates:\n  - name: main\n    outputs: {artifacts: [{name: out, path: /tmp/out}]}\n    script: {image: alpine, command: [sh], source: \"mkdir /tmp/out && echo same > /tmp/out/a.txt\"}\n",
    );
    let key_of = |name: &str| {
        let v = sb.json(&["get", name, "-o", "json"]);
        let n = v["status"]["nodes"]
            .as_object()
            .unwrap()
            .values()
            .next()
            .unwrap()
            .clone();
        n["outputs"]["artifacts"][0]["key"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let mut names = Vec::new();
    for _ in 0..2 {
        let o = sb.weir(&["run", wf.to_str().unwrap(), "-o", "name"]);
        assert_eq!(o.code, 0, "{}", o.all());
        names.push(o.stdout.trim().to_string());
    }
    let (a, b) = (key_of(&names[0]), key_of(&names[1]));
    assert_eq!(a, b, "the same content, one object");
    assert!(a.starts_with("objects/"), "{a}");
    let object = sb.dir.join("artifacts").join(&a);
    assert!(object.is_file());
    let objects = std::fs::read_dir(sb.dir.join("artifacts/objects"))
        .unwrap()
        .count();
    assert_eq!(objects, 1);
    // deleting one run keeps what the other still has; deleting both frees it
    assert_eq!(sb.weir(&["delete", &names[0]]).code, 0);
    assert!(object.is_file(), "still referred to by {}", names[1]);
    assert_eq!(sb.weir(&["delete", &names[1]]).code, 0);
    assert!(!object.exists());
}

#[test]
fn archives_can_be_zstd_or_gzip_at_a_level() {
    let sb = Sandbox::new();
    let wf = sb.write(
        "zstd.yaml",
        "apiVersion: argoproj.io/v1alpha1\nkind: Workflow\nmetadata:\n  name: zst\nspec:\n  entrypoint: main\n  templates:\n  - name: main\n    steps:\n    - - {name: make, template: make}\n    - - name: use\n        template: use\n        arguments: {artifacts: [{name: z, from: \"{{steps.make.outputs.artifacts.z}}\"}, {name: g, from: \"{{steps.make.outputs.artifacts.g}}\"}]}\n  - name: make\n    outputs:\n      artifacts:\n      - {name: z, path: /tmp/z, archive: {zstd: {level: 5}}}\n      - {name: g, path: /tmp/g, archive: {tar: {compressionLevel: 9}}}\n    script: {image: alpine, command: [sh], source: \"mkdir /tmp/z /tmp/g && echo zed > /tmp/z/f && echo gee > /tmp/g/f\"}\n  - name: use\n    inputs: {artifacts: [{name: z, path: /tmp/z}, {name: g, path: /tmp/g}]}\n    script: {image: alpine, command: [sh], source: \"cat /tmp/z/f /tmp/g/f\"}\n",
    );
    let o = sb.weir(&["run", wf.to_str().unwrap(), "-o", "json"]);
    assert_eq!(o.code, 0, "{}", o.all());
    assert!(!o.stderr.contains("warning"), "{}", o.stderr);
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(node(&v, "use")["outputs"]["result"], "zed\ngee");
    let arts = node(&v, "make")["outputs"]["artifacts"].clone();
    let bytes = |name: &str| {
        let a = arts
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == name)
            .unwrap();
        std::fs::read(sb.dir.join("artifacts").join(a["key"].as_str().unwrap())).unwrap()
    };
    assert_eq!(&bytes("z")[..4], &[0x28, 0xb5, 0x2f, 0xfd], "zstd");
    assert_eq!(&bytes("g")[..2], b"\x1f\x8b", "gzip");
}

#[test]
fn an_upload_whose_connection_is_killed_is_retried() {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let sb = Sandbox::new();
    let s3 = support::S3Server::start();
    s3.put("/flaky", b"");
    // a proxy in front of the store that cuts its first connection after 64 KiB of request
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy = listener.local_addr().unwrap().port();
    let conns = std::sync::Arc::new(AtomicUsize::new(0));
    let killed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (upstream, counter, kill_flag) = (s3.port, conns.clone(), killed.clone());
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { break };
            let n = counter.fetch_add(1, Ordering::SeqCst);
            let Ok(mut server) = std::net::TcpStream::connect(("127.0.0.1", upstream)) else {
                continue;
            };
            let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let kill_flag = kill_flag.clone();
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut s2, &mut c2);
            });
            std::thread::spawn(move || {
                let mut buf = [0u8; 16 * 1024];
                let mut sent = 0;
                while let Ok(k) = client.read(&mut buf) {
                    if k == 0 || server.write_all(&buf[..k]).is_err() {
                        break;
                    }
                    sent += k;
                    if n == 0 && sent >= 64 * 1024 {
                        // the first connection dies mid-request
                        kill_flag.store(true, Ordering::SeqCst);
                        let _ = client.shutdown(std::net::Shutdown::Both);
                        let _ = server.shutdown(std::net::Shutdown::Both);
                        break;
                    }
                }
            });
        }
    });
    let secrets = sb.write(
        "secrets.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: c\nstringData:\n  a: AKID\n  s: sk\n",
    );
    let wf = sb.write(
        "flaky.yaml",
        &format!(
            "apiVersion: argoproj.io/v1alpha1\nkind: Workflow\nmetadata:\n  name: flaky\nspec:\n  entrypoint: main\n  templates:\n  - name: main\n    outputs: {{artifacts: [{{name: blob, path: /tmp/blob, archive: {{none: {{}}}}, s3: {{bucket: flaky, key: blob, endpoint: \"127.0.0.1:{proxy}\", insecure: true, accessKeySecret: {{name: c, key: a}}, secretKeySecret: {{name: c, key: s}}}}}}]}}\n    script: {{image: alpine, command: [sh], source: \"head -c 1048576 /dev/urandom > /tmp/blob\"}}\n"
        ),
    );
    let o = sb.weir(&[
        "run",
        wf.to_str().unwrap(),
        "--with",
        secrets.to_str().unwrap(),
        "-o",
        "json",
    ]);
    assert_eq!(o.code, 0, "{}", o.all());
    assert!(
        conns.load(Ordering::SeqCst) >= 2,
        "the cut connection was followed by another"
    );
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    let a = &v["status"]["nodes"]["flaky"]["outputs"]["artifacts"][0];
    let stored = std::fs::read(sb.dir.join("artifacts").join(a["key"].as_str().unwrap())).unwrap();
    assert_eq!(s3.get("/flaky/blob").expect("uploaded in the end"), stored);
}

#[test]
fn artifact_gc_deletes_the_copy_in_an_s3_compatible_store() {
    let sb = Sandbox::new();
    let s3 = support::S3Server::start();
    s3.put("/gcbucket", b"");
    let secrets = sb.write(
        "secrets.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: c\nstringData:\n  a: AKID\n  s: sk\n",
    );
    let wf = |gc: &str| {
        format!(
            "apiVersion: argoproj.io/v1alpha1\nkind: Workflow\nmetadata:\n  generateName: gc-\nspec:\n  entrypoint: main\n  artifactGC: {{strategy: {gc}}}\n  templates:\n  - name: main\n    outputs: {{artifacts: [{{name: out, path: /tmp/out, archive: {{none: {{}}}}, s3: {{bucket: gcbucket, key: \"{{{{workflow.name}}}}/out\", endpoint: \"127.0.0.1:{}\", insecure: true, accessKeySecret: {{name: c, key: a}}, secretKeySecret: {{name: c, key: s}}}}}}]}}\n    script: {{image: alpine, command: [sh], source: echo gone > /tmp/out}}\n",
            s3.port
        )
    };
    let mut objects = Vec::new();
    for gc in ["Never", "OnWorkflowCompletion"] {
        let file = sb.write("gc.yaml", &wf(gc));
        let o = sb.weir(&[
            "run",
            file.to_str().unwrap(),
            "--with",
            secrets.to_str().unwrap(),
            "-o",
            "name",
        ]);
        assert_eq!(o.code, 0, "{}", o.all());
        objects.push(format!("/gcbucket/{}/out", o.stdout.trim()));
    }
    assert_eq!(
        s3.get(&objects[0]).as_deref(),
        Some(&b"gone\n"[..]),
        "Never: kept"
    );
    assert_eq!(
        s3.get(&objects[1]),
        None,
        "OnWorkflowCompletion: deleted from the bucket"
    );
}
