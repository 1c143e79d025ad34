//! `data` templates: the keys stored under a prefix of the artifact repository, transformed by
//! expr expressions over `data` (`filter(data, {# endsWith ".log"})`); the result is the JSON
//! of the final value.

use std::path::Path;

use crate::repo::LocalRepo;
use weir_core::expr::{self, Env, Mode, Val};
use weir_core::run::DataTask;

struct Data(Val);

impl Env for Data {
    fn var(&self, name: &str) -> Option<Val> {
        (name == "data").then(|| self.0.clone())
    }
}

/// Runs the task: its result text, or why it failed.
pub(crate) fn run(repo: &LocalRepo, d: &DataTask) -> Result<String, String> {
    let base = repo.path(&d.prefix).map_err(|e| e.to_string())?;
    let mut keys = Vec::new();
    if base.is_file() {
        keys.push(d.prefix.clone());
    } else {
        list(&base, &d.prefix, &mut keys)?;
    }
    keys.sort();
    let mut data = Val::List(keys.into_iter().map(Val::Str).collect());
    for e in &d.transformations {
        data = expr::eval(e, Mode::Expr, &Data(data))
            .map_err(|err| format!("transformation `{e}`: {}", err.0))?;
    }
    Ok(data.to_json().to_string())
}

/// The keys of the files under `dir` (which holds key `prefix`).
fn list(dir: &Path, prefix: &str, out: &mut Vec<String>) -> Result<(), String> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("{}: {e}", dir.display())),
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        // objects being written
        if name.ends_with(".partial") {
            continue;
        }
        let key = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        if e.path().is_dir() {
            list(&e.path(), &key, out)?;
        } else {
            out.push(key);
        }
    }
    Ok(())
}
