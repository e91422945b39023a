//! The Gmail sink through the binary, from a real Dovecot into the Gmail test server
//! (`support::gmail`): one account's daily quota is used up (403 `dailyLimitExceeded` on
//! every import), the other's is not. The exhausted account is paused until Google's reset
//! (Pacific midnight) and its messages stay on the POP3 server, undeleted and not fetched
//! again, while the other account's mail goes through and is deleted.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;
mod support;

use common::{assert_exactly_once, mail, Bridge, Mailbox};
use support::gmail::GmailServer;

const TOKEN: &str = "ya29.e2e-token";

#[tokio::test(flavor = "multi_thread")]
async fn a_used_up_daily_quota_pauses_that_account_keeps_its_mail_and_the_other_goes_on() {
    let dc = dovecot_or_skip!();
    let (a, b) = (dc.add_user("gmqa"), dc.add_user("gmqb"));
    let (ma, mb) = (mail::corpus("gmqa", 4), mail::corpus("gmqb", 3));
    dc.seed(&a, &ma);
    dc.seed(&b, &mb);
    let mailboxes = [
        Mailbox {
            delete: "after_delivery",
            ..Mailbox::new("alice", &a)
        },
        Mailbox {
            delete: "after_delivery",
            ..Mailbox::new("bob", &b)
        },
    ];
    let bridge = Bridge::new(dc, &mailboxes);
    let server = GmailServer::start(TOKEN).await;
    let tokens = bridge.dir.path().join("tokens");
    std::fs::create_dir_all(&tokens).unwrap();
    for m in ["alice", "bob"] {
        std::fs::write(tokens.join(format!("{m}.token")), TOKEN).unwrap();
    }
    bridge.replace_sinks(&format!(
        "sinks:\n  - name: archive\n    type: gmail\n    api_base: {}\n    allow_plaintext: true\n    \
         user: \"{{mailbox}}@example.com\"\n    access_token_file: ./tokens/{{mailbox}}.token\n    \
         timeout: 5s\n    retry: {{ attempts_per_poll: 2, initial_backoff: 5ms, max_backoff: 20ms, window: 1h }}\n",
        server.base
    ));
    server.exhaust("alice@example.com", true);

    let before = popbridge::sink::gmail::quota::next_pacific_midnight(chrono::Utc::now());
    let run = bridge.run(&["once", "--report", "report.json"]);
    assert_eq!(run.code, Some(1), "{}", run.output());
    // Bob's account is not held back by Alice's: all his mail is in Gmail and off the server.
    assert_exactly_once(
        &mb,
        &server
            .messages("bob@example.com")
            .into_iter()
            .map(|m| m.raw)
            .collect::<Vec<_>>(),
    );
    assert!(dc.list_server_messages(&b).is_empty(), "{}", run.output());
    // Alice's: nothing imported, nothing deleted; imports were tried only until the first
    // answer said the quota is gone (those already in flight: at most `concurrency`, 4).
    assert!(server.messages("alice@example.com").is_empty());
    assert_exactly_once(&ma, &dc.list_server_messages(&a));
    let tried = server.import_times("alice@example.com").len();
    assert!((1..=4).contains(&tried), "{tried}");
    // Said in the summary (status and why), in the log and in the report file.
    // The pause ends at the next Pacific midnight (a run across midnight itself: the one after).
    let after = popbridge::sink::gmail::quota::next_pacific_midnight(chrono::Utc::now());
    let midnight = [before, after]
        .iter()
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .find(|t| run.stdout.contains(&format!("paused until {t}")))
        .unwrap_or_else(|| panic!("no pause until {before} or {after}\n{}", run.output()));
    let alice_row = run
        .stdout
        .lines()
        .find(|l| l.starts_with("alice "))
        .unwrap_or_default();
    assert!(alice_row.ends_with("PAUSED"), "{}", run.output());
    assert!(
        run.stdout.contains(&format!(
            "alice: sink archive paused until {midnight} (the Gmail API daily quota of alice@example.com is used up); its messages wait on the server, not deleted"
        )),
        "{}",
        run.output()
    );
    assert!(
        run.stderr.contains("Sink paused for this mailbox"),
        "{}",
        run.output()
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bridge.dir.path().join("report.json")).unwrap())
            .unwrap();
    let alice = report
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["mailbox"] == "alice")
        .unwrap();
    assert_eq!(alice["paused"][0]["sink"], "archive");
    assert_eq!(alice["paused"][0]["until"], midnight.as_str());
    assert_eq!(alice["status"], "paused");
    // The fleet status logged at the end (stderr is not a terminal): Bob done, Alice paused,
    // and the ETA of her mail is "after" the quota's reset.
    let fleet = run
        .stderr
        .lines()
        .rfind(|l| l.contains("Fleet status"))
        .unwrap_or_else(|| panic!("no fleet status\n{}", run.output()));
    let reset = chrono::DateTime::parse_from_rfc3339(&midnight)
        .unwrap()
        .format("%Y-%m-%d %H:%M UTC")
        .to_string();
    for part in [
        "accounts=2 done=1 running=0 waiting=0 failed=0 paused=1".to_string(),
        format!("blocked=1 account(s) complete after {reset}"),
    ] {
        assert!(fleet.contains(&part), "{part:?} not in {fleet}");
    }

    // A later run (a fresh process that does not know about the pause) does not download
    // Alice's mail again or knock at her account before the reset: they wait, undeleted.
    let again = bridge.once();
    assert_eq!(again.code, Some(1), "{}", again.output());
    assert_eq!(server.import_times("alice@example.com").len(), tried);
    assert_exactly_once(&ma, &dc.list_server_messages(&a));
    assert!(
        again
            .stdout
            .contains("delivery(ies) wait for their next retry time"),
        "{}",
        again.output()
    );
}
