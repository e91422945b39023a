//! The states of a POP3 connection as types: [`Authorization`] (greeted, TLS settled, not
//! logged in) and [`Transaction`] (logged in, mailbox locked). Commands of one state do not
//! exist on the other, and the only way from the first to the second is a successful login.

use super::conn::{refusal, Conn};
use super::error::Pop3Error;
use super::op;
use super::response::{Capabilities, Status};
use super::{ClientConfig, TlsMode};
use crate::secret::Secret;

/// Greeted, TLS in place as configured, credentials not sent yet.
pub struct Authorization {
    conn: Conn,
    caps: Capabilities,
    /// The `<...>` timestamp of the greeting, needed by APOP.
    apop_stamp: Option<String>,
}

/// Logged in: the RFC 1939 TRANSACTION state. Dropping it without [`Transaction::quit`]
/// closes the connection, and the server rolls back every DELE.
pub struct Transaction {
    pub(crate) conn: Conn,
    pub(crate) caps: Capabilities,
    /// Commands in flight at once: `pipeline_window` with PIPELINING, else 1.
    pub(crate) window: usize,
    /// The server accepted `UTF8` (RFC 6856): it serves messages as stored.
    pub(crate) utf8: bool,
}

/// Connects, reads the greeting, settles TLS (implicit, or STLS), and logs in.
pub async fn connect(cfg: &ClientConfig) -> Result<Transaction, Pop3Error> {
    Authorization::open(cfg).await?.login(cfg).await
}

impl Authorization {
    /// Greeting, CAPA, and for `starttls` STLS then CAPA again (the first list was unprotected).
    pub async fn open(cfg: &ClientConfig) -> Result<Self, Pop3Error> {
        let connector = match cfg.tls {
            TlsMode::None => None,
            TlsMode::Implicit | TlsMode::StartTls => Some(
                crate::tls::shared_connector(
                    cfg.ca_file.as_deref(),
                    cfg.danger_accept_invalid_certs,
                )
                .map_err(|source| Pop3Error::TlsSetup {
                    server: cfg.server(),
                    source,
                })?,
            ),
        };
        let implicit = connector
            .as_deref()
            .filter(|_| cfg.tls == TlsMode::Implicit);
        let mut conn = Conn::open(cfg, implicit).await?;
        let greeting = conn.read_status("greeting").await?;
        if greeting.status != Status::Ok {
            return Err(refusal(&conn.server, "greeting", greeting));
        }
        let apop_stamp = apop_stamp(&greeting.text);
        let mut caps = op::capa::capa(&mut conn).await?;
        if cfg.tls == TlsMode::StartTls {
            if let Some(connector) = &connector {
                op::stls::stls(&mut conn, &caps, connector, &cfg.host).await?;
                caps = op::capa::capa(&mut conn).await?;
            }
        }
        Ok(Self {
            conn,
            caps,
            apop_stamp,
        })
    }

    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    /// Authenticates as configured; on success the mailbox is locked for this session.
    pub async fn login(mut self, cfg: &ClientConfig) -> Result<Transaction, Pop3Error> {
        let fresh;
        let cfg = match read_password_file(cfg).await? {
            Some(secret) => {
                fresh = ClientConfig {
                    secret,
                    ..cfg.clone()
                };
                &fresh
            }
            None => cfg,
        };
        let utf8_on = self.caps.has("UTF8") && utf8(&mut self.conn).await?;
        op::auth::authenticate(&mut self.conn, &self.caps, self.apop_stamp.as_deref(), cfg).await?;
        // Capabilities may change after login (RFC 2449); keep the old ones if CAPA fails.
        let after = op::capa::capa(&mut self.conn).await?;
        let caps = if after == Capabilities::default() {
            self.caps
        } else {
            after
        };
        let window = if caps.pipelining() {
            cfg.pipeline_window.max(1)
        } else {
            1
        };
        tracing::debug!(server = %self.conn.server, window, "Logged in to POP3 server");
        Ok(Transaction {
            conn: self.conn,
            caps,
            window,
            utf8: utf8_on,
        })
    }
}

impl Transaction {
    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    /// Message bodies (RETR, TOP) are read no faster than `throttle` allows, shared with every
    /// other session to the same host.
    pub fn throttle_reads(
        &mut self,
        throttle: Option<std::sync::Arc<crate::net::throttle::Throttle>>,
    ) {
        self.conn.throttle = throttle;
    }

    /// Whether `UTF8` mode is on: without it a server may serve a down-converted substitute
    /// of a message with raw UTF-8 headers ([`crate::pop3::substitute`]).
    pub fn utf8_mode(&self) -> bool {
        self.utf8
    }

    /// `host:port` of the server.
    pub fn server(&self) -> &str {
        &self.conn.server
    }

    /// When the server's TLS certificate expires (Unix seconds); `None` without TLS.
    pub fn certificate_expiry(&self) -> Option<i64> {
        self.conn.cert_not_after
    }
}

/// The current content of `password_file`, if the config names one (one trailing newline
/// trimmed, as at startup).
async fn read_password_file(cfg: &ClientConfig) -> Result<Option<Secret>, Pop3Error> {
    let Some(path) = &cfg.password_file else {
        return Ok(None);
    };
    let text = tokio::fs::read_to_string(path)
        .await
        .map_err(|source| Pop3Error::PasswordFile {
            server: cfg.server(),
            path: path.display().to_string(),
            source,
        })?;
    Ok(Some(Secret::new(text.trim_end_matches(['\n', '\r']))))
}

/// `UTF8` (RFC 6856), valid only before authentication: without it Courier serves a message
/// with raw UTF-8 headers as a down-converted substitute ("Cannot display Unicode content",
/// a new MIME boundary at every RETR), which we would archive, and delete the original. A
/// refusal is logged, not fatal: the server then serves what it always served.
async fn utf8(conn: &mut Conn) -> Result<bool, Pop3Error> {
    conn.send("UTF8", "UTF8").await?;
    let answer = conn.read_status("UTF8").await?;
    if answer.status == Status::Ok {
        tracing::debug!(server = %conn.server, "POP3 UTF8 mode on");
        return Ok(true);
    }
    tracing::warn!(server = %conn.server, answer = %answer.text, "POP3 server advertises UTF8 but refused it; messages with UTF-8 headers may arrive down-converted");
    Ok(false)
}

/// The `<...>` part of a greeting, if any (RFC 1939 section 7).
fn apop_stamp(text: &str) -> Option<String> {
    let start = text.find('<')?;
    let len = text[start..].find('>')?;
    let stamp = &text[start..=start + len];
    stamp.contains('@').then(|| stamp.to_owned())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn finds_apop_timestamp_in_greeting() {
        assert_eq!(
            apop_stamp("Dovecot ready. <1896.697170952@dbc.mtview.ca.us>").as_deref(),
            Some("<1896.697170952@dbc.mtview.ca.us>")
        );
        assert_eq!(apop_stamp("Dovecot ready."), None);
    }
}
