//! Scripted faults for the token endpoint and the API.

/// What the next call to `POST /oauth/token` does instead of answering normally.
///
/// Queue faults with [`Emulator::push_token_fault`](crate::Emulator::push_token_fault); each call
/// to the token endpoint takes the oldest queued fault, whatever its grant type. Faults queued
/// with [`Emulator::push_token_fault_for`](crate::Emulator::push_token_fault_for) are taken only
/// by calls of that user (presenting the user's refresh token or code), once the global queue
/// is empty; every kind of fault can be queued either way.
///
/// Faults come in two kinds, which matters for Procore's single-use refresh tokens:
///
/// * **In front of the server** ([`Status`](Self::Status), [`RateLimited`](Self::RateLimited),
///   [`Hang`](Self::Hang)), as a proxy or gateway would produce them: the grant is **not**
///   processed, so a presented refresh token stays live.
/// * **From the server** (all others): the grant is processed exactly as on success (a presented
///   refresh token is consumed, a code is used, a new pair is minted and stored), then the
///   response is replaced. The client never learns the new pair, so the credential is lost, as
///   with Procore when a refresh response goes astray.
///
/// Every faulted call counts in [`Stats::failed_token_calls`](crate::Stats::failed_token_calls).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenFault {
    /// Answer with this status (e.g. 500 or 503) and a JSON body
    /// `{"error":"server_error","error_description":"…"}`. An invalid status code becomes 500.
    Status(u16),
    /// Answer 429 with `Retry-After: <retry_after_secs>` and a JSON error body.
    RateLimited {
        /// The `Retry-After` value, in seconds.
        retry_after_secs: u64,
    },
    /// Never answer: the request stays open until the client gives up, or until the emulator
    /// is dropped, which closes the connection without a response.
    Hang,
    /// Answer 200 `application/json` with a truncated, unparsable JSON body.
    MalformedJson,
    /// Answer 200 with a token JSON body that has every field but `access_token`.
    MissingAccessToken,
    /// Answer with the normal response, padded with a `"padding"` field to `bytes` bytes in all.
    HugeBody {
        /// The total body size, in bytes.
        bytes: usize,
    },
    /// Answer 400 `{"error":"invalid_grant",…}`.
    InvalidGrant,
    /// Rotate (burn the presented refresh token or code), then answer 500.
    RotateThenFail,
    /// Rotate (burn the presented refresh token or code), then close the connection without
    /// sending any response: the lost-response case.
    RotateThenDrop,
}

impl TokenFault {
    /// Whether the grant is processed (and its side effects happen) before the fault answers.
    pub(crate) fn processes_grant(&self) -> bool {
        !matches!(
            self,
            Self::Status(_) | Self::RateLimited { .. } | Self::Hang
        )
    }
}

/// What the next call to a `/rest/` route does instead of answering normally.
///
/// Queue faults with [`Emulator::push_api_fault`](crate::Emulator::push_api_fault); each API call
/// (any method, any `/rest/` path) takes the oldest queued fault before its token is even looked
/// at. Faults answer in front of the rate limiter: the call counts against no budget (nor does
/// it start a window), and the response carries the `X-Rate-Limit-*` headers of the presented
/// token's budget as it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ApiFault {
    /// Answer 429 with `Retry-After: <retry_after_secs>` and `X-Rate-Limit-Remaining: 0`.
    RateLimited {
        /// The `Retry-After` value, in seconds.
        retry_after_secs: u64,
    },
    /// Answer 503 with `Retry-After: <retry_after_secs>` (delay-seconds), as Procore does
    /// under heavy load.
    Unavailable {
        /// The `Retry-After` value, in seconds.
        retry_after_secs: u64,
    },
    /// Answer 503 with `Retry-After` as an HTTP-date (RFC 9110 IMF-fixdate, e.g.
    /// `Sun, 06 Nov 1994 08:49:37 GMT`): the instant the call arrived, on the emulator's
    /// clock, plus `retry_after_secs`, **rounded up** to the whole second, so a client that
    /// waits until that date waits at least `retry_after_secs`.
    UnavailableHttpDate {
        /// How far after the call the date is, in seconds (before rounding up).
        retry_after_secs: u64,
    },
    /// Answer 503 with exactly this `Retry-After` value, or none: for a client's handling of
    /// missing or malformed values. A value that is not a valid header value (control
    /// characters) is sent as no header.
    UnavailableRaw {
        /// The `Retry-After` header's value; `None` sends no `Retry-After`.
        retry_after: Option<String>,
    },
    /// Answer 401 once, even for a valid token (counted in
    /// [`Stats::unauthorized_served`](crate::Stats::unauthorized_served)).
    Unauthorized,
}
