//! `state copy`: move a SQLite state into PostgreSQL row for row, receipts and history included,
//! so the replicas carry on where the single process stopped and deliver nothing again.
//!
//! One PostgreSQL transaction: the target's tables are locked first and must be empty, so no
//! replica's rows can interleave with the copied ones (start the replicas after the copy). The
//! caller holds the SQLite state's poll lock.

use super::postgres::PgStore;
use super::sqlite::SqliteStore;
use super::StoreError;
use futures_util::TryStreamExt;
use sqlx::Row;

/// Rows per multi-row INSERT.
const BATCH: usize = 1000;

/// What was copied.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CopyReport {
    pub messages: u64,
    pub deliveries: u64,
    pub retrieval_failures: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the PostgreSQL state already holds {0} message(s); copy only into an empty one")]
    NotEmpty(i64),
}

impl From<sqlx::Error> for CopyError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(StoreError::Query(e))
    }
}

/// One table's columns, as copied: (name, PostgreSQL type of the array it is sent in).
struct Table {
    name: &'static str,
    columns: &'static [(&'static str, &'static str)],
}

const MESSAGES: Table = Table {
    name: "messages",
    columns: &[
        ("mailbox", "text"),
        ("uidl", "text"),
        ("idem_key", "text"),
        ("size", "bigint"),
        ("sha256", "text"),
        ("first_seen_at", "bigint"),
        ("fetched_at", "bigint"),
        ("on_server", "boolean"),
        ("deleted_at", "bigint"),
        ("replaced_by", "text"),
        ("list_size", "bigint"),
        ("fingerprint", "text"),
        ("gone_at", "bigint"),
        ("retired_at", "bigint"),
    ],
};

const DELIVERIES: Table = Table {
    name: "deliveries",
    columns: &[
        ("mailbox", "text"),
        ("uidl", "text"),
        ("sink", "text"),
        ("status", "text"),
        ("attempts", "bigint"),
        ("first_attempt_at", "bigint"),
        ("last_attempt_at", "bigint"),
        ("next_attempt_at", "bigint"),
        ("last_error", "text"),
        ("receipt", "text"),
        ("delivered_at", "bigint"),
    ],
};

const FAILURES: Table = Table {
    name: "retrieval_failures",
    columns: &[
        ("mailbox", "text"),
        ("uidl", "text"),
        ("failures", "bigint"),
        ("last_error", "text"),
        ("last_at", "bigint"),
        ("status", "text"),
    ],
};

/// A column's values of one batch.
enum Column {
    Text(Vec<Option<String>>),
    Int(Vec<Option<i64>>),
    Bool(Vec<Option<bool>>),
}

/// Copy every row of `from` into `to`, which must hold no message yet.
pub async fn sqlite_to_postgres(from: &SqliteStore, to: &PgStore) -> Result<CopyReport, CopyError> {
    let mut tx = to.pool().begin().await?;
    // Replicas' writes wait for this copy; readers do not.
    sqlx::query("LOCK TABLE messages, deliveries, retrieval_failures IN EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await?;
    let present: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM messages")
        .fetch_one(&mut *tx)
        .await?;
    if present > 0 {
        return Err(CopyError::NotEmpty(present));
    }
    let mut report = CopyReport::default();
    for (table, count) in [
        (&MESSAGES, &mut report.messages),
        (&DELIVERIES, &mut report.deliveries),
        (&FAILURES, &mut report.retrieval_failures),
    ] {
        *count = copy_table(from, &mut tx, table).await?;
    }
    tx.commit().await?;
    Ok(report)
}

async fn copy_table(
    from: &SqliteStore,
    tx: &mut sqlx::PgConnection,
    table: &Table,
) -> Result<u64, CopyError> {
    let names: Vec<&str> = table.columns.iter().map(|(n, _)| *n).collect();
    let select = format!("SELECT {} FROM {}", names.join(", "), table.name);
    let insert = format!(
        "INSERT INTO {} ({}) SELECT * FROM unnest({})",
        table.name,
        names.join(", "),
        table
            .columns
            .iter()
            .enumerate()
            .map(|(i, (_, ty))| format!("${}::{ty}[]", i + 1))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut rows = sqlx::query(&select).fetch(from.pool());
    let mut batch: Vec<Column> = Vec::new();
    let (mut total, mut in_batch) = (0u64, 0usize);
    let fresh = || -> Vec<Column> {
        table
            .columns
            .iter()
            .map(|(_, ty)| match *ty {
                "text" => Column::Text(Vec::with_capacity(BATCH)),
                "boolean" => Column::Bool(Vec::with_capacity(BATCH)),
                _ => Column::Int(Vec::with_capacity(BATCH)),
            })
            .collect()
    };
    batch.extend(fresh());
    loop {
        let row = rows.try_next().await?;
        if let Some(row) = &row {
            for (i, col) in batch.iter_mut().enumerate() {
                match col {
                    Column::Text(v) => v.push(row.try_get(i)?),
                    Column::Int(v) => v.push(row.try_get(i)?),
                    // SQLite keeps booleans as 0/1.
                    Column::Bool(v) => v.push(row.try_get::<Option<i64>, _>(i)?.map(|n| n != 0)),
                }
            }
            in_batch += 1;
        }
        if in_batch == BATCH || (row.is_none() && in_batch > 0) {
            let mut q = sqlx::query(&insert);
            for col in std::mem::replace(&mut batch, fresh()) {
                q = match col {
                    Column::Text(v) => q.bind(v),
                    Column::Int(v) => q.bind(v),
                    Column::Bool(v) => q.bind(v),
                };
            }
            q.execute(&mut *tx).await?;
            total += u64::try_from(in_batch).unwrap_or(0);
            in_batch = 0;
        }
        if row.is_none() {
            return Ok(total);
        }
    }
}
