use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::{Request, Response};
use pin_project_lite::pin_project;
use procore_auth_core::{
    Bearer, BearerFuture, BoxFuture, Error as AuthError, Generation, TokenManager,
};
use tower_service::Service;

use crate::Error;

pin_project! {
    /// Response future of [`ProcoreAuth`](crate::ProcoreAuth).
    ///
    /// With a fresh token it holds little more than the inner service's future: what
    /// only a slower path needs (waiting for a token, the copy kept for a replay, the
    /// 401 being handled) lives behind a `Box`, so moving the future stays cheap.
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        state: State<S, B>,
        // `None` when the request does not carry our token.
        manager: Option<TokenManager>,
        generation: Option<Generation>,
        replay: Option<Box<Replay<S, B>>>,
    }
}

/// What a replay after a 401 needs: a copy of the request and a service to send it.
pub(crate) struct Replay<S, B> {
    pub(crate) request: Request<B>,
    pub(crate) service: S,
}

/// A request waiting for a token, with the ready service to send it and the copy
/// kept for a replay.
struct Authorizing<S, B> {
    bearer: BearerFuture,
    request: Request<B>,
    service: S,
    copy: Option<Request<B>>,
}

/// A 401 being reported to the manager.
struct Rejecting<R> {
    rejected: BoxFuture<'static, Result<Option<Bearer>, AuthError>>,
    response: R,
}

pin_project! {
    #[project = StateProj]
    #[project_replace = StateReplace]
    enum State<S, B>
    where
        S: Service<Request<B>>,
    {
        Authorizing { waiting: Box<Authorizing<S, B>> },
        Calling { #[pin] call: S::Future },
        Rejecting { rejecting: Box<Rejecting<S::Response>> },
        ReadyingReplay,
        Replaying { #[pin] call: S::Future },
        Done,
    }
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    /// A request that does not get our token: only the inner call.
    pub(crate) fn unauthorized(call: S::Future) -> Self {
        Self {
            state: State::Calling { call },
            manager: None,
            generation: None,
            replay: None,
        }
    }

    /// The token was fresh and the request is on its way.
    pub(crate) fn calling(
        call: S::Future,
        manager: &TokenManager,
        bearer: &Bearer,
        replay: Option<Replay<S, B>>,
    ) -> Self {
        Self {
            state: State::Calling { call },
            manager: Some(manager.clone()),
            generation: Some(bearer.generation()),
            replay: replay.map(Box::new),
        }
    }

    /// Waits for a token, then calls `ready` (a service already made ready), which is
    /// kept for the replay if there is a `copy` to replay.
    pub(crate) fn authorizing(
        request: Request<B>,
        copy: Option<Request<B>>,
        manager: &TokenManager,
        ready: S,
    ) -> Self {
        Self {
            state: State::Authorizing {
                waiting: Box::new(Authorizing {
                    bearer: manager.bearer(),
                    request,
                    service: ready,
                    copy,
                }),
            },
            manager: Some(manager.clone()),
            generation: None,
            replay: None,
        }
    }
}

impl<S, B, ResBody> Future for ResponseFuture<S, B>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
{
    type Output = Result<Response<ResBody>, Error<S::Error>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let mut this = self.as_mut().project();
            match this.state.as_mut().project() {
                StateProj::Authorizing { waiting } => {
                    let bearer =
                        ready!(Pin::new(&mut waiting.bearer).poll(cx)).map_err(Error::Auth)?;
                    let StateReplace::Authorizing { waiting } =
                        this.state.as_mut().project_replace(State::Done)
                    else {
                        unreachable!("the state was just matched (invariant)")
                    };
                    let Authorizing {
                        mut request,
                        mut service,
                        copy,
                        ..
                    } = *waiting;
                    if let Some(manager) = this.manager.as_ref() {
                        manager.policy().attach(request.headers_mut(), &bearer);
                    }
                    *this.generation = Some(bearer.generation());
                    let call = service.call(request);
                    *this.replay = copy.map(|request| Box::new(Replay { request, service }));
                    this.state.set(State::Calling { call });
                }
                StateProj::Calling { call } => {
                    let response = ready!(call.poll(cx)).map_err(Error::Service)?;
                    match (this.manager.as_ref(), *this.generation) {
                        (Some(manager), Some(generation))
                            if manager.policy().should_replay(response.status(), 0) =>
                        {
                            let manager = manager.clone();
                            let rejected =
                                Box::pin(async move { manager.rejected(generation).await });
                            this.state.set(State::Rejecting {
                                rejecting: Box::new(Rejecting { rejected, response }),
                            });
                        }
                        _ => {
                            this.state.set(State::Done);
                            return Poll::Ready(Ok(response));
                        }
                    }
                }
                StateProj::Rejecting { rejecting } => {
                    let replacement =
                        ready!(rejecting.rejected.as_mut().poll(cx)).map_err(Error::Auth)?;
                    match (replacement, this.replay.as_mut(), this.manager.as_ref()) {
                        (Some(bearer), Some(replay), Some(manager)) => {
                            manager
                                .policy()
                                .attach(replay.request.headers_mut(), &bearer);
                            this.state.set(State::ReadyingReplay);
                        }
                        // Not replayable, or the manager advises against it: the
                        // caller gets the 401 (the token was refreshed if it could be).
                        _ => {
                            let StateReplace::Rejecting { rejecting } =
                                this.state.project_replace(State::Done)
                            else {
                                unreachable!("the state was just matched (invariant)")
                            };
                            return Poll::Ready(Ok(rejecting.response));
                        }
                    }
                }
                StateProj::ReadyingReplay => {
                    let Some(replay) = this.replay.as_mut() else {
                        unreachable!("a replay is readied only when there is one (invariant)")
                    };
                    ready!(replay.service.poll_ready(cx)).map_err(Error::Service)?;
                    let Some(replay) = this.replay.take() else {
                        unreachable!("checked just above (invariant)")
                    };
                    let Replay {
                        request,
                        mut service,
                    } = *replay;
                    this.state.set(State::Replaying {
                        call: service.call(request),
                    });
                }
                StateProj::Replaying { call } => {
                    let response = ready!(call.poll(cx));
                    this.state.set(State::Done);
                    return Poll::Ready(response.map_err(Error::Service));
                }
                StateProj::Done => panic!("ResponseFuture polled after completion"),
            }
        }
    }
}

impl<S, B> fmt::Debug for ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Authorizing { .. } => "authorizing",
            State::Calling { .. } => "calling",
            State::Rejecting { .. } => "rejecting",
            State::ReadyingReplay => "readying replay",
            State::Replaying { .. } => "replaying",
            State::Done => "done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .field("generation", &self.generation)
            .field("replayable", &self.replay.is_some())
            .finish_non_exhaustive()
    }
}
