//! Fuzzing the parts that take untrusted input: the YAML loader (with anchors, aliases and merge
//! keys), the expression languages, and a run's start (validation and the expansion of steps,
//! DAGs, loops and recursion), on workflow-shaped documents generated from a grammar. Nothing
//! may panic, overflow the stack or allocate without bound: a limit is a validation error.
//!
//! `WEIR_FUZZ_CASES` sets the cases per property (CI runs more than the default).

use std::collections::BTreeMap;

use proptest::prelude::*;
use weir_core::diag::Diags;
use weir_core::expr::{self, Mode};
use weir_core::load::load_str;
use weir_core::run::{Run, Submission};

fn cases() -> u32 {
    std::env::var("WEIR_FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000)
}

/// Pieces of expressions: operators, literals (huge ones too), variables and functions.
fn expression() -> impl Strategy<Value = String> {
    let atom = prop_oneof![
        Just("1".to_string()),
        Just("1000000000".to_string()),
        Just("9223372036854775807".to_string()),
        Just("-1".to_string()),
        Just("1e300".to_string()),
        Just("'x'".to_string()),
        Just("\"ab\"".to_string()),
        Just("inputs.parameters.n".to_string()),
        Just("workflow.name".to_string()),
        Just("item".to_string()),
        Just("[1, 2]".to_string()),
        Just("{'k': 1}".to_string()),
        Just("true".to_string()),
        Just("nil".to_string()),
    ];
    let func = prop_oneof![
        Just("sprig.repeat"),
        Just("sprig.replace"),
        Just("sprig.trim"),
        Just("sprig.join"),
        Just("sprig.split"),
        Just("toJson"),
        Just("fromJson"),
        Just("len"),
        Just("string"),
        Just("int"),
        Just("filter"),
        Just("map"),
        Just("jsonpath"),
        Just("asInt"),
    ];
    let op = prop_oneof![
        Just(" + "),
        Just(" .. "),
        Just(" * "),
        Just(" == "),
        Just(" && "),
        Just(" ? 1 : "),
        Just(" in "),
        Just(" matches "),
        Just(" ?? "),
        Just("."),
        Just(" ** "),
        Just(" / "),
        Just(" % "),
    ];
    atom.prop_recursive(4, 24, 3, move |inner| {
        prop_oneof![
            (inner.clone(), op.clone(), inner.clone()).prop_map(|(a, o, b)| format!("{a}{o}{b}")),
            (func.clone(), proptest::collection::vec(inner.clone(), 0..3))
                .prop_map(|(f, args)| format!("{f}({})", args.join(", "))),
            inner.clone().prop_map(|a| format!("({a})")),
            inner.prop_map(|a| format!("!{a}")),
        ]
    })
}

/// A value a field may hold: plain, templated, or an expression tag.
fn field() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("hi".to_string()),
        Just("{{inputs.parameters.n}}".to_string()),
        Just("{{workflow.parameters.p}}".to_string()),
        Just("{{item}}".to_string()),
        expression().prop_map(|e| format!("{{{{={e}}}}}")),
    ]
}

/// One template named `t{i}`, calling others among `t0..t{n}` (itself included).
fn template(i: usize, n: usize) -> impl Strategy<Value = String> {
    let call = (0..n, field(), 0..6usize, field()).prop_map(move |(to, arg, lp, when)| {
        let looping = match lp {
            0 => "withItems: [1, 2, 3]".to_string(),
            1 => "withSequence: {count: '1000000000'}".to_string(),
            2 => "withSequence: {start: '-9223372036854775807', end: '9223372036854775807'}"
                .to_string(),
            3 => format!("withParam: '{}'", arg.replace('\'', "''")),
            _ => String::new(),
        };
        let when = if lp == 5 {
            format!("when: '{}'", when.replace('\'', "''"))
        } else {
            String::new()
        };
        format!(
            "{{name: s{to}, template: t{to}, arguments: {{parameters: [{{name: n, value: '{}'}}]}}, {looping}{}{when}}}",
            arg.replace('\'', "''"),
            if looping.is_empty() || when.is_empty() { "" } else { ", " }
        )
    })
    .boxed();
    prop_oneof![
        field().prop_map(move |a| format!(
            "  - name: t{i}\n    inputs: {{parameters: [{{name: n, value: '0'}}]}}\n    container: {{image: x, command: [echo, '{}']}}\n",
            a.replace('\'', "''")
        )),
        proptest::collection::vec(call.clone(), 1..4).prop_map(move |calls| format!(
            "  - name: t{i}\n    inputs: {{parameters: [{{name: n, value: '0'}}]}}\n    steps:\n    - [{}]\n",
            calls.join(", ")
        )),
        proptest::collection::vec(call, 1..4).prop_map(move |calls| {
            let tasks: Vec<String> = calls
                .iter()
                .enumerate()
                .map(|(k, c)| c.replacen("{name: s", &format!("{{name: d{k}x"), 1))
                .collect();
            format!(
                "  - name: t{i}\n    inputs: {{parameters: [{{name: n, value: '0'}}]}}\n    dag:\n      tasks: [{}]\n",
                tasks.join(", ")
            )
        }),
    ]
}

/// A workflow of 1–4 templates, perhaps behind a chain of anchors and aliases.
fn workflow() -> impl Strategy<Value = String> {
    (1..5usize, 0..8usize, any::<bool>())
        .prop_flat_map(|(n, aliases, deadline)| {
            let templates: Vec<_> = (0..n).map(|i| template(i, n)).collect();
            (templates, Just(aliases), Just(deadline))
        })
        .prop_map(|(templates, aliases, deadline)| {
            let mut doc = String::from(
                "apiVersion: argoproj.io/v1alpha1\nkind: Workflow\nmetadata: {generateName: fuzz-}\n",
            );
            if aliases > 0 {
                doc.push_str("x0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
                for k in 1..aliases {
                    let p = k - 1;
                    doc.push_str(&format!(
                        "x{k}: &a{k} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
                    ));
                }
            }
            doc.push_str("spec:\n  entrypoint: t0\n");
            if deadline {
                doc.push_str("  activeDeadlineSeconds: 9223372036854775807\n");
            }
            doc.push_str("  arguments: {parameters: [{name: p, value: '3'}]}\n  templates:\n");
            for t in templates {
                doc.push_str(&t);
            }
            doc
        })
}

fn start(yaml: &str) {
    let mut d = Diags::new("fuzz.yaml");
    let loaded = load_str(yaml, &mut d);
    if d.has_errors() {
        return;
    }
    for def in loaded.definitions {
        let sub = Submission {
            key: None,
            name: "fuzz".into(),
            uid: "uid".into(),
            namespace: "default".into(),
            created_at: 1_000,
            workflow: def,
            library: Vec::new(),
            config_maps: Vec::new(),
            secrets: Vec::new(),
            parameters: Vec::new(),
        };
        // small limits: a recursive loop grows exponentially up to them, many cases must run
        let limits = weir_core::limits::Limits {
            max_nodes: 2_000,
            max_depth: 30,
            max_loop_items: 1_000,
        };
        if let Ok((run, _)) = Run::start_with(sub, limits) {
            // past the limit, each call still launched gets one errored node
            assert!(run.nodes().len() <= limits.max_nodes + 2 * limits.max_loop_items);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, .. ProptestConfig::default() })]

    #[test]
    fn workflows_load_and_start_without_panicking(yaml in workflow()) {
        start(&yaml);
    }

    #[test]
    fn expressions_evaluate_without_panicking(e in expression()) {
        let env: BTreeMap<String, String> = [
            ("inputs.parameters.n", "3"),
            ("workflow.name", "w"),
            ("item", "{\"k\": [1, 2]}"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for mode in [Mode::Expr, Mode::Govaluate] {
            let _ = expr::eval(&e, mode, &env);
        }
    }

    #[test]
    fn yaml_bytes_load_without_panicking(bytes in proptest::collection::vec(
        prop_oneof![
            Just("&a ".to_string()), Just("*a".to_string()), Just("<<: *a\n".to_string()),
            Just("[".to_string()), Just("]".to_string()), Just("{".to_string()), Just("}".to_string()),
            Just(": ".to_string()), Just("- ".to_string()), Just("\n".to_string()), Just("  ".to_string()),
            Just("'".to_string()), Just("\"".to_string()), Just("kind: Workflow\n".to_string()),
            Just("spec:\n".to_string()), Just("---\n".to_string()), Just("? ".to_string()),
            Just("!!str ".to_string()), Just("|\n".to_string()), Just("k".to_string()),
        ],
        0..80,
    )) {
        let text: String = bytes.concat();
        let mut d = Diags::new("fuzz.yaml");
        let _ = load_str(&text, &mut d);
    }
}
