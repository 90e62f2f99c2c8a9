//! procore-auth-core's sans-IO OAuth client, through a small test `Transport`,
//! against the emulator: authorization code → exchange → token info → refresh →
//! revoke. (The adapters' own transports are tested in their crates.)

use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use procore_auth_core::{
    BoxFuture, ClientSecret, Environment, Error, OAuthClient, RefreshTokenGrant, TokenManager,
    Transport, TransportError,
};
use procore_auth_testkit::Emulator;

/// Sends with reqwest; does not follow redirects.
#[derive(Clone, Debug)]
struct TestTransport(reqwest::Client);

impl Transport for TestTransport {
    fn send(
        &self,
        request: http::Request<Bytes>,
    ) -> BoxFuture<'_, Result<http::Response<Bytes>, TransportError>> {
        Box::pin(async move {
            let request = reqwest::Request::try_from(request).map_err(TransportError::connect)?;
            let response = self
                .0
                .execute(request)
                .await
                .map_err(TransportError::other)?;
            let mut converted = http::Response::builder().status(response.status());
            for (name, value) in response.headers() {
                converted = converted.header(name, value);
            }
            let body = response.bytes().await.map_err(TransportError::other)?;
            Ok(converted.body(body).expect("parts from a valid response"))
        })
    }
}

#[tokio::test]
async fn code_exchange_then_refresh_then_revoke() {
    let emulator = Emulator::start().await;
    let oauth = OAuthClient::new(
        Environment::custom(&emulator.base_url()).unwrap(),
        emulator.client_id(),
        ClientSecret::new(emulator.client_secret()),
    );
    let transport = TestTransport(super::client());

    // The browser step: the emulator approves at once and redirects back.
    let attempt = oauth.authorization_request("http://localhost");
    let redirect = transport.0.get(attempt.url()).send().await.unwrap();
    assert_eq!(redirect.status(), 302);
    let location = redirect.headers()["location"].to_str().unwrap();
    let code = attempt.verify_redirect(location).unwrap();
    let token = oauth
        .exchange_code(&transport, &code, attempt.redirect_uri())
        .await
        .unwrap();
    let first_refresh_token = token.refresh_token().unwrap().secret().to_owned();
    let info = oauth.token_info(&transport, &token).await.unwrap();
    assert_eq!(
        info.application.unwrap().uid.as_deref(),
        Some(emulator.client_id())
    );
    assert!(info.resource_owner_id.is_some());

    // Refresh through the manager (as after a 401): the refresh token rotates.
    let manager = TokenManager::builder(RefreshTokenGrant::new(oauth.clone(), transport.clone()))
        .token(token)
        .build();
    let first = manager.bearer().await.unwrap();
    let refreshed_bearer = manager.rejected(first.generation()).await.unwrap().unwrap();
    let refreshed = manager.token().unwrap();
    assert_ne!(
        refreshed.refresh_token().unwrap().secret(),
        first_refresh_token
    );
    assert_eq!(
        emulator.stats().consumed_refresh_tokens,
        [first_refresh_token]
    );
    oauth.token_info(&transport, &refreshed).await.unwrap();

    // Revoke: the access token and its refresh token both die.
    oauth
        .revoke(&transport, refreshed.access_token().unwrap())
        .await
        .unwrap();
    assert!(matches!(
        oauth.token_info(&transport, &refreshed).await,
        Err(Error::TokenEndpoint { status, .. }) if status == 401
    ));
    let error = manager
        .rejected(refreshed_bearer.generation())
        .await
        .unwrap_err();
    assert!(
        matches!(error, Error::ReauthorizationRequired { .. }),
        "{error:?}"
    );
    let stats = emulator.stats();
    assert_eq!(stats.revocations, 1);
    assert_eq!(stats.authorization_code_grants, 1);
    assert_eq!(stats.refresh_token_grants, 2);
}

#[tokio::test]
async fn without_created_at_the_core_parser_falls_back_to_the_send_time() {
    for floor in [false, true] {
        let emulator = Emulator::builder().floor_issue_times(floor).start().await;
        let oauth = OAuthClient::new(
            Environment::custom(&emulator.base_url()).unwrap(),
            emulator.client_id(),
            ClientSecret::new(emulator.client_secret()),
        );
        let transport = TestTransport(super::client());
        // A send time half-way through the emulator's current second (tests read no clock).
        let second = u64::try_from(emulator.issue_token().created_at).unwrap();
        let sent_at = UNIX_EPOCH + Duration::from_secs(second) + Duration::from_millis(500);
        let response = transport
            .send(oauth.client_credentials_request())
            .await
            .unwrap();
        let token = oauth.parse_token_response(&response, sent_at).unwrap();
        let issued_at = token.issued_at().duration_since(UNIX_EPOCH).unwrap();
        if floor {
            // No `created_at`: the client's own clock, and the expiry the server does not keep.
            assert_eq!(token.issued_at(), sent_at);
        } else {
            // `created_at`: whole seconds, the server's floored issue time.
            assert_eq!(issued_at.subsec_nanos(), 0, "{issued_at:?}");
            assert!((second..=second + 5).contains(&issued_at.as_secs()));
        }
        assert_eq!(
            token.expires_at(),
            Some(token.issued_at() + Duration::from_secs(5400)),
            "floor_issue_times({floor})"
        );
    }
}
