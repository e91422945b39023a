//! A private GNU mailutils `pop3d` (Debian's `mailutils-pop3d`, apt-installed by
//! `scripts/test.sh`; no service starts) on a free loopback port, with its own config file.
//!
//! Logins go through mailutils' `virtdomain` module: a passwd-format file per domain in a
//! private directory, with crypt(3) hashes (`openssl passwd -6`), so no system account and no
//! PAM are involved and the same harness works as root (mail owned by uid 8, `mail`, which
//! pop3d switches to) or as an unprivileged user (mail owned by that user). Each user's
//! `INBOX` is an mbox file, the case where pop3d rewrites headers between sessions (a Maildir
//! INBOX needs a lock directory under `/var/lock/subsys/mail`, outside a test's reach: pop3d
//! answers `-ERR [IN-USE]` without it). The daemon is stopped when the value is dropped, and by a detached watchdog when
//! the test process ends.

use super::dovecot::User;
use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::fs::{chown, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The domain of every test login (`user@DOMAIN`): the name of the virtdomain passwd file.
const DOMAIN: &str = "mu.test";

pub struct Mailutils {
    pub port: u16,
    pub dir: tempfile::TempDir,
    /// Owner of the mail: `mail` (8) as root, else whoever runs the tests.
    uid: u32,
    gid: u32,
    child: Child,
}

/// Why pop3d cannot run here, if it cannot.
pub fn unavailable() -> Option<String> {
    let found = ["/usr/sbin/pop3d", "/usr/bin/openssl"]
        .iter()
        .all(|p| Path::new(p).is_file());
    (!found).then(|| {
        "GNU mailutils pop3d (/usr/sbin/pop3d, package mailutils-pop3d) or openssl is not \
         installed (scripts/test.sh installs them)"
            .to_string()
    })
}

/// A pop3d, or `None` (after saying why) outside CI when it is not installed; under
/// `CI=true` a missing pop3d fails the test.
pub fn mailutils_or_skip() -> Option<Mailutils> {
    match unavailable() {
        None => Some(Mailutils::start()),
        Some(why) if std::env::var("CI").is_ok_and(|v| v == "true") => panic!("CI=true and {why}"),
        Some(why) => {
            let _ = writeln!(std::io::stderr(), "SKIPPED: {why}");
            None
        }
    }
}

static SEQ: AtomicU64 = AtomicU64::new(0);

impl Mailutils {
    pub fn start() -> Mailutils {
        let dir = tempfile::tempdir().expect("temp dir");
        // pop3d reads the mail as the user's uid: the path must be traversable by it.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
        let meta = fs::metadata(dir.path()).expect("stat");
        let (uid, gid) = match meta.uid() {
            0 => (8, 8),
            _ => (meta.uid(), meta.gid()),
        };
        fs::create_dir_all(dir.path().join("passwd")).expect("passwd dir");
        fs::write(dir.path().join("passwd").join(DOMAIN), "").expect("passwd file");
        let port = super::free_port();
        let conf = dir.path().join("pop3d.conf");
        fs::write(
            &conf,
            format!(
                "auth {{ authentication generic; authorization virtdomain; }};\n\
                 virtdomain {{ passwd-dir {passwd}; }};\n\
                 logging {{ syslog no; }};\n\
                 tcp-wrappers {{ enable no; }};\n\
                 mode daemon;\nforeground yes;\npidfile {pid};\n\
                 locking {{ type dotlock; }};\n\
                 server 127.0.0.1:{port} {{ transcript yes; }};\n",
                passwd = dir.path().join("passwd").display(),
                pid = dir.path().join("pop3d.pid").display(),
            ),
        )
        .expect("write pop3d.conf");
        let log = fs::File::create(dir.path().join("pop3d.log")).expect("log");
        let child = Command::new("/usr/sbin/pop3d")
            .arg(format!("--config-file={}", conf.display()))
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("start pop3d");
        super::kill_when_gone(child.id(), false);
        let server = Mailutils {
            port,
            dir,
            uid,
            gid,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "pop3d did not listen on {port}: {}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    /// A new user `<prefix><n>@mu.test` with a random password and an empty INBOX.
    /// `User::maildir` is the path of the INBOX mbox.
    pub fn add_user(&self, prefix: &str) -> User {
        let local = format!("{prefix}{}", SEQ.fetch_add(1, Ordering::Relaxed));
        let password = format!("pw-{:032x}", rand::random::<u128>());
        let out = Command::new("openssl")
            .args(["passwd", "-6", "-stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                c.stdin
                    .take()
                    .expect("stdin")
                    .write_all(password.as_bytes())?;
                c.wait_with_output()
            })
            .expect("openssl passwd");
        assert!(out.status.success(), "openssl passwd failed");
        let hash = String::from_utf8(out.stdout)
            .expect("hash")
            .trim()
            .to_string();
        let home = self.dir.path().join("home").join(&local);
        fs::create_dir_all(&home).expect("home");
        self.own(&home);
        let inbox = home.join("INBOX");
        fs::write(&inbox, "").expect("mbox");
        self.own(&inbox);
        let mut passwd = fs::OpenOptions::new()
            .append(true)
            .open(self.dir.path().join("passwd").join(DOMAIN))
            .expect("open passwd");
        writeln!(
            passwd,
            "{local}:{hash}:{}:{}::{}:/bin/false",
            self.uid,
            self.gid,
            home.display()
        )
        .expect("write passwd");
        User {
            name: format!("{local}@{DOMAIN}"),
            password,
            maildir: inbox,
        }
    }

    /// Appends CRLF `messages` to the user's mbox, with LF line ends, each after a `From `
    /// separator line. A body line starting with `From ` would be escaped by an mbox writer
    /// and is refused here.
    pub fn seed(&self, user: &User, messages: &[Vec<u8>]) {
        let mut mbox = fs::OpenOptions::new()
            .append(true)
            .open(&user.maildir)
            .expect("open mbox");
        for body in messages {
            let lf = String::from_utf8_lossy(body).replace("\r\n", "\n");
            assert!(
                !lf.contains("\nFrom "),
                "a body line starting with `From ` would be escaped in an mbox"
            );
            mbox.write_all(b"From sender@example.org Mon Jan  1 00:00:00 2024\n")
                .expect("write");
            mbox.write_all(&crlf_to_lf(body)).expect("write");
            mbox.write_all(b"\n").expect("write");
        }
    }

    /// Messages still in the user's mbox, as pop3d left them (LF line ends).
    pub fn stored(&self, user: &User) -> Vec<Vec<u8>> {
        let text = fs::read(&user.maildir).expect("read mbox");
        split_mbox(&text)
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("pop3d.log")).unwrap_or_default()
    }

    fn own(&self, path: &Path) {
        chown(path, Some(self.uid), Some(self.gid)).expect("chown");
    }
}

fn crlf_to_lf(body: &[u8]) -> Vec<u8> {
    String::from_utf8_lossy(body)
        .replace("\r\n", "\n")
        .into_bytes()
}

/// The messages of an mbox, without their `From ` lines and the blank line before the next.
fn split_mbox(text: &[u8]) -> Vec<Vec<u8>> {
    let text = String::from_utf8_lossy(text);
    let mut out = Vec::new();
    for part in text.split("\nFrom ") {
        let part = part.strip_prefix("From ").unwrap_or(part);
        let Some((_, msg)) = part.split_once('\n') else {
            continue;
        };
        let msg = msg.strip_suffix('\n').unwrap_or(msg);
        out.push(msg.as_bytes().to_vec());
    }
    out
}

/// Drops the header fields mailutils adds or rewrites (`X-UIDL`, `Status`, `X-UID`,
/// `X-IMAPbase`) and makes line ends CRLF: what a delivered copy must equal, once normalised
/// the same way, to the seeded message.
pub fn normalise(message: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(message).replace("\r\n", "\n");
    let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
    let kept: Vec<&str> = head
        .split('\n')
        .filter(|l| {
            let name = l.split(':').next().unwrap_or_default().to_ascii_lowercase();
            !["x-uidl", "status", "x-uid", "x-imapbase"].contains(&name.as_str())
        })
        .collect();
    format!("{}\n\n{body}", kept.join("\n"))
        .replace('\n', "\r\n")
        .into_bytes()
}

/// A TCP proxy to `upstream` on 127.0.0.1 that waits 3 ms before each server→client chunk:
/// a run lasts long enough for a kill -9 to land in the middle of it.
pub fn slow_proxy(upstream: u16) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                continue;
            };
            let (mut c2, mut s2) = (
                client.try_clone().expect("dup"),
                server.try_clone().expect("dup"),
            );
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c2, &mut s2);
                let _ = s2.shutdown(Shutdown::Write);
            });
            std::thread::spawn(move || {
                let (mut server, mut client) = (server, client);
                let mut buf = [0u8; 16 * 1024];
                while let Ok(n @ 1..) = server.read(&mut buf) {
                    std::thread::sleep(Duration::from_millis(3));
                    if client.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = client.shutdown(Shutdown::Write);
            });
        }
    });
    port
}

impl Drop for Mailutils {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
