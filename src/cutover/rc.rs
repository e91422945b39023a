//! `popbridge config import`: popbridge mailbox entries proposed from another tool's config
//! (fetchmail's `.fetchmailrc`, getmail6's `getmailrc`), read without I/O. Passwords are never
//! copied: each entry gets a `${VAR}` placeholder to fill from the environment.

/// Which tool's config file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RcTool {
    Fetchmail,
    Getmail,
}

/// One proposed mailbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proposal {
    pub name: String,
    pub host: String,
    pub port: Option<u16>,
    /// `implicit`, `starttls`.
    pub tls: &'static str,
    pub username: String,
    /// The environment variable the password is to come from.
    pub password_var: String,
    /// The tool deletes retrieved mail (`delete: after_delivery`), else `never`.
    pub deletes: bool,
    /// Why this delete policy (for a comment).
    pub delete_why: &'static str,
}

/// The proposals and what could not be carried over.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Imported {
    pub mailboxes: Vec<Proposal>,
    pub notes: Vec<String>,
}

pub fn parse(tool: RcTool, text: &str) -> Imported {
    match tool {
        RcTool::Fetchmail => fetchmail(text),
        RcTool::Getmail => getmail(text),
    }
}

/// fetchmailrc words: quoted strings (with backslash escapes) and bare words; `#` comments;
/// `,`, `;` and `:` are noise.
fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut chars = line.chars().peekable();
        while let Some(&c) = chars.peek() {
            if c.is_whitespace() || c == ',' || c == ';' || c == ':' {
                chars.next();
            } else if c == '#' {
                break;
            } else if c == '"' || c == '\'' {
                chars.next();
                let mut w = String::new();
                while let Some(d) = chars.next() {
                    match d {
                        '\\' => {
                            if let Some(e) = chars.next() {
                                w.push(e);
                            }
                        }
                        d if d == c => break,
                        d => w.push(d),
                    }
                }
                out.push(w);
            } else {
                let mut w = String::new();
                while let Some(&d) = chars.peek() {
                    if d.is_whitespace() || d == ',' || d == ';' || d == ':' {
                        break;
                    }
                    w.push(d);
                    chars.next();
                }
                out.push(w);
            }
        }
    }
    out
}

struct Server {
    host: String,
    protocol: Option<String>,
    port: Option<u16>,
    /// `ssl`/`keep` written before the first `user`: for every user of the entry.
    ssl: bool,
    keep: bool,
    users: Vec<User>,
}

#[derive(Default)]
struct User {
    name: String,
    ssl: bool,
    keep: bool,
}

fn fetchmail(text: &str) -> Imported {
    let mut out = Imported::default();
    let mut servers: Vec<Server> = Vec::new();
    let mut defaults_ssl = false;
    let mut defaults_keep = false;
    let mut in_defaults = false;
    let mut it = words(text).into_iter().peekable();
    while let Some(w) = it.next() {
        let lw = w.to_ascii_lowercase();
        match lw.as_str() {
            "poll" | "server" | "skip" => {
                in_defaults = false;
                let host = it.next().unwrap_or_default();
                if lw == "skip" {
                    out.notes.push(format!(
                        "{host}: marked `skip` in the file; proposed anyway"
                    ));
                }
                servers.push(Server {
                    host,
                    protocol: None,
                    port: None,
                    ssl: defaults_ssl,
                    keep: defaults_keep,
                    users: Vec::new(),
                });
            }
            "defaults" => in_defaults = true,
            "set" => {
                // `set daemon 300`, `set logfile …`: one value each.
                it.next();
                if it.peek().is_some_and(|v| !is_keyword(v)) {
                    it.next();
                }
            }
            "proto" | "protocol" => {
                let p = it.next().unwrap_or_default().to_ascii_lowercase();
                if let Some(s) = servers.last_mut().filter(|_| !in_defaults) {
                    s.protocol = Some(p);
                }
            }
            "port" | "service" => {
                let p = it.next().and_then(|v| v.parse().ok());
                if let Some(s) = servers.last_mut().filter(|_| !in_defaults) {
                    s.port = p;
                }
            }
            "user" | "username" => {
                let name = it.next().unwrap_or_default();
                match servers.last_mut().filter(|_| !in_defaults) {
                    Some(s) => s.users.push(User {
                        name,
                        ssl: s.ssl,
                        keep: s.keep,
                    }),
                    None => out
                        .notes
                        .push("a `user` outside any `poll` entry was ignored".into()),
                }
            }
            "pass" | "password" => {
                // Read past it; never kept.
                it.next();
            }
            "ssl" => match (in_defaults, servers.last_mut()) {
                (true, _) => defaults_ssl = true,
                (false, Some(s)) => match s.users.last_mut() {
                    Some(u) => u.ssl = true,
                    None => s.ssl = true,
                },
                (false, None) => {}
            },
            "keep" => match (in_defaults, servers.last_mut()) {
                (true, _) => defaults_keep = true,
                (false, Some(s)) => match s.users.last_mut() {
                    Some(u) => u.keep = true,
                    None => s.keep = true,
                },
                (false, None) => {}
            },
            "nokeep" | "flush" => {
                if let Some(u) = current_user(&mut servers, in_defaults) {
                    u.keep = false;
                }
            }
            // Options with one value that popbridge does not take over.
            "is" | "mda" | "smtphost" | "smtpname" | "folder" | "sslproto" | "sslcertfile"
            | "sslcertpath" | "sslfingerprint" | "sslcommonname" | "auth" | "authenticate"
            | "timeout" | "via" | "interval" | "preconnect" | "postconnect" | "limit"
            | "fetchlimit" | "batchlimit" | "expunge" | "envelope" | "qvirtual" | "sslkey"
            | "sslcert" | "plugin" | "plugout" | "principal" | "localdomains"
            | "fetchsizelimit" | "fastuidl" | "bsmtp" | "antispam" | "warnings" | "pidfile"
            | "postmaster" => {
                // `is NAME here`: a local name; the rest are one-valued options.
                it.next();
            }
            _ => {}
        }
    }
    for s in servers {
        let proto = s.protocol.clone().unwrap_or_else(|| "auto".into());
        if !matches!(
            proto.as_str(),
            "pop3" | "auto" | "apop" | "rpop" | "kpop" | "sdps"
        ) {
            out.notes.push(format!(
                "{}: protocol {proto} is not POP3; not proposed",
                s.host
            ));
            continue;
        }
        for u in s.users {
            let deletes = !u.keep;
            out.mailboxes.push(proposal(
                &s.host,
                s.port,
                u.ssl,
                &u.name,
                deletes,
                if deletes {
                    "fetchmail deletes retrieved mail unless `keep`"
                } else {
                    "`keep` in the fetchmailrc"
                },
            ));
        }
    }
    out
}

fn is_keyword(w: &str) -> bool {
    matches!(
        w.to_ascii_lowercase().as_str(),
        "poll" | "server" | "skip" | "defaults" | "set"
    )
}

fn current_user(servers: &mut [Server], in_defaults: bool) -> Option<&mut User> {
    if in_defaults {
        return None;
    }
    servers.last_mut().and_then(|s| s.users.last_mut())
}

fn getmail(text: &str) -> Imported {
    let mut out = Imported::default();
    let mut section = String::new();
    let (mut kind, mut server, mut port, mut user) =
        (None::<String>, None::<String>, None, None::<String>);
    let mut delete = false;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.trim().to_ascii_lowercase();
            continue;
        }
        let Some((key, value)) = line.split_once('=').or_else(|| line.split_once(':')) else {
            continue;
        };
        let (key, value) = (key.trim().to_ascii_lowercase(), value.trim().to_string());
        match (section.as_str(), key.as_str()) {
            ("retriever", "type") => kind = Some(value),
            ("retriever", "server") => server = Some(value),
            ("retriever", "port") => port = value.parse().ok(),
            ("retriever", "username") => user = Some(value),
            ("options", "delete") => {
                delete = matches!(
                    value.to_ascii_lowercase().as_str(),
                    "true" | "1" | "yes" | "on"
                )
            }
            _ => {}
        }
    }
    let kind = kind.unwrap_or_default();
    let (Some(server), Some(user)) = (server, user) else {
        out.notes
            .push("no [retriever] with server and username".into());
        return out;
    };
    if !kind.contains("POP3") {
        out.notes
            .push(format!("retriever type {kind:?} is not POP3; not proposed"));
        return out;
    }
    if kind.contains("Multidrop") {
        out.notes.push(
            "a multidrop retriever: consider `routes:` with envelope rules to split it".into(),
        );
    }
    let ssl = kind.contains("SSL");
    out.mailboxes.push(proposal(
        &server,
        port,
        ssl,
        &user,
        delete,
        if delete {
            "[options] delete = true"
        } else {
            "getmail keeps mail unless [options] delete"
        },
    ));
    out
}

fn proposal(
    host: &str,
    port: Option<u16>,
    ssl: bool,
    user: &str,
    deletes: bool,
    why: &'static str,
) -> Proposal {
    let local = user.split('@').next().unwrap_or(user);
    let name: String = format!("{local}-{host}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let password_var = format!(
        "POP3_PASSWORD_{}",
        name.chars()
            .map(|c| if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            })
            .collect::<String>()
    );
    Proposal {
        name,
        host: host.to_string(),
        port,
        // fetchmail without `ssl` upgrades with STLS when offered; popbridge insists on TLS.
        tls: if ssl { "implicit" } else { "starttls" },
        username: user.to_string(),
        password_var,
        deletes,
        delete_why: why,
    }
}

/// The proposals as YAML to paste under `mailboxes:`.
pub fn render(tool: RcTool, imported: &Imported) -> String {
    let tool = match tool {
        RcTool::Fetchmail => "fetchmail",
        RcTool::Getmail => "getmail",
    };
    let mut s = format!(
        "# Proposed by `popbridge config import --from {tool}`: check each entry, then paste it\n\
         # under `mailboxes:`. Passwords are not copied: set the variables named below.\n"
    );
    for n in &imported.notes {
        s.push_str(&format!("# note: {n}\n"));
    }
    s.push_str("mailboxes:\n");
    for m in &imported.mailboxes {
        s.push_str(&format!(
            "  - name: {}\n    pop3:\n      host: {}\n",
            yaml(&m.name),
            yaml(&m.host)
        ));
        if let Some(p) = m.port {
            s.push_str(&format!("      port: {p}\n"));
        }
        s.push_str(&format!(
            "      tls: {}\n      username: {}\n      password: ${{{}}}\n",
            m.tls,
            yaml(&m.username),
            m.password_var
        ));
        s.push_str(&format!(
            "    delete: {}   # {}\n    sinks: [archive]   # change: where this mailbox's mail goes\n",
            if m.deletes { "after_delivery" } else { "never" },
            m.delete_why
        ));
    }
    s
}

/// A YAML scalar, quoted.
fn yaml(v: &str) -> String {
    format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
}

#[cfg(test)]
mod tests;
