//! SASL for POP3 AUTH (RFC 5034): a small mechanism interface, PLAIN, and XOAUTH2 in the
//! two-step form (on failure the server sends `+ <base64 JSON>`, we answer an empty line and
//! get `-ERR`).

use crate::secret::Secret;

/// One SASL mechanism, driven by [`super::auth`]. Responses are raw bytes; the driver does
/// base64 and the 255-octet rule for initial responses.
pub trait SaslMechanism: Send {
    /// The name sent in `AUTH <name>`.
    fn name(&self) -> &'static str;
    /// The client-first message, if the mechanism has one.
    fn initial_response(&mut self) -> Option<Vec<u8>>;
    /// The answer to a server challenge (already base64-decoded).
    fn respond(&mut self, challenge: &[u8]) -> Vec<u8>;
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
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

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
}
