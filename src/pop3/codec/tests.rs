//! Transcript tests: the same server bytes cut at every chunk size must decode the same way.

use super::*;

/// What the session expects next, as it would know from the command it sent.
#[derive(Clone, Copy)]
enum Expect {
    Single,
    Items,
    Body,
}

#[derive(Debug, PartialEq, Eq)]
enum Decoded {
    Status(StatusLine),
    Items(Vec<Vec<u8>>),
    Body(Vec<u8>),
}

/// Feeds `bytes` in `chunk`-sized pieces, as the socket would, decoding one status line per
/// expectation and then its multi-line part.
fn replay(bytes: &[u8], chunk: usize, expect: &[Expect]) -> Result<Vec<Decoded>, CodecError> {
    let mut input = bytes.chunks(chunk);
    let mut buf = BytesMut::new();
    let mut refill = |buf: &mut BytesMut| match input.next() {
        Some(c) => {
            buf.extend_from_slice(c);
            true
        }
        None => false,
    };
    let mut out = Vec::new();
    for e in expect {
        let line = loop {
            if let Some(l) = take_line(&mut buf, 100)? {
                break l;
            }
            assert!(refill(&mut buf), "transcript ended inside a status line");
        };
        let status = parse_status(&line)?;
        let ok = status.is_ok();
        out.push(Decoded::Status(status));
        match e {
            Expect::Single => {}
            _ if !ok => {}
            Expect::Items => {
                let mut items = Vec::new();
                loop {
                    match take_line(&mut buf, 100)? {
                        Some(l) => match multiline_item(&l) {
                            Some(item) => items.push(item.to_vec()),
                            None => break,
                        },
                        None => assert!(refill(&mut buf), "transcript ended inside a list"),
                    }
                }
                out.push(Decoded::Items(items));
            }
            Expect::Body => {
                let mut dec = BodyDecoder::new(100);
                let mut body = Vec::new();
                while !dec.decode_buf(&mut buf, &mut body)? {
                    assert!(refill(&mut buf), "transcript ended inside a body");
                }
                out.push(Decoded::Body(body));
            }
        }
    }
    assert!(buf.is_empty() && !refill(&mut buf), "bytes left over");
    Ok(out)
}

const CHUNKS: [usize; 13] = [1, 2, 3, 4, 5, 7, 8, 16, 32, 64, 128, 256, 512];

fn ok(text: &str) -> Decoded {
    Decoded::Status(StatusLine {
        status: Status::Ok,
        code: None,
        text: text.into(),
    })
}

#[test]
fn same_result_at_every_chunk_size() {
    let transcript: &[u8] = b"+OK Dovecot ready. <1.2@host>\r\n\
        +OK\r\nCAPA\r\nTOP\r\nUIDL\r\nPIPELINING\r\nSASL PLAIN\r\n.\r\n\
        +OK 2 messages\r\n1 120\r\n2 5\r\n.\r\n\
        -ERR [IN-USE] locked\r\n\
        +OK 120 octets\r\nFrom: a\r\n\r\n..leading dot\r\n...\r\n.x\r\n\x00\xff bin\r\nlast\r\n.\r\n\
        +OK\r\n.\r\n";
    use Expect::*;
    let plan = [Single, Items, Items, Single, Body, Body];
    let want = vec![
        ok("Dovecot ready. <1.2@host>"),
        ok(""),
        Decoded::Items(
            ["CAPA", "TOP", "UIDL", "PIPELINING", "SASL PLAIN"]
                .iter()
                .map(|s| s.as_bytes().to_vec())
                .collect(),
        ),
        ok("2 messages"),
        Decoded::Items(vec![b"1 120".to_vec(), b"2 5".to_vec()]),
        Decoded::Status(StatusLine {
            status: Status::Err,
            code: Some(RespCode::InUse),
            text: "locked".into(),
        }),
        ok("120 octets"),
        Decoded::Body(
            b"From: a\r\n\r\n.leading dot\r\n..\r\nx\r\n\x00\xff bin\r\nlast\r\n".to_vec(),
        ),
        ok(""),
        Decoded::Body(Vec::new()),
    ];
    for chunk in CHUNKS {
        assert_eq!(
            replay(transcript, chunk, &plan).unwrap(),
            want,
            "chunk size {chunk}"
        );
    }
}

#[test]
fn unstuffs_leading_dots() {
    for chunk in CHUNKS {
        let got = replay(b"+OK\r\n..\r\n..a\r\n.\r\n", chunk, &[Expect::Body]).unwrap();
        assert_eq!(got[1], Decoded::Body(b".\r\n.a\r\n".to_vec()));
    }
}

#[test]
fn tolerates_bare_lf_and_keeps_it() {
    for chunk in CHUNKS {
        let got = replay(
            b"+OK\nline one\n..two\r\nthree\n.\n",
            chunk,
            &[Expect::Body],
        )
        .unwrap();
        assert_eq!(got[1], Decoded::Body(b"line one\n.two\r\nthree\n".to_vec()));
    }
}

#[test]
fn keeps_dot_cr_that_is_not_a_terminator() {
    for chunk in CHUNKS {
        let got = replay(b"+OK\r\n.\rx\r\n.\r\n", chunk, &[Expect::Body]).unwrap();
        assert_eq!(got[1], Decoded::Body(b"\rx\r\n".to_vec()));
    }
}

#[test]
fn stops_at_terminator_and_leaves_next_response() {
    let mut dec = BodyDecoder::new(100);
    let mut out = Vec::new();
    let p = dec.decode(b"a\r\n.\r\n+OK next\r\n", &mut out).unwrap();
    assert_eq!(
        p,
        Progress {
            consumed: 6,
            done: true
        }
    );
    assert_eq!(out, b"a\r\n");
}

#[test]
fn rejects_endless_line() {
    let mut buf = BytesMut::from(&[b'x'; 100][..]);
    assert_eq!(
        take_line(&mut buf, 100),
        Err(CodecError::LineTooLong { max: 100 })
    );
    let mut buf = BytesMut::from(&[b'x'; 99][..]);
    assert_eq!(take_line(&mut buf, 100), Ok(None));
}

#[test]
fn rejects_endless_body_line_across_chunks() {
    let mut dec = BodyDecoder::new(10);
    let mut out = Vec::new();
    assert!(dec.decode(b"12345", &mut out).is_ok());
    assert!(dec.decode(b"12345", &mut out).is_ok());
    assert_eq!(
        dec.decode(b"1", &mut out),
        Err(CodecError::LineTooLong { max: 10 })
    );
    // A long stream of short lines is fine: the limit is per line.
    let mut dec = BodyDecoder::new(10);
    for _ in 0..1000 {
        assert!(!dec.decode(b"123456\r\n", &mut out).unwrap().done);
    }
}

#[test]
fn parses_status_lines() {
    let s = parse_status(b"-ERR [SYS/TEMP] try later\r\n").unwrap();
    assert_eq!(
        (s.status, s.code, s.text.as_str()),
        (Status::Err, Some(RespCode::SysTemp), "try later")
    );
    let s = parse_status(b"-ERR [AUTH] Authentication failed.\r\n").unwrap();
    assert_eq!(s.code, Some(RespCode::Auth));
    let s = parse_status(b"+ eyJzdGF0dXMiOiI0MDEifQ==\r\n").unwrap();
    assert_eq!(
        (s.status, s.text.as_str()),
        (Status::Continue, "eyJzdGF0dXMiOiI0MDEifQ==")
    );
    assert_eq!(parse_status(b"+\r\n").unwrap().status, Status::Continue);
    assert_eq!(parse_status(b"+OK").unwrap().status, Status::Ok);
    assert!(parse_status(b"+OKAY\r\n").is_err());
    assert!(parse_status(b"* OK imap\r\n").is_err());
    let s = parse_status(b"-ERR [unterminated code\r\n").unwrap();
    assert_eq!((s.code, s.text.as_str()), (None, "[unterminated code"));
}

/// What a server does to a message before sending it: add CRLF at the end if missing, double
/// every leading dot, append the terminator.
fn stuff(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at_start = true;
    for &b in body {
        if at_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_start = b == b'\n';
    }
    if !at_start {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

#[test]
fn roundtrips_random_bodies_at_random_chunk_sizes() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(1939);
    // A small alphabet reaches the interesting states: dots, CR, LF at line starts.
    let alphabet = b".\r\nax\x00\xff";
    for _ in 0..500 {
        let len = rng.gen_range(0..200);
        let mut body: Vec<u8> = (0..len)
            .map(|_| alphabet[rng.gen_range(0..alphabet.len())])
            .collect();
        if !body.is_empty() && !body.ends_with(b"\n") {
            body.extend_from_slice(b"\r\n");
        }
        let wire = stuff(&body);
        let mut dec = BodyDecoder::new(1000);
        let mut out = Vec::new();
        let mut rest = &wire[..];
        let mut done = false;
        while !rest.is_empty() {
            let n = rng.gen_range(1..=rest.len().min(16));
            let p = dec.decode(&rest[..n], &mut out).unwrap();
            rest = &rest[p.consumed..];
            if p.done {
                done = true;
                break;
            }
        }
        assert!(done && rest.is_empty(), "terminator not found in {wire:?}");
        assert_eq!(out, body, "wire {wire:?}");
    }
}
