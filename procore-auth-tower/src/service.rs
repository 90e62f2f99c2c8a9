use std::task::{Context, Poll};

use http::{Request, Response};
use procore_auth_core::{Authorize, Tokens};
use tower_service::Service;

use crate::future::ResponseFuture;
use crate::replay::{CloneRequest, ReplayPolicy};
use crate::{Error, ProcoreAuthLayer};

/// Puts the Procore bearer token on requests to Procore and replays once after a 401.
///
/// See the [crate documentation](crate) for an example.
#[derive(Clone, Debug)]
pub struct ProcoreAuth<S, P = CloneRequest> {
    inner: S,
    tokens: Tokens,
    replay: P,
}

impl<S> ProcoreAuth<S> {
    /// Wraps `inner`, with tokens from `tokens`: a `TokenManager`, or a
    /// `TokenRegistry` (see [`ProcoreAuthLayer::new`]).
    pub fn new(inner: S, tokens: impl Into<Tokens>) -> Self {
        Self {
            inner,
            tokens: tokens.into(),
            replay: CloneRequest,
        }
    }

    /// A [`ProcoreAuthLayer`] with tokens from `tokens`.
    pub fn layer(tokens: impl Into<Tokens>) -> ProcoreAuthLayer {
        ProcoreAuthLayer::new(tokens)
    }
}

impl<S, P> ProcoreAuth<S, P> {
    /// Decides what can be replayed with `policy`.
    pub fn replay_with<Q>(self, policy: Q) -> ProcoreAuth<S, Q> {
        ProcoreAuth {
            inner: self.inner,
            tokens: self.tokens,
            replay: policy,
        }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the service.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// Where requests get their tokens.
    pub fn tokens(&self) -> &Tokens {
        &self.tokens
    }
}

impl<S, P, ReqBody, ResBody> Service<Request<ReqBody>> for ProcoreAuth<S, P>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    P: ReplayPolicy<ReqBody>,
{
    type Response = Response<ResBody>;
    type Error = Error<S::Error>;
    type Future = ResponseFuture<S, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Error::Service)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let (uri, headers, extensions) = (request.uri(), request.headers(), request.extensions());
        match self.tokens.authorize(uri, headers, extensions) {
            Authorize::Skip => ResponseFuture::untouched(self.inner.call(request)),
            // Copied before the header goes on: a replay gets the new token anyway.
            Authorize::Ready(authorized) => {
                let copy = self.replay.clone_request(&request);
                ResponseFuture::send(authorized, request, &mut self.inner, copy)
            }
            Authorize::Pending(token) => {
                let copy = self.replay.clone_request(&request);
                // This instance was made ready by the caller; keep the ready one for
                // the call after the token arrives (tower's clone-and-swap idiom).
                let clone = self.inner.clone();
                let ready = std::mem::replace(&mut self.inner, clone);
                ResponseFuture::authorizing(token, Some((request, copy)), ready)
            }
        }
    }
}
