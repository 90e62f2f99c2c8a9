//! The async work of one refresh: read the store, call the source, save before
//! publishing. Started by the transitions in `state.rs`, reported back to them.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::SystemTime;

use futures_util::FutureExt;

use super::state::{Finished, Outcome, Reason};
use super::{bump, Inner};
use crate::cell::Published;
use crate::clock::unix_millis;
use crate::error::ReauthorizationReason;
use crate::store::{RefreshOutcome, RefreshTurn, StoreError};
use crate::{Bearer, Error, Generation, Token};

/// How many times a refresh waits for a peer process's refresh before giving up
/// (each wait is bounded by the store).
const MAX_TURNS: usize = 4;

/// Why a refresh token was not presented: a peer presented it and was refused.
const PEER_REFUSED: &str = "another process presented this refresh token and Procore refused it";

/// A failed attempt, the credentials the source refused if it refused any, and the
/// token to keep if the failed answer still carried a new refresh token (saved
/// already; published when the attempt ends).
/// (Boxed: the refresh path can afford it, and results stay small.)
struct Failure {
    error: Error,
    refused: Option<Token>,
    salvaged: Option<Token>,
    /// A peer's refresh token to present instead, once (after `invalid_grant`).
    retry_from: Option<Token>,
}

impl From<Error> for Box<Failure> {
    fn from(error: Error) -> Self {
        Box::new(Failure {
            error,
            refused: None,
            salvaged: None,
            retry_from: None,
        })
    }
}

/// The secrets of `tokens`, to scrub from server text the source did not scrub.
fn secrets_of<'a>(tokens: &[Option<&'a Token>]) -> Vec<&'a str> {
    tokens
        .iter()
        .flatten()
        .flat_map(|token| {
            [
                token.access_token().map(|access| access.secret()),
                token.refresh_token().map(|refresh| refresh.secret()),
            ]
        })
        .flatten()
        .collect()
}

impl Inner {
    pub(super) async fn run_refresh(
        self: Arc<Self>,
        reason: Reason,
        from: Option<Arc<Published>>,
    ) -> Result<Bearer, Error> {
        let from_generation = from.as_ref().map(|from| from.generation());
        tracing::debug!(
            generation = from_generation.map(Generation::get),
            reason = reason.as_str(),
            "procore token refresh started"
        );
        let from_token = from.as_ref().map(|from| &from.token);
        // A token the API just rejected is not worth keeping beside a salvaged
        // refresh token.
        let keep_access = !matches!(reason, Reason::Rejected);
        let attempt = async {
            match &reason {
                Reason::StoreRecheck { error, burnt } => {
                    self.recheck_store(error, burnt.as_ref()).await
                }
                _ => self.obtain_token(from_token, keep_access, true).await,
            }
        };
        // A panicking user-supplied source or store must not leave the refresh
        // running forever.
        let attempt = AssertUnwindSafe(attempt)
            .catch_unwind()
            .await
            .unwrap_or_else(|_| Err(Error::SourcePanicked.into()))
            .map_err(|mut failure| {
                failure.error = failure.error.for_tenant(self.tenant.as_ref());
                failure
            });
        self.finish(reason, from_generation, attempt)
    }

    /// Gets the next token: a newer one from the store if a peer saved one, else from
    /// the source, persisting the result before it is published.
    ///
    /// A store shared by processes may make this process wait for its turn (see
    /// [`TokenStore::begin_refresh`]); a pair a peer saved meanwhile is adopted
    /// instead of presenting a refresh token the peer already used.
    ///
    /// An answer rejected with a new refresh token still in it leaves that refresh
    /// token saved and kept (with the current access token if `keep_access` and it is
    /// still valid), so the next attempt presents it. `adopt_peer`: after
    /// `invalid_grant`, take (or refresh from, once) a pair a peer stored.
    async fn obtain_token(
        &self,
        from: Option<&Token>,
        keep_access: bool,
        adopt_peer: bool,
    ) -> Result<Token, Box<Failure>> {
        // After a peer's refresh, its pair may carry the same second as ours.
        let mut peer_refreshed = false;
        for _ in 0..MAX_TURNS {
            let stored = self.load_store().await;
            // After a peer's refresh (the store said so), its pair is the newest
            // whatever the clocks that stamped the two pairs say.
            let adoptable = |stored: &&Token| {
                from.is_none_or(|from| {
                    is_newer(stored, from) || (peer_refreshed && !stored.same_credentials(from))
                })
            };
            let newer_stored = stored.as_ref().and_then(Option::as_ref).filter(adoptable);
            if let Some(newer) = newer_stored {
                if !newer.is_expired_at(self.clock.now()) {
                    bump(&self.counters.store_adoptions);
                    tracing::info!("adopted a newer procore token from the token store");
                    return Ok(newer.clone());
                }
            }
            // Refresh from the newest pair we know of; compare-and-swap against what
            // the store held when we read it.
            let base = newer_stored.or(from);
            let expected = match &stored {
                Some(stored) => stored.as_ref(),
                None => from,
            };
            let lease = match self.refresh_turn(base).await? {
                RefreshTurn::Go(lease) => lease,
                RefreshTurn::PeerSaved => {
                    peer_refreshed = true;
                    continue;
                }
                RefreshTurn::PeerRefused => {
                    return Err(Box::new(Failure {
                        error: Error::reauthorization_required(
                            ReauthorizationReason::InvalidGrant {
                                description: Some(PEER_REFUSED.to_owned()),
                            },
                        ),
                        refused: base.cloned(),
                        salvaged: None,
                        retry_from: None,
                    }))
                }
            };
            let result = match lease {
                None => {
                    self.refresh_from(base, expected, keep_access, adopt_peer)
                        .await
                }
                Some(lease) => {
                    // The lease holder re-reads first: the previous holder may have
                    // saved just before its lease ended.
                    if self.store_changed_since(stored.as_ref()).await {
                        lease.end(RefreshOutcome::Unchanged).await;
                        peer_refreshed = true;
                        continue;
                    }
                    let result = self
                        .refresh_from(base, expected, keep_access, adopt_peer)
                        .await;
                    let outcome = match &result {
                        // Saving is the refresh's last store operation.
                        Ok(_) if self.last_store_failed() => RefreshOutcome::Unchanged,
                        Ok(_) => RefreshOutcome::Saved,
                        Err(failure) if failure.refused.is_some() => RefreshOutcome::Refused,
                        _ => RefreshOutcome::Unchanged,
                    };
                    lease.end(outcome).await;
                    result
                }
            };
            return match result {
                // Outside the lease: presenting the peer's token takes a turn of its own.
                Err(mut failure) => match failure.retry_from.take() {
                    Some(peer) => Box::pin(self.obtain_token(Some(&peer), false, false)).await,
                    None => Err(failure),
                },
                ok => ok,
            };
        }
        Err(Error::Store(StoreError::Busy).into())
    }

    /// This process's turn to present `base`'s refresh token, as the store decides.
    async fn refresh_turn(&self, base: Option<&Token>) -> Result<RefreshTurn, Box<Failure>> {
        let Some(store) = &self.store else {
            return Ok(RefreshTurn::Go(None));
        };
        match store.begin_refresh(base).await {
            Ok(turn) => Ok(turn),
            // Without the store's consent no refresh token is presented: a peer may be
            // presenting it right now.
            Err(error) => Err(Error::Store(self.store_failed(error)).into()),
        }
    }

    /// Presents `base`'s refresh token (or asks the source for a first token) and
    /// saves the answer, compare-and-swap against `expected`.
    async fn refresh_from(
        &self,
        base: Option<&Token>,
        expected: Option<&Token>,
        keep_access: bool,
        adopt_peer: bool,
    ) -> Result<Token, Box<Failure>> {
        let from = base;
        let fetched = self.source.fetch(base, &*self.clock).await;
        // The source scrubbed what it knew; the manager knows these tokens too.
        let fetched = fetched.map_err(|error| error.scrubbed(&secrets_of(&[from, base])));
        match fetched {
            Ok(token) if token.access_token().is_some() => {
                self.save_store(&token, expected).await;
                Ok(token)
            }
            Ok(token) => {
                // A source that hands back a refresh token alone: keep it, and back
                // off as after any unusable answer.
                self.save_store(&token, expected).await;
                Err(Box::new(Failure {
                    error: Error::invalid_response("the token source returned no access token"),
                    refused: None,
                    salvaged: Some(token),
                    retry_from: None,
                }))
            }
            Err(error) if error.is_invalid_grant() => {
                // A peer may have rotated the pair after we read the store. Ours is
                // burnt now, so a peer pair issued in the same second is worth a try,
                // but an older one is the pair ours replaced.
                if let Some(Some(peer)) = self.load_store().await {
                    if adopt_peer
                        && base.is_none_or(|base| {
                            !peer.same_credentials(base) && !is_older(&peer, base)
                        })
                    {
                        bump(&self.counters.store_adoptions);
                        if peer.access_token().is_none() {
                            // A peer kept a salvaged refresh token: present it (once).
                            tracing::info!(
                                "refresh token was rejected; refreshing from a peer's refresh token"
                            );
                            return Err(Box::new(Failure {
                                retry_from: Some(peer),
                                ..*Box::<Failure>::from(error)
                            }));
                        }
                        tracing::info!("refresh token was rejected; adopted a peer's token");
                        return Ok(peer);
                    }
                }
                let description = match &error {
                    Error::TokenEndpoint {
                        error: Some(error), ..
                    } => error.description.clone(),
                    _ => None,
                };
                Err(Box::new(Failure {
                    error: Error::reauthorization_required(ReauthorizationReason::InvalidGrant {
                        description,
                    }),
                    refused: base.cloned(),
                    salvaged: None,
                    retry_from: None,
                }))
            }
            Err(error @ Error::ReauthorizationRequired { .. }) => Err(Box::new(Failure {
                error,
                refused: base.cloned(),
                salvaged: None,
                retry_from: None,
            })),
            Err(mut error) => {
                let Some(rotated) = error.take_rotated_refresh_token() else {
                    return Err(error.into());
                };
                // Procore burnt the refresh token we presented when it answered: the
                // rotated one is the only live one. Saved before the error is returned.
                let now = self.clock.now();
                let salvaged = match base {
                    Some(base) => base.with_rotated_refresh_token(rotated, keep_access, now),
                    None => Token::refresh_only(rotated, now),
                };
                self.save_store(&salvaged, expected).await;
                tracing::warn!(
                    "kept the new procore refresh token of an otherwise unusable token response"
                );
                Err(Box::new(Failure {
                    error,
                    refused: None,
                    salvaged: Some(salvaged),
                    retry_from: None,
                }))
            }
        }
    }

    /// While reauthorization is required: adopts (or refreshes from) a pair a peer
    /// saved, if the store holds one other than the `burnt` credentials.
    async fn recheck_store(
        &self,
        error: &Error,
        burnt: Option<&Token>,
    ) -> Result<Token, Box<Failure>> {
        let unchanged = || {
            Box::new(Failure {
                error: error.clone(),
                refused: burnt.cloned(),
                salvaged: None,
                retry_from: None,
            })
        };
        let Some(Some(stored)) = self.load_store().await else {
            return Err(unchanged());
        };
        if burnt.is_some_and(|burnt| stored.same_credentials(burnt)) {
            return Err(unchanged());
        }
        if !stored.is_expired_at(self.clock.now()) {
            bump(&self.counters.store_adoptions);
            tracing::info!(
                "adopted a procore token a peer saved while reauthorization was required"
            );
            return Ok(stored);
        }
        self.obtain_token(Some(&stored), false, true).await
    }

    /// Whether the store now holds another pair than `before` (as `load_store` gave).
    async fn store_changed_since(&self, before: Option<&Option<Token>>) -> bool {
        match (self.load_store().await, before) {
            (Some(Some(now)), Some(Some(before))) => !now.same_credentials(before),
            (Some(Some(_)), Some(None)) => true,
            _ => false,
        }
    }

    /// `None` if there is no store or it could not be read.
    async fn load_store(&self) -> Option<Option<Token>> {
        let store = self.store.as_ref()?;
        match store.load().await {
            Ok(stored) => Some(stored),
            Err(error) => {
                self.store_failed(error);
                None
            }
        }
    }

    async fn save_store(&self, token: &Token, expected: Option<&Token>) {
        if let Some(store) = &self.store {
            match store.save(token, expected).await {
                Ok(()) => self.store_succeeded(),
                Err(error) => {
                    self.store_failed(error);
                }
            }
        }
    }

    /// Publishes the result and moves the state machine on, under the state lock.
    fn finish(
        &self,
        reason: Reason,
        from_generation: Option<Generation>,
        attempt: Result<Token, Box<Failure>>,
    ) -> Result<Bearer, Error> {
        let now = self.clock.monotonic();
        let reason_name = reason.as_str();
        let recheck = matches!(reason, Reason::StoreRecheck { .. });
        let mut state = self.lock_state();
        // `set_token` may have published a token meanwhile; a failure of this refresh
        // then says nothing about the current token.
        let still_current =
            self.cell.load_full().map(|current| current.generation()) == from_generation;
        match attempt {
            Ok(_) if !still_current => {
                // `set_token` replaced the token while this refresh ran (a new
                // authorization, say): the caller's choice wins, in memory as in the
                // store, where this refresh's compare-and-swap save lost to it.
                state.on_finished(reason, Outcome::Refreshed, true, now, &self.refresh_policy);
                tracing::warn!(
                    "discarded a refreshed procore token: a new token was set meanwhile"
                );
                self.cell
                    .load_full()
                    .and_then(|current| current.bearer.clone())
                    .ok_or(Error::reauthorization_required(
                        ReauthorizationReason::NoToken,
                    ))
            }
            Ok(token) => {
                let published = self.cell.publish(token, self.refresh_policy.skew);
                bump(&self.counters.refreshes);
                state.on_finished(reason, Outcome::Refreshed, true, now, &self.refresh_policy);
                tracing::info!(
                    generation = published.generation().get(),
                    reason = reason_name,
                    "procore token refreshed"
                );
                // `obtain_token` returns only tokens with an access token.
                published
                    .bearer
                    .clone()
                    .ok_or_else(|| Error::invalid_response("the new token has no access token"))
            }
            Err(failure) => {
                let Failure {
                    error,
                    refused,
                    salvaged,
                    ..
                } = *failure;
                if let Some(salvaged) = salvaged.filter(|_| still_current) {
                    // Never sent as a bearer if it has no access token; the next
                    // attempt presents its refresh token.
                    let published = self.cell.publish(salvaged, self.refresh_policy.skew);
                    tracing::debug!(
                        generation = published.generation().get(),
                        "kept a salvaged procore refresh token"
                    );
                }
                if !recheck {
                    bump(&self.counters.refresh_failures);
                }
                let outcome = Outcome::Failed {
                    error: &error,
                    refused: refused.as_ref(),
                };
                let finished =
                    state.on_finished(reason, outcome, still_current, now, &self.refresh_policy);
                if finished == Finished::Withdraw {
                    self.cell.clear();
                }
                if recheck {
                    tracing::debug!("the token store holds no new procore token");
                } else if !still_current {
                    tracing::warn!(%error, "procore token refresh failed after the token was replaced");
                } else if matches!(error, Error::ReauthorizationRequired { .. }) {
                    tracing::error!(%error, "procore token cannot be refreshed; the user must authorize again");
                } else {
                    tracing::warn!(%error, reason = reason_name, "procore token refresh failed");
                }
                Err(error)
            }
        }
    }
}

/// Whether `stored` was issued in a later second than `current`. (The store keeps
/// whole seconds.)
fn is_newer(stored: &Token, current: &Token) -> bool {
    unix_seconds(stored.issued_at()) > unix_seconds(current.issued_at())
}

/// Whether `stored` was issued in an earlier second than `current`.
fn is_older(stored: &Token, current: &Token) -> bool {
    unix_seconds(stored.issued_at()) < unix_seconds(current.issued_at())
}

fn unix_seconds(time: SystemTime) -> u64 {
    unix_millis(time) / 1000
}
