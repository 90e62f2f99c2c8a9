//! Where new tokens come from: the grant strategies.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

use crate::error::ReauthorizationReason;
use crate::secret::{AccessToken, AuthorizationCode};
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
                None => return Err(reauthorize(ReauthorizationReason::NoToken)),
                Some(token) => token
                    .refresh_token()
                    .ok_or_else(|| reauthorize(ReauthorizationReason::MissingRefreshToken))?,
            };
            let token = request_token(
                &self.client,
                &*self.transport,
                clock,
                Resend::OnlyIfNeverSent,
                || self.client.refresh_request(refresh_token),
            )
            .await?;
            Ok(token.inherit_refresh_token(current))
        })
    }

    fn environment(&self) -> Option<&Environment> {
        Some(self.client.environment())
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
            || self.client.client_credentials_request(),
        ))
    }

    fn environment(&self) -> Option<&Environment> {
        Some(self.client.environment())
    }
}

fn reauthorize(reason: ReauthorizationReason) -> Error {
    Error::ReauthorizationRequired { reason }
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
    build: impl Fn() -> http::Request<Bytes>,
) -> Result<Token, Error> {
    let mut resent = false;
    loop {
        let sent_at = clock.now();
        let result = match transport.send(build()).await {
            Ok(response) => client.parse_token_response(&response, sent_at),
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
    /// [`Error::Transport`]. A code is single use: this never re-sends.
    pub async fn exchange_code(
        &self,
        transport: &dyn Transport,
        code: &AuthorizationCode,
        redirect_uri: &str,
    ) -> Result<Token, Error> {
        let sent_at = SystemClock.now();
        let response = transport
            .send(self.exchange_code_request(code, redirect_uri))
            .await?;
        self.parse_token_response(&response, sent_at)
    }

    /// Revokes `token` and its refresh token, sending with `transport`.
    ///
    /// # Errors
    ///
    /// As [`parse_revoke_response`](Self::parse_revoke_response), plus
    /// [`Error::Transport`].
    pub async fn revoke(
        &self,
        transport: &dyn Transport,
        token: &AccessToken,
    ) -> Result<(), Error> {
        let response = transport.send(self.revoke_request(token)).await?;
        self.parse_revoke_response(&response)
    }

    /// Asks the token-info endpoint about `token`, sending with `transport`.
    ///
    /// # Errors
    ///
    /// As [`parse_token_info_response`](Self::parse_token_info_response), plus
    /// [`Error::Transport`].
    pub async fn token_info(
        &self,
        transport: &dyn Transport,
        token: &Token,
    ) -> Result<TokenInfo, Error> {
        let response = transport.send(self.token_info_request(token)).await?;
        self.parse_token_info_response(&response)
    }
}
