//! The errors a user acts on: `Usage`, fixed by changing the command line or the file (exit
//! code 2 from the CLI, 400 from the API), and `Conflict`, refused by the state of a run (409).

use std::fmt;

/// A usage or validation error: exit code 2.
#[derive(Debug)]
pub struct Usage(pub String);

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// A request the run's state refuses now (retrying a run that did not fail, controlling one
/// another process holds in a way only it can): exit code 1 from the CLI, 409 from the API.
#[derive(Debug)]
pub struct Conflict(pub String);

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Conflict {}
