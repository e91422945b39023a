//! A private Cyrus IMAP 3.6 (Debian's packages, unpacked by `scripts/lib/cyrus.sh` into
//! `$PB_CYRUS_DIR`, default `~/.cache/popbridge-tools/cyrus`) with IMAP and POP3 on free
//! loopback ports and one account, `alice`.
//!
//! Debian's settings, not upstream's: `altnamespace: no` and `unixhierarchysep: no` (personal
//! folders are `INBOX.x`), `popminpoll: 1` (POP3 `LOGIN-DELAY 60`, enforced), `munge8bit`
//! (8-bit header bytes become `X`), and `maxmessagesize` so that `APPENDLIMIT` and `TOOBIG`
//! show. Logins check a private sasldb written with the unpacked `saslpasswd2`. Cyrus runs
//! as `mail` (uid 8), which cannot read root's cache: the few binaries and Cyrus' own
//! libraries are copied into the instance directory. `master` and its children form one
//! process group, stopped when the value is dropped and by a watchdog when the test process
//! ends. Root only (CI runs as root).

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::os::unix::fs::{chown, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const USER: &str = "alice";
pub const PASSWORD: &str = "alice-secret";
const ADMIN: &str = "cyrusadm";
const ADMIN_PASSWORD: &str = "admin-secret";
/// `maxmessagesize`, announced as `APPENDLIMIT`.
pub const MAX_MESSAGE: u64 = 100_000;

pub struct Cyrus {
    pub imap_port: u16,
    pub pop3_port: u16,
    pub dir: tempfile::TempDir,
    child: Child,
}

fn root() -> PathBuf {
    let dir = std::env::var_os("PB_CYRUS_DIR").map_or_else(
        || {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/popbridge-tools/cyrus")
        },
        PathBuf::from,
    );
    dir.join("root")
}

/// Why Cyrus cannot run here, if it cannot.
pub fn unavailable() -> Option<String> {
    let imapd = root().join("usr/lib/cyrus/bin/imapd");
    if !imapd.is_file() {
        return Some(format!(
            "Cyrus IMAP is not unpacked at {} (scripts/test.sh does it)",
            imapd.display()
        ));
    }
    let as_root = tempfile::tempdir()
        .ok()
        .and_then(|d| fs::metadata(d.path()).ok())
        .is_some_and(|m| m.uid() == 0);
    (!as_root).then(|| "Cyrus runs as the mail user: the tests must run as root".into())
}

/// A Cyrus, or `None` (after saying why) outside CI when it cannot run; under `CI=true` a
/// missing Cyrus fails the test.
pub fn cyrus_or_skip() -> Option<Cyrus> {
    cyrus_with_or_skip("")
}

/// [`cyrus_or_skip`] with `extra` imapd.conf lines.
pub fn cyrus_with_or_skip(extra: &str) -> Option<Cyrus> {
    match unavailable() {
        None => Some(Cyrus::start_with(extra)),
        Some(why) if std::env::var("CI").is_ok_and(|v| v == "true") => panic!("CI=true and {why}"),
        Some(why) => {
            let _ = writeln!(std::io::stderr(), "SKIPPED: {why}");
            None
        }
    }
}

fn own_tree(path: &Path) {
    chown(path, Some(8), Some(8)).expect("chown");
    if path.is_dir() {
        for entry in fs::read_dir(path).expect("read dir").flatten() {
            own_tree(&entry.path());
        }
    }
}

impl Cyrus {
    pub fn start() -> Cyrus {
        Self::start_with("")
    }

    /// With `extra` lines appended to imapd.conf (e.g. `reject8bit: yes`).
    pub fn start_with(extra: &str) -> Cyrus {
        let src = root();
        let dir = tempfile::tempdir().expect("temp dir");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
        let d = dir.path();
        // conf/log/<user>: Cyrus' protocol telemetry, what a client sent (there is no syslog).
        let telemetry = format!("conf/log/{USER}");
        for sub in ["conf", "part", "run", "bin", "lib", &telemetry] {
            fs::create_dir_all(d.join(sub)).expect("mkdir");
        }
        for bin in ["master", "imapd", "pop3d", "ctl_cyrusdb"] {
            fs::copy(
                src.join("usr/lib/cyrus/bin").join(bin),
                d.join("bin").join(bin),
            )
            .expect("copy Cyrus binary");
        }
        for entry in fs::read_dir(src.join("usr/lib/x86_64-linux-gnu"))
            .expect("Cyrus libraries")
            .flatten()
        {
            fs::copy(entry.path(), d.join("lib").join(entry.file_name())).expect("copy lib");
        }
        let (imap_port, pop3_port) = (super::free_port(), super::free_port());
        let conf = d.join("imapd.conf");
        fs::write(
            &conf,
            format!(
                "configdirectory: {d}/conf\ndefaultpartition: default\npartition-default: {d}/part\n\
                 cyrus_user: mail\ncyrus_group: mail\nadmins: {ADMIN}\n\
                 altnamespace: no\nunixhierarchysep: no\npopminpoll: 1\nmunge8bit: yes\n\
                 maxmessagesize: {MAX_MESSAGE}\nallowplaintext: yes\n\
                 sasl_pwcheck_method: auxprop\nsasl_auxprop_plugin: sasldb\n\
                 sasl_sasldb_path: {d}/conf/sasldb2\nsasl_mech_list: PLAIN LOGIN\n\
                 virtdomains: no\nidlesocket: {d}/run/idle\nnotifysocket: {d}/run/notify\n\
                 lmtpsocket: {d}/run/lmtp\nstatuscache: no\nsyslog_prefix: pbcyrus\n{extra}",
                d = d.display()
            ),
        )
        .expect("imapd.conf");
        let bin = d.join("bin");
        fs::write(
            d.join("cyrus.conf"),
            format!(
                "START {{\n  recover cmd=\"{b}/ctl_cyrusdb -C {c} -r\"\n}}\n\
                 SERVICES {{\n  imap cmd=\"{b}/imapd -C {c}\" listen=\"127.0.0.1:{imap_port}\" prefork=0\n\
                 \x20 pop3 cmd=\"{b}/pop3d -C {c}\" listen=\"127.0.0.1:{pop3_port}\" prefork=0\n}}\n\
                 EVENTS {{\n}}\n",
                b = bin.display(),
                c = conf.display()
            ),
        )
        .expect("cyrus.conf");
        let sasldb = d.join("conf/sasldb2");
        for (user, password) in [(USER, PASSWORD), (ADMIN, ADMIN_PASSWORD)] {
            let mut child = Command::new(src.join("usr/sbin/saslpasswd2"))
                .args(["-p", "-c", "-f"])
                .arg(&sasldb)
                .arg(user)
                .stdin(Stdio::piped())
                .spawn()
                .expect("saslpasswd2");
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(password.as_bytes())
                .expect("password");
            assert!(child.wait().expect("saslpasswd2").success());
        }
        own_tree(d);
        let log = fs::File::create(d.join("master.log")).expect("log");
        let child = Command::new(bin.join("master"))
            .arg("-C")
            .arg(&conf)
            .arg("-M")
            .arg(d.join("cyrus.conf"))
            .arg("-p")
            .arg(d.join("run/master.pid"))
            .env("LD_LIBRARY_PATH", d.join("lib"))
            .current_dir(d)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("start Cyrus master");
        super::kill_when_gone(child.id(), true);
        let cyrus = Cyrus {
            imap_port,
            pop3_port,
            dir,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", imap_port)).is_err()
            || TcpStream::connect(("127.0.0.1", pop3_port)).is_err()
        {
            assert!(
                Instant::now() < deadline,
                "Cyrus did not listen: {}",
                cyrus.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = cyrus.imap(ADMIN, ADMIN_PASSWORD, &[&format!("CREATE user.{USER}")]);
        assert!(out.contains("c1 OK"), "CREATE user.{USER}: {out}");
        cyrus
    }

    /// Logs in as `user` and runs `commands` (no literals), tagged `c1`, `c2`…; the transcript.
    pub fn imap(&self, user: &str, password: &str, commands: &[&str]) -> String {
        let s = TcpStream::connect(("127.0.0.1", self.imap_port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let mut w = s.try_clone().expect("dup");
        let mut r = BufReader::new(s);
        let mut out = String::new();
        let mut line = String::new();
        r.read_line(&mut line).expect("greeting");
        let login = format!("LOGIN {user} {password}");
        for (i, cmd) in std::iter::once(login.as_str())
            .chain(commands.iter().copied())
            .chain(std::iter::once("LOGOUT"))
            .enumerate()
        {
            let tag = format!("c{i} ");
            w.write_all(format!("{tag}{cmd}\r\n").as_bytes())
                .expect("send");
            loop {
                line.clear();
                if r.read_line(&mut line).expect("read") == 0 {
                    return out;
                }
                out.push_str(&line);
                if line.starts_with(&tag) {
                    break;
                }
            }
        }
        out
    }

    /// The messages of a folder (`INBOX` or `INBOX.x`) as Cyrus stored them: Cyrus 3.6 keeps
    /// a folder under `uuid/<c0>/<c1>/<MAILBOXID>/` with one `<uid>.` file per message.
    pub fn stored(&self, folder: &str) -> Vec<Vec<u8>> {
        let out = self.imap(USER, PASSWORD, &[&format!("EXAMINE \"{folder}\"")]);
        let Some(id) = out
            .split("[MAILBOXID (")
            .nth(1)
            .and_then(|rest| rest.split(')').next())
        else {
            return Vec::new(); // no such folder (yet)
        };
        let mut chars = id.chars();
        let (c0, c1) = (chars.next().unwrap_or('_'), chars.next().unwrap_or('_'));
        let dir = self
            .dir
            .path()
            .join(format!("part/uuid/{c0}/{c1}"))
            .join(id);
        let mut out: Vec<Vec<u8>> = fs::read_dir(&dir)
            .into_iter()
            .flat_map(|d| d.flatten())
            .filter(|e| {
                let name = e.file_name().to_string_lossy().to_string();
                name.strip_suffix('.')
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            })
            .map(|e| fs::read(e.path()).expect("read"))
            .collect();
        out.sort();
        out
    }

    /// Everything Cyrus' telemetry recorded of the user's IMAP sessions (both directions).
    pub fn telemetry(&self) -> String {
        let dir = self.dir.path().join("conf/log").join(USER);
        fs::read_dir(dir)
            .into_iter()
            .flat_map(|d| d.flatten())
            .map(|e| String::from_utf8_lossy(&fs::read(e.path()).unwrap_or_default()).into_owned())
            .collect()
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("master.log")).unwrap_or_default()
    }
}

impl Drop for Cyrus {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.wait();
    }
}
