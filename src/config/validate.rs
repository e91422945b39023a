//! Raw configuration to the validated model: defaults applied, paths resolved, references and
//! secrets checked. Collects every problem instead of stopping at the first.

use super::error::Problem;
use super::model::{
    Config, DeletePolicy, HttpConfig, Limits, MailboxConfig, RetryPolicy, Schedule, SinkConfig,
};
use super::raw::RawOAuth2Ref;
use super::raw::{
    RawAuth, RawConfig, RawDelete, RawHttp, RawLimits, RawMailbox, RawPop3, RawRetry, RawSchedule,
    RawSink, RawTls,
};
use crate::config_value::resolve;
use crate::oauth2::config::RawCredential;
use crate::oauth2::{Provider, TokenSource};
use crate::pop3::{AuthMethod, ClientConfig, TlsMode};
use crate::pop3::{InitialResponse, OAuth2Login, OAuthMechanism};
use crate::secret::Secret;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Default `http.listen`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9898";
/// Default POP3 timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Default longest accepted server line.
pub const DEFAULT_MAX_LINE_LENGTH: usize = 65_536;
pub const DEFAULT_MAX_MESSAGE_BYTES: u64 = 1 << 30;
/// RFC 1939 allows response lines of 512 octets; accepting less would break servers.
const MIN_MAX_LINE_LENGTH: usize = 512;
/// Default PIPELINING window.
pub const DEFAULT_PIPELINE_WINDOW: usize = 128;
/// Default poll interval when `schedule` is absent.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);

/// Validated configuration plus warnings the caller should log.
pub(crate) type Validated = (Config, Vec<String>);

/// Validate `raw`; `origin` is the config file (relative paths resolve against its directory).
pub(crate) fn validate(raw: RawConfig, origin: &Path) -> Result<Validated, Vec<Problem>> {
    let base = origin.parent().unwrap_or(Path::new(""));
    let mut v = Validator {
        base,
        problems: Vec::new(),
        warnings: Vec::new(),
        credentials: Default::default(),
        token_dir: PathBuf::new(),
        route_refs: Vec::new(),
    };

    let (state, problems) = raw.state.validate(base);
    for (at, message) in problems {
        v.problem(at, message);
    }
    v.token_dir = state.path.parent().unwrap_or(Path::new("")).join("oauth2");
    v.credentials(raw.oauth2);
    let http = v.http(raw.http);
    let limits = v.limits(raw.limits);

    let mut sinks = v.sinks(raw.sinks);
    v.sink_credentials(&mut sinks);
    let sink_names: Vec<&str> = sinks.iter().map(|s| s.name.as_str()).collect();
    let sink_types: Vec<(&str, &str)> = sinks
        .iter()
        .map(|s| (s.name.as_str(), sink_type(&s.kind)))
        .collect();
    let mut mailboxes = v.mailboxes(raw.mailboxes, &sink_names);
    v.routes(&mut mailboxes, raw.routes, &sink_types);
    let servers = super::servers::validate(raw.servers, &mut v.problems);
    super::servers::apply(&servers, &mut mailboxes, &mut v.warnings);

    let all_sinks: Vec<(usize, Vec<String>)> = mailboxes
        .iter()
        .enumerate()
        .map(|(i, m)| (i, m.all_sinks()))
        .collect();
    let used: BTreeSet<&str> = all_sinks
        .iter()
        .flat_map(|(_, s)| s.iter().map(String::as_str))
        .collect();
    // An IMAP or Gmail sink must know the target account of every mailbox routed to it.
    for (i, routed) in &all_sinks {
        let m = &mailboxes[*i];
        for s in sinks.iter().filter(|s| routed.contains(&s.name)) {
            if let crate::config::SinkKind::Imap(imap) = &s.kind {
                if let Err(why) = imap.account_for(&m.name) {
                    v.problem(
                        format!("sinks[{}]", s.name),
                        format!("no target account for mailbox {}: {why}", m.name),
                    );
                }
            }
            if let crate::config::SinkKind::Gmail(gmail) = &s.kind {
                if let Err(why) = gmail.account_for(&m.name) {
                    v.problem(
                        format!("sinks[{}]", s.name),
                        format!("no target account for mailbox {}: {why}", m.name),
                    );
                }
            }
        }
    }
    for s in &sinks {
        if !used.contains(s.name.as_str()) {
            v.warnings
                .push(format!("sinks[{}]: not used by any mailbox", s.name));
        }
    }

    if v.problems.is_empty() {
        let config = Config {
            source: origin.to_path_buf(),
            state,
            http,
            limits,
            servers,
            mailboxes,
            sinks,
        };
        Ok((config, v.warnings))
    } else {
        Err(v.problems)
    }
}

/// The `type:` of a sink, as written.
fn sink_type(kind: &crate::config::SinkKind) -> &'static str {
    use crate::config::SinkKind;
    match kind {
        SinkKind::Maildir(_) => "maildir",
        SinkKind::Webhook(_) => "webhook",
        SinkKind::S3(_) => "s3",
        SinkKind::Imap(_) => "imap",
        SinkKind::Gmail(_) => "gmail",
    }
}

/// What is wrong with a mailbox or sink name, if anything. A mailbox name becomes a directory
/// (`<spool>/<mailbox>`, which a reset removes whole), a Maildir path, a password file name and
/// an S3 key prefix, so it must be one plain path component: `[A-Za-z0-9._-]+`, not only dots.
fn name_problem(name: &str) -> Option<String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty() || !name.chars().all(allowed) {
        Some(format!(
            "invalid name \"{}\": use letters, digits, `.`, `_` and `-` only",
            name.escape_debug()
        ))
    } else if name.chars().all(|c| c == '.') {
        Some(format!(
            "invalid name \"{name}\": a name of dots only would be read as `.` or `..` in a \
             path (the spool directory, a Maildir path) and reach outside it; add a letter or digit"
        ))
    } else {
        None
    }
}

fn is_valid_name(name: &str) -> bool {
    name_problem(name).is_none()
}

struct Validator<'a> {
    base: &'a Path,
    problems: Vec<Problem>,
    warnings: Vec<String>,
    /// Named OAuth2 credentials, one token cache each, shared by everything naming them.
    credentials: std::collections::BTreeMap<String, Arc<TokenSource>>,
    /// `<state dir>/oauth2`, where refresh tokens are kept.
    token_dir: PathBuf,
    /// Each built mailbox's `routes:` as written, resolved once the sinks are known.
    route_refs: Vec<Option<crate::route::config::RawRouteRef>>,
}

impl Validator<'_> {
    fn problem(&mut self, at: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            at: at.into(),
            message: message.into(),
        });
    }

    fn credentials(&mut self, raw: std::collections::BTreeMap<String, RawCredential>) {
        for (name, cred) in raw {
            let at = format!("oauth2.{name}");
            if let Some(why) = name_problem(&name) {
                self.problem(at, why);
                continue;
            }
            match cred.validate(&name, self.base, &self.token_dir) {
                Ok(settings) => {
                    self.credentials
                        .insert(name, Arc::new(TokenSource::new(settings)));
                }
                Err(why) => self.problem(at, why),
            }
        }
    }

    /// A mailbox's `oauth2:`: a named credential, or an inline one (named `mailbox.<name>`).
    fn credential(
        &mut self,
        at: &str,
        mailbox: &str,
        raw: RawOAuth2Ref,
    ) -> Option<Arc<TokenSource>> {
        match raw {
            RawOAuth2Ref::Named(name) => {
                let found = self.credentials.get(&name).cloned();
                if found.is_none() {
                    let known: Vec<&str> = self.credentials.keys().map(String::as_str).collect();
                    self.problem(
                        format!("{at}.oauth2"),
                        format!(
                            "unknown OAuth2 credential \"{name}\" (defined: {})",
                            if known.is_empty() {
                                "none".into()
                            } else {
                                known.join(", ")
                            }
                        ),
                    );
                }
                found
            }
            RawOAuth2Ref::Inline(cred) => {
                let name = format!("mailbox.{mailbox}");
                match cred.validate(&name, self.base, &self.token_dir) {
                    Ok(settings) => Some(Arc::new(TokenSource::new(settings))),
                    Err(why) => {
                        self.problem(format!("{at}.oauth2"), why);
                        None
                    }
                }
            }
        }
    }

    /// IMAP and Gmail sinks naming a credential get its token source.
    fn sink_credentials(&mut self, sinks: &mut [SinkConfig]) {
        for sink in sinks {
            let (named, slot) = match &mut sink.kind {
                crate::config::SinkKind::Imap(imap) => {
                    (imap.oauth2_credential.clone(), &mut imap.oauth2)
                }
                crate::config::SinkKind::Gmail(gmail) => {
                    (gmail.oauth2_credential.clone(), &mut gmail.oauth2)
                }
                _ => continue,
            };
            if let Some(name) = named {
                match self.credentials.get(&name) {
                    Some(source) => *slot = Some(source.clone()),
                    None => self.problem(
                        format!("sinks[{}].oauth2", sink.name),
                        format!("unknown OAuth2 credential \"{name}\""),
                    ),
                }
            }
        }
    }

    fn http(&mut self, raw: RawHttp) -> HttpConfig {
        let text = raw.listen.map(|l| l.into_string());
        let text = text.as_deref().unwrap_or(DEFAULT_LISTEN);
        let listen = match text.parse::<SocketAddr>() {
            Ok(addr) => addr,
            Err(_) => {
                self.problem(
                    "http.listen",
                    format!(
                        "invalid address \"{text}\": expected ip:port such as {DEFAULT_LISTEN}"
                    ),
                );
                SocketAddr::from(([127, 0, 0, 1], 9898))
            }
        };
        HttpConfig {
            listen,
            per_mailbox_metrics: raw.per_mailbox_metrics.unwrap_or(false),
        }
    }

    fn limits(&mut self, raw: RawLimits) -> Limits {
        let mut positive = |key: &str, value: Option<usize>, default: usize| {
            let value = value.unwrap_or(default);
            if value == 0 {
                self.problem(format!("limits.{key}"), "must be at least 1");
            }
            value
        };
        Limits {
            max_concurrent_polls: positive("max_concurrent_polls", raw.max_concurrent_polls, 4),
            max_connections_per_server: positive(
                "max_connections_per_server",
                raw.max_connections_per_server,
                2,
            ),
            max_in_flight: positive("max_in_flight", raw.max_in_flight, 32),
            max_retrieval_failures: u32::try_from(positive(
                "max_retrieval_failures",
                raw.max_retrieval_failures.map(|v| v as usize),
                3,
            ))
            .unwrap_or(u32::MAX),
            poll_timeout: match raw.poll_timeout.map(Duration::from) {
                Some(d) if d.is_zero() => {
                    self.problem("limits.poll_timeout", "must be greater than 0");
                    d
                }
                Some(d) => d,
                None => Duration::from_secs(6 * 3600),
            },
        }
    }

    /// `sinks[name]`, or `sinks[index]` when the name itself is unusable.
    fn item_path(list: &str, index: usize, name: &str) -> String {
        if is_valid_name(name) {
            format!("{list}[{name}]")
        } else {
            format!("{list}[{index}]")
        }
    }

    fn check_name(&mut self, list: &str, index: usize, name: &str, seen: &mut BTreeSet<String>) {
        let at = Self::item_path(list, index, name);
        if let Some(why) = name_problem(name) {
            self.problem(format!("{at}.name"), why);
        } else if !seen.insert(name.to_owned()) {
            self.problem(format!("{at}.name"), format!("duplicate name \"{name}\""));
        }
    }

    fn sinks(&mut self, raw: Vec<RawSink>) -> Vec<SinkConfig> {
        if raw.is_empty() {
            self.problem("sinks", "at least one sink is required");
        }
        let mut seen = BTreeSet::new();
        let mut out = Vec::with_capacity(raw.len());
        for (i, sink) in raw.into_iter().enumerate() {
            self.check_name("sinks", i, &sink.name, &mut seen);
            let at = Self::item_path("sinks", i, &sink.name);
            let retry = self.retry(&at, sink.retry.unwrap_or_default());
            match sink.kind.validate(self.base) {
                Ok((kind, warnings)) => {
                    self.warnings
                        .extend(warnings.into_iter().map(|w| format!("{at}: {w}")));
                    out.push(SinkConfig {
                        name: sink.name,
                        retry,
                        kind,
                    })
                }
                Err(message) => self.problem(at, message),
            }
        }
        out
    }

    fn retry(&mut self, at: &str, raw: RawRetry) -> RetryPolicy {
        let d = RetryPolicy::default();
        let policy = RetryPolicy {
            attempts_per_poll: raw.attempts_per_poll.unwrap_or(d.attempts_per_poll),
            initial_backoff: raw.initial_backoff.map_or(d.initial_backoff, Into::into),
            max_backoff: raw.max_backoff.map_or(d.max_backoff, Into::into),
            window: raw.window.map_or(d.window, Into::into),
        };
        if policy.attempts_per_poll == 0 {
            self.problem(
                format!("{at}.retry.attempts_per_poll"),
                "must be at least 1",
            );
        }
        if policy.initial_backoff.is_zero() {
            self.problem(
                format!("{at}.retry.initial_backoff"),
                "must be greater than 0",
            );
        }
        if policy.max_backoff < policy.initial_backoff {
            self.problem(
                format!("{at}.retry.max_backoff"),
                "must not be shorter than `initial_backoff`",
            );
        }
        if policy.window.is_zero() {
            self.problem(format!("{at}.retry.window"), "must be greater than 0");
        }
        policy
    }

    fn mailboxes(&mut self, raw: Vec<RawMailbox>, sink_names: &[&str]) -> Vec<MailboxConfig> {
        if raw.is_empty() {
            self.problem("mailboxes", "at least one mailbox is required");
        }
        let mut seen = BTreeSet::new();
        let mut out = Vec::with_capacity(raw.len());
        for (i, mb) in raw.into_iter().enumerate() {
            self.check_name("mailboxes", i, &mb.name, &mut seen);
            let at = Self::item_path("mailboxes", i, &mb.name);
            let pop3 = self.pop3(&at, &mb.name, mb.pop3);
            let schedule = self.schedule(&at, mb.schedule);
            let delete = match mb.delete.unwrap_or(RawDelete::Never) {
                RawDelete::Never => DeletePolicy::Never,
                RawDelete::AfterDelivery => DeletePolicy::AfterDelivery,
                RawDelete::AfterDays(n) => DeletePolicy::AfterDays(n),
            };
            self.mailbox_sinks(&at, &mb.sinks, sink_names);
            if let Some(pop3) = pop3 {
                out.push(MailboxConfig {
                    name: mb.name,
                    pop3,
                    schedule,
                    delete,
                    sinks: mb.sinks,
                    routes: None,
                });
                self.route_refs.push(mb.routes);
            }
        }
        out
    }

    /// Resolve each mailbox's `routes` (kept in `route_refs` by [`Self::mailboxes`]).
    fn routes(
        &mut self,
        mailboxes: &mut [MailboxConfig],
        shared: std::collections::BTreeMap<String, crate::route::config::RawRuleSet>,
        sinks: &[(&str, &str)],
    ) {
        use crate::route::config::RawRouteRef;
        let refs = std::mem::take(&mut self.route_refs);
        let mut used = BTreeSet::new();
        for (m, r) in mailboxes.iter_mut().zip(refs) {
            let at = format!("mailboxes[{}].routes", m.name);
            let (name, raw) = match r {
                None => continue,
                Some(RawRouteRef::Named(n)) => match shared.get(&n) {
                    Some(raw) => {
                        used.insert(n.clone());
                        (n, raw.clone())
                    }
                    None => {
                        let defined: Vec<&str> = shared.keys().map(String::as_str).collect();
                        self.problem(
                            at,
                            format!(
                                "unknown rule set {n:?} (defined under routes: {})",
                                if defined.is_empty() {
                                    "none".to_string()
                                } else {
                                    defined.join(", ")
                                }
                            ),
                        );
                        continue;
                    }
                },
                Some(RawRouteRef::Inline(raw)) => (format!("mailbox.{}", m.name), *raw),
            };
            match raw.validate(&name, sinks, &m.sinks) {
                Ok(set) => m.routes = Some(std::sync::Arc::new(set)),
                Err(problems) => {
                    for (place, what) in problems {
                        self.problem(format!("{at}.{place}"), what);
                    }
                }
            }
        }
        for name in shared.keys().filter(|n| !used.contains(*n)) {
            self.warnings
                .push(format!("routes[{name}]: not used by any mailbox"));
        }
    }

    fn mailbox_sinks(&mut self, at: &str, names: &[String], defined: &[&str]) {
        if names.is_empty() {
            self.problem(format!("{at}.sinks"), "at least one sink is required");
        }
        let mut seen = BTreeSet::new();
        for name in names {
            if !defined.contains(&name.as_str()) {
                let list = if defined.is_empty() {
                    "none".to_owned()
                } else {
                    defined.join(", ")
                };
                self.problem(
                    format!("{at}.sinks"),
                    format!("unknown sink \"{name}\" (defined: {list})"),
                );
            } else if !seen.insert(name.as_str()) {
                self.problem(
                    format!("{at}.sinks"),
                    format!("sink \"{name}\" listed twice"),
                );
            }
        }
    }

    fn schedule(&mut self, at: &str, raw: Option<RawSchedule>) -> Schedule {
        let Some(raw) = raw else {
            return Schedule::Every {
                interval: DEFAULT_INTERVAL,
                jitter: Duration::ZERO,
            };
        };
        let jitter = raw.jitter.map_or(Duration::ZERO, Into::into);
        match (raw.every, raw.cron) {
            (Some(every), None) => {
                let interval = Duration::from(every);
                if interval.is_zero() {
                    self.problem(format!("{at}.schedule.every"), "must be greater than 0");
                } else if jitter >= interval {
                    self.problem(
                        format!("{at}.schedule.jitter"),
                        "must be shorter than the interval `every`",
                    );
                }
                Schedule::Every { interval, jitter }
            }
            (None, Some(cron)) => Schedule::Cron {
                expression: cron.expression,
                cron: Box::new(cron.cron),
                jitter,
            },
            (Some(every), Some(_)) => {
                self.problem(
                    format!("{at}.schedule"),
                    "give either `every` or `cron`, not both",
                );
                Schedule::Every {
                    interval: every.into(),
                    jitter,
                }
            }
            (None, None) => {
                self.problem(
                    format!("{at}.schedule"),
                    "needs `every: <duration>` or `cron: \"<5 fields>\"`",
                );
                Schedule::Every {
                    interval: DEFAULT_INTERVAL,
                    jitter,
                }
            }
        }
    }

    fn pop3(&mut self, at: &str, mailbox: &str, raw: RawPop3) -> Option<ClientConfig> {
        let at = format!("{at}.pop3");
        let tls = match raw.tls.unwrap_or(RawTls::Implicit) {
            RawTls::Implicit => TlsMode::Implicit,
            RawTls::Starttls => TlsMode::StartTls,
            RawTls::None => TlsMode::None,
        };
        let port = raw.port.unwrap_or(match tls {
            TlsMode::Implicit => 995,
            TlsMode::StartTls | TlsMode::None => 110,
        });
        if port == 0 {
            self.problem(format!("{at}.port"), "must be between 1 and 65535");
        }
        let host = raw.host.into_string();
        if host.trim().is_empty() {
            self.problem(format!("{at}.host"), "must not be empty");
        }
        let username = raw.username.into_string();
        if username.is_empty() {
            self.problem(format!("{at}.username"), "must not be empty");
        }
        let token = raw
            .oauth2
            .map(|r| self.credential(&at, mailbox, r))
            .map(|found| found.ok_or(()));
        let default_auth = if token.is_some() {
            RawAuth::Oauth2
        } else {
            RawAuth::Auto
        };
        let mechanism = match raw.auth.unwrap_or(default_auth) {
            RawAuth::Xoauth2 => Some(OAuthMechanism::XOAuth2),
            RawAuth::Oauthbearer => Some(OAuthMechanism::OAuthBearer),
            RawAuth::Oauth2 => Some(OAuthMechanism::Auto),
            _ => None,
        };
        let auth = match (raw.auth.unwrap_or(default_auth), mechanism) {
            (RawAuth::Auto, _) => AuthMethod::Auto,
            (RawAuth::User, _) => AuthMethod::User,
            (RawAuth::Apop, _) => AuthMethod::Apop,
            (RawAuth::Plain, _) => AuthMethod::Plain,
            (RawAuth::Xoauth2, _) if token.is_none() && raw.initial_response.is_none() => {
                AuthMethod::XOAuth2
            }
            (_, mechanism) => {
                let source = token.clone().and_then(Result::ok);
                let microsoft = source
                    .as_ref()
                    .is_some_and(|s| s.settings().provider == Provider::Microsoft);
                AuthMethod::OAuth2(OAuth2Login {
                    mechanism: mechanism.unwrap_or(OAuthMechanism::Auto),
                    // Microsoft's POP3 answers a one-line XOAUTH2 with "Protocol error".
                    initial_response: raw.initial_response.unwrap_or(if microsoft {
                        InitialResponse::Never
                    } else {
                        InitialResponse::Auto
                    }),
                    token: source,
                })
            }
        };
        if token.is_some() && mechanism.is_none() {
            self.problem(
                format!("{at}.auth"),
                "`oauth2` needs `auth: oauth2`, `xoauth2` or `oauthbearer` (or no `auth`)",
            );
        }
        if raw.initial_response.is_some() && mechanism.is_none() {
            self.problem(
                format!("{at}.initial_response"),
                "only applies to `auth: oauth2`, `xoauth2` or `oauthbearer`",
            );
        }
        let password_file = raw
            .password_file
            .as_ref()
            .map(|f| resolve(self.base, f.as_str()));
        let secret = match &token {
            Some(_) if raw.password.is_some() || raw.password_file.is_some() => {
                self.problem(
                    at.clone(),
                    "with `oauth2`, tokens come from the credential: drop `password`/`password_file`",
                );
                None
            }
            Some(found) => found.as_ref().map(|_| Secret::new("")).ok(),
            None => self.secret(&at, raw.password, raw.password_file),
        };
        let allow_plaintext_auth = raw.allow_plaintext_auth.unwrap_or(false);
        if tls == TlsMode::None && !allow_plaintext_auth {
            self.problem(
                format!("{at}.tls"),
                "`tls: none` would send the password unencrypted; use `tls: implicit` or \
                 `tls: starttls`, or set `allow_plaintext_auth: true` if the network is trusted",
            );
        }
        if tls != TlsMode::None && allow_plaintext_auth {
            self.warnings.push(format!(
                "{at}.allow_plaintext_auth: has no effect unless `tls: none`"
            ));
        }
        let tls_verify = raw.tls_verify.unwrap_or(true);
        if !tls_verify {
            if tls == TlsMode::None {
                self.warnings
                    .push(format!("{at}.tls_verify: has no effect with `tls: none`"));
            } else {
                self.warnings.push(format!(
                    "{at}.tls_verify: false: server certificates are NOT verified; \
                     anyone on the path can read the password (use `ca_file` for a private CA)"
                ));
            }
        }
        let timeout = raw.timeout.map_or(DEFAULT_TIMEOUT, Into::into);
        if timeout.is_zero() {
            self.problem(format!("{at}.timeout"), "must be greater than 0");
        }
        let max_line_length = raw.max_line_length.unwrap_or(DEFAULT_MAX_LINE_LENGTH);
        if max_line_length < MIN_MAX_LINE_LENGTH {
            self.problem(
                format!("{at}.max_line_length"),
                format!("must be at least {MIN_MAX_LINE_LENGTH} (RFC 1939 line length)"),
            );
        }
        let max_message_bytes = raw.max_message_bytes.unwrap_or(DEFAULT_MAX_MESSAGE_BYTES);
        if max_message_bytes == 0 {
            self.problem(format!("{at}.max_message_bytes"), "must be greater than 0");
        }
        let pipeline_window = raw.pipeline_window.unwrap_or(DEFAULT_PIPELINE_WINDOW);
        if pipeline_window == 0 {
            self.problem(format!("{at}.pipeline_window"), "must be at least 1");
        }
        Some(ClientConfig {
            host,
            port,
            tls,
            username,
            secret: secret?,
            password_file,
            auth,
            ca_file: raw.ca_file.map(|p| resolve(self.base, p.as_str())),
            danger_accept_invalid_certs: !tls_verify,
            allow_plaintext_auth,
            timeout,
            max_line_length,
            max_message_bytes,
            pipeline_window,
        })
    }

    fn secret(
        &mut self,
        at: &str,
        password: Option<crate::config_value::interpolate::SecretValue>,
        password_file: Option<crate::config_value::interpolate::Interpolated>,
    ) -> Option<Secret> {
        let secret = match (password, password_file) {
            (Some(p), None) => p.into_secret(),
            (None, Some(file)) => {
                let path = resolve(self.base, file.as_str());
                match std::fs::read_to_string(&path) {
                    Ok(text) => Secret::new(text.trim_end_matches(['\n', '\r'])),
                    Err(e) => {
                        self.problem(
                            format!("{at}.password_file"),
                            format!("cannot read {}: {e}", path.display()),
                        );
                        return None;
                    }
                }
            }
            (Some(_), Some(_)) => {
                self.problem(at, "give either `password` or `password_file`, not both");
                return None;
            }
            (None, None) => {
                self.problem(
                    at,
                    "missing `password` (e.g. `password: ${MY_PASSWORD}`) or `password_file`",
                );
                return None;
            }
        };
        if secret.is_empty() {
            self.problem(format!("{at}.password"), "is empty");
            return None;
        }
        Some(secret)
    }
}
