//! The daemon's HTTP endpoints: `/healthz` (the process answers) and `/readyz` (state store
//! reachable, scheduler running, every mailbox's loop alive and not panicking, every sink's
//! healthcheck passing), `/metrics` (Prometheus).

use crate::engine::deliver::SinkHandle;
use crate::scheduler::Health;
use crate::store::Store;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub struct Readiness {
    pub store: Arc<dyn Store>,
    pub sinks: Vec<SinkHandle>,
    pub scheduler_running: AtomicBool,
    /// Per mailbox: a dead or panicking mailbox makes the service not ready, by name.
    pub mailboxes: Arc<Health>,
    /// OAuth2 credentials: one whose refresh token is refused makes the service not ready.
    pub oauth2: Vec<Arc<crate::oauth2::TokenSource>>,
}

#[derive(Serialize)]
struct Check {
    name: String,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Serialize)]
struct Report {
    ready: bool,
    checks: Vec<Check>,
}

const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

async fn readyz(State(r): State<Arc<Readiness>>) -> (StatusCode, Json<Report>) {
    let mut checks = vec![
        Check {
            name: "config".into(),
            ok: true,
            error: None,
        },
        Check {
            name: "scheduler".into(),
            ok: r.scheduler_running.load(Ordering::SeqCst),
            error: None,
        },
    ];
    checks.extend(r.mailboxes.snapshot().into_iter().map(|(name, h)| Check {
        name: format!("mailbox:{name}"),
        ok: h.ok(),
        error: h.error,
    }));
    checks.extend(r.oauth2.iter().map(|source| {
        let name = &source.settings().name;
        let relogin = source.needs_relogin();
        Check {
            name: format!("oauth2:{name}"),
            ok: !relogin,
            error: relogin.then(|| {
                format!("re-login needed: run `popbridge oauth2 login --credential {name}`")
            }),
        }
    }));
    let store = tokio::time::timeout(CHECK_TIMEOUT, r.store.ping()).await;
    checks.push(Check {
        name: "state".into(),
        ok: matches!(store, Ok(Ok(()))),
        error: match store {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some("timed out".into()),
        },
    });
    let sink_checks = r.sinks.iter().map(|h| async move {
        let res = tokio::time::timeout(CHECK_TIMEOUT, h.sink.healthcheck()).await;
        Check {
            name: format!("sink:{}", h.name),
            ok: matches!(res, Ok(Ok(()))),
            error: match res {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => Some("timed out".into()),
            },
        }
    });
    checks.extend(futures_util::future::join_all(sink_checks).await);
    let ready = checks.iter().all(|c| c.ok);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(Report { ready, checks }))
}

pub fn router(readiness: Arc<Readiness>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route(
            "/metrics",
            get(|| async {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4",
                    )],
                    crate::metrics::render(),
                )
            }),
        )
        .with_state(readiness)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    async fn serve(readiness: Arc<Readiness>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router(readiness)).await });
        format!("http://{addr}/readyz")
    }

    #[tokio::test]
    async fn readyz_names_a_mailbox_whose_task_ended() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::SqliteStore::open(&dir.path().join("s.db"))
            .await
            .unwrap();
        let health = Arc::new(Health::default());
        health.started("alice");
        health.started("bob");
        let url = serve(Arc::new(Readiness {
            store: Arc::new(store),
            sinks: Vec::new(),
            scheduler_running: AtomicBool::new(true),
            mailboxes: health.clone(),
            oauth2: Vec::new(),
        }))
        .await;
        let r = reqwest::get(&url).await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
        health.task_ended("bob", "panicked: boom");
        let r = reqwest::get(&url).await.unwrap();
        assert_eq!(r.status().as_u16(), 503);
        let body: serde_json::Value = r.json().await.unwrap();
        let bob = body["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "mailbox:bob")
            .unwrap();
        assert_eq!(bob["ok"], false);
        assert!(bob["error"].as_str().unwrap().contains("boom"), "{body}");
        assert!(body["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "mailbox:alice" && c["ok"] == true));
    }
}
