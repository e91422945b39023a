use super::*;

const FETCHMAILRC: &str = r#"
# My mail
set daemon 300
set logfile ~/.fetchmail.log
defaults proto pop3
poll pop.example.com with proto POP3 port 995
    user "alice@example.com" there with password "s3cr3t \"quoted\"" is alice here options ssl keep
    user 'bob' there with password 'hunter2' is bob here ssl fetchall
poll imap.example.org proto IMAP user carol password pw
poll mail.example.net user "dave" password "pa ss" mda "/usr/bin/procmail -d %T"
"#;

#[test]
fn a_fetchmailrc_gives_one_mailbox_per_pop3_user() {
    let got = parse(RcTool::Fetchmail, FETCHMAILRC);
    let names: Vec<&str> = got.mailboxes.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "alice-pop.example.com",
            "bob-pop.example.com",
            "dave-mail.example.net"
        ]
    );
    let alice = &got.mailboxes[0];
    assert_eq!(
        (alice.port, alice.tls, alice.deletes),
        (Some(995), "implicit", false)
    );
    assert_eq!(alice.username, "alice@example.com");
    assert_eq!(alice.password_var, "POP3_PASSWORD_ALICE_POP_EXAMPLE_COM");
    let bob = &got.mailboxes[1];
    assert_eq!((bob.tls, bob.deletes), ("implicit", true));
    let dave = &got.mailboxes[2];
    assert_eq!(
        (dave.port, dave.tls, dave.deletes),
        (None, "starttls", true)
    );
    assert!(
        got.notes
            .iter()
            .any(|n| n.contains("imap.example.org: protocol imap is not POP3")),
        "{:?}",
        got.notes
    );
}

#[test]
fn no_password_is_ever_echoed() {
    let yaml = render(RcTool::Fetchmail, &parse(RcTool::Fetchmail, FETCHMAILRC));
    for secret in ["s3cr3t", "hunter2", "pa ss", "pw\n"] {
        assert!(!yaml.contains(secret), "{secret} in\n{yaml}");
    }
    assert!(
        yaml.contains("password: ${POP3_PASSWORD_BOB_POP_EXAMPLE_COM}"),
        "{yaml}"
    );
    assert!(
        yaml.contains("delete: never   # `keep` in the fetchmailrc"),
        "{yaml}"
    );
}

#[test]
fn the_proposal_is_a_valid_popbridge_config() {
    for (tool, text) in [
        (RcTool::Fetchmail, FETCHMAILRC),
        (RcTool::Getmail, GETMAILRC),
    ] {
        let yaml = render(tool, &parse(tool, text));
        let full = format!(
            "state:\n  path: s.db\n{yaml}sinks:\n  - name: archive\n    type: maildir\n    path: mail/{{mailbox}}\n"
        );
        let loaded =
            crate::config::load_str_with_env(&full, std::path::Path::new("/x/c.yaml"), |_| {
                Some("x".to_string())
            });
        assert!(loaded.is_ok(), "{:?}\n{full}", loaded.err());
    }
}

const GETMAILRC: &str = "
[retriever]
type = SimplePOP3SSLRetriever
server = pop.gmail.com
username = erin@gmail.com
password = do-not-print
port = 995

[destination]
type = Maildir
path = ~/Mail/

[options]
delete = true
";

#[test]
fn a_getmailrc_gives_its_retriever() {
    let got = parse(RcTool::Getmail, GETMAILRC);
    assert_eq!(got.mailboxes.len(), 1);
    let m = &got.mailboxes[0];
    assert_eq!(m.name, "erin-pop.gmail.com");
    assert_eq!(
        (m.host.as_str(), m.port, m.tls, m.deletes),
        ("pop.gmail.com", Some(995), "implicit", true)
    );
    let yaml = render(RcTool::Getmail, &got);
    assert!(!yaml.contains("do-not-print"), "{yaml}");
    let imap = parse(
        RcTool::Getmail,
        &GETMAILRC.replace("SimplePOP3SSLRetriever", "SimpleIMAPSSLRetriever"),
    );
    assert!(
        imap.mailboxes.is_empty() && imap.notes[0].contains("not POP3"),
        "{imap:?}"
    );
}
