//! The `weir` binary: the command line, wiring the store, the state machine and the executor.
//!
//! Exit codes: 0 the workflow succeeded, 1 it failed or errored, 2 usage or validation error.

mod ambient;
mod cli;
mod cluster;
mod driver;
mod env;
mod files;
mod lineage;
mod record;
mod remote;
mod server;
mod show;
mod usage;
mod watch;

use std::process::ExitCode;

fn main() -> ExitCode {
    match cli::main() {
        Ok(code) => code,
        Err(err) => match err.downcast_ref::<usage::Usage>() {
            // validation problems are already `file:line:col: error: …` lines
            Some(u) if u.0.contains(": error: ") => {
                eprintln!("{}", u.0);
                ExitCode::from(2)
            }
            Some(_) => {
                eprintln!("weir: error: {err:#}");
                ExitCode::from(2)
            }
            None => {
                eprintln!("weir: error: {err:#}");
                ExitCode::from(1)
            }
        },
    }
}
