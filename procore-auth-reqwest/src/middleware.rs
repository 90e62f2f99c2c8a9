use std::sync::Once;

use http::Extensions;
use procore_auth_core::{
    Authorize, ClientCredentialsGrant, OAuthClient, RefreshTokenGrant, Token, TokenManager,
    TokenStore, Tokens,
};
use reqwest::{Request, Response};
use reqwest_middleware::{Error, Middleware, Next, Result};

use crate::redirect::{Template, MAX_REDIRECTS};
use crate::ReqwestTransport;

/// Attaches the Procore token to requests to Procore, replays once after a 401, and
/// follows redirects hop by hop (on a client from [`client_builder`](crate::client_builder)).
///
/// See the [crate documentation](crate).
#[derive(Clone, Debug)]
pub struct ProcoreAuthMiddleware {
    tokens: Tokens,
}

impl ProcoreAuthMiddleware {
    /// Uses tokens from `tokens`: a `TokenManager` (one token for every request;
    /// configure skew, store, policy and so on there) or a `TokenRegistry` (each
    /// request's tenant is the key in its extensions, set with
    /// `reqwest_middleware::RequestBuilder::with_extension`; see
    /// `TokenRegistry::keyed_by` for a function instead).
    pub fn new(tokens: impl Into<Tokens>) -> Self {
        Self {
            tokens: tokens.into(),
        }
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

    /// Where requests get their tokens.
    pub fn tokens(&self) -> &Tokens {
        &self.tokens
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
        for _ in 0..MAX_REDIRECTS {
            // Copied before our headers go on: the replay gets the new token, and the
            // next hop gets the token only if the request policy says so.
            let hop = Template::of(&request);
            let response = self.send(request, &hop, extensions, next.clone()).await?;
            match hop.follow(&response) {
                Some(next_hop) => request = next_hop,
                None => return Ok(response),
            }
        }
        let hop = Template::of(&request);
        self.send(request, &hop, extensions, next).await
    }
}

impl ProcoreAuthMiddleware {
    /// One hop: our token if the request policy gives it one, and one replay if
    /// Procore rejects it.
    async fn send(
        &self,
        mut request: Request,
        hop: &Template,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> Result<Response> {
        let url = request.url();
        let host = url.host_str().unwrap_or_default();
        let (headers, port) = (request.headers(), url.port());
        let authorized =
            match self
                .tokens
                .authorize_origin(url.scheme(), host, port, headers, extensions)
            {
                Authorize::Skip => return next.run(request, extensions).await,
                Authorize::Ready(authorized) => authorized,
                Authorize::Pending(waiting) => waiting.await.map_err(Error::middleware)?,
            };
        let attached = authorized.attach(request.headers_mut());
        let response = match next.clone().run(request, extensions).await {
            Ok(response) => response,
            Err(error) => {
                if matches!(&error, Error::Reqwest(error) if error.is_connect()) {
                    attached.unsent();
                }
                return Err(error);
            }
        };
        if response.url() != hop.url() {
            // The wrapped client followed redirects itself, out of our sight: which
            // hop got what is unknown, so the response is not judged.
            static WARNING: Once = Once::new();
            WARNING.call_once(|| {
                tracing::warn!(
                    "the client wrapped by ProcoreAuthMiddleware follows redirects: build it \
                     with procore_auth_reqwest::client_builder() (redirect::Policy::none())"
                );
            });
            return Ok(response);
        }
        let Some(replay_with) = attached.judge(response.status(), response.headers()) else {
            return Ok(response);
        };
        // `None` for streaming bodies: such a request is not replayed.
        match (replay_with.await.map_err(Error::middleware)?, hop.copy()) {
            (Some(authorized), Some(mut replay)) => {
                let attached = authorized.attach(replay.headers_mut());
                let replayed = next.run(replay, extensions).await;
                if let Ok(response) = &replayed {
                    // Never a second replay; this records the token's budget.
                    let _ = attached.judge(response.status(), response.headers());
                }
                replayed
            }
            _ => Ok(response),
        }
    }
}
