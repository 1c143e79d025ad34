//! `git` input artifacts: the repository cloned by the system's git at the revision asked for,
//! stored content-addressed (without `.git`) like any fetched input.

use std::process::{Command, Stdio};

use crate::repo::LocalRepo;
use weir_core::run::ArtifactRef;

/// Fetches `git+REPO#REVISION[?depth=N]`.
pub(crate) fn fetch(repo: &LocalRepo, url: &str) -> Result<ArtifactRef, String> {
    let spec = url.strip_prefix("git+").ok_or("not a git URL")?;
    let (spec, depth) = match spec.rsplit_once("?depth=") {
        Some((s, d)) => (s, d.parse::<u32>().ok()),
        None => (spec, None),
    };
    let (remote, rev) = spec.rsplit_once('#').unwrap_or((spec, "HEAD"));
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = repo
        .path("fetched")
        .map_err(|e| e.to_string())?
        .join(format!(".git-{}-{n}", std::process::id()));
    let dir = tmp.join(
        std::path::Path::new(remote.trim_end_matches('/').trim_end_matches(".git"))
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "repo".into()),
    );
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    let git = |args: &[&str]| -> Result<(), String> {
        let o = Command::new("git")
            .args(args)
            .env("GIT_TERMINAL_PROMPT", "0")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running git: {e}"))?;
        if o.status.success() {
            Ok(())
        } else {
            // name the subcommand, not an option before it
            let verb = args
                .iter()
                .find(|a| matches!(**a, "clone" | "checkout"))
                .copied()
                .unwrap_or("git");
            Err(format!(
                "git {verb}: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ))
        }
    };
    let result = (|| {
        let d = dir.to_string_lossy().into_owned();
        let depth_arg = depth.map(|n| format!("--depth={n}"));
        let mut clone = vec!["clone", "--quiet"];
        if let Some(a) = &depth_arg {
            clone.push(a);
            if rev != "HEAD" {
                clone.extend(["--branch", rev]);
            }
        }
        clone.extend([remote, d.as_str()]);
        git(&clone)?;
        if depth.is_none() && rev != "HEAD" {
            git(&["-C", d.as_str(), "checkout", "--quiet", rev])?;
        }
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        crate::artifacts::archive_addressed(repo, &dir, &name)
    })();
    let _ = std::fs::remove_dir_all(&tmp);
    let (key, hash, size) = result.map_err(|e| format!("{remote}@{rev}: {e}"))?;
    Ok(ArtifactRef {
        name: String::new(),
        key,
        hash,
        size,
        archived: true,
        raw: None,
        sub_path: None,
        url: Some(url.to_string()),
        http: None,
    })
}
