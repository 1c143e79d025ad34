//! The reproducibility record a run carries in its annotations: the hash of what it runs, the
//! Weir version, the host and OS, the interpreters its templates call, and the git commit of the
//! workflow file when it lies in a git work tree. `weir rerun` checks a rerun's fetched inputs
//! against the original's digests.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};

use weir_core::run::Submission;

pub const SPEC_HASH: &str = "weir.dev/spec-hash";
pub const RERUN_OF: &str = "weir.dev/rerun-of";
pub const EXPECTED_INPUTS: &str = "weir.dev/expected-inputs";

/// The blake3 of what a run runs: its workflow spec, the templates it may reference and its
/// parameters (not Secrets: their values never leave the submission).
pub fn spec_hash(sub: &Submission) -> String {
    let lib: Vec<_> = sub
        .library
        .iter()
        .map(|d| (d.kind.as_str(), &d.metadata.name, &d.spec))
        .collect();
    let material = serde_json::json!({
        "spec": sub.workflow.spec,
        "library": lib,
        "parameters": sub.parameters,
        "configMaps": sub.config_maps,
    });
    blake3::hash(material.to_string().as_bytes())
        .to_hex()
        .to_string()
}

fn first_line(cmd: &str, args: &[&str], dir: Option<&Path>) -> Option<String> {
    let mut c = Command::new(cmd);
    c.args(args).stdin(Stdio::null()).stderr(Stdio::piped());
    if let Some(d) = dir {
        c.current_dir(d);
    }
    let o = c.output().ok()?;
    if !o.status.success() {
        return None;
    }
    // some interpreters print their version on stderr
    let text = if o.stdout.is_empty() {
        o.stderr
    } else {
        o.stdout
    };
    String::from_utf8_lossy(&text)
        .lines()
        .next()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
}

fn uname() -> String {
    // SAFETY: uname fills the struct we pass.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut u) } != 0 {
        return String::new();
    }
    let f = |b: &[libc::c_char]| {
        let bytes: Vec<u8> = b
            .iter()
            .take_while(|c| **c != 0)
            .map(|c| *c as u8)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    format!("{} {} {}", f(&u.sysname), f(&u.release), f(&u.machine))
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes.
    if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } != 0 {
        return String::new();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Which executor runs a run's tasks: `local-process`, or `docker` (which
/// [`crate::driver::drive`] reads). A workflow may ask for either as `docker` or `local` under
/// the same name; `weir run` honours that (see [`executor_for`]).
pub const EXECUTOR: &str = weir_core::run::EXECUTOR_ANNOTATION;

/// What a template's `weir.dev/executor` annotation asks for, if anything.
fn template_executor(t: &weir_core::spec::Template) -> Option<&str> {
    t.metadata
        .as_ref()?
        .get("annotations")?
        .get(EXECUTOR)?
        .as_str()
}

/// The templates `sub` may run: its own and its library's.
fn templates(sub: &Submission) -> impl Iterator<Item = &weir_core::spec::Template> {
    sub.workflow
        .spec
        .templates
        .iter()
        .chain(sub.library.iter().flat_map(|d| d.spec.templates.iter()))
}

/// Whether a template of `sub` asks for containers (`weir.dev/executor: docker`).
pub fn asks_for_containers(sub: &Submission) -> bool {
    templates(sub).any(|t| template_executor(t) == Some("docker"))
}

/// Where `sub`'s tasks run: as its own `weir.dev/executor` annotation asks (`docker` or
/// `local`), else `given` (`--executor`, or the server's). A server that runs containers
/// (`serves`, `given` Docker) keeps its tasks in them: a workflow asking for host processes
/// there is refused.
pub fn executor_for(
    sub: &Submission,
    given: crate::env::TaskExecutor,
    serves: bool,
) -> Result<crate::env::TaskExecutor, String> {
    use crate::env::TaskExecutor::{Docker, Local};
    if serves
        && given == Docker
        && let Some(t) = templates(sub).find(|t| {
            template_executor(t).and_then(weir_core::run::ExecutorKind::of)
                == Some(weir_core::run::ExecutorKind::Local)
        })
    {
        return Err(format!(
            "template `{}`: metadata.annotations.{EXECUTOR}: this server runs every task in a \
             container (--executor docker); it does not run tasks as host processes",
            t.name
        ));
    }
    match sub
        .workflow
        .metadata
        .annotations
        .get(EXECUTOR)
        .map(String::as_str)
    {
        None => Ok(given),
        Some("docker") => Ok(Docker),
        Some("local" | "local-process") if serves && given == Docker => Err(format!(
            "metadata.annotations.{EXECUTOR}: this server runs every task in a container \
             (--executor docker); it does not run tasks as host processes"
        )),
        Some("local" | "local-process") => Ok(Local),
        Some(other) => Err(format!(
            "metadata.annotations.{EXECUTOR}: `{other}` is not an executor: docker or local"
        )),
    }
}

/// The record's annotations for a submission; `file` is the workflow file when there is one;
/// `executor` runs its tasks.
pub fn annotate(sub: &mut Submission, file: Option<&Path>, executor: crate::env::TaskExecutor) {
    let mut a = BTreeMap::new();
    a.insert(SPEC_HASH.to_string(), spec_hash(sub));
    a.insert(
        "weir.dev/weir-version".into(),
        env!("CARGO_PKG_VERSION").to_string(),
    );
    a.insert("weir.dev/host".into(), hostname());
    a.insert("weir.dev/os".into(), uname());
    a.insert(EXECUTOR.into(), executor.name().into());
    // the interpreters the templates call, with their versions
    let mut programs: Vec<String> = templates(sub)
        .filter_map(|t| t.script.as_ref().or(t.container.as_ref()))
        .filter_map(|c| c.command.first().cloned())
        .filter(|p| !p.contains('{') && !p.contains('/'))
        .collect();
    programs.sort();
    programs.dedup();
    let versions: Vec<String> = programs
        .iter()
        .take(8)
        .filter(|p| {
            matches!(
                p.as_str(),
                "python"
                    | "python3"
                    | "node"
                    | "ruby"
                    | "perl"
                    | "bash"
                    | "R"
                    | "Rscript"
                    | "java"
                    | "julia"
            )
        })
        .filter_map(|p| first_line(p, &["--version"], None).map(|v| format!("{p}: {v}")))
        .collect();
    if !versions.is_empty() {
        a.insert("weir.dev/interpreters".into(), versions.join("; "));
    }
    if let Some(dir) = file.and_then(|f| f.parent()) {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        if let Some(commit) = first_line("git", &["rev-parse", "HEAD"], Some(dir)) {
            let dirty = first_line(
                "git",
                &["status", "--porcelain", "--untracked-files=no"],
                Some(dir),
            )
            .is_some();
            a.insert(
                "weir.dev/git-commit".into(),
                if dirty {
                    format!("{commit}-dirty")
                } else {
                    commit
                },
            );
        }
    }
    sub.workflow.metadata.annotations.extend(a);
}
