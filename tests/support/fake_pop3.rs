//! A small in-process POP3 server with an in-memory mailbox and switchable misbehaviour, for
//! the quirks a real server will not produce (duplicate UIDLs, no UIDL, -ERR on DELE, a
//! disconnect in the middle of RETR). Each session sees the mailbox as it is at login, and
//! deletions take effect only at QUIT, as RFC 1939 says.

use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

#[derive(Clone, Debug)]
pub struct Msg {
    pub uidl: String,
    pub body: Vec<u8>,
}

#[derive(Default, Debug)]
pub struct Quirks {
    /// Answer UIDL with -ERR.
    pub no_uidl: bool,
    /// Answer DELE of these UIDLs with -ERR.
    pub refuse_dele: Vec<String>,
    /// Close the connection halfway through the body of this UIDL, once.
    pub disconnect_in_retr: Option<String>,
    /// Close the connection on QUIT without answering or applying the deletions.
    pub hang_up_on_quit: bool,
    /// Close the connection halfway through the body of this UIDL, every time.
    pub always_disconnect_in_retr: Option<String>,
    /// Messages RETR'd in a session that ends with QUIT are gone afterwards: Gmail's "popped"
    /// messages (normal POP mode) and servers advertising `EXPIRE 0`.
    pub remove_retrieved_at_quit: bool,
    /// Extra CAPA lines (e.g. `EXPIRE 0`, `LOGIN-DELAY 60`).
    pub capa: Vec<String>,
    /// As Courier without `UTF8` mode: a message with 8-bit header bytes is served as a
    /// substitute saying "Cannot display Unicode content", with a new boundary every RETR.
    pub downconvert_without_utf8: bool,
}

/// Courier's kind of substitute for a message with raw UTF-8 headers (RFC 6856 section 3).
fn substitute(original: &[u8], n: usize) -> Vec<u8> {
    // The shape Courier 1.0.16 serves (see tests/courier_pop3.rs): a new message of its own
    // with the original inside as `message/global`.
    let boundary = format!("=_courier-downgrade-{n}");
    let mut out = format!(
        "From: Mail Delivery Subsystem <postmaster>\r\nSubject: Cannot display Unicode content\r\n\
         Mime-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n\
         --{boundary}\r\nContent-Type: text/plain\r\n\r\n\
         This E-mail message was determined to be Unicode-formatted\r\n\
         but your E-mail reader does not support Unicode E-mail.\r\n\r\n--{boundary}\r\n\
         Content-Type: message/global\r\n\r\n"
    )
    .into_bytes();
    out.extend_from_slice(original);
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    out
}

#[derive(Default)]
pub struct State {
    pub messages: Vec<Msg>,
    pub quirks: Quirks,
    /// Every RETR served, by UIDL (to count fetches).
    pub retrieved: Vec<String>,
    pub logins: usize,
    /// Sessions that ended with QUIT.
    pub quits: usize,
    /// Every command verb received, upper-cased, in order (all sessions).
    pub commands: Vec<String>,
}

pub struct FakePop3 {
    pub port: u16,
    pub state: Arc<Mutex<State>>,
}

fn stuff(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 8);
    for line in body.split_inclusive(|&b| b == b'\n') {
        if line.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(line);
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

impl FakePop3 {
    pub async fn start(messages: Vec<Msg>, quirks: Quirks) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State {
            messages,
            quirks,
            ..Default::default()
        }));
        let st = state.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                tokio::spawn(session(sock, st.clone()));
            }
        });
        Self { port, state }
    }

    pub fn uidls_on_server(&self) -> Vec<String> {
        self.state
            .lock()
            .unwrap()
            .messages
            .iter()
            .map(|m| m.uidl.clone())
            .collect()
    }
}

async fn session(sock: tokio::net::TcpStream, state: Arc<Mutex<State>>) {
    let (r, mut w) = sock.into_split();
    let mut lines = BufReader::new(r).lines();
    let _ = w.write_all(b"+OK fake ready\r\n").await;
    let mut snapshot: Vec<Msg> = Vec::new();
    let mut deleted: Vec<usize> = Vec::new();
    let mut retrieved: Vec<usize> = Vec::new();
    let mut logged_in = false;
    let mut utf8_on = false;
    while let Ok(Some(line)) = lines.next_line().await {
        let mut parts = line.split_whitespace();
        let cmd = parts.next().unwrap_or("").to_ascii_uppercase();
        let arg: Option<usize> = parts.next().and_then(|a| a.parse().ok());
        state.lock().unwrap().commands.push(cmd.clone());
        let reply: Vec<u8> = match cmd.as_str() {
            "CAPA" => {
                let mut out = b"+OK\r\nUSER\r\nUIDL\r\nPIPELINING\r\n".to_vec();
                for line in &state.lock().unwrap().quirks.capa {
                    out.extend_from_slice(format!("{line}\r\n").as_bytes());
                }
                out.extend_from_slice(b".\r\n");
                out
            }
            // RFC 6856: only before authentication, and only when advertised.
            "UTF8"
                if !logged_in
                    && state
                        .lock()
                        .unwrap()
                        .quirks
                        .capa
                        .iter()
                        .any(|c| c == "UTF8") =>
            {
                utf8_on = true;
                b"+OK UTF8 enabled\r\n".to_vec()
            }
            "USER" => b"+OK\r\n".to_vec(),
            "PASS" => {
                let mut s = state.lock().unwrap();
                s.logins += 1;
                logged_in = true;
                snapshot = s.messages.clone();
                b"+OK logged in\r\n".to_vec()
            }
            "STAT" => format!("+OK {} 0\r\n", snapshot.len()).into_bytes(),
            "LIST" => {
                let mut out = b"+OK\r\n".to_vec();
                for (i, m) in snapshot.iter().enumerate() {
                    if !deleted.contains(&i) {
                        out.extend_from_slice(format!("{} {}\r\n", i + 1, m.body.len()).as_bytes());
                    }
                }
                out.extend_from_slice(b".\r\n");
                out
            }
            "UIDL" if state.lock().unwrap().quirks.no_uidl => b"-ERR unknown command\r\n".to_vec(),
            "UIDL" => {
                let mut out = b"+OK\r\n".to_vec();
                for (i, m) in snapshot.iter().enumerate() {
                    if !deleted.contains(&i) {
                        out.extend_from_slice(format!("{} {}\r\n", i + 1, m.uidl).as_bytes());
                    }
                }
                out.extend_from_slice(b".\r\n");
                out
            }
            "RETR" => match arg.and_then(|n| snapshot.get(n - 1)) {
                Some(m) => {
                    retrieved.push(arg.unwrap_or(1) - 1);
                    let cut = {
                        let mut s = state.lock().unwrap();
                        s.retrieved.push(m.uidl.clone());
                        if s.quirks.always_disconnect_in_retr.as_deref() == Some(m.uidl.as_str()) {
                            true
                        } else if s.quirks.disconnect_in_retr.as_deref() == Some(m.uidl.as_str()) {
                            s.quirks.disconnect_in_retr = None;
                            true
                        } else {
                            false
                        }
                    };
                    let mut out = b"+OK\r\n".to_vec();
                    let head = m.body.split(|&b| b == b'\n').take_while(|l| l.len() > 1);
                    let eight_bit = head.flatten().any(|&b| b >= 0x80);
                    let downconvert = eight_bit
                        && !utf8_on
                        && state.lock().unwrap().quirks.downconvert_without_utf8;
                    if downconvert {
                        let n = state.lock().unwrap().retrieved.len();
                        out.extend_from_slice(&stuff(&substitute(&m.body, n)));
                    } else {
                        out.extend_from_slice(&stuff(&m.body));
                    }
                    if cut {
                        let _ = w.write_all(&out[..out.len() / 2]).await;
                        return;
                    }
                    out
                }
                None => b"-ERR no such message\r\n".to_vec(),
            },
            "DELE" => match arg {
                Some(n) if n >= 1 && n <= snapshot.len() => {
                    let refused = state
                        .lock()
                        .unwrap()
                        .quirks
                        .refuse_dele
                        .contains(&snapshot[n - 1].uidl);
                    if refused {
                        b"-ERR permission denied\r\n".to_vec()
                    } else {
                        deleted.push(n - 1);
                        b"+OK\r\n".to_vec()
                    }
                }
                _ => b"-ERR no such message\r\n".to_vec(),
            },
            "RSET" => {
                deleted.clear();
                b"+OK\r\n".to_vec()
            }
            "NOOP" => b"+OK\r\n".to_vec(),
            "QUIT" if state.lock().unwrap().quirks.hang_up_on_quit => return,
            "QUIT" => {
                // By UIDL and content, so one of two messages sharing a UIDL can go alone.
                {
                    let mut s = state.lock().unwrap();
                    s.quits += 1;
                    if s.quirks.remove_retrieved_at_quit {
                        deleted.extend(retrieved.iter().copied());
                    }
                    let gone: Vec<(String, Vec<u8>)> = deleted
                        .iter()
                        .map(|i| (snapshot[*i].uidl.clone(), snapshot[*i].body.clone()))
                        .collect();
                    s.messages
                        .retain(|m| !gone.iter().any(|(u, b)| *u == m.uidl && *b == m.body));
                }
                let _ = w.write_all(b"+OK bye\r\n").await;
                return;
            }
            _ => b"-ERR unknown\r\n".to_vec(),
        };
        if w.write_all(&reply).await.is_err() {
            return;
        }
    }
}
