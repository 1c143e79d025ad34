//! `containerSet` templates, run as the DAG they describe: one task per container, in the order
//! their `dependencies` give, sharing the set's `emptyDir` volumes (one directory per set
//! instance) and its `volumeMounts`. The container named `main` gives the set its outputs: its
//! result, and the parameters and artifacts the set declares (read from main's paths), as Argo
//! reads them from the main container. Argo reads them when the whole pod has ended: an output in
//! a volume the set shares (which any container may write) is read by one more task, after every
//! container, that runs nothing but has main's mounts.

use serde_json::Value as Json;

use crate::spec::{
    Arguments, Artifact, Container, Dag, Parameter, RetryStrategy, Step, Template, ValueFrom,
};

/// The container a set's outputs come from.
pub(crate) const MAIN: &str = "main";

/// One container of a set: its name, what it waits for, and what it runs.
pub(crate) struct Member {
    pub name: String,
    pub dependencies: Vec<String>,
    pub container: Container,
}

/// The containers of a `containerSet` value (names may be missing: validation says so).
pub(crate) fn members(set: &Json) -> Vec<Member> {
    let mounts: Vec<Json> = set
        .get("volumeMounts")
        .and_then(Json::as_array)
        .cloned()
        .unwrap_or_default();
    set.get("containers")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
        .map(|c| {
            let mut container: Container = serde_json::from_value(c.clone()).unwrap_or_default();
            container.volume_mounts.extend(mounts.iter().cloned());
            Member {
                name: c
                    .get("name")
                    .and_then(Json::as_str)
                    .unwrap_or_default()
                    .to_string(),
                dependencies: c
                    .get("dependencies")
                    .and_then(Json::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|d| d.as_str().map(str::to_string))
                    .collect(),
                container,
            }
        })
        .collect()
}

/// The name of a member's template.
pub(crate) fn member_template(set: &str, container: &str) -> String {
    format!("{set}/{container}")
}

/// A containerSet template as a DAG template plus one container template per member.
pub(crate) fn expand(t: &Template) -> Vec<Template> {
    let Some(set) = &t.container_set else {
        return vec![t.clone()];
    };
    let members = members(set);
    let retry = set.get("retryStrategy").map(|r| RetryStrategy {
        limit: r.get("retries").map(|v| match v {
            Json::String(s) => s.clone(),
            other => other.to_string(),
        }),
        ..RetryStrategy::default()
    });
    // each member gets the set's inputs, passed through by name
    let arguments = Arguments {
        parameters: t
            .inputs
            .parameters
            .iter()
            .map(|p| Parameter {
                name: p.name.clone(),
                value: Some(format!("{{{{inputs.parameters.{}}}}}", p.name)),
                ..Parameter::default()
            })
            .collect(),
        artifacts: t
            .inputs
            .artifacts
            .iter()
            .map(|a| Artifact {
                name: a.name.clone(),
                from: Some(format!("{{{{inputs.artifacts.{}}}}}", a.name)),
                ..Artifact::default()
            })
            .collect(),
    };
    let mut out = Vec::new();
    let mut dag = Dag::default();
    let main = members.iter().find(|m| m.name == MAIN);
    let has_main = main.is_some();
    // outputs in a shared volume are read once every container has ended
    let shared = |path: &Option<String>| {
        let mounts = main
            .map(|m| m.container.volume_mounts.as_slice())
            .unwrap_or(&[]);
        path.as_deref().is_some_and(|p| {
            mounts.iter().any(|v| {
                v.get("mountPath")
                    .and_then(Json::as_str)
                    .is_some_and(|mp| std::path::Path::new(p).starts_with(mp))
            })
        })
    };
    let param_path = |p: &Parameter| p.value_from.as_ref().and_then(|v| v.path.clone());
    let (late_params, main_params): (Vec<Parameter>, Vec<Parameter>) = t
        .outputs
        .parameters
        .iter()
        .cloned()
        .partition(|p| shared(&param_path(p)));
    let (late_arts, main_arts): (Vec<Artifact>, Vec<Artifact>) = t
        .outputs
        .artifacts
        .iter()
        .cloned()
        .partition(|a| shared(&a.path));
    let mut collector = format!("{MAIN}-outputs");
    while members.iter().any(|m| m.name == collector) {
        collector.push('-');
    }
    let late = main.is_some() && (!late_params.is_empty() || !late_arts.is_empty());
    for m in &members {
        let name = member_template(&t.name, &m.name);
        dag.tasks.push(Step {
            name: m.name.clone(),
            template: Some(name.clone()),
            arguments: arguments.clone(),
            dependencies: m.dependencies.clone(),
            ..Step::default()
        });
        out.push(Template {
            name,
            inputs: t.inputs.clone(),
            outputs: if m.name == MAIN {
                crate::spec::Outputs {
                    parameters: main_params.clone(),
                    artifacts: main_arts.clone(),
                }
            } else {
                Default::default()
            },
            container: Some(m.container.clone()),
            volumes: t.volumes.clone(),
            retry_strategy: retry.clone(),
            set_member: true,
            ..Template::default()
        });
    }
    if let Some(m) = main.filter(|_| late) {
        let name = member_template(&t.name, &collector);
        dag.tasks.push(Step {
            name: collector.clone(),
            template: Some(name.clone()),
            arguments: arguments.clone(),
            dependencies: members.iter().map(|m| m.name.clone()).collect(),
            ..Step::default()
        });
        out.push(Template {
            name,
            inputs: t.inputs.clone(),
            outputs: crate::spec::Outputs {
                parameters: late_params.clone(),
                artifacts: late_arts.clone(),
            },
            container: Some(Container {
                command: vec!["true".into()],
                args: Vec::new(),
                volume_mounts: m.container.volume_mounts.clone(),
                image: m.container.image.clone(),
                ..Container::default()
            }),
            volumes: t.volumes.clone(),
            set_member: true,
            ..Template::default()
        });
    }
    let param_from = |name: &str| match late_params.iter().any(|p| p.name == name) {
        true => collector.as_str(),
        false => MAIN,
    };
    let art_from = |name: &str| match late_arts.iter().any(|a| a.name == name) {
        true => collector.as_str(),
        false => MAIN,
    };
    let mut s = t.clone();
    s.container_set = None;
    s.dag = Some(dag);
    s.volumes = Vec::new();
    if has_main {
        s.result_from = Some(MAIN.to_string());
        s.outputs.parameters = t
            .outputs
            .parameters
            .iter()
            .map(|p| Parameter {
                name: p.name.clone(),
                value_from: Some(ValueFrom {
                    parameter: Some(format!(
                        "{{{{tasks.{}.outputs.parameters.{}}}}}",
                        param_from(&p.name),
                        p.name
                    )),
                    default: p.value_from.as_ref().and_then(|v| v.default.clone()),
                    ..ValueFrom::default()
                }),
                global_name: p.global_name.clone(),
                ..Parameter::default()
            })
            .collect();
        s.outputs.artifacts = t
            .outputs
            .artifacts
            .iter()
            .map(|a| Artifact {
                name: a.name.clone(),
                from: Some(format!(
                    "{{{{tasks.{}.outputs.artifacts.{}}}}}",
                    art_from(&a.name),
                    a.name
                )),
                global_name: a.global_name.clone(),
                optional: a.optional,
                ..Artifact::default()
            })
            .collect();
    }
    out.insert(0, s);
    out
}
