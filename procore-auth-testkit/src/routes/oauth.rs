//! `/oauth/authorize`, `/oauth/token`, `/oauth/revoke` and `/oauth/token/info`.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Extension, RawQuery, State};
use axum::http::header::{HeaderMap, CACHE_CONTROL, CONTENT_TYPE, LOCATION, PRAGMA, RETRY_AFTER};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};

use super::{bearer, json};
use crate::emulator::Route;
use crate::fault::TokenFault;
use crate::params::Params;
use crate::server::ConnectionControl;
use crate::state::{
    unix_secs, GrantError, GrantType, Minted, Shared, TokenRejection, OOB_REDIRECT_URI,
};
use crate::user::UserId;

/// `GET /oauth/authorize`: approves at once, as if the user logged in and clicked "Allow". The
/// user is the default one, or the one whose login is the `login_hint` parameter.
pub(super) async fn authorize(
    State(shared): State<Arc<Shared>>,
    RawQuery(query): RawQuery,
) -> Response {
    let response = authorize_response(&shared, query.as_deref().unwrap_or_default());
    shared.delay(Route::Authorize).await;
    response
}

fn authorize_response(shared: &Shared, query: &str) -> Response {
    // Errors about the client or the redirect URI are shown, never redirected (RFC 6749 §4.1.2.1).
    let bad_request = |why: String| (StatusCode::BAD_REQUEST, why).into_response();
    let params = match Params::from_urlencoded(query.as_bytes()) {
        Ok(params) => params,
        Err(why) => return bad_request(format!("invalid_request: {why}")),
    };
    let Some(client_id) = params
        .get("client_id")
        .filter(|id| shared.config.clients.contains_key(*id))
    else {
        return bad_request("invalid_client: unknown or missing client_id".to_owned());
    };
    let Some(redirect_uri) = params
        .get("redirect_uri")
        .filter(|uri| shared.config.redirect_uris.contains(*uri))
    else {
        return bad_request(
            "invalid_redirect_uri: the redirect_uri is missing or not registered".to_owned(),
        );
    };
    let oob = redirect_uri == OOB_REDIRECT_URI;
    let mut answer = form_urlencoded::Serializer::new(String::new());
    if params.get("response_type") == Some("code") {
        let now = shared.now();
        let mut state = shared.lock();
        // The user who "logs in": the one named by `login_hint` (OpenID Connect's parameter),
        // else the default user. An unknown login cannot log in: shown, not redirected.
        let user = match params.get("login_hint") {
            None => UserId::DEFAULT,
            Some(login) => match state.users.by_login(login) {
                Some(user) => user,
                None => {
                    drop(state);
                    return bad_request(
                        "invalid_request: no user has the login given in login_hint".to_owned(),
                    );
                }
            },
        };
        let code = state.issue_code(client_id, redirect_uri, user, now);
        drop(state);
        if oob {
            return Html(format!(
                "<!DOCTYPE html>\n<html><head><title>Authorization code</title></head><body>\
                 <h1>Authorization code</h1>\
                 <p>Copy this code and paste it into the application:</p>\
                 <code id=\"authorization_code\">{code}</code></body></html>\n"
            ))
            .into_response();
        }
        answer.append_pair("code", &code);
    } else if oob {
        return bad_request("unsupported_response_type: response_type must be code".to_owned());
    } else {
        answer.append_pair("error", "unsupported_response_type");
    }
    if let Some(state) = params.get("state") {
        answer.append_pair("state", state);
    }
    let separator = if redirect_uri.contains('?') { '&' } else { '?' };
    let location = format!("{redirect_uri}{separator}{}", answer.finish());
    match HeaderValue::try_from(location) {
        Ok(location) => (StatusCode::FOUND, [(LOCATION, location)]).into_response(),
        Err(_) => bad_request("invalid_redirect_uri: not a valid header value".to_owned()),
    }
}

/// RFC 6749 §5.1: token responses must not be cached.
fn token_json(status: StatusCode, body: impl Into<Body>) -> Response {
    (
        status,
        [
            (
                CONTENT_TYPE,
                HeaderValue::from_static("application/json; charset=utf-8"),
            ),
            (CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (PRAGMA, HeaderValue::from_static("no-cache")),
        ],
        body.into(),
    )
        .into_response()
}

/// The JSON body Procore answers for a grant; without `created_at` (as a plain RFC 6749 server)
/// when the emulator floors issue times.
fn grant_body(shared: &Shared, grant: &Minted) -> serde_json::Value {
    let mut body = serde_json::json!({
        "access_token": grant.access_token,
        "token_type": "bearer",
        "expires_in": grant.expires_in,
        "created_at": grant.created_at,
    });
    if let Some(object) = body.as_object_mut() {
        if let Some(refresh_token) = &grant.refresh_token {
            object.insert("refresh_token".to_owned(), refresh_token.clone().into());
        }
        if shared.config.floor_issue_times {
            object.remove("created_at");
        }
    }
    body
}

fn outcome_body(
    shared: &Shared,
    outcome: &Result<Minted, GrantError>,
) -> (StatusCode, serde_json::Value) {
    match outcome {
        Ok(grant) => (StatusCode::OK, grant_body(shared, grant)),
        Err(error) => (error.status(), error.body()),
    }
}

/// `body` with a `"padding"` field that brings it to `bytes` bytes (or more, if it is larger).
fn padded(mut body: serde_json::Value, bytes: usize) -> String {
    fn set_padding(body: &mut serde_json::Value, len: usize) {
        if let Some(object) = body.as_object_mut() {
            object.insert("padding".to_owned(), "a".repeat(len).into());
        }
    }
    set_padding(&mut body, 0);
    let len = bytes.saturating_sub(body.to_string().len());
    set_padding(&mut body, len);
    body.to_string()
}

fn server_error(status: StatusCode) -> Response {
    let body = serde_json::json!({
        "error": "server_error",
        "error_description": "The authorization server encountered an unexpected condition.",
    });
    token_json(status, body.to_string())
}

/// `POST /oauth/token`.
pub(super) async fn token(
    State(shared): State<Arc<Shared>>,
    Extension(connection): Extension<ConnectionControl>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let content_type = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let params = Params::from_body(content_type, &body);
    let now_millis = shared.now_millis();

    // Count, take the fault and apply the grant in one critical section, so concurrent
    // refreshes with one token cannot both win.
    let (fault, outcome) = {
        let mut state = shared.lock();
        state.stats.token_calls += 1;
        let grant_type = params
            .as_ref()
            .ok()
            .and_then(|p| p.get("grant_type"))
            .and_then(GrantType::parse);
        match grant_type {
            Some(GrantType::AuthorizationCode) => state.stats.authorization_code_grants += 1,
            Some(GrantType::RefreshToken) => state.stats.refresh_token_grants += 1,
            Some(GrantType::ClientCredentials) => state.stats.client_credentials_grants += 1,
            None => {}
        }
        // The user whose refresh token or code this is: one hash lookup, before the grant
        // consumes anything.
        let user = params.as_ref().ok().and_then(|p| state.grant_user(p));
        // Global faults first, whatever the user; then the user's own.
        let fault = match state.token_faults.pop_front() {
            Some(fault) => Some(fault),
            None => user
                .and_then(|user| state.user_mut(user))
                .and_then(|record| record.token_faults.pop_front()),
        };
        let outcome = match &fault {
            Some(fault) if !fault.processes_grant() => None,
            _ => Some(
                params
                    .map_err(GrantError::InvalidRequest)
                    .and_then(|params| state.grant(&shared.config, &params, now_millis)),
            ),
        };
        let failed = fault.is_some() || !matches!(outcome, Some(Ok(_)));
        if failed {
            state.stats.failed_token_calls += 1;
        }
        if let Some(record) = user.and_then(|user| state.user_mut(user)) {
            record.stats.token_calls += 1;
            if failed {
                record.stats.failed_token_calls += 1;
            } else if grant_type == Some(GrantType::RefreshToken) {
                record.stats.refresh_grants += 1;
            }
        }
        (fault, outcome)
    };

    let response = match (fault, outcome) {
        (None, Some(outcome)) => {
            let (status, body) = outcome_body(&shared, &outcome);
            token_json(status, body.to_string())
        }
        (Some(TokenFault::Status(code)), _) => {
            server_error(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        }
        (Some(TokenFault::RateLimited { retry_after_secs }), _) => {
            let body = serde_json::json!({
                "error": "rate_limited",
                "error_description": "Too many requests. Retry later.",
            });
            let mut response = token_json(StatusCode::TOO_MANY_REQUESTS, body.to_string());
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(retry_after_secs));
            response
        }
        (Some(TokenFault::Hang), _) => {
            // Never answer: at shutdown the connection closes unanswered, like a dead upstream.
            shared.until_shutdown().await;
            connection.drop_connection();
            return std::future::pending().await;
        }
        (Some(TokenFault::MalformedJson), Some(outcome)) => {
            let mut bytes = outcome_body(&shared, &outcome).1.to_string().into_bytes();
            // Cut before the closing brace: never parses.
            bytes.truncate(bytes.len() / 2);
            token_json(StatusCode::OK, bytes)
        }
        (Some(TokenFault::MissingAccessToken), Some(outcome)) => {
            let mut body = match &outcome {
                Ok(grant) => grant_body(&shared, grant),
                Err(_) => serde_json::json!({
                    "token_type": "bearer",
                    "expires_in": shared.config.access_token_lifetime_secs,
                    "created_at": unix_secs(now_millis),
                }),
            };
            if let Some(object) = body.as_object_mut() {
                object.remove("access_token");
                if shared.config.floor_issue_times {
                    object.remove("created_at");
                }
            }
            token_json(StatusCode::OK, body.to_string())
        }
        (Some(TokenFault::HugeBody { bytes }), Some(outcome)) => {
            let (status, body) = outcome_body(&shared, &outcome);
            token_json(status, padded(body, bytes))
        }
        (Some(TokenFault::InvalidGrant), _) => {
            let error =
                GrantError::InvalidGrant("the refresh token or authorization code is invalid");
            token_json(error.status(), error.body().to_string())
        }
        (Some(TokenFault::RotateThenFail), _) => server_error(StatusCode::INTERNAL_SERVER_ERROR),
        (Some(TokenFault::RotateThenDrop), _) => {
            connection.drop_connection();
            // The connection task drops this future with the connection.
            return std::future::pending().await;
        }
        // Unreachable: a grant is processed for every fault that needs its outcome.
        (_, None) => server_error(StatusCode::INTERNAL_SERVER_ERROR),
    };
    shared.delay(Route::Token).await;
    response
}

/// `POST /oauth/revoke` (RFC 7009).
pub(super) async fn revoke(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let content_type = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let response = match revoke_request(&shared, content_type, &body) {
        Ok(()) => json(StatusCode::OK, serde_json::json!({})),
        Err(error) => json(error.status(), error.body()),
    };
    shared.delay(Route::Revoke).await;
    response
}

fn revoke_request(
    shared: &Shared,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<(), GrantError> {
    let params = Params::from_body(content_type, body).map_err(GrantError::InvalidRequest)?;
    let client_id = shared.config.authenticate(&params)?;
    let token = params
        .get("token")
        .ok_or_else(|| GrantError::InvalidRequest("the token parameter is missing".to_owned()))?;
    let mut state = shared.lock();
    state.revoke(token, client_id);
    state.stats.revocations += 1;
    Ok(())
}

/// `GET /oauth/token/info` (Doorkeeper's introspection).
pub(super) async fn token_info(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let now_millis = shared.now_millis();
    let response = {
        let mut state = shared.lock();
        let live = bearer(&headers)
            .ok_or(TokenRejection::Unknown)
            .and_then(|token| state.check_access(token, now_millis));
        match live {
            Ok(live) => json(
                StatusCode::OK,
                serde_json::json!({
                    "resource_owner_id": live.owner.resource_owner_id(),
                    "scopes": [],
                    // Whole seconds until the server refuses the token (floored: at most the
                    // truth), which is before the claimed expiry with the early-expiry knobs.
                    "expires_in_seconds":
                        unix_secs(live.valid_until_millis.saturating_sub(now_millis)),
                    "application": { "uid": live.client_id },
                    "created_at": live.created_at,
                }),
            ),
            Err(rejection) => {
                state.stats.unauthorized_served += 1;
                let user = bearer(&headers).and_then(|token| state.access_user(token));
                if let Some(record) = user.and_then(|user| state.user_mut(user)) {
                    record.stats.unauthorized_served += 1;
                }
                json(
                    StatusCode::UNAUTHORIZED,
                    serde_json::json!({
                        "error": "invalid_token",
                        "error_description": rejection.message(),
                    }),
                )
            }
        }
    };
    shared.delay(Route::TokenInfo).await;
    response
}
