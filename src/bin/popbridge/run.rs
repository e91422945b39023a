//! `once` and `run`: one pass over the mailboxes, or the daemon.

use crate::{auth::token_sources, exit, shutdown_token};
use anyhow::Context;
use popbridge::app::App;
use popbridge::server::{router, Readiness};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// `once --report` / `--resume`, and how often to log the fleet status.
pub(crate) struct ReportFiles {
    pub(crate) report: Option<PathBuf>,
    pub(crate) resume: Option<PathBuf>,
    pub(crate) status_every: Option<std::time::Duration>,
}

/// Mailboxes an earlier `--report FILE.json` lists as complete.
pub(crate) fn done_in_report(path: &Path) -> Result<Vec<String>, String> {
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
pub(crate) fn complete_in_json(r: &serde_json::Value) -> bool {
    let zero = |k: &str| r[k].as_u64() == Some(0);
    r["error"].is_null()
        && r["failures"].as_array().is_some_and(|f| f.is_empty())
        && ["retry_later", "dead_lettered", "dead_earlier", "waiting"]
            .iter()
            .all(|k| zero(k))
}

pub(crate) async fn once(
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

pub(crate) async fn run(config: popbridge::config::Config) -> anyhow::Result<u8> {
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
