//! Several `popbridge run` replicas on one private PostgreSQL and a real Dovecot: mailboxes are
//! split between them by lease, a SIGKILLed replica's mailboxes are taken over, every message
//! ends up exactly once in the (shared) Maildir sink, and nothing leaves a POP3 mailbox before
//! the sink holds it. A SIGTERMed replica releases its leases.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{assert_exactly_once, mail, Bridge, Mailbox, User};
use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "common/postgres.rs"]
mod postgres;

const MAILBOXES: usize = 6;
const FIRST: usize = 20;
const SECOND: usize = 20;

fn spawn(b: &Bridge, users: &[User], i: usize) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_popbridge"));
    cmd.args(["run", "-c"])
        .arg(b.dir.path().join(format!("r{i}.yaml")))
        .current_dir(b.dir.path())
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(b.dir.path().join(format!("r{i}.log"))).unwrap());
    for (n, u) in users.iter().enumerate() {
        cmd.env(format!("PB_TEST_PASS_M{n}"), &u.password);
    }
    cmd.spawn().unwrap()
}

/// Every message no longer on the server is in the sink (server read first: deliveries come
/// before deletions, so this order cannot miss one in flight).
fn nothing_deleted_before_delivered(
    dc: &common::Dovecot,
    b: &Bridge,
    users: &[User],
    sent: &[Vec<Vec<u8>>],
) {
    for (n, u) in users.iter().enumerate() {
        let on_server: HashSet<Vec<u8>> = dc.list_server_messages(u).into_iter().collect();
        let held: HashSet<Vec<u8>> = b.delivered(&format!("m{n}")).into_iter().collect();
        for m in &sent[n] {
            assert!(
                on_server.contains(m) || held.contains(m),
                "{} left mailbox m{n} before the sink held it",
                mail::id_of(m)
            );
        }
    }
}

fn wait_until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "timed out after {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn all_done(dc: &common::Dovecot, b: &Bridge, users: &[User], sent: &[Vec<Vec<u8>>]) -> bool {
    users.iter().enumerate().all(|(n, u)| {
        dc.list_server_messages(u).is_empty()
            && b.delivered(&format!("m{n}")).len() == sent[n].len()
    })
}

async fn leases(url: &str) -> Vec<popbridge::store::lease::LeaseRow> {
    let s = popbridge::store::PgStore::open(&popbridge::store::postgres::PgSettings {
        url: popbridge::secret::Secret::new(url),
        password: None,
        timeout: Duration::from_secs(10),
        application_name: "popbridge-test".into(),
    })
    .await
    .unwrap();
    s.leases().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_mailboxes_and_take_over_a_killed_one() {
    let dc = dovecot_or_skip!();
    let Some(pg) = postgres::start_or_skip() else {
        return;
    };
    let users: Vec<User> = (0..MAILBOXES).map(|_| dc.add_user("pgrep")).collect();
    let names: Vec<String> = (0..MAILBOXES).map(|n| format!("m{n}")).collect();
    let boxes: Vec<Mailbox> = users
        .iter()
        .zip(&names)
        .map(|(u, n)| Mailbox {
            delete: "after_delivery",
            every: "1s",
            ..Mailbox::new(n, u)
        })
        .collect();
    let b = Bridge::new(dc, &boxes);
    let yaml = std::fs::read_to_string(&b.config).unwrap();
    for i in 0..3 {
        let state = format!(
            "state:\n  url: {}\n  lease_ttl: 3s\n  spool_dir: ./spool{i}\nhttp:\n  listen: 127.0.0.1:0\n",
            pg.url()
        );
        let text = yaml.replace("state:\n  path: ./state/popbridge.db\n", &state);
        assert_ne!(text, yaml, "the harness config changed:\n{yaml}");
        std::fs::write(b.dir.path().join(format!("r{i}.yaml")), text).unwrap();
    }
    let mut sent: Vec<Vec<Vec<u8>>> = Vec::new();
    for (n, u) in users.iter().enumerate() {
        let msgs = mail::corpus(&format!("pgrep{n}a"), FIRST);
        dc.seed(u, &msgs);
        sent.push(msgs);
    }
    let mut replicas: Vec<Child> = (0..3).map(|i| spawn(&b, &users, i)).collect();
    let logs = || {
        (0..3)
            .map(|i| {
                std::fs::read_to_string(b.dir.path().join(format!("r{i}.log"))).unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n----\n")
    };
    wait_until(
        "the first batch delivered and deleted",
        Duration::from_secs(60),
        || {
            nothing_deleted_before_delivered(dc, &b, &users, &sent);
            all_done(dc, &b, &users, &sent)
        },
    );
    // Shared fairly: once the three have met, each holds at most its share (2 of 6)
    // (the first one up claimed everything and hands the excess over).
    let fair = |rows: &[popbridge::store::lease::LeaseRow]| {
        let owners: Vec<&String> = rows.iter().filter_map(|r| r.owner.as_ref()).collect();
        let distinct: HashSet<&String> = owners.iter().copied().collect();
        owners.len() == MAILBOXES
            && distinct.len() == 3
            && distinct
                .iter()
                .all(|o| owners.iter().filter(|x| *x == o).count() <= 2)
    };
    let start = Instant::now();
    let mut rows = leases(&pg.url()).await;
    while !fair(&rows) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "not shared fairly: {rows:?}\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        rows = leases(&pg.url()).await;
    }
    let killed = replicas[0].id();
    let victims: Vec<String> = rows
        .iter()
        .filter(|r| {
            r.owner
                .as_deref()
                .is_some_and(|o| o.contains(&format!("-{killed}-")))
        })
        .map(|r| r.mailbox.clone())
        .collect();
    assert!(!victims.is_empty(), "{rows:?}");
    // SIGKILL one replica, then new mail everywhere: its mailboxes must be taken over.
    replicas[0].kill().unwrap();
    replicas[0].wait().unwrap();
    let killed_at = Instant::now();
    for (n, u) in users.iter().enumerate() {
        let msgs = mail::corpus(&format!("pgrep{n}b"), SECOND);
        dc.seed(u, &msgs);
        sent[n].extend(msgs);
    }
    wait_until(
        &format!("the second batch delivered after a kill\n{}", logs()),
        Duration::from_secs(60),
        || {
            nothing_deleted_before_delivered(dc, &b, &users, &sent);
            all_done(dc, &b, &users, &sent)
        },
    );
    eprintln!(
        "killed replica held {victims:?}; everything delivered {:?} after the kill",
        killed_at.elapsed()
    );
    let rows = leases(&pg.url()).await;
    for r in &rows {
        let owner = r.owner.clone().unwrap_or_default();
        assert!(
            !owner.contains(&format!("-{killed}-")),
            "{} still held by the killed replica: {rows:?}",
            r.mailbox
        );
    }
    for (n, name) in names.iter().enumerate() {
        assert_exactly_once(&sent[n], &b.delivered(name));
    }
    // SIGTERM: the survivors end cleanly and release every lease.
    for r in &mut replicas[1..] {
        Command::new("kill")
            .args(["-TERM", &r.id().to_string()])
            .status()
            .unwrap();
    }
    for r in &mut replicas[1..] {
        let status = r.wait().unwrap();
        assert!(status.success(), "{status:?}\n{}", logs());
    }
    let rows = leases(&pg.url()).await;
    assert!(rows.iter().all(|r| r.owner.is_none()), "{rows:?}");
}

fn median_and_range(mut xs: Vec<Duration>) -> String {
    xs.sort();
    let ms = |d: Duration| d.as_millis();
    format!(
        "n={} min={}ms median={}ms max={}ms",
        xs.len(),
        ms(xs[0]),
        ms(xs[xs.len() / 2]),
        ms(xs[xs.len() - 1])
    )
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").unwrap_or_default()
}

/// Takeover, measured: a SIGKILLed replica's mailboxes are claimed by a peer once its leases
/// expire (lease TTL + up to one claim interval); a SIGTERMed one releases its leases before it
/// exits and peers, woken by its `NOTIFY`, claim them at once. The distributions are printed
/// (not asserted: the machine is shared); what is asserted is that a stopped replica leaves no
/// lease behind and that every mailbox gets a new owner. `state leases --json` is the view.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeover_after_kill_waits_for_the_lease_and_after_sigterm_is_immediate() {
    let dc = dovecot_or_skip!();
    let Some(pg) = postgres::start_or_skip() else {
        return;
    };
    let users: Vec<User> = (0..MAILBOXES).map(|_| dc.add_user("pgtake")).collect();
    let names: Vec<String> = (0..MAILBOXES).map(|n| format!("m{n}")).collect();
    let boxes: Vec<Mailbox> = users
        .iter()
        .zip(&names)
        .map(|(u, n)| Mailbox {
            every: "1s",
            ..Mailbox::new(n, u)
        })
        .collect();
    let b = Bridge::new(dc, &boxes);
    let yaml = std::fs::read_to_string(&b.config).unwrap();
    let ttl = Duration::from_secs(2);
    for i in 0..3 {
        let state = format!(
            "state:\n  url: {}\n  lease_ttl: 2s\n  spool_dir: ./spool{i}\nhttp:\n  listen: 127.0.0.1:0\n",
            pg.url()
        );
        let text = yaml.replace("state:\n  path: ./state/popbridge.db\n", &state);
        assert_ne!(text, yaml, "the harness config changed:\n{yaml}");
        std::fs::write(b.dir.path().join(format!("r{i}.yaml")), text).unwrap();
    }
    let mut replicas: Vec<Child> = (0..3).map(|i| spawn(&b, &users, i)).collect();
    for r in &replicas {
        common::kill_when_gone(r.id(), false);
    }
    let url = pg.url();
    let held_by = |rows: &[popbridge::store::lease::LeaseRow], pid: u32| -> Vec<String> {
        rows.iter()
            .filter(|r| {
                r.owner
                    .as_deref()
                    .is_some_and(|o| o.contains(&format!("-{pid}-")))
            })
            .map(|r| r.mailbox.clone())
            .collect()
    };
    // Each of the three holds its share; returns when that is so.
    let settle = |replicas: &[Child]| {
        let pids: Vec<u32> = replicas.iter().map(|c| c.id()).collect();
        let url = url.clone();
        async move {
            let start = Instant::now();
            loop {
                let rows = leases(&url).await;
                if rows.len() == MAILBOXES
                    && pids.iter().all(|p| {
                        let n = held_by(&rows, *p).len();
                        (1..=2).contains(&n)
                    })
                {
                    return rows;
                }
                assert!(
                    start.elapsed() < Duration::from_secs(30),
                    "not shared: {rows:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    // Until every mailbox of `victims` is owned by another replica; how long that took.
    let taken_over = |victims: Vec<String>, pid: u32, from: Instant| {
        let url = url.clone();
        async move {
            loop {
                let rows = leases(&url).await;
                let done = victims.iter().all(|m| {
                    rows.iter().any(|r| {
                        &r.mailbox == m
                            && r.owner
                                .as_deref()
                                .is_some_and(|o| !o.contains(&format!("-{pid}-")))
                    })
                });
                if done {
                    return from.elapsed();
                }
                assert!(
                    from.elapsed() < Duration::from_secs(30),
                    "not taken over: {rows:?}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let mut killed = Vec::new();
    let mut termed = Vec::new();
    for round in 0..6 {
        let rows = settle(&replicas).await;
        let i = round % 3;
        let pid = replicas[i].id();
        let victims = held_by(&rows, pid);
        let at = Instant::now();
        if round % 2 == 0 {
            replicas[i].kill().unwrap();
            replicas[i].wait().unwrap();
            killed.push(taken_over(victims, pid, at).await);
        } else {
            Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .unwrap();
            let status = replicas[i].wait().unwrap();
            assert!(status.success(), "{status:?}");
            // Released before exiting, not left to expire.
            let left = held_by(&leases(&url).await, pid);
            assert!(
                left.is_empty() || at.elapsed() >= ttl,
                "a stopped replica left leases behind: {left:?}"
            );
            termed.push(taken_over(victims, pid, at).await);
        }
        replicas[i] = spawn(&b, &users, i);
        common::kill_when_gone(replicas[i].id(), false);
    }
    // The operator's view of the same rows.
    settle(&replicas).await;
    let out = Command::new(env!("CARGO_BIN_EXE_popbridge"))
        .args(["state", "leases", "--json", "-c"])
        .arg(b.dir.path().join("r0.yaml"))
        .envs(
            users
                .iter()
                .enumerate()
                .map(|(n, u)| (format!("PB_TEST_PASS_M{n}"), u.password.clone())),
        )
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.len(), MAILBOXES, "{rows:?}");
    for r in &rows {
        assert!(
            r["owner"].is_string() && r["epoch"].as_i64() > Some(0),
            "{r}"
        );
        assert!(r["expires_in_ms"].as_i64().is_some_and(|ms| ms > 0), "{r}");
    }
    eprintln!(
        "TAKEOVER lease_ttl=2s claim tick=0.5s; after SIGKILL: {}; after SIGTERM: {}; loadavg {}",
        median_and_range(killed),
        median_and_range(termed),
        load_average()
    );
    for r in &mut replicas {
        Command::new("kill")
            .args(["-TERM", &r.id().to_string()])
            .status()
            .unwrap();
        r.wait().unwrap();
    }
}
