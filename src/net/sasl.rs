//! SASL for POP3 AUTH (RFC 5034) and IMAP AUTHENTICATE: a small mechanism interface, PLAIN,
//! XOAUTH2 and OAUTHBEARER (RFC 7628). On a failed OAuth2 login the server sends
//! `+ <base64 JSON>`; we answer (empty for XOAUTH2, `AQ==` for OAUTHBEARER) and read the final
//! error, whose reason [`oauth_error_summary`] takes from that JSON.

use crate::secret::Secret;

/// One SASL mechanism, driven by each protocol's own AUTH/AUTHENTICATE code (POP3's
/// `op::auth`, IMAP's `client::auth`). Responses are raw bytes; the driver does base64 and
/// the 255-octet rule for initial responses.
pub trait SaslMechanism: Send {
    /// The name sent in `AUTH <name>` / `AUTHENTICATE <name>`.
    fn name(&self) -> &'static str;
    /// The client-first message, if the mechanism has one.
    fn initial_response(&mut self) -> Option<Vec<u8>>;
    /// The answer to a server challenge (already base64-decoded).
    fn respond(&mut self, challenge: &[u8]) -> Vec<u8>;
    /// The credential inside the responses, so a [`Redactor`] can scrub server text of it.
    fn secret(&self) -> &Secret;
}

/// Scrubs server text of what we sent during a login before it is logged or put into an
/// error: some servers echo the client's (base64) response in their `-ERR`/`NO` text.
pub struct Redactor {
    secret: String,
    /// Base64 strings we sent, longest first.
    sent: Vec<String>,
}

/// Base64 runs shorter than this are left alone: too short to carry a credential.
const MIN_B64_RUN: usize = 8;

impl Redactor {
    pub fn new(secret: &Secret) -> Self {
        Self {
            secret: secret.expose().to_owned(),
            sent: Vec::new(),
        }
    }

    /// Remembers a base64 response we sent.
    pub fn sent(&mut self, b64: &str) {
        if !b64.is_empty() {
            self.sent.push(b64.to_owned());
            self.sent.sort_by_key(|s| std::cmp::Reverse(s.len()));
        }
    }

    /// `text` with the secret, every response we sent, any part of one, and any base64 that
    /// decodes to something holding the secret replaced by `[redacted]`.
    pub fn clean(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for needle in self.sent.iter().chain(Some(&self.secret)) {
            if !needle.is_empty() {
                out = out.replace(needle.as_str(), "[redacted]");
            }
        }
        let is_b64 = |c: char| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=');
        let mut clean = String::with_capacity(out.len());
        let mut rest = out.as_str();
        while let Some(start) = rest.find(is_b64) {
            clean.push_str(&rest[..start]);
            let run = &rest[start..];
            let end = run.find(|c: char| !is_b64(c)).unwrap_or(run.len());
            let word = &run[..end];
            clean.push_str(if self.leaks(word) { "[redacted]" } else { word });
            rest = &run[end..];
        }
        clean.push_str(rest);
        clean
    }

    /// A truncated echo of a response we sent, or base64 whose decoding holds the secret.
    fn leaks(&self, word: &str) -> bool {
        use base64::Engine;
        if word.len() < MIN_B64_RUN {
            return false;
        }
        if self.sent.iter().any(|s| s.contains(word)) {
            return true;
        }
        if self.secret.is_empty() {
            return false;
        }
        // Decode the longest whole-quantum prefix, so a cut-off echo is recognised too.
        let body = word.trim_end_matches('=');
        let body = &body[..body.len() - body.len() % 4];
        base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(body)
            .is_ok_and(|bytes| {
                bytes
                    .windows(self.secret.len())
                    .any(|w| w == self.secret.as_bytes())
            })
    }
}

/// RFC 4616 PLAIN: `\0user\0password` in one message.
pub struct Plain {
    username: String,
    password: Secret,
}

impl Plain {
    pub fn new(username: &str, password: &Secret) -> Self {
        Self {
            username: username.to_owned(),
            password: password.clone(),
        }
    }

    fn message(&self) -> Vec<u8> {
        format!("\0{}\0{}", self.username, self.password.expose()).into_bytes()
    }
}

impl SaslMechanism for Plain {
    fn name(&self) -> &'static str {
        "PLAIN"
    }

    fn initial_response(&mut self) -> Option<Vec<u8>> {
        Some(self.message())
    }

    /// Only reached if the server ignored the initial response and asked again.
    fn respond(&mut self, _challenge: &[u8]) -> Vec<u8> {
        self.message()
    }

    fn secret(&self) -> &Secret {
        &self.password
    }
}

/// Google/Microsoft XOAUTH2: the access token as bearer credential. A challenge only ever
/// carries an error (JSON); the answer is an empty response so the server can send `-ERR`.
pub struct XOAuth2 {
    username: String,
    token: Secret,
}

impl XOAuth2 {
    pub fn new(username: &str, token: &Secret) -> Self {
        Self {
            username: username.to_owned(),
            token: token.clone(),
        }
    }
}

impl SaslMechanism for XOAuth2 {
    fn name(&self) -> &'static str {
        "XOAUTH2"
    }

    fn initial_response(&mut self) -> Option<Vec<u8>> {
        Some(
            format!(
                "user={}\x01auth=Bearer {}\x01\x01",
                self.username,
                self.token.expose()
            )
            .into_bytes(),
        )
    }

    fn respond(&mut self, _challenge: &[u8]) -> Vec<u8> {
        Vec::new()
    }

    fn secret(&self) -> &Secret {
        &self.token
    }
}

/// RFC 7628 OAUTHBEARER: a GS2 header naming the user, then `auth=Bearer <token>`. An error
/// challenge is answered with a lone `\x01` (`AQ==`), after which the server sends the failure.
pub struct OAuthBearer {
    username: String,
    token: Secret,
}

impl OAuthBearer {
    pub fn new(username: &str, token: &Secret) -> Self {
        Self {
            username: username.to_owned(),
            token: token.clone(),
        }
    }
}

impl SaslMechanism for OAuthBearer {
    fn name(&self) -> &'static str {
        "OAUTHBEARER"
    }

    fn initial_response(&mut self) -> Option<Vec<u8>> {
        // `,` and `=` in the authzid are escaped as `=2C` and `=3D` (RFC 5801 saslname).
        let user = self.username.replace('=', "=3D").replace(',', "=2C");
        Some(format!("n,a={user},\x01auth=Bearer {}\x01\x01", self.token.expose()).into_bytes())
    }

    fn respond(&mut self, _challenge: &[u8]) -> Vec<u8> {
        vec![0x01]
    }

    fn secret(&self) -> &Secret {
        &self.token
    }
}

/// `status 401, scope "…"` from an OAuth2 error challenge's JSON (RFC 7628 section 3.2.2), so
/// the error says whether the token was refused or lacks a scope; other text as it was.
pub fn oauth_error_summary(challenge: &str) -> String {
    let Ok(serde_json::Value::Object(json)) = serde_json::from_str::<serde_json::Value>(challenge)
    else {
        return challenge.to_owned();
    };
    let field = |k: &str| json.get(k).and_then(|v| v.as_str()).map(str::to_owned);
    let mut parts = Vec::new();
    if let Some(status) = field("status") {
        parts.push(format!("status {status}"));
    }
    if let Some(scope) = field("scope") {
        parts.push(format!("scope \"{scope}\""));
    }
    if parts.is_empty() {
        return challenge.to_owned();
    }
    if field("status").as_deref() == Some("401")
        || field("status").as_deref() == Some("invalid_token")
    {
        parts.push("the token was refused (expired, revoked, or for another user)".into());
    } else if field("status").as_deref() == Some("403")
        || field("status").as_deref() == Some("insufficient_scope")
    {
        parts.push("the token lacks a scope the server needs".into());
    }
    parts.join(", ")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn oauthbearer_sends_a_gs2_header_and_answers_errors_with_0x01() {
        let mut m = OAuthBearer::new("a,b=c@example.com", &Secret::new("tok"));
        assert_eq!(
            m.initial_response().unwrap(),
            b"n,a=a=2Cb=3Dc@example.com,\x01auth=Bearer tok\x01\x01"
        );
        assert_eq!(m.respond(b"{}"), b"\x01");
    }

    #[test]
    fn error_json_becomes_status_and_scope() {
        let s = oauth_error_summary(r#"{"status":"401","schemes":"bearer","scope":"mail"}"#);
        assert!(
            s.contains("status 401") && s.contains("scope \"mail\"") && s.contains("refused"),
            "{s}"
        );
        assert_eq!(oauth_error_summary("not json"), "not json");
    }

    #[test]
    fn plain_message_has_empty_authzid() {
        let mut m = Plain::new("u", &Secret::new("p"));
        assert_eq!(m.initial_response().unwrap(), b"\0u\0p");
    }

    #[test]
    fn xoauth2_answers_error_challenge_with_empty_response() {
        let mut m = XOAuth2::new("u@example.com", &Secret::new("tok"));
        assert_eq!(
            m.initial_response().unwrap(),
            b"user=u@example.com\x01auth=Bearer tok\x01\x01"
        );
        assert!(m.respond(br#"{"status":"401"}"#).is_empty());
    }

    #[test]
    fn redactor_scrubs_echoed_responses_whole_cut_off_or_in_clear() {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let secret = Secret::new("s3cret-pass");
        let sent = b64.encode(b"\0user\0s3cret-pass");
        let mut r = Redactor::new(&secret);
        r.sent(&sent);
        for echo in [
            format!("[AUTH] bad response {sent}"),
            format!("bad response \"{}\"", &sent[..sent.len() - 3]),
            "wrong password s3cret-pass".to_owned(),
            // Re-encoded by the server (no padding, other framing): decodes to the secret.
            format!(
                "got {}",
                b64.encode(b"user=x\x01auth=Bearer s3cret-pass\x01")
            ),
        ] {
            let clean = r.clean(&echo);
            assert!(!clean.contains("s3cret"), "{clean}");
            assert!(!clean.contains(&sent[4..12]), "{clean}");
            assert!(clean.contains("[redacted]"), "{clean}");
        }
        // Ordinary server text is left as it is.
        assert_eq!(
            r.clean("[AUTHENTICATIONFAILED] Authentication failed."),
            "[AUTHENTICATIONFAILED] Authentication failed."
        );
    }
}
