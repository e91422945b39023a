use super::*;
use crate::route::config::RawRuleSet;
use crate::route::headers::Headers;

const SINKS: &[(&str, &str)] = &[
    ("box", "maildir"),
    ("archive", "s3"),
    ("hook", "webhook"),
    ("imap", "imap"),
];

fn set(yaml: &str) -> RuleSet {
    let raw: RawRuleSet = yaml_serde::from_str(yaml).unwrap();
    raw.validate("test", SINKS, &["box".to_string()]).unwrap()
}

fn decide_on(set: &RuleSet, message: &str, size: u64) -> Decision {
    let headers = Headers::parse(message.as_bytes());
    decide(
        set,
        "mb",
        &Facts {
            headers: &headers,
            size,
            has_attachment: None,
        },
    )
}

const RULES: &str = r#"
envelope_header: Delivered-To
rules:
  - name: spam
    match: { headers: { X-Spam-Flag: '^(?i)yes' } }
    to: [{ sink: imap, folder: Junk }]
    stop: true
  - name: split
    match: { envelope: '^(?P<user>[a-z]+)@example\.com$' }
    to: [{ sink: box, subfolder: '{user}' }, { sink: hook, path: '/in/{user}', headers: { X-User: '{user}' } }]
  - name: big
    match: { size_over: 1000 }
    to: [{ sink: archive, prefix: 'big/{mailbox}/' }, { sink: box, subfolder: ignored }]
"#;

#[test]
fn several_matching_rules_fan_out_and_the_first_rule_sets_a_sinks_parameters() {
    let s = set(RULES);
    let d = decide_on(
        &s,
        "Delivered-To: sales@example.com\r\nSubject: x\r\n\r\n",
        5000,
    );
    let Decision::Route(r) = d else {
        panic!("{d:?}")
    };
    assert_eq!(r.rules, vec!["split", "big"]);
    assert_eq!(r.sinks(), vec!["box", "hook", "archive"]);
    assert_eq!(
        r.params("box").get("subfolder").map(String::as_str),
        Some("sales")
    );
    assert_eq!(
        r.params("hook").get("header.X-User").map(String::as_str),
        Some("sales")
    );
    assert_eq!(
        r.params("hook").get("path").map(String::as_str),
        Some("/in/sales")
    );
    assert_eq!(
        r.params("archive").get("prefix").map(String::as_str),
        Some("big/mb/")
    );
}

#[test]
fn stop_ends_the_evaluation() {
    let s = set(RULES);
    let d = decide_on(
        &s,
        "X-Spam-Flag: YES\r\nDelivered-To: sales@example.com\r\n\r\n",
        5000,
    );
    let Decision::Route(r) = d else {
        panic!("{d:?}")
    };
    assert_eq!(r.sinks(), vec!["imap"]);
}

#[test]
fn only_the_servers_occurrence_of_the_envelope_header_counts() {
    let s = set(RULES);
    // The server prepended its Delivered-To; the sender wrote another one further down.
    let msg = "Delivered-To: support@example.com\r\nReceived: from evil\r\nX-A: b\r\nDelivered-To: ceo@example.com\r\n\r\n";
    let Decision::Route(r) = decide_on(&s, msg, 10) else {
        panic!()
    };
    assert_eq!(
        r.params("box").get("subfolder").map(String::as_str),
        Some("support")
    );
    // With only the forged copy below a non-matching server header, nothing matches.
    let msg = "Delivered-To: other@elsewhere.org\r\nDelivered-To: ceo@example.com\r\n\r\n";
    let Decision::Route(r) = decide_on(&s, msg, 10) else {
        panic!()
    };
    assert_eq!(r.rules, vec!["(default)"]);
    // The server added none, the sender wrote one: below the relays' trace fields, ignored.
    let msg = "Received: from mx\r\nDelivered-To: ceo@example.com\r\n\r\n";
    let Decision::Route(r) = decide_on(&s, msg, 10) else {
        panic!()
    };
    assert_eq!(r.rules, vec!["(default)"]);
}

#[test]
fn to_and_cc_are_never_the_envelope() {
    let s = set(RULES);
    let msg = "To: sales@example.com\r\nCc: ceo@example.com\r\n\r\n";
    let Decision::Route(r) = decide_on(&s, msg, 10) else {
        panic!()
    };
    assert_eq!(r.rules, vec!["(default)"]);
    assert_eq!(r.sinks(), vec!["box"]);
}

#[test]
fn unmatched_keep_gives_a_reason() {
    let s = set(&format!("{RULES}\nunmatched: keep\n"));
    match decide_on(&s, "Subject: hi\r\n\r\n", 10) {
        Decision::Keep { reason } => {
            assert!(
                reason.contains("no routing rule of test matched"),
                "{reason}"
            );
            assert!(reason.contains("Delivered-To absent"), "{reason}");
        }
        d => panic!("{d:?}"),
    }
}

#[test]
fn a_route_survives_its_json_form() {
    let s = set(RULES);
    let Decision::Route(r) = decide_on(&s, "Delivered-To: a@example.com\r\n\r\n", 5000) else {
        panic!()
    };
    let text = serde_json::to_string(&r).unwrap();
    let back: Route = serde_json::from_str(&text).unwrap();
    assert_eq!(back, r);
}

#[test]
fn validation_rejects_unknown_sinks_params_and_captures() {
    let raw: RawRuleSet = yaml_serde::from_str(
        "rules:\n  - name: a\n    match: { sender: '(?P<who>.*)' }\n    to: [{ sink: nope }, { sink: archive, folder: x }, { sink: box, subfolder: '{whom}' }]\n",
    )
    .unwrap();
    let problems = raw.validate("t", SINKS, &["box".into()]).unwrap_err();
    let text = format!("{problems:?}");
    assert!(text.contains("unknown sink \\\"nope\\\""), "{text}");
    assert!(text.contains("a s3 sink takes no `folder`"), "{text}");
    assert!(text.contains("{whom} is not a named capture"), "{text}");
}

#[test]
fn unknown_keys_are_rejected_while_parsing() {
    let e = yaml_serde::from_str::<RawRuleSet>(
        "rules:\n  - name: a\n    match: { sendr: x }\n    to: [{ sink: box }]\n",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("unknown field `sendr`"), "{e}");
    let e = yaml_serde::from_str::<RawRuleSet>(
        "rules:\n  - name: a\n    match: { sender: '(' }\n    to: [{ sink: box }]\n",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("invalid regex"), "{e}");
}
