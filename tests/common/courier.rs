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

/// Courier's POP3 server (`courier-pop`, unpacked next to Courier-IMAP) for one account, with a
/// real login: `couriertcpd` runs `courierpop3login`, which asks a private `authdaemond`
/// (userdb module, one user) and then execs `courierpop3d` on the account's Maildir.
///
/// authdaemond's socket and its config and userdb sit at paths compiled into courier-authlib
/// (`/run/courier/authdaemon`, `/etc/courier`), which every test run would share. So the
/// daemons run in their own mount namespace (`unshare -m`, root) with private directories
/// bind-mounted over those two paths; nothing outside the namespace changes. The account maps
/// to uid 0: the server binaries live under root's home, which no other uid can enter.
pub struct CourierPop3 {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Child,
}

pub const POP3_USER: &str = "courierpop";
pub const POP3_PASSWORD: &str = "courier-secret";

/// Why Courier's POP3 server cannot run here, if it cannot.
pub fn pop3_unavailable() -> Option<String> {
    let login = root().join("usr/lib/courier/courier/courierpop3login");
    if !login.is_file() {
        return Some(format!(
            "Courier POP3 is not unpacked at {} (scripts/test.sh does it)",
            login.display()
        ));
    }
    for tool in [
        "/usr/lib/courier/courier-authlib/authdaemond",
        "/usr/sbin/makeuserdb",
    ] {
        if !std::path::Path::new(tool).is_file() {
            return Some(format!(
                "{tool} is missing (courier-authdaemon, courier-authlib-userdb)"
            ));
        }
    }
    if !is_root() {
        return Some("Courier POP3 needs root (a private mount namespace)".into());
    }
    None
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// A Courier POP3 server, or `None` (after saying why) outside CI when it cannot run; under
/// `CI=true` it fails the test.
pub fn courier_pop3_or_skip() -> Option<CourierPop3> {
    match pop3_unavailable() {
        None => Some(CourierPop3::start()),
        Some(why) if std::env::var("CI").is_ok_and(|v| v == "true") => panic!("CI=true and {why}"),
        Some(why) => {
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "SKIPPED: {why}");
            None
        }
    }
}

/// Runs inside the namespace: private config and socket directories, the userdb compiled,
/// authdaemond in the background, couriertcpd in front (same process, so killing the group
/// stops both).
const POP3_SCRIPT: &str = r#"set -e
dir=$1; root=$2; port=$3
mkdir -p /etc/courier /run/courier/authdaemon
mount --bind "$dir/etc" /etc/courier
mount --bind "$dir/run" /run/courier/authdaemon
makeuserdb
/usr/lib/courier/courier-authlib/authdaemond &
i=0
while [ ! -S /run/courier/authdaemon/socket ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done
[ -S /run/courier/authdaemon/socket ] || { echo "authdaemond did not create its socket" >&2; exit 1; }
exec "$root/usr/sbin/couriertcpd" -address=127.0.0.1 -nodnslookup -noidentlookup \
    -maxprocs=40 -maxperip=40 "$port" \
    "$root/usr/lib/courier/courier/courierpop3login" \
    "$root/usr/lib/courier/courier/courierpop3d" Maildir
"#;

impl CourierPop3 {
    pub fn start() -> CourierPop3 {
        let root = root();
        let dir = tempfile::tempdir().expect("dir");
        let home = dir.path().join("home");
        for sub in ["cur", "new", "tmp"] {
            fs::create_dir_all(home.join("Maildir").join(sub)).expect("Maildir");
        }
        fs::create_dir_all(dir.path().join("run")).expect("run");
        let etc = dir.path().join("etc");
        fs::create_dir_all(&etc).expect("etc");
        fs::write(
            etc.join("authdaemonrc"),
            "authmodulelist=\"authuserdb\"\ndaemons=1\nauthdaemonvar=/run/courier/authdaemon\n\
             DEBUG_LOGIN=0\nDEFAULTOPTIONS=\"\"\nLOGGEROPTS=\"\"\n",
        )
        .expect("authdaemonrc");
        let hash = Command::new("openssl")
            .args(["passwd", "-6", POP3_PASSWORD])
            .output()
            .expect("openssl passwd");
        let hash = String::from_utf8(hash.stdout).expect("hash");
        let userdb = etc.join("userdb");
        fs::write(
            &userdb,
            format!(
                "{POP3_USER}\tuid=0|gid=0|home={h}|mail={h}/Maildir|systempw={}\n",
                hash.trim(),
                h = home.display()
            ),
        )
        .expect("userdb");
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&userdb, fs::Permissions::from_mode(0o600)).expect("chmod");
        let port = super::free_port();
        let log = fs::File::create(dir.path().join("courier-pop3.log")).expect("log");
        let child = Command::new("unshare")
            .args([
                "-m",
                "--propagation",
                "private",
                "sh",
                "-c",
                POP3_SCRIPT,
                "courier-pop3",
            ])
            .arg(dir.path())
            .arg(&root)
            .arg(port.to_string())
            .current_dir(dir.path())
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("start unshare");
        super::kill_when_gone(child.id(), true);
        let mut server = CourierPop3 { port, dir, child };
        // Generous: the machine may be loaded; a script that gave up ends the wait at once.
        let deadline = Instant::now() + Duration::from_secs(90);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            let exited = server.child.try_wait().ok().flatten();
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "Courier POP3 did not listen on {port} ({exited:?}): {}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    pub fn maildir(&self) -> PathBuf {
        self.dir.path().join("home/Maildir")
    }

    /// Delivers `message` (CRLF) as Courier's own delivery agents do: a file in `new/` with LF
    /// line ends. Courier's POP3 serves each LF as CRLF (a CRLF stored would go out as CR CR LF).
    pub fn seed(&self, n: usize, message: &[u8]) {
        let mut lf = Vec::with_capacity(message.len());
        for (i, &b) in message.iter().enumerate() {
            if !(b == b'\r' && message.get(i + 1) == Some(&b'\n')) {
                lf.push(b);
            }
        }
        let name = format!("{}.M{n}P1.popbridge", 1_700_000_000 + n);
        let tmp = self.maildir().join("tmp").join(&name);
        fs::write(&tmp, lf).expect("seed");
        fs::rename(&tmp, self.maildir().join("new").join(&name)).expect("seed");
    }

    /// How many messages the server still holds.
    pub fn held(&self) -> usize {
        ["new", "cur"]
            .iter()
            .map(|s| fs::read_dir(self.maildir().join(s)).map_or(0, |d| d.count()))
            .sum()
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("courier-pop3.log")).unwrap_or_default()
    }
}

impl Drop for CourierPop3 {
    fn drop(&mut self) {
        // couriertcpd, authdaemond and every session share the process group.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.wait();
    }
}
