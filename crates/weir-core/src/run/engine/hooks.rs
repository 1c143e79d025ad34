//! Lifecycle hooks and exit handlers.

use std::collections::BTreeMap;

use super::*;
use crate::expr::{self, Mode};
use crate::run::vars::Vars;
use crate::run::*;
use crate::spec::Step;
use crate::subst::substitute;

impl Run {
    /// A lifecycle hook as it waits to run.
    pub(super) fn lifecycle(
        &self,
        key: &str,
        h: &crate::spec::LifecycleHook,
        scope: &TemplateScope,
    ) -> Result<LifecycleRt, String> {
        let hstep = Step {
            template: h.template.clone(),
            template_ref: h.template_ref.clone(),
            ..Step::default()
        };
        let (tmpl, hscope) = self.templates.resolve(&hstep, scope)?;
        Ok(LifecycleRt {
            name: key.to_string(),
            expression: h.expression.clone().unwrap_or_default(),
            hook: ExitHook {
                tmpl,
                scope: hscope,
                args: h.arguments.clone(),
            },
        })
    }

    /// Starts the lifecycle hooks whose expression now holds (each runs once). A step's hooks
    /// see `steps.NAME.status` / `tasks.NAME.status`; all see the workflow's variables.
    pub(in crate::run) fn fire_hooks(&mut self) {
        if self.pending_hooks.is_empty() {
            return;
        }
        let pending = std::mem::take(&mut self.pending_hooks);
        let mut keep = Vec::new();
        for (owner, h) in pending {
            let mut vars = BTreeMap::new();
            if let Some(o) = owner
                && let Some(k) = &self.meta[o].link.key
            {
                vars.insert(
                    format!("{k}.status"),
                    self.nodes[o].phase.as_str().to_string(),
                );
            }
            let env = Vars {
                layers: vec![&vars, &self.globals],
            };
            let holds = expr::eval(&h.expression, Mode::Expr, &env)
                .and_then(|v| v.truthy())
                .unwrap_or(false);
            if holds {
                self.start_lifecycle(owner, &h);
            } else if !self.phase.is_done() && owner.is_none_or(|o| !self.nodes[o].phase.is_done())
            {
                keep.push((owner, h));
            }
        }
        keep.append(&mut self.pending_hooks);
        self.pending_hooks = keep;
    }

    pub(super) fn start_lifecycle(&mut self, owner: Option<usize>, h: &LifecycleRt) {
        let (base, display) = match owner {
            Some(o) => (
                self.nodes[o].name.clone(),
                self.nodes[o].display_name.clone(),
            ),
            None => (self.sub.name.clone(), self.sub.name.clone()),
        };
        let vars = owner.map(|o| self.scope_vars(o)).unwrap_or_default();
        let env = Vars {
            layers: vec![&vars, &self.globals],
        };
        let (params, problems) = hook_arguments(&h.hook.args.parameters, &env);
        let call = Call {
            name: format!("{base}.hooks.{}", h.name),
            display: format!("{display}.hooks.{}", h.name),
            parent: None,
            tmpl: h.hook.tmpl.clone(),
            scope: h.hook.scope.clone(),
            params,
            artifacts: Vec::new(),
            link: Link::default(),
            attempt: None,
        };
        self.hooks_active += 1;
        let n = self.execute_or_error(call, problems);
        self.meta[n].lifecycle = true;
    }

    pub(super) fn start_hook(&mut self, owner: usize, hook: &ExitHook) {
        let name = format!("{}.onExit", self.nodes[owner].name);
        let mut vars = self.scope_vars(owner);
        let n = &self.nodes[owner];
        vars.insert("status".into(), n.phase.as_str().into());
        // the owner's outputs, as `steps.X…`/`tasks.X…`, beside what its frame published
        let mut arts = self.nodes[owner]
            .parent
            .map(|p| (*self.frame_artifacts(p)).clone())
            .unwrap_or_default();
        let key_prefix = self.meta[owner].link.key.clone();
        if let Some(k) = key_prefix {
            publish(&mut vars, &k, n);
            let mut owner_vars = BTreeMap::new();
            self.publish_node(&mut owner_vars, &mut arts, &k, owner);
        }
        let env = Vars {
            layers: vec![&vars, &self.globals],
        };
        let (params, mut problems) = hook_arguments(&hook.args.parameters, &env);
        let artifacts = self
            .argument_artifacts(&hook.args.artifacts, &env, &arts)
            .unwrap_or_else(|e| {
                problems.push(e);
                Vec::new()
            });
        let call = Call {
            name: name.clone(),
            display: format!("{}.onExit", self.nodes[owner].display_name),
            parent: self.nodes[owner].parent,
            tmpl: hook.tmpl.clone(),
            scope: hook.scope.clone(),
            params,
            artifacts,
            link: Link::default(),
            attempt: None,
        };
        let h = self.execute_or_error(call, problems);
        self.nodes[h].hook_for = Some(owner);
    }

    /// Runs a hook's call, or, when its arguments could not be resolved, makes its node an
    /// Error that says why (never a hook run with an empty argument).
    pub(super) fn execute_or_error(&mut self, call: Call, problems: Vec<String>) -> usize {
        if problems.is_empty() {
            return self.execute(call);
        }
        let i = self.new_node(&call, NodeType::Pod);
        self.finish_node(i, Phase::Error, problems.join("; "));
        i
    }
}

/// A hook's or exit handler's argument parameters, substituted, and the problems of those whose
/// expression failed.
pub(super) fn hook_arguments(
    parameters: &[crate::spec::Parameter],
    env: &Vars,
) -> (Vec<(String, String)>, Vec<String>) {
    let mut params = Vec::new();
    let mut problems = Vec::new();
    for p in parameters {
        match substitute(p.value.as_deref().unwrap_or_default(), env) {
            Ok(v) => params.push((p.name.clone(), v)),
            Err(e) => problems.push(format!("arguments.parameters.{}: {e}", p.name)),
        }
    }
    (params, problems)
}
