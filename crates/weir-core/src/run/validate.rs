//! Static checks before a run is accepted: template references, DAG cycles and dependencies,
//! required parameters, `when`/`depends`/expression syntax, and fields with no local meaning.
//! Every problem is reported, each with the field path of the workflow document.

use std::collections::{HashMap, HashSet};

use crate::expr::{self, Depends, Mode};
use crate::limits;
use crate::run::{Problem, Submission, TemplateScope};
use crate::spec::{Step, Template};

use crate::run::Library;

/// Checks a submission; an empty list means it may run. `template`: the document is a
/// WorkflowTemplate checked on its own, as Argo's `ValidateWorkflowTemplate` does: it may lack an
/// `entrypoint`, and its entrypoint's inputs may come from whoever submits it.
pub(crate) fn validate(sub: &Submission, lib: &Library, template: bool) -> Vec<Problem> {
    let mut v = Validator {
        lib,
        problems: Vec::new(),
    };
    if let Err(e) = crate::names::check_name(&sub.name) {
        v.push("metadata.name", &e);
    }
    if let Some(g) = &sub.workflow.metadata.generate_name
        && let Err(e) = crate::names::check_generate_name(g)
    {
        v.push("metadata.generateName", &e);
    }
    if let Err(e) = crate::names::check_namespace(&sub.namespace) {
        v.push("metadata.namespace", &e);
    }
    let spec = &lib.spec;
    if let Some(p) = spec.parallelism.filter(|p| *p < 1) {
        v.push(
            "spec.parallelism",
            &format!("parallelism must be at least 1, not {p}"),
        );
    }
    let from_template = sub.workflow.spec.workflow_template_ref.is_some();
    let base = if from_template {
        "spec.workflowTemplateRef"
    } else {
        "spec"
    };
    match &spec.entrypoint {
        None if template => {}
        None => v.push(&format!("{base}.entrypoint"), "missing `entrypoint`"),
        Some(e) => match lib.get(&TemplateScope::Workflow, e) {
            None => v.push(
                &format!("{base}.entrypoint"),
                &format!("entrypoint template `{e}` not found"),
            ),
            Some(t) if !template => v.entrypoint_inputs(sub, &t, &format!("{base}.entrypoint")),
            Some(_) => {}
        },
    }
    for (i, p) in spec.arguments.parameters.iter().enumerate() {
        let given = sub.parameters.iter().any(|(k, _)| *k == p.name);
        let has = p.value.is_some() || p.default.is_some() || p.value_from.is_some();
        if !given && !has {
            v.push(
                &format!("spec.arguments.parameters[{i}]"),
                &format!(
                    "workflow parameter `{}` is required: give it with -p {}=VALUE",
                    p.name, p.name
                ),
            );
        }
        if let Some((_, val)) = sub.parameters.iter().rev().find(|(k, _)| *k == p.name)
            && !p.enum_.is_empty()
            && !p.enum_.contains(val)
        {
            v.push(
                &format!("spec.arguments.parameters[{i}]"),
                &format!("`{val}` is not one of {:?}", p.enum_),
            );
        }
    }
    for (k, _) in &sub.parameters {
        if !spec.arguments.parameters.iter().any(|p| p.name == *k) {
            v.push(
                "spec.arguments.parameters",
                &format!("-p {k}: the workflow has no parameter `{k}`"),
            );
        }
    }
    v.workflow_durations(spec);
    if let Some(sync) = &spec.synchronization {
        v.synchronization(sync, "spec.synchronization");
    }
    for (key, h) in spec.hooks.iter().filter(|(k, _)| *k != "exit") {
        v.lifecycle_hook(h, &format!("spec.hooks.{key}"));
    }
    if let Some(t) = &spec.on_exit
        && lib.get(&TemplateScope::Workflow, t).is_none()
    {
        v.push(
            &format!("{base}.onExit"),
            &format!("template `{t}` not found"),
        );
    }
    for (i, t) in spec.templates.iter().enumerate() {
        v.template(t, &format!("spec.templates[{i}]"), &TemplateScope::Workflow);
    }
    for d in &sub.library {
        let name = d.metadata.name.clone().unwrap_or_default();
        // the documents templates are referenced from, as the library holds them (a
        // CronWorkflow or Workflow beside them is checked when it runs, as the workflow)
        let scope = match d.kind {
            crate::spec::Kind::WorkflowTemplate => TemplateScope::Namespaced(name.clone()),
            crate::spec::Kind::ClusterWorkflowTemplate => TemplateScope::Cluster(name.clone()),
            _ => continue,
        };
        for (i, t) in d.spec.templates.iter().enumerate() {
            let before = v.problems.len();
            v.template(t, &format!("spec.templates[{i}]"), &scope);
            for p in &mut v.problems[before..] {
                p.message = format!("{} `{name}`: {}", d.kind.as_str(), p.message);
            }
        }
    }
    v.problems
}

struct Validator<'a> {
    lib: &'a Library,
    problems: Vec<Problem>,
}

/// Replaces `{{…}}` tags by a neutral word so the syntax of the rest can be checked.
fn neutralize(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("{{") {
        out.push_str(&rest[..i]);
        match rest[i..].find("}}") {
            Some(j) => {
                out.push('x');
                rest = &rest[i + j + 2..];
            }
            None => {
                out.push_str(&rest[i..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

impl Validator<'_> {
    /// The shape of a `synchronization` object: what each mutex and semaphore must name.
    fn synchronization(&mut self, sync: &serde_json::Value, path: &str) {
        use serde_json::Value as Json;
        let named = |v: Option<&Json>| v.and_then(Json::as_str).is_some_and(|s| !s.is_empty());
        use crate::run::sync::entries;
        let list = |one: &str, many: &str| {
            entries(sync, one, many)
                .into_iter()
                .map(|(p, m)| (format!("{path}.{p}"), m))
        };
        for (p, m) in list("mutex", "mutexes") {
            if !named(m.get("name")) {
                self.push(&format!("{p}.name"), "a mutex needs a name");
            }
        }
        for (p, s) in list("semaphore", "semaphores") {
            if let Some(r) = s.get("configMapKeyRef") {
                for f in ["name", "key"] {
                    if !named(r.get(f)) {
                        self.push(
                            &format!("{p}.configMapKeyRef.{f}"),
                            &format!("a ConfigMap semaphore needs `{f}`"),
                        );
                    }
                }
            } else if let Some(d) = s.get("database") {
                if !named(d.get("key")) {
                    self.push(
                        &format!("{p}.database.key"),
                        "a database semaphore needs a `key`",
                    );
                }
            } else {
                self.push(
                    &p,
                    "a semaphore needs `configMapKeyRef` (limit from a ConfigMap) or `database` (limit kept by the store)",
                );
            }
        }
    }

    /// A containerSet: named containers that each run a host program, dependencies among
    /// them without cycles, and a `main` container when the template declares outputs.
    fn container_set(&mut self, t: &Template, set: &serde_json::Value, path: &str) {
        use crate::run::container_set::{MAIN, members};
        let members = members(set);
        if members.is_empty() {
            self.push(
                &format!("{path}.containers"),
                "a containerSet needs containers",
            );
            return;
        }
        let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
        for (j, m) in members.iter().enumerate() {
            let p = format!("{path}.containers[{j}]");
            if m.name.is_empty() {
                self.push(
                    &format!("{p}.name"),
                    "a container of a containerSet needs a name",
                );
            } else if names.iter().filter(|n| **n == m.name).count() > 1 {
                self.push(
                    &format!("{p}.name"),
                    &format!("container name `{}` is used twice", m.name),
                );
            }
            for d in &m.dependencies {
                if !names.contains(&d.as_str()) {
                    self.push(
                        &format!("{p}.dependencies"),
                        &format!(
                            "container `{}` depends on `{d}`, which is not in the set",
                            m.name
                        ),
                    );
                }
            }
        }
        // dependency cycles: repeatedly take containers whose dependencies are all taken
        let mut taken: Vec<&str> = Vec::new();
        loop {
            let before = taken.len();
            for m in &members {
                if !taken.contains(&m.name.as_str())
                    && m.dependencies
                        .iter()
                        .all(|d| taken.contains(&d.as_str()) || !names.contains(&d.as_str()))
                {
                    taken.push(&m.name);
                }
            }
            if taken.len() == before {
                break;
            }
        }
        if taken.len() < members.len() {
            let left: Vec<&str> = names
                .iter()
                .filter(|n| !taken.contains(n))
                .copied()
                .collect();
            self.push(
                &format!("{path}.containers"),
                &format!("dependency cycle among containers {}", left.join(", ")),
            );
        }
        let declares = !t.outputs.parameters.is_empty() || !t.outputs.artifacts.is_empty();
        if declares && !names.contains(&MAIN) {
            self.push(
                &format!("{path}.containers"),
                "the template declares outputs, which come from a container named `main`; the set has none",
            );
        }
    }

    /// The entrypoint's input parameters are supplied (Argo's `ProcessArgs` at submit:
    /// "inputs.parameters.NAME was not supplied"): each has a value or default of its own, or
    /// a workflow argument of its name that has one, or `-p NAME=VALUE`.
    fn entrypoint_inputs(&mut self, sub: &Submission, t: &Template, path: &str) {
        let spec = &self.lib.spec;
        for p in &t.inputs.parameters {
            let own = p.value.is_some() || p.default.is_some() || p.value_from.is_some();
            let argument = spec.arguments.parameters.iter().any(|a| {
                a.name == p.name
                    && (a.value.is_some() || a.default.is_some() || a.value_from.is_some())
            });
            let given = sub.parameters.iter().any(|(k, _)| *k == p.name);
            if !(own || argument || given) {
                self.push(
                    path,
                    &format!(
                        "template `{}`: inputs.parameters.{} was not supplied: give the workflow an argument `{}` (spec.arguments.parameters, or -p {}=VALUE)",
                        t.name, p.name, p.name, p.name
                    ),
                );
            }
        }
    }

    /// A lifecycle hook other than `exit`: it runs when its `expression` first holds.
    fn lifecycle_hook(&mut self, h: &crate::spec::LifecycleHook, path: &str) {
        match &h.expression {
            None => self.push(
                &format!("{path}.expression"),
                "a lifecycle hook other than `exit` needs an `expression` saying when it runs",
            ),
            Some(e) => {
                if let Err(err) = crate::expr::check(e, crate::expr::Mode::Expr) {
                    self.push(
                        &format!("{path}.expression"),
                        &format!("invalid expression `{e}`: {}", err.0),
                    );
                }
            }
        }
        if h.template.is_none() && h.template_ref.is_none() {
            self.push(&format!("{path}.template"), "a hook needs a `template`");
        }
    }

    fn push(&mut self, path: &str, msg: &str) {
        self.problems.push(Problem {
            path: path.to_string(),
            message: msg.to_string(),
        });
    }

    /// The workflow's own durations: deadline, default retry backoff, TTLs.
    fn workflow_durations(&mut self, spec: &crate::spec::WorkflowSpec) {
        if let Some(secs) = spec.active_deadline_seconds {
            let field = "spec.activeDeadlineSeconds";
            self.check(field, limits::check_seconds(secs));
        }
        if let Some(rs) = &spec.retry_strategy {
            self.backoff(rs, "spec.retryStrategy");
        }
        for k in [
            "secondsAfterCompletion",
            "secondsAfterSuccess",
            "secondsAfterFailure",
        ] {
            if let Some(secs) = spec.ttl_strategy.as_ref().and_then(|t| t.get(k)) {
                let field = format!("spec.ttlStrategy.{k}");
                self.json_seconds(secs, &field);
            }
        }
    }

    /// Durations of a template, checked where they are written as literals (a `{{…}}` one is
    /// checked when the node starts): too long a one would overflow the engine's clock.
    fn durations(&mut self, t: &Template, path: &str) {
        let text = [
            ("timeout", t.timeout.as_ref()),
            ("activeDeadlineSeconds", t.active_deadline_seconds.as_ref()),
            (
                "suspend.duration",
                t.suspend.as_ref().and_then(|s| s.duration.as_ref()),
            ),
        ];
        for (field, value) in text {
            if let Some(v) = value {
                self.duration_text(v, &format!("{path}.{field}"));
            }
        }
        if let Some(age) = t
            .memoize
            .as_ref()
            .and_then(|m| m.get("maxAge"))
            .and_then(|a| a.as_str())
        {
            self.duration_text(age, &format!("{path}.memoize.maxAge"));
        }
        if let Some(rs) = &t.retry_strategy {
            self.backoff(rs, &format!("{path}.retryStrategy"));
        }
        if let Some(secs) = t.http.as_ref().and_then(|h| h.get("timeoutSeconds")) {
            self.json_seconds(secs, &format!("{path}.http.timeoutSeconds"));
        }
        let probes = t
            .container
            .iter()
            .map(|c| (format!("{path}.container"), c))
            .chain(t.script.iter().map(|c| (format!("{path}.script"), c)))
            .chain(
                t.sidecars
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (format!("{path}.sidecars[{i}]"), c)),
            );
        for (at, c) in probes {
            let Some(probe) = &c.readiness_probe else {
                continue;
            };
            for k in ["initialDelaySeconds", "periodSeconds", "timeoutSeconds"] {
                if let Some(secs) = probe.get(k) {
                    self.json_seconds(secs, &format!("{at}.readinessProbe.{k}"));
                }
            }
        }
    }

    fn backoff(&mut self, rs: &crate::spec::RetryStrategy, path: &str) {
        let Some(b) = &rs.backoff else { return };
        for (field, value) in [
            ("duration", &b.duration),
            ("maxDuration", &b.max_duration),
            ("cap", &b.cap),
        ] {
            if let Some(v) = value {
                self.duration_text(v, &format!("{path}.backoff.{field}"));
            }
        }
        if let Some(f) = b.factor.as_deref().filter(|f| !f.contains("{{"))
            && let Ok(x) = f.trim().parse::<f64>()
        {
            let field = format!("{path}.backoff.factor");
            self.check(&field, limits::check_factor(x));
        }
    }

    fn duration_text(&mut self, v: &str, field: &str) {
        if !v.contains("{{") {
            self.check(field, crate::run::duration_ms(v));
        }
    }

    /// A number of seconds in a JSON field (an integer, or a string of one).
    fn json_seconds(&mut self, v: &serde_json::Value, field: &str) {
        let secs = match v {
            serde_json::Value::Number(n) => n.as_f64(),
            serde_json::Value::String(s) if !s.contains("{{") => s.trim().parse::<f64>().ok(),
            _ => None,
        };
        if let Some(secs) = secs {
            // saturating: 1e300 seconds is too long, not a wrapped negative
            self.check(field, limits::check_duration_ms((secs * 1000.0) as i64));
        }
    }

    /// Records a limit's refusal of `field`.
    fn check<T>(&mut self, field: &str, r: Result<T, String>) {
        if let Err(e) = r {
            self.push(field, &e);
        }
    }

    fn template(&mut self, t: &Template, path: &str, scope: &TemplateScope) {
        if let Some(p) = t.parallelism.filter(|p| *p < 1) {
            self.push(
                &format!("{path}.parallelism"),
                &format!("parallelism must be at least 1, not {p}"),
            );
        }
        if let Some(sync) = &t.synchronization {
            self.synchronization(sync, &format!("{path}.synchronization"));
        }
        self.durations(t, path);
        if let Some(set) = &t.container_set {
            self.container_set(t, set, &format!("{path}.containerSet"));
        }
        let kinds = [
            t.container.is_some(),
            t.script.is_some(),
            t.steps.is_some(),
            t.dag.is_some(),
            t.suspend.is_some(),
        ]
        .iter()
        .filter(|x| **x)
        .count();
        for (field, present, why) in [
            (
                "resource",
                t.resource.as_ref().is_some_and(|r| !creates_workflow(r)),
                "creates Kubernetes objects, which need a Kubernetes API (only `action: create` of a `Workflow` runs here, as a child run)",
            ),
            (
                "plugin",
                t.plugin.is_some(),
                "executor plugins run inside Kubernetes",
            ),
        ] {
            if present {
                self.push(
                    &format!("{path}.{field}"),
                    &format!(
                        "template `{}`: `{field}` is not supported by weir: {why}",
                        t.name
                    ),
                );
                return;
            }
        }
        if t.daemon == Some(true) && t.container.is_none() && t.script.is_none() {
            self.push(
                &format!("{path}.daemon"),
                &format!(
                    "template `{}`: only container and script templates can be daemons",
                    t.name
                ),
            );
        }
        for (key, h) in t
            .steps
            .iter()
            .flatten()
            .flatten()
            .chain(t.dag.iter().flat_map(|d| &d.tasks))
            .flat_map(|s| s.hooks.iter())
        {
            if key != "exit" {
                self.lifecycle_hook(h, &format!("{path}.hooks.{key}"));
            }
        }
        if kinds > 1 {
            self.push(
                path,
                &format!(
                    "template `{}` has more than one of container, script, steps, dag, suspend",
                    t.name
                ),
            );
        }
        if let Some(c) = &t.script
            && c.command.is_empty()
        {
            self.push(
                &format!("{path}.script.command"),
                &format!(
                    "template `{}`: script needs `command` (the interpreter)",
                    t.name
                ),
            );
        }
        let outputs = t.outputs.artifacts.len();
        for (i, a) in t
            .outputs
            .artifacts
            .iter()
            .chain(&t.inputs.artifacts)
            .enumerate()
        {
            for (field, present) in [
                // an input may come from a repository; nothing is pushed to one
                ("git", a.git.is_some() && i < outputs),
                ("gcs", a.gcs.is_some()),
                ("oss", a.oss.is_some()),
                ("hdfs", a.hdfs.is_some()),
                ("azure", a.azure.is_some()),
            ] {
                if present {
                    let at = if i < outputs {
                        format!("{path}.outputs.artifacts[{i}].{field}")
                    } else {
                        format!("{path}.inputs.artifacts[{}].{field}", i - outputs)
                    };
                    self.push(&at, &format!("artifact `{}`: `{field}` artifacts are not supported yet (local, s3, http and artifactory artifacts are)", a.name));
                }
            }
        }
        if let Some(groups) = &t.steps {
            for (g, group) in groups.iter().enumerate() {
                for (s, step) in group.iter().enumerate() {
                    self.step(step, &format!("{path}.steps[{g}][{s}]"), scope);
                }
            }
        }
        if let Some(dag) = &t.dag {
            let names: HashSet<&str> = dag.tasks.iter().map(|x| x.name.as_str()).collect();
            let mut edges: HashMap<&str, Vec<String>> = HashMap::new();
            for (i, task) in dag.tasks.iter().enumerate() {
                let tp = format!("{path}.dag.tasks[{i}]");
                self.step(task, &tp, scope);
                let mut deps = task.dependencies.clone();
                if let Some(d) = &task.depends {
                    match Depends::parse(d) {
                        Ok(parsed) => parsed.tasks(&mut deps),
                        Err(e) => self.push(&format!("{tp}.depends"), &e.to_string()),
                    }
                }
                for d in &deps {
                    if !names.contains(d.as_str()) {
                        self.push(
                            &format!("{tp}.depends"),
                            &format!("task `{}` depends on unknown task `{d}`", task.name),
                        );
                    }
                }
                edges.insert(task.name.as_str(), deps);
            }
            if let Some(cycle) = find_cycle(&edges) {
                self.push(
                    &format!("{path}.dag"),
                    &format!("dependency cycle: {}", cycle.join(" -> ")),
                );
            }
        }
    }

    fn step(&mut self, step: &Step, path: &str, scope: &TemplateScope) {
        if step.template.is_none() && step.template_ref.is_none() && step.inline.is_none() {
            self.push(path, &format!("step `{}` names no template", step.name));
        } else if step.template.as_deref().is_some_and(|t| t.contains("{{")) {
            // resolved at run time
        } else if let Err(e) = self.lib.resolve(step, scope) {
            let field = if step.template_ref.is_some() {
                "templateRef"
            } else {
                "template"
            };
            self.push(
                &format!("{path}.{field}"),
                &format!("step `{}`: {e}", step.name),
            );
        }
        if let Some(w) = &step.when {
            let n = neutralize(w);
            if n.trim_start().starts_with('=') {
                // an expr tag covering the whole condition: checked when evaluated
            } else if let Err(e) = expr::check(&n, Mode::Govaluate) {
                self.push(
                    &format!("{path}.when"),
                    &format!("invalid `when` expression `{w}`: {e}"),
                );
            }
        }
        for tag in step
            .arguments
            .parameters
            .iter()
            .filter_map(|p| p.value.as_deref())
            .flat_map(crate::subst::tags)
        {
            if let Some(e) = tag.strip_prefix('=')
                && let Err(err) = expr::check(e, Mode::Expr)
            {
                self.push(
                    &format!("{path}.arguments"),
                    &format!("invalid expression `{e}`: {err}"),
                );
            }
        }
        if let Some(t) = &step.on_exit {
            let s = Step {
                template: Some(t.clone()),
                ..Step::default()
            };
            if let Err(e) = self.lib.resolve(&s, scope) {
                self.push(&format!("{path}.onExit"), &e);
            }
        }
        if let Some(inline) = &step.inline {
            self.template(inline, &format!("{path}.inline"), scope);
        }
    }
}

fn find_cycle(edges: &HashMap<&str, Vec<String>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum C {
        White,
        Grey,
        Black,
    }
    let mut color: HashMap<&str, C> = edges.keys().map(|k| (*k, C::White)).collect();
    let mut names: Vec<&str> = edges.keys().copied().collect();
    names.sort();
    for start in names {
        if color[start] != C::White {
            continue;
        }
        // iterative DFS with an explicit path
        let mut stack: Vec<(&str, usize)> = vec![(start, 0)];
        color.insert(start, C::Grey);
        while let Some((n, idx)) = stack.pop() {
            let deps = &edges[n];
            if idx < deps.len() {
                stack.push((n, idx + 1));
                let d = deps[idx].as_str();
                match color.get(d).copied() {
                    Some(C::Grey) => {
                        let mut cyc: Vec<String> =
                            stack.iter().map(|(x, _)| x.to_string()).collect();
                        let from = cyc.iter().position(|x| x == d).unwrap_or(0);
                        cyc = cyc[from..].to_vec();
                        cyc.push(d.to_string());
                        return Some(cyc);
                    }
                    Some(C::White) => {
                        color.insert(d, C::Grey);
                        stack.push((d, 0));
                    }
                    _ => {}
                }
            } else {
                color.insert(n, C::Black);
            }
        }
    }
    None
}

/// A `resource` template whose manifest is a Workflow to create: weir runs it as a child run.
fn creates_workflow(r: &serde_json::Value) -> bool {
    r.get("action").and_then(|a| a.as_str()) == Some("create")
        && r.get("manifest")
            .and_then(|m| m.as_str())
            .is_some_and(|m| m.lines().any(|l| l.trim() == "kind: Workflow"))
}

/// Containers of a workflow's own templates that name no program, so run their image's own
/// entrypoint, which a host cannot run (Argo's test image `argoproj/argosay` aside: weir
/// carries a stand-in for it). Not a reason to refuse the run: only a node that reaches such a
/// template fails, so these are warnings.
pub fn image_entrypoints(spec: &crate::spec::WorkflowSpec) -> Vec<Problem> {
    let mut out = Vec::new();
    let runs_entrypoint = |c: &crate::spec::Container| {
        let image = c.image.as_deref().unwrap_or_default();
        let argosay = image.starts_with("argoproj/argosay")
            && c.command
                .first()
                .is_none_or(|p| p.trim_start_matches('/') == "argosay");
        c.command.is_empty() && c.args.is_empty() && !argosay
    };
    for (i, t) in spec.templates.iter().enumerate() {
        let path = format!("spec.templates[{i}]");
        let mut found = |p: String, who: String| {
            out.push(Problem {
                path: p,
                message: format!(
                    "template `{}`: {who} no `command` or `args`: the image's own entrypoint cannot run on this host, so its nodes will fail",
                    t.name
                ),
            })
        };
        if t.container.as_ref().is_some_and(runs_entrypoint) {
            found(format!("{path}.container"), "has".into());
        }
        if let Some(set) = &t.container_set {
            for (j, m) in crate::run::container_set::members(set).iter().enumerate() {
                if runs_entrypoint(&m.container) {
                    found(
                        format!("{path}.containerSet.containers[{j}]"),
                        format!("container `{}` has", m.name),
                    );
                }
            }
        }
        for (field, list) in [
            ("sidecars", &t.sidecars),
            ("initContainers", &t.init_containers),
        ] {
            for (j, sc) in list.iter().enumerate().filter(|(_, c)| runs_entrypoint(c)) {
                found(
                    format!("{path}.{field}[{j}]"),
                    format!("container `{}` has", sc.name.as_deref().unwrap_or_default()),
                );
            }
        }
    }
    out
}
