//! The loopback redirect listener: a tiny HTTP server (axum on hyper) on
//! `127.0.0.1:<port>` (and `[::1]:<port>` when it can) that hands every
//! `GET /?…` to the login flow and answers the browser with the page the flow chooses.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::failure::Failure;

/// How long shutting down waits for the last page to reach the browser.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// The listener, bound and serving.
#[derive(Debug)]
pub(crate) struct Loopback {
    callbacks: mpsc::Receiver<Callback>,
    shutdown: watch::Sender<bool>,
    servers: Vec<JoinHandle<()>>,
}

/// One redirect that reached the listener: its query string, and the way to answer it.
#[derive(Debug)]
pub(crate) struct Callback {
    query: String,
    reply: oneshot::Sender<Page>,
}

/// What the browser is shown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Page {
    status: StatusCode,
    title: &'static str,
    message: String,
}

impl Page {
    pub(crate) fn signed_in() -> Self {
        Self {
            status: StatusCode::OK,
            title: "Signed in",
            message: "procore-auth is signed in to Procore. You can close this tab and return \
                      to the terminal."
                .to_owned(),
        }
    }

    /// A redirect whose `state` is not this login's: not ours, ignored.
    pub(crate) fn wrong_state() -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            title: "Refused",
            message: "This sign-in response does not belong to the procore-auth login waiting \
                      here (its state does not match), so it was ignored."
                .to_owned(),
        }
    }

    pub(crate) fn failed(reason: &str) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            title: "Sign-in failed",
            message: format!("procore-auth could not sign in: {reason}. See the terminal."),
        }
    }

    fn not_a_redirect() -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            title: "Waiting for Procore",
            message: "procore-auth is waiting here for Procore's sign-in redirect.".to_owned(),
        }
    }

    fn gone() -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            title: "Login ended",
            message: "The procore-auth login that was waiting here has ended.".to_owned(),
        }
    }
}

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        let body = format!(
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>procore-auth: {title}\
             </title></head><body><h1>{title}</h1><p>{message}</p></body></html>\n",
            title = escape(self.title),
            message = escape(&self.message),
        );
        let mut response = (self.status, Html(body)).into_response();
        let headers = response.headers_mut();
        // The URL holds the authorization code: no caching, and no referrer to anywhere.
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
        response
    }
}

impl Callback {
    /// The redirect's query string (`code=…&state=…`).
    pub(crate) fn query(&self) -> &str {
        &self.query
    }

    /// Answers the browser.
    pub(crate) fn reply(self, page: Page) {
        let _ = self.reply.send(page);
    }
}

impl Loopback {
    /// Binds `127.0.0.1:port` (required) and `[::1]:port` (when possible: browsers may
    /// try either address for `localhost`) and starts serving.
    pub(crate) async fn bind(port: u16) -> Result<Self, Failure> {
        let v4 = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
            .await
            .map_err(|error| {
                Failure::failed(format!(
                    "cannot listen on 127.0.0.1:{port} for the redirect: {error} \
                     (choose another registered port with --port or PROCORE_AUTH_PORT)"
                ))
            })?;
        let v6 = TcpListener::bind(SocketAddr::from((Ipv6Addr::LOCALHOST, port)))
            .await
            .ok();
        let (sender, callbacks) = mpsc::channel(8);
        let (shutdown, _) = watch::channel(false);
        let router = Router::new()
            .route("/", get(redirect))
            .fallback(|| async { (StatusCode::NOT_FOUND, "not found") })
            .with_state(sender);
        let servers = [Some(v4), v6]
            .into_iter()
            .flatten()
            .map(|listener| {
                let mut stop = shutdown.subscribe();
                let serve =
                    axum::serve(listener, router.clone()).with_graceful_shutdown(async move {
                        let _ = stop.wait_for(|stop| *stop).await;
                    });
                tokio::spawn(async move {
                    let _ = serve.await;
                })
            })
            .collect();
        Ok(Self {
            callbacks,
            shutdown,
            servers,
        })
    }

    /// The next redirect to reach the listener.
    pub(crate) async fn next(&mut self) -> Option<Callback> {
        self.callbacks.recv().await
    }

    /// Stops listening once the pages already chosen have been sent (waiting at most
    /// [`SHUTDOWN_GRACE`]).
    pub(crate) async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        // Redirects that arrived meanwhile get an answer instead of hanging.
        self.callbacks.close();
        while let Ok(callback) = self.callbacks.try_recv() {
            callback.reply(Page::gone());
        }
        for server in self.servers.drain(..) {
            let abort = server.abort_handle();
            if tokio::time::timeout(SHUTDOWN_GRACE, server).await.is_err() {
                abort.abort();
            }
        }
    }
}

async fn redirect(State(sender): State<mpsc::Sender<Callback>>, RawQuery(query): RawQuery) -> Page {
    let Some(query) = query.filter(|query| !query.is_empty()) else {
        return Page::not_a_redirect();
    };
    let (reply, answer) = oneshot::channel();
    if sender.send(Callback { query, reply }).await.is_err() {
        return Page::gone();
    }
    answer.await.unwrap_or_else(|_| Page::gone())
}

/// HTML-escapes text for an element's content.
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_escape_what_they_show() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        let response = Page::failed("<script>").into_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
        assert_eq!(response.headers()["referrer-policy"], "no-referrer");
    }
}
