//! The one thing core asks of an HTTP client.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;

/// A boxed, `Send` future: what the object-safe traits of this crate return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The largest token-endpoint response body that is parsed. Transports should stop
/// reading once a body exceeds it and return [`TransportError::response_too_large`].
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Sends a fully buffered request and returns the fully buffered response.
///
/// Adapters implement this for their HTTP client; core's token sources are generic
/// over it. Implementations must not follow redirects for token calls, should apply
/// a timeout, and must classify failures with [`TransportError`] so that a refresh
/// (which burns the refresh token even when its response is lost) is never resent
/// blindly.
pub trait Transport: Send + Sync + fmt::Debug {
    /// Sends `request`.
    fn send(
        &self,
        request: http::Request<Bytes>,
    ) -> BoxFuture<'_, Result<http::Response<Bytes>, TransportError>>;
}

impl<T: Transport + ?Sized> Transport for Arc<T> {
    fn send(
        &self,
        request: http::Request<Bytes>,
    ) -> BoxFuture<'_, Result<http::Response<Bytes>, TransportError>> {
        (**self).send(request)
    }
}

/// How far a failed request got, which decides whether it may be sent again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransportErrorKind {
    /// Nothing reached the server (DNS or connect failure): safe to send again.
    Connect,
    /// The request may have reached the server but no response arrived in time.
    Timeout,
    /// The response body was larger than [`MAX_RESPONSE_BYTES`].
    ResponseTooLarge,
    /// Any other failure after the request may have been sent (reset, broken body).
    Other,
}

/// How far a request that failed with `error` got, judged by the
/// [`std::io::Error`]s in its source chain: [`Connect`](TransportErrorKind::Connect)
/// (refused, unreachable, unresolvable: never sent), [`Timeout`](TransportErrorKind::Timeout),
/// or [`Other`](TransportErrorKind::Other) (it may have reached the server).
pub fn classify_io_chain(error: &(dyn StdError + 'static)) -> TransportErrorKind {
    let mut cause = Some(error);
    while let Some(current) = cause {
        if let Some(io) = current.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused
                | std::io::ErrorKind::AddrNotAvailable
                | std::io::ErrorKind::NotFound => return TransportErrorKind::Connect,
                std::io::ErrorKind::TimedOut => return TransportErrorKind::Timeout,
                _ => {}
            }
        }
        cause = current.source();
    }
    TransportErrorKind::Other
}

/// A failure to exchange a request and response with the server.
#[derive(Clone, Debug)]
pub struct TransportError {
    kind: TransportErrorKind,
    source: Option<Arc<dyn StdError + Send + Sync>>,
}

impl TransportError {
    /// A failure before any byte of the request reached the server.
    pub fn connect(source: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        Self::with_source(TransportErrorKind::Connect, source)
    }

    /// A timeout after the request may have been sent.
    pub fn timeout(source: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        Self::with_source(TransportErrorKind::Timeout, source)
    }

    /// Any other failure after the request may have been sent.
    pub fn other(source: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        Self::with_source(TransportErrorKind::Other, source)
    }

    /// Classifies a client's failure by the [`std::io::Error`]s in its source chain:
    /// a refused or unreachable connection was never sent; `TimedOut` is a timeout;
    /// anything else may have reached the server.
    pub fn from_io_chain(source: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        let source = source.into();
        match classify_io_chain(&*source) {
            TransportErrorKind::Connect => Self::connect(source),
            TransportErrorKind::Timeout => Self::timeout(source),
            _ => Self::other(source),
        }
    }

    /// The response body exceeded [`MAX_RESPONSE_BYTES`].
    pub fn response_too_large() -> Self {
        Self {
            kind: TransportErrorKind::ResponseTooLarge,
            source: None,
        }
    }

    fn with_source(
        kind: TransportErrorKind,
        source: impl Into<Box<dyn StdError + Send + Sync>>,
    ) -> Self {
        Self {
            kind,
            source: Some(Arc::from(source.into())),
        }
    }

    /// How far the request got.
    pub fn kind(&self) -> TransportErrorKind {
        self.kind
    }

    /// Whether the server may have received (and acted on) the request. A refresh
    /// whose outcome is unknown has probably burnt its refresh token.
    pub fn request_may_have_been_sent(&self) -> bool {
        self.kind != TransportErrorKind::Connect
    }
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.kind {
            TransportErrorKind::Connect => "could not connect to the token endpoint",
            TransportErrorKind::Timeout => {
                "token endpoint request timed out; its outcome is unknown"
            }
            TransportErrorKind::ResponseTooLarge => "token endpoint response is too large",
            TransportErrorKind::Other => "token endpoint request failed; its outcome is unknown",
        })
    }
}

impl StdError for TransportError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source.as_deref().map(|source| source as _)
    }
}
