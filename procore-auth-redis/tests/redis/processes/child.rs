//! The child side: one replica of a service sharing the user through Redis, driven
//! over stdin (see the parent module's docs for the protocol).

use std::collections::BTreeSet;
use std::io::BufRead;
use std::time::Duration;

use futures_util::future::join_all;
use procore_auth_core::{
    AuthorizationCode, ClientSecret, Environment, Error, OAuthClient, ReauthorizationReason,
    RefreshTokenGrant, StoreError, TokenManager,
};
use procore_auth_redis::RedisStore;
use procore_auth_reqwest::{auth_error, ProcoreAuthMiddleware, ReqwestTransport};
use reqwest_middleware::ClientWithMiddleware;
use tokio::sync::mpsc;

use super::{
    Fired, API_URL, AUTH_URL, BACKOFF_MS, CLIENT_ID, CLIENT_SECRET, KEY, LEASE_TTL_MS, MARK,
    REDIS_URL, STORE_RECHECK_MS,
};

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"))
}

fn millis(name: &str) -> Option<Duration> {
    std::env::var(name)
        .ok()
        .map(|value| Duration::from_millis(value.parse().expect("milliseconds")))
}

/// A protocol line on stdout (flushed: stdout is line-buffered).
fn say(line: &str) {
    println!("{MARK} {line}");
}

pub(super) async fn run() {
    let api = var(API_URL);
    let auth = std::env::var(AUTH_URL).unwrap_or_else(|_| api.clone());
    let oauth = OAuthClient::new(
        Environment::custom_split(&auth, &api).expect("valid base URLs"),
        var(CLIENT_ID),
        ClientSecret::new(var(CLIENT_SECRET)),
    );
    let mut redis = RedisStore::builder(var(REDIS_URL));
    if let Some(ttl) = millis(LEASE_TTL_MS) {
        redis = redis.lease_ttl(ttl);
    }
    let store = redis.connect().await.expect("redis answers at start");
    let transport = ReqwestTransport::new().expect("a token transport");
    let mut builder =
        TokenManager::builder(RefreshTokenGrant::new(oauth.clone(), transport.clone()))
            .store(store.for_key(var(KEY)));
    if let Some(delay) = millis(BACKOFF_MS) {
        builder = builder.backoff(delay, delay);
    }
    if let Some(interval) = millis(STORE_RECHECK_MS) {
        builder = builder.store_recheck(interval);
    }
    let manager = builder.build();
    let client = reqwest_middleware::ClientBuilder::new(
        procore_auth_reqwest::client_builder()
            .build()
            .expect("an HTTP client"),
    )
    .with(ProcoreAuthMiddleware::new(manager.clone()))
    .build();
    let me = format!("{api}/rest/v1.0/me");

    let mut commands = stdin_lines();
    say(&format!("ready pid={}", std::process::id()));
    while let Some(line) = commands.recv().await {
        let (command, argument) = line.split_once(' ').unwrap_or((line.as_str(), ""));
        match command {
            "fire" => {
                let n = argument.parse().expect("a request count");
                say(&format!("fired {}", fire(&client, &me, n).await));
            }
            "token" => {
                let token = manager.token();
                let refresh = token
                    .as_ref()
                    .and_then(|token| token.refresh_token())
                    .map_or("-", |refresh| refresh.secret());
                let access = token
                    .as_ref()
                    .and_then(|token| token.access_token())
                    .map_or("-", |access| access.secret());
                say(&format!("token {refresh} {access}"));
            }
            "store-error" => {
                let error = match manager.last_store_error() {
                    None => "none",
                    Some(StoreError::Conflict) => "conflict",
                    Some(StoreError::Io(_)) => "io",
                    Some(StoreError::Busy) => "busy",
                    Some(StoreError::Corrupt { .. }) => "corrupt",
                    Some(_) => "other",
                };
                say(&format!("store-error {error}"));
            }
            "authorize" => {
                let code = AuthorizationCode::new(argument);
                let authorized = match oauth
                    .exchange_code(&transport, &code, "http://localhost")
                    .await
                {
                    Ok(token) => manager.set_token(token).await.map(drop),
                    Err(error) => Err(error),
                };
                match authorized {
                    Ok(()) => say("authorized ok"),
                    Err(error) => say(&format!("authorized error {}", one_line(&error))),
                }
            }
            "exit" => break,
            _ => panic!("unknown command {line:?}"),
        }
    }
}

/// Sends `n` requests at once through the middleware and tallies how they ended.
async fn fire(client: &ClientWithMiddleware, url: &str, n: usize) -> String {
    let results = join_all((0..n).map(|_| client.get(url).send())).await;
    let mut fired = Fired::default();
    let mut details = BTreeSet::new();
    for result in results {
        match result {
            Ok(response) if response.status() == 200 => fired.ok += 1,
            Ok(response) => {
                fired.status += 1;
                details.insert(format!("status:{}", response.status().as_u16()));
            }
            Err(error) => match auth_error(&error) {
                Some(Error::Store(store)) if store.is_transient() => {
                    fired.store += 1;
                    details.insert(format!("store:{}", one_line(store)));
                }
                Some(Error::BackingOff { last_error, .. }) if matches!(&**last_error, Error::Store(store) if store.is_transient()) =>
                {
                    fired.backoff += 1;
                }
                Some(Error::ReauthorizationRequired { reason, .. }) => {
                    fired.reauth += 1;
                    if let ReauthorizationReason::InvalidGrant {
                        description: Some(description),
                    } = reason
                    {
                        // The core's words when a peer's refusal is remembered in Redis.
                        if description.starts_with("another process presented") {
                            fired.peer_refused += 1;
                        }
                    }
                    details.insert(format!("reauth:{reason}").replace(char::is_whitespace, "_"));
                }
                _ => {
                    fired.other += 1;
                    details.insert(format!("other:{}", one_line(&error)));
                }
            },
        }
    }
    let detail: Vec<String> = details.into_iter().collect();
    format!(
        "ok={} store={} backoff={} reauth={} peer_refused={} status={} other={} detail={}",
        fired.ok,
        fired.store,
        fired.backoff,
        fired.reauth,
        fired.peer_refused,
        fired.status,
        fired.other,
        detail.join(";")
    )
}

/// An error and its sources, on one line without spaces (the answer's format).
fn one_line(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text.replace(char::is_whitespace, "_")
}

/// The lines of stdin, read on a thread of their own; the channel ends at EOF (the
/// parent went away).
fn stdin_lines() -> mpsc::UnboundedReceiver<String> {
    let (sender, receiver) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    receiver
}
