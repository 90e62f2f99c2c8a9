//! The refresh state machine: one phase at a time, and synchronous transitions that
//! say what the caller should do next.
//!
//! Every decision the manager makes lives here, so the whole table is unit-tested
//! without a runtime. The async work (calling the token source, the store) lives in
//! `refresh.rs`; it reports back through [`RefreshState::on_finished`].
//!
//! | phase \ event          | `on_bearer` (token not fresh)                 | `on_rejected(g)`, g current        | `on_finished`                     |
//! |------------------------|-----------------------------------------------|------------------------------------|-----------------------------------|
//! | `Idle`                 | start (`DueSoon` or `Expired`)                | start (`Rejected`)                 | (stale result: `Idle`)            |
//! | `Refreshing`           | valid: use current; else wait for it          | wait for it                        | `Idle` / `CoolingDown` / `NeedsReauthorization` |
//! | `CoolingDown` (active) | valid: use current; else `BackingOff`         | `BackingOff`                       | —                                 |
//! | `CoolingDown` (over)   | as `Idle`, counting the earlier failures      | as `Idle`, counting them           | —                                 |
//! | `NeedsReauthorization` | valid: use current; store re-read due: start `StoreRecheck`; else the error | as `on_bearer` without "valid" | —               |
//!
//! A 401 for a generation that is no longer current never refreshes: the token it
//! names was already replaced, so the caller replays with the current one.
//!
//! Revoking ([`RefreshState::on_revoke`]) waits for a refresh in flight, then moves to
//! `NeedsReauthorization` (reason `Revoked`) with store re-reads held off until the
//! revocation ends: [`on_revoked`](RefreshState::on_revoked) keeps it,
//! [`on_revoke_failed`](RefreshState::on_revoke_failed) goes back to `Idle`; a token
//! set meanwhile ends it either way.

use std::sync::Arc;
use std::time::Duration;

use super::policy::RefreshPolicy;
use crate::error::ReauthorizationReason;
use crate::{Error, Generation, Token};

/// Why a refresh runs.
#[derive(Clone, Debug)]
pub(super) enum Reason {
    /// No token yet, or it expired: callers wait.
    Expired,
    /// Inside the skew window: the token still works meanwhile.
    DueSoon,
    /// The API answered 401 for the current token.
    Rejected,
    /// Reauthorization is required; only the store may hold a way out (a pair a peer
    /// saved). Never calls the token source with `burnt`.
    StoreRecheck {
        /// The error to keep returning if the store has nothing new.
        error: Error,
        /// The credentials that were refused.
        burnt: Option<Token>,
    },
}

impl Reason {
    pub(super) fn as_str(&self) -> &'static str {
        match self {
            Self::Expired => "expired",
            Self::DueSoon => "due",
            Self::Rejected => "rejected",
            Self::StoreRecheck { .. } => "store recheck",
        }
    }
}

/// The current token at the moment of a decision: its generation, its freshness, and
/// `token`, what a step hands back when it says "use the current token" (the bearer
/// in the manager; `()` in tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct TokenView<T> {
    pub(super) generation: Generation,
    pub(super) freshness: Freshness,
    pub(super) token: T,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Freshness {
    /// Before the refresh deadline.
    Fresh,
    /// Past the refresh deadline, before expiry: still usable.
    Due,
    /// Past expiry.
    Expired,
}

/// What the caller does next.
#[derive(Debug)]
pub(super) enum Step<R, T> {
    /// Use the current token.
    UseCurrent(T),
    /// Use the current token; a refresh (`R`) is under way.
    UseCurrentWhile(T, R),
    /// Wait for refresh `R`; if it fails, use `fallback` (the still valid token).
    Wait { refresh: R, fallback: Option<T> },
    /// Fail with this error.
    Fail(Error),
}

/// What happened to the token cell after a refresh ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Finished {
    /// Keep the cell as it is (a new token was published, or the old one stays).
    Keep,
    /// Withdraw the current token: the API rejected it and it cannot be replaced.
    Withdraw,
}

/// The outcome of a refresh, as the state machine sees it.
#[derive(Debug)]
pub(super) enum Outcome<'a> {
    Refreshed,
    Failed {
        error: &'a Error,
        /// The credentials the source refused, if it did (kept so that later store
        /// re-reads can tell a peer's new pair from them).
        refused: Option<&'a Token>,
    },
}

#[derive(Debug)]
pub(super) enum Phase<R> {
    Idle,
    Refreshing {
        refresh: R,
        /// Consecutive failures before this attempt.
        failures: u32,
    },
    CoolingDown {
        /// Monotonic time at which the next attempt may start.
        until: Duration,
        error: Arc<Error>,
        failures: u32,
    },
    NeedsReauthorization(Reauthorization),
}

/// Why reauthorization is needed, and when the store was last read for a way out.
#[derive(Debug)]
pub(super) struct Reauthorization {
    error: Error,
    /// Monotonic time of the last store read.
    store_read_at: Duration,
    burnt: Option<Token>,
}

impl Reauthorization {
    fn is_revocation(&self) -> bool {
        matches!(
            self.error,
            Error::ReauthorizationRequired {
                reason: ReauthorizationReason::Revoked,
                ..
            }
        )
    }

    /// The store re-read to start now, or the error to return instead.
    fn recheck(
        &self,
        has_store: bool,
        now: Duration,
        policy: &RefreshPolicy,
    ) -> Result<Reason, Error> {
        if has_store && now.saturating_sub(self.store_read_at) >= policy.store_recheck {
            Ok(Reason::StoreRecheck {
                error: self.error.clone(),
                burnt: self.burnt.clone(),
            })
        } else {
            Err(self.error.clone())
        }
    }
}

/// The phase and the policy that moves it. `R` is the handle of a running refresh
/// (the shared future in the manager; anything `Clone` in tests).
#[derive(Debug)]
pub(super) struct RefreshState<R> {
    phase: Phase<R>,
    has_store: bool,
}

impl<R: Clone> RefreshState<R> {
    pub(super) fn new(has_store: bool) -> Self {
        Self {
            phase: Phase::Idle,
            has_store,
        }
    }

    #[cfg(test)]
    pub(super) fn phase(&self) -> &Phase<R> {
        &self.phase
    }

    /// A caller needs a token and the current one (`current`) is not fresh.
    /// `start` begins a refresh for a reason and returns its handle.
    pub(super) fn on_bearer<T>(
        &mut self,
        current: Option<TokenView<T>>,
        now: Duration,
        policy: &RefreshPolicy,
        start: impl FnOnce(Reason) -> R,
    ) -> Step<R, T> {
        let usable = match current {
            Some(view) if view.freshness == Freshness::Fresh => {
                return Step::UseCurrent(view.token)
            }
            Some(view) if view.freshness == Freshness::Due => Some(view.token),
            _ => None,
        };
        match (&self.phase, usable) {
            (Phase::Refreshing { refresh, .. }, Some(token)) => {
                Step::UseCurrentWhile(token, refresh.clone())
            }
            (Phase::Refreshing { refresh, .. }, None) => Step::Wait {
                refresh: refresh.clone(),
                fallback: None,
            },
            (Phase::CoolingDown { until, .. }, Some(token)) if now < *until => {
                Step::UseCurrent(token)
            }
            (Phase::CoolingDown { until, error, .. }, None) if now < *until => {
                Step::Fail(backing_off(*until - now, error))
            }
            (Phase::NeedsReauthorization(_), Some(token)) => Step::UseCurrent(token),
            (Phase::NeedsReauthorization(reauthorization), None) => {
                let recheck = reauthorization.recheck(self.has_store, now, policy);
                self.start_or_fail(recheck, start)
            }
            (Phase::Idle | Phase::CoolingDown { .. }, fallback) => {
                let reason = match fallback {
                    Some(_) => Reason::DueSoon,
                    None => Reason::Expired,
                };
                let refresh = self.start(reason, start);
                Step::Wait { refresh, fallback }
            }
        }
    }

    /// The API answered 401 to a request that carried generation `rejected`.
    pub(super) fn on_rejected<T>(
        &mut self,
        current: Option<TokenView<T>>,
        rejected: Generation,
        now: Duration,
        policy: &RefreshPolicy,
        start: impl FnOnce(Reason) -> R,
    ) -> Step<R, T> {
        if current
            .as_ref()
            .is_none_or(|view| view.generation != rejected)
        {
            // Already replaced (or withdrawn): whatever a caller gets now is what the
            // request is replayed with.
            return self.on_bearer(current, now, policy, start);
        }
        match &self.phase {
            Phase::Refreshing { refresh, .. } => Step::Wait {
                refresh: refresh.clone(),
                fallback: None,
            },
            Phase::CoolingDown { until, error, .. } if now < *until => {
                Step::Fail(backing_off(*until - now, error))
            }
            Phase::NeedsReauthorization(reauthorization) => {
                let recheck = reauthorization.recheck(self.has_store, now, policy);
                self.start_or_fail(recheck, start)
            }
            Phase::Idle | Phase::CoolingDown { .. } => {
                self.start_or_fail(Ok(Reason::Rejected), start)
            }
        }
    }

    /// A refresh that started for `reason` ended. `still_current` is false when a
    /// token was set meanwhile, so a failure says nothing about the current token.
    pub(super) fn on_finished(
        &mut self,
        reason: Reason,
        outcome: Outcome<'_>,
        still_current: bool,
        now: Duration,
        policy: &RefreshPolicy,
    ) -> Finished {
        let failures = match self.phase {
            Phase::Refreshing { failures, .. } => failures,
            _ => 0,
        };
        let (error, refused) = match outcome {
            Outcome::Failed { error, refused } if still_current => (error, refused),
            // Refreshed, or failed for a token that is no longer in use.
            _ => {
                self.phase = Phase::Idle;
                return Finished::Keep;
            }
        };
        match (reason, error) {
            (Reason::StoreRecheck { error, burnt }, _) => {
                self.phase = Phase::NeedsReauthorization(Reauthorization {
                    error,
                    store_read_at: now,
                    burnt,
                });
                Finished::Keep
            }
            (reason, Error::ReauthorizationRequired { .. }) => {
                self.phase = Phase::NeedsReauthorization(Reauthorization {
                    error: error.clone(),
                    store_read_at: now,
                    burnt: refused.cloned(),
                });
                if matches!(reason, Reason::Rejected) {
                    Finished::Withdraw
                } else {
                    Finished::Keep
                }
            }
            (_, error) => {
                let failures = failures.saturating_add(1);
                let delay = policy.cooldown(failures, error.retry_after());
                self.phase = Phase::CoolingDown {
                    until: now.saturating_add(delay),
                    error: Arc::new(error.clone()),
                    failures,
                };
                Finished::Keep
            }
        }
    }

    /// A token was set from outside: whatever went wrong before is over. A refresh
    /// under way keeps running (its result holds the only live refresh token of its
    /// rotation chain) and is published when it ends.
    pub(super) fn on_token_set(&mut self) {
        if !matches!(self.phase, Phase::Refreshing { .. }) {
            self.phase = Phase::Idle;
        }
    }

    /// `TokenManager::revoke` begins, with `revoked` the current token. If a refresh
    /// is running, returns it (wait for it, then call again: its result is what must
    /// be revoked). Otherwise no refresh starts any more, and store re-reads wait
    /// until [`on_revoked`](Self::on_revoked).
    pub(super) fn on_revoke(&mut self, revoked: Option<Token>) -> Result<(), R> {
        if let Phase::Refreshing { refresh, .. } = &self.phase {
            return Err(refresh.clone());
        }
        self.phase = Phase::NeedsReauthorization(Reauthorization {
            error: Error::reauthorization_required(ReauthorizationReason::Revoked),
            // Not before the revocation ends.
            store_read_at: Duration::MAX,
            burnt: revoked,
        });
        Ok(())
    }

    /// The server revoked the token. Returns whether the revocation still stands
    /// (no token was set meanwhile): then the caller withdraws the token and clears
    /// the store, and the store is re-read only after the usual interval.
    pub(super) fn on_revoked(&mut self, now: Duration) -> bool {
        match &mut self.phase {
            Phase::NeedsReauthorization(reauthorization) if reauthorization.is_revocation() => {
                reauthorization.store_read_at = now;
                true
            }
            _ => false,
        }
    }

    /// Revoking failed: back to normal (unless a token was set meanwhile, which
    /// already was).
    pub(super) fn on_revoke_failed(&mut self) {
        if matches!(&self.phase, Phase::NeedsReauthorization(reauthorization) if reauthorization.is_revocation())
        {
            self.phase = Phase::Idle;
        }
    }

    /// Whether a failed refresh is still cooling down at `now`: state worth keeping
    /// (a registry that dropped it would refresh again at once).
    pub(super) fn is_cooling_down(&self, now: Duration) -> bool {
        matches!(&self.phase, Phase::CoolingDown { until, .. } if now < *until)
    }

    /// Forgets a running refresh's handle (the manager is going away).
    pub(super) fn abandon(&mut self) {
        if matches!(self.phase, Phase::Refreshing { .. }) {
            self.phase = Phase::Idle;
        }
    }

    /// Starts a refresh for `next` and waits for it, or fails.
    fn start_or_fail<T>(
        &mut self,
        next: Result<Reason, Error>,
        start: impl FnOnce(Reason) -> R,
    ) -> Step<R, T> {
        match next {
            Ok(reason) => Step::Wait {
                refresh: self.start(reason, start),
                fallback: None,
            },
            Err(error) => Step::Fail(error),
        }
    }

    fn start(&mut self, reason: Reason, start: impl FnOnce(Reason) -> R) -> R {
        let failures = match self.phase {
            Phase::CoolingDown { failures, .. } => failures,
            _ => 0,
        };
        let refresh = start(reason);
        self.phase = Phase::Refreshing {
            refresh: refresh.clone(),
            failures,
        };
        refresh
    }
}

fn backing_off(retry_in: Duration, last_error: &Arc<Error>) -> Error {
    Error::BackingOff {
        retry_in,
        last_error: Arc::clone(last_error),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::error::ReauthorizationReason;
    use crate::manager::policy::Jitter;
    use crate::TransportError;

    /// Refresh handles in these tests: the reason each refresh was started for.
    type Started = &'static str;

    fn policy() -> RefreshPolicy {
        RefreshPolicy {
            jitter: Jitter::none(),
            ..RefreshPolicy::default()
        }
    }

    const NO_TOKEN: Option<TokenView<()>> = None;

    fn view(generation: u64, freshness: Freshness) -> Option<TokenView<()>> {
        Some(TokenView {
            generation: Generation::new(generation),
            freshness,
            token: (),
        })
    }

    fn starts(reason: Reason) -> Started {
        reason.as_str()
    }

    fn never(_: Reason) -> Started {
        panic!("no refresh should start")
    }

    const T0: Duration = Duration::from_secs(1_000);

    fn transient() -> Error {
        Error::Transport(TransportError::timeout("slow"))
    }

    fn reauthorization() -> Error {
        Error::reauthorization_required(ReauthorizationReason::NoToken)
    }

    fn refreshing(state: &mut RefreshState<Started>, reason: Reason) {
        let step = state.on_rejected(
            view(1, Freshness::Due),
            Generation::new(1),
            T0,
            &policy(),
            |_| reason.as_str(),
        );
        assert!(matches!(step, Step::Wait { .. }));
    }

    #[test]
    fn expired_or_missing_tokens_start_one_refresh_that_everyone_waits_for() {
        for current in [None, view(1, Freshness::Expired)] {
            let mut state = RefreshState::new(false);
            let step = state.on_bearer(current, T0, &policy(), starts);
            assert!(
                matches!(
                    step,
                    Step::Wait {
                        refresh: "expired",
                        fallback: None
                    }
                ),
                "{step:?}"
            );
            let step = state.on_bearer(current, T0, &policy(), never);
            assert!(
                matches!(
                    step,
                    Step::Wait {
                        refresh: "expired",
                        fallback: None
                    }
                ),
                "{step:?}"
            );
        }
    }

    #[test]
    fn a_due_token_starts_a_refresh_with_fallback_and_others_keep_using_it() {
        let mut state = RefreshState::new(false);
        let current = view(1, Freshness::Due);
        let step = state.on_bearer(current, T0, &policy(), starts);
        assert!(
            matches!(
                step,
                Step::Wait {
                    refresh: "due",
                    fallback: Some(())
                }
            ),
            "{step:?}"
        );
        let step = state.on_bearer(current, T0, &policy(), never);
        assert!(matches!(step, Step::UseCurrentWhile((), "due")), "{step:?}");
    }

    #[test]
    fn a_fresh_token_is_used_whatever_the_phase() {
        let mut state = RefreshState::new(false);
        refreshing(&mut state, Reason::Rejected);
        let step = state.on_bearer(view(2, Freshness::Fresh), T0, &policy(), never);
        assert!(matches!(step, Step::UseCurrent(())));
    }

    #[test]
    fn the_first_401_for_the_current_generation_refreshes_and_later_ones_join() {
        let mut state = RefreshState::new(false);
        let current = view(7, Freshness::Fresh);
        let step = state.on_rejected(current, Generation::new(7), T0, &policy(), starts);
        assert!(matches!(
            step,
            Step::Wait {
                refresh: "rejected",
                fallback: None
            }
        ));
        let step = state.on_rejected(current, Generation::new(7), T0, &policy(), never);
        assert!(matches!(
            step,
            Step::Wait {
                refresh: "rejected",
                ..
            }
        ));
        state.on_finished(Reason::Rejected, Outcome::Refreshed, true, T0, &policy());
        // The 401s for 7 that arrive after the refresh replay with 8, no refresh.
        let step = state.on_rejected(
            view(8, Freshness::Fresh),
            Generation::new(7),
            T0,
            &policy(),
            never,
        );
        assert!(matches!(step, Step::UseCurrent(())));
        // The first 401 for 8, however soon, refreshes again: it is keyed to the
        // token, not to the time since the last refresh.
        let step = state.on_rejected(
            view(8, Freshness::Fresh),
            Generation::new(8),
            T0,
            &policy(),
            starts,
        );
        assert!(matches!(
            step,
            Step::Wait {
                refresh: "rejected",
                ..
            }
        ));
    }

    #[test]
    fn failures_cool_down_exponentially_on_the_monotonic_clock() {
        let mut state = RefreshState::new(false);
        let expired = view(1, Freshness::Expired);
        let mut now = T0;
        for (failures, delay_ms) in [(1, 500), (2, 1_000), (3, 2_000)] {
            let step = state.on_bearer(expired, now, &policy(), starts);
            assert!(
                matches!(step, Step::Wait { .. }),
                "attempt {failures}: {step:?}"
            );
            state.on_finished(
                Reason::Expired,
                Outcome::Failed {
                    error: &transient(),
                    refused: None,
                },
                true,
                now,
                &policy(),
            );
            let Phase::CoolingDown {
                until,
                failures: counted,
                ..
            } = state.phase()
            else {
                panic!("not cooling down: {:?}", state.phase());
            };
            assert_eq!(
                (*until - now, *counted),
                (Duration::from_millis(delay_ms), failures)
            );
            // Within the cool-down: the typed error, no refresh, for bearers and 401s.
            let almost = now + Duration::from_millis(delay_ms - 1);
            match state.on_bearer(expired, almost, &policy(), never) {
                Step::Fail(Error::BackingOff { retry_in, .. }) => {
                    assert_eq!(retry_in, Duration::from_millis(1))
                }
                step => panic!("{step:?}"),
            }
            let step = state.on_rejected(expired, Generation::new(1), almost, &policy(), never);
            assert!(matches!(step, Step::Fail(Error::BackingOff { .. })));
            // A valid token is still used during a cool-down.
            assert!(matches!(
                state.on_bearer(view(1, Freshness::Due), almost, &policy(), never),
                Step::UseCurrent(())
            ));
            now += Duration::from_millis(delay_ms);
        }
        state.on_bearer(expired, now, &policy(), starts);
        state.on_finished(Reason::Expired, Outcome::Refreshed, true, now, &policy());
        assert!(matches!(state.phase(), Phase::Idle));
    }

    #[test]
    fn an_absurd_retry_after_is_clamped_and_cannot_overflow() {
        for seconds in [4_000_000_000, u64::MAX] {
            let mut state = RefreshState::new(false);
            state.on_bearer(
                NO_TOKEN,
                Duration::MAX - Duration::from_secs(1),
                &policy(),
                starts,
            );
            let error = Error::TokenEndpoint {
                status: http::StatusCode::SERVICE_UNAVAILABLE,
                error: None,
                retry_after: Some(Duration::from_secs(seconds)),
            };
            state.on_finished(
                Reason::Expired,
                Outcome::Failed {
                    error: &error,
                    refused: None,
                },
                true,
                T0,
                &policy(),
            );
            let Phase::CoolingDown { until, .. } = state.phase() else {
                panic!()
            };
            assert_eq!(*until - T0, policy().backoff_max);
            // Near the end of the monotonic range, saturates instead of panicking.
            state.on_bearer(NO_TOKEN, T0 + policy().backoff_max, &policy(), starts);
            state.on_finished(
                Reason::Expired,
                Outcome::Failed {
                    error: &error,
                    refused: None,
                },
                true,
                Duration::MAX,
                &policy(),
            );
        }
    }

    #[test]
    fn reauthorization_withdraws_a_rejected_token_and_rechecks_the_store_now_and_then() {
        let mut state = RefreshState::new(true);
        refreshing(&mut state, Reason::Rejected);
        let finished = state.on_finished(
            Reason::Rejected,
            Outcome::Failed {
                error: &reauthorization(),
                refused: None,
            },
            true,
            T0,
            &policy(),
        );
        assert_eq!(finished, Finished::Withdraw);
        // Right away: the error, no store read.
        assert!(matches!(
            state.on_bearer(NO_TOKEN, T0, &policy(), never),
            Step::Fail(Error::ReauthorizationRequired { .. })
        ));
        // After the recheck interval, one store read (single-flight like a refresh).
        let later = T0 + DEFAULT_RECHECK;
        let step = state.on_bearer(NO_TOKEN, later, &policy(), starts);
        assert!(
            matches!(
                step,
                Step::Wait {
                    refresh: "store recheck",
                    ..
                }
            ),
            "{step:?}"
        );
        assert!(matches!(
            state.on_rejected(NO_TOKEN, Generation::new(1), later, &policy(), never),
            Step::Wait { .. }
        ));
        // Nothing new in the store: back to waiting out the interval.
        let Phase::Refreshing { .. } = state.phase() else {
            panic!()
        };
        let recheck = Reason::StoreRecheck {
            error: reauthorization(),
            burnt: None,
        };
        let finished = state.on_finished(
            recheck,
            Outcome::Failed {
                error: &reauthorization(),
                refused: None,
            },
            true,
            later,
            &policy(),
        );
        assert_eq!(finished, Finished::Keep);
        assert!(matches!(
            state.on_bearer(NO_TOKEN, later, &policy(), never),
            Step::Fail(_)
        ));
    }

    const DEFAULT_RECHECK: Duration = super::super::policy::DEFAULT_STORE_RECHECK;

    #[test]
    fn without_a_store_reauthorization_never_calls_anything() {
        let mut state = RefreshState::new(false);
        state.on_bearer(NO_TOKEN, T0, &policy(), starts);
        state.on_finished(
            Reason::Expired,
            Outcome::Failed {
                error: &reauthorization(),
                refused: None,
            },
            true,
            T0,
            &policy(),
        );
        for hours in [0, 1, 1_000] {
            let now = T0 + Duration::from_secs(hours * 3_600);
            assert!(matches!(
                state.on_bearer(NO_TOKEN, now, &policy(), never),
                Step::Fail(_)
            ));
        }
    }

    #[test]
    fn a_reauthorization_after_a_proactive_refresh_keeps_the_still_valid_token() {
        let mut state = RefreshState::new(false);
        let current = view(1, Freshness::Due);
        state.on_bearer(current, T0, &policy(), starts);
        let finished = state.on_finished(
            Reason::DueSoon,
            Outcome::Failed {
                error: &reauthorization(),
                refused: None,
            },
            true,
            T0,
            &policy(),
        );
        assert_eq!(finished, Finished::Keep);
        assert!(matches!(
            state.on_bearer(current, T0, &policy(), never),
            Step::UseCurrent(())
        ));
    }

    #[test]
    fn a_failure_after_a_token_was_set_meanwhile_changes_nothing() {
        let mut state = RefreshState::new(false);
        state.on_bearer(NO_TOKEN, T0, &policy(), starts);
        state.on_token_set();
        assert!(matches!(state.phase(), Phase::Refreshing { .. }));
        state.on_finished(
            Reason::Expired,
            Outcome::Failed {
                error: &transient(),
                refused: None,
            },
            false,
            T0,
            &policy(),
        );
        assert!(matches!(state.phase(), Phase::Idle));
    }

    #[test]
    fn revoking_waits_for_a_refresh_then_stops_refreshing_until_a_token_is_set() {
        let mut state = RefreshState::new(true);
        state.on_bearer(NO_TOKEN, T0, &policy(), starts);
        // A refresh is running: wait for it.
        assert_eq!(state.on_revoke(None), Err("expired"));
        state.on_finished(Reason::Expired, Outcome::Refreshed, true, T0, &policy());
        assert_eq!(state.on_revoke(None), Ok(()));
        // While revoking: no refresh and no store re-read, however long it takes.
        let much_later = T0 + DEFAULT_RECHECK * 1_000;
        for now in [T0, much_later] {
            assert!(matches!(
                state.on_bearer(view(1, Freshness::Expired), now, &policy(), never),
                Step::Fail(Error::ReauthorizationRequired {
                    reason: ReauthorizationReason::Revoked,
                    ..
                })
            ));
            assert!(matches!(
                state.on_rejected(
                    view(1, Freshness::Fresh),
                    Generation::new(1),
                    now,
                    &policy(),
                    never
                ),
                Step::Fail(_)
            ));
        }
        // Revoked: store re-reads resume at the usual interval.
        assert!(state.on_revoked(much_later));
        assert!(matches!(
            state.on_bearer(NO_TOKEN, much_later, &policy(), never),
            Step::Fail(_)
        ));
        assert!(matches!(
            state.on_bearer(NO_TOKEN, much_later + DEFAULT_RECHECK, &policy(), starts),
            Step::Wait {
                refresh: "store recheck",
                ..
            }
        ));
    }

    #[test]
    fn a_failed_revocation_or_a_token_set_meanwhile_ends_it() {
        let mut state = RefreshState::<Started>::new(false);
        state.on_revoke(None).unwrap();
        state.on_revoke_failed();
        assert!(matches!(state.phase(), Phase::Idle));
        state.on_revoke(None).unwrap();
        state.on_token_set();
        assert!(!state.on_revoked(T0));
        assert!(matches!(state.phase(), Phase::Idle));
        // A failure of a revocation that a new token already ended changes nothing.
        state.on_bearer(NO_TOKEN, T0, &policy(), starts);
        state.on_revoke_failed();
        assert!(matches!(state.phase(), Phase::Refreshing { .. }));
    }

    #[test]
    fn setting_a_token_ends_a_cool_down_or_a_reauthorization() {
        let mut state = RefreshState::new(false);
        state.on_bearer(NO_TOKEN, T0, &policy(), starts);
        state.on_finished(
            Reason::Expired,
            Outcome::Failed {
                error: &reauthorization(),
                refused: None,
            },
            true,
            T0,
            &policy(),
        );
        state.on_token_set();
        assert!(matches!(state.phase(), Phase::Idle));
    }
}
