//! What the tests of a real IMAP target share: a proxy that withholds the answer to the first
//! APPEND ("the server stored it, the OK never arrived", deterministic), a spooled message, an
//! IMAP sink over plain TCP on loopback, and the one-copy check run against each real target.

use popbridge::key::IdempotencyKey;
use popbridge::sink::imap::{ImapSink, ImapSinkConfig};
use popbridge::sink::{Sink, SpooledMessage};
use std::path::Path;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// What [`withholding_proxy_then`] does when the withheld answer comes.
#[derive(Clone, Copy)]
pub enum AtAnswer {
    /// Close both connections: the client sees the connection drop.
    Close,
    /// Go silent with both connections open: the client waits (until it is killed).
    Hang,
}

/// A proxy to `upstream` that forwards everything except the tagged answer to the first
/// APPEND: when it comes, both connections are closed.
pub async fn withholding_proxy(upstream: u16) -> u16 {
    withholding_proxy_then(upstream, AtAnswer::Close).await
}

/// [`withholding_proxy`], doing `then` at the withheld answer.
pub async fn withholding_proxy_then(upstream: u16, then: AtAnswer) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let done = Arc::new(Mutex::new(false));
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let server = TcpStream::connect(("127.0.0.1", upstream)).await.unwrap();
            let (cr, mut cw) = client.into_split();
            let (sr, mut sw) = server.into_split();
            let tag: Arc<Mutex<Option<String>>> = Arc::default();
            let (t, d) = (tag.clone(), done.clone());
            // Client → server: remember the tag of the first APPEND.
            tokio::spawn(async move {
                let mut r = BufReader::new(cr);
                let mut line = Vec::new();
                loop {
                    line.clear();
                    if r.read_until(b'\n', &mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let text = String::from_utf8_lossy(&line).to_string();
                    let mut words = text.split(' ');
                    if let (Some(tg), Some(cmd)) = (words.next(), words.next()) {
                        if cmd.eq_ignore_ascii_case("APPEND") && !*d.lock().unwrap() {
                            *t.lock().unwrap() = Some(format!("{tg} "));
                        }
                    }
                    if sw.write_all(&line).await.is_err() {
                        return;
                    }
                }
            });
            // Server → client: line by line (literals pass as lines), until the answer.
            let d = done.clone();
            tokio::spawn(async move {
                let mut r = BufReader::new(sr);
                let mut line = Vec::new();
                loop {
                    line.clear();
                    if r.read_until(b'\n', &mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let withheld = tag
                        .lock()
                        .unwrap()
                        .as_ref()
                        .is_some_and(|t| line.starts_with(t.as_bytes()));
                    if withheld {
                        *d.lock().unwrap() = true;
                        match then {
                            AtAnswer::Close => return, // drops both halves
                            AtAnswer::Hang => std::future::pending::<()>().await,
                        }
                    }
                    if cw.write_all(&line).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// An IMAP sink named `name` into `folder` of `user` at `127.0.0.1:port`, without TLS.
pub fn plain_sink(name: &str, port: u16, user: &str, password: &str, folder: &str) -> ImapSink {
    let yaml = format!(
        "host: 127.0.0.1\nport: {port}\ntls: none\nallow_plaintext_auth: true\nusername: {user}\npassword: {password}\ntimeout: 10s\nfolder: \"{folder}\"\n"
    );
    let raw: ImapSinkConfig = yaml_serde::from_str(&yaml).unwrap();
    ImapSink::new(name, raw.validate(Path::new("/")).unwrap()).unwrap()
}

/// `body` written to `dir/name` as a spooled message of mailbox `m`.
pub fn spool(dir: &Path, name: &str, body: &[u8], seen_before: bool) -> SpooledMessage {
    use sha2::Digest;
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    SpooledMessage {
        mailbox: "m".into(),
        uidl: name.into(),
        path,
        size: body.len() as u64,
        sha256: hex::encode(sha2::Sha256::digest(body)),
        fetched_at: chrono::Utc::now(),
        seen_before,
        owner: Default::default(),
        params: Default::default(),
    }
}

/// A real IMAP server as the copy tests see it: where it listens and what it stored.
pub trait Target {
    /// The IMAP port (plain TCP).
    fn imap_port(&self) -> u16;
    /// The messages in `folder`, as the server stored them.
    fn stored(&self, folder: &str) -> Vec<Vec<u8>>;
    /// The server's log, shown when a delivery fails.
    fn log(&self) -> String;
}

impl Target for super::courier::Courier {
    fn imap_port(&self) -> u16 {
        self.port
    }
    fn stored(&self, folder: &str) -> Vec<Vec<u8>> {
        super::courier::Courier::stored(self, folder)
    }
    fn log(&self) -> String {
        super::courier::Courier::log(self)
    }
}

impl Target for super::cyrus::Cyrus {
    fn imap_port(&self) -> u16 {
        self.imap_port
    }
    fn stored(&self, folder: &str) -> Vec<Vec<u8>> {
        super::cyrus::Cyrus::stored(self, folder)
    }
    fn log(&self) -> String {
        super::cyrus::Cyrus::log(self)
    }
}

/// Creates `folder` on `target` by delivering a seed message straight (not through a proxy).
pub async fn create_folder(
    target: &impl Target,
    sink: impl Fn(u16, &str) -> ImapSink,
    folder: &str,
) {
    let dir = tempfile::tempdir().unwrap();
    let seed = spool(
        dir.path(),
        "seed",
        b"Message-ID: <seed@x>\r\n\r\nseed\r\n",
        false,
    );
    sink(target.imap_port(), folder)
        .deliver(&seed, &IdempotencyKey::derive("m", "seed"))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", target.log()));
}

/// Stored through the withholding proxy (no answer), then delivered again by a new sink with
/// `seen_before` (a restart): exactly one copy in `folder`, and the second receipt is a
/// duplicate. Returns the stored copy.
pub async fn one_copy(
    target: &impl Target,
    sink: impl Fn(u16, &str) -> ImapSink,
    folder: &str,
    name: &str,
    body: &[u8],
) -> Vec<u8> {
    let proxy = withholding_proxy(target.imap_port()).await;
    let dir = tempfile::tempdir().unwrap();
    let key = IdempotencyKey::derive("m", name);
    let before = target.stored(folder);
    let first = sink(proxy, folder)
        .deliver(&spool(dir.path(), name, body, false), &key)
        .await;
    assert!(first.unwrap_err().is_retryable());
    assert_eq!(
        target.stored(folder).len(),
        before.len() + 1,
        "the server stored it"
    );
    let again = sink(target.imap_port(), folder)
        .deliver(&spool(dir.path(), name, body, true), &key)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", target.log()));
    assert!(again.duplicate, "{again:?}");
    let stored = target.stored(folder);
    assert_eq!(stored.len(), before.len() + 1, "appended twice: {again:?}");
    stored.into_iter().find(|m| !before.contains(m)).unwrap()
}

/// The folder a namespace test asks for, outside the personal namespace `INBOX.` of Courier
/// and Debian's Cyrus, and the one both servers name instead.
pub const OUTSIDE: &str = "Migrated/2026";
pub const INSIDE: &str = "INBOX.Migrated.2026";

/// The message the namespace tests deliver (UIDL `n` of mailbox `m`), spooled in `dir`.
fn namespace_message(dir: &Path) -> SpooledMessage {
    spool(dir, "n", b"Message-ID: <ns@x>\r\n\r\nbody\r\n", false)
}

/// A delivery into [`OUTSIDE`] fails and its error names [`INSIDE`].
pub async fn outside_the_namespace_is_refused(
    target: &impl Target,
    sink: impl Fn(u16, &str) -> ImapSink,
) {
    let dir = tempfile::tempdir().unwrap();
    let err = sink(target.imap_port(), OUTSIDE)
        .deliver(
            &namespace_message(dir.path()),
            &IdempotencyKey::derive("m", "n"),
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("use folder: \"{INSIDE}\"")),
        "{err}"
    );
}

/// The same message delivered into [`INSIDE`] is stored there, once, not as a duplicate.
pub async fn inside_the_namespace_is_stored(
    target: &impl Target,
    sink: impl Fn(u16, &str) -> ImapSink,
) {
    let dir = tempfile::tempdir().unwrap();
    let r = sink(target.imap_port(), INSIDE)
        .deliver(
            &namespace_message(dir.path()),
            &IdempotencyKey::derive("m", "n"),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", target.log()));
    assert!(!r.duplicate);
    assert_eq!(target.stored(INSIDE).len(), 1);
}
