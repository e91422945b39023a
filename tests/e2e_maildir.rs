//! Through the binary, against a real Dovecot: content arrives byte-identical, exactly once,
//! and each delete policy does what it says to the server mailbox.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use common::{assert_exactly_once, mail, Bridge, Mailbox};

#[test]
fn three_hundred_mixed_messages_arrive_byte_identical_and_a_rerun_adds_nothing() {
    let dc = dovecot_or_skip!();
    let user = dc.add_user("bulk");
    let messages = mail::corpus("bulk", 300);
    dc.seed(&user, &messages);
    let bridge = Bridge::new(dc, &[Mailbox::new("bulk", &user)]);

    let first = bridge.once();
    assert!(first.ok(), "first run failed:\n{}", first.output());
    assert_exactly_once(&messages, &bridge.delivered("bulk"));

    let second = bridge.once();
    assert!(second.ok(), "second run failed:\n{}", second.output());
    assert_exactly_once(&messages, &bridge.delivered("bulk"));
    // `delete: never`: the server keeps every message.
    assert_exactly_once(&messages, &dc.list_server_messages(&user));
}

#[test]
fn mail_arriving_between_runs_is_delivered_on_the_next_run() {
    let dc = dovecot_or_skip!();
    let user = dc.add_user("later");
    let early = mail::corpus("early", 8);
    dc.seed(&user, &early);
    let bridge = Bridge::new(dc, &[Mailbox::new("later", &user)]);
    let run = bridge.once();
    assert!(run.ok(), "{}", run.output());

    let late = mail::corpus("late", 8);
    dc.seed(&user, &late);
    let run = bridge.once();
    assert!(run.ok(), "{}", run.output());
    let all: Vec<Vec<u8>> = early.into_iter().chain(late).collect();
    assert_exactly_once(&all, &bridge.delivered("later"));
}

#[test]
fn mailboxes_stay_apart_and_mailbox_selects_one() {
    let dc = dovecot_or_skip!();
    let (ua, ub) = (dc.add_user("apart"), dc.add_user("apart"));
    let (ma, mb) = (mail::corpus("apart-a", 6), mail::corpus("apart-b", 7));
    dc.seed(&ua, &ma);
    dc.seed(&ub, &mb);
    let bridge = Bridge::new(dc, &[Mailbox::new("a", &ua), Mailbox::new("b", &ub)]);

    let run = bridge.run(&["once", "--mailbox", "b"]);
    assert!(run.ok(), "{}", run.output());
    assert!(
        bridge.delivered("a").is_empty(),
        "--mailbox b also polled a"
    );
    assert_exactly_once(&mb, &bridge.delivered("b"));

    let run = bridge.once();
    assert!(run.ok(), "{}", run.output());
    assert_exactly_once(&ma, &bridge.delivered("a"));
    assert_exactly_once(&mb, &bridge.delivered("b"));
}

#[test]
fn delete_after_delivery_empties_the_server_mailbox() {
    let dc = dovecot_or_skip!();
    let user = dc.add_user("dele");
    let messages = mail::corpus("dele", 40);
    dc.seed(&user, &messages);
    let mailbox = Mailbox {
        delete: "after_delivery",
        ..Mailbox::new("dele", &user)
    };
    let bridge = Bridge::new(dc, &[mailbox]);

    let run = bridge.once();
    assert!(run.ok(), "{}", run.output());
    assert_exactly_once(&messages, &bridge.delivered("dele"));
    assert_eq!(
        dc.list_server_messages(&user).len(),
        0,
        "server mailbox not emptied"
    );
}

#[test]
fn delete_after_days_keeps_recent_messages_and_deletes_old_ones() {
    let dc = dovecot_or_skip!();
    let user = dc.add_user("aged");
    let old = mail::corpus("old", 6);
    dc.seed(&user, &old);
    let mailbox = Mailbox {
        delete: "{ after_days: 2 }",
        ..Mailbox::new("aged", &user)
    };
    let bridge = Bridge::new(dc, &[mailbox]);

    let run = bridge.once();
    assert!(run.ok(), "{}", run.output());
    assert_exactly_once(&old, &dc.list_server_messages(&user));

    // Make the first batch's deliveries three days old, then let new mail arrive.
    backdate_deliveries(&bridge, 3);
    let recent = mail::corpus("recent", 5);
    dc.seed(&user, &recent);
    let run = bridge.once();
    assert!(run.ok(), "{}", run.output());

    let all: Vec<Vec<u8>> = old.iter().cloned().chain(recent.iter().cloned()).collect();
    assert_exactly_once(&all, &bridge.delivered("aged"));
    assert_exactly_once(&recent, &dc.list_server_messages(&user));
}

/// Moves every recorded delivery `days` into the past (python3's sqlite3: no SQLite crate
/// needed in the tests). Depends on the `deliveries.delivered_at` column, Unix milliseconds.
fn backdate_deliveries(bridge: &Bridge, days: i64) {
    let script = "import sqlite3, sys\n\
                  c = sqlite3.connect(sys.argv[1])\n\
                  n = c.execute('UPDATE deliveries SET delivered_at = delivered_at - ?', \
                  (int(sys.argv[2]),)).rowcount\n\
                  c.commit()\n\
                  print(n)\n";
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(bridge.state_db())
        .arg((days * 86_400_000).to_string())
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: u64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    assert!(
        rows > 0,
        "no delivery rows to backdate in {}",
        bridge.state_db().display()
    );
}

/// A batch run writes a per-mailbox report (CSV and JSON), and `--resume` polls only the
/// mailboxes the report does not list as done.
#[test]
fn a_report_file_lists_each_mailbox_and_resume_skips_the_done_ones() {
    let dc = dovecot_or_skip!();
    let (good, bad) = (dc.add_user("report"), dc.add_user("report"));
    dc.seed(&good, &mail::corpus("report-good", 2));
    dc.seed(&bad, &mail::corpus("report-bad", 3));
    let bridge = Bridge::new(
        dc,
        &[
            Mailbox::new("good", &good),
            Mailbox {
                password: Some("wrong"),
                ..Mailbox::new("bad", &bad)
            },
        ],
    );
    let csv = bridge.dir.path().join("report.csv");
    let json = bridge.dir.path().join("report.json");
    let run = bridge.run(&["once", "--report", csv.to_str().unwrap()]);
    assert_eq!(run.code, Some(1), "{}", run.output());
    let text = std::fs::read_to_string(&csv).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[1].starts_with("good,ok,2,2,"), "{text}");
    assert!(lines[2].starts_with("bad,failed,0,"), "{text}");
    let run = bridge.run(&["once", "--report", json.to_str().unwrap()]);
    assert_eq!(run.code, Some(1), "{}", run.output());

    // The password is fixed (the config reads it from the environment); the resumed run polls
    // only "bad".
    let run = bridge.run_with_env(
        &["once", "--resume", json.to_str().unwrap(), "--json"],
        &[("PB_TEST_PASS_BAD", bad.password.as_str())],
    );
    assert!(run.ok(), "{}", run.output());
    let reports: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let polled: Vec<&str> = reports
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["mailbox"].as_str().unwrap())
        .collect();
    assert_eq!(polled, ["bad"]);
    assert_eq!(bridge.delivered("bad").len(), 3);
}

/// A batch run whose stderr is not a terminal (a Kubernetes Job, CI) logs a one-line fleet
/// status at the `--status-every` interval and once at the end; its counts and the failing
/// account's reason agree with the report file.
#[test]
fn the_fleet_status_log_counts_done_and_failed_accounts_and_agrees_with_the_report() {
    let dc = dovecot_or_skip!();
    let users: Vec<_> = (0..4).map(|_| dc.add_user("fleet")).collect();
    for (i, u) in users.iter().enumerate() {
        dc.seed(u, &mail::corpus(&format!("fleet{i}"), i + 1));
    }
    let names = ["fleet-a", "fleet-b", "fleet-c", "fleet-bad"];
    let mut mailboxes: Vec<Mailbox> = names
        .iter()
        .zip(&users)
        .map(|(n, u)| Mailbox::new(n, u))
        .collect();
    mailboxes[3].password = Some("wrong");
    let bridge = Bridge::new(dc, &mailboxes);
    let report = bridge.dir.path().join("report.json");
    let run = bridge.run(&[
        "--log-format",
        "json",
        "once",
        "--status-every",
        "100ms",
        "--report",
        report.to_str().unwrap(),
    ]);
    assert_eq!(run.code, Some(1), "{}", run.output());

    let status: Vec<serde_json::Value> = run
        .stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["message"] == "Fleet status")
        .collect();
    let last = status.last().expect("no fleet status line logged");
    assert_eq!(last["last"], true, "{}", run.output());
    // Earlier lines (if the run lasted past 100 ms) never count more than the end.
    for s in &status {
        assert_eq!(s["accounts"], 4, "{s}");
        assert!(
            s["done"].as_u64() <= Some(3) && s["failed"].as_u64() <= Some(1),
            "{s}"
        );
    }
    let counts = |k: &str| last[k].as_u64().unwrap();
    assert_eq!(
        (
            counts("done"),
            counts("running"),
            counts("waiting"),
            counts("failed"),
            counts("paused")
        ),
        (3, 0, 0, 1, 0),
        "{last}"
    );
    // Messages 1 + 2 + 3 of the good accounts, all known (no "≈": everything was listed).
    assert_eq!(last["messages"], "6/6", "{last}");
    assert_eq!(last["eta"], "finished", "{last}");

    let reports: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let reports = reports.as_array().unwrap();
    assert_eq!(reports.len(), 4);
    let by_name = |n: &str| reports.iter().find(|r| r["mailbox"] == n).unwrap();
    let bad = by_name("fleet-bad");
    assert_eq!(bad["status"], "failed", "{bad}");
    assert_eq!(bad["error"][0], "auth", "{bad}");
    let reason = format!("fleet-bad (auth: {}", bad["error"][1].as_str().unwrap());
    let failures = last["failures"].as_str().unwrap();
    assert!(
        failures.starts_with(&reason[..reason.len().min(60)]),
        "status {failures:?} vs report {reason:?}"
    );
    let ok: Vec<&serde_json::Value> = reports.iter().filter(|r| r["status"] == "ok").collect();
    assert_eq!(ok.len() as u64, counts("done"));
    let delivered: u64 = ok.iter().map(|r| r["delivered"].as_u64().unwrap()).sum();
    assert_eq!(delivered, 6);
    for r in reports {
        for k in [
            "listed",
            "delivered",
            "bytes",
            "duplicates",
            "pending",
            "dead",
            "duration_ms",
        ] {
            assert!(r[k].is_u64(), "{k} missing in {r}");
        }
    }
    for (i, n) in names[..3].iter().enumerate() {
        assert_eq!(by_name(n)["delivered"], i as u64 + 1);
        assert_eq!(bridge.delivered(n).len(), i + 1);
    }
}
