//! The cost of the middleware on a request that needs no refresh: a middleware chain
//! ending in a terminal middleware that answers at once, with nothing in front, with a
//! middleware that inserts a static header, and with `ProcoreAuthMiddleware`.

use std::time::{Duration, Instant};

use futures_util::FutureExt;
use http::{header, Extensions, HeaderValue};
use procore_auth_core::TokenManager;
use procore_auth_reqwest::ProcoreAuthMiddleware;
use reqwest::{Method, Request, Response, Url};
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware, Middleware, Next, Result};

use crate::{fresh_token, NeverRefreshes};

/// What runs before the terminal middleware.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chain {
    /// Only the terminal middleware: the floor.
    Bare,
    /// A middleware that inserts a static, sensitive `Authorization` header.
    StaticHeader,
    /// `ProcoreAuthMiddleware` with a fresh token.
    ProcoreAuth,
}

impl Chain {
    /// Every chain, baselines first.
    pub const ALL: [Chain; 3] = [Chain::Bare, Chain::StaticHeader, Chain::ProcoreAuth];

    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Chain::Bare => "terminal only",
            Chain::StaticHeader => "static header middleware",
            Chain::ProcoreAuth => "ProcoreAuthMiddleware",
        }
    }
}

/// Answers 200 without sending anything.
struct Terminal;

#[async_trait::async_trait]
impl Middleware for Terminal {
    async fn handle(&self, _: Request, _: &mut Extensions, _: Next<'_>) -> Result<Response> {
        Ok(Response::from(http::Response::new("")))
    }
}

/// The simplest possible authorization middleware: one static header.
struct StaticHeader(HeaderValue);

#[async_trait::async_trait]
impl Middleware for StaticHeader {
    async fn handle(
        &self,
        mut request: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> Result<Response> {
        request
            .headers_mut()
            .insert(header::AUTHORIZATION, self.0.clone());
        next.run(request, extensions).await
    }
}

fn client(chain: Chain) -> ClientWithMiddleware {
    let token = fresh_token("reqwest");
    let builder = ClientBuilder::new(
        procore_auth_reqwest::client_builder()
            .build()
            .expect("a reqwest client builds"),
    );
    let builder = match chain {
        Chain::Bare => builder,
        Chain::StaticHeader => builder.with(StaticHeader(
            token
                .header_value()
                .expect("bench tokens have an access token")
                .clone(),
        )),
        Chain::ProcoreAuth => builder.with(ProcoreAuthMiddleware::new(
            TokenManager::builder(NeverRefreshes).token(token).build(),
        )),
    };
    builder.with(Terminal).build()
}

/// Sends `iterations` requests through `chain`; returns the elapsed time.
pub fn run(chain: Chain, iterations: u64) -> Duration {
    let client = client(chain);
    let url =
        Url::parse("https://api.procore.com/rest/v1.0/projects?company_id=1").expect("valid URL");
    let mut template = Request::new(Method::GET, url);
    let headers = template.headers_mut();
    headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    headers.insert(
        header::USER_AGENT,
        HeaderValue::from_static("procore-sync/1.4"),
    );
    headers.insert("procore-company-id", HeaderValue::from_static("4294967297"));
    let started = Instant::now();
    for _ in 0..iterations {
        let request = template.try_clone().expect("no body");
        let response = client
            .execute(std::hint::black_box(request))
            .now_or_never()
            .expect("answers at once")
            .expect("never fails");
        std::hint::black_box(response);
    }
    started.elapsed()
}
