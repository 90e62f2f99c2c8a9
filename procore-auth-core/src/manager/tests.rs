//! The manager's behaviour, driven through the real grants and OAuth client with a
//! scripted token endpoint behind a [`Transport`], and a manual clock.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::FutureExt;
use tokio::sync::Semaphore;

use super::*;
use crate::test_util::FaultyStore;
use crate::Authorize;
use crate::ReauthorizationReason;
use crate::{
    AccessToken, BoxFuture, ClientCredentialsGrant, ClientSecret, ManualClock, MemoryStore,
    OAuthClient, OAuthErrorCode, RefreshLease, RefreshOutcome, RefreshToken, RefreshTokenGrant,
    RefreshTurn, StoreError, TokenStore, Transport, TransportError, WaitersOnly,
};

const START: u64 = 1_700_000_000;
const LIFETIME: u64 = 5400;

/// What the scripted endpoint answers to one call.
#[derive(Clone, Debug)]
enum Reply {
    /// A new token pair (the default when the script is empty).
    Token,
    /// A new access token and no refresh token.
    TokenWithoutRefresh,
    /// A new token pair claiming to live this many seconds.
    TokenExpiringIn(u64),
    /// A new token pair (the refresh token rotates) with this `token_type`.
    TokenOfType(&'static str),
    /// A new token pair (the refresh token rotates) with this access token.
    TokenWithAccess(&'static str),
    Status(u16, &'static str),
    RateLimited(u64),
    Body(String),
    ConnectError,
    Timeout,
}

#[derive(Debug, Default)]
struct EndpointState {
    script: VecDeque<Reply>,
    /// Requests that reached the transport (before any gate or latency).
    sent: u64,
    calls: u64,
    issued: u64,
    presented_refresh_tokens: Vec<String>,
    /// The `token` of every `POST /oauth/revoke`.
    revoked: Vec<String>,
    /// With [`ScriptedEndpoint::rotating`]: the one refresh token the server accepts
    /// (`None` once revoked); every other one gets `invalid_grant`, as Procore's do.
    live: Option<Option<String>>,
}

/// A token endpoint that answers from a script, counting calls.
#[derive(Clone)]
struct ScriptedEndpoint {
    state: Arc<Mutex<EndpointState>>,
    clock: ManualClock,
    latency: Duration,
    /// Like a real client's request timeout: a response not read within this long of
    /// the send is lost (the server has processed the request all the same).
    timeout: Option<Duration>,
    gate: Option<Arc<Semaphore>>,
}

impl ScriptedEndpoint {
    fn new(clock: &ManualClock) -> Self {
        Self {
            state: Arc::default(),
            clock: clock.clone(),
            latency: Duration::ZERO,
            timeout: None,
            gate: None,
        }
    }

    fn with_latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Calls wait until the returned semaphore gets permits.
    fn gated(mut self) -> (Self, Arc<Semaphore>) {
        let gate = Arc::new(Semaphore::new(0));
        self.gate = Some(Arc::clone(&gate));
        (self, gate)
    }

    fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.state.lock().unwrap().script.extend(replies);
    }

    fn calls(&self) -> u64 {
        self.state.lock().unwrap().calls
    }

    /// Refresh tokens are single use: only the last one issued (starting with
    /// `live`) is accepted.
    fn rotating(self, live: &str) -> Self {
        self.state.lock().unwrap().live = Some(Some(live.to_owned()));
        self
    }

    /// Revokes the live refresh token (with [`rotating`](Self::rotating)).
    fn revoke(&self) {
        self.state.lock().unwrap().live = Some(None);
    }

    fn sent(&self) -> u64 {
        self.state.lock().unwrap().sent
    }

    fn presented_refresh_tokens(&self) -> Vec<String> {
        self.state.lock().unwrap().presented_refresh_tokens.clone()
    }

    fn revoked(&self) -> Vec<String> {
        self.state.lock().unwrap().revoked.clone()
    }

    /// `POST /oauth/revoke`: 200 unless scripted otherwise; revoking the live refresh
    /// token (with [`rotating`](Self::rotating)) revokes it.
    fn reply_to_revoke(
        &self,
        request: &http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, TransportError> {
        let mut state = self.state.lock().unwrap();
        let token = form_urlencoded::parse(request.body())
            .find(|(key, _)| key == "token")
            .map(|(_, token)| token.into_owned())
            .unwrap_or_default();
        let status = match state.script.pop_front() {
            Some(Reply::Status(status, _)) => status,
            Some(Reply::ConnectError) => return Err(TransportError::connect("refused")),
            _ => 200,
        };
        if status == 200 {
            if state
                .live
                .as_ref()
                .is_some_and(|live| live.as_ref() == Some(&token))
            {
                state.live = Some(None);
            }
            state.revoked.push(token);
        }
        Ok(http::Response::builder()
            .status(status)
            .body(Bytes::from_static(b"{}"))
            .unwrap())
    }

    fn reply(
        &self,
        request: &http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, TransportError> {
        if request.uri().path() == "/oauth/revoke" {
            return self.reply_to_revoke(request);
        }
        let mut state = self.state.lock().unwrap();
        state.calls += 1;
        let presented = form_urlencoded::parse(request.body())
            .find(|(key, _)| key == "refresh_token")
            .map(|(_, token)| token.into_owned());
        if let Some(presented) = &presented {
            state.presented_refresh_tokens.push(presented.clone());
        }
        let burnt = state
            .live
            .as_ref()
            .is_some_and(|live| live.as_ref() != presented.as_ref());
        let reply = match state.script.pop_front() {
            _ if burnt => Reply::Status(400, r#"{"error":"invalid_grant"}"#),
            reply => reply.unwrap_or(Reply::Token),
        };
        let (status, body, retry_after) = match reply {
            Reply::Token
            | Reply::TokenWithoutRefresh
            | Reply::TokenExpiringIn(_)
            | Reply::TokenOfType(_)
            | Reply::TokenWithAccess(_) => {
                state.issued += 1;
                let n = state.issued;
                if state.live.is_some() {
                    state.live = Some(Some(format!("refresh-secret-{n}")));
                }
                let expires_in = match reply {
                    Reply::TokenExpiringIn(seconds) => seconds,
                    _ => LIFETIME,
                };
                let created_at = unix_millis(self.clock.now()) / 1000;
                let refresh = if matches!(reply, Reply::TokenWithoutRefresh) {
                    String::new()
                } else {
                    format!(r#","refresh_token":"refresh-secret-{n}""#)
                };
                let token_type = match reply {
                    Reply::TokenOfType(token_type) => token_type,
                    _ => "bearer",
                };
                let access = match reply {
                    Reply::TokenWithAccess(access) => access.to_owned(),
                    _ => format!("access-secret-{n}"),
                };
                let body = serde_json::json!({
                    "access_token": access,
                    "token_type": token_type,
                    "expires_in": expires_in,
                    "created_at": created_at,
                })
                .to_string();
                let body = format!("{}{refresh}}}", &body[..body.len() - 1]);
                (200, body, None)
            }
            Reply::Status(status, body) => (status, body.to_owned(), None),
            Reply::RateLimited(secs) => (429, "{}".to_owned(), Some(secs)),
            Reply::Body(body) => (200, body, None),
            Reply::ConnectError => return Err(TransportError::connect("connection refused")),
            Reply::Timeout => return Err(TransportError::timeout("timed out")),
        };
        let mut response = http::Response::builder().status(status);
        if let Some(secs) = retry_after {
            response = response.header(http::header::RETRY_AFTER, secs);
        }
        Ok(response.body(Bytes::from(body)).unwrap())
    }
}

impl std::fmt::Debug for ScriptedEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScriptedEndpoint")
    }
}

impl Transport for ScriptedEndpoint {
    fn send(
        &self,
        request: http::Request<Bytes>,
    ) -> BoxFuture<'_, Result<http::Response<Bytes>, TransportError>> {
        self.state.lock().unwrap().sent += 1;
        let sent_at = tokio::time::Instant::now();
        Box::pin(async move {
            if let Some(gate) = &self.gate {
                drop(gate.acquire().await.unwrap());
            }
            if !self.latency.is_zero() {
                tokio::time::sleep(self.latency).await;
            }
            // The server handles the request whether or not anyone reads the answer.
            let reply = self.reply(&request);
            match self.timeout {
                Some(timeout) if sent_at.elapsed() > timeout => {
                    Err(TransportError::timeout("response not read in time"))
                }
                _ => reply,
            }
        })
    }
}

fn oauth_client() -> OAuthClient {
    OAuthClient::new(
        Environment::custom("http://127.0.0.1:9").unwrap(),
        "client-id",
        ClientSecret::new("client-secret-value"),
    )
}

fn start_clock() -> ManualClock {
    ManualClock::at_unix(START)
}

/// A token issued at `issued` (Unix seconds) that lives [`LIFETIME`] seconds.
fn token(name: &str, issued: u64) -> Token {
    Token::new(
        AccessToken::new(format!("access-{name}")),
        Some(RefreshToken::new(format!("refresh-{name}"))),
        UNIX_EPOCH + Duration::from_secs(issued),
        Some(UNIX_EPOCH + Duration::from_secs(issued + LIFETIME)),
    )
    .unwrap()
}

fn expired_token() -> Token {
    token("old", START - LIFETIME - 1)
}

fn refreshing_manager(endpoint: &ScriptedEndpoint, clock: &ManualClock) -> TokenManagerBuilder {
    TokenManager::builder(RefreshTokenGrant::new(oauth_client(), endpoint.clone()))
        .clock(clock.clone())
}

fn now_or_never<F: std::future::Future>(future: F) -> F::Output {
    future
        .now_or_never()
        .expect("future should complete without waiting")
}

// ---------------------------------------------------------------- single flight

#[tokio::test(start_paused = true)]
async fn thousand_concurrent_bearers_on_an_expired_token_make_one_token_call() {
    let clock = start_clock();
    // The token call takes 50 ms of (paused, auto-advancing) tokio time: tokio only
    // advances time once every task is parked, so all 1 000 callers are waiting on
    // the refresh before it completes.
    let endpoint = ScriptedEndpoint::new(&clock).with_latency(Duration::from_millis(50));
    let manager = refreshing_manager(&endpoint, &clock)
        .token(expired_token())
        .build();
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let manager = manager.clone();
            tokio::spawn(async move { manager.bearer().await })
        })
        .collect();
    let mut generations = std::collections::HashSet::new();
    for task in tasks {
        let bearer = task.await.unwrap().unwrap();
        assert_eq!(bearer.header_value(), "Bearer access-secret-1");
        generations.insert(bearer.generation());
    }
    assert_eq!(endpoint.calls(), 1);
    assert_eq!(generations.len(), 1);
    assert_eq!(manager.metrics().refreshes, 1);
    assert_eq!(endpoint.presented_refresh_tokens(), ["refresh-old"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thousand_concurrent_rejections_of_one_generation_make_one_refresh() {
    let clock = start_clock();
    let (endpoint, gate) = ScriptedEndpoint::new(&clock).gated();
    let manager = refreshing_manager(&endpoint, &clock)
        .token(token("current", START))
        .build();
    let rejected = manager.bearer().await.unwrap().generation();
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let manager = manager.clone();
            tokio::spawn(async move { manager.rejected(rejected).await })
        })
        .collect();
    // Hold the token call until every task has reported its 401.
    for _ in 0..100_000 {
        if manager.metrics().rejections == 1000 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(
        manager.metrics().rejections,
        1000,
        "not every task reported"
    );
    gate.add_permits(Semaphore::MAX_PERMITS);
    for task in tasks {
        let replay = task
            .await
            .unwrap()
            .unwrap()
            .expect("replay with the new token");
        assert_eq!(replay.header_value(), "Bearer access-secret-1");
        assert!(replay.generation() > rejected);
    }
    assert_eq!(endpoint.calls(), 1);
    assert_eq!(manager.metrics().refreshes, 1);

    // A 401 for a generation that is no longer current causes no refresh: the caller
    // replays with the current token.
    let replay = manager.rejected(rejected).await.unwrap().unwrap();
    assert_eq!(replay.header_value(), "Bearer access-secret-1");
    assert_eq!(endpoint.calls(), 1);
}

#[tokio::test]
async fn the_first_401_for_a_brand_new_token_refreshes_and_replays() {
    let clock = start_clock();
    let endpoint = ScriptedEndpoint::new(&clock);
    let manager = refreshing_manager(&endpoint, &clock)
        .token(token("current", START))
        .build();
    let first = manager.bearer().await.unwrap();
    let replay = manager.rejected(first.generation()).await.unwrap().unwrap();
    assert_eq!(endpoint.calls(), 1);
    // A server that expires tokens early rejects the new token too, a second later:
    // its first 401 refreshes again and is replayed (no time-based suppression).
    clock.advance(Duration::from_secs(1));
    let second = manager
        .rejected(replay.generation())
        .await
        .unwrap()
        .unwrap();
    assert!(second.generation() > replay.generation());
    assert_eq!(endpoint.calls(), 2);
    // Late 401s for either older token replay with the current one, no refresh.
    for stale in [first.generation(), replay.generation()] {
        let bearer = manager.rejected(stale).await.unwrap().unwrap();
        assert_eq!(bearer.generation(), second.generation());
    }
    assert_eq!(endpoint.calls(), 2);
}

#[tokio::test]
async fn a_failed_rejection_refresh_backs_off_instead_of_blocking_replays() {
    let clock = start_clock();
    let endpoint = ScriptedEndpoint::new(&clock);
    endpoint.script([Reply::Status(503, "")]);
    let manager = refreshing_manager(&endpoint, &clock)
        .token(token("current", START))
        .build();
    let rejected = manager.bearer().await.unwrap().generation();
    let err = manager.rejected(rejected).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    // While backing off, a 401 gets the typed transient error, not a silent 401.
    assert!(matches!(
        manager.rejected(rejected).await,
        Err(Error::BackingOff { .. })
    ));
    // Once the back-off has passed (well within the rejection interval), the next
    // 401 refreshes and is replayed.
    clock.advance(DEFAULT_BACKOFF_BASE);
    assert!(manager.rejected(rejected).await.unwrap().is_some());
    assert_eq!(endpoint.calls(), 2);
}

#[tokio::test]
async fn proactive_refresh_does_not_block_other_callers() {
    let clock = start_clock();
    let (endpoint, gate) = ScriptedEndpoint::new(&clock).gated();
    let manager = refreshing_manager(&endpoint, &clock)
        .token(token("current", START))
        .build();
    // 4 minutes before expiry: inside the 5-minute skew, still valid.
    clock.advance(Duration::from_secs(LIFETIME - 240));
    let refresher = tokio::spawn({
        let manager = manager.clone();
        async move { manager.bearer().await }
    });
    for _ in 0..1_000 {
        if endpoint.sent() == 1 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(endpoint.sent(), 1, "the refresh never started");
    // The refresh is in flight and blocked. Everyone else gets the old token at once.
    for _ in 0..100 {
        let bearer = now_or_never(manager.bearer()).unwrap();
        assert_eq!(bearer.header_value(), "Bearer access-current");
    }
    gate.add_permits(Semaphore::MAX_PERMITS);
    let refreshed = refresher.await.unwrap().unwrap();
    assert_eq!(refreshed.header_value(), "Bearer access-secret-1");
    assert_eq!(
        manager.fresh_bearer().unwrap().header_value(),
        "Bearer access-secret-1"
    );
    assert_eq!(endpoint.calls(), 1);
}

#[tokio::test]
async fn proactive_refresh_completes_even_if_its_starter_is_cancelled() {
    let clock = start_clock();
    let (endpoint, gate) = ScriptedEndpoint::new(&clock).gated();
    let manager = refreshing_manager(&endpoint, &clock)
        .token(token("current", START))
        .build();
    clock.advance(Duration::from_secs(LIFETIME - 240));
    // The caller that starts the refresh gives up on it (a request timeout, say).
    assert!(manager.bearer().now_or_never().is_none());
    gate.add_permits(Semaphore::MAX_PERMITS);
    // Later callers still get the valid token without waiting, and drive the
    // abandoned refresh to completion on the way.
    let bearer = now_or_never(manager.bearer()).unwrap();
    assert_eq!(bearer.header_value(), "Bearer access-secret-1");
    assert_eq!(endpoint.calls(), 1);
}

#[tokio::test]
async fn failed_proactive_refresh_keeps_using_the_valid_token() {
    let clock = start_clock();
    let endpoint = ScriptedEndpoint::new(&clock);
    endpoint.script([Reply::Status(503, "")]);
    let manager = refreshing_manager(&endpoint, &clock)
        .token(token("current", START))
        .build();
    clock.advance(Duration::from_secs(LIFETIME - 240));
    let bearer = manager.bearer().await.unwrap();
    assert_eq!(bearer.header_value(), "Bearer access-current");
    assert_eq!(manager.metrics().refresh_failures, 1);
}

// ---------------------------------------------------------------- refresh rules

#[tokio::test]
async fn refresh_tokens_rotate_and_fresh_tokens_need_no_calls() {
    let clock = start_clock();
    let endpoint = ScriptedEndpoint::new(&clock);
    let manager = refreshing_manager(&endpoint, &clock)
        .token(expired_token())
        .build();
    manager.bearer().await.unwrap();
    for _ in 0..10 {
        manager.bearer().await.unwrap();
    }
    assert_eq!(endpoint.calls(), 1);
    clock.advance(Duration::from_secs(LIFETIME));
    manager.bearer().await.unwrap();
    assert_eq!(
        endpoint.presented_refresh_tokens(),
        ["refresh-old", "refresh-secret-1"]
    );
}

#[tokio::test]
async fn refresh_token_is_kept_when_the_server_sends_none() {
    let clock = start_clock();
    let endpoint = ScriptedEndpoint::new(&clock);
    endpoint.script([Reply::TokenWithoutRefresh]);
    let manager = refreshing_manager(&endpoint, &clock)
        .token(expired_token())
        .build();
    manager.bearer().await.unwrap();
    let token = manager.token().unwrap();
    assert_eq!(token.refresh_token().unwrap().secret(), "refresh-old");
}

#[tokio::test]
async fn no_token_and_no_store_requires_authorization() {
    let clock = start_clock();
    let endpoint = ScriptedEndpoint::new(&clock);
    let manager = refreshing_manager(&endpoint, &clock).build();
    let err = manager.bearer().await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::ReauthorizationRequired {
                reason: ReauthorizationReason::NoToken,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(endpoint.calls(), 0);
}

#[tokio::test]
async fn client_credentials_mint_without_a_token_and_retry_a_transient_failure() {
    let clock = start_clock();
    let endpoint = ScriptedEndpoint::new(&clock);
    endpoint.script([
        Reply::Status(503, "<html>busy</html>"),
        Reply::TokenWithoutRefresh,
    ]);
    let manager = TokenManager::builder(ClientCredentialsGrant::new(
        oauth_client(),
        endpoint.clone(),
    ))
    .clock(clock.clone())
    .build();
    let bearer = manager.bearer().await.unwrap();
    assert_eq!(bearer.header_value(), "Bearer access-secret-1");
    assert_eq!(endpoint.calls(), 2);
    assert!(endpoint.presented_refresh_tokens().is_empty());
}

#[tokio::test]
async fn invalid_grant_is_terminal_until_a_new_token_is_set() {
    let clock = start_clock();
    let endpoint = ScriptedEndpoint::new(&clock);
    endpoint.script([Reply::Status(
        400,
        r#"{"error":"invalid_grant","error_description":"The provided authorization grant is invalid"}"#,
    )]);
    let manager = refreshing_manager(&endpoint, &clock)
        .token(expired_token())
        .build();
    for _ in 0..50 {
        let err = manager.bearer().await.unwrap_err();
        match err {
            Error::ReauthorizationRequired {
                reason: ReauthorizationReason::InvalidGrant { description },
                ..
            } => assert!(description.unwrap().contains("grant is invalid")),
            other => panic!("unexpected {other:?}"),
        }
        clock.advance(Duration::from_secs(3600));
    }
    assert_eq!(endpoint.calls(), 1);
    manager
        .set_token(token("reauthorized", START))
        .await
        .unwrap();
    clock.set(UNIX_EPOCH + Duration::from_secs(START + 10));
    assert_eq!(
        manager.bearer().await.unwrap().header_value(),
        "Bearer access-reauthorized"
    );
}

#[tokio::test]
async fn invalid_grant_after_a_401_withdraws_the_token() {
    let clock = start_clock();
    let endpoint = ScriptedEndpoint::new(&clock);
    endpoint.script([Reply::Status(400, r#"{"error":"invalid_grant"}"#)]);
    let manager = refreshing_manager(&endpoint, &clock)
        .token(token("revoked", START))
        .build();
    let bearer = manager.bearer().await.unwrap();
    let err = manager.rejected(bearer.generation()).await.unwrap_err();
    assert!(matches!(err, Error::ReauthorizationRequired { .. }));
    // The revoked token is not handed out again.
    assert!(manager.fresh_bearer().is_none());
    assert!(matches!(
        manager.bearer().await,
        Err(Error::ReauthorizationRequired { .. })
    ));
    assert_eq!(endpoint.calls(), 1);
}

#[tokio::test]
async fn endpoint_errors_are_typed_and_shared_then_back_off() {
    type Check = fn(&Error) -> bool;
    let cases: Vec<(Reply, Check)> = vec![
        (Reply::Status(500, "{}"), |e| {
            matches!(e, Error::TokenEndpoint { status, .. } if status.as_u16() == 500)
                && e.is_transient()
        }),
        (Reply::Status(502, "<html>Bad Gateway</html>"), |e| {
            matches!(e, Error::TokenEndpoint { error: None, .. })
        }),
        (Reply::Status(401, r#"{"error":"invalid_client"}"#), |e| {
            e.oauth_error() == Some(&OAuthErrorCode::InvalidClient)
        }),
        (Reply::Body("{not json".into()), |e| {
            matches!(e, Error::InvalidResponse { .. })
        }),
        (Reply::Body(r#"{"token_type":"bearer"}"#.into()), |e| {
            matches!(e, Error::InvalidResponse { .. })
        }),
        (
            Reply::Body(r#"{"access_token":5,"expires_in":"x"}"#.into()),
            |e| matches!(e, Error::InvalidResponse { .. }),
        ),
        (Reply::Body("x".repeat(10 << 20)), |e| {
            matches!(e, Error::ResponseTooLarge { .. })
        }),
        (
            Reply::Timeout,
            |e| matches!(e, Error::Transport(t) if t.request_may_have_been_sent()),
        ),
    ];
    for (reply, check) in cases {
        let clock = start_clock();
        let endpoint = ScriptedEndpoint::new(&clock);
        endpoint.script([reply.clone()]);
        let manager = refreshing_manager(&endpoint, &clock)
            .token(expired_token())
            .build();
        let err = manager.bearer().await.unwrap_err();
        assert!(check(&err), "{reply:?} gave {err:?}");
        // A refresh is never re-sent within one attempt once it may have been seen.
        assert_eq!(endpoint.calls(), 1, "{reply:?}");
        // While backing off, callers get the shared failure without a token call.
        match manager.bearer().await.unwrap_err() {
            Error::BackingOff { last_error, .. } => assert!(check(&last_error), "{reply:?}"),
            other => panic!("{reply:?}: expected back-off, got {other:?}"),
        }
        assert_eq!(endpoint.calls(), 1, "{reply:?}");
        clock.advance(DEFAULT_BACKOFF_BASE);
        manager.bearer().await.unwrap();
        assert_eq!(endpoint.calls(), 2, "{reply:?}");
    }
}

#[tokio::test]
async fn connect_failure_is_resent_once_because_nothing_was_sent() {
    let clock = start_clock();
    let endpoint = ScriptedEndpoint::new(&clock);
    endpoint.script([Reply::ConnectError]);
    let manager = refreshing_manager(&endpoint, &clock)
        .token(expired_token())
        .build();
    manager.bearer().await.unwrap();
    assert_eq!(endpoint.calls(), 2);
    assert_eq!(
        endpoint.presented_refresh_tokens(),
        ["refresh-old", "refresh-old"]
    );
}

#[tokio::test]
async fn retry_after_delays_the_next_token_call() {
    let clock = start_clock();
    let endpoint = ScriptedEndpoint::new(&clock);
    endpoint.script([Reply::RateLimited(45)]);
    let manager = refreshing_manager(&endpoint, &clock)
        .token(expired_token())
        .build();
    let err = manager.bearer().await.unwrap_err();
    assert_eq!(err.retry_after(), Some(Duration::from_secs(45)));
    for _ in 0..44 {
        clock.advance(Duration::from_secs(1));
        let err = manager.bearer().await.unwrap_err();
        assert!(matches!(err, Error::BackingOff { .. }), "{err:?}");
    }
    assert_eq!(endpoint.calls(), 1);
    clock.advance(Duration::from_secs(1));
    manager.bearer().await.unwrap();
    assert_eq!(endpoint.calls(), 2);
}

#[tokio::test]
async fn an_absurd_retry_after_is_clamped_to_the_back_off_maximum() {
    // 4 000 000 000 s would stop refreshing for 126 years; u64::MAX seconds used to
    // overflow the deadline arithmetic and panic every waiting task.
    for seconds in [4_000_000_000, u64::MAX] {
        let clock = start_clock();
        let endpoint = ScriptedEndpoint::new(&clock);
        endpoint.script([Reply::RateLimited(seconds)]);
        let manager = refreshing_manager(&endpoint, &clock)
            .token(expired_token())
            .backoff_jitter(Jitter::none())
            .build();
        let err = manager.bearer().await.unwrap_err();
        assert_eq!(err.retry_after(), Some(Duration::from_secs(seconds)));
        match manager.bearer().await {
            Err(Error::BackingOff { retry_in, .. }) => assert_eq!(retry_in, DEFAULT_BACKOFF_MAX),
            other => panic!("{other:?}"),
        }
        clock.advance(DEFAULT_BACKOFF_MAX);
        manager.bearer().await.unwrap();
        assert_eq!(endpoint.calls(), 2, "Retry-After: {seconds}");
    }
}

#[tokio::test]
async fn a_raised_retry_after_limit_is_honoured() {
    let clock = start_clock();
    let endpoint = ScriptedEndpoint::new(&clock);
    endpoint.script([Reply::RateLimited(600)]);
    let manager = refreshing_manager(&endpoint, &clock)
        .token(expired_token())
        .max_retry_after(Duration::from_secs(3_600))
        .build();
    manager.bearer().await.unwrap_err();
    clock.advance(Duration::from_secs(599));
    assert!(matches!(
        manager.bearer().await,
        Err(Error::BackingOff { .. })
    ));
    clock.advance(Duration::from_secs(1));
    manager.bearer().await.unwrap();
}

#[tokio::test]
async fn a_wall_clock_stepped_back_does_not_stretch_the_back_off() {
    let clock = start_clock();
    let endpoint = ScriptedEndpoint::new(&clock);
    endpoint.script([Reply::Status(503, "")]);
    let manager = refreshing_manager(&endpoint, &clock)
        .token(token("current", START))
        .backoff_jitter(Jitter::none())
        .build();
    let rejected = manager.bearer().await.unwrap().generation();
    manager.rejected(rejected).await.unwrap_err();
    // NTP (or a user) steps the wall clock back an hour; the token is still valid.
    clock.set(UNIX_EPOCH + Duration::from_secs(START - 3_600));
    clock.advance(DEFAULT_BACKOFF_BASE);
    // Half a second of real (monotonic) time later the next 401 refreshes.
    assert!(manager.rejected(rejected).await.unwrap().is_some());
    assert_eq!(endpoint.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_refresh_whose_waiters_were_all_dropped_still_saves_and_publishes() {
    let clock = start_clock();
    // The server answers after 1.5 s; a response not read within 3 s is lost (like
    // a client's request timeout), after the server rotated the refresh token.
    let endpoint = ScriptedEndpoint::new(&clock)
        .with_latency(Duration::from_millis(1_500))
        .with_timeout(Duration::from_secs(3));
    let store = MemoryStore::with_token(expired_token());
    let manager = refreshing_manager(&endpoint, &clock)
        .store(store.clone())
        .build();
    // The only caller gives up after 500 ms, then nothing happens for 4 s.
    let waited = tokio::time::timeout(Duration::from_millis(500), manager.bearer()).await;
    assert!(waited.is_err(), "the refresh should still be running");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(endpoint.calls(), 1);
    let stored = store.load().await.unwrap().unwrap();
    assert_eq!(stored.refresh_token().unwrap().secret(), "refresh-secret-1");
    let bearer = manager.fresh_bearer().expect("the new token was published");
    assert_eq!(bearer.header_value(), "Bearer access-secret-1");
    assert_eq!(endpoint.presented_refresh_tokens(), ["refresh-old"]);
}

#[tokio::test]
async fn a_manager_that_lost_a_refresh_race_adopts_the_pair_its_peer_saved_later() {
    let clock = start_clock();
    let endpoint = ScriptedEndpoint::new(&clock);
    // A peer presented the same refresh token first; its response is still on the way.
    endpoint.script([Reply::Status(400, r#"{"error":"invalid_grant"}"#)]);
    let store = FaultyStore::with_token(expired_token());
    let manager = refreshing_manager(&endpoint, &clock)
        .store(store.clone())
        .backoff_jitter(Jitter::none())
        .build();
    let err = manager.bearer().await.unwrap_err();
    assert!(
        matches!(err, Error::ReauthorizationRequired { .. }),
        "{err:?}"
    );
    // Now the peer saves its new pair.
    store
        .memory()
        .save(&token("peer", START), Some(&expired_token()))
        .await
        .unwrap();
    // Within the recheck interval: the error, without reading the store again.
    let loads = store.loads();
    assert!(matches!(
        manager.bearer().await,
        Err(Error::ReauthorizationRequired { .. })
    ));
    assert_eq!(store.loads(), loads);
    // After it, one store read adopts the peer's pair; no token call.
    clock.advance(DEFAULT_STORE_RECHECK);
    let bearer = manager.bearer().await.unwrap();
    assert_eq!(bearer.header_value(), "Bearer access-peer");
    assert_eq!(endpoint.calls(), 1);
    assert_eq!(store.loads(), loads + 1);
}

#[tokio::test]
async fn while_reauthorization_is_required_the_burnt_pair_is_never_presented_again() {
    let clock = start_clock();
    let endpoint = ScriptedEndpoint::new(&clock);
    endpoint.script([Reply::Status(400, r#"{"error":"invalid_grant"}"#)]);
    let manager = refreshing_manager(&endpoint, &clock)
        .store(MemoryStore::with_token(token("current", START)))
        .build();
    let rejected = manager.bearer().await.unwrap().generation();
    let err = manager.rejected(rejected).await.unwrap_err();
    assert!(
        matches!(err, Error::ReauthorizationRequired { .. }),
        "{err:?}"
    );
    // The store still holds the refused pair: rechecks read it and move on.
    for _ in 0..10 {
        clock.advance(DEFAULT_STORE_RECHECK);
        assert!(matches!(
            manager.bearer().await,
            Err(Error::ReauthorizationRequired { .. })
        ));
    }
    assert_eq!(endpoint.calls(), 1);
}

#[tokio::test]
async fn back_off_bounds_token_calls_under_a_flood_of_callers() {
    let clock = start_clock();
    let endpoint = ScriptedEndpoint::new(&clock);
    endpoint.script(std::iter::repeat_n(Reply::Status(500, ""), 10_000));
    let manager = refreshing_manager(&endpoint, &clock)
        .token(expired_token())
        .backoff_jitter(Jitter::none())
        .build();
    // Ten minutes of 50 concurrent requests every 100 ms: 300 000 requests.
    for _ in 0..6000 {
        let results = futures_util::future::join_all((0..50).map(|_| manager.bearer())).await;
        assert!(results.iter().all(Result::is_err));
        clock.advance(Duration::from_millis(100));
    }
    // Back-off doubles from 0.5 s to a 60 s cap: calls at 0, 0.5, 1.5, 3.5, 7.5,
    // 15.5, 31.5 and 63.5 s, then every 60 s up to 543.5 s.
    assert_eq!(endpoint.calls(), 16);
    assert_eq!(manager.metrics().refresh_failures, 16);
}

#[tokio::test]
async fn a_panicking_source_fails_the_refresh_without_wedging_the_manager() {
    #[derive(Debug)]
    struct Panicky(Mutex<bool>);
    impl TokenSource for Panicky {
        fn fetch<'a>(
            &'a self,
            _: Option<&'a Token>,
            clock: &'a dyn Clock,
        ) -> BoxFuture<'a, Result<Token, Error>> {
            let first = std::mem::replace(&mut *self.0.lock().unwrap(), false);
            Box::pin(async move {
                assert!(!first, "source bug");
                Ok(token("recovered", unix_millis(clock.now()) / 1000))
            })
        }
    }
    let clock = start_clock();
    let manager = TokenManager::builder(Panicky(Mutex::new(true)))
        .clock(clock.clone())
        .build();
    assert!(matches!(manager.bearer().await, Err(Error::SourcePanicked)));
    clock.advance(DEFAULT_BACKOFF_BASE);
    assert_eq!(
        manager.bearer().await.unwrap().header_value(),
        "Bearer access-recovered"
    );
}

// ---------------------------------------------------------------- stores

#[tokio::test]
async fn after_a_lost_refresh_the_next_attempt_adopts_the_pair_a_peer_stored() {
    let clock = start_clock();
    let endpoint = ScriptedEndpoint::new(&clock);
    // The refresh is sent but its answer is lost: the refresh token is probably burnt.
    endpoint.script([Reply::Timeout]);
    let store = MemoryStore::with_token(expired_token());
    let manager = refreshing_manager(&endpoint, &clock)
        .store(store.clone())
        .build();
    let err = manager.bearer().await.unwrap_err();
    assert!(matches!(err, Error::Transport(_)), "{err:?}");
    assert_eq!(endpoint.presented_refresh_tokens(), ["refresh-old"]);

    // Meanwhile a peer process saved a newer pair.
    let peer = token("peer", START + 1);
    store.save(&peer, None).await.unwrap();
    clock.advance(Duration::from_secs(2));

    let bearer = manager.bearer().await.unwrap();
    assert_eq!(bearer.header_value(), "Bearer access-peer");
    // No second POST of the burnt refresh token.
    assert_eq!(endpoint.presented_refresh_tokens(), ["refresh-old"]);
    assert_eq!(manager.metrics().store_adoptions, 1);
}

#[tokio::test]
async fn invalid_grant_adopts_a_peer_token_instead_of_giving_up() {
    let clock = start_clock();
    let endpoint = ScriptedEndpoint::new(&clock);
    let store = MemoryStore::with_token(expired_token());
    let peer = token("peer", START);
    // The peer's save lands while our refresh is on the wire and loses the race.
    #[derive(Debug)]
    struct RacingPeer {
        store: MemoryStore,
        peer: Token,
        endpoint: ScriptedEndpoint,
    }
    impl Transport for RacingPeer {
        fn send(
            &self,
            request: http::Request<Bytes>,
        ) -> BoxFuture<'_, Result<http::Response<Bytes>, TransportError>> {
            now_or_never(self.store.save(&self.peer, None)).unwrap();
            self.endpoint
                .script([Reply::Status(400, r#"{"error":"invalid_grant"}"#)]);
            self.endpoint.send(request)
        }
    }
    let transport = RacingPeer {
        store: store.clone(),
        peer: peer.clone(),
        endpoint: endpoint.clone(),
    };
    let manager = TokenManager::builder(RefreshTokenGrant::new(oauth_client(), transport))
        .clock(clock.clone())
        .store(store)
        .build();
    let bearer = manager.bearer().await.unwrap();
    assert_eq!(bearer.header_value(), "Bearer access-peer");
    assert_eq!(endpoint.calls(), 1);
}

#[tokio::test]
async fn a_stored_token_is_loaded_on_first_use() {
    let clock = start_clock();
    let endpoint = ScriptedEndpoint::new(&clock);
    let manager = refreshing_manager(&endpoint, &clock)
        .store(MemoryStore::with_token(token("stored", START)))
        .build();
    assert_eq!(
        manager.bearer().await.unwrap().header_value(),
        "Bearer access-stored"
    );
    assert_eq!(endpoint.calls(), 0);
}

#[tokio::test]
async fn new_tokens_are_saved_before_they_are_published() {
    let clock = start_clock();
    let endpoint = ScriptedEndpoint::new(&clock);
    let store = FaultyStore::default();
    let manager = refreshing_manager(&endpoint, &clock)
        .token(expired_token())
        .store(store.clone())
        .build();
    // While saving, the new token must not yet be visible to requests.
    let published_before_saved = Arc::new(Mutex::new(false));
    store.on_save({
        let (manager, published_before_saved) = (manager.clone(), published_before_saved.clone());
        move |token| {
            if manager
                .token()
                .is_some_and(|current| current.same_credentials(token))
            {
                *published_before_saved.lock().unwrap() = true;
            }
        }
    });
    manager.bearer().await.unwrap();
    clock.advance(Duration::from_secs(LIFETIME));
    manager.bearer().await.unwrap();
    assert_eq!(endpoint.calls(), 2);
    assert!(!*published_before_saved.lock().unwrap());
    let saved = store.memory().load().await.unwrap().unwrap();
    assert_eq!(saved.refresh_token().unwrap().secret(), "refresh-secret-2");
}

#[tokio::test]
async fn a_failed_save_is_reported_and_the_token_is_still_used() {
    let clock = start_clock();
    let endpoint = ScriptedEndpoint::new(&clock);
    let store = FaultyStore::default();
    store.fail_next_saves(1);
    let manager = refreshing_manager(&endpoint, &clock)
        .token(expired_token())
        .store(store.clone())
        .build();
    let bearer = manager.bearer().await.unwrap();
    assert_eq!(bearer.header_value(), "Bearer access-secret-1");
    assert_eq!(manager.metrics().store_failures, 1);
    assert!(matches!(
        manager.last_store_error(),
        Some(StoreError::Io(_))
    ));
    // The next refresh saves again (and succeeds once the store recovers); the
    // unsaved pair is not mistaken for a stale one.
    clock.advance(Duration::from_secs(LIFETIME));
    manager.bearer().await.unwrap();
    assert_eq!(
        endpoint.presented_refresh_tokens(),
        ["refresh-old", "refresh-secret-1"]
    );
    let saved = store.memory().load().await.unwrap().unwrap();
    assert_eq!(saved.access_token().unwrap().secret(), "access-secret-2");
    assert!(manager.last_store_error().is_none());
}

#[tokio::test]
async fn set_token_saves_and_reports_a_failed_save() {
    let store = FaultyStore::default();
    let manager = TokenManager::builder(RefreshTokenGrant::new(
        oauth_client(),
        ScriptedEndpoint::new(&start_clock()),
    ))
    .clock(start_clock())
    .store(store.clone())
    .build();
    manager.set_token(token("a", START)).await.unwrap();
    assert!(store.memory().load().await.unwrap().is_some());
    store.fail_next_saves(1);
    let err = manager.set_token(token("b", START)).await.unwrap_err();
    assert!(matches!(err, Error::Store(_)));
    assert_eq!(
        manager.token().unwrap().access_token().unwrap().secret(),
        "access-b"
    );
}

// ---------------------------------------------------------------- policy

#[tokio::test]
async fn policy_attaches_token_and_default_company_id() {
    let clock = start_clock();
    let env = Environment::custom("http://127.0.0.1:9").unwrap();
    let manager = refreshing_manager(&ScriptedEndpoint::new(&clock), &clock)
        .token(token("t", START))
        .request_policy(RequestPolicy::new(&env).with_company_id(4_294_967_296))
        .build();
    let bearer = manager.bearer().await.unwrap();
    let mut headers = http::HeaderMap::new();
    manager.policy().attach(&mut headers, &bearer);
    assert_eq!(headers[http::header::AUTHORIZATION], "Bearer access-t");
    assert!(headers[http::header::AUTHORIZATION].is_sensitive());
    assert_eq!(headers[crate::PROCORE_COMPANY_ID], "4294967296");
    // A caller's own company id wins.
    let mut headers = http::HeaderMap::new();
    headers.insert(
        crate::PROCORE_COMPANY_ID,
        http::HeaderValue::from_static("7"),
    );
    manager.policy().attach(&mut headers, &bearer);
    assert_eq!(headers[crate::PROCORE_COMPANY_ID], "7");
}

#[test]
fn default_policy_follows_the_sources_environment() {
    let clock = start_clock();
    let manager = refreshing_manager(&ScriptedEndpoint::new(&clock), &clock).build();
    let headers = http::HeaderMap::new();
    let uri = |s: &str| s.parse::<http::Uri>().unwrap();
    assert!(manager
        .policy()
        .should_attach(&uri("http://127.0.0.1:9/x"), &headers));
    assert!(!manager
        .policy()
        .should_attach(&uri("https://api.procore.com/x"), &headers));
}

// ---------------------------------------------------------------- secrets

/// Captures everything `tracing` prints.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn no_secret_appears_in_debug_display_errors_or_traces() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let mut printed = Vec::new();
    tracing::subscriber::with_default(subscriber, || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let clock = start_clock();
            let endpoint = ScriptedEndpoint::new(&clock);
            endpoint.script([
                Reply::Status(500, "{}"),
                Reply::Token,
                Reply::Body(
                    r#"{"access_token":"access-secret-x","expires_in":"access-secret-x"}"#.into(),
                ),
                Reply::Status(400, r#"{"error":"invalid_grant"}"#),
            ]);
            let store = FaultyStore::default();
            store.fail_next_saves(u32::MAX);
            let manager = refreshing_manager(&endpoint, &clock)
                .token(expired_token())
                .store(store)
                .build();
            let mut outcomes = Vec::new();
            for _ in 0..4 {
                outcomes.push(manager.bearer().await.map(|b| format!("{b:?}")));
                let bearer = manager.bearer().await;
                if let Ok(bearer) = &bearer {
                    outcomes.push(
                        manager
                            .rejected(bearer.generation())
                            .await
                            .map(|b| format!("{b:?}")),
                    );
                }
                outcomes.push(bearer.map(|b| format!("{b:?}")));
                clock.advance(Duration::from_secs(LIFETIME));
            }
            for outcome in &outcomes {
                match outcome {
                    Ok(debug) => printed.push(debug.clone()),
                    Err(error) => {
                        printed.push(format!("{error} | {error:?} | {error:#?}"));
                        let mut source = std::error::Error::source(error);
                        while let Some(cause) = source {
                            printed.push(format!("{cause} | {cause:?}"));
                            source = cause.source();
                        }
                    }
                }
            }
            let client = oauth_client();
            let attempt = client.authorization_request("http://localhost");
            let token = manager.token().unwrap_or_else(expired_token);
            printed.extend([
                format!("{manager:?}"),
                format!("{client:?}"),
                format!("{attempt:?}"),
                format!("{token:?} {token:#?}"),
                // (A built token request's body holds credentials by necessity and
                // `http::Request`'s Debug prints bodies: documented on the builders.)
                format!("{:?}", client.token_info_request(&token)),
                format!("{:?}", manager.bearer().await),
                format!("{:?}", manager.metrics()),
            ]);
        });
    });
    printed.push(String::from_utf8(captured.0.lock().unwrap().clone()).unwrap());
    let everything = printed.join("\n");
    assert!(
        everything.contains("procore token refreshed"),
        "tracing was captured"
    );
    assert!(everything.contains("BackingOff") || everything.contains("backing off"));
    for secret in [
        "access-secret",
        "refresh-secret",
        "access-old",
        "refresh-old",
        "client-secret-value",
    ] {
        assert!(
            !everything.contains(secret),
            "`{secret}` leaked in:\n{everything}"
        );
    }
}

#[test]
fn manager_is_send_sync_and_its_futures_are_send() {
    fn send_sync<T: Send + Sync>(_: &T) {}
    fn send<T: Send>(_: &T) {}
    let clock = start_clock();
    let manager = refreshing_manager(&ScriptedEndpoint::new(&clock), &clock)
        .token(token("x", START))
        .build();
    let generation = manager.fresh_bearer().unwrap().generation();
    send_sync(&manager);
    send(&manager.bearer());
    send(&manager.rejected(generation));
    send(&manager.set_token(token("x", START)));
}

#[test]
fn a_refresh_nobody_drives_is_dropped_with_the_last_manager_handle() {
    let clock = start_clock();
    let (endpoint, _gate) = ScriptedEndpoint::new(&clock).gated();
    let manager = refreshing_manager(&endpoint, &clock)
        .token(expired_token())
        .spawner(WaitersOnly)
        .build();
    // Start a refresh that can never finish, then walk away from it.
    assert!(manager.bearer().now_or_never().is_none());
    assert_eq!(endpoint.sent(), 1);
    drop(manager);
    assert_eq!(
        Arc::strong_count(&endpoint.state),
        1,
        "the abandoned refresh kept the manager (and its transport) alive"
    );
}

// ---------------------------------------------------------------- adversarial review

#[tokio::test]
async fn a_failed_save_never_makes_the_store_s_older_pair_win_within_a_second() {
    let clock = start_clock();
    let endpoint = ScriptedEndpoint::new(&clock).rotating("refresh-current");
    let store = FaultyStore::with_token(token("current", START));
    let manager = refreshing_manager(&endpoint, &clock)
        .store(store.clone())
        .token(token("current", START))
        .build();
    let g0 = manager.bearer().await.unwrap().generation();
    store.fail_next_saves(1);
    let g1 = manager.rejected(g0).await.unwrap().unwrap().generation(); // not saved
                                                                        // Same second: the store's pair is the one g1 replaced, not a newer one.
    let g2 = manager.rejected(g1).await.unwrap().unwrap().generation();
    manager.rejected(g2).await.unwrap().unwrap();
    assert_eq!(
        endpoint.presented_refresh_tokens(),
        ["refresh-current", "refresh-secret-1", "refresh-secret-2"]
    );
    let current = manager.token().unwrap();
    assert_eq!(current.access_token().unwrap().secret(), "access-secret-3");
}

#[tokio::test]
async fn after_invalid_grant_an_older_stored_pair_is_not_adopted() {
    let clock = start_clock();
    let endpoint = ScriptedEndpoint::new(&clock).rotating("refresh-current");
    let store = FaultyStore::with_token(token("current", START));
    let manager = refreshing_manager(&endpoint, &clock)
        .store(store.clone())
        .token(token("current", START))
        .build();
    clock.advance(Duration::from_secs(LIFETIME - 60));
    store.fail_next_saves(1);
    let refreshed = manager.bearer().await.unwrap(); // refreshed ahead of expiry, not saved
    endpoint.revoke();
    clock.advance(Duration::from_secs(600));
    let replay = manager.rejected(refreshed.generation()).await;
    assert!(
        matches!(replay, Err(Error::ReauthorizationRequired { .. })),
        "{replay:?}"
    );
    manager.bearer().await.unwrap_err();
    assert_eq!(
        endpoint.presented_refresh_tokens(),
        ["refresh-current", "refresh-secret-1"]
    );
}

#[tokio::test]
async fn an_absurd_expires_in_inside_a_refresh_keeps_the_rotated_pair() {
    let clock = start_clock();
    let endpoint = ScriptedEndpoint::new(&clock).rotating("refresh-old");
    endpoint.script([Reply::TokenExpiringIn(u64::MAX)]);
    let manager = refreshing_manager(&endpoint, &clock)
        .token(expired_token())
        .build();
    manager.bearer().await.unwrap();
    clock.advance(Duration::from_secs(120));
    manager.bearer().await.unwrap();
    assert_eq!(endpoint.presented_refresh_tokens(), ["refresh-old"]);
}

#[test]
fn a_spawner_that_polls_inline_does_not_deadlock() {
    #[derive(Debug)]
    struct Inline;
    impl Spawn for Inline {
        fn spawn(&self, mut task: BoxFuture<'static, ()>) -> Result<(), BoxFuture<'static, ()>> {
            match task.as_mut().now_or_never() {
                Some(()) => Ok(()),
                None => Err(task),
            }
        }
    }
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let clock = start_clock();
        let manager = refreshing_manager(&ScriptedEndpoint::new(&clock), &clock)
            .token(expired_token())
            .spawner(Inline)
            .build();
        let bearer = manager.bearer().now_or_never();
        let _ = done.send(bearer.map(|bearer| bearer.is_ok()));
    });
    let outcome = finished.recv_timeout(Duration::from_secs(10));
    assert_eq!(outcome, Ok(Some(true)), "deadlocked or failed");
}

#[tokio::test]
async fn a_token_set_during_a_refresh_wins_in_memory_and_in_the_store() {
    let clock = start_clock();
    let (endpoint, gate) = ScriptedEndpoint::new(&clock).gated();
    let store = FaultyStore::with_token(expired_token());
    let manager = refreshing_manager(&endpoint, &clock)
        .store(store.clone())
        .token(expired_token())
        .build();
    let waiter = tokio::spawn({
        let manager = manager.clone();
        async move { manager.bearer().await }
    });
    for _ in 0..10_000 {
        if endpoint.sent() == 1 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(endpoint.sent(), 1, "the refresh never started");
    manager.set_token(token("user", START)).await.unwrap();
    gate.add_permits(1);
    let bearer = waiter.await.unwrap().unwrap();
    assert_eq!(bearer.header_value(), "Bearer access-user");
    let stored = store.memory().load().await.unwrap().unwrap();
    assert_eq!(stored.access_token().unwrap().secret(), "access-user");
    let current = manager.token().unwrap();
    assert_eq!(current.access_token().unwrap().secret(), "access-user");
}

#[tokio::test]
async fn a_successful_set_token_clears_the_last_store_error() {
    let clock = start_clock();
    let store = FaultyStore::default();
    let manager = refreshing_manager(&ScriptedEndpoint::new(&clock), &clock)
        .store(store.clone())
        .build();
    store.fail_next_saves(1);
    manager.set_token(token("a", START)).await.unwrap_err();
    assert!(manager.last_store_error().is_some());
    manager.set_token(token("a", START)).await.unwrap();
    assert!(manager.last_store_error().is_none());
}

#[tokio::test]
async fn a_store_that_panics_during_a_store_recheck_does_not_poison_the_manager() {
    let clock = start_clock();
    let endpoint = ScriptedEndpoint::new(&clock).rotating("refresh-someone-else");
    let store = FaultyStore::with_token(token("current", START));
    let manager = refreshing_manager(&endpoint, &clock)
        .store(store.clone())
        .token(token("current", START))
        .build();
    clock.advance(Duration::from_secs(3 * 3600));
    let err = manager.bearer().await.unwrap_err();
    assert!(
        matches!(err, Error::ReauthorizationRequired { .. }),
        "{err:?}"
    );
    store.panic_on_load(true);
    clock.advance(DEFAULT_STORE_RECHECK);
    let panicked = AssertUnwindSafe(manager.bearer()).catch_unwind().await;
    assert!(
        matches!(panicked, Ok(Err(Error::SourcePanicked))),
        "{panicked:?}"
    );
    // The store recovers and a peer saved a good pair: adopted.
    store.panic_on_load(false);
    let peer = token("peer", START + 3 * 3600);
    store.memory().save(&peer, None).await.unwrap();
    clock.advance(DEFAULT_STORE_RECHECK);
    let bearer = manager.bearer().await.unwrap();
    assert_eq!(bearer.header_value(), "Bearer access-peer");
}

// ---------------------------------------------------------------- issue 11

#[tokio::test]
async fn a_rotated_refresh_token_in_a_rejected_body_is_saved_and_presented_next() {
    for (bad, save_fails) in [
        (Reply::TokenOfType("mac"), false),
        (Reply::TokenExpiringIn(0), false),
        (Reply::TokenWithAccess("bad\nheader"), false),
        (Reply::TokenOfType("mac"), true),
    ] {
        let clock = start_clock();
        let endpoint = ScriptedEndpoint::new(&clock).rotating("refresh-old");
        endpoint.script([bad.clone()]);
        let store = FaultyStore::with_token(expired_token());
        if save_fails {
            store.fail_next_saves(1);
        }
        let manager = refreshing_manager(&endpoint, &clock)
            .token(expired_token())
            .store(store.clone())
            .build();
        let err = manager.bearer().await.unwrap_err();
        assert!(
            matches!(err, Error::InvalidResponse { .. }),
            "{bad:?}: {err:?}"
        );
        // The manager kept the rotated refresh token; the shared error does not carry it.
        assert!(err.rotated_refresh_token().is_none(), "{bad:?}");
        let stored = store.memory().load().await.unwrap().unwrap();
        let expected_stored = if save_fails {
            "refresh-old"
        } else {
            "refresh-secret-1"
        };
        assert_eq!(
            stored.refresh_token().unwrap().secret(),
            expected_stored,
            "{bad:?}"
        );
        let kept = manager.token().unwrap();
        assert_eq!(
            kept.refresh_token().unwrap().secret(),
            "refresh-secret-1",
            "{bad:?}"
        );
        // Kept as an expired token that is never sent.
        assert!(kept.access_token().is_none(), "{bad:?}");
        assert!(manager.fresh_bearer().is_none());
        // After the back-off, the next refresh presents the NEW refresh token.
        clock.advance(DEFAULT_BACKOFF_MAX);
        let bearer = manager.bearer().await.unwrap();
        assert_eq!(bearer.header_value(), "Bearer access-secret-2", "{bad:?}");
        assert_eq!(
            endpoint.presented_refresh_tokens(),
            ["refresh-old", "refresh-secret-1"],
            "{bad:?}"
        );
        let stored = store.memory().load().await.unwrap().unwrap();
        assert_eq!(stored.refresh_token().unwrap().secret(), "refresh-secret-2");
    }
}

#[tokio::test]
async fn a_rotated_refresh_token_salvaged_ahead_of_expiry_keeps_the_valid_access_token() {
    let clock = start_clock();
    let endpoint = ScriptedEndpoint::new(&clock).rotating("refresh-current");
    endpoint.script([Reply::TokenOfType("mac")]);
    let manager = refreshing_manager(&endpoint, &clock)
        .token(token("current", START))
        .build();
    // Inside the skew: the proactive refresh fails, the valid token is still used.
    clock.advance(Duration::from_secs(LIFETIME - 240));
    let bearer = manager.bearer().await.unwrap();
    assert_eq!(bearer.header_value(), "Bearer access-current");
    let kept = manager.token().unwrap();
    assert_eq!(kept.refresh_token().unwrap().secret(), "refresh-secret-1");
    clock.advance(DEFAULT_BACKOFF_MAX);
    let bearer = manager.bearer().await.unwrap();
    assert_eq!(bearer.header_value(), "Bearer access-secret-2");
    assert_eq!(
        endpoint.presented_refresh_tokens(),
        ["refresh-current", "refresh-secret-1"]
    );
}

#[tokio::test]
async fn a_manager_can_start_from_a_refresh_token_alone() {
    let clock = start_clock();
    let endpoint = ScriptedEndpoint::new(&clock).rotating("refresh-given");
    let manager = refreshing_manager(&endpoint, &clock)
        .token(Token::from_refresh_token(RefreshToken::new(
            "refresh-given",
        )))
        .build();
    assert!(manager.fresh_bearer().is_none());
    let bearer = manager.bearer().await.unwrap();
    assert_eq!(bearer.header_value(), "Bearer access-secret-1");
    assert_eq!(endpoint.presented_refresh_tokens(), ["refresh-given"]);
    // A refresh token set later is refreshed at once.
    let bearer = manager
        .set_token(Token::from_refresh_token(RefreshToken::new(
            "refresh-secret-1",
        )))
        .await
        .unwrap();
    assert_eq!(bearer.header_value(), "Bearer access-secret-2");
    assert_eq!(endpoint.calls(), 2);

    // A pair an earlier run saved to the store wins over a refresh token given at
    // start-up (which that run already used).
    let stored = token("stored", START - 10);
    let manager = refreshing_manager(&endpoint, &clock)
        .token(Token::from_refresh_token(RefreshToken::new(
            "refresh-given",
        )))
        .store(MemoryStore::with_token(stored))
        .build();
    assert_eq!(
        manager.bearer().await.unwrap().header_value(),
        "Bearer access-stored"
    );
    assert_eq!(endpoint.calls(), 2);
}

#[test]
fn server_text_is_escaped_and_scrubbed_in_errors_and_logs() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        // Colours would put escape characters of their own in the output.
        .with_ansi(false)
        .finish();
    let mut printed = Vec::new();
    tracing::subscriber::with_default(subscriber, || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let clock = start_clock();
            let endpoint = ScriptedEndpoint::new(&clock);
            endpoint.script([
                Reply::Status(
                    503,
                    r#"{"error":"slow\ndown access-old","error_description":"\u001b[31m refresh-old"}"#,
                ),
                Reply::Status(
                    400,
                    r#"{"error":"invalid_grant","error_description":"refresh-old access-old client-secret-value\nFORGED LOG LINE"}"#,
                ),
            ]);
            let manager = refreshing_manager(&endpoint, &clock)
                .token(expired_token())
                .build();
            for _ in 0..2 {
                let err = manager.bearer().await.unwrap_err();
                printed.push(format!("{err} | {err:?}"));
                clock.advance(DEFAULT_BACKOFF_MAX);
            }
        });
    });
    printed.push(String::from_utf8(captured.0.lock().unwrap().clone()).unwrap());
    let everything = printed.join("\n");
    assert!(everything.contains("FORGED LOG LINE"), "{everything}");
    for raw in [
        "refresh-old",
        "access-old",
        "client-secret-value",
        "\u{1b}",
        "\nFORGED",
        "slow\ndown",
    ] {
        assert!(
            !everything.contains(raw),
            "{raw:?} leaked in:\n{everything}"
        );
    }
}

#[tokio::test]
async fn revoke_revokes_the_pair_clears_the_cell_and_store_and_requires_reauthorization() {
    let clock = start_clock();
    let endpoint = ScriptedEndpoint::new(&clock).rotating("refresh-current");
    let store = FaultyStore::with_token(token("current", START));
    let manager = refreshing_manager(&endpoint, &clock)
        .token(token("current", START))
        .store(store.clone())
        .build();
    manager.bearer().await.unwrap();
    manager.revoke().await.unwrap();
    assert_eq!(endpoint.revoked(), ["refresh-current"]);
    assert!(store.memory().load().await.unwrap().is_none());
    assert!(manager.token().is_none());
    assert!(manager.fresh_bearer().is_none());
    for _ in 0..3 {
        let err = manager.bearer().await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::ReauthorizationRequired {
                    reason: ReauthorizationReason::Revoked,
                    ..
                }
            ),
            "{err:?}"
        );
        clock.advance(DEFAULT_STORE_RECHECK);
    }
    assert_eq!(endpoint.calls(), 0, "no token call after revoking");
    // A new authorization ends it.
    let bearer = manager.set_token(token("new", START)).await.unwrap();
    assert_eq!(bearer.header_value(), "Bearer access-new");
}

#[tokio::test]
async fn a_failed_revoke_changes_nothing_and_an_unsupported_one_is_typed() {
    let clock = start_clock();
    let endpoint = ScriptedEndpoint::new(&clock);
    endpoint.script([Reply::Status(503, "")]);
    let store = FaultyStore::with_token(token("current", START));
    let manager = refreshing_manager(&endpoint, &clock)
        .token(token("current", START))
        .store(store.clone())
        .build();
    let err = manager.revoke().await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert_eq!(
        manager.bearer().await.unwrap().header_value(),
        "Bearer access-current"
    );
    assert!(store.memory().load().await.unwrap().is_some());
    manager.revoke().await.unwrap();
    assert!(manager.bearer().await.is_err());

    #[derive(Debug)]
    struct CannotRevoke;
    impl TokenSource for CannotRevoke {
        fn fetch<'a>(
            &'a self,
            _: Option<&'a Token>,
            _: &'a dyn Clock,
        ) -> BoxFuture<'a, Result<Token, Error>> {
            Box::pin(async { Ok(token("minted", START)) })
        }
    }
    let manager = TokenManager::builder(CannotRevoke)
        .clock(clock.clone())
        .token(token("current", START))
        .build();
    assert!(matches!(
        manager.revoke().await,
        Err(Error::RevokeUnsupported)
    ));
    assert_eq!(
        manager.bearer().await.unwrap().header_value(),
        "Bearer access-current"
    );
}

#[tokio::test]
async fn revoke_waits_for_a_refresh_in_flight_and_revokes_its_result() {
    let clock = start_clock();
    let (endpoint, gate) = ScriptedEndpoint::new(&clock).gated();
    let endpoint = endpoint.rotating("refresh-old");
    let manager = refreshing_manager(&endpoint, &clock)
        .token(expired_token())
        .build();
    let refresh = tokio::spawn({
        let manager = manager.clone();
        async move { manager.bearer().await }
    });
    for _ in 0..1_000 {
        if endpoint.sent() == 1 {
            break;
        }
        tokio::task::yield_now().await;
    }
    let revoke = tokio::spawn({
        let manager = manager.clone();
        async move { manager.revoke().await }
    });
    tokio::task::yield_now().await;
    gate.add_permits(Semaphore::MAX_PERMITS);
    refresh.await.unwrap().unwrap();
    revoke.await.unwrap().unwrap();
    // The pair the refresh produced is the one revoked: nothing live is left behind.
    assert_eq!(endpoint.revoked(), ["refresh-secret-1"]);
    assert!(manager.token().is_none());
    assert!(manager.bearer().await.is_err());
}

#[tokio::test]
async fn a_token_set_during_a_revocation_is_neither_revoked_nor_erased() {
    let clock = start_clock();
    let endpoint = ScriptedEndpoint::new(&clock);
    let store = FaultyStore::with_token(token("current", START));
    let manager = refreshing_manager(&endpoint, &clock)
        .token(token("current", START))
        .store(store.clone())
        .build();
    // The revocation reads the store (for a peer's newer pair) while the user signs in
    // again.
    let paused = store.pause_loads().await;
    let loads = store.loads();
    let revoking = tokio::spawn({
        let manager = manager.clone();
        async move { manager.revoke().await }
    });
    for _ in 0..10_000 {
        if store.loads() > loads {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(store.loads() > loads, "the revocation never read the store");
    let signing_in = tokio::spawn({
        let manager = manager.clone();
        async move { manager.set_token(token("new", START)).await }
    });
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    drop(paused);
    revoking.await.unwrap().unwrap();
    signing_in.await.unwrap().unwrap();
    assert_eq!(endpoint.revoked(), ["refresh-current"]);
    let current = manager.token().unwrap();
    assert_eq!(current.refresh_token().unwrap().secret(), "refresh-new");
    let stored = store.memory().load().await.unwrap().unwrap();
    assert_eq!(stored.refresh_token().unwrap().secret(), "refresh-new");
    assert_eq!(
        manager.bearer().await.unwrap().header_value(),
        "Bearer access-new"
    );
}

// ------------------------------------------------ cross-process turns (store leases)

/// What [`LeasingStore::begin_refresh`] answers next.
#[derive(Debug)]
enum Turn {
    /// `Go` with a lease, after which a peer's pair appears in the store (it saved
    /// just before its lease ended), if given.
    Lease(Option<Token>),
    /// A peer saved this pair while we waited.
    PeerSaved(Token),
    PeerRefused,
    Unreachable,
}

/// A store shared with scripted peer processes: a [`MemoryStore`] whose
/// `begin_refresh` answers from a script (`Go` without a lease once it is empty), and
/// which records how each lease ended.
#[derive(Clone, Debug, Default)]
struct LeasingStore {
    memory: MemoryStore,
    turns: Arc<Mutex<VecDeque<Turn>>>,
    ended: Arc<Mutex<Vec<RefreshOutcome>>>,
}

#[derive(Debug)]
struct RecordedLease(Arc<Mutex<Vec<RefreshOutcome>>>);

impl RefreshLease for RecordedLease {
    fn end(self: Box<Self>, outcome: RefreshOutcome) -> BoxFuture<'static, ()> {
        self.0.lock().unwrap().push(outcome);
        Box::pin(async {})
    }
}

impl LeasingStore {
    fn with_token(token: Token, turns: impl IntoIterator<Item = Turn>) -> Self {
        Self {
            memory: MemoryStore::with_token(token),
            turns: Arc::new(Mutex::new(turns.into_iter().collect())),
            ended: Arc::default(),
        }
    }

    fn ended(&self) -> Vec<RefreshOutcome> {
        self.ended.lock().unwrap().clone()
    }
}

impl TokenStore for LeasingStore {
    fn load(&self) -> BoxFuture<'_, Result<Option<Token>, StoreError>> {
        self.memory.load()
    }

    fn save<'a>(
        &'a self,
        token: &'a Token,
        expected: Option<&'a Token>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.memory.save(token, expected)
    }

    fn begin_refresh<'a>(
        &'a self,
        _: Option<&'a Token>,
    ) -> BoxFuture<'a, Result<RefreshTurn, StoreError>> {
        let turn = self.turns.lock().unwrap().pop_front();
        let answer = match turn {
            None => Ok(RefreshTurn::Go(None)),
            Some(Turn::Lease(peer)) => {
                if let Some(peer) = peer {
                    now_or_never(self.memory.save(&peer, None)).unwrap();
                }
                Ok(RefreshTurn::Go(Some(Box::new(RecordedLease(Arc::clone(
                    &self.ended,
                ))))))
            }
            Some(Turn::PeerSaved(peer)) => {
                now_or_never(self.memory.save(&peer, None)).unwrap();
                Ok(RefreshTurn::PeerSaved)
            }
            Some(Turn::PeerRefused) => Ok(RefreshTurn::PeerRefused),
            Some(Turn::Unreachable) => {
                Err(std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into())
            }
        };
        Box::pin(async move { answer })
    }
}

#[tokio::test]
async fn a_pair_a_peer_saved_while_we_waited_is_adopted_even_from_the_same_second() {
    let clock = start_clock();
    let endpoint = ScriptedEndpoint::new(&clock);
    // The peer's pair is issued in the same second as ours: only the turn tells us
    // it replaced ours.
    let ours = token("ours", START - LIFETIME);
    let peer = token("peer", START - LIFETIME);
    let store = LeasingStore::with_token(ours.clone(), [Turn::PeerSaved(peer)]);
    let manager = refreshing_manager(&endpoint, &clock)
        .token(ours)
        .store(store.clone())
        .build();
    clock.advance(Duration::from_secs(1));
    // Expired (lifetime over): the peer's pair is expired too, so it is refreshed from.
    let bearer = manager.bearer().await.unwrap();
    assert_eq!(endpoint.presented_refresh_tokens(), ["refresh-peer"]);
    assert_ne!(bearer.header_value(), "Bearer access-ours");
}

#[tokio::test]
async fn a_fresh_pair_a_peer_saved_is_adopted_without_a_token_call() {
    let clock = start_clock();
    let endpoint = ScriptedEndpoint::new(&clock);
    let store = LeasingStore::with_token(expired_token(), [Turn::PeerSaved(token("peer", START))]);
    let manager = refreshing_manager(&endpoint, &clock)
        .store(store.clone())
        .build();
    let bearer = manager.bearer().await.unwrap();
    assert_eq!(bearer.header_value(), "Bearer access-peer");
    assert_eq!(endpoint.sent(), 0);
    assert_eq!(manager.metrics().store_adoptions, 1);
}

#[tokio::test]
async fn a_refresh_token_a_peer_was_refused_is_never_presented() {
    let clock = start_clock();
    let endpoint = ScriptedEndpoint::new(&clock);
    let store = LeasingStore::with_token(expired_token(), [Turn::PeerRefused]);
    let manager = refreshing_manager(&endpoint, &clock)
        .store(store.clone())
        .build();
    let error = manager.bearer().await.unwrap_err();
    assert!(
        matches!(
            &error,
            Error::ReauthorizationRequired {
                reason: ReauthorizationReason::InvalidGrant { .. },
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(endpoint.sent(), 0);
}

#[tokio::test]
async fn an_unreachable_store_fails_the_refresh_transiently_and_presents_nothing() {
    let clock = start_clock();
    let endpoint = ScriptedEndpoint::new(&clock);
    let store = LeasingStore::with_token(expired_token(), [Turn::Unreachable]);
    let manager = refreshing_manager(&endpoint, &clock)
        .store(store.clone())
        .backoff_jitter(Jitter::none())
        .build();
    let error = manager.bearer().await.unwrap_err();
    assert!(
        matches!(&error, Error::Store(StoreError::Io(_))),
        "{error:?}"
    );
    assert!(error.is_transient());
    assert_eq!(endpoint.sent(), 0);
    // Back online after the back-off: one refresh.
    clock.advance(DEFAULT_BACKOFF_MAX);
    manager.bearer().await.unwrap();
    assert_eq!(endpoint.calls(), 1);
}

#[tokio::test]
async fn an_unreachable_store_leaves_a_still_valid_token_in_use() {
    let clock = start_clock();
    let endpoint = ScriptedEndpoint::new(&clock);
    let due = token("due", START - LIFETIME + 60); // inside the skew, still valid
    let store = LeasingStore::with_token(due.clone(), [Turn::Unreachable]);
    let manager = refreshing_manager(&endpoint, &clock)
        .token(due)
        .store(store.clone())
        .build();
    for _ in 0..3 {
        let bearer = manager.bearer().await.unwrap();
        assert_eq!(bearer.header_value(), "Bearer access-due");
        tokio::task::yield_now().await;
    }
    assert_eq!(endpoint.sent(), 0);
}

#[tokio::test]
async fn a_lease_ends_with_the_outcome_peers_need() {
    let clock = start_clock();
    let endpoint = ScriptedEndpoint::new(&clock).rotating("refresh-old");
    let store = LeasingStore::with_token(expired_token(), [Turn::Lease(None)]);
    let manager = refreshing_manager(&endpoint, &clock)
        .store(store.clone())
        .build();
    manager.bearer().await.unwrap();
    assert_eq!(store.ended(), [RefreshOutcome::Saved]);

    // Refused: the next lease ends so, and peers will not present the token.
    let clock = start_clock();
    let endpoint = ScriptedEndpoint::new(&clock);
    endpoint.script([Reply::Status(400, r#"{"error":"invalid_grant"}"#)]);
    let store = LeasingStore::with_token(expired_token(), [Turn::Lease(None)]);
    let manager = refreshing_manager(&endpoint, &clock)
        .store(store.clone())
        .build();
    manager.bearer().await.unwrap_err();
    assert_eq!(store.ended(), [RefreshOutcome::Refused]);
}

#[tokio::test]
async fn a_new_lease_holder_adopts_what_the_previous_holder_saved_last() {
    let clock = start_clock();
    let endpoint = ScriptedEndpoint::new(&clock);
    let peer = token("peer", START);
    let store = LeasingStore::with_token(expired_token(), [Turn::Lease(Some(peer))]);
    let manager = refreshing_manager(&endpoint, &clock)
        .store(store.clone())
        .build();
    let bearer = manager.bearer().await.unwrap();
    assert_eq!(bearer.header_value(), "Bearer access-peer");
    assert_eq!(
        endpoint.sent(),
        0,
        "the lease holder re-read the store first"
    );
    assert_eq!(store.ended(), [RefreshOutcome::Unchanged]);
}

// ------------------------------------------------------------------ rate limits

/// One request to the API through the protocol, answered 200 with `budget`
/// (`remaining`, reset at `START + reset_in` seconds) in the rate-limit headers.
async fn request_reporting(manager: &TokenManager, remaining: u64, reset_in: u64) {
    let uri: http::Uri = "http://127.0.0.1:9/rest/v1.0/me".parse().unwrap();
    let authorized = match manager.authorize(&uri, &http::HeaderMap::new()) {
        Authorize::Ready(authorized) => authorized,
        Authorize::Pending(waiting) => waiting.await.unwrap(),
        Authorize::Skip => panic!("the API gets the token"),
    };
    let attached = authorized.attach(&mut http::HeaderMap::new());
    let mut response = http::HeaderMap::new();
    for (name, value) in [
        (crate::X_RATE_LIMIT_LIMIT, 50),
        (crate::X_RATE_LIMIT_REMAINING, remaining),
        (crate::X_RATE_LIMIT_RESET, START + reset_in),
    ] {
        response.insert(name, value.into());
    }
    assert!(attached.judge(http::StatusCode::OK, &response).is_none());
}

fn rate_limited_manager(clock: &ManualClock, policy: crate::RateLimitPolicy) -> TokenManager {
    refreshing_manager(&ScriptedEndpoint::new(clock), clock)
        .token(token("t", START))
        .rate_limit(policy)
        .build()
}

fn authorize_api(manager: &TokenManager) -> Authorize {
    let uri: http::Uri = "http://127.0.0.1:9/rest/v1.0/me".parse().unwrap();
    manager.authorize(&uri, &http::HeaderMap::new())
}

#[tokio::test]
async fn every_response_updates_the_rate_limit_snapshot() {
    let clock = start_clock();
    let manager = rate_limited_manager(&clock, crate::RateLimitPolicy::Observe);
    assert_eq!(manager.rate_limit(), None);
    request_reporting(&manager, 7, 10).await;
    let budget = manager.rate_limit().unwrap();
    assert_eq!((budget.limit, budget.remaining), (50, 7));
    assert_eq!(
        budget.reset_at,
        UNIX_EPOCH + Duration::from_secs(START + 10)
    );
    // Observe never holds a request back, even with nothing left.
    request_reporting(&manager, 0, 10).await;
    assert!(matches!(authorize_api(&manager), Authorize::Ready(_)));
}

#[tokio::test]
async fn fail_fast_refuses_a_request_once_the_budget_is_spent() {
    let clock = start_clock();
    let manager = rate_limited_manager(&clock, crate::RateLimitPolicy::FailFast);
    request_reporting(&manager, 1, 10).await;
    assert!(
        matches!(authorize_api(&manager), Authorize::Ready(_)),
        "the last one"
    );
    let Authorize::Pending(refused) = authorize_api(&manager) else {
        panic!("spent: refused");
    };
    let error = refused.await.unwrap_err();
    assert!(
        matches!(error, Error::RateLimited { reset_at } if reset_at == UNIX_EPOCH + Duration::from_secs(START + 10)),
        "{error:?}"
    );
    assert!(error.is_transient());
    // After the reset, one request goes to learn the new window.
    clock.advance(Duration::from_secs(10));
    assert!(matches!(authorize_api(&manager), Authorize::Ready(_)));
}

#[tokio::test(start_paused = true)]
async fn wait_holds_requests_until_the_reset_then_lets_them_go() {
    let clock = start_clock();
    let policy = crate::RateLimitPolicy::Wait {
        max_wait: Duration::from_secs(60),
    };
    let manager = rate_limited_manager(&clock, policy);
    request_reporting(&manager, 0, 10).await;
    let Authorize::Pending(mut waiting) = authorize_api(&manager) else {
        panic!("spent: the request waits");
    };
    assert!((&mut waiting).now_or_never().is_none());
    tokio::time::advance(Duration::from_secs(9)).await;
    assert!(
        (&mut waiting).now_or_never().is_none(),
        "not before the reset"
    );
    clock.advance(Duration::from_secs(10));
    tokio::time::advance(Duration::from_secs(1)).await;
    let authorized = waiting.await.unwrap();
    assert_eq!(authorized.bearer().header_value(), "Bearer access-t");

    // Its response reports the next window: spent, with a reset further away than
    // the longest wait. The next request fails at once.
    let attached = authorized.attach(&mut http::HeaderMap::new());
    let mut response = http::HeaderMap::new();
    response.insert(crate::X_RATE_LIMIT_REMAINING, 0.into());
    response.insert(crate::X_RATE_LIMIT_RESET, (START + 10 + 3600).into());
    attached.judge(http::StatusCode::OK, &response);
    let Authorize::Pending(refused) = authorize_api(&manager) else {
        panic!("spent for an hour");
    };
    assert!(matches!(refused.await, Err(Error::RateLimited { .. })));
}

#[tokio::test]
async fn a_new_token_starts_with_a_budget_of_its_own() {
    let clock = start_clock();
    let manager = rate_limited_manager(&clock, crate::RateLimitPolicy::FailFast);
    request_reporting(&manager, 0, 10).await;
    assert!(matches!(authorize_api(&manager), Authorize::Pending(_)));
    manager.set_token(token("next", START)).await.unwrap();
    assert_eq!(manager.rate_limit(), None);
    assert!(matches!(authorize_api(&manager), Authorize::Ready(_)));
}

#[test]
fn malformed_rate_limit_headers_are_counted() {
    let clock = start_clock();
    let manager = rate_limited_manager(&clock, crate::RateLimitPolicy::Observe);
    let Authorize::Ready(authorized) = authorize_api(&manager) else {
        panic!("fresh");
    };
    let attached = authorized.attach(&mut http::HeaderMap::new());
    let mut response = http::HeaderMap::new();
    response.insert(crate::X_RATE_LIMIT_REMAINING, "-3".parse().unwrap());
    response.insert(crate::X_RATE_LIMIT_RESET, "soon".parse().unwrap());
    attached.judge(http::StatusCode::OK, &response);
    assert_eq!(manager.metrics().rate_limit_headers_ignored, 1);
    assert_eq!(manager.rate_limit(), None);
}
