//! The server's configuration: built-in defaults, then a `weir.toml` file, then `WEIR_…`
//! environment variables, then flags, each overriding the one before. `--print-config` shows
//! the result, where each value came from, and secrets masked.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::usage::{Invalid, Usage};

/// What a `weir.toml` may hold.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    /// The database (as `--db`).
    pub db: Option<PathBuf>,
    #[serde(default)]
    pub server: ServerFile,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerFile {
    pub listen: Option<String>,
    pub insecure_local: Option<bool>,
    pub max_body: Option<usize>,
    pub log_format: Option<String>,
    pub otlp_endpoint: Option<String>,
    /// Headers sent with every OTLP export (an `authorization` token, say): secret.
    #[serde(default)]
    pub otlp_headers: BTreeMap<String, String>,
    /// The default artifact repository of every run submitted here (as `--artifact-repository`).
    pub artifact_repository: Option<String>,
    /// Where tasks run (as `--executor`): `local` or `docker`.
    pub executor: Option<crate::env::TaskExecutor>,
}

/// Values given on the command line or in the environment (clap merges those two, flags
/// first); `None` where neither said anything.
#[derive(Debug, Default)]
pub struct Given {
    pub db: Option<PathBuf>,
    pub executor: Option<crate::env::TaskExecutor>,
    pub listen: Option<String>,
    pub insecure_local: bool,
    pub max_body: Option<usize>,
    pub log_format: Option<String>,
    pub otlp_endpoint: Option<String>,
    pub artifact_repository: Option<String>,
}

/// The effective configuration, each value with where it came from.
#[derive(Debug)]
pub struct Effective {
    pub db: (PathBuf, &'static str),
    pub listen: (std::net::SocketAddr, &'static str),
    pub insecure_local: (bool, &'static str),
    pub max_body: (usize, &'static str),
    pub json_logs: (bool, &'static str),
    pub otlp_endpoint: (Option<String>, &'static str),
    pub otlp_headers: (BTreeMap<String, String>, &'static str),
    pub artifact_repository: (Option<String>, &'static str),
    pub executor: (crate::env::TaskExecutor, &'static str),
}

/// Reads `path` (an explicit `--config`/`WEIR_CONFIG` must exist; `./weir.toml` may not).
pub fn read(path: Option<&Path>) -> Result<(File, Option<PathBuf>)> {
    let (p, required) = match path {
        Some(p) => (p.to_path_buf(), true),
        None => (PathBuf::from("weir.toml"), false),
    };
    let text = match std::fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
            return Ok((File::default(), None));
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", p.display())),
    };
    let file: File = toml::from_str(&text).map_err(|e| {
        let (line, col) = e.span().map(|s| line_col(&text, s.start)).unwrap_or((1, 1));
        Invalid(format!(
            "{}:{line}:{col}: error: {}",
            p.display(),
            e.message()
        ))
    })?;
    Ok((file, Some(p)))
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
    (line, col)
}

/// Defaults, then the file, then what was given.
pub fn merge(file: File, given: Given, default_db: PathBuf) -> Result<Effective> {
    fn pick<T>(given: Option<T>, file: Option<T>, default: T) -> (T, &'static str) {
        match (given, file) {
            (Some(v), _) => (v, "flag or environment"),
            (None, Some(v)) => (v, "file"),
            (None, None) => (default, "default"),
        }
    }
    let s = file.server;
    let (listen, listen_src) = pick(given.listen, s.listen, "127.0.0.1:2746".into());
    let listen = listen
        .parse()
        .map_err(|_| Usage(format!("listen address `{listen}` is not HOST:PORT")))?;
    let (format, format_src) = pick(given.log_format, s.log_format, "text".into());
    if format != "text" && format != "json" {
        return Err(Usage(format!("log format `{format}` is not text or json")).into());
    }
    let insecure = if given.insecure_local {
        (true, "flag or environment")
    } else {
        pick(None, s.insecure_local, false)
    };
    Ok(Effective {
        db: pick(given.db, file.db, default_db),
        executor: pick(given.executor, s.executor, Default::default()),
        listen: (listen, listen_src),
        insecure_local: insecure,
        max_body: pick(given.max_body, s.max_body, 8 << 20),
        json_logs: (format == "json", format_src),
        otlp_endpoint: match (given.otlp_endpoint, s.otlp_endpoint) {
            (Some(v), _) => (Some(v), "flag or environment"),
            (None, Some(v)) => (Some(v), "file"),
            (None, None) => (None, "default"),
        },
        artifact_repository: match (given.artifact_repository, s.artifact_repository.clone()) {
            (Some(v), _) => (Some(v), "flag or environment"),
            (None, Some(v)) => (Some(v), "file"),
            (None, None) => (None, "default"),
        },
        otlp_headers: (
            s.otlp_headers.clone(),
            if s.otlp_headers.is_empty() {
                "default"
            } else {
                "file"
            },
        ),
    })
}

/// A URL with any password in it masked.
fn mask_url(u: &str) -> String {
    if let Some((scheme, rest)) = u.split_once("://")
        && let Some((userinfo, host)) = rest.split_once('@')
        && let Some((user, _)) = userinfo.split_once(':')
    {
        return format!("{scheme}://{user}:***@{host}");
    }
    u.to_string()
}

/// The effective configuration as TOML, each value commented with its source; secrets masked.
pub fn render(e: &Effective) -> String {
    let q = |s: &str| format!("{s:?}");
    let mut out = String::new();
    out += &format!("db = {}  # {}\n", q(&e.db.0.display().to_string()), e.db.1);
    out += "\n[server]\n";
    out += &format!(
        "listen = {}  # {}\n",
        q(&e.listen.0.to_string()),
        e.listen.1
    );
    out += &format!(
        "insecure_local = {}  # {}\n",
        e.insecure_local.0, e.insecure_local.1
    );
    out += &format!("max_body = {}  # {}\n", e.max_body.0, e.max_body.1);
    out += &format!(
        "executor = {}  # {}\n",
        q(match e.executor.0 {
            crate::env::TaskExecutor::Local => "local",
            crate::env::TaskExecutor::Docker => "docker",
        }),
        e.executor.1
    );
    out += &format!(
        "log_format = {}  # {}\n",
        q(if e.json_logs.0 { "json" } else { "text" }),
        e.json_logs.1
    );
    match &e.otlp_endpoint.0 {
        Some(u) => {
            out += &format!(
                "otlp_endpoint = {}  # {}\n",
                q(&mask_url(u)),
                e.otlp_endpoint.1
            )
        }
        None => out += "# otlp_endpoint: not set (no tracing)\n",
    }
    match &e.artifact_repository.0 {
        Some(u) => {
            out += &format!(
                "artifact_repository = {}  # {}\n",
                q(u),
                e.artifact_repository.1
            )
        }
        None => out += "# artifact_repository: not set (the local repository only)\n",
    }
    if !e.otlp_headers.0.is_empty() {
        out += &format!(
            "otlp_headers = {{ {} }}  # {}, values masked\n",
            e.otlp_headers
                .0
                .keys()
                .map(|k| format!("{k} = \"***\""))
                .collect::<Vec<_>>()
                .join(", "),
            e.otlp_headers.1
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_the_environment_beat_the_file_beat_defaults_and_secrets_are_masked() {
        let file: File = toml::from_str(
            "db = \"/data/w.db\"\n[server]\nlisten = \"127.0.0.1:9000\"\nmax_body = 1024\notlp_endpoint = \"http://u:pw@127.0.0.1:4318\"\notlp_headers = { authorization = \"Bearer s3cret\" }\n",
        )
        .unwrap();
        let given = Given {
            listen: Some("127.0.0.1:9100".into()),
            ..Default::default()
        };
        let e = merge(file, given, PathBuf::from("/default.db")).unwrap();
        assert_eq!(e.listen.0.port(), 9100);
        assert_eq!(e.listen.1, "flag or environment");
        assert_eq!((e.max_body.0, e.max_body.1), (1024, "file"));
        assert_eq!(e.db.0, PathBuf::from("/data/w.db"));
        assert_eq!(e.json_logs, (false, "default"));
        let text = render(&e);
        assert!(!text.contains("s3cret") && !text.contains("pw@"), "{text}");
        assert!(text.contains("u:***@127.0.0.1:4318"), "{text}");
    }

    #[test]
    fn a_bad_file_is_refused_with_its_location() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("weir.toml");
        std::fs::write(&p, "[server]\nlisten = \"x\"\nbogus = 1\n").unwrap();
        let err = read(Some(&p)).unwrap_err().to_string();
        assert!(
            err.contains("weir.toml:3:1: error:") && err.contains("bogus"),
            "{err}"
        );
    }
}
