//! The accept loop: hyper's HTTP/1 server per connection, the axum router as the service.
//!
//! Serving connections by hand (rather than with `axum::serve`) lets a handler drop its own
//! connection without answering ([`ConnectionControl`]) and lets shutdown close every
//! connection at once.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::response::Response;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;
use tower_service::Service;

/// Lets a handler close the connection its request came on, without a response. Inserted into
/// every request's extensions.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionControl(Arc<Notify>);

impl ConnectionControl {
    /// Closes the connection: the pending response is never sent.
    pub(crate) fn drop_connection(&self) {
        self.0.notify_one();
    }
}

/// Accepts connections until shutdown. Connection tasks live in a [`JoinSet`] owned by this
/// future, so dropping or aborting it closes them all.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve_connection(stream, router.clone()));
                }
                // Out of file descriptors and the like: back off instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = shutdown_signalled(&mut shutdown) => break,
        }
    }
}

async fn shutdown_signalled(shutdown: &mut watch::Receiver<bool>) {
    // A changed value or a dropped sender (an error) both mean shutdown.
    let _ = shutdown.wait_for(|down| *down).await;
}

async fn serve_connection(stream: TcpStream, router: Router) {
    let drop_requested = Arc::new(Notify::new());
    let control = ConnectionControl(Arc::clone(&drop_requested));
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(control.clone());
        let mut router = router.clone();
        async move {
            std::future::poll_fn(|cx| Service::<Request<Incoming>>::poll_ready(&mut router, cx))
                .await?;
            let response: Response = router.call(request).await?;
            Ok::<_, Infallible>(response)
        }
    });
    let connection =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        // Errors are the client's doing (reset, malformed request): nothing to report.
        _ = connection => {}
        // Dropping the connection future closes the socket with the response unsent.
        () = drop_requested.notified() => {}
    }
}
