//! `dlq`, `state` and `cutover`: the state store from the command line.

use crate::{exit, load_config, open_store, DlqAction, StateAction};
use anyhow::Context;
use std::path::Path;

pub(crate) async fn dlq(action: DlqAction) -> anyhow::Result<u8> {
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

pub(crate) async fn state(action: StateAction) -> anyhow::Result<u8> {
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
pub(crate) async fn copy_state(from: &Path, to: &Path) -> anyhow::Result<u8> {
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
pub(crate) async fn leases(path: &Path, json: bool) -> anyhow::Result<u8> {
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
pub(crate) async fn cutover(
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
