//! Reading workflow files into a submission: the main file, `--with` files and directories,
//! parameters from `-p` and `--parameter-file`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use weir_core::diag::{Diagnostic, Diags, Severity};
use weir_core::load::{Loaded, load_str};
use weir_core::run::Problem;
use weir_core::spec::{Definition, Kind};

use crate::ambient::random_suffix;
use crate::ambient::random_uid;
use crate::usage::{Invalid, Usage};

/// Everything loaded from the command line's files.
#[derive(Default)]
pub struct Bundle {
    pub main: Loaded,
    pub library: Loaded,
    pub warnings: Vec<Diagnostic>,
}

pub fn read(path: &Path) -> Result<String> {
    if path == Path::new("-") {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s).context("reading stdin")?;
        return Ok(s);
    }
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// Loads one file; errors become a usage error listing every problem.
pub fn load_file(
    path: &Path,
    errors: &mut Vec<Diagnostic>,
    warnings: &mut Vec<Diagnostic>,
) -> Result<Loaded> {
    let src = read(path)?;
    let mut diags = Diags::new(&path.display().to_string());
    let loaded = load_str(&src, &mut diags);
    for d in diags.items {
        match d.severity {
            Severity::Error => errors.push(d),
            Severity::Warning => warnings.push(d),
        }
    }
    Ok(loaded)
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            yaml_files(&p, out)?;
        } else if matches!(
            p.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            out.push(p);
        }
    }
    Ok(())
}

/// A `--with` argument's files: the file itself, or a directory's YAML/JSON files.
pub fn yaml_files_of(p: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    if p.is_dir() {
        yaml_files(p, out)
    } else {
        out.push(p.to_path_buf());
        Ok(())
    }
}

/// Loads the main file and the `--with` files.
pub fn load_bundle(main: &Path, with: &[PathBuf]) -> Result<Bundle> {
    let mut errors = Vec::new();
    let mut b = Bundle::default();
    b.main = load_file(main, &mut errors, &mut b.warnings)?;
    for w in with {
        let mut paths = Vec::new();
        yaml_files_of(w, &mut paths)?;
        for p in paths {
            // Problems in library files only matter for documents we use: report them as warnings.
            let mut lib_errors = Vec::new();
            let l = load_file(&p, &mut lib_errors, &mut Vec::new())?;
            b.warnings.extend(lib_errors.into_iter().map(|mut d| {
                d.severity = Severity::Warning;
                d.message = format!("{} (document skipped)", d.message);
                d
            }));
            b.library.definitions.extend(
                l.definitions
                    .into_iter()
                    .filter(|d| d.kind != Kind::Workflow && d.kind != Kind::CronWorkflow),
            );
            b.library.config_maps.extend(l.config_maps);
            b.library.secrets.extend(l.secrets);
        }
    }
    if !errors.is_empty() {
        return Err(Invalid(
            errors
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("\n"),
        )
        .into());
    }
    Ok(b)
}

/// `name=value` pairs from `-p` and a `--parameter-file` (a YAML/JSON mapping).
pub fn parameters(ps: &[String], file: Option<&Path>) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    if let Some(f) = file {
        let src = read(f)?;
        let docs = weir_core::yaml::parse_documents(&src).map_err(|e| {
            Usage(format!(
                "{}:{}:{}: invalid YAML: {}",
                f.display(),
                e.pos.line,
                e.pos.col,
                e.message
            ))
        })?;
        for d in docs {
            let v = weir_core::yaml::to_json_untyped(&d);
            let serde_json::Value::Object(m) = v else {
                return Err(Usage(format!(
                    "{}: a parameter file must be a mapping of name: value",
                    f.display()
                ))
                .into());
            };
            for (k, v) in m {
                out.push((
                    k,
                    match v {
                        serde_json::Value::String(s) => s,
                        other => other.to_string(),
                    },
                ));
            }
        }
    }
    for p in ps {
        let Some((k, v)) = p.split_once('=') else {
            return Err(Usage(format!("-p {p}: expected NAME=VALUE")).into());
        };
        out.push((k.trim().to_string(), v.to_string()));
    }
    Ok(out)
}

/// Formats validation problems with their file:line:column.
pub fn locate(problems: &[Problem], workflow: &Definition, library: &[Definition]) -> String {
    problems
        .iter()
        .map(|p| {
            let def = library
                .iter()
                .find(|d| {
                    p.message.starts_with(&format!(
                        "{} `{}`:",
                        d.kind.as_str(),
                        d.metadata.name.as_deref().unwrap_or_default()
                    ))
                })
                .unwrap_or(workflow);
            let pos = def.locate(&p.path);
            format!(
                "{}:{}:{}: error: {}: {}",
                def.file, pos.line, pos.col, p.path, p.message
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// What checking `def` (a Workflow, or a template or CronWorkflow checked as one would be
/// run) with `library` finds, located in its file; None: nothing. Arguments a template leaves
/// for its submitter are given a placeholder.
pub fn lint(
    def: &Definition,
    library: Vec<Definition>,
    config_maps: Vec<weir_core::spec::DataMap>,
    secrets: Vec<weir_core::spec::DataMap>,
) -> Option<String> {
    let mut wf = def.clone();
    wf.kind = Kind::Workflow;
    let parameters = if def.kind == Kind::Workflow {
        Vec::new()
    } else {
        wf.spec
            .arguments
            .parameters
            .iter()
            .filter(|x| x.value.is_none() && x.default.is_none())
            .map(|x| (x.name.clone(), "x".to_string()))
            .collect()
    };
    let sub = weir_core::run::Submission {
        key: None,
        name: "lint".into(),
        uid: String::new(),
        namespace: "default".into(),
        created_at: 0,
        parameters,
        workflow: wf.clone(),
        library: library.clone(),
        config_maps,
        secrets,
    };
    let found = if def.kind == Kind::Workflow {
        weir_core::run::Run::start(sub).err().unwrap_or_default()
    } else {
        weir_core::run::Run::check_template(&sub)
    };
    (!found.is_empty()).then(|| locate(&found, &wf, &library))
}

/// Kubernetes-only fields: accepted and kept with the run, but with no effect on one host.
const KUBERNETES_ONLY: &[&str] = &[
    "nodeSelector",
    "tolerations",
    "affinity",
    "podSpecPatch",
    "serviceAccountName",
    "automountServiceAccountToken",
    "priorityClassName",
    "dnsConfig",
    "dnsPolicy",
    "podMetadata",
    "schedulerName",
    "hostNetwork",
    "podDisruptionBudget",
    "executor",
    "hostAliases",
    "runtimeClassName",
    // a template's pod priority; `spec.priority` orders lock queues and is not warned about
    "priority",
];

/// Fields only the Docker executor acts on.
const CONTAINERS_ONLY: &[&str] = &["securityContext", "imagePullSecrets", "imagePullPolicy"];

/// Fields weir accepts but does not act on yet.
const NOT_YET: &[&str] = &["archiveLocation"];

/// One warning per Kubernetes-only or not-yet-supported field of a workflow document, and per
/// container that would run its image's own entrypoint (its nodes fail on this host).
pub fn field_warnings(def: &Definition) -> Vec<String> {
    let entrypoints = weir_core::run::image_entrypoints(&def.spec)
        .into_iter()
        .map(|p| {
            let (line, col) = def
                .positions
                .get(&p.path)
                .map(|pos| (pos.line, pos.col))
                .unwrap_or((1, 1));
            format!(
                "{}:{line}:{col}: warning: {}: {}",
                def.file, p.path, p.message
            )
        });
    let ignored = def.positions.iter().filter_map(|(path, pos)| {
        let last = path.rsplit('.').next().unwrap_or_default();
        let why = if matches!(
            path.as_str(),
            "spec.priority"
                | "spec.ttlStrategy"
                | "spec.podGC"
                | "spec.artifactGC"
                | "spec.archiveLogs"
        ) || path.ends_with(".archiveLogs")
        {
            // acted on (logs are always kept, so archiveLogs asks for what weir does)
            return None;
        } else if last == "artifactGC" {
            // an artifact's own artifactGC is acted on too
            return None;
        } else if KUBERNETES_ONLY.contains(&last) {
            "has no effect when running on one host (kept, ignored)"
        } else if CONTAINERS_ONLY.contains(&last) {
            "applies to containers only (--executor docker); host processes ignore it"
        } else if NOT_YET.contains(&last) {
            "is not supported by weir yet (kept, ignored)"
        } else {
            return None;
        };
        Some(format!(
            "{}:{}:{}: warning: {path}: {why}",
            def.file, pos.line, pos.col
        ))
    });
    ignored.chain(entrypoints).collect()
}

/// Picks the document `weir run` runs: the first Workflow (else the first template kind).
pub fn pick_workflow(main: &Loaded, file: &Path) -> Result<Definition> {
    let wf = main
        .definitions
        .iter()
        .find(|d| d.kind == Kind::Workflow)
        .or_else(|| main.definitions.first());
    match wf {
        Some(d) => {
            let mut d = d.clone();
            d.kind = Kind::Workflow;
            Ok(d)
        }
        None => Err(Usage(format!("{}: no Workflow document found", file.display())).into()),
    }
}

/// A submission of `wf` with the templates, ConfigMaps and Secrets of `main` and `library`.
pub fn submission(
    store: &weir_store::Store,
    wf: Definition,
    main: &Loaded,
    library: &Loaded,
    parameters: Vec<(String, String)>,
    name: Option<String>,
) -> Result<weir_core::run::Submission> {
    let mut defs: Vec<_> = library.definitions.clone();
    defs.extend(
        main.definitions
            .iter()
            .filter(|d| d.kind != Kind::Workflow)
            .cloned(),
    );
    let mut config_maps = library.config_maps.clone();
    config_maps.extend(main.config_maps.iter().cloned());
    let mut secrets = library.secrets.clone();
    secrets.extend(main.secrets.iter().cloned());
    let namespace = wf
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let name = match (name, &wf.metadata.name, &wf.metadata.generate_name) {
        (Some(n), _, _) => n,
        (None, Some(n), _) if !store.name_taken(&namespace, n)? => n.clone(),
        (None, Some(n), _) => format!("{n}-{}", random_suffix()),
        (None, None, Some(g)) => loop {
            // five characters, as Kubernetes: names can repeat, so draw again until one is free
            let n = format!("{g}{}", random_suffix());
            if !store.name_taken(&namespace, &n)? {
                break n;
            }
        },
        (None, None, None) => format!("workflow-{}", random_suffix()),
    };
    Ok(weir_core::run::Submission {
        uid: random_uid(),
        namespace,
        name,
        created_at: crate::ambient::now_ms(),
        workflow: wf,
        library: defs,
        config_maps,
        secrets,
        parameters,
        key: None,
    })
}

/// A new submission of a stored run's workflow (`resubmit`): a fresh name from its
/// `generateName` (or name), a new uid, and `parameters` added to the original ones.
pub fn resubmission(
    mut sub: weir_core::run::Submission,
    parameters: Vec<(String, String)>,
) -> weir_core::run::Submission {
    let meta = &sub.workflow.metadata;
    let base = meta
        .generate_name
        .clone()
        .unwrap_or_else(|| format!("{}-", meta.name.clone().unwrap_or(sub.name.clone())));
    sub.name = format!("{base}{}", random_suffix());
    sub.key = None;
    sub.uid = random_uid();
    sub.created_at = crate::ambient::now_ms();
    sub.parameters.extend(parameters);
    sub
}
