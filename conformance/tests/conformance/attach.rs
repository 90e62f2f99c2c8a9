//! Which requests get the token, with which headers, and the replay after a 401.

use bytes::Bytes;
use http::header::AUTHORIZATION;
use http::{Request, StatusCode};
use procore_auth_conformance::{authorized_manager, get, me, post, scenario, Client};
use procore_auth_core::{Environment, RequestPolicy, PROCORE_COMPANY_ID};
use procore_auth_testkit::Emulator;

scenario! {
    /// A token that Procore dropped early: one 401, one refresh, one replay with the
    /// new token; the caller sees only the 200.
    #[tokio::test]
    async fn attaches_the_token_and_replays_once_after_a_forced_expiry(adapter) {
        let emulator = Emulator::start().await;
        let manager = authorized_manager(&emulator, |builder| builder).await;
        let client = Client::new(adapter, &manager);
        let me = me(&emulator);

        let reply = client.send(get(&me)).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK);
        assert!(reply.text().contains("\"authorization_received\":true"));
        assert_eq!(emulator.stats().refresh_token_grants, 0);

        emulator.expire_all_tokens();
        assert_eq!(client.get(&me).await.unwrap(), StatusCode::OK);
        let stats = emulator.stats();
        assert_eq!(stats.refresh_token_grants, 1, "{stats:?}");
        assert_eq!(stats.unauthorized_served, 1, "{stats:?}");
        assert_eq!(manager.metrics().rejections, 1);
        // The rejected request went with the old token, its replay with the new one.
        let sent = client.sent_authorizations();
        assert_eq!(sent.len(), 3, "{sent:?}");
        assert_eq!(sent[1], sent[0]);
        assert_ne!(sent[2], sent[1]);
    }
}

scenario! {
    /// A buffered body goes out again, whole, with the replay.
    #[tokio::test]
    async fn a_buffered_post_is_replayed_with_its_body(adapter) {
        let emulator = Emulator::start().await;
        let manager = authorized_manager(&emulator, |builder| builder).await;
        let client = Client::new(adapter, &manager);
        let echo = format!("{}/rest/v1.0/echo", emulator.base_url());

        emulator.expire_all_tokens();
        let reply = client.send(post(&echo, "hello procore")).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.text(), "hello procore");
        let stats = emulator.stats();
        assert_eq!(stats.refresh_token_grants, 1, "{stats:?}");
        assert_eq!(stats.unauthorized_served, 1, "{stats:?}");
        assert_eq!(stats.api_calls, 2, "the request and its one replay: {stats:?}");
    }
}

scenario! {
    /// Same server, other host name: not the configured API origin, so no token, and
    /// its 401 is not ours to act on.
    #[tokio::test]
    async fn other_hosts_get_no_token(adapter) {
        let emulator = Emulator::start().await;
        let manager = authorized_manager(&emulator, |builder| builder).await;
        let client = Client::new(adapter, &manager);
        let elsewhere = format!("{}/rest/v1.0/me", emulator.alternate_host_url());

        let reply = client.send(get(&elsewhere)).await.unwrap();
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert!(reply.text().contains("\"authorization_received\":false"));
        assert_eq!(client.sent_authorizations(), [None]);
        let stats = emulator.stats();
        assert_eq!(stats.refresh_token_grants, 0, "{stats:?}");
        assert_eq!(stats.api_calls, 1, "{stats:?}");
    }
}

scenario! {
    /// The policy's default `Procore-Company-Id` goes on requests without one; a
    /// caller's own is kept (the emulator echoes the header it received).
    #[tokio::test]
    async fn default_company_id_is_sent_and_a_callers_own_is_kept(adapter) {
        let emulator = Emulator::start().await;
        let env = Environment::custom(&emulator.base_url()).unwrap();
        let manager = authorized_manager(&emulator, |builder| {
            builder.request_policy(RequestPolicy::new(&env).with_company_id(4_294_967_297))
        })
        .await;
        let client = Client::new(adapter, &manager);
        let me = me(&emulator);

        let reply = client.send(get(&me)).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.headers[PROCORE_COMPANY_ID], "4294967297");

        let own = Request::get(&me)
            .header(PROCORE_COMPANY_ID, 12_u64)
            .body(Bytes::new())
            .unwrap();
        let reply = client.send(own).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.headers[PROCORE_COMPANY_ID], "12");
    }
}

scenario! {
    /// The attached `Authorization` is `Bearer …` and marked sensitive (so it is never
    /// logged); a caller's own `Authorization` goes out untouched, and the 401 it earns
    /// is returned without a refresh.
    #[tokio::test]
    async fn the_attached_header_is_sensitive_and_a_callers_authorization_is_kept(adapter) {
        let emulator = Emulator::start().await;
        let manager = authorized_manager(&emulator, |builder| builder).await;
        let client = Client::new(adapter, &manager);
        let me = me(&emulator);

        assert_eq!(client.get(&me).await.unwrap(), StatusCode::OK);
        let own = Request::get(&me)
            .header(AUTHORIZATION, "Bearer callers-own")
            .body(Bytes::new())
            .unwrap();
        let reply = client.send(own).await.unwrap();
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);

        let sent = client.sent_authorizations();
        assert_eq!(sent.len(), 2, "{sent:?}");
        let ours = sent[0].as_ref().unwrap();
        assert!(ours.to_str().unwrap().starts_with("Bearer "));
        assert!(ours.is_sensitive());
        assert_eq!(sent[1].as_ref().unwrap(), "Bearer callers-own");
        let stats = emulator.stats();
        assert_eq!(stats.refresh_token_grants, 0, "{stats:?}");
        assert_eq!(manager.metrics().rejections, 0);
    }
}
