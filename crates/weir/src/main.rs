//! The `weir` binary: the command line, wiring the store, the state machine and the executor.
//!
//! Exit codes: 0 the workflow succeeded, 1 it failed or errored, 2 usage or validation error.

mod ambient;
mod argosay;
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
        Err(err) => {
            // validation problems are already `file:line:col: error: …` lines
            if let Some(invalid) = err.downcast_ref::<usage::Invalid>() {
                eprintln!("{invalid}");
                return ExitCode::from(2);
            }
            eprintln!("weir: error: {err:#}");
            if err.is::<usage::Usage>() {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}
