//! What every executor does the same way on each side of a task: fetching its remote inputs
//! into the repository before it is admitted, and storing an output artifact it wrote (in the
//! repository, then on to its S3 or HTTP destination).

use std::path::Path;

use weir_core::run::{Access, ArtifactRef, OutputArtifact};

use crate::artifacts;
use crate::repo::LocalRepo;

/// Fetches each remote input (`s3://`, `git+…`, `http(s)://`) into the repository,
/// content-addressed; `access[k]` says how to reach source `k` where it needs credentials.
pub(crate) fn fetch(
    repo: &LocalRepo,
    sources: &[ArtifactRef],
    access: &[Option<Access>],
) -> Vec<Result<ArtifactRef, String>> {
    sources
        .iter()
        .enumerate()
        .map(|(k, s)| match (&s.url, access.get(k).cloned().flatten()) {
            (Some(u), Some(Access::S3(a))) if u.starts_with("s3://") => {
                crate::s3::download(u, &a, repo)
            }
            (Some(u), _) if u.starts_with("git+") => crate::git::fetch(repo, u),
            (Some(u), Some(Access::Http(a))) => crate::http::fetch(repo, u, Some(&a)),
            (Some(u), _) => crate::http::fetch(repo, u, None),
            (None, _) => Err("not a remote input".to_string()),
        })
        .collect()
}

/// Stores output artifact `a`, which the task wrote at host path `path`: in the repository
/// (under its key, or content-addressed), then uploaded where it names. An upload that fails is
/// the task's error (`error`, the first kept); a failure to store is returned.
pub(crate) fn save_artifact(
    repo: &LocalRepo,
    a: &OutputArtifact,
    path: &Path,
    error: &mut Option<String>,
) -> Result<ArtifactRef, String> {
    let mut saved = match &a.key {
        // key-only: exactly that key; a directory without archiving as its files
        Some(key) if !a.archive && path.is_dir() => artifacts::save_tree(repo, key, &a.name, path)?,
        Some(key) => artifacts::save(
            repo,
            artifacts::Place::Key(key),
            &a.name,
            path,
            a.archive,
            a.compression.as_ref(),
        )?,
        None => artifacts::save(
            repo,
            artifacts::Place::Addressed,
            &a.name,
            path,
            a.archive,
            a.compression.as_ref(),
        )?,
    };
    if let Some(t) = &a.s3 {
        // the stored bytes (a tar.gz unless `archive: none`) go to the bucket as they are
        let url = if t.query.is_empty() {
            format!("s3://{}/{}", t.bucket, t.key)
        } else {
            format!("s3://{}/{}?{}", t.bucket, t.key, t.query)
        };
        let upload = repo
            .path(&saved.key)
            .map_err(|e| e.to_string())
            .and_then(|p| crate::s3::upload_path(&t.bucket, &t.key, &t.access, &p));
        match upload {
            Ok(()) => saved.url = Some(url),
            Err(e) => {
                error.get_or_insert(format!("output artifact `{}`: uploading to {e}", a.name));
            }
        }
    }
    if let Some(t) = &a.http {
        let sent = repo
            .path(&saved.key)
            .map_err(|e| e.to_string())
            .and_then(|p| crate::http::upload(t, &p));
        match sent {
            Ok(()) => saved.url = Some(t.url.clone()),
            Err(e) => {
                error.get_or_insert(format!("output artifact `{}`: {e}", a.name));
            }
        }
    }
    Ok(saved)
}
