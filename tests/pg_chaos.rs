//! Chaos on several replicas: three `popbridge run` processes on one private PostgreSQL, a real
//! Dovecot with six mailboxes, every sink at once (Maildir, a webhook receiver, IMAP accounts on
//! the same Dovecot, S3), `delete: after_delivery`. During the run one replica is SIGKILLed (and
//! replaced), PostgreSQL crashes and recovers (`pg_ctl -m immediate`), and another replica is
//! SIGSTOPped in the middle of a delivery for longer than its lease and then SIGCONTed.
//!
//! Afterwards every message is exactly once in every sink and under one `webhook-id`; nothing
//! left a POP3 mailbox before every sink held it; the paused replica woke up stale and its
//! writes were refused (it logs the fenced write); and an audit trigger in the database, which
//! compares each state write's connection (`application_name` = replica id) with the lease
//! owner at that moment, saw no write by a replica that did not own the mailbox.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod support;

use common::{assert_exactly_once, imap_bodies, mail, maildir_bodies, Bridge, Mailbox, User};
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use support::receiver::{webhook_state, Receiver};
use support::s3::{S3Server, ACCESS_KEY, BUCKET, SECRET_KEY};

#[path = "common/postgres.rs"]
mod postgres;

const MAILBOXES: usize = 6;
const PER_MAILBOX: usize = 20;
/// Messages per mailbox in each of the two later batches.
const LATER_BATCH: usize = 6;
const LEASE_TTL: &str = "2s";
/// The text of `StoreError::Fenced`, as a replica logs it.
const FENCED: &str = "its lease is no longer ours";

/// Records every state write made by a replica that did not own the mailbox's lease at that
/// moment. A fenced write reads the lease row `FOR SHARE` first, so the owner cannot change
/// under it; an unfenced stale write shows up here.
const AUDIT: &str = "
CREATE TABLE stale_writes (tbl TEXT, op TEXT, mailbox TEXT, writer TEXT, owner TEXT);
CREATE FUNCTION audit_owner() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE mb TEXT; o TEXT; me TEXT := current_setting('application_name');
BEGIN
  IF TG_OP = 'DELETE' THEN mb := OLD.mailbox; ELSE mb := NEW.mailbox; END IF;
  SELECT owner INTO o FROM mailbox_lease WHERE mailbox = mb;
  IF o IS NULL OR left(o, length(me)) <> me THEN
    INSERT INTO stale_writes VALUES (TG_TABLE_NAME, TG_OP, mb, me, o);
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON messages
  FOR EACH ROW EXECUTE FUNCTION audit_owner();
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON deliveries
  FOR EACH ROW EXECUTE FUNCTION audit_owner();
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON retrieval_failures
  FOR EACH ROW EXECUTE FUNCTION audit_owner();
";

async fn sql(url: &str, text: &str) -> Vec<String> {
    use sqlx::{Connection, Row};
    let mut c = sqlx::PgConnection::connect(url).await.unwrap();
    let mut out = Vec::new();
    for r in sqlx::raw_sql(text).fetch_all(&mut c).await.unwrap() {
        let cols = (0..r.len())
            .map(|i| {
                r.try_get::<Option<String>, _>(i)
                    .unwrap()
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>();
        out.push(cols.join(" "));
    }
    out
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {}", child.id());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_under_kill_pause_and_database_crash_deliver_exactly_once() {
    let dc = dovecot_or_skip!();
    let Some(pg) = postgres::start_durable_or_skip() else {
        return;
    };
    let clock = Instant::now();
    let sources: Vec<User> = (0..MAILBOXES).map(|_| dc.add_user("pgcsrc")).collect();
    let targets: Vec<User> = (0..MAILBOXES).map(|_| dc.add_user("pgcdst")).collect();
    // Mail arrives in three batches: one at the start, and one before each of steps 2 and 3,
    // so those steps always find work under way however fast the first batch went.
    let expected: RefCell<Vec<Vec<Vec<u8>>>> = RefCell::new(vec![Vec::new(); MAILBOXES]);
    let seed_batch = |batch: usize, n: usize| {
        for (i, src) in sources.iter().enumerate() {
            let msgs = mail::corpus(&format!("pgchaos{i}b{batch}"), n);
            dc.seed(src, &msgs);
            expected.borrow_mut()[i].extend(msgs);
        }
    };
    seed_batch(0, PER_MAILBOX);
    // Replicas 0 and 2 share a quick receiver; replica 1 has its own slow one, so the test
    // can pause it while one of its deliveries is in flight.
    let rx = Receiver::start().await;
    let slow = Receiver::start().await;
    *slow.shared.delay.lock().unwrap() = Some(Duration::from_millis(700));
    *rx.shared.delay.lock().unwrap() = Some(Duration::from_millis(20));
    let s3 = S3Server::start().await;

    let mailboxes: Vec<Mailbox> = sources
        .iter()
        .zip(&targets)
        .map(|(src, dst)| Mailbox {
            delete: "after_delivery",
            every: "1s",
            ..Mailbox::new(&dst.name, src)
        })
        .collect();
    let bridge = Bridge::new(dc, &mailboxes);
    let pw = bridge.dir.path().join("pw");
    std::fs::create_dir_all(&pw).unwrap();
    for dst in &targets {
        std::fs::write(pw.join(&dst.name), &dst.password).unwrap();
    }
    let retry = "    retry: { attempts_per_poll: 3, initial_backoff: 5ms, max_backoff: 20ms, window: 1h }\n";
    let sinks = |url: &str| {
        format!(
            "sinks:\n  - name: archive\n    type: maildir\n    path: ./mail/{{mailbox}}\n\
             \x20 - name: hook\n    type: webhook\n    url: {url}\n    format: raw\n    secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n    concurrency: 2\n{retry}\
             \x20 - name: imap\n    type: imap\n    host: localhost\n    port: {imap}\n    tls: starttls\n    ca_file: {ca}\n    username: \"{{mailbox}}\"\n    password_file: ./pw/{{mailbox}}\n    timeout: 10s\n{retry}\
             \x20 - name: lake\n    type: s3\n    bucket: {BUCKET}\n    endpoint: {s3}\n    access_key_id: {ACCESS_KEY}\n    secret_access_key: \"{SECRET_KEY}\"\n    timeout: 10s\n{retry}",
            imap = dc.imap_port,
            ca = dc.ca_file.display(),
            s3 = s3.url,
        )
    };
    let base = std::fs::read_to_string(&bridge.config).unwrap().replace(
        "    sinks: [archive]\n",
        "    sinks: [archive, hook, imap, lake]\n",
    );
    let configs: Vec<std::path::PathBuf> = (0..3)
        .map(|i| {
            let url = if i == 1 { &slow.url } else { &rx.url };
            let state = format!(
                "state:\n  url: {}\n  lease_ttl: {LEASE_TTL}\n  spool_dir: ./spool{i}\nhttp:\n  listen: 127.0.0.1:0\n",
                pg.url()
            );
            let text = base
                .replace("state:\n  path: ./state/popbridge.db\n", &state)
                .replace(
                    "sinks:\n  - name: archive\n    type: maildir\n    path: ./mail/{mailbox}\n",
                    &sinks(url),
                );
            assert!(text.contains("lease_ttl") && text.contains("type: s3"), "{text}");
            let path = bridge.dir.path().join(format!("r{i}.yaml"));
            std::fs::write(&path, text).unwrap();
            path
        })
        .collect();
    let env: Vec<(String, String)> = std::fs::read_to_string(&bridge.config)
        .unwrap()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("password: ${"))
        .map(|v| v.trim_end_matches('}').to_string())
        .zip(sources.iter().map(|u| u.password.clone()))
        .collect();
    assert_eq!(env.len(), MAILBOXES);
    let mut launched = 0;
    let mut spawn = |i: usize| {
        launched += 1;
        let log = bridge.dir.path().join(format!("r{i}-{launched}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_popbridge"))
            .args(["run", "-c"])
            .arg(&configs[i])
            .current_dir(bridge.dir.path())
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env(
                "RUST_LOG",
                "info,popbridge::sink::imap=debug,popbridge::engine=debug",
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        common::kill_when_gone(child.id(), false);
        (child, log)
    };
    let logs = |paths: &[std::path::PathBuf]| {
        paths
            .iter()
            .map(|p| {
                format!(
                    "== {}\n{}",
                    p.display(),
                    std::fs::read_to_string(p).unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };

    // The schema (the first replica would make it too) and the audit trigger, before any write.
    let audit = popbridge::store::PgStore::open(&popbridge::store::postgres::PgSettings {
        url: popbridge::secret::Secret::new(pg.url()),
        password: None,
        timeout: Duration::from_secs(10),
        application_name: "popbridge-test".into(),
    })
    .await
    .unwrap();
    sql(&pg.url(), AUDIT).await;

    // The servers are read first: a message deleted after that read was in every sink before,
    // so reading the sinks afterwards cannot miss one in flight.
    let check_nothing_lost = |when: &str| {
        let on_server: Vec<HashSet<Vec<u8>>> = sources
            .iter()
            .map(|src| dc.list_server_messages(src).into_iter().collect())
            .collect();
        let (hooked, _) = webhook_state(&[&rx, &slow]);
        let in_s3: HashSet<Vec<u8>> = support::s3::objects(&s3.root).into_iter().collect();
        for i in 0..sources.len() {
            let maildir: HashSet<Vec<u8>> = maildir_bodies(&bridge.maildir(&targets[i].name))
                .into_iter()
                .collect();
            let imap: HashSet<Vec<u8>> = imap_bodies(&targets[i]).into_iter().collect();
            for m in expected.borrow()[i]
                .iter()
                .filter(|m| !on_server[i].contains(*m))
            {
                let id = mail::id_of(m);
                assert!(
                    maildir.contains(m),
                    "{when}: {id} deleted, not in the Maildir"
                );
                assert!(imap.contains(m), "{when}: {id} deleted, not in IMAP");
                assert!(in_s3.contains(m), "{when}: {id} deleted, not in S3");
                assert!(
                    hooked.contains(m),
                    "{when}: {id} deleted without a webhook 2xx"
                );
            }
        }
    };
    let mut log_paths = Vec::new();
    let mut replicas: Vec<Child> = Vec::new();
    for i in 0..3 {
        let (c, log) = spawn(i);
        replicas.push(c);
        log_paths.push(log);
    }
    let dir = bridge.dir.path().to_path_buf();
    // The last lines of every replica's log, for a timeout's message.
    let tails = move || {
        let mut out = String::new();
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            if e.path().extension().is_some_and(|x| x == "log") {
                let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let from = lines.len().saturating_sub(12);
                out += &format!("== {}\n{}\n", e.path().display(), lines[from..].join("\n"));
            }
        }
        out
    };
    let wait = |what: &str, limit: Duration, check: &mut dyn FnMut() -> bool| {
        let start = Instant::now();
        while !check() {
            check_nothing_lost(what);
            assert!(start.elapsed() < limit, "timed out: {what}\n{}", tails());
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let owners = || -> HashMap<String, String> {
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(async {
                audit
                    .leases()
                    .await
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|r| Some((r.mailbox, r.owner?)))
                    .collect()
            })
        })
    };
    let holds = |child: &Child, owners: &HashMap<String, String>| -> Vec<String> {
        let tag = format!("-{}-", child.id());
        owners
            .iter()
            .filter(|(_, o)| o.contains(&tag))
            .map(|(m, _)| m.clone())
            .collect()
    };

    // 1. Work under way on all three, then SIGKILL replica 0 and start a replacement.
    tokio::task::block_in_place(|| {
        wait(
            "every replica holds a lease",
            Duration::from_secs(30),
            &mut || {
                let o = owners();
                replicas.iter().all(|c| !holds(c, &o).is_empty()) && rx.requests().len() >= 3
            },
        )
    });
    replicas[0].kill().unwrap();
    replicas[0].wait().unwrap();
    let (c, log) = spawn(0);
    replicas[0] = c;
    log_paths.push(log);

    // 2. PostgreSQL crashes and recovers; the replicas reconnect and go on delivering.
    tokio::time::sleep(Duration::from_millis(300)).await;
    seed_batch(1, LATER_BATCH);
    let before = rx.requests().len() + slow.requests().len();
    pg.restart_immediate();
    tokio::task::block_in_place(|| {
        wait(
            "deliveries going on after the database crash",
            Duration::from_secs(30),
            &mut || rx.requests().len() + slow.requests().len() >= before + 3,
        )
    });

    // 3. SIGSTOP replica 1 while one of its deliveries is in flight, for longer than its
    // lease (its connections stay open: it wakes up stale, not disconnected).
    seed_batch(2, LATER_BATCH);
    tokio::task::block_in_place(|| {
        wait(
            "a delivery of replica 1 in flight",
            Duration::from_secs(30),
            &mut || slow.shared.in_flight.load(Ordering::SeqCst) > 0,
        )
    });
    signal(&replicas[1], "-STOP");
    let paused = holds(&replicas[1], &owners());
    assert!(
        !paused.is_empty(),
        "replica 1 holds no lease while delivering"
    );
    // The paused replica's mailboxes are taken over; only then does it wake up.
    let stopped_pid = replicas[1].id();
    tokio::task::block_in_place(|| {
        wait(
            "the paused replica's mailboxes taken over",
            Duration::from_secs(30),
            &mut || {
                let o = owners();
                paused.iter().all(|m| {
                    o.get(m)
                        .is_some_and(|x| !x.contains(&format!("-{stopped_pid}-")))
                })
            },
        )
    });
    std::thread::sleep(Duration::from_millis(500));
    signal(&replicas[1], "-CONT");

    // 4. Everything delivered and deleted.
    tokio::task::block_in_place(|| {
        wait(
            "every mailbox emptied",
            Duration::from_secs(60),
            &mut || {
                sources
                    .iter()
                    .all(|s| dc.list_server_messages(s).is_empty())
            },
        )
    });
    for r in &replicas {
        signal(r, "-TERM");
    }
    for r in &mut replicas {
        let status = r.wait().unwrap();
        assert!(status.success(), "{status:?}\n{}", logs(&log_paths));
    }
    check_nothing_lost("at the end");
    let all_logs = logs(&log_paths);

    let (hooked, by_id) = webhook_state(&[&rx, &slow]);
    let expected = expected.into_inner();
    let all: Vec<Vec<u8>> = expected.iter().flatten().cloned().collect();
    // A failure here prints every replica's log: which replica sent what, and when.
    let exactly_once = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        eprintln!("checking S3");
        assert_exactly_once(&all, &support::s3::objects(&s3.root));
        for (i, t) in targets.iter().enumerate() {
            eprintln!("checking the Maildir of mailbox {i} ({})", t.name);
            assert_exactly_once(&expected[i], &maildir_bodies(&bridge.maildir(&t.name)));
            eprintln!("checking the IMAP account of mailbox {i} ({})", t.name);
            assert_exactly_once(&expected[i], &imap_bodies(t));
        }
    }));
    if let Err(panic) = exactly_once {
        eprintln!("{all_logs}");
        std::panic::resume_unwind(panic);
    }
    for m in &all {
        assert!(hooked.contains(m), "{} never got a 2xx", mail::id_of(m));
    }
    assert_eq!(by_id.len(), all.len(), "webhook-ids: one per message");
    assert!(
        by_id.values().all(|b| b.len() == 1),
        "a webhook-id carried two bodies"
    );

    let stale = sql(
        &pg.url(),
        "SELECT tbl, op, mailbox, writer, owner FROM stale_writes",
    )
    .await;
    assert!(
        stale.is_empty(),
        "{} state writes by a replica that did not own the mailbox, e.g.:\n{}",
        stale.len(),
        stale
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    let paused_log = std::fs::read_to_string(&log_paths[1]).unwrap();
    let fenced = paused_log.matches(FENCED).count();
    // Woken up, it tried to write and was refused: fenced, or, when the SIGSTOP fell inside a
    // transaction (holding the lease row FOR SHARE), that transaction was ended by the server's
    // idle_in_transaction_session_timeout (popbridge sets it on its connections) so the
    // takeover could go on, and the poll failed on that state write.
    let cut_off = paused_log.contains("kind=\"state\"");
    assert!(
        fenced > 0 || cut_off,
        "the paused replica never had a write refused:\n{all_logs}"
    );
    eprintln!(
        "paused replica: {fenced} fenced write(s) logged; took over {paused:?}; \
         webhook requests {} + {} (slow); wall {:?}",
        rx.requests().len(),
        slow.requests().len(),
        clock.elapsed()
    );
}
