//! What the executor is told to run: a task's command, environment, mounts, inputs, outputs, probes and resources, for containers, scripts, http, data and child runs.

use std::collections::BTreeMap;

use serde_json::Value as Json;

use super::*;
use crate::expr::{self, Mode};
use crate::limits;
use crate::run::vars::Vars;
use crate::run::*;
use crate::subst::substitute;

/// Whether an `http` task succeeded: its `successCondition` (an expr expression over
/// `response.statusCode`, `response.body` and `response.headers`), or a 2xx status without one.
pub(super) fn http_outcome(h: &Json, r: &HttpResponse, body: &str) -> Result<(), String> {
    struct Response<'a>(&'a HttpResponse, &'a str);
    impl expr::Env for Response<'_> {
        fn var(&self, name: &str) -> Option<expr::Val> {
            use expr::Val;
            match name {
                "response.statusCode" => Some(Val::Int(i64::from(self.0.status))),
                "response.body" => Some(Val::Str(self.1.to_string())),
                "response.headers" => {
                    let mut m: BTreeMap<String, Vec<Val>> = BTreeMap::new();
                    for (k, v) in &self.0.headers {
                        m.entry(k.clone()).or_default().push(Val::Str(v.clone()));
                    }
                    Some(Val::Map(
                        m.into_iter().map(|(k, l)| (k, Val::List(l))).collect(),
                    ))
                }
                _ => None,
            }
        }
    }
    match h.get("successCondition").and_then(Json::as_str) {
        Some(cond) => {
            match expr::eval(cond, Mode::Expr, &Response(r, body)).and_then(|v| v.truthy()) {
                Ok(true) => Ok(()),
                Ok(false) => Err(format!(
                    "successCondition `{cond}` is false (status {})",
                    r.status
                )),
                Err(e) => Err(format!("successCondition `{cond}`: {}", e.0)),
            }
        }
        None if (200..300).contains(&r.status) => Ok(()),
        None => Err(format!("HTTP status {}", r.status)),
    }
}

/// Environment variables, in order.
pub(super) type EnvVars = Vec<(String, String)>;

/// A `readinessProbe` as this host runs it: network probes go to 127.0.0.1.
pub(super) fn probe(p: &Json) -> Result<Probe, String> {
    let ms = |k: &str, default: u64| {
        p.get(k)
            .and_then(Json::as_u64)
            .map(|s| s.saturating_mul(1000).min(limits::MAX_DURATION_MS as u64))
            .unwrap_or(default)
    };
    let port = |v: Option<&Json>| -> Result<u16, String> {
        v.and_then(|x| {
            x.as_u64()
                .or_else(|| x.as_str().and_then(|s| s.parse().ok()))
        })
        .and_then(|n| u16::try_from(n).ok())
        .ok_or_else(|| {
            "readinessProbe: the port must be a number (named ports need Kubernetes)".to_string()
        })
    };
    let check = if let Some(e) = p.get("exec") {
        let cmd: Vec<String> = e
            .get("command")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect();
        if cmd.is_empty() {
            return Err("readinessProbe.exec needs a command".into());
        }
        ProbeCheck::Exec(cmd)
    } else if let Some(h) = p.get("httpGet") {
        ProbeCheck::Http {
            port: port(h.get("port"))?,
            path: h
                .get("path")
                .and_then(Json::as_str)
                .unwrap_or("/")
                .to_string(),
        }
    } else if let Some(t) = p.get("tcpSocket") {
        ProbeCheck::Tcp {
            port: port(t.get("port"))?,
        }
    } else {
        return Err("readinessProbe needs exec, httpGet or tcpSocket".into());
    };
    // Kubernetes probes every 10 s by default; one host answers sooner, so 1 s unless set
    Ok(Probe {
        check,
        initial_delay_ms: ms("initialDelaySeconds", 0),
        period_ms: ms("periodSeconds", 1000),
    })
}

/// A path a task exchanges files through may not climb out of where it is declared (`..`):
/// it could reach other runs' files on the host.
pub(super) fn no_escape(what: &str, name: &str, path: &str) -> Result<(), String> {
    if std::path::Path::new(path)
        .components()
        .any(|c| c == std::path::Component::ParentDir)
    {
        return Err(format!(
            "{what}.{name}: path `{path}` climbs out of its directory with `..`; give the path itself"
        ));
    }
    Ok(())
}

/// A `git` input as `git+REPO#REVISION[?depth=N]`: cloned (by the system's git) before its task
/// starts. Credentials are not supported yet and are refused by name.
pub(super) fn git_url(g: &Json, env: &Vars) -> Result<String, String> {
    for field in ["usernameSecret", "passwordSecret", "sshPrivateKeySecret"] {
        if g.get(field).is_some() {
            return Err(format!(
                "git.{field}: git credentials are not supported yet (public or local repositories only)"
            ));
        }
    }
    let field = |k: &str| -> Result<Option<String>, String> {
        g.get(k)
            .and_then(Json::as_str)
            .map(|v| substitute(v, env).map_err(|e| e.to_string()))
            .transpose()
    };
    let repo = field("repo")?.ok_or("git.repo is required")?;
    let rev = field("revision")?
        .or(field("branch")?)
        .unwrap_or_else(|| "HEAD".into());
    let mut url = format!("git+{repo}#{rev}");
    if let Some(d) = g.get("depth").and_then(Json::as_u64) {
        url += &format!("?depth={d}");
    }
    Ok(url)
}

/// Substitutes `{{…}}` inside the strings of a JSON value (withItems entries).
pub(super) fn subst_json(v: &Json, env: &Vars) -> Result<Json, String> {
    Ok(match v {
        Json::String(s) => Json::String(substitute(s, env).map_err(|e| e.to_string())?),
        Json::Array(a) => Json::Array(
            a.iter()
                .map(|x| subst_json(x, env))
                .collect::<Result<_, _>>()?,
        ),
        Json::Object(o) => Json::Object(
            o.iter()
                .map(|(k, x)| Ok((k.clone(), subst_json(x, env)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

/// Go's `fmt.Sprintf` for one integer, as withSequence's `format` uses it (`%02d`, `%d`, `%x`).
pub fn go_sprintf(fmt: &str, n: i64) -> String {
    let mut out = String::new();
    let mut chars = fmt.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut flags = String::new();
        while let Some(&f) = chars.peek() {
            if f.is_ascii_digit() || f == '-' || f == '+' || f == ' ' {
                flags.push(f);
                chars.next();
            } else {
                break;
            }
        }
        let zero = flags.starts_with('0');
        let left = flags.starts_with('-');
        let width: usize = flags
            .trim_start_matches(['0', '-', '+', ' '])
            .parse()
            .unwrap_or(0);
        let body = match chars.next() {
            Some('d') | Some('v') => n.to_string(),
            Some('x') => format!("{n:x}"),
            Some('X') => format!("{n:X}"),
            Some('o') => format!("{n:o}"),
            Some('%') => "%".into(),
            Some(other) => format!("%!{other}(int={n})"),
            None => "%!(NOVERB)".into(),
        };
        let padded = if body.len() >= width {
            body
        } else if left {
            format!("{body:<width$}")
        } else if zero {
            let (sign, digits) = body
                .strip_prefix('-')
                .map(|d| ("-", d))
                .unwrap_or(("", &body));
            format!("{sign}{:0>w$}", digits, w = width - sign.len())
        } else {
            format!("{body:>width$}")
        };
        out.push_str(&padded);
    }
    out
}

/// Parses resource quantities (`500m`, `2`, `1Gi`, `512Mi`) into requests.
pub(super) fn requests(req: &BTreeMap<String, Json>, lim: &BTreeMap<String, Json>) -> Requests {
    let get = |k: &str| {
        req.get(k).or_else(|| lim.get(k)).map(|v| match v {
            Json::String(s) => s.clone(),
            other => other.to_string(),
        })
    };
    let cpu = get("cpu").map(|s| match s.strip_suffix('m') {
        Some(m) => m.parse::<f64>().unwrap_or(0.0) as u64,
        None => (s.parse::<f64>().unwrap_or(0.0) * 1000.0) as u64,
    });
    let mem = get("memory").map(|s| quantity(&s));
    let gpus = get("nvidia.com/gpu")
        .or_else(|| get("gpu"))
        .and_then(|s| s.parse::<u32>().ok());
    Requests {
        cpu_millis: cpu.unwrap_or(0),
        memory_bytes: mem.unwrap_or(0),
        gpus: gpus.unwrap_or(0),
    }
}

/// A Kubernetes quantity (`512Mi`, `1G`, `3`) as a number.
pub fn quantity(s: &str) -> u64 {
    let units = [
        ("Ki", 1u64 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("k", 1000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
    ];
    for (u, m) in units {
        if let Some(n) = s.strip_suffix(u) {
            return (n.parse::<f64>().unwrap_or(0.0) * m as f64) as u64;
        }
    }
    s.parse::<f64>().unwrap_or(0.0) as u64
}
impl Run {
    /// Resolves a container or script template into what the executor runs.
    /// A container's environment (`env`, `envFrom`) and the secret values it holds.
    pub(super) fn container_env(
        &self,
        i: usize,
        c: &crate::spec::Container,
        env: &Vars,
    ) -> Result<(EnvVars, Vec<String>), String> {
        let s = |x: &str| substitute(x, env).map_err(|e| e.to_string());
        let mut envs = Vec::new();
        let mut secrets = Vec::new();
        for e in &c.env {
            let value = if let Some(v) = &e.value {
                s(v)?
            } else if let Some(from) = &e.value_from {
                if let Some(r) = &from.config_map_key_ref {
                    match self
                        .templates
                        .config_maps
                        .get(&r.name)
                        .and_then(|m| m.get(&r.key))
                    {
                        Some(v) => v.clone(),
                        None if r.optional == Some(true) => continue,
                        None => {
                            return Err(format!(
                                "env {}: ConfigMap `{}` key `{}` not found (load it with --with)",
                                e.name, r.name, r.key
                            ));
                        }
                    }
                } else if let Some(r) = &from.secret_key_ref {
                    match self
                        .templates
                        .secrets
                        .get(&r.name)
                        .and_then(|m| m.get(&r.key))
                    {
                        Some(v) => {
                            secrets.push(v.clone());
                            v.clone()
                        }
                        None if r.optional == Some(true) => continue,
                        None => {
                            return Err(format!(
                                "env {}: Secret `{}` key `{}` not found (load it with --with)",
                                e.name, r.name, r.key
                            ));
                        }
                    }
                } else if let Some(f) = &from.field_ref {
                    match f.get("fieldPath").and_then(Json::as_str) {
                        Some("metadata.name") => self.nodes[i].id.clone(),
                        Some("metadata.namespace") => self.sub.namespace.clone(),
                        Some("status.podIP") | Some("status.hostIP") => "127.0.0.1".into(),
                        Some("spec.nodeName") => "localhost".into(),
                        other => {
                            return Err(format!(
                                "env {}: fieldRef `{}` has no meaning on one host",
                                e.name,
                                other.unwrap_or("")
                            ));
                        }
                    }
                } else {
                    String::new()
                }
            } else {
                String::new()
            };
            envs.push((e.name.clone(), value));
        }
        for ef in &c.env_from {
            let prefix = ef.prefix.clone().unwrap_or_default();
            let (map, secret, r) = match (&ef.config_map_ref, &ef.secret_ref) {
                (Some(r), _) => (self.templates.config_maps.get(&r.name), false, r),
                (_, Some(r)) => (self.templates.secrets.get(&r.name), true, r),
                _ => continue,
            };
            match map {
                Some(m) => {
                    for (k, v) in m {
                        if secret {
                            secrets.push(v.clone());
                        }
                        envs.push((format!("{prefix}{k}"), v.clone()));
                    }
                }
                None if r.optional == Some(true) => {}
                None => {
                    return Err(format!(
                        "envFrom: `{}` not found (load it with --with)",
                        r.name
                    ));
                }
            }
        }
        Ok((envs, secrets))
    }

    /// A `resource` template that creates a `Workflow`: the child run's document and the
    /// parent's library for it.
    pub(super) fn child_spec(&self, i: usize, call: &Call, r: &Json) -> Result<TaskSpec, String> {
        let vars = self.local_vars(call);
        let env = Vars {
            layers: vec![&vars, &self.globals],
        };
        let manifest = r.get("manifest").and_then(Json::as_str).unwrap_or_default();
        let manifest = substitute(manifest, &env).map_err(|e| format!("resource: {e}"))?;
        let mut docs: Vec<Json> = self
            .sub
            .library
            .iter()
            .filter_map(|d| serde_json::to_value(d).ok())
            .map(|mut d| {
                if let Some(o) = d.as_object_mut() {
                    o.remove("file");
                    o.insert("apiVersion".into(), "argoproj.io/v1alpha1".into());
                }
                d
            })
            .collect();
        for m in &self.sub.config_maps {
            docs.push(serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": m.name}, "data": m.data}));
        }
        for m in &self.sub.secrets {
            docs.push(serde_json::json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": m.name}, "stringData": m.data}));
        }
        let library = docs
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("\n---\n");
        Ok(TaskSpec {
            run: self.sub.key().to_string(),
            node_id: self.nodes[i].id.clone(),
            node_name: self.nodes[i].name.clone(),
            secrets: self.secret_values(),
            child: Some(ChildRun { manifest, library }),
            ..TaskSpec::default()
        })
    }

    /// A `data` template as a task: the key prefix its `artifactPaths` names, and its
    /// transformations.
    pub(super) fn data_spec(&self, i: usize, call: &Call, d: &Json) -> Result<TaskSpec, String> {
        let vars = self.local_vars(call);
        let env = Vars {
            layers: vec![&vars, &self.globals],
        };
        let source: crate::spec::Artifact = d
            .pointer("/source/artifactPaths")
            .and_then(|a| serde_json::from_value(a.clone()).ok())
            .ok_or("data: `source.artifactPaths` is required")?;
        let key = source.key_only().ok_or(
            "data: artifactPaths must be a key-only `s3: {key}` of the local artifact repository",
        )?;
        let prefix = substitute(key, &env).map_err(|e| format!("data: {e}"))?;
        let transformations = d
            .get("transformation")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
            .filter_map(|t| t.get("expression").and_then(Json::as_str))
            .map(str::to_string)
            .collect();
        Ok(TaskSpec {
            run: self.sub.key().to_string(),
            node_id: self.nodes[i].id.clone(),
            node_name: self.nodes[i].name.clone(),
            data: Some(DataTask {
                prefix: prefix.trim_end_matches('/').to_string(),
                transformations,
            }),
            ..TaskSpec::default()
        })
    }

    /// An `http` template as a task: the request, with `{{…}}` resolved and secret headers
    /// kept from logs.
    pub(super) fn http_spec(&self, i: usize, call: &Call, h: &Json) -> Result<TaskSpec, String> {
        let vars = self.local_vars(call);
        let env = Vars {
            layers: vec![&vars, &self.globals],
        };
        let s = |x: &str| substitute(x, &env).map_err(|e| e.to_string());
        let text = |k: &str| h.get(k).and_then(Json::as_str).map(&s).transpose();
        let mut headers = Vec::new();
        let mut secrets = Vec::new();
        for hd in h
            .get("headers")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
        {
            let name = hd.get("name").and_then(Json::as_str).unwrap_or_default();
            let value = if let Some(r) = hd.pointer("/valueFrom/secretKeyRef") {
                let (sn, key) = (
                    r.get("name").and_then(Json::as_str).unwrap_or_default(),
                    r.get("key").and_then(Json::as_str).unwrap_or_default(),
                );
                let v = self
                    .templates
                    .secrets
                    .get(sn)
                    .and_then(|m| m.get(key))
                    .ok_or_else(|| {
                        format!("http header {name}: Secret `{sn}` key `{key}` not found (load it with --with)")
                    })?
                    .clone();
                secrets.push(v.clone());
                v
            } else {
                s(hd.get("value").and_then(Json::as_str).unwrap_or_default())?
            };
            headers.push((name.to_string(), value));
        }
        let body = match text("body")? {
            Some(b) => b,
            None => h
                .pointer("/bodyFrom/bytes")
                .and_then(Json::as_str)
                .map(|b| {
                    crate::base64::decode(b.trim())
                        .ok_or_else(|| "http bodyFrom.bytes: not base64 text".to_string())
                })
                .transpose()?
                .unwrap_or_default(),
        };
        Ok(TaskSpec {
            run: self.sub.key().to_string(),
            node_id: self.nodes[i].id.clone(),
            node_name: self.nodes[i].name.clone(),
            secrets: self.mask_forms(&secrets),
            http: Some(HttpRequest {
                method: text("method")?
                    .unwrap_or_else(|| "GET".into())
                    .to_uppercase(),
                url: text("url")?.unwrap_or_default(),
                headers,
                body,
                timeout_ms: h
                    .get("timeoutSeconds")
                    .and_then(Json::as_u64)
                    .unwrap_or(30)
                    .saturating_mul(1000)
                    .min(limits::MAX_DURATION_MS as u64),
                insecure: h.get("insecureSkipVerify").and_then(Json::as_bool) == Some(true),
            }),
            ..TaskSpec::default()
        })
    }

    /// The registry credentials of the workflow's `imagePullSecrets`: each Secret's
    /// `.dockerconfigjson` (`{"auths": {SERVER: {"username", "password"} or {"auth":
    /// base64("user:password")}}}`). A Secret that is not loaded is passed over, as the
    /// kubelet passes over one it cannot find: an image already there still runs.
    fn registry_auths(&self) -> Result<Vec<RegistryAuth>, String> {
        let mut out = Vec::new();
        for r in &self.templates.spec.image_pull_secrets {
            let Some(data) = self.templates.secrets.get(&r.name) else {
                continue;
            };
            let Some(text) = data.get(".dockerconfigjson") else {
                return Err(format!(
                    "imagePullSecrets: Secret `{}` has no `.dockerconfigjson` key (a kubernetes.io/dockerconfigjson Secret)",
                    r.name
                ));
            };
            let bad = |why: &str| format!("imagePullSecrets: Secret `{}`: {why}", r.name);
            let config: Json = serde_json::from_str(text).map_err(|e| bad(&e.to_string()))?;
            let Some(auths) = config.get("auths").and_then(Json::as_object) else {
                return Err(bad("no `auths` object in `.dockerconfigjson`"));
            };
            for (server, a) in auths {
                let field = |k: &str| a.get(k).and_then(Json::as_str).map(str::to_string);
                let (username, password) = match (field("username"), field("password")) {
                    (Some(u), Some(p)) => (u, p),
                    _ => {
                        let pair = field("auth")
                            .and_then(|b| crate::base64::decode(b.trim()))
                            .ok_or_else(|| {
                                bad(&format!("`auths.{server}` has neither username and password nor a base64 `auth`"))
                            })?;
                        let (u, p) = pair.split_once(':').ok_or_else(|| {
                            bad(&format!("`auths.{server}.auth` is not `user:password`"))
                        })?;
                        (u.to_string(), p.to_string())
                    }
                };
                // the registry's host, as Docker names it (`https://` and a path dropped)
                let host = server
                    .trim_start_matches("https://")
                    .trim_start_matches("http://");
                let host = host.split('/').next().unwrap_or(host).to_string();
                out.push(RegistryAuth {
                    server: host,
                    username,
                    password,
                });
            }
        }
        Ok(out)
    }

    pub(super) fn task_spec(
        &self,
        i: usize,
        call: &Call,
        c: &crate::spec::Container,
    ) -> Result<TaskSpec, String> {
        let vars = self.local_vars(call);
        let env = Vars {
            layers: vec![&vars, &self.globals],
        };
        let s = |x: &str| substitute(x, &env).map_err(|e| e.to_string());
        let (envs, mut secrets) = self.container_env(i, c, &env)?;
        let registry_auths = if c.image.is_some() {
            self.registry_auths()?
        } else {
            Vec::new()
        };
        secrets.extend(registry_auths.iter().map(|a| a.password.clone()));
        let pull_policy = PullPolicy::of(c.image_pull_policy.as_deref())?;
        let executor = match call
            .tmpl
            .metadata
            .as_ref()
            .and_then(|m| m.get("annotations"))
            .and_then(|a| a.get(crate::run::EXECUTOR_ANNOTATION))
        {
            None => None,
            Some(v) => Some(
                v.as_str()
                    .and_then(crate::run::ExecutorKind::of)
                    .ok_or_else(|| {
                        format!(
                            "metadata.annotations.{}: `{v}` is not an executor: docker or local",
                            crate::run::EXECUTOR_ANNOTATION
                        )
                    })?,
            ),
        };
        let security = crate::run::Security::of(
            c.security_context.as_ref(),
            &[
                call.tmpl.security_context.as_ref(),
                self.templates.spec.security_context.as_ref(),
            ],
        )?;
        let mounts = self.mounts(i, &call.tmpl, c, &env)?;
        let mut sidecars = Vec::new();
        let mut init_containers = Vec::new();
        for (list, out) in [
            (&call.tmpl.sidecars, &mut sidecars),
            (&call.tmpl.init_containers, &mut init_containers),
        ] {
            for sc in list {
                let (sc_env, sc_secrets) = self.container_env(i, sc, &env)?;
                secrets.extend(sc_secrets);
                out.push(Sidecar {
                    name: sc.name.clone().unwrap_or_else(|| "container".into()),
                    image: sc.image.as_deref().map(s).transpose()?,
                    command: sc.command.iter().map(|x| s(x)).collect::<Result<_, _>>()?,
                    args: sc.args.iter().map(|x| s(x)).collect::<Result<_, _>>()?,
                    env: sc_env,
                    mounts: if sc.mirror_volume_mounts == Some(true) {
                        mounts.clone()
                    } else {
                        self.mounts(i, &call.tmpl, sc, &env)?
                    },
                });
            }
        }
        let daemon = if call.tmpl.daemon == Some(true) {
            Some(Daemon {
                probe: c.readiness_probe.as_ref().map(probe).transpose()?,
            })
        } else {
            None
        };
        let mut inputs = Vec::new();
        for a in &call.tmpl.inputs.artifacts {
            let Some(src) = call.artifacts.iter().find(|x| x.name == a.name) else {
                continue;
            };
            let Some(path) = &a.path else {
                return Err(format!("inputs.artifacts.{}: no path", a.name));
            };
            let path = s(path)?;
            no_escape("inputs.artifacts", &a.name, &path)?;
            inputs.push(InputArtifact {
                name: a.name.clone(),
                path,
                source: src.clone(),
                mode: a.mode.map(|m| m as u32),
            });
        }
        let mut output_parameters = Vec::new();
        for p in &call.tmpl.outputs.parameters {
            if let Some(path) = p.value_from.as_ref().and_then(|v| v.path.as_ref()) {
                let path = s(path)?;
                no_escape("outputs.parameters", &p.name, &path)?;
                output_parameters.push(OutputParam {
                    name: p.name.clone(),
                    path,
                });
            }
        }
        let mut output_artifacts = Vec::new();
        for a in &call.tmpl.outputs.artifacts {
            if let Some(path) = &a.path {
                // an `http` or `artifactory` destination: a PUT of the stored bytes (Argo's
                // HTTP artifact driver, `Save`)
                let http = match http_location(a) {
                    Some((url, src)) => {
                        let access = self
                            .http_access(&src)
                            .map_err(|e| format!("outputs.artifacts.{}: {e}", a.name))?;
                        if let Some((_, pass)) = &access.basic {
                            secrets.push(pass.clone());
                        }
                        if let Some((_, key)) = &access.client_cert {
                            secrets.push(key.clone());
                        }
                        if let Some(o) = &access.oauth2 {
                            secrets.push(o.client_secret.clone());
                        }
                        Some(HttpTarget {
                            url: s(&url)?,
                            access,
                        })
                    }
                    None => None,
                };
                let s3 = match a.s3.as_ref().filter(|_| a.key_only().is_none()) {
                    Some(loc) => {
                        let url = self.s3_url(loc, &env)?;
                        let (bucket, rest) = url
                            .trim_start_matches("s3://")
                            .split_once('/')
                            .ok_or("s3: bucket and key are required")?;
                        let key = rest.split_once('?').map(|(k, _)| k).unwrap_or(rest);
                        let access = self.s3_access_of_url(&url)?;
                        secrets.extend(access.secret_key.iter().cloned());
                        secrets.extend(access.access_key.iter().cloned());
                        Some(S3Target {
                            bucket: bucket.to_string(),
                            key: key.to_string(),
                            access,
                            query: url
                                .split_once('?')
                                .map(|(_, q)| q.to_string())
                                .unwrap_or_default(),
                        })
                    }
                    // no location of its own: the run's default repository, when it has one
                    None if http.is_some() => None,
                    None => match self.default_repository()? {
                        Some(repo) => {
                            let (bucket, rest) = repo
                                .trim_start_matches("s3://")
                                .split_once('/')
                                .unwrap_or((repo.trim_start_matches("s3://"), ""));
                            let prefix = rest.split_once('?').map(|(k, _)| k).unwrap_or(rest);
                            let prefix = prefix.trim_matches('/');
                            let file = if a.archive_none() {
                                a.name.clone()
                            } else {
                                format!("{}.tgz", a.name)
                            };
                            // a key-only artifact keeps its key under the prefix; the others get
                            // their run's and node's place
                            let key = match a.key_only() {
                                Some(k) => {
                                    let k = s(k)?;
                                    let k = k.trim_matches('/');
                                    let k = if a.archive_none() {
                                        k.to_string()
                                    } else {
                                        format!("{k}.tgz")
                                    };
                                    [prefix, k.as_str()]
                                        .iter()
                                        .filter(|p| !p.is_empty())
                                        .cloned()
                                        .collect::<Vec<_>>()
                                        .join("/")
                                }
                                None => [prefix, self.sub.key(), &self.nodes[i].id, &file]
                                    .iter()
                                    .filter(|p| !p.is_empty())
                                    .cloned()
                                    .collect::<Vec<_>>()
                                    .join("/"),
                            };
                            let access = self.s3_access_of_url(&repo)?;
                            secrets.extend(access.secret_key.iter().cloned());
                            secrets.extend(access.access_key.iter().cloned());
                            Some(S3Target {
                                bucket: bucket.split('?').next().unwrap_or(bucket).to_string(),
                                key,
                                access,
                                query: repo
                                    .split_once('?')
                                    .map(|(_, q)| q.to_string())
                                    .unwrap_or_default(),
                            })
                        }
                        None => None,
                    },
                };
                let path = s(path)?;
                no_escape("outputs.artifacts", &a.name, &path)?;
                output_artifacts.push(OutputArtifact {
                    name: a.name.clone(),
                    path,
                    optional: a.optional == Some(true),
                    archive: !a.archive_none(),
                    key: a.key_only().map(&s).transpose()?,
                    s3,
                    http,
                    compression: a.archive_codec(),
                });
            }
        }
        let limits = c
            .resources
            .as_ref()
            .map(|r| requests(&r.limits, &BTreeMap::new()))
            .unwrap_or_default();
        let requests = c
            .resources
            .as_ref()
            .map(|r| requests(&r.requests, &r.limits))
            .unwrap_or_default();
        Ok(TaskSpec {
            run: self.sub.key().to_string(),
            node_id: self.nodes[i].id.clone(),
            node_name: self.nodes[i].name.clone(),
            // `{{…}}` in an image name too (`{{inputs.parameters.image}}:{{…tag}}`)
            image: c.image.as_ref().map(|x| s(x)).transpose()?,
            command: c.command.iter().map(|x| s(x)).collect::<Result<_, _>>()?,
            args: c.args.iter().map(|x| s(x)).collect::<Result<_, _>>()?,
            source: c.source.as_ref().map(|x| s(x)).transpose()?,
            env: envs,
            secrets: self.mask_forms(&secrets),
            working_dir: c.working_dir.as_ref().map(|x| s(x)).transpose()?,
            inputs,
            output_parameters,
            output_artifacts,
            requests,
            limits,
            mounts,
            daemon,
            sidecars,
            init_containers,
            http: None,
            data: None,
            child: None,
            // the template's nodeSelector: labels a worker must have
            node_selector: call
                .tmpl
                .node_selector
                .as_ref()
                .and_then(Json::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| {
                            let v = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                            (k.clone(), v)
                        })
                        .collect()
                })
                .unwrap_or_default(),
            pull_policy,
            registry_auths,
            security,
            executor,
        })
    }

    /// Resolves a container's `volumeMounts` (their `{{…}}` tags substituted, as Argo
    /// substitutes the whole template) against the template's, the workflow's and the claim
    /// templates' volumes.
    pub(super) fn mounts(
        &self,
        i: usize,
        tmpl: &Template,
        c: &crate::spec::Container,
        env: &Vars,
    ) -> Result<Vec<Mount>, String> {
        let spec = &self.templates.spec;
        let mut out = Vec::new();
        for (k, m) in c.volume_mounts.iter().enumerate() {
            let field = |f: &str| -> Result<Option<String>, String> {
                m.get(f)
                    .and_then(Json::as_str)
                    .map(|v| substitute(v, env).map_err(|e| format!("volumeMounts[{k}].{f}: {e}")))
                    .transpose()
            };
            let name = field("name")?.unwrap_or_default();
            let name = name.as_str();
            let path = field("mountPath")?.unwrap_or_default();
            let path = path.as_str();
            if path.is_empty() {
                return Err(format!("volumeMount `{name}` has no mountPath"));
            }
            let named = |v: &&Json| v.get("name").and_then(Json::as_str) == Some(name);
            let source = if let Some(v) = tmpl.volumes.iter().chain(&spec.volumes).find(named) {
                match self.volume_source(name, v)? {
                    // the containers of a set share its emptyDir: one per set instance
                    VolumeSource::Empty if tmpl.set_member => {
                        let set = self.nodes[i].parent.unwrap_or(i);
                        VolumeSource::Run(format!("{}-{name}", self.nodes[set].id))
                    }
                    other => other,
                }
            } else if spec
                .volume_claim_templates
                .iter()
                .any(|v| v.pointer("/metadata/name").and_then(Json::as_str) == Some(name))
            {
                VolumeSource::Run(name.to_string())
            } else {
                return Err(format!(
                    "volumeMount `{name}`: no volume or volumeClaimTemplate of that name"
                ));
            };
            out.push(Mount {
                name: name.to_string(),
                source,
                path: path.to_string(),
                sub_path: field("subPath")?,
                read_only: m.get("readOnly").and_then(Json::as_bool).unwrap_or(false),
            });
        }
        Ok(out)
    }

    pub(super) fn volume_source(&self, name: &str, v: &Json) -> Result<VolumeSource, String> {
        if v.get("emptyDir").is_some() {
            return Ok(VolumeSource::Empty);
        }
        if let Some(claim) = v
            .pointer("/persistentVolumeClaim/claimName")
            .and_then(Json::as_str)
        {
            return Ok(VolumeSource::Claim(claim.to_string()));
        }
        if let Some(p) = v.pointer("/hostPath/path").and_then(Json::as_str) {
            return Ok(VolumeSource::Host(p.to_string()));
        }
        for (field, maps, key) in [
            ("configMap", &self.templates.config_maps, "name"),
            ("secret", &self.templates.secrets, "secretName"),
        ] {
            if let Some(src) = v.get(field) {
                let obj = src.get(key).and_then(Json::as_str).unwrap_or_default();
                let Some(data) = maps.get(obj) else {
                    return Err(format!(
                        "volume `{name}`: {field} `{obj}` not found (load it with --with)"
                    ));
                };
                let files = match src.get("items").and_then(Json::as_array) {
                    Some(items) => items
                        .iter()
                        .filter_map(|i| {
                            let k = i.get("key")?.as_str()?;
                            Some((
                                i.get("path")
                                    .and_then(Json::as_str)
                                    .unwrap_or(k)
                                    .to_string(),
                                data.get(k)?.clone(),
                            ))
                        })
                        .collect(),
                    None => data.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                };
                return Ok(VolumeSource::Files(files));
            }
        }
        Err(format!(
            "volume `{name}`: only emptyDir, persistentVolumeClaim, volumeClaimTemplates, hostPath, configMap and secret volumes have a meaning on one host"
        ))
    }

    /// Whether a template's tasks use step caching: its `weir.dev/cache` annotation, else the
    /// workflow's.
    pub(super) fn step_caching(&self, tmpl: &crate::spec::Template) -> bool {
        let own = tmpl
            .metadata
            .as_ref()
            .and_then(|m| m.get("annotations"))
            .and_then(|a| a.get(crate::run::STEP_CACHE))
            .and_then(|v| v.as_str())
            .map(|v| v == "true");
        own.or_else(|| {
            self.sub
                .workflow
                .metadata
                .annotations
                .get(crate::run::STEP_CACHE)
                .map(|v| v == "true")
        })
        .unwrap_or(false)
    }

    /// False when the run was submitted with `--no-cache`: outputs are recorded, not reused.
    pub(super) fn cache_reads(&self) -> bool {
        self.sub
            .workflow
            .metadata
            .annotations
            .get("weir.dev/no-cache")
            .is_none_or(|v| v != "true")
    }
}
