//! `token`, `whoami`, `status` and `logout`.

use std::io::Write;

use procore_auth_core::{
    Clock, Error, FileStore, OAuthClient, RefreshTokenGrant, StoreError, SystemClock, Token,
    TokenManager, TokenStore,
};
use procore_auth_reqwest::ProcoreAuthMiddleware;

use crate::budget::{self, Snapshot};
use crate::failure::{chain, Failure};
use crate::login::transport;
use crate::settings::Settings;
use crate::time;

/// `token`: a fresh access token and a newline on stdout, nothing else.
///
/// Under the token file's lock: a refresh (single-flight in this process, and the
/// lock makes it so across `procore-auth` processes) is saved to the file before the
/// token is printed.
pub(crate) async fn token(settings: &Settings) -> Result<(), Failure> {
    let Some(_lock) = settings.lock()? else {
        return Err(not_signed_in(settings));
    };
    let manager = manager(settings, settings.oauth()?).await?;
    fresh(settings, &manager).await?;
    let token = manager
        .token()
        .ok_or_else(|| Failure::sign_in_again("no token is available"))?;
    let access = token
        .access_token()
        .ok_or_else(|| Failure::sign_in_again("the token has no access token"))?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", access.secret())
        .and_then(|()| stdout.flush())
        .map_err(|error| Failure::failed(format!("cannot write the token: {error}")))
}

/// `whoami`: `GET /rest/v1.0/me` through the auth middleware, plus what the token-info
/// endpoint says. Prints no secret.
pub(crate) async fn whoami(settings: &Settings) -> Result<(), Failure> {
    let Some(_lock) = settings.lock()? else {
        return Err(not_signed_in(settings));
    };
    let oauth = settings.oauth()?;
    let manager = manager(settings, oauth.clone()).await?;
    let http = procore_auth_reqwest::client_builder()
        .build()
        .map_err(|error| {
            Failure::failed(format!("cannot build an HTTP client: {}", chain(&error)))
        })?;
    let client = reqwest_middleware::ClientBuilder::new(http)
        .with(ProcoreAuthMiddleware::new(manager.clone()))
        .build();
    let url = format!("{}/rest/v1.0/me", settings.environment().api_base());
    let response = client
        .get(&url)
        .send()
        .await
        .map_err(|error| request_failed(&url, &error))?;
    // A refresh on the way (expiry, or a 401 and a replay) must have reached the file.
    saved(settings, &manager)?;
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|error| Failure::transient(format!("reading {url} failed: {}", chain(&error))))?;
    if !status.is_success() {
        let what = format!("GET {url} answered {status}");
        return Err(match status.as_u16() {
            401 => Failure::sign_in_again(format!("{what}: Procore refused the token")),
            429 | 500..=599 => Failure::transient(what),
            _ => Failure::failed(what),
        });
    }
    let me: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|_| Failure::failed(format!("GET {url} answered something that is not JSON")))?;
    let token = manager
        .token()
        .ok_or_else(|| Failure::sign_in_again("no token is available"))?;
    let now = SystemClock.now();
    let rate_limit = manager.rate_limit();
    if let Some(rate_limit) = &rate_limit {
        budget::save(
            settings.token_file(),
            &Snapshot::new(&token, rate_limit, now),
        );
    }

    let mut lines = vec![
        ("environment", settings.environment().api_base().to_owned()),
        ("user id", field(&me, "id")),
        ("login", field(&me, "login")),
        ("name", field(&me, "name")),
    ];
    lines.extend(token_lines(&token, now));
    lines.push((
        "token info",
        match oauth.token_info(&transport()?, &token).await {
            Ok(info) => {
                let mut parts = Vec::new();
                if let Some(owner) = info.resource_owner_id {
                    parts.push(format!("user {owner}"));
                }
                if let Some(uid) = info.application.as_ref().and_then(|app| app.uid.as_deref()) {
                    parts.push(format!("application {}", printable(uid)));
                }
                if let Some(seconds) = info.expires_in_seconds {
                    parts.push(format!("expires in {seconds} s (server's view)"));
                }
                parts.join(", ")
            }
            Err(error) => format!("unavailable ({})", chain(&error)),
        },
    ));
    lines.push((
        "rate limit",
        rate_limit.map_or_else(
            || "unknown (the response carried no X-Rate-Limit-* headers)".to_owned(),
            |limit| {
                format!(
                    "{} of {} requests left, resets {}",
                    limit.remaining,
                    limit.limit,
                    time::utc_and_relative(limit.reset_at, now)
                )
            },
        ),
    ));
    print_lines(&lines)
}

/// `status`: what the token file says, without the network or the client secret.
pub(crate) async fn status(settings: &Settings) -> Result<(), Failure> {
    let stored = load(&settings.store(), settings).await?;
    let now = SystemClock.now();
    let mut lines = vec![
        ("environment", settings.environment().api_base().to_owned()),
        ("token file", settings.token_file().display().to_string()),
    ];
    let Some(token) = stored else {
        lines.push(("signed in", "no".to_owned()));
        print_lines(&lines)?;
        return Err(not_signed_in(settings));
    };
    lines.extend(token_lines(&token, now));
    lines.push((
        "rate limit",
        match budget::load(settings.token_file()).filter(|snapshot| snapshot.is_for(&token)) {
            Some(snapshot) => format!(
                "{} of {} requests left as of {}, resets {}",
                snapshot.remaining,
                snapshot.limit,
                time::relative(snapshot.observed_at(), now),
                time::utc_and_relative(snapshot.reset_at(), now)
            ),
            None => "unknown (`procore-auth whoami` reads it)".to_owned(),
        },
    ));
    print_lines(&lines)?;
    let usable = token.refresh_token().is_some() || !token.is_expired_at(now);
    if usable {
        Ok(())
    } else {
        Err(Failure::sign_in_again(
            "the access token has expired and there is no refresh token",
        ))
    }
}

/// `logout`: revokes the token at Procore (the access token and its refresh token),
/// then deletes the token file.
pub(crate) async fn logout(settings: &Settings) -> Result<(), Failure> {
    let Some(_lock) = settings.lock()? else {
        eprintln!(
            "Not signed in (no token at {}).",
            settings.token_file().display()
        );
        return Ok(());
    };
    let store = settings.store();
    let stored = match store.load().await {
        Ok(stored) => stored,
        Err(StoreError::Corrupt { .. }) => {
            // Nothing to revoke: what is there is not a token.
            store
                .clear()
                .await
                .map_err(|error| cannot_delete(settings, &error))?;
            budget::remove(settings.token_file());
            eprintln!(
                "Deleted {}: it did not hold a token.",
                settings.token_file().display()
            );
            return Ok(());
        }
        Err(error) => return Err(read_failed(settings, error)),
    };
    let Some(token) = stored else {
        budget::remove(settings.token_file());
        eprintln!(
            "Not signed in (no token at {}).",
            settings.token_file().display()
        );
        return Ok(());
    };
    let oauth = settings.oauth()?;
    let manager = TokenManager::builder(RefreshTokenGrant::new(oauth, transport()?))
        .token(token)
        .store(store)
        .build();
    manager.revoke().await.map_err(|error| match error {
        Error::Store(error) => cannot_delete(settings, &error),
        error => Failure::from_core(
            &format!(
                "revoking the token failed, so it is kept in {}",
                settings.token_file().display()
            ),
            &error,
        ),
    })?;
    budget::remove(settings.token_file());
    eprintln!(
        "Signed out: the token was revoked at {} and {} deleted.",
        settings.environment().auth_base(),
        settings.token_file().display()
    );
    Ok(())
}

/// A manager for the saved token, saving refreshed tokens back to the file.
async fn manager(settings: &Settings, oauth: OAuthClient) -> Result<TokenManager, Failure> {
    let store = settings.store();
    let token = load(&store, settings)
        .await?
        .ok_or_else(|| not_signed_in(settings))?;
    Ok(
        TokenManager::builder(RefreshTokenGrant::new(oauth, transport()?))
            .token(token)
            .store(store)
            .build(),
    )
}

/// Makes the manager's token fresh (refreshing it if needed) and checks that a
/// refreshed token reached the file.
async fn fresh(settings: &Settings, manager: &TokenManager) -> Result<(), Failure> {
    manager
        .bearer()
        .await
        .map_err(|error| Failure::from_core("cannot get a fresh token", &error))?;
    saved(settings, manager)
}

/// Fails if the manager's last save failed: the rotated refresh token would be lost
/// with this process, so its access token is not handed out either.
fn saved(settings: &Settings, manager: &TokenManager) -> Result<(), Failure> {
    match manager.last_store_error() {
        None => Ok(()),
        Some(error) => Err(Failure::failed(format!(
            "the refreshed token could not be saved to {}: {}; sign in again if the next \
             call fails",
            settings.token_file().display(),
            chain(&error)
        ))),
    }
}

async fn load(store: &FileStore, settings: &Settings) -> Result<Option<Token>, Failure> {
    store
        .load()
        .await
        .map_err(|error| read_failed(settings, error))
}

fn read_failed(settings: &Settings, error: StoreError) -> Failure {
    Failure::from_core(
        &format!("cannot read {}", settings.token_file().display()),
        &Error::Store(error),
    )
}

fn cannot_delete(settings: &Settings, error: &StoreError) -> Failure {
    Failure::failed(format!(
        "cannot delete {}: {}",
        settings.token_file().display(),
        chain(error)
    ))
}

fn not_signed_in(settings: &Settings) -> Failure {
    Failure::sign_in_again(format!(
        "not signed in: no token at {}",
        settings.token_file().display()
    ))
}

fn request_failed(url: &str, error: &reqwest_middleware::Error) -> Failure {
    if let Some(error) = procore_auth_reqwest::auth_error(error) {
        return Failure::from_core(&format!("GET {url} failed"), error);
    }
    let transient = match error {
        reqwest_middleware::Error::Reqwest(error) => error.is_connect() || error.is_timeout(),
        reqwest_middleware::Error::Middleware(_) => false,
    };
    let message = format!("GET {url} failed: {}", chain(error));
    if transient {
        Failure::transient(message)
    } else {
        Failure::failed(message)
    }
}

/// The token's expiry and whether it can be refreshed. No secret.
fn token_lines(token: &Token, now: std::time::SystemTime) -> Vec<(&'static str, String)> {
    let expiry = match (token.access_token(), token.expires_at()) {
        (None, _) => "no access token yet (the next `procore-auth token` refreshes)".to_owned(),
        (Some(_), None) => "unknown".to_owned(),
        (Some(_), Some(at)) if token.is_expired_at(now) => {
            format!(
                "{} (expired; the next call refreshes it)",
                time::utc_and_relative(at, now)
            )
        }
        (Some(_), Some(at)) => time::utc_and_relative(at, now),
    };
    let refresh = if token.refresh_token().is_some() {
        "present"
    } else {
        "absent (the token cannot be refreshed)"
    };
    vec![
        ("token expires", expiry),
        ("refresh token", refresh.to_owned()),
    ]
}

/// A field of the `/me` answer, shown safely (control characters escaped).
fn field(me: &serde_json::Value, name: &str) -> String {
    match me.get(name) {
        Some(serde_json::Value::String(text)) => printable(text),
        Some(serde_json::Value::Null) | None => "-".to_owned(),
        Some(other) => printable(&other.to_string()),
    }
}

/// Server text for a terminal: control characters (and line separators and
/// bidirectional overrides) escaped, at most 200 characters.
fn printable(text: &str) -> String {
    let mut shown = String::new();
    for (index, c) in text.chars().enumerate() {
        if index == 200 {
            shown.push('…');
            break;
        }
        if c.is_control()
            || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
        {
            shown.extend(c.escape_default());
        } else {
            shown.push(c);
        }
    }
    shown
}

fn print_lines(lines: &[(&str, String)]) -> Result<(), Failure> {
    let width = lines.iter().map(|(key, _)| key.len()).max().unwrap_or(0) + 1;
    let mut stdout = std::io::stdout().lock();
    for (key, value) in lines {
        writeln!(stdout, "{:<width$} {value}", format!("{key}:"))
            .map_err(|error| Failure::failed(format!("cannot write: {error}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_text_is_shown_safely() {
        assert_eq!(printable("Ann Smith"), "Ann Smith");
        assert_eq!(printable("Zoë"), "Zoë");
        assert_eq!(printable("a\u{1b}[31mb\n"), "a\\u{1b}[31mb\\n");
        assert_eq!(printable(&"x".repeat(300)).chars().count(), 201);
        let me = serde_json::json!({"id": 4242, "login": "ann", "name": null});
        assert_eq!(field(&me, "id"), "4242");
        assert_eq!(field(&me, "login"), "ann");
        assert_eq!(field(&me, "name"), "-");
    }
}
