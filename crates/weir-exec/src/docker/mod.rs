//! The Docker executor: each task a container of its own image, through the Docker Engine API
//! (bollard) on the local socket or `DOCKER_HOST`. Kubernetes' container semantics: `command`
//! replaces the image's entrypoint and `args` its cmd, so a template naming neither runs the
//! image's own entrypoint; a script is uploaded to `/argo/staging/script` (Argo's path) and run
//! by its `command`. Inputs are uploaded into the created container before it starts; output
//! parameters and artifacts are copied out of the stopped container, which is then removed.
//! Every container carries the labels `weir.run` and `weir.node`. Containers have no network
//! unless the executor is given one.
//!
//! `resources.limits` become the container's memory limit (no swap beyond it) and CPU quota;
//! a container killed over its memory limit ends `OOMKilled`.
//!
//! Volumes are bind mounts of the host directories the local executor would use (see
//! [`crate::volumes`]), so the Docker daemon must be this host's.
//!
//! Init containers and sidecars are containers of their own beside the task's (`beside.rs`).
//! Not run here yet, and refused by name: daemons (with no network, nothing could reach
//! one); `http`, `data` and `resource` templates run no image and go to the host
//! ([`crate::Routed`]).

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, CreateImageOptionsBuilder,
    DownloadFromContainerOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    StopContainerOptionsBuilder, UploadToContainerOptionsBuilder,
};
use futures_util::StreamExt;
use weir_core::run::{Access, ArtifactRef, ContainerRun, PullPolicy, TaskResult, TaskSpec};

mod beside;

use crate::admission::Capacity;
use crate::repo::LocalRepo;
use crate::shared::{LazyLog, Stdout, emit, lock};
use crate::{Executor, Update, artifacts, outputs};

/// Where Argo puts a script template's source in the container.
const SCRIPT_PATH: &str = "/argo/staging/script";

/// How long the `oom` event of a container killed by SIGKILL is waited for after its exit (a
/// container killed otherwise, `docker kill` say, waits this long once).
const OOM_EVENT_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

#[derive(Clone)]
pub struct DockerConfig {
    /// Per-run work directories and logs live under `work_root/<run>/`, as with the local
    /// executor.
    pub work_root: PathBuf,
    pub repo: LocalRepo,
    /// How many containers run at once (`max_tasks`).
    pub capacity: Capacity,
    /// Send each output line as [`Update::Log`].
    pub stream_logs: bool,
    /// The Docker network containers join; none: no network at all (`--network none`).
    pub network: Option<String>,
    /// Leave containers in place after they end (for debugging).
    pub keep_containers: bool,
    /// The host directories `hostPath` volumes may name (and what is below them); None: any,
    /// as for a user's own `weir run`, who can run any container on that Docker host anyway.
    pub host_paths: Option<Vec<PathBuf>>,
    /// Whether a container may be `privileged` (else one asking is refused).
    pub privileged: bool,
}

pub struct DockerExecutor {
    inner: Arc<Inner>,
    rt: tokio::runtime::Runtime,
}

struct Inner {
    cfg: DockerConfig,
    docker: Docker,
    tx: Mutex<Sender<Update>>,
    /// node → its container, while it exists
    running: Mutex<HashMap<String, String>>,
    stopped: Mutex<HashSet<String>>,
    slots: tokio::sync::Semaphore,
    /// Tasks started and not yet reported: shutdown waits for them, so that each container is
    /// removed (a dropped runtime would abandon them half-way).
    in_flight: std::sync::atomic::AtomicUsize,
    settled: tokio::sync::Notify,
}

impl DockerExecutor {
    /// Connects to the Docker daemon (`DOCKER_HOST`, else the local socket) and checks that
    /// it answers.
    pub fn new(cfg: DockerConfig, tx: Sender<Update>) -> Result<DockerExecutor, String> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("weir-docker")
            .enable_all()
            .build()
            .map_err(|e| format!("starting the Docker executor's runtime: {e}"))?;
        // a container runs as long as its task: no request of ours times out on its own
        let docker = Docker::connect_with_local_defaults()
            .map_err(|e| format!("connecting to the Docker daemon: {e}"))?
            .with_timeout(std::time::Duration::from_secs(365 * 24 * 3600));
        let at =
            std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into());
        rt.block_on(docker.ping())
            .map_err(|e| format!("the Docker daemon at {at} does not answer: {e}"))?;
        let slots = tokio::sync::Semaphore::new(cfg.capacity.max_tasks.max(1));
        Ok(DockerExecutor {
            inner: Arc::new(Inner {
                cfg,
                docker,
                tx: Mutex::new(tx),
                running: Mutex::new(HashMap::new()),
                stopped: Mutex::new(HashSet::new()),
                slots,
                in_flight: std::sync::atomic::AtomicUsize::new(0),
                settled: tokio::sync::Notify::new(),
            }),
            rt,
        })
    }
}

impl Executor for DockerExecutor {
    fn start(&self, task: TaskSpec) {
        let me = self.inner.clone();
        me.in_flight.fetch_add(1, Ordering::SeqCst);
        self.rt.spawn(async move {
            let node = task.node_id.clone();
            let result = match me.slots.acquire().await {
                Ok(_permit) => me.run(task).await,
                Err(_) => Err("the Docker executor is shutting down".into()),
            };
            me.report(node, result);
        });
    }

    fn adopt(&self, run: &str, node: &str) -> bool {
        let me = self.inner.clone();
        let Some((task, id, running)) = self.rt.block_on(me.adopt(run, node)) else {
            return false;
        };
        me.in_flight.fetch_add(1, Ordering::SeqCst);
        lock(&me.running).insert(node.to_string(), id.clone());
        self.rt.spawn(async move {
            let node = task.node_id.clone();
            let run_dir = crate::paths::within(&me.cfg.work_root, &task.run);
            let result = match &run_dir {
                Ok(run_dir) => {
                    let work = crate::paths::within(&run_dir.join("work"), &node)
                        .unwrap_or_else(|_| run_dir.join("work"));
                    // the log is read again whole, from the container's start
                    let log = crate::ProcessExecutor::log_path(&me.cfg.work_root, &task.run, &node);
                    let _ = std::fs::remove_file(&log);
                    let since = since_of(&record_path(run_dir, &node));
                    let output = me.output_of(&id, running).await;
                    let r = me.follow(&task, &id, &work, since, output).await;
                    me.settle(&task, &record_path(run_dir, &node)).await;
                    r
                }
                Err(e) => Err(e.to_string()),
            };
            me.report(node, result);
        });
        true
    }

    fn image_id(&self, ask: &weir_core::run::ImageAsk) -> Option<Option<String>> {
        let found = self
            .rt
            .block_on(self.inner.docker.inspect_image(&ask.image));
        Some(found.ok().and_then(|i| i.id))
    }

    fn fetch(&self, node: &str, sources: Vec<ArtifactRef>, access: Vec<Option<Access>>) {
        let me = self.inner.clone();
        let node = node.to_string();
        self.rt.spawn_blocking(move || {
            let results = outputs::fetch(&me.cfg.repo, &sources, &access);
            me.send(Update::Fetched { node, results });
        });
    }

    fn stop(&self, node: &str) {
        lock(&self.inner.stopped).insert(node.to_string());
        if let Some(id) = lock(&self.inner.running).get(node).cloned() {
            let me = self.inner.clone();
            self.rt.spawn(async move { me.stop_container(&id).await });
        }
    }

    fn shutdown(&self) {
        // nothing queued starts any more; what runs is stopped and waited for (its container
        // removed), for as long as a container's grace period and a little more
        self.inner.slots.close();
        let ids: Vec<String> = lock(&self.inner.running).values().cloned().collect();
        let me = self.inner.clone();
        self.rt.block_on(async move {
            for id in ids {
                me.stop_container(&id).await;
            }
            let all_settled = async {
                loop {
                    let settled = me.settled.notified();
                    if me.in_flight.load(Ordering::SeqCst) == 0 {
                        break;
                    }
                    settled.await;
                }
            };
            let _ = tokio::time::timeout(std::time::Duration::from_secs(30), all_settled).await;
        });
    }
}

/// The registry an image reference names: its first part where that is a host (it has a
/// `.` or a `:`, or is `localhost`), else Docker Hub.
fn registry_of(image: &str) -> &str {
    match image.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            first
        }
        _ => "docker.io",
    }
}

/// The Unix time a second before the container's record was written (just before its start):
/// where its events are read from.
fn since_of(record: &Path) -> u64 {
    std::fs::metadata(record)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs().saturating_sub(1))
}

/// A container's output: both streams, framed.
type Frames = std::pin::Pin<
    Box<dyn futures_util::Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>,
>;

/// A container's record: `RUN_DIR/containers/NODE.json`, the container and the task it runs.
#[derive(serde::Serialize)]
struct RecordRef<'a> {
    id: &'a str,
    task: &'a TaskSpec,
}

#[derive(serde::Deserialize)]
struct Record {
    id: String,
    task: TaskSpec,
}

fn record_path(run_dir: &Path, node: &str) -> PathBuf {
    run_dir.join("containers").join(format!("{node}.json"))
}

/// Writes `bytes` to a new file only its owner reads (a task's environment may hold
/// secrets).
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(bytes))
        .map_err(|e| e.to_string())
}

/// A stream of output turned into lines.
#[derive(Default)]
struct Lines {
    partial: Vec<u8>,
}

impl Lines {
    fn push(&mut self, data: &[u8], mut line: impl FnMut(&[u8])) {
        let mut data = data;
        while let Some(nl) = data.iter().position(|&b| b == b'\n') {
            if self.partial.is_empty() {
                line(&data[..nl]);
            } else {
                self.partial.extend_from_slice(&data[..nl]);
                line(&self.partial);
                self.partial.clear();
            }
            data = &data[nl + 1..];
        }
        self.partial.extend_from_slice(data);
    }

    fn finish(&mut self, mut line: impl FnMut(&[u8])) {
        if !self.partial.is_empty() {
            line(&self.partial);
            self.partial.clear();
        }
    }
}

/// Where a container's output goes: the task's log (masked) and the driver, and from stdout
/// its result and metrics.
struct Output {
    node: String,
    secrets: Vec<String>,
    log: Mutex<LazyLog>,
    stream: Option<Sender<Update>>,
    stdout: Stdout,
}

impl Output {
    fn line(&mut self, line: &[u8], stdout: bool) {
        if stdout {
            self.stdout.line(line);
        }
        emit(line, "", &self.secrets, &self.log, &self.stream, &self.node);
    }
}

/// The container's entrypoint and cmd, as Kubernetes sets them from `command` and `args`:
/// `command` replaces the entrypoint (and the image's cmd with it), `args` the cmd.
fn entrypoint_and_cmd(task: &TaskSpec) -> (Option<Vec<String>>, Option<Vec<String>>) {
    let mut args = task.args.clone();
    if task.source.is_some() {
        args.push(SCRIPT_PATH.to_string());
    }
    match (task.command.is_empty(), args.is_empty()) {
        (false, _) => (Some(task.command.clone()), Some(args)),
        (true, false) => (None, Some(args)),
        (true, true) => (None, None),
    }
}

/// What the docker executor does not run yet, named.
fn unsupported(task: &TaskSpec) -> Option<&'static str> {
    if task.child.is_some() {
        Some("`resource` templates")
    } else if task.http.is_some() {
        Some("`http` templates")
    } else if task.data.is_some() {
        Some("`data` templates")
    } else if task.daemon.is_some() {
        Some("daemons")
    } else if task.requests.gpus > 0 || task.limits.gpus > 0 {
        Some("GPUs (`nvidia.com/gpu`)")
    } else {
        None
    }
}

/// The files a container gets before it starts, as (host path, path in the container): its
/// input artifacts (loaded from the repository into the task's work directory) and its script
/// (written there).
fn input_files(
    repo: &LocalRepo,
    task: &TaskSpec,
    work: &Path,
) -> Result<Vec<(PathBuf, String)>, String> {
    let mut files = Vec::new();
    for (k, a) in task.inputs.iter().enumerate() {
        let dest = work.join("inputs").join(k.to_string());
        artifacts::load(repo, &a.source, &dest, a.mode)?;
        files.push((dest, a.path.clone()));
    }
    if let Some(src) = &task.source {
        use std::os::unix::fs::PermissionsExt;
        let host = work.join("script");
        std::fs::write(&host, src).map_err(|e| format!("the script: {e}"))?;
        std::fs::set_permissions(&host, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("the script: {e}"))?;
        files.push((host, SCRIPT_PATH.to_string()));
    }
    Ok(files)
}

/// A tar archive of `files` at their paths in the container (relative to `/`), to be uploaded
/// into it before it starts; none if there are none.
fn inputs_tar(files: &[(PathBuf, String)]) -> Result<Option<Vec<u8>>, String> {
    if files.is_empty() {
        return Ok(None);
    }
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    for (host, path) in files {
        let rel = path.trim_start_matches('/');
        let r = if host.is_dir() {
            b.append_dir_all(rel, host)
        } else {
            b.append_path_with_name(host, rel)
        };
        r.map_err(|e| format!("input at {path}: {e}"))?;
    }
    b.into_inner().map(Some).map_err(|e| e.to_string())
}

/// A bind mount of `host` at `target`.
fn bind(host: &Path, target: &str, read_only: bool) -> Result<bollard::models::Mount, String> {
    let host = std::path::absolute(host).map_err(|e| e.to_string())?;
    Ok(bollard::models::Mount {
        target: Some(target.to_string()),
        source: Some(host.to_string_lossy().into_owned()),
        typ: Some(bollard::models::MountType::BIND),
        read_only: Some(read_only),
        ..Default::default()
    })
}

/// The container's `User`, per its `securityContext` over its image's user (`image_user`):
/// None where the image's stands. `Err`: `runAsNonRoot` and root, or an image user that is a
/// name (which cannot be known not to be root), in the kubelet's words.
fn user_of(task: &TaskSpec, image_user: &str) -> Result<Option<String>, String> {
    let sec = &task.security;
    let image_uid = image_user.split(':').next().unwrap_or_default();
    if sec.run_as_non_root {
        match sec.run_as_user {
            Some(0) => {
                return Err("container's runAsUser breaks non-root policy (securityContext.runAsNonRoot: true, runAsUser: 0)".into());
            }
            Some(_) => {}
            None => match image_uid.parse::<u32>() {
                _ if image_uid.is_empty() => {
                    return Err("container has runAsNonRoot and image will run as root (securityContext.runAsNonRoot: true; the image names no USER)".into());
                }
                Ok(0) => {
                    return Err("container has runAsNonRoot and image will run as root (securityContext.runAsNonRoot: true)".into());
                }
                Ok(_) => {}
                Err(_) => {
                    return Err(format!(
                        "container has runAsNonRoot and image has non-numeric user ({image_uid}), cannot verify user is non-root"
                    ));
                }
            },
        }
    }
    Ok(match (sec.run_as_user, sec.run_as_group) {
        (None, None) => None,
        (Some(u), None) => Some(u.to_string()),
        (u, Some(g)) => {
            let u = u.map_or_else(
                || {
                    if image_uid.is_empty() {
                        "0".to_string()
                    } else {
                        image_uid.to_string()
                    }
                },
                |u| u.to_string(),
            );
            Some(format!("{u}:{g}"))
        }
    })
}

/// Extracts what `download_from_container` returned for `path` into `into` (which it names
/// `into/BASENAME`); the host path of that file or directory.
fn unpack(tar_bytes: &[u8], into: &Path, path: &str) -> Result<PathBuf, String> {
    std::fs::create_dir_all(into).map_err(|e| format!("{}: {e}", into.display()))?;
    tar::Archive::new(tar_bytes)
        .unpack(into)
        .map_err(|e| format!("copying {path} out of the container: {e}"))?;
    let base = Path::new(path)
        .file_name()
        .ok_or_else(|| format!("{path}: not a file path"))?;
    Ok(into.join(base))
}

impl Inner {
    fn send(&self, u: Update) {
        let _ = lock(&self.tx).send(u);
    }

    /// SIGTERM, then SIGKILL after 10 s (the container's grace period).
    async fn stop_container(&self, id: &str) {
        let opts = StopContainerOptionsBuilder::default().t(10).build();
        let _ = self.docker.stop_container(id, Some(opts)).await;
    }

    /// The image, pulled per the task's `imagePullPolicy` (`IfNotPresent` unless it names
    /// another), with the credentials of `imagePullSecrets` for its registry.
    async fn ensure_image(&self, task: &TaskSpec, image: &str) -> Result<(), String> {
        let present = self.docker.inspect_image(image).await.is_ok();
        match task.pull_policy {
            PullPolicy::IfNotPresent if present => return Ok(()),
            PullPolicy::Never if present => return Ok(()),
            PullPolicy::Never => {
                return Err(format!(
                    "image `{image}` is not on this Docker host, and its imagePullPolicy is Never"
                ));
            }
            PullPolicy::Always | PullPolicy::IfNotPresent => {}
        }
        let registry = registry_of(image);
        let auth = task.registry_auths.iter().find(|a| {
            a.server == registry
                || (registry == "docker.io"
                    && matches!(
                        a.server.as_str(),
                        "index.docker.io" | "registry-1.docker.io"
                    ))
        });
        let credentials = auth.map(|a| bollard::auth::DockerCredentials {
            username: Some(a.username.clone()),
            password: Some(a.password.clone()),
            serveraddress: Some(a.server.clone()),
            ..Default::default()
        });
        let with = if auth.is_some() {
            "with the credentials of imagePullSecrets"
        } else {
            "without credentials (no imagePullSecrets entry for it)"
        };
        let opts = CreateImageOptionsBuilder::default()
            .from_image(image)
            .build();
        let mut pull = self.docker.create_image(Some(opts), None, credentials);
        while let Some(step) = pull.next().await {
            step.map_err(|e| {
                format!("image `{image}` cannot be pulled from {registry} {with}: {e}")
            })?;
        }
        Ok(())
    }

    /// Copies `path` out of the stopped container: the tar archive of it, or None where it
    /// does not exist.
    async fn download(&self, id: &str, path: &str) -> Result<Option<Vec<u8>>, String> {
        let opts = DownloadFromContainerOptionsBuilder::default()
            .path(path)
            .build();
        let mut body = self.docker.download_from_container(id, Some(opts));
        let mut out = Vec::new();
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(b) => out.extend_from_slice(&b),
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                }) => {
                    return Ok(None);
                }
                Err(e) => return Err(format!("copying {path} out of the container: {e}")),
            }
        }
        Ok(Some(out))
    }

    async fn run(self: &Arc<Self>, task: TaskSpec) -> Result<TaskResult, String> {
        if let Some(what) = unsupported(&task) {
            return Err(format!(
                "the docker executor does not run {what} yet: run this workflow with the local executor (--executor local)"
            ));
        }
        let image = task.image.clone().ok_or(
            "the template names no image: the docker executor runs each task in its image",
        )?;
        self.ensure_image(&task, &image).await?;
        if task.security.privileged && !self.cfg.privileged {
            return Err(
                "securityContext.privileged: this server does not run privileged \
                        containers (they are root on the host); it must be started with \
                        --allow-privileged"
                    .into(),
            );
        }
        let image_user = self
            .docker
            .inspect_image(&image)
            .await
            .ok()
            .and_then(|i| i.config)
            .and_then(|c| c.user)
            .unwrap_or_default();
        let user = user_of(&task, &image_user)?;
        let run_dir =
            crate::paths::within(&self.cfg.work_root, &task.run).map_err(|e| e.to_string())?;
        let work = crate::paths::within(&run_dir.join("work"), &task.node_id)
            .map_err(|e| e.to_string())?;
        let _ = std::fs::remove_dir_all(&work);
        for d in [&work, &run_dir.join("logs")] {
            std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
        }
        let mut mounts = self.mounts(&task.mounts, &run_dir, &work)?;
        let (repo, t, w) = (self.cfg.repo.clone(), task.clone(), work.clone());
        let read_only = task.security.read_only_root_filesystem;
        let inputs = tokio::task::spawn_blocking(move || {
            let files = input_files(&repo, &t, &w)?;
            if read_only {
                // nothing can be uploaded into a read-only root: the inputs are bound instead
                // (read-only too: an input may share its file with the repository)
                files
                    .iter()
                    .map(|(host, path)| bind(host, path, true))
                    .collect::<Result<Vec<_>, String>>()
                    .map(|binds| (None, binds))
            } else {
                inputs_tar(&files).map(|tar| (tar, Vec::new()))
            }
        })
        .await
        .map_err(|e| e.to_string())??;
        let (inputs, binds) = inputs;
        mounts.extend(binds);
        let (entrypoint, cmd) = entrypoint_and_cmd(&task);
        let labels = beside::labels(&task, beside::Role::Main);
        let config = ContainerCreateBody {
            image: Some(image.clone()),
            entrypoint,
            cmd,
            env: Some(task.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            working_dir: task.working_dir.clone(),
            user,
            labels: Some(labels),
            host_config: Some(HostConfig {
                network_mode: Some(self.cfg.network.clone().unwrap_or_else(|| "none".into())),
                // `resources.limits`: memory without swap beyond it (as a pod has none), and
                // a CPU quota
                memory: (task.limits.memory_bytes > 0).then_some(task.limits.memory_bytes as i64),
                memory_swap: (task.limits.memory_bytes > 0)
                    .then_some(task.limits.memory_bytes as i64),
                nano_cpus: (task.limits.cpu_millis > 0)
                    .then_some(task.limits.cpu_millis as i64 * 1_000_000),
                mounts: Some(mounts),
                readonly_rootfs: Some(task.security.read_only_root_filesystem),
                privileged: Some(task.security.privileged),
                ..HostConfig::default()
            }),
            ..ContainerCreateBody::default()
        };
        let name = format!("weir-{}", task.node_id);
        // a container left by an earlier attempt of this node goes first
        let force = RemoveContainerOptionsBuilder::default().force(true).build();
        let _ = self
            .docker
            .remove_container(&name, Some(force.clone()))
            .await;
        let opts = CreateContainerOptionsBuilder::default().name(&name).build();
        let id = self
            .docker
            .create_container(Some(opts), config)
            .await
            .map_err(|e| format!("creating the container of image `{image}`: {e}"))?
            .id;
        lock(&self.running).insert(task.node_id.clone(), id.clone());
        // what a restarted weir watches the container again by, written before it starts
        let record = record_path(&run_dir, &task.node_id);
        let written = serde_json::to_vec(&RecordRef {
            id: &id,
            task: &task,
        })
        .map_err(|e| e.to_string())
        .and_then(|json| write_private(&record, &json));
        let outcome = match written {
            Ok(()) => {
                self.run_container(&task, &id, inputs, (&run_dir, &work))
                    .await
            }
            Err(e) => Err(format!("{}: {e}", record.display())),
        };
        self.settle(&task, &record).await;
        outcome
    }

    /// The task's volumes as bind mounts of their host directories (made ready here).
    fn mounts(
        &self,
        list: &[weir_core::run::Mount],
        run_dir: &Path,
        work: &Path,
    ) -> Result<Vec<bollard::models::Mount>, String> {
        let data_dir = self.cfg.work_root.parent().unwrap_or(&self.cfg.work_root);
        let host_path = |p: &Path| match &self.cfg.host_paths {
            Some(list) if !crate::volumes::allowed(p, list) => Err(format!(
                "hostPath {} is not one of the host paths this server lets containers \
                 mount (--allow-host-path)",
                p.display()
            )),
            _ => Ok(()),
        };
        let places = crate::volumes::Places {
            run_dir,
            work,
            data_dir,
            host_path: &host_path,
            owner: None,
        };
        list.iter()
            .map(|m| bind(&crate::volumes::host_dir(m, &places)?, &m.path, m.read_only))
            .collect()
    }

    /// Reports a task's end (an error as the node's) and lets shutdown go on.
    fn report(&self, node: String, result: Result<TaskResult, String>) {
        let result = result.unwrap_or_else(|e| TaskResult {
            error: Some(e),
            ..TaskResult::default()
        });
        lock(&self.running).remove(&node);
        lock(&self.stopped).remove(&node);
        self.send(Update::Finished { node, result });
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.settled.notify_waiters();
    }

    /// Removes a container whose task has been reported (unless kept), then its record.
    async fn settle(&self, task: &TaskSpec, record: &Path) {
        self.end_all(&task.run, &task.node_id).await;
        let _ = std::fs::remove_file(record);
    }

    /// Watches again the container of node `node` of run `run`, started by a weir that was
    /// killed: a container that is running or has exited is followed to its end (its whole
    /// log read again) and its outputs collected, as if weir had not stopped. None: there is
    /// no record of it, or it never started (it is removed): the node runs again.
    async fn adopt(self: &Arc<Self>, run: &str, node: &str) -> Option<(TaskSpec, String, bool)> {
        let run_dir = crate::paths::within(&self.cfg.work_root, run).ok()?;
        let record = record_path(&run_dir, node);
        let found: Record = serde_json::from_slice(&std::fs::read(&record).ok()?).ok()?;
        let status = self
            .docker
            .inspect_container(&found.id, None)
            .await
            .ok()
            .and_then(|c| c.state)
            .and_then(|s| s.status);
        use bollard::models::ContainerStateStatusEnum as S;
        match status {
            Some(S::RUNNING | S::PAUSED | S::RESTARTING) => Some((found.task, found.id, true)),
            Some(S::EXITED) => Some((found.task, found.id, false)),
            _ => {
                self.settle(&found.task, &record).await;
                None
            }
        }
    }

    /// Whether a container that ended with SIGKILL was killed over its memory limit. Its
    /// `State.OOMKilled` is not enough: dockerd sets it only when containerd's OOM event
    /// comes before the exit event, and the two race. Its `oom` event is always logged, though
    /// possibly just after the exit: dockerd's event log (from `since`, a Unix time) is read
    /// for it, waiting up to [`OOM_EVENT_WAIT`] for one still to come.
    ///
    /// Neither is there for a container killed within its first milliseconds: containerd
    /// watches a container's memory cgroup for OOM kills only once it has started it (as
    /// Kubernetes' CRI does), so such a kill ends `Error (exit code 137)`.
    async fn oom_killed(&self, id: &str, since: u64) -> bool {
        let recorded = self
            .docker
            .inspect_container(id, None)
            .await
            .ok()
            .and_then(|c| c.state)
            .and_then(|s| s.oom_killed)
            .unwrap_or(false);
        if recorded {
            return true;
        }
        let filters = std::collections::HashMap::from([
            ("container", vec![id]),
            ("type", vec!["container"]),
            ("event", vec!["oom"]),
        ]);
        let opts = bollard::query_parameters::EventsOptionsBuilder::default()
            .since(&since.to_string())
            .filters(&filters)
            .build();
        let mut events = self.docker.events(Some(opts));
        matches!(
            tokio::time::timeout(OOM_EVENT_WAIT, events.next()).await,
            Ok(Some(Ok(_)))
        )
    }

    async fn run_container(
        &self,
        task: &TaskSpec,
        id: &str,
        inputs: Option<Vec<u8>>,
        (run_dir, work): (&Path, &Path),
    ) -> Result<TaskResult, String> {
        if let Some(inputs) = inputs {
            let opts = UploadToContainerOptionsBuilder::default().path("/").build();
            self.docker
                .upload_to_container(id, Some(opts), bollard::body_full(inputs.into()))
                .await
                .map_err(|e| format!("placing the inputs in the container: {e}"))?;
        }
        self.run_inits(task, run_dir, work).await?;
        lock(&self.running).insert(task.node_id.clone(), id.to_string());
        if lock(&self.stopped).contains(&task.node_id) {
            return Err("stopped before it started".into());
        }
        // Attached before the start, which gets all the output: a logs stream followed from
        // the start loses the last line when it has no newline and comes just before the exit.
        let output = self.attach(id).await?;
        // from a second before the start: where dockerd's event log is read for an OOM kill
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs().saturating_sub(1));
        self.docker
            .start_container(id, None)
            .await
            .map_err(|e| format!("starting the container: {e}"))?;
        self.send(Update::Started {
            node: task.node_id.clone(),
            pid: 0,
        });
        if let Err(e) = self.start_sidecars(task, id, run_dir, work).await {
            self.stop_container(id).await;
            return Err(e);
        }
        self.follow(task, id, work, since, output).await
    }

    /// The container's output, from its start (`logs`) and as it comes (`stream`).
    async fn attach(&self, id: &str) -> Result<Frames, String> {
        let opts = AttachContainerOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .logs(true)
            .stream(true)
            .build();
        Ok(self
            .docker
            .attach_container(id, Some(opts))
            .await
            .map_err(|e| format!("attaching to the container: {e}"))?
            .output)
    }

    /// The output of a container started by an earlier weir: attached to while it runs, read
    /// whole once it has stopped.
    async fn output_of(&self, id: &str, running: bool) -> Frames {
        if running && let Ok(output) = self.attach(id).await {
            return output;
        }
        let opts = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .build();
        Box::pin(self.docker.logs(id, Some(opts)))
    }

    /// What the container `id` ran: its image's content id and registry digests.
    async fn container_run(&self, task: &TaskSpec, id: &str) -> Option<Box<ContainerRun>> {
        let image_id = self.docker.inspect_container(id, None).await.ok()?.image?;
        let repo_digests = self
            .docker
            .inspect_image(&image_id)
            .await
            .ok()
            .and_then(|i| i.repo_digests)
            .unwrap_or_default();
        Some(Box::new(ContainerRun {
            image: task.image.clone().unwrap_or_default(),
            image_id,
            repo_digests,
            id: id.to_string(),
        }))
    }

    /// Follows a started container to its end: its output (from its start) to the task's
    /// log and the driver, then its exit, OOM kill, output parameters and artifacts.
    async fn follow(
        &self,
        task: &TaskSpec,
        id: &str,
        work: &Path,
        since: u64,
        mut logs: Frames,
    ) -> Result<TaskResult, String> {
        let mut out = Output {
            node: task.node_id.clone(),
            secrets: task.secrets.clone(),
            log: Mutex::new(LazyLog {
                path: crate::ProcessExecutor::log_path(
                    &self.cfg.work_root,
                    &task.run,
                    &task.node_id,
                ),
                file: None,
            }),
            stream: self.cfg.stream_logs.then(|| lock(&self.tx).clone()),
            stdout: Stdout::default(),
        };
        // both streams, until the container stops
        let (mut o, mut e) = (Lines::default(), Lines::default());
        while let Some(item) = logs.next().await {
            match item {
                Ok(LogOutput::StdOut { message }) => o.push(&message, |l| out.line(l, true)),
                Ok(LogOutput::StdErr { message }) => e.push(&message, |l| out.line(l, false)),
                Ok(_) => {}
                Err(err) => {
                    out.line(
                        format!("weir: reading the container's output: {err}").as_bytes(),
                        false,
                    );
                    break;
                }
            }
        }
        o.finish(|l| out.line(l, true));
        e.finish(|l| out.line(l, false));
        let state = self.docker.wait_container(id, None).next().await;
        let code = match state {
            Some(Ok(r)) => r.status_code,
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => code,
            Some(Err(err)) => return Err(format!("waiting for the container: {err}")),
            None => return Err("waiting for the container: no answer".into()),
        };
        // (a container weir stopped itself is not looked at)
        let oom = code == 137
            && task.limits.memory_bytes > 0
            && !lock(&self.stopped).contains(&task.node_id)
            && self.oom_killed(id, since).await;
        let mut result = TaskResult {
            exit_code: Some(code as i32),
            stdout: out.stdout.result(),
            metrics: std::mem::take(&mut out.stdout.metrics),
            error: out.stdout.metric_error.take(),
            container: self.container_run(task, id).await,
            ..TaskResult::default()
        };
        // the main process killed over the limit (one of its children killed, it may go on)
        if oom && code != 0 {
            result.reason = Some("OOMKilled".into());
            out.line(
                b"weir: the container went over its memory limit and was killed (OOMKilled)",
                false,
            );
        }
        for p in &task.output_parameters {
            let value = match self.download(id, &p.path).await? {
                Some(tar_bytes) => {
                    let mut archive = tar::Archive::new(&tar_bytes[..]);
                    let mut text = None;
                    if let Ok(mut entries) = archive.entries()
                        && let Some(Ok(mut entry)) = entries.next()
                        && entry.header().entry_type().is_file()
                    {
                        let mut s = String::new();
                        if entry.read_to_string(&mut s).is_ok() {
                            text = Some(s.strip_suffix('\n').map(str::to_string).unwrap_or(s));
                        }
                    }
                    text
                }
                None => None,
            };
            result.parameters.push((p.name.clone(), value));
        }
        for (k, a) in task.output_artifacts.iter().enumerate() {
            let Some(tar_bytes) = self.download(id, &a.path).await? else {
                if !a.optional {
                    result.missing_artifacts.push(a.name.clone());
                }
                continue;
            };
            let into = work.join("outputs").join(k.to_string());
            let (repo, a, path) = (self.cfg.repo.clone(), a.clone(), a.path.clone());
            let saved = tokio::task::spawn_blocking(move || {
                let host = unpack(&tar_bytes, &into, &path)?;
                let mut error = None;
                outputs::save_artifact(&repo, &a, &host, &mut error).map(|s| (s, error))
            })
            .await
            .map_err(|e| e.to_string())??;
            if let Some(e) = saved.1 {
                result.error.get_or_insert(e);
            }
            result.artifacts.push(saved.0);
        }
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_replaces_the_entrypoint_and_args_the_cmd() {
        let t = |command: &[&str], args: &[&str], script: bool| TaskSpec {
            command: command.iter().map(|s| s.to_string()).collect(),
            args: args.iter().map(|s| s.to_string()).collect(),
            source: script.then(|| "echo hi".to_string()),
            ..TaskSpec::default()
        };
        let v = |s: &[&str]| Some(s.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(entrypoint_and_cmd(&t(&[], &[], false)), (None, None));
        assert_eq!(
            entrypoint_and_cmd(&t(&[], &["echo", "x"], false)),
            (None, v(&["echo", "x"]))
        );
        assert_eq!(
            entrypoint_and_cmd(&t(&["sh", "-c"], &[], false)),
            (v(&["sh", "-c"]), v(&[]))
        );
        // Argo appends the script's path to the args
        assert_eq!(
            entrypoint_and_cmd(&t(&["python3"], &["-u"], true)),
            (v(&["python3"]), v(&["-u", SCRIPT_PATH]))
        );
    }

    #[test]
    fn what_is_not_run_in_containers_yet_is_named() {
        let gpu = TaskSpec {
            limits: weir_core::run::Requests {
                gpus: 1,
                ..Default::default()
            },
            ..TaskSpec::default()
        };
        assert_eq!(unsupported(&gpu), Some("GPUs (`nvidia.com/gpu`)"));
        let daemon = TaskSpec {
            daemon: Some(weir_core::run::Daemon { probe: None }),
            ..TaskSpec::default()
        };
        assert_eq!(unsupported(&daemon), Some("daemons"));
        assert_eq!(unsupported(&TaskSpec::default()), None);
    }

    #[test]
    fn an_image_names_its_registry_or_docker_hub() {
        assert_eq!(registry_of("busybox"), "docker.io");
        assert_eq!(registry_of("argoproj/argosay:v2"), "docker.io");
        assert_eq!(
            registry_of("127.0.0.1:5000/team/train:v3"),
            "127.0.0.1:5000"
        );
        assert_eq!(registry_of("registry.example/train"), "registry.example");
        assert_eq!(registry_of("localhost/x"), "localhost");
    }

    #[test]
    fn a_line_split_across_frames_is_one_line() {
        let mut lines = Lines::default();
        let mut got = Vec::new();
        lines.push(b"a\nb", |l| got.push(l.to_vec()));
        lines.push(b"c\n\nd", |l| got.push(l.to_vec()));
        lines.finish(|l| got.push(l.to_vec()));
        assert_eq!(
            got,
            [b"a".to_vec(), b"bc".to_vec(), b"".to_vec(), b"d".to_vec()]
        );
    }
}
