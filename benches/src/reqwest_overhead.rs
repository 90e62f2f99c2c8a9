//! The cost of the middleware on a request that needs no refresh: a middleware chain
//! ending in a terminal middleware that answers at once, with nothing in front, with a
//! middleware that inserts a static header, with that middleware inside
//! reqwest-retry's `RetryTransientMiddleware` (the retrying chain a user would
//! otherwise pick), and with `ProcoreAuthMiddleware`; and what recording Procore's
//! rate-limit headers (and admitting requests against them) adds, with a terminal
//! that answers with them (see [`crate::rate_limit`]).

use std::time::{Duration, Instant};

use futures_util::FutureExt;
use http::{header, Extensions, HeaderValue};
use procore_auth_core::{RateLimitPolicy, TokenManager};
use procore_auth_reqwest::ProcoreAuthMiddleware;
use reqwest::{Method, Request, Response, ResponseBuilderExt, Url};
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware, Middleware, Next, Result};
use reqwest_retry::policies::ExponentialBackoff;
use reqwest_retry::RetryTransientMiddleware;

use crate::rate_limit::{Answers, Headers};
use crate::{fresh_token, headroom, NeverRefreshes, Ran};

/// What runs before the terminal middleware.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chain {
    /// Only the terminal middleware: the floor.
    Bare,
    /// A middleware that inserts a static, sensitive `Authorization` header.
    StaticHeader,
    /// reqwest-retry's `RetryTransientMiddleware` (exponential backoff, 3 retries, as
    /// reqwest-middleware's README sets it up) alone: what its machinery costs.
    Retry,
    /// [`Chain::StaticHeader`] inside [`Chain::Retry`], so every attempt gets the
    /// header: the retrying chain [`Chain::ProcoreAuth`] competes with. (The
    /// middleware clones the request before every attempt and sends the clone.)
    StaticHeaderRetry,
    /// `ProcoreAuthMiddleware` with a fresh token.
    ProcoreAuth,
    /// Only the terminal middleware, answering with Procore's rate-limit headers:
    /// what making those answers costs, beside [`Chain::Bare`].
    BareRateLimitHeaders,
    /// [`Chain::ProcoreAuth`] answered with three other headers of the same sizes:
    /// the same chain and answers without the recording.
    ProcoreAuthOtherHeaders,
    /// [`Chain::ProcoreAuth`] answered with the `X-Rate-Limit-*` headers, which it
    /// records ([`RateLimitPolicy::Observe`], the default).
    ProcoreAuthRateLimitHeaders,
    /// [`Chain::ProcoreAuthRateLimitHeaders`] with [`RateLimitPolicy::Wait`]: every
    /// request is admitted against the budget, which never runs out.
    ProcoreAuthWait,
}

impl Chain {
    /// Every chain, baselines first.
    pub const ALL: [Chain; 9] = [
        Chain::Bare,
        Chain::StaticHeader,
        Chain::Retry,
        Chain::StaticHeaderRetry,
        Chain::ProcoreAuth,
        Chain::BareRateLimitHeaders,
        Chain::ProcoreAuthOtherHeaders,
        Chain::ProcoreAuthRateLimitHeaders,
        Chain::ProcoreAuthWait,
    ];

    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Chain::Bare => "terminal only",
            Chain::StaticHeader => "static header middleware",
            Chain::Retry => "reqwest-retry alone (no auth)",
            Chain::StaticHeaderRetry => "static header + reqwest-retry",
            Chain::ProcoreAuth => "ProcoreAuthMiddleware",
            Chain::BareRateLimitHeaders => "terminal only, rate-limit headers answered",
            Chain::ProcoreAuthOtherHeaders => "ProcoreAuthMiddleware, other headers answered",
            Chain::ProcoreAuthRateLimitHeaders => {
                "ProcoreAuthMiddleware, rate-limit headers answered"
            }
            Chain::ProcoreAuthWait => {
                "ProcoreAuthMiddleware, RateLimitPolicy::Wait, rate-limit headers answered"
            }
        }
    }

    /// The chains the ratio runner divides by: as [`Stack::compared_with`] (the
    /// middleware, which replays after a 401, against the retrying chain first).
    ///
    /// [`Stack::compared_with`]: crate::tower_overhead::Stack::compared_with
    pub fn compared_with(self) -> &'static [Chain] {
        match self {
            Chain::Bare | Chain::StaticHeader | Chain::StaticHeaderRetry => &[Chain::StaticHeader],
            Chain::Retry => &[Chain::Bare],
            Chain::ProcoreAuth => &[Chain::StaticHeaderRetry, Chain::StaticHeader],
            Chain::BareRateLimitHeaders => &[Chain::Bare],
            Chain::ProcoreAuthOtherHeaders => &[Chain::ProcoreAuth],
            Chain::ProcoreAuthRateLimitHeaders => {
                &[Chain::ProcoreAuth, Chain::ProcoreAuthOtherHeaders]
            }
            Chain::ProcoreAuthWait => &[Chain::ProcoreAuth, Chain::ProcoreAuthRateLimitHeaders],
        }
    }

    fn answers(self) -> Option<Headers> {
        match self {
            Chain::Bare
            | Chain::StaticHeader
            | Chain::Retry
            | Chain::StaticHeaderRetry
            | Chain::ProcoreAuth => None,
            Chain::ProcoreAuthOtherHeaders => Some(Headers::Other),
            Chain::BareRateLimitHeaders
            | Chain::ProcoreAuthRateLimitHeaders
            | Chain::ProcoreAuthWait => Some(Headers::RateLimit),
        }
    }
}

/// Answers 200 without sending anything, with the headers of its answers if any.
///
/// The response carries the request's URL, as one from the network does:
/// `ProcoreAuthMiddleware` judges (and records the rate-limit headers of) only
/// responses from the URL it sent to. (Without it, reqwest gives the response a
/// placeholder URL and the middleware would skip judging, as after a redirect.)
struct Terminal(Option<Answers>);

#[async_trait::async_trait]
impl Middleware for Terminal {
    async fn handle(&self, request: Request, _: &mut Extensions, _: Next<'_>) -> Result<Response> {
        let mut response = http::Response::builder()
            .url(request.url().clone())
            .body("")
            .expect("a valid response");
        if let Some(answers) = &self.0 {
            *response.headers_mut() = answers.next();
        }
        Ok(Response::from(response))
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

fn client(chain: Chain, manager: &TokenManager, answers: Option<Answers>) -> ClientWithMiddleware {
    let token = fresh_token("reqwest");
    let builder = ClientBuilder::new(
        procore_auth_reqwest::client_builder()
            .build()
            .expect("a reqwest client builds"),
    );
    let static_header = || {
        StaticHeader(
            token
                .header_value()
                .expect("bench tokens have an access token")
                .clone(),
        )
    };
    let retry = || {
        RetryTransientMiddleware::new_with_policy(
            ExponentialBackoff::builder().build_with_max_retries(3),
        )
    };
    let builder = match chain {
        Chain::Bare => builder,
        Chain::StaticHeader => builder.with(static_header()),
        Chain::Retry => builder.with(retry()),
        Chain::StaticHeaderRetry => builder.with(retry()).with(static_header()),
        Chain::BareRateLimitHeaders => builder,
        Chain::ProcoreAuth
        | Chain::ProcoreAuthOtherHeaders
        | Chain::ProcoreAuthRateLimitHeaders
        | Chain::ProcoreAuthWait => builder.with(ProcoreAuthMiddleware::new(manager.clone())),
    };
    builder.with(Terminal(answers)).build()
}

/// Sends `iterations` requests through `chain`; returns the elapsed time.
pub fn run(chain: Chain, iterations: u64) -> Duration {
    run_inspected(chain, iterations).elapsed
}

/// [`run`], also giving what it ran with (the manager is unused by the chains
/// without one).
pub fn run_inspected(chain: Chain, iterations: u64) -> Ran {
    let manager = TokenManager::builder(NeverRefreshes)
        .token(fresh_token("reqwest"))
        .rate_limit(match chain {
            Chain::ProcoreAuthWait => RateLimitPolicy::Wait {
                max_wait: Duration::from_secs(1),
            },
            _ => RateLimitPolicy::Observe,
        })
        .build();
    let answers = chain
        .answers()
        .map(|headers| Answers::new(headers, iterations));
    let client = client(chain, &manager, answers.clone());
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
    // Copies with room for one more header, as a request from reqwest's
    // `RequestBuilder` has (see `crate::headroom` for why not plain `try_clone`s).
    headroom::reserve_in_template(headers);
    let started = Instant::now();
    for _ in 0..iterations {
        let mut request = template.try_clone().expect("no body");
        headroom::make_room(request.headers_mut());
        let response = client
            .execute(std::hint::black_box(request))
            .now_or_never()
            .expect("answers at once")
            .expect("never fails");
        std::hint::black_box(response);
    }
    Ran {
        elapsed: started.elapsed(),
        manager,
        answers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_chain_answers() {
        for chain in Chain::ALL {
            run(chain, 10);
        }
    }

    /// As the tower stacks' test: the rate-limit chains record the budget answered.
    #[test]
    fn the_rate_limit_chains_record_the_budget_answered() {
        let requests = crate::rate_limit::ANSWERS_PER_WINDOW + 10;
        for chain in [Chain::ProcoreAuthRateLimitHeaders, Chain::ProcoreAuthWait] {
            let ran = run_inspected(chain, requests);
            let (remaining, reset) = ran.answers.expect("answered").last().expect("answered");
            let budget = ran.manager.rate_limit().expect("recorded");
            assert_eq!(
                (budget.remaining, budget.reset_at),
                (
                    remaining,
                    std::time::UNIX_EPOCH + Duration::from_secs(reset)
                ),
                "{}",
                chain.name()
            );
        }
        let ran = run_inspected(Chain::ProcoreAuthOtherHeaders, 10);
        assert_eq!(ran.answers.expect("answered").sent(), 10);
        assert_eq!(ran.manager.rate_limit(), None);
    }
}
