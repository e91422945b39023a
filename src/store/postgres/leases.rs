//! Claiming, renewing and releasing mailbox leases, and the replica heartbeats that size each
//! replica's fair share. Lease times are the database's clock.

use super::{Fence, LeaseRow, Millis, PgStore, StoreError};
use sqlx::postgres::PgListener;
use sqlx::{PgConnection, Row};
use std::time::Duration;

/// The `NOTIFY` channel on which a replica says it released leases or left (payload: its id).
pub const LEASES_CHANNEL: &str = "popbridge_leases";

/// A lease just claimed, with the poll the previous owner had planned.
#[derive(Clone, Debug)]
pub struct Claimed {
    pub mailbox: String,
    pub fence: Fence,
    pub next_poll_at: Option<Millis>,
}

/// A held lease's claim id and its mailbox's poll times, saved with each renewal and release.
#[derive(Clone, Debug, Default)]
pub struct PollTimes {
    pub claim_id: String,
    pub next_poll_at: Option<Millis>,
    pub last_poll_at: Option<Millis>,
}

type Columns = (Vec<String>, Vec<Option<Millis>>, Vec<Option<Millis>>);

fn columns(held: &[PollTimes]) -> Columns {
    (
        held.iter().map(|h| h.claim_id.clone()).collect(),
        held.iter().map(|h| h.next_poll_at).collect(),
        held.iter().map(|h| h.last_poll_at).collect(),
    )
}

async fn notify(conn: &mut PgConnection, from: &str) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(LEASES_CHANNEL)
        .bind(from)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

impl PgStore {
    /// Record that replica `id` is alive; returns how many replicas are (heartbeat within `ttl`).
    pub async fn heartbeat(&self, id: &str, ttl: Duration) -> Result<u64, StoreError> {
        self.timed("heartbeat", async {
            sqlx::query(
                "INSERT INTO replica (id) VALUES ($1)
                 ON CONFLICT (id) DO UPDATE SET heartbeat_at = now()",
            )
            .bind(id)
            .execute(&self.pool)
            .await?;
            let live: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM replica
                  WHERE heartbeat_at > now() - make_interval(secs => $1)",
            )
            .bind(secs(ttl))
            .fetch_one(&self.pool)
            .await?;
            Ok(u64::try_from(live).unwrap_or(1).max(1))
        })
        .await
    }

    /// A replica that stops: peers no longer count it.
    pub async fn unregister(&self, id: &str) -> Result<(), StoreError> {
        self.timed("unregister", async {
            let mut tx = self.pool.begin().await?;
            sqlx::query("DELETE FROM replica WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            notify(&mut tx, id).await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    /// Claim up to `limit` of `mailboxes` that nobody holds or whose lease expired, soonest
    /// due first. Each claim gets a higher epoch and a new claim id. `FOR UPDATE SKIP LOCKED`:
    /// concurrent claimers never get the same row and never wait for each other.
    pub async fn claim(
        &self,
        owner: &str,
        mailboxes: &[String],
        limit: usize,
        ttl: Duration,
    ) -> Result<Vec<Claimed>, StoreError> {
        if limit == 0 || mailboxes.is_empty() {
            return Ok(Vec::new());
        }
        self.timed("claim", async {
            sqlx::query(
                "INSERT INTO mailbox_lease (mailbox) SELECT unnest($1::text[])
                 ON CONFLICT (mailbox) DO NOTHING",
            )
            .bind(mailboxes)
            .execute(&self.pool)
            .await?;
            let rows = sqlx::query(
                "WITH free AS (
                    SELECT mailbox FROM mailbox_lease
                     WHERE mailbox = ANY($1) AND (owner IS NULL OR expires_at < now())
                     ORDER BY COALESCE(next_poll_at, 0), mailbox
                     LIMIT $2 FOR UPDATE SKIP LOCKED)
                 UPDATE mailbox_lease l
                    SET owner = $3, epoch = l.epoch + 1, claim_id = gen_random_uuid()::text,
                        expires_at = now() + make_interval(secs => $4)
                   FROM free WHERE l.mailbox = free.mailbox
                 RETURNING l.mailbox, l.epoch, l.claim_id, l.next_poll_at",
            )
            .bind(mailboxes)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .bind(owner)
            .bind(secs(ttl))
            .fetch_all(&self.pool)
            .await?;
            rows.iter()
                .map(|r| {
                    Ok(Claimed {
                        mailbox: r.try_get("mailbox")?,
                        fence: Fence {
                            owner: owner.to_string(),
                            epoch: r.try_get("epoch")?,
                            claim_id: r.try_get("claim_id")?,
                        },
                        next_poll_at: r.try_get("next_poll_at")?,
                    })
                })
                .collect()
        })
        .await
    }

    /// Renew every lease we hold in one statement, saving each mailbox's poll times on the
    /// way (so a new owner continues the schedule); returns the claim ids still ours (a lease
    /// taken over is missing).
    pub async fn renew(
        &self,
        owner: &str,
        held: &[PollTimes],
        ttl: Duration,
    ) -> Result<Vec<String>, StoreError> {
        if held.is_empty() {
            return Ok(Vec::new());
        }
        let (claims, next, last) = columns(held);
        self.timed("renew", async {
            Ok(sqlx::query_scalar(
                "UPDATE mailbox_lease l SET expires_at = now() + make_interval(secs => $3),
                        next_poll_at = COALESCE(v.next, l.next_poll_at),
                        last_poll_at = COALESCE(v.last, l.last_poll_at)
                   FROM unnest($2::text[], $4::bigint[], $5::bigint[]) AS v(claim_id, next, last)
                  WHERE l.owner = $1 AND l.claim_id = v.claim_id
                 RETURNING l.claim_id",
            )
            .bind(owner)
            .bind(&claims)
            .bind(secs(ttl))
            .bind(&next)
            .bind(&last)
            .fetch_all(&self.pool)
            .await?)
        })
        .await
    }

    /// Give leases back (shutdown, rebalancing) with their poll times, and tell the peers
    /// (`NOTIFY`) so one claims them at once. The epoch stays, so the next claim is still a
    /// higher one.
    pub async fn release(&self, owner: &str, held: &[PollTimes]) -> Result<u64, StoreError> {
        if held.is_empty() {
            return Ok(0);
        }
        let (claims, next, last) = columns(held);
        self.timed("release", async {
            let mut tx = self.pool.begin().await?;
            let r = sqlx::query(
                "UPDATE mailbox_lease l SET owner = NULL, claim_id = NULL, expires_at = NULL,
                        next_poll_at = COALESCE(v.next, l.next_poll_at),
                        last_poll_at = COALESCE(v.last, l.last_poll_at)
                   FROM unnest($2::text[], $3::bigint[], $4::bigint[]) AS v(claim_id, next, last)
                  WHERE l.owner = $1 AND l.claim_id = v.claim_id",
            )
            .bind(owner)
            .bind(&claims)
            .bind(&next)
            .bind(&last)
            .execute(&mut *tx)
            .await?;
            notify(&mut tx, owner).await?;
            tx.commit().await?;
            Ok(r.rows_affected())
        })
        .await
    }

    /// A connection that hears peers release leases or leave (see [`LEASES_CHANNEL`]).
    pub async fn listener(&self) -> Result<PgListener, StoreError> {
        self.timed("listen", async {
            let mut l = PgListener::connect_with(&self.pool).await?;
            l.listen(LEASES_CHANNEL).await?;
            Ok(l)
        })
        .await
    }

    /// Every lease row, for `state leases`.
    pub async fn leases(&self) -> Result<Vec<LeaseRow>, StoreError> {
        self.timed("leases", async {
            let rows = sqlx::query(
                "SELECT mailbox, owner, epoch, next_poll_at, last_poll_at,
                        (EXTRACT(EPOCH FROM (expires_at - now())) * 1000)::bigint AS expires_in_ms
                   FROM mailbox_lease ORDER BY mailbox",
            )
            .fetch_all(&self.pool)
            .await?;
            rows.iter()
                .map(|r| {
                    Ok(LeaseRow {
                        mailbox: r.try_get("mailbox")?,
                        owner: r.try_get("owner")?,
                        epoch: r.try_get("epoch")?,
                        expires_in_ms: r.try_get("expires_in_ms")?,
                        next_poll_at: r.try_get("next_poll_at")?,
                        last_poll_at: r.try_get("last_poll_at")?,
                    })
                })
                .collect()
        })
        .await
    }
}
