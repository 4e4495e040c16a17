//! Pipewright's one integration-test binary: end-to-end tests against real parts.

mod exec_cli;
mod executor;
mod fake_gitea_selftest;
mod serve;
mod store;
mod vault;
