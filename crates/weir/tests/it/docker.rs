//! The Docker executor against a real Docker daemon (`WEIR_TEST_DOCKER`, which scripts/test
//! starts: a private dockerd with no bridge network). There is no registry: the test image is
//! built here, by `docker import` of a root filesystem made of Debian's static busybox.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use crate::images;
use crate::support::{Out, Sandbox, node};

/// The daemon's DOCKER_HOST, or None (the test is skipped) outside CI when none was given.
pub fn daemon() -> Option<String> {
    match std::env::var("WEIR_TEST_DOCKER") {
        Ok(h) => Some(h),
        Err(_) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "WEIR_TEST_DOCKER is not set: run the tests with `bash scripts/test`, which starts a Docker daemon"
            );
            eprintln!("note: WEIR_TEST_DOCKER is not set; this Docker test is skipped");
            None
        }
    }
}

/// What only the test image has: proof that a task sees its image's files, not the host's.
const MARKER: &str = "/etc/weir-test-image";
const IMAGE: &str = "weir-test/busybox:1";

/// `weir-test/busybox:1`: busybox-static and its applets, a marker file, and an entrypoint that
/// echoes (what a template without `command` runs, as Kubernetes runs an image's entrypoint).
fn image(host: &str) -> &'static str {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        images::busybox_root(r);
        std::fs::create_dir_all(r.join("work")).unwrap();
        std::fs::write(
            r.join(MARKER.trim_start_matches('/')),
            "only in the image\n",
        )
        .unwrap();
        images::import(
            host,
            r,
            &[
                r#"ENTRYPOINT ["/bin/echo", "from the entrypoint"]"#,
                "ENV PATH=/bin",
            ],
            &[IMAGE],
        );
    });
    IMAGE
}

/// `weir ARGS` with the test daemon as DOCKER_HOST.
fn weir(sb: &Sandbox, host: &str, args: &[&str]) -> Out {
    let o = sb.cmd(args).env("DOCKER_HOST", host).output().unwrap();
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// `weir run --executor docker FILE --no-logs` with the test daemon.
fn run_in_docker(sb: &Sandbox, host: &str, file: &Path) -> Out {
    weir(
        sb,
        host,
        &[
            "run",
            "--executor",
            "docker",
            file.to_str().unwrap(),
            "--no-logs",
        ],
    )
}

fn containers_of(host: &str, run: &str) -> String {
    let o = Command::new("docker")
        .args([
            "-H",
            host,
            "ps",
            "-a",
            "-q",
            "--filter",
            &format!("label=weir.run={run}"),
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// A DAG of three containers of the test image: a script that reads a file only the image has
/// and writes an output parameter and an output artifact; a template with `args` only, run by
/// the image's entrypoint; a task reading the first one's artifact as an input. Output
/// parameters, results, artifacts, logs of both streams, exit codes; no container is left.
#[test]
fn tasks_run_in_containers_of_their_image() {
    let Some(host) = daemon() else {
        return;
    };
    let image = image(&host);
    assert!(
        !Path::new(MARKER).exists(),
        "the host must not have the image's marker"
    );
    let sb = Sandbox::new();
    let wf = sb.write(
        "docker.yaml",
        &format!(
            r#"apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata:
  name: in-docker
spec:
  entrypoint: main
  templates:
  - name: main
    dag:
      tasks:
      - name: a
        template: make
      - name: b
        template: echo
        depends: a
        arguments:
          parameters: [{{name: v, value: "{{{{tasks.a.outputs.parameters.v}}}}"}}]
      - name: c
        template: read
        depends: a
        arguments:
          artifacts: [{{name: data, from: "{{{{tasks.a.outputs.artifacts.data}}}}"}}]
  - name: make
    outputs:
      parameters: [{{name: v, valueFrom: {{path: /tmp/v}}}}]
      artifacts: [{{name: data, path: /work/data}}]
    script:
      image: {image}
      command: [sh]
      source: |
        cat {MARKER}
        echo 42 > /tmp/v
        mkdir -p /work/data && echo payload > /work/data/file
        echo on-stderr >&2
  - name: echo
    inputs:
      parameters: [{{name: v}}]
    container:
      image: {image}
      args: ["{{{{inputs.parameters.v}}}}"]
  - name: read
    inputs:
      artifacts: [{{name: data, path: /in/data}}]
    container:
      image: {image}
      command: [cat, /in/data/file]
"#
        ),
    );
    let out = run_in_docker(&sb, &host, &wf);
    assert_eq!(out.code, 0, "{}", out.all());
    let got = sb.json(&["get", "in-docker", "-o", "json"]);
    assert_eq!(
        got["metadata"]["annotations"]["weir.dev/executor"], "docker",
        "the run's record says where it ran"
    );
    assert_eq!(got["status"]["phase"], "Succeeded", "{got}");
    let a = node(&got, "a");
    assert_eq!(a["outputs"]["result"], "only in the image", "{a}");
    assert_eq!(a["outputs"]["parameters"][0]["value"], "42", "{a}");
    assert_eq!(
        node(&got, "b")["outputs"]["result"],
        "from the entrypoint 42",
        "{got}"
    );
    assert_eq!(node(&got, "c")["outputs"]["result"], "payload", "{got}");
    let logs = sb.weir(&["logs", "in-docker", "a"]);
    assert!(logs.stdout.contains("on-stderr"), "{}", logs.all());
    assert_eq!(
        containers_of(&host, "in-docker"),
        "",
        "no container is left"
    );
}

/// A workflow asks for the Docker executor with its `weir.dev/executor: docker` annotation. A
/// container's exit code is its node's; a task with an image this host does not have and cannot
/// pull (there is no registry here) fails with a message that says so.
#[test]
fn exit_codes_and_missing_images_fail_their_nodes() {
    let Some(host) = daemon() else {
        return;
    };
    let image = image(&host);
    let sb = Sandbox::new();
    let wf = sb.write(
        "fail.yaml",
        &format!(
            r#"kind: Workflow
metadata:
  name: failing
  annotations: {{weir.dev/executor: docker}}
spec:
  entrypoint: main
  templates:
  - name: main
    dag:
      tasks:
      - {{name: three, template: three}}
      - {{name: nowhere, template: nowhere}}
  - name: three
    container: {{image: {image}, command: [sh, -c, "exit 3"]}}
  - name: nowhere
    container: {{image: "weir-test/not-built:1", command: [true]}}
"#
        ),
    );
    let out = weir(&sb, &host, &["run", wf.to_str().unwrap(), "--no-logs"]);
    assert_eq!(out.code, 1, "{}", out.all());
    let got = sb.json(&["get", "failing", "-o", "json"]);
    let three = node(&got, "three");
    assert_eq!(three["phase"], "Failed", "{three}");
    assert_eq!(three["outputs"]["exitCode"], "3", "{three}");
    let nowhere = node(&got, "nowhere");
    assert!(
        nowhere["message"]
            .as_str()
            .is_some_and(|m| m.contains("weir-test/not-built:1") && m.contains("cannot be pulled")),
        "{nowhere}"
    );
    assert_eq!(containers_of(&host, "failing"), "");
}

/// `resources.limits.memory` is the container's limit, without swap: a task that goes over it
/// is killed, its node fails `OOMKilled (exit code 137)` as Argo reports it, and its
/// retryStrategy runs it again. The task runs a second before it allocates, as real ones do:
/// containerd watches for OOM kills only once a container has started, and one killed in its
/// first milliseconds is reported by neither it nor dockerd (it failed 3 runs in 10 here).
#[test]
fn a_container_over_its_memory_limit_is_oom_killed_and_retried() {
    let Some(host) = daemon() else {
        return;
    };
    let image = image(&host);
    let sb = Sandbox::new();
    let wf = sb.write(
        "oom.yaml",
        &format!(
            r#"kind: Workflow
metadata:
  name: oom
  annotations: {{weir.dev/executor: docker}}
spec:
  entrypoint: hog
  templates:
  - name: hog
    retryStrategy: {{limit: 1, retryPolicy: Always}}
    container:
      image: {image}
      command: [sh, -c, "sleep 1; exec tail -c 200000000 /dev/zero"]
      resources: {{limits: {{memory: 16Mi}}}}
"#
        ),
    );
    let out = weir(&sb, &host, &["run", wf.to_str().unwrap(), "--no-logs"]);
    assert_eq!(out.code, 1, "{}", out.all());
    let got = sb.json(&["get", "oom", "-o", "json"]);
    let attempts: Vec<&serde_json::Value> = got["status"]["nodes"]
        .as_object()
        .unwrap()
        .values()
        .filter(|n| n["type"] == "Pod")
        .collect();
    assert_eq!(attempts.len(), 2, "retried once: {got}");
    for a in attempts {
        assert_eq!(a["phase"], "Failed", "{a}");
        assert_eq!(a["message"], "OOMKilled (exit code 137)", "{a}");
    }
    assert_eq!(containers_of(&host, "oom"), "");
}

/// `resources.limits.cpu` is the container's CPU quota: a busy loop limited to 0.5 CPU uses at
/// most 0.6 CPU-seconds per second of its run (what its own cgroup counted, read inside the
/// container: cgroup v1's `cpuacct.usage` or v2's `cpu.stat`).
#[test]
fn a_busy_loop_limited_to_half_a_cpu_uses_at_most_that() {
    let Some(host) = daemon() else {
        return;
    };
    let image = image(&host);
    let sb = Sandbox::new();
    let wf = sb.write(
        "cpu.yaml",
        &format!(
            r#"kind: Workflow
metadata:
  name: cpu
  annotations: {{weir.dev/executor: docker}}
spec:
  entrypoint: spin
  templates:
  - name: spin
    script:
      image: {image}
      command: [sh]
      source: |
        used() {{
          if [ -f /sys/fs/cgroup/cpuacct/cpuacct.usage ]; then
            echo $(( $(cat /sys/fs/cgroup/cpuacct/cpuacct.usage) / 1000 ))
          else
            sed -n 's/^usage_usec //p' /sys/fs/cgroup/cpu.stat
          fi
        }}
        # wall time in hundredths of a second, from /proc/uptime
        now() {{ t=$(cut -d' ' -f1 /proc/uptime); echo "${{t%.*}}${{t#*.}}"; }}
        a=$(used); t0=$(now)
        timeout -s KILL 2 sh -c 'while :; do :; done' || true
        b=$(used); t1=$(now)
        echo $(( (b - a) / ((t1 - t0) * 10) ))
      resources: {{limits: {{cpu: 500m}}}}
"#
        ),
    );
    let out = weir(&sb, &host, &["run", wf.to_str().unwrap(), "--no-logs"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let got = sb.json(&["get", "cpu", "-o", "json"]);
    let result = node(&got, "cpu")["outputs"]["result"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    // CPU-microseconds per wall-millisecond: thousandths of a CPU
    eprintln!(
        "the 0.5-CPU busy loop used {} per mille of a CPU",
        result.trim()
    );
    let per_mille: u64 = result.trim().parse().unwrap_or_else(|_| panic!("{got}"));
    assert!(
        (1..=600).contains(&per_mille),
        "the loop used {per_mille}/1000 of a CPU"
    );
}

/// `kill -9` of weir while two containers run, then `weir resume`: the container that ended
/// while no weir ran is settled (its output parameter and log collected), the one still
/// running is followed again to its end; neither is created again, the run Succeeds, and no
/// container of the run is left.
#[test]
fn containers_outlive_a_killed_weir_and_are_collected_by_resume() {
    let Some(host) = daemon() else {
        return;
    };
    let image = image(&host);
    let mut sb = Sandbox::new();
    sb.env.push(("DOCKER_HOST".into(), host.clone()));
    let wf = sb.write(
        "crashd.yaml",
        &format!(
            r#"kind: Workflow
metadata:
  name: crashd
  annotations: {{weir.dev/executor: docker}}
spec:
  entrypoint: main
  templates:
  - name: main
    dag:
      tasks:
      - {{name: quick, template: work, arguments: {{parameters: [{{name: secs, value: "1"}}]}}}}
      - {{name: slow, template: work, arguments: {{parameters: [{{name: secs, value: "8"}}]}}}}
  - name: work
    inputs: {{parameters: [{{name: secs}}]}}
    outputs: {{parameters: [{{name: id, valueFrom: {{path: /tmp/id}}}}]}}
    container:
      image: {image}
      command: [sh, -c]
      args: ["echo started; sleep {{{{inputs.parameters.secs}}}}; cat /proc/sys/kernel/random/uuid > /tmp/id; echo finished"]
"#
        ),
    );
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 1;
    let docker = |args: &[&str]| {
        let o = Command::new("docker")
            .args(["-H", &host])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    let of = |node: &str, status: &str| {
        docker(&[
            "ps",
            "-a",
            "-q",
            "--filter",
            "label=weir.run=crashd",
            "--filter",
            &format!("status={status}"),
            "--filter",
            &format!("label=weir.node={node}"),
        ])
    };
    let mut child = sb.spawn(&["run", wf.to_str().unwrap(), "--no-logs"]);
    // each node's id, once the run has it
    let node_ids = |wf: &serde_json::Value| {
        ["quick", "slow"].map(|t| {
            wf["status"]["nodes"]
                .as_object()
                .and_then(|m| m.values().find(|n| n["displayName"] == t))
                .and_then(|n| n["id"].as_str())
                .unwrap_or_default()
                .to_string()
        })
    };
    crate::support::wait_for(std::time::Duration::from_secs(60), || {
        let out = sb.weir(&["get", "crashd", "-o", "json"]);
        let got = serde_json::from_str(&out.stdout).unwrap_or_default();
        let ids = node_ids(&got);
        !ids[0].is_empty() && !ids[1].is_empty() && ids.iter().all(|n| !of(n, "running").is_empty())
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let ids = node_ids(&sb.json(&["get", "crashd", "-o", "json"]));
    // `quick` ends while no weir runs (docker wait: its exit); `slow` still runs
    let quick = of(&ids[0], "running");
    assert_eq!(docker(&["wait", &quick]), "0");
    assert!(!of(&ids[1], "running").is_empty(), "slow ended too soon");
    let out = weir(&sb, &host, &["resume", "crashd", "--no-logs"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let got = sb.json(&["get", "crashd", "-o", "json"]);
    assert_eq!(got["status"]["phase"], "Succeeded", "{got}");
    for t in ["quick", "slow"] {
        let n = node(&got, t);
        assert_eq!(n["type"], "Pod", "{got}");
        let id = n["outputs"]["parameters"][0]["value"]
            .as_str()
            .unwrap_or("");
        assert_eq!(id.len(), 36, "{t}'s output parameter: {got}");
    }
    // one container each, never created again
    let now = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 1)
    .to_string();
    let created = docker(&[
        "events",
        "--since",
        &since.to_string(),
        "--until",
        &now,
        "--filter",
        "label=weir.run=crashd",
        "--filter",
        "event=create",
        "--format",
        "{{.ID}}",
    ]);
    assert_eq!(created.lines().count(), 2, "containers created: {created}");
    let logs = sb.weir(&["logs", "crashd"]);
    assert_eq!(logs.stdout.matches("started").count(), 2, "{}", logs.all());
    assert_eq!(logs.stdout.matches("finished").count(), 2, "{}", logs.all());
    assert_eq!(containers_of(&host, "crashd"), "");
}

/// A private registry on 127.0.0.1 (Debian's `docker-registry`, a host process: dockerd pulls
/// through the host's loopback) that asks for a password; killed when dropped.
struct Registry {
    child: std::process::Child,
    at: String,
    _dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Registry {
    fn start(user: &str, password: &str) -> Option<Registry> {
        let bin = Path::new("/usr/bin/docker-registry");
        if !bin.exists() {
            assert!(
                std::env::var_os("CI").is_none(),
                "docker-registry is missing: scripts/test installs it"
            );
            eprintln!("note: docker-registry is missing; this test is skipped");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        // bcrypt, the only scheme its htpasswd reads
        let hash = Command::new("python3")
            .args([
                "-c",
                "import crypt, sys; print(crypt.crypt(sys.argv[1], crypt.mksalt(crypt.METHOD_BLOWFISH)))",
                password,
            ])
            .output()
            .unwrap();
        assert!(hash.status.success(), "{hash:?}");
        let hash = String::from_utf8(hash.stdout).unwrap();
        std::fs::write(
            dir.path().join("htpasswd"),
            format!("{user}:{}", hash.trim()),
        )
        .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let at = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog: {{level: error}}\nstorage: {{filesystem: {{rootdirectory: {}}}}}\nhttp: {{addr: {at}}}\nauth: {{htpasswd: {{realm: weir-test, path: {}}}}}\n",
                dir.path().join("data").display(),
                dir.path().join("htpasswd").display()
            ),
        )
        .unwrap();
        let child = Command::new(bin)
            .args(["serve", config.to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let reg = Registry {
            child,
            at: at.clone(),
            _dir: dir,
        };
        crate::support::wait_for(std::time::Duration::from_secs(30), || {
            std::net::TcpStream::connect(&at).is_ok()
        });
        Some(reg)
    }
}

/// `imagePullSecrets` and `imagePullPolicy` against a registry that asks for a password: with
/// the dockerconfigjson Secret the image is pulled and runs; without it, or under `Never` with
/// the image absent, the node fails saying why, without retrying; the password is in no output.
#[test]
fn a_private_registry_pull_works_with_its_credentials_and_fails_clearly_without() {
    let Some(host) = daemon() else {
        return;
    };
    let password = "pw-4f1e2b9c";
    let Some(reg) = Registry::start("weir", password) else {
        return;
    };
    let base = image(&host);
    let private = format!("{}/team/private:v3", reg.at);
    // the image goes to the registry, then off this Docker host
    let config = tempfile::tempdir().unwrap();
    let docker = |args: &[&str]| {
        let o = Command::new("docker")
            .args(["--config", config.path().to_str().unwrap(), "-H", &host])
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "docker {args:?}: {o:?}");
    };
    docker(&["login", &reg.at, "-u", "weir", "-p", password]);
    docker(&["tag", base, &private]);
    docker(&["push", &private]);
    docker(&["rmi", &private]);
    docker(&["logout", &reg.at]);
    let sb = Sandbox::new();
    let secret = sb.write(
        "regcred.yaml",
        &format!(
            "kind: Secret\nmetadata: {{name: regcred}}\ntype: kubernetes.io/dockerconfigjson\nstringData:\n  .dockerconfigjson: '{{\"auths\": {{\"{}\": {{\"username\": \"weir\", \"password\": \"{password}\"}}}}}}'\n",
            reg.at
        ),
    );
    let wf = |name: &str, secrets: &str, policy: &str| {
        sb.write(
            &format!("{name}.yaml"),
            &format!(
                r#"kind: Workflow
metadata:
  name: {name}
  annotations: {{weir.dev/executor: docker}}
spec:
  entrypoint: main
{secrets}  templates:
  - name: main
    retryStrategy: {{limit: 3}}
    container:
      image: {private}
      imagePullPolicy: {policy}
      command: [cat, {MARKER}]
"#
            ),
        )
    };
    let with_secret = "  imagePullSecrets: [{name: regcred}]\n";
    // Never, and the image is not here
    let run = |file: &Path, secrets: bool| {
        let mut args = vec!["run", file.to_str().unwrap()];
        if secrets {
            args.extend(["--with", secret.to_str().unwrap()]);
        }
        weir(&sb, &host, &args)
    };
    let out = run(&wf("never", with_secret, "Never"), true);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.all().contains("its imagePullPolicy is Never"),
        "{}",
        out.all()
    );
    // no credentials: refused by the registry
    let out = run(&wf("anon", "", "IfNotPresent"), false);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.all().contains(&format!(
            "cannot be pulled from {} without credentials",
            reg.at
        )),
        "{}",
        out.all()
    );
    let got = sb.json(&["get", "anon", "-o", "json"]);
    let pods = got["status"]["nodes"]
        .as_object()
        .unwrap()
        .values()
        .filter(|n| n["type"] == "Pod")
        .count();
    assert_eq!(pods, 1, "a failed pull is not retried: {got}");
    // with the Secret: pulled, and the task sees the image's files
    let out = run(&wf("withcred", with_secret, "Always"), true);
    assert_eq!(out.code, 0, "{}", out.all());
    let logs = sb.weir(&["logs", "withcred"]);
    assert!(logs.stdout.contains("only in the image"), "{}", logs.all());
    for run in ["never", "anon", "withcred"] {
        let text = sb.weir(&["get", run, "-o", "json"]).all() + &sb.weir(&["logs", run]).all();
        assert!(
            !text.contains(password),
            "the password shows in {run}: {text}"
        );
    }
    assert!(!out.all().contains(password));
    docker(&["rmi", &private]);
}

/// A last line with no newline, written while weir follows the container (not before it looks),
/// is the task's result: a logs stream followed from the start lost it, attaching does not.
#[test]
fn a_last_line_without_a_newline_is_kept() {
    let Some(host) = daemon() else {
        return;
    };
    let image = image(&host);
    let sb = Sandbox::new();
    let wf = sb.write(
        "partial.yaml",
        &format!(
            r#"kind: Workflow
metadata:
  name: partial
  annotations: {{weir.dev/executor: docker}}
spec:
  entrypoint: main
  templates:
  - name: main
    container:
      image: {image}
      command: [sh, -c, "echo first; sleep 1; printf '[1, 2]'"]
"#
        ),
    );
    let out = weir(&sb, &host, &["run", wf.to_str().unwrap(), "--no-logs"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let got = sb.json(&["get", "partial", "-o", "json"]);
    assert_eq!(
        node(&got, "partial")["outputs"]["result"],
        "first\n[1, 2]",
        "{got}"
    );
}

/// Volumes are bind mounts of the directories the local executor uses: a run's
/// `volumeClaimTemplates` volume carries a file from one container to the next, an existing
/// claim is the one a local run wrote to, a `configMap` volume holds its data, a `readOnly`
/// mount cannot be written, a `hostPath` is the host's directory, and an `emptyDir` is the
/// task's own.
#[test]
fn volumes_are_the_directories_the_local_executor_uses() {
    let Some(host) = daemon() else {
        return;
    };
    let image = image(&host);
    let sb = Sandbox::new();
    let shared = sb.dir_with("from-host", &[("in.txt", "host file")]);
    let wf = sb.write(
        "vol.yaml",
        &format!(
            r#"apiVersion: v1
kind: ConfigMap
metadata: {{name: settings}}
data: {{mode: fast}}
---
kind: Workflow
metadata: {{generateName: vol-}}
spec:
  entrypoint: main
  volumeClaimTemplates:
  - metadata: {{name: work}}
    spec: {{accessModes: [ReadWriteOnce], resources: {{requests: {{storage: 1Gi}}}}}}
  volumes:
  - {{name: keep, persistentVolumeClaim: {{claimName: docker-claim}}}}
  - {{name: cfg, configMap: {{name: settings}}}}
  - {{name: scratch, emptyDir: {{}}}}
  - {{name: outside, hostPath: {{path: {shared}}}}}
  templates:
  - name: main
    steps:
    - - {{name: write, template: write}}
    - - {{name: read, template: read}}
  - name: write
    container:
      image: {image}
      command: [sh, -c, 'echo from-write > /mnt/work/msg; echo run >> /mnt/keep/runs; echo mine > /scratch/f']
      volumeMounts: [{{name: work, mountPath: /mnt/work}}, {{name: keep, mountPath: /mnt/keep}}, {{name: scratch, mountPath: /scratch}}]
  - name: read
    container:
      image: {image}
      command: [sh, -c, 'echo got=$(cat /mnt/work/msg) mode=$(cat /etc/cfg/mode) runs=$(wc -l < /mnt/keep/runs) scratch=$(ls /scratch | wc -l) host="$(cat /host/in.txt)"; echo back > /host/out.txt; touch /etc/cfg/x 2>/dev/null && echo cfg=writable || echo cfg=read-only']
      volumeMounts:
      - {{name: work, mountPath: /mnt/work}}
      - {{name: keep, mountPath: /mnt/keep}}
      - {{name: cfg, mountPath: /etc/cfg, readOnly: true}}
      - {{name: scratch, mountPath: /scratch}}
      - {{name: outside, mountPath: /host}}
"#,
            shared = shared.display()
        ),
    );
    // the local executor writes the claim first
    let local = sb.weir(&["run", wf.to_str().unwrap()]);
    assert_eq!(local.code, 0, "{}", local.all());
    assert!(local.stdout.contains("runs=1"), "{}", local.stdout);
    let out = weir(
        &sb,
        &host,
        &["run", "--executor", "docker", wf.to_str().unwrap()],
    );
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(
        out.stdout
            .contains("got=from-write mode=fast runs=2 scratch=0 host=host file"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("cfg=read-only"), "{}", out.stdout);
    assert_eq!(
        std::fs::read_to_string(shared.join("out.txt")).unwrap(),
        "back\n",
        "the container wrote to the host path"
    );
}

/// `securityContext`: `runAsUser`/`runAsGroup` are the container's ids, `readOnlyRootFilesystem`
/// leaves its root unwritable (its script and inputs still arrive, bound), `privileged` gives it
/// every capability; `runAsNonRoot` from the workflow's pod context refuses an image that would
/// run as root, in the kubelet's words.
#[test]
fn security_context_sets_the_user_a_read_only_root_and_privilege() {
    let Some(host) = daemon() else {
        return;
    };
    let image = image(&host);
    let sb = Sandbox::new();
    let wf = sb.write(
        "sec.yaml",
        &format!(
            r#"kind: Workflow
metadata: {{name: sec}}
spec:
  entrypoint: main
  templates:
  - name: main
    dag:
      tasks:
      - {{name: who, template: who}}
      - {{name: ro, template: ro, depends: who, arguments: {{artifacts: [{{name: f, from: "{{{{tasks.who.outputs.artifacts.f}}}}"}}]}}}}
      - {{name: plain, template: caps}}
      - {{name: priv, template: caps-privileged, continueOn: {{error: true, failed: true}}}}
  - name: who
    securityContext: {{runAsUser: 5, runAsGroup: 7}}
    outputs: {{artifacts: [{{name: f, path: /tmp/f}}]}}
    script:
      image: {image}
      command: [sh]
      securityContext: {{runAsUser: 1000}}
      source: |
        echo "$(id -u):$(id -g)" | tee /tmp/f
  - name: ro
    inputs: {{artifacts: [{{name: f, path: /in/f}}]}}
    script:
      image: {image}
      command: [sh]
      securityContext: {{readOnlyRootFilesystem: true}}
      source: |
        touch /x 2>/dev/null && echo root=writable || echo root=read-only; cat /in/f
  - name: caps
    container: {{image: {image}, command: [sh, -c, 'grep CapEff /proc/self/status']}}
  - name: caps-privileged
    container:
      image: {image}
      command: [sh, -c, 'grep CapEff /proc/self/status']
      securityContext: {{privileged: true}}
"#
        ),
    );
    let out = run_in_docker(&sb, &host, &wf);
    assert_eq!(out.code, 0, "{}", out.all());
    let got = sb.json(&["get", "sec", "-o", "json"]);
    assert_eq!(
        node(&got, "who")["outputs"]["result"],
        "1000:7",
        "the container's runAsUser, the template's runAsGroup: {got}"
    );
    assert_eq!(
        node(&got, "ro")["outputs"]["result"],
        "root=read-only\n1000:7",
        "{got}"
    );
    let plain = node(&got, "plain")["outputs"]["result"].clone();
    let privileged = node(&got, "priv");
    let caps = privileged["outputs"]["result"].as_str().unwrap_or_default();
    // Where this host itself lacks capabilities (a test machine that is a container), runc
    // cannot give a privileged container all of them and says so: the ask reached it.
    assert!(
        caps.ends_with("ffffffffff")
            || privileged["message"]
                .as_str()
                .is_some_and(|m| m.contains("unable to apply caps")),
        "a privileged container has every capability: {privileged}"
    );
    assert!(
        !plain.as_str().unwrap_or_default().ends_with("ffffffffff"),
        "an unprivileged one has fewer: {plain}"
    );

    let wf = sb.write(
        "nonroot.yaml",
        &format!(
            "kind: Workflow\nmetadata: {{name: nonroot}}\nspec:\n  entrypoint: t\n  securityContext: {{runAsNonRoot: true}}\n  templates:\n  - name: t\n    container: {{image: {image}, command: [id]}}\n"
        ),
    );
    let out = run_in_docker(&sb, &host, &wf);
    assert_ne!(out.code, 0, "{}", out.all());
    let got = sb.json(&["get", "nonroot", "-o", "json"]);
    let msg = node(&got, "nonroot")["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        msg.contains("runAsNonRoot and image will run as root"),
        "{got}"
    );
}

/// `weir server` with `executor = "docker"` in its weir.toml runs what is submitted to it in
/// containers (as `--executor docker` would): a task sees its image's files; a `privileged`
/// container is refused unless the server allows it; a workflow asking for host processes
/// (`weir.dev/executor: local`) is refused with a 400.
#[test]
fn a_server_with_the_docker_executor_runs_submissions_in_containers() {
    use crate::server::{follow, submit};
    use crate::support::{ApiServer, answer, http};
    let Some(host) = daemon() else {
        return;
    };
    let image = image(&host);
    let sb = Sandbox::new();
    let cfg = sb.write("weir.toml", "[server]\nexecutor = \"docker\"\n");
    let cfg = cfg.to_str().unwrap();
    let o = sb.weir(&["server", "--config", cfg, "--print-config"]);
    assert!(
        o.stdout.contains("executor = \"docker\"  # file"),
        "{}",
        o.all()
    );
    let srv = ApiServer::start_with(
        &sb,
        &["--insecure-local", "--config", cfg],
        &[("DOCKER_HOST", &host)],
    );
    let name = submit(
        &srv,
        &format!(
            "kind: Workflow\nmetadata: {{generateName: srv-}}\nspec:\n  entrypoint: t\n  templates:\n  - name: t\n    container: {{image: {image}, command: [cat, {MARKER}]}}\n"
        ),
    );
    let end = follow(&srv, &name);
    assert_eq!(end["phase"], "Succeeded", "{end}");
    let (_, wf) = answer(
        http()
            .get(srv.url(&format!("/api/v1/workflows/default/{name}")))
            .call(),
    );
    assert_eq!(
        wf["metadata"]["annotations"]["weir.dev/executor"], "docker",
        "{wf}"
    );
    assert_eq!(
        node(&wf, &name)["outputs"]["result"],
        "only in the image",
        "{wf}"
    );

    let name = submit(
        &srv,
        &format!(
            "kind: Workflow\nmetadata: {{generateName: priv-}}\nspec:\n  entrypoint: t\n  templates:\n  - name: t\n    container: {{image: {image}, command: [id], securityContext: {{privileged: true}}}}\n"
        ),
    );
    let end = follow(&srv, &name);
    assert_ne!(end["phase"], "Succeeded", "{end}");
    let (_, wf) = answer(
        http()
            .get(srv.url(&format!("/api/v1/workflows/default/{name}")))
            .call(),
    );
    let msg = node(&wf, &name)["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(msg.contains("--allow-privileged"), "{wf}");

    // a workflow asking for host processes is refused, or one of its templates
    for (workflow, template) in [
        ("annotations: {weir.dev/executor: local}", ""),
        ("", "metadata: {annotations: {weir.dev/executor: local}}"),
    ] {
        let (status, body) = answer(
            http()
                .post(srv.url("/api/v1/workflows/default"))
                .content_type("application/yaml")
                .send(format!(
                    "kind: Workflow\nmetadata: {{generateName: host-, {workflow}}}\nspec:\n  entrypoint: t\n  templates:\n  - name: t\n    {template}\n    container: {{image: {image}, command: [id]}}\n"
                )),
        );
        assert_eq!(status, 400, "{body}");
        assert!(
            body.to_string()
                .contains("does not run tasks as host processes"),
            "{body}"
        );
    }
}

/// On PostgreSQL, a run's tasks go only to workers of its executor: `weir worker --executor
/// docker` takes the tasks of runs annotated `weir.dev/executor: docker` (which read a file
/// only their image has), a plain worker those of the others (which check they run on the
/// host), both workers claiming from one queue at once.
#[test]
fn workers_claim_only_the_tasks_of_their_executor() {
    use crate::cluster::{server, submit, worker};
    let Some(host) = daemon() else {
        return;
    };
    let Some(mut sb) = Sandbox::postgres() else {
        return;
    };
    let image = image(&host);
    sb.env.push(("DOCKER_HOST".into(), host.clone()));
    let srv = server(&sb);
    let _local = worker(&sb, &["--slots", "tasks=4"]);
    let _docker = worker(&sb, &["--executor", "docker", "--slots", "tasks=4"]);
    let fan = |name: &str, annotation: &str, check: &str| {
        format!(
            "kind: Workflow\nmetadata: {{name: {name}{annotation}}}\nspec:\n  entrypoint: main\n  templates:\n  - name: main\n    steps:\n    - - {{name: t, template: t, withSequence: {{count: '6'}}}}\n  - name: t\n    container: {{image: {image}, command: [sh, -c, '{check}']}}\n"
        )
    };
    let (status, body) = submit(
        &srv,
        &fan(
            "in-docker",
            ", annotations: {weir.dev/executor: docker}",
            &format!("cat {MARKER}"),
        ),
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = submit(
        &srv,
        &fan("on-host", "", &format!("test ! -e {MARKER} && echo host")),
    );
    assert_eq!(status, 200, "{body}");
    for name in ["in-docker", "on-host"] {
        let end = crate::server::follow(&srv, name);
        assert_eq!(end["phase"], "Succeeded", "{name}: {end}");
    }
}

/// A template's `weir.dev/executor` annotation places its tasks whatever the run's executor
/// (`docker`: a container of its image; `local`: a host process), and an `http` template,
/// which runs no image, runs on the host under either: the same file succeeds with the local
/// executor and with the Docker executor.
#[test]
fn templates_choose_their_executor_and_http_templates_run_on_the_host() {
    use crate::support::WebServer;
    let Some(host) = daemon() else {
        return;
    };
    let image = image(&host);
    let sb = Sandbox::new();
    let site = sb.dir_with("site", &[("hello.txt", "hello over http")]);
    let web = WebServer::start(&site);
    let wf = sb.write(
        "mixed.yaml",
        &format!(
            r#"kind: Workflow
metadata: {{generateName: mixed-}}
spec:
  entrypoint: main
  templates:
  - name: main
    dag:
      tasks:
      - {{name: in-image, template: in-image}}
      - {{name: on-host, template: on-host}}
      - {{name: fetch, template: fetch}}
  - name: in-image
    metadata: {{annotations: {{weir.dev/executor: docker}}}}
    container: {{image: {image}, command: [cat, {MARKER}]}}
  - name: on-host
    metadata: {{annotations: {{weir.dev/executor: local}}}}
    container: {{image: {image}, command: [sh, -c, 'test ! -e {MARKER} && echo on the host']}}
  - name: fetch
    http:
      url: http://127.0.0.1:{port}/hello.txt
      successCondition: response.statusCode == 200
"#,
            port = web.1
        ),
    );
    for executor in ["local", "docker"] {
        let out = weir(
            &sb,
            &host,
            &[
                "run",
                "--executor",
                executor,
                wf.to_str().unwrap(),
                "-o",
                "json",
            ],
        );
        assert_eq!(out.code, 0, "--executor {executor}: {}", out.all());
        let got: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(
            node(&got, "in-image")["outputs"]["result"],
            "only in the image",
            "{got}"
        );
        assert_eq!(
            node(&got, "on-host")["outputs"]["result"],
            "on the host",
            "{got}"
        );
        assert_eq!(
            node(&got, "fetch")["outputs"]["result"],
            "hello over http",
            "{got}"
        );
    }
}

/// Init containers and sidecars, as a pod has them: an init container (`mirrorVolumeMounts`)
/// writes a page into the task's `emptyDir` before it starts; a sidecar of another image
/// serves that volume over HTTP on 127.0.0.1, which the task reaches because they share a
/// network namespace (with no network at all); the sidecar is killed when the task ends, its
/// lines are in the task's log with its name, and no container is left. A failing init
/// container fails its task before it runs.
#[test]
fn init_containers_and_sidecars_run_beside_the_task() {
    let Some(host) = daemon() else {
        return;
    };
    let image = image(&host);
    let sb = Sandbox::new();
    let wf = sb.write(
        "pod.yaml",
        &format!(
            r#"kind: Workflow
metadata: {{name: pod}}
spec:
  entrypoint: main
  volumes: [{{name: www, emptyDir: {{}}}}]
  templates:
  - name: main
    steps:
    - - {{name: fetch, template: fetch}}
    - - {{name: broken, template: broken, continueOn: {{failed: true, error: true}}}}
  - name: fetch
    container:
      image: {image}
      command: [sh, -c, 'until wget -q -O- http://127.0.0.1:8080/index.html; do sleep 0.1; done']
      volumeMounts: [{{name: www, mountPath: /www}}]
    initContainers:
    - name: write-page
      image: {image}
      command: [sh, -c, 'echo page from the init container > /www/index.html; echo wrote it']
      mirrorVolumeMounts: true
    sidecars:
    - name: web
      image: {image}
      command: [sh, -c, 'echo serving; exec httpd -f -p 127.0.0.1:8080 -h /srv']
      volumeMounts: [{{name: www, mountPath: /srv}}]
  - name: broken
    container: {{image: {image}, command: [echo, never]}}
    initContainers:
    - {{name: fails, image: {image}, command: [sh, -c, 'exit 3']}}
"#
        ),
    );
    let out = run_in_docker(&sb, &host, &wf);
    assert_eq!(out.code, 0, "{}", out.all());
    let got = sb.json(&["get", "pod", "-o", "json"]);
    assert_eq!(
        node(&got, "fetch")["outputs"]["result"],
        "page from the init container",
        "{got}"
    );
    let broken = node(&got, "broken");
    assert_ne!(broken["phase"], "Succeeded", "{broken}");
    assert!(
        broken["message"]
            .as_str()
            .is_some_and(|m| m.contains("init container `fails` failed with exit code 3")),
        "{broken}"
    );
    let logs = sb.weir(&["logs", "pod", "fetch"]);
    assert!(
        logs.stdout.contains("[write-page] wrote it"),
        "{}",
        logs.all()
    );
    assert!(logs.stdout.contains("[web] serving"), "{}", logs.all());
    assert_eq!(containers_of(&host, "pod"), "", "no container is left");
}

/// A container has no network but loopback unless weir is given one (`--docker-network`, an
/// internal network made here, which reaches nothing beyond its containers);
/// `--keep-containers` leaves the containers for inspection, labelled with their run.
#[test]
fn a_network_is_granted_by_name_and_containers_kept_on_request() {
    let Some(host) = daemon() else {
        return;
    };
    let image = image(&host);
    let net = "weir-test-internal";
    let made = Command::new("docker")
        .args(["-H", &host, "network", "create", "--internal", net])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&made.stderr);
    assert!(
        made.status.success() || stderr.contains("already exists"),
        "{stderr}"
    );
    let sb = Sandbox::new();
    let wf = |name: &str| {
        sb.write(
            &format!("{name}.yaml"),
            &format!(
                "kind: Workflow\nmetadata: {{name: {name}}}\nspec:\n  entrypoint: t\n  templates:\n  - name: t\n    container: {{image: {image}, command: [ls, /sys/class/net]}}\n"
            ),
        )
    };
    let out = run_in_docker(&sb, &host, &wf("no-net"));
    assert_eq!(out.code, 0, "{}", out.all());
    let got = sb.json(&["get", "no-net", "-o", "json"]);
    assert_eq!(node(&got, "no-net")["outputs"]["result"], "lo", "{got}");

    let file = wf("on-net");
    let out = weir(
        &sb,
        &host,
        &[
            "run",
            "--executor",
            "docker",
            "--docker-network",
            net,
            "--keep-containers",
            file.to_str().unwrap(),
            "--no-logs",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.all());
    let got = sb.json(&["get", "on-net", "-o", "json"]);
    let result = node(&got, "on-net")["outputs"]["result"].clone();
    assert!(
        result.as_str().is_some_and(|r| r.contains("eth0")),
        "{result}"
    );
    let kept = containers_of(&host, "on-net");
    assert_ne!(kept, "", "the container is kept");
    let rm = Command::new("docker")
        .args(["-H", &host, "rm", "-f", &kept])
        .output()
        .unwrap();
    assert!(rm.status.success());
    // the host as it was: no bridge left behind
    let rm = Command::new("docker")
        .args(["-H", &host, "network", "rm", net])
        .output()
        .unwrap();
    assert!(
        rm.status.success(),
        "{}",
        String::from_utf8_lossy(&rm.stderr)
    );
}

/// A node run in a container records it (`weir get -o json`: its image, the image's content
/// id, the container's id), and step caching binds its outputs to that content: the same task
/// reuses them while its tag names the same image, and runs again once the tag names another.
#[test]
fn step_caching_keys_a_container_by_its_image_content() {
    let Some(host) = daemon() else {
        return;
    };
    const TAG: &str = "weir-test/cached:1";
    let build = |marker: &str| {
        let root = tempfile::tempdir().unwrap();
        images::busybox_root(root.path());
        std::fs::write(root.path().join("etc/marker"), marker).unwrap();
        images::import(&host, root.path(), &["ENV PATH=/bin"], &[TAG]);
    };
    build("first image\n");
    let sb = Sandbox::new();
    let wf = sb.write(
        "cached.yaml",
        &format!(
            "kind: Workflow\nmetadata:\n  generateName: cached-\n  annotations: {{weir.dev/cache: \"true\"}}\nspec:\n  entrypoint: t\n  templates:\n  - name: t\n    container: {{image: {TAG}, command: [sh, -c, 'cat /etc/marker; cat /proc/sys/kernel/random/uuid']}}\n"
        ),
    );
    let run = || {
        let out = weir(
            &sb,
            &host,
            &[
                "run",
                "--executor",
                "docker",
                wf.to_str().unwrap(),
                "-o",
                "json",
            ],
        );
        assert_eq!(out.code, 0, "{}", out.all());
        let got: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        let name = got["metadata"]["name"].as_str().unwrap().to_string();
        node(&got, &name).clone()
    };
    let first = run();
    let container = &first["container"];
    assert_eq!(container["image"], TAG, "{first}");
    let image_id = container["imageID"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(image_id.starts_with("sha256:"), "{first}");
    assert!(
        container["containerID"]
            .as_str()
            .is_some_and(|c| c.starts_with("docker://")),
        "{first}"
    );
    let again = run();
    assert!(again["cachedFrom"].is_string(), "reused: {again}");
    assert_eq!(again["outputs"]["result"], first["outputs"]["result"]);
    assert_eq!(again["container"]["imageID"], image_id.as_str());

    build("second image\n");
    let rebuilt = run();
    assert!(rebuilt["cachedFrom"].is_null(), "ran again: {rebuilt}");
    assert!(
        rebuilt["outputs"]["result"]
            .as_str()
            .is_some_and(|r| r.starts_with("second image")),
        "{rebuilt}"
    );
    assert_ne!(rebuilt["container"]["imageID"], image_id.as_str());
}
