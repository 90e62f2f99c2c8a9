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
        /// Waiting for a token before the first call.
        Authorizing { waiting: Box<Authorizing<S, B>> },
        /// The first call; `judging` is `None` for a request without our token.
        Calling {
            #[pin]
            call: S::Future,
            judging: Option<Box<Judging<S, B>>>,
        },
        /// A 401 reported to the manager, waiting for the token to replay with.
        Rejecting { rejecting: Box<Rejecting<S, B>> },
        /// Waiting for the replay's service to be ready.
        ReadyingReplay { readying: Box<Readying<S, B>> },
        /// The replay's call; its response is final.
        Replaying { #[pin] call: S::Future },
        Done,
    }
}

/// A copy of the request and a service to send it with, for the one replay.
pub(crate) struct Replay<S, B> {
    pub(crate) request: Request<B>,
    pub(crate) service: S,
}

/// A replay whose service is being made ready. `request` is taken for the call.
struct Readying<S, B> {
    service: S,
    request: Option<Request<B>>,
}

/// A request waiting for a token, with the ready service to send it and the copy kept
/// for a replay. `send` is taken when the token arrives.
struct Authorizing<S, B> {
    token: AuthorizeFuture,
    manager: TokenManager,
    send: Option<Send<S, B>>,
}

struct Send<S, B> {
    request: Request<B>,
    service: S,
    copy: Option<Request<B>>,
}

/// What judging the first response needs.
struct Judging<S, B> {
    manager: TokenManager,
    authorized: Authorized,
    replay: Option<Replay<S, B>>,
}

/// A rejected response and what replaying it needs. `then` is taken when the
/// manager answers.
struct Rejecting<S: Service<Request<B>>, B> {
    replay_with: ReplayFuture,
    then: Option<(TokenManager, S::Response, Option<Replay<S, B>>)>,
}

const COMPLETED: &str = "ResponseFuture polled after completion";

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    /// A request that does not get our token: only the inner call.
    pub(crate) fn untouched(call: S::Future) -> Self {
        Self {
            state: State::Calling {
                call,
                judging: None,
            },
        }
    }

    /// The token was fresh and the request is on its way.
    pub(crate) fn calling(
        call: S::Future,
        manager: &TokenManager,
        authorized: Authorized,
        replay: Option<Replay<S, B>>,
    ) -> Self {
        Self {
            state: State::Calling {
                call,
                judging: Some(Box::new(Judging {
                    manager: manager.clone(),
                    authorized,
                    replay,
                })),
            },
        }
    }

    /// Waits for a token, then calls `ready` (a service already made ready), which is
    /// kept for the replay if there is a `copy` to replay.
    pub(crate) fn authorizing(
        token: AuthorizeFuture,
        manager: &TokenManager,
        request: Request<B>,
        ready: S,
        copy: Option<Request<B>>,
    ) -> Self {
        Self {
            state: State::Authorizing {
                waiting: Box::new(Authorizing {
                    token,
                    manager: manager.clone(),
                    send: Some(Send {
                        request,
                        service: ready,
                        copy,
                    }),
                }),
            },
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
                    let authorized =
                        ready!(Pin::new(&mut waiting.token).poll(cx)).map_err(Error::Auth)?;
                    let Send {
                        mut request,
                        mut service,
                        copy,
                    } = waiting.send.take().expect(COMPLETED);
                    waiting.manager.attach(&authorized, request.headers_mut());
                    let call = service.call(request);
                    State::Calling {
                        call,
                        judging: Some(Box::new(Judging {
                            manager: waiting.manager.clone(),
                            authorized,
                            replay: copy.map(|request| Replay { request, service }),
                        })),
                    }
                }
                StateProj::Calling { call, judging } => {
                    let response = ready!(call.poll(cx)).map_err(Error::Service)?;
                    let rejected = judging.take().and_then(|judging| {
                        let Judging {
                            manager,
                            authorized,
                            replay,
                        } = *judging;
                        let replay_with = manager.judge(&authorized, response.status())?;
                        Some((replay_with, manager, replay))
                    });
                    match rejected {
                        Some((replay_with, manager, replay)) => State::Rejecting {
                            rejecting: Box::new(Rejecting {
                                replay_with,
                                then: Some((manager, response, replay)),
                            }),
                        },
                        None => {
                            state.set(State::Done);
                            return Poll::Ready(Ok(response));
                        }
                    }
                }
                StateProj::Rejecting { rejecting } => {
                    let replacement = ready!(Pin::new(&mut rejecting.replay_with).poll(cx))
                        .map_err(Error::Auth)?;
                    let (manager, response, replay) = rejecting.then.take().expect(COMPLETED);
                    match (replacement, replay) {
                        (
                            Some(authorized),
                            Some(Replay {
                                mut request,
                                service,
                            }),
                        ) => {
                            manager.attach(&authorized, request.headers_mut());
                            State::ReadyingReplay {
                                readying: Box::new(Readying {
                                    service,
                                    request: Some(request),
                                }),
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
                StateProj::ReadyingReplay { readying } => {
                    ready!(readying.service.poll_ready(cx)).map_err(Error::Service)?;
                    let request = readying.request.take().expect(COMPLETED);
                    State::Replaying {
                        call: readying.service.call(request),
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

impl<S, B> fmt::Debug for ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Authorizing { .. } => "authorizing",
            State::Calling { judging: None, .. } => "calling (no token)",
            State::Calling { .. } => "calling",
            State::Rejecting { .. } => "rejecting",
            State::ReadyingReplay { .. } => "readying replay",
            State::Replaying { .. } => "replaying",
            State::Done => "done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}
