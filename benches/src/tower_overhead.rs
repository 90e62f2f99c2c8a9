//! The cost of the layer on a request that needs no refresh: a no-op service, bare,
//! behind tower-http's static `AddAuthorization`, and behind `ProcoreAuthLayer` with
//! one `TokenManager` or with a `TokenRegistry` of many tenants; and what recording
//! Procore's rate-limit headers (and admitting requests against them) adds, with a
//! service that answers with them (see [`crate::rate_limit`]).

use std::convert::Infallible;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::FutureExt;
use http::{header, Request, Response};
use http_body_util::Empty;
use procore_auth_core::{RateLimitPolicy, TokenManager};
use procore_auth_tower::ProcoreAuthLayer;
use tower::{Layer, Service, ServiceExt};
use tower_http::auth::AddAuthorizationLayer;

use crate::rate_limit::{Answers, Headers};
use crate::{fresh_token, registry, NeverRefreshes, Ran};

type Body = Empty<Bytes>;

/// What wraps the no-op service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stack {
    /// Nothing: the floor.
    Bare,
    /// tower-http's `AddAuthorizationLayer::bearer` with a static token.
    StaticBearer,
    /// `ProcoreAuthLayer` with the default replay policy (requests are cloned before
    /// sending so a 401 can be replayed).
    ProcoreAuth,
    /// `ProcoreAuthLayer::without_replay`.
    ProcoreAuthNoReplay,
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
    pub const ALL: [Stack; 11] = [
        Stack::Bare,
        Stack::StaticBearer,
        Stack::ProcoreAuth,
        Stack::ProcoreAuthNoReplay,
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
            Stack::ProcoreAuth => "ProcoreAuthLayer",
            Stack::ProcoreAuthNoReplay => "ProcoreAuthLayer (no replay)",
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

    /// The stacks the ratio runner divides by: tower-http's `AddAuthorization` for
    /// the single-manager stacks, the layer over one manager for the registry's; for
    /// a stack answered with headers, the same stack answered without, then (for
    /// recording and for admission) the one that isolates what it adds.
    pub fn compared_with(self) -> &'static [Stack] {
        match self {
            Stack::Bare | Stack::StaticBearer | Stack::ProcoreAuth | Stack::ProcoreAuthNoReplay => {
                &[Stack::StaticBearer]
            }
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
    let elapsed = match stack {
        Stack::Bare => drive(noop(), &template, iterations),
        Stack::StaticBearer => drive(
            AddAuthorizationLayer::bearer(
                token
                    .access_token()
                    .expect("bench tokens have an access token")
                    .secret(),
            )
            .layer(noop()),
            &template,
            iterations,
        ),
        Stack::ProcoreAuth => drive(layer().layer(noop()), &template, iterations),
        Stack::ProcoreAuthNoReplay => drive(
            layer().without_replay().layer(noop()),
            &template,
            iterations,
        ),
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

fn drive<S>(mut service: S, template: &Request<Body>, iterations: u64) -> Duration
where
    S: Service<Request<Body>, Response = Response<Body>>,
    S::Error: std::fmt::Debug,
{
    let started = Instant::now();
    for _ in 0..iterations {
        let ready = ServiceExt::<Request<Body>>::ready(&mut service)
            .now_or_never()
            .expect("always ready")
            .expect("never fails");
        let response = ready
            .call(std::hint::black_box(template.clone()))
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
