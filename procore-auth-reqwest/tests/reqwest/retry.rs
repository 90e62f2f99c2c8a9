//! The retry middleware's own classification of failures: a connection that was
//! refused never carried the request, so it is sent again whatever its method; a
//! streaming body cannot be sent again.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::Extensions;
use procore_auth_core::{Jitter, RetryPolicy};
use procore_auth_reqwest::{client_builder, ProcoreRetryMiddleware};
use reqwest::{Method, Request, Response};
use reqwest_middleware::{ClientBuilder, Middleware, Next};

/// Counts the attempts that reach the client.
#[derive(Clone, Default)]
struct Attempts(Arc<AtomicUsize>);

#[async_trait::async_trait]
impl Middleware for Attempts {
    async fn handle(
        &self,
        request: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        self.0.fetch_add(1, Ordering::SeqCst);
        next.run(request, extensions).await
    }
}

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
    let policy = RetryPolicy::new()
        .max_attempts(3)
        .backoff(Duration::from_millis(1), Duration::from_millis(5))
        .jitter(Jitter::none());
    for method in [Method::GET, Method::POST] {
        let attempts = Attempts::default();
        let client = ClientBuilder::new(client_builder().build().unwrap())
            .with(ProcoreRetryMiddleware::new(policy.clone()))
            .with(attempts.clone())
            .build();
        let result = client.request(method.clone(), &url).body("x").send().await;
        assert!(result.is_err());
        assert_eq!(attempts.0.load(Ordering::SeqCst), 3, "{method}");

        // A streaming body goes once.
        let attempts = Attempts::default();
        let client = ClientBuilder::new(client_builder().build().unwrap())
            .with(ProcoreRetryMiddleware::new(policy.clone()))
            .with(attempts.clone())
            .build();
        let chunks = futures_util::stream::iter([Ok::<_, std::io::Error>("x")]);
        let body = reqwest::Body::wrap_stream(chunks);
        assert!(client
            .request(method.clone(), &url)
            .body(body)
            .send()
            .await
            .is_err());
        assert_eq!(attempts.0.load(Ordering::SeqCst), 1, "{method}, streaming");
    }
}
