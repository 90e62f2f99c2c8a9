use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::{Request, Response};
use pin_project_lite::pin_project;
use procore_auth_core::{AuthorizeFuture, Authorized, ReplayFuture, TokenManager};
use tower_service::Service;

use crate::Error;

pin_project! {
    /// Response future of [`ProcoreAuth`](crate::ProcoreAuth).
    ///
    /// With a fresh token it holds little more than the inner service's future: what
    /// only a slower path needs (waiting for a token, the copy kept for a replay, the
    /// 401 being judged) lives behind a `Box`, so moving the future stays cheap.
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        state: State<S, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, B>
    where
        S: Service<Request<B>>,
    {
        // Waiting for a token before the first call.
        Authorizing { waiting: Box<Authorizing<S, B>> },
        // The first call; `then` is `None` for a request without our token.
        Calling { #[pin] call: S::Future, then: Option<Box<Then<S, B>>> },
        // A 401 reported to the manager, waiting for the token to replay with.
        Rejecting { rejecting: Box<Rejecting<S, B>> },
        // Waiting for the replay's service to be ready.
        ReadyingReplay { replay: Box<Replay<S, B>> },
        // The replay's call: its response is final.
        Replaying { #[pin] call: S::Future },
        Done,
    }
}

/// A copy of the request and a service to send it with, for the one replay. The
/// request is taken when the replay is sent.
pub(crate) struct Replay<S, B> {
    request: Option<Request<B>>,
    service: S,
}

impl<S, B> Replay<S, B> {
    pub(crate) fn new(request: Request<B>, service: S) -> Self {
        let request = Some(request);
        Self { request, service }
    }
}

/// A request waiting for a token, and the ready service for it (kept for the replay,
/// when there is a copy to replay). `send` is taken when the token arrives.
struct Authorizing<S, B> {
    token: AuthorizeFuture,
    manager: TokenManager,
    send: Option<(Request<B>, S, Option<Request<B>>)>,
}

/// What a request that carried our token needs after its first call.
struct Then<S, B> {
    manager: TokenManager,
    authorized: Authorized,
    replay: Option<Replay<S, B>>,
}

/// A 401 being judged; `response` is taken when the manager answers.
struct Rejecting<S: Service<Request<B>>, B> {
    replay_with: ReplayFuture,
    response: Option<S::Response>,
    then: Then<S, B>,
}

const COMPLETED: &str = "ResponseFuture polled after completion";

impl<S: Service<Request<B>>, B> ResponseFuture<S, B> {
    /// A request that does not get our token: only the inner call.
    pub(crate) fn untouched(call: S::Future) -> Self {
        let state = State::Calling { call, then: None };
        Self { state }
    }

    /// A request on its way with a fresh token.
    pub(crate) fn calling(
        call: S::Future,
        manager: &TokenManager,
        authorized: Authorized,
        replay: Option<Replay<S, B>>,
    ) -> Self {
        let manager = manager.clone();
        let then = Some(Box::new(Then {
            manager,
            authorized,
            replay,
        }));
        Self {
            state: State::Calling { call, then },
        }
    }

    /// Waits for a token, then calls `ready` (a service already made ready).
    pub(crate) fn authorizing(
        token: AuthorizeFuture,
        manager: &TokenManager,
        request: Request<B>,
        ready: S,
        copy: Option<Request<B>>,
    ) -> Self {
        let (manager, send) = (manager.clone(), Some((request, ready, copy)));
        let waiting = Box::new(Authorizing {
            token,
            manager,
            send,
        });
        Self {
            state: State::Authorizing { waiting },
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
            let mut state = self.as_mut().project().state;
            let next = match state.as_mut().project() {
                StateProj::Authorizing { waiting } => {
                    let authorized = ready!(Pin::new(&mut waiting.token).poll(cx));
                    let (mut request, mut service, copy) = waiting.send.take().expect(COMPLETED);
                    let authorized = authorized.map_err(Error::Auth)?;
                    waiting.manager.attach(&authorized, request.headers_mut());
                    let call = service.call(request);
                    let then = Box::new(Then {
                        manager: waiting.manager.clone(),
                        authorized,
                        replay: copy.map(|copy| Replay::new(copy, service)),
                    });
                    State::Calling {
                        call,
                        then: Some(then),
                    }
                }
                StateProj::Calling { call, then } => {
                    let response = ready!(call.poll(cx)).map_err(Error::Service)?;
                    let judged = then.take().and_then(|then| {
                        let replay_with = then.manager.judge(&then.authorized, response.status());
                        Some((replay_with?, then))
                    });
                    let Some((replay_with, then)) = judged else {
                        state.set(State::Done);
                        return Poll::Ready(Ok(response));
                    };
                    let response = Some(response);
                    let then = *then;
                    let rejecting = Box::new(Rejecting {
                        replay_with,
                        response,
                        then,
                    });
                    State::Rejecting { rejecting }
                }
                StateProj::Rejecting { rejecting } => {
                    let replacement = ready!(Pin::new(&mut rejecting.replay_with).poll(cx));
                    let response = rejecting.response.take().expect(COMPLETED);
                    let replacement = replacement.map_err(Error::Auth)?;
                    match (replacement, rejecting.then.replay.take()) {
                        (Some(authorized), Some(mut replay)) => {
                            let request = replay.request.as_mut().expect(COMPLETED);
                            rejecting
                                .then
                                .manager
                                .attach(&authorized, request.headers_mut());
                            State::ReadyingReplay {
                                replay: Box::new(replay),
                            }
                        }
                        // Not replayable, or the manager advises against it: the
                        // caller gets the 401 (the token was refreshed if it could be).
                        _ => {
                            state.set(State::Done);
                            return Poll::Ready(Ok(response));
                        }
                    }
                }
                StateProj::ReadyingReplay { replay } => {
                    ready!(replay.service.poll_ready(cx)).map_err(Error::Service)?;
                    let request = replay.request.take().expect(COMPLETED);
                    State::Replaying {
                        call: replay.service.call(request),
                    }
                }
                StateProj::Replaying { call } => {
                    let response = ready!(call.poll(cx));
                    state.set(State::Done);
                    return Poll::Ready(response.map_err(Error::Service));
                }
                StateProj::Done => panic!("{COMPLETED}"),
            };
            state.set(next);
        }
    }
}

impl<S: Service<Request<B>>, B> fmt::Debug for ResponseFuture<S, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
