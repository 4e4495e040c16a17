//! The `pipewright` program: command line, local runs, and (as it grows) the server.

pub mod cli;
pub mod config;
mod events;
mod exec;
mod git;
mod gitea;
mod local;
mod logs;
pub mod run;
pub mod server;
pub mod store;
