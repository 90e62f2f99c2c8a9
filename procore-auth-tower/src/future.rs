use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::{Request, Response};
use pin_project_lite::pin_project;
use procore_auth_core::{Attached, AuthorizeFuture, Authorized, ReplayFuture};
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
        Calling { #[pin] call: S::Future, then: Option<Then<S, B>> },
        // A 401 reported to the manager, waiting for the token to replay with.
        Rejecting { rejecting: Box<Rejecting<S, B>> },
        // Waiting for the replay's service to be ready.
        ReadyingReplay { replay: Box<Replay<S, B>>, attached: Attached },
        // The replay's call: its response is final (and feeds the token's budget).
        Replaying { #[pin] call: S::Future, attached: Attached },
        Done,
    }
}

/// A request waiting for a token, with the ready service that sends it. `request` is
/// taken when the token arrives.
struct Authorizing<S, B> {
    token: AuthorizeFuture,
    service: S,
    request: Option<(Request<B>, Option<Request<B>>)>,
}

/// What a request that carried our token needs after its first call: kept inline
/// (it is small), with the copy to replay boxed.
struct Then<S, B> {
    attached: Attached,
    replay: Option<Box<Replay<S, B>>>,
}

/// For the one replay: a copy of the request (taken when it is sent) and a service
/// of its own.
struct Replay<S, B>(Option<Request<B>>, S);

/// A 401 being judged; `response` is taken when the manager answers.
struct Rejecting<S: Service<Request<B>>, B> {
    replay_with: ReplayFuture,
    response: Option<S::Response>,
    then: Then<S, B>,
}

const COMPLETED: &str = "ResponseFuture polled after completion";

impl<S: Service<Request<B>> + Clone, B> ResponseFuture<S, B> {
    /// A request that does not get our token: only the inner call.
    pub(crate) fn untouched(call: S::Future) -> Self {
        let state = State::Calling { call, then: None };
        Self { state }
    }

    /// Sends `request` with a fresh token through `service` (ready), keeping `copy`
    /// and a clone of the service for a replay.
    pub(crate) fn send(
        authorized: Authorized,
        mut request: Request<B>,
        service: &mut S,
        copy: Option<Request<B>>,
    ) -> Self {
        // The clone only replays; it is made ready when used.
        let replay = copy.map(|copy| Box::new(Replay(Some(copy), service.clone())));
        let attached = authorized.attach(request.headers_mut());
        let call = service.call(request);
        let then = Some(Then { attached, replay });
        let state = State::Calling { call, then };
        Self { state }
    }

    /// Waits for a token, then sends `request` through `service` (ready).
    pub(crate) fn authorizing(
        token: AuthorizeFuture,
        request: Option<(Request<B>, Option<Request<B>>)>,
        service: S,
    ) -> Self {
        let waiting = Box::new(Authorizing {
            token,
            service,
            request,
        });
        let state = State::Authorizing { waiting };
        Self { state }
    }
}

impl<S, B, ResBody> Future for ResponseFuture<S, B>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone,
{
    type Output = Result<Response<ResBody>, Error<S::Error>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let mut state = self.as_mut().project().state;
            let next = match state.as_mut().project() {
                StateProj::Authorizing { waiting } => {
                    let authorized = ready!(Pin::new(&mut waiting.token).poll(cx));
                    let (request, copy) = waiting.request.take().expect(COMPLETED);
                    let authorized = authorized.map_err(Error::Auth)?;
                    ResponseFuture::send(authorized, request, &mut waiting.service, copy).state
                }
                StateProj::Calling { call, then } => {
                    let response = ready!(call.poll(cx)).map_err(Error::Service)?;
                    let judged = then.take().and_then(|then| {
                        let replay_with =
                            then.attached.judge(response.status(), response.headers());
                        Some((replay_with?, then))
                    });
                    let Some((replay_with, then)) = judged else {
                        state.set(State::Done);
                        return Poll::Ready(Ok(response));
                    };
                    let response = Some(response);
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
                    let Rejecting { then, .. } = &mut **rejecting;
                    match (replacement.map_err(Error::Auth)?, then.replay.take()) {
                        (Some(authorized), Some(mut replay)) => {
                            let request = replay.0.as_mut().expect(COMPLETED);
                            let attached = authorized.attach(request.headers_mut());
                            State::ReadyingReplay { replay, attached }
                        }
                        // Not replayable, or the manager advises against it: the
                        // caller gets the 401 (the token was refreshed if it could be).
                        _ => {
                            state.set(State::Done);
                            return Poll::Ready(Ok(response));
                        }
                    }
                }
                StateProj::ReadyingReplay { replay, attached } => {
                    let Replay(request, service) = &mut **replay;
                    ready!(service.poll_ready(cx)).map_err(Error::Service)?;
                    let call = service.call(request.take().expect(COMPLETED));
                    let attached = attached.clone();
                    State::Replaying { call, attached }
                }
                StateProj::Replaying { call, attached } => {
                    let response = ready!(call.poll(cx));
                    if let Ok(response) = &response {
                        // Never a second replay; this records the token's budget.
                        let _ = attached.judge(response.status(), response.headers());
                    }
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
