//! A DAG's outcome as Argo assesses it (`assessDAGPhase`): a task's `depends` is evaluated, not
//! the mere presence of a failure among its dependencies, and the DAG's phase is that of the
//! branches that end in its target tasks.

use super::*;

fn dag(tasks: &str) -> String {
    format!(
        "kind: Workflow\nmetadata: {{name: wf}}\nspec:\n  entrypoint: main\n  templates:\n  - name: main\n    dag:\n      tasks:\n{tasks}  - name: pass\n    container: {{image: x, command: [x]}}\n  - name: fail\n    container: {{image: x, command: [x]}}\n"
    )
}

/// Tasks whose template is `fail` exit 1.
fn outcome(yaml: &str) -> (Vec<String>, Phase, Run) {
    let failing: Vec<String> = yaml
        .lines()
        .filter(|l| l.contains("template: fail"))
        .filter_map(|l| l.split("name: ").nth(1))
        .map(|n| n.split(',').next().unwrap().trim().to_string())
        .collect();
    simulate(yaml, |n, _| {
        let task = n.rsplit('.').next().unwrap_or_default();
        (i32::from(failing.iter().any(|f| f == task)), String::new())
    })
}

fn phase_of(run: &Run, display: &str) -> Option<Phase> {
    run.nodes()
        .iter()
        .find(|n| n.display_name == display)
        .map(|n| n.phase)
}

#[test]
fn an_or_after_a_failure_runs_its_task_and_the_dag_succeeds() {
    let y = dag("      - {name: a, template: pass}
      - {name: b, template: fail}
      - {name: c, template: pass}
      - {name: d, template: pass, depends: 'a && (b || c)'}
");
    let (trace, phase, run) = outcome(&y);
    assert!(trace.contains(&".d".to_string()), "{trace:?}");
    assert_eq!(phase_of(&run, "d"), Some(Phase::Succeeded));
    assert_eq!(phase_of(&run, "b"), Some(Phase::Failed));
    // the only target, d, succeeded: b's failure was weighed by d's depends
    assert_eq!(phase, Phase::Succeeded);
}

#[test]
fn argo_dag_depends_fixture_outcomes() {
    // Argo's e2e fixture `dag-depends`, its expectations per task
    let y = dag("      - {name: P, template: pass}
      - {name: F, template: fail}
      - {name: should-execute-1, template: pass, depends: 'P && (F.Succeeded || F.Failed)'}
      - {name: should-execute-2, template: pass, depends: 'P || F'}
      - {name: should-not-execute, template: pass, depends: 'P && F'}
      - {name: should-execute-3, template: pass, depends: 'should-execute-2.Succeeded || should-not-execute'}
");
    let (_, phase, run) = outcome(&y);
    for t in ["should-execute-1", "should-execute-2", "should-execute-3"] {
        assert_eq!(phase_of(&run, t), Some(Phase::Succeeded), "{t}");
    }
    assert_eq!(phase_of(&run, "should-not-execute"), Some(Phase::Omitted));
    assert_eq!(phase, Phase::Succeeded);
}

#[test]
fn a_failure_that_reaches_a_target_fails_the_dag() {
    // b's failure omits c (a bare name wants Succeeded); the omitted target inherits the failure
    let y = dag("      - {name: a, template: pass}
      - {name: b, template: fail, depends: a}
      - {name: c, template: pass, depends: b}
");
    let (trace, phase, run) = outcome(&y);
    assert!(!trace.contains(&".c".to_string()), "{trace:?}");
    assert_eq!(phase_of(&run, "c"), Some(Phase::Omitted));
    assert_eq!(phase, Phase::Failed);
    assert!(run.message().contains("wf.b"), "{}", run.message());
    // plain `dependencies` too: c never runs, and the DAG fails
    let y = dag("      - {name: b, template: fail}
      - {name: c, template: pass, dependencies: [b]}
");
    let (trace, phase, _) = outcome(&y);
    assert!(!trace.contains(&".c".to_string()), "{trace:?}");
    assert_eq!(phase, Phase::Failed);
    // a failed leaf that continues on failure does not fail the DAG
    let y = dag("      - {name: a, template: pass}
      - {name: b, template: fail, continueOn: {failed: true}}
");
    assert_eq!(outcome(&y).1, Phase::Succeeded);
}
