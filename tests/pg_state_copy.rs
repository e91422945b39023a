//! `state copy`: a SQLite state moved into PostgreSQL carries on where it stopped. Mail is
//! delivered with SQLite (`delete: never`, so it stays on the server), copied, and polled
//! again with PostgreSQL against the same Dovecot: nothing is fetched or delivered again, and
//! mail that arrives afterwards is delivered once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{assert_exactly_once, mail, Bridge, Mailbox, User};

#[path = "common/postgres.rs"]
mod postgres;

/// The summed field of `once --json`'s per-mailbox reports.
fn total(json: &str, field: &str) -> u64 {
    let reports: Vec<serde_json::Value> = serde_json::from_str(json)
        .unwrap_or_else(|e| panic!("once --json printed no report list ({e}):\n{json}"));
    reports.iter().map(|r| r[field].as_u64().unwrap_or(0)).sum()
}

#[test]
fn a_copied_state_delivers_nothing_again_on_postgres() {
    let dc = dovecot_or_skip!();
    let Some(pg) = postgres::start_or_skip() else {
        return;
    };
    let users: Vec<User> = (0..2).map(|_| dc.add_user("pgcopy")).collect();
    let names = ["c0", "c1"];
    let boxes: Vec<Mailbox> = users
        .iter()
        .zip(names)
        .map(|(u, n)| Mailbox {
            delete: "never",
            ..Mailbox::new(n, u)
        })
        .collect();
    let b = Bridge::new(dc, &boxes);
    let mut sent: Vec<Vec<Vec<u8>>> = Vec::new();
    for (i, u) in users.iter().enumerate() {
        let msgs = mail::corpus(&format!("pgcopy{i}a"), 15);
        dc.seed(u, &msgs);
        sent.push(msgs);
    }
    let first = b.run(&["once", "--json"]);
    assert!(first.ok(), "{}", first.output());
    assert_eq!(total(&first.stdout, "fetched"), 30, "{}", first.output());

    // On SQLite `state leases` lists the mailboxes with the process that holds the lock: none.
    let leases = b.run(&["state", "leases", "--json"]);
    assert!(leases.ok(), "{}", leases.output());
    let rows: Vec<serde_json::Value> = serde_json::from_str(&leases.stdout).unwrap();
    assert_eq!(rows.len(), 2, "{}", leases.stdout);
    assert!(
        rows.iter().all(|r| r["owner"].is_null()),
        "{}",
        leases.stdout
    );

    // The same mailboxes and sinks, with the state in PostgreSQL.
    let sqlite_yaml = std::fs::read_to_string(&b.config).unwrap();
    let pg_yaml = sqlite_yaml.replace(
        "state:\n  path: ./state/popbridge.db\n",
        &format!("state:\n  url: {}\n  lease_ttl: 5s\n", pg.url()),
    );
    assert_ne!(pg_yaml, sqlite_yaml, "the harness config changed");
    let pg_config = b.dir.path().join("pg.yaml");
    std::fs::write(&pg_config, &pg_yaml).unwrap();
    let pg_arg = pg_config.to_str().unwrap();

    let copy = b.run(&["state", "copy", "--to", pg_arg]);
    assert!(copy.ok(), "{}", copy.output());
    assert!(
        copy.stdout.contains("copied 30 message(s), 30 deliveries"),
        "{}",
        copy.output()
    );
    // A second copy would mix two histories: refused, nothing changed.
    let again = b.run(&["state", "copy", "--to", pg_arg]);
    assert!(
        !again.ok() && again.stderr.contains("already holds 30"),
        "{}",
        again.output()
    );

    // Now with PostgreSQL: nothing fetched, nothing delivered again.
    std::fs::write(&b.config, &pg_yaml).unwrap();
    let after = b.run(&["once", "--json"]);
    assert!(after.ok(), "{}", after.output());
    assert_eq!(total(&after.stdout, "fetched"), 0, "{}", after.output());
    assert_eq!(total(&after.stdout, "delivered"), 0, "{}", after.output());
    let show = b.run(&["state", "show", "--json"]);
    let counts: Vec<serde_json::Value> = serde_json::from_str(&show.stdout).unwrap();
    assert_eq!(
        counts
            .iter()
            .map(|c| c["delivered"].as_u64().unwrap())
            .sum::<u64>(),
        30,
        "{}",
        show.output()
    );

    // New mail after the move is delivered, once.
    for (i, u) in users.iter().enumerate() {
        let msgs = mail::corpus(&format!("pgcopy{i}b"), 5);
        dc.seed(u, &msgs);
        sent[i].extend(msgs);
    }
    let later = b.run(&["once", "--json"]);
    assert!(later.ok(), "{}", later.output());
    assert_eq!(total(&later.stdout, "fetched"), 10, "{}", later.output());
    for (i, n) in names.iter().enumerate() {
        assert_exactly_once(&sent[i], &b.delivered(n));
    }
}
