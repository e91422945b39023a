//! HTTPS sinks against a real HTTPS server (Python's http.server with the ssl module) on
//! loopback: certificates are verified by default (webhook and S3), a private CA is trusted
//! through `ca_file`, and a receiver that requires a client certificate gets one through
//! `client_cert`/`client_key`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/certs.rs"]
mod certs;
mod support;

use popbridge::key::IdempotencyKey;
use popbridge::sink::webhook::{Format, WebhookSettings, WebhookSink};
use popbridge::sink::{Sink, SpooledMessage};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const SERVER: &str = r#"
import http.server, ssl, sys
cert, key, client_ca = sys.argv[1], sys.argv[2], sys.argv[3]
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()
    do_HEAD = do_GET = do_OPTIONS = do_POST
    def log_message(self, *args):
        pass
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
if client_ca != "-":
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(client_ca)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print(srv.server_address[1], flush=True)
srv.serve_forever()
"#;

/// An HTTPS receiver; killed when dropped.
struct Https {
    child: Child,
    url: String,
}

impl Drop for Https {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn https(leaf: &certs::Leaf, client_ca: Option<&Path>) -> Https {
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(SERVER)
        .arg(&leaf.cert)
        .arg(&leaf.key)
        .arg(
            client_ca
                .map(|p| p.to_path_buf())
                .unwrap_or_else(|| "-".into()),
        )
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 is needed for the HTTPS receiver");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line.trim().parse().expect("the receiver prints its port");
    Https {
        child,
        url: format!("https://localhost:{port}/hook"),
    }
}

/// A client certificate signed by `ca` (extended key usage clientAuth).
fn client_leaf(dir: &Path, ca: &certs::Ca) -> (PathBuf, PathBuf) {
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "client.key",
        "-out",
        "client.csr",
        "-subj",
        "/CN=popbridge-client",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "client.csr",
        "-CA",
        ca.cert.to_str().unwrap(),
        "-CAkey",
        ca.key.to_str().unwrap(),
        "-CAcreateserial",
        "-days",
        "30",
        "-out",
        "client.pem",
        "-extfile",
        "client.ext",
    ]);
    (dir.join("client.pem"), dir.join("client.key"))
}

fn settings(url: &str) -> WebhookSettings {
    WebhookSettings {
        url: url.parse().unwrap(),
        format: Format::Raw,
        keys: Vec::new(),
        headers: Vec::new(),
        timeout: Duration::from_secs(5),
        concurrency: 1,
        max_inline_attachment_bytes: 1024,
        include_raw: false,
        ca_file: None,
        client_identity: None,
        tls_verify: true,
        offload: None,
    }
}

fn message(dir: &Path) -> SpooledMessage {
    let path = dir.join("m.eml");
    std::fs::write(&path, b"Subject: tls\r\n\r\nbody\r\n").unwrap();
    SpooledMessage {
        mailbox: "alice".into(),
        uidl: "u1".into(),
        path,
        size: 22,
        sha256: "00".into(),
        fetched_at: chrono::Utc::now(),
        seen_before: false,
        owner: Default::default(),
        params: Default::default(),
    }
}

#[tokio::test]
async fn an_untrusted_certificate_is_refused_and_ca_file_trusts_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = certs::make_ca(dir.path(), "ca");
    let leaf = certs::make_leaf(dir.path(), &ca, "server");
    let server = https(&leaf, None);
    let key = IdempotencyKey::derive("alice", "u1");
    let m = message(dir.path());

    // A token in the query string must not end up in errors (and so in logs).
    let with_token = format!("{}?token=s3cr3t-t0ken", server.url);
    let sink = WebhookSink::new("hook", settings(&with_token)).unwrap();
    let err = sink.deliver(&m, &key).await.unwrap_err();
    assert!(!err.to_string().contains("s3cr3t-t0ken"), "{err}");
    assert!(err.is_retryable(), "the message stays on the server: {err}");
    assert!(
        err.to_string().contains("certificate verify failed"),
        "the error says why: {err}"
    );

    let mut trusted = settings(&server.url);
    trusted.ca_file = Some(ca.cert.clone());
    let sink = WebhookSink::new("hook", trusted).unwrap();
    let receipt = sink.deliver(&m, &key).await.unwrap();
    assert!(receipt.detail.starts_with("HTTP 200"), "{receipt:?}");
}

#[tokio::test]
async fn a_receiver_that_requires_a_client_certificate_gets_ours() {
    let dir = tempfile::tempdir().unwrap();
    let ca = certs::make_ca(dir.path(), "ca");
    let leaf = certs::make_leaf(dir.path(), &ca, "server");
    let (client_cert, client_key) = client_leaf(dir.path(), &ca);
    let server = https(&leaf, Some(&ca.cert));
    let key = IdempotencyKey::derive("alice", "u1");
    let m = message(dir.path());

    let mut without = settings(&server.url);
    without.ca_file = Some(ca.cert.clone());
    let sink = WebhookSink::new("hook", without.clone()).unwrap();
    assert!(
        sink.deliver(&m, &key).await.is_err(),
        "no client certificate, no delivery"
    );

    let mut with = without;
    with.client_identity = Some((client_cert, client_key));
    let sink = WebhookSink::new("hook", with).unwrap();
    let receipt = sink.deliver(&m, &key).await.unwrap();
    assert!(receipt.detail.starts_with("HTTP 200"), "{receipt:?}");
}

#[tokio::test]
async fn the_s3_sink_refuses_an_untrusted_certificate_too() {
    use popbridge::sink::s3::{S3Settings, S3Sink};
    let dir = tempfile::tempdir().unwrap();
    let ca = certs::make_ca(dir.path(), "ca");
    let leaf = certs::make_leaf(dir.path(), &ca, "server");
    let server = https(&leaf, None);
    let endpoint = server.url.trim_end_matches("/hook").parse().unwrap();
    let creds = support::s3::creds(support::s3::ACCESS_KEY, support::s3::SECRET_KEY);
    let sink = S3Sink::new("lake", S3Settings::new(endpoint, "mail", Some(creds))).unwrap();
    let err = sink
        .deliver(&message(dir.path()), &IdempotencyKey::derive("alice", "u1"))
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "the message stays on the server: {err}");
    assert!(
        err.to_string().contains("certificate verify failed"),
        "the error says why: {err}"
    );
    assert!(!err.to_string().contains(support::s3::SECRET_KEY));
}
