//! The containers beside a task's, as a pod has them: init containers, each run to its end
//! before the task's container starts (a failure fails the task), and sidecars, started once it
//! runs, in its network namespace (so `127.0.0.1` reaches them, as in a pod), and killed when
//! it ends. Each shares the task's volumes that it mounts (`mirrorVolumeMounts`: all of them);
//! its output goes to the task's log, each line prefixed `[NAME] `, as the local executor
//! writes it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use bollard::container::LogOutput;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, KillContainerOptionsBuilder, ListContainersOptionsBuilder,
    RemoveContainerOptionsBuilder,
};
use futures_util::StreamExt;
use weir_core::run::{Sidecar, TaskSpec};

use super::{Frames, Inner, Lines, entrypoint_and_cmd};
use crate::shared::{LazyLog, emit, lock};

/// What a container is to its task (its `weir.role` label).
#[derive(Clone, Copy)]
pub(super) enum Role {
    Main,
    Init,
    Sidecar,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Main => "main",
            Role::Init => "init",
            Role::Sidecar => "sidecar",
        }
    }
}

/// The labels of every container of a task.
pub(super) fn labels(task: &TaskSpec, role: Role) -> HashMap<String, String> {
    HashMap::from([
        ("weir.run".to_string(), task.run.clone()),
        ("weir.node".to_string(), task.node_id.clone()),
        ("weir.role".to_string(), role.as_str().to_string()),
    ])
}

impl Inner {
    /// Creates the container of `c` (of its image, else the task's), on `network`, with its
    /// volumes.
    async fn create_beside(
        &self,
        task: &TaskSpec,
        c: &Sidecar,
        role: Role,
        network: String,
        dirs: (&Path, &Path),
    ) -> Result<String, String> {
        let image = c
            .image
            .clone()
            .or_else(|| task.image.clone())
            .ok_or_else(|| format!("container `{}` names no image", c.name))?;
        self.ensure_image(task, &image).await?;
        let mounts = self.mounts(&c.mounts, dirs.0, dirs.1)?;
        let (entrypoint, cmd) = entrypoint_and_cmd(&TaskSpec {
            command: c.command.clone(),
            args: c.args.clone(),
            ..TaskSpec::default()
        });
        let config = ContainerCreateBody {
            image: Some(image.clone()),
            entrypoint,
            cmd,
            env: Some(c.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            labels: Some(labels(task, role)),
            host_config: Some(HostConfig {
                network_mode: Some(network),
                mounts: Some(mounts),
                ..HostConfig::default()
            }),
            ..ContainerCreateBody::default()
        };
        let name = format!("weir-{}-{}", task.node_id, c.name);
        let force = RemoveContainerOptionsBuilder::default().force(true).build();
        let _ = self.docker.remove_container(&name, Some(force)).await;
        let opts = CreateContainerOptionsBuilder::default().name(&name).build();
        Ok(self
            .docker
            .create_container(Some(opts), config)
            .await
            .map_err(|e| format!("creating container `{}` of image `{image}`: {e}", c.name))?
            .id)
    }

    /// Copies a container's output into the task's log, each line prefixed with its name,
    /// until the container stops.
    fn pump(&self, task: &TaskSpec, name: &str, mut frames: Frames) -> tokio::task::JoinHandle<()> {
        let log = Mutex::new(LazyLog {
            path: crate::ProcessExecutor::log_path(&self.cfg.work_root, &task.run, &task.node_id),
            file: None,
        });
        let stream = self.cfg.stream_logs.then(|| lock(&self.tx).clone());
        let (secrets, node, prefix) = (
            task.secrets.clone(),
            task.node_id.clone(),
            format!("[{name}] "),
        );
        tokio::spawn(async move {
            let line = |l: &[u8]| emit(l, &prefix, &secrets, &log, &stream, &node);
            let (mut o, mut e) = (Lines::default(), Lines::default());
            while let Some(Ok(item)) = frames.next().await {
                match item {
                    LogOutput::StdOut { message } => o.push(&message, line),
                    LogOutput::StdErr { message } => e.push(&message, line),
                    _ => {}
                }
            }
            o.finish(line);
            e.finish(line);
        })
    }

    /// Runs the task's init containers one after another, each to its end, before its own
    /// container starts. `Err`: one could not run or failed (its exit code).
    pub(super) async fn run_inits(
        &self,
        task: &TaskSpec,
        run_dir: &Path,
        work: &Path,
    ) -> Result<(), String> {
        for ic in &task.init_containers {
            let network = self.cfg.network.clone().unwrap_or_else(|| "none".into());
            let id = self
                .create_beside(task, ic, Role::Init, network, (run_dir, work))
                .await?;
            // while it runs, stopping the task stops it
            lock(&self.running).insert(task.node_id.clone(), id.clone());
            let pumped = self.pump(task, &ic.name, self.attach(&id).await?);
            if lock(&self.stopped).contains(&task.node_id) {
                return Err("stopped before it started".into());
            }
            self.docker
                .start_container(&id, None)
                .await
                .map_err(|e| format!("starting init container `{}`: {e}", ic.name))?;
            let code = match self.docker.wait_container(&id, None).next().await {
                Some(Ok(r)) => r.status_code,
                Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => code,
                Some(Err(e)) => {
                    return Err(format!("waiting for init container `{}`: {e}", ic.name));
                }
                None => {
                    return Err(format!(
                        "waiting for init container `{}`: no answer",
                        ic.name
                    ));
                }
            };
            let _ = pumped.await;
            if code != 0 {
                return Err(format!(
                    "init container `{}` failed with exit code {code}",
                    ic.name
                ));
            }
        }
        Ok(())
    }

    /// Starts the task's sidecars in the network namespace of its running container `main`.
    pub(super) async fn start_sidecars(
        &self,
        task: &TaskSpec,
        main: &str,
        run_dir: &Path,
        work: &Path,
    ) -> Result<(), String> {
        for sc in &task.sidecars {
            let id = self
                .create_beside(
                    task,
                    sc,
                    Role::Sidecar,
                    format!("container:{main}"),
                    (run_dir, work),
                )
                .await?;
            let _pumped = self.pump(task, &sc.name, self.attach(&id).await?);
            self.docker
                .start_container(&id, None)
                .await
                .map_err(|e| format!("starting sidecar `{}`: {e}", sc.name))?;
        }
        Ok(())
    }

    /// Ends what runs beside a task that has ended (its sidecars, killed) and, unless kept,
    /// removes every container of its node (by their labels: those a killed weir left too).
    pub(super) async fn end_all(&self, run: &str, node: &str) {
        let filters = HashMap::from([(
            "label",
            vec![format!("weir.run={run}"), format!("weir.node={node}")],
        )]);
        let opts = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let Ok(found) = self.docker.list_containers(Some(opts)).await else {
            return;
        };
        for c in found {
            let Some(id) = c.id else { continue };
            if self.cfg.keep_containers {
                let kill = KillContainerOptionsBuilder::default()
                    .signal("KILL")
                    .build();
                let _ = self.docker.kill_container(&id, Some(kill)).await;
            } else {
                let force = RemoveContainerOptionsBuilder::default().force(true).build();
                let _ = self.docker.remove_container(&id, Some(force)).await;
            }
        }
    }
}
