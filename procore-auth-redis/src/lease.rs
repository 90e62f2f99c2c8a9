//! The cross-process refresh lease: taken before a refresh token is presented, kept
//! alive while the refresh runs, ended with its outcome for the processes waiting.

use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

use procore_auth_core::{
    BoxFuture, RefreshLease, RefreshOutcome, RefreshToken, RefreshTurn, StoreError, Token,
};
use tokio::sync::broadcast;

use crate::events::Event;
use crate::scripts::{EXTEND, RELEASE, TURN};
use crate::store::{io_error, Keys, RedisStore};

/// How long a refused refresh token is remembered: a day, far longer than any peer
/// could hold on to it.
const REFUSED_MEMORY: Duration = Duration::from_secs(24 * 60 * 60);

/// A wait this long never ends in practice (a century), and adds to an instant safely.
const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// Takes the lease of the tenant with `keys` for presenting `presenting`'s refresh token, or waits while a
/// peer holds it (see [`RedisStore`]).
pub(crate) async fn begin_refresh(
    store: &RedisStore,
    keys: Keys,
    presenting: Option<&Token>,
) -> Result<RefreshTurn, StoreError> {
    let inner = &store.inner;
    let refresh = presenting.and_then(Token::refresh_token);
    let owner = owner_id()?;
    // `max_wait` may be huge: far in the future is as good as never.
    let deadline = Instant::now()
        .checked_add(inner.max_wait)
        .unwrap_or_else(|| Instant::now() + FOREVER);
    let mut events: Option<broadcast::Receiver<Event>> = None;
    let mut subscribed_once = false;
    loop {
        let mut connection = inner.connection.clone();
        let turn: String = TURN
            .key(&keys.lease)
            .key(&keys.refused)
            .key(&keys.replaced)
            .key(&keys.token)
            .arg(&owner)
            .arg(millis(inner.lease_ttl))
            .arg(refresh.map_or("", RefreshToken::secret))
            .invoke_async(&mut connection)
            .await
            .map_err(io_error)?;
        match turn.as_str() {
            "acquired" => {
                let lease = RedisLease::new(store.clone(), keys, owner, refresh.cloned());
                return Ok(RefreshTurn::Go(Some(Box::new(lease))));
            }
            "refused" => return Ok(RefreshTurn::PeerRefused),
            // A peer replaced this pair: adopt (or refresh from) the stored one.
            "replaced" => return Ok(RefreshTurn::PeerSaved),
            _ => {}
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            tracing::warn!("gave up waiting for a peer's procore token refresh");
            return Err(StoreError::Busy);
        }
        // Busy. Subscribe before asking again, so no event between the two is missed;
        // without a subscription, poll.
        if !subscribed_once {
            subscribed_once = true;
            let timeout = inner.response_timeout.min(remaining);
            events = inner
                .events
                .subscribe(&inner.client, &store.events_pattern(), timeout)
                .await;
            continue;
        }
        let next_poll = Instant::now() + inner.poll_interval.min(remaining);
        let Some(receiver) = &mut events else {
            tokio::time::sleep_until(next_poll).await;
            continue;
        };
        // Until our channel says something, or it is time to ask again.
        loop {
            match tokio::time::timeout_at(next_poll, receiver.recv()).await {
                Ok(Ok(event)) if event.channel == keys.events => {
                    if event.payload == "saved" {
                        return Ok(RefreshTurn::PeerSaved);
                    }
                    break; // the lease ended: ask again now
                }
                Ok(Ok(_other_tenant)) => {}
                // Missed events: ask again now.
                Ok(Err(broadcast::error::RecvError::Lagged(_))) => break,
                // The subscription broke: poll from now on.
                Ok(Err(broadcast::error::RecvError::Closed)) => {
                    events = None;
                    break;
                }
                Err(_time_to_poll) => break,
            }
        }
    }
}

/// A lease this process holds; extended in the background until it ends.
struct RedisLease {
    store: RedisStore,
    keys: Keys,
    owner: String,
    /// The refresh token this lease's refresh presents: remembered (hashed) if refused.
    presenting: Option<RefreshToken>,
    keeper: tokio::task::JoinHandle<()>,
    /// Whether `end` released it (else dropping it does).
    ended: bool,
}

impl RedisLease {
    fn new(store: RedisStore, keys: Keys, owner: String, presenting: Option<RefreshToken>) -> Self {
        let keeper = tokio::spawn(keep_alive(store.clone(), keys.lease.clone(), owner.clone()));
        Self {
            store,
            keys,
            owner,
            presenting,
            keeper,
            ended: false,
        }
    }
}

/// Extends the lease every third of its lifetime while the refresh runs.
async fn keep_alive(store: RedisStore, lease: String, owner: String) {
    let ttl = store.inner.lease_ttl;
    loop {
        tokio::time::sleep(ttl / 3).await;
        let mut connection = store.inner.connection.clone();
        let extended: Result<i64, _> = EXTEND
            .key(&lease)
            .arg(&owner)
            .arg(millis(ttl))
            .invoke_async(&mut connection)
            .await;
        match extended {
            Ok(1) => {}
            Ok(_) => {
                tracing::warn!(
                    "lost the procore refresh lease while refreshing; a peer may take over"
                );
                return;
            }
            Err(error) => tracing::warn!(%error, "could not extend the procore refresh lease"),
        }
    }
}

impl RefreshLease for RedisLease {
    fn end(mut self: Box<Self>, outcome: RefreshOutcome) -> BoxFuture<'static, ()> {
        self.keeper.abort();
        self.ended = true;
        let outcome = match outcome {
            RefreshOutcome::Saved => "saved",
            RefreshOutcome::Refused => "refused",
            _ => "unchanged",
        };
        Box::pin(release(
            self.store.clone(),
            Release::of(&self),
            self.presenting.clone(),
            outcome,
        ))
    }
}

impl Drop for RedisLease {
    fn drop(&mut self) {
        self.keeper.abort();
        if self.ended {
            return;
        }
        // Dropped without `end` (a panicking refresh): release it now rather than make
        // peers wait out its time to live, if a runtime is there to do it.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(release(
                self.store.clone(),
                Release::of(self),
                None,
                "unchanged",
            ));
        }
    }
}

/// What releasing a lease needs, owned (a release may outlive the lease).
struct Release {
    lease: String,
    refused: String,
    events: String,
    owner: String,
}

impl Release {
    fn of(lease: &RedisLease) -> Self {
        Self {
            lease: lease.keys.lease.clone(),
            refused: lease.keys.refused.clone(),
            events: lease.keys.events.clone(),
            owner: lease.owner.clone(),
        }
    }
}

async fn release(
    store: RedisStore,
    names: Release,
    presented: Option<RefreshToken>,
    outcome: &'static str,
) {
    let mut connection = store.inner.connection.clone();
    let released: Result<i64, _> = RELEASE
        .key(&names.lease)
        .key(&names.refused)
        .arg(&names.owner)
        .arg(outcome)
        .arg(presented.as_ref().map_or("", RefreshToken::secret))
        .arg(millis(REFUSED_MEMORY))
        .arg(&names.events)
        .invoke_async(&mut connection)
        .await;
    if let Err(error) = released {
        // It expires on its own; peers wait until then.
        tracing::warn!(%error, "could not release the procore refresh lease");
    }
}

impl fmt::Debug for RedisLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLease")
            .field("lease", &self.keys.lease)
            .finish_non_exhaustive()
    }
}

/// A lease owner id no other lease, in this process or another, will have: 128
/// random bits. Without randomness there is no safe id, so no lease.
fn owner_id() -> Result<String, StoreError> {
    let mut bytes = [0_u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|error| StoreError::from(std::io::Error::other(error.to_string())))?;
    Ok(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
}

pub(crate) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
