//! The harness's own oracle, without popbridge: the private Dovecot serves what we seed,
//! byte for byte after dot-unstuffing, and offers what the end-to-end tests rely on.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use common::mail;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;

struct Pop3 {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Pop3 {
    fn connect(port: u16) -> (Pop3, String) {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to Dovecot");
        let writer = stream.try_clone().expect("clone stream");
        let mut pop = Pop3 {
            reader: BufReader::new(stream),
            writer,
        };
        let greeting = pop.line();
        (pop, greeting)
    }

    fn line(&mut self) -> String {
        let mut buf = Vec::new();
        self.reader.read_until(b'\n', &mut buf).expect("read line");
        String::from_utf8_lossy(&buf).into_owned()
    }

    fn command(&mut self, cmd: &str) -> String {
        self.writer
            .write_all(format!("{cmd}\r\n").as_bytes())
            .expect("send");
        let reply = self.line();
        assert!(reply.starts_with("+OK"), "{cmd}: {reply}");
        reply
    }

    /// The body of a multi-line reply, dot-unstuffed, lines kept with their CRLF.
    fn multiline(&mut self) -> Vec<u8> {
        let mut body = Vec::new();
        loop {
            let mut line = Vec::new();
            self.reader.read_until(b'\n', &mut line).expect("read body");
            if line == b".\r\n" {
                return body;
            }
            let unstuffed = if line.starts_with(b".") {
                &line[1..]
            } else {
                &line[..]
            };
            body.extend_from_slice(unstuffed);
        }
    }
}

#[test]
fn dovecot_returns_seeded_messages_byte_for_byte_after_unstuffing() {
    let dc = dovecot_or_skip!();
    let user = dc.add_user("oracle");
    let messages = mail::corpus("oracle", 8);
    dc.seed(&user, &messages);

    let (mut pop, greeting) = Pop3::connect(dc.pop3_port);
    assert!(
        greeting.starts_with("+OK") && greeting.contains('<'),
        "APOP timestamp: {greeting}"
    );
    pop.command("CAPA");
    let capa = String::from_utf8_lossy(&pop.multiline()).into_owned();
    for cap in ["STLS", "UIDL", "PIPELINING", "USER"] {
        assert!(capa.contains(cap), "CAPA lacks {cap}: {capa}");
    }
    pop.command(&format!("USER {}", user.name));
    pop.command(&format!("PASS {}", user.password));
    let stat = pop.command("STAT");
    assert!(
        stat.starts_with(&format!("+OK {} ", messages.len())),
        "{stat}"
    );
    let mut fetched = Vec::new();
    for i in 1..=messages.len() {
        pop.command(&format!("RETR {i}"));
        fetched.push(pop.multiline());
    }
    pop.command("QUIT");
    common::assert_exactly_once(&messages, &fetched);
    common::assert_exactly_once(&messages, &dc.list_server_messages(&user));
}

#[test]
fn users_are_isolated_and_a_wrong_password_is_refused() {
    let dc = dovecot_or_skip!();
    let (a, b) = (dc.add_user("iso"), dc.add_user("iso"));
    dc.seed(&a, &[mail::simple("iso-a", "for a")]);
    let (mut pop, _) = Pop3::connect(dc.pop3_port);
    pop.command(&format!("USER {}", b.name));
    pop.writer
        .write_all(format!("PASS {}\r\n", a.password).as_bytes())
        .expect("send");
    assert!(
        pop.line().starts_with("-ERR"),
        "b logged in with a's password"
    );
    let (mut pop, _) = Pop3::connect(dc.pop3_port);
    pop.command(&format!("USER {}", b.name));
    pop.command(&format!("PASS {}", b.password));
    assert!(pop.command("STAT").starts_with("+OK 0 "), "b sees a's mail");
}
