//! Secret hygiene across a whole run: authorization code → refresh → failed refresh
//! → revoke → `invalid_grant`, through the middleware against the emulator, with
//! everything the library prints collected: tracing at every level, every error's
//! `Display`/`Debug` and source chain, every public type's `Debug`.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use procore_auth_core::{AuthorizationCode, RefreshTokenGrant, TokenManager};
use procore_auth_reqwest::{auth_error, ProcoreAuthMiddleware, ReqwestTransport};
use procore_auth_testkit::{Emulator, TokenFault};

use super::{client, oauth};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut printed = format!("{error} | {error:?} | {error:#?}");
    let mut source = error.source();
    while let Some(cause) = source {
        printed.push_str(&format!(" | {cause} | {cause:?}"));
        source = cause.source();
    }
    printed
}

#[tokio::test]
async fn no_token_or_client_secret_is_ever_printed() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    // The test runtime is single-threaded, so this thread sees every event.
    let _guard = tracing::subscriber::set_default(subscriber);

    let emulator = Emulator::start().await;
    let oauth = oauth(&emulator);
    let transport = ReqwestTransport::new().unwrap();
    let mut printed = vec![format!("{oauth:?}"), format!("{transport:?}")];
    let mut secrets = BTreeSet::from([emulator.client_secret().to_owned()]);

    let attempt = oauth.authorization_request("http://localhost");
    printed.push(format!("{attempt:?}"));
    let code = AuthorizationCode::new(emulator.authorize_code("http://localhost"));
    let token = oauth
        .exchange_code(&transport, &code, "http://localhost")
        .await
        .unwrap();
    let manager = TokenManager::builder(RefreshTokenGrant::new(oauth.clone(), transport.clone()))
        .token(token)
        .backoff(Duration::from_millis(10), Duration::from_millis(20))
        .build();
    let middleware = ProcoreAuthMiddleware::new(manager.clone());
    printed.push(format!("{middleware:?}"));
    let client = client(middleware);
    let me = format!("{}/rest/v1.0/me", emulator.base_url());
    let mut remember = |manager: &TokenManager, printed: &mut Vec<String>| {
        if let Some(token) = manager.token() {
            if let Some(access) = token.access_token() {
                secrets.insert(access.secret().to_owned());
            }
            if let Some(refresh) = token.refresh_token() {
                secrets.insert(refresh.secret().to_owned());
            }
            printed.push(format!("{token:?} {token:#?} {manager:?}"));
        }
    };
    remember(&manager, &mut printed);

    // Refresh after a forced expiry.
    client.get(&me).send().await.unwrap();
    emulator.expire_all_tokens();
    client.get(&me).send().await.unwrap();
    remember(&manager, &mut printed);
    printed.push(format!("{:?}", manager.bearer().await));

    // A failed refresh, then recovery.
    emulator.push_token_fault(TokenFault::Status(503));
    emulator.expire_all_tokens();
    let error = client.get(&me).send().await.unwrap_err();
    printed.push(describe(&error));
    tokio::time::sleep(Duration::from_millis(30)).await;
    client.get(&me).send().await.unwrap();
    remember(&manager, &mut printed);

    // Revoke; the next 401 makes the refresh fail with invalid_grant.
    let current = manager.token().unwrap();
    oauth
        .revoke(&transport, current.access_token().expect("an access token"))
        .await
        .unwrap();
    let error = client.get(&me).send().await.unwrap_err();
    assert!(matches!(
        auth_error(&error),
        Some(procore_auth_core::Error::ReauthorizationRequired { .. })
    ));
    printed.push(describe(&error));
    printed.push(describe(auth_error(&error).unwrap()));
    printed.push(format!("{:?}", manager.bearer().await));
    printed.push(format!("{:?}", manager.metrics()));

    for consumed in emulator.stats().consumed_refresh_tokens {
        secrets.insert(consumed);
    }
    drop(_guard);
    let trace = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        trace.contains("procore token refreshed"),
        "tracing was captured"
    );
    assert!(
        trace.contains("procore token refresh failed"),
        "failures were traced"
    );
    printed.push(trace);
    let everything = printed.join("\n");
    assert!(secrets.len() >= 7, "{} secrets tracked", secrets.len());
    for secret in &secrets {
        assert!(
            !everything.contains(secret.as_str()),
            "a secret leaked into:\n{everything}"
        );
    }
}
