//! Images built here, for the Docker tests and for Argo's examples under the Docker executor:
//! no registry is reachable, so each is `docker import` of a root filesystem made on this
//! host from Debian's static busybox, the host's Python interpreter and this weir binary.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// A root of busybox-static and its applets (as `/bin/*`), `/etc`, `/tmp`.
pub fn busybox_root(r: &Path) {
    // the directories a distribution's image has (an example writes to /mnt/out)
    let dirs = [
        "bin",
        "etc",
        "tmp",
        "usr/bin",
        "usr/local/bin",
        "mnt",
        "root",
        "home",
        "var/tmp",
        "opt",
        "srv",
        "run",
    ];
    for d in dirs {
        std::fs::create_dir_all(r.join(d)).unwrap();
    }
    // anyone's, as in a distribution's image (a container may run as any user)
    for d in ["tmp", "var/tmp"] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(r.join(d), std::fs::Permissions::from_mode(0o1777)).unwrap();
    }
    std::fs::copy("/bin/busybox", r.join("bin/busybox")).unwrap();
    let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            std::os::unix::fs::symlink("busybox", r.join("bin").join(applet)).unwrap();
        }
    }
    std::fs::write(r.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(r.join("etc/group"), "root:x:0:\n").unwrap();
}

/// Copies the host's `prog` into the root at the same path, with the shared libraries it
/// loads (as `ldd` lists them).
pub fn add_program(r: &Path, prog: &Path) {
    let mut files = BTreeSet::from([prog.to_path_buf()]);
    files.extend(libraries(prog));
    for f in files {
        copy_in(r, &f);
    }
}

/// The shared libraries `file` loads, by `ldd`.
fn libraries(file: &Path) -> Vec<std::path::PathBuf> {
    let out = Command::new("ldd").arg(file).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once("=>") {
                Some((_, right)) => right.split_whitespace().next()?,
                None => l.split_whitespace().next()?,
            };
            path.starts_with('/')
                .then(|| std::path::PathBuf::from(path))
        })
        .collect()
}

/// Copies a host file (followed through links) to the same path under the root.
fn copy_in(r: &Path, f: &Path) {
    let to = r.join(f.strip_prefix("/").unwrap());
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::copy(f, &to).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
}

/// `docker import` of the root as `tag`, with Dockerfile `changes`; more tags for the same
/// image after it.
pub fn import(host: &str, r: &Path, changes: &[&str], tags: &[&str]) {
    let tar = Command::new("tar")
        .args(["-C", r.to_str().unwrap(), "-cf", "-", "."])
        .output()
        .unwrap();
    assert!(tar.status.success(), "tar of {}", r.display());
    let mut args = vec!["-H", host, "import"];
    for c in changes {
        args.extend(["--change", c]);
    }
    args.extend(["-", tags[0]]);
    let mut import = Command::new("docker")
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    import.stdin.take().unwrap().write_all(&tar.stdout).unwrap();
    assert!(
        import.wait().unwrap().success(),
        "docker import {}",
        tags[0]
    );
    for t in &tags[1..] {
        let ok = Command::new("docker")
            .args(["-H", host, "tag", tags[0], t])
            .status()
            .unwrap();
        assert!(ok.success(), "docker tag {t}");
    }
}

/// What each stand-in carries, for the conformance report.
pub const STAND_INS: &str = "`busybox`, `alpine` (`:3.23`, `:latest`): Debian's busybox-static and its applets; `python:alpine3.23`: the same with this host's Python 3.11 (its interpreter, standard library and the libraries they load); `argoproj/argosay:v2`: the same with weir, whose `weir argosay` (Argo's `argosay` as its documentation describes it) is the image's entrypoint `/argosay`";

/// Builds, once per test process, the stand-ins for the images Argo's examples name.
pub fn stand_ins(host: &str) {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let path = "ENV PATH=/usr/local/bin:/usr/bin:/bin";
        let base = tempfile::tempdir().unwrap();
        busybox_root(base.path());
        import(
            host,
            base.path(),
            &[path, r#"CMD ["sh"]"#],
            &[
                "busybox:latest",
                "busybox",
                "alpine:3.23",
                "alpine:latest",
                "alpine",
            ],
        );

        let py = tempfile::tempdir().unwrap();
        busybox_root(py.path());
        add_program(py.path(), Path::new("/usr/bin/python3.11"));
        let stdlib = Path::new("/usr/lib/python3.11");
        let skip = [
            "test",
            "idlelib",
            "tkinter",
            "turtledemo",
            "ensurepip",
            "__pycache__",
        ];
        let mut stack = vec![stdlib.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).unwrap() {
                let e = e.unwrap();
                let p = e.path();
                let name = e.file_name();
                if skip.iter().any(|s| name == *s) || p.starts_with(stdlib.join("dist-packages")) {
                    continue;
                }
                let ty = e.file_type().unwrap();
                if ty.is_dir() {
                    stack.push(p);
                } else if ty.is_file() {
                    copy_in(py.path(), &p);
                    if p.extension().is_some_and(|x| x == "so") {
                        for lib in libraries(&p) {
                            copy_in(py.path(), &lib);
                        }
                    }
                }
            }
        }
        for link in ["python3", "python"] {
            std::os::unix::fs::symlink(
                "/usr/bin/python3.11",
                py.path().join("usr/local/bin").join(link),
            )
            .unwrap();
        }
        import(
            host,
            py.path(),
            &[path, r#"CMD ["python3"]"#],
            &["python:alpine3.23"],
        );

        let say = tempfile::tempdir().unwrap();
        busybox_root(say.path());
        let weir = Path::new(env!("CARGO_BIN_EXE_weir"));
        add_program(say.path(), weir);
        // its debug information is of no use there (a smaller image imports sooner)
        let _ = Command::new("strip")
            .arg("--strip-debug")
            .arg(say.path().join(weir.strip_prefix("/").unwrap()))
            .status();
        let inside = weir.display();
        std::fs::write(
            say.path().join("argosay"),
            format!("#!/bin/sh\nexec {inside} argosay \"$@\"\n"),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            say.path().join("argosay"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        import(
            host,
            say.path(),
            &[path, r#"ENTRYPOINT ["/argosay"]"#],
            &["argoproj/argosay:v2"],
        );
    });
}
