//! Readiness probes of daemon tasks, run on this host: `exec` runs a command, `httpGet` asks
//! 127.0.0.1 for a path, `tcpSocket` connects to 127.0.0.1.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use weir_core::run::{Probe, ProbeCheck};

use crate::shared::{LazyLog, lock};

/// Probes until the check passes (true) or the task exits (false).
pub(crate) fn wait_ready(
    p: &Probe,
    user: Option<(u32, u32)>,
    exited: &AtomicBool,
    log: &Mutex<LazyLog>,
) -> bool {
    if pause(p.initial_delay_ms, exited) {
        return false;
    }
    let mut said = false;
    loop {
        match check(&p.check, user) {
            Ok(()) => return true,
            Err(why) if !said => {
                lock(log).line(&format!("weir: not ready yet: {why}"));
                said = true;
            }
            Err(_) => {}
        }
        if pause(p.period_ms.max(50), exited) {
            return false;
        }
    }
}

/// Waits `ms`, in short slices so an exited task ends the probe soon; true if it exited.
fn pause(ms: u64, exited: &AtomicBool) -> bool {
    let mut left = ms;
    loop {
        if exited.load(Ordering::SeqCst) {
            return true;
        }
        if left == 0 {
            return false;
        }
        let slice = left.min(50);
        std::thread::sleep(Duration::from_millis(slice));
        left -= slice;
    }
}

/// `user`: an exec probe runs as the task's user, as the task itself does.
fn check(c: &ProbeCheck, user: Option<(u32, u32)>) -> Result<(), String> {
    let local = |port: u16| SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    match c {
        ProbeCheck::Exec(argv) => {
            let Some((prog, args)) = argv.split_first() else {
                return Err("an exec probe with no command".into());
            };
            let mut cmd = Command::new(prog);
            if let Some((uid, gid)) = user {
                use std::os::unix::process::CommandExt;
                cmd.uid(uid).gid(gid);
            }
            let status = cmd
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map_err(|e| format!("`{prog}`: {e}"))?;
            if status.success() {
                Ok(())
            } else {
                Err(format!("`{}` exited with {status}", argv.join(" ")))
            }
        }
        ProbeCheck::Tcp { port } => {
            TcpStream::connect_timeout(&local(*port), Duration::from_secs(1))
                .map(|_| ())
                .map_err(|e| format!("127.0.0.1:{port}: {e}"))
        }
        ProbeCheck::Http { port, path } => {
            let mut s = TcpStream::connect_timeout(&local(*port), Duration::from_secs(1))
                .map_err(|e| format!("127.0.0.1:{port}: {e}"))?;
            let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
            write!(
                s,
                "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: weir-probe\r\n\r\n"
            )
            .map_err(|e| e.to_string())?;
            let mut head = [0u8; 64];
            let n = s.read(&mut head).map_err(|e| e.to_string())?;
            let line = String::from_utf8_lossy(&head[..n]);
            let code: u16 = line
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| format!("not an HTTP answer: {line:?}"))?;
            if (200..400).contains(&code) {
                Ok(())
            } else {
                Err(format!("GET {path} answered {code}"))
            }
        }
    }
}
