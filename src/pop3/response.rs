//! What a POP3 server says, as values: status lines with their RFC 2449 response codes, and
//! the CAPA list.

use std::fmt;

/// `+OK` or `-ERR` (and `+ ` for a SASL challenge).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Ok,
    Err,
    /// `+ <base64>`: a SASL continuation (RFC 5034).
    Continue,
}

/// RFC 2449 / RFC 3206 response codes; they let callers tell "wrong password" from "try later".
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RespCode {
    /// The mailbox is locked by another session.
    InUse,
    /// Logged in too soon after the last login.
    LoginDelay,
    /// A temporary server problem.
    SysTemp,
    /// A permanent server problem.
    SysPerm,
    /// The credentials were wrong (RFC 3206).
    Auth,
    /// Any other code, upper-cased.
    Other(String),
}

impl RespCode {
    pub(crate) fn parse(code: &str) -> Self {
        let upper = code.to_ascii_uppercase();
        match upper.as_str() {
            "IN-USE" => Self::InUse,
            "LOGIN-DELAY" => Self::LoginDelay,
            "SYS/TEMP" => Self::SysTemp,
            "SYS/PERM" => Self::SysPerm,
            "AUTH" => Self::Auth,
            _ => Self::Other(upper),
        }
    }

    /// Codes that mean "same request later may work".
    pub fn is_temporary(&self) -> bool {
        matches!(self, Self::InUse | Self::LoginDelay | Self::SysTemp)
    }
}

impl fmt::Display for RespCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::InUse => "IN-USE",
            Self::LoginDelay => "LOGIN-DELAY",
            Self::SysTemp => "SYS/TEMP",
            Self::SysPerm => "SYS/PERM",
            Self::Auth => "AUTH",
            Self::Other(s) => s,
        })
    }
}

/// One status line, without its line ending.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusLine {
    pub status: Status,
    /// The bracketed code, when the server sent one.
    pub code: Option<RespCode>,
    /// The rest of the line, lossily decoded (servers may send 8-bit text).
    pub text: String,
}

impl StatusLine {
    pub fn is_ok(&self) -> bool {
        self.status == Status::Ok
    }
}

/// What the server advertised in CAPA (RFC 2449). Empty when the server has no CAPA.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// Each line split into words; the first word upper-cased.
    lines: Vec<(String, Vec<String>)>,
}

impl Capabilities {
    /// Parses the lines of a CAPA response (without the terminator).
    pub fn from_lines<'a>(lines: impl IntoIterator<Item = &'a str>) -> Self {
        let lines = lines
            .into_iter()
            .filter_map(|l| {
                let mut words = l.split_ascii_whitespace();
                let name = words.next()?.to_ascii_uppercase();
                Some((name, words.map(str::to_owned).collect()))
            })
            .collect();
        Self { lines }
    }

    fn args(&self, name: &str) -> Option<&[String]> {
        self.lines
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| a.as_slice())
    }

    pub fn has(&self, name: &str) -> bool {
        self.args(&name.to_ascii_uppercase()).is_some()
    }

    pub fn pipelining(&self) -> bool {
        self.has("PIPELINING")
    }

    /// RFC 2449 `EXPIRE`: `Some(Some(days))`, `Some(None)` for `NEVER`, `None` when not
    /// advertised (or `USER`-dependent before login: ask again after). `EXPIRE 0` means the
    /// server deletes every message retrieved in a session that ends with QUIT.
    pub fn expire(&self) -> Option<Option<u32>> {
        let arg = self.args("EXPIRE")?.first()?;
        if arg.eq_ignore_ascii_case("NEVER") {
            return Some(None);
        }
        arg.parse().ok().map(Some)
    }

    /// RFC 2449 `LOGIN-DELAY`: the least time between two logins the server accepts.
    pub fn login_delay(&self) -> Option<std::time::Duration> {
        let secs: u64 = self.args("LOGIN-DELAY")?.first()?.parse().ok()?;
        (secs > 0).then(|| std::time::Duration::from_secs(secs))
    }

    pub fn uidl(&self) -> bool {
        self.has("UIDL")
    }

    pub fn top(&self) -> bool {
        self.has("TOP")
    }

    pub fn stls(&self) -> bool {
        self.has("STLS")
    }

    pub fn user(&self) -> bool {
        self.has("USER")
    }

    pub fn resp_codes(&self) -> bool {
        self.has("RESP-CODES")
    }

    /// SASL mechanisms, upper-cased.
    pub fn sasl_mechanisms(&self) -> Vec<String> {
        self.args("SASL")
            .map(|a| a.iter().map(|m| m.to_ascii_uppercase()).collect())
            .unwrap_or_default()
    }

    pub fn sasl(&self, mechanism: &str) -> bool {
        self.sasl_mechanisms()
            .iter()
            .any(|m| m.eq_ignore_ascii_case(mechanism))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn reads_dovecot_capabilities() {
        let caps = Capabilities::from_lines([
            "CAPA",
            "TOP",
            "UIDL",
            "RESP-CODES",
            "PIPELINING",
            "AUTH-RESP-CODE",
            "STLS",
            "USER",
            "SASL PLAIN LOGIN",
        ]);
        assert!(caps.pipelining() && caps.uidl() && caps.top() && caps.stls() && caps.user());
        assert!(caps.sasl("plain") && caps.sasl("LOGIN") && !caps.sasl("XOAUTH2"));
    }

    #[test]
    fn expire_and_login_delay_are_read() {
        let caps = Capabilities::from_lines(["EXPIRE 0", "LOGIN-DELAY 60 USER", "UIDL"]);
        assert_eq!(caps.expire(), Some(Some(0)));
        assert_eq!(caps.login_delay(), Some(std::time::Duration::from_secs(60)));
        let caps = Capabilities::from_lines(["EXPIRE NEVER", "LOGIN-DELAY 0"]);
        assert_eq!(caps.expire(), Some(None));
        assert_eq!(caps.login_delay(), None);
        let caps = Capabilities::from_lines(["EXPIRE USER"]);
        assert_eq!(caps.expire(), None);
        assert_eq!(Capabilities::default().expire(), None);
    }

    #[test]
    fn no_capa_means_nothing_advertised() {
        let caps = Capabilities::default();
        assert!(!caps.pipelining() && !caps.stls() && caps.sasl_mechanisms().is_empty());
    }

    #[test]
    fn temporary_codes_are_temporary() {
        assert!(RespCode::parse("in-use").is_temporary());
        assert!(RespCode::parse("LOGIN-DELAY").is_temporary());
        assert!(RespCode::parse("SYS/TEMP").is_temporary());
        assert!(!RespCode::parse("SYS/PERM").is_temporary());
        assert!(!RespCode::parse("AUTH").is_temporary());
    }
}
