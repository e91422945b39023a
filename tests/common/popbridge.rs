//! Runs the `popbridge` binary against a config written into a temp directory.
//!
//! Passwords reach popbridge through `${ENV}` interpolation, never through the file, and every
//! run asserts that no password appears in its stdout or stderr.

use super::{Dovecot, User};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_popbridge");

/// A run that takes longer than this is a hang, not a slow machine.
const HANG: Duration = Duration::from_secs(600);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tls {
    None,
    Implicit,
    Stls,
}

/// One mailbox in the config.
pub struct Mailbox<'a> {
    pub name: &'a str,
    pub user: &'a User,
    pub tls: Tls,
    /// `ca_file` for TLS; `None` means the CA that signed Dovecot's certificate.
    pub ca_file: Option<&'a Path>,
    /// YAML for `delete:` (`never`, `after_delivery`, `{ after_days: 2 }`).
    pub delete: &'a str,
    /// `schedule: { every: … }` (only `run` uses it).
    pub every: &'a str,
    /// Overrides the user's real password.
    pub password: Option<&'a str>,
}

impl<'a> Mailbox<'a> {
    /// Plain POP3, `delete: never`, the right password.
    pub fn new(name: &'a str, user: &'a User) -> Self {
        Mailbox {
            name,
            user,
            tls: Tls::None,
            ca_file: None,
            delete: "never",
            every: "60s",
            password: None,
        }
    }
}

/// A popbridge installation: its directory, config, state and Maildirs.
pub struct Bridge {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    env: Vec<(String, String)>,
}

/// What a finished run printed and returned.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }

    /// stdout and stderr, for assertion messages.
    pub fn output(&self) -> String {
        format!(
            "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

fn env_name(mailbox: &str) -> String {
    format!("PB_TEST_PASS_{}", mailbox.to_uppercase().replace('-', "_"))
}

impl Bridge {
    pub fn new(dc: &Dovecot, mailboxes: &[Mailbox]) -> Bridge {
        Self::with_http(dc, mailboxes, None)
    }

    /// With `http.listen` for the daemon's endpoints.
    pub fn with_http(dc: &Dovecot, mailboxes: &[Mailbox], listen: Option<SocketAddr>) -> Bridge {
        Self::build(
            (dc.pop3_port, dc.pop3s_port, &dc.ca_file),
            mailboxes,
            listen,
        )
    }

    /// Against another plain POP3 server on 127.0.0.1 (mailutils, Cyrus): `Tls::None` only.
    pub fn plain(pop3_port: u16, mailboxes: &[Mailbox]) -> Bridge {
        assert!(mailboxes.iter().all(|m| m.tls == Tls::None));
        Self::build((pop3_port, 0, Path::new("")), mailboxes, None)
    }

    /// The first argument: the server's POP3 port, POP3S port and CA file.
    fn build(
        (pop3_port, pop3s_port, ca_file): (u16, u16, &Path),
        mailboxes: &[Mailbox],
        listen: Option<SocketAddr>,
    ) -> Bridge {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut yaml = String::from("state:\n  path: ./state/popbridge.db\n");
        if let Some(addr) = listen {
            yaml.push_str(&format!("http:\n  listen: {addr}\n"));
        }
        yaml.push_str("mailboxes:\n");
        let mut env = Vec::new();
        for m in mailboxes {
            let (host, port, tls) = match m.tls {
                Tls::None => ("127.0.0.1", pop3_port, "none"),
                Tls::Implicit => ("127.0.0.1", pop3s_port, "implicit"),
                Tls::Stls => ("localhost", pop3_port, "starttls"),
            };
            let var = env_name(m.name);
            env.push((
                var.clone(),
                m.password.unwrap_or(&m.user.password).to_string(),
            ));
            yaml.push_str(&format!(
                "  - name: {name}\n    pop3:\n      host: {host}\n      port: {port}\n      tls: {tls}\n\
                 \x20     username: {user}\n      password: ${{{var}}}\n      timeout: 20s\n",
                name = m.name,
                user = m.user.name,
            ));
            if m.tls == Tls::None {
                yaml.push_str("      allow_plaintext_auth: true\n");
            } else {
                let ca = m.ca_file.unwrap_or(ca_file);
                yaml.push_str(&format!("      ca_file: {}\n", ca.display()));
            }
            yaml.push_str(&format!(
                "    schedule: {{ every: {} }}\n    delete: {}\n    sinks: [archive]\n",
                m.every, m.delete
            ));
        }
        yaml.push_str(MAILDIR_SINK);
        let config = dir.path().join("popbridge.yaml");
        std::fs::write(&config, yaml).expect("write config");
        Bridge { dir, config, env }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .arg("-c")
            .arg(&self.config)
            .current_dir(self.dir.path())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// `popbridge <args> -c CONFIG` to completion (e.g. `&["once"]`, `&["check", "--connect"]`).
    pub fn run(&self, args: &[&str]) -> Run {
        self.run_with_env(args, &[])
    }

    /// `popbridge once -c CONFIG`.
    pub fn once(&self) -> Run {
        self.run(&["once"])
    }

    pub fn run_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut cmd = self.command(args);
        cmd.envs(env.iter().copied());
        let child = cmd.spawn().expect("spawn popbridge");
        let pid = child.id();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        let out = match rx.recv_timeout(HANG) {
            Ok(out) => out.expect("wait for popbridge"),
            Err(_) => {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
                panic!("popbridge {args:?} still running after {HANG:?}: killed");
            }
        };
        let run = Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        self.assert_no_secret(&run);
        run
    }

    /// Starts `popbridge <args>` and returns at once (for kill tests). Output is discarded.
    pub fn spawn(&self, args: &[&str]) -> Child {
        let mut cmd = self.command(args);
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        cmd.spawn().expect("spawn popbridge")
    }

    /// No password of any mailbox in anything popbridge printed.
    pub fn assert_no_secret(&self, run: &Run) {
        for (var, secret) in &self.env {
            assert!(
                !run.stdout.contains(secret.as_str()) && !run.stderr.contains(secret.as_str()),
                "the password in {var} appears in popbridge's output:\n{}",
                run.output()
            );
        }
    }

    /// The Maildir a mailbox delivers into.
    pub fn maildir(&self, mailbox: &str) -> PathBuf {
        self.dir.path().join("mail").join(mailbox)
    }

    /// Delivered files of a mailbox, checking each is named by an idempotency key.
    pub fn delivered(&self, mailbox: &str) -> Vec<Vec<u8>> {
        super::read_maildir(&self.maildir(mailbox))
            .into_iter()
            .map(|(name, body)| {
                let hex = name.strip_prefix("pb2_").unwrap_or_default();
                assert!(
                    hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
                    "Maildir file {name} is not named pb2_<32 hex>"
                );
                body
            })
            .collect()
    }

    pub fn state_db(&self) -> PathBuf {
        self.dir.path().join("state/popbridge.db")
    }

    /// Replaces the config's `sinks:` block (the one Maildir sink `archive` written by `new`)
    /// with `sinks_yaml`, a whole `sinks:` block.
    pub fn replace_sinks(&self, sinks_yaml: &str) {
        let yaml = std::fs::read_to_string(&self.config).expect("read config");
        assert!(
            yaml.contains(MAILDIR_SINK),
            "the harness config changed:\n{yaml}"
        );
        std::fs::write(&self.config, yaml.replace(MAILDIR_SINK, sinks_yaml)).expect("write config");
    }
}

/// The `sinks:` block `Bridge::new` writes.
const MAILDIR_SINK: &str =
    "sinks:\n  - name: archive\n    type: maildir\n    path: ./mail/{mailbox}\n";
