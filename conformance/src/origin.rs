//! A scripted loopback origin for redirect scenarios: the API origin that redirects, or
//! a foreign one that must never see our bearer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::{AUTHORIZATION, COOKIE, LOCATION};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use procore_auth_core::PROCORE_COMPANY_ID;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A real HTTP server on `127.0.0.1:0` that answers each path as scripted and records
/// every request it gets. Unscripted paths answer 200 with `"<METHOD> <body>"`.
///
/// Two origins are two servers (two ports), so to the request policy they are different
/// origins; build the manager with `Environment::custom(origin.url())` to make one of
/// them the API origin. Dropping it stops the server.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use procore_auth_conformance::Origin;
///
/// let (api, storage) = (Origin::start().await, Origin::start().await);
/// api.redirect("/files/7", 302, storage.url_for("/blob/7"));
/// let client = reqwest::Client::new();
/// let reply = client.get(api.url_for("/files/7")).bearer_auth("secret").send().await.unwrap();
/// assert_eq!(reply.text().await.unwrap(), "GET ");
/// assert_eq!(storage.seen()[0].authorization, None); // reqwest dropped it: a new origin
/// # }
/// ```
#[derive(Debug)]
pub struct Origin {
    url: String,
    script: Arc<Mutex<Script>>,
    server: JoinHandle<()>,
}

/// One request an [`Origin`] received.
#[derive(Clone, Debug)]
pub struct Seen {
    /// Its method.
    pub method: Method,
    /// Its path and query.
    pub path: String,
    /// Its `Authorization` header, if any.
    pub authorization: Option<HeaderValue>,
    /// Its `Cookie` header, if any.
    pub cookie: Option<HeaderValue>,
    /// Its `Procore-Company-Id` header, if any.
    pub company_id: Option<HeaderValue>,
    /// Its body.
    pub body: Bytes,
}

#[derive(Debug, Default)]
struct Script {
    answers: HashMap<String, (StatusCode, Option<String>)>,
    seen: Vec<Seen>,
}

impl Origin {
    /// Binds `127.0.0.1:0` and serves in a task of the current Tokio runtime.
    ///
    /// # Panics
    ///
    /// If no loopback port can be bound, or outside a Tokio runtime.
    pub async fn start() -> Self {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("a local address").port();
        let script = Arc::default();
        let router = Router::new()
            .fallback(answer)
            .with_state(Arc::clone(&script));
        let server = tokio::spawn(async move {
            axum::serve(listener, router)
                .await
                .expect("the origin serves");
        });
        Self {
            url: format!("http://127.0.0.1:{port}"),
            script,
            server,
        }
    }

    /// `http://127.0.0.1:<port>`, without a trailing slash.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The absolute URL of `path` (which starts with `/`) on this origin.
    pub fn url_for(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// From now on, `path` answers `status` with `Location: location` (absolute or
    /// relative, sent as given).
    ///
    /// # Panics
    ///
    /// If `status` is not a valid status code.
    pub fn redirect(&self, path: &str, status: u16, location: impl Into<String>) {
        self.script(path, status, Some(location.into()));
    }

    /// From now on, `path` answers `status` with an empty body (a 401, say).
    ///
    /// # Panics
    ///
    /// If `status` is not a valid status code.
    pub fn answer(&self, path: &str, status: u16) {
        self.script(path, status, None);
    }

    fn script(&self, path: &str, status: u16, location: Option<String>) {
        let status = StatusCode::from_u16(status).expect("a valid status code");
        self.lock()
            .answers
            .insert(path.to_owned(), (status, location));
    }

    /// Every request received so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.lock().seen.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Script> {
        self.script.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn answer(
    State(script): State<Arc<Mutex<Script>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri
        .path_and_query()
        .map_or_else(|| uri.path().to_owned(), |path| path.as_str().to_owned());
    let mut script = script.lock().unwrap_or_else(PoisonError::into_inner);
    let scripted = script.answers.get(&path).cloned();
    script.seen.push(Seen {
        method: method.clone(),
        path,
        authorization: headers.get(AUTHORIZATION).cloned(),
        cookie: headers.get(COOKIE).cloned(),
        company_id: headers.get(PROCORE_COMPANY_ID).cloned(),
        body: body.clone(),
    });
    match scripted {
        Some((status, Some(location))) => (status, [(LOCATION, location)]).into_response(),
        Some((status, None)) => status.into_response(),
        None => {
            let mut echo = format!("{method} ").into_bytes();
            echo.extend_from_slice(&body);
            echo.into_response()
        }
    }
}
