//! Pipewright's one integration-test binary: end-to-end tests against real parts.

mod actions;
mod comments;
mod exec_cli;
mod executor;
mod fake_gitea_selftest;
mod fuzz;
mod image_build;
mod offline;
mod operations;
mod outbox;
mod registries;
mod schedules;
mod secret_files;
mod serve;
mod step_flow;
mod store;
mod tools_image;
mod trust_files;
mod trust_http;
mod trust_mask;
mod trust_payload;
mod ui_auth;
mod ui_browser;
mod ui_pages;
mod vault;
