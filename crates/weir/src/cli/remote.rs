//! The verbs against a server (`--server URL`): the same commands over its API.

use std::process::ExitCode;

use anyhow::Result;

use super::*;
use crate::files;
use crate::show;

/// The verbs against a `weir server`.
pub(super) fn remote_main(r: &crate::remote::Remote, cmd: Cmd) -> Result<ExitCode> {
    use crate::remote;
    let print_json = |v: &serde_json::Value, output: Option<Output>| -> Result<()> {
        match output {
            Some(Output::Yaml) => print!("{}", show::to_yaml(v)),
            _ => println!("{}", serde_json::to_string_pretty(v)?),
        }
        Ok(())
    };
    match cmd {
        Cmd::Run {
            submit,
            output,
            no_logs,
            resume: None,
        } => {
            if submit.entrypoint.is_some() {
                return Err(Usage(
                    "--entrypoint is not supported with --server; set spec.entrypoint in the file"
                        .into(),
                )
                .into());
            }
            let mut text = files::read(&submit.file)?;
            for w in &submit.with {
                let mut paths = Vec::new();
                files::yaml_files_of(w, &mut paths)?;
                for p in paths {
                    text += "\n---\n";
                    text += &files::read(&p)?;
                }
            }
            let mut params = submit.parameters.clone();
            if let Some(f) = &submit.parameter_file {
                params.extend(
                    files::parameters(&[], Some(f))?
                        .into_iter()
                        .map(|(k, v)| format!("{k}={v}")),
                );
            }
            let name = r.submit(text, &params, submit.name.as_deref())?;
            let quiet = matches!(output, Some(Output::Json | Output::Yaml | Output::Name));
            if !quiet {
                eprintln!("submitted {name} to {}", r.namespace);
            }
            let phase = r.watch(&name, !quiet && !no_logs)?;
            match output {
                Some(Output::Json | Output::Yaml) => print_json(&r.get(&name)?, output)?,
                Some(Output::Name) => println!("{name}"),
                _ => eprintln!("{name}: {phase}"),
            }
            Ok(remote::exit(&phase))
        }
        Cmd::Run {
            resume: Some(run),
            no_logs,
            ..
        } => {
            r.action(&run, "resume", remote::resume_body(&[], None))?;
            Ok(remote::exit(&r.watch(&run, !no_logs)?))
        }
        Cmd::List {
            status,
            output,
            limit,
        } => {
            let v = r.list(status.as_deref(), limit)?;
            match output {
                Some(Output::Json | Output::Yaml) => print_json(&v["items"], output)?,
                Some(Output::Name) => {
                    for i in v["items"].as_array().into_iter().flatten() {
                        println!("{}", i["name"].as_str().unwrap_or(""));
                    }
                }
                _ => print!("{}", remote::list_text(&v)),
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Get { run, output } => {
            let v = r.get(&run)?;
            match output {
                Some(Output::Json | Output::Yaml) => print_json(&v, output)?,
                Some(Output::Name) => println!("{}", v["metadata"]["name"].as_str().unwrap_or("")),
                _ => print!("{}", remote::get_text(&v)),
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Logs { run, node, follow } => {
            r.logs(&run, node.as_deref(), follow)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Retry { run, no_logs } => {
            r.action(&run, "retry", serde_json::json!({}))?;
            Ok(remote::exit(&r.watch(&run, !no_logs)?))
        }
        Cmd::Resubmit {
            run,
            parameters,
            no_logs,
        } => {
            let v = r.action(
                &run,
                "resubmit",
                serde_json::json!({"parameters": parameters}),
            )?;
            let name = v["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            println!("resubmitted {run} as {name}");
            Ok(remote::exit(&r.watch(&name, !no_logs)?))
        }
        Cmd::Stop { run } => control_remote(r, &run, "stop", "stopped"),
        Cmd::Terminate { run } => control_remote(r, &run, "terminate", "terminated"),
        Cmd::Suspend { run } => control_remote(r, &run, "suspend", "suspended"),
        Cmd::Resume {
            run,
            parameters,
            node_field_selector,
            ..
        } => {
            r.action(
                &run,
                "resume",
                remote::resume_body(&parameters, node_field_selector),
            )?;
            println!("run {run} resumed");
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Runs {
            cmd: RunsCmd::Compare { runs, output },
        } => {
            let mut rows = Vec::new();
            for run in &runs {
                let m = r.metrics(run)?;
                rows.push(serde_json::json!({"name": run, "phase": m["phase"],
                    "parameters": m["parameters"], "final": m["final"]}));
            }
            print_compare(&rows, output)
        }
        Cmd::Lineage {
            target,
            downstream,
            output,
            ..
        } => print_lineage(&r.lineage(&target, downstream)?, output),
        Cmd::Delete { runs, all } => {
            if all {
                return Err(Usage(
                    "delete --all is not supported with --server; name the runs".into(),
                )
                .into());
            }
            for run in runs {
                r.delete(&run)?;
                println!("deleted {run}");
            }
            Ok(ExitCode::SUCCESS)
        }
        other => Err(Usage(format!(
            "`weir {}` works on a local database only; unset WEIR_SERVER (or drop --server)",
            verb_name(&other)
        ))
        .into()),
    }
}

pub(super) fn print_lineage(v: &serde_json::Value, output: Option<Output>) -> Result<ExitCode> {
    match output {
        Some(Output::Json) => println!("{}", serde_json::to_string_pretty(v)?),
        Some(Output::Yaml) => print!("{}", show::to_yaml(v)),
        _ => print!("{}", crate::lineage::text(v)),
    }
    Ok(ExitCode::SUCCESS)
}

/// `weir runs compare`: one column per run, a row per parameter and per metric.
pub(super) fn print_compare(
    rows: &[serde_json::Value],
    output: Option<Output>,
) -> Result<ExitCode> {
    if matches!(output, Some(Output::Json | Output::Yaml)) {
        let v = serde_json::Value::Array(rows.to_vec());
        match output {
            Some(Output::Yaml) => print!("{}", show::to_yaml(&v)),
            _ => println!("{}", serde_json::to_string_pretty(&v)?),
        }
        return Ok(ExitCode::SUCCESS);
    }
    let keys = |field: &str| {
        let mut k: Vec<String> = rows
            .iter()
            .flat_map(|r| {
                r[field]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, _)| k.clone())
            })
            .collect();
        k.sort();
        k.dedup();
        k
    };
    let cell = |v: &serde_json::Value| match v {
        serde_json::Value::Null => "-".to_string(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut table: Vec<Vec<String>> = vec![
        std::iter::once("".to_string())
            .chain(rows.iter().map(|r| cell(&r["name"])))
            .collect(),
        std::iter::once("phase".to_string())
            .chain(rows.iter().map(|r| cell(&r["phase"])))
            .collect(),
    ];
    for k in keys("parameters") {
        table.push(
            std::iter::once(format!("param {k}"))
                .chain(rows.iter().map(|r| cell(&r["parameters"][&k])))
                .collect(),
        );
    }
    for k in keys("final") {
        table.push(
            std::iter::once(format!("metric {k}"))
                .chain(rows.iter().map(|r| cell(&r["final"][&k])))
                .collect(),
        );
    }
    let widths: Vec<usize> = (0..table[0].len())
        .map(|c| table.iter().map(|row| row[c].len()).max().unwrap_or(0) + 2)
        .collect();
    for row in &table {
        let line: String = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", line.trim_end());
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn control_remote(
    r: &crate::remote::Remote,
    run: &str,
    verb: &str,
    done: &str,
) -> Result<ExitCode> {
    r.action(run, verb, serde_json::json!({}))?;
    println!("run {run} {done}");
    Ok(ExitCode::SUCCESS)
}

pub(super) fn verb_name(c: &Cmd) -> &'static str {
    match c {
        Cmd::Server { .. } => "server",
        Cmd::Token { .. } => "token",
        Cmd::Cache { .. } => "cache",
        Cmd::Sync { .. } => "sync",
        Cmd::Metrics { .. } => "metrics",
        Cmd::Lint { .. } => "lint",
        _ => "this verb",
    }
}
