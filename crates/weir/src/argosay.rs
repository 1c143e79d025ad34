//! `weir argosay`: a built-in stand-in for `argoproj/argosay`, the small test program most of
//! Argo's own e2e fixtures run (the image's entrypoint `/argosay`). The local executor runs it in
//! place of that image's program; written from its documented behaviour:
//!
//! - no argument, or `echo`: prints `hello argo`
//! - `echo MSG`: prints MSG; `echo MSG FILE`: writes MSG to FILE, creating its directory
//! - `cat FILE`: prints FILE
//! - `exit [N]`: exits with N (0 by default)
//! - `sleep DURATION`: sleeps (`10s`, `1m`, `500ms`)
//! - `assert_contains FILE TEXT`: fails unless FILE contains TEXT
//! - `sh FILE`: runs FILE with `/bin/sh`
//!
//! Anything else exits 1.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

/// Runs `argosay ARGS…` and returns its exit code.
pub fn main(args: &[String]) -> ExitCode {
    match say(args, &mut std::io::stdout()) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("argosay: {e}");
            ExitCode::from(1)
        }
    }
}

fn say(args: &[String], out: &mut dyn Write) -> Result<u8, String> {
    let io = |e: std::io::Error| e.to_string();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        [] | ["echo"] => writeln!(out, "hello argo").map_err(io)?,
        ["echo", msg] => writeln!(out, "{msg}").map_err(io)?,
        ["echo", msg, file] => {
            let file = Path::new(file);
            if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            }
            std::fs::write(file, msg).map_err(|e| format!("{}: {e}", file.display()))?;
        }
        ["cat", file] => {
            let text = std::fs::read(file).map_err(|e| format!("{file}: {e}"))?;
            out.write_all(&text).map_err(io)?;
        }
        ["exit"] => return Ok(0),
        ["exit", n] => {
            return n
                .parse::<i64>()
                .map(|n| n.rem_euclid(256) as u8)
                .map_err(|_| format!("exit: `{n}` is not a number"));
        }
        ["sleep", d] => {
            let ms = weir_core::run::duration_ms(d)?
                .ok_or_else(|| format!("sleep: `{d}` is not a duration"))?;
            std::thread::sleep(std::time::Duration::from_millis(ms.max(0) as u64));
        }
        ["assert_contains", file, text] => {
            let got = std::fs::read_to_string(file).map_err(|e| format!("{file}: {e}"))?;
            if !got.contains(text) {
                return Err(format!("{file} does not contain `{text}`"));
            }
        }
        ["sh", file] => {
            let status = std::process::Command::new("/bin/sh")
                .arg(file)
                .status()
                .map_err(|e| format!("sh {file}: {e}"))?;
            return Ok(status.code().map(|c| c as u8).unwrap_or(1));
        }
        other => return Err(format!("unknown command: {}", other.join(" "))),
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> (Result<u8, String>, String) {
        let mut out = Vec::new();
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let r = say(&args, &mut out);
        (r, String::from_utf8(out).unwrap())
    }

    #[test]
    fn argosay_does_what_its_documentation_says() {
        assert_eq!(run(&[]), (Ok(0), "hello argo\n".into()));
        assert_eq!(run(&["echo"]), (Ok(0), "hello argo\n".into()));
        assert_eq!(run(&["echo", "hi there"]), (Ok(0), "hi there\n".into()));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("deep/er/out.txt");
        let f = file.to_str().unwrap();
        assert_eq!(run(&["echo", "stored", f]).0, Ok(0));
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "stored");
        assert_eq!(run(&["cat", f]), (Ok(0), "stored".into()));
        assert_eq!(run(&["assert_contains", f, "tor"]).0, Ok(0));
        assert!(run(&["assert_contains", f, "nope"]).0.is_err());
        assert!(run(&["cat", "/nonexistent/file"]).0.is_err());
        assert_eq!(run(&["exit"]).0, Ok(0));
        assert_eq!(run(&["exit", "3"]).0, Ok(3));
        assert!(run(&["exit", "x"]).0.is_err());
        assert_eq!(run(&["sleep", "1ms"]).0, Ok(0));
        assert!(run(&["sleep", "soon"]).0.is_err());
        let script = dir.path().join("s.sh");
        std::fs::write(&script, "exit 4\n").unwrap();
        assert_eq!(run(&["sh", script.to_str().unwrap()]).0, Ok(4));
        assert!(run(&["dance"]).0.is_err());
    }
}
