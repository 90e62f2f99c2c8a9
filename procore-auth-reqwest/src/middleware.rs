use http::Extensions;
use procore_auth_core::{
    Authorize, ClientCredentialsGrant, OAuthClient, RefreshTokenGrant, Token, TokenManager,
    TokenStore,
};
use reqwest::{Request, Response};
use reqwest_middleware::{Error, Middleware, Next, Result};

use crate::ReqwestTransport;

/// Attaches the Procore token to requests to Procore and replays once after a 401.
///
/// See the [crate documentation](crate).
#[derive(Clone, Debug)]
pub struct ProcoreAuthMiddleware {
    manager: TokenManager,
}

impl ProcoreAuthMiddleware {
    /// Uses tokens from `manager` (configure skew, store, policy and so on there).
    pub fn new(manager: TokenManager) -> Self {
        Self { manager }
    }

    /// For a user who authorized the app: starts from `token` (from the code
    /// exchange) and refreshes with its rotating refresh token.
    ///
    /// # Errors
    ///
    /// [`crate::Error::HttpClient`] if the token endpoint's client cannot be built.
    pub fn from_token(oauth: OAuthClient, token: Token) -> std::result::Result<Self, crate::Error> {
        let grant = RefreshTokenGrant::new(oauth, ReqwestTransport::new()?);
        Ok(Self::new(TokenManager::builder(grant).token(token).build()))
    }

    /// For a service account: gets tokens with the client-credentials grant.
    ///
    /// # Errors
    ///
    /// [`crate::Error::HttpClient`] if the token endpoint's client cannot be built.
    pub fn from_client_credentials(oauth: OAuthClient) -> std::result::Result<Self, crate::Error> {
        let grant = ClientCredentialsGrant::new(oauth, ReqwestTransport::new()?);
        Ok(Self::new(TokenManager::builder(grant).build()))
    }

    /// For a user whose token is kept in `store` (loaded on first use, saved on every
    /// refresh before it is used).
    ///
    /// # Errors
    ///
    /// [`crate::Error::HttpClient`] if the token endpoint's client cannot be built.
    pub fn from_store(
        oauth: OAuthClient,
        store: impl TokenStore + 'static,
    ) -> std::result::Result<Self, crate::Error> {
        let grant = RefreshTokenGrant::new(oauth, ReqwestTransport::new()?);
        Ok(Self::new(TokenManager::builder(grant).store(store).build()))
    }

    /// The token manager.
    pub fn manager(&self) -> &TokenManager {
        &self.manager
    }
}

#[async_trait::async_trait]
impl Middleware for ProcoreAuthMiddleware {
    async fn handle(
        &self,
        mut request: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> Result<Response> {
        let manager = &self.manager;
        let url = request.url();
        let host = url.host_str().unwrap_or_default();
        let authorized =
            match manager.authorize_origin(url.scheme(), host, url.port(), request.headers()) {
                Authorize::Skip => return next.run(request, extensions).await,
                Authorize::Ready(authorized) => authorized,
                Authorize::Pending(waiting) => waiting.await.map_err(Error::middleware)?,
            };
        // Copied before the header goes on: a replay gets the new token anyway.
        // `None` for streaming bodies: such a request is not replayed.
        let replay = request.try_clone();
        let attached = manager.attach(authorized, request.headers_mut());
        let response = next.clone().run(request, extensions).await?;
        let Some(replay_with) = manager.judge(attached, response.status()) else {
            return Ok(response);
        };
        match (replay_with.await.map_err(Error::middleware)?, replay) {
            (Some(authorized), Some(mut replay)) => {
                manager.attach(authorized, replay.headers_mut());
                next.run(replay, extensions).await
            }
            _ => Ok(response),
        }
    }
}
