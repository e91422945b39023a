//! The `state:` section: the store owns its settings (as each sink owns its config), and
//! `config` assembles them with the rest.

use crate::config_value::duration::ConfigDuration;
use crate::config_value::interpolate::{Interpolated, SecretValue};
use crate::config_value::resolve;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `state.lease_ttl`.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(30);
/// `state.timeout`: longest wait for one PostgreSQL call (a transaction counts as one).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// `state.retention`.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// `state:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawState {
    /// SQLite database file; relative to the config file's directory. Required unless `url`.
    #[serde(default)]
    pub path: Option<Interpolated>,
    /// `postgres://user@host:port/db?sslmode=verify-full&sslrootcert=…`: the PostgreSQL state
    /// shared by several replicas (password by `${VAR}` or `password_file`).
    #[serde(default)]
    pub url: Option<SecretValue>,
    /// File holding the PostgreSQL password (read at start, trimmed).
    #[serde(default)]
    pub password_file: Option<Interpolated>,
    /// PostgreSQL: how long a mailbox lease lasts without renewal (default 30s).
    #[serde(default)]
    pub lease_ttl: Option<ConfigDuration>,
    /// PostgreSQL: longest wait for one database call (default 10s).
    #[serde(default)]
    pub timeout: Option<ConfigDuration>,
    /// Spool directory for fetched messages (default: `spool` beside the database).
    #[serde(default)]
    pub spool_dir: Option<Interpolated>,
    /// How long the state keeps messages that left the server (deleted, gone, replaced)
    /// before pruning them (default 30d).
    #[serde(default)]
    pub retention: Option<ConfigDuration>,
}

#[derive(Clone, Debug)]
pub struct StateConfig {
    /// SQLite database file (unused with PostgreSQL).
    pub path: PathBuf,
    /// Where the state lives.
    pub backend: StateBackend,
    /// Where messages wait between RETR and delivery (default: `<state dir>/spool`).
    pub spool_dir: PathBuf,
    /// How long messages that left the server stay in the state (default 30 days).
    pub retention: Duration,
}

#[derive(Clone, Debug)]
pub enum StateBackend {
    /// The embedded file at `StateConfig::path`; one polling process (flock).
    Sqlite,
    /// Shared by replicas, which lease mailboxes.
    Postgres(PostgresState),
}

#[derive(Clone, Debug)]
pub struct PostgresState {
    pub url: crate::secret::Secret,
    pub password_file: Option<PathBuf>,
    pub lease_ttl: Duration,
    pub timeout: Duration,
}

/// A problem found in `state:`: the key it concerns and what is wrong.
pub type StateProblem = (&'static str, &'static str);

impl RawState {
    /// Validate; `base` is the config file's directory, for relative paths. The settings come
    /// back even with problems (the caller reports them all, and derives other defaults from
    /// the state directory meanwhile).
    pub fn validate(self, base: &Path) -> (StateConfig, Vec<StateProblem>) {
        let mut problems = Vec::new();
        let backend = match self.url {
            Some(url) => {
                let url = url.into_secret();
                if !(url.expose().starts_with("postgres://")
                    || url.expose().starts_with("postgresql://"))
                {
                    problems.push(("state.url", "must be a postgres:// URL"));
                }
                StateBackend::Postgres(PostgresState {
                    url,
                    password_file: self.password_file.map(|f| resolve(base, f.as_str())),
                    lease_ttl: self.lease_ttl.map_or(DEFAULT_LEASE_TTL, Duration::from),
                    timeout: self.timeout.map_or(DEFAULT_TIMEOUT, Duration::from),
                })
            }
            None => {
                if self.password_file.is_some() || self.lease_ttl.is_some() {
                    problems.push((
                        "state",
                        "password_file and lease_ttl are for PostgreSQL: set state.url",
                    ));
                }
                StateBackend::Sqlite
            }
        };
        let path_text = match (&self.path, &backend) {
            (Some(p), _) => p.as_str().to_string(),
            (None, StateBackend::Postgres(_)) => "popbridge.db".to_string(),
            (None, StateBackend::Sqlite) => {
                problems.push(("state.path", "is required (or state.url for PostgreSQL)"));
                String::new()
            }
        };
        let state_path = resolve(base, &path_text);
        if self.path.is_some() && path_text.trim().is_empty() {
            problems.push(("state.path", "must not be empty"));
        }
        let spool_dir = match self.spool_dir {
            Some(dir) => resolve(base, dir.as_str()),
            None => state_path.parent().unwrap_or(Path::new("")).join("spool"),
        };
        let retention = self.retention.map_or(DEFAULT_RETENTION, Duration::from);
        let state = StateConfig {
            path: state_path,
            backend,
            spool_dir,
            retention,
        };
        (state, problems)
    }
}
