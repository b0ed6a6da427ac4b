//! `login`, `logout`, `rack`, `racks`, `switch`, `env-url`: racks and credentials.

use std::time::{Duration, Instant};

use convox_api::client::{ClientError, System};
use serde_json::json;

use crate::cli::{LoginArgs, LogoutArgs};
use crate::config::{self, Config, RackEntry, Selected, TokenType};
use crate::context::{Ctx, PROXY_PATH, Target, http_client, now_ms};
use crate::error::{CliError, CliResult};
use crate::explain::explain;
use crate::gateway_api::{GatewayApi, Info, Poll};
use crate::output::{self, Info as InfoBlock, Table};
use crate::pkce::Pkce;

/// A gateway URL as given (`https://gw.example.com/`, or with the proxy path, or with
/// `convox:<token>@` in it) → its base URL and the token it carried.
fn normalise_url(raw: &str, insecure_http: bool) -> CliResult<(String, Option<String>)> {
    if config::secret_start(raw.trim()) == Some(0) {
        return Err(token_in_place_of("the gateway's URL"));
    }
    let mut url = url::Url::parse(raw.trim()).map_err(|e| {
        CliError::Usage(format!(
            "{} is not a URL ({e}); give the gateway's address, like https://gateway.example.com",
            without_credentials(raw)
        ))
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(CliError::Usage(format!(
            "{}: the gateway URL must start with https:// (or http:// for local gateways)",
            without_credentials(raw)
        )));
    }
    if needs_insecure_http(&url) && !insecure_http {
        return Err(CliError::Usage(format!(
            "{}: plain http:// sends your credentials readable by anyone on the network; use \
             https://, or add --insecure-http if you really mean it",
            without_credentials(raw)
        )));
    }
    let token = url.password().map(|p| {
        percent_encoding::percent_decode_str(p)
            .decode_utf8_lossy()
            .into_owned()
    });
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.set_query(None);
    url.set_fragment(None);
    let mut base = url.as_str().trim_end_matches('/').to_string();
    if let Some(stripped) = base.strip_suffix(PROXY_PATH) {
        base = stripped.to_string();
    }
    Ok((base, token))
}

/// The error for a token given where `what` belongs (arguments in the wrong order), which
/// does not repeat it: it would be left in the terminal's scrollback or a CI log.
fn token_in_place_of(what: &str) -> CliError {
    CliError::Usage(format!(
        "that looks like a token, not {what} (not repeated here): sign in with \
         `rack-gateway login <rack> <gateway-url> --token <token>` (`--token -` reads it from \
         stdin)"
    ))
}

/// Why `rack` cannot name a rack, if it cannot: a token there (`login rgw_… https://gw`)
/// would be kept in the config as a name, and printed by every command.
fn rack_name_problem(rack: &str) -> Option<CliError> {
    config::secret_start(rack).map(|_| token_in_place_of("a rack name"))
}

/// `raw` for an error message, without a password or token in it (`https://convox:rgw_…@h`).
fn without_credentials(raw: &str) -> String {
    let shown = match (raw.find("://"), raw.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}…{}", &raw[..scheme + 3], &raw[at..]),
        // `convox:rgw_…@gw` without a scheme: everything before the `@` may be secret.
        (None, Some(at)) => format!("…{}", &raw[at..]),
        _ => raw.to_string(),
    };
    // A token anywhere else (`?token=rgw_…`): cut off where it starts.
    let shown = match config::secret_start(&shown) {
        Some(start) => format!("{}…", &shown[..start]),
        None => shown,
    };
    format!("{:?}", output::printable(&shown))
}

/// Whether signing in to `url` needs `--insecure-http`: plain http to another machine.
pub(crate) fn needs_insecure_http(url: &url::Url) -> bool {
    url.scheme() == "http" && !is_this_machine(url)
}

/// Whether `url` names this machine (where plain http stays on the machine).
fn is_this_machine(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

fn load_config() -> CliResult<(std::path::PathBuf, Config)> {
    let path = config::path()?;
    let config = Config::load(&path)?;
    Ok((path, config))
}

/// `login <rack> <url> [--token T | browser]`.
pub async fn login(_ctx: &Ctx, args: LoginArgs) -> CliResult<i32> {
    if let Some(problem) = rack_name_problem(&args.rack) {
        return Err(problem);
    }
    let (base, url_token) = normalise_url(&args.url, args.insecure_http)?;
    let token = match args.token.as_deref() {
        Some("-") => Some(
            crate::stdin::read_all()
                .map_err(|e| CliError::io("reading the token from stdin", e))?
                .trim()
                .to_string(),
        ),
        Some(t) => Some(t.trim().to_string()),
        None => url_token,
    }
    .filter(|t| !t.is_empty());
    let api = GatewayApi::new(http_client()?, &base);
    // Until the entry exists, explain errors against what it will be.
    let pending = |token_type: TokenType| {
        Target::Gateway(Selected {
            name: args.rack.clone(),
            entry: RackEntry {
                gateway_url: base.clone(),
                token: String::new(),
                token_type,
                email: None,
                role: None,
                expires_at: None,
                token_name: None,
            },
        })
    };
    let entry = match token {
        Some(token) if let Some(why) = config::credential_problem(&token) => {
            return Err(CliError::Usage(format!(
                "that is not a rack-gateway token ({why}): ask an admin for one, or leave out \
                 --token to sign in through the browser"
            )));
        }
        Some(token) => {
            let info = api
                .info(&token)
                .await
                .map_err(|e| explain(e, Some(&pending(TokenType::ApiToken))))?;
            entry_from_info(&base, token, &info)
        }
        None => browser_login(&api, &args, &base)
            .await
            .map_err(|e| match e {
                CliError::Client(c) => explain(c, Some(&pending(TokenType::Session))),
                other => other,
            })?,
    };
    let (path, mut config) = load_config()?;
    let who = entry.who();
    let role = entry.role.clone().unwrap_or_else(|| "unknown".into());
    let replaced = config.racks.insert(args.rack.clone(), entry);
    config.current = Some(args.rack.clone());
    config.save(&path)?;
    if let Some(old) = replaced {
        // The earlier sign-in is no longer kept anywhere: ended on the gateway (a session),
        // rather than left valid until it expires.
        if old.token_type == TokenType::Session {
            let ended = GatewayApi::new(http_client()?, &old.gateway_url)
                .logout(&old.token)
                .await;
            if let Err(e) = ended
                && !matches!(
                    e,
                    ClientError::Api {
                        status: 401 | 404,
                        ..
                    }
                )
            {
                eprintln!(
                    "warning: could not end the earlier session on the gateway ({})",
                    output::printable(&e.to_string())
                );
            }
        }
        eprintln!(
            "note: replaced the earlier sign-in for rack {} ({})",
            args.rack,
            output::printable(&old.who())
        );
    }
    output::write_stdout(&format!(
        "Logged in to {} ({base}) as {who}, role {role}\n",
        args.rack
    ))?;
    Ok(0)
}

fn entry_from_info(base: &str, token: String, info: &Info) -> RackEntry {
    // What the token is, by its own prefix, not by what the server says it is.
    let token_type = if token.starts_with("rgs_") {
        TokenType::Session
    } else {
        TokenType::ApiToken
    };
    RackEntry {
        gateway_url: base.to_string(),
        token,
        token_type,
        email: info.email.clone().filter(|e| !e.is_empty()),
        role: info.role.clone(),
        expires_at: info.session_expires_at.or(info.token_expires_at),
        token_name: info.token_name.clone().filter(|n| !n.is_empty()),
    }
}

/// The browser sign-in: PKCE challenge → browser → poll with the verifier.
async fn browser_login(api: &GatewayApi, args: &LoginArgs, base: &str) -> CliResult<RackEntry> {
    let pkce = Pkce::new();
    let start = api
        .start_login(&pkce.challenge, &args.rack, &crate::browser::hostname())
        .await?;
    let link = output::printable(&start.browser_url);
    if !crate::browser::is_web_link(&start.browser_url) {
        return Err(CliError::Explained(format!(
            "the gateway's sign-in link {link:?} is not an http(s) link; not using it"
        )));
    }
    // Another origin is normal behind a port-forward or an internal name (the gateway builds
    // the link from its PUBLIC_URL), but it is not opened for you: you look before you go.
    let elsewhere = !crate::browser::is_gateway_link(&start.browser_url, base);
    if elsewhere {
        eprintln!(
            "warning: the sign-in link points away from {base}; open it only if you expect \
             your gateway there"
        );
    }
    let opened = !args.no_browser
        && crate::browser::allowed()
        && !elsewhere
        && crate::browser::open(&start.browser_url);
    if opened {
        eprintln!("Opening your browser to sign in to {base}.");
        eprintln!("If it does not open, visit: {link}");
    } else {
        eprintln!("Open this URL in a browser to sign in to {base}:");
        eprintln!("  {link}");
    }
    if let Some(code) = &start.code {
        let code = output::printable(code);
        eprintln!("The browser asks you to confirm; it must show the code {code}.");
    }
    eprintln!(
        "Waiting for the sign-in to finish (Ctrl-C to cancel); if you use an authenticator app, \
         the browser asks for its code..."
    );
    let interval = Duration::from_secs(start.poll_interval_secs.clamp(1, 10));
    // At most an hour, whatever the answer says (a huge number overflowed the clock).
    let deadline = Instant::now() + Duration::from_secs(start.expires_in_secs.clamp(1, 3600));
    loop {
        if Instant::now() >= deadline {
            return Err(CliError::Explained(format!(
                "the sign-in expired before it finished: run `rack-gateway login {} {base}` again",
                args.rack
            )));
        }
        tokio::time::sleep(interval).await;
        match api.poll_login(&start.login_id, &pkce.verifier).await? {
            Poll::Pending => continue,
            Poll::Complete(session) => {
                if !session.session_token.starts_with("rgs_")
                    || !config::is_credential(&session.session_token)
                {
                    return Err(CliError::Explained(
                        "the gateway answered with something that is not a session token; \
                         nothing was saved"
                            .into(),
                    ));
                }
                return Ok(RackEntry {
                    gateway_url: base.to_string(),
                    token: session.session_token,
                    token_type: TokenType::Session,
                    email: session.email,
                    role: session.role,
                    expires_at: session.expires_at,
                    token_name: None,
                });
            }
            Poll::Expired(message) => {
                return Err(CliError::Explained(format!(
                    "the sign-in expired ({message}): run `rack-gateway login {} {base}` again",
                    args.rack
                )));
            }
            Poll::Refused(message) => {
                return Err(CliError::Explained(format!("sign-in refused: {message}")));
            }
        }
    }
}

/// `logout [rack]`.
pub async fn logout(ctx: &Ctx, args: LogoutArgs) -> CliResult<i32> {
    let (path, mut config) = load_config()?;
    // A name given to `logout` itself is no `--rack`; an unknown one is not logged in (no
    // advice to log in, as `named` gives for commands that need the rack).
    let selected = match &args.rack {
        Some(name) if !config.racks.contains_key(name) => {
            let known: Vec<&str> = config.racks.keys().map(String::as_str).collect();
            return Err(CliError::Usage(format!(
                "not logged in to {name:?} (logged in: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            )));
        }
        Some(name) => config.named(name.clone(), None)?,
        None => config.select(ctx.rack_flag())?,
    };
    if selected.entry.token_type == TokenType::Session {
        let api = GatewayApi::new(http_client()?, &selected.entry.gateway_url);
        match api.logout(&selected.entry.token).await {
            Ok(()) => {}
            // Already gone on the gateway.
            Err(ClientError::Api {
                status: 401 | 404, ..
            }) => {}
            Err(e) => eprintln!(
                "warning: could not end the session on the gateway ({}); forgetting it here anyway",
                output::printable(&e.to_string())
            ),
        }
    }
    config.racks.remove(&selected.name);
    if config.current.as_deref() == Some(selected.name.as_str()) {
        config.current = None;
    }
    config.save(&path)?;
    output::write_stdout(&format!("Logged out of {}\n", selected.name))?;
    Ok(0)
}

/// `racks`.
pub fn racks(ctx: &Ctx) -> CliResult<i32> {
    let (_, config) = load_config()?;
    if ctx.json {
        let list: Vec<_> = config
            .racks
            .iter()
            .map(|(name, e)| {
                json!({
                    "name": name,
                    "current": config.current.as_deref() == Some(name.as_str()),
                    "gateway_url": e.gateway_url,
                    "token_type": e.token_type,
                    "email": e.email,
                    "token_name": e.token_name,
                    "role": e.role,
                    "expires_at": e.expires_at,
                })
            })
            .collect();
        output::print_json(&list)?;
        return Ok(0);
    }
    let mut table = Table::new(&[
        "NAME", "CURRENT", "GATEWAY", "USER", "ROLE", "TYPE", "EXPIRES",
    ]);
    for (name, e) in &config.racks {
        let current = if config.current.as_deref() == Some(name.as_str()) {
            "*"
        } else {
            ""
        };
        table.row(vec![
            name.clone(),
            current.into(),
            e.gateway_url.clone(),
            e.who(),
            e.role.clone().unwrap_or_default(),
            e.token_type.label().into(),
            e.expires_at.map(output::unix_ms).unwrap_or_default(),
        ]);
    }
    table.print()?;
    Ok(0)
}

/// `switch <rack>`.
pub fn switch(rack: &str) -> CliResult<i32> {
    let (path, mut config) = load_config()?;
    let selected = config.named(rack.to_string(), None)?;
    config.current = Some(selected.name.clone());
    config.save(&path)?;
    output::write_stdout(&format!(
        "Switched to {} ({})\n",
        selected.name, selected.entry.gateway_url
    ))?;
    Ok(0)
}

/// `env-url`.
pub fn env_url(ctx: &Ctx) -> CliResult<i32> {
    let target = ctx.target()?;
    if matches!(target, Target::Gateway(_)) && !config::is_credential(target.token()) {
        return Err(CliError::Config(format!(
            "the stored credential for rack {} is not a rack-gateway token; run `{}`",
            target.name(),
            target.login_hint()
        )));
    }
    let url = target.rack_url()?;
    // Meant for `eval "$(rack-gateway env-url)"`: single-quoted, so nothing in it is run.
    output::write_stdout(&format!("export RACK_URL={}\n", shell_quote(&url)))?;
    Ok(0)
}

/// `text` as one POSIX shell word that the shell takes literally.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// `rack`: the gateway side (who you are, session) and the rack side (`GET /system`).
pub async fn rack(ctx: &Ctx) -> CliResult<i32> {
    let target = ctx.target()?;
    let client = ctx.client()?;
    let info = match target {
        Target::Gateway(selected) => Some(
            GatewayApi::new(http_client()?, &selected.entry.gateway_url)
                .info(&selected.entry.token)
                .await
                .map_err(|e| explain(e, Some(target)))?,
        ),
        Target::Direct { .. } => None,
    };
    // The rack part needs convox:system:read; say so instead of failing the whole command.
    // The rack part needs convox:system:read, and the rack up: without either, who you are
    // is still shown, and the command fails only for a rack that cannot be reached.
    let mut rack_down = false;
    let (system, system_error): (Option<System>, Option<String>) = match client.system().await {
        Ok(s) => (Some(s), None),
        Err(e @ ClientError::Api { status: 403, .. }) => (None, Some(e.to_string())),
        Err(e) if info.is_some() => {
            rack_down = true;
            (None, Some(explain(e, Some(target)).to_string()))
        }
        Err(e) => return Err(explain(e, Some(target))),
    };
    let expires_at = info
        .as_ref()
        .and_then(|i| i.session_expires_at.or(i.token_expires_at))
        .or_else(|| target.entry().and_then(|e| e.expires_at));
    if ctx.json {
        output::print_json(&json!({
            "rack": target.name(),
            "gateway_url": target.base_url(),
            "identity": info,
            "session_expires_at": expires_at,
            "system": system,
            "system_error": system_error,
        }))?;
        return Ok(i32::from(rack_down));
    }
    let mut block = InfoBlock::new();
    block.add("Rack", target.name());
    match target {
        Target::Gateway(_) => block.add("Gateway", target.base_url()),
        Target::Direct { .. } => block.add("Rack URL", target.base_url()),
    };
    if let Some(info) = &info {
        let who = match (&info.email, &info.token_name) {
            (Some(e), _) if !e.is_empty() => e.clone(),
            (_, Some(n)) => format!("API token {n}"),
            _ => "unknown".into(),
        };
        block.add("User", who);
        block.add("Role", info.role.clone().unwrap_or_default());
        let session = match (info.kind.as_str(), expires_at) {
            ("session", Some(at)) => format!(
                "expires {} (in {})",
                output::unix_ms(at),
                output::span_ms(at.saturating_sub(now_ms()))
            ),
            ("session", None) => "session".into(),
            (_, Some(at)) => format!(
                "API token (no session), expires {} (in {})",
                output::unix_ms(at),
                output::span_ms(at.saturating_sub(now_ms()))
            ),
            _ => "API token (no session), does not expire".into(),
        };
        block.add("Session", session);
    }
    match (&system, &system_error) {
        (Some(s), _) => {
            block.add("Name", s.name.clone());
            block.add("Provider", s.provider.clone());
            if !s.region.is_empty() {
                block.add("Region", s.region.clone());
            }
            if !s.domain.is_empty() {
                block.add("Router", s.domain.clone());
            }
            block.add("Status", s.status.clone());
            block.add("Version", s.version.clone());
        }
        (None, Some(e)) => {
            block.add("Rack info", format!("not shown: {e}"));
        }
        (None, None) => {}
    }
    block.print()?;
    Ok(i32::from(rack_down))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_urls_are_normalised() {
        let n = |s: &str| normalise_url(s, false).ok();
        assert_eq!(
            n("https://gw.example.com/"),
            Some(("https://gw.example.com".into(), None))
        );
        assert_eq!(
            n("http://convox:rgw_x@127.0.0.1:8447/api/v1/rack-proxy"),
            Some(("http://127.0.0.1:8447".into(), Some("rgw_x".into())))
        );
        assert!(n("gw.example.com").is_none());
        assert!(n("ftp://gw").is_none());
        // Plain http only on this machine, unless asked for.
        assert!(n("http://gw.example.com").is_none());
        assert!(n("http://localhost:8447").is_some());
        assert!(n("http://[::1]:8447").is_some());
        assert!(normalise_url("http://gw.example.com", true).is_ok());
        // A token in a refused URL is not repeated in the error.
        let err = normalise_url("ftp://convox:rgw_secret@gw", false)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(!err.contains("rgw_secret"), "{err}");
    }

    fn url_refusal(raw: &str) -> String {
        match normalise_url(raw, false) {
            Ok(taken) => panic!("{raw:?} was taken as {taken:?}"),
            Err(e) => e.to_string(),
        }
    }

    /// `login prod rgw_…` (the URL forgotten, the token in its place): the error says so
    /// without repeating the token, whichever of the gateway's secrets it is.
    #[test]
    fn a_token_given_for_the_url_is_not_repeated() {
        for secret in [
            "rgw_Secret0123456789abcdefghij",
            "rgs_Secret0123456789abcdefghij",
            "rgd_Secret0123456789abcdefghij",
            "rgk_Secret0123456789abcdefghij",
        ] {
            for raw in [secret.to_string(), format!(" {secret}\n")] {
                let err = url_refusal(&raw);
                assert!(!err.contains("Secret0123"), "{err}");
                assert!(
                    err.contains("looks like a token") && err.contains("--token"),
                    "{err}"
                );
            }
        }
        // Elsewhere in something that is not a usable URL: not repeated either.
        for raw in [
            "gw.example.com/?token=rgw_Secret0123456789abcdefghij",
            "http://gw.example.com/?token=rgw_Secret0123456789abcdefghij",
            "ftp://gw/rgs_Secret0123456789abcdefghij",
        ] {
            let err = url_refusal(raw);
            assert!(!err.contains("Secret0123"), "{err}");
        }
    }

    #[test]
    fn a_token_given_for_the_rack_name_is_not_kept() {
        let err = rack_name_problem("rgw_Secret0123456789abcdefghij")
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("looks like a token") && !err.contains("Secret0123"),
            "{err}"
        );
        assert!(rack_name_problem("production").is_none());
    }

    #[test]
    fn env_url_is_one_literal_shell_word() {
        assert_eq!(shell_quote("http://a/b"), "'http://a/b'");
        assert_eq!(shell_quote("it's $(x)"), "'it'\\''s $(x)'");
    }
}
