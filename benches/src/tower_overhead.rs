//! The cost of the layer on a request that needs no refresh: a no-op service, bare,
//! behind tower-http's static `AddAuthorization`, and behind `ProcoreAuthLayer` with
//! one `TokenManager` or with a `TokenRegistry` of many tenants.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::FutureExt;
use http::{header, Request, Response};
use http_body_util::Empty;
use procore_auth_core::TokenManager;
use procore_auth_tower::ProcoreAuthLayer;
use tower::{Layer, Service, ServiceExt};
use tower_http::auth::AddAuthorizationLayer;

use crate::{fresh_token, registry, NeverRefreshes};

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
}

/// How many tenants the registry of [`Stack::ProcoreAuthRegistry`] holds (its name
/// says so too).
pub const REGISTRY_TENANTS: usize = 1_000;
const _: () = assert!(REGISTRY_TENANTS == 1_000);

impl Stack {
    /// Every stack, baselines first.
    pub const ALL: [Stack; 6] = [
        Stack::Bare,
        Stack::StaticBearer,
        Stack::ProcoreAuth,
        Stack::ProcoreAuthNoReplay,
        Stack::ProcoreAuthExtension,
        Stack::ProcoreAuthRegistry,
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

/// Sends `iterations` requests of `shape` through `stack`; returns the elapsed time.
pub fn run(stack: Stack, shape: Shape, iterations: u64) -> Duration {
    let template = shape.request();
    let token = fresh_token("tower");
    let manager = || {
        TokenManager::builder(NeverRefreshes)
            .token(token.clone())
            .build()
    };
    match stack {
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
        Stack::ProcoreAuth => drive(
            ProcoreAuthLayer::new(manager()).layer(noop()),
            &template,
            iterations,
        ),
        Stack::ProcoreAuthNoReplay => drive(
            ProcoreAuthLayer::new(manager())
                .without_replay()
                .layer(noop()),
            &template,
            iterations,
        ),
        Stack::ProcoreAuthExtension => {
            let mut template = template;
            template
                .extensions_mut()
                .insert(registry::user_id(REGISTRY_TENANTS / 2));
            drive(
                ProcoreAuthLayer::new(manager()).layer(noop()),
                &template,
                iterations,
            )
        }
        Stack::ProcoreAuthRegistry => {
            let tenants = registry::Fixture::new(REGISTRY_TENANTS);
            let mut template = template;
            template
                .extensions_mut()
                .insert(tenants.key(REGISTRY_TENANTS / 2));
            drive(
                ProcoreAuthLayer::new(tenants.registry().clone()).layer(noop()),
                &template,
                iterations,
            )
        }
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
}
