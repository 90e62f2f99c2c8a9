use std::error::Error as StdError;
use std::fmt;
use std::future::poll_fn;
use std::marker::PhantomData;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use procore_auth_core::{BoxFuture, Transport, TransportError, MAX_RESPONSE_BYTES};
use tower_service::Service;

type BoxError = Box<dyn StdError + Send + Sync>;

/// Sends token-endpoint requests through any Tower HTTP client, such as
/// `hyper_util::client::legacy::Client`.
///
/// Give it the plain client, never one wrapped in
/// [`ProcoreAuthLayer`](crate::ProcoreAuthLayer). It does not follow redirects; apply
/// a timeout to the client (for example with `tower::timeout`), since a refresh that hangs holds every
/// request waiting for a token.
///
/// Failures are classified by the `io::Error`s in their source chain: a refused or
/// unreachable connection means nothing was sent (safe to send again);
/// `io::ErrorKind::TimedOut` is a timeout; anything else is an unknown outcome, and a
/// refresh is then never re-sent.
pub struct TowerTransport<S, B = Full<Bytes>> {
    service: S,
    request_body: PhantomData<fn(Bytes) -> B>,
}

impl<S> TowerTransport<S> {
    /// Sends with `service`, whose requests have `Full<Bytes>` bodies.
    pub fn new(service: S) -> Self {
        Self::with_request_body(service)
    }
}

impl<S, B> TowerTransport<S, B> {
    /// Sends with `service`, whose request body type `B` is made `From<Bytes>`.
    pub fn with_request_body(service: S) -> Self {
        Self {
            service,
            request_body: PhantomData,
        }
    }
}

impl<S: Clone, B> Clone for TowerTransport<S, B> {
    fn clone(&self) -> Self {
        Self::with_request_body(self.service.clone())
    }
}

impl<S, B> fmt::Debug for TowerTransport<S, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TowerTransport")
            .field("service", &std::any::type_name::<S>())
            .finish()
    }
}

impl<S, ReqBody, ResBody> Transport for TowerTransport<S, ReqBody>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + Sync + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    ReqBody: From<Bytes> + Send,
    ResBody: Body + Send,
    ResBody::Data: Send,
    ResBody::Error: Into<BoxError>,
{
    fn send(
        &self,
        request: Request<Bytes>,
    ) -> BoxFuture<'_, Result<Response<Bytes>, TransportError>> {
        let mut service = self.service.clone();
        Box::pin(async move {
            let request = request.map(ReqBody::from);
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
        })
    }
}
