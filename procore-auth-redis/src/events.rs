//! One pub/sub connection per [`RedisStore`](crate::RedisStore), shared by every
//! process-local wait for a peer's refresh: a registry whose tenants all expire at
//! once must not open a Redis connection per tenant.

use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use redis::Client;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

/// An event published on a tenant's channel: `saved`, or how a lease ended.
#[derive(Clone, Debug)]
pub(crate) struct Event {
    pub(crate) channel: String,
    pub(crate) payload: String,
}

/// Events are few (one or two per refresh); a waiter that falls this far behind
/// re-checks the store instead.
const BUFFER: usize = 256;

/// The shared subscription, started on first need and again after it breaks.
#[derive(Debug, Default)]
pub(crate) struct Events {
    current: Mutex<Option<Subscription>>,
}

#[derive(Debug)]
struct Subscription {
    sender: broadcast::Sender<Event>,
    task: JoinHandle<()>,
}

impl Events {
    /// A receiver of every tenant's events under `pattern`, or `None` if no
    /// subscription could be made within `timeout` (the caller polls instead).
    pub(crate) async fn subscribe(
        self: &Arc<Self>,
        client: &Client,
        pattern: &str,
        timeout: Duration,
    ) -> Option<broadcast::Receiver<Event>> {
        if let Some(receiver) = self.receiver() {
            return Some(receiver);
        }
        let connected = tokio::time::timeout(timeout, async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.psubscribe(pattern).await?;
            Ok::<_, redis::RedisError>(pubsub.into_on_message())
        })
        .await;
        let stream = match connected {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => {
                tracing::debug!(%error, "no redis subscription; polling for peers' refreshes");
                return None;
            }
            Err(_elapsed) => {
                tracing::debug!("redis subscription timed out; polling for peers' refreshes");
                return None;
            }
        };
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(subscription) = current.as_ref() {
            // Another waiter subscribed meanwhile: use that one; ours closes here.
            return Some(subscription.sender.subscribe());
        }
        let (sender, receiver) = broadcast::channel(BUFFER);
        let events = Arc::downgrade(self);
        let forwarding = sender.clone();
        let task = tokio::spawn(async move {
            let mut stream = stream;
            while let Some(message) = stream.next().await {
                let event = Event {
                    channel: message.get_channel_name().to_owned(),
                    payload: message.get_payload().unwrap_or_default(),
                };
                // No receiver right now is fine.
                let _ = forwarding.send(event);
            }
            // The connection broke (Redis restarted, say): the next waiter subscribes
            // anew; the current ones see the channel close and poll.
            forget(&events);
        });
        *current = Some(Subscription { sender, task });
        Some(receiver)
    }

    fn receiver(&self) -> Option<broadcast::Receiver<Event>> {
        let current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        current
            .as_ref()
            .filter(|subscription| !subscription.task.is_finished())
            .map(|subscription| subscription.sender.subscribe())
    }
}

fn forget(events: &Weak<Events>) {
    if let Some(events) = events.upgrade() {
        *events
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        let current = self
            .current
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(subscription) = current.take() {
            subscription.task.abort();
        }
    }
}

/// `prefix` as a literal in a `PSUBSCRIBE` pattern.
pub(crate) fn escape_glob(prefix: &str) -> String {
    let mut escaped = String::with_capacity(prefix.len());
    for character in prefix.chars() {
        if matches!(character, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(character);
    }
    escaped
}
