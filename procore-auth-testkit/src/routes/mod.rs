//! The HTTP routes: OAuth endpoints in [`oauth`], the protected API in [`api`].

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::header::{HeaderMap, AUTHORIZATION};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{middleware, Json, Router};

use crate::state::Shared;

mod api;
mod oauth;

/// The largest body the echo route accepts.
const ECHO_BODY_LIMIT: usize = 16 * 1024 * 1024;

/// Every route of the emulator.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let rest = Router::new()
        .route("/rest/v1.0/me", get(api::me))
        .route("/rest/v1.0/companies", get(api::companies))
        .route(
            "/rest/v1.0/echo",
            post(api::echo).put(api::echo).patch(api::echo),
        )
        .route("/rest/v1.0/files/{id}", get(api::file))
        .route("/rest/{*path}", any(api::not_found))
        .layer(DefaultBodyLimit::max(ECHO_BODY_LIMIT))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&shared),
            api::gate,
        ));
    Router::new()
        .route("/oauth/authorize", get(oauth::authorize))
        .route("/oauth/token", post(oauth::token))
        .route("/oauth/revoke", post(oauth::revoke))
        .route("/oauth/token/info", get(oauth::token_info))
        .route("/storage/{id}", get(api::storage))
        .merge(rest)
        .with_state(shared)
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// A JSON response.
fn json(status: StatusCode, body: serde_json::Value) -> Response {
    (status, Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn bearer_tokens_are_extracted() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer(&headers), None);
        headers.insert(AUTHORIZATION, HeaderValue::from_static("bearer abc"));
        assert_eq!(bearer(&headers), Some("abc"));
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&headers), None);
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert_eq!(bearer(&headers), None);
    }
}
