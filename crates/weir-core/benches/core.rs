//! Micro-benchmarks of the core's hot paths: loading a large workflow, `{{…}}` substitution,
//! both expression languages, and one state-machine step on small and very large runs.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use weir_core::diag::Diags;
use weir_core::expr::{self, Mode};
use weir_core::load::load_str;
use weir_core::run::{Action, Event, Run, Submission, TaskResult};

fn dag_yaml(n: usize) -> String {
    let mut s = String::from(
        "kind: Workflow\nmetadata: {name: big}\nspec:\n  entrypoint: main\n  templates:\n  - name: main\n    dag:\n      tasks:\n",
    );
    for i in 0..n {
        let deps = if i == 0 {
            String::new()
        } else {
            format!(", dependencies: [t{}]", i / 2)
        };
        s.push_str(&format!("      - {{name: t{i}, template: noop, arguments: {{parameters: [{{name: x, value: '{{{{workflow.name}}}}-{i}'}}]}}{deps}}}\n"));
    }
    s.push_str("  - name: noop\n    inputs: {parameters: [{name: x}]}\n    container: {image: busybox, command: [echo, '{{inputs.parameters.x}}']}\n");
    s
}

fn fanout_yaml(n: usize) -> String {
    format!(
        "kind: Workflow\nmetadata: {{name: fan}}\nspec:\n  entrypoint: main\n  templates:\n  - name: main\n    steps:\n    - - {{name: t, template: noop, withSequence: {{count: '{n}'}}}}\n  - name: noop\n    container: {{image: busybox, command: ['true']}}\n"
    )
}

fn submission(yaml: &str) -> Submission {
    let mut d = Diags::new("bench.yaml");
    let loaded = load_str(yaml, &mut d);
    Submission {
        key: None,
        name: loaded.definitions[0]
            .metadata
            .name
            .clone()
            .unwrap_or_default(),
        uid: "u".into(),
        namespace: "default".into(),
        created_at: 0,
        workflow: loaded.definitions[0].clone(),
        library: Vec::new(),
        config_maps: Vec::new(),
        secrets: Vec::new(),
        parameters: Vec::new(),
    }
}

fn load_and_validate(c: &mut Criterion) {
    let yaml = dag_yaml(10_000);
    c.bench_function("load+validate 10,000-task DAG", |b| {
        b.iter(|| {
            let sub = submission(&yaml);
            Run::start(sub)
                .map(|(run, _)| run.nodes().len())
                .unwrap_or(0)
        })
    });
}

fn substitution(c: &mut Criterion) {
    let mut env = BTreeMap::new();
    for i in 0..50 {
        env.insert(format!("inputs.parameters.p{i}"), format!("value-{i}"));
    }
    env.insert(
        "steps.flip-coin.outputs.result".to_string(),
        "heads".to_string(),
    );
    let s = "run --a={{inputs.parameters.p1}} --b={{inputs.parameters.p42}} --c={{steps.flip-coin.outputs.result}} --d={{=asInt('3') * 2}}";
    c.bench_function("substitute 4 tags", |b| {
        b.iter(|| weir_core::subst::substitute(s, &env))
    });
}

fn expressions(c: &mut Criterion) {
    let mut env = BTreeMap::new();
    env.insert("inputs.parameters.foo".to_string(), "7".to_string());
    env.insert(
        "steps.flip-coin.outputs.result".to_string(),
        "heads".to_string(),
    );
    c.bench_function("when (govaluate)", |b| {
        b.iter(|| {
            expr::eval_bool(
                "heads == heads && 3 < 10 || tails =~ '^t'",
                Mode::Govaluate,
                &env,
            )
        })
    });
    c.bench_function("{{=…}} (expr)", |b| {
        b.iter(|| {
            expr::eval(
                "asInt(inputs.parameters.foo) * 10 > 5 ? steps['flip-coin'].outputs.result : 'no'",
                Mode::Expr,
                &env,
            )
        })
    });
}

/// A run of `n` parallel pods, all started, whose pods finish one by one.
struct FanOut {
    run: Run,
    pods: Vec<String>,
    next: usize,
}

impl FanOut {
    fn new(yaml: &str) -> FanOut {
        let (mut run, actions) = Run::start(submission(yaml)).expect("valid");
        let pods: Vec<String> = actions
            .into_iter()
            .filter_map(|a| match a {
                Action::Start(s) => Some(s.node_id),
                _ => None,
            })
            .collect();
        for p in &pods {
            run.step(
                Event::Started {
                    node: p.clone(),
                    pid: 1,
                },
                1,
            );
        }
        FanOut { run, pods, next: 0 }
    }

    /// Pods left to finish before the last one (which would also finish the run).
    fn left(&self) -> usize {
        self.pods.len() - 1 - self.next
    }
}

/// Time per `Finished` event on a run of `n` parallel pods. Steady state: the events are
/// timed in batches on one run, which is rebuilt (untimed) when all but its last pod have
/// finished, so the cost of building a run, and the first touches of its fresh memory, stay
/// out of the measurement, as they are out of a step in a long run.
fn step_cost(c: &mut Criterion) {
    let mut g = c.benchmark_group("state-machine step (one task finishes)");
    g.sampling_mode(criterion::SamplingMode::Flat);
    g.measurement_time(Duration::from_secs(2));
    for n in [1_000usize, 10_000, 100_000] {
        let yaml = fanout_yaml(n);
        let mut fan = FanOut::new(&yaml);
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut done = 0u64;
                while done < iters {
                    if fan.left() == 0 {
                        fan = FanOut::new(&yaml);
                    }
                    // events made just before they are used, as the driver makes them
                    let k = fan.left().min((iters - done) as usize).min(256);
                    let events: Vec<Event> = fan.pods[fan.next..fan.next + k]
                        .iter()
                        .map(|p| Event::Finished {
                            node: p.clone(),
                            result: TaskResult {
                                exit_code: Some(0),
                                ..TaskResult::default()
                            },
                        })
                        .collect();
                    let t = Instant::now();
                    for ev in events {
                        std::hint::black_box(fan.run.step(ev, 2));
                    }
                    total += t.elapsed();
                    fan.next += k;
                    done += k as u64;
                }
                total
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_millis(500));
    targets = load_and_validate, substitution, expressions, step_cost
}
criterion_main!(benches);
