//! Argo's semantics where weir once differed, each test citing what Argo does.

use crate::support::Sandbox;

/// A script template with `args`: Argo runs `command + args + [script file]`
/// (workflow/controller/operator.go, `executeScript`: `mainCtr.Args = append(mainCtr.Args,
/// common.ExecutorScriptSourcePath)`), so args go to the interpreter and the script gets none.
/// Hera's runner (`python -m hera.workflows.runner -e module:function` as args) relies on it.
#[test]
fn a_script_templates_args_come_before_its_script() {
    let sb = Sandbox::new();
    let wf = sb.write(
        "script-args.yaml",
        "kind: Workflow\nmetadata: {name: script-args}\nspec:\n  entrypoint: m\n  templates:\n  - name: m\n    script:\n      image: python:3\n      command: [python3]\n      args: ['-W', 'error', '-c', 'import sys; print(\"interpreter args\", sys.argv[1:])']\n      source: |\n        print('the script ran, and it should not have')\n",
    );
    let out = sb.weir(&["run", wf.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.all());
    // `python3 -W error -c CODE SCRIPT`: the -c code runs with the script's path as its argument
    assert!(
        out.stdout.contains("interpreter args [") && out.stdout.contains(".weir-script']"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("should not have"), "{}", out.stdout);
}
