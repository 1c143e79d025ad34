//! The error a user fixes by changing the command line or the file: exit code 2 from the CLI,
//! 400 from the API.

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
