//! Every default of the configuration, written once: decoding falls back to these, and
//! `[docker].stop_grace` is the executor's own default. The field docs of [`super::Config`]
//! say the same values in the file's notation; a test checks that they agree.

use std::{
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    time::Duration,
};

/// `[server].listen`.
pub const LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8080));
/// `[server].data_dir`.
pub const DATA_DIR: &str = "./pipewright-data";
/// `[server].catch_up_interval`.
pub const CATCH_UP_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// `[server].header_timeout`.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// `[server].body_timeout`.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// `[server].max_connections`.
pub const MAX_CONNECTIONS: usize = 512;
/// `[server].body_memory`.
pub const BODY_MEMORY: u64 = 64 << 20;
/// `[server].max_deliveries`.
pub const MAX_DELIVERIES: usize = 32;
/// `[server].secrets_dir`: a tmpfs on most Linux systems.
pub const SECRETS_DIR: &str = "/dev/shm/pipewright";
/// `[log].format`.
pub const LOG_FORMAT: super::LogFormat = super::LogFormat::Text;
/// `[log].level`.
pub const LOG_LEVEL: &str = "info";
/// `[gitea].git_timeout`.
pub const GIT_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// `[identity].audience`.
pub const AUDIENCE: &str = "vault";
/// `[identity].token_ttl`.
pub const TOKEN_TTL: Duration = Duration::from_secs(10 * 60);
/// `[vault].mount`.
pub const MOUNT: &str = "jwt";
/// `[vault].role_template`.
pub const ROLE_TEMPLATE: &str = "gitea_cicd_{repo}";
/// `[docker].stop_grace`: the executor's default.
pub const STOP_GRACE: Duration = pipewright_containers::DEFAULT_STOP_GRACE;
/// `[docker].default_memory` (4 GiB), or `max_memory` when that is lower.
pub const DEFAULT_MEMORY: u64 = 4 << 30;
/// `[docker].default_pids`, or `max_pids` when that is lower.
pub const DEFAULT_PIDS: u64 = 4096;
/// `[docker].max_memory` (16 GiB).
pub const MAX_MEMORY: u64 = 16 << 30;
/// `[docker].max_pids`.
pub const MAX_PIDS: u64 = 32_768;
/// `[docker].max_timeout`.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(6 * 3600);
/// `[docker].max_log_bytes`.
pub const MAX_LOG_BYTES: u64 = 64 << 20;
/// `[docker].secrets_in_env`.
pub const SECRETS_IN_ENV: bool = true;
/// `[agent].capacity`.
pub const CAPACITY: usize = 2;
/// `[agent].lease`.
pub const LEASE: Duration = crate::store::LEASE;
/// `[agent].drain_timeout`.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// `[retention].logs` (90 days).
pub const RETENTION_LOGS: Option<Duration> = Some(Duration::from_secs(90 * 86_400));
/// `[retention].runs` (90 days).
pub const RETENTION_RUNS: Option<Duration> = Some(Duration::from_secs(90 * 86_400));
/// `[retention].interval`.
pub const RETENTION_INTERVAL: Duration = Duration::from_secs(3600);
/// `[[repos]].apply_requirements`.
pub const APPLY_REQUIREMENTS: &[super::ApplyRequirement] = &[
    super::ApplyRequirement::Approved,
    super::ApplyRequirement::Mergeable,
];
/// `[gitea_actions].name`.
pub const GITEA_ACTIONS_NAME: &str = "pipewright";
/// `[gitea_actions].labels`.
pub const GITEA_ACTIONS_LABELS: &[&str] = &["pipewright"];
