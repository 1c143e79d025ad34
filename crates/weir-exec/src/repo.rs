//! The local-directory artifact repository: files under a root, each recorded with its blake3.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::paths::{InvalidPath, within};

/// What the repository could not do: a key that is not a plain relative path, or a file it
/// could not write, read or remove.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// A key or name that would not stay below its directory.
    #[error(transparent)]
    InvalidName(#[from] InvalidPath),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

pub type Result<T, E = RepoError> = std::result::Result<T, E>;

#[derive(Debug, Clone)]
pub struct LocalRepo {
    root: PathBuf,
}

impl LocalRepo {
    pub fn new(root: PathBuf) -> LocalRepo {
        LocalRepo { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the object with `key` lives: always below the root (a key that would leave it,
    /// absolute or with `..`, is refused).
    pub fn path(&self, key: &str) -> Result<PathBuf> {
        Ok(within(&self.root, key)?)
    }

    /// Stores the bytes written by `write` under `key`; returns (blake3 hex, size).
    pub fn put_with(
        &self,
        key: &str,
        write: impl FnOnce(&mut dyn io::Write) -> io::Result<()>,
    ) -> Result<(String, u64)> {
        let dest = self.path(key)?;
        let io_err = |source| RepoError::Io {
            path: dest.clone(),
            source,
        };
        if let Some(dir) = dest.parent() {
            fs::create_dir_all(dir).map_err(io_err)?;
        }
        let tmp = dest.with_extension("partial");
        let file = fs::File::create(&tmp).map_err(io_err)?;
        let mut w = HashingWriter {
            inner: io::BufWriter::new(file),
            hasher: blake3::Hasher::new(),
            size: 0,
        };
        write(&mut w).map_err(io_err)?;
        io::Write::flush(&mut w.inner).map_err(io_err)?;
        fs::rename(&tmp, &dest).map_err(io_err)?;
        Ok((w.hasher.finalize().to_hex().to_string(), w.size))
    }

    /// Stores the bytes written by `write` under `prefix/BLAKE3` (content-addressed: the same
    /// content is kept once); returns (key, blake3 hex, size).
    pub fn put_addressed(
        &self,
        prefix: &str,
        write: impl FnOnce(&mut dyn io::Write) -> io::Result<()>,
    ) -> Result<(String, String, u64)> {
        let mut n = [0u8; 8];
        // SAFETY: getrandom writes at most 8 bytes into our buffer.
        unsafe { libc_getrandom(&mut n) };
        let incoming = format!("{prefix}/.incoming-{:016x}", u64::from_le_bytes(n));
        let (hash, size) = self.put_with(&incoming, write)?;
        let key = format!("{prefix}/{hash}");
        let (from, to) = (self.path(&incoming)?, self.path(&key)?);
        let r = if to.exists() {
            fs::remove_file(&from)
        } else {
            fs::rename(&from, &to)
        };
        r.map_err(|source| RepoError::Io { path: to, source })?;
        Ok((key, hash, size))
    }

    /// Removes what is stored under `prefix`: one object, or everything below it (a run's
    /// artifacts).
    pub fn delete_prefix(&self, prefix: &str) -> Result<()> {
        let p = self.path(prefix)?;
        if p == self.root {
            return Err(RepoError::InvalidName(InvalidPath(
                "refusing to delete the whole artifact repository".into(),
            )));
        }
        let r = if p.is_file() {
            fs::remove_file(&p)
        } else {
            fs::remove_dir_all(&p)
        };
        match r {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(RepoError::Io { path: p, source: e })
            }
            _ => Ok(()),
        }
    }
}

struct HashingWriter<W> {
    inner: W,
    hasher: blake3::Hasher,
    size: u64,
}

impl<W: io::Write> io::Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Random bytes for scratch names (not secrets): the kernel's, else the clock's.
unsafe fn libc_getrandom(buf: &mut [u8; 8]) {
    unsafe extern "C" {
        fn getrandom(buf: *mut u8, len: usize, flags: u32) -> isize;
    }
    // SAFETY: the caller's buffer is 8 bytes.
    if unsafe { getrandom(buf.as_mut_ptr(), 8, 0) } != 8 {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        *buf = (t ^ u64::from(std::process::id())).to_le_bytes();
    }
}
