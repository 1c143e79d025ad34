//! Test support: a sandbox directory with its own database, and a helper to run the binary.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Sandbox {
    _tmp: tempfile::TempDir,
    pub dir: PathBuf,
    pub db: PathBuf,
}

pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

impl Sandbox {
    /// A fresh directory outside /tmp (tasks get a private /tmp, so files they share with the
    /// test must live elsewhere).
    pub fn new() -> Sandbox {
        // Tasks see a private /tmp: a checkout under /tmp would hide the sandbox from them.
        let target = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let base = if target.starts_with("/tmp") {
            Path::new("/var/tmp/weir-it")
        } else {
            target
        };
        std::fs::create_dir_all(base).unwrap();
        let tmp = tempfile::Builder::new()
            .prefix("weir-it-")
            .tempdir_in(base)
            .unwrap();
        let dir = tmp.path().to_path_buf();
        Sandbox {
            db: dir.join("weir.db"),
            dir,
            _tmp: tmp,
        }
    }

    /// The same directory with another database file.
    pub fn with_db(&self, name: &str) -> Sandbox {
        let dir = self.dir.join(name.trim_end_matches(".db"));
        std::fs::create_dir_all(&dir).unwrap();
        let tmp = tempfile::Builder::new().tempdir_in(&dir).unwrap();
        Sandbox {
            db: dir.join(name),
            dir: dir.clone(),
            _tmp: tmp,
        }
    }

    /// A directory `name` in the sandbox holding these files (none: an empty one).
    pub fn dir_with(&self, name: &str, files: &[(&str, &str)]) -> PathBuf {
        let dir = self.dir.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for (f, text) in files {
            std::fs::write(dir.join(f), text).unwrap();
        }
        dir
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_weir"));
        c.args(args)
            .env("WEIR_DB", &self.db)
            .env_remove("XDG_DATA_HOME")
            .stdin(Stdio::null());
        c
    }

    pub fn weir(&self, args: &[&str]) -> Out {
        let o = self.cmd(args).output().unwrap();
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    pub fn spawn(&self, args: &[&str]) -> Child {
        self.cmd(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    /// A run's phase, as `weir get RUN -o json` reports it.
    pub fn phase(&self, run: &str) -> serde_json::Value {
        self.json(&["get", run, "-o", "json"])["status"]["phase"].clone()
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let o = self.weir(args);
        assert_eq!(o.code, 0, "{args:?}: {}", o.all());
        serde_json::from_str(&o.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {}", o.stdout))
    }
}

/// Polls `cond` until it holds; fails the test after `limit`.
pub fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "condition not met within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Lines in a counter file (0 if missing).
pub fn count(p: &Path) -> usize {
    std::fs::read_to_string(p)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

/// All text under a directory, for leak checks.
pub fn read_tree(p: &Path) -> String {
    let mut out = String::new();
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let path = e.path();
            if path.is_dir() {
                out.push_str(&read_tree(&path));
            } else if let Ok(s) = std::fs::read_to_string(&path) {
                out.push_str(&s);
            }
        }
    }
    out
}

/// A free port on 127.0.0.1 (bound, then released for a task to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A static web server on 127.0.0.1 serving `dir`, killed when dropped.
pub struct WebServer(std::process::Child, pub u16);

impl WebServer {
    /// Serves `dir` over http, or over https with `tls: Some((cert, key))`. The server binds a
    /// port of its own choosing and reports it, so concurrent tests never race for one.
    pub fn start(dir: &std::path::Path) -> WebServer {
        WebServer::serve(dir, None)
    }

    pub fn serve(dir: &std::path::Path, tls: Option<(&Path, &Path)>) -> WebServer {
        use std::io::BufRead;
        const SERVER: &str = "import functools, http.server, ssl, sys\nh = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[1])\ns = http.server.HTTPServer(('127.0.0.1', 0), h)\nif len(sys.argv) > 2:\n    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n    ctx.load_cert_chain(sys.argv[2], sys.argv[3])\n    s.socket = ctx.wrap_socket(s.socket, server_side=True)\nprint(s.server_address[1], flush=True)\ns.serve_forever()\n";
        let mut cmd = std::process::Command::new("python3");
        cmd.args(["-c", SERVER]).arg(dir);
        if let Some((cert, key)) = tls {
            cmd.arg(cert).arg(key);
        }
        let mut child = cmd
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port: u16 = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("server said {line:?}"));
        WebServer(child, port)
    }
}

impl Drop for WebServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The node of a run (from `weir get -o json`) with this display name.
pub fn node<'a>(wf: &'a serde_json::Value, display: &str) -> &'a serde_json::Value {
    wf["status"]["nodes"]
        .as_object()
        .and_then(|m| m.values().find(|n| n["displayName"] == display))
        .unwrap_or_else(|| panic!("no node {display} in {wf}"))
}
