//! The POP3 client against scripted in-process servers that misbehave in ways a real server
//! won't: disconnects, slow drips, endless lines, lying sizes, missing TLS. Each server is one
//! connection on 127.0.0.1:0 and returns every byte the client sent, so tests can assert what
//! was (never) sent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use popbridge::pop3::{
    self, AuthMethod, ClientConfig, ErrorKind, Pop3Error, RespCode, Retrieved, TlsMode, Transaction,
};
use popbridge::secret::Secret;
use sha2::{Digest, Sha256};
use std::future::Future;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

const PASSWORD: &str = "s3cret-pw";
const CAPS: &[u8] = b"+OK\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\nUSER\r\n.\r\n";

/// A byte stream the scripted server can talk over: TCP, or TLS after STLS.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// The server side of one connection.
struct Peer {
    stream: Box<dyn Io>,
    /// Every byte the client sent.
    seen: Vec<u8>,
    /// Bytes received but not yet returned as lines.
    pending: Vec<u8>,
}

impl Peer {
    async fn send(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes).await;
    }

    /// One line from the client, without CRLF; empty string if the client closed.
    async fn line(&mut self) -> String {
        loop {
            if let Some(i) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=i).collect();
                return String::from_utf8_lossy(&line).trim_end().to_owned();
            }
            let mut buf = [0u8; 1024];
            match self.stream.read(&mut buf).await {
                Ok(0) | Err(_) => return String::new(),
                Ok(n) => {
                    self.seen.extend_from_slice(&buf[..n]);
                    self.pending.extend_from_slice(&buf[..n]);
                }
            }
        }
    }

    async fn expect(&mut self, want: &str) {
        let got = self.line().await;
        assert_eq!(got, want, "server expected {want:?}");
    }

    /// Asserts the client's next line is `want`, then sends `reply`: one exchange of a script.
    async fn answer(&mut self, want: &str, reply: &[u8]) {
        self.expect(want).await;
        self.send(reply).await;
    }

    /// The greeting and the answer to the first CAPA (`caps`, or an `-ERR`).
    async fn greet(&mut self, caps: &[u8]) {
        self.send(b"+OK ready\r\n").await;
        self.answer("CAPA", caps).await;
    }

    /// Greeting, CAPA, USER/PASS, CAPA: the usual way into the transaction state.
    async fn login(&mut self) {
        self.greet(CAPS).await;
        self.answer("USER alice", b"+OK\r\n").await;
        self.answer(&format!("PASS {PASSWORD}"), b"+OK logged in\r\n")
            .await;
        self.answer("CAPA", CAPS).await;
    }

    /// Wraps the connection in TLS (after STLS, or at once for implicit TLS).
    async fn start_tls(&mut self, acceptor: &tokio_native_tls::TlsAcceptor) -> Result<(), String> {
        let (dummy, _) = tokio::io::duplex(1);
        let tcp = std::mem::replace(&mut self.stream, Box::new(dummy));
        let tls = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
        self.stream = Box::new(tls);
        Ok(())
    }

    /// Reads until the client closes, so `seen` is complete.
    async fn drain(&mut self) {
        while !self.line().await.is_empty() {}
    }
}

/// Starts a one-connection server running `script`; the handle yields what the client sent.
async fn serve<F, Fut>(script: F) -> (ClientConfig, JoinHandle<String>)
where
    F: FnOnce(Peer) -> Fut + Send + 'static,
    Fut: Future<Output = Peer> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let peer = script(Peer {
            stream: Box::new(stream),
            seen: Vec::new(),
            pending: Vec::new(),
        })
        .await;
        String::from_utf8_lossy(&peer.seen).into_owned()
    });
    (config(port), handle)
}

/// [`serve`], then a session logged in with the default [`config`].
async fn connected<F, Fut>(script: F) -> (Transaction, JoinHandle<String>)
where
    F: FnOnce(Peer) -> Fut + Send + 'static,
    Fut: Future<Output = Peer> + Send,
{
    let (cfg, server) = serve(script).await;
    (pop3::connect(&cfg).await.unwrap(), server)
}

/// Closes the session without QUIT and waits for the server's script to end.
async fn close(t: Transaction, server: JoinHandle<String>) {
    drop(t);
    server.await.unwrap();
}

fn config(port: u16) -> ClientConfig {
    ClientConfig {
        host: "127.0.0.1".into(),
        port,
        tls: TlsMode::None,
        username: "alice".into(),
        secret: Secret::new(PASSWORD),
        password_file: None,
        auth: AuthMethod::Auto,
        ca_file: None,
        danger_accept_invalid_certs: false,
        allow_plaintext_auth: true,
        timeout: Duration::from_secs(1),
        max_line_length: 1000,
        max_message_bytes: 1 << 20,
        pipeline_window: 4,
    }
}

/// Runs RETR for `msgnos` and collects what arrived on the channel plus the call's result.
async fn retr(
    t: &mut Transaction,
    msgnos: &[u32],
) -> (
    Vec<(u32, Result<Retrieved, Pop3Error>)>,
    Result<(), Pop3Error>,
) {
    let dir = tempfile::tempdir().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    let collect = async {
        let mut got = Vec::new();
        while let Some(item) = rx.recv().await {
            got.push(item);
        }
        got
    };
    let (result, got) = tokio::join!(t.retr_to_spool(msgnos, dir.path(), tx), collect);
    // Keep the files readable after the tempdir goes: copy them out of the dir first.
    let got = got
        .into_iter()
        .map(|(n, r)| {
            (
                n,
                r.map(|m| {
                    let copy = tempfile::NamedTempFile::new().unwrap();
                    std::fs::copy(&m.file, copy.path()).unwrap();
                    Retrieved {
                        file: copy.into_temp_path(),
                        ..m
                    }
                }),
            )
        })
        .collect();
    (got, result)
}

#[tokio::test]
async fn pipelines_retr_and_trusts_terminator_not_list_size() {
    let (mut t, server) = connected(|mut p| async move {
        p.login().await;
        p.expect("LIST").await;
        // Sizes that lie: message 1 is much longer than 10 octets.
        p.send(b"+OK\r\n1 10\r\n2 999999\r\n.\r\n").await;
        // Pipelining: both commands arrive before any answer, or this test times out.
        p.expect("RETR 1").await;
        p.expect("RETR 2").await;
        p.send(
            b"+OK\r\nSubject: x\r\n\r\n..dot\r\n\x00\xff\xfe 8bit\r\nno newline at end\r\n.\r\n",
        )
        .await;
        p.send(b"+OK\r\n.\r\n").await;
        p.answer("QUIT", b"+OK bye\r\n").await;
        p.drain().await;
        p
    })
    .await;
    assert!(t.capabilities().pipelining() && t.capabilities().uidl());
    assert_eq!(t.list().await.unwrap(), vec![(1, 10), (2, 999999)]);
    let (got, result) = retr(&mut t, &[1, 2]).await;
    result.unwrap();
    assert_eq!(got.len(), 2);
    let want: &[u8] = b"Subject: x\r\n\r\n.dot\r\n\x00\xff\xfe 8bit\r\nno newline at end\r\n";
    let (n, m) = &got[0];
    let m = m.as_ref().unwrap();
    assert_eq!(*n, 1);
    assert_eq!(std::fs::read(&m.file).unwrap(), want);
    assert_eq!(m.size, want.len() as u64);
    assert_eq!(m.sha256, hex::encode(Sha256::digest(want)));
    let (n, m) = &got[1];
    assert_eq!((*n, m.as_ref().unwrap().size), (2, 0));
    t.quit().await.unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn one_retr_error_does_not_stop_the_others() {
    let (mut t, server) = connected(|mut p| async move {
        p.login().await;
        for _ in 0..3 {
            let cmd = p.line().await;
            match cmd.as_str() {
                "RETR 2" => p.send(b"-ERR no such message\r\n").await,
                _ => p.send(b"+OK\r\nbody\r\n.\r\n").await,
            }
        }
        p.drain().await;
        p
    })
    .await;
    let (got, result) = retr(&mut t, &[1, 2, 3]).await;
    result.unwrap();
    let outcome: Vec<(u32, bool)> = got.iter().map(|(n, r)| (*n, r.is_ok())).collect();
    assert_eq!(outcome, vec![(1, true), (2, false), (3, true)]);
    let err = got[1].1.as_ref().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Protocol);
    assert!(err.to_string().contains("RETR 2"));
    close(t, server).await;
}

#[tokio::test]
async fn disconnect_mid_retr_is_a_connection_error() {
    let (mut t, server) = connected(|mut p| async move {
        p.login().await;
        p.expect("RETR 1").await;
        p.expect("RETR 2").await;
        p.send(b"+OK\r\nfirst\r\n.\r\n+OK\r\nhalf of the sec").await;
        p
    })
    .await;
    let (got, result) = retr(&mut t, &[1, 2]).await;
    assert_eq!(got.len(), 1, "the complete first message is delivered");
    assert!(got[0].1.is_ok());
    let err = result.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Network, "{err}");
    assert!(err.is_retryable());
    // The session is unusable afterwards and says so rather than misreading responses.
    assert_eq!(t.noop().await.unwrap_err().kind(), ErrorKind::Network);
    server.await.unwrap();
}

#[tokio::test]
async fn works_when_server_drips_one_byte_at_a_time() {
    let (mut t, server) = connected(|mut p| async move {
        let script: &[&[u8]] = &[b"+OK ready\r\n", CAPS];
        for (i, chunk) in script.iter().enumerate() {
            if i > 0 {
                p.line().await;
            }
            for b in chunk.iter() {
                p.send(&[*b]).await;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        p.answer("USER alice", b"+OK\r\n").await;
        p.line().await;
        p.send(b"+OK\r\n").await;
        p.answer("CAPA", b"-ERR\r\n").await;
        p.expect("RETR 1").await;
        for b in b"+OK\r\n..a\r\nb\r\n.\r\n" {
            p.send(&[*b]).await;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        p.drain().await;
        p
    })
    .await;
    let (got, result) = retr(&mut t, &[1]).await;
    result.unwrap();
    let m = got[0].1.as_ref().unwrap();
    assert_eq!(std::fs::read(&m.file).unwrap(), b".a\r\nb\r\n");
    close(t, server).await;
}

#[tokio::test]
async fn drip_slower_than_timeout_times_out() {
    let (mut cfg, server) = serve(|mut p| async move {
        p.send(b"+OK rea").await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        p.send(b"dy\r\n").await;
        p
    })
    .await;
    cfg.timeout = Duration::from_millis(300);
    let err = pop3::connect(&cfg).await.err().unwrap();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(err.to_string().contains(&cfg.server()));
    server.await.unwrap();
}

#[tokio::test]
async fn no_greeting_times_out() {
    let (mut cfg, server) = serve(|p| async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        p
    })
    .await;
    cfg.timeout = Duration::from_millis(300);
    let start = Instant::now();
    let err = pop3::connect(&cfg).await.err().unwrap();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(err.is_retryable());
    assert!(start.elapsed() < Duration::from_millis(1200));
    server.await.unwrap();
}

/// Sends `prefix` then `x` forever (until the client hangs up).
async fn endless(p: &mut Peer, prefix: &[u8]) {
    p.send(prefix).await;
    let junk = [b'x'; 4096];
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if p.stream.write_all(&junk).await.is_err() {
            return;
        }
    }
    panic!("client kept reading an endless line");
}

#[tokio::test]
async fn endless_greeting_line_is_rejected() {
    let (cfg, server) = serve(|mut p| async move {
        endless(&mut p, b"+OK ").await;
        p
    })
    .await;
    let err = pop3::connect(&cfg).await.err().unwrap();
    assert_eq!(err.kind(), ErrorKind::Protocol, "{err}");
    assert!(err.to_string().contains("longer than 1000"), "{err}");
    server.await.unwrap();
}

#[tokio::test]
async fn endless_line_in_message_is_rejected() {
    let (mut t, server) = connected(|mut p| async move {
        p.login().await;
        p.expect("RETR 1").await;
        endless(&mut p, b"+OK\r\nSubject: ").await;
        p
    })
    .await;
    let (got, result) = retr(&mut t, &[1]).await;
    assert!(got.is_empty());
    let err = result.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Protocol, "{err}");
    assert!(
        err.to_string().contains("larger than max_message_bytes"),
        "{err}"
    );
    close(t, server).await;
}

#[tokio::test]
async fn one_dele_error_does_not_stop_the_others() {
    let (mut t, server) = connected(|mut p| async move {
        p.login().await;
        for _ in 0..3 {
            match p.line().await.as_str() {
                "DELE 2" => p.send(b"-ERR [SYS/TEMP] busy\r\n").await,
                _ => p.send(b"+OK marked\r\n").await,
            }
        }
        p.drain().await;
        p
    })
    .await;
    let results = t.dele_many(&[1, 2, 3]).await.unwrap();
    assert_eq!(results.len(), 3);
    assert!(results[0].1.is_ok() && results[2].1.is_ok());
    let err = results[1].1.as_ref().unwrap_err();
    assert_eq!((results[1].0, err.kind()), (2, ErrorKind::Temporary));
    close(t, server).await;
}

#[tokio::test]
async fn quit_without_ok_is_an_error() {
    let (mut t, server) = connected(|mut p| async move {
        p.login().await;
        p.answer("DELE 1", b"+OK\r\n").await;
        p.expect("QUIT").await;
        p
    })
    .await;
    assert!(t.dele_many(&[1]).await.unwrap()[0].1.is_ok());
    let err = t.quit().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Network, "{err}");
    server.await.unwrap();
}

#[tokio::test]
async fn uidl_unsupported_is_none() {
    let (mut t, server) = connected(|mut p| async move {
        p.login().await;
        p.answer("UIDL", b"-ERR unknown command\r\n").await;
        p.answer("UIDL", b"+OK\r\n1 abc\r\n2 def\r\n.\r\n").await;
        p.answer("STAT", b"+OK 2 320\r\n").await;
        p.drain().await;
        p
    })
    .await;
    assert_eq!(t.uidl().await.unwrap(), None);
    assert_eq!(
        t.uidl().await.unwrap(),
        Some(vec![(1, "abc".to_owned()), (2, "def".to_owned())])
    );
    assert_eq!(t.stat().await.unwrap(), (2, 320));
    close(t, server).await;
}

#[tokio::test]
async fn plaintext_without_allow_refuses_before_sending_password() {
    let (mut cfg, server) = serve(|mut p| async move {
        p.greet(CAPS).await;
        p.drain().await;
        p
    })
    .await;
    cfg.allow_plaintext_auth = false;
    let err = pop3::connect(&cfg).await.err().unwrap();
    assert!(matches!(err, Pop3Error::PlaintextRefused { .. }), "{err}");
    assert!(!err.is_retryable());
    let seen = server.await.unwrap();
    assert!(!seen.contains("PASS") && !seen.contains("USER") && !seen.contains(PASSWORD));
}

#[tokio::test]
async fn starttls_without_stls_advertised_is_an_error() {
    let (mut cfg, server) = serve(|mut p| async move {
        p.greet(CAPS).await;
        p.drain().await;
        p
    })
    .await;
    cfg.tls = TlsMode::StartTls;
    let err = pop3::connect(&cfg).await.err().unwrap();
    assert!(matches!(err, Pop3Error::StlsNotAdvertised { .. }), "{err}");
    assert_eq!(err.kind(), ErrorKind::Tls);
    let seen = server.await.unwrap();
    assert_eq!(seen, "CAPA\r\n", "nothing but CAPA may be sent");
}

#[tokio::test]
async fn wrong_password_is_final_but_in_use_is_temporary() {
    for (reply, kind, code) in [
        (
            &b"-ERR [AUTH] Authentication failed.\r\n"[..],
            ErrorKind::Auth,
            RespCode::Auth,
        ),
        (
            b"-ERR [IN-USE] mailbox locked\r\n",
            ErrorKind::Temporary,
            RespCode::InUse,
        ),
        (
            b"-ERR [LOGIN-DELAY] wait\r\n",
            ErrorKind::Temporary,
            RespCode::LoginDelay,
        ),
        (
            b"-ERR [SYS/TEMP] later\r\n",
            ErrorKind::Temporary,
            RespCode::SysTemp,
        ),
    ] {
        let (cfg, server) = serve(move |mut p| async move {
            p.greet(CAPS).await;
            p.answer("USER alice", b"+OK\r\n").await;
            p.line().await;
            p.send(reply).await;
            p.drain().await;
            p
        })
        .await;
        let err = pop3::connect(&cfg).await.err().unwrap();
        assert_eq!(err.kind(), kind, "{err}");
        assert_eq!(err.is_retryable(), kind == ErrorKind::Temporary);
        assert_eq!(err.resp_code(), Some(&code));
        assert!(!format!("{err} {err:?}").contains(PASSWORD));
        server.await.unwrap();
    }
}

#[tokio::test]
async fn auto_auth_uses_sasl_plain_when_advertised() {
    let (t, server) = connected(|mut p| async move {
        p.greet(b"+OK\r\nSASL PLAIN LOGIN\r\nUSER\r\n.\r\n").await;
        // base64("\0alice\0s3cret-pw")
        p.answer("AUTH PLAIN AGFsaWNlAHMzY3JldC1wdw==", b"+OK\r\n")
            .await;
        p.answer("CAPA", b"-ERR\r\n").await;
        p.drain().await;
        p
    })
    .await;
    assert!(!t.capabilities().pipelining());
    close(t, server).await;
}

#[tokio::test]
async fn xoauth2_failure_answers_challenge_with_empty_line() {
    let token = "t".repeat(300);
    let (mut cfg, server) = serve(|mut p| async move {
        p.greet(b"+OK\r\nSASL PLAIN XOAUTH2\r\n.\r\n").await;
        // Too long for one 255-octet AUTH line: the initial response waits for `+`.
        p.answer("AUTH XOAUTH2", b"+ \r\n").await;
        assert!(!p.line().await.is_empty());
        // {"status":"401","schemes":"bearer"}
        p.send(b"+ eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIn0=\r\n")
            .await;
        p.answer("", b"-ERR Authentication failure\r\n").await;
        p.drain().await;
        p
    })
    .await;
    cfg.auth = AuthMethod::XOAuth2;
    cfg.secret = Secret::new(token.clone());
    let err = pop3::connect(&cfg).await.err().unwrap();
    assert_eq!(err.kind(), ErrorKind::Auth, "{err}");
    let text = err.to_string();
    assert!(text.contains("401") && !text.contains(&token), "{text}");
    server.await.unwrap();
}

#[tokio::test]
async fn top_keeps_at_most_max_bytes_and_stays_in_step() {
    let (mut t, server) = connected(|mut p| async move {
        p.login().await;
        p.expect("TOP 1 0").await;
        p.send(b"+OK\r\nSubject: long header line\r\nFrom: a\r\n\r\n.\r\n")
            .await;
        p.answer("NOOP", b"+OK\r\n").await;
        p.drain().await;
        p
    })
    .await;
    assert_eq!(t.top(1, 0, 7).await.unwrap(), b"Subject");
    t.noop().await.unwrap();
    close(t, server).await;
}

/// A private CA and a `localhost` leaf signed by it, made with the openssl CLI (as LAB.md
/// advises: a self-signed certificate used directly is rejected by some stacks).
struct Pki {
    dir: tempfile::TempDir,
    acceptor: tokio_native_tls::TlsAcceptor,
}

impl Pki {
    fn ca_file(&self) -> std::path::PathBuf {
        self.dir.path().join("ca.pem")
    }
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir.path())
            .output()
            .expect("openssl CLI is needed for TLS tests");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=popbridge test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "leaf.key",
        "-out",
        "leaf.csr",
        "-subj",
        "/CN=localhost",
    ]);
    std::fs::write(
        dir.path().join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "leaf.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    let cert = std::fs::read(dir.path().join("leaf.pem")).unwrap();
    let key = std::fs::read(dir.path().join("leaf.key")).unwrap();
    let identity = native_tls::Identity::from_pkcs8(&cert, &key).unwrap();
    let acceptor = native_tls::TlsAcceptor::new(identity).unwrap().into();
    Pki { dir, acceptor }
}

const STLS_CAPS: &[u8] = b"+OK\r\nUSER\r\nSTLS\r\nSASL PLAIN\r\n.\r\n";

#[tokio::test]
async fn starttls_with_private_ca_sends_password_only_encrypted() {
    let pki = pki();
    let acceptor = pki.acceptor.clone();
    let (mut cfg, server) = serve(move |mut p| async move {
        p.greet(STLS_CAPS).await;
        p.answer("STLS", b"+OK begin TLS\r\n").await;
        let plaintext = p.seen.clone();
        p.start_tls(&acceptor).await.unwrap();
        p.answer("CAPA", b"+OK\r\nUSER\r\nSASL PLAIN\r\n.\r\n")
            .await;
        p.answer("AUTH PLAIN AGFsaWNlAHMzY3JldC1wdw==", b"+OK\r\n")
            .await;
        p.answer("CAPA", b"+OK\r\nPIPELINING\r\n.\r\n").await;
        p.answer("QUIT", b"+OK\r\n").await;
        p.seen = plaintext;
        p
    })
    .await;
    cfg.host = "localhost".into();
    cfg.tls = TlsMode::StartTls;
    cfg.allow_plaintext_auth = false;
    cfg.ca_file = Some(pki.ca_file());
    let t = pop3::connect(&cfg).await.unwrap();
    assert!(t.capabilities().pipelining());
    t.quit().await.unwrap();
    assert_eq!(
        server.await.unwrap(),
        "CAPA\r\nSTLS\r\n",
        "only CAPA and STLS in the clear"
    );
}

#[tokio::test]
async fn implicit_tls_rejects_untrusted_certificate() {
    let pki = pki();
    let acceptor = pki.acceptor.clone();
    let (mut cfg, server) = serve(move |mut p| async move {
        let _ = p.start_tls(&acceptor).await;
        p
    })
    .await;
    cfg.host = "localhost".into();
    cfg.tls = TlsMode::Implicit;
    let err = pop3::connect(&cfg).await.err().unwrap();
    assert!(matches!(err, Pop3Error::TlsHandshake { .. }), "{err}");
    assert_eq!(err.kind(), ErrorKind::Tls);
    assert!(!server.await.unwrap().contains(PASSWORD));
}

#[tokio::test]
async fn implicit_tls_with_private_ca_works() {
    let pki = pki();
    let acceptor = pki.acceptor.clone();
    let (mut cfg, server) = serve(move |mut p| async move {
        p.start_tls(&acceptor).await.unwrap();
        p.login().await;
        p.drain().await;
        p
    })
    .await;
    cfg.host = "localhost".into();
    cfg.tls = TlsMode::Implicit;
    cfg.allow_plaintext_auth = false;
    cfg.ca_file = Some(pki.ca_file());
    let t = pop3::connect(&cfg).await.unwrap();
    assert!(t.capabilities().uidl());
    close(t, server).await;
}

#[tokio::test]
async fn data_injected_before_tls_handshake_is_refused() {
    let (mut cfg, server) = serve(|mut p| async move {
        p.greet(STLS_CAPS).await;
        p.expect("STLS").await;
        // A man in the middle appends a plaintext answer to the STLS reply.
        p.send(b"+OK begin TLS\r\n+OK logged in\r\n").await;
        p.drain().await;
        p
    })
    .await;
    cfg.tls = TlsMode::StartTls;
    let err = pop3::connect(&cfg).await.err().unwrap();
    // Normally caught before the handshake; if the bytes arrive split, the handshake fails.
    assert!(
        matches!(
            err,
            Pop3Error::StlsInjection { .. } | Pop3Error::TlsHandshake { .. }
        ),
        "{err}"
    );
    assert!(!server.await.unwrap().contains("PASS"));
}

/// Answers RETR 1 and RETR 2 (pipelined), then expects NOOP and nothing else in between.
async fn two_retrs_then_noop(mut p: Peer) -> Peer {
    p.login().await;
    p.expect("RETR 1").await;
    p.expect("RETR 2").await;
    p.send(b"+OK\r\none\r\n.\r\n+OK\r\ntwo\r\n.\r\n").await;
    p.answer("NOOP", b"+OK\r\n").await;
    p.drain().await;
    p
}

#[tokio::test]
async fn spool_failure_fails_that_message_and_keeps_session_in_step() {
    let (mut t, server) = connected(two_retrs_then_noop).await;
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    let missing = std::path::Path::new("/nonexistent/spool");
    t.retr_to_spool(&[1, 2], missing, tx).await.unwrap();
    for n in [1, 2] {
        let (got, r) = rx.recv().await.unwrap();
        let err = r.unwrap_err();
        assert_eq!((got, err.kind()), (n, ErrorKind::Spool));
        assert!(err.to_string().contains("/nonexistent/spool"));
    }
    t.noop().await.unwrap();
    close(t, server).await;
}

#[tokio::test]
async fn dropped_receiver_stops_new_retr_but_reads_those_in_flight() {
    // RETR 3 must never come: the next command is NOOP.
    let (mut cfg, server) = serve(two_retrs_then_noop).await;
    cfg.pipeline_window = 2;
    let mut t = pop3::connect(&cfg).await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    drop(rx);
    let dir = tempfile::tempdir().unwrap();
    t.retr_to_spool(&[1, 2, 3], dir.path(), tx).await.unwrap();
    t.noop().await.unwrap();
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "no files left behind"
    );
    close(t, server).await;
}

#[tokio::test]
async fn without_pipelining_sends_one_command_at_a_time() {
    let (mut t, server) = connected(|mut p| async move {
        p.greet(b"-ERR no CAPA here\r\n").await;
        p.answer("USER alice", b"+OK\r\n").await;
        p.line().await;
        p.send(b"+OK\r\n").await;
        p.answer("CAPA", b"-ERR\r\n").await;
        for n in 1..=3 {
            p.expect(&format!("DELE {n}")).await;
            // Nothing else may be waiting: the client must wait for this answer.
            let mut probe = [0u8; 64];
            let early =
                tokio::time::timeout(Duration::from_millis(50), p.stream.read(&mut probe)).await;
            assert!(
                p.pending.is_empty() && early.is_err(),
                "client pipelined without PIPELINING"
            );
            p.send(b"+OK\r\n").await;
        }
        p.drain().await;
        p
    })
    .await;
    assert!(!t.capabilities().pipelining());
    let results = t.dele_many(&[1, 2, 3]).await.unwrap();
    assert!(results.iter().all(|(_, r)| r.is_ok()));
    close(t, server).await;
}
