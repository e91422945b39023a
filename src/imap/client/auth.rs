//! Logging in: LOGIN, or AUTHENTICATE through the SASL mechanisms shared with POP3's AUTH (`crate::net::sasl`).
//! The challenge rounds are bounded, and server text is scrubbed of what we sent before it
//! reaches an error or a log (a server may echo our response in its `NO`).

use super::{has, Session};
use crate::imap::codec::{self, Status, Tagged};
use crate::imap::{ImapAuth, ImapConfig, ImapError};
use crate::net::sasl::{oauth_error_summary, OAuthBearer, Plain, Redactor, SaslMechanism, XOAuth2};
use crate::secret::Secret;

/// AUTHENTICATE challenges answered before giving up on a server that keeps asking.
const MAX_AUTH_ROUNDS: usize = 8;

impl Session {
    pub(super) async fn login(
        &mut self,
        cfg: &ImapConfig,
        username: &str,
        password: &Secret,
    ) -> Result<(), ImapError> {
        let plain = match cfg.auth {
            ImapAuth::Plain => true,
            ImapAuth::Login => false,
            ImapAuth::Auto => has(&self.caps, "AUTH=PLAIN"),
            ImapAuth::Xoauth2 | ImapAuth::Oauthbearer | ImapAuth::Oauth2 => false,
        };
        let bearer = cfg.auth == ImapAuth::Oauthbearer
            || cfg.auth == ImapAuth::Oauth2 && has(&self.caps, "AUTH=OAUTHBEARER");
        let done = if bearer {
            self.authenticate(&mut OAuthBearer::new(username, password))
                .await?
        } else if cfg.auth.is_oauth2() {
            self.authenticate(&mut XOAuth2::new(username, password))
                .await?
        } else if plain {
            self.authenticate(&mut Plain::new(username, password))
                .await?
        } else {
            let (Some(u), Some(p)) = (codec::quoted(username), codec::quoted(password.expose()))
            else {
                return Err(ImapError::Protocol {
                    server: self.server.clone(),
                    detail: "LOGIN needs an ASCII user name and password; use auth: plain".into(),
                });
            };
            let redactor = Redactor::new(password);
            let mut done = self
                .send_hidden(&format!("LOGIN {u} {p}"), "LOGIN")
                .await
                .map_err(|e| e.scrubbed(&redactor))?;
            done.text = redactor.clean(&done.text);
            done
        };
        if done.status != Status::Ok {
            return Err(ImapError::Auth {
                server: self.server.clone(),
                username: username.to_string(),
                text: done.text,
            });
        }
        // Servers may change their capabilities after login (UIDPLUS, LITERAL+, BINARY).
        match &done.code {
            Some(code) if code.to_ascii_uppercase().starts_with("CAPABILITY") => {
                self.caps = codec::capabilities(code)
            }
            _ => self.capability().await?,
        }
        Ok(())
    }

    /// AUTHENTICATE (RFC 3501 6.2.2) driven by any SASL mechanism, the same interface as POP3's
    /// AUTH: PLAIN, XOAUTH2 and OAUTHBEARER (an error challenge is answered as the mechanism
    /// says, and its JSON reason added to the final NO's text). The initial response goes on the command line when the server has SASL-IR. The
    /// answer's text, and any error, never holds what we sent.
    pub async fn authenticate(
        &mut self,
        mechanism: &mut dyn SaslMechanism,
    ) -> Result<Tagged, ImapError> {
        let mut redactor = Redactor::new(mechanism.secret());
        match self.sasl_exchange(mechanism, &mut redactor).await {
            Ok(mut done) => {
                crate::metrics::sasl_login(mechanism.name(), done.status == Status::Ok);
                done.text = redactor.clean(&done.text);
                done.code = done.code.map(|c| redactor.clean(&c));
                Ok(done)
            }
            Err(e) => Err(e.scrubbed(&redactor)),
        }
    }

    async fn sasl_exchange(
        &mut self,
        mechanism: &mut dyn SaslMechanism,
        redactor: &mut Redactor,
    ) -> Result<Tagged, ImapError> {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let tag = self.next_tag();
        let what = format!("AUTHENTICATE {}", mechanism.name());
        let mut pending = mechanism.initial_response();
        let mut line = format!("{tag} {what}");
        if has(&self.caps, "SASL-IR") {
            if let Some(first) = pending.take() {
                let first = if first.is_empty() {
                    "=".into()
                } else {
                    b64.encode(first)
                };
                redactor.sent(&first);
                line.push(' ');
                line.push_str(&first);
            }
        }
        line.push_str("\r\n");
        self.write(line.as_bytes()).await?;
        let (mut rounds, mut untagged) = (0, 0);
        // An OAuth2 error challenge's reason, for the final NO.
        let mut said: Option<String> = None;
        loop {
            let answer = self.read_line().await?;
            if let Some(challenge) = answer.strip_prefix(b"+") {
                rounds += 1;
                if rounds > MAX_AUTH_ROUNDS {
                    return Err(self.too_much(format!(
                        "{what}: still challenged after {MAX_AUTH_ROUNDS} responses"
                    )));
                }
                let text = String::from_utf8_lossy(challenge).trim().to_string();
                let response = match pending.take() {
                    Some(first) => first,
                    None => {
                        let challenge = b64.decode(text.as_bytes()).unwrap_or_default();
                        if !challenge.is_empty() {
                            said = Some(oauth_error_summary(&String::from_utf8_lossy(&challenge)));
                        }
                        mechanism.respond(&challenge)
                    }
                };
                let response = b64.encode(response);
                redactor.sent(&response);
                self.write(format!("{response}\r\n").as_bytes()).await?;
                continue;
            }
            match codec::parse_tagged(&answer) {
                Some(mut done) if done.tag == tag => {
                    if let (Some(said), true) = (said, done.status != Status::Ok) {
                        done.text = format!("{} (server said: {said})", done.text);
                    }
                    return Ok(done);
                }
                Some(_) => return Err(self.protocol(&answer)),
                None if answer.starts_with(b"* BYE") => {
                    let detail = String::from_utf8_lossy(&answer).trim().to_string();
                    return Err(self.closed(&detail));
                }
                // Untagged data during authentication (a CAPABILITY line): skip it, up to a point.
                None => self.count_untagged(&mut untagged, &what)?,
            }
        }
    }
}
