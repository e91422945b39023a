//! Claiming, renewing and releasing mailbox leases, and the replica heartbeats that size each
//! replica's fair share. Lease times are the database's clock.

use super::{Fence, LeaseRow, PgStore, StoreError};
use sqlx::Row;
use std::time::Duration;

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
            sqlx::query("DELETE FROM replica WHERE id = $1")
                .bind(id)
                .execute(&self.pool)
                .await?;
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
    ) -> Result<Vec<(String, Fence)>, StoreError> {
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
                 RETURNING l.mailbox, l.epoch, l.claim_id",
            )
            .bind(mailboxes)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .bind(owner)
            .bind(secs(ttl))
            .fetch_all(&self.pool)
            .await?;
            rows.iter()
                .map(|r| {
                    Ok((
                        r.try_get("mailbox")?,
                        Fence {
                            owner: owner.to_string(),
                            epoch: r.try_get("epoch")?,
                            claim_id: r.try_get("claim_id")?,
                        },
                    ))
                })
                .collect()
        })
        .await
    }

    /// Renew every lease we hold in one statement; returns the claim ids still ours (a lease
    /// taken over is missing).
    pub async fn renew(
        &self,
        owner: &str,
        claims: &[String],
        ttl: Duration,
    ) -> Result<Vec<String>, StoreError> {
        if claims.is_empty() {
            return Ok(Vec::new());
        }
        self.timed("renew", async {
            Ok(sqlx::query_scalar(
                "UPDATE mailbox_lease SET expires_at = now() + make_interval(secs => $3)
                  WHERE owner = $1 AND claim_id = ANY($2)
                 RETURNING claim_id",
            )
            .bind(owner)
            .bind(claims)
            .bind(secs(ttl))
            .fetch_all(&self.pool)
            .await?)
        })
        .await
    }

    /// Give leases back (shutdown, rebalancing): a peer may claim them at once. The epoch
    /// stays, so the next claim is still a higher one.
    pub async fn release(&self, owner: &str, claims: &[String]) -> Result<u64, StoreError> {
        if claims.is_empty() {
            return Ok(0);
        }
        self.timed("release", async {
            let r = sqlx::query(
                "UPDATE mailbox_lease SET owner = NULL, claim_id = NULL, expires_at = NULL
                  WHERE owner = $1 AND claim_id = ANY($2)",
            )
            .bind(owner)
            .bind(claims)
            .execute(&self.pool)
            .await?;
            Ok(r.rows_affected())
        })
        .await
    }

    /// Every lease row, for `state leases`.
    pub async fn leases(&self) -> Result<Vec<LeaseRow>, StoreError> {
        self.timed("leases", async {
            let rows = sqlx::query(
                "SELECT mailbox, owner, epoch,
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
                    })
                })
                .collect()
        })
        .await
    }
}
