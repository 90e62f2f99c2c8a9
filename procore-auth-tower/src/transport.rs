use std::error::Error as StdError;
use std::fmt;
use std::future::poll_fn;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use procore_auth_core::{BoxFuture, Transport, TransportError, MAX_RESPONSE_BYTES};
use tower_service::Service;

type BoxError = Box<dyn StdError + Send + Sync>;

/// Gives up on a token-endpoint exchange (connect, send, read the body) after this
/// long by default: every request waiting for a token waits at most this long.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Sends token-endpoint requests through any Tower HTTP client, such as
/// `hyper_util::client::legacy::Client`.
///
/// Give it the plain client, never one wrapped in
/// [`ProcoreAuthLayer`](crate::ProcoreAuthLayer). It does not follow redirects, reads
/// bodies up to [`MAX_RESPONSE_BYTES`], and gives up after [`REQUEST_TIMEOUT`] (set
/// with [`timeout`](Self::timeout)), reported as [`TransportError::timeout`]. It
/// needs a Tokio runtime for that timer.
///
/// Other failures are classified by the `io::Error`s in their source chain
/// ([`TransportError::from_io_chain`]): a refused or unreachable connection was never
/// sent (safe to send again); anything else is an unknown outcome, and a refresh is
/// then never re-sent.
#[derive(Clone)]
pub struct TowerTransport<S, B = Full<Bytes>> {
    service: S,
    timeout: Duration,
    into_body: fn(Bytes) -> B,
}

impl<S> TowerTransport<S> {
    /// Sends with `service`, whose requests have `Full<Bytes>` bodies.
    pub fn new(service: S) -> Self {
        Self::with_request_body(service)
    }
}

impl<S, B: From<Bytes>> TowerTransport<S, B> {
    /// Sends with `service`, whose request body type `B` is made `From<Bytes>`.
    pub fn with_request_body(service: S) -> Self {
        let timeout = REQUEST_TIMEOUT;
        Self {
            service,
            timeout,
            into_body: B::from,
        }
    }
}

impl<S, B> TowerTransport<S, B> {
    /// Gives up on an exchange after `timeout` instead of [`REQUEST_TIMEOUT`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

impl<S, B> fmt::Debug for TowerTransport<S, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TowerTransport").finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Transport for TowerTransport<S, ReqBody>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + Sync + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    ReqBody: Send,
    ResBody: Body + Send,
    ResBody::Data: Send,
    ResBody::Error: Into<BoxError>,
{
    fn send(
        &self,
        request: Request<Bytes>,
    ) -> BoxFuture<'_, Result<Response<Bytes>, TransportError>> {
        let (mut service, into_body) = (self.service.clone(), self.into_body);
        let exchange = async move {
            let request = request.map(into_body);
            let sent = async {
                poll_fn(|cx| service.poll_ready(cx)).await?;
                service.call(request).await
            };
            let response = sent.await.map_err(TransportError::from_io_chain)?;
            let (parts, body) = response.into_parts();
            let limited = Limited::new(body, MAX_RESPONSE_BYTES).collect().await;
            let body = limited.map_err(|error| match error.is::<LengthLimitError>() {
                true => TransportError::response_too_large(),
                false => TransportError::from_io_chain(error),
            })?;
            Ok(Response::from_parts(parts, body.to_bytes()))
        };
        let timed = tokio::time::timeout(self.timeout, exchange);
        let late = TransportError::timeout(format!("no answer within {:?}", self.timeout));
        Box::pin(async move { timed.await.map_err(|_| late)? })
    }
}
