//! `servers:`: limits shared by every mailbox on one POP3 host (politeness towards providers),
//! as written, the provider profiles that fill their defaults, and their validation.
//!
//! Profiles are applied only when an entry names one (`profile: gmail`): a host that matches a
//! profile's known hosts but has no entry gets a warning suggesting it, never a silent change
//! of how often or how fast an existing config polls.

use super::error::Problem;
use super::model::{MailboxConfig, Schedule, ServerLimits};
use crate::config_value::duration::ConfigDuration;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// One entry of `servers:`, keyed by the POP3 host name as the mailboxes write it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// A provider profile whose documented limits are the defaults of this entry
    /// (`gmail`, `outlook`, `yahoo`); the keys below override it.
    #[serde(default)]
    pub profile: Option<String>,
    /// No mailbox on this host is polled more often than this (an `every:` below it is raised).
    #[serde(default)]
    pub min_poll_interval: Option<ConfigDuration>,
    /// POP3 connections at once to this host, over every mailbox (overrides
    /// `limits.max_connections_per_server`; divided across replicas like it).
    #[serde(default)]
    pub max_connections: Option<usize>,
    /// Message bytes (RETR and TOP) read per second from this host, over every session.
    #[serde(default)]
    pub bytes_per_second: Option<u64>,
    /// Message bytes fetched from this host per UTC day; past it, no new RETR until midnight.
    #[serde(default)]
    pub bytes_per_day: Option<u64>,
}

/// A provider's published limits. A value the provider does not publish is `None`: we never
/// guess one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Profile {
    pub name: &'static str,
    /// POP3 hosts of this provider (to suggest the profile for a mailbox that has no entry).
    pub hosts: &'static [&'static str],
    pub min_poll_interval: Option<Duration>,
    pub max_connections: Option<usize>,
    pub bytes_per_second: Option<u64>,
    pub bytes_per_day: Option<u64>,
}

/// The profiles, each value from the provider's own documentation (cited). README's table
/// lists the same.
pub const PROFILES: &[Profile] = &[
    Profile {
        name: "gmail",
        hosts: &["pop.gmail.com", "pop.googlemail.com"],
        // Google Workspace Admin Help, "Request limits"
        // (https://support.google.com/a/answer/1359240): "configure it to check for new
        // messages less frequently; once every 15 minutes is recommended".
        min_poll_interval: Some(Duration::from_secs(15 * 60)),
        // Google's "Too many simultaneous connections" page
        // (http://mail.google.com/support/bin/answer.py?answer=97150) gives a limit for IMAP
        // only; nothing published for POP.
        max_connections: None,
        bytes_per_second: None,
        // Google's "Gmail bandwidth limits" page (support.google.com/a/answer/1071518) has a
        // POP download limit per day, but we could read it only in third-party copies, not on
        // Google's page itself: left unset (set `bytes_per_day` yourself).
        bytes_per_day: None,
    },
    Profile {
        name: "outlook",
        hosts: &[
            "outlook.office365.com",
            "pop-mail.outlook.com",
            "pop3.live.com",
        ],
        // Microsoft publishes no POP3 poll interval, connection, rate or daily limit for
        // Outlook.com / Exchange Online that we could find: nothing set.
        min_poll_interval: None,
        max_connections: None,
        bytes_per_second: None,
        bytes_per_day: None,
    },
    Profile {
        name: "yahoo",
        hosts: &["pop.mail.yahoo.com"],
        // Yahoo publishes no POP limits that we could find: nothing set.
        min_poll_interval: None,
        max_connections: None,
        bytes_per_second: None,
        bytes_per_day: None,
    },
];

/// The profile named `name`.
pub fn profile(name: &str) -> Option<&'static Profile> {
    PROFILES.iter().find(|p| p.name == name)
}

/// The profile whose known hosts include `host` (for a suggestion only).
pub fn profile_for_host(host: &str) -> Option<&'static Profile> {
    let host = host.to_ascii_lowercase();
    PROFILES.iter().find(|p| p.hosts.contains(&host.as_str()))
}

/// Validate `servers:`: profiles resolved, values checked. Problems and warnings are pushed.
pub(crate) fn validate(
    raw: BTreeMap<String, RawServer>,
    problems: &mut Vec<Problem>,
) -> Vec<ServerLimits> {
    let mut out: Vec<ServerLimits> = Vec::new();
    for (host, r) in raw {
        let at = format!("servers[{host}]");
        let mut problem = |key: &str, message: String| {
            problems.push(Problem {
                at: if key.is_empty() {
                    at.clone()
                } else {
                    format!("{at}.{key}")
                },
                message,
            })
        };
        let key = host.trim().to_ascii_lowercase();
        if key.is_empty() || key.contains(':') || key.contains(char::is_whitespace) {
            problem(
                "",
                "the key must be a POP3 host name as the mailboxes write it (no port)".into(),
            );
            continue;
        }
        if out.iter().any(|s| s.host == key) {
            problem("", format!("host {key} is listed twice"));
            continue;
        }
        let prof = match r.profile.as_deref() {
            None => None,
            Some(name) => match profile(name) {
                Some(p) => Some(p),
                None => {
                    let known: Vec<&str> = PROFILES.iter().map(|p| p.name).collect();
                    problem(
                        "profile",
                        format!("unknown profile {name:?} (known: {})", known.join(", ")),
                    );
                    continue;
                }
            },
        };
        let limits = ServerLimits {
            host: key,
            profile: prof.map(|p| p.name),
            min_poll_interval: r
                .min_poll_interval
                .map(Duration::from)
                .or(prof.and_then(|p| p.min_poll_interval)),
            max_connections: r.max_connections.or(prof.and_then(|p| p.max_connections)),
            bytes_per_second: r.bytes_per_second.or(prof.and_then(|p| p.bytes_per_second)),
            bytes_per_day: r.bytes_per_day.or(prof.and_then(|p| p.bytes_per_day)),
        };
        if limits.min_poll_interval == Some(Duration::ZERO) {
            problem(
                "min_poll_interval",
                "must be greater than 0 (leave it out for no minimum)".into(),
            );
        }
        if limits.max_connections == Some(0) {
            problem("max_connections", "must be at least 1".into());
        }
        if limits.bytes_per_second == Some(0) {
            problem(
                "bytes_per_second",
                "must be at least 1 (leave it out for no rate limit)".into(),
            );
        }
        if limits.bytes_per_day == Some(0) {
            problem(
                "bytes_per_day",
                "must be at least 1 (leave it out for no daily budget)".into(),
            );
        }
        out.push(limits);
    }
    out
}

/// Apply each host's `min_poll_interval` to its mailboxes: an `every:` below it is raised,
/// with one warning per mailbox; a host matching a profile without an entry is suggested one;
/// an entry no mailbox uses (a typo in the host) is warned about.
pub(crate) fn apply(
    servers: &[ServerLimits],
    mailboxes: &mut [MailboxConfig],
    warnings: &mut Vec<String>,
) {
    for s in servers {
        if !mailboxes
            .iter()
            .any(|m| m.pop3.host.eq_ignore_ascii_case(&s.host))
        {
            warnings.push(format!(
                "servers[{}]: no mailbox polls this host (the key must be the host name as the mailboxes write it)",
                s.host
            ));
        }
    }
    let mut suggested = std::collections::BTreeSet::new();
    for m in mailboxes.iter_mut() {
        let host = m.pop3.host.to_ascii_lowercase();
        let Some(s) = servers.iter().find(|s| s.host == host) else {
            if let Some(p) = profile_for_host(&host) {
                if suggested.insert(host.clone()) {
                    warnings.push(format!(
                        "mailboxes[{}].pop3.host: {host} is a {} server; add `servers: {{ {host}: {{ profile: {} }} }}` to poll it within its documented limits",
                        m.name, p.name, p.name
                    ));
                }
            }
            continue;
        };
        let Some(min) = s.min_poll_interval else {
            continue;
        };
        if let Schedule::Every { interval, .. } = &mut m.schedule {
            if *interval < min {
                let why = match s.profile {
                    Some(p) => format!("servers[{host}].min_poll_interval (profile {p})"),
                    None => format!("servers[{host}].min_poll_interval"),
                };
                warnings.push(format!(
                    "mailboxes[{}].schedule.every: {}s is below {why} of {}s; polled every {}s instead",
                    m.name,
                    interval.as_secs_f64(),
                    min.as_secs_f64(),
                    min.as_secs_f64()
                ));
                *interval = min;
            }
        }
    }
}
