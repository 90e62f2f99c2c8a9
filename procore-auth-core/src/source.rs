//! Where new tokens come from: the grant strategies.

use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::FutureExt;

use crate::error::ReauthorizationReason;
use crate::oauth::Revocable;
use crate::secret::AuthorizationCode;
use crate::transport::{BoxFuture, Transport};
use crate::{Clock, Environment, Error, OAuthClient, SystemClock, Token, TokenInfo};

/// Obtains a new token to replace the current one.
///
/// The [`TokenManager`](crate::TokenManager) calls this at most once at a time per
/// manager. Built in: [`RefreshTokenGrant`] (authorization-code users; Procore rotates
/// the refresh token on every use) and [`ClientCredentialsGrant`] (service accounts).
/// Implement it to supply tokens any other way.
///
/// ```
/// use procore_auth_core::{AccessToken, BoxFuture, Clock, Error, Token, TokenSource};
/// use std::time::Duration;
///
/// /// Hands out tokens minted by another service of ours.
/// #[derive(Debug)]
/// struct FromVault;
///
/// impl TokenSource for FromVault {
///     fn fetch<'a>(
///         &'a self,
///         _current: Option<&'a Token>,
///         clock: &'a dyn Clock,
///     ) -> BoxFuture<'a, Result<Token, Error>> {
///         Box::pin(async move {
///             let now = clock.now();
///             Token::new(AccessToken::new("from-vault"), None, now, Some(now + Duration::from_secs(3600)))
///         })
///     }
/// }
/// ```
pub trait TokenSource: Send + Sync + fmt::Debug {
    /// Fetches a new token. `current` is the token being replaced (its refresh token
    /// is what a rotating grant presents); `clock` gives the send time for expiry math.
    ///
    /// Return [`Error::ReauthorizationRequired`] (or a `TokenEndpoint` error whose code
    /// is `invalid_grant`) when only the user can fix things: the manager then stops
    /// calling until a new token is set.
    fn fetch<'a>(
        &'a self,
        current: Option<&'a Token>,
        clock: &'a dyn Clock,
    ) -> BoxFuture<'a, Result<Token, Error>>;

    /// The environment the tokens are for, which sets the default
    /// [`RequestPolicy`](crate::RequestPolicy). `None` if unknown.
    fn environment(&self) -> Option<&Environment> {
        None
    }

    /// Revokes `token` (and the rest of its pair) at the server. Used by
    /// [`TokenManager::revoke`](crate::TokenManager::revoke).
    ///
    /// The default answers [`Error::RevokeUnsupported`]; the built-in grants revoke
    /// through their [`OAuthClient`].
    fn revoke<'a>(&'a self, token: &'a Token) -> BoxFuture<'a, Result<(), Error>> {
        let _ = token;
        Box::pin(async { Err(Error::RevokeUnsupported) })
    }
}

/// The refresh-token grant: presents the current token's refresh token and gets a new
/// pair back. The presented refresh token is burnt by Procore as soon as it is seen, so
/// a request is re-sent only when it provably never left (a connect failure).
#[derive(Clone, Debug)]
pub struct RefreshTokenGrant {
    client: OAuthClient,
    transport: Arc<dyn Transport>,
}

impl RefreshTokenGrant {
    /// Refreshes through `client`'s token endpoint, sending with `transport`.
    pub fn new(client: OAuthClient, transport: impl Transport + 'static) -> Self {
        Self {
            client,
            transport: Arc::new(transport),
        }
    }
}

impl TokenSource for RefreshTokenGrant {
    fn fetch<'a>(
        &'a self,
        current: Option<&'a Token>,
        clock: &'a dyn Clock,
    ) -> BoxFuture<'a, Result<Token, Error>> {
        Box::pin(async move {
            let refresh_token = match current {
                None => {
                    return Err(Error::reauthorization_required(
                        ReauthorizationReason::NoToken,
                    ))
                }
                Some(token) => token.refresh_token().ok_or_else(|| {
                    Error::reauthorization_required(ReauthorizationReason::MissingRefreshToken)
                })?,
            };
            let access_token = current.and_then(Token::access_token);
            let secrets = [
                refresh_token.secret(),
                access_token.map_or("", |access| access.secret()),
            ];
            let token = request_token(
                &self.client,
                &*self.transport,
                clock,
                Resend::OnlyIfNeverSent,
                &secrets,
                || self.client.refresh_request(refresh_token),
            )
            .await?;
            Ok(token.inherit_refresh_token(current))
        })
    }

    fn environment(&self) -> Option<&Environment> {
        Some(self.client.environment())
    }

    /// Revokes `token` by its refresh token (Procore revokes the pair).
    fn revoke<'a>(&'a self, token: &'a Token) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(self.client.revoke(&*self.transport, token))
    }
}

/// The client-credentials grant (Developer Managed Service Accounts): asks for a brand
/// new token each time. Safe to repeat, so one failed attempt is retried at once.
#[derive(Clone, Debug)]
pub struct ClientCredentialsGrant {
    client: OAuthClient,
    transport: Arc<dyn Transport>,
}

impl ClientCredentialsGrant {
    /// Requests tokens from `client`'s token endpoint, sending with `transport`.
    pub fn new(client: OAuthClient, transport: impl Transport + 'static) -> Self {
        Self {
            client,
            transport: Arc::new(transport),
        }
    }
}

impl TokenSource for ClientCredentialsGrant {
    fn fetch<'a>(
        &'a self,
        _current: Option<&'a Token>,
        clock: &'a dyn Clock,
    ) -> BoxFuture<'a, Result<Token, Error>> {
        Box::pin(request_token(
            &self.client,
            &*self.transport,
            clock,
            Resend::OnTransientFailure,
            &[],
            || self.client.client_credentials_request(),
        ))
    }

    fn environment(&self) -> Option<&Environment> {
        Some(self.client.environment())
    }

    /// Revokes `token` at the server.
    fn revoke<'a>(&'a self, token: &'a Token) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(self.client.revoke(&*self.transport, token))
    }
}

/// When a token request may be sent a second time within one attempt.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Resend {
    /// Only after a failure that proves the server never saw the request.
    OnlyIfNeverSent,
    /// After any transient failure: the request has no side effect worth fearing.
    OnTransientFailure,
}

async fn request_token(
    client: &OAuthClient,
    transport: &dyn Transport,
    clock: &dyn Clock,
    resend: Resend,
    secrets: &[&str],
    build: impl Fn() -> http::Request<Bytes>,
) -> Result<Token, Error> {
    let mut resent = false;
    loop {
        let sent_at = clock.now();
        let result = match transport.send(build()).await {
            Ok(response) => client.parse_token_response_scrubbing(&response, sent_at, secrets),
            Err(error) => Err(error.into()),
        };
        let may_resend = match &result {
            Err(Error::Transport(error)) if !error.request_may_have_been_sent() => true,
            Err(error) => resend == Resend::OnTransientFailure && error.is_transient(),
            Ok(_) => false,
        };
        if resent || !may_resend {
            return result;
        }
        resent = true;
    }
}

impl OAuthClient {
    /// Exchanges an authorization code for a token, sending with `transport`.
    ///
    /// # Errors
    ///
    /// As [`parse_token_response`](Self::parse_token_response), plus
    /// [`Error::Transport`], and [`Error::CallPanicked`] if `transport` panicked. A
    /// code is single use: this never re-sends.
    pub async fn exchange_code(
        &self,
        transport: &dyn Transport,
        code: &AuthorizationCode,
        redirect_uri: &str,
    ) -> Result<Token, Error> {
        guard(async {
            let sent_at = SystemClock.now();
            let response = transport
                .send(self.exchange_code_request(code, redirect_uri))
                .await?;
            self.parse_token_response_scrubbing(&response, sent_at, &[code.secret()])
        })
        .await
    }

    /// Revokes `token` — an access token, a refresh token or a whole
    /// [`Token`] — and the rest of its pair, sending with `transport`.
    ///
    /// # Errors
    ///
    /// As [`parse_revoke_response`](Self::parse_revoke_response), plus
    /// [`Error::Transport`], and [`Error::CallPanicked`] if `transport` panicked.
    pub async fn revoke<'a>(
        &self,
        transport: &dyn Transport,
        token: impl Into<Revocable<'a>>,
    ) -> Result<(), Error> {
        let request = self.revoke_request(token);
        guard(async {
            let response = transport.send(request).await?;
            self.parse_revoke_response(&response)
        })
        .await
    }

    /// Asks the token-info endpoint about `token`, sending with `transport`.
    ///
    /// # Errors
    ///
    /// As [`parse_token_info_response`](Self::parse_token_info_response), plus
    /// [`Error::Transport`], and [`Error::CallPanicked`] if `transport` panicked.
    pub async fn token_info(
        &self,
        transport: &dyn Transport,
        token: &Token,
    ) -> Result<TokenInfo, Error> {
        guard(async {
            let response = transport.send(self.token_info_request(token)).await?;
            self.parse_token_info_response(&response)
        })
        .await
    }
}

/// A panic in a user-supplied transport (or a parser bug) becomes a typed error, as
/// it does inside the manager.
async fn guard<T>(call: impl Future<Output = Result<T, Error>>) -> Result<T, Error> {
    AssertUnwindSafe(call)
        .catch_unwind()
        .await
        .unwrap_or(Err(Error::CallPanicked))
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;
    use crate::{ClientSecret, RefreshToken, TransportError};

    #[derive(Debug)]
    struct Panicking;

    impl Transport for Panicking {
        fn send(
            &self,
            _: http::Request<Bytes>,
        ) -> BoxFuture<'_, Result<http::Response<Bytes>, TransportError>> {
            Box::pin(async { panic!("transport bug") })
        }
    }

    fn client() -> OAuthClient {
        OAuthClient::new(Environment::production(), "id", ClientSecret::new("secret"))
    }

    #[test]
    fn one_off_calls_turn_a_panicking_transport_into_a_typed_error() {
        let client = client();
        let token = Token::from_refresh_token(RefreshToken::new("r"));
        let exchange = client
            .exchange_code(&Panicking, &AuthorizationCode::new("c"), "http://localhost")
            .now_or_never()
            .unwrap();
        assert!(matches!(exchange, Err(Error::CallPanicked)), "{exchange:?}");
        let revoke = client.revoke(&Panicking, &token).now_or_never().unwrap();
        assert!(matches!(revoke, Err(Error::CallPanicked)), "{revoke:?}");
        let info = client
            .token_info(&Panicking, &token)
            .now_or_never()
            .unwrap();
        assert!(matches!(info, Err(Error::CallPanicked)), "{info:?}");
    }
}
