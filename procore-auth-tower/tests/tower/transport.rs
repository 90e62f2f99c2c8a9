//! `TowerTransport`'s own timeout and the tower error's message.

use std::time::Duration;

use procore_auth_core::{
    Error as AuthError, ReauthorizationReason, RefreshTokenGrant, TokenManager, TransportErrorKind,
};
use procore_auth_testkit::{Emulator, TokenFault};
use procore_auth_tower::{Error, TowerTransport};

use super::{http_client, oauth};

/// A token endpoint that never answers gets a typed `Timeout`, not a hang (the
/// transport has a default timeout of its own) and not `Other`.
#[tokio::test]
async fn a_hanging_token_endpoint_is_a_typed_timeout() {
    let emulator = Emulator::start().await;
    emulator.push_token_fault(TokenFault::Hang);
    let oauth = oauth(&emulator);
    let transport = TowerTransport::new(http_client()).timeout(Duration::from_millis(300));
    let manager = TokenManager::builder(RefreshTokenGrant::new(oauth, transport))
        .token(emulator_token(&emulator))
        .build();
    let rejected = manager.bearer().await.unwrap().generation();
    let error = tokio::time::timeout(Duration::from_secs(10), manager.rejected(rejected))
        .await
        .expect("the transport's timeout ends the refresh")
        .unwrap_err();
    match &error {
        AuthError::Transport(transport) => {
            assert_eq!(transport.kind(), TransportErrorKind::Timeout, "{error:?}")
        }
        other => panic!("not a transport error: {other:?}"),
    }
}

fn emulator_token(emulator: &Emulator) -> procore_auth_core::Token {
    let grant = emulator.issue_token();
    let issued = u64::try_from(grant.created_at).unwrap();
    let now = std::time::UNIX_EPOCH + Duration::from_secs(issued);
    procore_auth_core::Token::new(
        procore_auth_core::AccessToken::new(grant.access_token),
        grant
            .refresh_token
            .map(procore_auth_core::RefreshToken::new),
        now,
        Some(now + Duration::from_secs(grant.expires_in)),
    )
    .unwrap()
}

/// The error says what went wrong, as the reqwest middleware's does.
#[test]
fn an_authorization_error_displays_its_reason() {
    let core = AuthError::ReauthorizationRequired {
        reason: ReauthorizationReason::NoToken,
        tenant: None,
    };
    let error: Error<std::io::Error> = Error::Auth(core.clone());
    assert_eq!(error.to_string(), core.to_string());
    assert!(
        error.to_string().contains("reauthorization required"),
        "{error}"
    );
}
