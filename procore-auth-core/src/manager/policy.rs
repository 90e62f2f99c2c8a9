//! When to refresh and how long to wait after a failure: every timing rule of the
//! manager, in one place.
//!
//! Where to change what:
//! - how early a token is refreshed: [`RefreshPolicy::skew`] (and
//!   [`Token::refresh_at`](crate::Token::refresh_at) for the lifetime cap);
//! - how long a failed refresh cools down: [`RefreshPolicy::cooldown`], from
//!   `backoff_base`, `backoff_max`, the [`Jitter`] and the server's `Retry-After`
//!   (clamped to `max_retry_after`);
//! - how often a manager that needs reauthorization re-reads the store:
//!   `store_recheck`;
//! - which 401s cause a refresh: the transitions in `state.rs` (`on_rejected`); no
//!   timing is involved there, the rule is per token generation.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::token::DEFAULT_REFRESH_SKEW;

/// The first back-off delay after a failed refresh; it doubles per consecutive failure.
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(500);
/// The longest back-off delay, and the longest `Retry-After` honoured unless raised
/// with [`TokenManagerBuilder::max_retry_after`](crate::TokenManagerBuilder::max_retry_after).
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(60);
/// How often a manager that needs reauthorization re-reads its store for a pair a
/// peer process saved (a peer that won a refresh race holds the live refresh token).
pub const DEFAULT_STORE_RECHECK: Duration = Duration::from_secs(2);

/// Spreads back-off delays so that a fleet of processes that failed together does not
/// retry together. Given the un-jittered delay, returns the delay to use (at most the
/// un-jittered one).
///
/// ```
/// use std::time::Duration;
/// use procore_auth_core::Jitter;
///
/// // Tests that assert exact delays turn jitter off.
/// assert_eq!(Jitter::none().apply(Duration::from_secs(8)), Duration::from_secs(8));
/// let equal = Jitter::equal().apply(Duration::from_secs(8));
/// assert!(equal >= Duration::from_secs(4) && equal <= Duration::from_secs(8));
/// ```
#[derive(Clone)]
pub struct Jitter(JitterKind);

#[derive(Clone)]
enum JitterKind {
    None,
    Equal,
    Custom(Arc<dyn Fn(Duration) -> Duration + Send + Sync>),
}

impl Jitter {
    /// "Equal jitter" (the default): half the delay fixed, half uniformly random.
    pub fn equal() -> Self {
        Self(JitterKind::Equal)
    }

    /// No jitter: exactly the exponential delay.
    pub fn none() -> Self {
        Self(JitterKind::None)
    }

    /// Your own spreading function; results above the input are capped to it.
    pub fn from_fn(jitter: impl Fn(Duration) -> Duration + Send + Sync + 'static) -> Self {
        Self(JitterKind::Custom(Arc::new(jitter)))
    }

    /// The delay to use instead of `delay`.
    pub fn apply(&self, delay: Duration) -> Duration {
        match &self.0 {
            JitterKind::None => delay,
            JitterKind::Equal => {
                let half = delay / 2;
                let nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
                match nanos {
                    0 => half,
                    nanos => half + Duration::from_nanos(crate::random::jitter_u64() % nanos),
                }
            }
            JitterKind::Custom(jitter) => jitter(delay).min(delay),
        }
    }
}

impl Default for Jitter {
    fn default() -> Self {
        Self::equal()
    }
}

impl fmt::Debug for Jitter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.0 {
            JitterKind::None => "Jitter::none",
            JitterKind::Equal => "Jitter::equal",
            JitterKind::Custom(_) => "Jitter::from_fn",
        })
    }
}

/// The manager's timing rules. Set through [`TokenManagerBuilder`](crate::TokenManagerBuilder).
#[derive(Clone, Debug)]
pub(crate) struct RefreshPolicy {
    /// Refresh this long before expiry (capped at a tenth of the lifetime).
    pub(crate) skew: Duration,
    pub(crate) backoff_base: Duration,
    pub(crate) backoff_max: Duration,
    /// A server's `Retry-After` above this is treated as this: one absurd header
    /// must not stop refreshing for years.
    pub(crate) max_retry_after: Duration,
    pub(crate) store_recheck: Duration,
    pub(crate) jitter: Jitter,
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        Self {
            skew: DEFAULT_REFRESH_SKEW,
            backoff_base: DEFAULT_BACKOFF_BASE,
            backoff_max: DEFAULT_BACKOFF_MAX,
            max_retry_after: DEFAULT_BACKOFF_MAX,
            store_recheck: DEFAULT_STORE_RECHECK,
            jitter: Jitter::equal(),
        }
    }
}

impl RefreshPolicy {
    /// How long to wait after the `failures`-th consecutive failed refresh: an
    /// exponential, jittered delay, or the server's `Retry-After` (clamped) if longer.
    pub(crate) fn cooldown(&self, failures: u32, retry_after: Option<Duration>) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        let ceiling = self
            .backoff_base
            .saturating_mul(1 << doublings)
            .min(self.backoff_max);
        let asked = retry_after.unwrap_or_default().min(self.max_retry_after);
        self.jitter.apply(ceiling).max(asked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(jitter: Jitter) -> RefreshPolicy {
        RefreshPolicy {
            jitter,
            ..RefreshPolicy::default()
        }
    }

    #[test]
    fn cooldown_doubles_up_to_the_cap() {
        let policy = policy(Jitter::none());
        let delays: Vec<_> = (1..=10).map(|n| policy.cooldown(n, None)).collect();
        let expected: Vec<_> = [
            500, 1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000, 60_000,
        ]
        .into_iter()
        .map(Duration::from_millis)
        .collect();
        assert_eq!(delays, expected);
        assert_eq!(policy.cooldown(u32::MAX, None), DEFAULT_BACKOFF_MAX);
    }

    #[test]
    fn equal_jitter_stays_within_half_and_whole_of_the_delay() {
        let policy = policy(Jitter::equal());
        for failures in 1..=12 {
            let ceiling = policy
                .backoff_base
                .saturating_mul(1 << (failures - 1))
                .min(policy.backoff_max);
            let delay = policy.cooldown(failures, None);
            assert!(
                delay >= ceiling / 2 && delay <= ceiling,
                "{failures}: {delay:?}"
            );
        }
    }

    #[test]
    fn retry_after_is_honoured_when_longer_and_clamped_when_absurd() {
        let policy = policy(Jitter::none());
        assert_eq!(
            policy.cooldown(1, Some(Duration::from_secs(17))),
            Duration::from_secs(17)
        );
        assert_eq!(
            policy.cooldown(4, Some(Duration::from_secs(1))),
            Duration::from_secs(4)
        );
        for absurd in [4_000_000_000, u64::MAX] {
            assert_eq!(
                policy.cooldown(1, Some(Duration::from_secs(absurd))),
                DEFAULT_BACKOFF_MAX
            );
        }
        let raised = RefreshPolicy {
            max_retry_after: Duration::from_secs(3_600),
            ..policy
        };
        assert_eq!(
            raised.cooldown(1, Some(Duration::MAX)),
            Duration::from_secs(3_600)
        );
    }

    #[test]
    fn a_custom_jitter_is_used_and_capped() {
        let policy = policy(Jitter::from_fn(|delay| delay * 3));
        assert_eq!(policy.cooldown(1, None), DEFAULT_BACKOFF_BASE);
        let policy = RefreshPolicy {
            jitter: Jitter::from_fn(|delay| delay / 4),
            ..policy
        };
        assert_eq!(policy.cooldown(3, None), Duration::from_millis(500));
    }
}
