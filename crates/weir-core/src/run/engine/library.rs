//! Templates by scope: the workflow's own and those of the (Cluster)WorkflowTemplates it refers to, with the workflow spec merged over a referenced template's.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::run::*;
use crate::spec::{Kind, Step, WorkflowSpec};

/// Where a template is looked up: the workflow's own templates or a (Cluster)WorkflowTemplate's.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TemplateScope {
    Workflow,
    Namespaced(String),
    Cluster(String),
}

/// The templates a run can reach, with `templateDefaults` applied.
pub(crate) struct Library {
    pub spec: WorkflowSpec,
    templates: HashMap<(TemplateScope, String), Arc<Template>>,
    pub config_maps: HashMap<String, BTreeMap<String, String>>,
    pub secrets: HashMap<String, BTreeMap<String, String>>,
    /// What to mask wherever the run's output is shown: every Secret value with its lines and
    /// encodings (`mask::forms`), made once per run, not once per task.
    pub mask: Vec<String>,
}

impl Library {
    pub fn build(sub: &Submission) -> Result<Library, Vec<Problem>> {
        let mut spec = sub.workflow.spec.clone();
        if let Some(r) = &spec.workflow_template_ref {
            let kind = if r.cluster_scope {
                Kind::ClusterWorkflowTemplate
            } else {
                Kind::WorkflowTemplate
            };
            let Some(wft) = sub
                .library
                .iter()
                .find(|d| d.kind == kind && d.metadata.name.as_deref() == Some(&r.name))
            else {
                return Err(vec![Problem {
                    path: "spec.workflowTemplateRef.name".into(),
                    message: format!(
                        "{} `{}` not found (load it with --with FILE)",
                        kind.as_str(),
                        r.name
                    ),
                }]);
            };
            spec = merge_spec(&wft.spec, &spec);
        }
        let mut templates = HashMap::new();
        let defaults = spec.template_defaults.clone();
        let add = |templates: &mut HashMap<_, _>,
                   scope: TemplateScope,
                   list: &[Template],
                   defaults: Option<&Template>| {
            for t in list {
                let t = match defaults {
                    Some(d) => t.with_defaults(d),
                    None => t.clone(),
                };
                // a containerSet runs as a DAG of its containers
                for t in crate::run::container_set::expand(&t) {
                    templates.insert((scope.clone(), t.name.clone()), Arc::new(t));
                }
            }
        };
        add(
            &mut templates,
            TemplateScope::Workflow,
            &spec.templates,
            defaults.as_deref(),
        );
        for d in &sub.library {
            let name = d.metadata.name.clone().unwrap_or_default();
            let scope = match d.kind {
                Kind::WorkflowTemplate => TemplateScope::Namespaced(name),
                Kind::ClusterWorkflowTemplate => TemplateScope::Cluster(name),
                _ => continue,
            };
            add(
                &mut templates,
                scope,
                &d.spec.templates,
                defaults.as_deref().or(d.spec.template_defaults.as_deref()),
            );
        }
        let maps = |v: &[DataMap]| v.iter().map(|m| (m.name.clone(), m.data.clone())).collect();
        Ok(Library {
            spec,
            templates,
            config_maps: maps(&sub.config_maps),
            secrets: maps(&sub.secrets),
            mask: crate::mask::forms(
                sub.secrets
                    .iter()
                    .flat_map(|s| s.data.values().map(String::as_str)),
            ),
        })
    }

    pub fn get(&self, scope: &TemplateScope, name: &str) -> Option<Arc<Template>> {
        self.templates
            .get(&(scope.clone(), name.to_string()))
            .cloned()
    }

    /// Resolves what a step runs: `template`, `templateRef` or `inline`.
    pub fn resolve(
        &self,
        step: &Step,
        scope: &TemplateScope,
    ) -> Result<(Arc<Template>, TemplateScope), String> {
        if let Some(t) = &step.inline {
            return Ok((Arc::new((**t).clone()), scope.clone()));
        }
        if let Some(r) = &step.template_ref {
            let s = if r.cluster_scope == Some(true) {
                TemplateScope::Cluster(r.name.clone())
            } else {
                TemplateScope::Namespaced(r.name.clone())
            };
            return match self.get(&s, &r.template) {
                Some(t) => Ok((t, s)),
                None => Err(format!(
                    "template `{}` not found in {} `{}`",
                    r.template,
                    if r.cluster_scope == Some(true) {
                        "ClusterWorkflowTemplate"
                    } else {
                        "WorkflowTemplate"
                    },
                    r.name
                )),
            };
        }
        let name = step.template.as_deref().unwrap_or_default();
        match self.get(scope, name) {
            Some(t) => Ok((t, scope.clone())),
            None => Err(format!("template `{name}` not found")),
        }
    }
}

/// A Workflow that references a WorkflowTemplate: the template's spec, overridden by what the
/// workflow sets itself (arguments merge by name).
pub(super) fn merge_spec(base: &WorkflowSpec, over: &WorkflowSpec) -> WorkflowSpec {
    let mut s = base.clone();
    s.workflow_template_ref = None;
    if over.entrypoint.is_some() {
        s.entrypoint = over.entrypoint.clone();
    }
    for p in &over.arguments.parameters {
        match s.arguments.parameters.iter_mut().find(|x| x.name == p.name) {
            Some(x) => *x = p.clone(),
            None => s.arguments.parameters.push(p.clone()),
        }
    }
    for a in &over.arguments.artifacts {
        s.arguments.artifacts.retain(|x| x.name != a.name);
        s.arguments.artifacts.push(a.clone());
    }
    s.templates.extend(over.templates.iter().cloned());
    macro_rules! take {
        ($($f:ident),*) => {$( if over.$f.is_some() { s.$f = over.$f.clone(); } )*};
    }
    take!(
        on_exit,
        parallelism,
        active_deadline_seconds,
        template_defaults,
        retry_strategy,
        suspend,
        shutdown,
        synchronization,
        priority,
        ttl_strategy,
        pod_gc,
        artifact_gc,
        metrics
    );
    s.hooks.extend(over.hooks.clone());
    for r in &over.image_pull_secrets {
        if !s.image_pull_secrets.contains(r) {
            s.image_pull_secrets.push(r.clone());
        }
    }
    s
}
