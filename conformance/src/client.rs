//! The two adapters behind one client.

use std::convert::Infallible;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::AUTHORIZATION;
use http::{Extensions, HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use procore_auth_core::{Error as AuthError, RetryPolicy, TokenManager, Tokens};
use procore_auth_reqwest::{auth_error, ProcoreAuthMiddleware, ProcoreRetryMiddleware};
use procore_auth_tower::{
    NoReplay, ProcoreAuth, ProcoreAuthLayer, ProcoreRetry, ProcoreRetryLayer,
};
use tower::{Layer, Service, ServiceExt};

/// One of the adapters under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Adapter {
    /// `ProcoreAuthLayer` over a `hyper_util` legacy client.
    Tower,
    /// `ProcoreAuthMiddleware` in a `reqwest_middleware` client.
    Reqwest,
}

impl Adapter {
    /// The adapter's name, as in the test names.
    pub fn name(self) -> &'static str {
        match self {
            Self::Tower => "tower",
            Self::Reqwest => "reqwest",
        }
    }
}

type Hyper<B> = hyper_util::client::legacy::Client<HttpConnector, B>;
type StreamingBody = BoxBody<Bytes, Infallible>;

/// A Procore API client through one [`Adapter`], with tokens from a [`TokenManager`]
/// or a `TokenRegistry` (any [`Tokens`]).
///
/// A request's extensions go where its adapter reads them: the `http::Request`'s own
/// for tower, reqwest-middleware's `Extensions` for reqwest (what
/// `reqwest_middleware::RequestBuilder::with_extension` sets), so a tenant's key in
/// them names the tenant through either ([`get_as`](Self::get_as)).
///
/// Cheap to clone; clones share their connections and their record of what was sent.
/// Failures other than authorization errors (a connection refused by the emulator, an
/// unreadable body) panic: no scenario expects them.
#[derive(Clone, Debug)]
pub struct Client {
    adapter: Adapter,
    inner: Inner,
    sent: Sent,
}

#[derive(Clone, Debug)]
enum Inner {
    Tower(Box<TowerServices>),
    Reqwest(reqwest_middleware::ClientWithMiddleware),
}

type Buffered = ProcoreAuth<Recorder<Hyper<Full<Bytes>>>>;

/// One layered service per request body type.
#[derive(Clone, Debug)]
struct TowerServices {
    /// Replays buffered requests (the default `CloneRequest` policy).
    buffered: Buffered,
    /// `buffered` behind a `ProcoreRetryLayer`, if the client retries.
    retrying: Option<ProcoreRetry<Buffered>>,
    /// Streams bodies; a 401 comes back to the caller (`without_replay`).
    streaming: ProcoreAuth<Recorder<Hyper<StreamingBody>>, NoReplay>,
}

impl Client {
    /// The adapter's usual setup over `manager`: `ProcoreAuthLayer::new(manager)`
    /// over a plain `hyper_util` client (and `.without_replay()` for streaming
    /// bodies), or `ProcoreAuthMiddleware::new(manager)` in a `reqwest_middleware`
    /// client with reqwest's default redirect policy.
    pub fn new(adapter: Adapter, manager: &TokenManager) -> Self {
        Self::with_tokens(adapter, manager.clone())
    }

    /// [`new`](Self::new) over any [`Tokens`]: a `TokenRegistry` (each request's
    /// tenant is the key in its extensions: [`get_as`](Self::get_as)), or
    /// `registry.keyed_by(…)` (a function finds it).
    pub fn with_tokens(adapter: Adapter, tokens: impl Into<Tokens>) -> Self {
        Self::build(adapter, tokens.into(), None)
    }

    /// [`with_tokens`](Self::with_tokens) with the adapter's retries outside its
    /// authorization, as the docs recommend: `ProcoreRetryLayer` around the layer, or
    /// `ProcoreRetryMiddleware` before the middleware (buffered requests only).
    pub fn with_retries(adapter: Adapter, tokens: impl Into<Tokens>, policy: RetryPolicy) -> Self {
        Self::build(adapter, tokens.into(), Some(policy))
    }

    fn build(adapter: Adapter, tokens: Tokens, retry: Option<RetryPolicy>) -> Self {
        let sent = Sent::default();
        let inner = match adapter {
            Adapter::Tower => {
                let layer = ProcoreAuthLayer::new(tokens);
                let buffered = layer.clone().layer(Recorder::new(&sent));
                Inner::Tower(Box::new(TowerServices {
                    retrying: retry
                        .map(|policy| ProcoreRetryLayer::new(policy).layer(buffered.clone())),
                    buffered,
                    streaming: layer.without_replay().layer(Recorder::new(&sent)),
                }))
            }
            Adapter::Reqwest => {
                let client = procore_auth_reqwest::client_builder()
                    .build()
                    .expect("a reqwest client builds");
                let mut builder = reqwest_middleware::ClientBuilder::new(client);
                if let Some(policy) = retry {
                    builder = builder.with(ProcoreRetryMiddleware::new(policy));
                }
                Inner::Reqwest(
                    builder
                        .with(ProcoreAuthMiddleware::new(tokens))
                        .with(RecordMiddleware(sent.clone()))
                        .build(),
                )
            }
        };
        Self {
            adapter,
            inner,
            sent,
        }
    }

    /// The adapter this client goes through.
    pub fn adapter(&self) -> Adapter {
        self.adapter
    }

    /// `GET url`: the status, or the core error behind a failure.
    pub async fn get(&self, url: &str) -> Result<StatusCode, AuthError> {
        self.send(get(url)).await.map(|reply| reply.status)
    }

    /// `GET url` for the tenant `key` names (the key goes in the request's extensions):
    /// the whole response, or the core error behind a failure.
    pub async fn get_as<K>(&self, url: &str, key: K) -> Result<Reply, AuthError>
    where
        K: Clone + Send + Sync + 'static,
    {
        let mut request = get(url);
        request.extensions_mut().insert(key);
        self.send(request).await
    }

    /// Sends a request whose body is buffered, so the adapter can replay it after a
    /// 401; reads the whole response.
    pub async fn send(&self, request: Request<Bytes>) -> Result<Reply, AuthError> {
        match &self.inner {
            Inner::Tower(tower) => {
                let request = request.map(Full::new);
                let response = match &tower.retrying {
                    Some(retrying) => retrying.clone().oneshot(request).await,
                    None => tower.buffered.clone().oneshot(request).await,
                };
                tower_reply(response).await
            }
            Inner::Reqwest(client) => {
                let (request, mut extensions) = reqwest_request(request);
                reqwest_reply(
                    client
                        .execute_with_extensions(request, &mut extensions)
                        .await,
                )
                .await
            }
        }
    }

    /// Sends a request whose body is streamed chunk by chunk, so the adapter cannot
    /// replay it: a 401 comes back as is. Reads the whole response.
    pub async fn send_streaming(&self, request: Request<Vec<Bytes>>) -> Result<Reply, AuthError> {
        match &self.inner {
            Inner::Tower(tower) => {
                let request = request.map(|chunks| {
                    let frames = chunks.into_iter().map(|chunk| Ok(Frame::data(chunk)));
                    StreamBody::new(futures_util::stream::iter(frames)).boxed()
                });
                tower_reply(tower.streaming.clone().oneshot(request).await).await
            }
            Inner::Reqwest(client) => {
                let request = request.map(|chunks| {
                    let chunks = chunks.into_iter().map(Ok::<_, Infallible>);
                    reqwest::Body::wrap_stream(futures_util::stream::iter(chunks))
                });
                let (request, mut extensions) = reqwest_request(request);
                reqwest_reply(
                    client
                        .execute_with_extensions(request, &mut extensions)
                        .await,
                )
                .await
            }
        }
    }

    /// The `Authorization` header of every request the adapter handed to its HTTP
    /// client so far (replays included), in order; `None` where there was none.
    pub fn sent_authorizations(&self) -> Vec<Option<HeaderValue>> {
        self.sent.snapshot()
    }
}

/// A whole response.
#[derive(Clone, Debug)]
pub struct Reply {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl Reply {
    /// The body as text.
    ///
    /// # Panics
    ///
    /// If the body is not UTF-8.
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("a UTF-8 body")
    }

    /// The body as JSON.
    ///
    /// # Panics
    ///
    /// If the body is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|error| panic!("a JSON body ({error}): {:?}", self.body))
    }
}

/// `GET url` with an empty body.
pub fn get(url: &str) -> Request<Bytes> {
    Request::get(url).body(Bytes::new()).expect("a valid URL")
}

/// `POST url` with a buffered (replayable) body.
pub fn post(url: &str, body: impl Into<Bytes>) -> Request<Bytes> {
    Request::post(url).body(body.into()).expect("a valid URL")
}

/// `POST url` with a body streamed as `chunks` (not replayable).
pub fn post_streaming(url: &str, chunks: &[&'static str]) -> Request<Vec<Bytes>> {
    let chunks = chunks.iter().copied().map(Bytes::from).collect();
    Request::post(url).body(chunks).expect("a valid URL")
}

/// `request` for reqwest, and its extensions moved to where reqwest-middleware keeps
/// them (a `reqwest::Request` has none its middleware can read).
pub(crate) fn reqwest_request<B: Into<reqwest::Body>>(
    request: Request<B>,
) -> (reqwest::Request, Extensions) {
    let (mut parts, body) = request.into_parts();
    let extensions = std::mem::take(&mut parts.extensions);
    let request =
        reqwest::Request::try_from(Request::from_parts(parts, body)).expect("a valid request");
    (request, extensions)
}

pub(crate) async fn tower_reply<B, E>(
    outcome: Result<Response<B>, procore_auth_tower::Error<E>>,
) -> Result<Reply, AuthError>
where
    B: http_body::Body,
    B::Error: fmt::Debug,
    E: fmt::Debug,
{
    let response = match outcome {
        Ok(response) => response,
        Err(procore_auth_tower::Error::Auth(error)) => return Err(error),
        Err(error) => panic!("tower: not an authorization error: {error:?}"),
    };
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("tower: a response body");
    Ok(Reply {
        status: parts.status,
        headers: parts.headers,
        body: body.to_bytes(),
    })
}

pub(crate) async fn reqwest_reply(
    outcome: reqwest_middleware::Result<reqwest::Response>,
) -> Result<Reply, AuthError> {
    match outcome {
        Ok(response) => Ok(Reply {
            status: response.status(),
            headers: response.headers().clone(),
            body: response.bytes().await.expect("reqwest: a response body"),
        }),
        Err(error) => Err(auth_error(&error)
            .unwrap_or_else(|| panic!("reqwest: not an authorization error: {error:?}"))
            .clone()),
    }
}

/// The `Authorization` headers handed to the HTTP client, shared by a client's clones.
#[derive(Clone, Debug, Default)]
struct Sent(Arc<Mutex<Vec<Option<HeaderValue>>>>);

impl Sent {
    fn record(&self, headers: &HeaderMap) {
        let authorization = headers.get(AUTHORIZATION).cloned();
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(authorization);
    }

    fn snapshot(&self) -> Vec<Option<HeaderValue>> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The HTTP client under the Tower layer, recording what it is given.
#[derive(Clone, Debug)]
struct Recorder<S> {
    inner: S,
    sent: Sent,
}

impl<B> Recorder<Hyper<B>>
where
    B: http_body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn new(sent: &Sent) -> Self {
        Self {
            inner: hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http(),
            sent: sent.clone(),
        }
    }
}

impl<S, B> Service<Request<B>> for Recorder<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        self.sent.record(request.headers());
        self.inner.call(request)
    }
}

/// The reqwest middleware after ours, recording what it passes on.
#[derive(Debug)]
struct RecordMiddleware(Sent);

#[async_trait::async_trait]
impl reqwest_middleware::Middleware for RecordMiddleware {
    async fn handle(
        &self,
        request: reqwest::Request,
        extensions: &mut http::Extensions,
        next: reqwest_middleware::Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        self.0.record(request.headers());
        next.run(request, extensions).await
    }
}
