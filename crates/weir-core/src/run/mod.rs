//! The run state machine: `Run::step(event, now) -> Vec<Action>`.
//!
//! A run is a tree of nodes in Argo's node-status model (workflow → steps groups / DAG tasks →
//! retry attempts → pods), each with a stable id derived from its name, so replaying the same
//! events rebuilds the same state and a retry-from-failure finds the same nodes. The driver
//! persists each event before it hands it to `step`, then performs the returned actions.
//!
//! Cost: an event touches only the nodes it affects (per-scope counters and dependents lists),
//! never the whole run.

mod cache;
mod container;
pub(crate) mod container_set;
mod engine;
mod metrics;
mod pull;
mod security;
pub(crate) mod sync;
mod validate;
mod vars;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::spec::{DataMap, Definition, Template};

pub use cache::{ImageAsk, STEP_CACHE, pinned_cache_key, step_cache_key};
pub use container::{ContainerRun, EXECUTOR_ANNOTATION, ExecutorKind};
pub(crate) use engine::Library;
pub use engine::TemplateScope;
pub use engine::go_sprintf as go_sprintf_pub;
pub use engine::quantity;
pub use metrics::Metric;
pub use pull::{PullPolicy, RegistryAuth};
pub use security::Security;
pub use validate::image_entrypoints;
pub use vars::{duration_ms, parse_duration, rfc3339 as rfc3339_pub};

/// Milliseconds since the Unix epoch; the only clock the core knows is the one passed in.
pub type Millis = i64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash)]
pub enum Phase {
    Pending,
    Running,
    Succeeded,
    Failed,
    Error,
    Skipped,
    Omitted,
}

impl Phase {
    pub fn is_done(self) -> bool {
        !matches!(self, Phase::Pending | Phase::Running)
    }
    pub fn is_ok(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Skipped | Phase::Omitted)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Running => "Running",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
            Phase::Error => "Error",
            Phase::Skipped => "Skipped",
            Phase::Omitted => "Omitted",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeType {
    Pod,
    Steps,
    StepGroup,
    DAG,
    TaskGroup,
    Retry,
    Suspend,
    Skipped,
}

/// Everything a run needs, stored with it so the run can be replayed and resubmitted.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Submission {
    /// The run's unique name (Argo's `metadata.name`).
    pub name: String,
    pub uid: String,
    pub namespace: String,
    pub created_at: Millis,
    pub workflow: Definition,
    /// WorkflowTemplates and ClusterWorkflowTemplates the workflow may reference.
    #[serde(default)]
    pub library: Vec<Definition>,
    #[serde(default)]
    pub config_maps: Vec<DataMap>,
    #[serde(default)]
    pub secrets: Vec<DataMap>,
    /// `-p name=value` overrides of the workflow's arguments.
    #[serde(default)]
    pub parameters: Vec<(String, String)>,
    /// The run's key in the store where it is not its name: names are unique per namespace, and
    /// a run named like one of another namespace is kept as `NAMESPACE~NAME` (set only by the
    /// store when it records the run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

impl Submission {
    /// What identifies the run across namespaces: the key of its record, its lock, its work
    /// directory and its tasks. Its `name` is what users see and what node ids derive from.
    pub fn key(&self) -> &str {
        self.key.as_deref().unwrap_or(&self.name)
    }
}

/// A stored artifact: where the executor put it and what it contains.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactRef {
    pub name: String,
    /// Key in the artifact repository (relative path), or empty for raw data.
    pub key: String,
    /// blake3 of the stored bytes.
    pub hash: String,
    pub size: u64,
    /// Whether the stored bytes are a tar.gz of the path (else the file itself).
    pub archived: bool,
    /// Inline content for raw artifacts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<String>,
    /// Only this path inside the artifact (an argument's `subPath`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_path: Option<String>,
    /// Where a remote input (`http`) comes from: fetched into the repository before its task
    /// starts, after which `key`, `hash` and `size` describe the fetched content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// For an `http` or `artifactory` input: its headers and the Secrets its credentials are in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpSource>,
}

/// How an `http` or `artifactory` artifact is reached beyond its URL: its headers, and the
/// Secrets (names and keys, never values) that hold its credentials, as the workflow gave them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpSource {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
    /// An http artifact's `auth` (`basicAuth`, `clientCert` or `oauth2`); an artifactory one's
    /// `usernameSecret`/`passwordSecret` as `basicAuth`.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub auth: serde_json::Value,
}

/// An `http` or `artifactory` artifact's credentials, read from the run's Secrets. Never
/// serialized.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpAccess {
    pub headers: Vec<(String, String)>,
    /// User name and password, sent as HTTP basic authentication.
    pub basic: Option<(String, String)>,
    /// A bearer token from this OAuth2 client-credentials grant.
    pub oauth2: Option<OAuth2>,
    /// A client certificate and its key, both PEM.
    pub client_cert: Option<(String, String)>,
}

/// An OAuth2 client-credentials grant (RFC 6749, 4.4), as Argo's `oauth2` auth describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OAuth2 {
    pub token_url: String,
    pub client_id: String,
    pub client_secret: String,
    pub scopes: Vec<String>,
    pub params: Vec<(String, String)>,
}

/// How to reach a remote input or an output's destination, credentials included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    S3(S3Access),
    Http(HttpAccess),
}

/// An output artifact to send to an `http` or `artifactory` URL (a PUT of the stored bytes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpTarget {
    pub url: String,
    pub access: HttpAccess,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputArtifact {
    pub name: String,
    pub path: String,
    pub source: ArtifactRef,
    pub mode: Option<u32>,
}

/// How to reach an S3-compatible store: its endpoint and the credentials from a Secret. Never
/// serialized: credentials stay out of the event log and every document.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3Access {
    /// `host:port` or a URL; AWS when absent.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// Plain http.
    pub insecure: bool,
    pub access_key: Option<String>,
    pub secret_key: Option<String>,
}

/// An output artifact to upload to an S3-compatible store once stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3Target {
    pub bucket: String,
    pub key: String,
    pub access: S3Access,
    /// The location's query (`endpoint=…&access=SECRET/KEY…`: names, never values), kept in
    /// the artifact's URL so the object can be reached again (`artifactGC`).
    pub query: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputParam {
    pub name: String,
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputArtifact {
    pub name: String,
    pub path: String,
    pub optional: bool,
    pub archive: bool,
    /// A key-only artifact (`s3: {key}` with no bucket): stored under this key of the default
    /// repository instead of the run's own place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// An `s3` artifact with a bucket: uploaded there too.
    #[serde(skip)]
    pub s3: Option<S3Target>,
    /// An `http` or `artifactory` artifact: sent there too.
    #[serde(skip)]
    pub http: Option<HttpTarget>,
    /// The archive's compression and level (`zstd` or `gzip`); tar+gzip, fast, without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<(String, i32)>,
}

/// Where a volume's files live on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum VolumeSource {
    /// `emptyDir`: a fresh directory for this task only.
    Empty,
    /// A `volumeClaimTemplates` volume: one directory per run, shared by its tasks.
    Run(String),
    /// An existing `persistentVolumeClaim`: one directory per claim, shared across runs.
    Claim(String),
    /// `hostPath`: that host directory.
    Host(String),
    /// A `configMap` or `secret` volume: these files (name, content).
    Files(Vec<(String, String)>),
}

/// A `volumeMount` of a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    pub name: String,
    pub source: VolumeSource,
    pub path: String,
    pub sub_path: Option<String>,
    pub read_only: bool,
}

/// Resource requests used as admission limits.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requests {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub gpus: u32,
}

/// What an executor needs to run one task.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSpec {
    pub run: String,
    pub node_id: String,
    pub node_name: String,
    pub image: Option<String>,
    pub command: Vec<String>,
    pub args: Vec<String>,
    /// Script templates: the program text, passed to `command` as a file.
    pub source: Option<String>,
    pub env: Vec<(String, String)>,
    /// Values that must never appear in logs (from Secrets).
    pub secrets: Vec<String>,
    pub working_dir: Option<String>,
    pub inputs: Vec<InputArtifact>,
    pub output_parameters: Vec<OutputParam>,
    pub output_artifacts: Vec<OutputArtifact>,
    pub requests: Requests,
    /// `resources.limits`: what a container may use at most (the Docker executor applies the
    /// CPU and memory limits; 0: none).
    #[serde(default)]
    pub limits: Requests,
    #[serde(default)]
    pub mounts: Vec<Mount>,
    /// A daemon keeps running once ready, until the scope that started it ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daemon: Option<Daemon>,
    /// Processes started before the task and killed when it exits (`sidecars`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sidecars: Vec<Sidecar>,
    /// Run one after another to completion before the task (`initContainers`); one that fails
    /// fails the task.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub init_containers: Vec<Sidecar>,
    /// An `http` template: this request instead of a process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpRequest>,
    /// A `data` template: list the artifact keys under a prefix and transform the list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<DataTask>,
    /// A `resource` template creating a `Workflow`: that workflow, run as a child run by
    /// another weir process on the same database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub child: Option<ChildRun>,
    /// `nodeSelector`: the labels a worker must have to run the task (`weir worker --labels`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// When the image is pulled (Kubernetes' rules, the default resolved).
    #[serde(default)]
    pub pull_policy: PullPolicy,
    /// Registry credentials from the workflow's `imagePullSecrets`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub registry_auths: Vec<RegistryAuth>,
    /// The container's `securityContext` (only an executor of containers applies it).
    #[serde(default, skip_serializing_if = "Security::is_empty")]
    pub security: Security,
    /// The executor its template asks for (`weir.dev/executor` in its metadata's
    /// annotations); none: the run's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor: Option<ExecutorKind>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildRun {
    /// The Workflow document, `{{…}}` resolved.
    pub manifest: String,
    /// The parent's templates, ConfigMaps and Secrets (JSON documents, one per line), for
    /// the child's `--with`.
    pub library: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataTask {
    /// Key prefix in the artifact repository (`artifactPaths` with `s3: {key}`).
    pub prefix: String,
    /// expr expressions, each over `data` (the list so far).
    pub transformations: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpRequest {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub timeout_ms: u64,
    /// `insecureSkipVerify`: accept any TLS certificate.
    #[serde(default)]
    pub insecure: bool,
}

/// What an `http` task got back (its body is the result's `stdout`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

/// How the executor decides a daemon is ready (`readinessProbe`); none: as soon as it runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Daemon {
    pub probe: Option<Probe>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    pub check: ProbeCheck,
    pub initial_delay_ms: u64,
    pub period_ms: u64,
}

/// A readiness check, run on this host (network probes go to 127.0.0.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProbeCheck {
    /// Ready when the command exits 0.
    Exec(Vec<String>),
    /// Ready when `GET path` answers 200–399.
    Http { port: u16, path: String },
    /// Ready when the port accepts a connection.
    Tcp { port: u16 },
}

/// A sidecar or init container, as a process beside (or before) the task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sidecar {
    pub name: String,
    /// Its own image (an executor of containers runs it; none: the task's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Its own `volumeMounts` (the task's with `mirrorVolumeMounts`); an executor of
    /// containers mounts them (the local executor shares the task's view of the files).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<Mount>,
}

/// One value a task reported: a JSON line in `$WEIR_METRICS`, or a `::weir-metric` line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricPoint {
    pub name: String,
    /// Finite (NaN and infinities are refused where reports are read).
    pub value: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<i64>,
}

// values are finite, so equality is reflexive
impl Eq for MetricPoint {}

/// What came back from a task.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskResult {
    pub exit_code: Option<i32>,
    /// Last 256 KiB of stdout, trailing newline trimmed.
    pub stdout: String,
    /// Output parameters read from their paths (`None`: the file was missing).
    pub parameters: Vec<(String, Option<String>)>,
    pub artifacts: Vec<ArtifactRef>,
    /// Non-optional output artifacts whose path did not exist.
    pub missing_artifacts: Vec<String>,
    /// The executor could not run the task (it never started, or it was lost).
    pub error: Option<String>,
    /// An `http` task's status and headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpResponse>,
    /// Metrics the task reported, in the order reported.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<MetricPoint>,
    /// Why the task's process ended, where its executor knows more than the exit code: a
    /// container killed over its memory limit is `OOMKilled` (its node's message says so, as
    /// Argo's does: `OOMKilled (exit code 137)`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The container it ran in, where an executor of containers ran it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<Box<ContainerRun>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Timer {
    /// The workflow's `activeDeadlineSeconds`.
    Deadline,
    /// A pod's `timeout` / `activeDeadlineSeconds`.
    PodTimeout(String),
    /// The wait before the next retry attempt.
    Backoff(String),
    /// A suspend template's `duration`.
    Resume(String),
}

/// Inputs to the state machine. Stored in this form, so the set is closed and versioned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Event {
    /// The executor started the task's process.
    Started {
        node: String,
        pid: u32,
    },
    /// The task's process ended (or never started: `result.error`).
    Finished {
        node: String,
        result: TaskResult,
    },
    TimerFired {
        timer: Timer,
    },
    /// Stop: stop running tasks, run exit handlers, fail the run.
    Stop,
    /// Terminate: stop running tasks, no exit handlers.
    Terminate,
    Suspend,
    /// Resume a suspended run and its suspend nodes; optional values for `supplied` outputs.
    Resume {
        parameters: Vec<(String, String)>,
        /// Only the suspend nodes this Argo node field selector picks
        /// (`displayName=approve,inputs.parameters.tag.value=x`); without it, the run and all
        /// its suspend nodes.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        selector: Option<String>,
    },
    /// The process of a running task was lost (the engine stopped while it ran).
    Lost {
        node: String,
    },
    /// Retry from failure: failed nodes and their dependents run again, succeeded ones are kept.
    Retry,
    /// A daemon task passed its readiness probe (or started, without one).
    Ready {
        node: String,
    },
    /// The answer to `Action::Fetch`: each remote input of the node, fetched into the
    /// repository (in the order asked), or why it could not be.
    Fetched {
        node: String,
        results: Vec<Result<ArtifactRef, String>>,
    },
    /// The answer to `Action::Acquire`: `holder` holds its locks, or (`error`) never can.
    Acquired {
        holder: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// The answer to `Action::Lookup`: the cached outputs of a memoized node, if any.
    Cached {
        node: String,
        outputs: Option<NodeOutputs>,
        /// The run the outputs were first produced by (step caching).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StopReason {
    Stopped,
    Terminated,
    Timeout,
    Deadline,
}

/// Outputs of the state machine, performed by the driver after the event is persisted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Action {
    Start(Box<TaskSpec>),
    Stop {
        node: String,
        reason: StopReason,
    },
    Arm {
        timer: Timer,
        at: Millis,
    },
    /// Fetch a node's remote inputs into the repository; answer with `Event::Fetched`.
    Fetch {
        node: String,
        sources: Vec<ArtifactRef>,
        /// For each source on an S3-compatible store or behind credentials, how to reach it.
        #[serde(skip)]
        access: Vec<Option<Access>>,
    },
    /// Look up a memoized node's outputs; answer with `Event::Cached`.
    Lookup {
        node: String,
        cache: String,
        key: String,
        max_age_ms: Option<i64>,
        /// Step caching: the image the task would run in (an executor of containers binds the
        /// key to its content id).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        image: Option<ImageAsk>,
    },
    /// Remember a memoized node's outputs.
    Memoize {
        cache: String,
        key: String,
        outputs: NodeOutputs,
    },
    /// Ask for locks (`synchronization`) for `holder`: a node id, or the run's name for the
    /// whole workflow; answer with `Event::Acquired` once all are held (asking again is
    /// harmless: the store keeps one place per holder and lock).
    Acquire {
        holder: String,
        locks: Vec<Lock>,
        priority: i64,
    },
    /// Give back (or stop waiting for) what `holder` asked for.
    Release {
        holder: String,
    },
    /// Record a metric sample (`metrics.prometheus`).
    Metric(Box<Metric>),
    /// The run reached a final phase.
    Finished {
        phase: Phase,
    },
}

/// What a run's spec asks to have removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cleanup {
    /// Delete the run this long after it finished (`ttlStrategy`, for its final phase).
    pub ttl_ms: Option<i64>,
    pub pod_gc: PodGc,
    /// Keys of the run's artifacts to delete now that it finished (`artifactGC:
    /// OnWorkflowCompletion`, the workflow's or the artifact's own).
    pub artifacts_at_completion: Vec<String>,
}

/// `podGC`: when a task's work directory (its "pod") is removed; its log is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodGc {
    Keep,
    OnPodCompletion,
    OnPodSuccess,
    OnWorkflowCompletion,
    OnWorkflowSuccess,
}

/// A lock a template or workflow needs before it starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    /// `NAMESPACE/Mutex/NAME`, `NAMESPACE/ConfigMap/CM/KEY` or `NAMESPACE/Database/…`.
    pub key: String,
    /// How many may hold it at once; `None` for a database semaphore, whose limit the store keeps.
    pub limit: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeOutputs {
    pub parameters: Vec<(String, String)>,
    pub artifacts: Vec<ArtifactRef>,
    pub result: Option<String>,
    pub exit_code: Option<i32>,
    /// Metrics the task reported (experiment tracking).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<MetricPoint>,
    /// The container that produced them (reused with them from the step cache).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<Box<ContainerRun>>,
}

/// One node of the run tree (public view).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub id: String,
    pub name: String,
    pub display_name: String,
    pub node_type: NodeType,
    pub template: String,
    pub phase: Phase,
    pub message: String,
    pub started_at: Option<Millis>,
    pub finished_at: Option<Millis>,
    pub parent: Option<usize>,
    pub children: Vec<usize>,
    pub inputs: Vec<(String, String)>,
    pub input_artifacts: Vec<ArtifactRef>,
    pub outputs: NodeOutputs,
    pub pid: Option<u32>,
    /// Retry attempt number (pods under a retry node).
    pub attempt: u32,
    /// Set on exit-handler nodes: the node (or `None` for the workflow) they run for.
    pub hook_for: Option<usize>,
    /// Step caching: the node's content key (its resolved task and the digests of its inputs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_key: Option<String>,
    /// Step caching: the run whose outputs this node reused instead of running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_from: Option<String>,
}

/// A validation problem, located by field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

pub struct Run {
    sub: Arc<Submission>,
    nodes: Vec<Node>,
    rt: Vec<engine::Rt>,
    /// node id (by [`id_key`]) → index. Keyed by a hash, not the string: a lookup then reads
    /// no heap-allocated key, one cache miss fewer per event on a large run. Two ids with the same
    /// key cannot both exist: `new_node` derives another id, as for any collision.
    by_id: IdMap,
    globals: BTreeMap<String, String>,
    phase: Phase,
    message: String,
    started_at: Millis,
    finished_at: Option<Millis>,
    /// Pods ready to start but held by workflow parallelism or suspension.
    waiting: VecDeque<usize>,
    active_pods: usize,
    suspended: bool,
    stopping: Option<StopReason>,
    timers: BTreeMap<Timer, Millis>,
    /// Nodes that finished and whose parent has not been told yet.
    done: VecDeque<usize>,
    actions: Vec<Action>,
    now: Millis,
    root: Option<usize>,
    exit_node: Option<usize>,
    /// Succeeded pods of an earlier attempt of this run, reused by retry-from-failure.
    reuse: HashMap<String, Node>,
    templates: Arc<engine::Library>,
    meta: Vec<engine::Meta>,
    /// The template each node runs, to find its outputs spec.
    node_tmpl: Vec<Arc<Template>>,
    /// `workflow.outputs.artifacts.X` published by `globalName`.
    global_arts: BTreeMap<String, ArtifactRef>,
    /// Node indices in the order they finished, so observers can follow without scanning.
    finished_order: Vec<usize>,
    /// A memoized node that missed its cache: the next node created takes its place.
    slot: Option<usize>,
    /// Set while a node whose locks were just granted runs its template: it must not ask again.
    lock_granted: bool,
    /// The entrypoint call, held until the workflow-level locks are granted.
    wf_lock: Option<Box<engine::LockRt>>,
    /// Daemons still running: (the scope whose end stops them, or `None` for the run; node).
    daemons: Vec<(Option<usize>, usize)>,
    /// Lifecycle hooks not yet run: (the step they belong to, or `None` for the workflow).
    pending_hooks: Vec<(Option<usize>, engine::LifecycleRt)>,
    /// Lifecycle hook nodes not yet finished; the run ends after them.
    hooks_active: usize,
    /// The run is done but for its running hooks.
    finish_waiting: bool,
    /// Templates being executed within one another right now (see `Limits::max_depth`).
    depth: usize,
    limits: crate::limits::Limits,
    /// The run's labels and annotations: the submission's, with `workflowMetadata` applied.
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
}

impl Run {
    /// Validates a submission and starts it. Problems are returned all at once.
    pub fn start(sub: Submission) -> Result<(Run, Vec<Action>), Vec<Problem>> {
        Run::start_with(sub, crate::limits::Limits::default())
    }

    /// [`Run::start`] held to other `limits`.
    pub fn start_with(
        sub: Submission,
        limits: crate::limits::Limits,
    ) -> Result<(Run, Vec<Action>), Vec<Problem>> {
        let library = Library::build(&sub)?;
        let problems = validate::validate(&sub, &library, false);
        if !problems.is_empty() {
            return Err(problems);
        }
        let mut run = Run::empty(Arc::new(sub), Arc::new(library), HashMap::new());
        run.limits = limits;
        run.begin();
        // a limit hit before any task ran is a property of the submission: refused, not stored
        run.limit_problems()?;
        let actions = std::mem::take(&mut run.actions);
        Ok((run, actions))
    }

    /// Checks a WorkflowTemplate on its own, as Argo does when one is created: like
    /// [`Run::start`]'s checks, except that it may lack an `entrypoint` and its entrypoint's
    /// inputs may be left to whoever submits it.
    pub fn check_template(sub: &Submission) -> Vec<Problem> {
        match Library::build(sub) {
            Ok(library) => validate::validate(sub, &library, true),
            Err(problems) => problems,
        }
    }

    /// A limit the run hit while it began (see `Run::start`), as a problem.
    fn limit_problems(&self) -> Result<(), Vec<Problem>> {
        match self
            .nodes
            .iter()
            .find(|n| n.phase == Phase::Error && crate::limits::is_exceeded(&n.message))
        {
            Some(n) => Err(vec![Problem {
                path: "spec".into(),
                message: format!("{}: {}", n.display_name, n.message),
            }]),
            None => Ok(()),
        }
    }

    /// Rebuilds a run's state from its submission and stored events. A submission that hits a
    /// limit as it begins (stored by an older weir, or written behind its back) is refused as
    /// `Run::start` would have refused it.
    pub fn replay(sub: Submission, events: &[(Millis, Event)]) -> Result<Run, Vec<Problem>> {
        let library = Library::build(&sub)?;
        let mut run = Run::empty(Arc::new(sub), Arc::new(library), HashMap::new());
        run.begin();
        run.limit_problems()?;
        run.actions.clear();
        for (at, ev) in events {
            run.step(ev.clone(), *at);
        }
        Ok(run)
    }

    fn empty(
        sub: Arc<Submission>,
        templates: Arc<engine::Library>,
        reuse: HashMap<String, Node>,
    ) -> Run {
        let now = sub.created_at;
        Run {
            sub,
            nodes: Vec::new(),
            rt: Vec::new(),
            by_id: IdMap::default(),
            globals: BTreeMap::new(),
            phase: Phase::Running,
            message: String::new(),
            started_at: now,
            finished_at: None,
            waiting: VecDeque::new(),
            active_pods: 0,
            suspended: false,
            stopping: None,
            timers: BTreeMap::new(),
            done: VecDeque::new(),
            actions: Vec::new(),
            now,
            root: None,
            exit_node: None,
            reuse,
            templates,
            meta: Vec::new(),
            node_tmpl: Vec::new(),
            global_arts: BTreeMap::new(),
            finished_order: Vec::new(),
            slot: None,
            lock_granted: false,
            wf_lock: None,
            daemons: Vec::new(),
            pending_hooks: Vec::new(),
            hooks_active: 0,
            finish_waiting: false,
            depth: 0,
            limits: crate::limits::Limits::default(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
        }
    }

    /// Applies one event at time `now` and returns what the driver must do.
    pub fn step(&mut self, event: Event, now: Millis) -> Vec<Action> {
        self.now = now.max(self.now);
        self.apply(event);
        self.drain();
        if !self.pending_hooks.is_empty() {
            self.fire_hooks();
            self.drain();
        }
        std::mem::take(&mut self.actions)
    }

    pub fn submission(&self) -> &Submission {
        &self.sub
    }
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }
    pub fn node_by_id(&self, id: &str) -> Option<&Node> {
        self.by_id.get(&id_key(id)).map(|&i| &self.nodes[i])
    }
    /// Indices of finished nodes, in the order they finished.
    pub fn finished_order(&self) -> &[usize] {
        &self.finished_order
    }
    pub fn phase(&self) -> Phase {
        self.phase
    }
    /// Labels, with `workflowMetadata.labels` and `labelsFrom` applied.
    pub fn labels(&self) -> &BTreeMap<String, String> {
        &self.labels
    }
    pub fn annotations(&self) -> &BTreeMap<String, String> {
        &self.annotations
    }
    pub fn message(&self) -> &str {
        &self.message
    }
    pub fn started_at(&self) -> Millis {
        self.started_at
    }
    pub fn finished_at(&self) -> Option<Millis> {
        self.finished_at
    }
    pub fn is_suspended(&self) -> bool {
        self.suspended
            || self
                .nodes
                .iter()
                .any(|n| n.node_type == NodeType::Suspend && n.phase == Phase::Running)
    }
    /// Workflow outputs (`globalName` parameters) and parameters, for display.
    pub fn globals(&self) -> &BTreeMap<String, String> {
        &self.globals
    }
    /// Values that must be masked wherever this run's output is shown.
    /// Every value of every Secret of the submission, with its lines and common encodings
    /// (`mask::forms`), longest first.
    pub fn secret_values(&self) -> Vec<String> {
        self.templates.mask.clone()
    }

    /// How to reach the S3-compatible store an artifact URL names (credentials from the run's
    /// Secrets).
    pub fn s3_access(&self, url: &str) -> Result<S3Access, String> {
        self.s3_access_of_url(url)
    }

    /// After a restart: the actions that were in flight. Pods already dispatched are started
    /// again unless they had a process (those get `Event::Lost` from the driver); timers re-armed.
    pub fn recovery_actions(&self) -> Vec<Action> {
        let mut out = Vec::new();
        for (i, rt) in self.rt.iter().enumerate() {
            if let engine::Rt::Pod {
                spec,
                dispatched: true,
            } = rt
                && self.nodes[i].phase == Phase::Pending
            {
                out.push(Action::Start(spec.clone()));
            }
        }
        for (i, rt) in self.rt.iter().enumerate() {
            if let engine::Rt::Memo(m) = rt
                && self.nodes[i].phase == Phase::Pending
            {
                out.push(m.lookup(&self.nodes[i].id));
            }
        }
        // pods still waiting for their remote inputs or step-cache answer ask again
        for (i, m) in self.meta.iter().enumerate() {
            if m.fetch_wait
                && self.nodes[i].phase == Phase::Pending
                && let engine::Rt::Pod { spec, .. } = &self.rt[i]
            {
                out.push(self.fetch_action(i, spec));
            }
        }
        for (i, m) in self.meta.iter().enumerate() {
            if m.cache_wait
                && self.nodes[i].phase == Phase::Pending
                && let Some(key) = &self.nodes[i].cache_key
            {
                out.push(Action::Lookup {
                    node: self.nodes[i].id.clone(),
                    cache: STEP_CACHE.into(),
                    key: key.clone(),
                    max_age_ms: None,
                    image: match &self.rt[i] {
                        engine::Rt::Pod { spec, .. } => ImageAsk::of(spec),
                        _ => None,
                    },
                });
            }
        }
        for (i, rt) in self.rt.iter().enumerate() {
            if let engine::Rt::Lock(l) = rt
                && self.nodes[i].phase == Phase::Pending
            {
                out.push(l.acquire(&self.nodes[i].id));
            }
        }
        if let Some(l) = &self.wf_lock {
            out.push(l.acquire(&self.sub.name));
        }
        for (t, at) in &self.timers {
            out.push(Action::Arm {
                timer: t.clone(),
                at: *at,
            });
        }
        out
    }

    /// What to clean up, and when (`ttlStrategy`, `podGC`, `artifactGC`), for the driver.
    pub fn cleanup(&self) -> Cleanup {
        let spec = &self.templates.spec;
        let secs = |k: &str| {
            spec.ttl_strategy
                .as_ref()
                .and_then(|t| t.get(k))
                .and_then(|v| v.as_i64())
        };
        let ttl_ms = match self.phase {
            Phase::Succeeded => secs("secondsAfterSuccess"),
            Phase::Failed | Phase::Error => secs("secondsAfterFailure"),
            _ => None,
        }
        .or_else(|| secs("secondsAfterCompletion"))
        .filter(|_| self.phase.is_done())
        .map(|s| s.clamp(0, crate::limits::MAX_DURATION_MS / 1000) * 1000);
        let strategy = |v: &Option<serde_json::Value>| {
            v.as_ref()
                .and_then(|x| x.get("strategy"))
                .and_then(|x| x.as_str())
                .unwrap_or_default()
                .to_string()
        };
        let pod_gc = match strategy(&spec.pod_gc).as_str() {
            "OnPodCompletion" => PodGc::OnPodCompletion,
            "OnPodSuccess" => PodGc::OnPodSuccess,
            "OnWorkflowCompletion" => PodGc::OnWorkflowCompletion,
            "OnWorkflowSuccess" => PodGc::OnWorkflowSuccess,
            _ => PodGc::Keep,
        };
        let default_gc = strategy(&spec.artifact_gc);
        let mut keys: Vec<String> = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            for r in n.outputs.artifacts.iter().filter(|r| !r.key.is_empty()) {
                let own = self.node_tmpl[i]
                    .outputs
                    .artifacts
                    .iter()
                    .find(|a| a.name == r.name)
                    .map(|a| strategy(&a.artifact_gc))
                    .filter(|s| !s.is_empty());
                if own.as_deref().unwrap_or(&default_gc) == "OnWorkflowCompletion"
                    && !keys.contains(&r.key)
                {
                    keys.push(r.key.clone());
                }
            }
        }
        Cleanup {
            ttl_ms,
            pod_gc,
            artifacts_at_completion: if self.phase.is_done() {
                keys
            } else {
                Vec::new()
            },
        }
    }

    /// Pods that were running (had a process) when the state was last persisted.
    pub fn running_pods(&self) -> Vec<(String, Option<u32>)> {
        let daemons = self.daemons.iter().map(|&(_, d)| &self.nodes[d]);
        self.nodes
            .iter()
            .filter(|n| n.node_type == NodeType::Pod && n.phase == Phase::Running)
            .chain(daemons)
            .map(|n| (n.id.clone(), n.pid))
            .collect()
    }
}

/// A stable 64-bit key for a node id (FNV-1a, then murmur3's finalizer to spread the bits that
/// the hash table uses). Stable across versions: replays derive the same ids.
pub(crate) fn id_key(id: &str) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in id.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51afd7ed558ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ceb9fe1a85ec53);
    h ^ (h >> 33)
}

/// Node id key → node index: open addressing with linear probing in one array, so a lookup
/// on a large run costs one cache miss (a general hash map keeps control bytes and entries
/// apart, and a string-keyed one also reads the key's heap buffer).
#[derive(Debug, Clone, Default)]
pub(crate) struct IdMap {
    /// (key, index); key 0 marks an empty slot. Length 0 or a power of two.
    slots: Vec<(u64, usize)>,
    len: usize,
}

impl IdMap {
    fn slot_key(key: u64) -> u64 {
        key.max(1)
    }

    fn find(&self, key: u64) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.slots.len() - 1;
        let mut at = key as usize & mask;
        loop {
            match self.slots[at].0 {
                0 => return None,
                k if k == key => return Some(at),
                _ => at = (at + 1) & mask,
            }
        }
    }

    pub(crate) fn get(&self, key: &u64) -> Option<&usize> {
        let key = Self::slot_key(*key);
        self.find(key).map(|at| &self.slots[at].1)
    }

    pub(crate) fn contains_key(&self, key: &u64) -> bool {
        self.get(key).is_some()
    }

    pub(crate) fn insert(&mut self, key: u64, index: usize) {
        let key = Self::slot_key(key);
        if let Some(at) = self.find(key) {
            self.slots[at].1 = index;
            return;
        }
        if (self.len + 1) * 2 > self.slots.len() {
            let size = (self.slots.len() * 2).max(16);
            let old = std::mem::replace(&mut self.slots, vec![(0, 0); size]);
            self.len = 0;
            for (k, i) in old.into_iter().filter(|(k, _)| *k != 0) {
                self.put(k, i);
            }
        }
        self.put(key, index);
    }

    /// Puts a key known to be absent, with room to spare.
    fn put(&mut self, key: u64, index: usize) {
        let mask = self.slots.len() - 1;
        let mut at = key as usize & mask;
        while self.slots[at].0 != 0 {
            at = (at + 1) & mask;
        }
        self.slots[at] = (key, index);
        self.len += 1;
    }
}

/// A node id derived from the node name (Argo uses the same scheme: name + FNV-1a hash).
pub fn node_id(run: &str, name: &str) -> String {
    if name == run {
        return run.to_string();
    }
    // 64-bit FNV-1a: Argo's 32 bits collide once in about a hundred 10,000-node runs.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in name.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{run}-{}", h % 10_000_000_000_000)
}
