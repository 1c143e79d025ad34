//! Test support: a sandbox directory with its own database, and a helper to run the binary.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Sandbox {
    _tmp: tempfile::TempDir,
    pub dir: PathBuf,
    pub db: PathBuf,
    /// Set for every command run in it (beside `WEIR_DB`).
    pub env: Vec<(String, String)>,
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
            env: Vec::new(),
        }
    }

    /// The same directory with another database: a file, or on PostgreSQL a new database.
    pub fn with_db(&self, name: &str) -> Sandbox {
        let dir = self.dir.join(name.trim_end_matches(".db"));
        std::fs::create_dir_all(&dir).unwrap();
        let tmp = tempfile::Builder::new().tempdir_in(&dir).unwrap();
        let db = match self.db.to_str() {
            Some(url) if url.starts_with("postgres://") => {
                let (prefix, base) = url.rsplit_once('/').unwrap();
                let suffix: String = name
                    .trim_end_matches(".db")
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                    .collect();
                let db = format!("{base}_{suffix}");
                let mut admin = postgres::Client::connect(url, postgres::NoTls).unwrap();
                for sql in [
                    format!("DROP DATABASE IF EXISTS {db}"),
                    format!("CREATE DATABASE {db}"),
                ] {
                    admin.batch_execute(&sql).unwrap();
                }
                PathBuf::from(format!("{prefix}/{db}"))
            }
            _ => dir.join(name),
        };
        Sandbox {
            db,
            dir: dir.clone(),
            _tmp: tmp,
            env: self.env.clone(),
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
            .env_remove("WEIR_DATA_DIR")
            .stdin(Stdio::null());
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        if self
            .db
            .to_str()
            .is_some_and(|d| d.starts_with("postgres://"))
        {
            c.env("WEIR_DATA_DIR", self.dir.join("data"));
        }
        c
    }

    /// A sandbox whose database is a new one on the PostgreSQL server `WEIR_TEST_PG` names
    /// (`scripts/test` starts one); `None`, with a note, where there is none, except under
    /// CI, where that fails the test.
    pub fn postgres() -> Option<Sandbox> {
        let Ok(base) = std::env::var("WEIR_TEST_PG") else {
            assert!(
                std::env::var_os("CI").is_none(),
                "WEIR_TEST_PG is not set: run the tests with `bash scripts/test`, which starts PostgreSQL"
            );
            eprintln!("note: WEIR_TEST_PG is not set; this PostgreSQL test is skipped");
            return None;
        };
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let name = format!(
            "weir_it_{}_{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        );
        let mut admin = postgres::Client::connect(&base, postgres::NoTls).unwrap();
        // one statement each: CREATE DATABASE cannot run in a transaction
        for sql in [
            format!("DROP DATABASE IF EXISTS {name}"),
            format!("CREATE DATABASE {name}"),
        ] {
            admin.batch_execute(&sql).unwrap();
        }
        let (prefix, _) = base.rsplit_once('/').unwrap();
        let mut sb = Sandbox::new();
        sb.db = PathBuf::from(format!("{prefix}/{name}"));
        Some(sb)
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
        const SERVER: &str = "import functools, http.server, ssl, sys\nh = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[1])\ns = http.server.HTTPServer(('127.0.0.1', 0), h)\nif len(sys.argv) > 2:\n    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n    ctx.load_cert_chain(sys.argv[2], sys.argv[3])\n    s.socket = ctx.wrap_socket(s.socket, server_side=True)\nprint(s.server_address[1], flush=True)\ns.serve_forever()\n";
        let mut args = vec![dir.as_os_str()];
        if let Some((cert, key)) = tls {
            args.extend([cert.as_os_str(), key.as_os_str()]);
        }
        WebServer::script(SERVER, &args)
    }

    /// Runs a Python server of the test's own (`python3 -c script args…`) that prints the port
    /// it bound on 127.0.0.1 as its first line.
    pub fn script(script: &str, args: &[&std::ffi::OsStr]) -> WebServer {
        use std::io::BufRead;
        let mut cmd = std::process::Command::new("python3");
        cmd.args(["-c", script]).args(args);
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

/// A certificate authority of the test's own (`ca.pem`, `ca.key` in `dir`), and certificates
/// it signs for `127.0.0.1`: the server's (`server.pem`, `server.key`) and a client's
/// (`client.pem`, `client.key`).
pub fn test_pki(dir: &Path) {
    let script = "set -e
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj '/CN=weir test CA' -keyout ca.key -out ca.pem 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\\nbasicConstraints=CA:FALSE\\n' > ext.cnf
for who in server client; do
  openssl req -newkey rsa:2048 -nodes -subj \"/CN=$who\" -keyout $who.key -out $who.csr 2>/dev/null
  openssl x509 -req -in $who.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 -extfile ext.cnf -out $who.pem 2>/dev/null
done
";
    let made = std::process::Command::new("sh")
        .args(["-c", script])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
}

/// The node of a run (from `weir get -o json`) with this display name.
pub fn node<'a>(wf: &'a serde_json::Value, display: &str) -> &'a serde_json::Value {
    wf["status"]["nodes"]
        .as_object()
        .and_then(|m| m.values().find(|n| n["displayName"] == display))
        .unwrap_or_else(|| panic!("no node {display} in {wf}"))
}

/// `weir server` on 127.0.0.1 with a port of its own choosing, killed when dropped.
pub struct ApiServer {
    child: std::process::Child,
    pub base: String,
}

impl ApiServer {
    pub fn start(sb: &Sandbox, extra: &[&str]) -> ApiServer {
        ApiServer::start_with(sb, extra, &[])
    }

    /// [`ApiServer::start`] with more environment variables.
    pub fn start_with(sb: &Sandbox, extra: &[&str], env: &[(&str, &str)]) -> ApiServer {
        ApiServer::spawn(sb, extra, env, Stdio::inherit())
    }

    /// [`ApiServer::start`] with its log (stderr) written to `log`.
    pub fn start_logged(sb: &Sandbox, extra: &[&str], log: &std::path::Path) -> ApiServer {
        let f = std::fs::File::create(log).unwrap();
        ApiServer::spawn(sb, extra, &[], Stdio::from(f))
    }

    fn spawn(sb: &Sandbox, extra: &[&str], env: &[(&str, &str)], stderr: Stdio) -> ApiServer {
        use std::io::BufRead;
        let mut args = vec!["server", "--listen", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        let mut child = sb
            .cmd(&args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .split("http://")
            .nth(1)
            .and_then(|r| r.split([' ', ';', '\n']).next())
            .unwrap_or_else(|| panic!("server said {line:?}"))
            .to_string();
        ApiServer {
            child,
            base: format!("http://{addr}"),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The body of a GET of `path`, as text.
    pub fn text(&self, path: &str) -> String {
        http()
            .get(self.url(path))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An HTTP client that returns 4xx/5xx responses instead of failing on them.
pub fn http() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// A response's status and body as JSON (Null when the body is not JSON).
pub fn answer(
    r: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> (u16, serde_json::Value) {
    let mut r = r.unwrap();
    let status = r.status().as_u16();
    let text = r.body_mut().read_to_string().unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

/// A token created with `weir token create`.
pub fn token(sb: &Sandbox, namespace: &str, role: &str) -> String {
    let o = sb.weir(&["token", "create", "-n", namespace, "--role", role]);
    assert_eq!(o.code, 0, "{}", o.all());
    o.stdout.trim().to_string()
}

/// Server-Sent Events read one at a time from a response body.
pub struct SseReader {
    lines: std::io::Lines<std::io::BufReader<ureq::BodyReader<'static>>>,
}

/// One server-sent event.
#[derive(Debug, Default, Clone)]
pub struct Sse {
    pub event: String,
    pub id: String,
    pub data: String,
}

impl SseReader {
    pub fn new(r: ureq::http::Response<ureq::Body>) -> SseReader {
        use std::io::BufRead;
        assert_eq!(r.status().as_u16(), 200);
        SseReader {
            lines: std::io::BufReader::new(r.into_body().into_reader()).lines(),
        }
    }

    /// The next event (comments and keep-alives skipped); None at the end of the stream.
    pub fn next_event(&mut self) -> Option<Sse> {
        let mut ev = Sse::default();
        for line in self.lines.by_ref() {
            let line = line.ok()?;
            if line.is_empty() {
                if !ev.event.is_empty() || !ev.data.is_empty() {
                    return Some(ev);
                }
                continue;
            }
            if let Some(v) = line.strip_prefix("event:") {
                ev.event = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("id:") {
                ev.id = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("data:") {
                if !ev.data.is_empty() {
                    ev.data.push('\n');
                }
                ev.data.push_str(v.strip_prefix(' ').unwrap_or(v));
            }
        }
        None
    }
}

/// A real S3-API server (moto, from PyPI) on 127.0.0.1 with a port of its own choosing, killed
/// when dropped.
pub struct S3Server {
    child: std::process::Child,
    pub port: u16,
}

impl S3Server {
    pub fn start() -> S3Server {
        S3Server::start_with(&[])
    }

    /// With environment for moto (`INITIAL_NO_AUTH_ACTION_COUNT=0`: every request must carry
    /// credentials moto knows).
    pub fn start_with(env: &[(&str, &str)]) -> S3Server {
        use std::io::BufRead;
        const SERVER: &str = "import sys\nfrom moto.server import ThreadedMotoServer\ns = ThreadedMotoServer(ip_address='127.0.0.1', port=0, verbose=False)\ns.start()\nprint(s.get_host_and_port()[1], flush=True)\nsys.stdin.read()\n";
        let mut child = Command::new("python3")
            .args(["-c", SERVER])
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().unwrap_or_else(|_| {
            panic!("moto did not start ({line:?}): the S3 tests need `pip install moto[server]` (scripts/test installs it)")
        });
        S3Server { child, port }
    }

    /// `PUT /bucket` or `PUT /bucket/key` (moto takes unsigned requests).
    pub fn put(&self, path: &str, body: &[u8]) {
        let r = http()
            .put(format!("http://127.0.0.1:{}{path}", self.port))
            .send(body)
            .unwrap();
        assert!(r.status().is_success(), "PUT {path}: {}", r.status());
    }

    pub fn get(&self, path: &str) -> Option<Vec<u8>> {
        let mut r = http()
            .get(format!("http://127.0.0.1:{}{path}", self.port))
            .call()
            .unwrap();
        r.status()
            .is_success()
            .then(|| r.body_mut().read_to_vec().unwrap())
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs git in `dir` with a fixed author; its trimmed stdout.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let o = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// A TCP proxy the test controls, to cut a process off from a server (a network partition):
/// while cut, its connections are closed and new ones refused.
pub struct Proxy {
    pub addr: std::net::SocketAddr,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl Proxy {
    pub fn start(upstream: std::net::SocketAddr) -> Proxy {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let conns: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>> = Default::default();
        let (c2, k2) = (cut.clone(), conns.clone());
        std::thread::spawn(move || {
            for down in listener.incoming().flatten() {
                if c2.load(Ordering::SeqCst) {
                    drop(down);
                    continue;
                }
                let Ok(up) = std::net::TcpStream::connect(upstream) else {
                    continue;
                };
                let mut k = k2.lock().unwrap();
                k.push(down.try_clone().unwrap());
                k.push(up.try_clone().unwrap());
                for (mut from, mut to) in [
                    (down.try_clone().unwrap(), up.try_clone().unwrap()),
                    (up, down),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Proxy { addr, cut, conns }
    }

    /// Cuts every connection and refuses new ones.
    pub fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        for s in self.conns.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    pub fn heal(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}
