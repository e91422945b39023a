//! An in-process Gmail API (axum on loopback) for the Gmail sink tests, following Google's
//! published contract (the gmail v1 discovery document and the upload protocols): the import
//! endpoint with `uploadType=multipart` (a `multipart/related` body: JSON metadata, then the
//! message) and `uploadType=resumable` (POST → `Location` session; PUT chunks with
//! `Content-Range`, `308` + `Range` until complete, then `200` with the Message resource),
//! `messages.list` (`q` with `rfc822msgid:`, `larger:`, `smaller:`), `messages.get`
//! (`format=raw`), `labels.list`/`labels.create`, bearer tokens, Google-style error
//! documents, and scripted faults.

// Handlers answer errors as ready responses; boxing them would only add noise.
#![allow(clippy::result_large_err)]

use axum::body::Body;
use axum::extract::State;
use axum::http::{Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// An imported message as the server holds it.
#[derive(Clone, Debug)]
pub struct Stored {
    pub id: String,
    pub user: String,
    pub raw: Vec<u8>,
    pub label_ids: Vec<String>,
    /// `multipart` or `resumable`.
    pub upload: String,
    /// The import's query parameters.
    pub query: HashMap<String, String>,
}

/// A scripted answer to the next import request (the first request of an upload).
#[derive(Clone, Debug)]
pub enum Fault {
    /// An error document with this status, reason and optional `Retry-After`.
    Error(u16, &'static str, Option<&'static str>),
    /// 401 whatever the token.
    Unauthorized,
    /// Store the message, then never answer (the client times out).
    HangAfterStore,
}

struct Session {
    user: String,
    labels: Vec<String>,
    total: u64,
    received: Vec<u8>,
    query: HashMap<String, String>,
}

#[derive(Default)]
pub struct Shared {
    pub messages: Mutex<Vec<Stored>>,
    /// User labels by user: (id, name).
    pub labels: Mutex<HashMap<String, Vec<(String, String)>>>,
    sessions: Mutex<HashMap<String, Session>>,
    pub faults: Mutex<VecDeque<Fault>>,
    /// Resumable PUTs to keep and then leave unanswered, counted down.
    pub hang_chunks: AtomicUsize,
    /// The bearer token the server accepts.
    pub token: Mutex<String>,
    /// Every request as `METHOD path?query`.
    pub log: Mutex<Vec<String>>,
    /// `Content-Range` of every resumable PUT.
    pub ranges: Mutex<Vec<String>>,
    pub label_creates: AtomicUsize,
    next_id: AtomicUsize,
    /// Accounts whose daily quota is used up: each import answers 403 `dailyLimitExceeded`.
    pub exhausted: Mutex<std::collections::HashSet<String>>,
    /// When each import request (the first request of an upload) arrived, and for whom.
    pub import_times: Mutex<Vec<(String, std::time::Instant)>>,
    /// When set, tokens are HS256 JWTs signed with this key (the test token endpoint's), not
    /// expired, whose `sub` must be the user in the path: a token opens only its own account.
    pub jwt_key: Mutex<Option<Vec<u8>>>,
    /// The largest message imported, in bytes; 0: Gmail's 157286400 (150 MB). Tests lower it
    /// to see the 413 without uploading 150 MB.
    pub max_import: std::sync::atomic::AtomicU64,
}

impl Shared {
    fn max_import(&self) -> u64 {
        match self.max_import.load(Ordering::SeqCst) {
            0 => 157_286_400,
            n => n,
        }
    }
}

pub struct GmailServer {
    pub base: String,
    pub shared: Arc<Shared>,
}

const SYSTEM: &[&str] = &[
    "INBOX",
    "UNREAD",
    "SPAM",
    "TRASH",
    "SENT",
    "DRAFT",
    "STARRED",
    "IMPORTANT",
    "CHAT",
    "CATEGORY_PERSONAL",
    "CATEGORY_SOCIAL",
    "CATEGORY_PROMOTIONS",
    "CATEGORY_UPDATES",
    "CATEGORY_FORUMS",
];

/// Parameters every Google API method takes (the discovery document's top-level ones).
const STANDARD: &[&str] = &[
    "$.xgafv",
    "access_token",
    "alt",
    "callback",
    "fields",
    "key",
    "oauth_token",
    "prettyPrint",
    "quotaUser",
    "uploadType",
    "upload_protocol",
];

fn error(code: u16, reason: &str, message: &str) -> Response {
    let status = match code {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ALREADY_EXISTS",
        429 => "RESOURCE_EXHAUSTED",
        _ => "INTERNAL",
    };
    let body = serde_json::json!({"error": {"code": code, "message": message, "status": status,
        "errors": [{"message": message, "domain": "global", "reason": reason}]}});
    (
        StatusCode::from_u16(code).unwrap(),
        [("content-type", "application/json; charset=UTF-8")],
        body.to_string(),
    )
        .into_response()
}

fn json(value: serde_json::Value) -> Response {
    (
        StatusCode::OK,
        [("content-type", "application/json; charset=UTF-8")],
        value.to_string(),
    )
        .into_response()
}

fn query_of(uri: &axum::http::Uri) -> HashMap<String, String> {
    let url = reqwest::Url::parse(&format!("http://x{uri}")).unwrap();
    url.query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// Every query parameter must be one of the method's (from the discovery document) or a
/// standard one, and booleans/enums must have legal values.
fn check_params(q: &HashMap<String, String>, allowed: &[&str]) -> Result<(), Response> {
    for (k, v) in q {
        if !allowed.contains(&k.as_str()) && !STANDARD.contains(&k.as_str()) && k != "upload_id" {
            return Err(error(
                400,
                "invalidParameter",
                &format!("unknown parameter {k}"),
            ));
        }
        let boolean = [
            "neverMarkSpam",
            "processForCalendar",
            "deleted",
            "includeSpamTrash",
        ];
        if boolean.contains(&k.as_str()) && v != "true" && v != "false" {
            return Err(error(
                400,
                "invalidParameter",
                &format!("{k} must be a boolean"),
            ));
        }
        if k == "internalDateSource" && v != "dateHeader" && v != "receivedTime" {
            return Err(error(400, "invalidParameter", "bad internalDateSource"));
        }
        if k == "format" && !["minimal", "full", "raw", "metadata"].contains(&v.as_str()) {
            return Err(error(400, "invalidParameter", "bad format"));
        }
    }
    Ok(())
}

fn boundary_of(content_type: &str) -> Option<String> {
    let (kind, params) = content_type.split_once(';')?;
    if !kind.trim().eq_ignore_ascii_case("multipart/related") {
        return None;
    }
    params.split(';').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        (k.trim() == "boundary").then(|| v.trim().trim_matches('"').to_string())
    })
}

/// Splits a `multipart/related` body (RFC 2046; CRLF or LF line ends) into (headers, body).
fn parts(body: &[u8], boundary: &str) -> Result<Vec<(String, Vec<u8>)>, String> {
    let delim = format!("--{boundary}").into_bytes();
    let find = |from: usize| -> Option<usize> {
        (from..body.len().saturating_sub(delim.len() - 1))
            .find(|&i| body[i..].starts_with(&delim) && (i == 0 || body[i - 1] == b'\n'))
    };
    let mut at = find(0).ok_or("no opening boundary")?;
    let mut out = Vec::new();
    loop {
        let after = at + delim.len();
        if body[after..].starts_with(b"--") {
            return Ok(out);
        }
        let start = after
            + if body[after..].starts_with(b"\r\n") {
                2
            } else if body[after..].starts_with(b"\n") {
                1
            } else {
                return Err("boundary line not ended".into());
            };
        let next = find(start).ok_or("no closing boundary")?;
        let mut end = next - 1;
        if end > start && body[end - 1] == b'\r' {
            end -= 1;
        }
        let part = &body[start..end];
        // The part's header section ends at its first empty line, CRLF or LF (Google's own
        // client writes LF), whichever comes first: the message inside has its own.
        let crlf = part
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|i| (i, 4));
        let lf = part.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2));
        let Some((i, n)) = [crlf, lf].into_iter().flatten().min_by_key(|(i, _)| *i) else {
            return Err("part without a header section".into());
        };
        let (head, content) = (&part[..i], &part[i + n..]);
        out.push((String::from_utf8_lossy(head).into_owned(), content.to_vec()));
        at = next;
    }
}

fn part_type(head: &str) -> String {
    head.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_ascii_lowercase())
        })
        .unwrap_or_default()
}

/// The `sub` of an HS256 JWT signed with `key` that has not expired.
fn jwt_subject(jwt: &str, key: &[u8]) -> Option<String> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
    let (input, sig) = jwt.rsplit_once('.')?;
    let pkey = openssl::pkey::PKey::hmac(key).ok()?;
    let mut signer =
        openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &pkey).ok()?;
    signer.update(input.as_bytes()).ok()?;
    if B64URL.encode(signer.sign_to_vec().ok()?) != sig {
        return None;
    }
    let claims: serde_json::Value =
        serde_json::from_slice(&B64URL.decode(input.split('.').nth(1)?).ok()?).ok()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs();
    (claims["exp"].as_u64()? > now).then(|| claims["sub"].as_str().map(str::to_owned))?
}

impl Shared {
    fn authorised(&self, req_auth: Option<&str>, user: Option<&str>) -> bool {
        let key = self.jwt_key.lock().unwrap().clone();
        if let Some(key) = key {
            let Some(jwt) = req_auth.and_then(|a| a.strip_prefix("Bearer ")) else {
                return false;
            };
            return jwt_subject(jwt, &key).is_some_and(|sub| user.is_none_or(|u| u == sub));
        }
        let token = self.token.lock().unwrap().clone();
        req_auth == Some(format!("Bearer {token}").as_str())
    }

    fn known_label(&self, user: &str, id: &str) -> bool {
        SYSTEM.contains(&id)
            || self
                .labels
                .lock()
                .unwrap()
                .get(user)
                .is_some_and(|l| l.iter().any(|(i, _)| i == id))
    }

    /// Metadata JSON: a Message resource; `labelIds` must name existing labels.
    fn metadata(&self, user: &str, json: &[u8]) -> Result<Vec<String>, Response> {
        if json.iter().all(u8::is_ascii_whitespace) {
            return Ok(vec![]);
        }
        let v: serde_json::Value = serde_json::from_slice(json)
            .map_err(|e| error(400, "parseError", &format!("metadata: {e}")))?;
        let allowed = ["labelIds", "threadId", "raw", "id"];
        for k in v
            .as_object()
            .ok_or_else(|| error(400, "parseError", "not an object"))?
            .keys()
        {
            if !allowed.contains(&k.as_str()) {
                return Err(error(400, "invalidArgument", &format!("unknown field {k}")));
            }
        }
        let labels: Vec<String> = v
            .get("labelIds")
            .map(|l| serde_json::from_value(l.clone()))
            .transpose()
            .map_err(|_| error(400, "invalidArgument", "labelIds must be strings"))?
            .unwrap_or_default();
        if let Some(bad) = labels.iter().find(|l| !self.known_label(user, l)) {
            return Err(error(
                400,
                "invalidArgument",
                &format!("Invalid label: {bad}"),
            ));
        }
        Ok(labels)
    }

    fn store(
        &self,
        user: &str,
        raw: Vec<u8>,
        labels: Vec<String>,
        upload: &str,
        query: HashMap<String, String>,
    ) -> Stored {
        let n = self.next_id.fetch_add(1, Ordering::SeqCst) + 1;
        let stored = Stored {
            id: format!("18c{n:013x}"),
            user: user.to_string(),
            raw,
            label_ids: labels,
            upload: upload.to_string(),
            query,
        };
        self.messages.lock().unwrap().push(stored.clone());
        stored
    }

    pub fn of(&self, user: &str) -> Vec<Stored> {
        self.messages
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m.user == user)
            .cloned()
            .collect()
    }
}

fn resource(m: &Stored) -> serde_json::Value {
    serde_json::json!({"id": m.id, "threadId": m.id, "labelIds": m.label_ids,
        "sizeEstimate": m.raw.len()})
}

async fn handle(State(s): State<Arc<Shared>>, req: Request<Body>) -> Response {
    let (parts_, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b.to_vec(),
        Err(_) => return error(400, "badRequest", "incomplete body"),
    };
    let path = parts_.uri.path().to_string();
    let q = query_of(&parts_.uri);
    s.log
        .lock()
        .unwrap()
        .push(format!("{} {}", parts_.method, parts_.uri));
    let header = |n: &str| {
        parts_
            .headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let auth = header("authorization");
    let segs: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(percent_decode)
        .collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let method = parts_.method.clone();
    match (method, segs.as_slice()) {
        // The session URI of a resumable upload: the upload id authorises it.
        (Method::PUT, ["upload" | "resumable", ..]) => {
            if auth.is_some() && !s.authorised(auth.as_deref(), None) {
                return error(401, "authError", "Invalid Credentials");
            }
            let Some(id) = q.get("upload_id") else {
                return error(400, "badRequest", "PUT without upload_id");
            };
            let range = header("content-range").unwrap_or_default();
            s.ranges.lock().unwrap().push(range.clone());
            match put_chunk(&s, id, &range, &body) {
                Some(resp) => resp,
                None => {
                    tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
                    StatusCode::GATEWAY_TIMEOUT.into_response()
                }
            }
        }
        _ if !s.authorised(
            auth.as_deref(),
            segs.iter()
                .position(|x| *x == "users")
                .and_then(|i| segs.get(i + 1).copied()),
        ) =>
        {
            error(401, "authError", "Invalid Credentials")
        }
        (Method::POST, ["upload", "gmail", "v1", "users", user, "messages", "import"])
        | (
            Method::POST,
            ["resumable", "upload", "gmail", "v1", "users", user, "messages", "import"],
        ) => {
            let user = user.to_string();
            if let Err(r) = check_params(
                &q,
                &[
                    "deleted",
                    "internalDateSource",
                    "neverMarkSpam",
                    "processForCalendar",
                ],
            ) {
                return r;
            }
            s.import_times
                .lock()
                .unwrap()
                .push((user.clone(), std::time::Instant::now()));
            if s.exhausted.lock().unwrap().contains(&user) {
                return error(403, "dailyLimitExceeded", "Daily Limit Exceeded");
            }
            let fault = s.faults.lock().unwrap().pop_front();
            match fault {
                Some(Fault::Error(code, reason, retry_after)) => {
                    let mut r = error(code, reason, reason);
                    if let Some(ra) = retry_after {
                        r.headers_mut().insert("retry-after", ra.parse().unwrap());
                    }
                    return r;
                }
                Some(Fault::Unauthorized) => return error(401, "authError", "Invalid Credentials"),
                _ => {}
            }
            let hang = matches!(fault, Some(Fault::HangAfterStore));
            let content_type = header("content-type").unwrap_or_default();
            let stored = match q.get("uploadType").map(String::as_str) {
                Some("multipart") => {
                    let Some(boundary) = boundary_of(&content_type) else {
                        return error(
                            400,
                            "badContent",
                            "multipart upload needs multipart/related with a boundary",
                        );
                    };
                    let ps = match parts(&body, &boundary) {
                        Ok(p) => p,
                        Err(e) => return error(400, "badContent", &e),
                    };
                    if ps.len() != 2 || !part_type(&ps[0].0).starts_with("application/json") {
                        return error(400, "badContent", "expected a JSON part and a media part");
                    }
                    if !part_type(&ps[1].0).starts_with("message/") {
                        return error(400, "badContent", "media must be message/*");
                    }
                    let labels = match s.metadata(&user, &ps[0].1) {
                        Ok(l) => l,
                        Err(r) => return r,
                    };
                    if ps[1].1.len() as u64 > s.max_import() {
                        return error(413, "uploadTooLarge", "Message too large");
                    }
                    s.store(&user, ps[1].1.clone(), labels, "multipart", q.clone())
                }
                Some("resumable") => {
                    let total =
                        header("x-upload-content-length").and_then(|v| v.parse::<u64>().ok());
                    let media = header("x-upload-content-type").unwrap_or_default();
                    let Some(total) = total else {
                        return error(400, "badRequest", "X-Upload-Content-Length missing");
                    };
                    if !media.starts_with("message/") {
                        return error(400, "badContent", "X-Upload-Content-Type must be message/*");
                    }
                    if total > s.max_import() {
                        return error(413, "uploadTooLarge", "Message too large");
                    }
                    if !body.is_empty() && !content_type.starts_with("application/json") {
                        return error(400, "badContent", "metadata must be JSON");
                    }
                    let labels = match s.metadata(&user, &body) {
                        Ok(l) => l,
                        Err(r) => return r,
                    };
                    let id = format!("up{}", s.next_id.fetch_add(1, Ordering::SeqCst));
                    s.sessions.lock().unwrap().insert(
                        id.clone(),
                        Session {
                            user: user.clone(),
                            labels,
                            total,
                            received: Vec::new(),
                            query: q.clone(),
                        },
                    );
                    let host = header("host").unwrap_or_default();
                    let mut resp = StatusCode::OK.into_response();
                    let location =
                        format!("http://{host}{path}?uploadType=resumable&upload_id={id}");
                    resp.headers_mut()
                        .insert("location", location.parse().unwrap());
                    return resp;
                }
                _ => {
                    return error(
                        400,
                        "badRequest",
                        "uploadType must be multipart or resumable",
                    )
                }
            };
            if hang {
                tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
            }
            json(resource(&stored))
        }
        (Method::GET, ["gmail", "v1", "users", user, "messages"]) => {
            if let Err(r) = check_params(
                &q,
                &[
                    "includeSpamTrash",
                    "labelIds",
                    "maxResults",
                    "pageToken",
                    "q",
                ],
            ) {
                return r;
            }
            let spam_trash = q.get("includeSpamTrash").is_some_and(|v| v == "true");
            let max = q
                .get("maxResults")
                .and_then(|m| m.parse().ok())
                .unwrap_or(100usize);
            let terms: Vec<&str> = q
                .get("q")
                .map(|q| q.split_whitespace().collect())
                .unwrap_or_default();
            let hits: Vec<serde_json::Value> = s
                .of(user)
                .iter()
                .rev()
                .filter(|m| spam_trash || !m.label_ids.iter().any(|l| l == "SPAM" || l == "TRASH"))
                .filter(|m| {
                    terms.iter().all(|t| {
                        if let Some(id) = t.strip_prefix("rfc822msgid:") {
                            let head = String::from_utf8_lossy(&m.raw);
                            head.lines().take_while(|l| !l.trim().is_empty()).any(|l| {
                                l.to_ascii_lowercase().starts_with("message-id:")
                                    && l[11..].trim().trim_matches(['<', '>'])
                                        == id.trim_matches(['<', '>'])
                            })
                        } else if let Some(n) = t.strip_prefix("larger:") {
                            m.raw.len() as u64 > n.parse::<u64>().unwrap()
                        } else if let Some(n) = t.strip_prefix("smaller:") {
                            (m.raw.len() as u64) < n.parse::<u64>().unwrap()
                        } else {
                            panic!("the test server does not know the search term {t}")
                        }
                    })
                })
                .take(max)
                .map(|m| serde_json::json!({"id": m.id, "threadId": m.id}))
                .collect();
            let n = hits.len();
            if n == 0 {
                json(serde_json::json!({"resultSizeEstimate": 0}))
            } else {
                json(serde_json::json!({"messages": hits, "resultSizeEstimate": n}))
            }
        }
        (Method::GET, ["gmail", "v1", "users", user, "messages", id]) => {
            if let Err(r) = check_params(&q, &["format", "metadataHeaders"]) {
                return r;
            }
            let Some(m) = s.of(user).into_iter().find(|m| m.id == *id) else {
                return error(404, "notFound", "Requested entity was not found.");
            };
            let mut v = resource(&m);
            if q.get("format").map(String::as_str) == Some("raw") {
                v["raw"] = base64::engine::general_purpose::URL_SAFE
                    .encode(&m.raw)
                    .into();
            }
            json(v)
        }
        (Method::GET, ["gmail", "v1", "users", user, "labels"]) => {
            let mut labels: Vec<serde_json::Value> = SYSTEM
                .iter()
                .map(|l| serde_json::json!({"id": l, "name": l, "type": "system"}))
                .collect();
            if let Some(mine) = s.labels.lock().unwrap().get(*user) {
                labels.extend(
                    mine.iter().map(
                        |(id, name)| serde_json::json!({"id": id, "name": name, "type": "user"}),
                    ),
                );
            }
            json(serde_json::json!({ "labels": labels }))
        }
        (Method::POST, ["gmail", "v1", "users", user, "labels"]) => {
            let v: serde_json::Value = match serde_json::from_slice(&body) {
                Ok(v) => v,
                Err(e) => return error(400, "parseError", &e.to_string()),
            };
            let Some(name) = v.get("name").and_then(|n| n.as_str()) else {
                return error(400, "invalidArgument", "Invalid label name");
            };
            let okv = |k: &str, allowed: &[&str]| {
                v.get(k)
                    .is_none_or(|x| x.as_str().is_some_and(|x| allowed.contains(&x)))
            };
            if !okv(
                "labelListVisibility",
                &["labelShow", "labelShowIfUnread", "labelHide"],
            ) || !okv("messageListVisibility", &["show", "hide"])
            {
                return error(400, "invalidArgument", "bad visibility");
            }
            let mut all = s.labels.lock().unwrap();
            let mine = all.entry(user.to_string()).or_default();
            if SYSTEM.iter().any(|l| l.eq_ignore_ascii_case(name))
                || mine.iter().any(|(_, n)| n.eq_ignore_ascii_case(name))
            {
                return error(409, "duplicate", "Label name exists or conflicts");
            }
            s.label_creates.fetch_add(1, Ordering::SeqCst);
            let id = format!("Label_{}", mine.len() + 1);
            mine.push((id.clone(), name.to_string()));
            json(serde_json::json!({"id": id, "name": name, "type": "user",
                "labelListVisibility": "labelShow", "messageListVisibility": "show"}))
        }
        _ => error(404, "notFound", &format!("no route {path}")),
    }
}

/// One PUT to a resumable session; `None`: keep the chunk and leave it unanswered.
fn put_chunk(s: &Shared, id: &str, range: &str, body: &[u8]) -> Option<Response> {
    let mut sessions = s.sessions.lock().unwrap();
    let Some(sess) = sessions.get_mut(id) else {
        return Some(error(404, "notFound", "no such upload session"));
    };
    let spec = range.strip_prefix("bytes ").unwrap_or("");
    let (span, total) = spec.split_once('/').unwrap_or(("", ""));
    if total.parse::<u64>().ok() != Some(sess.total) {
        return Some(error(
            400,
            "badRequest",
            "Content-Range total differs from X-Upload-Content-Length",
        ));
    }
    if span != "*" {
        let (a, b) = span.split_once('-').unwrap_or(("x", "x"));
        let (Ok(a), Ok(b)) = (a.parse::<u64>(), b.parse::<u64>()) else {
            return Some(error(400, "badRequest", "bad Content-Range"));
        };
        if a != sess.received.len() as u64 || b < a || b - a + 1 != body.len() as u64 {
            return Some(error(
                400,
                "badRequest",
                "Content-Range does not follow what was received",
            ));
        }
        let last = b + 1 == sess.total;
        if !last && !body.len().is_multiple_of(256 * 1024) {
            return Some(error(
                400,
                "badRequest",
                "chunk is not a multiple of 256 KiB",
            ));
        }
        sess.received.extend_from_slice(body);
        let hang = s
            .hang_chunks
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if hang {
            return None;
        }
    }
    if sess.received.len() as u64 == sess.total {
        let sess = sessions.remove(id).unwrap();
        drop(sessions);
        let stored = s.store(
            &sess.user,
            sess.received,
            sess.labels,
            "resumable",
            sess.query,
        );
        return Some(json(resource(&stored)));
    }
    let mut resp = StatusCode::PERMANENT_REDIRECT.into_response();
    if !sess.received.is_empty() {
        resp.headers_mut().insert(
            "range",
            format!("bytes=0-{}", sess.received.len() - 1)
                .parse()
                .unwrap(),
        );
    }
    Some(resp)
}

fn percent_decode(s: &str) -> String {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl GmailServer {
    /// Starts on a free loopback port, accepting the bearer token `token`.
    pub async fn start(token: &str) -> Self {
        let shared = Arc::new(Shared::default());
        *shared.token.lock().unwrap() = token.to_string();
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { base, shared }
    }

    /// Starts accepting only JWT access tokens signed with `key` for the account they name.
    pub async fn start_jwt(key: &[u8]) -> Self {
        let server = Self::start("unused").await;
        *server.shared.jwt_key.lock().unwrap() = Some(key.to_vec());
        server
    }

    /// `user`'s daily quota is used up (or, with `false`, reset).
    pub fn exhaust(&self, user: &str, exhausted: bool) {
        let mut e = self.shared.exhausted.lock().unwrap();
        if exhausted {
            e.insert(user.to_string());
        } else {
            e.remove(user);
        }
    }

    /// Arrival times of the import requests for `user`.
    pub fn import_times(&self, user: &str) -> Vec<std::time::Instant> {
        self.shared
            .import_times
            .lock()
            .unwrap()
            .iter()
            .filter(|(u, _)| u == user)
            .map(|(_, t)| *t)
            .collect()
    }

    pub fn fault(&self, f: Fault) {
        self.shared.faults.lock().unwrap().push_back(f);
    }

    pub fn messages(&self, user: &str) -> Vec<Stored> {
        self.shared.of(user)
    }

    pub fn label_name(&self, user: &str, id: &str) -> Option<String> {
        self.shared
            .labels
            .lock()
            .unwrap()
            .get(user)?
            .iter()
            .find(|(i, _)| i == id)
            .map(|(_, n)| n.clone())
    }

    pub fn log(&self) -> Vec<String> {
        self.shared.log.lock().unwrap().clone()
    }
}
