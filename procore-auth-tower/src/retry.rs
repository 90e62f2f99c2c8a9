//! [`ProcoreRetryLayer`]: sends a request again where Procore allows it.

use std::error::Error as StdError;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use procore_auth_core::{classify_io_chain, Clock, RetryPolicy, SystemClock, TransportErrorKind};
use tower_layer::Layer;
use tower_service::Service;

/// Retries requests as [`RetryPolicy`] allows: 429 and 503 after the server's
/// `Retry-After` or rate-limit reset, connection failures before sending, idempotent
/// methods only unless opted in, with bounded attempts and total time.
///
/// Put it **outside** [`ProcoreAuthLayer`](crate::ProcoreAuthLayer), so that every
/// attempt passes through it and carries the current token (a 401 is the auth layer's
/// to handle, once, and never reaches this one as a failure to retry):
///
/// ```no_run
/// # use bytes::Bytes;
/// # use http_body_util::Full;
/// # use hyper_util::client::legacy::Client;
/// # use hyper_util::rt::TokioExecutor;
/// use procore_auth_core::RetryPolicy;
/// use procore_auth_tower::{ProcoreAuthLayer, ProcoreRetryLayer};
/// use tower::ServiceBuilder;
///
/// # fn build(manager: procore_auth_core::TokenManager) {
/// # let http = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
/// let procore = ServiceBuilder::new()
///     .layer(ProcoreRetryLayer::new(RetryPolicy::new()))
///     .layer(ProcoreAuthLayer::new(manager))
///     .service(http);
/// # }
/// ```
///
/// Each retry sends a clone of the request, so the body must be `Clone` (as for the
/// auth layer's replay). The response future is boxed.
#[derive(Clone, Debug, Default)]
pub struct ProcoreRetryLayer {
    policy: Arc<RetryPolicy>,
}

impl ProcoreRetryLayer {
    /// Retries as `policy` allows.
    pub fn new(policy: RetryPolicy) -> Self {
        Self {
            policy: Arc::new(policy),
        }
    }
}

impl<S> Layer<S> for ProcoreRetryLayer {
    type Service = ProcoreRetry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ProcoreRetry {
            inner,
            policy: Arc::clone(&self.policy),
        }
    }
}

/// The service of [`ProcoreRetryLayer`].
#[derive(Clone, Debug)]
pub struct ProcoreRetry<S> {
    inner: S,
    policy: Arc<RetryPolicy>,
}

impl<S, B, R> Service<Request<B>> for ProcoreRetry<S>
where
    S: Service<Request<B>, Response = Response<R>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: StdError + Send + 'static,
    B: Clone + Send + 'static,
    R: Send + 'static,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<R>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // This instance was made ready; the clone serves the retries.
        let clone = self.inner.clone();
        let mut service = std::mem::replace(&mut self.inner, clone.clone());
        let policy = Arc::clone(&self.policy);
        Box::pin(async move {
            let started = tokio::time::Instant::now();
            // Method, URI, headers, extensions (a tenant's key among them) and body.
            let template = request.clone();
            let mut request = request;
            let mut attempts = 1;
            loop {
                let result = service.call(request).await;
                let elapsed = started.elapsed();
                let wait = match &result {
                    Ok(response) => policy.after_response(
                        attempts,
                        elapsed,
                        template.method(),
                        response.status(),
                        response.headers(),
                        SystemClock.now(),
                    ),
                    Err(error) if classify_io_chain(error) == TransportErrorKind::Connect => {
                        policy.after_unsent(attempts, elapsed)
                    }
                    Err(_) => None,
                };
                let Some(wait) = wait else {
                    return result;
                };
                drop(result);
                tokio::time::sleep(wait).await;
                attempts += 1;
                service = clone.clone();
                poll_fn(|cx| service.poll_ready(cx)).await?;
                request = template.clone();
            }
        })
    }
}
