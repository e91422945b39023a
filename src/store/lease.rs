//! Mailbox leases: which replica may poll a mailbox, and the fence that proves it at write time.
//!
//! A lease held in memory is only a belief; the [`Fence`] (owner, epoch, claim id) is checked
//! inside every write transaction of the mailbox, so a replica that lost the lease (paused,
//! partitioned, too slow to renew) writes nothing. The local deadline stops a replica from
//! starting work it could not finish before the lease may expire.

use std::sync::RwLock;
use std::time::Instant;

/// Proof of ownership of one mailbox, compared with the lease row in each write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fence {
    pub owner: String,
    pub epoch: i64,
    pub claim_id: String,
}

#[derive(Clone, Debug)]
struct Held {
    fence: Fence,
    deadline: Instant,
}

/// The lease this replica holds on one mailbox (or no longer holds), shared by the lease
/// keeper, which claims and renews it, and the mailbox's store handle, which writes under it.
#[derive(Debug)]
pub struct LeaseSlot {
    pub mailbox: String,
    held: RwLock<Option<Held>>,
}

impl LeaseSlot {
    pub fn new(mailbox: impl Into<String>) -> Self {
        Self {
            mailbox: mailbox.into(),
            held: RwLock::new(None),
        }
    }

    /// The fence to write under, while held and before the local deadline.
    pub fn current(&self) -> Option<Fence> {
        let held = self.held.read().ok()?;
        held.as_ref()
            .filter(|h| Instant::now() < h.deadline)
            .map(|h| h.fence.clone())
    }

    /// True while held and before the local deadline.
    pub fn is_held(&self) -> bool {
        self.current().is_some()
    }

    /// The claim id while held (even past the deadline: renewing may still save it).
    pub fn claim_id(&self) -> Option<String> {
        let held = self.held.read().ok()?;
        held.as_ref().map(|h| h.fence.claim_id.clone())
    }

    pub fn set(&self, fence: Fence, deadline: Instant) {
        if let Ok(mut held) = self.held.write() {
            *held = Some(Held { fence, deadline });
        }
    }

    /// A renewal succeeded: work may go on until `deadline`.
    pub fn extend(&self, deadline: Instant) {
        if let Ok(mut held) = self.held.write() {
            if let Some(h) = held.as_mut() {
                h.deadline = deadline;
            }
        }
    }

    pub fn clear(&self) {
        if let Ok(mut held) = self.held.write() {
            *held = None;
        }
    }
}

/// One row of `mailbox_lease`, for `state leases`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LeaseRow {
    pub mailbox: String,
    pub owner: Option<String>,
    pub epoch: i64,
    /// Milliseconds until the lease expires (negative: expired).
    pub expires_in_ms: Option<i64>,
    /// When the owner plans the mailbox's next poll (Unix ms), and when it last started one:
    /// the schedule a new owner continues.
    pub next_poll_at: Option<super::Millis>,
    pub last_poll_at: Option<super::Millis>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_lease_past_its_local_deadline_gives_no_fence() {
        let slot = LeaseSlot::new("alice");
        assert!(slot.current().is_none());
        let fence = Fence {
            owner: "r1".into(),
            epoch: 1,
            claim_id: "c".into(),
        };
        slot.set(fence.clone(), Instant::now() + Duration::from_secs(60));
        assert_eq!(slot.current(), Some(fence));
        slot.extend(Instant::now());
        assert!(slot.current().is_none());
        assert_eq!(slot.claim_id().as_deref(), Some("c"));
        slot.clear();
        assert!(slot.claim_id().is_none());
    }
}
