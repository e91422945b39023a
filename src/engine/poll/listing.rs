//! Step 2 of a poll: what the server holds, by message number, size and UIDL.

use super::PollError;
use crate::engine::plan::Listed;
use crate::pop3;
use std::collections::HashMap;

/// LIST and UIDL, paired by message number.
pub(crate) async fn list(session: &mut pop3::Transaction) -> Result<Vec<Listed>, PollError> {
    let sizes = session.list().await?;
    let uidls = session.uidl().await?;
    Ok(merge_listing(&sizes, uidls.as_deref()))
}

/// Pair LIST sizes with UIDLs by message number.
pub(crate) fn merge_listing(sizes: &[(u32, u64)], uidls: Option<&[(u32, String)]>) -> Vec<Listed> {
    let by_no: HashMap<u32, &str> = uidls
        .unwrap_or_default()
        .iter()
        .map(|(n, u)| (*n, u.as_str()))
        .collect();
    sizes
        .iter()
        .map(|(msgno, size)| Listed {
            msgno: *msgno,
            size: *size,
            uidl: if uidls.is_some() {
                // A message missing from UIDL but present in LIST is identified by content.
                by_no.get(msgno).map(|u| u.to_string())
            } else {
                None
            },
        })
        .collect()
}
