//! [`ProcoreRetryMiddleware`]: sends a request again where Procore allows it.

use std::sync::Arc;

use http::Extensions;
use procore_auth_core::{Clock, RetryPolicy, SystemClock};
use reqwest::{Request, Response};
use reqwest_middleware::{Middleware, Next, Result};

/// Retries requests as [`RetryPolicy`] allows: 429 and 503 after the server's
/// `Retry-After` (seconds or HTTP date) or rate-limit reset, connection failures
/// before sending, idempotent methods only unless opted in, with bounded attempts and
/// total time. `reqwest-retry` does not fit Procore: it retries 429 on its own
/// schedule, ignoring `Retry-After` and the reset, which Procore asks clients to
/// honour.
///
/// Put it **before** (outside) [`ProcoreAuthMiddleware`](crate::ProcoreAuthMiddleware),
/// so that every attempt passes through it and carries the current token:
///
/// ```no_run
/// # fn build(auth: procore_auth_reqwest::ProcoreAuthMiddleware) -> Result<(), reqwest::Error> {
/// use procore_auth_core::RetryPolicy;
/// use procore_auth_reqwest::ProcoreRetryMiddleware;
///
/// let client = reqwest_middleware::ClientBuilder::new(procore_auth_reqwest::client_builder().build()?)
///     .with(ProcoreRetryMiddleware::new(RetryPolicy::new()))
///     .with(auth)
///     .build();
/// # Ok(()) }
/// ```
///
/// A request whose body cannot be cloned (a stream) is sent once.
#[derive(Clone, Debug, Default)]
pub struct ProcoreRetryMiddleware {
    policy: Arc<RetryPolicy>,
}

impl ProcoreRetryMiddleware {
    /// Retries as `policy` allows.
    pub fn new(policy: RetryPolicy) -> Self {
        Self {
            policy: Arc::new(policy),
        }
    }
}

#[async_trait::async_trait]
impl Middleware for ProcoreRetryMiddleware {
    async fn handle(
        &self,
        request: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> Result<Response> {
        let started = tokio::time::Instant::now();
        let method = request.method().clone();
        let mut request = request;
        let mut attempts = 1;
        loop {
            let copy = request.try_clone();
            let result = next.clone().run(request, extensions).await;
            let elapsed = started.elapsed();
            let wait = match &result {
                Ok(response) => self.policy.after_response(
                    attempts,
                    elapsed,
                    &method,
                    response.status(),
                    response.headers(),
                    SystemClock.now(),
                ),
                Err(reqwest_middleware::Error::Reqwest(error)) if error.is_connect() => {
                    self.policy.after_unsent(attempts, elapsed)
                }
                Err(_) => None,
            };
            match (wait, copy) {
                (Some(wait), Some(copy)) => {
                    drop(result);
                    tokio::time::sleep(wait).await;
                    attempts += 1;
                    request = copy;
                }
                _ => return result,
            }
        }
    }
}
