//! Routing rules against a real Dovecot: a catch-all split by the envelope recipient the server
//! wrote (a forged copy written by the sender further down is ignored), fan-out to several
//! sinks, the default sinks, messages kept on the server with a reason and never retrieved
//! (`TOP n 0` only), and a retry (after a failure, or a kill -9 mid-delivery) that routes as
//! recorded although the rules changed.
//!
//! The messages are seeded the way a receiving server leaves them: its `Delivered-To:` on top
//! (Dovecot's LDA/LMTP and Postfix prepend theirs), the sender's own header fields below.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use common::{mail, read_maildir, Bridge, Dovecot, Mailbox, User};
use std::path::Path;

/// A message as delivered to `envelope` (the server's header on top), with `extra` header
/// lines written by the sender.
fn delivered_to(envelope: Option<&str>, id: &str, extra: &str) -> Vec<u8> {
    let top = envelope.map_or(String::new(), |e| format!("Delivered-To: {e}\r\n"));
    format!(
        "{top}Received: from mx.example.org by mail.example.com\r\n{extra}\
         From: Sender <sender@example.org>\r\nTo: sales@example.com, ceo@example.com\r\n\
         Subject: {id}\r\nX-Pb-Id: {id}\r\nMessage-ID: <{id}@popbridge.test>\r\n\r\nHello {id}.\r\n"
    )
    .into_bytes()
}

/// The harness config with the mailbox's `routes: NAME` and a `sinks:` + `routes:` tail.
fn configure(bridge: &Bridge, rule_set: &str, tail: &str) {
    let yaml = std::fs::read_to_string(&bridge.config).unwrap();
    let yaml = yaml.replace(
        "    sinks: [archive]\n",
        &format!("    sinks: [archive]\n    routes: {rule_set}\n"),
    );
    std::fs::write(&bridge.config, yaml).unwrap();
    bridge.replace_sinks(tail);
}

/// Sets the routing part again (after `configure`), keeping the mailbox entries.
fn reconfigure(bridge: &Bridge, tail: &str) {
    let yaml = std::fs::read_to_string(&bridge.config).unwrap();
    let at = yaml.find("\nsinks:\n").unwrap();
    std::fs::write(&bridge.config, format!("{}\n{tail}", &yaml[..at])).unwrap();
}

/// The harness bridge for the one mailbox `name`, deleting each message after its delivery.
fn deleting_bridge(dc: &Dovecot, name: &str, user: &User) -> Bridge {
    let mut mb = Mailbox::new(name, user);
    mb.delete = "after_delivery";
    Bridge::new(dc, &[mb])
}

/// The ids of the messages still on the server for `user`.
fn left_on_server(dc: &Dovecot, user: &User) -> Vec<String> {
    dc.list_server_messages(user)
        .iter()
        .map(|m| mail::id_of(m))
        .collect()
}

fn ids(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = read_maildir(dir)
        .iter()
        .map(|(_, body)| mail::id_of(body))
        .collect();
    v.sort();
    v
}

/// The `sinks:` block with the mailbox's own Maildir sink, `archive`.
const ARCHIVE: &str = "sinks:
  - name: archive
    type: maildir
    path: ./mail/{mailbox}
";

/// A second Maildir sink, `junk`, to follow [`ARCHIVE`].
const JUNK: &str = "  - name: junk
    type: maildir
    path: ./junk/{mailbox}
";

#[test]
fn catch_all_split_fans_out_and_ignores_a_forged_envelope_header() {
    let dc = dovecot_or_skip!();
    let user = dc.add_user("route-split");
    dc.seed(
        &user,
        &[
            // The server delivered it to sales@; the sender wrote a Delivered-To for ceo@.
            delivered_to(
                Some("sales@example.com"),
                "forged",
                "Delivered-To: ceo@example.com\r\n",
            ),
            // Spam for support@: the junk sink and the support folder (fan-out).
            delivered_to(Some("support@example.com"), "spam", "X-Spam-Flag: YES\r\n"),
            // No envelope header: To/Cc are never used, the default sink takes it.
            delivered_to(None, "nobody", ""),
        ],
    );
    let bridge = Bridge::new(dc, &[Mailbox::new("catch", &user)]);
    configure(
        &bridge,
        "split",
        &format!(
            "{ARCHIVE}{JUNK}routes:
  split:
    envelope_header: Delivered-To
    rules:
      - name: spam
        match: {{ headers: {{ X-Spam-Flag: '^YES' }} }}
        to: [{{ sink: junk }}]
      - name: by-recipient
        match: {{ envelope: '^(?P<user>[a-z]+)@example\\.com$' }}
        to: [{{ sink: archive, subfolder: '{{user}}' }}]
"
        ),
    );
    let run = bridge.once();
    assert!(run.ok(), "{}", run.output());
    let maildir = bridge.maildir("catch");
    assert_eq!(ids(&maildir.join(".sales")), vec!["forged"]);
    assert!(
        !maildir.join(".ceo").exists(),
        "the sender's forged Delivered-To was used"
    );
    assert_eq!(ids(&maildir.join(".support")), vec!["spam"]);
    assert_eq!(ids(&bridge.dir.path().join("junk/catch")), vec!["spam"]);
    // Unmatched: the mailbox's own sink, at the Maildir's root.
    assert_eq!(ids(&maildir), vec!["nobody"]);

    // A second run delivers nothing again.
    let run = bridge.once();
    assert!(run.ok(), "{}", run.output());
    assert_eq!(ids(&maildir.join(".support")), vec!["spam"]);
    assert_eq!(ids(&bridge.dir.path().join("junk/catch")), vec!["spam"]);
}

#[test]
fn unmatched_messages_stay_on_the_server_with_a_reason_and_are_never_retrieved() {
    let dc = dovecot_or_skip!();
    let user = dc.add_user("route-keep");
    dc.seed(
        &user,
        &[
            delivered_to(Some("sales@example.com"), "wanted", ""),
            delivered_to(Some("other@elsewhere.org"), "kept1", ""),
            // The server added no Delivered-To; the sender's, below `Received:`, does not count.
            delivered_to(None, "kept2", "Delivered-To: sales@example.com\r\n"),
        ],
    );
    let bridge = deleting_bridge(dc, "keep", &user);
    configure(
        &bridge,
        "only-sales",
        &format!(
            "{ARCHIVE}{JUNK}routes:
  only-sales:
    unmatched: keep
    rules:
      - name: sales
        match: {{ envelope: '^sales@example\\.com$' }}
        to: [{{ sink: archive }}]
"
        ),
    );
    // plan says so before anything happens.
    let plan = bridge.run(&["plan", "--json"]);
    assert!(plan.ok(), "{}", plan.output());
    let p: serde_json::Value = serde_json::from_str(&plan.stdout).unwrap();
    let steps = p[0]["steps"].as_array().unwrap();
    let kept: Vec<&serde_json::Value> = steps.iter().filter(|s| s["action"] == "keep").collect();
    assert_eq!(kept.len(), 2, "{p:#}");
    assert!(
        kept.iter().all(|s| s["why"]
            .as_str()
            .unwrap()
            .contains("no routing rule of only-sales matched")),
        "{p:#}"
    );
    let fetch: Vec<&serde_json::Value> = steps.iter().filter(|s| s["action"] == "fetch").collect();
    assert_eq!(fetch.len(), 1, "{p:#}");
    assert!(
        fetch[0]["why"]
            .as_str()
            .unwrap()
            .contains("route sales -> archive"),
        "{p:#}"
    );

    let run = bridge.once();
    assert!(run.ok(), "{}", run.output());
    assert!(
        run.output()
            .contains("kept on the server by the routing rules"),
        "{}",
        run.output()
    );
    assert_eq!(ids(&bridge.maildir("keep")), vec!["wanted"]);
    let left = left_on_server(dc, &user);
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left.contains(&"kept1".to_string()) && left.contains(&"kept2".to_string()));
    // Only the routed message was retrieved; the others were read with TOP (headers only).
    let sessions: Vec<String> = dc
        .log()
        .lines()
        .filter(|l| l.contains(&format!("pop3({}", user.name)) && l.contains("retr="))
        .map(str::to_string)
        .collect();
    let retrieved: usize = sessions
        .iter()
        .map(|l| {
            let n = l.split("retr=").nth(1).unwrap();
            n[..n.find('/').unwrap()].parse::<usize>().unwrap()
        })
        .sum();
    assert_eq!(retrieved, 1, "{sessions:#?}");
    assert!(sessions.iter().any(|l| l.contains("top=")), "{sessions:#?}");
}

#[test]
fn a_retry_routes_as_recorded_even_after_the_rules_changed() {
    let dc = dovecot_or_skip!();
    let user = dc.add_user("route-retry");
    dc.seed(
        &user,
        &[
            delivered_to(Some("sales@example.com"), "first", ""),
            delivered_to(Some("spam@example.com"), "second", "X-Spam-Flag: YES\r\n"),
        ],
    );
    let bridge = deleting_bridge(dc, "retry", &user);
    let quick = "    retry: { attempts_per_poll: 1, initial_backoff: 10ms, max_backoff: 10ms }\n";
    let sinks = format!("{ARCHIVE}{JUNK}").replace(
        "    path: ./mail/{mailbox}\n",
        &format!("    path: ./mail/{{mailbox}}\n{quick}"),
    );
    let sinks = sinks.replace(
        "    path: ./junk/{mailbox}\n",
        &format!("    path: ./junk/{{mailbox}}\n{quick}"),
    );
    configure(
        &bridge,
        "v1",
        &format!(
            "{sinks}routes:
  v1:
    rules:
      - name: spam
        match: {{ headers: {{ X-Spam-Flag: '^YES' }} }}
        to: [{{ sink: junk }}]
        stop: true
      - name: v1
        match: {{ envelope: '^(?P<user>[a-z]+)@example\\.com$' }}
        to: [{{ sink: archive, subfolder: 'v1-{{user}}' }}]
"
        ),
    );
    // Both deliveries fail (a file where the Maildir's `new/` should be): the decisions are
    // recorded, the messages wait on the server.
    let block = |dir: &Path| {
        std::fs::create_dir_all(dir.join("tmp")).unwrap();
        std::fs::write(dir.join("new"), b"not a directory").unwrap();
    };
    let v1_sales = bridge.maildir("retry").join(".v1-sales");
    let junk = bridge.dir.path().join("junk/retry");
    block(&v1_sales);
    block(&junk);
    let run = bridge.once();
    assert!(!run.ok(), "{}", run.output());
    assert_eq!(dc.list_server_messages(&user).len(), 2);

    // The rules change meanwhile: another folder, and the junk sink is removed.
    reconfigure(
        &bridge,
        &format!(
            "{ARCHIVE}routes:
  v1:
    rules:
      - name: v2
        match: {{ envelope: '^(?P<user>[a-z]+)@example\\.com$' }}
        to: [{{ sink: archive, subfolder: 'v2-{{user}}' }}]
"
        ),
    );
    std::fs::remove_file(v1_sales.join("new")).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(50));
    let plan = bridge.run(&["plan", "--json"]);
    assert!(plan.ok(), "{}", plan.output());
    assert!(
        plan.stdout
            .contains("recorded route v1 -> archive(subfolder=v1-sales)"),
        "{}",
        plan.stdout
    );
    let run = bridge.once();
    // The first goes where it was routed before the change, never to the new folder.
    assert_eq!(ids(&v1_sales), vec!["first"]);
    assert!(!bridge.maildir("retry").join(".v2-sales").exists());
    assert!(!bridge.maildir("retry").join(".v2-spam").exists());
    // The second was routed to a sink that no longer exists: kept on the server, and said.
    assert!(!run.ok(), "{}", run.output());
    assert!(
        run.output().contains("no longer configured"),
        "{}",
        run.output()
    );
    let left = left_on_server(dc, &user);
    assert_eq!(left, vec!["second"]);
}

/// An HTTP receiver on its own thread answering 200 to every request; gives the request lines
/// and `X-User` headers it saw.
fn receiver() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                if request.is_empty() || lower.starts_with("x-user:") {
                    request.push_str(line.trim_end());
                    request.push(' ');
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            log.lock().unwrap().push(request);
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (port, seen)
}

#[test]
fn a_delivery_killed_mid_way_is_routed_as_recorded_after_the_rules_changed() {
    let dc = dovecot_or_skip!();
    let user = dc.add_user("route-kill");
    dc.seed(
        &user,
        &[delivered_to(Some("sales@example.com"), "killed", "")],
    );
    let bridge = deleting_bridge(dc, "kill", &user);
    // A receiver that accepts and never answers: popbridge connects only after it recorded the
    // attempt and its route, and is killed while waiting for the answer.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let tail = |port: u16, version: &str| {
        format!(
            "{ARCHIVE}  - name: hook
    type: webhook
    url: http://127.0.0.1:{port}/in
    format: raw
    timeout: 60s
routes:
  rules:
    rules:
      - name: {version}
        match: {{ envelope: '^(?P<user>[a-z]+)@example\\.com$' }}
        to: [{{ sink: hook, path: '{version}/{{user}}', headers: {{ X-User: '{version}-{{user}}' }} }}]
"
        )
    };
    configure(&bridge, "rules", &tail(silent_port, "v1"));
    let mut child = bridge.spawn(&["once"]);
    silent.set_nonblocking(true).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let _held = loop {
        match silent.accept() {
            Ok((conn, _)) => break conn,
            Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            Err(e) => panic!("popbridge never reached the webhook: {e}"),
        }
    };
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(dc.list_server_messages(&user).len(), 1);

    // Meanwhile the rules change (another path and header) and the receiver answers.
    let (port, seen) = receiver();
    reconfigure(&bridge, &tail(port, "v2"));
    let run = bridge.once();
    assert!(run.ok(), "{}", run.output());
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(seen[0].starts_with("POST /in/v1/sales "), "{seen:?}");
    assert!(
        seen[0].to_ascii_lowercase().contains("x-user: v1-sales"),
        "{seen:?}"
    );
    assert!(dc.list_server_messages(&user).is_empty());
}

/// A multipart message with a PDF attachment.
fn with_attachment(envelope: &str, id: &str) -> Vec<u8> {
    format!(
        "Delivered-To: {envelope}\r\nReceived: from mx.example.org by mail.example.com\r\n\
         From: Sender <sender@example.org>\r\nSubject: {id}\r\nX-Pb-Id: {id}\r\n\
         Message-ID: <{id}@popbridge.test>\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\n\
         Content-Type: text/plain\r\n\r\nSee attached.\r\n--b1\r\n\
         Content-Type: application/pdf; name=\"x.pdf\"\r\n\
         Content-Disposition: attachment; filename=\"x.pdf\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--b1--\r\n"
    )
    .into_bytes()
}

#[test]
fn a_rule_on_attachments_decides_after_retrieval_and_sets_the_imap_folder() {
    let dc = dovecot_or_skip!();
    let user = dc.add_user("route-body");
    let dst = dc.add_user("route-body-dst");
    dc.seed(
        &user,
        &[
            with_attachment("sales@example.com", "with-pdf"),
            delivered_to(Some("sales@example.com"), "plain", ""),
        ],
    );
    let bridge = deleting_bridge(dc, "body", &user);
    configure(
        &bridge,
        "files",
        &format!(
            "{ARCHIVE}  - name: newhome
    type: imap
    host: localhost
    port: {port}
    tls: starttls
    ca_file: {ca}
    timeout: 10s
    username: {dst}
    password: \"${{ROUTE_BODY_DST}}\"
routes:
  files:
    unmatched: keep
    rules:
      - name: files
        match: {{ has_attachment: true, envelope: '^(?P<user>[a-z]+)@example\\.com$' }}
        to: [{{ sink: newhome, folder: 'Files-{{user}}' }}]
",
            port = dc.imap_port,
            ca = dc.ca_file.display(),
            dst = dst.name,
        ),
    );
    let env = [("ROUTE_BODY_DST", dst.password.as_str())];
    let plan = bridge.run_with_env(&["plan", "--json"], &env);
    assert!(plan.ok(), "{}", plan.output());
    assert!(
        plan.stdout
            .contains("routing rules need the body: decided after retrieval"),
        "{}",
        plan.stdout
    );
    let run = bridge.run_with_env(&["once"], &env);
    assert!(run.ok(), "{}", run.output());
    assert!(
        run.output()
            .contains("kept on the server by the routing rules"),
        "{}",
        run.output()
    );
    // Appended into the folder the rule named (Dovecot's Maildir++ `.Files-sales`).
    assert_eq!(ids(&dst.maildir.join(".Files-sales")), vec!["with-pdf"]);
    assert!(dc.list_server_messages(&dst).is_empty());
    // The routed one is deleted (in a second session: a kept message was retrieved), the
    // other stays.
    let left = left_on_server(dc, &user);
    assert_eq!(left, vec!["plain"]);
}
