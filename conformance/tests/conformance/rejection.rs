//! What a 401 or 403 costs: one refresh at most, one replay at most, and a typed error
//! when the refresh token itself is rejected.

use bytes::Bytes;
use http::{Request, StatusCode};
use procore_auth_conformance::{authorized_manager, me, post_streaming, scenario, Client};
use procore_auth_core::{Error as AuthError, PROCORE_COMPANY_ID};
use procore_auth_testkit::{ApiFault, Emulator, TokenFault};

scenario! {
    /// A thousand requests meet the same rejected token: one refresh between them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn thousand_concurrent_requests_after_a_forced_expiry_cause_one_refresh(adapter) {
        let emulator = Emulator::start().await;
        let manager = authorized_manager(&emulator, |builder| builder).await;
        let client = Client::new(adapter, &manager);
        emulator.expire_all_tokens();
        let me = me(&emulator);
        let requests: Vec<_> = (0..1000)
            .map(|_| {
                let (client, me) = (client.clone(), me.clone());
                tokio::spawn(async move { client.get(&me).await })
            })
            .collect();
        for request in requests {
            assert_eq!(request.await.unwrap().unwrap(), StatusCode::OK);
        }
        let stats = emulator.stats();
        assert_eq!(stats.refresh_token_grants, 1, "{stats:?}");
        assert_eq!(stats.token_calls, 2, "one code exchange, one refresh: {stats:?}");
    }
}

scenario! {
    /// A streamed body cannot be replayed: its 401 comes back, but the token is
    /// refreshed anyway, so the next request goes through.
    #[tokio::test]
    async fn a_streaming_body_gets_its_401_back_and_the_next_request_succeeds(adapter) {
        let emulator = Emulator::start().await;
        let manager = authorized_manager(&emulator, |builder| builder).await;
        let client = Client::new(adapter, &manager);
        let echo = format!("{}/rest/v1.0/echo", emulator.base_url());
        let chunks = ["hello ", "procore"];

        emulator.expire_all_tokens();
        let reply = client.send_streaming(post_streaming(&echo, &chunks)).await.unwrap();
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert_eq!(emulator.stats().refresh_token_grants, 1);

        let reply = client.send_streaming(post_streaming(&echo, &chunks)).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.text(), "hello procore");
        let stats = emulator.stats();
        assert_eq!(stats.refresh_token_grants, 1, "{stats:?}");
        assert_eq!(stats.api_calls, 2, "no replay: {stats:?}");
    }
}

scenario! {
    /// A 403 is about the company, not the token: no refresh, no replay.
    #[tokio::test]
    async fn a_403_causes_no_refresh(adapter) {
        let forbidden_company = 5_000_000_001_u64;
        let emulator = Emulator::builder()
            .forbidden_company(forbidden_company)
            .start()
            .await;
        let manager = authorized_manager(&emulator, |builder| builder).await;
        let client = Client::new(adapter, &manager);
        let forbidden = Request::get(me(&emulator))
            .header(PROCORE_COMPANY_ID, forbidden_company)
            .body(Bytes::new())
            .unwrap();
        let reply = client.send(forbidden).await.unwrap();
        assert_eq!(reply.status, StatusCode::FORBIDDEN);
        let stats = emulator.stats();
        assert_eq!(stats.refresh_token_grants, 0, "{stats:?}");
        assert_eq!(stats.forbidden_served, 1, "{stats:?}");
        assert_eq!(stats.api_calls, 1, "{stats:?}");
    }
}

scenario! {
    /// The replay's own 401 goes back to the caller: one refresh, one replay, no loop.
    #[tokio::test]
    async fn a_second_401_is_returned_as_is(adapter) {
        let emulator = Emulator::start().await;
        let manager = authorized_manager(&emulator, |builder| builder).await;
        let client = Client::new(adapter, &manager);
        emulator.push_api_fault(ApiFault::Unauthorized);
        emulator.push_api_fault(ApiFault::Unauthorized);
        assert_eq!(client.get(&me(&emulator)).await.unwrap(), StatusCode::UNAUTHORIZED);
        let stats = emulator.stats();
        assert_eq!(stats.refresh_token_grants, 1, "{stats:?}");
        assert_eq!(stats.api_calls, 2, "the request and its one replay: {stats:?}");
    }
}

scenario! {
    /// `invalid_grant` is terminal: a typed `ReauthorizationRequired` (through each
    /// adapter's error type), and no further token calls until a new token is set.
    #[tokio::test]
    async fn invalid_grant_surfaces_as_reauthorization_required(adapter) {
        let emulator = Emulator::start().await;
        let manager = authorized_manager(&emulator, |builder| builder).await;
        let client = Client::new(adapter, &manager);
        emulator.expire_all_tokens();
        emulator.push_token_fault(TokenFault::InvalidGrant);
        let me = me(&emulator);
        for _ in 0..2 {
            let error = client.get(&me).await.unwrap_err();
            assert!(
                matches!(error, AuthError::ReauthorizationRequired { .. }),
                "{error:?}"
            );
        }
        let stats = emulator.stats();
        assert_eq!(stats.refresh_token_grants, 1, "{stats:?}");
        assert_eq!(stats.token_calls, 2, "one code exchange, one refresh: {stats:?}");
    }
}
