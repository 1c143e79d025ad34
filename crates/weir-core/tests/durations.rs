//! Every duration and backoff field of a workflow, fed arbitrary numbers (huge ones above all):
//! too long a duration is a validation error naming its field, and whatever starts runs through
//! a failure, its retries and its timers without a panic. Run in debug, where an arithmetic
//! overflow panics.

use proptest::prelude::*;
use weir_core::diag::Diags;
use weir_core::load::load_str;
use weir_core::run::{Action, Event, Run, Submission, TaskResult};

/// Where a number goes: into the workflow's spec, the task template or the suspend template
/// (YAML lines with `N` for the number), and the path of the field.
#[derive(Clone, Copy)]
enum At {
    Spec,
    Task,
    Pause,
}

const FIELDS: &[(At, &str, &str)] = &[
    (
        At::Spec,
        "activeDeadlineSeconds: N",
        "spec.activeDeadlineSeconds",
    ),
    (
        At::Spec,
        "ttlStrategy: {secondsAfterCompletion: N}",
        "spec.ttlStrategy.secondsAfterCompletion",
    ),
    (
        At::Spec,
        "ttlStrategy: {secondsAfterFailure: N}",
        "spec.ttlStrategy.secondsAfterFailure",
    ),
    (
        At::Spec,
        "retryStrategy: {limit: 2, backoff: {duration: 'N'}}",
        "spec.retryStrategy.backoff.duration",
    ),
    (At::Task, "timeout: 'N'", "spec.templates[1].timeout"),
    (
        At::Task,
        "activeDeadlineSeconds: 'N'",
        "spec.templates[1].activeDeadlineSeconds",
    ),
    (
        At::Task,
        "retryStrategy: {limit: 3, backoff: {duration: 'N'}}",
        "spec.templates[1].retryStrategy.backoff.duration",
    ),
    (
        At::Task,
        "retryStrategy: {limit: 3, backoff: {duration: 1s, factor: 'N'}}",
        "spec.templates[1].retryStrategy.backoff.factor",
    ),
    (
        At::Task,
        "retryStrategy: {limit: 3, backoff: {duration: 1s, maxDuration: 'N'}}",
        "spec.templates[1].retryStrategy.backoff.maxDuration",
    ),
    (
        At::Task,
        "retryStrategy: {limit: 3, backoff: {duration: 1s, cap: 'N'}}",
        "spec.templates[1].retryStrategy.backoff.cap",
    ),
    (
        At::Task,
        "memoize: {key: k, maxAge: 'N', cache: {configMap: {name: c}}}",
        "spec.templates[1].memoize.maxAge",
    ),
    (
        At::Task,
        "http: {url: 'http://127.0.0.1:9/', timeoutSeconds: N}",
        "spec.templates[1].http.timeoutSeconds",
    ),
    (
        At::Task,
        "daemon: true\n    container: {image: x, command: [false], readinessProbe: {exec: {command: ['true']}, periodSeconds: N}}",
        "spec.templates[1].container.readinessProbe.periodSeconds",
    ),
    (
        At::Task,
        "sidecars: [{name: s, image: x, command: [sleep, '1'], readinessProbe: {timeoutSeconds: N}}]",
        "spec.templates[1].sidecars[0].readinessProbe.timeoutSeconds",
    ),
    (
        At::Pause,
        "suspend: {duration: 'N'}",
        "spec.templates[2].suspend.duration",
    ),
];

/// A workflow whose task fails (and is retried), then suspends, with `line` (its `N` replaced by
/// `n`) where `at` says.
fn workflow(at: At, line: &str, n: &str) -> String {
    let line = line.replace('N', n);
    let (spec, task, pause) = match at {
        At::Spec => (
            format!("  {line}\n"),
            String::new(),
            "    suspend: {}\n".to_string(),
        ),
        At::Task => (
            String::new(),
            format!("    {line}\n"),
            "    suspend: {}\n".to_string(),
        ),
        At::Pause => (String::new(), String::new(), format!("    {line}\n")),
    };
    let body = if line.starts_with("http") || line.contains("container:") {
        ""
    } else {
        "    container: {image: x, command: [false]}\n"
    };
    format!(
        "kind: Workflow\nmetadata: {{name: w}}\nspec:\n  entrypoint: main\n{spec}  templates:\n  - name: main\n    steps: [[{{name: a, template: task}}], [{{name: b, template: pause}}]]\n  - name: task\n{task}{body}  - name: pause\n{pause}"
    )
}

/// Numbers as YAML would carry them: small, huge, negative, fractional, with units.
fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| format!("{f:e}")),
        (
            0u64..u64::MAX,
            prop::sample::select(vec!["ns", "ms", "s", "m", "h", "d"])
        )
            .prop_map(|(n, u)| format!("{n}{u}")),
        Just("1e300".to_string()),
        Just("9223372036854775807".to_string()),
        Just("3153600000".to_string()),
        Just("30".to_string()),
    ]
}

fn submission(yaml: &str) -> Option<Submission> {
    let mut d = Diags::new("wf.yaml");
    let def = load_str(yaml, &mut d).definitions.into_iter().next()?;
    Some(Submission {
        key: None,
        name: "w".into(),
        uid: "u".into(),
        namespace: "default".into(),
        created_at: 1_000,
        workflow: def,
        library: Vec::new(),
        config_maps: Vec::new(),
        secrets: Vec::new(),
        parameters: Vec::new(),
    })
}

/// Runs until nothing is left to do: every task fails, every timer fires.
fn drive(mut run: Run, mut actions: Vec<Action>) {
    let mut now = 1_000i64;
    for _ in 0..100 {
        let mut events = Vec::new();
        let mut next_timer = None;
        for a in actions.drain(..) {
            match a {
                Action::Start(spec) => {
                    events.push(Event::Started {
                        node: spec.node_id.clone(),
                        pid: 1,
                    });
                    events.push(Event::Finished {
                        node: spec.node_id,
                        result: TaskResult {
                            exit_code: Some(1),
                            ..TaskResult::default()
                        },
                    });
                }
                Action::Lookup { node, .. } => events.push(Event::Cached {
                    node,
                    outputs: None,
                    from: None,
                }),
                Action::Arm { timer, at } if next_timer.as_ref().is_none_or(|(t, _)| at < *t) => {
                    next_timer = Some((at, timer));
                }
                _ => {}
            }
        }
        if events.is_empty() {
            let Some((at, timer)) = next_timer else {
                return;
            };
            now = now.max(at);
            events.push(Event::TimerFired { timer });
        }
        for e in events {
            actions.extend(run.step(e, now));
        }
        let _ = run.cleanup();
    }
}

fn check(field: usize, n: &str) {
    let (at, line, path) = FIELDS[field];
    let yaml = workflow(at, line, n);
    let Some(sub) = submission(&yaml) else {
        return;
    };
    match Run::start(sub) {
        Ok((run, actions)) => drive(run, actions),
        Err(problems) => {
            // refused for this field, and for its length, or for something else of the value
            // (a negative deadline, say) — never a panic
            if let Some(p) = problems.iter().find(|p| p.path == path) {
                assert!(!p.message.is_empty());
            }
        }
    }
}

fn cases() -> u32 {
    std::env::var("WEIR_FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, .. ProptestConfig::default() })]

    #[test]
    fn any_number_in_any_duration_field_is_run_or_refused_without_a_panic(
        field in 0..FIELDS.len(),
        n in number(),
    ) {
        check(field, &n);
    }
}

/// A century and more is refused in every field, with the field's path.
#[test]
fn too_long_a_duration_is_a_validation_error_naming_its_field() {
    for &(at, line, path) in FIELDS {
        let n = if path.ends_with("factor") {
            "1e300"
        } else {
            "9223372036854775807"
        };
        let sub = submission(&workflow(at, line, n)).expect("loads");
        let problems = match Run::start(sub) {
            Ok(_) => panic!("{path}: {n} was accepted"),
            Err(p) => p,
        };
        assert!(
            problems.iter().any(|p| p.path == path
                && (p.message.contains("100 years") || p.message.contains("at most"))),
            "{path}: {problems:?}"
        );
    }
    // and an ordinary one runs
    for &(at, line, path) in FIELDS {
        let sub = submission(&workflow(at, line, "30")).expect("loads");
        let (run, actions) = Run::start(sub).unwrap_or_else(|p| panic!("{path}: {p:?}"));
        drive(run, actions);
    }
}
