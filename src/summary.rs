//! The end-of-run table `popbridge once` prints, for people; JSON for machines.

use crate::engine::poll::PollReport;
use std::fmt::Write;

/// The per-account report file of a batch run (`once --report FILE`): one row per mailbox
/// with what it listed, delivered, moved, still owes, and why it failed, as CSV (RFC 4180) for
/// spreadsheets. The JSON form is the `PollReport` list itself.
pub fn csv(reports: &[PollReport]) -> String {
    let mut out = String::from(
        "mailbox,status,listed,fetched,bytes,delivered,duplicates,pending,dead,deleted,duration_ms,error\n",
    );
    for r in reports {
        let error = r.error.as_ref().map(|(_, m)| m.as_str()).unwrap_or("");
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{},{},{},{},{}",
            field(&r.mailbox),
            status(r),
            r.listed,
            r.fetched,
            r.bytes,
            r.delivered,
            r.duplicates,
            pending(r),
            dead(r),
            r.deleted,
            r.duration_ms,
            field(error)
        );
    }
    out
}

/// The JSON report file: each `PollReport` as `once --json` prints it, plus the CSV's derived
/// columns `status`, `pending` and `dead` (added fields only, so readers of the plain
/// `PollReport` JSON, such as `--resume`, keep working).
pub fn json(reports: &[PollReport]) -> serde_json::Value {
    serde_json::Value::Array(
        reports
            .iter()
            .map(|r| {
                let mut v = serde_json::to_value(r).unwrap_or_default();
                if let Some(o) = v.as_object_mut() {
                    o.insert("status".into(), status(r).into());
                    o.insert("pending".into(), pending(r).into());
                    o.insert("dead".into(), dead(r).into());
                }
                v
            })
            .collect(),
    )
}

/// `ok`, `failed`, `paused` or `incomplete`.
fn status(r: &PollReport) -> &'static str {
    match (&r.error, r.complete()) {
        (Some(_), _) => "failed",
        (None, true) => "ok",
        (None, false) if !r.paused.is_empty() || r.download_held.is_some() => "paused",
        (None, false) => "incomplete",
    }
}

/// Deliveries still owed: to retry, or waiting for their time or a paused sink.
fn pending(r: &PollReport) -> usize {
    r.retry_later + r.waiting + r.download_held.as_ref().map_or(0, |h| h.messages)
}

/// Dead-lettered deliveries, of this poll and earlier ones.
fn dead(r: &PollReport) -> usize {
    r.dead_lettered + r.dead_earlier
}

/// A CSV field, quoted when it holds a comma, a quote or a line break.
fn field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// A fixed-width table, one row per mailbox, then one line per failure and warning.
pub fn table(reports: &[PollReport]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<20} {:>7} {:>7} {:>10} {:>9} {:>5} {:>6} {:>5} {:>7}  status",
        "mailbox", "listed", "fetched", "bytes", "delivered", "dup", "retry", "dead", "deleted"
    );
    for r in reports {
        let status = match (&r.error, r.complete()) {
            (Some((kind, _)), _) => format!("FAILED ({kind})"),
            (None, true) => "ok".to_string(),
            (None, false) if !r.paused.is_empty() || r.download_held.is_some() => {
                "PAUSED".to_string()
            }
            (None, false) => "INCOMPLETE".to_string(),
        };
        let _ = writeln!(
            out,
            "{:<20} {:>7} {:>7} {:>10} {:>9} {:>5} {:>6} {:>5} {:>7}  {}",
            r.mailbox,
            r.listed,
            r.fetched,
            r.bytes,
            r.delivered,
            r.duplicates,
            pending(r),
            dead(r),
            r.deleted,
            status
        );
    }
    for r in reports {
        if let Some((_, message)) = &r.error {
            let _ = writeln!(out, "{}: {}", r.mailbox, message);
        }
        for f in &r.failures {
            let _ = writeln!(out, "{}: {}", r.mailbox, f);
        }
        if r.stubbed > 0 {
            let _ = writeln!(
                out,
                "{}: {} message(s) over a target's size limit delivered as a stub with a link; the original(s) are in the offload bucket",
                r.mailbox, r.stubbed
            );
        }
        if r.dead_earlier > 0 {
            let _ = writeln!(
                out,
                "{}: {} earlier dead letter(s) keep messages on the server; see `popbridge dlq list`",
                r.mailbox, r.dead_earlier
            );
        }
        if r.dropped_earlier > 0 {
            let _ = writeln!(
                out,
                "{}: {} dropped dead letter(s) keep messages on the server (given up with `dlq drop`)",
                r.mailbox, r.dropped_earlier
            );
        }
        if r.waiting > 0 {
            let _ = writeln!(
                out,
                "{}: {} delivery(ies) wait for their next retry time",
                r.mailbox, r.waiting
            );
        }
        for p in &r.paused {
            let _ = writeln!(
                out,
                "{}: sink {} paused until {} ({}); its messages wait on the server, not deleted, and go at the first poll after that",
                r.mailbox, p.sink, p.until, p.reason
            );
        }
        if let Some(h) = &r.download_held {
            let _ = writeln!(
                out,
                "{}: {} message(s) wait on the server: the daily download budget of {} ({} bytes, servers.{}.bytes_per_day) is spent; fetched from {} (the next UTC day)",
                r.mailbox, h.messages, h.host, h.budget, h.host, h.until
            );
        }
        for w in &r.warnings {
            let _ = writeln!(out, "{}: warning: {}", r.mailbox, w);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_marks_incomplete_and_failed_mailboxes_and_lists_why() {
        let ok = PollReport {
            mailbox: "alice".into(),
            listed: 3,
            fetched: 3,
            delivered: 3,
            ..Default::default()
        };
        let partial = PollReport {
            mailbox: "bob".into(),
            retry_later: 1,
            failures: vec!["u1 -> hook: will retry: HTTP 503".into()],
            ..Default::default()
        };
        let failed = PollReport {
            mailbox: "carol".into(),
            error: Some(("auth".into(), "login refused".into())),
            ..Default::default()
        };
        let t = table(&[ok, partial, failed]);
        assert!(t.lines().nth(1).unwrap().ends_with("ok"), "{t}");
        assert!(t.contains("INCOMPLETE"), "{t}");
        assert!(t.contains("FAILED (auth)"), "{t}");
        assert!(t.contains("bob: u1 -> hook: will retry: HTTP 503"), "{t}");
        assert!(t.contains("carol: login refused"), "{t}");
    }

    #[test]
    fn dropped_dead_letters_leave_the_run_complete_but_dead_ones_do_not() {
        let dropped = PollReport {
            mailbox: "alice".into(),
            listed: 1,
            dropped_earlier: 1,
            ..Default::default()
        };
        assert!(dropped.complete());
        let t = table(&[dropped]);
        assert!(t.lines().nth(1).unwrap().ends_with("ok"), "{t}");
        assert!(t.contains("alice: 1 dropped dead letter(s)"), "{t}");
        let dead = PollReport {
            mailbox: "bob".into(),
            dead_earlier: 1,
            ..Default::default()
        };
        assert!(!dead.complete());
    }

    #[test]
    fn a_paused_sink_says_until_when_and_that_the_mail_waits() {
        let r = PollReport {
            mailbox: "alice".into(),
            listed: 5,
            waiting: 5,
            paused: vec![crate::engine::poll::PausedSink {
                sink: "gmail".into(),
                until: "2026-12-02T08:00:00Z".into(),
                reason: "the Gmail API daily quota is used up".into(),
            }],
            ..Default::default()
        };
        assert!(!r.complete());
        let t = table(std::slice::from_ref(&r));
        assert!(t.lines().nth(1).unwrap().ends_with("PAUSED"), "{t}");
        assert!(
            t.contains("alice: sink gmail paused until 2026-12-02T08:00:00Z (the Gmail API daily quota is used up); its messages wait on the server, not deleted"),
            "{t}"
        );
        assert!(csv(&[r]).contains("alice,paused,5,"));
    }

    #[test]
    fn stubbed_messages_are_named_in_the_table_and_the_json() {
        let r = PollReport {
            mailbox: "alice".into(),
            listed: 2,
            delivered: 2,
            stubbed: 1,
            ..Default::default()
        };
        let t = table(std::slice::from_ref(&r));
        assert!(
            t.contains("alice: 1 message(s) over a target's size limit delivered as a stub"),
            "{t}"
        );
        assert!(serde_json::to_string(&r).unwrap().contains("\"stubbed\":1"));
        assert!(!table(&[PollReport::default()]).contains("stub"));
    }

    #[test]
    fn the_json_report_adds_status_pending_and_dead_to_every_field_of_the_poll() {
        let partial = PollReport {
            mailbox: "bob".into(),
            listed: 4,
            delivered: 2,
            retry_later: 1,
            waiting: 1,
            dead_earlier: 1,
            duration_ms: 7,
            ..Default::default()
        };
        let failed = PollReport {
            mailbox: "carol".into(),
            error: Some(("auth".into(), "login refused".into())),
            ..Default::default()
        };
        let v = json(&[partial, failed]);
        assert_eq!(v[0]["status"], "incomplete");
        assert_eq!(v[0]["pending"], 2);
        assert_eq!(v[0]["dead"], 1);
        // The PollReport's own fields are all still there.
        assert_eq!(v[0]["retry_later"], 1);
        assert_eq!(v[0]["duration_ms"], 7);
        assert_eq!(v[0]["listed"], 4);
        assert_eq!(v[1]["status"], "failed");
        assert_eq!(v[1]["error"][1], "login refused");
    }

    #[test]
    fn mail_held_by_a_hosts_daily_download_budget_is_paused_with_its_reason() {
        let r = PollReport {
            mailbox: "alice".into(),
            listed: 5,
            fetched: 2,
            download_held: Some(crate::engine::poll::DownloadHeld {
                host: "pop.example.com".into(),
                messages: 3,
                until: "2026-12-02T00:00:00Z".into(),
                budget: 5000,
            }),
            ..Default::default()
        };
        assert!(!r.complete(), "held mail is not done: `once` exits 1");
        let t = table(std::slice::from_ref(&r));
        assert!(t.lines().nth(1).unwrap().ends_with("PAUSED"), "{t}");
        assert!(
            t.contains("alice: 3 message(s) wait on the server: the daily download budget of pop.example.com (5000 bytes, servers.pop.example.com.bytes_per_day) is spent; fetched from 2026-12-02T00:00:00Z"),
            "{t}"
        );
        assert!(csv(&[r]).contains("alice,paused,5,2,0,0,0,3,"));
    }

    #[test]
    fn the_report_file_has_a_row_per_mailbox_and_quotes_errors() {
        let ok = PollReport {
            mailbox: "alice".into(),
            listed: 3,
            delivered: 3,
            duration_ms: 12,
            ..Default::default()
        };
        let failed = PollReport {
            mailbox: "bob".into(),
            error: Some(("auth".into(), "login refused, \"bad\" password".into())),
            ..Default::default()
        };
        let text = csv(&[ok, failed]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("mailbox,status,listed"));
        assert_eq!(lines[1], "alice,ok,3,0,0,3,0,0,0,0,12,");
        assert_eq!(
            lines[2],
            "bob,failed,0,0,0,0,0,0,0,0,0,\"login refused, \"\"bad\"\" password\""
        );
    }
}
