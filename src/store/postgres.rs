//! The PostgreSQL backend: the state shared by several replicas, each mailbox's writes fenced
//! by its lease (see [`super::lease`]).
//!
//! Every call runs under a timeout (sqlx has no TCP keepalive, so a dead connection would
//! otherwise hang a poll), and the server ends what a paused client leaves behind
//! (`idle_in_transaction_session_timeout`, `statement_timeout`, `lock_timeout`).

use super::lease::{Fence, LeaseRow, LeaseSlot};
use super::rows::{self, to_u32};
use super::*;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgConnection, PgPool, Row};
use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

mod leases;
pub use leases::{Claimed, PollTimes, LEASES_CHANNEL};
#[cfg(test)]
mod tests;

/// How to reach the database.
#[derive(Clone, Debug)]
pub struct PgSettings {
    /// `postgres://user@host:port/db?sslmode=…` (the password may be in it, or in `password`).
    pub url: crate::secret::Secret,
    pub password: Option<crate::secret::Secret>,
    pub timeout: Duration,
    /// Shown in `pg_stat_activity`: a replica's id, so an operator (or an audit trigger) can
    /// tell which replica holds a connection or wrote a row.
    pub application_name: String,
}

/// A handle on the PostgreSQL state. Cheap to clone; [`PgStore::bound`] gives a mailbox's
/// handle whose writes are fenced by its lease.
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    timeout: Duration,
    /// The mailbox this handle writes for and its lease; `None` for operator commands.
    lease: Option<Arc<LeaseSlot>>,
    /// Off only in the mutation check that proves the fence test can fail.
    check_fence: bool,
}

impl PgSettings {
    /// From the validated config, reading `password_file` now.
    pub fn from_config(c: &super::config::PostgresState) -> Result<Self, StoreError> {
        let password = match &c.password_file {
            None => None,
            Some(path) => Some(crate::secret::Secret::new(
                std::fs::read_to_string(path)
                    .map_err(|source| StoreError::Dir {
                        path: path.display().to_string(),
                        source,
                    })?
                    .trim()
                    .to_string(),
            )),
        };
        Ok(Self {
            url: c.url.clone(),
            password,
            timeout: c.timeout,
            application_name: "popbridge".into(),
        })
    }
}

impl PgStore {
    pub async fn open(settings: &PgSettings) -> Result<Self, StoreError> {
        let open_err = |source| StoreError::Open {
            path: redacted(settings.url.expose()),
            source,
        };
        let mut options = PgConnectOptions::from_str(settings.url.expose()).map_err(open_err)?;
        if let Some(p) = &settings.password {
            options = options.password(p.expose());
        }
        let ms = |d: Duration| format!("{}ms", d.as_millis());
        options = options
            .application_name(&settings.application_name)
            .options([
                ("statement_timeout", ms(settings.timeout)),
                ("lock_timeout", ms(settings.timeout)),
                ("idle_in_transaction_session_timeout", ms(settings.timeout)),
            ]);
        let pool = tokio::time::timeout(
            settings.timeout,
            PgPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(settings.timeout)
                .connect_with(options),
        )
        .await
        .map_err(|_| StoreError::Timeout(settings.timeout, "connect"))?
        .map_err(open_err)?;
        let store = Self {
            pool,
            timeout: settings.timeout,
            lease: None,
            check_fence: true,
        };
        store
            .timed("migrate", async {
                Ok(sqlx::migrate!("./migrations_pg").run(&store.pool).await?)
            })
            .await?;
        Ok(store)
    }

    /// For `state copy`, which writes every row in one transaction.
    pub(super) fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The handle for one mailbox: each of its writes checks `lease` in the same transaction.
    pub fn bound(&self, lease: Arc<LeaseSlot>) -> Self {
        Self {
            lease: Some(lease),
            ..self.clone()
        }
    }

    #[cfg(test)]
    pub(crate) fn without_fence_check(mut self) -> Self {
        self.check_fence = false;
        self
    }

    async fn timed<T>(
        &self,
        what: &'static str,
        f: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        tokio::time::timeout(self.timeout, f)
            .await
            .map_err(|_| StoreError::Timeout(self.timeout, what))?
    }

    /// One write transaction on `mailboxes`' rows, under the call's timeout: begin, check each
    /// mailbox's lease (the fence, [`Self::fence`]), run `body`, commit. A lease that is no
    /// longer ours, or an error from `body`, rolls everything back.
    async fn fenced<T>(
        &self,
        what: &'static str,
        mailboxes: &[&str],
        body: impl AsyncFnOnce(&mut PgConnection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        // The local deadline first, without touching the database: a replica waking from a
        // pause past its lease may hold pooled connections the server has dropped since, and
        // its write must come back as fenced, not as a connection error.
        if let Some(slot) = &self.lease {
            if let Some(&mailbox) = mailboxes
                .iter()
                .find(|&&m| slot.mailbox != m || !slot.is_held())
            {
                crate::metrics::fenced_write(mailbox);
                return Err(StoreError::Fenced {
                    mailbox: mailbox.to_string(),
                });
            }
        }
        self.timed(what, async {
            let mut tx = self.pool.begin().await?;
            let mut checked: Vec<&str> = Vec::with_capacity(mailboxes.len());
            for &mailbox in mailboxes {
                if !checked.contains(&mailbox) {
                    self.fence(&mut tx, mailbox).await?;
                    checked.push(mailbox);
                }
            }
            let out = body(&mut tx).await?;
            tx.commit().await?;
            Ok(out)
        })
        .await
    }

    /// Inside a write transaction: the lease must still be ours (owner, epoch, claim id),
    /// read `FOR SHARE` so a takeover waits for this transaction or this one sees it.
    async fn fence(&self, conn: &mut PgConnection, mailbox: &str) -> Result<(), StoreError> {
        let Some(slot) = &self.lease else {
            return Ok(());
        };
        let fenced = || {
            crate::metrics::fenced_write(mailbox);
            StoreError::Fenced {
                mailbox: mailbox.to_string(),
            }
        };
        let fence = match slot.current() {
            Some(f) if slot.mailbox == mailbox => f,
            _ => return Err(fenced()),
        };
        if !self.check_fence {
            return Ok(());
        }
        if !lease_matches(conn, mailbox, &fence).await? {
            return Err(fenced());
        }
        Ok(())
    }
}

async fn lease_matches(
    conn: &mut PgConnection,
    mailbox: &str,
    fence: &Fence,
) -> Result<bool, StoreError> {
    let row: Option<i32> = sqlx::query_scalar(
        "SELECT 1 FROM mailbox_lease
          WHERE mailbox = $1 AND owner = $2 AND epoch = $3 AND claim_id = $4 FOR SHARE",
    )
    .bind(mailbox)
    .bind(&fence.owner)
    .bind(fence.epoch)
    .bind(&fence.claim_id)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.is_some())
}

/// The URL without its password, for messages.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{}@{}", &url[..s + 3], user, &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

const LISTED: &str =
    "on_server AND deleted_at IS NULL AND replaced_by IS NULL AND retired_at IS NULL";
const VANISHED: &str =
    "NOT on_server AND deleted_at IS NULL AND replaced_by IS NULL AND retired_at IS NULL";

/// Move the row at `uidl` (and its deliveries) to history under `<uidl> <idem_key>@<now>`
/// (as in the SQLite backend).
async fn retire(
    conn: &mut PgConnection,
    mailbox: &str,
    uidl: &str,
    now: Millis,
) -> Result<bool, StoreError> {
    let key: Option<String> =
        sqlx::query_scalar("SELECT idem_key FROM messages WHERE mailbox = $1 AND uidl = $2")
            .bind(mailbox)
            .bind(uidl)
            .fetch_optional(&mut *conn)
            .await?;
    let Some(key) = key else { return Ok(false) };
    let history = format!("{uidl} {key}@{now}");
    sqlx::query(
        "INSERT INTO messages (mailbox, uidl, idem_key, size, sha256, first_seen_at, fetched_at,
            on_server, deleted_at, replaced_by, list_size, fingerprint, gone_at, retired_at, route)
         SELECT mailbox, $3, idem_key, size, sha256, first_seen_at, fetched_at, FALSE, deleted_at,
            replaced_by, list_size, fingerprint, COALESCE(gone_at, $4), $4, route
           FROM messages WHERE mailbox = $1 AND uidl = $2",
    )
    .bind(mailbox)
    .bind(uidl)
    .bind(&history)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    sqlx::query("UPDATE deliveries SET uidl = $3 WHERE mailbox = $1 AND uidl = $2")
        .bind(mailbox)
        .bind(uidl)
        .bind(&history)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM messages WHERE mailbox = $1 AND uidl = $2")
        .bind(mailbox)
        .bind(uidl)
        .execute(&mut *conn)
        .await?;
    Ok(true)
}

/// Messages (with their deliveries) of `mailbox` selected by `filter` (a condition on
/// `messages` that may use `$2`, bound to `uidls`).
async fn load_where(
    pool: &PgPool,
    mailbox: &str,
    filter: &str,
    uidls: Option<&[String]>,
) -> Result<HashMap<String, KnownMessage>, StoreError> {
    let sql = format!("SELECT * FROM messages m WHERE mailbox = $1 AND {filter}");
    let mut q = sqlx::query(&sql).bind(mailbox);
    if let Some(u) = uidls {
        q = q.bind(u);
    }
    let rows = q.fetch_all(pool).await?;
    let mut out = HashMap::with_capacity(rows.len());
    for row in &rows {
        let m = rows::message(row)?;
        out.insert(m.uidl.clone(), m);
    }
    if out.is_empty() {
        return Ok(out);
    }
    let sql = format!(
        "SELECT d.* FROM deliveries d JOIN messages m ON m.mailbox = d.mailbox AND m.uidl = d.uidl
          WHERE m.mailbox = $1 AND {}",
        filter.replace("uidl = ANY", "m.uidl = ANY")
    );
    let mut q = sqlx::query(&sql).bind(mailbox);
    if let Some(u) = uidls {
        q = q.bind(u);
    }
    for row in &q.fetch_all(pool).await? {
        let uidl: String = row.try_get("uidl")?;
        let sink: String = row.try_get("sink")?;
        if let Some(m) = out.get_mut(&uidl) {
            m.deliveries.insert(sink, rows::delivery(row)?);
        }
    }
    Ok(out)
}

async fn deliveries_of(
    pool: &PgPool,
    mailbox: &str,
    m: &mut KnownMessage,
) -> Result<(), StoreError> {
    let rows = sqlx::query("SELECT * FROM deliveries WHERE mailbox = $1 AND uidl = $2")
        .bind(mailbox)
        .bind(&m.uidl)
        .fetch_all(pool)
        .await?;
    for row in &rows {
        let sink: String = row.try_get("sink")?;
        m.deliveries.insert(sink, rows::delivery(row)?);
    }
    Ok(())
}

#[async_trait]
impl Store for PgStore {
    async fn load_mailbox(
        &self,
        mailbox: &str,
    ) -> Result<HashMap<String, KnownMessage>, StoreError> {
        self.timed(
            "load_mailbox",
            load_where(&self.pool, mailbox, LISTED, None),
        )
        .await
    }

    async fn load_listed(
        &self,
        mailbox: &str,
        sinks: &[String],
    ) -> Result<ListedState, StoreError> {
        if sinks.is_empty() {
            return Ok(ListedState::split(self.load_mailbox(mailbox).await?, sinks));
        }
        // One narrow row per message: how many of the sinks hold it, and when the last did.
        let sql = format!(
            "SELECT m.uidl, COALESCE(m.list_size, m.size) AS list_size, COUNT(d.sink) AS held,
                    MAX(d.delivered_at) AS last_delivery,
                    MAX(CASE WHEN m.route IS NULL THEN 0 ELSE 1 END) AS routed
               FROM messages m LEFT JOIN deliveries d
                 ON d.mailbox = m.mailbox AND d.uidl = m.uidl AND d.status = 'delivered'
                AND d.sink = ANY($2)
              WHERE m.mailbox = $1 AND {}
              GROUP BY m.uidl, m.list_size, m.size",
            LISTED
                .replace("on_server", "m.on_server")
                .replace("deleted_at", "m.deleted_at")
                .replace("replaced_by", "m.replaced_by")
                .replace("retired_at", "m.retired_at")
        );
        let rows = self
            .timed("load_listed", async {
                Ok(sqlx::query(&sql)
                    .bind(mailbox)
                    .bind(sinks)
                    .fetch_all(&self.pool)
                    .await?)
            })
            .await?;
        let mut out = ListedState::default();
        let mut open = Vec::new();
        for row in rows {
            let narrow = super::NarrowRow {
                uidl: row.try_get(0)?,
                list_size: row.try_get(1)?,
                held: row.try_get(2)?,
                last_delivery: row.try_get(3)?,
                routed: row.try_get::<i32, _>(4)? != 0,
            };
            out.sort_row(&mut open, narrow, sinks.len());
        }
        out.open = self.lookup(mailbox, &open).await?;
        Ok(out)
    }

    async fn lookup(
        &self,
        mailbox: &str,
        uidls: &[String],
    ) -> Result<HashMap<String, KnownMessage>, StoreError> {
        if uidls.is_empty() {
            return Ok(HashMap::new());
        }
        self.timed(
            "lookup",
            load_where(&self.pool, mailbox, "uidl = ANY($2)", Some(uidls)),
        )
        .await
    }

    async fn record_presence(
        &self,
        mailbox: &str,
        back: &[String],
        gone: &[String],
        now: Millis,
    ) -> Result<(), StoreError> {
        if back.is_empty() && gone.is_empty() {
            return Ok(());
        }
        self.fenced("record_presence", &[mailbox], async |tx| {
            sqlx::query(
                "UPDATE messages SET gone_at = NULL, on_server = TRUE
                  WHERE mailbox = $1 AND uidl = ANY($2)",
            )
            .bind(mailbox)
            .bind(back)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE messages SET on_server = FALSE, gone_at = $3
                  WHERE mailbox = $1 AND uidl = ANY($2)",
            )
            .bind(mailbox)
            .bind(gone)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            Ok(())
        })
        .await
    }

    async fn confirm(
        &self,
        mailbox: &str,
        uidl: &str,
        list_size: u64,
        fingerprint: &str,
    ) -> Result<(), StoreError> {
        self.fenced("confirm", &[mailbox], async |tx| {
            sqlx::query(
                "UPDATE messages SET on_server = TRUE, gone_at = NULL, list_size = $3,
                        fingerprint = COALESCE(fingerprint, $4)
                  WHERE mailbox = $1 AND uidl = $2",
            )
            .bind(mailbox)
            .bind(uidl)
            .bind(to_i64(list_size))
            .bind(fingerprint)
            .execute(&mut *tx)
            .await?;
            Ok(())
        })
        .await
    }

    async fn record_fetched(&self, r: &FetchRecord<'_>) -> Result<(), StoreError> {
        let route = r.route.map(serde_json::to_string).transpose()?;
        self.fenced("record_fetched", &[r.mailbox], async |tx| {
            // A UIDL that held another message before: that row becomes history first.
            let history: Option<bool> = sqlx::query_scalar(
                "SELECT deleted_at IS NOT NULL OR replaced_by IS NOT NULL
                   FROM messages WHERE mailbox = $1 AND uidl = $2",
            )
            .bind(r.mailbox)
            .bind(r.uidl)
            .fetch_optional(&mut *tx)
            .await?;
            if r.retire || history == Some(true) {
                retire(tx, r.mailbox, r.uidl, r.fetched_at).await?;
            }
            sqlx::query(
                "INSERT INTO messages (mailbox, uidl, idem_key, size, sha256, fingerprint,
                    list_size, first_seen_at, fetched_at, on_server, route)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, TRUE, $9)
                 ON CONFLICT (mailbox, uidl) DO UPDATE SET size = excluded.size,
                    sha256 = excluded.sha256, fingerprint = excluded.fingerprint,
                    list_size = excluded.list_size, fetched_at = excluded.fetched_at,
                    on_server = TRUE, gone_at = NULL,
                    route = COALESCE(messages.route, excluded.route)",
            )
            .bind(r.mailbox)
            .bind(r.uidl)
            .bind(r.idem_key)
            .bind(to_i64(r.size))
            .bind(r.sha256)
            .bind(r.fingerprint)
            .bind(to_i64(r.list_size))
            .bind(r.fetched_at)
            .bind(&route)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO deliveries (mailbox, uidl, sink, status)
                 SELECT $1, $2, s, 'pending' FROM unnest($3::text[]) AS s
                 ON CONFLICT (mailbox, uidl, sink) DO NOTHING",
            )
            .bind(r.mailbox)
            .bind(r.uidl)
            .bind(r.sinks)
            .execute(&mut *tx)
            .await?;
            Ok(())
        })
        .await
    }

    async fn record_outcomes(&self, outcomes: &[Outcome]) -> Result<(), StoreError> {
        if outcomes.is_empty() {
            return Ok(());
        }
        let mailboxes: Vec<&str> = outcomes.iter().map(|o| o.mailbox.as_str()).collect();
        self.fenced("record_outcomes", &mailboxes, async |tx| {
            // In order, so two outcomes for one delivery add up; a receipt is never undone.
            for o in outcomes {
                let (status, error, next, receipt, delivered_at) = match &o.result {
                    OutcomeResult::Delivered(r) => (
                        "delivered",
                        None,
                        None,
                        Some(serde_json::to_string(r)?),
                        Some(o.at),
                    ),
                    OutcomeResult::Retry {
                        error,
                        next_attempt_at,
                    } => (
                        "pending",
                        Some(error.as_str()),
                        Some(*next_attempt_at),
                        None,
                        None,
                    ),
                    OutcomeResult::Dead { error } => {
                        ("dead", Some(error.as_str()), None, None, None)
                    }
                };
                sqlx::query(
                    "INSERT INTO deliveries (mailbox, uidl, sink, status, attempts,
                        first_attempt_at, last_attempt_at, next_attempt_at, last_error, receipt,
                        delivered_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $6, $7, $8, $9, $10)
                     ON CONFLICT (mailbox, uidl, sink) DO UPDATE SET
                        status = excluded.status,
                        attempts = deliveries.attempts + excluded.attempts,
                        first_attempt_at = COALESCE(deliveries.first_attempt_at,
                                                    excluded.first_attempt_at),
                        last_attempt_at = excluded.last_attempt_at,
                        next_attempt_at = excluded.next_attempt_at,
                        last_error = COALESCE(excluded.last_error, deliveries.last_error),
                        receipt = excluded.receipt,
                        delivered_at = excluded.delivered_at
                      WHERE deliveries.status <> 'delivered'",
                )
                .bind(&o.mailbox)
                .bind(&o.uidl)
                .bind(&o.sink)
                .bind(status)
                .bind(i64::from(o.attempts_made))
                .bind(o.at)
                .bind(next)
                .bind(error)
                .bind(receipt)
                .bind(delivered_at)
                .execute(&mut *tx)
                .await?;
            }
            Ok(())
        })
        .await
    }

    async fn record_deleted(
        &self,
        mailbox: &str,
        uidls: &[String],
        now: Millis,
    ) -> Result<(), StoreError> {
        self.fenced("record_deleted", &[mailbox], async |tx| {
            sqlx::query(
                "UPDATE messages SET on_server = FALSE, deleted_at = $3
                  WHERE mailbox = $1 AND uidl = ANY($2)",
            )
            .bind(mailbox)
            .bind(uidls)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            Ok(())
        })
        .await
    }

    async fn find_vanished_by_content(
        &self,
        mailbox: &str,
        sha256: &str,
        size: u64,
        fingerprint: &str,
    ) -> Result<Option<KnownMessage>, StoreError> {
        self.timed("find_vanished_by_content", async {
            let mut row = sqlx::query(&format!(
                "SELECT * FROM messages WHERE mailbox = $1 AND fingerprint = $2 AND {VANISHED}
                 ORDER BY first_seen_at LIMIT 1"
            ))
            .bind(mailbox)
            .bind(fingerprint)
            .fetch_optional(&self.pool)
            .await?;
            if row.is_none() {
                row = sqlx::query(&format!(
                    "SELECT * FROM messages WHERE mailbox = $1 AND sha256 = $2 AND size = $3
                       AND fingerprint IS NULL AND {VANISHED}
                     ORDER BY first_seen_at LIMIT 1"
                ))
                .bind(mailbox)
                .bind(sha256)
                .bind(to_i64(size))
                .fetch_optional(&self.pool)
                .await?;
            }
            let Some(row) = row else { return Ok(None) };
            let mut m = rows::message(&row)?;
            deliveries_of(&self.pool, mailbox, &mut m).await?;
            Ok(Some(m))
        })
        .await
    }

    async fn has_vanished(&self, mailbox: &str) -> Result<bool, StoreError> {
        self.timed("has_vanished", async {
            let found: Option<i32> = sqlx::query_scalar(&format!(
                "SELECT 1 FROM messages WHERE mailbox = $1 AND {VANISHED} LIMIT 1"
            ))
            .bind(mailbox)
            .fetch_optional(&self.pool)
            .await?;
            Ok(found.is_some())
        })
        .await
    }

    async fn adopt(
        &self,
        mailbox: &str,
        old_uidl: &str,
        new_uidl: &str,
        now: Millis,
    ) -> Result<(), StoreError> {
        self.fenced("adopt", &[mailbox], async |tx| {
            retire(tx, mailbox, new_uidl, now).await?;
            sqlx::query(
                "INSERT INTO messages (mailbox, uidl, idem_key, size, sha256, first_seen_at,
                    fetched_at, on_server, list_size, fingerprint, route)
                 SELECT mailbox, $3, idem_key, size, sha256, first_seen_at, $4, TRUE, list_size,
                    fingerprint, route
                   FROM messages WHERE mailbox = $1 AND uidl = $2",
            )
            .bind(mailbox)
            .bind(old_uidl)
            .bind(new_uidl)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO deliveries (mailbox, uidl, sink, status, attempts, first_attempt_at,
                    last_attempt_at, next_attempt_at, last_error, receipt, delivered_at)
                 SELECT mailbox, $3, sink, status, attempts, first_attempt_at, last_attempt_at,
                        next_attempt_at, last_error, receipt, delivered_at
                   FROM deliveries WHERE mailbox = $1 AND uidl = $2
                 ON CONFLICT (mailbox, uidl, sink) DO NOTHING",
            )
            .bind(mailbox)
            .bind(old_uidl)
            .bind(new_uidl)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE messages SET replaced_by = $3, retired_at = $4
                  WHERE mailbox = $1 AND uidl = $2",
            )
            .bind(mailbox)
            .bind(old_uidl)
            .bind(new_uidl)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            Ok(())
        })
        .await
    }

    /// Commits are durable when they return (`synchronous_commit`); what is left to check
    /// before a DELE is that the mailbox is still ours.
    async fn sync(&self) -> Result<(), StoreError> {
        let Some(slot) = &self.lease else {
            return Ok(());
        };
        self.fenced("sync", &[&slot.mailbox], async |_| Ok(()))
            .await
    }

    async fn record_retrieval_failure(
        &self,
        mailbox: &str,
        uidl: &str,
        error: &str,
        max: u32,
        now: Millis,
    ) -> Result<RetrievalFailure, StoreError> {
        self.fenced("record_retrieval_failure", &[mailbox], async |tx| {
            let row = sqlx::query(
                "INSERT INTO retrieval_failures AS f
                    (mailbox, uidl, failures, last_error, last_at, status)
                 VALUES ($1, $2, 1, $3, $4, CASE WHEN $5 <= 1 THEN 'dead' ELSE 'failing' END)
                 ON CONFLICT (mailbox, uidl) DO UPDATE SET
                    failures = f.failures + 1, last_error = excluded.last_error,
                    last_at = excluded.last_at,
                    status = CASE WHEN f.status = 'failing' AND f.failures + 1 >= $5
                                  THEN 'dead' ELSE f.status END
                 RETURNING failures, last_error, status",
            )
            .bind(mailbox)
            .bind(uidl)
            .bind(error)
            .bind(now)
            .bind(i64::from(max))
            .fetch_one(&mut *tx)
            .await?;
            Ok(row)
        })
        .await
        // Decoded after the commit, as before: a row that fails to decode was still written.
        .and_then(|row| rows::failure(&row))
    }

    async fn retrieval_failures(
        &self,
        mailbox: &str,
    ) -> Result<HashMap<String, RetrievalFailure>, StoreError> {
        self.timed("retrieval_failures", async {
            let rows = sqlx::query("SELECT * FROM retrieval_failures WHERE mailbox = $1")
                .bind(mailbox)
                .fetch_all(&self.pool)
                .await?;
            rows.iter()
                .map(|row| Ok((row.try_get("uidl")?, rows::failure(row)?)))
                .collect()
        })
        .await
    }

    async fn clear_retrieval_failure(&self, mailbox: &str, uidl: &str) -> Result<(), StoreError> {
        self.fenced("clear_retrieval_failure", &[mailbox], async |tx| {
            sqlx::query("DELETE FROM retrieval_failures WHERE mailbox = $1 AND uidl = $2")
                .bind(mailbox)
                .bind(uidl)
                .execute(&mut *tx)
                .await?;
            Ok(())
        })
        .await
    }

    async fn prune(&self, mailbox: &str, before: Millis) -> Result<u64, StoreError> {
        self.fenced("prune", &[mailbox], async |tx| {
            let r = sqlx::query(
                "DELETE FROM messages WHERE mailbox = $1 AND NOT on_server
                    AND COALESCE(deleted_at, retired_at, gone_at) < $2",
            )
            .bind(mailbox)
            .bind(before)
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM retrieval_failures WHERE mailbox = $1 AND last_at < $2")
                .bind(mailbox)
                .bind(before)
                .execute(&mut *tx)
                .await?;
            Ok(r.rows_affected())
        })
        .await
    }

    async fn dead_letters(&self, mailbox: Option<&str>) -> Result<Vec<DeadLetter>, StoreError> {
        self.timed("dead_letters", async {
            let rows = sqlx::query(
                "SELECT d.mailbox, d.uidl, m.idem_key, d.sink, d.attempts, d.last_error,
                        d.last_attempt_at
                   FROM deliveries d JOIN messages m ON m.mailbox = d.mailbox AND m.uidl = d.uidl
                  WHERE d.status = 'dead' AND ($1::text IS NULL OR d.mailbox = $1)
                 UNION ALL
                 SELECT mailbox, uidl, '' AS idem_key, $2 AS sink, failures AS attempts,
                        last_error, last_at AS last_attempt_at
                   FROM retrieval_failures
                  WHERE status = 'dead' AND ($1::text IS NULL OR mailbox = $1)
                  ORDER BY 1, 7",
            )
            .bind(mailbox)
            .bind(RETRIEVAL)
            .fetch_all(&self.pool)
            .await?;
            rows.iter()
                .map(|row| {
                    Ok(DeadLetter {
                        mailbox: row.try_get("mailbox")?,
                        uidl: row.try_get("uidl")?,
                        idem_key: row.try_get("idem_key")?,
                        sink: row.try_get("sink")?,
                        attempts: to_u32(row.try_get("attempts")?),
                        error: row
                            .try_get::<Option<String>, _>("last_error")?
                            .unwrap_or_default(),
                        last_attempt_at: row.try_get("last_attempt_at")?,
                    })
                })
                .collect()
        })
        .await
    }

    async fn retry_dead(
        &self,
        mailbox: &str,
        uidl: Option<&str>,
        sink: Option<&str>,
    ) -> Result<u64, StoreError> {
        self.timed("retry_dead", async {
            let mut tx = self.pool.begin().await?;
            let r = sqlx::query(
                "UPDATE deliveries SET status = 'pending', next_attempt_at = NULL,
                        first_attempt_at = NULL
                  WHERE status IN ('dead', 'dropped') AND mailbox = $1
                    AND ($2::text IS NULL OR uidl = $2) AND ($3::text IS NULL OR sink = $3)",
            )
            .bind(mailbox)
            .bind(uidl)
            .bind(sink)
            .execute(&mut *tx)
            .await?;
            let f = sqlx::query(
                "DELETE FROM retrieval_failures WHERE status IN ('dead', 'dropped')
                    AND mailbox = $1 AND ($2::text IS NULL OR uidl = $2)
                    AND ($3::text IS NULL OR $3 = $4)",
            )
            .bind(mailbox)
            .bind(uidl)
            .bind(sink)
            .bind(RETRIEVAL)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(r.rows_affected() + f.rows_affected())
        })
        .await
    }

    async fn drop_dead(
        &self,
        mailbox: &str,
        uidl: Option<&str>,
        sink: Option<&str>,
    ) -> Result<u64, StoreError> {
        self.timed("drop_dead", async {
            let mut tx = self.pool.begin().await?;
            let r = sqlx::query(
                "UPDATE deliveries SET status = 'dropped'
                  WHERE status = 'dead' AND mailbox = $1
                    AND ($2::text IS NULL OR uidl = $2) AND ($3::text IS NULL OR sink = $3)",
            )
            .bind(mailbox)
            .bind(uidl)
            .bind(sink)
            .execute(&mut *tx)
            .await?;
            let f = sqlx::query(
                "UPDATE retrieval_failures SET status = 'dropped'
                  WHERE status = 'dead' AND mailbox = $1
                    AND ($2::text IS NULL OR uidl = $2) AND ($3::text IS NULL OR $3 = $4)",
            )
            .bind(mailbox)
            .bind(uidl)
            .bind(sink)
            .bind(RETRIEVAL)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(r.rows_affected() + f.rows_affected())
        })
        .await
    }

    async fn forget(&self, mailbox: &str, uidl: Option<&str>) -> Result<u64, StoreError> {
        self.timed("forget", async {
            let r = sqlx::query(
                "DELETE FROM messages WHERE mailbox = $1 AND ($2::text IS NULL OR uidl = $2)",
            )
            .bind(mailbox)
            .bind(uidl)
            .execute(&self.pool)
            .await?;
            Ok(r.rows_affected())
        })
        .await
    }

    async fn counts(&self) -> Result<Vec<MailboxCounts>, StoreError> {
        self.timed("counts", async {
            let rows = sqlx::query(
                "SELECT m.mailbox,
                        COUNT(*) AS messages,
                        COUNT(*) FILTER (WHERE m.on_server) AS on_server,
                        COUNT(*) FILTER (WHERE m.deleted_at IS NOT NULL) AS deleted,
                        (SELECT COUNT(*) FROM deliveries d
                          WHERE d.mailbox = m.mailbox AND d.status = 'delivered') AS delivered,
                        (SELECT COUNT(*) FROM deliveries d
                          WHERE d.mailbox = m.mailbox AND d.status = 'pending') AS pending,
                        (SELECT COUNT(*) FROM deliveries d
                          WHERE d.mailbox = m.mailbox AND d.status = 'dead') AS dead
                   FROM messages m GROUP BY m.mailbox ORDER BY m.mailbox",
            )
            .fetch_all(&self.pool)
            .await?;
            rows.iter()
                .map(|row| {
                    let n = |col: &str| -> Result<u64, StoreError> {
                        Ok(to_u64(row.try_get::<i64, _>(col)?))
                    };
                    Ok(MailboxCounts {
                        mailbox: row.try_get("mailbox")?,
                        messages: n("messages")?,
                        on_server: n("on_server")?,
                        deleted: n("deleted")?,
                        delivered: n("delivered")?,
                        pending: n("pending")?,
                        dead: n("dead")?,
                    })
                })
                .collect()
        })
        .await
    }

    async fn delivered_bytes_since(
        &self,
        sink: &str,
        since: Millis,
    ) -> Result<HashMap<String, u64>, StoreError> {
        self.timed("delivered_bytes_since", async {
            let rows: Vec<(String, i64)> = sqlx::query_as(
                "SELECT d.mailbox, COALESCE(SUM(m.size), 0)::BIGINT FROM deliveries d
                   JOIN messages m ON m.mailbox = d.mailbox AND m.uidl = d.uidl
                  WHERE d.sink = $1 AND d.status = 'delivered' AND d.delivered_at >= $2
                    AND COALESCE((d.receipt::jsonb ->> 'duplicate')::boolean, FALSE) = FALSE
                  GROUP BY d.mailbox",
            )
            .bind(sink)
            .bind(since)
            .fetch_all(&self.pool)
            .await?;
            Ok(rows
                .into_iter()
                .map(|(m, b)| (m, u64::try_from(b).unwrap_or(0)))
                .collect())
        })
        .await
    }

    async fn fetched_bytes_since(&self, since: Millis) -> Result<Vec<(String, u64)>, StoreError> {
        self.timed("fetched_bytes_since", async {
            let rows: Vec<(String, i64)> = sqlx::query_as(
                "SELECT mailbox, COALESCE(SUM(size), 0)::BIGINT FROM messages
                  WHERE fetched_at >= $1 GROUP BY mailbox",
            )
            .bind(since)
            .fetch_all(&self.pool)
            .await?;
            Ok(rows
                .into_iter()
                .map(|(m, b)| (m, u64::try_from(b).unwrap_or(0)))
                .collect())
        })
        .await
    }

    async fn backlog(&self, mailbox: &str) -> Result<Vec<Backlog>, StoreError> {
        self.timed("backlog", async {
            let rows = sqlx::query(
                "SELECT sink, COUNT(*) FILTER (WHERE status = 'pending') AS pending,
                        COUNT(*) FILTER (WHERE status = 'dead') AS dead
                   FROM deliveries WHERE mailbox = $1 GROUP BY sink ORDER BY sink",
            )
            .bind(mailbox)
            .fetch_all(&self.pool)
            .await?;
            rows.iter()
                .map(|row| {
                    Ok(Backlog {
                        sink: row.try_get("sink")?,
                        pending: to_u64(row.try_get("pending")?),
                        dead: to_u64(row.try_get("dead")?),
                    })
                })
                .collect()
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.timed("ping", async {
            sqlx::query("SELECT 1").execute(&self.pool).await?;
            Ok(())
        })
        .await
    }
}
