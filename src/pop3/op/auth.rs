//! Login: USER/PASS, APOP, or SASL AUTH. The one rule that matters most lives here: no
//! credential goes over a connection without TLS unless `allow_plaintext_auth` says so.

use super::sasl::{Plain, SaslMechanism, XOAuth2};
use crate::pop3::conn::{sanitize, Conn};
use crate::pop3::error::{CodeText, Pop3Error};
use crate::pop3::response::{Capabilities, RespCode, Status, StatusLine};
use crate::pop3::{AuthMethod, ClientConfig};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use md5::{Digest, Md5};

/// RFC 5034: an `AUTH` command with its initial response must fit in 255 octets.
const MAX_AUTH_LINE: usize = 255;
/// Challenge rounds before we give up on a chatty server.
const MAX_ROUNDS: usize = 8;

pub(crate) async fn authenticate(
    conn: &mut Conn,
    caps: &Capabilities,
    apop_stamp: Option<&str>,
    cfg: &ClientConfig,
) -> Result<(), Pop3Error> {
    if !conn.is_tls() && !cfg.allow_plaintext_auth {
        return Err(Pop3Error::PlaintextRefused {
            server: conn.server.clone(),
        });
    }
    let method = match cfg.auth {
        AuthMethod::Auto if caps.sasl("PLAIN") => AuthMethod::Plain,
        AuthMethod::Auto => AuthMethod::User,
        ref m => m.clone(),
    };
    match method {
        AuthMethod::Apop => apop(conn, apop_stamp, cfg).await,
        AuthMethod::Plain => {
            sasl(conn, caps, &mut Plain::new(&cfg.username, &cfg.secret), cfg).await
        }
        AuthMethod::XOAuth2 => {
            sasl(
                conn,
                caps,
                &mut XOAuth2::new(&cfg.username, &cfg.secret),
                cfg,
            )
            .await
        }
        AuthMethod::User | AuthMethod::Auto => user_pass(conn, cfg).await,
    }
}

async fn user_pass(conn: &mut Conn, cfg: &ClientConfig) -> Result<(), Pop3Error> {
    conn.send(&format!("USER {}", cfg.username), "USER").await?;
    let status = conn.read_status("USER").await?;
    check(conn, "USER", status, cfg, None)?;
    conn.send(&format!("PASS {}", cfg.secret.expose()), "PASS [redacted]")
        .await?;
    let status = conn.read_status("PASS").await?;
    check(conn, "PASS", status, cfg, None)
}

async fn apop(conn: &mut Conn, stamp: Option<&str>, cfg: &ClientConfig) -> Result<(), Pop3Error> {
    let Some(stamp) = stamp else {
        return Err(Pop3Error::AuthUnavailable {
            server: conn.server.clone(),
            mechanism: "APOP",
            reason: "the greeting has no <timestamp>".into(),
        });
    };
    let digest = hex::encode(Md5::digest(format!("{stamp}{}", cfg.secret.expose())));
    conn.send(
        &format!("APOP {} {digest}", cfg.username),
        "APOP [redacted]",
    )
    .await?;
    let status = conn.read_status("APOP").await?;
    check(conn, "APOP", status, cfg, None)
}

async fn sasl(
    conn: &mut Conn,
    caps: &Capabilities,
    mech: &mut dyn SaslMechanism,
    cfg: &ClientConfig,
) -> Result<(), Pop3Error> {
    let name = mech.name();
    // No CAPA at all: try anyway. A SASL list without our mechanism: say so clearly.
    let advertised = caps.sasl_mechanisms();
    if !advertised.is_empty() && !caps.sasl(name) {
        return Err(Pop3Error::AuthUnavailable {
            server: conn.server.clone(),
            mechanism: name,
            reason: format!("the server offers only {}", advertised.join(" ")),
        });
    }
    let command = format!("AUTH {name}");
    let mut pending = mech.initial_response().map(|ir| encode(&ir));
    match pending.take() {
        Some(ir) if command.len() + 1 + ir.len() + 2 <= MAX_AUTH_LINE => {
            conn.send(&format!("{command} {ir}"), &format!("{command} [redacted]"))
                .await?;
        }
        ir => {
            pending = ir;
            conn.send(&command, &command).await?;
        }
    }
    let mut server_said = None;
    for _ in 0..MAX_ROUNDS {
        let status = conn.read_status(&command).await?;
        if status.status != Status::Continue {
            return check(conn, &command, status, cfg, server_said.as_deref());
        }
        let answer = match pending.take() {
            Some(ir) => ir,
            None => {
                let challenge = B64.decode(status.text.trim()).unwrap_or_default();
                // For XOAUTH2 this is the error JSON; it carries no secret and explains why.
                server_said = Some(sanitize(&String::from_utf8_lossy(&challenge)));
                encode(&mech.respond(&challenge))
            }
        };
        conn.send(&answer, &format!("{command} response [redacted]"))
            .await?;
    }
    // Cancel (RFC 5034) and report; the server must answer -ERR.
    conn.send("*", "*").await?;
    let status = conn.read_status(&command).await?;
    check(conn, &command, status, cfg, Some("too many challenges"))
}

/// Base64 of a SASL message; an empty answer to a challenge becomes an empty line, as the
/// XOAUTH2 error exchange needs.
fn encode(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

/// Turns the answer to a login command into the error callers need: temporary codes are
/// "try later", everything else is "your credentials or config are wrong".
fn check(
    conn: &Conn,
    command: &str,
    status: StatusLine,
    cfg: &ClientConfig,
    server_said: Option<&str>,
) -> Result<(), Pop3Error> {
    if status.status == Status::Ok {
        return Ok(());
    }
    let mut message = sanitize(&status.text);
    let secret = cfg.secret.expose();
    if !secret.is_empty() {
        message = message.replace(secret, "[redacted]");
    }
    if let Some(said) = server_said {
        message = format!("{message} (server said: {said})");
    }
    let server = conn.server.clone();
    Err(match status.code {
        Some(code) if code.is_temporary() => Pop3Error::Temporary {
            server,
            command: command.to_owned(),
            code,
            message,
        },
        Some(RespCode::SysPerm) => Pop3Error::Refused {
            server,
            command: command.to_owned(),
            code: CodeText(Some(RespCode::SysPerm)),
            message,
        },
        code => Pop3Error::AuthFailed {
            server,
            code: CodeText(code),
            message,
        },
    })
}
