//! STLS (RFC 2595): upgrade to TLS before any credential is sent. If the server does not
//! offer it we stop; falling back to plaintext would hand the password to whoever strips it.

use crate::pop3::conn::Conn;
use crate::pop3::error::Pop3Error;
use crate::pop3::response::Capabilities;

pub(crate) async fn stls(
    conn: &mut Conn,
    caps: &Capabilities,
    connector: &tokio_native_tls::TlsConnector,
    host: &str,
) -> Result<(), Pop3Error> {
    if !caps.stls() {
        return Err(Pop3Error::StlsNotAdvertised {
            server: conn.server.clone(),
        });
    }
    conn.send("STLS", "STLS").await?;
    match conn.expect_ok("STLS").await {
        Ok(_) => {}
        Err(Pop3Error::Refused {
            server, message, ..
        }) => return Err(Pop3Error::StlsRefused { server, message }),
        Err(e) => return Err(e),
    }
    conn.handshake(connector, host).await
}
