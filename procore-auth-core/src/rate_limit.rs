//! Procore's rate limits, per token: read from every response that carried the token,
//! read back without a lock, and (if the application asks) respected before sending.
//!
//! Procore limits requests per access token (3 600 per 60-minute window by default)
//! and reports the budget on every response in `X-Rate-Limit-Limit`,
//! `X-Rate-Limit-Remaining` and `X-Rate-Limit-Reset` (Unix seconds); over the limit it
//! answers 429. Its documentation asks clients to stop sending while over the limit.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::HeaderName;
use http::{HeaderMap, HeaderValue};

/// `X-Rate-Limit-Limit`: requests allowed per window.
pub const X_RATE_LIMIT_LIMIT: HeaderName = HeaderName::from_static("x-rate-limit-limit");
/// `X-Rate-Limit-Remaining`: requests left in the current window.
pub const X_RATE_LIMIT_REMAINING: HeaderName = HeaderName::from_static("x-rate-limit-remaining");
/// `X-Rate-Limit-Reset`: when the window resets, in Unix seconds.
pub const X_RATE_LIMIT_RESET: HeaderName = HeaderName::from_static("x-rate-limit-reset");

/// The largest remaining count kept exactly (2²⁹ − 1); larger counts are kept as this,
/// which is as good as unlimited.
const MAX_REMAINING: u64 = (1 << (REMAINING_BITS - 1)) - 1;
/// Marks a provisional window: the one request sent after a reset to learn the next
/// window, which any report replaces.
const PROVISIONAL: u64 = 1 << (REMAINING_BITS - 1);
const REMAINING_BITS: u32 = 30;
/// The latest reset accepted (2³⁴ − 1 Unix seconds, in the year 2514): later ones are
/// absurd and ignored.
const MAX_RESET: u64 = (1 << (64 - REMAINING_BITS)) - 1;

/// What the last response that carried a token said about its budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RateLimit {
    /// Requests allowed per window.
    pub limit: u64,
    /// Requests left in the window (as counted down since by requests sent).
    pub remaining: u64,
    /// When the window resets.
    pub reset_at: SystemTime,
}

/// How requests treat a spent rate-limit budget. Set with
/// [`TokenManagerBuilder::rate_limit`](crate::TokenManagerBuilder::rate_limit).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum RateLimitPolicy {
    /// Record the budget; send regardless (Procore answers 429 when it is spent).
    #[default]
    Observe,
    /// When the budget is spent, requests wait for the reset if it is at most
    /// `max_wait` away (on a tokio timer: the runtime needs its time driver, as
    /// `#[tokio::main]` enables); otherwise they fail at once with
    /// [`Error::RateLimited`](crate::Error::RateLimited). After a reset, one request
    /// goes first to learn the new window.
    Wait {
        /// The longest a request waits for the reset.
        max_wait: Duration,
    },
    /// When the budget is spent, requests fail at once with
    /// [`Error::RateLimited`](crate::Error::RateLimited).
    FailFast,
}

/// The current token's budget: `window` packs the reset (Unix seconds, high 34 bits)
/// with the remaining count (29 bits) and the provisional flag, so they are always
/// read together; `limit` is informational. `u64::MAX` in `window` means unknown.
///
/// The budget belongs to one token (`generation`): a new token starts unknown.
#[derive(Debug)]
pub(crate) struct RateLimitState {
    window: AtomicU64,
    limit: AtomicU64,
    generation: AtomicU64,
    ignored: AtomicU64,
    /// Held while the budget passes to a new token.
    switching: std::sync::Mutex<()>,
}

const UNKNOWN: u64 = u64::MAX;

impl Default for RateLimitState {
    fn default() -> Self {
        Self {
            window: AtomicU64::new(UNKNOWN),
            limit: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            ignored: AtomicU64::new(0),
            switching: std::sync::Mutex::new(()),
        }
    }
}

fn pack(reset: u64, remaining: u64) -> u64 {
    (reset << REMAINING_BITS) | remaining.min(MAX_REMAINING)
}

fn unpack(window: u64) -> (u64, u64) {
    (window >> REMAINING_BITS, window & MAX_REMAINING)
}

/// How long the one request sent after a reset has to report the next window before
/// another is sent.
const PROBE_SECS: u64 = 1;

/// The furthest ahead a reset is believed: a day (Procore's windows are an hour).
const MAX_RESET_AHEAD: u64 = 24 * 60 * 60;

impl RateLimitState {
    /// Records the budget a response to a request with token `generation` (the
    /// current one) reported. A response without the headers changes nothing; one with
    /// a missing or malformed value among them is ignored whole and counted
    /// ([`ignored`](Self::ignored)).
    pub(crate) fn record(&self, generation: u64, headers: &HeaderMap, now: u64) {
        let Some(Reported {
            limit,
            remaining,
            reset,
        }) = Reported::scan(headers)
        else {
            self.ignored.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if remaining.is_none() && reset.is_none() {
            return;
        }
        let parsed = (|| {
            let remaining = parse_count(remaining?)?;
            // A reset more than a window away is absurd (Procore's windows are an
            // hour): one such header must not refuse requests for the token's life.
            let reset = parse_count(reset?)
                .filter(|reset| *reset <= now.saturating_add(MAX_RESET_AHEAD).min(MAX_RESET))?;
            // A reset already past by our clock (the server's is behind, or the answer
            // is late) still means "spent for now": a second, not "start afresh".
            let reset = reset.max(now.saturating_add(PROBE_SECS));
            let limit = match limit {
                Some(limit) => Some(parse_count(limit)?),
                None => None,
            };
            Some((remaining, reset, limit))
        })();
        let Some((remaining, reset, limit)) = parsed else {
            self.ignored.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if let Some(limit) = limit {
            self.limit.store(limit, Ordering::Relaxed);
        }
        let reported = pack(reset, remaining);
        if self.switch_to(generation, reported) {
            return; // the first report for a new token: its own budget
        }
        // Responses arrive out of order: within one window the lowest count is the
        // latest; a later window replaces an earlier one.
        let _ = self
            .window
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |current| {
                if current == UNKNOWN || current & PROVISIONAL != 0 {
                    return Some(reported);
                }
                let (current_reset, current_remaining) = unpack(current);
                match reset.cmp(&current_reset) {
                    std::cmp::Ordering::Greater => Some(reported),
                    std::cmp::Ordering::Equal if remaining < current_remaining => Some(reported),
                    _ => None,
                }
            });
    }

    /// Makes `window` token `generation`'s budget, unless the budget already is that
    /// token's; says whether it did. The window is stored before the generation, under
    /// a lock taken once per token, so whoever sees the new generation sees its window.
    fn switch_to(&self, generation: u64, window: u64) -> bool {
        if self.generation.load(Ordering::Acquire) == generation {
            return false;
        }
        let _switching = self
            .switching
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.generation.load(Ordering::Acquire) == generation {
            return false;
        }
        self.window.store(window, Ordering::Release);
        self.generation.store(generation, Ordering::Release);
        true
    }

    /// Takes one request from token `generation`'s budget if it allows one at `now`
    /// (Unix seconds); otherwise says until when it is spent.
    ///
    /// With `probe` (requests that wait rather than fail), an unknown budget (a token
    /// not yet reported on, or a window whose reset has passed) lets one request go to
    /// learn it while the rest wait (up to a second) for its report: all of them at
    /// once could overrun the window. Without, an unknown budget lets every request go.
    pub(crate) fn take(&self, generation: u64, now: u64, probe: bool) -> Result<(), u64> {
        let provisional = pack(now.saturating_add(PROBE_SECS).min(MAX_RESET), 0) | PROVISIONAL;
        if self.generation.load(Ordering::Acquire) != generation
            && (!probe || self.switch_to(generation, provisional))
        {
            return Ok(());
        }
        let mut current = self.window.load(Ordering::Acquire);
        loop {
            let next = if current == UNKNOWN {
                if !probe {
                    return Ok(());
                }
                provisional
            } else {
                let (reset, remaining) = unpack(current);
                if reset <= now {
                    if !probe {
                        return Ok(());
                    }
                    provisional
                } else if remaining == 0 {
                    return Err(reset);
                } else {
                    pack(reset, remaining - 1) | (current & PROVISIONAL)
                }
            };
            match self.window.compare_exchange_weak(
                current,
                next,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(()),
                Err(actual) => current = actual,
            }
        }
    }

    /// Gives back one request taken from token `generation`'s current window (it was
    /// never sent).
    pub(crate) fn refund(&self, generation: u64) {
        if self.generation.load(Ordering::Acquire) != generation {
            return;
        }
        let _ = self
            .window
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |current| {
                if current == UNKNOWN || current & PROVISIONAL != 0 {
                    return None;
                }
                let (reset, remaining) = unpack(current);
                Some(pack(reset, remaining + 1))
            });
    }

    /// The budget of token `generation` as last reported and counted down since.
    pub(crate) fn snapshot(&self, generation: u64) -> Option<RateLimit> {
        if self.generation.load(Ordering::Acquire) != generation {
            return None;
        }
        let window = self.window.load(Ordering::Acquire);
        if window == UNKNOWN || window & PROVISIONAL != 0 {
            return None;
        }
        let (reset, remaining) = unpack(window);
        Some(RateLimit {
            limit: self.limit.load(Ordering::Relaxed),
            remaining,
            reset_at: UNIX_EPOCH + Duration::from_secs(reset),
        })
    }

    /// Responses whose rate-limit headers were malformed, and so ignored.
    pub(crate) fn ignored(&self) -> u64 {
        self.ignored.load(Ordering::Relaxed)
    }
}

/// The rate-limit headers of a response (the first value of each).
#[derive(Default)]
struct Reported<'a> {
    limit: Option<&'a HeaderValue>,
    remaining: Option<&'a HeaderValue>,
    reset: Option<&'a HeaderValue>,
}

impl<'a> Reported<'a> {
    /// One pass over the headers: cheaper than three lookups, each of which hashes
    /// its name, on the every-response path. `None` if one of them is repeated with
    /// different values (which to believe?).
    #[inline]
    fn scan(headers: &'a HeaderMap) -> Option<Self> {
        let mut found = Self::default();
        for (name, value) in headers {
            let slot = match name.as_str().as_bytes() {
                // Fixed-size arrays compare in a few word loads; slices call `memcmp`.
                name if name.len() == 18 => {
                    let name: &[u8; 18] = name.try_into().ok()?;
                    if name == b"x-rate-limit-limit" {
                        &mut found.limit
                    } else if name == b"x-rate-limit-reset" {
                        &mut found.reset
                    } else {
                        continue;
                    }
                }
                name if name.len() == 22 => {
                    let name: &[u8; 22] = name.try_into().ok()?;
                    if name != b"x-rate-limit-remaining" {
                        continue;
                    }
                    &mut found.remaining
                }
                _ => continue,
            };
            match slot {
                None => *slot = Some(value),
                Some(first) if *first != value => return None,
                Some(_) => {}
            }
        }
        Some(found)
    }
}

/// A count as Procore sends it: 1 to 20 ASCII digits that fit a `u64`. Anything else
/// (signs, spaces, decimals, overflow) is `None`.
#[inline(always)] // three call sites on the every-response path: no call overhead
fn parse_count(value: &HeaderValue) -> Option<u64> {
    let bytes = value.as_bytes();
    match bytes.len() {
        // Up to 19 digits cannot overflow a `u64`: no checked arithmetic. This runs
        // three times per response, so four digits are taken at a time.
        1..=19 => {
            let (head, quads) = bytes.split_at(bytes.len() % 4);
            let mut number = 0_u64;
            for byte in head {
                let digit = byte.wrapping_sub(b'0');
                if digit > 9 {
                    return None;
                }
                number = number * 10 + u64::from(digit);
            }
            let (quads, _) = quads.as_chunks::<4>();
            for quad in quads {
                number = number * 10_000 + u64::from(four_digits(*quad)?);
            }
            Some(number)
        }
        20 => bytes.iter().try_fold(0_u64, |number, byte| {
            let digit = byte.checked_sub(b'0').filter(|digit| *digit <= 9)?;
            number.checked_mul(10)?.checked_add(u64::from(digit))
        }),
        _ => None,
    }
}

/// Four ASCII digits as their number, in a handful of word operations (the method of
/// simdjson's eight-digit parser, on four bytes); `None` if any byte is not a digit.
#[inline]
fn four_digits(quad: [u8; 4]) -> Option<u32> {
    let word = u32::from_le_bytes(quad);
    // Each byte is a digit iff its high nibble is 3 and adding 6 keeps it 3 (a carry
    // out of a byte only comes from one whose high nibble is not 3, so fails anyway).
    let high = word & 0xF0F0_F0F0;
    let carried = (word.wrapping_add(0x0606_0606) & 0xF0F0_F0F0) >> 4;
    if high | carried != 0x3333_3333 {
        return None;
    }
    let digits = word & 0x0F0F_0F0F; // the first digit in the lowest byte
    let pairs = (digits.wrapping_mul(10) + (digits >> 8)) & 0x00FF_00FF;
    Some((pairs.wrapping_mul(100) + (pairs >> 16)) & 0xFFFF)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn headers(limit: &str, remaining: &str, reset: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            (X_RATE_LIMIT_LIMIT, limit),
            (X_RATE_LIMIT_REMAINING, remaining),
            (X_RATE_LIMIT_RESET, reset),
        ] {
            headers.insert(name, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn records_the_budget_and_counts_it_down() {
        let state = RateLimitState::default();
        assert_eq!(state.snapshot(1), None);
        assert_eq!(state.take(1, 100, true), Ok(()), "unknown: no limit");
        state.record(1, &headers("3600", "2", "1000"), 100);
        let snapshot = state.snapshot(1).unwrap();
        assert_eq!((snapshot.limit, snapshot.remaining), (3600, 2));
        assert_eq!(snapshot.reset_at, UNIX_EPOCH + Duration::from_secs(1000));
        assert_eq!(state.take(1, 100, true), Ok(()));
        assert_eq!(state.take(1, 100, true), Ok(()));
        assert_eq!(state.take(1, 100, true), Err(1000), "spent until the reset");
        assert_eq!(
            state.take(1, 1000, true),
            Ok(()),
            "the window is over: one request goes"
        );
        assert_eq!(
            state.take(1, 1000, true),
            Err(1001),
            "the rest wait for its report"
        );
        state.record(1, &headers("3600", "3599", "4600"), 100);
        assert_eq!(state.take(1, 1000, true), Ok(()));
        assert_eq!(state.snapshot(1).unwrap().remaining, 3598);
        // A new token: its own budget, unknown until reported.
        assert_eq!(state.take(2, 1000, true), Ok(()));
        state.record(2, &headers("3600", "0", "5000"), 100);
        assert_eq!(state.take(2, 1000, true), Err(5000));
    }

    #[test]
    fn an_unknown_budget_lets_one_request_learn_it_when_requests_wait() {
        let state = RateLimitState::default();
        assert_eq!(state.take(1, 100, true), Ok(()), "the probe");
        assert_eq!(
            state.take(1, 100, true),
            Err(101),
            "the rest wait for its report"
        );
        state.record(1, &headers("50", "49", "110"), 100);
        assert_eq!(state.take(1, 100, true), Ok(()));
        // A new token: the same again.
        assert_eq!(state.take(2, 100, true), Ok(()));
        assert_eq!(state.take(2, 100, true), Err(101));
        // Requests that fail rather than wait are not held back by an unknown budget.
        let state = RateLimitState::default();
        for _ in 0..3 {
            assert_eq!(state.take(1, 100, false), Ok(()));
        }
    }

    #[test]
    fn a_report_replaces_a_provisional_window_even_for_the_same_second() {
        let state = RateLimitState::default();
        state.record(1, &headers("50", "0", "1000"), 100);
        assert_eq!(state.take(1, 1000, true), Ok(())); // provisional until 1001
        state.record(1, &headers("50", "49", "1001"), 100);
        assert_eq!(state.snapshot(1).unwrap().remaining, 49);
        assert_eq!(state.take(1, 1000, true), Ok(()));
    }

    #[test]
    fn out_of_order_responses_keep_the_latest_count() {
        let state = RateLimitState::default();
        state.record(1, &headers("50", "10", "1000"), 100);
        state.record(1, &headers("50", "12", "1000"), 100); // an older response, late
        assert_eq!(state.snapshot(1).unwrap().remaining, 10);
        state.record(1, &headers("50", "49", "1010"), 100); // the next window
        assert_eq!(state.snapshot(1).unwrap().remaining, 49);
        state.record(1, &headers("50", "0", "1000"), 100); // the previous window, late
        assert_eq!(state.snapshot(1).unwrap().remaining, 49);
    }

    #[test]
    fn malformed_values_are_ignored_whole_and_counted() {
        let state = RateLimitState::default();
        state.record(1, &headers("50", "10", "1000"), 100);
        for (limit, remaining, reset) in [
            ("50", "-1", "1000"),
            ("50", "1.5", "1000"),
            ("50", " 3", "1000"),
            ("50", "3", "99999999999999999999999"),
            ("50", "3", "18446744073709551615"), // past the year 2514
            ("x", "3", "1000"),
            ("50", "", "1000"),
        ] {
            state.record(1, &headers(limit, remaining, reset), 100);
        }
        let mut partial = HeaderMap::new();
        partial.insert(X_RATE_LIMIT_REMAINING, HeaderValue::from_static("3"));
        state.record(1, &partial, 100);
        assert_eq!(state.ignored(), 8);
        assert_eq!(state.snapshot(1).unwrap().remaining, 10, "unchanged");
        state.record(1, &HeaderMap::new(), 100);
        assert_eq!(state.ignored(), 8, "no headers is not malformed");
    }

    #[test]
    fn absurd_counts_are_kept_as_plenty() {
        let state = RateLimitState::default();
        state.record(
            1,
            &headers("18446744073709551615", "18446744073709551615", "1000"),
            100,
        );
        let snapshot = state.snapshot(1).unwrap();
        assert_eq!(snapshot.remaining, MAX_REMAINING);
        assert_eq!(snapshot.limit, u64::MAX);
    }

    /// `parse_count` agrees with the plain definition: 1 to 20 ASCII digits that fit
    /// a `u64`.
    fn parse_count_by_definition(bytes: &[u8]) -> Option<u64> {
        if bytes.is_empty() || bytes.len() > 20 || !bytes.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(bytes).ok()?.parse().ok()
    }

    #[test]
    fn counts_parse_four_digits_at_a_time_exactly() {
        for text in [
            "0",
            "7",
            "42",
            "999",
            "3600",
            "3599",
            "10000",
            "1790000000",
            "0000",
            "0009",
            "9999999999999999999",
            "18446744073709551615",
            "18446744073709551616",
            "",
            "36 0",
            "36:0",
            "36/0",
            "3a00",
            "-360",
            "+360",
            "\t000",
            "99999999999999999999",
        ] {
            let value = HeaderValue::from_str(text).unwrap();
            assert_eq!(
                parse_count(&value),
                parse_count_by_definition(text.as_bytes()),
                "{text:?}"
            );
        }
        // Every byte in every position of a four-digit group.
        for position in 0..4 {
            for byte in 0..=u8::MAX {
                let mut bytes = *b"1234";
                bytes[position] = byte;
                if let Ok(value) = HeaderValue::from_bytes(&bytes) {
                    assert_eq!(
                        parse_count(&value),
                        parse_count_by_definition(&bytes),
                        "{bytes:?}"
                    );
                }
            }
        }
    }

    proptest! {
        #[test]
        fn any_header_bytes_parse_or_are_ignored_without_panicking(
            remaining in proptest::collection::vec(any::<u8>(), 0..24),
            reset in proptest::collection::vec(any::<u8>(), 0..24),
        ) {
            let state = RateLimitState::default();
            let mut map = HeaderMap::new();
            if let (Ok(remaining), Ok(reset)) =
                (HeaderValue::from_bytes(&remaining), HeaderValue::from_bytes(&reset))
            {
                map.insert(X_RATE_LIMIT_REMAINING, remaining);
                map.insert(X_RATE_LIMIT_RESET, reset);
            }
            state.record(1, &map, 100);
            let _ = state.snapshot(1);
            let _ = state.take(1, 0, true);
        }

        #[test]
        fn counts_parse_as_defined(bytes in proptest::collection::vec(
            prop_oneof![9 => proptest::char::range('0', '9').prop_map(|c| c as u8), 1 => any::<u8>()],
            0..24,
        )) {
            if let Ok(value) = HeaderValue::from_bytes(&bytes) {
                prop_assert_eq!(parse_count(&value), parse_count_by_definition(&bytes));
            }
        }
    }
}
