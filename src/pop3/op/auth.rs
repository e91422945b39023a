//! Login: USER/PASS, APOP, or SASL AUTH. The one rule that matters most lives here: no
//! credential goes over a connection without TLS unless `allow_plaintext_auth` says so.

use crate::net::sasl::{oauth_error_summary, OAuthBearer, Plain, Redactor, SaslMechanism, XOAuth2};
use crate::pop3::conn::{sanitize, Conn};
use crate::pop3::error::{CodeText, Pop3Error};
use crate::pop3::response::{Capabilities, RespCode, Status, StatusLine};
use crate::pop3::{AuthMethod, ClientConfig, InitialResponse, OAuth2Login, OAuthMechanism};
use crate::secret::Secret;
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
            let mut mech = Plain::new(&cfg.username, &cfg.secret);
            sasl(conn, caps, &mut mech, InitialResponse::Auto).await
        }
        AuthMethod::XOAuth2 => {
            let mut mech = XOAuth2::new(&cfg.username, &cfg.secret);
            sasl(conn, caps, &mut mech, InitialResponse::Auto).await
        }
        AuthMethod::OAuth2(ref login) => oauth2(conn, caps, cfg, login).await,
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

/// The bearer mechanism `login` asks for; `auto` takes OAUTHBEARER when the server offers it.
fn bearer(
    caps: &Capabilities,
    login: &OAuth2Login,
    username: &str,
    token: &Secret,
) -> Box<dyn SaslMechanism> {
    match login.mechanism {
        OAuthMechanism::OAuthBearer => Box::new(OAuthBearer::new(username, token)),
        OAuthMechanism::Auto if caps.sasl("OAUTHBEARER") => {
            Box::new(OAuthBearer::new(username, token))
        }
        OAuthMechanism::Auto | OAuthMechanism::XOAuth2 => Box::new(XOAuth2::new(username, token)),
    }
}

/// An OAuth2 login. With a token source: a refused token is dropped from the cache and the
/// login tried once more with a fresh one on the same connection (a token revoked or expired
/// early); token endpoint failures come back as [`Pop3Error::OAuth2`].
async fn oauth2(
    conn: &mut Conn,
    caps: &Capabilities,
    cfg: &ClientConfig,
    login: &OAuth2Login,
) -> Result<(), Pop3Error> {
    let Some(source) = &login.token else {
        let mut mech = bearer(caps, login, &cfg.username, &cfg.secret);
        return sasl(conn, caps, mech.as_mut(), login.initial_response).await;
    };
    let oauth2_error = |source| Pop3Error::OAuth2 {
        server: conn.server.clone(),
        source,
    };
    let token = source
        .access_token(&cfg.username)
        .await
        .map_err(oauth2_error)?;
    let mut mech = bearer(caps, login, &cfg.username, &token);
    match sasl(conn, caps, mech.as_mut(), login.initial_response).await {
        Err(Pop3Error::AuthFailed { message, .. }) => {
            tracing::warn!(server = %conn.server, credential = %source.settings().name, reason = %message, "The server refused the OAuth2 token; getting a fresh one and trying once more");
            source.invalidate(&cfg.username, &token).await;
            let token =
                source
                    .access_token(&cfg.username)
                    .await
                    .map_err(|source| Pop3Error::OAuth2 {
                        server: conn.server.clone(),
                        source,
                    })?;
            let mut mech = bearer(caps, login, &cfg.username, &token);
            sasl(conn, caps, mech.as_mut(), login.initial_response)
                .await
                .map_err(|e| match e {
                    // A fresh token refused too: not expiry but access or identity.
                    Pop3Error::AuthFailed {
                        server,
                        code,
                        message,
                    } => Pop3Error::AuthFailed {
                        server,
                        code,
                        message: format!(
                            "{message}; a fresh OAuth2 token from credential {} was refused as \
                             well: check that the app may open this mailbox (Exchange: \
                             Add-MailboxPermission for its service principal; Google: \
                             domain-wide delegation) and that the token is for user {}",
                            source.settings().name,
                            cfg.username
                        ),
                    },
                    e => e,
                })
        }
        other => other,
    }
}

async fn sasl(
    conn: &mut Conn,
    caps: &Capabilities,
    mech: &mut dyn SaslMechanism,
    placement: InitialResponse,
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
    let fits = |ir: &str| match placement {
        InitialResponse::Auto => command.len() + 1 + ir.len() + 2 <= MAX_AUTH_LINE,
        InitialResponse::Always => true,
        InitialResponse::Never => false,
    };
    match pending.take() {
        Some(ir) if fits(&ir) => {
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
            crate::metrics::sasl_login(name, status.status == Status::Ok);
            return check(conn, &command, status, &redactor, server_said.as_deref());
        }
        let answer = match pending.take() {
            Some(ir) => ir,
            None => {
                let challenge = B64.decode(status.text.trim()).unwrap_or_default();
                // For XOAUTH2 and OAUTHBEARER this is the error JSON, which explains why;
                // scrubbed all the same.
                server_said = Some(sanitize(
                    &redactor.clean(&oauth_error_summary(&String::from_utf8_lossy(&challenge))),
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

    /// A POP3 server that plays `script`: each line it receives must equal the expectation
    /// (a `*` suffix matches a prefix), and it answers with the reply.
    async fn scripted(
        script: Vec<(&'static str, &'static str)>,
    ) -> (u16, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let (sock, _) = listener.accept().await.unwrap();
            let (r, mut w) = sock.into_split();
            let mut r = BufReader::new(r);
            w.write_all(b"+OK ready\r\n").await.unwrap();
            for (expect, reply) in script {
                let mut line = String::new();
                r.read_line(&mut line).await.unwrap();
                let got = line.trim_end();
                match expect.strip_suffix('*') {
                    Some(prefix) => assert!(got.starts_with(prefix), "{got:?} vs {expect:?}"),
                    None => assert_eq!(got, expect),
                }
                w.write_all(reply.as_bytes()).await.unwrap();
            }
        });
        (port, task)
    }

    fn oauth2_config(
        port: u16,
        mechanism: crate::pop3::OAuthMechanism,
        ir: crate::pop3::InitialResponse,
    ) -> ClientConfig {
        ClientConfig {
            secret: Secret::new("tok-123456789"),
            auth: AuthMethod::OAuth2(crate::pop3::OAuth2Login {
                mechanism,
                initial_response: ir,
                token: None,
            }),
            ..config(port)
        }
    }

    #[tokio::test]
    async fn never_sends_the_token_after_the_servers_plus() {
        use base64::Engine;
        let ir = base64::engine::general_purpose::STANDARD
            .encode("user=user\x01auth=Bearer tok-123456789\x01\x01");
        let ir: &'static str = Box::leak(ir.into_boxed_str());
        let (port, task) = scripted(vec![
            ("CAPA", "+OK\r\nSASL XOAUTH2 OAUTHBEARER\r\n.\r\n"),
            ("AUTH XOAUTH2", "+ \r\n"),
            (ir, "+OK logged in\r\n"),
            ("CAPA", "+OK\r\n.\r\n"),
        ])
        .await;
        let cfg = oauth2_config(
            port,
            crate::pop3::OAuthMechanism::XOAuth2,
            crate::pop3::InitialResponse::Never,
        );
        crate::pop3::connect(&cfg).await.unwrap();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn auto_prefers_oauthbearer_and_answers_its_error_challenge_with_0x01() {
        // {"status":"401","schemes":"bearer","scope":"mail"}
        let (port, task) = scripted(vec![
            ("CAPA", "+OK\r\nSASL XOAUTH2 OAUTHBEARER\r\n.\r\n"),
            (
                "AUTH OAUTHBEARER *",
                "+ eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIiwic2NvcGUiOiJtYWlsIn0=\r\n",
            ),
            ("AQ==", "-ERR [AUTH] Authentication failed.\r\n"),
        ])
        .await;
        let cfg = oauth2_config(
            port,
            crate::pop3::OAuthMechanism::Auto,
            crate::pop3::InitialResponse::Always,
        );
        let Err(e) = crate::pop3::connect(&cfg).await else {
            panic!("a `+ ` challenge is not +OK");
        };
        let text = e.to_string();
        assert_eq!(e.kind(), crate::pop3::ErrorKind::Auth, "{text}");
        assert!(
            text.contains("status 401") && text.contains("scope \"mail\""),
            "{text}"
        );
        assert!(!text.contains("tok-123456789"), "{text}");
        task.await.unwrap();
    }
}
