//! A private Dovecot (POP3, POP3S, IMAP with STARTTLS) for one test binary.
//!
//! Everything lives under one instance directory: config, passwd-files, certificates, homes,
//! `base_dir`, `state_dir` and the log. Mail is owned by uid/gid 8 (`mail`) because Dovecot
//! refuses uid 0. A detached watchdog stops Dovecot and removes the directory when the test
//! process ends (however it ends); instances left behind by a killed watchdog are swept at the
//! next start. `PB_KEEP_DOVECOT=1` keeps the directory for a post-mortem.

use super::certs;
use std::fs;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{chown, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The uid and gid that own all mail (Debian's `mail` user).
pub const MAIL_UID: u32 = 8;

pub struct Dovecot {
    pub root: PathBuf,
    pub pop3_port: u16,
    pub pop3s_port: u16,
    pub imap_port: u16,
    /// The CA that signed the server certificate.
    pub ca_file: PathBuf,
    /// A CA that did not: trusting only this one must fail verification.
    pub other_ca_file: PathBuf,
    /// With [`Dovecot::start_oauth2`]: the HS256 key Dovecot validates OAuth2 tokens with.
    pub oauth2_key: Option<Vec<u8>>,
}

/// A mailbox on the server.
#[derive(Clone, Debug)]
pub struct User {
    pub name: String,
    pub password: String,
    pub maildir: PathBuf,
}

static SEQ: AtomicU64 = AtomicU64::new(0);

fn seq() -> u64 {
    SEQ.fetch_add(1, Ordering::Relaxed)
}

/// The `dovecot` binary, if installed.
pub fn find_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|d| d.join("dovecot"))
        .find(|p| p.is_file())
}

fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

/// Why Dovecot cannot run here, if it cannot.
pub fn unavailable() -> Option<String> {
    if find_binary().is_none() {
        return Some("dovecot is not installed (scripts/test.sh installs it)".into());
    }
    if !is_root() {
        return Some("the private Dovecot needs root (mail is owned by uid 8)".into());
    }
    None
}

fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    std::array::from_fn(|i| listeners[i].local_addr().expect("local addr").port())
}

fn chown_mail(path: &Path) {
    chown(path, Some(MAIL_UID), Some(MAIL_UID))
        .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
}

fn pid_alive(pid: &str) -> bool {
    !pid.is_empty() && Path::new("/proc").join(pid).exists()
}

fn read_trim(path: &Path) -> String {
    fs::read_to_string(path)
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Stops instances whose test process is gone and removes their directories.
fn sweep_stale(parent: &Path) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for dir in entries.flatten().map(|e| e.path()) {
        if pid_alive(&read_trim(&dir.join("owner.pid"))) || dir.join("keep").exists() {
            continue;
        }
        let master = read_trim(&dir.join("run/master.pid"));
        if pid_alive(&master) {
            let _ = Command::new("kill").arg(&master).status();
        }
        let _ = fs::remove_dir_all(&dir);
    }
}

impl Dovecot {
    /// Starts a fresh instance; panics with Dovecot's own log if it does not come up.
    pub fn start() -> Dovecot {
        Self::start_with(false, "")
    }

    /// [`Dovecot::start`] with `extra` appended to its configuration (plugins, limits).
    pub fn start_with_config(extra: &str) -> Dovecot {
        Self::start_with(false, extra)
    }

    /// [`Dovecot::start`] that also accepts XOAUTH2 and OAUTHBEARER logins, validating JWTs
    /// locally (`passdb oauth2`, `introspection_mode = local`) with an HS256 key of its own
    /// ([`Dovecot::oauth2_key`]); the token's `email` must be the user name.
    pub fn start_oauth2() -> Dovecot {
        Self::start_with(true, "")
    }

    fn start_with(oauth2: bool, extra: &str) -> Dovecot {
        let parent = std::env::temp_dir().join("popbridge-tests");
        fs::create_dir_all(&parent).expect("create temp dir");
        fs::set_permissions(&parent, fs::Permissions::from_mode(0o755)).expect("chmod");
        sweep_stale(&parent);
        // The free ports are only free until Dovecot binds them: someone may take one first.
        for _ in 0..2 {
            match Self::try_start(&parent, oauth2, extra) {
                Ok(dovecot) => return dovecot,
                Err(why) => eprintln!("dovecot did not start, retrying with other ports:\n{why}"),
            }
        }
        Self::try_start(&parent, oauth2, extra)
            .unwrap_or_else(|why| panic!("dovecot did not start:\n{why}"))
    }

    fn try_start(parent: &Path, oauth2: bool, extra: &str) -> Result<Dovecot, String> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let root = parent.join(format!("dovecot-{}-{nanos}", std::process::id()));
        for sub in ["run", "state", "home", "tls", "users"] {
            fs::create_dir_all(root.join(sub)).expect("create instance dir");
        }
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).expect("chmod");
        chown_mail(&root.join("home"));
        fs::write(root.join("owner.pid"), std::process::id().to_string()).expect("owner.pid");

        let tls = root.join("tls");
        let ca = certs::make_ca(&tls, "ca");
        let other = certs::make_ca(&tls, "other-ca");
        let leaf = certs::make_leaf(&tls, &ca, "server");

        let [pop3_port, pop3s_port, imap_port] = free_ports::<3>();
        let conf = root.join("dovecot.conf");
        let mut text = config(&root, &leaf, pop3_port, pop3s_port, imap_port);
        let oauth2_key = oauth2.then(|| oauth2_setup(&root, &mut text));
        text.push_str(extra);
        fs::write(&conf, text).expect("write dovecot.conf");
        let log = fs::File::create(root.join("dovecot.out")).expect("dovecot.out");
        let status = Command::new(find_binary().expect("dovecot binary"))
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .status()
            .expect("run dovecot");
        let dovecot = Dovecot {
            pop3_port,
            pop3s_port,
            imap_port,
            ca_file: ca.cert,
            other_ca_file: other.cert,
            root,
            oauth2_key,
        };
        dovecot.watch();
        if !status.success() {
            return Err(dovecot.diagnostics());
        }
        if let Err(why) = dovecot.wait_listening() {
            let master = read_trim(&dovecot.root.join("run/master.pid"));
            if pid_alive(&master) {
                let _ = Command::new("kill").arg(&master).status();
            }
            return Err(why);
        }
        Ok(dovecot)
    }

    /// A detached shell that outlives us: when this process is gone, stop Dovecot and clean up.
    fn watch(&self) {
        let keep = std::env::var("PB_KEEP_DOVECOT").is_ok_and(|v| v == "1");
        if keep {
            let _ = fs::write(self.root.join("keep"), "");
            eprintln!("PB_KEEP_DOVECOT=1: keeping {}", self.root.display());
        }
        // `( … ) &` so the watchdog is orphaned at once and re-parented to init: nothing of ours
        // waits on it, and it has its own process group, so a Ctrl-C of the tests spares it.
        let script = r#"(while kill -0 "$1" 2>/dev/null; do sleep 1; done
            pid=$(cat "$2/run/master.pid" 2>/dev/null) && kill "$pid" 2>/dev/null
            [ "$3" = 1 ] || { sleep 1; rm -rf "$2"; }) &"#;
        let status = Command::new("sh")
            .args(["-c", script, "watchdog"])
            .arg(std::process::id().to_string())
            .arg(&self.root)
            .arg(if keep { "1" } else { "0" })
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .status()
            .expect("start the Dovecot watchdog");
        assert!(status.success(), "the Dovecot watchdog did not start");
    }

    fn wait_listening(&self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        for port in [self.pop3_port, self.pop3s_port, self.imap_port] {
            while TcpStream::connect(("127.0.0.1", port)).is_err() {
                if Instant::now() > deadline {
                    return Err(format!("not listening on {port}:\n{}", self.diagnostics()));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }

    fn diagnostics(&self) -> String {
        format!(
            "--- dovecot.out\n{}\n--- dovecot.log\n{}",
            read_trim(&self.root.join("dovecot.out")),
            self.log()
        )
    }

    /// Dovecot's log so far (all users).
    pub fn log(&self) -> String {
        fs::read_to_string(self.root.join("dovecot.log")).unwrap_or_default()
    }

    /// Lines of the log about a refused password for `user` (one per failed login).
    pub fn failed_logins(&self, user: &str) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains(&format!("({user},")) && l.contains("Password mismatch"))
            .count()
    }

    /// A new user `<prefix><n>` with a random password and an empty Maildir.
    pub fn add_user(&self, prefix: &str) -> User {
        let name = format!("{prefix}{}", seq());
        let password = format!("pw-{:032x}", rand::random::<u128>());
        let home = self.root.join("home").join(&name);
        let maildir = home.join("Maildir");
        for sub in ["cur", "new", "tmp"] {
            fs::create_dir_all(maildir.join(sub)).expect("create Maildir");
        }
        for dir in [home.clone(), maildir.clone()] {
            chown_mail(&dir);
        }
        for sub in ["cur", "new", "tmp"] {
            chown_mail(&maildir.join(sub));
        }
        let line = format!(
            "{name}:{{PLAIN}}{password}:{MAIL_UID}:{MAIL_UID}::{}::\n",
            home.display()
        );
        fs::write(self.root.join("users").join(&name), line).expect("write passwd-file");
        User {
            name,
            password,
            maildir,
        }
    }

    /// Puts `messages` into the user's `Maildir/new` (write in `tmp/`, rename), owned by uid 8.
    pub fn seed(&self, user: &User, messages: &[Vec<u8>]) {
        for body in messages {
            let name = format!(
                "{}.M{}P{}.pbtest",
                nanos_now() / 1_000_000_000,
                seq(),
                std::process::id()
            );
            let tmp = user.maildir.join("tmp").join(&name);
            fs::write(&tmp, body).expect("seed message");
            chown_mail(&tmp);
            fs::rename(&tmp, user.maildir.join("new").join(&name)).expect("seed rename");
        }
    }

    /// Lets the app-only OAuth2 client `client_id` open these mailboxes (and no other).
    pub fn grant_app(&self, client_id: &str, users: &[&User]) {
        let lines: String = users
            .iter()
            .map(|u| format!("{}::::::::nopassword\n", u.name))
            .collect();
        fs::write(self.root.join("oauth2/grants").join(client_id), lines).expect("write grants");
    }

    /// Every message still in the user's mailbox (`new/` and `cur/`), as stored.
    pub fn list_server_messages(&self, user: &User) -> Vec<Vec<u8>> {
        super::read_maildir(&user.maildir)
            .into_iter()
            .map(|(_, body)| body)
            .collect()
    }
}

fn nanos_now() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// Adds OAuth2 logins to `conf`: the mechanisms, and a `passdb oauth2` after the passwd-file
/// one (a token is no user's password, so that one fails and this one decides) validating
/// HS256 JWTs with a fresh key kept under `<root>/oauth2/keys/default/HS256/default` (the path
/// for tokens without `azp` and `kid`). Returns the key.
fn oauth2_setup(root: &Path, conf: &mut String) -> Vec<u8> {
    use base64::Engine;
    let key: [u8; 32] = rand::random();
    let dir = root.join("oauth2/keys/default/HS256");
    fs::create_dir_all(&dir).expect("create oauth2 key dir");
    fs::write(
        dir.join("default"),
        base64::engine::general_purpose::STANDARD.encode(key),
    )
    .expect("write oauth2 key");
    let r = root.display();
    fs::write(
        root.join("oauth2/dovecot-oauth2.conf.ext"),
        format!(
            "introspection_mode = local\nlocal_validation_key_dict = fs:posix:prefix={r}/oauth2/keys/\n\
             username_attribute = email\n"
        ),
    )
    .expect("write oauth2 passdb config");
    *conf = conf.replace(
        "auth_mechanisms = plain login apop cram-md5",
        "auth_mechanisms = plain login apop cram-md5 xoauth2 oauthbearer",
    );
    // App-only tokens (Microsoft's client credentials: `idtyp: app`, the client in `appid`)
    // are for no user in particular: a constant username_format passes the user check, and
    // the grants file of the app lists the mailboxes it may open (LAB.md's model). Every
    // token carries `email` and `idtyp`, so a passdb that does not fit a token fails it
    // plainly (a missing claim would be an internal failure, `-ERR [SYS/TEMP]`).
    fs::write(
        root.join("oauth2/app-only.conf.ext"),
        format!(
            "introspection_mode = local\nlocal_validation_key_dict = fs:posix:prefix={r}/oauth2/keys/\n\
             username_format = app\nusername_attribute = idtyp\n\
             pass_attrs = app_client_id=%{{oauth2:appid}}\n"
        ),
    )
    .expect("write app-only passdb config");
    fs::create_dir_all(root.join("oauth2/grants")).expect("create grants dir");
    conf.push_str(&format!(
        "passdb {{\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n  args = {r}/oauth2/dovecot-oauth2.conf.ext\n}}\n\
         passdb {{\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n  args = {r}/oauth2/app-only.conf.ext\n  result_success = continue-ok\n}}\n\
         passdb {{\n  driver = passwd-file\n  mechanisms = xoauth2 oauthbearer\n  args = username_format=%Lu {r}/oauth2/grants/%{{passdb:app_client_id}}\n  skip = unauthenticated\n  result_failure = return-fail\n}}\n"
    ));
    key.to_vec()
}

fn config(root: &Path, leaf: &certs::Leaf, pop3: u16, pop3s: u16, imap: u16) -> String {
    let r = root.display();
    format!(
        r#"# Private test instance: nothing from /etc/dovecot.
instance_name = popbridge-test-{pid}-{pop3}
base_dir = {r}/run
state_dir = {r}/state
log_path = {r}/dovecot.log
protocols = pop3 imap
listen = 127.0.0.1
default_internal_user = dovecot
default_login_user = dovenull
first_valid_uid = {MAIL_UID}
last_valid_uid = {MAIL_UID}
mail_location = maildir:~/Maildir
pop3_uidl_format = %08Xu%08Xv
disable_plaintext_auth = no
auth_mechanisms = plain login apop cram-md5
auth_verbose = yes
# Tests share 127.0.0.1: no growing penalty after a failed login, no 2 s failure delay.
auth_failure_delay = 0
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}
# One passwd-file per user: Dovecot re-reads a changed file at most once a second, so users
# added to one shared file mid-run would be unknown for up to a second.
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {r}/users/%u
}}
userdb {{
  driver = passwd-file
  args = {r}/users/%u
}}
protocol pop3 {{
  mail_max_userip_connections = 200
}}
protocol imap {{
  mail_max_userip_connections = 200
}}
service pop3-login {{
  inet_listener pop3 {{
    port = {pop3}
  }}
  inet_listener pop3s {{
    port = {pop3s}
    ssl = yes
  }}
}}
service imap-login {{
  inet_listener imap {{
    port = {imap}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
"#,
        pid = std::process::id(),
        cert = leaf.cert.display(),
        key = leaf.key.display(),
    )
}
