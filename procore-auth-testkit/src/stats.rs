//! What the emulator has seen.

use std::time::Duration;

use crate::user::UserId;

/// A consistent snapshot of the emulator's counters, taken by
/// [`Emulator::stats`](crate::Emulator::stats).
///
/// All counters start at zero and only grow, over all users (per user:
/// [`Emulator::user_stats`](crate::Emulator::user_stats)). Tokens minted with
/// [`Emulator::issue_token`](crate::Emulator::issue_token) (or
/// [`issue_token_for`](crate::Emulator::issue_token_for)) or codes made with
/// [`Emulator::authorize_code`](crate::Emulator::authorize_code) (or
/// [`authorize_code_for`](crate::Emulator::authorize_code_for)) count nowhere.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Every request received by `POST /oauth/token`, whatever its outcome.
    pub token_calls: u64,
    /// Token calls with `grant_type=authorization_code`, failed ones included.
    pub authorization_code_grants: u64,
    /// Token calls with `grant_type=refresh_token`, failed ones included.
    pub refresh_token_grants: u64,
    /// Token calls with `grant_type=client_credentials`, failed ones included.
    pub client_credentials_grants: u64,
    /// Token calls that did not answer a well-formed token: every error status and every
    /// scripted [`TokenFault`](crate::TokenFault).
    pub failed_token_calls: u64,
    /// Every request received by a `/rest/` route, whatever its outcome.
    pub api_calls: u64,
    /// 401 responses served by the `/rest/` routes and `/oauth/token/info` (scripted
    /// [`ApiFault::Unauthorized`](crate::ApiFault::Unauthorized) included).
    pub unauthorized_served: u64,
    /// 403 responses served because of the forbidden `Procore-Company-Id`.
    pub forbidden_served: u64,
    /// 429 responses served by the `/rest/` routes: the rate limit's and the spike limit's
    /// ([`EmulatorBuilder::rate_limit`](crate::EmulatorBuilder::rate_limit),
    /// [`EmulatorBuilder::spike_limit`](crate::EmulatorBuilder::spike_limit)) and scripted
    /// [`ApiFault::RateLimited`](crate::ApiFault::RateLimited).
    pub rate_limited_served: u64,
    /// The part of [`rate_limited_served`](Self::rate_limited_served) refused by the spike
    /// limit.
    pub spike_limited_served: u64,
    /// 503 responses served by the `/rest/` routes (all scripted: the `Unavailable…`
    /// variants of [`ApiFault`](crate::ApiFault)).
    pub service_unavailable_served: u64,
    /// Calls to `POST /oauth/revoke` that were answered 200 (known token or not).
    pub revocations: u64,
    /// Refresh tokens consumed by a `refresh_token` grant, in the order they were consumed. A
    /// token appears here when the server burned it, even if the call then failed.
    pub consumed_refresh_tokens: Vec<String>,
    /// Requests to `/storage/{id}` that carried an `Authorization` header.
    pub storage_requests_with_authorization: u64,
    /// Every request to `/storage/{id}`.
    pub storage_requests: u64,
}

/// One `/rest/` request, as recorded by the emulator when
/// [`EmulatorBuilder::record_api_log`](crate::EmulatorBuilder::record_api_log) is on; read them
/// with [`Emulator::api_log`](crate::Emulator::api_log).
///
/// These are the server's own records: a test can check, say, that a client retried no sooner
/// than a `Retry-After` allowed by comparing two entries' [`at`](Self::at), without timing the
/// client.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ApiRequest {
    /// The request method, as sent (`GET`, `POST`, …).
    pub method: String,
    /// The request path, without the query string.
    pub path: String,
    /// The response status; 0 if no response was produced (the client went away while the
    /// request was being handled).
    pub status: u16,
    /// When the request arrived, since the emulator started, on the emulator's clock (the one
    /// that rate-limit windows and token expiry are judged on), with millisecond precision.
    pub at: Duration,
    /// The user whose access token the request presented (live or not); `None` without a
    /// token the server knows, or with a client-credentials token.
    pub user: Option<UserId>,
}
