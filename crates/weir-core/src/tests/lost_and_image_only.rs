//! What weir cannot run as written: a container running its image's own entrypoint, an artifact
//! store it does not speak, and a task whose process weir lost.

use super::*;

/// A container that names no program runs its image's own entrypoint: not a reason to refuse
/// the run (only a node that reaches it fails, in the executor), but a warning with its path.
#[test]
fn containers_that_run_their_images_entrypoint_are_warned_about_not_refused() {
    let y = "kind: Workflow\nmetadata: {name: wf}\nspec:\n  entrypoint: t\n  templates:\n  - name: t\n    steps:\n    - - {name: a, template: ok}\n    - - {name: b, template: image, when: 'false'}\n  - name: ok\n    container: {image: x, command: [a]}\n  - name: image\n    container: {image: docker/whalesay}\n    sidecars: [{name: s, image: nginx}]\n  - name: say\n    container: {image: argoproj/argosay:v2}\n";
    assert!(Run::start(submission(y, &[])).is_ok());
    let sub = submission(y, &[]);
    let found: Vec<String> = crate::run::image_entrypoints(&sub.workflow.spec)
        .iter()
        .map(|p| format!("{}: {}", p.path, p.message))
        .collect();
    assert_eq!(
        found,
        [
            "spec.templates[2].container: template `image`: has no `command` or `args`: the image's own entrypoint cannot run on this host, so its nodes will fail",
            "spec.templates[2].sidecars[0]: template `image`: container `s` has no `command` or `args`: the image's own entrypoint cannot run on this host, so its nodes will fail",
        ]
    );
}

/// A task whose process weir lost (weir was killed while it ran) starts again, once, as the
/// same attempt, without a retry node; lost a second time, it fails.
#[test]
fn a_lost_task_starts_again_once_then_fails() {
    let yaml = "kind: Workflow\nmetadata: {name: wf}\nspec:\n  entrypoint: t\n  templates:\n  - name: t\n    container: {image: x, command: [work]}\n";
    let (mut run, actions) = Run::start(submission(yaml, &[])).expect("valid");
    let Some(Action::Start(spec)) = actions.into_iter().find(|a| matches!(a, Action::Start(_)))
    else {
        panic!("the task starts")
    };
    let id = spec.node_id.clone();
    let started = |pid| Event::Started {
        node: id.clone(),
        pid,
    };
    run.step(started(7), 2);
    let again = run.step(Event::Lost { node: id.clone() }, 3);
    assert!(
        again
            .iter()
            .any(|a| matches!(a, Action::Start(s) if s.node_id == id)),
        "{again:?}"
    );
    let node = run.node_by_id(&id).unwrap();
    assert_eq!(node.phase, Phase::Pending);
    assert!(node.message.contains("started again"), "{}", node.message);
    run.step(started(8), 4);
    run.step(Event::Lost { node: id.clone() }, 5);
    assert_eq!(run.node_by_id(&id).unwrap().phase, Phase::Error);
    assert_eq!(run.phase(), Phase::Error);
    assert_eq!(run.nodes().len(), 1, "no retry node was made");
}

/// An artifact store weir does not speak is refused at the field that names it, inputs and
/// outputs told apart (the path locates the line in the file).
#[test]
fn unsupported_artifact_stores_are_refused_at_their_own_field() {
    let y = "kind: Workflow\nmetadata: {name: wf}\nspec:\n  entrypoint: t\n  templates:\n  - name: t\n    inputs:\n      artifacts:\n      - {name: ok, path: /tmp/ok, raw: {data: x}}\n      - {name: in, path: /tmp/in, gcs: {bucket: b, key: k}}\n    outputs:\n      artifacts: [{name: out, path: /tmp/out, hdfs: {path: /x}}]\n    container: {image: x, command: [work]}\n";
    let problems = problems_of(y);
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("spec.templates[0].inputs.artifacts[1].gcs: ")),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("spec.templates[0].outputs.artifacts[0].hdfs: ")),
        "{problems:?}"
    );
}
