//! When a request may be sent again, as Procore allows: the one decision behind the
//! tower retry layer and the reqwest retry middleware.
//!
//! Retried: 429 and 503 (waiting at least as long as `Retry-After`, in seconds or as
//! an HTTP date, and for a 429 with nothing remaining until `X-Rate-Limit-Reset`),
//! and connection failures before the request was sent. Only idempotent methods,
//! unless the application opts in (a 429 or 503 does not say the request had no
//! effect, and a second POST may create a second record). Attempts and total time are
//! bounded, and the back-off between attempts is jittered.
//!
//! The schedule is the manager's back-off ([`Jitter`], doubling from a base up to a
//! maximum) rather than `backon`'s or `retry-policies`': neither takes the server's
//! delay into account, which here decides the wait whenever it is given, so either
//! would add a dependency and still need this decision around it.

use std::time::{Duration, SystemTime};

use http::header::RETRY_AFTER;
use http::{HeaderMap, Method, StatusCode};

use crate::rate_limit::{X_RATE_LIMIT_REMAINING, X_RATE_LIMIT_RESET};
use crate::Jitter;

/// How many attempts a request gets unless told otherwise, the first included.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// How long after the first attempt a retry may still start (default): past it, the
/// last answer is returned as it is. (An attempt already sent is not cut short.)
pub const DEFAULT_MAX_ELAPSED: Duration = Duration::from_secs(60);

/// Which requests are sent again, and when. Used by `procore-auth-tower`'s
/// `RetryLayer` and `procore-auth-reqwest`'s `RetryMiddleware`.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use http::{HeaderMap, Method, StatusCode};
/// use procore_auth_core::{Jitter, RetryPolicy};
///
/// let policy = RetryPolicy::new().jitter(Jitter::none());
/// let mut headers = HeaderMap::new();
/// headers.insert("retry-after", "2".parse()?);
/// let now = SystemTime::now();
/// // A GET answered 503 "come back in 2 s" goes again in 2 s…
/// let wait = policy.after_response(1, Duration::ZERO, &Method::GET, StatusCode::SERVICE_UNAVAILABLE, &headers, now);
/// assert_eq!(wait, Some(Duration::from_secs(2)));
/// // …a POST does not (unless `retry_non_idempotent(true)`).
/// let wait = policy.after_response(1, Duration::ZERO, &Method::POST, StatusCode::SERVICE_UNAVAILABLE, &headers, now);
/// assert_eq!(wait, None);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    max_attempts: u32,
    max_elapsed: Duration,
    backoff_base: Duration,
    backoff_max: Duration,
    jitter: Jitter,
    non_idempotent: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            max_elapsed: DEFAULT_MAX_ELAPSED,
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            jitter: Jitter::equal(),
            non_idempotent: false,
        }
    }
}

impl RetryPolicy {
    /// The defaults: [`DEFAULT_MAX_ATTEMPTS`] attempts within [`DEFAULT_MAX_ELAPSED`],
    /// back-off from 500 ms doubling up to 30 s, equal jitter, idempotent methods only.
    pub fn new() -> Self {
        Self::default()
    }

    /// Gives each request at most `attempts` attempts, the first included (at least 1).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Sends no attempt that would start later than `elapsed` after the first.
    pub fn max_elapsed(mut self, elapsed: Duration) -> Self {
        self.max_elapsed = elapsed;
        self
    }

    /// Waits from `base`, doubling per attempt up to `max`, when the server gives no
    /// delay (and at least that long when it does).
    pub fn backoff(mut self, base: Duration, max: Duration) -> Self {
        self.backoff_base = base;
        self.backoff_max = max.max(base);
        self
    }

    /// Spreads the back-off with `jitter` (default [`Jitter::equal`]). A server's
    /// delay is never shortened.
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// Also retries POST and PATCH (whose second attempt may repeat an effect).
    pub fn retry_non_idempotent(mut self, retry: bool) -> Self {
        self.non_idempotent = retry;
        self
    }

    /// After `attempts` attempts in `elapsed`, the last answered `status` with
    /// `headers` at `now`: how long to wait before the next attempt, or `None` to
    /// return this answer.
    pub fn after_response(
        &self,
        attempts: u32,
        elapsed: Duration,
        method: &Method,
        status: StatusCode,
        headers: &HeaderMap,
        now: SystemTime,
    ) -> Option<Duration> {
        if status != StatusCode::TOO_MANY_REQUESTS && status != StatusCode::SERVICE_UNAVAILABLE {
            return None;
        }
        if !self.may_resend(method) {
            return None;
        }
        let mut server = retry_after(headers, now);
        if status == StatusCode::TOO_MANY_REQUESTS {
            server = server.max(rate_limit_reset(headers, now));
        }
        self.next_wait(attempts, elapsed, server.unwrap_or_default())
    }

    /// After `attempts` attempts in `elapsed`, the last of which failed before it was
    /// sent (no connection): how long to wait before the next attempt, or `None`. Any
    /// method: nothing reached the server.
    pub fn after_unsent(&self, attempts: u32, elapsed: Duration) -> Option<Duration> {
        self.next_wait(attempts, elapsed, Duration::ZERO)
    }

    fn may_resend(&self, method: &Method) -> bool {
        self.non_idempotent || method.is_idempotent()
    }

    fn next_wait(&self, attempts: u32, elapsed: Duration, server: Duration) -> Option<Duration> {
        if attempts >= self.max_attempts {
            return None;
        }
        let doublings = attempts.saturating_sub(1).min(31);
        let backoff = self
            .backoff_base
            .saturating_mul(1 << doublings)
            .min(self.backoff_max);
        let wait = self.jitter.apply(backoff).max(server);
        (elapsed.saturating_add(wait) <= self.max_elapsed).then_some(wait)
    }
}

/// `Retry-After` as delay-seconds or an HTTP date (a date in the past is no delay).
/// Malformed values are no delay.
fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or_default())
}

/// For a 429 with nothing remaining: the time until `X-Rate-Limit-Reset`.
fn rate_limit_reset(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let remaining = headers.get(X_RATE_LIMIT_REMAINING)?.to_str().ok()?;
    if remaining.trim() != "0" {
        return None;
    }
    let reset: u64 = headers
        .get(X_RATE_LIMIT_RESET)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let reset = SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(reset))?;
    Some(reset.duration_since(now).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    const NOW: u64 = 1_700_000_000;

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(NOW)
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| (name.parse().unwrap(), value.parse().unwrap()))
            .collect()
    }

    fn policy() -> RetryPolicy {
        RetryPolicy::new().jitter(Jitter::none())
    }

    #[test]
    fn a_503_honours_retry_after_in_seconds_or_as_a_date() {
        let p = policy();
        let wait = |headers: &HeaderMap| {
            p.after_response(
                1,
                Duration::ZERO,
                &Method::GET,
                StatusCode::SERVICE_UNAVAILABLE,
                headers,
                now(),
            )
        };
        assert_eq!(
            wait(&headers(&[("retry-after", "2")])),
            Some(Duration::from_secs(2))
        );
        let date = httpdate::fmt_http_date(now() + Duration::from_secs(7));
        assert_eq!(
            wait(&headers(&[("retry-after", &date)])),
            Some(Duration::from_secs(7))
        );
        // No (usable) delay from the server: the back-off.
        assert_eq!(wait(&HeaderMap::new()), Some(Duration::from_millis(500)));
        assert_eq!(
            wait(&headers(&[("retry-after", "soon")])),
            Some(Duration::from_millis(500))
        );
    }

    #[test]
    fn a_spent_429_waits_for_the_reset() {
        let h = headers(&[
            ("x-rate-limit-remaining", "0"),
            ("x-rate-limit-reset", &(NOW + 9).to_string()),
            ("retry-after", "3"),
        ]);
        let wait = policy().after_response(
            1,
            Duration::ZERO,
            &Method::GET,
            StatusCode::TOO_MANY_REQUESTS,
            &h,
            now(),
        );
        assert_eq!(wait, Some(Duration::from_secs(9)));
    }

    #[test]
    fn only_429_and_503_and_only_idempotent_methods_unless_asked() {
        let p = policy();
        let none = HeaderMap::new();
        for status in [
            StatusCode::INTERNAL_SERVER_ERROR,
            StatusCode::UNAUTHORIZED,
            StatusCode::OK,
        ] {
            assert_eq!(
                p.after_response(1, Duration::ZERO, &Method::GET, status, &none, now()),
                None
            );
        }
        for method in [Method::POST, Method::PATCH] {
            assert_eq!(
                p.after_response(
                    1,
                    Duration::ZERO,
                    &method,
                    StatusCode::TOO_MANY_REQUESTS,
                    &none,
                    now()
                ),
                None
            );
        }
        let p = p.retry_non_idempotent(true);
        assert!(p
            .after_response(
                1,
                Duration::ZERO,
                &Method::POST,
                StatusCode::TOO_MANY_REQUESTS,
                &none,
                now()
            )
            .is_some());
        // A request that was never sent goes again whatever its method.
        assert_eq!(
            policy().after_unsent(1, Duration::ZERO),
            Some(Duration::from_millis(500))
        );
    }

    #[test]
    fn attempts_and_total_time_are_bounded() {
        let p = policy()
            .max_attempts(3)
            .max_elapsed(Duration::from_secs(10));
        let none = HeaderMap::new();
        let wait = |attempts, elapsed| {
            p.after_response(
                attempts,
                elapsed,
                &Method::GET,
                StatusCode::SERVICE_UNAVAILABLE,
                &none,
                now(),
            )
        };
        assert_eq!(wait(1, Duration::ZERO), Some(Duration::from_millis(500)));
        assert_eq!(wait(2, Duration::ZERO), Some(Duration::from_secs(1)));
        assert_eq!(wait(3, Duration::ZERO), None, "three attempts made");
        assert_eq!(
            wait(1, Duration::from_millis(9_600)),
            None,
            "would start after 10 s"
        );
        // An absurd Retry-After is not waited for: the answer comes back.
        let absurd = headers(&[("retry-after", "99999999999")]);
        assert_eq!(
            p.after_response(
                1,
                Duration::ZERO,
                &Method::GET,
                StatusCode::SERVICE_UNAVAILABLE,
                &absurd,
                now()
            ),
            None
        );
        // Huge attempt counts neither overflow nor panic.
        let p = policy().max_attempts(u32::MAX).max_elapsed(Duration::MAX);
        assert_eq!(
            p.after_unsent(u32::MAX - 1, Duration::ZERO),
            Some(Duration::from_secs(30))
        );
    }

    #[test]
    fn jitter_never_shortens_the_server_s_delay() {
        let p = RetryPolicy::new().jitter(Jitter::from_fn(|_| Duration::ZERO));
        let h = headers(&[("retry-after", "2")]);
        let wait = p.after_response(
            1,
            Duration::ZERO,
            &Method::GET,
            StatusCode::SERVICE_UNAVAILABLE,
            &h,
            now(),
        );
        assert_eq!(wait, Some(Duration::from_secs(2)));
    }
}
