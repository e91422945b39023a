//! `oauth2` and `gmail-setup`: signing in and the stored tokens.

use crate::{exit, load_config, GmailSetupArgs, Oauth2Action};

/// Every token source of the config by credential name (mailboxes' and IMAP sinks').
pub(crate) fn token_sources(
    config: &popbridge::config::Config,
) -> std::collections::BTreeMap<String, std::sync::Arc<popbridge::oauth2::TokenSource>> {
    let mut out = std::collections::BTreeMap::new();
    for m in &config.mailboxes {
        if let popbridge::pop3::AuthMethod::OAuth2(login) = &m.pop3.auth {
            if let Some(source) = &login.token {
                out.insert(source.settings().name.clone(), source.clone());
            }
        }
    }
    for s in &config.sinks {
        let source = match &s.kind {
            popbridge::config::SinkKind::Imap(imap) => imap.oauth2.as_ref(),
            popbridge::config::SinkKind::Gmail(gmail) => gmail.oauth2.as_ref(),
            _ => None,
        };
        if let Some(source) = source {
            out.insert(source.settings().name.clone(), source.clone());
        }
    }
    out
}

/// A line the user pastes on stdin (the browser flow's redirect URL); stdin at its end pastes
/// nothing and the login waits for the redirect instead.
pub(crate) async fn pasted_line() -> Option<String> {
    // A plain thread: a blocked read must not hold up the runtime's shutdown.
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let line = std::io::stdin()
            .lines()
            .map_while(Result::ok)
            .map(|l| l.trim().to_owned())
            .find(|l| !l.is_empty());
        let _ = tx.send(line);
    });
    match rx.await {
        Ok(Some(line)) => Some(line),
        _ => std::future::pending().await,
    }
}

pub(crate) async fn gmail_setup(a: GmailSetupArgs) -> anyhow::Result<u8> {
    use popbridge::oauth2::login::Flow;
    use popbridge::sink::gmail::setup::{self, SetupArgs};
    let mut args = SetupArgs::new(&a.client_id, &a.user);
    args.client_secret = std::env::var(&a.client_secret_env)
        .ok()
        .filter(|v| !v.is_empty())
        .map(|v| {
            (
                popbridge::secret::Secret::new(v),
                a.client_secret_env.clone(),
            )
        });
    if let Some(c) = a.credential {
        args.credential = c;
    }
    args.sink = a.sink;
    args.state_dir = a.state_dir;
    if let Some(scope) = a.scope {
        args.scope = scope;
    }
    args.flow = match a.flow.as_deref() {
        None => None,
        Some("device") => Some(Flow::Device),
        Some("browser") => Some(Flow::Browser),
        Some(other) => anyhow::bail!("--flow {other}: use `device` or `browser`"),
    };
    args.token_url = a.token_url;
    args.device_url = a.device_authorization_url;
    args.authorize_url = a.authorization_url;
    args.api_base = a.api_base;
    args.check = !a.no_check;
    if args.client_secret.is_none() {
        eprintln!(
            "No client secret in ${}: signing in as a public client (Google's desktop clients \
             need their secret: export {} first).",
            a.client_secret_env, a.client_secret_env
        );
    }
    let say = |text: &str| eprintln!("{text}");
    let block = setup::setup(&args, &say, pasted_line()).await?;
    print!("{block}");
    Ok(exit::OK)
}

pub(crate) async fn oauth2(action: Oauth2Action) -> anyhow::Result<u8> {
    use popbridge::oauth2::login::{self, Flow};
    match action {
        Oauth2Action::Status(c) => {
            let config = config_or_exit!(&c.config);
            for (name, source) in token_sources(&config) {
                let s = source.settings();
                let grant = match s.grant {
                    popbridge::oauth2::Grant::RefreshToken { .. } => "refresh_token",
                    popbridge::oauth2::Grant::ClientCredentials => "client_credentials",
                    popbridge::oauth2::Grant::JwtBearer { .. } => "jwt_bearer",
                };
                let stored = match popbridge::oauth2::store::load(&s.store_path) {
                    Ok(Some(t)) => {
                        let age = chrono::Utc::now().timestamp() - t.received_at;
                        let ours = t.token_url == s.token_url && t.client_id == s.client_id;
                        format!(
                            "refresh token stored {}h{:02}m ago{}",
                            age / 3600,
                            age % 3600 / 60,
                            if ours {
                                ""
                            } else {
                                " (for another token URL or client: ignored)"
                            }
                        )
                    }
                    Ok(None) if grant == "refresh_token" => {
                        "no stored refresh token (the configured one is used, if any)".into()
                    }
                    Ok(None) => "nothing stored (app-only)".into(),
                    Err(e) => format!("ERROR: {e}"),
                };
                println!("{name}: {grant} at {}: {stored}", s.token_url);
            }
            Ok(exit::OK)
        }
        Oauth2Action::Logout { config, credential } => {
            let config = config_or_exit!(&config.config);
            let Some(source) = token_sources(&config).remove(&credential) else {
                anyhow::bail!("no OAuth2 credential {credential} in use");
            };
            let done = login::logout(&source).await?;
            eprintln!("{credential}: {done}");
            Ok(exit::OK)
        }
        Oauth2Action::Login {
            config,
            mailbox,
            credential,
            flow,
        } => {
            let config = config_or_exit!(&config.config);
            let sources = token_sources(&config);
            let source = match (&mailbox, &credential) {
                (Some(m), _) => config
                    .mailboxes
                    .iter()
                    .find(|b| &b.name == m)
                    .and_then(|b| match &b.pop3.auth {
                        popbridge::pop3::AuthMethod::OAuth2(l) => l.token.clone(),
                        _ => None,
                    })
                    .ok_or_else(|| anyhow::anyhow!("mailbox {m} has no `oauth2` credential"))?,
                (None, Some(c)) => sources.get(c).cloned().ok_or_else(|| {
                    anyhow::anyhow!(
                        "no OAuth2 credential {c} in use (known: {})",
                        sources.keys().cloned().collect::<Vec<_>>().join(", ")
                    )
                })?,
                (None, None) => anyhow::bail!("give --mailbox NAME or --credential NAME"),
            };
            let flow = match flow.as_deref() {
                None => None,
                Some("device") => Some(Flow::Device),
                Some("browser") => Some(Flow::Browser),
                Some(other) => anyhow::bail!("--flow {other}: use `device` or `browser`"),
            };
            let say = |text: &str| eprintln!("{text}");
            login::login(&source, flow, &say, pasted_line()).await?;
            if let Some(m) = mailbox.and_then(|m| config.mailboxes.iter().find(|b| b.name == m)) {
                let session = popbridge::pop3::connect(&m.pop3).await?;
                let _ = session.quit().await;
                eprintln!("mailbox {}: login with the new token ok", m.name);
            }
            Ok(exit::OK)
        }
    }
}
