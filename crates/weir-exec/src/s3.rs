//! S3-compatible object stores (AWS S3, MinIO, Ceph RGW, moto…) through `object_store`: an
//! artifact is uploaded in parts streamed from its stored file and downloaded streamed into the
//! repository, so a large artifact is never held in memory. Requests that fail with a server
//! error or a dropped connection are retried with backoff by `object_store`'s client.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use crate::repo::LocalRepo;
use futures_util::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};
use weir_core::run::{ArtifactRef, S3Access};

/// Parts of 8 MiB, at most four in flight: the most an upload holds in memory is ~40 MiB.
const PART: usize = 8 << 20;
const IN_FLIGHT: usize = 4;

/// `s3://BUCKET/KEY` → (bucket, key).
pub fn split_url(url: &str) -> Option<(&str, &str)> {
    url.strip_prefix("s3://")?.split_once('/')
}

fn store(bucket: &str, a: &S3Access) -> Result<Arc<dyn ObjectStore>, String> {
    let mut b = AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_region(a.region.clone().unwrap_or_else(|| "us-east-1".into()))
        .with_retry(object_store::RetryConfig {
            max_retries: 4,
            ..Default::default()
        });
    if let Some(e) = &a.endpoint {
        // Argo gives endpoints without a scheme; `insecure` means plain http
        let url = if e.contains("://") {
            e.clone()
        } else if a.insecure {
            format!("http://{e}")
        } else {
            format!("https://{e}")
        };
        b = b
            .with_endpoint(url)
            .with_allow_http(a.insecure || e.starts_with("http://"))
            .with_virtual_hosted_style_request(false);
    }
    match (&a.access_key, &a.secret_key) {
        (Some(k), Some(s)) => b = b.with_access_key_id(k).with_secret_access_key(s),
        _ => b = b.with_skip_signature(true),
    }
    b.build()
        .map(|s| Arc::new(s) as Arc<dyn ObjectStore>)
        .map_err(|e| format!("s3://{bucket}: {e}"))
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the S3 client: {e}"))
}

/// A clear message for what an object store said.
fn explain(url: &str, e: object_store::Error) -> String {
    match e {
        object_store::Error::NotFound { .. } => format!("{url}: no such object (or bucket)"),
        object_store::Error::Unauthenticated { .. }
        | object_store::Error::PermissionDenied { .. } => {
            format!("{url}: access denied: check the credentials")
        }
        other => format!("{url}: {other}"),
    }
}

/// Uploads the file at `src` to `s3://bucket/key`, in parts read from disk.
pub fn upload(bucket: &str, key: &str, access: &S3Access, src: &Path) -> Result<(), String> {
    let url = format!("s3://{bucket}/{key}");
    let store = store(bucket, access)?;
    let rt = runtime()?;
    rt.block_on(async {
        let path = object_store::path::Path::from(key);
        let upload = store
            .put_multipart(&path)
            .await
            .map_err(|e| explain(&url, e))?;
        let mut w = WriteMultipart::new_with_chunk_size(upload, PART);
        let mut f = std::fs::File::open(src).map_err(|e| format!("{}: {e}", src.display()))?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f
                .read(&mut buf)
                .map_err(|e| format!("{}: {e}", src.display()))?;
            if n == 0 {
                break;
            }
            w.wait_for_capacity(IN_FLIGHT)
                .await
                .map_err(|e| explain(&url, e))?;
            w.write(&buf[..n]);
        }
        w.finish().await.map_err(|e| explain(&url, e))?;
        Ok(())
    })
}

/// Deletes the object (or, for a key-only tree, the objects under it) an artifact URL names.
pub fn delete(full: &str, access: &S3Access) -> Result<(), String> {
    let url = full.split_once('?').map(|(u, _)| u).unwrap_or(full);
    let (bucket, key) = split_url(url).ok_or_else(|| format!("`{url}` is not s3://BUCKET/KEY"))?;
    let store = store(bucket, access)?;
    let rt = runtime()?;
    rt.block_on(async {
        let path = object_store::path::Path::from(key);
        match store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(explain(url, e)),
        }
        // a tree: everything below the key
        let mut listed = store.list(Some(&path));
        while let Some(meta) = listed.next().await {
            let meta = meta.map_err(|e| explain(url, e))?;
            store
                .delete(&meta.location)
                .await
                .map_err(|e| explain(url, e))?;
        }
        Ok(())
    })
}

/// Uploads a stored artifact: a file as one object, a directory (a key-only tree) as one object
/// per file under `key/`.
pub fn upload_path(bucket: &str, key: &str, access: &S3Access, src: &Path) -> Result<(), String> {
    if !src.is_dir() {
        return upload(bucket, key, access, src);
    }
    let key = key.trim_end_matches(".tgz");
    let mut dirs = vec![src.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).map_err(|e| format!("{}: {e}", d.display()))? {
            let p = e.map_err(|e| e.to_string())?.path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                let rel = p.strip_prefix(src).map_err(|e| e.to_string())?;
                upload(bucket, &format!("{key}/{}", rel.display()), access, &p)?;
            }
        }
    }
    Ok(())
}

/// Downloads `s3://bucket/key[?endpoint…]` into the repository (content-addressed under
/// `fetched/`); a tar.gz object is marked archived, as Argo unpacks one.
pub fn download(full: &str, access: &S3Access, repo: &LocalRepo) -> Result<ArtifactRef, String> {
    let url = full.split_once('?').map(|(u, _)| u).unwrap_or(full);
    let (bucket, key) = split_url(url).ok_or_else(|| format!("`{url}` is not s3://BUCKET/KEY"))?;
    let store = store(bucket, access)?;
    let rt = runtime()?;
    let mut stream = rt.block_on(async {
        store
            .get(&object_store::path::Path::from(key))
            .await
            .map(|r| r.into_stream())
            .map_err(|e| explain(url, e))
    })?;
    let (key, hash, size) = repo
        .put_addressed("fetched", |w| {
            while let Some(chunk) = rt.block_on(stream.next()) {
                let chunk = chunk.map_err(|e| std::io::Error::other(explain(url, e)))?;
                w.write_all(&chunk)?;
            }
            Ok(())
        })
        .map_err(|e| e.to_string())?;
    let archived = is_tar_gz(&repo.path(&key).map_err(|e| e.to_string())?);
    Ok(ArtifactRef {
        name: String::new(),
        key,
        hash,
        size,
        archived,
        raw: None,
        sub_path: None,
        url: Some(full.to_string()),
        http: None,
    })
}

/// Whether a file is a gzip-compressed tar archive (its first block has the ustar magic).
pub(crate) fn is_tar_gz(p: &Path) -> bool {
    let Ok(f) = std::fs::File::open(p) else {
        return false;
    };
    let mut head = [0u8; 512];
    let mut gz = flate2::read::GzDecoder::new(f);
    let mut got = 0;
    while got < head.len() {
        match gz.read(&mut head[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    got >= 262 && &head[257..262] == b"ustar"
}
