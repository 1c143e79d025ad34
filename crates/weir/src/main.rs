//! The `weir` binary: the command line, wiring the store, the state machine and the executor.
//!
//! Exit codes: 0 the workflow succeeded, 1 it failed or errored, 2 usage or validation error.

mod cli;
mod driver;
mod files;
mod show;
mod watch;

use std::process::ExitCode;

fn main() -> ExitCode {
    match cli::main() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("weir: error: {err:#}");
            ExitCode::from(match err.downcast_ref::<cli::Usage>() {
                Some(_) => 2,
                None => 1,
            })
        }
    }
}
