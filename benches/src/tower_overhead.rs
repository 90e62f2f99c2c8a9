//! The cost of the layer on a request that needs no refresh: a no-op service, bare,
//! behind tower-http's static `AddAuthorization`, behind the off-the-shelf replay stack
//! a user would otherwise pick (`AddAuthorization` inside `tower::retry`, retrying
//! once on a 401), and behind `ProcoreAuthLayer` with one `TokenManager` or with a
//! `TokenRegistry` of many tenants; the replaying stacks again over a service holding
//! a real hyper-util client (what cloning it per request costs); and what recording
//! Procore's rate-limit headers (and admitting requests against them) adds, with a
//! service that answers with them (see [`crate::rate_limit`]).

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::FutureExt;
use http::{header, Request, Response, StatusCode};
use http_body_util::Empty;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use procore_auth_core::{RateLimitPolicy, TokenManager};
use procore_auth_tower::ProcoreAuthLayer;
use tower::retry::{Policy, RetryLayer};
use tower::{Layer, Service, ServiceExt};
use tower_http::auth::AddAuthorizationLayer;

use crate::rate_limit::{Answers, Headers};
use crate::{fresh_token, headroom, registry, NeverRefreshes, Ran};

type Body = Empty<Bytes>;

/// What wraps the no-op service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stack {
    /// Nothing: the floor.
    Bare,
    /// tower-http's `AddAuthorizationLayer::bearer` with a static token.
    StaticBearer,
    /// `tower::retry::RetryLayer` with [`RetryOn401`] around the no-op service, no
    /// authorization: what the retry machinery alone costs.
    Retry,
    /// [`Stack::StaticBearer`] inside `tower::retry` with [`RetryOn401`]: the
    /// off-the-shelf stack that replays a request after a 401, which
    /// [`Stack::ProcoreAuth`] competes with. (`Retry` clones itself, the policy and
    /// the inner service, and the request, per request.)
    StaticBearerRetry,
    /// `ProcoreAuthLayer` with the default replay policy (requests are cloned before
    /// sending so a 401 can be replayed).
    ProcoreAuth,
    /// `ProcoreAuthLayer::without_replay`.
    ProcoreAuthNoReplay,
    /// [`Stack::StaticBearerRetry`] over a service holding a real hyper-util legacy
    /// `Client` (see [`ClientHandle`]), cloned with the service per request.
    StaticBearerRetryClient,
    /// [`Stack::ProcoreAuth`] over the same [`ClientHandle`]: the replay path clones
    /// the inner service per request, as `tower::retry` does.
    ProcoreAuthClient,
    /// `ProcoreAuthLayer` over one manager, as [`Stack::ProcoreAuth`], for requests
    /// that carry a `u64` in their extensions as [`Stack::ProcoreAuthRegistry`]'s do:
    /// it separates what the extension costs (each `Request::clone`, here and for
    /// the replay copy, clones `http::Extensions`) from what the registry costs.
    ProcoreAuthExtension,
    /// `ProcoreAuthLayer` (default replay policy) over a `TokenRegistry<u64>` of
    /// [`REGISTRY_TENANTS`] resident tenants with fresh tokens; each request carries
    /// its tenant's user id in its extensions (one of the resident tenants).
    ProcoreAuthRegistry,
    /// The bare service answering with Procore's rate-limit headers: what making
    /// those answers costs the mock, beside [`Stack::Bare`].
    BareRateLimitHeaders,
    /// [`Stack::ProcoreAuth`] answered with three other headers of the same sizes,
    /// which the manager looks for its own among and does not record: the same stack
    /// and the same answers without the recording.
    ProcoreAuthOtherHeaders,
    /// [`Stack::ProcoreAuth`] answered with `X-Rate-Limit-Limit`, `-Remaining` and
    /// `-Reset`, which judging every response records into the manager's budget
    /// ([`RateLimitPolicy::Observe`], the default).
    ProcoreAuthRateLimitHeaders,
    /// [`Stack::ProcoreAuthNoReplay`] answered with the rate-limit headers.
    ProcoreAuthNoReplayRateLimitHeaders,
    /// [`Stack::ProcoreAuthRateLimitHeaders`] with [`RateLimitPolicy::Wait`]: every
    /// request is also admitted against the recorded budget (one compare-and-swap),
    /// which never runs out ([`ANSWERS_PER_WINDOW`](crate::rate_limit::ANSWERS_PER_WINDOW)
    /// per window of 3 600).
    ProcoreAuthWait,
}

/// How many tenants the registry of [`Stack::ProcoreAuthRegistry`] holds (its name
/// says so too).
pub const REGISTRY_TENANTS: usize = 1_000;
const _: () = assert!(REGISTRY_TENANTS == 1_000);

impl Stack {
    /// Every stack, baselines first.
    pub const ALL: [Stack; 15] = [
        Stack::Bare,
        Stack::StaticBearer,
        Stack::Retry,
        Stack::StaticBearerRetry,
        Stack::ProcoreAuth,
        Stack::ProcoreAuthNoReplay,
        Stack::StaticBearerRetryClient,
        Stack::ProcoreAuthClient,
        Stack::ProcoreAuthExtension,
        Stack::ProcoreAuthRegistry,
        Stack::BareRateLimitHeaders,
        Stack::ProcoreAuthOtherHeaders,
        Stack::ProcoreAuthRateLimitHeaders,
        Stack::ProcoreAuthNoReplayRateLimitHeaders,
        Stack::ProcoreAuthWait,
    ];

    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Stack::Bare => "bare service",
            Stack::StaticBearer => "tower-http AddAuthorization",
            Stack::Retry => "tower::retry alone (no auth)",
            Stack::StaticBearerRetry => "AddAuthorization + tower::retry",
            Stack::ProcoreAuth => "ProcoreAuthLayer",
            Stack::ProcoreAuthNoReplay => "ProcoreAuthLayer (no replay)",
            Stack::StaticBearerRetryClient => "AddAuthorization + tower::retry, hyper-util Client",
            Stack::ProcoreAuthClient => "ProcoreAuthLayer, hyper-util Client",
            Stack::ProcoreAuthExtension => "ProcoreAuthLayer (one manager, u64 extension)",
            Stack::ProcoreAuthRegistry => "ProcoreAuthLayer (registry, 1000 tenants)",
            Stack::BareRateLimitHeaders => "bare service, rate-limit headers answered",
            Stack::ProcoreAuthOtherHeaders => "ProcoreAuthLayer, other headers answered",
            Stack::ProcoreAuthRateLimitHeaders => "ProcoreAuthLayer, rate-limit headers answered",
            Stack::ProcoreAuthNoReplayRateLimitHeaders => {
                "ProcoreAuthLayer (no replay), rate-limit headers answered"
            }
            Stack::ProcoreAuthWait => {
                "ProcoreAuthLayer, RateLimitPolicy::Wait, rate-limit headers answered"
            }
        }
    }

    /// The stacks the ratio runner divides by: for the layer with replay, the
    /// off-the-shelf replay stack (`AddAuthorization` + `tower::retry`), then
    /// tower-http's `AddAuthorization`; `AddAuthorization` for the other
    /// single-manager stacks; the same stack over the no-op service for the stacks
    /// over a client handle; the layer over one manager for the registry's; for a
    /// stack answered with headers, the same stack answered without, then (for
    /// recording and for admission) the one that isolates what it adds.
    pub fn compared_with(self) -> &'static [Stack] {
        match self {
            Stack::Bare
            | Stack::StaticBearer
            | Stack::StaticBearerRetry
            | Stack::ProcoreAuthNoReplay => &[Stack::StaticBearer],
            Stack::Retry => &[Stack::Bare],
            Stack::ProcoreAuth => &[Stack::StaticBearerRetry, Stack::StaticBearer],
            Stack::StaticBearerRetryClient => &[Stack::StaticBearerRetry],
            Stack::ProcoreAuthClient => &[Stack::StaticBearerRetryClient, Stack::ProcoreAuth],
            // The registry (and the same request over one manager) is compared with
            // the same layer over one manager.
            Stack::ProcoreAuthExtension | Stack::ProcoreAuthRegistry => &[Stack::ProcoreAuth],
            Stack::BareRateLimitHeaders => &[Stack::Bare],
            Stack::ProcoreAuthOtherHeaders => &[Stack::ProcoreAuth],
            // Recording: against the same answers unrecorded.
            Stack::ProcoreAuthRateLimitHeaders => {
                &[Stack::ProcoreAuth, Stack::ProcoreAuthOtherHeaders]
            }
            Stack::ProcoreAuthNoReplayRateLimitHeaders => &[Stack::ProcoreAuthNoReplay],
            // Admission: against recording alone.
            Stack::ProcoreAuthWait => &[Stack::ProcoreAuth, Stack::ProcoreAuthRateLimitHeaders],
        }
    }
}

/// The request sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// `GET` with no headers.
    Empty,
    /// `GET` with the handful of headers a real client sends.
    Typical,
}

impl Shape {
    /// Both shapes.
    pub const ALL: [Shape; 2] = [Shape::Typical, Shape::Empty];

    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Shape::Empty => "empty request",
            Shape::Typical => "typical request",
        }
    }

    fn request(self) -> Request<Body> {
        let mut request = Request::get("https://api.procore.com/rest/v1.0/projects?company_id=1")
            .body(Body::new())
            .expect("valid request");
        if self == Shape::Typical {
            let headers = request.headers_mut();
            headers.insert(header::ACCEPT, "application/json".parse().expect("valid"));
            headers.insert(
                header::USER_AGENT,
                "procore-sync/1.4".parse().expect("valid"),
            );
            headers.insert("procore-company-id", "4294967297".parse().expect("valid"));
            headers.insert(header::ACCEPT_ENCODING, "gzip".parse().expect("valid"));
        }
        request
    }
}

fn noop(
) -> impl Service<Request<Body>, Response = Response<Body>, Error = Infallible, Future: Send> + Clone
{
    tower::service_fn(|_: Request<Body>| async { Ok::<_, Infallible>(Response::new(Body::new())) })
}

/// A service as users' services over a real client are: it holds a hyper-util legacy
/// `Client` (an HTTP/1 connector, its pool, its executor) and is cloned with it, but
/// answers at once without touching the network. Readiness is the client's.
///
/// `ProcoreAuthLayer`'s replay path keeps a clone of the inner service per request,
/// and `tower::retry` clones itself (so the inner service) per request: over this
/// service both pay what cloning a real client handle costs.
#[derive(Clone, Debug)]
pub struct ClientHandle {
    client: Client<HttpConnector, Body>,
}

impl ClientHandle {
    fn new() -> Self {
        Self {
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }
}

impl Service<Request<Body>> for ClientHandle {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Ready<Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Service::<Request<Body>>::poll_ready(&mut self.client, cx).map(|ready| {
            ready.expect("a legacy client is always ready");
            Ok(())
        })
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        // Where the client would send `request`.
        std::hint::black_box((&self.client, request));
        ready(Ok(Response::new(Body::new())))
    }
}

/// `tower::retry`'s policy as a user would write it to replay after a 401: retry
/// once when the response is a 401, keeping a clone of every request for it.
///
/// The state is per request: `Retry` clones its policy for every request it sends.
#[derive(Clone, Copy, Debug)]
pub struct RetryOn401 {
    retries_left: u8,
}

impl RetryOn401 {
    /// One retry.
    pub fn once() -> Self {
        Self { retries_left: 1 }
    }
}

impl<B: Clone, ResBody, E> Policy<Request<B>, Response<ResBody>, E> for RetryOn401 {
    type Future = Ready<()>;

    fn retry(
        &mut self,
        _: &mut Request<B>,
        result: &mut Result<Response<ResBody>, E>,
    ) -> Option<Self::Future> {
        match result {
            Ok(response) if response.status() == StatusCode::UNAUTHORIZED => {
                self.retries_left = self.retries_left.checked_sub(1)?;
                Some(ready(()))
            }
            _ => None,
        }
    }

    fn clone_request(&mut self, request: &Request<B>) -> Option<Request<B>> {
        // `http::Request`'s `Clone`: method, URI, version, headers, extensions and
        // body, each cloned (what `ProcoreAuthLayer`'s default replay policy does).
        Some(request.clone())
    }
}

/// Answers at once, with the headers of `answers`.
fn answering(
    answers: Answers,
) -> impl Service<Request<Body>, Response = Response<Body>, Error = Infallible, Future: Send> + Clone
{
    tower::service_fn(move |_: Request<Body>| {
        let headers = answers.next();
        async move {
            let mut response = Response::new(Body::new());
            *response.headers_mut() = headers;
            Ok::<_, Infallible>(response)
        }
    })
}

/// Sends `iterations` requests of `shape` through `stack`; returns the elapsed time.
pub fn run(stack: Stack, shape: Shape, iterations: u64) -> Duration {
    run_inspected(stack, shape, iterations).elapsed
}

/// How long a request may wait for a reset under [`Stack::ProcoreAuthWait`] (none
/// does: the budget never runs out).
const MAX_WAIT: Duration = Duration::from_secs(1);

/// [`run`], also giving what it ran with (the manager is unused by the stacks
/// without one).
pub fn run_inspected(stack: Stack, shape: Shape, iterations: u64) -> Ran {
    let mut template = shape.request();
    let token = fresh_token("tower");
    let manager = TokenManager::builder(NeverRefreshes)
        .token(token.clone())
        .rate_limit(match stack {
            Stack::ProcoreAuthWait => RateLimitPolicy::Wait { max_wait: MAX_WAIT },
            _ => RateLimitPolicy::Observe,
        })
        .build();
    let answers = match stack {
        Stack::ProcoreAuthOtherHeaders => Some(Answers::new(Headers::Other, iterations)),
        Stack::BareRateLimitHeaders
        | Stack::ProcoreAuthRateLimitHeaders
        | Stack::ProcoreAuthNoReplayRateLimitHeaders
        | Stack::ProcoreAuthWait => Some(Answers::new(Headers::RateLimit, iterations)),
        _ => None,
    };
    let answered = || {
        answering(
            answers
                .clone()
                .expect("this stack is answered with headers"),
        )
    };
    let layer = || ProcoreAuthLayer::new(manager.clone());
    let bearer = || {
        AddAuthorizationLayer::bearer(
            token
                .access_token()
                .expect("bench tokens have an access token")
                .secret(),
        )
    };
    let retry = || RetryLayer::new(RetryOn401::once());
    let elapsed = match stack {
        Stack::Bare => drive(noop(), &template, iterations),
        Stack::StaticBearer => drive(bearer().layer(noop()), &template, iterations),
        Stack::Retry => drive(retry().layer(noop()), &template, iterations),
        Stack::StaticBearerRetry => {
            drive(retry().layer(bearer().layer(noop())), &template, iterations)
        }
        Stack::ProcoreAuth => drive(layer().layer(noop()), &template, iterations),
        Stack::ProcoreAuthNoReplay => drive(
            layer().without_replay().layer(noop()),
            &template,
            iterations,
        ),
        Stack::StaticBearerRetryClient => drive(
            retry().layer(bearer().layer(ClientHandle::new())),
            &template,
            iterations,
        ),
        Stack::ProcoreAuthClient => {
            drive(layer().layer(ClientHandle::new()), &template, iterations)
        }
        Stack::ProcoreAuthExtension => {
            template
                .extensions_mut()
                .insert(registry::user_id(REGISTRY_TENANTS / 2));
            drive(layer().layer(noop()), &template, iterations)
        }
        Stack::ProcoreAuthRegistry => {
            let tenants = registry::Fixture::new(REGISTRY_TENANTS);
            template
                .extensions_mut()
                .insert(tenants.key(REGISTRY_TENANTS / 2));
            drive(
                ProcoreAuthLayer::new(tenants.registry().clone()).layer(noop()),
                &template,
                iterations,
            )
        }
        Stack::BareRateLimitHeaders => drive(answered(), &template, iterations),
        Stack::ProcoreAuthOtherHeaders
        | Stack::ProcoreAuthRateLimitHeaders
        | Stack::ProcoreAuthWait => drive(layer().layer(answered()), &template, iterations),
        Stack::ProcoreAuthNoReplayRateLimitHeaders => drive(
            layer().without_replay().layer(answered()),
            &template,
            iterations,
        ),
    };
    Ran {
        elapsed,
        manager,
        answers,
    }
}

/// The requests sent: copies of a template with room for one more header, as a
/// request from a builder has (see [`crate::headroom`] for why not plain clones).
struct Template(Request<Body>);

impl Template {
    fn new(request: &Request<Body>) -> Self {
        let mut template = request.clone();
        headroom::reserve_in_template(template.headers_mut());
        Self(template)
    }

    /// A copy of the template, with room for one more header.
    fn request(&self) -> Request<Body> {
        let mut request = self.0.clone();
        headroom::make_room(request.headers_mut());
        request
    }
}

fn drive<S>(mut service: S, template: &Request<Body>, iterations: u64) -> Duration
where
    S: Service<Request<Body>, Response = Response<Body>>,
    S::Error: std::fmt::Debug,
{
    let template = Template::new(template);
    let started = Instant::now();
    for _ in 0..iterations {
        let ready = ServiceExt::<Request<Body>>::ready(&mut service)
            .now_or_never()
            .expect("always ready")
            .expect("never fails");
        let response = ready
            .call(std::hint::black_box(template.request()))
            .now_or_never()
            .expect("answers at once")
            .expect("never fails");
        std::hint::black_box(response);
    }
    started.elapsed()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The peer stack replays: `AddAuthorization` inside `tower::retry` with
    /// [`RetryOn401`] sends a request rejected with a 401 twice, both times with the
    /// header, and gives the second answer; a 200 is sent once.
    #[test]
    fn the_retry_stack_replays_once_after_a_401() {
        use std::sync::atomic::{AtomicU16, Ordering};
        use std::sync::Arc;
        for (status, calls) in [(StatusCode::UNAUTHORIZED, 2), (StatusCode::OK, 1)] {
            let sent = Arc::new(AtomicU16::new(0));
            let counting = {
                let sent = Arc::clone(&sent);
                tower::service_fn(move |request: Request<Body>| {
                    assert!(request.headers().contains_key(header::AUTHORIZATION));
                    sent.fetch_add(1, Ordering::Relaxed);
                    let mut response = Response::new(Body::new());
                    *response.status_mut() = status;
                    async move { Ok::<_, Infallible>(response) }
                })
            };
            let mut service = RetryLayer::new(RetryOn401::once())
                .layer(AddAuthorizationLayer::bearer("static").layer(counting));
            let response = ServiceExt::<Request<Body>>::ready(&mut service)
                .now_or_never()
                .expect("ready")
                .expect("never fails")
                .call(Shape::Typical.request())
                .now_or_never()
                .expect("answers at once")
                .expect("never fails");
            assert_eq!(response.status(), status);
            assert_eq!(sent.load(Ordering::Relaxed), calls);
        }
    }

    /// The fixture's requests are the template's.
    #[test]
    fn requests_are_like_the_template() {
        for shape in Shape::ALL {
            let mut template = shape.request();
            template.extensions_mut().insert(7_u64);
            let request = Template::new(&template).request();
            assert_eq!(request.method(), template.method());
            assert_eq!(request.uri(), template.uri());
            assert_eq!(request.version(), template.version());
            assert_eq!(request.headers(), template.headers());
            assert_eq!(request.extensions().get::<u64>(), Some(&7));
        }
    }

    #[test]
    fn every_stack_sends_every_shape() {
        for shape in Shape::ALL {
            for stack in Stack::ALL {
                run(stack, shape, 10);
            }
        }
    }

    /// The rate-limit stacks record every answer's budget (across windows, and under
    /// `Wait` without ever waiting: `drive` fails a request that does not answer at
    /// once); the other headers are not recorded.
    #[test]
    fn the_rate_limit_stacks_record_the_budget_answered() {
        let requests = 2 * crate::rate_limit::ANSWERS_PER_WINDOW + 10;
        for stack in [
            Stack::ProcoreAuthRateLimitHeaders,
            Stack::ProcoreAuthNoReplayRateLimitHeaders,
            Stack::ProcoreAuthWait,
        ] {
            let ran = run_inspected(stack, Shape::Typical, requests);
            let answers = ran.answers.expect("answered with headers");
            assert_eq!(answers.sent(), requests, "{}", stack.name());
            let (remaining, reset) = answers.last().expect("answered");
            let budget = ran.manager.rate_limit().expect("recorded");
            assert_eq!(budget.limit, crate::rate_limit::LIMIT, "{}", stack.name());
            assert_eq!(budget.remaining, remaining, "{}", stack.name());
            assert_eq!(
                budget.reset_at,
                std::time::UNIX_EPOCH + Duration::from_secs(reset),
                "{}",
                stack.name()
            );
            assert_eq!(ran.manager.metrics().rate_limit_headers_ignored, 0);
        }
        let ran = run_inspected(Stack::ProcoreAuthOtherHeaders, Shape::Typical, 100);
        assert_eq!(ran.answers.expect("answered").sent(), 100);
        assert_eq!(ran.manager.rate_limit(), None);
        assert_eq!(ran.manager.metrics().rate_limit_headers_ignored, 0);
    }
}
