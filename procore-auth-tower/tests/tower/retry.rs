//! The retry layer's own classification of failures: a connection that was refused
//! never carried the request, so it is sent again whatever its method.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Full;
use procore_auth_core::{Jitter, RetryPolicy};
use procore_auth_tower::ProcoreRetryLayer;
use tower::{Layer, ServiceExt};

use super::http_client;

/// A loopback port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn refused_connections_are_retried_up_to_the_attempt_limit_for_any_method() {
    let url = format!("http://127.0.0.1:{}/rest/v1.0/echo", closed_port());
    for method in [Method::GET, Method::POST] {
        let attempts = Arc::new(AtomicUsize::new(0));
        let counted = attempts.clone();
        let http = http_client();
        let counting = tower::service_fn(move |request: Request<Full<Bytes>>| {
            counted.fetch_add(1, Ordering::SeqCst);
            http.clone().oneshot(request)
        });
        let policy = RetryPolicy::new()
            .max_attempts(3)
            .backoff(Duration::from_millis(1), Duration::from_millis(5))
            .jitter(Jitter::none());
        let service = ProcoreRetryLayer::new(policy).layer(counting);
        let request = Request::builder()
            .method(method.clone())
            .uri(&url)
            .body(Full::new(Bytes::from_static(b"x")))
            .unwrap();
        assert!(service.oneshot(request).await.is_err());
        assert_eq!(attempts.load(Ordering::SeqCst), 3, "{method}");
    }
}
