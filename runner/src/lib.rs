//! The `pipewright` program: command line, local runs, and (as it grows) the server.

pub mod cli;
mod exec;
mod local;
pub mod run;
