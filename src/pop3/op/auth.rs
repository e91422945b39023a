//! Login: USER/PASS, APOP, or SASL AUTH. The one rule that matters most lives here: no
//! credential goes over a connection without TLS unless `allow_plaintext_auth` says so.

use super::sasl::{Plain, Redactor, SaslMechanism, XOAuth2};
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
        AuthMethod::Plain => sasl(conn, caps, &mut Plain::new(&cfg.username, &cfg.secret)).await,
        AuthMethod::XOAuth2 => {
            sasl(conn, caps, &mut XOAuth2::new(&cfg.username, &cfg.secret)).await
        }
        AuthMethod::User | AuthMethod::Auto => user_pass(conn, cfg).await,
    }
}

async fn user_pass(conn: &mut Conn, cfg: &ClientConfig) -> Result<(), Pop3Error> {
    conn.send(&format!("USER {}", cfg.username), "USER").await?;
    let status = conn.read_status("USER").await?;
    let redactor = Redactor::new(&cfg.secret);
    check(conn, "USER", status, &redactor, None)?;
    conn.send(&format!("PASS {}", cfg.secret.expose()), "PASS [redacted]")
        .await?;
    let status = conn.read_status("PASS").await?;
    check(conn, "PASS", status, &redactor, None)
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
    check(conn, "APOP", status, &Redactor::new(&cfg.secret), None)
}

async fn sasl(
    conn: &mut Conn,
    caps: &Capabilities,
    mech: &mut dyn SaslMechanism,
) -> Result<(), Pop3Error> {
    let name = mech.name();
    let mut redactor = Redactor::new(mech.secret());
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
    if let Some(ir) = &pending {
        redactor.sent(ir);
    }
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
        let status = read_status(conn, &command, &redactor).await?;
        if status.status != Status::Continue {
            return check(conn, &command, status, &redactor, server_said.as_deref());
        }
        let answer = match pending.take() {
            Some(ir) => ir,
            None => {
                let challenge = B64.decode(status.text.trim()).unwrap_or_default();
                // For XOAUTH2 this is the error JSON, which explains why; scrubbed all the same.
                server_said = Some(sanitize(
                    &redactor.clean(&String::from_utf8_lossy(&challenge)),
                ));
                encode(&mech.respond(&challenge))
            }
        };
        redactor.sent(&answer);
        conn.send(&answer, &format!("{command} response [redacted]"))
            .await?;
    }
    // Cancel (RFC 5034) and report; the server must answer -ERR.
    conn.send("*", "*").await?;
    let status = read_status(conn, &command, &redactor).await?;
    check(
        conn,
        &command,
        status,
        &redactor,
        Some("too many challenges"),
    )
}

/// The answer to an AUTH step; a malformed one is quoted in the error, so scrubbed first.
async fn read_status(
    conn: &mut Conn,
    command: &str,
    redactor: &Redactor,
) -> Result<StatusLine, Pop3Error> {
    conn.read_status(command).await.map_err(|e| match e {
        Pop3Error::Protocol {
            server,
            command,
            detail,
        } => Pop3Error::Protocol {
            server,
            command,
            detail: redactor.clean(&detail),
        },
        e => e,
    })
}

/// Base64 of a SASL message; an empty answer to a challenge becomes an empty line, as the
/// XOAUTH2 error exchange needs.
fn encode(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

/// Turns the answer to a login command into the error callers need: temporary codes are
/// "try later", everything else is "your credentials or config are wrong". The server's text
/// is scrubbed of what we sent before anything else sees it.
fn check(
    conn: &Conn,
    command: &str,
    status: StatusLine,
    redactor: &Redactor,
    server_said: Option<&str>,
) -> Result<(), Pop3Error> {
    if status.status == Status::Ok {
        return Ok(());
    }
    let mut message = sanitize(&redactor.clean(&status.text));
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use crate::pop3::{AuthMethod, ClientConfig, TlsMode};
    use crate::secret::Secret;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    /// A POP3 server that answers AUTH by echoing what it got (first `reply` is the prefix).
    async fn echoing_server(reply: &'static str) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (sock, _) = listener.accept().await.unwrap();
            let (r, mut w) = sock.into_split();
            let mut r = BufReader::new(r);
            w.write_all(b"+OK ready\r\n").await.unwrap();
            let mut line = String::new();
            while r.read_line(&mut line).await.unwrap_or(0) > 0 {
                let got = line.trim_end().to_owned();
                line.clear();
                let out = if got == "CAPA" {
                    "+OK\r\nSASL PLAIN\r\nUSER\r\n.\r\n".to_owned()
                } else if let Some(ir) = got.strip_prefix("AUTH PLAIN ") {
                    format!("{reply} {ir}\r\n")
                } else {
                    "-ERR no\r\n".to_owned()
                };
                if w.write_all(out.as_bytes()).await.is_err() {
                    break;
                }
            }
        });
        port
    }

    fn config(port: u16) -> ClientConfig {
        ClientConfig {
            host: "127.0.0.1".into(),
            port,
            tls: TlsMode::None,
            username: "user".into(),
            secret: Secret::new("hunter2-long-password"),
            password_file: None,
            auth: AuthMethod::Plain,
            ca_file: None,
            danger_accept_invalid_certs: false,
            allow_plaintext_auth: true,
            timeout: std::time::Duration::from_secs(5),
            max_line_length: 4096,
            max_message_bytes: 1 << 20,
            pipeline_window: 4,
        }
    }

    #[tokio::test]
    async fn an_initial_response_echoed_in_err_text_never_reaches_the_error() {
        use base64::Engine;
        let sent =
            base64::engine::general_purpose::STANDARD.encode("\0user\0hunter2-long-password");
        for reply in ["-ERR [AUTH] invalid response", "BOGUS echo"] {
            let port = echoing_server(reply).await;
            let Err(e) = crate::pop3::connect(&config(port)).await else {
                panic!("login must fail");
            };
            let text = format!("{e} {e:?}");
            assert!(!text.contains(&sent[..12]), "{reply}: {text}");
            assert!(!text.contains("hunter2"), "{reply}: {text}");
            assert!(text.contains("[redacted]"), "{reply}: {text}");
        }
    }
}
