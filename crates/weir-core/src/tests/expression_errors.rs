//! An expression that fails where a run uses its value errors that node and says where; it
//! never runs the node with the text left as written, an empty value, or nothing at all.

use super::*;

fn node_error(run: &Run, display: &str) -> String {
    let n = run
        .nodes()
        .iter()
        .find(|n| n.display_name == display)
        .unwrap_or_else(|| panic!("no node {display}: {:?}", run.nodes()));
    assert_eq!(n.phase, Phase::Error, "{display}: {}", n.message);
    n.message.clone()
}

/// `{{=…}}` that fails at run time: an unknown function.
const BAD: &str = "{{=nosuchfunction(1)}}";

#[test]
fn an_exit_handler_argument_that_fails_errors_the_handler() {
    let y = format!(
        "kind: Workflow\nmetadata: {{name: wf}}\nspec:\n  entrypoint: t\n  hooks:\n    exit:\n      template: bye\n      arguments: {{parameters: [{{name: m, value: '{BAD}'}}]}}\n  templates:\n  - name: t\n    container: {{image: x, command: [x]}}\n  - name: bye\n    inputs: {{parameters: [{{name: m}}]}}\n    container: {{image: x, command: [echo, '{{{{inputs.parameters.m}}}}']}}\n"
    );
    let (trace, phase, run) = simulate(&y, |_, _| (0, String::new()));
    // the handler never ran with an empty message
    assert_eq!(trace, [""]);
    let msg = node_error(&run, "wf.onExit");
    assert!(msg.contains("arguments.parameters.m"), "{msg}");
    // a failed exit handler fails a run that had succeeded
    assert_eq!(phase, Phase::Failed);
}

#[test]
fn a_lifecycle_hook_argument_that_fails_errors_the_hook() {
    let y = format!(
        "kind: Workflow\nmetadata: {{name: wf}}\nspec:\n  entrypoint: main\n  templates:\n  - name: main\n    steps:\n    - - name: a\n        template: t\n        hooks:\n          running:\n            expression: steps.a.status == \"Running\"\n            template: t\n            arguments: {{parameters: [{{name: m, value: '{BAD}'}}]}}\n  - name: t\n    inputs: {{parameters: [{{name: m, default: x}}]}}\n    container: {{image: x, command: [x]}}\n"
    );
    let (trace, _, run) = simulate(&y, |_, _| (0, String::new()));
    assert!(
        !trace.iter().any(|n| n.contains("hooks")),
        "the hook ran: {trace:?}"
    );
    let msg = node_error(&run, "a.hooks.running");
    assert!(msg.contains("arguments.parameters.m"), "{msg}");
}

#[test]
fn a_dag_target_that_fails_or_names_no_task_errors_the_dag() {
    for (target, says) in [(BAD, "dag.target"), ("Z", "`Z` is not a task of this DAG")] {
        let y = format!(
            "kind: Workflow\nmetadata: {{name: wf}}\nspec:\n  entrypoint: d\n  templates:\n  - name: d\n    dag:\n      target: '{target}'\n      tasks:\n      - {{name: A, template: t}}\n  - name: t\n    container: {{image: x, command: [x]}}\n"
        );
        let (trace, phase, run) = simulate(&y, |_, _| (0, String::new()));
        // nothing ran, and the run did not succeed for it
        assert!(trace.is_empty(), "{target}: {trace:?}");
        assert_eq!(phase, Phase::Error, "{target}");
        let msg = node_error(&run, "wf");
        assert!(msg.contains(says), "{target}: {msg}");
    }
}

#[test]
fn inputs_and_memoize_keys_that_fail_error_their_node() {
    for (inputs, says) in [
        (
            format!("inputs: {{parameters: [{{name: p, default: '{BAD}'}}]}}"),
            "inputs.parameters.p",
        ),
        (
            format!("inputs: {{artifacts: [{{name: r, path: /tmp/r, raw: {{data: '{BAD}'}}}}]}}"),
            "inputs.artifacts.r.raw",
        ),
        (
            format!("memoize: {{key: '{BAD}', maxAge: 1h, cache: {{configMap: {{name: c}}}}}}"),
            "memoize.key",
        ),
    ] {
        let y = format!(
            "kind: Workflow\nmetadata: {{name: wf}}\nspec:\n  entrypoint: t\n  templates:\n  - name: t\n    {inputs}\n    container: {{image: x, command: [x]}}\n"
        );
        let (trace, phase, run) = simulate(&y, |_, _| (0, String::new()));
        assert!(trace.is_empty(), "{says}: {trace:?}");
        assert_eq!(phase, Phase::Error, "{says}");
        let msg = node_error(&run, "wf");
        assert!(msg.contains(says), "{msg}");
    }
}

#[test]
fn an_output_value_that_fails_fails_its_node_rather_than_keeping_the_text() {
    let y = format!(
        "kind: Workflow\nmetadata: {{name: wf}}\nspec:\n  entrypoint: main\n  templates:\n  - name: main\n    steps:\n    - - {{name: a, template: t}}\n    outputs: {{parameters: [{{name: o, value: '{BAD}'}}]}}\n  - name: t\n    container: {{image: x, command: [x]}}\n"
    );
    let (trace, phase, run) = simulate(&y, |_, _| (0, String::new()));
    assert_eq!(trace, ["[0].a"]);
    assert_ne!(phase, Phase::Succeeded);
    let root = run.nodes().iter().find(|n| n.display_name == "wf").unwrap();
    assert!(
        root.message.contains("outputs.parameters.o"),
        "{}",
        root.message
    );
    assert!(
        root.outputs
            .parameters
            .iter()
            .all(|(_, v)| !v.contains("{{")),
        "{:?}",
        root.outputs.parameters
    );
}
