//! The cross-process refresh lease: taken before a refresh token is presented, kept
//! alive while the refresh runs, ended with its outcome for the processes waiting.

use std::fmt;
use std::time::{Duration, UNIX_EPOCH};

use tokio::time::Instant;

use futures_util::StreamExt;
use procore_auth_core::{
    BoxFuture, RefreshLease, RefreshOutcome, RefreshToken, RefreshTurn, StoreError, Token,
};
use redis::aio::PubSubStream;

use crate::scripts::{EXTEND, RELEASE, TURN};
use crate::store::{io_error, Keys, RedisStore};

/// How long a refused refresh token is remembered: a day, far longer than any peer
/// could hold on to it.
const REFUSED_MEMORY: Duration = Duration::from_secs(24 * 60 * 60);

/// Takes the lease of the tenant with `keys` for presenting `presenting`'s refresh token, or waits while a
/// peer holds it (see [`RedisStore`]).
pub(crate) async fn begin_refresh(
    store: &RedisStore,
    keys: Keys,
    presenting: Option<&Token>,
) -> Result<RefreshTurn, StoreError> {
    let inner = &store.inner;
    let refresh = presenting.and_then(Token::refresh_token);
    // Whole seconds, as stored.
    let issued = presenting.map_or(0, |token| {
        token
            .issued_at()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs())
    });
    let owner = owner_id()?;
    let deadline = Instant::now() + inner.max_wait;
    let mut events: Option<PubSubStream> = None;
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
            .arg(issued)
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
        // Busy. Subscribe before asking again, so no event between the two is missed;
        // without a subscription, poll.
        if !subscribed_once {
            subscribed_once = true;
            events = subscribe(store, &keys.events).await;
            continue;
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            tracing::warn!("gave up waiting for a peer's procore token refresh");
            return Err(StoreError::Busy);
        }
        let wait = inner.poll_interval.min(remaining);
        match &mut events {
            Some(stream) => match tokio::time::timeout(wait, stream.next()).await {
                Ok(Some(message)) => {
                    if message
                        .get_payload::<String>()
                        .is_ok_and(|event| event == "saved")
                    {
                        return Ok(RefreshTurn::PeerSaved);
                    }
                }
                // The subscription broke (Redis restarted, say): poll from now on.
                Ok(None) => events = None,
                Err(_elapsed) => {}
            },
            None => tokio::time::sleep(wait).await,
        }
    }
}

async fn subscribe(store: &RedisStore, channel: &str) -> Option<PubSubStream> {
    let subscribed = async {
        let mut pubsub = store.inner.client.get_async_pubsub().await?;
        pubsub.subscribe(channel).await?;
        Ok::<_, redis::RedisError>(pubsub.into_on_message())
    };
    match subscribed.await {
        Ok(stream) => Some(stream),
        Err(error) => {
            tracing::debug!(%error, "no redis subscription; polling for the peer's refresh");
            None
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
    fn end(self: Box<Self>, outcome: RefreshOutcome) -> BoxFuture<'static, ()> {
        self.keeper.abort();
        Box::pin(async move {
            let outcome = match outcome {
                RefreshOutcome::Saved => "saved",
                RefreshOutcome::Refused => "refused",
                _ => "unchanged",
            };
            let mut connection = self.store.inner.connection.clone();
            let released: Result<i64, _> = RELEASE
                .key(&self.keys.lease)
                .key(&self.keys.refused)
                .arg(&self.owner)
                .arg(outcome)
                .arg(self.presenting.as_ref().map_or("", RefreshToken::secret))
                .arg(millis(REFUSED_MEMORY))
                .arg(&self.keys.events)
                .invoke_async(&mut connection)
                .await;
            if let Err(error) = released {
                // It expires on its own; peers wait until then.
                tracing::warn!(%error, "could not release the procore refresh lease");
            }
        })
    }
}

impl Drop for RedisLease {
    fn drop(&mut self) {
        self.keeper.abort();
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
