//! What a mock Procore answers with, for measuring what recording its rate-limit
//! headers costs: `X-Rate-Limit-Limit`, `-Remaining` and `-Reset` as Procore sends
//! them, or three other headers of the same sizes that nothing records.
//!
//! Every answer costs the mock the same (a `HeaderMap` of three entries, values cloned
//! from ones made beforehand, one atomic count), so comparing a stack answered with
//! [`Headers::RateLimit`] against the same stack answered with [`Headers::Other`]
//! leaves the recording alone; the bare service answered both ways shows what the
//! answers themselves cost.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use http::header::HeaderName;
use http::{HeaderMap, HeaderValue};
use procore_auth_core::{
    Clock, SystemClock, X_RATE_LIMIT_LIMIT, X_RATE_LIMIT_REMAINING, X_RATE_LIMIT_RESET,
};

/// Procore's default budget: requests per window…
pub const LIMIT: u64 = 3_600;
/// …whose window is an hour.
pub const WINDOW: Duration = Duration::from_secs(3_600);
/// Requests answered per window before the next window starts (its reset a second
/// later): fewer than [`LIMIT`], so the budget never runs out and
/// `RateLimitPolicy::Wait` admits every request at once.
pub const ANSWERS_PER_WINDOW: u64 = 3_000;

/// Which headers the answers carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Headers {
    /// `X-Rate-Limit-Limit: 3600`, `X-Rate-Limit-Remaining` counting down from 3599,
    /// `X-Rate-Limit-Reset` a fixed Unix second an hour ahead (a second later for each
    /// new window).
    RateLimit,
    /// The same values under three other names of the same lengths, which the
    /// manager does not record (it only looks for its own, and finds none).
    Other,
}

impl Headers {
    /// The three names, in the order limit, remaining, reset.
    fn names(self) -> [HeaderName; 3] {
        match self {
            Headers::RateLimit => [
                X_RATE_LIMIT_LIMIT,
                X_RATE_LIMIT_REMAINING,
                X_RATE_LIMIT_RESET,
            ],
            Headers::Other => [
                HeaderName::from_static("x-request-trace-id"),
                HeaderName::from_static("x-procore-backend-node"),
                HeaderName::from_static("x-served-by-region"),
            ],
        }
    }
}

/// The headers of successive answers; clones share the count.
#[derive(Clone, Debug)]
pub struct Answers {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    names: [HeaderName; 3],
    sent: AtomicU64,
    limit: HeaderValue,
    /// `remaining[i]`: the count after the `i`-th answer of a window.
    remaining: Vec<HeaderValue>,
    /// `resets[w]`: window `w`'s reset, made for the answers expected.
    resets: Vec<HeaderValue>,
    first_reset: u64,
}

impl Answers {
    /// Answers carrying `headers`, the first window resetting an hour from now; the
    /// values of the first `expected` answers are made now (more are made as
    /// needed).
    pub fn new(headers: Headers, expected: u64) -> Self {
        let now = SystemClock
            .now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_secs();
        let first_reset = now + WINDOW.as_secs();
        let windows = expected / ANSWERS_PER_WINDOW + 1;
        Self {
            inner: Arc::new(Inner {
                names: headers.names(),
                sent: AtomicU64::new(0),
                limit: HeaderValue::from(LIMIT),
                remaining: (0..ANSWERS_PER_WINDOW)
                    .map(|answered| HeaderValue::from(LIMIT - 1 - answered))
                    .collect(),
                resets: (0..windows)
                    .map(|window| HeaderValue::from(reset_of(first_reset, window)))
                    .collect(),
                first_reset,
            }),
        }
    }

    /// The headers of the next answer.
    #[inline]
    pub fn next(&self) -> HeaderMap {
        let inner = &*self.inner;
        let sent = inner.sent.fetch_add(1, Ordering::Relaxed);
        let (window, answered) = (sent / ANSWERS_PER_WINDOW, sent % ANSWERS_PER_WINDOW);
        let reset = match inner.resets.get(window as usize) {
            Some(reset) => reset.clone(),
            None => HeaderValue::from(reset_of(inner.first_reset, window)),
        };
        let [limit_name, remaining_name, reset_name] = inner.names.clone();
        let mut headers = HeaderMap::with_capacity(3);
        headers.insert(limit_name, inner.limit.clone());
        headers.insert(remaining_name, inner.remaining[answered as usize].clone());
        headers.insert(reset_name, reset);
        headers
    }

    /// How many answers were given.
    pub fn sent(&self) -> u64 {
        self.inner.sent.load(Ordering::Relaxed)
    }

    /// What the last answer said, as `(remaining, reset in Unix seconds)`; `None`
    /// before the first.
    pub fn last(&self) -> Option<(u64, u64)> {
        let last = self.sent().checked_sub(1)?;
        let (window, answered) = (last / ANSWERS_PER_WINDOW, last % ANSWERS_PER_WINDOW);
        Some((
            LIMIT - 1 - answered,
            reset_of(self.inner.first_reset, window),
        ))
    }
}

/// Window `window`'s reset: a second after the previous one. A later reset is what
/// tells the manager a new window began; an hour per window would put the resets of
/// a long run more than a day ahead, which the manager ignores as absurd (and then,
/// under `RateLimitPolicy::Wait`, the last believed window runs out).
fn reset_of(first_reset: u64, window: u64) -> u64 {
    first_reset + window
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_count_down_and_roll_over_to_the_next_window() {
        let answers = Answers::new(Headers::RateLimit, 10);
        let first = answers.next();
        assert_eq!(first[X_RATE_LIMIT_LIMIT], "3600");
        assert_eq!(first[X_RATE_LIMIT_REMAINING], "3599");
        let reset: u64 = first[X_RATE_LIMIT_RESET].to_str().unwrap().parse().unwrap();
        assert_eq!(answers.last(), Some((3599, reset)));
        for _ in 1..ANSWERS_PER_WINDOW {
            answers.next();
        }
        assert_eq!(answers.last(), Some((LIMIT - ANSWERS_PER_WINDOW, reset)));
        let next_window = answers.next();
        assert_eq!(next_window[X_RATE_LIMIT_REMAINING], "3599");
        assert_eq!(
            next_window[X_RATE_LIMIT_RESET],
            (reset + 1).to_string().as_str()
        );
    }

    #[test]
    fn other_headers_have_the_same_sizes() {
        let (ours, other) = (
            Answers::new(Headers::RateLimit, 1).next(),
            Answers::new(Headers::Other, 1).next(),
        );
        let sizes = |headers: &HeaderMap| {
            headers
                .iter()
                .map(|(name, value)| (name.as_str().len(), value.len()))
                .collect::<Vec<_>>()
        };
        assert_eq!(sizes(&ours), sizes(&other));
        assert!(other.keys().all(|name| !ours.contains_key(name)));
    }
}
