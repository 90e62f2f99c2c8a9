//! Callers dropped mid-refresh: a refresh that may have reached the server runs to the
//! end, whoever was waiting for it.

use std::time::Duration;

use http::StatusCode;
use procore_auth_conformance::{
    adapter_token_transport, authorized_manager, me, oauth, scenario, wait_until, Client,
    BACKOFF_BASE, BACKOFF_MAX,
};
use procore_auth_core::{
    AccessToken, Clock, MemoryStore, RefreshToken, RefreshTokenGrant, SystemClock, Token,
    TokenManager, TokenStore,
};
use procore_auth_testkit::{Emulator, Route};

/// How long the token endpoint takes to answer: ample time to drop the caller after
/// the server has rotated the pair and before the answer arrives.
const TOKEN_LATENCY: Duration = Duration::from_secs(1);

scenario! {
    /// The server rotates the pair as soon as the refresh arrives, so the old refresh
    /// token is gone: the refresh must still be received, saved and published after
    /// its only caller is dropped, and the next request uses it without a token call.
    #[tokio::test]
    async fn a_refresh_outlives_its_dropped_caller(adapter) {
        let emulator = Emulator::builder()
            .latency(Route::Token, TOKEN_LATENCY)
            .start()
            .await;
        let manager = authorized_manager(&emulator, |builder| builder).await;
        let client = Client::new(adapter, &manager);
        let me = me(&emulator);
        assert_eq!(manager.metrics().refreshes, 0);

        emulator.expire_all_tokens();
        let caller = tokio::spawn({
            let (client, me) = (client.clone(), me.clone());
            async move { client.get(&me).await }
        });
        wait_until("the refresh reaches the server", || {
            emulator.stats().refresh_token_grants == 1
        })
        .await;
        caller.abort();
        let dropped = caller.await.unwrap_err();
        assert!(dropped.is_cancelled(), "dropped while refreshing: {dropped:?}");

        wait_until("the refresh is published", || manager.metrics().refreshes == 1).await;
        assert_eq!(client.get(&me).await.unwrap(), StatusCode::OK);
        let stats = emulator.stats();
        assert_eq!(stats.refresh_token_grants, 1, "{stats:?}");
        assert_eq!(stats.failed_token_calls, 0, "{stats:?}");
    }
}

/// The reported case: the token endpoint rotates at once and answers 1.5 s later…
const LATE_ANSWER: Duration = Duration::from_millis(1500);

/// …token calls give up after 3 s, so the late answer is in time for them…
const REAL_TOKEN_CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// …but the only caller gives up after 0.5 s, while the answer is still on its way…
const CALLER_TIMEOUT: Duration = Duration::from_millis(500);

/// …and nobody asks for a token again until after the token call's own timeout: a
/// refresh left to its (dropped) caller would have lost its answer by then.
const QUIET: Duration = Duration::from_secs(4);

scenario! {
    /// Issue 10, as reported: a store holds an expired pair, so the first request
    /// refreshes; the server rotates the pair at once and answers 1.5 s later, over the
    /// adapter's own transport (3 s timeout), but the request's caller gave up after
    /// 0.5 s. The refresh still completes on its own: with no request in between, the
    /// store holds the rotated pair (the one the server issued, not the burned one),
    /// and the next request is a 200 without another token call or an
    /// `invalid_grant`.
    ///
    /// Sleeps for real: the point is the token call's real timeout.
    #[tokio::test]
    async fn a_refresh_whose_caller_timed_out_still_saves_the_rotated_pair(adapter) {
        let emulator = Emulator::builder()
            .latency(Route::Token, LATE_ANSWER)
            .start()
            .await;
        let issued = emulator.issue_token();
        let original_refresh = issued.refresh_token.clone().expect("a refresh token");
        // Stored two hours ago, expired one hour ago (and dead on the server too).
        let now = SystemClock.now();
        let expired = Token::new(
            AccessToken::new(issued.access_token),
            Some(RefreshToken::new(&original_refresh)),
            now - Duration::from_secs(7200),
            Some(now - Duration::from_secs(3600)),
        )
        .unwrap();
        emulator.expire_all_tokens();
        let store = MemoryStore::with_token(expired);
        let grant = RefreshTokenGrant::new(
            oauth(&emulator),
            adapter_token_transport(adapter, REAL_TOKEN_CALL_TIMEOUT),
        );
        let manager = TokenManager::builder(grant)
            .store(store.clone())
            .backoff(BACKOFF_BASE, BACKOFF_MAX)
            .build();
        let client = Client::new(adapter, &manager);
        let me = me(&emulator);

        let gave_up = tokio::time::timeout(CALLER_TIMEOUT, client.get(&me)).await;
        gave_up.expect_err("the caller gives up before the token endpoint answers");
        wait_until("the server has rotated the pair", || {
            emulator.stats().refresh_token_grants == 1
        })
        .await;
        tokio::time::sleep(QUIET).await;

        // Nobody has asked for a token since the caller gave up.
        let stats = emulator.stats();
        assert_eq!(stats.refresh_token_grants, 1, "{stats:?}");
        assert_eq!(
            stats.consumed_refresh_tokens,
            std::slice::from_ref(&original_refresh),
            "{stats:?}"
        );
        assert_eq!(stats.failed_token_calls, 0, "{stats:?}");
        assert_eq!(manager.metrics().refreshes, 1, "{:?}", manager.metrics());
        let saved = store.load().await.unwrap().expect("a stored token");
        let saved_refresh = saved.refresh_token().expect("a refresh token").secret().to_owned();
        assert_ne!(saved_refresh, original_refresh, "the store still holds the burned pair");
        assert!(!saved.is_expired_at(SystemClock.now()));
        assert!(saved.same_credentials(&manager.token().unwrap()));

        assert_eq!(client.get(&me).await.unwrap(), StatusCode::OK);
        let stats = emulator.stats();
        assert_eq!(stats.refresh_token_grants, 1, "{stats:?}");
        assert_eq!(stats.failed_token_calls, 0, "no invalid_grant: {stats:?}");
        assert_eq!(stats.unauthorized_served, 0, "{stats:?}");

        // The stored refresh token is the one the server issued last: the next refresh
        // presents it, and the server takes it.
        emulator.expire_all_tokens();
        assert_eq!(client.get(&me).await.unwrap(), StatusCode::OK);
        let stats = emulator.stats();
        assert_eq!(stats.refresh_token_grants, 2, "{stats:?}");
        assert_eq!(
            stats.consumed_refresh_tokens,
            [original_refresh, saved_refresh],
            "{stats:?}"
        );
        assert_eq!(stats.failed_token_calls, 0, "{stats:?}");
    }
}
