//! The Docker executor against a real Docker daemon (`WEIR_TEST_DOCKER`, which scripts/test
//! starts: a private dockerd with no bridge network). There is no registry: the test image is
//! built here, by `docker import` of a root filesystem made of Debian's static busybox.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use crate::support::{Out, Sandbox, node};

/// The daemon's DOCKER_HOST, or None (the test is skipped) outside CI when none was given.
fn daemon() -> Option<String> {
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
        for d in ["bin", "etc", "tmp", "work"] {
            std::fs::create_dir_all(r.join(d)).unwrap();
        }
        std::fs::copy("/bin/busybox", r.join("bin/busybox")).unwrap();
        let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
        for applet in String::from_utf8_lossy(&list.stdout).lines() {
            if applet != "busybox" {
                std::os::unix::fs::symlink("busybox", r.join("bin").join(applet)).unwrap();
            }
        }
        std::fs::write(
            r.join(MARKER.trim_start_matches('/')),
            "only in the image\n",
        )
        .unwrap();
        let tar = Command::new("tar")
            .args(["-C", r.to_str().unwrap(), "-cf", "-", "."])
            .output()
            .unwrap();
        assert!(tar.status.success());
        let mut import = Command::new("docker")
            .args([
                "-H",
                host,
                "import",
                "--change",
                r#"ENTRYPOINT ["/bin/echo", "from the entrypoint"]"#,
                "--change",
                "ENV PATH=/bin",
                "-",
                IMAGE,
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        use std::io::Write;
        import.stdin.take().unwrap().write_all(&tar.stdout).unwrap();
        assert!(import.wait().unwrap().success(), "docker import");
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
    let out = weir(
        &sb,
        &host,
        &[
            "run",
            "--executor",
            "docker",
            wf.to_str().unwrap(),
            "--no-logs",
        ],
    );
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
