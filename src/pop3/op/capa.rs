//! CAPA (RFC 2449): what the server supports. A server without CAPA answers `-ERR`, which
//! means "nothing advertised", not a failure.

use crate::pop3::conn::Conn;
use crate::pop3::error::Pop3Error;
use crate::pop3::response::{Capabilities, Status};

const MAX_CAPA_LINES: usize = 256;

pub(crate) async fn capa(conn: &mut Conn) -> Result<Capabilities, Pop3Error> {
    conn.send("CAPA", "CAPA").await?;
    if conn.read_status("CAPA").await?.status != Status::Ok {
        return Ok(Capabilities::default());
    }
    let mut lines = Vec::new();
    conn.read_items("CAPA", |l| {
        // Real servers list a dozen; an endless list is a hostile server, not a capability.
        if lines.len() >= MAX_CAPA_LINES {
            return Err(format!("more than {MAX_CAPA_LINES} CAPA lines"));
        }
        lines.push(String::from_utf8_lossy(l).into_owned());
        Ok(())
    })
    .await?;
    Ok(Capabilities::from_lines(lines.iter().map(String::as_str)))
}
