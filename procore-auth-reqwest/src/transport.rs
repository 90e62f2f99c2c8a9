use std::time::Duration;

use bytes::{Bytes, BytesMut};
use procore_auth_core::{BoxFuture, Transport, TransportError, MAX_RESPONSE_BYTES};

use crate::Error;

/// Gives up connecting to the token endpoint after this long.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Gives up on a token-endpoint request after this long (every caller waiting for
/// the token waits at most this long).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Sends token-endpoint requests with a plain `reqwest::Client`.
///
/// [`new`](Self::new) makes a client with [`CONNECT_TIMEOUT`], [`REQUEST_TIMEOUT`] and
/// redirects disabled. Response bodies are read up to
/// [`MAX_RESPONSE_BYTES`]. Failures are classified from reqwest's own error kinds: a
/// connect failure was never sent; anything later is an unknown outcome.
#[derive(Clone, Debug)]
pub struct ReqwestTransport {
    client: reqwest::Client,
}

impl ReqwestTransport {
    /// A transport with its own client.
    ///
    /// # Errors
    ///
    /// [`Error::HttpClient`] if reqwest cannot build a client.
    pub fn new() -> Result<Self, Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|error| Error::HttpClient(error.into()))?;
        Ok(Self { client })
    }

    /// A transport that sends with `client`. Use a plain client, never one wrapped
    /// with [`ProcoreAuthMiddleware`](crate::ProcoreAuthMiddleware), and give it a
    /// timeout; it should not follow redirects.
    pub fn with_client(client: reqwest::Client) -> Self {
        Self { client }
    }
}

impl Transport for ReqwestTransport {
    fn send(
        &self,
        request: http::Request<Bytes>,
    ) -> BoxFuture<'_, Result<http::Response<Bytes>, TransportError>> {
        Box::pin(async move {
            // A request that cannot be converted was never sent.
            let request = reqwest::Request::try_from(request).map_err(TransportError::connect)?;
            let mut response = self.client.execute(request).await.map_err(classify)?;
            let mut body = BytesMut::new();
            while let Some(chunk) = response.chunk().await.map_err(classify)? {
                if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                    return Err(TransportError::response_too_large());
                }
                body.extend_from_slice(&chunk);
            }
            let mut converted = http::Response::new(body.freeze());
            *converted.status_mut() = response.status();
            *converted.version_mut() = response.version();
            *converted.headers_mut() = std::mem::take(response.headers_mut());
            Ok(converted)
        })
    }
}

fn classify(error: reqwest::Error) -> TransportError {
    if error.is_connect() {
        TransportError::connect(error)
    } else if error.is_timeout() {
        TransportError::timeout(error)
    } else {
        TransportError::other(error)
    }
}
