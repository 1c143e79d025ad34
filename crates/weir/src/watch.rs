//! Watching a run in the terminal: task logs as they come, and on a TTY a live tree of
//! steps/tasks with phase and duration plus a progress line, redrawn in place.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use weir_core::run::{NodeType, Phase, Run};

use crate::ambient::now_ms;
use crate::driver::Watch;
use crate::show;

pub struct Terminal {
    tty: bool,
    logs: bool,
    /// How far into `Run::finished_order` we have reported.
    reported: usize,
    live_lines: usize,
    last_draw: Option<Instant>,
    names: HashMap<String, String>,
}

impl Terminal {
    pub fn new(logs: bool) -> Terminal {
        Terminal {
            tty: std::io::stdout().is_terminal(),
            logs,
            reported: 0,
            live_lines: 0,
            last_draw: None,
            names: HashMap::new(),
        }
    }

    fn erase(&mut self, out: &mut impl Write) {
        if self.live_lines > 0 {
            let _ = write!(out, "\x1b[{}F\x1b[J", self.live_lines);
            self.live_lines = 0;
        }
    }

    fn draw(&mut self, run: &Run, out: &mut impl Write) {
        let rows = terminal_rows().saturating_sub(3).max(5);
        let tree = show::tree(run);
        let nodes = run.nodes();
        let now = now_ms();
        let mut lines = Vec::new();
        // keep the active and failed nodes in view when the tree is taller than the screen
        let interesting: Vec<&(String, usize)> = if tree.len() > rows {
            tree.iter()
                .filter(|(_, i)| {
                    !matches!(
                        nodes[*i].phase,
                        Phase::Succeeded | Phase::Skipped | Phase::Omitted
                    ) || nodes[*i].parent.is_none()
                })
                .take(rows)
                .collect()
        } else {
            tree.iter().collect()
        };
        for (prefix, i) in interesting {
            let n = &nodes[*i];
            let mut l = format!("{prefix}{} {}", show::icon(n), n.display_name);
            if n.node_type == NodeType::Pod || n.phase.is_done() {
                l.push_str(&format!("  {}", show::node_duration(n, now)));
            }
            if !n.message.is_empty() && !n.phase.is_ok() {
                l.push_str(&format!("  {}", n.message));
            }
            lines.push(l);
        }
        lines.push(progress(run, now));
        for l in &lines {
            let _ = writeln!(out, "{}", truncate_cols(l, terminal_cols()));
        }
        self.live_lines = lines.len();
        self.last_draw = Some(Instant::now());
    }

    fn report_finished(&mut self, run: &Run, out: &mut impl Write) {
        let now = now_ms();
        let order = run.finished_order();
        if order.len() < self.reported {
            self.reported = 0; // a retry started over
        }
        for &i in &order[self.reported..] {
            let n = &run.nodes()[i];
            if n.node_type != NodeType::Pod && n.node_type != NodeType::Suspend {
                continue;
            }
            let msg = if n.message.is_empty() {
                String::new()
            } else {
                format!(": {}", n.message)
            };
            let _ = writeln!(
                out,
                "{} {} ({}){msg}",
                show::icon(n),
                n.display_name,
                show::node_duration(n, now)
            );
        }
        self.reported = order.len();
    }
}

fn progress(run: &Run, now: i64) -> String {
    let mut counts: HashMap<Phase, usize> = HashMap::new();
    for n in run.nodes().iter().filter(|n| n.node_type == NodeType::Pod) {
        *counts.entry(n.phase).or_default() += 1;
    }
    let c = |p| counts.get(&p).copied().unwrap_or(0);
    let total: usize = counts.values().sum();
    let done = c(Phase::Succeeded) + c(Phase::Failed) + c(Phase::Error);
    format!(
        "{} {}  {done}/{total} tasks done · {} running · {} failed · {}",
        run.submission().name,
        if run.is_suspended() && !run.phase().is_done() {
            "Suspended".to_string()
        } else {
            run.phase().to_string()
        },
        c(Phase::Running) + c(Phase::Pending),
        c(Phase::Failed) + c(Phase::Error),
        show::duration(run.finished_at().unwrap_or(now) - run.started_at())
    )
}

fn terminal_rows() -> usize {
    term_size().0
}

fn terminal_cols() -> usize {
    term_size().1
}

fn term_size() -> (usize, usize) {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ fills the struct we pass.
    let r = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) };
    if r == 0 && ws.ws_row > 0 {
        (ws.ws_row as usize, ws.ws_col.max(20) as usize)
    } else {
        (24, 120)
    }
}

fn truncate_cols(s: &str, cols: usize) -> String {
    if s.chars().count() <= cols {
        s.to_string()
    } else {
        s.chars().take(cols.saturating_sub(1)).collect::<String>() + "…"
    }
}

impl Watch for Terminal {
    fn wants_logs(&self) -> bool {
        self.logs
    }

    fn log(&mut self, run: &Run, node: &str, line: &str) {
        let name = self
            .names
            .entry(node.to_string())
            .or_insert_with(|| {
                run.node_by_id(node)
                    .map(|n| n.display_name.clone())
                    .unwrap_or_else(|| node.to_string())
            })
            .clone();
        let mut out = std::io::stdout().lock();
        if self.tty {
            self.erase(&mut out);
            let _ = writeln!(out, "\x1b[2m{name}:\x1b[0m {line}");
            self.draw(run, &mut out);
        } else {
            let _ = writeln!(out, "{name}: {line}");
        }
    }

    fn update(&mut self, run: &Run) {
        let mut out = std::io::stdout().lock();
        if self.tty {
            if self
                .last_draw
                .is_some_and(|t| t.elapsed() < Duration::from_millis(100))
            {
                return;
            }
            self.erase(&mut out);
            self.draw(run, &mut out);
        } else {
            self.report_finished(run, &mut out);
        }
    }

    fn tick(&mut self, run: &Run) {
        if self.tty {
            let mut out = std::io::stdout().lock();
            self.erase(&mut out);
            self.draw(run, &mut out);
        }
    }

    fn note(&mut self, msg: &str) {
        eprintln!("weir: {msg}");
    }

    fn finish(&mut self, run: &Run) {
        let mut out = std::io::stdout().lock();
        if self.tty {
            self.erase(&mut out);
        } else {
            self.report_finished(run, &mut out);
        }
        let _ = writeln!(out);
        let _ = write!(out, "{}", show::get_text(run, false, now_ms()));
    }
}

/// Prints nothing while running (`--quiet`, `-o json`).
pub struct Silent;

impl Watch for Silent {
    fn wants_logs(&self) -> bool {
        false
    }
    fn log(&mut self, _: &Run, _: &str, _: &str) {}
    fn update(&mut self, _: &Run) {}
    fn tick(&mut self, _: &Run) {}
    fn note(&mut self, msg: &str) {
        eprintln!("weir: {msg}");
    }
    fn finish(&mut self, _: &Run) {}
}
