//! The Argo Workflows model (`argoproj.io/v1alpha1`), as far as Weir gives it meaning.
//!
//! Fields Argo has and Weir ignores on one host are still accepted by the loader (it checks
//! against Argo's own schema); `load::unsupported` names the ones that would change behaviour.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct ObjectMeta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generate_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct WorkflowSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<String>,
    /// Secrets of type `kubernetes.io/dockerconfigjson` (`{name: …}`): the registry
    /// credentials images are pulled with.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<NameRef>,
    pub arguments: Arguments,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub templates: Vec<Template>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_exit: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub hooks: BTreeMap<String, LifecycleHook>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parallelism: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active_deadline_seconds: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workflow_template_ref: Option<WorkflowTemplateRef>,
    /// Where artifacts without a location of their own go: `{configMap, key}` naming a
    /// ConfigMap entry that holds an `s3:` repository.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifact_repository_ref: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template_defaults: Option<Box<Template>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_strategy: Option<RetryStrategy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shutdown: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workflow_metadata: Option<Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub volume_claim_templates: Vec<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub synchronization: Option<Value>,
    /// Orders this run's requests in lock queues (higher first).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl_strategy: Option<Value>,
    #[serde(rename = "podGC", skip_serializing_if = "Option::is_none")]
    pub pod_gc: Option<Value>,
    #[serde(rename = "artifactGC", skip_serializing_if = "Option::is_none")]
    pub artifact_gc: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Value>,
    /// Every pod's `securityContext`, where its template sets none of a field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub security_context: Option<Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct WorkflowTemplateRef {
    pub name: String,
    pub cluster_scope: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Arguments {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub parameters: Vec<Parameter>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<Artifact>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Parameter {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    #[serde(rename = "enum", skip_serializing_if = "Vec::is_empty")]
    pub enum_: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_from: Option<ValueFrom>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub global_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct ValueFrom {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expression: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameter: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub supplied: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_map_key_ref: Option<KeyRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub json_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jq_filter: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct KeyRef {
    pub name: String,
    pub key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Artifact {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_expression: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw: Option<RawArtifact>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archive: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub global_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub_path: Option<String>,
    /// This artifact's own `artifactGC` (over the workflow's).
    #[serde(rename = "artifactGC", skip_serializing_if = "Option::is_none")]
    pub artifact_gc: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s3: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub git: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gcs: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oss: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hdfs: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifactory: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub azure: Option<Value>,
}

impl Artifact {
    /// Whether the artifact's archive strategy is `none` (the default is tar+gzip).
    pub fn archive_none(&self) -> bool {
        self.archive.as_ref().and_then(|a| a.get("none")).is_some()
    }

    /// How an archived artifact is compressed: `archive: {zstd: {level}}` (a weir extension),
    /// or tar+gzip at `archive: {tar: {compressionLevel}}`; `None`: tar+gzip, fast.
    pub fn archive_codec(&self) -> Option<(String, i32)> {
        let a = self.archive.as_ref()?;
        if let Some(z) = a.get("zstd") {
            let level = z.get("level").and_then(Value::as_i64).unwrap_or(3);
            return Some(("zstd".into(), level.clamp(1, 19) as i32));
        }
        let level = a.get("tar")?.get("compressionLevel")?.as_i64()?;
        Some(("gzip".into(), level.clamp(0, 9) as i32))
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct RawArtifact {
    pub data: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Inputs {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub parameters: Vec<Parameter>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<Artifact>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Outputs {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub parameters: Vec<Parameter>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<Artifact>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Template {
    pub name: String,
    pub inputs: Inputs,
    pub outputs: Outputs,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<Container>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub script: Option<Container>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<Vec<Step>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dag: Option<Dag>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suspend: Option<SuspendTemplate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_strategy: Option<RetryStrategy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active_deadline_seconds: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parallelism: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fail_fast: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_set: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plugin: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub daemon: Option<bool>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sidecars: Vec<Container>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub init_containers: Vec<Container>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub synchronization: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memoize: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Value>,
    /// The pod's `securityContext` (`runAsUser`, `runAsGroup`, `runAsNonRoot` apply to its
    /// containers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub security_context: Option<Value>,
    /// Set on a containerSet run as a DAG: the task whose result is the template's result.
    #[serde(skip)]
    pub result_from: Option<String>,
    /// Set on the templates of a containerSet's containers: `emptyDir` volumes are shared by
    /// the set (one directory per set instance), not private to each container.
    #[serde(skip)]
    pub set_member: bool,
}

impl Artifact {
    /// The key of a key-only artifact (`s3: {key: …}` naming no bucket or endpoint), which
    /// resolves against the default artifact repository.
    pub fn key_only(&self) -> Option<&str> {
        let s3 = self.s3.as_ref()?.as_object()?;
        if s3.keys().any(|k| k != "key") {
            return None;
        }
        s3.get("key")?.as_str()
    }
}

impl Template {
    /// Applies `templateDefaults`: fields the template leaves unset come from the defaults.
    pub fn with_defaults(&self, defaults: &Template) -> Template {
        let mut t = self.clone();
        macro_rules! fill {
            ($($f:ident),*) => {$( if t.$f.is_none() { t.$f = defaults.$f.clone(); } )*};
        }
        fill!(
            retry_strategy,
            timeout,
            active_deadline_seconds,
            parallelism,
            fail_fast,
            metadata,
            node_selector,
            security_context
        );
        if let (Some(c), Some(d)) = (
            t.container.as_mut().or(t.script.as_mut()),
            defaults.container.as_ref(),
        ) {
            c.fill_from(d);
        }
        t
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Container {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub env_from: Vec<EnvFromSource>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub volume_mounts: Vec<Value>,
    /// Script templates only: the program text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Daemon templates: when the task counts as ready (exec, httpGet or tcpSocket).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<Value>,
    /// `Always`, `IfNotPresent` or `Never` (Kubernetes' default: `Always` for an image tagged
    /// `latest` or not tagged, else `IfNotPresent`). Only the Docker executor pulls.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
    /// Whom the container runs as and what it may do (only the Docker executor applies it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub security_context: Option<Value>,
    /// Sidecars and init containers: mount the main container's volumes (Argo's field).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mirror_volume_mounts: Option<bool>,
}

impl Container {
    fn fill_from(&mut self, d: &Container) {
        if self.image.is_none() {
            self.image = d.image.clone();
        }
        if self.working_dir.is_none() {
            self.working_dir = d.working_dir.clone();
        }
        if self.resources.is_none() {
            self.resources = d.resources.clone();
        }
        if self.image_pull_policy.is_none() {
            self.image_pull_policy = d.image_pull_policy.clone();
        }
        if self.security_context.is_none() {
            self.security_context = d.security_context.clone();
        }
        for e in &d.env {
            if !self.env.iter().any(|x| x.name == e.name) {
                self.env.push(e.clone());
            }
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Resources {
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub requests: BTreeMap<String, Value>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub limits: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct EnvVar {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_from: Option<EnvVarSource>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct EnvVarSource {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_map_key_ref: Option<KeyRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<KeyRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field_ref: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_field_ref: Option<Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct EnvFromSource {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_map_ref: Option<NameRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<NameRef>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct NameRef {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct SuspendTemplate {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct RetryStrategy {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_policy: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expression: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Backoff {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub factor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_duration: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cap: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct TemplateRef {
    pub name: String,
    pub template: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_scope: Option<bool>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct ContinueOn {
    pub failed: bool,
    pub error: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Sequence {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct LifecycleHook {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template_ref: Option<TemplateRef>,
    pub arguments: Arguments,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expression: Option<String>,
}

/// A step of a `steps` template or a task of a `dag` template (DAG-only fields are empty on steps).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Step {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template_ref: Option<TemplateRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inline: Option<Box<Template>>,
    pub arguments: Arguments,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub with_items: Option<Vec<Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub with_param: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub with_sequence: Option<Sequence>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub continue_on: Option<ContinueOn>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_exit: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub hooks: BTreeMap<String, LifecycleHook>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dependencies: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub depends: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Dag {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    pub tasks: Vec<Step>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fail_fast: Option<bool>,
}

/// A workflow definition document of one of the four Argo kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    Workflow,
    WorkflowTemplate,
    ClusterWorkflowTemplate,
    CronWorkflow,
}

impl Kind {
    pub fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "Workflow" => Kind::Workflow,
            "WorkflowTemplate" => Kind::WorkflowTemplate,
            "ClusterWorkflowTemplate" => Kind::ClusterWorkflowTemplate,
            "CronWorkflow" => Kind::CronWorkflow,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Workflow => "Workflow",
            Kind::WorkflowTemplate => "WorkflowTemplate",
            Kind::ClusterWorkflowTemplate => "ClusterWorkflowTemplate",
            Kind::CronWorkflow => "CronWorkflow",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Definition {
    pub kind: Kind,
    pub metadata: ObjectMeta,
    pub spec: WorkflowSpec,
    /// CronWorkflow only: the schedule fields (firing comes with the triggers issue).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cron: Option<CronSpec>,
    /// Where the document starts in its file.
    #[serde(skip)]
    pub pos: crate::diag::Pos,
    /// The file it was loaded from.
    #[serde(default)]
    pub file: String,
    /// Field path → position, for locating validation problems.
    #[serde(skip)]
    pub positions: std::sync::Arc<std::collections::BTreeMap<String, crate::diag::Pos>>,
}

impl Definition {
    /// The position of a field path, or of its nearest located ancestor.
    pub fn locate(&self, path: &str) -> crate::diag::Pos {
        let mut p = path.to_string();
        loop {
            if let Some(pos) = self.positions.get(&p) {
                return *pos;
            }
            match p.rfind(['.', '[']) {
                Some(i) => p.truncate(i),
                None => return self.pos,
            }
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct CronSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub schedules: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency_policy: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
}

/// A ConfigMap or Secret document: string data by key. Secret values are masked in output.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DataMap {
    pub name: String,
    pub data: BTreeMap<String, String>,
}
