//! A private Courier-IMAP 5 (Debian's package, unpacked by `scripts/lib/courier.sh` into
//! `$PB_COURIER_DIR`, default `~/.cache/popbridge-tools/courier`) for one test account.
//!
//! `couriertcpd` on a free loopback port runs Courier's `imapd` for each connection with the
//! account already chosen (`AUTHENTICATED`, `HOME`), so the session starts `* PREAUTH`:
//! authdaemond has a socket path compiled in and would be shared by every test run, and the
//! login is not what these tests are about. Everything after it (NAMESPACE, CREATE, APPEND
//! with synchronising literals, LF storage, SEARCH, FETCH) is the real server. The daemon is
//! stopped when the value is dropped, and by a detached watchdog when the test process ends.

use std::fs;
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Courier {
    pub port: u16,
    pub home: tempfile::TempDir,
    child: Child,
}

fn root() -> PathBuf {
    let dir = std::env::var_os("PB_COURIER_DIR").map_or_else(
        || {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/popbridge-tools/courier")
        },
        PathBuf::from,
    );
    dir.join("root")
}

/// Why Courier cannot run here, if it cannot.
pub fn unavailable() -> Option<String> {
    let imapd = root().join("usr/bin/imapd");
    if !imapd.is_file() {
        return Some(format!(
            "Courier-IMAP is not unpacked at {} (scripts/test.sh does it)",
            imapd.display()
        ));
    }
    None
}

/// A Courier for one account, or `None` (after saying why) outside CI when it is not
/// installed; under `CI=true` a missing Courier fails the test.
pub fn courier_or_skip() -> Option<Courier> {
    match unavailable() {
        None => Some(Courier::start()),
        Some(why) if std::env::var("CI").is_ok_and(|v| v == "true") => panic!("CI=true and {why}"),
        Some(why) => {
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "SKIPPED: {why}");
            None
        }
    }
}

impl Courier {
    pub fn start() -> Courier {
        let root = root();
        let home = tempfile::tempdir().expect("home");
        let maildir = home.path().join("Maildir");
        for sub in ["cur", "new", "tmp"] {
            fs::create_dir_all(maildir.join(sub)).expect("Maildir");
        }
        let port = super::free_port();
        let log = fs::File::create(home.path().join("courier.log")).expect("log");
        let child = Command::new(root.join("usr/sbin/couriertcpd"))
            .current_dir(home.path())
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", home.path())
            .env("MAILDIR", &maildir)
            .env("AUTHENTICATED", "courieruser")
            // Debian's imapd defaults, minus AUTH (nobody logs in) and ENHANCEDIDLE (no FAM).
            .env(
                "IMAP_CAPABILITY",
                "IMAP4rev1 UIDPLUS CHILDREN NAMESPACE THREAD=ORDEREDSUBJECT THREAD=REFERENCES SORT QUOTA IDLE",
            )
            .env("IMAP_ENHANCEDIDLE", "0")
            .env("IMAP_USELOCKS", "1")
            .env("IMAP_MAILBOX_SANITY_CHECK", "0")
            .args([
                "-address=127.0.0.1",
                "-nodnslookup",
                "-noidentlookup",
                "-maxprocs=40",
                "-maxperip=40",
            ])
            .arg(port.to_string())
            .arg(root.join("usr/bin/imapd"))
            .arg("Maildir")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("start couriertcpd");
        super::kill_when_gone(child.id(), false);
        let courier = Courier { port, home, child };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "couriertcpd did not listen on {port}: {}",
                courier.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        courier
    }

    pub fn maildir(&self) -> PathBuf {
        self.home.path().join("Maildir")
    }

    /// The files of a folder (`INBOX` or `INBOX.x`), as Courier stored them.
    pub fn stored(&self, folder: &str) -> Vec<Vec<u8>> {
        let dir = match folder.strip_prefix("INBOX") {
            Some("") => self.maildir(),
            Some(sub) => self.maildir().join(sub),
            None => self.maildir().join(format!(".{folder}")),
        };
        let mut out: Vec<Vec<u8>> = ["new", "cur"]
            .iter()
            .filter_map(|s| fs::read_dir(dir.join(s)).ok())
            .flat_map(|d| d.flatten().map(|e| fs::read(e.path()).expect("read")))
            .collect();
        out.sort();
        out
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.home.path().join("courier.log")).unwrap_or_default()
    }
}

impl Drop for Courier {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
