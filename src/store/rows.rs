//! Rows to state, for both backends: the columns mean the same in SQLite and PostgreSQL, so
//! each type has one decoder here. [`Columns`] hides how the two differ (`on_server` is an
//! INTEGER in SQLite and a BOOLEAN in PostgreSQL).

use super::{DeliveryState, KnownMessage, RetrievalFailure, StoreError};
use crate::receipt::Receipt;
use sqlx::Row;
use std::collections::HashMap;

/// Typed column reads of one row.
pub(super) trait Columns {
    fn text(&self, col: &str) -> Result<String, StoreError>;
    fn opt_text(&self, col: &str) -> Result<Option<String>, StoreError>;
    fn int(&self, col: &str) -> Result<i64, StoreError>;
    fn opt_int(&self, col: &str) -> Result<Option<i64>, StoreError>;
    fn flag(&self, col: &str) -> Result<bool, StoreError>;
}

/// The reads both sqlx row types do the same way.
macro_rules! columns {
    ($row:ty, |$r:ident, $c:ident| $flag:expr) => {
        impl Columns for $row {
            fn text(&self, col: &str) -> Result<String, StoreError> {
                Ok(self.try_get(col)?)
            }
            fn opt_text(&self, col: &str) -> Result<Option<String>, StoreError> {
                Ok(self.try_get(col)?)
            }
            fn int(&self, col: &str) -> Result<i64, StoreError> {
                Ok(self.try_get(col)?)
            }
            fn opt_int(&self, col: &str) -> Result<Option<i64>, StoreError> {
                Ok(self.try_get(col)?)
            }
            fn flag(&self, col: &str) -> Result<bool, StoreError> {
                let ($r, $c) = (self, col);
                $flag
            }
        }
    };
}

columns!(sqlx::sqlite::SqliteRow, |r, c| Ok(r
    .try_get::<i64, _>(c)?
    != 0));
columns!(sqlx::postgres::PgRow, |r, c| Ok(r.try_get::<bool, _>(c)?));

pub(super) fn to_u32(v: i64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// A size column: a negative value (never written) reads as unknown.
fn size(v: Option<i64>) -> Option<u64> {
    v.and_then(|s| u64::try_from(s).ok())
}

pub(super) fn delivery(row: &impl Columns) -> Result<DeliveryState, StoreError> {
    let status = row.text("status")?;
    let attempts = to_u32(row.int("attempts")?);
    let error = row.opt_text("last_error")?;
    Ok(match status.as_str() {
        "delivered" => DeliveryState::Delivered {
            at: row.opt_int("delivered_at")?.unwrap_or(0),
            receipt: match row.opt_text("receipt")? {
                Some(json) => serde_json::from_str(&json)?,
                None => Receipt::new(""),
            },
        },
        "dead" => DeliveryState::Dead {
            attempts,
            error: error.unwrap_or_default(),
        },
        "dropped" => DeliveryState::Dropped {
            error: error.unwrap_or_default(),
        },
        _ => DeliveryState::Pending {
            attempts,
            first_attempt_at: row.opt_int("first_attempt_at")?,
            next_attempt_at: row.opt_int("next_attempt_at")?,
            last_error: error,
        },
    })
}

pub(super) fn message(row: &impl Columns) -> Result<KnownMessage, StoreError> {
    Ok(KnownMessage {
        uidl: row.text("uidl")?,
        idem_key: row.text("idem_key")?,
        size: size(row.opt_int("size")?),
        sha256: row.opt_text("sha256")?,
        first_seen_at: row.int("first_seen_at")?,
        on_server: row.flag("on_server")?,
        deleted_at: row.opt_int("deleted_at")?,
        replaced_by: row.opt_text("replaced_by")?,
        list_size: size(row.opt_int("list_size")?),
        fingerprint: row.opt_text("fingerprint")?,
        route: match row.opt_text("route")? {
            Some(text) => Some(serde_json::from_str(&text)?),
            None => None,
        },
        deliveries: HashMap::new(),
    })
}

pub(super) fn failure(row: &impl Columns) -> Result<RetrievalFailure, StoreError> {
    let status = row.text("status")?;
    Ok(RetrievalFailure {
        failures: to_u32(row.int("failures")?),
        last_error: row.text("last_error")?,
        dead: status == "dead",
        dropped: status == "dropped",
    })
}
