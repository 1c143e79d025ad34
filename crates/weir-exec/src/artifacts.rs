//! Moving artifacts between task paths and the repository: tar+gzip by default, plain files
//! with `archive: none`.

use std::fs;
use std::io;
use std::path::Path;

use crate::repo::LocalRepo;
use weir_core::run::ArtifactRef;

/// Stores the file or directory at `src` under `key`.
/// Where an artifact goes: a key of the caller's (key-only artifacts), or its content's place.
pub(crate) enum Place<'a> {
    Key(&'a str),
    /// `objects/BLAKE3`: identical content is stored once, whatever run produced it; each run
    /// keeps its own name → digest mapping in its nodes' outputs.
    Addressed,
}

/// Stores the file or directory at `src`: a deterministic tar.gz unless `archive` is false and
/// it is a file.
pub(crate) fn save(
    repo: &LocalRepo,
    place: Place<'_>,
    name: &str,
    src: &Path,
    archive: bool,
    compression: Option<&(String, i32)>,
) -> Result<ArtifactRef, String> {
    let is_dir = src.is_dir();
    let archived = archive || is_dir;
    let write = |w: &mut dyn io::Write| -> io::Result<()> {
        if archived {
            // The same files give the same bytes (so the same digest): entries in sorted
            // order, headers without times or owners, a gzip header without a time. Step
            // caching and deduplication compare artifacts by digest.
            let base = std::path::PathBuf::from(
                src.file_name()
                    .map(|n| n.to_os_string())
                    .unwrap_or_else(|| "artifact".into()),
            );
            let fill = |tar: &mut tar::Builder<&mut dyn io::Write>| -> io::Result<()> {
                tar.follow_symlinks(false);
                tar.mode(tar::HeaderMode::Deterministic);
                if is_dir {
                    append_sorted(tar, src, &base)
                } else {
                    tar.append_path_with_name(src, &base)
                }
            };
            match compression {
                Some((codec, level)) if codec == "zstd" => {
                    let mut z = zstd::stream::write::Encoder::new(w, *level)?;
                    {
                        let mut tar = tar::Builder::new(&mut z as &mut dyn io::Write);
                        fill(&mut tar)?;
                        tar.finish()?;
                    }
                    z.finish()?;
                }
                other => {
                    let level = match other {
                        Some((_, l)) => flate2::Compression::new(*l as u32),
                        None => flate2::Compression::fast(),
                    };
                    let mut gz = flate2::write::GzEncoder::new(w, level);
                    {
                        let mut tar = tar::Builder::new(&mut gz as &mut dyn io::Write);
                        fill(&mut tar)?;
                        tar.finish()?;
                    }
                    gz.finish()?;
                }
            }
            Ok(())
        } else {
            io::copy(&mut fs::File::open(src)?, w).map(|_| ())
        }
    };
    let (key, hash, size) = match place {
        Place::Key(key) => {
            let key = if archived {
                format!("{key}.tgz")
            } else {
                key.to_string()
            };
            let (hash, size) = repo.put_with(&key, write).map_err(|e| e.to_string())?;
            (key, hash, size)
        }
        Place::Addressed => repo
            .put_addressed("objects", write)
            .map_err(|e| e.to_string())?,
    };
    Ok(ArtifactRef {
        name: name.to_string(),
        key,
        hash,
        size,
        archived,
        raw: None,
        sub_path: None,
        url: None,
        http: None,
    })
}

/// Stores directory `dir` as a deterministic tar.gz under `fetched/BLAKE3`, leaving out `.git`
/// (its files differ from clone to clone); returns (key, blake3, size).
pub(crate) fn archive_addressed(
    repo: &LocalRepo,
    dir: &Path,
    name: &str,
) -> Result<(String, String, u64), String> {
    repo.put_addressed("fetched", |w| {
        let gz = flate2::write::GzEncoder::new(w, flate2::Compression::fast());
        let mut tar = tar::Builder::new(gz);
        tar.follow_symlinks(false);
        tar.mode(tar::HeaderMode::Deterministic);
        append_sorted(&mut tar, dir, Path::new(name))?;
        tar.into_inner()?.finish()?;
        Ok(())
    })
    .map_err(|e| e.to_string())
}

/// Appends directory `dir` as `name` and everything below it, in sorted order (`.git` left out).
fn append_sorted<W: io::Write>(
    tar: &mut tar::Builder<W>,
    dir: &Path,
    name: &Path,
) -> io::Result<()> {
    tar.append_dir(name, dir)?;
    let mut entries: Vec<_> = fs::read_dir(dir)?.collect::<io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries.into_iter().filter(|e| e.file_name() != ".git") {
        let path = e.path();
        let inner = name.join(e.file_name());
        if e.file_type()?.is_dir() {
            append_sorted(tar, &path, &inner)?;
        } else {
            tar.append_path_with_name(&path, &inner)?;
        }
    }
    Ok(())
}

/// Stores the files of directory `src` one by one under `key/` (a key-only artifact with
/// `archive: none`: later steps may ask for one file of it by its own key). The digest covers
/// every file's path and digest, in order.
pub(crate) fn save_tree(
    repo: &LocalRepo,
    key: &str,
    name: &str,
    src: &Path,
) -> Result<ArtifactRef, String> {
    let key = key.trim_end_matches('/');
    let mut files = Vec::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in fs::read_dir(&d).map_err(|e| format!("{}: {e}", d.display()))? {
            let e = e.map_err(|e| e.to_string())?;
            // the entry itself, not what a symlink points to: a task's symlink to a host file
            // (or directory) must not make weir store that file
            let kind = e.file_type().map_err(|e| e.to_string())?;
            if kind.is_dir() {
                dirs.push(e.path());
            } else if kind.is_file() {
                files.push(e.path());
            }
        }
    }
    files.sort();
    let mut digest = blake3::Hasher::new();
    let mut size = 0;
    for f in &files {
        let rel = f
            .strip_prefix(src)
            .unwrap_or(f)
            .to_string_lossy()
            .into_owned();
        let (hash, n) = repo
            .put_with(&format!("{key}/{rel}"), |w| {
                io::copy(&mut fs::File::open(f)?, w).map(|_| ())
            })
            .map_err(|e| e.to_string())?;
        digest.update(rel.as_bytes());
        digest.update(hash.as_bytes());
        size += n;
    }
    Ok(ArtifactRef {
        name: name.to_string(),
        key: key.to_string(),
        hash: digest.finalize().to_hex().to_string(),
        size,
        archived: false,
        raw: None,
        sub_path: None,
        url: None,
        http: None,
    })
}

/// Copies a directory tree (a key-only artifact stored as files).
fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    fs::create_dir_all(to)?;
    for e in fs::read_dir(from)? {
        let e = e?;
        let dest = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_tree(&e.path(), &dest)?;
        } else {
            fs::copy(e.path(), dest)?;
        }
    }
    Ok(())
}

/// Places artifact `a` at `dest` (a file, or a directory for archived directories).
pub(crate) fn load(
    repo: &LocalRepo,
    a: &ArtifactRef,
    dest: &Path,
    mode: Option<u32>,
) -> Result<(), String> {
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    let err = |e: io::Error| format!("artifact `{}` to {}: {e}", a.name, dest.display());
    if let Some(raw) = &a.raw {
        fs::write(dest, raw).map_err(err)?;
    } else if a.archived {
        let src = repo.path(&a.key).map_err(|e| e.to_string())?;
        let mut file = fs::File::open(src).map_err(err)?;
        // tar+zstd or tar+gzip, by the stream's magic number
        let mut magic = [0u8; 4];
        let zstd = io::Read::read_exact(&mut file, &mut magic).is_ok()
            && magic == [0x28, 0xb5, 0x2f, 0xfd];
        io::Seek::rewind(&mut file).map_err(err)?;
        let reader: Box<dyn io::Read> = if zstd {
            Box::new(zstd::stream::read::Decoder::new(file).map_err(err)?)
        } else {
            Box::new(flate2::read::GzDecoder::new(file))
        };
        let mut tar = tar::Archive::new(reader);
        // Argo unpacks the single top-level entry onto the destination path.
        let staging = dest.with_extension("weir-unpack");
        let _ = fs::remove_dir_all(&staging);
        fs::create_dir_all(&staging).map_err(err)?;
        tar.unpack(&staging).map_err(err)?;
        let mut entries: Vec<_> = fs::read_dir(&staging)
            .map_err(err)?
            .filter_map(Result::ok)
            .collect();
        if entries.len() == 1 {
            let mut only = entries.remove(0).path();
            if let Some(sub) = a.sub_path.as_deref().filter(|s| !s.is_empty()) {
                only = crate::paths::within(&only, sub.trim_start_matches('/'))
                    .map_err(|e| format!("artifact `{}`: subPath {e}", a.name))?;
                if !only.exists() {
                    return Err(format!(
                        "artifact `{}`: subPath `{sub}` not found in it",
                        a.name
                    ));
                }
            }
            let _ = fs::remove_dir_all(dest);
            let _ = fs::remove_file(dest);
            fs::rename(&only, dest).map_err(err)?;
            let _ = fs::remove_dir_all(&staging);
        } else {
            fs::rename(&staging, dest).map_err(err)?;
        }
    } else if repo.path(&a.key).map_err(|e| e.to_string())?.is_dir() {
        copy_tree(&repo.path(&a.key).map_err(|e| e.to_string())?, dest).map_err(err)?;
    } else {
        let src = repo.path(&a.key).map_err(|e| e.to_string())?;
        let archive = format!("{}.tgz", a.key);
        if !src.exists() && repo.path(&archive).is_ok_and(|p| p.is_file()) {
            // a key-only output archived (the default) is stored as `KEY.tgz`: the key a
            // consumer names is the artifact's, unpacked as Argo unpacks it
            let stored = ArtifactRef {
                key: archive,
                archived: true,
                ..a.clone()
            };
            return load(repo, &stored, dest, mode);
        }
        if !src.exists() {
            return Err(format!(
                "artifact `{}`: nothing stored under key `{}`",
                a.name, a.key
            ));
        }
        fs::copy(src, dest).map_err(err)?;
    }
    if let Some(m) = mode {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dest, fs::Permissions::from_mode(m)).map_err(err)?;
    }
    Ok(())
}
