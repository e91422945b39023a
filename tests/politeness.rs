//! Per-server limits (`servers:`) against a real Dovecot: a host's `min_poll_interval` spaces
//! the polls of `run`, `max_connections` keeps several mailboxes' sessions to one host from
//! overlapping, `bytes_per_second` bounds how fast messages are read, and `bytes_per_day`
//! leaves the rest on the server until the next UTC day, also for a second process the same
//! day. Sessions are observed by a counting TCP proxy in front of Dovecot. Only lower bounds
//! of time are asserted: a limiter guarantees minimum spacing, whatever the machine's load.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use common::{mail, Bridge, Mailbox};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A TCP proxy to Dovecot's plain POP3 port that records when each session opened and ended
/// and delays every server-to-client chunk by `delay` (so sessions last long enough to
/// overlap when nothing keeps them apart).
///
/// A session ends when the proxy reads the client's `QUIT` (recorded before it is forwarded,
/// so before the client can see `+OK` and start its next session: the order is causal, not a
/// race between threads), or when the client hangs up.
struct Proxy {
    port: u16,
    sessions: Sessions,
}

/// (opened, ended) per session, in accept order.
type Sessions = Arc<Mutex<Vec<(Instant, Option<Instant>)>>>;

impl Proxy {
    fn start(target: u16, delay: Duration) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let sessions: Sessions = Arc::default();
        let log = sessions.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let index = {
                    let mut s = log.lock().unwrap();
                    s.push((Instant::now(), None));
                    s.len() - 1
                };
                let log = log.clone();
                std::thread::spawn(move || {
                    let server = TcpStream::connect(("127.0.0.1", target)).unwrap();
                    let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                    let end = move || {
                        let mut s = log.lock().unwrap();
                        s[index].1.get_or_insert_with(Instant::now);
                    };
                    let end2 = end.clone();
                    let up = std::thread::spawn(move || {
                        pump(c2, s2, Duration::ZERO, |chunk| {
                            if chunk
                                .windows(6)
                                .any(|w| w.eq_ignore_ascii_case(b"QUIT\r\n"))
                            {
                                end2();
                            }
                        });
                        end2();
                    });
                    pump(server, client, delay, |_| {});
                    let _ = up.join();
                    end();
                });
            }
        });
        Proxy { port, sessions }
    }

    /// Sessions so far: (opened, ended).
    fn sessions(&self) -> Vec<(Instant, Option<Instant>)> {
        self.sessions.lock().unwrap().clone()
    }

    /// The most sessions open at one time.
    fn max_overlap(&self) -> usize {
        let s = self.sessions();
        let mut events: Vec<(Instant, i32)> = Vec::new();
        for (open, close) in &s {
            events.push((*open, 1));
            events.push((close.expect("every session ended"), -1));
        }
        // At equal times, a close comes before an open (touching is not overlapping).
        events.sort_by_key(|(t, d)| (*t, *d));
        let (mut now, mut max) = (0i32, 0i32);
        for (_, d) in events {
            now += d;
            max = max.max(now);
        }
        usize::try_from(max).unwrap()
    }
}

/// Copies `from` to `to` (showing each chunk to `seen` first, then sleeping `delay`) until
/// `from` ends, then closes `to`'s write side so the other end sees the end too.
fn pump(mut from: TcpStream, mut to: TcpStream, delay: Duration, mut seen: impl FnMut(&[u8])) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                seen(&buf[..n]);
                if !delay.is_zero() {
                    std::thread::sleep(delay);
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// A message of about `size` bytes (CRLF lines of 76 characters), unique by `id`.
fn sized(id: &str, size: usize) -> Vec<u8> {
    let mut m = mail::simple(id, "politeness");
    let line = format!("{}\r\n", "x".repeat(76));
    while m.len() + line.len() <= size {
        m.extend_from_slice(line.as_bytes());
    }
    m
}

/// Appends top-level YAML to the bridge's config file.
fn append(bridge: &Bridge, yaml: &str) {
    let mut text = std::fs::read_to_string(&bridge.config).unwrap();
    text.push_str(yaml);
    std::fs::write(&bridge.config, text).unwrap();
}

/// `run` with `every: 1s` on a host whose `min_poll_interval` is 3s: polls (sessions at the
/// proxy) start at least about 3 s apart, never at the schedule's 1 s.
#[test]
fn min_poll_interval_spaces_the_polls_of_run() {
    let dc = dovecot_or_skip!();
    let user = dc.add_user("polite-interval");
    dc.seed(&user, &[mail::simple("i0", "interval")]);
    let proxy = Proxy::start(dc.pop3_port, Duration::ZERO);
    let mut mb = Mailbox::new("interval", &user);
    mb.every = "1s";
    let bridge = Bridge::plain(proxy.port, &[mb]);
    append(
        &bridge,
        &format!(
            "http:\n  listen: 127.0.0.1:{}\nservers:\n  \"127.0.0.1\":\n    min_poll_interval: 3s\n",
            common::free_port()
        ),
    );
    let check = bridge.run(&["check"]);
    assert!(check.ok(), "{}", check.output());
    assert!(
        check
            .output()
            .contains("mailboxes[interval].schedule.every")
            && check.output().contains("min_poll_interval"),
        "one warning names the mailbox and the limit:\n{}",
        check.output()
    );
    let mut child = bridge.spawn(&["run"]);
    std::thread::sleep(Duration::from_millis(7500));
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let opened: Vec<Instant> = proxy.sessions().iter().map(|(o, _)| *o).collect();
    // At 1 s there would be about 7; at 3 s, 3 (0 s, 3 s, 6 s).
    assert!(
        (2..=3).contains(&opened.len()),
        "{} sessions in 7.5 s",
        opened.len()
    );
    eprintln!(
        "INTERVAL gaps {:?}; load {}",
        opened.windows(2).map(|w| w[1] - w[0]).collect::<Vec<_>>(),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    for w in opened.windows(2) {
        let gap = w[1] - w[0];
        // Lower bound only; 1 s of slack for the time between a poll's start and its connect.
        assert!(
            gap >= Duration::from_secs(2),
            "two polls {gap:?} apart, under min_poll_interval 3s"
        );
    }
    assert_eq!(bridge.delivered("interval").len(), 1);
}

/// Three mailboxes on one host with `max_connections: 1` (the global per-server cap is 2):
/// their sessions never overlap; without the entry, the same `once` overlaps them.
#[test]
fn max_connections_per_host_keeps_sessions_apart() {
    let dc = dovecot_or_skip!();
    let users: Vec<_> = (0..3).map(|_| dc.add_user("polite-conns")).collect();
    for (i, u) in users.iter().enumerate() {
        let msgs: Vec<Vec<u8>> = (0..3)
            .map(|j| mail::simple(&format!("c{i}-{j}"), "conns"))
            .collect();
        dc.seed(u, &msgs);
    }
    // 20 ms per server chunk: a session lasts a few hundred ms.
    let proxy = Proxy::start(dc.pop3_port, Duration::from_millis(20));
    let names = ["conn-a", "conn-b", "conn-c"];
    let mbs: Vec<Mailbox> = names
        .iter()
        .zip(&users)
        .map(|(n, u)| Mailbox::new(n, u))
        .collect();
    let bridge = Bridge::plain(proxy.port, &mbs);
    let base = std::fs::read_to_string(&bridge.config).unwrap();
    append(
        &bridge,
        "servers:\n  \"127.0.0.1\":\n    max_connections: 1\n",
    );
    let run = bridge.once();
    assert!(run.ok(), "{}", run.output());
    for n in names {
        assert_eq!(bridge.delivered(n).len(), 3, "{n}");
    }
    assert!(proxy.sessions().len() >= 3);
    assert_eq!(
        proxy.max_overlap(),
        1,
        "sessions to the host overlapped under max_connections: 1"
    );

    // The same run without the entry: the global cap (2) lets them overlap, so the entry is
    // what kept them apart above.
    std::fs::write(&bridge.config, base).unwrap();
    proxy.sessions.lock().unwrap().clear();
    let run = bridge.once();
    assert!(run.ok(), "{}", run.output());
    assert!(
        proxy.max_overlap() >= 2,
        "without the entry the sessions did not overlap: the test cannot see the cap"
    );
}

/// `bytes_per_second` over about 200 KB: the run takes at least (bytes - one second's burst)
/// / rate, and every message arrives intact.
#[test]
fn bytes_per_second_bounds_how_fast_messages_are_read() {
    let dc = dovecot_or_skip!();
    let user = dc.add_user("polite-rate");
    let msgs: Vec<Vec<u8>> = (0..4).map(|i| sized(&format!("r{i}"), 50_000)).collect();
    let total: usize = msgs.iter().map(Vec::len).sum();
    dc.seed(&user, &msgs);
    let bridge = Bridge::new(dc, &[Mailbox::new("rate", &user)]);
    let rate = 50_000usize;
    append(
        &bridge,
        &format!("servers:\n  \"127.0.0.1\":\n    bytes_per_second: {rate}\n"),
    );
    let started = Instant::now();
    let run = bridge.once();
    let took = started.elapsed();
    assert!(run.ok(), "{}", run.output());
    common::assert_exactly_once(&msgs, &bridge.delivered("rate"));
    let floor = Duration::from_secs_f64((total - rate) as f64 / rate as f64);
    eprintln!(
        "RATE {total} bytes at {rate} B/s: took {took:?}, floor {floor:?}; load {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    assert!(
        took >= floor,
        "{total} bytes at {rate}/s took {took:?}, under the floor {floor:?}"
    );
}

/// `bytes_per_day` with room for two messages: `once` fetches two, the rest stay on the
/// server with the reason in the summary, and a second `once` the same day fetches nothing
/// new (the day's bytes are read from the state).
#[test]
fn bytes_per_day_leaves_the_rest_on_the_server_until_the_next_utc_day() {
    let dc = dovecot_or_skip!();
    let user = dc.add_user("polite-day");
    let msgs: Vec<Vec<u8>> = (0..5).map(|i| sized(&format!("d{i}"), 2_000)).collect();
    let size = msgs[0].len();
    assert!(msgs.iter().all(|m| m.len() == size));
    dc.seed(&user, &msgs);
    let mut mb = Mailbox::new("daily", &user);
    mb.delete = "after_delivery";
    let bridge = Bridge::new(dc, &[mb]);
    append(
        &bridge,
        &format!(
            "servers:\n  \"127.0.0.1\":\n    bytes_per_day: {}\n",
            2 * size + size / 2
        ),
    );
    let run = bridge.once();
    assert_eq!(run.code, Some(1), "mail is left over: {}", run.output());
    assert_eq!(bridge.delivered("daily").len(), 2, "{}", run.output());
    assert_eq!(dc.list_server_messages(&user).len(), 3);
    assert!(
        run.stdout
            .contains("3 message(s) wait on the server: the daily download budget of 127.0.0.1")
            && run.stdout.contains("PAUSED"),
        "{}",
        run.output()
    );
    assert!(
        run.stderr
            .contains("Daily download budget of the host spent"),
        "{}",
        run.output()
    );

    // `plan` says the same, without fetching anything.
    let plan = bridge.run(&["plan"]);
    assert!(plan.ok(), "{}", plan.output());
    assert_eq!(
        plan.stdout
            .matches("the daily download budget of 127.0.0.1 is spent")
            .count(),
        3,
        "{}",
        plan.output()
    );

    // A second process the same day: the state says two messages were fetched today.
    let run = bridge.once();
    assert_eq!(run.code, Some(1), "{}", run.output());
    assert_eq!(bridge.delivered("daily").len(), 2, "{}", run.output());
    assert_eq!(dc.list_server_messages(&user).len(), 3);
    assert!(
        run.stdout.contains("3 message(s) wait on the server"),
        "{}",
        run.output()
    );
}
