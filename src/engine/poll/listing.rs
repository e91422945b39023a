//! Step 2 of a poll: what the server holds, by message number, size and UIDL.

use super::PollError;
use crate::engine::plan::Listed;
use crate::pop3;
use std::collections::HashMap;

/// LIST and UIDL, paired by message number.
pub(crate) async fn list(session: &mut pop3::Transaction) -> Result<Vec<Listed>, PollError> {
    let (sizes, uidls) = session.listing().await?;
    Ok(merge_listing(&sizes, uidls))
}

/// Pair LIST sizes with UIDLs by message number. The UIDLs are moved, not copied: a listing
/// of a million messages is held once.
pub(crate) fn merge_listing(
    sizes: &[(u32, u64)],
    uidls: Option<Vec<(u32, String)>>,
) -> Vec<Listed> {
    let Some(uidls) = uidls else {
        return sizes
            .iter()
            .map(|(msgno, size)| Listed {
                msgno: *msgno,
                size: *size,
                uidl: None,
            })
            .collect();
    };
    // The usual case: both answers list the same message numbers in the same order.
    if uidls.len() == sizes.len() && uidls.iter().zip(sizes).all(|(u, s)| u.0 == s.0) {
        return uidls
            .into_iter()
            .zip(sizes)
            .map(|((msgno, uidl), (_, size))| Listed {
                msgno,
                size: *size,
                uidl: Some(uidl),
            })
            .collect();
    }
    let by_no: HashMap<u32, &str> = uidls.iter().map(|(n, u)| (*n, u.as_str())).collect();
    sizes
        .iter()
        .map(|(msgno, size)| Listed {
            msgno: *msgno,
            size: *size,
            // A message missing from UIDL but present in LIST is identified by content.
            uidl: by_no.get(msgno).map(|u| u.to_string()),
        })
        .collect()
}
