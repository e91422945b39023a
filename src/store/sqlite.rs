//! The embedded SQLite backend (WAL, one file, created 0600).

use super::rows::{self, to_u32};
use super::*;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Row, SqlitePool};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

/// SQLite in WAL mode with `synchronous = NORMAL`: a committed transaction survives a kill -9 of
/// the process (it is in the WAL); [`Store::sync`] checkpoints with fsync before any DELE so
/// receipts also survive a power loss before the server forgets a message.
pub struct SqliteStore {
    pool: SqlitePool,
    group: group::GroupCommit,
}

mod group;

impl SqliteStore {
    /// For `state copy`, which reads every row.
    pub(super) fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
                path: dir.display().to_string(),
                source,
            })?;
        }
        create_private(path).map_err(|source| StoreError::Dir {
            path: path.display().to_string(),
            source,
        })?;
        let open_err = |source| StoreError::Open {
            path: path.display().to_string(),
            source,
        };
        let options = SqliteConnectOptions::from_str("sqlite:")
            .map_err(open_err)?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            // The CLI (`dlq`, `state`) may write while the daemon runs.
            .busy_timeout(Duration::from_secs(30))
            // Rows cross from sqlx's worker thread through a bounded channel; the default of
            // 50 made loading a big mailbox's state a thread hand-off every few rows.
            .row_buffer_size(4096);
        // One connection: SQLite has one writer at a time anyway, and queueing in the pool is
        // cheaper than SQLite's busy handler, which sleeps in milliseconds. Other processes
        // (`popbridge dlq`) still get in through `busy_timeout`.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .map_err(open_err)?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Self {
            pool,
            group: group::GroupCommit::default(),
        })
    }
}

/// Create the database file with mode 0600 before SQLite does (it would use 0644): it holds
/// mailbox names and message metadata.
fn create_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The rows a poll loads: on the server at the last listing, not history.
const LISTED: &str =
    "on_server = 1 AND deleted_at IS NULL AND replaced_by IS NULL AND retired_at IS NULL";

/// Move the row at `uidl` (and its deliveries) to history under `<uidl> <idem_key>@<now>`,
/// which no listed UIDL can equal (RFC 1939 UIDLs have no spaces), so the UIDL is free for
/// the message that holds it now.
pub(super) async fn retire(
    conn: &mut sqlx::SqliteConnection,
    mailbox: &str,
    uidl: &str,
    now: Millis,
) -> Result<bool, StoreError> {
    let key: Option<String> =
        sqlx::query_scalar("SELECT idem_key FROM messages WHERE mailbox = ? AND uidl = ?")
            .bind(mailbox)
            .bind(uidl)
            .fetch_optional(&mut *conn)
            .await?;
    let Some(key) = key else { return Ok(false) };
    let history = format!("{uidl} {key}@{now}");
    sqlx::query(
        "INSERT INTO messages (mailbox, uidl, idem_key, size, sha256, first_seen_at, fetched_at,
            on_server, deleted_at, replaced_by, list_size, fingerprint, gone_at, retired_at, route)
         SELECT mailbox, ?3, idem_key, size, sha256, first_seen_at, fetched_at, 0, deleted_at,
            replaced_by, list_size, fingerprint, COALESCE(gone_at, ?4), ?4, route
           FROM messages WHERE mailbox = ?1 AND uidl = ?2",
    )
    .bind(mailbox)
    .bind(uidl)
    .bind(&history)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    sqlx::query("UPDATE deliveries SET uidl = ?3 WHERE mailbox = ?1 AND uidl = ?2")
        .bind(mailbox)
        .bind(uidl)
        .bind(&history)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM messages WHERE mailbox = ? AND uidl = ?")
        .bind(mailbox)
        .bind(uidl)
        .execute(&mut *conn)
        .await?;
    Ok(true)
}

/// Messages (with their deliveries) selected by `filter`, a condition on `messages`.
async fn load_where(
    pool: &SqlitePool,
    mailbox: &str,
    filter: &str,
    uidls: &[String],
) -> Result<HashMap<String, KnownMessage>, StoreError> {
    use futures_util::TryStreamExt;
    let mut out = HashMap::new();
    // Streamed row by row: a big mailbox is never held twice in memory.
    let sql = format!("SELECT * FROM messages WHERE mailbox = ? AND {filter}");
    let mut rows = sqlx::query(&sql).bind(mailbox);
    for u in uidls {
        rows = rows.bind(u);
    }
    let mut rows = rows.fetch(pool);
    while let Some(row) = rows.try_next().await? {
        let m = rows::message(&row)?;
        out.insert(m.uidl.clone(), m);
    }
    drop(rows);
    if out.is_empty() {
        return Ok(out);
    }
    let sql = format!(
        "SELECT d.* FROM deliveries d JOIN messages m ON m.mailbox = d.mailbox AND m.uidl = d.uidl
          WHERE m.mailbox = ? AND {}",
        filter.replace("uidl IN", "m.uidl IN")
    );
    let mut rows = sqlx::query(&sql).bind(mailbox);
    for u in uidls {
        rows = rows.bind(u);
    }
    let mut rows = rows.fetch(pool);
    while let Some(row) = rows.try_next().await? {
        let uidl: String = row.try_get("uidl")?;
        let sink: String = row.try_get("sink")?;
        if let Some(m) = out.get_mut(&uidl) {
            m.deliveries.insert(sink, rows::delivery(&row)?);
        }
    }
    Ok(out)
}

/// SQLite's default limit on bound parameters is 32766; stay well below it.
const CHUNK: usize = 500;

/// `UPDATE messages SET <set><value> WHERE mailbox = ? AND uidl IN (…)`, in chunks of UIDLs.
async fn update_uidls(
    conn: &mut sqlx::SqliteConnection,
    set: &str,
    value: i64,
    mailbox: &str,
    uidls: &[String],
) -> Result<(), StoreError> {
    for chunk in uidls.chunks(CHUNK) {
        let mut q = QueryBuilder::new("UPDATE messages SET ");
        q.push(set)
            .push_bind(value)
            .push(" WHERE mailbox = ")
            .push_bind(mailbox)
            .push(" AND uidl IN (");
        let mut sep = q.separated(", ");
        for uidl in chunk {
            sep.push_bind(uidl);
        }
        q.push(")");
        q.build().execute(&mut *conn).await?;
    }
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    async fn load_mailbox(
        &self,
        mailbox: &str,
    ) -> Result<HashMap<String, KnownMessage>, StoreError> {
        load_where(&self.pool, mailbox, LISTED, &[]).await
    }

    async fn load_listed(
        &self,
        mailbox: &str,
        sinks: &[String],
    ) -> Result<ListedState, StoreError> {
        use futures_util::TryStreamExt;
        if sinks.is_empty() || sinks.len() > CHUNK {
            return Ok(ListedState::split(self.load_mailbox(mailbox).await?, sinks));
        }
        // One narrow row per message: how many of the sinks hold it, and when the last did.
        let mut q = QueryBuilder::new(
            "SELECT m.uidl, COALESCE(m.list_size, m.size) AS list_size, COUNT(d.sink) AS held, \
                    MAX(d.delivered_at) AS last_delivery, \
                    MAX(CASE WHEN m.route IS NULL THEN 0 ELSE 1 END) AS routed \
               FROM messages m LEFT JOIN deliveries d \
                 ON d.mailbox = m.mailbox AND d.uidl = m.uidl AND d.status = 'delivered' AND d.sink IN (",
        );
        let mut sep = q.separated(", ");
        for s in sinks {
            sep.push_bind(s);
        }
        q.push(") WHERE m.mailbox = ").push_bind(mailbox).push(
            " AND m.on_server = 1 AND m.deleted_at IS NULL AND m.replaced_by IS NULL \
                  AND m.retired_at IS NULL GROUP BY m.uidl",
        );
        let mut out = ListedState::default();
        let mut open = Vec::new();
        {
            let mut rows = q.build().fetch(&self.pool);
            while let Some(row) = rows.try_next().await? {
                let narrow = super::NarrowRow {
                    uidl: row.try_get(0)?,
                    list_size: row.try_get(1)?,
                    held: row.try_get(2)?,
                    last_delivery: row.try_get(3)?,
                    routed: row.try_get::<i64, _>(4)? != 0,
                };
                out.sort_row(&mut open, narrow, sinks.len());
            }
        }
        out.open = self.lookup(mailbox, &open).await?;
        Ok(out)
    }

    async fn lookup(
        &self,
        mailbox: &str,
        uidls: &[String],
    ) -> Result<HashMap<String, KnownMessage>, StoreError> {
        let mut out = HashMap::new();
        for chunk in uidls.chunks(CHUNK) {
            let marks = vec!["?"; chunk.len()].join(", ");
            out.extend(
                load_where(&self.pool, mailbox, &format!("uidl IN ({marks})"), chunk).await?,
            );
        }
        Ok(out)
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
        let mut tx = self.pool.begin().await?;
        update_uidls(&mut tx, "gone_at = NULL, on_server = ", 1, mailbox, back).await?;
        update_uidls(&mut tx, "on_server = 0, gone_at = ", now, mailbox, gone).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn confirm(
        &self,
        mailbox: &str,
        uidl: &str,
        list_size: u64,
        fingerprint: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE messages SET on_server = 1, gone_at = NULL, list_size = ?3,
                    fingerprint = COALESCE(fingerprint, ?4)
              WHERE mailbox = ?1 AND uidl = ?2",
        )
        .bind(mailbox)
        .bind(uidl)
        .bind(to_i64(list_size))
        .bind(fingerprint)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn record_fetched(&self, r: &FetchRecord<'_>) -> Result<(), StoreError> {
        let fetched = group::Fetched {
            mailbox: r.mailbox.to_string(),
            uidl: r.uidl.to_string(),
            idem_key: r.idem_key.to_string(),
            size: to_i64(r.size),
            sha256: r.sha256.to_string(),
            fingerprint: r.fingerprint.to_string(),
            list_size: to_i64(r.list_size),
            fetched_at: r.fetched_at,
            sinks: r.sinks.to_vec(),
            retire: r.retire,
            route: r.route.map(serde_json::to_string).transpose()?,
        };
        self.group
            .write(&self.pool, group::Write::Fetched(fetched))
            .await
    }

    async fn record_outcomes(&self, outcomes: &[Outcome]) -> Result<(), StoreError> {
        if outcomes.is_empty() {
            return Ok(());
        }
        self.group
            .write(&self.pool, group::Write::Outcomes(outcomes.to_vec()))
            .await
    }

    async fn record_deleted(
        &self,
        mailbox: &str,
        uidls: &[String],
        now: Millis,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        update_uidls(&mut tx, "on_server = 0, deleted_at = ", now, mailbox, uidls).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn find_vanished_by_content(
        &self,
        mailbox: &str,
        sha256: &str,
        size: u64,
        fingerprint: &str,
    ) -> Result<Option<KnownMessage>, StoreError> {
        const VANISHED: &str =
            "on_server = 0 AND deleted_at IS NULL AND replaced_by IS NULL AND retired_at IS NULL";
        let mut row = sqlx::query(&format!(
            "SELECT * FROM messages WHERE mailbox = ? AND fingerprint = ? AND {VANISHED}
             ORDER BY first_seen_at LIMIT 1"
        ))
        .bind(mailbox)
        .bind(fingerprint)
        .fetch_optional(&self.pool)
        .await?;
        if row.is_none() {
            // Rows from before schema 2 have no fingerprint: their exact bytes, then.
            row = sqlx::query(&format!(
                "SELECT * FROM messages WHERE mailbox = ? AND sha256 = ? AND size = ?
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
        let rows = sqlx::query("SELECT * FROM deliveries WHERE mailbox = ? AND uidl = ?")
            .bind(mailbox)
            .bind(&m.uidl)
            .fetch_all(&self.pool)
            .await?;
        for row in &rows {
            let sink: String = row.try_get("sink")?;
            m.deliveries.insert(sink, rows::delivery(row)?);
        }
        Ok(Some(m))
    }

    async fn has_vanished(&self, mailbox: &str) -> Result<bool, StoreError> {
        let found: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM messages INDEXED BY messages_vanished WHERE mailbox = ? AND on_server = 0
                AND deleted_at IS NULL AND replaced_by IS NULL AND retired_at IS NULL LIMIT 1",
        )
        .bind(mailbox)
        .fetch_optional(&self.pool)
        .await?;
        Ok(found.is_some())
    }

    async fn adopt(
        &self,
        mailbox: &str,
        old_uidl: &str,
        new_uidl: &str,
        now: Millis,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        // Whatever held the new UIDL before is history now.
        retire(&mut tx, mailbox, new_uidl, now).await?;
        sqlx::query(
            "INSERT INTO messages (mailbox, uidl, idem_key, size, sha256, first_seen_at, fetched_at,
                on_server, list_size, fingerprint, route)
             SELECT mailbox, ?3, idem_key, size, sha256, first_seen_at, ?4, 1, list_size, fingerprint,
                route
               FROM messages WHERE mailbox = ?1 AND uidl = ?2",
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
             SELECT mailbox, ?3, sink, status, attempts, first_attempt_at, last_attempt_at,
                    next_attempt_at, last_error, receipt, delivered_at
               FROM deliveries WHERE mailbox = ?1 AND uidl = ?2
             ON CONFLICT (mailbox, uidl, sink) DO NOTHING",
        )
        .bind(mailbox)
        .bind(old_uidl)
        .bind(new_uidl)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE messages SET replaced_by = ?3, retired_at = ?4 WHERE mailbox = ?1 AND uidl = ?2",
        )
        .bind(mailbox)
        .bind(old_uidl)
        .bind(new_uidl)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn sync(&self) -> Result<(), StoreError> {
        // FULL checkpoint: the WAL's frames are written into the database file and fsynced.
        sqlx::query("PRAGMA wal_checkpoint(FULL)")
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn record_retrieval_failure(
        &self,
        mailbox: &str,
        uidl: &str,
        error: &str,
        max: u32,
        now: Millis,
    ) -> Result<RetrievalFailure, StoreError> {
        let row = sqlx::query(
            "INSERT INTO retrieval_failures (mailbox, uidl, failures, last_error, last_at, status)
             VALUES (?1, ?2, 1, ?3, ?4, CASE WHEN ?5 <= 1 THEN 'dead' ELSE 'failing' END)
             ON CONFLICT (mailbox, uidl) DO UPDATE SET
                failures = failures + 1, last_error = excluded.last_error, last_at = excluded.last_at,
                status = CASE WHEN status = 'failing' AND failures + 1 >= ?5 THEN 'dead' ELSE status END
             RETURNING failures, last_error, status",
        )
        .bind(mailbox)
        .bind(uidl)
        .bind(error)
        .bind(now)
        .bind(i64::from(max))
        .fetch_one(&self.pool)
        .await?;
        rows::failure(&row)
    }

    async fn retrieval_failures(
        &self,
        mailbox: &str,
    ) -> Result<HashMap<String, RetrievalFailure>, StoreError> {
        let rows = sqlx::query("SELECT * FROM retrieval_failures WHERE mailbox = ?")
            .bind(mailbox)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("uidl")?, rows::failure(row)?)))
            .collect()
    }

    async fn clear_retrieval_failure(&self, mailbox: &str, uidl: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM retrieval_failures WHERE mailbox = ? AND uidl = ?")
            .bind(mailbox)
            .bind(uidl)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn prune(&self, mailbox: &str, before: Millis) -> Result<u64, StoreError> {
        let r = sqlx::query(
            "DELETE FROM messages WHERE mailbox = ? AND on_server = 0
                AND COALESCE(deleted_at, retired_at, gone_at) < ?",
        )
        .bind(mailbox)
        .bind(before)
        .execute(&self.pool)
        .await?;
        sqlx::query("DELETE FROM retrieval_failures WHERE mailbox = ? AND last_at < ?")
            .bind(mailbox)
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }

    async fn dead_letters(&self, mailbox: Option<&str>) -> Result<Vec<DeadLetter>, StoreError> {
        let rows = sqlx::query(
            "SELECT d.mailbox, d.uidl, m.idem_key, d.sink, d.attempts, d.last_error, d.last_attempt_at
               FROM deliveries d JOIN messages m ON m.mailbox = d.mailbox AND m.uidl = d.uidl
              WHERE d.status = 'dead' AND (?1 IS NULL OR d.mailbox = ?1)
             UNION ALL
             SELECT mailbox, uidl, '' AS idem_key, ?2 AS sink, failures AS attempts,
                    last_error, last_at AS last_attempt_at
               FROM retrieval_failures WHERE status = 'dead' AND (?1 IS NULL OR mailbox = ?1)
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
    }

    async fn retry_dead(
        &self,
        mailbox: &str,
        uidl: Option<&str>,
        sink: Option<&str>,
    ) -> Result<u64, StoreError> {
        // A fresh retry window: the first attempt is forgotten, the history stays in attempts.
        // A message that could not be retrieved gets a fresh count of tries.
        dead_letter_change(
            &self.pool,
            "UPDATE deliveries SET status = 'pending', next_attempt_at = NULL, first_attempt_at = NULL
              WHERE status IN ('dead', 'dropped')",
            "DELETE FROM retrieval_failures WHERE status IN ('dead', 'dropped')",
            (mailbox, uidl, sink),
        )
        .await
    }

    async fn drop_dead(
        &self,
        mailbox: &str,
        uidl: Option<&str>,
        sink: Option<&str>,
    ) -> Result<u64, StoreError> {
        dead_letter_change(
            &self.pool,
            "UPDATE deliveries SET status = 'dropped' WHERE status = 'dead'",
            "UPDATE retrieval_failures SET status = 'dropped' WHERE status = 'dead'",
            (mailbox, uidl, sink),
        )
        .await
    }

    async fn forget(&self, mailbox: &str, uidl: Option<&str>) -> Result<u64, StoreError> {
        let r =
            sqlx::query("DELETE FROM messages WHERE mailbox = ?1 AND (?2 IS NULL OR uidl = ?2)")
                .bind(mailbox)
                .bind(uidl)
                .execute(&self.pool)
                .await?;
        Ok(r.rows_affected())
    }

    async fn counts(&self) -> Result<Vec<MailboxCounts>, StoreError> {
        let rows = sqlx::query(
            "SELECT m.mailbox,
                    COUNT(*) AS messages,
                    SUM(m.on_server) AS on_server,
                    SUM(m.deleted_at IS NOT NULL) AS deleted,
                    (SELECT COUNT(*) FROM deliveries d WHERE d.mailbox = m.mailbox AND d.status = 'delivered') AS delivered,
                    (SELECT COUNT(*) FROM deliveries d WHERE d.mailbox = m.mailbox AND d.status = 'pending') AS pending,
                    (SELECT COUNT(*) FROM deliveries d WHERE d.mailbox = m.mailbox AND d.status = 'dead') AS dead
               FROM messages m GROUP BY m.mailbox ORDER BY m.mailbox",
        )
        .fetch_all(&self.pool)
        .await?;
        let n = |row: &sqlx::sqlite::SqliteRow, col: &str| -> Result<u64, StoreError> {
            Ok(u64::try_from(row.try_get::<Option<i64>, _>(col)?.unwrap_or(0)).unwrap_or(0))
        };
        rows.iter()
            .map(|row| {
                Ok(MailboxCounts {
                    mailbox: row.try_get("mailbox")?,
                    messages: n(row, "messages")?,
                    on_server: n(row, "on_server")?,
                    deleted: n(row, "deleted")?,
                    delivered: n(row, "delivered")?,
                    pending: n(row, "pending")?,
                    dead: n(row, "dead")?,
                })
            })
            .collect()
    }

    async fn delivered_bytes_since(
        &self,
        sink: &str,
        since: Millis,
    ) -> Result<HashMap<String, u64>, StoreError> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT d.mailbox, COALESCE(SUM(m.size), 0) FROM deliveries d
               JOIN messages m ON m.mailbox = d.mailbox AND m.uidl = d.uidl
              WHERE d.sink = ? AND d.status = 'delivered' AND d.delivered_at >= ?
                AND COALESCE(json_extract(d.receipt, '$.duplicate'), 0) = 0
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
    }

    async fn fetched_bytes_since(&self, since: Millis) -> Result<Vec<(String, u64)>, StoreError> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT mailbox, COALESCE(SUM(size), 0) FROM messages
              WHERE fetched_at >= ? GROUP BY mailbox",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(m, b)| (m, u64::try_from(b).unwrap_or(0)))
            .collect())
    }

    async fn backlog(&self, mailbox: &str) -> Result<Vec<Backlog>, StoreError> {
        let rows = sqlx::query(
            "SELECT sink, SUM(status = 'pending') AS pending, SUM(status = 'dead') AS dead
               FROM deliveries WHERE mailbox = ? GROUP BY sink ORDER BY sink",
        )
        .bind(mailbox)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let n = |col: &str| -> Result<u64, StoreError> {
                    Ok(
                        u64::try_from(row.try_get::<Option<i64>, _>(col)?.unwrap_or(0))
                            .unwrap_or(0),
                    )
                };
                Ok(Backlog {
                    sink: row.try_get("sink")?,
                    pending: n("pending")?,
                    dead: n("dead")?,
                })
            })
            .collect()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

/// A `dlq retry`/`dlq drop`: `deliveries` changes the deliveries, `failures` the messages that
/// cannot be retrieved (the pseudo-sink [`RETRIEVAL`]); both narrowed to mailbox, UIDL, sink.
async fn dead_letter_change(
    pool: &SqlitePool,
    deliveries: &str,
    failures: &str,
    (mailbox, uidl, sink): (&str, Option<&str>, Option<&str>),
) -> Result<u64, StoreError> {
    let r = sqlx::query(&format!(
        "{deliveries} AND mailbox = ?1 AND (?2 IS NULL OR uidl = ?2) AND (?3 IS NULL OR sink = ?3)"
    ))
    .bind(mailbox)
    .bind(uidl)
    .bind(sink)
    .execute(pool)
    .await?;
    let f = sqlx::query(&format!(
        "{failures} AND mailbox = ?1 AND (?2 IS NULL OR uidl = ?2) AND (?3 IS NULL OR ?3 = ?4)"
    ))
    .bind(mailbox)
    .bind(uidl)
    .bind(sink)
    .bind(RETRIEVAL)
    .execute(pool)
    .await?;
    Ok(r.rows_affected() + f.rows_affected())
}

#[cfg(test)]
mod tests;
