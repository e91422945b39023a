//! The Gmail sink's throughput against the Gmail test server (`tests/support/gmail.rs`, in
//! this process), for `bench/gmail.sh`: imports per second with the default quota pacing
//! (Google's per-user limit), with several accounts at once, and with pacing off (what the
//! sink and the test server can do).
//!
//! Usage: `cargo run --release --example gmail_bench -- PACED_N UNPACED_N ACCOUNTS SIZE`
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/support/gmail.rs"]
#[allow(dead_code)]
mod gmail;

use popbridge::key::IdempotencyKey;
use popbridge::sink::gmail::{GmailSettings, GmailSink};
use popbridge::sink::{Sink, SpooledMessage};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Instant;

const TOKEN: &str = "ya29.bench";

fn message(i: usize, size: usize) -> Vec<u8> {
    let mut m = format!(
        "From: bench@example.org\r\nTo: a@example.com\r\nSubject: bench {i}\r\n\
         Message-ID: <bench-{i}@example.org>\r\n\r\n"
    )
    .into_bytes();
    while m.len() < size {
        m.extend_from_slice(b"All work and no play makes a benchmark run long.\r\n");
    }
    m
}

/// Imports `n` messages spread over `accounts` accounts through one sink, `concurrency` at
/// a time (the sink's default, 4); gives (seconds, imports per second).
async fn run(
    dir: &std::path::Path,
    server: &gmail::GmailServer,
    n: usize,
    accounts: usize,
    size: usize,
    paced: bool,
    tag: &str,
) -> (f64, f64) {
    let mut settings = GmailSettings::new(
        server.base.parse().unwrap(),
        &format!("{{mailbox}}-{tag}@example.com"),
        dir.join("token"),
    );
    std::fs::write(dir.join("token"), TOKEN).unwrap();
    if !paced {
        settings.quota_units_per_minute = 0;
    }
    let sink = Arc::new(GmailSink::new("gmail", settings).unwrap());
    let messages: Vec<SpooledMessage> = (0..n)
        .map(|i| {
            let body = message(i, size);
            let path = dir.join(format!("{tag}-{i}.eml"));
            std::fs::write(&path, &body).unwrap();
            SpooledMessage {
                mailbox: format!("acct{}", i % accounts),
                uidl: format!("{tag}-{i}"),
                path,
                size: body.len() as u64,
                sha256: hex::encode(Sha256::digest(&body)),
                fetched_at: chrono::Utc::now(),
                seen_before: false,
                owner: Default::default(),
                params: Default::default(),
            }
        })
        .collect();
    let queue = Arc::new(std::sync::Mutex::new(messages));
    let started = Instant::now();
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (sink, queue) = (sink.clone(), queue.clone());
            tokio::spawn(async move {
                loop {
                    let Some(m) = queue.lock().unwrap().pop() else {
                        return;
                    };
                    let key = IdempotencyKey::derive(&m.mailbox, &m.uidl);
                    sink.deliver(&m, &key).await.unwrap();
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    (secs, n as f64 / secs)
}

#[tokio::main]
async fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("a number"))
        .collect();
    let [paced_n, unpaced_n, accounts, size] = args.as_slice() else {
        eprintln!("usage: gmail_bench PACED_N UNPACED_N ACCOUNTS SIZE");
        std::process::exit(2);
    };
    let dir = tempfile::tempdir().unwrap();
    let server = gmail::GmailServer::start(TOKEN).await;
    let quota = 15_000.0 / 60.0 / 25.0;
    println!("| run | accounts | messages | seconds | imports/s | per account/s | documented limit per account/s |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (name, n, accts, paced) in [
        ("paced (default quota)", *paced_n, 1, true),
        (
            "paced (default quota)",
            *paced_n * accounts,
            *accounts,
            true,
        ),
        (
            "unpaced (`quota_units_per_minute: 0`)",
            *unpaced_n,
            1,
            false,
        ),
    ] {
        let tag = format!("{}-{accts}-{paced}", n);
        let (secs, rate) = run(dir.path(), &server, n, accts, *size, paced, &tag).await;
        println!(
            "| {name} | {accts} | {n} | {secs:.2} | {rate:.1} | {:.1} | {quota:.0} |",
            rate / accts as f64
        );
    }
    let stored: usize = server.shared.messages.lock().unwrap().len();
    assert_eq!(stored, *paced_n + *paced_n * accounts + *unpaced_n);
}
