//! The protected API under `/rest/`, and the off-host file storage.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Extension, Path, Request, State};
use axum::http::header::{
    HeaderMap, HeaderName, AUTHORIZATION, CONTENT_TYPE, LOCATION, RETRY_AFTER,
};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{bearer, json};
use crate::emulator::Route;
use crate::fault::ApiFault;
use crate::rate_limit::{ceil_secs, http_date, Admission, Exceeded};
use crate::state::{
    LiveToken, Owner, Shared, State as EmulatorState, TokenRejection, SERVICE_ACCOUNT_ID,
    SERVICE_ACCOUNT_LOGIN, SERVICE_ACCOUNT_NAME,
};
use crate::stats::ApiRequest;
use crate::user::UserId;

const PROCORE_COMPANY_ID: HeaderName = HeaderName::from_static("procore-company-id");
const RATE_LIMIT_LIMIT: HeaderName = HeaderName::from_static("x-rate-limit-limit");
const RATE_LIMIT_REMAINING: HeaderName = HeaderName::from_static("x-rate-limit-remaining");
const RATE_LIMIT_RESET: HeaderName = HeaderName::from_static("x-rate-limit-reset");
/// The company listed by `/rest/v1.0/companies` (ids can exceed 32 bits).
const COMPANY_ID: u64 = 5_000_000_000_123;
/// Procore's 429 body text (for the hourly and the spike limit alike).
const RATE_LIMITED_MESSAGE: &str =
    "You have surpassed the max number of requests for an hour. Please wait until your limit resets.";

/// What the gate decided about an API call.
#[derive(Debug)]
enum Verdict {
    /// On to the handler, which can read the token from the request's extensions.
    Pass(LiveToken),
    /// Answered by the gate.
    Refuse(Response),
}

/// Runs before every `/rest/` handler: counts the call, applies a scripted fault, then the
/// presented token's rate limits, checks the bearer token and the company, then decorates the
/// response with Procore's headers.
pub(super) async fn gate(
    State(shared): State<Arc<Shared>>,
    mut request: Request,
    next: Next,
) -> Response {
    let company = request.headers().get(&PROCORE_COMPANY_ID).cloned();
    let authorization_received = request.headers().contains_key(AUTHORIZATION);
    let limits = shared.config.limits;
    let (verdict, report, log_index) = {
        let mut state = shared.lock();
        // Read under the lock, so that arrival times follow the order requests are counted in.
        let now_millis = shared.now_millis();
        state.stats.api_calls += 1;
        let token = bearer(request.headers());
        // The user whose token this is (live or not), for the per-user counters.
        let user = token.and_then(|token| state.access_user(token));
        if let Some(record) = user.and_then(|user| state.user_mut(user)) {
            record.stats.api_calls += 1;
        }
        let log_index = shared.config.record_api_log.then(|| {
            let at = now_millis.saturating_sub(shared.started_at_millis).max(0);
            state.api_log.push(ApiRequest {
                method: request.method().as_str().to_owned(),
                path: request.uri().path().to_owned(),
                status: 0,
                at: Duration::from_millis(u64::try_from(at).unwrap_or(0)),
                user,
            });
            state.api_log.len() - 1
        });
        let (verdict, report) = if let Some(fault) = state.api_faults.pop_front() {
            let report = state.budget_mut(token).report(&limits, now_millis);
            let response = fault_response(&fault, authorization_received, now_millis);
            (Verdict::Refuse(response), report)
        } else {
            match state.budget_mut(token).admit(&limits, now_millis) {
                Admission::Limited {
                    report,
                    retry_after_secs,
                    exceeded,
                } => {
                    if exceeded == Exceeded::Spike {
                        state.stats.spike_limited_served += 1;
                    }
                    (Verdict::Refuse(rate_limited(retry_after_secs)), report)
                }
                Admission::Allowed(report) => {
                    let live = token
                        .ok_or(TokenRejection::Unknown)
                        .and_then(|token| state.check_access(token, now_millis));
                    let verdict = match (live, company_id(company.as_ref())) {
                        (Err(rejection), _) => Verdict::Refuse(unauthorized(
                            rejection.message(),
                            authorization_received,
                        )),
                        (Ok(_), Some(company))
                            if shared.config.forbidden_company == Some(company) =>
                        {
                            Verdict::Refuse(forbidden_response(company))
                        }
                        (Ok(live), _) => Verdict::Pass(live),
                    };
                    (verdict, report)
                }
            }
        };
        if let Verdict::Refuse(response) = &verdict {
            count_refusal(&mut state, response.status(), user);
        }
        (verdict, report, log_index)
    };

    let mut response = match verdict {
        Verdict::Pass(live) => {
            request.extensions_mut().insert(live);
            next.run(request).await
        }
        Verdict::Refuse(response) => response,
    };
    if let Some(index) = log_index {
        if let Some(entry) = shared.lock().api_log.get_mut(index) {
            entry.status = response.status().as_u16();
        }
    }
    shared.delay(Route::Api).await;

    let headers = response.headers_mut();
    let remaining = if headers.contains_key(&RATE_LIMIT_REMAINING) {
        0 // a scripted 429 already says it
    } else {
        report.remaining
    };
    headers.insert(RATE_LIMIT_LIMIT, HeaderValue::from(report.limit));
    headers.insert(RATE_LIMIT_REMAINING, HeaderValue::from(remaining));
    headers.insert(RATE_LIMIT_RESET, HeaderValue::from(report.reset));
    if let Some(company) = company {
        headers.insert(PROCORE_COMPANY_ID, company);
    }
    response
}

/// Counts a response the gate answered, overall and for the token's user.
fn count_refusal(state: &mut EmulatorState, status: StatusCode, user: Option<UserId>) {
    let stats = &mut state.stats;
    match status {
        StatusCode::UNAUTHORIZED => stats.unauthorized_served += 1,
        StatusCode::FORBIDDEN => stats.forbidden_served += 1,
        StatusCode::TOO_MANY_REQUESTS => stats.rate_limited_served += 1,
        StatusCode::SERVICE_UNAVAILABLE => stats.service_unavailable_served += 1,
        _ => {}
    }
    if let Some(record) = user.and_then(|user| state.user_mut(user)) {
        match status {
            StatusCode::UNAUTHORIZED => record.stats.unauthorized_served += 1,
            StatusCode::TOO_MANY_REQUESTS => record.stats.rate_limited_served += 1,
            _ => {}
        }
    }
}

/// A 429 from the rate limiter or the spike limit: Procore's message, `Retry-After` in seconds.
fn rate_limited(retry_after_secs: u64) -> Response {
    let mut response = json(
        StatusCode::TOO_MANY_REQUESTS,
        serde_json::json!({ "errors": RATE_LIMITED_MESSAGE }),
    );
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(retry_after_secs));
    response
}

fn company_id(header: Option<&HeaderValue>) -> Option<u64> {
    header?.to_str().ok()?.trim().parse().ok()
}

/// Procore's 401 body, plus whether an `Authorization` header arrived (for tests of clients
/// that must not send one).
fn unauthorized(message: &str, authorization_received: bool) -> Response {
    json(
        StatusCode::UNAUTHORIZED,
        serde_json::json!({ "errors": message, "authorization_received": authorization_received }),
    )
}

fn forbidden_response(company: u64) -> Response {
    json(
        StatusCode::FORBIDDEN,
        serde_json::json!({
            "errors": format!("This app is not connected to company {company}. Ask a company admin to install it."),
        }),
    )
}

fn fault_response(fault: &ApiFault, authorization_received: bool, now_millis: i64) -> Response {
    let (status, retry_after, message) = match fault {
        ApiFault::RateLimited { retry_after_secs } => (
            StatusCode::TOO_MANY_REQUESTS,
            Some(HeaderValue::from(*retry_after_secs)),
            "Rate limit exceeded",
        ),
        ApiFault::Unavailable { retry_after_secs } => (
            StatusCode::SERVICE_UNAVAILABLE,
            Some(HeaderValue::from(*retry_after_secs)),
            "Service unavailable",
        ),
        ApiFault::UnavailableHttpDate { retry_after_secs } => {
            let delay_millis =
                i64::try_from(retry_after_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
            let date = http_date(ceil_secs(now_millis.saturating_add(delay_millis)));
            (
                StatusCode::SERVICE_UNAVAILABLE,
                HeaderValue::try_from(date).ok(),
                "Service unavailable",
            )
        }
        ApiFault::UnavailableRaw { retry_after } => (
            StatusCode::SERVICE_UNAVAILABLE,
            retry_after
                .as_deref()
                .and_then(|value| HeaderValue::try_from(value).ok()),
            "Service unavailable",
        ),
        ApiFault::Unauthorized => {
            return unauthorized(TokenRejection::Unknown.message(), authorization_received)
        }
    };
    let mut response = json(status, serde_json::json!({ "errors": message }));
    if let Some(value) = retry_after {
        response.headers_mut().insert(RETRY_AFTER, value);
    }
    if status == StatusCode::TOO_MANY_REQUESTS {
        response
            .headers_mut()
            .insert(RATE_LIMIT_REMAINING, HeaderValue::from(0_u64));
    }
    response
}

/// `GET /rest/v1.0/me`: the identity of the user the token acts for.
pub(super) async fn me(
    State(shared): State<Arc<Shared>>,
    Extension(live): Extension<LiveToken>,
) -> Response {
    let (id, login, name) = match live.owner {
        Owner::User(user) => {
            let identity = shared
                .lock()
                .users
                .get(user)
                .map(|record| (record.login.clone(), record.name.clone()));
            // Users are never removed: a live token's user exists.
            let Some((login, name)) = identity else {
                return not_found().await;
            };
            (user.get(), login, name)
        }
        Owner::ServiceAccount => (
            SERVICE_ACCOUNT_ID,
            SERVICE_ACCOUNT_LOGIN.to_owned(),
            SERVICE_ACCOUNT_NAME.to_owned(),
        ),
    };
    json(
        StatusCode::OK,
        serde_json::json!({
            "id": id,
            "login": login,
            "name": name,
            // Only requests with a valid bearer reach a handler.
            "authorization_received": true,
        }),
    )
}

/// `GET /rest/v1.0/companies`.
pub(super) async fn companies() -> Response {
    json(
        StatusCode::OK,
        serde_json::json!([{ "id": COMPANY_ID, "name": "Testkit Construction", "is_active": true }]),
    )
}

/// `POST`/`PUT`/`PATCH /rest/v1.0/echo`: the body back, with its content type.
pub(super) async fn echo(headers: HeaderMap, body: Bytes) -> Response {
    let content_type = headers
        .get(CONTENT_TYPE)
        .cloned()
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    (StatusCode::OK, [(CONTENT_TYPE, content_type)], body).into_response()
}

/// Whether a file id is safe to put back in a URL as is.
fn valid_file_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `GET /rest/v1.0/files/{id}`: redirects to the storage host, like Procore's file URLs.
pub(super) async fn file(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    if !valid_file_id(&id) {
        return not_found().await;
    }
    let location = format!("{}/storage/{id}", shared.alternate_host_url);
    match HeaderValue::try_from(location) {
        Ok(location) => (StatusCode::FOUND, [(LOCATION, location)]).into_response(),
        Err(_) => not_found().await,
    }
}

/// `GET /storage/{id}`: the download, on the other host name. It needs no authorization and
/// records whether one was sent anyway.
pub(super) async fn storage(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    {
        let mut state = shared.lock();
        state.stats.storage_requests += 1;
        if headers.contains_key(AUTHORIZATION) {
            state.stats.storage_requests_with_authorization += 1;
        }
    }
    (
        StatusCode::OK,
        [(
            CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        )],
        format!("contents of file {id}"),
    )
        .into_response()
}

/// Any other `/rest/` route (after authentication, as on Procore).
pub(super) async fn not_found() -> Response {
    json(
        StatusCode::NOT_FOUND,
        serde_json::json!({ "errors": "Not Found" }),
    )
}
