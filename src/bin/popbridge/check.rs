//! `check` and `plan`: what the config and the servers say, without side effects.

use crate::exit;
use anyhow::Context;
use popbridge::app::App;

pub(crate) async fn check(config: popbridge::config::Config, connect: bool) -> anyhow::Result<u8> {
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
pub(crate) async fn check_imap_accounts(
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

pub(crate) async fn plan(
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

/// What the server says about itself that changes how popbridge behaves (RFC 2449).
pub(crate) fn server_notes(caps: &popbridge::pop3::Capabilities) -> String {
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
