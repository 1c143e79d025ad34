//! The aggregated outputs of a loop, as Argo builds them.

use super::*;

/// `steps.X.outputs.parameters.P` of a fanned-out step is a JSON list in which a value that is
/// itself JSON is embedded as JSON and any other value as a string (Argo's
/// `aggregatedJsonValueList`); `steps.X.outputs.parameters` keeps each value a string.
#[test]
fn an_aggregated_parameter_embeds_json_values_as_json() {
    let y = "kind: Workflow\nmetadata: {name: wf}\nspec:\n  entrypoint: main\n  templates:\n  - name: main\n    steps:\n    - - {name: gen, template: t, withItems: [1, 2, 3]}\n    - - name: after\n        template: u\n        arguments:\n          parameters:\n          - {name: each, value: '{{steps.gen.outputs.parameters.p}}'}\n          - {name: maps, value: '{{steps.gen.outputs.parameters}}'}\n  - name: t\n    container: {image: x, command: [x]}\n    outputs: {parameters: [{name: p, valueFrom: {path: /tmp/p}}]}\n  - name: u\n    inputs: {parameters: [{name: each}, {name: maps}]}\n    container: {image: x, command: [x]}\n";
    let (_, phase, run) = simulate(y, |n, _| {
        let out = if n.ends_with("(0:1)") {
            r#"{"a":1}"#
        } else if n.ends_with("(1:2)") {
            "plain text"
        } else {
            "[1,2]"
        };
        (0, out.to_string())
    });
    assert_eq!(phase, Phase::Succeeded);
    let after = run
        .nodes()
        .iter()
        .find(|n| n.display_name == "after")
        .expect("after ran");
    let input = |name: &str| {
        after
            .inputs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    assert_eq!(input("each"), r#"[{"a":1},"plain text",[1,2]]"#);
    assert_eq!(
        input("maps"),
        r#"[{"p":"{\"a\":1}"},{"p":"plain text"},{"p":"[1,2]"}]"#
    );
}
