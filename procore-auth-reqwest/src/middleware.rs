use std::future::Future;
use std::pin::Pin;
use std::sync::Once;

use http::Extensions;
use procore_auth_core::{
    Attached, Authorize, ClientCredentialsGrant, OAuthClient, RefreshTokenGrant, ReplayFuture,
    Token, TokenManager, TokenStore, Tokens,
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

// Written out rather than with `#[async_trait]`, and as one `async` block: the
// expansion of an `async fn` moves each argument into a second local of its future,
// so the request would take its space two or four times (and the boxed future would
// outgrow the allocator's fast path).
impl Middleware for ProcoreAuthMiddleware {
    fn handle<'this, 'ext, 'next, 'future>(
        &'this self,
        mut request: Request,
        extensions: &'ext mut Extensions,
        next: Next<'next>,
    ) -> Pin<Box<dyn Future<Output = Result<Response>> + Send + 'future>>
    where
        'this: 'future,
        'ext: 'future,
        'next: 'future,
        Self: 'future,
    {
        Box::pin(async move {
            let mut redirects = 0;
            loop {
                // Copied before our headers go on: the replay gets the new token, and
                // the next hop gets the token only if the request policy says so.
                let hop = Template::of(&request);
                let authorized = match self.authorize(&request, extensions) {
                    Authorize::Skip => None,
                    Authorize::Ready(authorized) => Some(authorized),
                    Authorize::Pending(waiting) => Some(waiting.await.map_err(Error::middleware)?),
                };
                let response = match authorized {
                    None => next.clone().run(request, extensions).await?,
                    Some(authorized) => {
                        let attached = authorized.attach(request.headers_mut());
                        let sent = next.clone().run(request, extensions).await;
                        let response = refund_unsent(sent, &attached)?;
                        let replay_with = answers(&response, &hop)
                            .then(|| attached.judge(response.status(), response.headers()))
                            .flatten();
                        match replay_with {
                            // Rare (a 401): boxed, so that this future stays small.
                            Some(replay_with) => {
                                let replay = self.replay(
                                    response,
                                    replay_with,
                                    &hop,
                                    &mut *extensions,
                                    next.clone(),
                                );
                                Box::pin(replay).await?
                            }
                            None => response,
                        }
                    }
                };
                if redirects == MAX_REDIRECTS {
                    return Ok(response);
                }
                match hop.follow(&response) {
                    Some(next_hop) => request = next_hop,
                    None => return Ok(response),
                }
                redirects += 1;
            }
        })
    }
}

impl ProcoreAuthMiddleware {
    /// Whether (and with which token) the request gets our token.
    fn authorize(&self, request: &Request, extensions: &Extensions) -> Authorize {
        let url = request.url();
        let host = url.host_str().unwrap_or_default();
        self.tokens.authorize_origin(
            url.scheme(),
            host,
            url.port(),
            request.headers(),
            extensions,
        )
    }

    /// Replays a request whose token Procore rejected, once, if the manager has a
    /// new token for it and its body can be sent again; otherwise returns the 401.
    async fn replay(
        &self,
        rejection: Response,
        replay_with: ReplayFuture,
        hop: &Template,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> Result<Response> {
        let Some(authorized) = replay_with.await.map_err(Error::middleware)? else {
            return Ok(rejection);
        };
        // `None` for streaming bodies: such a request is not replayed.
        let Some(mut replay) = hop.copy() else {
            return Ok(rejection);
        };
        let attached = authorized.attach(replay.headers_mut());
        let replayed = refund_unsent(next.run(replay, extensions).await, &attached)?;
        if answers(&replayed, hop) {
            // Never a second replay; this records the token's budget.
            let _ = attached.judge(replayed.status(), replayed.headers());
        }
        Ok(replayed)
    }
}

/// Whether `response` answers the request `hop` sent. It does not when the wrapped
/// client followed redirects itself, out of our sight: which hop got what is unknown,
/// so the response is not judged (and a warning says how to build the client).
///
/// The fragment is not compared: it is never sent, and reqwest's response URL has none.
fn answers(response: &Response, hop: &Template) -> bool {
    if without_fragment(response.url()) == without_fragment(hop.url()) {
        return true;
    }
    static WARNING: Once = Once::new();
    WARNING.call_once(|| {
        tracing::warn!(
            "the client wrapped by ProcoreAuthMiddleware follows redirects: build it with \
             procore_auth_reqwest::client_builder() (redirect::Policy::none())"
        );
    });
    false
}

fn without_fragment(url: &reqwest::Url) -> &str {
    let whole = url.as_str();
    match url.fragment() {
        Some(fragment) => &whole[..whole.len() - fragment.len() - 1],
        None => whole,
    }
}

/// Passes on the result of sending an attempt that carried our token; an attempt that
/// never reached the server (its connection failed) gives back the rate-limit budget
/// it took.
fn refund_unsent(sent: Result<Response>, attached: &Attached) -> Result<Response> {
    if let Err(Error::Reqwest(error)) = &sent {
        if error.is_connect() {
            attached.unsent();
        }
    }
    sent
}
