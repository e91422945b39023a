//! The IMAP sink's daily upload budget against a real Dovecot (POP3 source, IMAP target): the
//! sink stops cleanly at the budget, the rest stays pending and on the POP3 server, and a second
//! process on the same day counts what the first uploaded. The reset at UTC midnight is tested
//! with a clock seam (`sink::imap::budget`), since a day cannot be waited for.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use common::{mail, Bridge, Mailbox};

#[test]
fn the_daily_upload_budget_stops_the_sink_and_leaves_the_rest_on_the_server() {
    let dc = dovecot_or_skip!();
    let src = dc.add_user("budget-src");
    let dst = dc.add_user("budget-dst");
    let first: Vec<Vec<u8>> = (0..5)
        .map(|i| mail::simple(&format!("a{i}"), "budget"))
        .collect();
    let size = first[0].len() as u64;
    assert!(first.iter().all(|m| m.len() as u64 == size));
    dc.seed(&src, &first);
    let mut mb = Mailbox::new("budget", &src);
    mb.delete = "after_delivery";
    let bridge = Bridge::new(dc, &[mb]);
    // Room for two messages a day.
    let limit = 2 * size + size / 2;
    bridge.replace_sinks(&format!(
        "sinks:\n  - name: archive\n    type: imap\n    host: localhost\n    port: {port}\n    tls: starttls\n\
         \x20   ca_file: {ca}\n    timeout: 10s\n    username: {user}\n    password: \"${{BUDGET_DST}}\"\n\
         \x20   daily_upload_limit: {limit}\n\
         \x20   retry: {{ attempts_per_poll: 2, initial_backoff: 5ms, max_backoff: 20ms, window: 1s }}\n",
        port = dc.imap_port,
        ca = dc.ca_file.display(),
        user = dst.name,
    ));
    let env = [("BUDGET_DST", dst.password.as_str())];
    let run = bridge.run_with_env(&["once"], &env);
    assert_eq!(run.code, Some(1), "{}", run.output());
    assert!(
        run.output().contains("daily upload budget"),
        "{}",
        run.output()
    );
    assert_eq!(dc.list_server_messages(&dst).len(), 2);
    // Shown as a pause of the account until midnight UTC, not as an error.
    assert!(
        run.stdout.contains("budget: sink archive paused until ")
            && run
                .stdout
                .contains("T00:00:00Z (the daily upload budget of"),
        "{}",
        run.output()
    );
    // The rest waits on the POP3 server, not deleted, not dead-lettered (the retry window of
    // 1s does not apply to a budget).
    assert_eq!(dc.list_server_messages(&src).len(), 3);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let dlq = bridge.run(&["dlq", "list"]);
    assert!(!dlq.stdout.contains("budget"), "{}", dlq.output());

    // A second process the same day, with new mail: the budget is still spent.
    dc.seed(
        &src,
        &[mail::simple("b0", "budget"), mail::simple("b1", "budget")],
    );
    let run = bridge.run_with_env(&["once"], &env);
    assert_eq!(run.code, Some(1), "{}", run.output());
    assert_eq!(dc.list_server_messages(&dst).len(), 2, "{}", run.output());
    assert_eq!(dc.list_server_messages(&src).len(), 5);
}

/// The fleet status counts the days of budget the remaining bytes need: 8 equal messages and
/// room for 2.5 a day leave 5.5 messages' worth, 3 more days, so the account completes after
/// the third UTC midnight from now (today's budget, then two more days from the next reset).
#[test]
fn the_fleet_eta_counts_the_days_of_budget_the_remaining_bytes_need() {
    let dc = dovecot_or_skip!();
    let src = dc.add_user("days-src");
    let idle = dc.add_user("days-idle");
    let dst = dc.add_user("days-dst");
    let mail: Vec<Vec<u8>> = (0..8)
        .map(|i| mail::simple(&format!("d{i}"), "budget"))
        .collect();
    let size = mail[0].len() as u64;
    assert!(mail.iter().all(|m| m.len() as u64 == size));
    dc.seed(&src, &mail);
    // A second mailbox with nothing to fetch: a fleet of two, so the last status is logged.
    let bridge = Bridge::new(
        dc,
        &[Mailbox::new("days", &src), Mailbox::new("idle", &idle)],
    );
    let limit = 2 * size + size / 2;
    bridge.replace_sinks(&format!(
        "sinks:\n  - name: archive\n    type: imap\n    host: localhost\n    port: {port}\n    tls: starttls\n\
         \x20   ca_file: {ca}\n    timeout: 10s\n    username: {user}\n    password: \"${{DAYS_DST}}\"\n\
         \x20   daily_upload_limit: {limit}\n",
        port = dc.imap_port,
        ca = dc.ca_file.display(),
        user = dst.name,
    ));
    let third_midnight = || {
        (chrono::Utc::now().date_naive() + chrono::Days::new(3))
            .and_hms_opt(0, 0, 0)
            .unwrap()
            .and_utc()
            .format("%Y-%m-%d %H:%M UTC")
            .to_string()
    };
    let before = third_midnight();
    let run = bridge.run_with_env(&["once"], &[("DAYS_DST", dst.password.as_str())]);
    let after = third_midnight();
    assert_eq!(run.code, Some(1), "{}", run.output());
    assert_eq!(dc.list_server_messages(&dst).len(), 2);
    let fleet = run
        .stderr
        .lines()
        .rfind(|l| l.contains("Fleet status"))
        .unwrap_or_else(|| panic!("no fleet status\n{}", run.output()));
    assert!(
        fleet.contains("accounts=2 done=1 running=0 waiting=0 failed=0 paused=1"),
        "{fleet}"
    );
    // (A run across midnight UTC: the day after.)
    assert!(
        [before, after]
            .iter()
            .any(|t| fleet.contains(&format!("blocked=1 account(s) complete after {t}"))),
        "{fleet}"
    );
}
