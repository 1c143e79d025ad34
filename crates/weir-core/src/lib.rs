//! Weir's pure core: the Argo Workflows model, loading with located diagnostics, the template
//! language (`{{…}}`, `when`, `{{=…}}`) and the run state machine.
//!
//! Architecture invariant: nothing here does IO, reads the clock, the environment or randomness.
//! Time, ids and task outcomes arrive as arguments.

pub mod base64;
pub mod diag;
pub mod expr;
pub mod limits;
pub mod load;
pub mod mask;
pub mod names;
pub mod run;
pub mod spec;
pub mod subst;
pub mod yaml;

#[cfg(test)]
mod tests;
