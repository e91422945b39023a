use crate::config::{load_str_with_env, SinkKind};
use std::path::Path;

const BASE: &str = "state:\n  path: /tmp/pb.db\nmailboxes:\n  - name: a\n    pop3:\n      host: h\n      username: u\n      password: p\n    schedule: { every: 60s }\n    sinks: [hook]\nsinks:\n  - name: hook\n    type: webhook\n";

fn load(extra: &str) -> Result<crate::config::Loaded, crate::config::ConfigError> {
    let text = format!("{BASE}{extra}");
    load_str_with_env(
        &text,
        Path::new("/etc/popbridge/config.yaml"),
        |name| match name {
            "HOOK_SECRET" => Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()),
            "HOOK_TOKEN" => Some("Bearer sekrit-token".into()),
            _ => None,
        },
    )
}

#[test]
fn webhook_sink_loads_with_secrets_from_the_environment() {
    let loaded = load(
        "    url: https://hooks.example.com/mail\n    format: raw\n    secret: [\"${HOOK_SECRET}\", whsec_c2Vjb25kLXNlY3JldC1rZXktZm9yLXRlc3Rz]\n    headers: { Authorization: \"${HOOK_TOKEN}\" }\n    timeout: 10s\n    concurrency: 2\n    ca_file: ca.pem\n",
    )
    .unwrap();
    let SinkKind::Webhook(w) = &loaded.config.sinks[0].kind else {
        panic!("expected a webhook sink")
    };
    assert_eq!(w.url.as_str(), "https://hooks.example.com/mail");
    assert_eq!(w.format, super::Format::Raw);
    assert_eq!(w.keys.len(), 2);
    assert_eq!(w.headers[0].1.expose(), "Bearer sekrit-token");
    assert_eq!(w.timeout, std::time::Duration::from_secs(10));
    assert_eq!(w.concurrency, 2);
    assert_eq!(
        w.ca_file.as_deref(),
        Some(Path::new("/etc/popbridge/ca.pem"))
    );
    let debug = format!("{:?}", loaded.config);
    assert!(
        !debug.contains("sekrit") && !debug.contains("MfKQ9r8"),
        "{debug}"
    );
}

#[test]
fn unknown_webhook_key_is_located() {
    let err = load("    url: https://h/x\n    retries: 3\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("config.yaml:15:5"), "{err}");
    assert!(err.contains("unknown field `retries`"), "{err}");
}

#[test]
fn bad_secret_and_url_are_clear_errors_without_the_value() {
    let err = load("    url: https://h/x\n    secret: not-base64-$$$\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("whsec_"), "{err}");
    assert!(!err.contains("not-base64"), "{err}");
    let err = load("    url: ftp://h/x\n").unwrap_err().to_string();
    assert!(err.contains("http or https"), "{err}");
}

#[test]
fn plain_http_off_this_machine_is_refused_without_showing_the_path() {
    let err = load("    url: http://hooks.example.com/t/sekrit-path?token=abc\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("sinks[hook]"), "{err}");
    assert!(err.contains("allow_plaintext: true"), "{err}");
    assert!(err.contains("http://hooks.example.com"), "{err}");
    assert!(
        !err.contains("sekrit-path") && !err.contains("abc"),
        "{err}"
    );
}

#[test]
fn plain_http_is_a_warning_on_loopback_or_when_allowed() {
    let loaded = load("    url: http://hooks.example.com/x\n    allow_plaintext: true\n").unwrap();
    assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
    assert!(
        loaded.warnings[0].starts_with("sinks[hook]: `url` http://hooks.example.com is plain http"),
        "{:?}",
        loaded.warnings
    );
    for url in [
        "http://127.0.0.1:8080/x",
        "http://localhost/x",
        "http://[::1]/x",
    ] {
        let loaded = load(&format!("    url: {url}\n")).unwrap();
        assert!(
            loaded.warnings.iter().any(|w| w.contains("unencrypted")),
            "{url}: {:?}",
            loaded.warnings
        );
    }
    assert!(load("    url: https://h/x\n").unwrap().warnings.is_empty());
}

#[test]
fn tls_verify_off_logs_the_endpoint_without_path_or_query() {
    use std::sync::{Arc, Mutex};
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let loaded =
        load("    url: https://hooks.example.com/t/sekrit-path?token=abc\n    tls_verify: false\n")
            .unwrap();
    let SinkKind::Webhook(w) = &loaded.config.sinks[0].kind else {
        panic!("expected a webhook sink")
    };
    tracing::subscriber::with_default(subscriber, || {
        super::service::build_client(w).unwrap();
    });
    let logged = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    assert!(logged.contains("tls_verify: false"), "{logged}");
    assert!(logged.contains("https://hooks.example.com"), "{logged}");
    assert!(
        !logged.contains("sekrit-path") && !logged.contains("token"),
        "{logged}"
    );
}
