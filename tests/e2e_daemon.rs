//! Through the binary, against a real Dovecot: `popbridge run` polls on its schedule, delivers
//! mail that arrives while it runs, answers `/healthz` and `/readyz`, and stops cleanly on
//! SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use common::{assert_exactly_once, mail, Bridge, Mailbox};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// The HTTP status code of `GET path`, or `None` if nothing answers.
fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.split_whitespace().nth(1)?.parse().ok()
}

/// Waits (up to a generous limit: this is not a timing assertion) until `done` holds.
fn wait_for(what: &str, child: &mut Child, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !done() {
        assert!(
            child.try_wait().expect("poll").is_none(),
            "popbridge run exited while waiting for {what}"
        );
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn run_delivers_on_schedule_serves_health_and_stops_on_sigterm() {
    let dc = dovecot_or_skip!();
    let user = dc.add_user("daemon");
    let first = mail::corpus("daemon-a", 10);
    dc.seed(&user, &first);
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mailbox = Mailbox {
        every: "1s",
        ..Mailbox::new("daemon", &user)
    };
    let bridge = Bridge::with_http(dc, &[mailbox], Some(addr));

    let mut child = bridge.spawn(&["run"]);
    wait_for("/healthz", &mut child, || {
        http_status(addr, "/healthz") == Some(200)
    });
    wait_for("the first poll", &mut child, || {
        bridge.delivered("daemon").len() == first.len()
    });
    wait_for("/readyz", &mut child, || {
        http_status(addr, "/readyz") == Some(200)
    });

    let later = mail::corpus("daemon-b", 5);
    dc.seed(&user, &later);
    let total = first.len() + later.len();
    wait_for("a later poll", &mut child, || {
        bridge.delivered("daemon").len() >= total
    });

    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "popbridge run did not exit cleanly on SIGTERM"
    );
    let all: Vec<Vec<u8>> = first.into_iter().chain(later).collect();
    assert_exactly_once(&all, &bridge.delivered("daemon"));
}

/// The body of `GET path`, or `None` if nothing answers.
fn http_body(addr: SocketAddr, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response.split_once("\r\n\r\n")?.1.to_string())
}

#[test]
fn a_wrong_password_is_not_polled_again_every_interval_but_backs_off() {
    let dc = dovecot_or_skip!();
    let user = dc.add_user("lockout");
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mailbox = Mailbox {
        every: "1s",
        password: Some("not-the-password"),
        ..Mailbox::new("lockout", &user)
    };
    let bridge = Bridge::with_http(dc, &[mailbox], Some(addr));
    let mut child = bridge.spawn(&["run"]);
    // Bounded metrics (the default): the longest backoff of any mailbox.
    wait_for("the backoff in /metrics", &mut child, || {
        http_body(addr, "/metrics")
            .is_some_and(|m| m.contains(r#"popbridge_poll_backoff_seconds{mailbox="_all"} 60"#))
    });
    // Four intervals later, still one failed login on the server, not five.
    std::thread::sleep(Duration::from_secs(4));
    let failed = dc
        .log()
        .lines()
        .filter(|l| l.contains(&format!("({},", user.name)) && l.contains("Password mismatch"))
        .count();
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));
    assert_eq!(
        failed, 1,
        "logins with a wrong password were retried every interval"
    );
}
