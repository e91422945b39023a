//! A private PostgreSQL cluster for one test: `initdb` + `pg_ctl` (Debian's PostgreSQL 15) on a
//! free loopback port, fsync off, as the `postgres` user when we are root (PostgreSQL refuses
//! to run as root).
//!
//! Used by the store's unit tests (included with `#[path]`) and by the `pg_*` integration
//! tests, so it depends on nothing else in the harness. The cluster is stopped and removed on
//! drop; a detached watchdog does the same if the test process dies first. Without PostgreSQL
//! the tests print why and pass, except with `CI=true`, where they fail.
#![allow(dead_code)]

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

const BIN: &str = "/usr/lib/postgresql/15/bin";

pub struct PgCluster {
    pub root: PathBuf,
    pub port: u16,
    as_postgres: bool,
    /// `-c` settings beyond port, socket and listen address.
    settings: &'static str,
}

/// Fast and throwaway: a commit may be lost even when PostgreSQL alone crashes.
const THROWAWAY: &str = "-c fsync=off -c synchronous_commit=off -c full_page_writes=off";
/// A commit that returned survives a crash of PostgreSQL (not of the machine: fsync is off).
const DURABLE_COMMITS: &str = "-c fsync=off -c full_page_writes=off";

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// Why a cluster cannot start here, if it cannot.
pub fn unavailable() -> Option<String> {
    if !Path::new(BIN).join("initdb").is_file() {
        return Some(format!(
            "{BIN}/initdb not found (apt-get install postgresql)"
        ));
    }
    None
}

/// A cluster, or `None` after printing why (a failure under `CI=true`).
pub fn start_or_skip() -> Option<PgCluster> {
    start_or_skip_with(THROWAWAY)
}

fn start_or_skip_with(settings: &'static str) -> Option<PgCluster> {
    match unavailable() {
        None => Some(PgCluster::start_with(settings)),
        Some(why) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("PostgreSQL is required under CI=true: {why}")
        }
        Some(why) => {
            eprintln!("skipping: {why}");
            None
        }
    }
}

/// As [`start_or_skip`], for crash tests: a commit that returned survives `pg_ctl -m immediate`
/// (`synchronous_commit` on), as on a real server.
pub fn start_durable_or_skip() -> Option<PgCluster> {
    start_or_skip_with(DURABLE_COMMITS)
}

static SEQ: AtomicU64 = AtomicU64::new(0);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

impl PgCluster {
    pub fn start() -> Self {
        Self::start_with(THROWAWAY)
    }

    fn start_with(settings: &'static str) -> Self {
        let clock = Instant::now();
        // Short: the socket path must fit in 107 bytes.
        let root = PathBuf::from(format!(
            "/tmp/pbpg-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("sock")).unwrap();
        let as_postgres = is_root();
        if as_postgres {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&root)
                .status()
                .unwrap();
            assert!(status.success(), "chown {}", root.display());
        }
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700)).unwrap();
        let mut c = PgCluster {
            root,
            port: 0,
            as_postgres,
            settings,
        };
        c.run(
            "initdb",
            &[
                "-D",
                &c.path("data"),
                "-U",
                "popbridge",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            ],
        );
        // The port can be taken between our probe and PostgreSQL's bind: try a few.
        for attempt in 0..5 {
            c.port = free_port();
            if c.pg_ctl_start() {
                break;
            }
            assert!(attempt < 4, "pg_ctl start failed:\n{}", c.log());
        }
        c.watchdog();
        c.run(
            "createdb",
            &[
                "-h",
                &c.path("sock"),
                "-p",
                &c.port.to_string(),
                "-U",
                "popbridge",
                "popbridge",
            ],
        );
        eprintln!(
            "PostgreSQL on 127.0.0.1:{} in {:?}",
            c.port,
            clock.elapsed()
        );
        c
    }

    fn path(&self, rel: &str) -> String {
        self.root.join(rel).display().to_string()
    }

    /// `postgres://` URL of the test database.
    pub fn url(&self) -> String {
        format!(
            "postgres://popbridge@127.0.0.1:{}/popbridge?sslmode=disable",
            self.port
        )
    }

    fn command(&self, tool: &str) -> Command {
        let bin = format!("{BIN}/{tool}");
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", &bin]);
            c
        } else {
            Command::new(bin)
        };
        cmd.current_dir("/");
        cmd
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let out = self.command(tool).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{tool} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn pg_ctl_start(&self) -> bool {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 {} -c max_connections=100",
            self.port,
            self.path("sock"),
            self.settings
        );
        self.command("pg_ctl")
            .args([
                "-D",
                &self.path("data"),
                "-l",
                &self.path("log"),
                "-w",
                "-o",
                &opts,
                "start",
            ])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// A crash and recovery: `pg_ctl -m immediate stop` (no checkpoint, clients cut off), then
    /// start again on the same port.
    pub fn restart_immediate(&self) {
        let stopped = self
            .command("pg_ctl")
            .args(["-D", &self.path("data"), "-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(stopped, "pg_ctl stop -m immediate failed:\n{}", self.log());
        assert!(
            self.pg_ctl_start(),
            "PostgreSQL did not restart:\n{}",
            self.log()
        );
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root.join("log")).unwrap_or_default()
    }

    /// Stops the cluster when this process ends, however it ends.
    fn watchdog(&self) {
        let stop = if self.as_postgres {
            format!("runuser -u postgres -- {BIN}/pg_ctl")
        } else {
            format!("{BIN}/pg_ctl")
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; cd /; \
             {stop} -D {data} -m immediate stop >/dev/null 2>&1; rm -rf {root}",
            pid = std::process::id(),
            data = self.path("data"),
            root = self.root.display()
        );
        let _ = Command::new("setsid")
            .args(["sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .args(["-D", &self.path("data"), "-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if std::env::var_os("PB_KEEP_POSTGRES").is_none() {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}
