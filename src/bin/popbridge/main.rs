//! The `popbridge` command line: the arguments, loading the config, and exit codes. The
//! subcommands live beside it (`run.rs`: once and run; `check.rs`: check and plan; `auth.rs`:
//! oauth2 and gmail-setup; `state.rs`: dlq, state and cutover). The only place that uses
//! `anyhow`.

use clap::{Parser, Subcommand};
use popbridge::telemetry::{self, LogFormat};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Exit codes (documented in the README).
mod exit {
    /// Everything asked for was done.
    pub const OK: u8 = 0;
    /// Ran, but some message did not reach every sink (or a check failed).
    pub const INCOMPLETE: u8 = 1;
    /// The command line or the config is invalid.
    pub const CONFIG: u8 = 2;
    /// Could not start: state database, spool, HTTP listener.
    pub const STARTUP: u8 = 3;
}

#[derive(Parser)]
#[command(
    name = "popbridge",
    version,
    about = "Pull mail from POP3 mailboxes and forward every message, effectively once, to sinks."
)]
struct Cli {
    /// Log format on stderr.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "POPBRIDGE_LOG_FORMAT"
    )]
    log_format: LogFormat,
    /// Log level or filter (`info`, `debug`, `popbridge=debug`); RUST_LOG wins.
    #[arg(
        long,
        global = true,
        default_value = "info",
        env = "POPBRIDGE_LOG_LEVEL"
    )]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct ConfigArg {
    /// The YAML config file.
    #[arg(short, long, env = "POPBRIDGE_CONFIG")]
    config: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Run as a daemon: poll every mailbox on its schedule and serve /healthz and /readyz.
    Run(ConfigArg),
    /// One pass over each mailbox. Exit 0 only if every new message reached every sink.
    Once {
        #[command(flatten)]
        config: ConfigArg,
        /// Only this mailbox.
        #[arg(long)]
        mailbox: Option<String>,
        /// Print the summary as JSON on stdout.
        #[arg(long)]
        json: bool,
        /// Wait this long (e.g. 10m) for another popbridge process polling with the same
        /// state to finish, instead of failing at once.
        #[arg(long, value_name = "DURATION")]
        wait_lock: Option<String>,
        /// Also write a per-mailbox report file: CSV, or JSON when FILE ends in .json.
        #[arg(long, value_name = "FILE")]
        report: Option<PathBuf>,
        /// Skip the mailboxes that this earlier report (JSON, from --report) says are done.
        #[arg(long, value_name = "FILE")]
        resume: Option<PathBuf>,
        /// When stderr is not a terminal: log a one-line fleet status this often (`off`: never).
        #[arg(long, value_name = "DURATION", default_value = "30s")]
        status_every: String,
    },
    /// What a run would do to each listed message, with no side effect: no RETR, no DELE, no
    /// sink called, no state written.
    Plan {
        #[command(flatten)]
        config: ConfigArg,
        /// Only this mailbox.
        #[arg(long)]
        mailbox: Option<String>,
        /// Print the plan as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Validate the config; with --connect also log in to every POP3 server and IMAP target
    /// account and check every sink.
    Check {
        #[command(flatten)]
        config: ConfigArg,
        /// Also log in to every POP3 mailbox and to every IMAP target account a mailbox routes to
        /// (one line each: ok or the reason), and run every other sink's healthcheck. Needs
        /// network access; exits non-zero if anything failed.
        #[arg(long)]
        connect: bool,
    },
    /// Dead letters: deliveries that failed permanently or ran out of retries.
    Dlq {
        #[command(subcommand)]
        action: DlqAction,
    },
    /// What the state database knows.
    State {
        #[command(subcommand)]
        action: StateAction,
    },
    /// OAuth2 credentials: sign in once for a refresh token, see what is stored.
    Oauth2 {
        #[command(subcommand)]
        action: Oauth2Action,
    },
    /// Authorise a Gmail account for the Gmail sink in one go: sign in (browser with PKCE,
    /// or the device flow where the server offers it), store the refresh token, check it
    /// against the Gmail API, print the config block to paste.
    GmailSetup(GmailSetupArgs),
    /// Config helpers.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
}

#[derive(clap::Args)]
struct GmailSetupArgs {
    /// The OAuth client ID (Google Cloud console → APIs & Services → Credentials).
    #[arg(long)]
    client_id: String,
    /// The environment variable holding the client secret; unset means a public client.
    #[arg(long, default_value = "GMAIL_CLIENT_SECRET")]
    client_secret_env: String,
    /// The Gmail address to import into.
    #[arg(long)]
    user: String,
    /// Name of the `oauth2:` credential (default `gmail-<local part>`).
    #[arg(long)]
    credential: Option<String>,
    /// Name of the sink in the printed block.
    #[arg(long, default_value = "gmail")]
    sink: String,
    /// The directory of the config's `state.path`: the token goes to DIR/oauth2/.
    #[arg(long, default_value = "./state")]
    state_dir: PathBuf,
    /// `browser` (default for Google) or `device`.
    #[arg(long)]
    flow: Option<String>,
    /// Scopes (default: gmail.insert gmail.labels gmail.readonly, the least the sink needs).
    #[arg(long)]
    scope: Option<String>,
    /// Another token endpoint (default Google's).
    #[arg(long)]
    token_url: Option<String>,
    /// A device authorization endpoint (RFC 8628); Google has none for Gmail scopes.
    #[arg(long)]
    device_authorization_url: Option<String>,
    /// Another authorization endpoint (default Google's).
    #[arg(long)]
    authorization_url: Option<String>,
    /// Another Gmail API root (default https://gmail.googleapis.com).
    #[arg(long)]
    api_base: Option<String>,
    /// Do not call the Gmail API to check the new token.
    #[arg(long)]
    no_check: bool,
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Print popbridge mailbox entries proposed from a fetchmailrc or getmailrc (passwords are
    /// never copied: each entry reads a `${VAR}` instead).
    Import {
        /// The tool whose config FILE is.
        #[arg(long = "from", value_enum)]
        tool: popbridge::cutover::rc::RcTool,
        /// `.fetchmailrc`, or a getmail6 `getmailrc`.
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum Oauth2Action {
    /// Sign in (device code, or browser with PKCE) and store the refresh token; with
    /// --mailbox, then log in to its POP3 server to check.
    Login {
        #[command(flatten)]
        config: ConfigArg,
        /// The mailbox whose credential to sign in.
        #[arg(long, conflicts_with = "credential")]
        mailbox: Option<String>,
        /// The `oauth2:` credential to sign in.
        #[arg(long)]
        credential: Option<String>,
        /// `device` or `browser` (default: device where the provider offers it).
        #[arg(long)]
        flow: Option<String>,
    },
    /// Each credential: its grant, token URL and stored refresh token's age.
    Status(ConfigArg),
    /// Revoke the stored refresh token where the provider supports it, then delete it.
    Logout {
        #[command(flatten)]
        config: ConfigArg,
        /// The `oauth2:` credential.
        #[arg(long)]
        credential: String,
    },
}

#[derive(Subcommand)]
enum DlqAction {
    /// List dead letters.
    List {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        mailbox: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Make dead letters pending again; the next poll retries them.
    Retry(Selector),
    /// Give up on dead letters for good (the messages stay on the server).
    Drop(Selector),
}

#[derive(clap::Args)]
struct Selector {
    #[command(flatten)]
    config: ConfigArg,
    #[arg(long)]
    mailbox: String,
    #[arg(long)]
    uidl: Option<String>,
    #[arg(long)]
    sink: Option<String>,
}

#[derive(Subcommand)]
enum StateAction {
    /// Counts per mailbox.
    Show {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        json: bool,
    },
    /// Who polls each mailbox: on PostgreSQL each lease's owner, epoch, expiry and planned
    /// poll; on SQLite the one process that holds the state's lock.
    Leases {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        json: bool,
    },
    /// Move a SQLite state into PostgreSQL (receipts, history, dead letters), so replicas
    /// carry on without delivering anything again. Stop the SQLite process first; the
    /// PostgreSQL state must hold no message yet.
    Copy {
        /// The config whose state is the SQLite file to copy.
        #[command(flatten)]
        config: ConfigArg,
        /// The config whose state is the PostgreSQL database to fill.
        #[arg(long)]
        to: PathBuf,
    },
    /// Forget a message (or a whole mailbox): it will be delivered again, on purpose.
    Forget {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        mailbox: String,
        #[arg(long)]
        uidl: Option<String>,
    },
    /// Switch from fetchmail, getmail6 or mpop: the messages that tool already retrieved (and
    /// that are still on the server) count as delivered, so popbridge never fetches them.
    Import {
        #[command(flatten)]
        config: ConfigArg,
        /// The tool whose state FILE is.
        #[arg(long = "from", value_enum)]
        tool: popbridge::cutover::formats::Tool,
        /// fetchmail's .fetchids, getmail6's oldmail-<server>-<port>-<user>, mpop's uidls_file.
        file: PathBuf,
        #[arg(long)]
        mailbox: String,
        /// Sinks to record them for (default: every sink of the mailbox), comma-separated.
        #[arg(long, value_delimiter = ',')]
        sinks: Vec<String>,
        /// Connect and count, record nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Everything on the server now counts as delivered, without fetching (a switch from a
    /// tool whose state is lost).
    Baseline {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        mailbox: String,
        #[arg(long, value_delimiter = ',')]
        sinks: Vec<String>,
        #[arg(long)]
        dry_run: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format, &cli.log_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::STARTUP);
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit::STARTUP)
        }
    }
}

/// Load and validate the config, printing errors the way a person needs them.
fn load_config(path: &Path) -> Result<popbridge::config::Config, u8> {
    match popbridge::config::load(path) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                tracing::warn!("{w}");
            }
            Ok(loaded.config)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Err(exit::CONFIG)
        }
    }
}

macro_rules! config_or_exit {
    ($path:expr) => {
        match load_config($path) {
            Ok(c) => c,
            Err(code) => return Ok(code),
        }
    };
}

async fn dispatch(command: Command) -> anyhow::Result<u8> {
    match command {
        Command::Run(c) => run::run(config_or_exit!(&c.config)).await,
        Command::Once {
            config,
            mailbox,
            json,
            wait_lock,
            report,
            resume,
            status_every,
        } => {
            let wait = match wait_lock
                .as_deref()
                .map(popbridge::config_value::duration::parse_duration)
            {
                None => std::time::Duration::ZERO,
                Some(Ok(d)) => d,
                Some(Err(e)) => {
                    eprintln!("error: --wait-lock: {e}");
                    return Ok(exit::CONFIG);
                }
            };
            let status_every = match status_every.as_str() {
                "off" | "0" => None,
                d => match popbridge::config_value::duration::parse_duration(d) {
                    Ok(d) => Some(d),
                    Err(e) => {
                        eprintln!("error: --status-every: {e}");
                        return Ok(exit::CONFIG);
                    }
                },
            };
            let files = run::ReportFiles {
                report,
                resume,
                status_every,
            };
            run::once(config_or_exit!(&config.config), mailbox, json, wait, files).await
        }
        Command::Check { config, connect } => {
            check::check(config_or_exit!(&config.config), connect).await
        }
        Command::Plan {
            config,
            mailbox,
            json,
        } => check::plan(config_or_exit!(&config.config), mailbox, json).await,
        Command::Dlq { action } => state::dlq(action).await,
        Command::State { action } => state::state(action).await,
        Command::Oauth2 { action } => auth::oauth2(action).await,
        Command::GmailSetup(args) => auth::gmail_setup(args).await,
        Command::Config {
            action: ConfigAction::Import { tool, file },
        } => {
            let text = match std::fs::read_to_string(&file) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("error: cannot read {}: {e}", file.display());
                    return Ok(exit::CONFIG);
                }
            };
            let imported = popbridge::cutover::rc::parse(tool, &text);
            print!("{}", popbridge::cutover::rc::render(tool, &imported));
            Ok(if imported.mailboxes.is_empty() {
                exit::INCOMPLETE
            } else {
                exit::OK
            })
        }
    }
}

/// Cancelled on SIGINT or SIGTERM: polls stop at a clean point.
fn shutdown_token() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "Cannot listen for SIGTERM");
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("Shutting down: finishing deliveries in flight");
        t.cancel();
    });
    token
}

async fn open_store(path: &Path) -> Result<Arc<dyn popbridge::store::Store>, u8> {
    let config = load_config(path)?;
    popbridge::store::open(&config.state).await.map_err(|e| {
        eprintln!("error: {e}");
        exit::STARTUP
    })
}

macro_rules! store_or_exit {
    ($path:expr) => {
        match open_store($path).await {
            Ok(s) => s,
            Err(code) => return Ok(code),
        }
    };
}

// After the macros above, so the subcommands can use them.
mod auth;
mod check;
mod run;
mod state;
