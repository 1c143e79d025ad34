//! Tests of the core: data-driven `check` tables, state-machine event scripts, property tests.

use std::collections::BTreeMap;

use proptest::prelude::*;

use crate::diag::Diags;
use crate::expr::{self, Mode};
use crate::load::load_str;
use crate::run::{Action, Event, Phase, Run, Submission, TaskResult};
use crate::subst::substitute;

fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[track_caller]
fn check_gov(src: &str, expect: Result<bool, &str>) {
    let env = vars(&[]);
    let got = expr::eval_bool(src, Mode::Govaluate, &env).map_err(|e| e.0);
    match (got, expect) {
        (Ok(g), Ok(e)) => assert_eq!(g, e, "{src}"),
        (Err(g), Err(e)) => assert!(g.contains(e), "{src}: error {g:?} lacks {e:?}"),
        (g, e) => panic!("{src}: got {g:?}, expected {e:?}"),
    }
}

#[test]
fn govaluate_conditions() {
    check_gov("heads == heads", Ok(true));
    check_gov("heads == tails", Ok(false));
    check_gov("tails != heads", Ok(true));
    check_gov("4 < 10", Ok(true));
    check_gov("10 < 4", Ok(false));
    check_gov("3 != 1 && 3 != 2", Ok(true));
    check_gov("2 != 1 && 2 != 2", Ok(false));
    check_gov("heads =~ hea", Ok(true));
    check_gov("tails =~ '^hea'", Ok(false));
    check_gov("tails !~ '^hea'", Ok(true));
    check_gov("Succeeded == Succeeded", Ok(true));
    check_gov("true == true", Ok(true));
    check_gov("YES == YES", Ok(true));
    check_gov("even == even", Ok(true));
    check_gov("hello-world == hello-world", Ok(true));
    check_gov("a in (a, b)", Ok(true));
    check_gov("c in (a, b)", Ok(false));
    check_gov("(1 < 2) || (3 > 4)", Ok(true));
    check_gov("!(1 < 2)", Ok(false));
    check_gov("1.5 > 1", Ok(true));
    check_gov("'abc' < 'abd'", Ok(true));
    check_gov("5 == 5.0", Ok(true));
    check_gov("heads ==", Err("unexpected end"));
    check_gov("(1 < 2", Err("expected `)`"));
    check_gov("1 + ", Err("unexpected end"));
}

#[track_caller]
fn check_expr(src: &str, env: &[(&str, &str)], expect: &str) {
    let env = vars(env);
    let got = match expr::eval(src, Mode::Expr, &env) {
        Ok(v) => v.to_text(),
        Err(e) => format!("error: {e}"),
    };
    assert_eq!(got, expect, "{src}");
}

#[test]
fn expr_language() {
    let cfg =
        r#"{"a": "1", "employees": [{"name": "Baris", "age": 43}, {"name": "Mo", "age": 25}]}"#;
    check_expr(
        "asInt(inputs.parameters.foo) * 10",
        &[("inputs.parameters.foo", "3")],
        "30",
    );
    check_expr(
        "inputs.parameters['should-print'] == 'true'",
        &[("inputs.parameters.should-print", "true")],
        "true",
    );
    check_expr(
        "steps['flip-coin'].outputs.result == 'heads' ? 'H' : 'T'",
        &[("steps.flip-coin.outputs.result", "heads")],
        "H",
    );
    check_expr(
        "tasks.producer.outputs.parameters.msg ?? 'fallback'",
        &[],
        "fallback",
    );
    check_expr(
        "jsonpath(workflow.parameters.config, '$.a')",
        &[("workflow.parameters.config", cfg)],
        "1",
    );
    check_expr(
        "jsonpath(c, '$.employees[*].name')",
        &[("c", cfg)],
        r#"["Baris","Mo"]"#,
    );
    check_expr(
        "jsonpath(c, '$.employees[0:1]')",
        &[("c", cfg)],
        r#"[{"age":43,"name":"Baris"}]"#,
    );
    check_expr(
        "jsonpath(c, '$.employees[?(@.age>42 && @.age<44)].age')",
        &[("c", cfg)],
        "[43]",
    );
    check_expr(
        r#"jsonpath(c, '$.employees[?(@.name=="Mo")].age')"#,
        &[("c", cfg)],
        "[25]",
    );
    check_expr("toJson({a: 1, b: 'x'})", &[], r#"{"a":1,"b":"x"}"#);
    check_expr("map([1, 2, 3], {# * 2})", &[], "[2,4,6]");
    check_expr(
        "filter(['a.log', 'main.log'], {# endsWith 'main.log'})",
        &[],
        r#"["main.log"]"#,
    );
    check_expr("sprig.trim('  x  ')", &[], "x");
    check_expr("sprig.add(1, 2, 3) / 2", &[], "3");
    check_expr("asFloat('1.5') + 1", &[], "2.5");
    check_expr("'a' in ['a', 'b']", &[], "true");
    check_expr("len('hello')", &[], "5");
    check_expr("item", &[("item", "3")], "3");
    check_expr("unknown.var", &[], "error: unknown variable `unknown.var`");
    check_expr("nosuch(1)", &[], "error: unknown function `nosuch`");
    check_expr("1 / 0", &[], "error: division by zero");
    check_expr(
        "sprig.date('2006', t)",
        &[("t", "2026-11-29T10:42:41Z")],
        "2026",
    );
    check_expr(
        "sprig.date('Mon Jan 2 15:04:05 2006', t)",
        &[("t", "2024-02-29T23:05:09Z")],
        "Thu Feb 29 23:05:09 2024",
    );
}

#[track_caller]
fn check_subst(src: &str, env: &[(&str, &str)], expect: &str) {
    let env = vars(env);
    let got = substitute(src, &env).unwrap_or_else(|e| format!("error: {e}"));
    assert_eq!(got, expect, "{src}");
}

#[test]
fn substitution() {
    check_subst(
        "hello {{inputs.parameters.name}}!",
        &[("inputs.parameters.name", "world")],
        "hello world!",
    );
    check_subst(
        "{{ inputs.parameters.name }}",
        &[("inputs.parameters.name", "w")],
        "w",
    );
    check_subst(
        "{{steps.flip-coin.outputs.result}}",
        &[("steps.flip-coin.outputs.result", "heads")],
        "heads",
    );
    check_subst("{{unknown.tag}} stays", &[], "{{unknown.tag}} stays");
    check_subst("{{=asInt(a) + 1}}", &[("a", "41")], "42");
    check_subst("{{=\n  'multi' + 'line'\n}}", &[], "multiline");
    check_subst("no tags", &[], "no tags");
    check_subst("{{ unclosed", &[], "{{ unclosed");
    check_subst(
        "{{=1 +}}",
        &[],
        "error: in `{{=1 +}}`: unexpected end of expression",
    );
}

#[track_caller]
fn check_load(src: &str, expect: &[&str]) {
    let mut d = Diags::new("wf.yaml");
    load_str(src, &mut d);
    let got: Vec<String> = d.items.iter().map(|x| x.to_string()).collect();
    assert_eq!(got, expect);
}

#[test]
fn loading_reports_every_problem_with_location() {
    check_load(
        "kind: Workflow\nmetadata: {name: a}\nspec:\n  entrypoint: main\n  templates: []\n",
        &[],
    );
    check_load(
        "kind: Workflow\nmetadata: {name: a}\nspec:\n  entrypoint: [1]\n  templates:\n  - name: x\n    bogus: 1\n    container: {image: a, command: 3}\n",
        &[
            "wf.yaml:4:15: error: spec.entrypoint: expected a string, found a list",
            "wf.yaml:7:5: warning: spec.templates[0].bogus: unknown field (ignored)",
            "wf.yaml:8:36: error: spec.templates[0].container.command: expected a list, found a scalar",
        ],
    );
    check_load(
        "kind: Workflow\nspec: {}\n",
        &["wf.yaml:1:1: error: metadata: missing required field `metadata`"],
    );
    check_load(
        "kind: Workflow\nmetadata:\n  name: [unclosed\n",
        &["wf.yaml:4:1: error: invalid YAML: while parsing a flow sequence, expected ',' or ']'"],
    );
    // a CronWorkflow's deprecated single `schedule` stands for `schedules`; one is required
    let cron = "kind: CronWorkflow\nmetadata: {name: c}\nspec:\n  SCHEDULE\n  workflowSpec:\n    entrypoint: t\n    templates: [{name: t, container: {image: a, command: [x]}}]\n";
    check_load(&cron.replace("SCHEDULE", "schedule: '0 2 * * *'"), &[]);
    check_load(&cron.replace("SCHEDULE", "schedules: ['0 2 * * *']"), &[]);
    check_load(
        &cron.replace("SCHEDULE", "timezone: UTC"),
        &[
            "wf.yaml:4:3: error: spec.schedules: missing required field `schedules` (or the deprecated `schedule`)",
        ],
    );
}

#[test]
fn go_yaml_leniency_for_under_indented_quoted_scalars() {
    let src = "kind: Workflow\nmetadata: {name: a}\nspec:\n  templates:\n  - name: t\n    container:\n      image: x\n      args: [\"\n        echo hi &&\n        echo there\n      \"]\n";
    let mut d = Diags::new("f");
    let l = load_str(src, &mut d);
    assert!(d.items.is_empty(), "{:?}", d.items);
    let args = &l.definitions[0].spec.templates[0]
        .container
        .as_ref()
        .unwrap()
        .args;
    assert_eq!(args, &[" echo hi && echo there "]);
    let single = src.replace("[\"", "['").replace("\"]", "']");
    let mut d = Diags::new("f");
    let l = load_str(&single, &mut d);
    assert!(d.items.is_empty(), "{:?}", d.items);
    assert_eq!(
        l.definitions[0].spec.templates[0]
            .container
            .as_ref()
            .unwrap()
            .args,
        [" echo hi && echo there "]
    );
}

#[test]
fn yaml_11_scalars_and_strings() {
    use crate::yaml::resolve_plain;
    use serde_json::json;
    for (text, v) in [
        ("yes", json!(true)),
        ("off", json!(false)),
        ("010", json!(8)),
        ("0x1f", json!(31)),
        ("1.5", json!(1.5)),
        ("1e3", json!(1000.0)),
        ("abc", json!("abc")),
        ("1.2.3", json!("1.2.3")),
    ] {
        assert_eq!(resolve_plain(text), v, "{text}");
    }
    // a string field keeps the text as written
    let mut d = Diags::new("f");
    let l = load_str(
        "kind: Workflow\nmetadata: {name: a}\nspec:\n  arguments:\n    parameters:\n    - name: p\n      value: 010\n",
        &mut d,
    );
    assert_eq!(
        l.definitions[0].spec.arguments.parameters[0]
            .value
            .as_deref(),
        Some("010")
    );
}

// ---------------------------------------------------------------- state machine event scripts

fn submission(yaml: &str, params: &[(&str, &str)]) -> Submission {
    let mut d = Diags::new("wf.yaml");
    let loaded = load_str(yaml, &mut d);
    assert!(!d.has_errors(), "{:?}", d.items);
    Submission {
        key: None,
        name: "wf".into(),
        uid: "uid".into(),
        namespace: "default".into(),
        created_at: 1_000,
        workflow: loaded.definitions[0].clone(),
        library: Vec::new(),
        config_maps: loaded.config_maps,
        secrets: loaded.secrets,
        parameters: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

/// Drives a run, answering each started task with `outcome(node name) -> (exit code, stdout)`,
/// and returns the trace of started node names and the final phase.
fn simulate(yaml: &str, outcome: impl Fn(&str, u32) -> (i32, String)) -> (Vec<String>, Phase, Run) {
    let (mut run, mut actions) = Run::start(submission(yaml, &[])).expect("valid");
    let mut trace = Vec::new();
    let mut now = 1_000;
    let mut timers: Vec<(i64, crate::run::Timer)> = Vec::new();
    for _ in 0..10_000 {
        let mut next = Vec::new();
        for a in actions.drain(..) {
            match a {
                Action::Start(spec) => {
                    trace.push(spec.node_name.clone());
                    let attempt = run
                        .node_by_id(&spec.node_id)
                        .map(|n| n.attempt)
                        .unwrap_or(0);
                    let (code, out) = outcome(&spec.node_name, attempt);
                    next.push(Event::Started {
                        node: spec.node_id.clone(),
                        pid: 1,
                    });
                    let params = spec
                        .output_parameters
                        .iter()
                        .map(|p| (p.name.clone(), Some(out.clone())))
                        .collect();
                    next.push(Event::Finished {
                        node: spec.node_id.clone(),
                        result: TaskResult {
                            exit_code: Some(code),
                            stdout: out,
                            parameters: params,
                            ..TaskResult::default()
                        },
                    });
                }
                Action::Arm { timer, at } => timers.push((at, timer)),
                Action::Lookup { node, .. } => next.push(Event::Cached {
                    node,
                    outputs: None,
                    from: None,
                }),
                Action::Acquire { holder, .. } => next.push(Event::Acquired {
                    holder,
                    error: None,
                }),
                Action::Fetch { node, sources, .. } => next.push(Event::Fetched {
                    node,
                    results: sources
                        .into_iter()
                        .map(|s| Err(format!("{:?}: no network in the core's tests", s.url)))
                        .collect(),
                }),
                Action::Stop { .. }
                | Action::Finished { .. }
                | Action::Memoize { .. }
                | Action::Metric(_)
                | Action::Release { .. } => {}
            }
        }
        if next.is_empty() {
            if run.phase().is_done() || timers.is_empty() {
                break;
            }
            timers.sort();
            let (at, t) = timers.remove(0);
            now = now.max(at);
            next.push(Event::TimerFired { timer: t });
        }
        for ev in next {
            now += 1;
            actions.extend(run.step(ev, now));
        }
    }
    let phase = run.phase();
    (
        trace
            .into_iter()
            .map(|n| n.trim_start_matches("wf").to_string())
            .collect(),
        phase,
        run,
    )
}

#[test]
fn steps_run_in_groups() {
    let y = "kind: Workflow\nmetadata: {name: wf}\nspec:\n  entrypoint: main\n  templates:\n  - name: main\n    steps:\n    - - {name: a, template: t}\n    - - {name: b, template: t}\n      - {name: c, template: t}\n  - name: t\n    container: {image: x, command: [x]}\n";
    let (trace, phase, _) = simulate(y, |_, _| (0, String::new()));
    assert_eq!(trace, ["[0].a", "[1].b", "[1].c"]);
    assert_eq!(phase, Phase::Succeeded);
}

#[test]
fn dag_diamond_orders_tasks_and_fails_fast() {
    let y = "kind: Workflow\nmetadata: {name: wf}\nspec:\n  entrypoint: d\n  templates:\n  - name: d\n    dag:\n      tasks:\n      - {name: A, template: t}\n      - {name: B, template: t, dependencies: [A]}\n      - {name: C, template: t, dependencies: [A]}\n      - {name: D, template: t, dependencies: [B, C]}\n  - name: t\n    container: {image: x, command: [x]}\n";
    let (trace, phase, _) = simulate(y, |_, _| (0, String::new()));
    assert_eq!(trace, [".A", ".B", ".C", ".D"]);
    assert_eq!(phase, Phase::Succeeded);
    let (trace, phase, run) = simulate(y, |n, _| {
        (if n.ends_with(".B") { 1 } else { 0 }, String::new())
    });
    assert_eq!(trace, [".A", ".B", ".C"]);
    assert_eq!(phase, Phase::Failed);
    assert!(run.message().contains("wf.B"), "{}", run.message());
}

#[test]
fn enhanced_depends_handles_failure() {
    let y = "kind: Workflow\nmetadata: {name: wf}\nspec:\n  entrypoint: d\n  templates:\n  - name: d\n    dag:\n      tasks:\n      - {name: A, template: t}\n      - {name: onfail, template: t, depends: A.Failed}\n      - {name: onok, template: t, depends: A.Succeeded}\n      - {name: always, template: t, depends: A.Succeeded || A.Failed}\n  - name: t\n    container: {image: x, command: [x]}\n";
    let (trace, phase, run) = simulate(y, |n, _| {
        (if n.ends_with(".A") { 1 } else { 0 }, String::new())
    });
    assert_eq!(trace, [".A", ".onfail", ".always"]);
    // `onok`, a target task, was omitted: it inherits its branch's failure (Argo's
    // `assessDAGPhase`), so the DAG fails although `onfail` handled A's failure
    assert_eq!(phase, Phase::Failed, "{}", run.message());
    assert!(
        run.nodes()
            .iter()
            .any(|n| n.display_name == "onok" && n.phase == Phase::Omitted)
    );
}

#[test]
fn loops_aggregate_outputs_and_when_reads_them() {
    let y = "kind: Workflow\nmetadata: {name: wf}\nspec:\n  entrypoint: main\n  templates:\n  - name: main\n    steps:\n    - - {name: gen, template: t, withItems: [1, 2, 3]}\n    - - name: after\n        template: u\n        when: \"{{steps.gen.status}} == Succeeded\"\n        arguments: {parameters: [{name: all, value: '{{steps.gen.outputs.result}}'}]}\n  - name: t\n    container: {image: x, command: [x]}\n  - name: u\n    inputs: {parameters: [{name: all}]}\n    container: {image: x, command: [x]}\n";
    let (trace, phase, run) = simulate(y, |n, _| {
        (
            0,
            n.chars()
                .rev()
                .nth(1)
                .map(|c| c.to_string())
                .unwrap_or_default(),
        )
    });
    assert_eq!(
        trace,
        ["[0].gen(0:1)", "[0].gen(1:2)", "[0].gen(2:3)", "[1].after"]
    );
    assert_eq!(phase, Phase::Succeeded);
    let after = run
        .nodes()
        .iter()
        .find(|n| n.display_name == "after")
        .expect("after ran");
    assert_eq!(after.inputs, [("all".to_string(), "[1,2,3]".to_string())]);
}

#[test]
fn retries_with_backoff_then_succeed() {
    let y = "kind: Workflow\nmetadata: {name: wf}\nspec:\n  entrypoint: t\n  templates:\n  - name: t\n    retryStrategy: {limit: '3', backoff: {duration: '1s', factor: '2'}}\n    container: {image: x, command: [x]}\n";
    let (trace, phase, run) = simulate(y, |_, attempt| {
        (if attempt < 2 { 1 } else { 0 }, String::new())
    });
    assert_eq!(trace, ["(0)", "(1)", "(2)"]);
    assert_eq!(phase, Phase::Succeeded);
    let starts: Vec<i64> = run
        .nodes()
        .iter()
        .filter(|n| n.name.starts_with("wf("))
        .filter_map(|n| n.started_at)
        .collect();
    assert!(
        starts[1] - starts[0] >= 1_000 && starts[2] - starts[1] >= 2_000,
        "{starts:?}"
    );
    let (trace, phase, _) = simulate(y, |_, _| (1, String::new()));
    assert_eq!(trace.len(), 4);
    assert_eq!(phase, Phase::Failed);
}

#[test]
fn retry_expression_decides_with_last_retry_and_inputs() {
    let y = "kind: Workflow\nmetadata: {name: wf}\nspec:\n  entrypoint: t\n  arguments: {parameters: [{name: ok, value: 'true'}]}\n  templates:\n  - name: t\n    inputs: {parameters: [{name: ok, value: '{{workflow.parameters.ok}}'}]}\n    retryStrategy: {limit: '5', expression: 'asInt(lastRetry.exitCode) > 1 && {{inputs.parameters.ok}} == true'}\n    container: {image: x, command: [x]}\n";
    let (trace, phase, _) = simulate(y, |_, attempt| {
        (if attempt == 0 { 2 } else { 1 }, String::new())
    });
    assert_eq!(trace, ["(0)", "(1)"], "exit 2 is retried, exit 1 is not");
    assert_eq!(phase, Phase::Failed);
}

#[test]
fn exit_handler_sees_status() {
    let y = "kind: Workflow\nmetadata: {name: wf}\nspec:\n  entrypoint: t\n  onExit: bye\n  templates:\n  - name: t\n    container: {image: x, command: [x]}\n  - name: bye\n    steps:\n    - - {name: cel, template: t, when: '{{workflow.status}} == Failed'}\n";
    let (trace, phase, _) = simulate(y, |n, _| (if n == "wf" { 1 } else { 0 }, String::new()));
    assert_eq!(trace, ["", ".onExit[0].cel"]);
    assert_eq!(phase, Phase::Failed);
}

#[test]
fn stop_runs_the_exit_handler_and_spares_it() {
    let y = "kind: Workflow\nmetadata: {name: wf}\nspec:\n  entrypoint: t\n  onExit: bye\n  parallelism: 1\n  templates:\n  - name: t\n    container: {image: x, command: [x]}\n  - name: bye\n    container: {image: x, command: [x]}\n";
    let (mut run, actions) = Run::start(submission(y, &[])).expect("valid");
    let Action::Start(main) = &actions[0] else {
        panic!("start")
    };
    run.step(
        Event::Started {
            node: main.node_id.clone(),
            pid: 7,
        },
        2_000,
    );
    let actions = run.step(Event::Stop, 3_000);
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::Stop { node, .. } if *node == main.node_id))
    );
    let Some(Action::Start(bye)) = actions.iter().find(|a| matches!(a, Action::Start(_))) else {
        panic!("exit handler starts: {actions:?}")
    };
    assert_eq!(bye.node_name, "wf.onExit");
    let again = run.step(Event::Stop, 3_500);
    assert!(
        again.is_empty(),
        "a second stop spares the running exit handler: {again:?}"
    );
    let done = TaskResult {
        exit_code: Some(0),
        ..TaskResult::default()
    };
    let last = run.step(
        Event::Finished {
            node: bye.node_id.clone(),
            result: done,
        },
        4_000,
    );
    assert_eq!(
        last,
        [Action::Finished {
            phase: Phase::Failed
        }]
    );
    assert_eq!(run.message(), "Stopped with strategy 'Stop'");
}

#[test]
fn retry_from_failure_reuses_succeeded_nodes() {
    let y = "kind: Workflow\nmetadata: {name: wf}\nspec:\n  entrypoint: main\n  templates:\n  - name: main\n    steps:\n    - - {name: a, template: t}\n    - - {name: b, template: t}\n  - name: t\n    container: {image: x, command: [x]}\n";
    let (_, phase, mut run) = simulate(y, |n, _| {
        (if n.ends_with(".b") { 1 } else { 0 }, String::new())
    });
    assert_eq!(phase, Phase::Failed);
    let actions = run.step(Event::Retry, 10_000);
    let started: Vec<String> = actions
        .iter()
        .filter_map(|a| {
            if let Action::Start(s) = a {
                Some(s.node_name.clone())
            } else {
                None
            }
        })
        .collect();
    assert_eq!(started, ["wf[1].b"], "a is reused, only b runs again");
}

#[test]
fn replay_rebuilds_the_same_state() {
    let y = "kind: Workflow\nmetadata: {name: wf}\nspec:\n  entrypoint: main\n  templates:\n  - name: main\n    steps:\n    - - {name: a, template: t}\n    - - {name: b, template: t}\n  - name: t\n    container: {image: x, command: [x]}\n";
    let sub = submission(y, &[]);
    let (mut run, actions) = Run::start(sub.clone()).expect("valid");
    let Action::Start(a) = &actions[0] else {
        panic!("expected a start")
    };
    let events = vec![
        (
            2_000,
            Event::Started {
                node: a.node_id.clone(),
                pid: 42,
            },
        ),
        (
            3_000,
            Event::Finished {
                node: a.node_id.clone(),
                result: TaskResult {
                    exit_code: Some(0),
                    ..TaskResult::default()
                },
            },
        ),
    ];
    for (at, e) in &events {
        run.step(e.clone(), *at);
    }
    let replayed = Run::replay(sub, &events).expect("replays");
    assert_eq!(replayed.nodes(), run.nodes());
    let pending: Vec<_> = replayed
        .recovery_actions()
        .into_iter()
        .filter(|a| matches!(a, Action::Start(_)))
        .collect();
    assert_eq!(
        pending.len(),
        1,
        "b was dispatched and must be started again after a crash"
    );
}

/// The validation problems of a workflow that must not start, as `path: message`.
fn problems_of(yaml: &str) -> Vec<String> {
    match Run::start(submission(yaml, &[])) {
        Err(problems) => problems
            .iter()
            .map(|p| format!("{}: {}", p.path, p.message))
            .collect(),
        Ok(_) => panic!("must not validate"),
    }
}

#[test]
fn validation_reports_every_problem() {
    let y = "kind: Workflow\nmetadata: {name: wf}\nspec:\n  entrypoint: d\n  arguments:\n    parameters:\n    - name: required\n  templates:\n  - name: d\n    dag:\n      tasks:\n      - {name: A, template: nosuch}\n      - {name: B, template: t, depends: C}\n      - {name: C, template: t, depends: B}\n      - {name: E, template: t, when: '{{x}} == == 1'}\n  - name: t\n    container: {image: x, command: [x]}\n";
    assert_eq!(
        problems_of(y),
        [
            "spec.arguments.parameters[0]: workflow parameter `required` is required: give it with -p required=VALUE",
            "spec.templates[0].dag.tasks[0].template: step `A`: template `nosuch` not found",
            "spec.templates[0].dag.tasks[3].when: invalid `when` expression `{{x}} == == 1`: unexpected `==`",
            "spec.templates[0].dag: dependency cycle: B -> C -> B",
        ]
    );
}

#[test]
fn workflow_variables_include_creation_time_parts() {
    let y = "kind: Workflow\nmetadata: {name: wf}\nspec:\n  entrypoint: t\n  templates:\n  - name: t\n    container: {image: x, command: [echo, '{{workflow.creationTimestamp.Y}}-{{workflow.creationTimestamp.m}}-{{workflow.creationTimestamp.d}} {{workflow.creationTimestamp}} {{workflow.name}}']}\n";
    let mut sub = submission(y, &[]);
    sub.created_at = 1_772_000_000_000; // 2026-02-25T06:13:20Z
    let (_, actions) = Run::start(sub).expect("valid");
    let Action::Start(spec) = &actions[0] else {
        panic!("start")
    };
    assert_eq!(spec.command[1], "2026-02-25 2026-02-25T06:13:20Z wf");
}

#[test]
fn go_sprintf_formats_sequences() {
    use crate::run::go_sprintf_pub as f;
    assert_eq!(f("%02d", 3), "03");
    assert_eq!(f("test-%d", 12), "test-12");
    assert_eq!(f("%x", 255), "ff");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, .. ProptestConfig::default() })]

    #[test]
    fn yaml_loader_never_panics(s in "\\PC{0,200}") {
        let mut d = Diags::new("p");
        let _ = load_str(&s, &mut d);
    }

    #[test]
    fn yaml_loader_never_panics_on_yamlish(s in "(kind: Workflow\n|spec:\n|  - |\\{|\\}|\\[|\\]|: |[a-z]{1,5}|'|\"|\n|  |&a |\\*a|<<: ){0,40}") {
        let mut d = Diags::new("p");
        let _ = load_str(&s, &mut d);
    }

    #[test]
    fn expressions_never_panic(s in "[a-z0-9 ()\\[\\]{}'\"=!<>&|?:.,#+*/%~-]{0,60}") {
        let env = vars(&[("a", "1"), ("item", "{\"k\": 2}")]);
        let _ = expr::eval(&s, Mode::Govaluate, &env);
        let _ = expr::eval(&s, Mode::Expr, &env);
        let _ = crate::expr::Depends::parse(&s);
    }

    #[test]
    fn substitution_never_panics(s in "(\\{\\{|\\}\\}|=|[a-z.]{1,8}| |'|\n){0,30}") {
        let env = vars(&[("a", "1")]);
        let _ = substitute(&s, &env);
    }

    #[test]
    fn substitution_is_identity_without_tags(s in "[^{}]{0,100}") {
        let env = vars(&[("a", "1")]);
        let once = substitute(&s, &env).unwrap();
        prop_assert_eq!(&once, &s);
        prop_assert_eq!(substitute(&once, &env).unwrap(), once);
    }
}

proptest! {
    /// The node id table behaves as a map, whatever the keys (0 and keys sharing low bits
    /// included) and however often it grows.
    #[test]
    fn id_map_agrees_with_a_btreemap(keys in proptest::collection::vec(
        prop_oneof![any::<u64>(), (0u64..64).prop_map(|k| k << 40), Just(0u64), Just(1u64)],
        0..400,
    )) {
        let mut table = crate::run::IdMap::default();
        let mut model = BTreeMap::new();
        for (i, k) in keys.iter().enumerate() {
            // 0 and 1 share a slot key: the table treats them as one key, as new_node expects
            let k = (*k).max(1);
            table.insert(k, i);
            model.insert(k, i);
        }
        for (k, i) in &model {
            prop_assert_eq!(table.get(k), Some(i));
        }
        for probe in [2u64, 3, 1 << 41, u64::MAX - 1] {
            prop_assert_eq!(table.get(&probe).copied(), model.get(&probe).copied());
        }
    }
}

/// Locks as the store keeps them, for the state machine's tests: grants in request order.
#[derive(Default)]
struct LockModel {
    /// key → (holders, queue of waiting holders)
    locks: BTreeMap<String, (Vec<String>, Vec<String>)>,
    wanted: BTreeMap<String, Vec<crate::run::Lock>>,
}

impl LockModel {
    fn ask(&mut self, holder: String, locks: Vec<crate::run::Lock>) {
        for l in &locks {
            let e = self.locks.entry(l.key.clone()).or_default();
            if !e.0.contains(&holder) && !e.1.contains(&holder) {
                e.1.push(holder.clone());
            }
        }
        self.wanted.insert(holder, locks);
    }
    fn release(&mut self, holder: &str) {
        for (held, queue) in self.locks.values_mut() {
            held.retain(|h| h != holder);
            queue.retain(|h| h != holder);
        }
        self.wanted.remove(holder);
    }
    /// Holders whose every lock has room now, granted.
    fn grant(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        let holders: Vec<String> = self.wanted.keys().cloned().collect();
        for h in holders {
            let ls = self.wanted[&h].clone();
            let ok = ls.iter().all(|l| {
                let (held, queue) = &self.locks[&l.key];
                let pos = queue.iter().position(|x| *x == h).unwrap_or(0);
                held.contains(&h) || held.len() + pos < l.limit.unwrap_or(0) as usize
            });
            if ok {
                for l in &ls {
                    let e = self.locks.get_mut(&l.key).unwrap();
                    e.1.retain(|x| *x != h);
                    if !e.0.contains(&h) {
                        e.0.push(h.clone());
                    }
                }
                self.wanted.remove(&h);
                out.push(h);
            }
        }
        out
    }
}

/// Runs a workflow whose pods finish one event after they start, with locks from `LockModel`;
/// returns the most pods of each template that ran at once, and the final phase.
fn simulate_locks(yaml: &str) -> (BTreeMap<String, usize>, Phase, Run) {
    let (mut run, mut actions) = Run::start(submission(yaml, &[])).expect("valid");
    let mut model = LockModel::default();
    let mut running: Vec<(String, String)> = Vec::new();
    let mut most: BTreeMap<String, usize> = BTreeMap::new();
    let mut now = 1_000;
    for _ in 0..10_000 {
        let mut next = Vec::new();
        for a in actions.drain(..) {
            match a {
                Action::Start(spec) => {
                    let tmpl = run.node_by_id(&spec.node_id).unwrap().template.clone();
                    running.push((spec.node_id.clone(), tmpl.clone()));
                    let n = running.iter().filter(|(_, t)| *t == tmpl).count();
                    let m = most.entry(tmpl).or_default();
                    *m = (*m).max(n);
                }
                Action::Acquire { holder, locks, .. } => model.ask(holder, locks),
                Action::Release { holder } => model.release(&holder),
                _ => {}
            }
        }
        for h in model.grant() {
            next.push(Event::Acquired {
                holder: h,
                error: None,
            });
        }
        // one running pod finishes per round, so pods overlap as far as their locks allow
        if next.is_empty() && !running.is_empty() {
            let (node, _) = running.remove(0);
            next.push(Event::Finished {
                node,
                result: TaskResult {
                    exit_code: Some(0),
                    ..TaskResult::default()
                },
            });
        }
        if next.is_empty() {
            break;
        }
        for ev in next {
            now += 1;
            actions.extend(run.step(ev, now));
        }
    }
    let phase = run.phase();
    (most, phase, run)
}

#[test]
fn template_locks_bound_concurrency_and_waiting_nodes_say_why() {
    let yaml = "kind: Workflow\nmetadata: {name: wf}\nspec:\n  entrypoint: main\n  templates:\n  - name: main\n    steps:\n    - - {name: m, template: mutexed, withItems: [1, 2, 3, 4]}\n      - {name: s, template: sem, withItems: [1, 2, 3, 4, 5]}\n      - {name: f, template: free, withItems: [1, 2, 3]}\n  - name: mutexed\n    synchronization: {mutexes: [{name: 'm-{{workflow.name}}'}]}\n    container: {image: a, command: [echo]}\n  - name: sem\n    synchronization: {semaphores: [{configMapKeyRef: {name: limits, key: sem}}]}\n    container: {image: a, command: [echo]}\n  - name: free\n    container: {image: a, command: [echo]}\n---\nkind: ConfigMap\napiVersion: v1\nmetadata: {name: limits}\ndata: {sem: '2'}\n";
    // before any lock is granted, the waiting nodes say what they wait for
    let (run, actions) = Run::start(submission(yaml, &[])).expect("valid");
    let asks: Vec<_> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Acquire { locks, .. } => Some(locks[0].clone()),
            _ => None,
        })
        .collect();
    assert_eq!(asks.len(), 9);
    assert!(asks.contains(&crate::run::Lock {
        key: "default/Mutex/m-wf".into(),
        limit: Some(1)
    }));
    assert!(asks.contains(&crate::run::Lock {
        key: "default/ConfigMap/limits/sem".into(),
        limit: Some(2)
    }));
    let waiting = run
        .nodes()
        .iter()
        .find(|n| n.display_name == "m(0:1)")
        .unwrap();
    assert_eq!(waiting.phase, Phase::Pending);
    assert_eq!(waiting.message, "Waiting for lock: default/Mutex/m-wf");

    let (most, phase, _) = simulate_locks(yaml);
    assert_eq!(phase, Phase::Succeeded);
    assert_eq!(most["mutexed"], 1, "{most:?}");
    assert_eq!(most["sem"], 2, "{most:?}");
    assert_eq!(most["free"], 3, "{most:?}");
}

#[test]
fn workflow_lock_holds_the_entrypoint_and_stop_or_refusal_ends_the_run() {
    let yaml = "kind: Workflow\nmetadata: {name: wf}\nspec:\n  entrypoint: main\n  synchronization: {semaphores: [{database: {key: wf}}]}\n  templates:\n  - name: main\n    container: {image: a, command: [echo]}\n";
    let (mut run, actions) = Run::start(submission(yaml, &[])).expect("valid");
    assert!(
        matches!(&actions[..], [Action::Acquire { holder, locks, .. }]
        if holder == "wf" && locks[0].key == "default/Database/wf" && locks[0].limit.is_none())
    );
    assert!(run.nodes().is_empty(), "nothing starts before the lock");
    assert!(run.message().starts_with("Waiting for lock"));
    let acts = run.step(
        Event::Acquired {
            holder: "wf".into(),
            error: None,
        },
        2_000,
    );
    assert!(acts.iter().any(|a| matches!(a, Action::Start(_))));

    // stopped while waiting: the run fails and gives its place back
    let (mut run, _) = Run::start(submission(yaml, &[])).expect("valid");
    let acts = run.step(Event::Stop, 2_000);
    assert_eq!(run.phase(), Phase::Failed);
    assert!(
        acts.iter()
            .any(|a| matches!(a, Action::Release { holder } if holder == "wf"))
    );

    // refused (a database semaphore without a limit): the run errors with the reason
    let (mut run, _) = Run::start(submission(yaml, &[])).expect("valid");
    run.step(
        Event::Acquired {
            holder: "wf".into(),
            error: Some("no limit".into()),
        },
        2_000,
    );
    assert_eq!(run.phase(), Phase::Error);
    assert_eq!(run.message(), "no limit");
}

#[test]
fn malformed_synchronization_is_refused_with_its_path() {
    let y = "kind: Workflow\nmetadata: {name: wf}\nspec:\n  entrypoint: t\n  synchronization: {mutexes: [{namespace: x}]}\n  templates:\n  - name: t\n    synchronization: {semaphores: [{configMapKeyRef: {name: cm, key: ''}}, {}]}\n    container: {image: x, command: [x]}\n";
    assert_eq!(
        problems_of(y),
        [
            "spec.synchronization.mutexes[0].name: a mutex needs a name",
            "spec.templates[0].synchronization.semaphores[0].configMapKeyRef.key: a ConfigMap semaphore needs `key`",
            "spec.templates[0].synchronization.semaphores[1]: a semaphore needs `configMapKeyRef` (limit from a ConfigMap) or `database` (limit kept by the store)",
        ]
    );
}

#[test]
fn parallelism_below_one_and_bad_names_are_refused_with_their_path() {
    let y = "kind: Workflow\nmetadata: {name: wf, generateName: Bad_}\nspec:\n  entrypoint: t\n  parallelism: 0\n  templates:\n  - name: t\n    parallelism: -1\n    container: {image: x, command: [x]}\n";
    let p = problems_of(y);
    assert!(
        p.iter()
            .any(|x| x.starts_with("metadata.generateName: generateName `Bad_`")),
        "{p:?}"
    );
    assert!(p.contains(&"spec.parallelism: parallelism must be at least 1, not 0".to_string()));
    assert!(p.contains(
        &"spec.templates[0].parallelism: parallelism must be at least 1, not -1".to_string()
    ));
}

#[test]
fn a_limit_hit_at_start_is_a_problem_and_replay_refuses_it_too() {
    let y = "kind: Workflow\nmetadata: {name: wf}\nspec:\n  entrypoint: a\n  templates:\n  - name: a\n    steps:\n    - - {name: x, template: a}\n";
    let Err(p) = Run::start(submission(y, &[])) else {
        panic!("unbounded recursion started")
    };
    assert!(
        p[0].message.contains("Maximum recursion depth exceeded"),
        "{p:?}"
    );
    assert!(Run::replay(submission(y, &[]), &[]).is_err());
    let small = crate::limits::Limits {
        max_nodes: 10,
        ..crate::limits::Limits::default()
    };
    let fan = "kind: Workflow\nmetadata: {name: wf}\nspec:\n  entrypoint: a\n  templates:\n  - name: a\n    steps:\n    - - {name: x, template: b, withSequence: {count: '20'}}\n  - name: b\n    container: {image: x, command: [x]}\n";
    assert!(Run::start(submission(fan, &[])).is_ok());
    let Err(p) = Run::start_with(submission(fan, &[]), small) else {
        panic!("20 items within 10 nodes")
    };
    assert!(p[0].message.contains("nodes of this run"), "{p:?}");
}

#[test]
fn a_daemon_lets_its_scope_go_on_once_ready_and_is_stopped_when_the_scope_ends() {
    let yaml = "kind: Workflow\nmetadata: {name: wf}\nspec:\n  entrypoint: main\n  templates:\n  - name: main\n    steps:\n    - - {name: server, template: server}\n    - - {name: client, template: client, arguments: {parameters: [{name: ip, value: '{{steps.server.ip}}'}]}}\n  - name: server\n    daemon: true\n    container:\n      image: a\n      command: [serve]\n      readinessProbe: {httpGet: {path: /ok, port: 8080}, initialDelaySeconds: 2}\n  - name: client\n    inputs: {parameters: [{name: ip}]}\n    container: {image: a, command: [get, '{{inputs.parameters.ip}}']}\n";
    let (mut run, actions) = Run::start(submission(yaml, &[])).expect("valid");
    let Some(Action::Start(server)) = actions.into_iter().next() else {
        panic!("the daemon starts first")
    };
    let probe = server.daemon.as_ref().unwrap().probe.as_ref().unwrap();
    assert_eq!(
        probe.check,
        crate::run::ProbeCheck::Http {
            port: 8080,
            path: "/ok".into()
        }
    );
    assert_eq!(probe.initial_delay_ms, 2000);
    let id = server.node_id.clone();
    assert!(
        run.step(
            Event::Started {
                node: id.clone(),
                pid: 7
            },
            2
        )
        .is_empty()
    );
    // ready: the next step starts, with the daemon's address
    let acts = run.step(Event::Ready { node: id.clone() }, 3);
    let client = acts
        .iter()
        .find_map(|a| match a {
            Action::Start(s) => Some(s.clone()),
            _ => None,
        })
        .expect("the client starts once the daemon is ready");
    assert_eq!(client.command, ["get", "127.0.0.1"]);
    let daemon = run.node_by_id(&id).unwrap();
    assert!(daemon.message.starts_with("daemoned"), "{}", daemon.message);
    // the client finishes, the steps scope ends: the daemon is stopped, the run succeeds
    run.step(
        Event::Started {
            node: client.node_id.clone(),
            pid: 8,
        },
        4,
    );
    let acts = run.step(
        Event::Finished {
            node: client.node_id.clone(),
            result: TaskResult {
                exit_code: Some(0),
                ..TaskResult::default()
            },
        },
        5,
    );
    assert!(
        acts.iter()
            .any(|a| matches!(a, Action::Stop { node, .. } if *node == id)),
        "{acts:?}"
    );
    assert_eq!(run.phase(), Phase::Succeeded);
    // the daemon's end (killed) changes nothing
    run.step(
        Event::Finished {
            node: id.clone(),
            result: TaskResult {
                exit_code: Some(137),
                ..TaskResult::default()
            },
        },
        6,
    );
    assert_eq!(run.phase(), Phase::Succeeded);
    assert_eq!(run.node_by_id(&id).unwrap().phase, Phase::Succeeded);
}

#[test]
fn a_container_set_runs_its_containers_in_dependency_order_and_main_gives_the_outputs() {
    let yaml = "kind: Workflow\nmetadata: {name: wf}\nspec:\n  entrypoint: main\n  templates:\n  - name: main\n    dag:\n      tasks:\n      - {name: set, template: group}\n      - {name: after, template: echo, arguments: {parameters: [{name: x, value: '{{tasks.set.outputs.result}}-{{tasks.set.outputs.parameters.p}}'}]}, dependencies: [set]}\n  - name: group\n    volumes: [{name: ws, emptyDir: {}}]\n    containerSet:\n      volumeMounts: [{name: ws, mountPath: /ws}]\n      containers:\n      - {name: a, image: x, command: [a]}\n      - {name: b, image: x, command: [b], dependencies: [a]}\n      - {name: c, image: x, command: [c], dependencies: [a]}\n      - {name: main, image: x, command: [m], dependencies: [b, c]}\n    outputs:\n      parameters: [{name: p, valueFrom: {path: /ws/p}}]\n  - name: echo\n    inputs: {parameters: [{name: x}]}\n    container: {image: x, command: [echo, '{{inputs.parameters.x}}']}\n";
    let (trace, phase, run) = simulate(yaml, |name, _| (0, format!("out-of-{name}")));
    assert_eq!(phase, Phase::Succeeded);
    let pos = |n: &str| {
        trace
            .iter()
            .position(|t| t.ends_with(n))
            .unwrap_or_else(|| panic!("{n} in {trace:?}"))
    };
    assert!(
        pos(".set.a") < pos(".set.b") && pos(".set.a") < pos(".set.c"),
        "{trace:?}"
    );
    assert!(
        pos(".set.b") < pos(".set.main") && pos(".set.c") < pos(".set.main"),
        "{trace:?}"
    );
    // main's stdout is the set's result; its declared parameter, in the shared volume, is read
    // once every container has ended (Argo reads outputs when the pod ends)
    assert!(pos(".set.main") < pos(".set.main-outputs"), "{trace:?}");
    let after = run
        .nodes()
        .iter()
        .find(|n| n.display_name == "after")
        .unwrap();
    assert_eq!(
        after.inputs,
        [(
            "x".to_string(),
            "out-of-wf.set.main-out-of-wf.set.main-outputs".to_string()
        )]
    );

    // the set's emptyDir is one directory for all its containers
    let (_, actions) = Run::start(submission(yaml, &[])).expect("valid");
    let Some(Action::Start(a)) = actions.into_iter().next() else {
        panic!("container a starts first")
    };
    assert!(
        matches!(&a.mounts[0].source, crate::run::VolumeSource::Run(d) if d.ends_with("-ws")),
        "{:?}",
        a.mounts
    );
    assert_eq!(a.mounts[0].path, "/ws");
}

#[test]
fn malformed_container_sets_are_refused_with_their_path() {
    let y = "kind: Workflow\nmetadata: {name: wf}\nspec:\n  entrypoint: t\n  templates:\n  - name: t\n    containerSet:\n      containers:\n      - {name: a, image: x, command: [a], dependencies: [b]}\n      - {name: b, image: x, command: [b], dependencies: [a]}\n      - {name: c, image: python:3}\n    outputs:\n      parameters: [{name: p, valueFrom: {path: /p}}]\n";
    assert_eq!(
        problems_of(y),
        [
            "spec.templates[0].containerSet.containers: dependency cycle among containers a, b",
            "spec.templates[0].containerSet.containers: the template declares outputs, which come from a container named `main`; the set has none",
        ]
    );
}

#[test]
fn lifecycle_hooks_run_once_when_their_expression_first_holds() {
    let yaml = "kind: Workflow\nmetadata: {name: wf}\nspec:\n  entrypoint: main\n  hooks:\n    exit: {template: note}\n    running: {expression: workflow.status == \"Running\", template: note}\n    done: {expression: workflow.status == \"Succeeded\", template: note}\n    never: {expression: workflow.status == \"Failed\", template: note}\n  templates:\n  - name: main\n    steps:\n    - - name: s1\n        template: work\n        hooks:\n          started: {expression: 'steps[\"s1\"].status == \"Running\"', template: note}\n          ok: {expression: steps.s1.status == \"Succeeded\", template: note, arguments: {parameters: [{name: m, value: '{{steps.s1.status}}'}]}}\n  - name: work\n    container: {image: x, command: [work]}\n  - name: note\n    inputs: {parameters: [{name: m, value: '-'}]}\n    container: {image: x, command: [note, '{{inputs.parameters.m}}']}\n";
    let (trace, phase, run) = simulate(yaml, |_, _| (0, String::new()));
    assert_eq!(phase, Phase::Succeeded);
    let mut hooks: Vec<&str> = trace
        .iter()
        .filter(|t| t.contains("hooks"))
        .map(String::as_str)
        .collect();
    hooks.sort();
    assert_eq!(
        hooks,
        [
            ".hooks.done",
            ".hooks.running",
            "[0].s1.hooks.ok",
            "[0].s1.hooks.started"
        ],
        "{trace:?}"
    );
    // each ran once; the exit handler ran too, and last
    assert_eq!(
        trace.last().map(String::as_str),
        Some(".onExit"),
        "{trace:?}"
    );
    let ok = run
        .nodes()
        .iter()
        .find(|n| n.name.ends_with("s1.hooks.ok"))
        .unwrap();
    assert_eq!(ok.inputs, [("m".to_string(), "Succeeded".to_string())]);
}

#[test]
fn metadata_and_step_name_variables() {
    let yaml = "kind: Workflow\nmetadata:\n  name: wf\n  labels: {app: demo}\n  annotations: {workflows.argoproj.io/scheduled-time: '2026-01-02T03:04:05Z'}\nspec:\n  entrypoint: main\n  arguments: {parameters: [{name: p, value: v}]}\n  templates:\n  - name: main\n    steps:\n    - - name: first\n        template: echo\n        arguments: {parameters: [{name: m, value: '{{steps.name}} {{workflow.labels.json}} {{workflow.parameters.json}} {{workflow.scheduledTime}}'}]}\n  - name: echo\n    inputs: {parameters: [{name: m}]}\n    container: {image: x, command: [echo, '{{inputs.parameters.m}}']}\n";
    let (_, actions) = Run::start(submission(yaml, &[])).expect("valid");
    let Some(Action::Start(t)) = actions.into_iter().next() else {
        panic!("the step starts")
    };
    assert_eq!(
        t.command[1],
        r#"first {"app":"demo"} {"p":"v"} 2026-01-02T03:04:05Z"#
    );
}

#[test]
fn workflow_metadata_sets_labels_from_values_and_expressions() {
    let yaml = "kind: Workflow\nmetadata: {name: wf, labels: {team: ml}}\nspec:\n  entrypoint: t\n  arguments: {parameters: [{name: foo, value: bar}]}\n  workflowMetadata:\n    labels: {stage: '{{workflow.parameters.foo}}-1'}\n    annotations: {note: hi}\n    labelsFrom:\n      foo: {expression: workflow.parameters.foo + '-x'}\n  templates:\n  - name: t\n    container: {image: x, command: [echo, '{{workflow.labels.foo}}']}\n";
    let (run, actions) = Run::start(submission(yaml, &[])).expect("valid");
    let labels: Vec<(&str, &str)> = run
        .labels()
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        labels,
        [("foo", "bar-x"), ("stage", "bar-1"), ("team", "ml")]
    );
    assert_eq!(run.annotations()["note"], "hi");
    let Some(Action::Start(t)) = actions.into_iter().next() else {
        panic!("starts")
    };
    assert_eq!(t.command[1], "bar-x");
}

#[test]
fn resume_with_a_node_field_selector_resumes_only_the_nodes_it_picks() {
    let yaml = "kind: Workflow\nmetadata: {name: wf}\nspec:\n  entrypoint: main\n  templates:\n  - name: main\n    steps:\n    - - {name: a, template: ask, arguments: {parameters: [{name: tag, value: first}]}}\n      - {name: b, template: ask, arguments: {parameters: [{name: tag, value: second}]}}\n  - name: ask\n    inputs: {parameters: [{name: tag}]}\n    suspend: {}\n    outputs:\n      parameters: [{name: answer, valueFrom: {supplied: {}}}]\n";
    let (mut run, _) = Run::start(submission(yaml, &[])).expect("valid");
    let phase_of = |run: &Run, n: &str| {
        run.nodes()
            .iter()
            .find(|x| x.display_name == n)
            .map(|x| (x.phase, x.outputs.parameters.clone()))
            .unwrap()
    };
    run.step(
        Event::Resume {
            parameters: vec![("answer".into(), "yes".into())],
            selector: Some("inputs.parameters.tag.value=second".into()),
        },
        2,
    );
    assert_eq!(phase_of(&run, "a").0, Phase::Running);
    assert_eq!(
        phase_of(&run, "b"),
        (Phase::Succeeded, vec![("answer".into(), "yes".into())])
    );
    run.step(
        Event::Resume {
            parameters: vec![("answer".into(), "no".into())],
            selector: Some("displayName=a".into()),
        },
        3,
    );
    assert_eq!(
        phase_of(&run, "a"),
        (Phase::Succeeded, vec![("answer".into(), "no".into())])
    );
    assert_eq!(run.phase(), Phase::Succeeded);
}

mod dag_phase;
mod expression_errors;
mod loop_outputs;
mod lost_and_image_only;
