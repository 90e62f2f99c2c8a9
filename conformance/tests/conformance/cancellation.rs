//! Callers dropped mid-refresh: a refresh that may have reached the server runs to the
//! end, whoever was waiting for it.

use std::time::Duration;

use http::StatusCode;
use procore_auth_conformance::{authorized_manager, me, scenario, wait_until, Client};
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
