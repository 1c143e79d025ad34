//! A pod node's life: fetching its inputs, the step cache, admission under parallelism, dispatch, and its result.

use std::collections::BTreeMap;

use serde_json::Value as Json;

use super::*;
use crate::expr::{self};
use crate::run::vars::Vars;
use crate::run::*;
use crate::subst::substitute;

/// A remote input (`http`, `s3`, `git`): fetched into the repository before its task starts.
pub(super) fn http_artifact(name: &str, url: &str) -> ArtifactRef {
    ArtifactRef {
        name: name.into(),
        key: String::new(),
        hash: String::new(),
        size: 0,
        archived: false,
        raw: None,
        sub_path: None,
        url: Some(url.into()),
        http: None,
    }
}

/// A list of `{NAME_FIELD: …, value: …}` objects (headers, OAuth2 endpoint parameters) as pairs;
/// an entry without its name is left out, a missing value is empty.
fn pairs(list: Option<&Json>, name_field: &str) -> Vec<(String, String)> {
    list.and_then(Json::as_array)
        .into_iter()
        .flatten()
        .filter_map(|x| {
            let value = x.get("value").and_then(Json::as_str).unwrap_or("");
            Some((x.get(name_field)?.as_str()?.to_string(), value.to_string()))
        })
        .collect()
}

/// An artifact's `http` or `artifactory` location: its URL (not yet substituted) and how it is
/// reached. `None` when it has neither.
pub(crate) fn http_location(a: &crate::spec::Artifact) -> Option<(String, HttpSource)> {
    if let Some(h) = &a.http {
        let url = h.get("url").and_then(Json::as_str)?;
        let headers = pairs(h.get("headers"), "name");
        let auth = h.get("auth").cloned().unwrap_or(Json::Null);
        return Some((url.to_string(), HttpSource { headers, auth }));
    }
    let af = a.artifactory.as_ref()?;
    let url = af.get("url").and_then(Json::as_str)?;
    let mut basic = serde_json::Map::new();
    for k in ["usernameSecret", "passwordSecret"] {
        if let Some(v) = af.get(k) {
            basic.insert(k.to_string(), v.clone());
        }
    }
    let auth = if basic.is_empty() {
        Json::Null
    } else {
        serde_json::json!({ "basicAuth": basic })
    };
    Some((
        url.to_string(),
        HttpSource {
            headers: Vec::new(),
            auth,
        },
    ))
}

pub(super) fn raw_artifact(name: &str, data: &str) -> ArtifactRef {
    ArtifactRef {
        name: name.into(),
        key: String::new(),
        hash: String::new(),
        size: data.len() as u64,
        archived: false,
        raw: Some(data.into()),
        sub_path: None,
        url: None,
        http: None,
    }
}

/// A key-only artifact: whatever the default repository holds under `key` (a file, or the
/// files under it), found when the task starts.
pub(super) fn keyed_artifact(name: &str, key: &str) -> ArtifactRef {
    ArtifactRef {
        name: name.into(),
        key: key.trim_end_matches('/').into(),
        hash: String::new(),
        size: 0,
        archived: false,
        raw: None,
        sub_path: None,
        url: None,
        http: None,
    }
}
impl Run {
    /// A pod whose spec is built: fetch its remote inputs, then ask the step cache (when the
    /// template uses it), then admit it.
    pub(super) fn pod_ready(&mut self, i: usize) {
        let Rt::Pod { spec, .. } = &self.rt[i] else {
            return;
        };
        if spec
            .inputs
            .iter()
            .any(|a| a.source.url.is_some() && a.source.hash.is_empty())
        {
            let action = self.fetch_action(i, spec);
            self.meta[i].fetch_wait = true;
            self.actions.push(action);
            return;
        }
        let tmpl = self.node_tmpl[i].clone();
        if self.step_caching(&tmpl)
            && let Rt::Pod { spec, .. } = &self.rt[i]
            && let Some(key) = crate::run::step_cache_key(spec, &self.nodes[i].inputs)
        {
            // look for outputs of the same work first; run it only on a miss
            self.nodes[i].cache_key = Some(key.clone());
            self.meta[i].memo = Some((crate::run::STEP_CACHE.into(), key.clone()));
            if self.cache_reads() {
                self.meta[i].cache_wait = true;
                self.actions.push(Action::Lookup {
                    node: self.nodes[i].id.clone(),
                    cache: crate::run::STEP_CACHE.into(),
                    key,
                    max_age_ms: None,
                    image: crate::run::ImageAsk::of(spec),
                });
                return;
            }
        }
        self.admit(i);
    }

    /// The `Fetch` of a pod's remote inputs, each with how to reach it.
    pub(in crate::run) fn fetch_action(&self, i: usize, spec: &TaskSpec) -> Action {
        let sources: Vec<ArtifactRef> = spec
            .inputs
            .iter()
            .filter(|a| a.source.url.is_some() && a.source.hash.is_empty())
            .map(|a| a.source.clone())
            .collect();
        let access = sources
            .iter()
            .map(|s| match (s.url.as_deref(), &s.http) {
                (Some(u), _) if u.starts_with("s3://") => {
                    Some(Access::S3(self.s3_access_of_url(u).unwrap_or_default()))
                }
                // a Secret that is missing was said when the input was resolved
                (_, Some(h)) => Some(Access::Http(self.http_access(h).unwrap_or_default())),
                _ => None,
            })
            .collect();
        Action::Fetch {
            node: self.nodes[i].id.clone(),
            sources,
            access,
        }
    }

    /// An `s3` artifact's location as a URL that names its bucket, key and endpoint, and the
    /// Secrets (by name, never values) holding its credentials.
    pub(super) fn s3_url(&self, s3: &Json, env: &Vars) -> Result<String, String> {
        let field = |k: &str| -> Result<Option<String>, String> {
            s3.get(k)
                .and_then(Json::as_str)
                .map(|v| substitute(v, env).map_err(|e| e.to_string()))
                .transpose()
        };
        let bucket = field("bucket")?.ok_or("s3: bucket is required")?;
        let key = field("key")?.ok_or("s3: key is required")?;
        let mut q = Vec::new();
        if let Some(e) = field("endpoint")? {
            q.push(format!("endpoint={e}"));
        }
        if let Some(r) = field("region")? {
            q.push(format!("region={r}"));
        }
        if s3.get("insecure").and_then(Json::as_bool) == Some(true) {
            q.push("insecure=true".into());
        }
        for (name, param) in [("accessKeySecret", "access"), ("secretKeySecret", "secret")] {
            if let Some(r) = s3.get(name) {
                let n = r.get("name").and_then(Json::as_str).unwrap_or_default();
                let k = r.get("key").and_then(Json::as_str).unwrap_or_default();
                q.push(format!("{param}={n}/{k}"));
            }
        }
        let key = key.trim_start_matches('/');
        Ok(if q.is_empty() {
            format!("s3://{bucket}/{key}")
        } else {
            format!("s3://{bucket}/{key}?{}", q.join("&"))
        })
    }

    /// The run's default artifact repository, as an `s3://BUCKET/PREFIX?…` URL: the
    /// `weir.dev/artifact-repository` annotation (`--artifact-repository`), else the ConfigMap
    /// entry `spec.artifactRepositoryRef` names. `None`: the local repository only.
    pub(in crate::run) fn default_repository(&self) -> Result<Option<String>, String> {
        if let Some(u) = self
            .sub
            .workflow
            .metadata
            .annotations
            .get("weir.dev/artifact-repository")
        {
            return Ok(Some(u.clone()));
        }
        let Some(r) = &self.templates.spec.artifact_repository_ref else {
            return Ok(None);
        };
        let cm = r
            .get("configMap")
            .and_then(Json::as_str)
            .unwrap_or("artifact-repositories");
        let data = self.templates.config_maps.get(cm).ok_or_else(|| {
            format!("artifactRepositoryRef: ConfigMap `{cm}` not found (load it with --with)")
        })?;
        let key = match r.get("key").and_then(Json::as_str) {
            Some(k) => k.to_string(),
            None => data
                .keys()
                .next()
                .cloned()
                .ok_or_else(|| format!("artifactRepositoryRef: ConfigMap `{cm}` is empty"))?,
        };
        let text = data
            .get(&key)
            .ok_or_else(|| format!("artifactRepositoryRef: ConfigMap `{cm}` has no key `{key}`"))?;
        let doc = crate::yaml::parse_documents(text)
            .map_err(|e| format!("artifactRepositoryRef: `{cm}`/{key}: {e:?}"))?;
        let v = doc
            .first()
            .map(crate::yaml::to_json_untyped)
            .unwrap_or(Json::Null);
        let s3 = v.get("s3").ok_or_else(|| {
            format!("artifactRepositoryRef: `{cm}`/{key}: only `s3` repositories are supported on one host")
        })?;
        let mut loc = s3.clone();
        // the key is the prefix under which each artifact gets its own place
        let prefix = s3
            .get("keyPrefix")
            .or_else(|| s3.get("keyFormat"))
            .and_then(Json::as_str)
            .unwrap_or("")
            .to_string();
        loc["key"] = Json::String(prefix);
        let env = Vars {
            layers: vec![&self.globals],
        };
        self.s3_url(&loc, &env).map(Some)
    }

    /// An `http` or `artifactory` artifact's headers and credentials, read from the run's
    /// Secrets.
    pub(in crate::run) fn http_access(&self, src: &HttpSource) -> Result<HttpAccess, String> {
        let secret = |r: Option<&Json>, what: &str| -> Result<String, String> {
            let r = r.ok_or_else(|| format!("{what} is required"))?;
            let name = r.get("name").and_then(Json::as_str).unwrap_or_default();
            let key = r.get("key").and_then(Json::as_str).unwrap_or_default();
            self.templates
                .secrets
                .get(name)
                .and_then(|m| m.get(key))
                .cloned()
                .ok_or_else(|| {
                    format!("{what}: Secret `{name}` key `{key}` not found (load it with --with)")
                })
        };
        let mut access = HttpAccess {
            headers: src.headers.clone(),
            ..HttpAccess::default()
        };
        let auth = &src.auth;
        if let Some(b) = auth.get("basicAuth") {
            access.basic = Some((
                secret(b.get("usernameSecret"), "basicAuth.usernameSecret")?,
                secret(b.get("passwordSecret"), "basicAuth.passwordSecret")?,
            ));
        }
        if let Some(c) = auth.get("clientCert") {
            access.client_cert = Some((
                secret(c.get("clientCertSecret"), "clientCert.clientCertSecret")?,
                secret(c.get("clientKeySecret"), "clientCert.clientKeySecret")?,
            ));
        }
        if let Some(o) = auth.get("oauth2") {
            let list = |k: &str| {
                o.get(k)
                    .and_then(Json::as_array)
                    .cloned()
                    .unwrap_or_default()
            };
            access.oauth2 = Some(OAuth2 {
                token_url: secret(o.get("tokenURLSecret"), "oauth2.tokenURLSecret")?,
                client_id: secret(o.get("clientIDSecret"), "oauth2.clientIDSecret")?,
                client_secret: secret(o.get("clientSecretSecret"), "oauth2.clientSecretSecret")?,
                scopes: list("scopes")
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect(),
                params: pairs(o.get("endpointParams"), "key"),
            });
        }
        Ok(access)
    }

    /// How to reach the store an `s3://…?endpoint=…&access=SECRET/KEY` URL names, with the
    /// credentials read from the run's Secrets.
    pub(in crate::run) fn s3_access_of_url(&self, url: &str) -> Result<S3Access, String> {
        let mut a = S3Access::default();
        let query = url.split_once('?').map(|(_, q)| q).unwrap_or("");
        for kv in query.split('&').filter(|s| !s.is_empty()) {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            match k {
                "endpoint" => a.endpoint = Some(v.to_string()),
                "region" => a.region = Some(v.to_string()),
                "insecure" => a.insecure = v == "true",
                "access" | "secret" => {
                    let (n, key) = v.split_once('/').unwrap_or((v, ""));
                    let value = self
                        .templates
                        .secrets
                        .get(n)
                        .and_then(|m| m.get(key))
                        .cloned()
                        .ok_or_else(|| {
                            format!("s3: Secret `{n}` key `{key}` not found (load it with --with)")
                        })?;
                    if k == "access" {
                        a.access_key = Some(value);
                    } else {
                        a.secret_key = Some(value);
                    }
                }
                _ => {}
            }
        }
        Ok(a)
    }

    /// A pod's remote inputs arrived (or could not be fetched).
    pub(super) fn fetched(&mut self, i: usize, results: Vec<Result<ArtifactRef, String>>) {
        if self.nodes[i].phase.is_done() {
            return;
        }
        let mut errors = Vec::new();
        let mut got = results.into_iter();
        // `weir rerun`: inputs must be what they were
        let expected: BTreeMap<String, String> = self
            .sub
            .workflow
            .metadata
            .annotations
            .get("weir.dev/expected-inputs")
            .and_then(|j| serde_json::from_str(j).ok())
            .unwrap_or_default();
        if let Rt::Pod { spec, .. } = &mut self.rt[i] {
            for a in spec
                .inputs
                .iter_mut()
                .filter(|a| a.source.url.is_some() && a.source.hash.is_empty())
            {
                match got.next() {
                    Some(Ok(r))
                        if expected
                            .get(r.url.as_deref().unwrap_or_default())
                            .is_some_and(|d| *d != r.hash) =>
                    {
                        errors.push(format!(
                            "input artifact `{}`: {} changed since the run being rerun: its blake3 was {}, now {}",
                            a.name,
                            r.url.as_deref().unwrap_or_default(),
                            expected[r.url.as_deref().unwrap_or_default()],
                            r.hash
                        ));
                    }
                    Some(Ok(mut r)) => {
                        r.name = a.source.name.clone();
                        r.sub_path = a.source.sub_path.clone();
                        a.source = r;
                    }
                    Some(Err(e)) => errors.push(format!("input artifact `{}`: {e}", a.name)),
                    None => errors.push(format!("input artifact `{}` was not fetched", a.name)),
                }
            }
            self.nodes[i].input_artifacts = spec.inputs.iter().map(|a| a.source.clone()).collect();
        }
        if !errors.is_empty() {
            if !self.timers.is_empty() {
                self.timers
                    .remove(&Timer::PodTimeout(self.nodes[i].id.clone()));
            }
            self.rt[i] = Rt::None;
            self.finish_node(i, Phase::Error, errors.join("; "));
            return;
        }
        self.pod_ready(i);
    }

    /// The step cache answered a pod's lookup: reuse the outputs, or run it.
    pub(super) fn step_cache_answer(
        &mut self,
        i: usize,
        outputs: Option<NodeOutputs>,
        from: Option<String>,
    ) {
        if self.nodes[i].phase.is_done() {
            return;
        }
        match outputs {
            Some(o) => {
                if !self.timers.is_empty() {
                    self.timers
                        .remove(&Timer::PodTimeout(self.nodes[i].id.clone()));
                }
                self.rt[i] = Rt::None;
                self.meta[i].memo = None;
                self.nodes[i].outputs = o;
                let from = from.unwrap_or_default();
                let msg = format!("cached: outputs of run {from}");
                self.nodes[i].cached_from = Some(from);
                self.finish_node(i, Phase::Succeeded, msg);
            }
            None => self.admit(i),
        }
    }

    /// Dispatches a pod, or holds it while the run is suspended or at its parallelism.
    pub(super) fn admit(&mut self, i: usize) {
        let limit = self.templates.spec.parallelism.map(|p| p.max(1) as usize);
        if self.suspended || limit.is_some_and(|l| self.active_pods >= l) {
            self.waiting.push_back(i);
            return;
        }
        self.dispatch(i);
    }

    pub(super) fn dispatch(&mut self, i: usize) {
        if let Rt::Pod { spec, dispatched } = &mut self.rt[i] {
            *dispatched = true;
            self.active_pods += 1;
            self.actions.push(Action::Start(spec.clone()));
        }
    }

    /// Starts held pods while there is room.
    pub(in crate::run) fn pump(&mut self) {
        let limit = self.templates.spec.parallelism.map(|p| p.max(1) as usize);
        while !self.suspended && limit.is_none_or(|l| self.active_pods < l) {
            let Some(i) = self.waiting.pop_front() else {
                break;
            };
            if self.nodes[i].phase == Phase::Pending {
                self.dispatch(i);
            }
        }
    }

    pub(super) fn release_pod(&mut self, i: usize) {
        if let Rt::Pod {
            dispatched: true, ..
        } = self.rt[i]
        {
            self.active_pods = self.active_pods.saturating_sub(1);
            if let Rt::Pod { dispatched, .. } = &mut self.rt[i] {
                *dispatched = false;
            }
        }
    }

    /// A running task whose process weir lost when it stopped (a crash, `kill -9`): it did not
    /// report a result, so it starts again, once, as the same attempt: weir's stop is not the
    /// task's failure, and does not count against its `retryStrategy.limit`. Lost a second
    /// time, or a child run (not started twice), it fails, as before.
    pub(super) fn lost(&mut self, i: usize) {
        if let Rt::Pod {
            spec,
            dispatched: true,
        } = &self.rt[i]
            && spec.child.is_none()
            && self.nodes[i].phase == Phase::Running
            && !self.meta[i].restarted
        {
            let spec = spec.clone();
            self.meta[i].restarted = true;
            let n = &mut self.nodes[i];
            n.phase = Phase::Pending;
            n.pid = None;
            n.message =
                "weir stopped while this task ran: it started again (not counted as a retry)"
                    .into();
            self.actions.push(Action::Start(spec));
            return;
        }
        let result = TaskResult {
            error: Some(
                "the task's process was lost when weir stopped; it did not report a result".into(),
            ),
            ..TaskResult::default()
        };
        self.pod_finished(i, result);
    }

    pub(super) fn pod_finished(&mut self, i: usize, result: TaskResult) {
        if self.nodes[i].phase.is_done() {
            return;
        }
        self.release_pod(i);
        if !self.timers.is_empty() {
            self.timers
                .remove(&Timer::PodTimeout(self.nodes[i].id.clone()));
        }
        let n = &mut self.nodes[i];
        n.outputs.exit_code = result.exit_code;
        n.outputs.artifacts = result.artifacts.clone();
        n.outputs.metrics = result.metrics.clone();
        n.outputs.container = result.container.clone();
        if result.error.is_none() {
            n.outputs.result = Some(result.stdout.clone());
        }
        let tmpl = self.template_of(i);
        let mut missing = Vec::new();
        let mut params = Vec::new();
        // a child workflow's outputs come from its final document, by jsonPath
        let child_doc = tmpl
            .as_ref()
            .filter(|t| t.resource.is_some())
            .and_then(|_| serde_json::from_str::<Json>(&result.stdout).ok())
            .map(|j| expr::Val::from_json(&j));
        if let Some(t) = &tmpl {
            for p in &t.outputs.parameters {
                let from_path = p
                    .value_from
                    .as_ref()
                    .and_then(|v| v.json_path.as_deref())
                    .zip(child_doc.as_ref())
                    .and_then(|(path, doc)| {
                        let path = path.trim().trim_start_matches('{').trim_end_matches('}');
                        expr::jsonpath(doc, path).ok().map(|v| v.to_text())
                    });
                let from_file = result
                    .parameters
                    .iter()
                    .find(|(k, _)| *k == p.name)
                    .and_then(|(_, v)| v.clone())
                    .or(from_path);
                let vf = p.value_from.as_ref();
                let value = match from_file {
                    Some(v) => Some(v),
                    None if vf.and_then(|v| v.expression.as_ref()).is_some() => None,
                    None => vf
                        .and_then(|v| v.default.clone())
                        .or_else(|| p.value.clone()),
                };
                match value {
                    Some(v) => params.push((p.name.clone(), v)),
                    None if vf.and_then(|v| v.expression.as_ref()).is_some() => {}
                    None => missing.push(p.name.clone()),
                }
            }
        }
        self.nodes[i].outputs.parameters = params;
        let http_failure = match (&result.http, tmpl.as_ref().and_then(|t| t.http.as_ref())) {
            (Some(r), Some(h)) => http_outcome(h, r, &result.stdout).err(),
            _ => None,
        };
        let (phase, msg) = if let Some(e) = result.error {
            (Phase::Error, e)
        } else if let Some(f) = http_failure {
            (Phase::Failed, f)
        } else if result.exit_code != Some(0) {
            (
                Phase::Failed,
                format!(
                    "{} (exit code {})",
                    result.reason.as_deref().unwrap_or("Error"),
                    result.exit_code.unwrap_or(-1)
                ),
            )
        } else if !missing.is_empty() {
            (
                Phase::Error,
                format!(
                    "could not read output parameter(s) {}: file not found and no default",
                    missing.join(", ")
                ),
            )
        } else if !result.missing_artifacts.is_empty() {
            (
                Phase::Error,
                format!(
                    "output artifact(s) {} not found",
                    result.missing_artifacts.join(", ")
                ),
            )
        } else {
            (Phase::Succeeded, String::new())
        };
        self.finish_node(i, phase, msg);
        self.pump();
    }
}
