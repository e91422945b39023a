//! Loader tests: located errors, interpolation, secrets, defaults, the example file.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::pop3::{AuthMethod, TlsMode};
use std::path::PathBuf;
use std::time::Duration;

const PASSWORD: &str = "s3cr3t-Hunter2";

fn env(name: &str) -> Option<String> {
    match name {
        "ALICE_POP3_PASSWORD" => Some(PASSWORD.to_owned()),
        "POP_HOST" => Some("pop.example.com".to_owned()),
        _ => None,
    }
}

fn origin() -> PathBuf {
    PathBuf::from("/etc/popbridge/config.yaml")
}

fn load(text: &str) -> Result<Loaded, ConfigError> {
    load_str_with_env(text, &origin(), env)
}

fn err(text: &str) -> ConfigError {
    match load(text) {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(e) => {
            let shown = format!("{e} {e:?}");
            assert!(!shown.contains(PASSWORD), "secret leaked: {shown}");
            e
        }
    }
}

/// (line, column) of a parse error, and its message.
fn parse_err(text: &str) -> ((usize, usize), String) {
    match err(text) {
        ConfigError::Parse {
            location: Some(at),
            message,
            ..
        } => (at, message),
        other => panic!("expected a located parse error, got {other}"),
    }
}

fn invalid(text: &str) -> String {
    match err(text) {
        e @ ConfigError::Invalid { .. } => e.to_string(),
        other => panic!("expected a validation error, got {other}"),
    }
}

const MINIMAL: &str = "\
state:
  path: state/popbridge.db
mailboxes:
  - name: alice
    pop3:
      host: pop.example.com
      username: alice@example.com
      password: ${ALICE_POP3_PASSWORD}
    sinks: [archive]
sinks:
  - name: archive
    type: maildir
    path: mail/{mailbox}
";

#[test]
fn minimal_config_gets_defaults() {
    let Loaded { config, warnings } = load(MINIMAL).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(config.source, origin());
    assert_eq!(
        config.state.path,
        PathBuf::from("/etc/popbridge/state/popbridge.db")
    );
    assert_eq!(
        config.state.spool_dir,
        PathBuf::from("/etc/popbridge/state/spool")
    );
    assert_eq!(config.http.listen.to_string(), "127.0.0.1:9898");
    assert_eq!(config.limits.max_concurrent_polls, 4);
    assert_eq!(config.limits.max_connections_per_server, 2);
    assert_eq!(config.limits.max_in_flight, 32);
    let mb = &config.mailboxes[0];
    assert_eq!(mb.pop3.host, "pop.example.com");
    assert_eq!(mb.pop3.port, 995);
    assert_eq!(mb.pop3.tls, TlsMode::Implicit);
    assert_eq!(mb.pop3.auth, AuthMethod::Auto);
    assert_eq!(mb.pop3.secret.expose(), PASSWORD);
    assert!(!mb.pop3.danger_accept_invalid_certs);
    assert_eq!(mb.pop3.timeout, Duration::from_secs(60));
    assert_eq!(mb.delete, DeletePolicy::Never);
    assert!(matches!(
        mb.schedule,
        Schedule::Every { interval, jitter } if interval == Duration::from_secs(60) && jitter.is_zero()
    ));
    let sink = &config.sinks[0];
    assert_eq!(sink.retry, RetryPolicy::default());
    let SinkKind::Maildir(m) = &sink.kind else {
        panic!("expected a maildir sink")
    };
    assert_eq!(m.path, "/etc/popbridge/mail/{mailbox}");
    assert!(m.fsync);
}

#[test]
fn unknown_top_level_key_is_located() {
    let text = format!("{MINIMAL}logging: debug\n");
    let (at, msg) = parse_err(&text);
    assert_eq!(at, (14, 1), "{msg}");
    assert!(msg.contains("unknown field `logging`"), "{msg}");
    let shown = err(&text).to_string();
    assert!(
        shown.starts_with("/etc/popbridge/config.yaml:14:1: "),
        "{shown}"
    );
}

#[test]
fn unknown_nested_key_is_located() {
    let text = MINIMAL.replace("      username:", "      usrname: x\n      username:");
    let (at, msg) = parse_err(&text);
    assert_eq!(at, (7, 7), "{msg}");
    assert!(msg.contains("unknown field `usrname`"), "{msg}");
}

#[test]
fn unknown_key_in_a_sink_entry_is_located_at_the_key() {
    let text = format!("{MINIMAL}    fsnyc: true\n");
    let (at, msg) = parse_err(&text);
    assert_eq!(at, (14, 5), "{msg}");
    assert!(msg.contains("unknown field `fsnyc`"), "{msg}");
}

#[test]
fn unknown_key_in_a_later_sink_entry_is_located_at_the_key() {
    let text = format!(
        "{MINIMAL}  - name: other\n    type: maildir\n    path: x\n    # comment\n\n    colour: blue\n"
    );
    let (at, msg) = parse_err(&text);
    assert_eq!(at, (19, 5), "{msg}");
    assert!(msg.contains("unknown field `colour`"), "{msg}");
}

#[test]
fn unknown_key_in_sink_retry_is_located_at_the_key() {
    let text = format!("{MINIMAL}    retry:\n      attempts: 3\n");
    let (at, msg) = parse_err(&text);
    assert_eq!(at, (15, 7), "{msg}");
    assert!(msg.contains("unknown field `attempts`"), "{msg}");
}

#[test]
fn unknown_sink_type_is_an_error() {
    let text = MINIMAL.replace("type: maildir", "type: maildirr");
    let (_, msg) = parse_err(&text);
    assert!(msg.contains("unknown variant `maildirr`"), "{msg}");
}

#[test]
fn missing_env_var_is_named_and_located() {
    let text = MINIMAL.replace("${ALICE_POP3_PASSWORD}", "${BOB_POP3_PASSWORD}");
    let (at, msg) = parse_err(&text);
    assert_eq!(at.0, 8, "{msg}");
    assert!(
        msg.contains("environment variable `BOB_POP3_PASSWORD` is not set"),
        "{msg}"
    );
}

#[test]
fn env_vars_interpolate_in_plain_strings_and_dollar_dollar_escapes() {
    let text = MINIMAL
        .replace("host: pop.example.com", "host: ${POP_HOST}")
        .replace("username: alice@example.com", "username: a$${b}");
    let config = load(&text).unwrap().config;
    assert_eq!(config.mailboxes[0].pop3.host, "pop.example.com");
    assert_eq!(config.mailboxes[0].pop3.username, "a${b}");
}

#[test]
fn password_file_is_read_and_trimmed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), format!("{PASSWORD}\n")).unwrap();
    let text = MINIMAL.replace("password: ${ALICE_POP3_PASSWORD}", "password_file: pw");
    let loaded = load_str_with_env(&text, &dir.path().join("config.yaml"), env).unwrap();
    assert_eq!(loaded.config.mailboxes[0].pop3.secret.expose(), PASSWORD);
}

#[test]
fn password_file_that_is_missing_is_reported_with_its_path() {
    let text = MINIMAL.replace(
        "password: ${ALICE_POP3_PASSWORD}",
        "password_file: nope.txt",
    );
    let shown = invalid(&text);
    assert!(
        shown.starts_with("/etc/popbridge/config.yaml: mailboxes[alice].pop3.password_file: cannot read /etc/popbridge/nope.txt"),
        "{shown}"
    );
}

#[test]
fn exactly_one_of_password_and_password_file() {
    let both = MINIMAL.replace(
        "password: ${ALICE_POP3_PASSWORD}",
        "password: ${ALICE_POP3_PASSWORD}\n      password_file: pw",
    );
    assert!(
        invalid(&both).contains("mailboxes[alice].pop3: give either `password` or `password_file`")
    );
    let neither = MINIMAL.replace("      password: ${ALICE_POP3_PASSWORD}\n", "");
    assert!(invalid(&neither).contains("mailboxes[alice].pop3: missing `password`"));
}

#[test]
fn bad_duration_is_located_and_named() {
    let text = MINIMAL.replace(
        "    sinks: [archive]",
        "    schedule: { every: 5x }\n    sinks: [archive]",
    );
    let (at, msg) = parse_err(&text);
    assert_eq!(at.0, 9, "{msg}");
    assert!(msg.contains("invalid duration `5x`"), "{msg}");
    let text = MINIMAL.replace(
        "    sinks: [archive]",
        "    schedule: { every: 60 }\n    sinks: [archive]",
    );
    let (_, msg) = parse_err(&text);
    assert!(msg.contains("missing unit"), "{msg}");
}

fn with_schedule(schedule: &str) -> String {
    MINIMAL.replace(
        "    sinks: [archive]",
        &format!("    schedule: {schedule}\n    sinks: [archive]"),
    )
}

#[test]
fn every_and_cron_schedules() {
    let c = load(&with_schedule("{ every: 5m, jitter: 10s }"))
        .unwrap()
        .config;
    assert!(matches!(
        c.mailboxes[0].schedule,
        Schedule::Every { interval, jitter }
            if interval == Duration::from_secs(300) && jitter == Duration::from_secs(10)
    ));
    let c = load(&with_schedule("{ cron: \"*/5 * * * *\", jitter: 10s }"))
        .unwrap()
        .config;
    match &c.mailboxes[0].schedule {
        Schedule::Cron {
            expression, jitter, ..
        } => {
            assert_eq!(expression, "*/5 * * * *");
            assert_eq!(*jitter, Duration::from_secs(10));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn bad_cron_is_located() {
    let (at, msg) = parse_err(&with_schedule("{ cron: \"61 * * * *\" }"));
    assert_eq!(at.0, 9, "{msg}");
    assert!(
        msg.contains("invalid cron expression \"61 * * * *\""),
        "{msg}"
    );
    let (_, msg) = parse_err(&with_schedule("{ cron: \"0 */5 * * * *\" }"));
    assert!(msg.contains("expected 5 fields"), "{msg}");
}

#[test]
fn schedule_needs_exactly_one_positive_interval() {
    assert!(invalid(&with_schedule("{ every: 0s }"))
        .contains("mailboxes[alice].schedule.every: must be greater than 0"));
    assert!(invalid(&with_schedule("{ every: 1m, cron: \"* * * * *\" }")).contains("not both"));
    assert!(invalid(&with_schedule("{ jitter: 1s }")).contains("needs `every"));
    assert!(invalid(&with_schedule("{ every: 10s, jitter: 10s }")).contains("schedule.jitter"));
}

fn with_delete(delete: &str) -> String {
    MINIMAL.replace(
        "    sinks: [archive]",
        &format!("    delete: {delete}\n    sinks: [archive]"),
    )
}

#[test]
fn each_delete_form() {
    let policy = |d: &str| load(&with_delete(d)).unwrap().config.mailboxes[0].delete;
    assert_eq!(policy("never"), DeletePolicy::Never);
    assert_eq!(policy("after_delivery"), DeletePolicy::AfterDelivery);
    assert_eq!(policy("{ after_days: 14 }"), DeletePolicy::AfterDays(14));
    assert_eq!(policy("\n      after_days: 7"), DeletePolicy::AfterDays(7));
}

#[test]
fn bad_delete_forms_are_located() {
    let (at, msg) = parse_err(&with_delete("sometimes"));
    assert_eq!(at.0, 9, "{msg}");
    assert!(msg.contains("unknown variant `sometimes`"), "{msg}");
    let (at, msg) = parse_err(&with_delete("{ after_dayz: 3 }"));
    assert_eq!(at, (9, 15), "{msg}");
    assert!(msg.contains("unknown field `after_dayz`"), "{msg}");
    let (_, msg) = parse_err(&with_delete("{ after_days: 0 }"));
    assert!(msg.contains("use `after_delivery`"), "{msg}");
}

#[test]
fn unknown_sink_reference_lists_the_defined_ones() {
    let text = MINIMAL.replace("sinks: [archive]", "sinks: [archiv]");
    assert_eq!(
        invalid(&text),
        "/etc/popbridge/config.yaml: mailboxes[alice].sinks: unknown sink \"archiv\" (defined: archive)"
    );
}

#[test]
fn names_that_could_leave_a_directory_are_refused() {
    // `..` would make the spool reset remove the state directory, and a Maildir path or S3
    // key prefix escape its parent.
    for name in [
        ".",
        "..",
        "...",
        "\"../x\"",
        "a/b",
        "\"a\\0b\"",
        "\"a\\\\b\"",
    ] {
        let text = MINIMAL.replace("- name: alice", &format!("- name: {name}"));
        let shown = invalid(&text);
        assert!(
            shown.contains("/etc/popbridge/config.yaml: mailboxes[0].name: invalid name"),
            "{name}: {shown}"
        );
    }
    let shown = invalid(&MINIMAL.replace("- name: alice", "- name: .."));
    assert!(shown.contains("dots only"), "{shown}");
    let text = MINIMAL
        .replace("sinks: [archive]", "sinks: [\"..\"]")
        .replace("  - name: archive", "  - name: \"..\"");
    assert!(
        invalid(&text).contains("sinks[0].name: invalid name \"..\""),
        "{}",
        invalid(&text)
    );
    // Dots inside a name are still fine.
    let ok = load(&MINIMAL.replace("- name: alice", "- name: .alice.smith")).unwrap();
    assert_eq!(ok.config.mailboxes[0].name, ".alice.smith");
}

#[test]
fn duplicate_and_malformed_names_are_errors() {
    let text = MINIMAL.replace(
        "sinks:\n  - name: archive",
        "sinks:\n  - name: archive\n    type: maildir\n    path: x\n  - name: archive",
    );
    assert!(invalid(&text).contains("sinks[archive].name: duplicate name \"archive\""));
    let text = MINIMAL.replace("name: alice", "name: al ice");
    assert!(invalid(&text).contains("mailboxes[0].name: invalid name \"al ice\""));
}

#[test]
fn tls_none_with_a_password_needs_allow_plaintext_auth() {
    let text = MINIMAL.replace("      username:", "      tls: none\n      username:");
    let shown = invalid(&text);
    assert!(
        shown
            .contains("mailboxes[alice].pop3.tls: `tls: none` would send the password unencrypted"),
        "{shown}"
    );
    assert!(shown.contains("allow_plaintext_auth: true"), "{shown}");
    let text = text.replace(
        "      tls: none\n",
        "      tls: none\n      allow_plaintext_auth: true\n",
    );
    let c = load(&text).unwrap().config;
    assert_eq!(c.mailboxes[0].pop3.tls, TlsMode::None);
    assert_eq!(c.mailboxes[0].pop3.port, 110);
}

#[test]
fn tls_verify_false_is_allowed_with_a_warning() {
    let text = MINIMAL.replace(
        "      username:",
        "      tls: starttls\n      tls_verify: false\n      username:",
    );
    let loaded = load(&text).unwrap();
    assert!(loaded.config.mailboxes[0].pop3.danger_accept_invalid_certs);
    assert_eq!(loaded.config.mailboxes[0].pop3.port, 110);
    assert_eq!(loaded.warnings.len(), 1);
    assert!(loaded.warnings[0].starts_with("mailboxes[alice].pop3.tls_verify"));
}

#[test]
fn secrets_never_appear_in_errors_or_debug() {
    // The helpers assert on every error's Display and Debug; here: the Config itself, and a
    // password that has the wrong type.
    let loaded = load(MINIMAL).unwrap();
    assert!(!format!("{loaded:?}").contains(PASSWORD));
    let text = MINIMAL.replace("${ALICE_POP3_PASSWORD}", "31415926535");
    let e = err(&text);
    assert!(!format!("{e} {e:?}").contains("31415926535"), "{e}");
    // A validation error elsewhere in a config holding a literal password.
    let text = MINIMAL
        .replace("${ALICE_POP3_PASSWORD}", PASSWORD)
        .replace("sinks: [archive]", "sinks: [archiv]");
    invalid(&text);
    let text = MINIMAL.replace("${ALICE_POP3_PASSWORD}", &format!("\"{PASSWORD}${{X\""));
    parse_err(&text);
}

#[test]
fn bad_listen_address_and_zero_limits_are_errors() {
    let text = format!("{MINIMAL}http:\n  listen: localhost\nlimits:\n  max_in_flight: 0\n");
    let shown = invalid(&text);
    assert!(
        shown.contains("http.listen: invalid address \"localhost\""),
        "{shown}"
    );
    assert!(
        shown.contains("limits.max_in_flight: must be at least 1"),
        "{shown}"
    );
}

#[test]
fn retry_overrides_keep_other_defaults() {
    let text = format!("{MINIMAL}    retry: {{ attempts_per_poll: 5, window: 2d }}\n");
    let c = load(&text).unwrap().config;
    let r = &c.sinks[0].retry;
    assert_eq!(r.attempts_per_poll, 5);
    assert_eq!(r.window, Duration::from_secs(2 * 86_400));
    assert_eq!(r.initial_backoff, RetryPolicy::default().initial_backoff);
}

#[test]
fn syntax_errors_are_located() {
    let text = MINIMAL.replace("    sinks: [archive]", "    sinks: [archive");
    let (at, _) = parse_err(&text);
    assert!(at.0 >= 9, "{at:?}");
}

/// The example's commented `mailboxes_from:` block, uncommented, loads `examples/accounts.csv`
/// as it is written: one entry per row, the template filled in.
#[test]
fn example_batch_file_loads() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config.example.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("carol-password");
    std::fs::write(&secret_file, "carol-secret\n").unwrap();
    for name in ["dave", "erin"] {
        std::fs::write(dir.path().join(name), "pw\n").unwrap();
    }
    let mut out = Vec::new();
    let mut in_block = false;
    for line in text.lines() {
        if line.starts_with("# mailboxes_from:") {
            in_block = true;
        } else if !line.starts_with("#  ") {
            in_block = false;
        }
        out.push(match line.strip_prefix("# ") {
            Some(l) if in_block => l.to_string(),
            _ => line.to_string(),
        });
    }
    let text = out
        .join("\n")
        .replace(
            "/run/secrets/carol-pop3-password",
            &secret_file.to_string_lossy(),
        )
        .replace("/run/secrets/pop/", &format!("{}/", dir.path().display()));
    assert!(
        text.contains("\nmailboxes_from:\n"),
        "the block is in the example"
    );
    let loaded = load_str_with_env(&text, &path, |name| match name {
        "APP_WEBHOOK_SECRET" => Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()),
        _ => Some(format!("pw-{name}")),
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<&str> = loaded
        .config
        .mailboxes
        .iter()
        .map(|m| m.name.as_str())
        .collect();
    assert_eq!(names, ["alice", "bob", "carol", "dave", "erin"]);
    let erin = &loaded.config.mailboxes[4];
    assert_eq!(erin.pop3.username, "erin@old.example");
}

#[test]
fn example_config_loads() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config.example.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The example's password_file is absolute; point it at a temporary file instead.
    let secret_file = dir.path().join("carol-password");
    std::fs::write(&secret_file, "carol-secret\n").unwrap();
    let text = text.replace(
        "/run/secrets/carol-pop3-password",
        &secret_file.to_string_lossy(),
    );
    assert!(
        text.contains(&*secret_file.to_string_lossy()),
        "example must use a password_file"
    );
    let loaded = load_str_with_env(&text, &path, |name| match name {
        "ALICE_POP3_PASSWORD"
        | "BOB_POP3_PASSWORD"
        | "APP_WEBHOOK_TOKEN"
        | "CAROL_IMAP_PASSWORD" => Some(format!("pw-{name}")),
        "APP_WEBHOOK_SECRET" => Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()),
        _ => None,
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let c = loaded.config;
    assert_eq!(c.mailboxes.len(), 3);
    let tls: Vec<TlsMode> = c.mailboxes.iter().map(|m| m.pop3.tls).collect();
    assert_eq!(
        tls,
        [TlsMode::Implicit, TlsMode::StartTls, TlsMode::Implicit]
    );
    assert_eq!(c.mailboxes[2].pop3.secret.expose(), "carol-secret");
    assert!(!c.sinks.is_empty());
    // One IMAP block, three target accounts.
    let imap = c
        .sinks
        .iter()
        .find_map(|s| match &s.kind {
            SinkKind::Imap(i) => Some(i),
            _ => None,
        })
        .expect("the example migrates to IMAP");
    assert_eq!(imap.flags, ["\\Seen"]);
    assert_eq!(imap.folder, "Migrated");
    let alice = imap.account_for("alice").unwrap();
    assert_eq!(alice.username, "alice@new.example.com");
    assert!(matches!(
        alice.password,
        crate::sink::imap::config::PasswordSource::File(ref p) if p == Path::new("/run/secrets/imap/alice")
    ));
    assert_eq!(
        imap.account_for("carol").unwrap().username,
        "c.smith@new.example.com"
    );
    let debug = format!("{:?}", imap.account_for("carol").unwrap());
    assert!(!debug.contains("pw-CAROL"), "{debug}");
    // carol's host has per-server limits; her default 60s schedule is raised to them.
    let net = c.server_limits("pop.example.net").unwrap();
    assert_eq!(net.max_connections, Some(1));
    assert_eq!(net.bytes_per_day, Some(1_000_000_000));
    assert!(matches!(
        c.mailboxes[2].schedule,
        Schedule::Every { interval, .. } if interval == Duration::from_secs(300)
    ));
    assert!(loaded
        .warnings
        .iter()
        .any(|w| w.contains("mailboxes[carol].schedule.every")));
}

#[test]
fn an_imap_sink_needs_an_account_for_every_mailbox_it_serves() {
    let text = MINIMAL.replace("    sinks: [archive]", "    sinks: [archive, newhome]")
        + "  - name: newhome\n    type: imap\n    host: imap.example.com\n    username: \"{mailbox}@example.com\"\n";
    let shown = load(&text).unwrap_err().to_string();
    assert!(
        shown.contains("sinks[newhome]") && shown.contains("no target account"),
        "{shown}"
    );
    let ok = text.clone() + "    password: \"secret\"\n";
    assert!(load(&ok).is_ok());
    // No password over plain TCP unless the config says so.
    let plain = ok.clone() + "    tls: none\n";
    let shown = load(&plain).unwrap_err().to_string();
    assert!(shown.contains("allow_plaintext_auth"), "{shown}");
    assert!(load(&(plain + "    allow_plaintext_auth: true\n")).is_ok());
}

#[test]
fn unused_sinks_are_warned_about() {
    let text = format!("{MINIMAL}  - name: spare\n    type: maildir\n    path: spare\n");
    let warnings = load(&text).unwrap().warnings;
    assert_eq!(warnings, ["sinks[spare]: not used by any mailbox"]);
}

#[test]
fn retry_policy_is_checked() {
    let text = format!(
        "{MINIMAL}    retry: {{ attempts_per_poll: 0, initial_backoff: 10s, max_backoff: 1s }}\n"
    );
    let shown = invalid(&text);
    assert!(
        shown.contains("sinks[archive].retry.attempts_per_poll: must be at least 1"),
        "{shown}"
    );
    assert!(
        shown.contains("sinks[archive].retry.max_backoff: must not be shorter"),
        "{shown}"
    );
}

#[test]
fn empty_password_and_empty_sink_list_are_errors() {
    let text = MINIMAL.replace("${ALICE_POP3_PASSWORD}", "''");
    assert!(invalid(&text).contains("mailboxes[alice].pop3.password: is empty"));
    let text = MINIMAL.replace("sinks: [archive]", "sinks: []");
    assert!(invalid(&text).contains("mailboxes[alice].sinks: at least one sink is required"));
}

#[test]
fn load_reads_a_file_and_reports_a_missing_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    let e = super::load(&path).unwrap_err();
    assert!(matches!(e, ConfigError::Read { .. }));
    assert!(e
        .to_string()
        .starts_with(&format!("{}: cannot read", path.display())));
    let text = MINIMAL.replace("${ALICE_POP3_PASSWORD}", "pw");
    std::fs::write(&path, text).unwrap();
    let c = super::load(&path).unwrap().config;
    assert_eq!(c.state.path, dir.path().join("state/popbridge.db"));
}

/// `mailboxes_from`: one mailbox per CSV row, filled into the template, checked like written
/// ones; `${VAR}` in the template still comes from the environment.
#[test]
fn mailboxes_from_a_csv_file_fill_the_template() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("accounts.csv"),
        "name,user,delete\nalice,alice@old.example,never\n\"bob\",\"bob@old.example\",after_delivery\n",
    )
    .unwrap();
    let yaml = "state: { path: ./state.db }\n\
        mailboxes_from:\n  - file: accounts.csv\n    mailbox:\n      name: \"{name}\"\n      \
        pop3: { host: \"${POP_HOST}\", username: \"{user}\", password: \"${ALICE_POP3_PASSWORD}\" }\n      \
        delete: \"{delete}\"\n      sinks: [archive]\n\
        sinks:\n  - name: archive\n    type: maildir\n    path: ./mail/{mailbox}\n";
    let origin = dir.path().join("config.yaml");
    let loaded = load_str_with_env(yaml, &origin, env).unwrap();
    let m = &loaded.config.mailboxes;
    assert_eq!(m.len(), 2);
    assert_eq!(
        (m[0].name.as_str(), m[0].pop3.username.as_str()),
        ("alice", "alice@old.example")
    );
    assert_eq!(m[1].pop3.host, "pop.example.com");
    assert_eq!(m[1].delete, DeletePolicy::AfterDelivery);
    assert_eq!(m[0].delete, DeletePolicy::Never);

    // A template column the CSV lacks: named, with the file and line.
    std::fs::write(dir.path().join("accounts.csv"), "name\nalice\n").unwrap();
    let e = load_str_with_env(yaml, &origin, env)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("accounts.csv:2") && e.contains("no column \"user\""),
        "{e}"
    );
    // A bad value in a row: the row's line, and the mailbox checks as usual.
    std::fs::write(
        dir.path().join("accounts.csv"),
        "name,user,delete\nalice,a,never\nbob,b,sometimes\n",
    )
    .unwrap();
    let e = load_str_with_env(yaml, &origin, env)
        .unwrap_err()
        .to_string();
    assert!(e.contains("accounts.csv:3"), "{e}");
    // Two rows with one name are two mailboxes with one name: refused.
    std::fs::write(
        dir.path().join("accounts.csv"),
        "name,user,delete\nalice,a,never\nalice,b,never\n",
    )
    .unwrap();
    assert!(load_str_with_env(yaml, &origin, env).is_err());
}

#[test]
fn state_url_selects_postgres_with_its_defaults() {
    let text = MINIMAL.replace(
        "  path: state/popbridge.db\n",
        "  url: postgres://pb:${ALICE_POP3_PASSWORD}@db/pb?sslmode=verify-full\n  lease_ttl: 20s\n",
    );
    let Loaded { config, .. } = load(&text).unwrap();
    match &config.state.backend {
        StateBackend::Postgres(pg) => {
            assert!(pg.url.expose().contains(PASSWORD));
            assert_eq!(pg.lease_ttl, Duration::from_secs(20));
            assert_eq!(pg.timeout, Duration::from_secs(10));
            assert!(pg.password_file.is_none());
        }
        StateBackend::Sqlite => panic!("expected PostgreSQL"),
    }
    assert_eq!(
        config.state.spool_dir,
        PathBuf::from("/etc/popbridge/spool")
    );
    let bad = MINIMAL.replace("  path: state/popbridge.db\n", "  url: mysql://db/pb\n");
    assert!(format!("{}", err(&bad)).contains("postgres://"));
    let none = MINIMAL.replace("  path: state/popbridge.db\n", "  retention: 1d\n");
    assert!(format!("{}", err(&none)).contains("state.url"));
}

const ROUTED: &str = "
routes:
  split:
    unmatched: keep
    rules:
      - name: sales
        match: { envelope: '^(?P<user>[a-z]+)@example\\.com$' }
        to: [{ sink: archive, subfolder: '{user}' }]
";

#[test]
fn a_shared_rule_set_is_built_for_the_mailbox() {
    let text = format!(
        "{}{ROUTED}",
        MINIMAL.replace(
            "    sinks: [archive]\n",
            "    sinks: [archive]\n    routes: split\n"
        )
    );
    let Loaded { config, warnings } = load(&text).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let rules = config.mailboxes[0].routes.as_ref().unwrap();
    assert_eq!(rules.name, "split");
    assert_eq!(rules.unmatched, crate::route::Unmatched::Keep);
    assert_eq!(rules.envelope_header, "Delivered-To");
    assert!(rules.envelope_above_received && !rules.needs_body());
}

#[test]
fn an_unknown_key_in_a_rule_is_located() {
    let text = format!(
        "{}{}",
        MINIMAL.replace(
            "    sinks: [archive]\n",
            "    sinks: [archive]\n    routes: split\n"
        ),
        ROUTED.replace("        to: [", "        stopp: true\n        to: [")
    );
    let line = text.lines().position(|l| l.contains("stopp")).unwrap() + 1;
    let (at, msg) = parse_err(&text);
    assert_eq!(at, (line, 9), "{msg}");
    assert!(msg.contains("unknown field `stopp`"), "{msg}");
}

#[test]
fn a_rule_naming_an_unknown_sink_or_set_is_refused() {
    let text = format!(
        "{}{}",
        MINIMAL.replace(
            "    sinks: [archive]\n",
            "    sinks: [archive]\n    routes: splt\n"
        ),
        ROUTED
    );
    let msg = invalid(&text);
    assert!(
        msg.contains(
            "mailboxes[alice].routes: unknown rule set \"splt\" (defined under routes: split)"
        ),
        "{msg}"
    );
    let text = format!(
        "{}{}",
        MINIMAL.replace(
            "    sinks: [archive]\n",
            "    sinks: [archive]\n    routes: split\n"
        ),
        ROUTED.replace("sink: archive,", "sink: archiv,")
    );
    let msg = invalid(&text);
    assert!(
        msg.contains("mailboxes[alice].routes.rules[0].to[0]: unknown sink \"archiv\""),
        "{msg}"
    );
}

/// MINIMAL with a `servers:` block (written after the mailboxes, as a user would).
fn with_servers(schedule: &str, servers: &str) -> String {
    format!("{}servers:\n{servers}", with_schedule(schedule))
}

#[test]
fn a_profile_gives_its_documented_defaults_and_raises_a_short_every_with_one_warning() {
    let text = with_schedule("{ every: 60s }")
        .replace("host: pop.example.com", "host: POP.Gmail.com")
        + "servers:\n  pop.gmail.com:\n    profile: gmail\n    bytes_per_day: 1000000\n";
    let Loaded { config, warnings } = load(&text).unwrap();
    let s = config.server_limits("pop.gmail.com").unwrap();
    assert_eq!(s.profile, Some("gmail"));
    // Google's "Request limits" page: once every 15 minutes.
    assert_eq!(s.min_poll_interval, Some(Duration::from_secs(900)));
    // Google publishes nothing we could read for these: not invented.
    assert_eq!(s.max_connections, None);
    assert_eq!(s.bytes_per_second, None);
    // Written in the entry: kept.
    assert_eq!(s.bytes_per_day, Some(1_000_000));
    assert!(matches!(
        config.mailboxes[0].schedule,
        Schedule::Every { interval, .. } if interval == Duration::from_secs(900)
    ));
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let w = &warnings[0];
    assert!(
        w.contains("mailboxes[alice].schedule.every")
            && w.contains("profile gmail")
            && w.contains("900s"),
        "{w}"
    );
}

#[test]
fn an_entry_overrides_its_profile_and_a_longer_every_is_left_alone() {
    let text = with_servers(
        "{ every: 1h }",
        "  pop.example.com:\n    profile: gmail\n    min_poll_interval: 20m\n    max_connections: 1\n    bytes_per_second: 50000\n",
    );
    let Loaded { config, warnings } = load(&text).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let s = &config.servers[0];
    assert_eq!(s.min_poll_interval, Some(Duration::from_secs(1200)));
    assert_eq!(s.max_connections, Some(1));
    assert_eq!(s.bytes_per_second, Some(50_000));
    assert!(matches!(
        config.mailboxes[0].schedule,
        Schedule::Every { interval, .. } if interval == Duration::from_secs(3600)
    ));
}

#[test]
fn an_unknown_key_in_a_server_entry_is_located() {
    let text = with_servers(
        "{ every: 1h }",
        "  pop.example.com:\n    max_conections: 1\n",
    );
    let (at, msg) = parse_err(&text);
    assert_eq!(at, (17, 5), "{msg}");
    assert!(msg.contains("unknown field `max_conections`"), "{msg}");
}

#[test]
fn bad_server_entries_are_refused() {
    let shown = invalid(&with_servers(
        "{ every: 1h }",
        "  pop.example.com:\n    profile: hotmale\n",
    ));
    assert!(
        shown.contains("servers[pop.example.com].profile")
            && shown.contains("gmail, outlook, yahoo"),
        "{shown}"
    );
    let shown = invalid(&with_servers(
        "{ every: 1h }",
        "  pop.example.com:\n    max_connections: 0\n    bytes_per_second: 0\n    bytes_per_day: 0\n    min_poll_interval: 0s\n",
    ));
    for key in [
        "max_connections",
        "bytes_per_second",
        "bytes_per_day",
        "min_poll_interval",
    ] {
        assert!(
            shown.contains(&format!("servers[pop.example.com].{key}")),
            "{key}: {shown}"
        );
    }
    let shown = invalid(&with_servers(
        "{ every: 1h }",
        "  \"pop.example.com:995\":\n    max_connections: 1\n",
    ));
    assert!(shown.contains("no port"), "{shown}");
}

#[test]
fn an_entry_no_mailbox_uses_is_warned_about() {
    let Loaded { warnings, .. } = load(&with_servers(
        "{ every: 1h }",
        "  pop.exmaple.com:\n    max_connections: 1\n",
    ))
    .unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].starts_with("servers[pop.exmaple.com]: no mailbox polls this host"),
        "{}",
        warnings[0]
    );
}

#[test]
fn a_known_provider_host_without_an_entry_gets_a_suggestion_not_a_change() {
    let text = MINIMAL.replace("host: pop.example.com", "host: pop.gmail.com");
    let Loaded { config, warnings } = load(&text).unwrap();
    assert!(config.servers.is_empty());
    assert!(matches!(
        config.mailboxes[0].schedule,
        Schedule::Every { interval, .. } if interval == Duration::from_secs(60)
    ));
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("profile: gmail"), "{}", warnings[0]);
}

#[test]
fn every_profile_cites_something_or_sets_nothing() {
    // Outlook and Yahoo publish no POP limits we could find: their profiles set nothing.
    for name in ["outlook", "yahoo"] {
        let p = servers::profile(name).unwrap();
        assert_eq!(
            (
                p.min_poll_interval,
                p.max_connections,
                p.bytes_per_second,
                p.bytes_per_day
            ),
            (None, None, None, None),
            "{name}"
        );
    }
    assert_eq!(
        servers::profile_for_host("pop.gmail.com").map(|p| p.name),
        Some("gmail")
    );
    assert!(servers::profile_for_host("pop.example.com").is_none());
}
