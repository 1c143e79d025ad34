//! The verbs on a local database: run, lint, list, get, logs, retry, rerun, resubmit, resume,
//! the control verbs, tokens, caches, locks and deletion.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Result, bail};
use weir_core::run::{Event, Phase, Submission};
use weir_store::Store;

use super::*;
use crate::ambient::now_ms;
use crate::driver::Watch;
use crate::driver::{self, load_run};
use crate::env::Env;
use crate::files;
use crate::show;
use crate::usage::Invalid;
use crate::watch::{Silent, Terminal};

pub(super) fn exit_for(phase: Phase) -> ExitCode {
    if phase == Phase::Succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

pub(super) fn print_warnings(w: &[weir_core::diag::Diagnostic]) {
    for d in w {
        eprintln!("{d}");
    }
}

/// Loads files and validates: a submission ready to store, or a usage error.
pub(super) fn prepare(
    submit: &Submit,
    store: &Store,
    executor: crate::env::TaskExecutor,
) -> Result<Submission> {
    let bundle = files::load_bundle(&submit.file, &submit.with)?;
    print_warnings(&bundle.warnings);
    let mut wf = files::pick_workflow(&bundle.main, &submit.file)?;
    for w in files::field_warnings(&wf) {
        eprintln!("{w}");
    }
    if let Some(e) = &submit.entrypoint {
        wf.spec.entrypoint = Some(e.clone());
    }
    if submit.no_cache {
        wf.metadata
            .annotations
            .insert("weir.dev/no-cache".into(), "true".into());
    }
    if let Some(repo) = &submit.artifact_repository {
        if !repo.starts_with("s3://") {
            return Err(Usage(format!(
                "--artifact-repository `{repo}`: expected s3://BUCKET[/PREFIX][?endpoint=…]"
            ))
            .into());
        }
        wf.metadata
            .annotations
            .insert("weir.dev/artifact-repository".into(), repo.clone());
    }
    let params = files::parameters(&submit.parameters, submit.parameter_file.as_deref())?;
    let mut sub = files::submission(
        store,
        wf,
        &bundle.main,
        &bundle.library,
        params,
        submit.name.clone(),
    )?;
    let file = (submit.file != std::path::Path::new("-")).then_some(submit.file.as_path());
    let executor = crate::record::executor_for(&sub, executor, false).map_err(Usage)?;
    crate::record::annotate(&mut sub, file, executor);
    Ok(sub)
}

pub(super) fn watcher(output: Option<Output>, no_logs: bool) -> Box<dyn Watch> {
    match output {
        Some(Output::Json | Output::Yaml | Output::Name) => Box::new(Silent),
        _ => Box::new(Terminal::new(!no_logs)),
    }
}

pub(super) fn run(
    env: &Env,
    submit: Submit,
    output: Option<Output>,
    no_logs: bool,
) -> Result<ExitCode> {
    let mut store = env.store()?;
    let sub = prepare(&submit, &store, env.executor)?;
    let driver::Admitted { run, actions, lock } = driver::admit(env, &mut store, sub)?;
    let key = run.submission().key().to_string();
    driver::install_interrupt_handler();
    let mut watch = watcher(output, no_logs);
    let phase = driver::drive(env, store, run, actions, Vec::new(), watch.as_mut())?;
    drop(lock);
    print_final(env, &key, output)?;
    report_rusage();
    Ok(exit_for(phase))
}

/// For `bench/run`: with `WEIR_RUSAGE_FILE` set, writes this process's own CPU time (user and
/// system seconds, all engine threads, not the tasks) and peak RSS (KiB) to that file.
pub(super) fn report_rusage() {
    let Some(path) = &crate::env::Settings::get().rusage_file else {
        return;
    };
    // SAFETY: getrusage fills the struct we pass.
    let mut r: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut r) } != 0 {
        return;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let _ = std::fs::write(
        path,
        format!(
            "{:.6} {:.6} {}\n",
            secs(r.ru_utime),
            secs(r.ru_stime),
            r.ru_maxrss
        ),
    );
}

pub(super) fn print_final(env: &Env, name: &str, output: Option<Output>) -> Result<()> {
    match output {
        Some(Output::Json) | Some(Output::Yaml) => {
            let run = load_run(&env.store()?, name)?;
            let v = show::run_json(&run);
            let text = if output == Some(Output::Json) {
                serde_json::to_string_pretty(&v)? + "\n"
            } else {
                show::to_yaml(&v)
            };
            print!("{}", weir_exec::mask(&text, &run.secret_values()));
        }
        Some(Output::Name) => println!("{name}"),
        _ => {}
    }
    Ok(())
}

pub(super) fn lint(paths: &[PathBuf], with: &[PathBuf]) -> Result<ExitCode> {
    if paths.is_empty() {
        return Err(Usage("lint: give at least one file".into()).into());
    }
    let mut problems = Vec::new();
    let mut lib_bundle = files::Bundle::default();
    if !with.is_empty() {
        let dummy = paths[0].clone();
        lib_bundle = files::load_bundle(&dummy, with).unwrap_or_default();
    }
    for p in paths {
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        let loaded = files::load_file(p, &mut errors, &mut warnings)?;
        print_warnings(&warnings);
        problems.extend(errors.iter().map(|e| e.to_string()));
        for def in &loaded.definitions {
            let mut library = lib_bundle.library.definitions.clone();
            library.extend(
                loaded
                    .definitions
                    .iter()
                    .filter(|d| d.kind != weir_core::spec::Kind::Workflow)
                    .cloned(),
            );
            for w in files::field_warnings(def) {
                eprintln!("{w}");
            }
            let config_maps = lib_bundle
                .library
                .config_maps
                .iter()
                .chain(&loaded.config_maps)
                .cloned()
                .collect();
            let secrets = lib_bundle
                .library
                .secrets
                .iter()
                .chain(&loaded.secrets)
                .cloned()
                .collect();
            if let Some(found) = files::lint(def, library, config_maps, secrets) {
                problems.push(found);
            }
        }
        if errors.is_empty() && problems.is_empty() {
            println!("✔ {}", p.display());
        }
    }
    if problems.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(Invalid(problems.join("\n")).into())
    }
}

pub(super) fn list(
    env: &Env,
    status: Option<String>,
    output: Option<Output>,
    limit: usize,
) -> Result<ExitCode> {
    let store = env.store()?;
    let phases: Vec<String> = status
        .map(|s| s.split(',').map(|x| x.trim().to_string()).collect())
        .unwrap_or_default();
    let runs = store.list(&phases, limit)?;
    match output {
        Some(Output::Name) => runs.iter().for_each(|r| println!("{}", r.name)),
        Some(Output::Json | Output::Yaml) => {
            let v: Vec<serde_json::Value> = runs
                .iter()
                .map(|r| serde_json::json!({"name": r.name, "namespace": r.namespace, "phase": r.phase,
                    "createdAt": weir_core::run::rfc3339_pub(r.created_at),
                    "finishedAt": r.finished_at.map(weir_core::run::rfc3339_pub), "message": r.message}))
                .collect();
            let v = serde_json::Value::Array(v);
            if output == Some(Output::Json) {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print!("{}", show::to_yaml(&v));
            }
        }
        _ => print!(
            "{}",
            show::list_text(&runs, output == Some(Output::Wide), now_ms())
        ),
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn get(env: &Env, name: &str, output: Option<Output>) -> Result<ExitCode> {
    let store = env.store()?;
    let run = load_run(&store, name)?;
    let secrets = run.secret_values();
    match output {
        Some(Output::Json) => println!(
            "{}",
            weir_exec::mask(
                &serde_json::to_string_pretty(&show::run_json(&run))?,
                &secrets
            )
        ),
        Some(Output::Yaml) => print!(
            "{}",
            weir_exec::mask(&show::to_yaml(&show::run_json(&run)), &secrets)
        ),
        Some(Output::Name) => println!("{}", run.submission().name),
        _ => print!(
            "{}",
            show::get_text(&run, output == Some(Output::Wide), now_ms())
        ),
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn logs(env: &Env, name: &str, node: Option<&str>, follow: bool) -> Result<ExitCode> {
    let store = env.store()?;
    let name = store.resolve(name)?;
    let mut offsets: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    loop {
        let run = load_run(&store, &name)?;
        let pods = show::log_nodes(&run, node);
        if node.is_some()
            && pods.is_empty()
            && run.nodes().iter().all(|n| Some(n.id.as_str()) != node)
        {
            bail!("run {name} has no task node `{}`", node.unwrap_or_default());
        }
        let mut out = std::io::stdout().lock();
        for line in show::new_log_lines(&env.work_root(), &run, node, &mut offsets) {
            let _ = writeln!(out, "{line}");
        }
        drop(out);
        if !follow || run.phase().is_done() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn retry(env: &Env, name: &str, no_logs: bool) -> Result<ExitCode> {
    let store = env.store()?;
    let name = store.resolve(name)?;
    let (run, lock) = driver::retry(env, &store, &name)?;
    driver::install_interrupt_handler();
    let mut w = watcher(None, no_logs);
    let phase = driver::drive(env, store, run, Vec::new(), vec![Event::Retry], w.as_mut())?;
    drop(lock);
    Ok(exit_for(phase))
}

pub(super) fn rerun(env: &Env, name: &str, no_logs: bool) -> Result<ExitCode> {
    let mut store = env.store()?;
    let name = store.resolve(name)?;
    let original = load_run(&store, &name)?;
    // what came from outside the run, and what it was then
    let mut expected = std::collections::BTreeMap::new();
    for n in original.nodes() {
        for a in &n.input_artifacts {
            if let Some(u) = &a.url {
                expected.insert(u.clone(), a.hash.clone());
            }
        }
    }
    let mut sub = files::resubmission(original.submission().clone(), Vec::new());
    let ann = &mut sub.workflow.metadata.annotations;
    ann.insert(crate::record::RERUN_OF.into(), name.clone());
    ann.insert("weir.dev/no-cache".into(), "true".into());
    if !expected.is_empty() {
        ann.insert(
            crate::record::EXPECTED_INPUTS.into(),
            serde_json::to_string(&expected)?,
        );
    }
    let driver::Admitted { run, actions, lock } = driver::admit(env, &mut store, sub)?;
    let key = run.submission().key().to_string();
    println!("rerunning {name} as {}", run.submission().name);
    driver::install_interrupt_handler();
    let mut w = watcher(None, no_logs);
    let phase = driver::drive(env, store, run, actions, Vec::new(), w.as_mut())?;
    drop(lock);
    let after = load_run(&env.store()?, &key)?;
    // outputs by their node's path below the run (the run's own name differs)
    let digests = |r: &weir_core::run::Run| -> std::collections::BTreeMap<String, String> {
        let run = r.submission().name.clone();
        r.nodes()
            .iter()
            .flat_map(|n| {
                let path = n
                    .name
                    .strip_prefix(run.as_str())
                    .unwrap_or(&n.name)
                    .to_string();
                n.outputs
                    .artifacts
                    .iter()
                    .map(move |a| (format!("{path}/{}", a.name), a.hash.clone()))
            })
            .collect()
    };
    let (was, now) = (digests(&original), digests(&after));
    let same = now.iter().filter(|(k, v)| was.get(*k) == Some(v)).count();
    println!(
        "{} of {} output artifacts are identical to {name}'s",
        same,
        now.len()
    );
    Ok(exit_for(phase))
}

pub(super) fn resubmit(
    env: &Env,
    name: &str,
    params: &[String],
    no_logs: bool,
) -> Result<ExitCode> {
    let mut store = env.store()?;
    let name = store.resolve(name)?;
    let rec = store.load(&name)?;
    let sub = files::resubmission(rec.submission, files::parameters(params, None)?);
    let driver::Admitted { run, actions, lock } = driver::admit(env, &mut store, sub)?;
    println!("resubmitted {name} as {}", run.submission().name);
    driver::install_interrupt_handler();
    let mut w = watcher(None, no_logs);
    let phase = driver::drive(env, store, run, actions, Vec::new(), w.as_mut())?;
    drop(lock);
    Ok(exit_for(phase))
}

/// Resume: un-suspend a live run, or take over a run whose driver died and finish it.
pub(super) fn resume_run(
    env: &Env,
    name: &str,
    params: Vec<(String, String)>,
    selector: Option<String>,
    no_logs: bool,
) -> Result<ExitCode> {
    let mut store = env.store()?;
    let name = store.resolve(name)?;
    // values for `supplied` outputs must be among their `enum`: refused before anything is kept
    let problems = load_run(&store, &name)?.supplied_problems(&params, selector.as_deref());
    if !problems.is_empty() {
        return Err(Usage(problems.join("\n")).into());
    }
    let resume = Event::Resume {
        parameters: params,
        selector,
    };
    match driver::deliver(env, &mut store, &name, vec![resume])? {
        driver::Delivered::Sent => {
            println!("run {name} resumed");
            Ok(ExitCode::SUCCESS)
        }
        driver::Delivered::Finished(phase) => {
            println!("run {name} already finished: {phase}");
            Ok(exit_for(phase))
        }
        driver::Delivered::Adopted {
            run,
            actions,
            pending,
            lock,
        } => {
            driver::install_interrupt_handler();
            let mut w = watcher(None, no_logs);
            let phase = driver::drive(env, store, *run, actions, pending, w.as_mut())?;
            drop(lock);
            Ok(exit_for(phase))
        }
    }
}

/// stop / terminate / suspend: sent to the live driver, or applied here if there is none.
pub(super) fn control(env: &Env, name: &str, ev: Event, drive_after: bool) -> Result<ExitCode> {
    let mut store = env.store()?;
    let name = store.resolve(name)?;
    let verb = match ev {
        Event::Stop => "stopped",
        Event::Terminate => "terminated",
        _ => "suspended",
    };
    let terminate = matches!(ev, Event::Terminate);
    match driver::deliver(env, &mut store, &name, vec![ev])? {
        driver::Delivered::Sent => {}
        driver::Delivered::Finished(phase) => {
            println!("run {name} already finished: {phase}");
            return Ok(ExitCode::SUCCESS);
        }
        driver::Delivered::Adopted {
            run,
            actions,
            pending,
            lock,
        } => {
            if drive_after || terminate {
                let mut w = Silent;
                driver::drive(env, store, *run, actions, pending, &mut w)?;
            } else {
                // suspend with no live driver: record it; `weir resume` continues the run
                let mut run = *run;
                let now = now_ms();
                let batch: Vec<_> = pending.into_iter().map(|e| (now, e)).collect();
                for (at, e) in &batch {
                    run.step(e.clone(), *at);
                }
                store.append(&name, &batch, run.phase(), run.message(), run.finished_at())?;
            }
            drop(lock);
        }
    }
    println!("run {name} {verb}");
    Ok(ExitCode::SUCCESS)
}

pub(super) fn token(env: &Env, namespace: Option<String>, cmd: TokenCmd) -> Result<ExitCode> {
    let mut store = env.store()?;
    match cmd {
        TokenCmd::Create {
            role,
            expires,
            description,
        } => {
            let namespace = namespace.ok_or_else(|| {
                Usage("token create: name the namespace with -n NAMESPACE (`*` for all)".into())
            })?;
            let role = crate::server::Role::parse(&role)
                .ok_or_else(|| Usage(format!("role `{role}` is not viewer, editor or admin")))?;
            let now = now_ms();
            let expires_at = match expires {
                Some(e) => Some(
                    now + crate::server::parse_duration(&e).ok_or_else(|| {
                        Usage(format!(
                            "--expires `{e}` is not a duration like 30d, 12h or 15m"
                        ))
                    })?,
                ),
                None => None,
            };
            let (rec, token) =
                crate::server::new_token(&namespace, role, &description, now, expires_at)?;
            store.create_token(&rec)?;
            eprintln!(
                "token {} ({} of {}); it is not shown again:",
                rec.id, rec.role, rec.namespace
            );
            println!("{token}");
        }
        TokenCmd::List => {
            println!(
                "{:<14}{:<20}{:<8}{:<22}{:<22}DESCRIPTION",
                "ID", "NAMESPACE", "ROLE", "EXPIRES", "REVOKED"
            );
            let t = |x: Option<i64>| x.map(weir_core::run::rfc3339_pub).unwrap_or("-".into());
            for r in store.tokens(None)? {
                println!(
                    "{:<14}{:<20}{:<8}{:<22}{:<22}{}",
                    r.id,
                    r.namespace,
                    r.role,
                    t(r.expires_at),
                    t(r.revoked_at),
                    r.description
                );
            }
        }
        TokenCmd::Revoke { id } => {
            if !store.revoke_token(&id, now_ms())? {
                bail!("no unrevoked token `{id}`");
            }
            println!("revoked {id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn cache(env: &Env, cmd: CacheCmd) -> Result<ExitCode> {
    let mut store = env.store()?;
    match cmd {
        CacheCmd::List => {
            let rows = store.memo_list()?;
            let w = rows.iter().map(|r| r.0.len()).max().unwrap_or(5).max(5) + 2;
            println!("{:<w$}{:<30}{:<22}RUN", "CACHE", "KEY", "CREATED");
            for (c, k, at, run) in rows {
                println!("{c:<w$}{k:<30}{:<22}{run}", weir_core::run::rfc3339_pub(at));
            }
        }
        CacheCmd::Delete { cache, key } => {
            let cache = if cache.contains('/') {
                cache
            } else {
                crate::driver::memo_cache("default", &cache)
            };
            let n = store.memo_delete(&cache, key.as_deref())?;
            println!(
                "deleted {n} entr{} from {cache}",
                if n == 1 { "y" } else { "ies" }
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn sync(env: &Env, cmd: SyncCmd) -> Result<ExitCode> {
    let mut store = env.store()?;
    match cmd {
        SyncCmd::List => {
            let rows = store.sync_list()?;
            let w = rows.iter().map(|r| r.key.len()).max().unwrap_or(4).max(4) + 2;
            println!("{:<w$}{:<7}{:<40}WAITING", "LOCK", "LIMIT", "HOLDERS");
            for r in rows {
                println!(
                    "{:<w$}{:<7}{:<40}{}",
                    r.key,
                    r.limit,
                    r.holders.join(","),
                    r.waiting.join(",")
                );
            }
        }
        SyncCmd::Limit { key, limit } => {
            let key = if key.contains('/') {
                key
            } else {
                format!("default/Database/{key}")
            };
            store.set_sync_limit(&key, limit)?;
            match limit {
                Some(n) => println!("{key}: limit {n}"),
                None => println!("{key}: limit removed"),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn delete(env: &Env, runs: Vec<String>, all: bool) -> Result<ExitCode> {
    let mut store = env.store()?;
    let names: Vec<String> = if all {
        store
            .list(&[], usize::MAX)?
            .into_iter()
            .map(|r| r.key)
            .collect()
    } else {
        runs.iter()
            .map(|r| store.resolve(r))
            .collect::<Result<_, _>>()?
    };
    if names.is_empty() {
        return Err(Usage("delete: name runs, or --all".into()).into());
    }
    for n in names {
        if !driver::delete_run(env, &mut store, &n)? {
            bail!("run {n} is running; stop it first");
        }
        println!("deleted {n}");
    }
    Ok(ExitCode::SUCCESS)
}
