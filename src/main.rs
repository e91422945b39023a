//! The `popbridge` command line. The only place that uses `anyhow`.

use anyhow::Context;
use clap::{Parser, Subcommand};
use popbridge::app::App;
use popbridge::server::{router, Readiness};
use popbridge::telemetry::{self, LogFormat};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
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
        Command::Run(c) => run(config_or_exit!(&c.config)).await,
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
            let files = ReportFiles {
                report,
                resume,
                status_every,
            };
            once(config_or_exit!(&config.config), mailbox, json, wait, files).await
        }
        Command::Check { config, connect } => check(config_or_exit!(&config.config), connect).await,
        Command::Plan {
            config,
            mailbox,
            json,
        } => plan(config_or_exit!(&config.config), mailbox, json).await,
        Command::Dlq { action } => dlq(action).await,
        Command::State { action } => state(action).await,
        Command::Oauth2 { action } => oauth2(action).await,
        Command::GmailSetup(args) => gmail_setup(args).await,
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

/// `once --report` / `--resume`, and how often to log the fleet status.
struct ReportFiles {
    report: Option<PathBuf>,
    resume: Option<PathBuf>,
    status_every: Option<std::time::Duration>,
}

/// Mailboxes an earlier `--report FILE.json` lists as complete.
fn done_in_report(path: &Path) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let reports: Vec<serde_json::Value> = serde_json::from_str(&text)
        .map_err(|e| format!("not a JSON report written by `once --report FILE.json`: {e}"))?;
    Ok(reports
        .iter()
        .filter(|r| complete_in_json(r))
        .filter_map(|r| r["mailbox"].as_str().map(str::to_string))
        .collect())
}

/// `PollReport::complete` as seen in its JSON.
fn complete_in_json(r: &serde_json::Value) -> bool {
    let zero = |k: &str| r[k].as_u64() == Some(0);
    r["error"].is_null()
        && r["failures"].as_array().is_some_and(|f| f.is_empty())
        && ["retry_later", "dead_lettered", "dead_earlier", "waiting"]
            .iter()
            .all(|k| zero(k))
}

async fn once(
    config: popbridge::config::Config,
    mailbox: Option<String>,
    json: bool,
    wait_lock: std::time::Duration,
    files: ReportFiles,
) -> anyhow::Result<u8> {
    let app = App::build_waiting(config, wait_lock)
        .await
        .context("cannot start")?;
    let selected = match app.select(mailbox.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(exit::CONFIG);
        }
    };
    let selected = match &files.resume {
        None => selected,
        Some(path) => {
            let done = match done_in_report(path) {
                Ok(d) => d,
                Err(e) => {
                    eprintln!("error: --resume {}: {e}", path.display());
                    return Ok(exit::CONFIG);
                }
            };
            let (skip, keep): (Vec<_>, Vec<_>) = selected
                .into_iter()
                .partition(|m| done.contains(&m.mailbox.name));
            eprintln!(
                "resuming: {} mailbox(es) done in {}, {} to poll",
                skip.len(),
                path.display(),
                keep.len()
            );
            keep
        }
    };
    let shutdown = shutdown_token();
    let renderer = popbridge::progress::spawn_renderer(
        selected
            .iter()
            .map(|m| (m.mailbox.name.clone(), m.progress.clone()))
            .collect(),
        popbridge::progress::Settings {
            status_every: files.status_every,
        },
    );
    let reports = app.run_once(&selected, &shutdown).await;
    app.close_sinks().await;
    if let Some(r) = renderer {
        r.finish().await;
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        print!("{}", popbridge::summary::table(&reports));
    }
    if let Some(path) = &files.report {
        let text = if path.extension().is_some_and(|e| e == "json") {
            serde_json::to_string_pretty(&popbridge::summary::json(&reports))?
        } else {
            popbridge::summary::csv(&reports)
        };
        std::fs::write(path, text)
            .with_context(|| format!("cannot write the report {}", path.display()))?;
    }
    Ok(if reports.iter().all(|r| r.complete()) {
        exit::OK
    } else {
        exit::INCOMPLETE
    })
}

async fn run(config: popbridge::config::Config) -> anyhow::Result<u8> {
    let listen = config.http.listen;
    let credentials = token_sources(&config).into_values().collect();
    let app = App::build(config).await.context("cannot start")?;
    let shutdown = shutdown_token();
    let health = Arc::new(popbridge::scheduler::Health::default());
    let readiness = Arc::new(Readiness {
        store: app.store.clone(),
        sinks: app.sinks.clone(),
        scheduler_running: AtomicBool::new(false),
        mailboxes: health.clone(),
        oauth2: credentials,
    });
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (http.listen)"))?;
    tracing::info!(listen = %listen, mailboxes = app.mailboxes.len(), "Serving /healthz and /readyz");
    let server_shutdown = shutdown.clone();
    let served = readiness.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, router(served))
            .with_graceful_shutdown(async move { server_shutdown.cancelled().await })
            .await
    });
    let on_report: Arc<dyn Fn(&popbridge::engine::poll::PollReport) + Send + Sync> = Arc::new(
        |r| {
            if r.error.is_none() {
                tracing::info!(mailbox = %r.mailbox, listed = r.listed, fetched = r.fetched, delivered = r.delivered,
                retry = r.retry_later, dead = r.dead_lettered, deleted = r.deleted, "Poll finished");
            }
        },
    );
    readiness.scheduler_running.store(true, Ordering::SeqCst);
    app.run_mailboxes(&shutdown, on_report, health.clone())
        .await;
    readiness.scheduler_running.store(false, Ordering::SeqCst);
    app.close_sinks().await;
    shutdown.cancel();
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "HTTP server failed"),
        Err(e) => tracing::error!(error = %e, "HTTP server task failed"),
    }
    tracing::info!("Stopped");
    Ok(exit::OK)
}

async fn check(config: popbridge::config::Config, connect: bool) -> anyhow::Result<u8> {
    println!(
        "config {}: ok ({} mailboxes, {} sinks)",
        config.source.display(),
        config.mailboxes.len(),
        config.sinks.len()
    );
    if !connect {
        return Ok(exit::OK);
    }
    let mut failed = false;
    for m in &config.mailboxes {
        match popbridge::pop3::connect(&m.pop3).await {
            Ok(session) => {
                let notes = server_notes(session.capabilities());
                let _ = session.quit().await;
                println!("mailbox {} ({}): login ok{notes}", m.name, m.pop3.server());
            }
            Err(e) => {
                failed = true;
                println!("mailbox {} ({}): FAILED: {e}", m.name, m.pop3.server());
            }
        }
    }
    for s in &config.sinks {
        if let popbridge::config::SinkKind::Imap(settings) = &s.kind {
            failed |= !check_imap_accounts(&config, &s.name, settings).await;
            continue;
        }
        let result = match popbridge::app::build_sink(s) {
            Ok(sink) => sink.healthcheck().await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match result {
            Ok(()) => println!("sink {}: ok", s.name),
            Err(e) => {
                failed = true;
                println!("sink {}: FAILED: {e}", s.name);
            }
        }
    }
    Ok(if failed { exit::INCOMPLETE } else { exit::OK })
}

/// Logs in to every target account an IMAP sink serves (the templates expanded for each
/// mailbox routed to it, each account once) and prints one line each; `false` if any failed.
async fn check_imap_accounts(
    config: &popbridge::config::Config,
    name: &str,
    settings: &popbridge::sink::imap::ImapSettings,
) -> bool {
    let sink = match popbridge::sink::imap::ImapSink::new(name, settings.clone()) {
        Ok(sink) => sink,
        Err(e) => {
            println!("sink {name}: FAILED: {e}");
            return false;
        }
    };
    let mut ok = true;
    let mut seen = std::collections::BTreeSet::new();
    for m in config
        .mailboxes
        .iter()
        .filter(|m| m.sinks.iter().any(|s| s == name))
    {
        let account = match settings.account_for(&m.name) {
            Ok(a) => a.username,
            Err(e) => {
                ok = false;
                println!("sink {name}: mailbox {}: FAILED: {e}", m.name);
                continue;
            }
        };
        if !seen.insert(account.clone()) {
            continue;
        }
        match sink.check_login(&m.name).await {
            Ok(_) => println!(
                "sink {name}: account {account} (mailbox {}): login ok",
                m.name
            ),
            Err(e) => {
                ok = false;
                println!(
                    "sink {name}: account {account} (mailbox {}): FAILED: {e}",
                    m.name
                );
            }
        }
    }
    if seen.is_empty() && ok {
        println!("sink {name}: ok (no mailbox routes to it)");
    }
    ok
}

async fn plan(
    config: popbridge::config::Config,
    mailbox: Option<String>,
    json: bool,
) -> anyhow::Result<u8> {
    use popbridge::engine::preview::{preview, Action};
    // Read-only: no poll lock, so it can run next to the daemon.
    let app = App::build_unlocked(config).await.context("cannot start")?;
    let selected = match app.select(mailbox.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(exit::CONFIG);
        }
    };
    let mut previews = Vec::new();
    let mut failed = false;
    for ctx in &selected {
        match preview(ctx).await {
            Ok(p) => previews.push(p),
            Err(e) => {
                failed = true;
                eprintln!("mailbox {}: FAILED: {e}", ctx.mailbox.name);
            }
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&previews)?);
    } else {
        for p in &previews {
            println!(
                "mailbox {}: {} listed, {} to fetch, {} to delete, {} kept",
                p.mailbox,
                p.steps.len(),
                p.count(|a| matches!(a, Action::Fetch { .. })),
                p.count(|a| matches!(a, Action::Delete)),
                p.count(|a| matches!(a, Action::Keep { .. }))
            );
            for w in &p.warnings {
                println!("  warning: {w}");
            }
            for s in &p.steps {
                let what = match &s.action {
                    Action::Fetch { sinks, why } => {
                        format!("fetch -> {} ({why})", sinks.join(", "))
                    }
                    Action::Delete => "delete".to_string(),
                    Action::Keep { why } => format!("keep ({why})"),
                };
                println!(
                    "  {:>6} {:<40} {:>10}  {what}",
                    s.msgno,
                    s.uidl.as_deref().unwrap_or("-"),
                    s.size
                );
            }
        }
    }
    Ok(if failed { exit::INCOMPLETE } else { exit::OK })
}

/// Every token source of the config by credential name (mailboxes' and IMAP sinks').
fn token_sources(
    config: &popbridge::config::Config,
) -> std::collections::BTreeMap<String, std::sync::Arc<popbridge::oauth2::TokenSource>> {
    let mut out = std::collections::BTreeMap::new();
    for m in &config.mailboxes {
        if let popbridge::pop3::AuthMethod::OAuth2(login) = &m.pop3.auth {
            if let Some(source) = &login.token {
                out.insert(source.settings().name.clone(), source.clone());
            }
        }
    }
    for s in &config.sinks {
        let source = match &s.kind {
            popbridge::config::SinkKind::Imap(imap) => imap.oauth2.as_ref(),
            popbridge::config::SinkKind::Gmail(gmail) => gmail.oauth2.as_ref(),
            _ => None,
        };
        if let Some(source) = source {
            out.insert(source.settings().name.clone(), source.clone());
        }
    }
    out
}

/// A line the user pastes on stdin (the browser flow's redirect URL); stdin at its end pastes
/// nothing and the login waits for the redirect instead.
async fn pasted_line() -> Option<String> {
    // A plain thread: a blocked read must not hold up the runtime's shutdown.
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let line = std::io::stdin()
            .lines()
            .map_while(Result::ok)
            .map(|l| l.trim().to_owned())
            .find(|l| !l.is_empty());
        let _ = tx.send(line);
    });
    match rx.await {
        Ok(Some(line)) => Some(line),
        _ => std::future::pending().await,
    }
}

async fn gmail_setup(a: GmailSetupArgs) -> anyhow::Result<u8> {
    use popbridge::oauth2::login::Flow;
    use popbridge::sink::gmail::setup::{self, SetupArgs};
    let mut args = SetupArgs::new(&a.client_id, &a.user);
    args.client_secret = std::env::var(&a.client_secret_env)
        .ok()
        .filter(|v| !v.is_empty())
        .map(|v| {
            (
                popbridge::secret::Secret::new(v),
                a.client_secret_env.clone(),
            )
        });
    if let Some(c) = a.credential {
        args.credential = c;
    }
    args.sink = a.sink;
    args.state_dir = a.state_dir;
    if let Some(scope) = a.scope {
        args.scope = scope;
    }
    args.flow = match a.flow.as_deref() {
        None => None,
        Some("device") => Some(Flow::Device),
        Some("browser") => Some(Flow::Browser),
        Some(other) => anyhow::bail!("--flow {other}: use `device` or `browser`"),
    };
    args.token_url = a.token_url;
    args.device_url = a.device_authorization_url;
    args.authorize_url = a.authorization_url;
    args.api_base = a.api_base;
    args.check = !a.no_check;
    if args.client_secret.is_none() {
        eprintln!(
            "No client secret in ${}: signing in as a public client (Google's desktop clients \
             need their secret: export {} first).",
            a.client_secret_env, a.client_secret_env
        );
    }
    let say = |text: &str| eprintln!("{text}");
    let block = setup::setup(&args, &say, pasted_line()).await?;
    print!("{block}");
    Ok(exit::OK)
}

async fn oauth2(action: Oauth2Action) -> anyhow::Result<u8> {
    use popbridge::oauth2::login::{self, Flow};
    match action {
        Oauth2Action::Status(c) => {
            let config = config_or_exit!(&c.config);
            for (name, source) in token_sources(&config) {
                let s = source.settings();
                let grant = match s.grant {
                    popbridge::oauth2::Grant::RefreshToken { .. } => "refresh_token",
                    popbridge::oauth2::Grant::ClientCredentials => "client_credentials",
                    popbridge::oauth2::Grant::JwtBearer { .. } => "jwt_bearer",
                };
                let stored = match popbridge::oauth2::store::load(&s.store_path) {
                    Ok(Some(t)) => {
                        let age = chrono::Utc::now().timestamp() - t.received_at;
                        let ours = t.token_url == s.token_url && t.client_id == s.client_id;
                        format!(
                            "refresh token stored {}h{:02}m ago{}",
                            age / 3600,
                            age % 3600 / 60,
                            if ours {
                                ""
                            } else {
                                " (for another token URL or client: ignored)"
                            }
                        )
                    }
                    Ok(None) if grant == "refresh_token" => {
                        "no stored refresh token (the configured one is used, if any)".into()
                    }
                    Ok(None) => "nothing stored (app-only)".into(),
                    Err(e) => format!("ERROR: {e}"),
                };
                println!("{name}: {grant} at {}: {stored}", s.token_url);
            }
            Ok(exit::OK)
        }
        Oauth2Action::Logout { config, credential } => {
            let config = config_or_exit!(&config.config);
            let Some(source) = token_sources(&config).remove(&credential) else {
                anyhow::bail!("no OAuth2 credential {credential} in use");
            };
            let done = login::logout(&source).await?;
            eprintln!("{credential}: {done}");
            Ok(exit::OK)
        }
        Oauth2Action::Login {
            config,
            mailbox,
            credential,
            flow,
        } => {
            let config = config_or_exit!(&config.config);
            let sources = token_sources(&config);
            let source = match (&mailbox, &credential) {
                (Some(m), _) => config
                    .mailboxes
                    .iter()
                    .find(|b| &b.name == m)
                    .and_then(|b| match &b.pop3.auth {
                        popbridge::pop3::AuthMethod::OAuth2(l) => l.token.clone(),
                        _ => None,
                    })
                    .ok_or_else(|| anyhow::anyhow!("mailbox {m} has no `oauth2` credential"))?,
                (None, Some(c)) => sources.get(c).cloned().ok_or_else(|| {
                    anyhow::anyhow!(
                        "no OAuth2 credential {c} in use (known: {})",
                        sources.keys().cloned().collect::<Vec<_>>().join(", ")
                    )
                })?,
                (None, None) => anyhow::bail!("give --mailbox NAME or --credential NAME"),
            };
            let flow = match flow.as_deref() {
                None => None,
                Some("device") => Some(Flow::Device),
                Some("browser") => Some(Flow::Browser),
                Some(other) => anyhow::bail!("--flow {other}: use `device` or `browser`"),
            };
            let say = |text: &str| eprintln!("{text}");
            login::login(&source, flow, &say, pasted_line()).await?;
            if let Some(m) = mailbox.and_then(|m| config.mailboxes.iter().find(|b| b.name == m)) {
                let session = popbridge::pop3::connect(&m.pop3).await?;
                let _ = session.quit().await;
                eprintln!("mailbox {}: login with the new token ok", m.name);
            }
            Ok(exit::OK)
        }
    }
}

/// What the server says about itself that changes how popbridge behaves (RFC 2449).
fn server_notes(caps: &popbridge::pop3::Capabilities) -> String {
    let mut notes = Vec::new();
    match caps.expire() {
        Some(Some(0)) => notes.push(
            "EXPIRE 0: the server removes retrieved messages when a session ends with QUIT \
             (popbridge ends a session without QUIT while a sink lacks a retrieved message)"
                .to_string(),
        ),
        Some(Some(days)) => notes.push(format!(
            "EXPIRE {days}: the server removes messages {days} days after they were retrieved"
        )),
        Some(None) | None => {}
    }
    if let Some(delay) = caps.login_delay() {
        notes.push(format!(
            "LOGIN-DELAY {}s: polls of this mailbox are at least that far apart",
            delay.as_secs()
        ));
    }
    notes.iter().map(|n| format!("\n  note: {n}")).collect()
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

async fn dlq(action: DlqAction) -> anyhow::Result<u8> {
    match action {
        DlqAction::List {
            config,
            mailbox,
            json,
        } => {
            let store = store_or_exit!(&config.config);
            let letters = store.dead_letters(mailbox.as_deref()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&letters)?);
            } else if letters.is_empty() {
                println!("no dead letters");
            } else {
                for d in letters {
                    println!(
                        "{}\t{}\t{}\t{}\tattempts={}\t{}",
                        d.mailbox, d.uidl, d.sink, d.idem_key, d.attempts, d.error
                    );
                }
            }
        }
        DlqAction::Retry(s) => {
            let store = store_or_exit!(&s.config.config);
            let n = store
                .retry_dead(&s.mailbox, s.uidl.as_deref(), s.sink.as_deref())
                .await?;
            println!("{n} dead letter(s) will be retried at the next poll");
        }
        DlqAction::Drop(s) => {
            let store = store_or_exit!(&s.config.config);
            let n = store
                .drop_dead(&s.mailbox, s.uidl.as_deref(), s.sink.as_deref())
                .await?;
            println!("{n} dead letter(s) dropped; their messages stay on the server");
        }
    }
    Ok(exit::OK)
}

async fn state(action: StateAction) -> anyhow::Result<u8> {
    match action {
        StateAction::Show { config, json } => {
            let store = store_or_exit!(&config.config);
            let counts = store.counts().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&counts)?);
            } else {
                println!(
                    "{:<20} {:>9} {:>9} {:>8} {:>9} {:>8} {:>6}",
                    "mailbox", "messages", "on_server", "deleted", "delivered", "pending", "dead"
                );
                for c in counts {
                    println!(
                        "{:<20} {:>9} {:>9} {:>8} {:>9} {:>8} {:>6}",
                        c.mailbox,
                        c.messages,
                        c.on_server,
                        c.deleted,
                        c.delivered,
                        c.pending,
                        c.dead
                    );
                }
            }
        }
        StateAction::Leases { config, json } => return leases(&config.config, json).await,
        StateAction::Copy { config, to } => return copy_state(&config.config, &to).await,
        StateAction::Forget {
            config,
            mailbox,
            uidl,
        } => {
            let store = store_or_exit!(&config.config);
            let n = store.forget(&mailbox, uidl.as_deref()).await?;
            println!("forgot {n} message(s) of {mailbox}; they will be delivered again if still on the server");
        }
        StateAction::Import {
            config,
            tool,
            file,
            mailbox,
            sinks,
            dry_run,
        } => {
            let text = match std::fs::read(&file) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("error: cannot read {}: {e}", file.display());
                    return Ok(exit::CONFIG);
                }
            };
            let receipt = format!("imported from {} {}", tool.name(), file.display());
            return cutover(
                &config.config,
                &mailbox,
                &sinks,
                dry_run,
                |m| {
                    popbridge::cutover::formats::parse(tool, &text, &m.pop3.username, &m.pop3.host)
                        .map(Some)
                        .map_err(|e| format!("{}: {e}", file.display()))
                },
                &receipt,
            )
            .await;
        }
        StateAction::Baseline {
            config,
            mailbox,
            sinks,
            dry_run,
        } => {
            return cutover(
                &config.config,
                &mailbox,
                &sinks,
                dry_run,
                |_| Ok(None),
                "baseline",
            )
            .await;
        }
    }
    Ok(exit::OK)
}

/// `state copy`.
async fn copy_state(from: &Path, to: &Path) -> anyhow::Result<u8> {
    use popbridge::config::StateBackend;
    let (source, target) = match (load_config(from), load_config(to)) {
        (Ok(s), Ok(t)) => (s, t),
        (Err(code), _) | (_, Err(code)) => return Ok(code),
    };
    let pg = match (&source.state.backend, &target.state.backend) {
        (StateBackend::Sqlite, StateBackend::Postgres(pg)) => pg,
        _ => {
            eprintln!(
                "error: state copy moves a SQLite state (-c) into PostgreSQL (--to): {} must use state.path, {} state.url",
                from.display(),
                to.display()
            );
            return Ok(exit::CONFIG);
        }
    };
    // Nothing may poll with the SQLite state while it is copied (and after: the replicas own it).
    let _lock = popbridge::store::PollLock::acquire(&source.state.path, std::time::Duration::ZERO)
        .context("stop the popbridge process that polls with this state first")?;
    let sqlite = popbridge::store::SqliteStore::open(&source.state.path)
        .await
        .context("cannot open the SQLite state")?;
    let settings = popbridge::store::postgres::PgSettings::from_config(pg)?;
    let postgres = popbridge::store::PgStore::open(&settings)
        .await
        .context("cannot open the PostgreSQL state")?;
    match popbridge::store::copy::sqlite_to_postgres(&sqlite, &postgres).await {
        Ok(r) => {
            println!(
                "copied {} message(s), {} deliveries, {} retrieval failure(s) from {} into PostgreSQL",
                r.messages,
                r.deliveries,
                r.retrieval_failures,
                source.state.path.display()
            );
            Ok(exit::OK)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(exit::INCOMPLETE)
        }
    }
}

/// `state leases`.
async fn leases(path: &Path, json: bool) -> anyhow::Result<u8> {
    let config = match load_config(path) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let rows = match &config.state.backend {
        popbridge::config::StateBackend::Postgres(pg) => {
            let settings = popbridge::store::postgres::PgSettings::from_config(pg)?;
            popbridge::store::PgStore::open(&settings)
                .await
                .context("cannot open the state")?
                .leases()
                .await?
        }
        // One process polls every mailbox, or none does: no epochs, no expiry.
        popbridge::config::StateBackend::Sqlite => {
            let holder = popbridge::store::lock::holder_pid(&config.state.path)
                .map(|pid| format!("pid {pid} (holds {}.lock)", config.state.path.display()));
            config
                .mailboxes
                .iter()
                .map(|m| popbridge::store::lease::LeaseRow {
                    mailbox: m.name.clone(),
                    owner: holder.clone(),
                    epoch: 0,
                    expires_in_ms: None,
                    next_poll_at: None,
                    last_poll_at: None,
                })
                .collect()
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(exit::OK);
    }
    let at = |ms: Option<i64>| {
        ms.and_then(chrono::DateTime::from_timestamp_millis)
            .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
            .unwrap_or_else(|| "-".into())
    };
    println!(
        "{:<20} {:<36} {:>6} {:>11} {:<20} {:<20}",
        "mailbox", "owner", "epoch", "expires_in", "next_poll", "last_poll"
    );
    for r in rows {
        let expires = r
            .expires_in_ms
            .map(|ms| format!("{:.1}s", ms as f64 / 1000.0))
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<20} {:<36} {:>6} {:>11} {:<20} {:<20}",
            r.mailbox,
            r.owner.as_deref().unwrap_or("(free)"),
            r.epoch,
            expires,
            at(r.next_poll_at),
            at(r.last_poll_at)
        );
    }
    Ok(exit::OK)
}

/// `state import` (`seen` gives the other tool's UIDLs) and `state baseline` (`None`: all).
async fn cutover(
    path: &Path,
    mailbox: &str,
    sinks: &[String],
    dry_run: bool,
    seen: impl FnOnce(
        &popbridge::config::MailboxConfig,
    ) -> Result<Option<Vec<popbridge::cutover::formats::Seen>>, String>,
    receipt: &str,
) -> anyhow::Result<u8> {
    let config = match load_config(path) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let Some(m) = config.mailboxes.iter().find(|m| m.name == mailbox) else {
        eprintln!("error: no mailbox named {mailbox:?} in the config");
        return Ok(exit::CONFIG);
    };
    let sinks: Vec<String> = if sinks.is_empty() {
        m.sinks.clone()
    } else {
        sinks.to_vec()
    };
    if let Some(bad) = sinks.iter().find(|s| !m.sinks.contains(s)) {
        eprintln!(
            "error: mailbox {mailbox} does not deliver to a sink named {bad:?} (its sinks: {})",
            m.sinks.join(", ")
        );
        return Ok(exit::CONFIG);
    }
    let seen = match seen(m) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(exit::CONFIG);
        }
    };
    // Not next to a polling process: it could fetch these messages meanwhile. On SQLite the
    // lock says so; on PostgreSQL the replicas must be stopped (their leases are not checked).
    let _lock = match config.state.backend {
        popbridge::config::StateBackend::Sqlite => Some(
            popbridge::store::PollLock::acquire(&config.state.path, std::time::Duration::ZERO)
                .context("cannot import while popbridge polls")?,
        ),
        popbridge::config::StateBackend::Postgres(_) => None,
    };
    let store = popbridge::store::open(&config.state)
        .await
        .context("cannot open the state")?;
    let report = match seen {
        Some(seen) => {
            popbridge::cutover::import(store.as_ref(), m, &sinks, &seen, receipt, dry_run).await
        }
        None => popbridge::cutover::baseline(store.as_ref(), m, &sinks, dry_run).await,
    };
    match report {
        Ok(r) => {
            println!("{r}");
            Ok(exit::OK)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(exit::INCOMPLETE)
        }
    }
}
