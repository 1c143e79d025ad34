//! The errors a user acts on: `Invalid`, a workflow's located problems, and `Usage`, fixed by
//! changing the command line or the request (both exit code 2 from the CLI, 400 from the API),
//! and `Conflict`, refused by the state of a run (exit 1, 409). Front ends tell them apart by
//! type, never by their text.

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

/// A workflow's (or configuration file's) problems, one `FILE:LINE:COL: error: PATH: MESSAGE`
/// line each: printed as they are with exit code 2, `invalid_workflow` (400) from the API.
#[derive(Debug)]
pub struct Invalid(pub String);

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Invalid {}

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
