//! The lock-free token cell read by every request.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use http::HeaderValue;

use crate::clock::unix_millis;
use crate::Token;

/// Identifies one published token. Each new token gets a larger generation, so "the
/// token that was rejected" can be told apart from "a token someone already refreshed".
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Generation(u64);

impl Generation {
    #[cfg(test)]
    pub(crate) fn new(generation: u64) -> Self {
        Self(generation)
    }

    /// The number itself, for logs and metrics.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A ready-to-send `Authorization` header value and the generation of the token it
/// came from (pass that to [`TokenManager::rejected`](crate::TokenManager::rejected)
/// after a 401).
#[derive(Clone)]
pub struct Bearer {
    header: HeaderValue,
    generation: Generation,
}

impl Bearer {
    /// The sensitive `Bearer …` header value.
    pub fn header_value(&self) -> &HeaderValue {
        &self.header
    }

    /// Consumes the bearer, returning its header value.
    pub fn into_header_value(self) -> HeaderValue {
        self.header
    }

    /// The generation of the token.
    pub fn generation(&self) -> Generation {
        self.generation
    }
}

impl fmt::Debug for Bearer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bearer")
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

/// A token as published to readers, with its refresh deadline precomputed.
#[derive(Debug)]
pub(crate) struct Published {
    pub(crate) token: Token,
    /// `None` for a token without an access token (a refresh token alone): there is
    /// nothing to hand out, and such a token is always due (`refresh_at_millis` 0).
    pub(crate) bearer: Option<Bearer>,
    generation: Generation,
    /// Unix milliseconds at which the token is due for refresh; `u64::MAX` if never.
    pub(crate) refresh_at_millis: u64,
}

impl Published {
    pub(crate) fn generation(&self) -> Generation {
        self.generation
    }
}

/// The current token behind an [`ArcSwapOption`]: readers never lock, writers (only
/// the manager, under its state lock) swap in a whole new [`Published`].
#[derive(Debug, Default)]
pub(crate) struct TokenCell {
    current: ArcSwapOption<Published>,
    last_generation: AtomicU64,
}

impl TokenCell {
    /// The bearer of the current token if it is not yet due for refresh at
    /// `now_millis`. One atomic load of the cell, no allocation.
    #[inline]
    pub(crate) fn fresh_bearer(&self, now_millis: u64) -> Option<Bearer> {
        let current = self.current.load();
        match &*current {
            Some(published) if now_millis < published.refresh_at_millis => published.bearer.clone(),
            _ => None,
        }
    }

    /// The generation of the token published last (0 before the first).
    pub(crate) fn latest_generation(&self) -> u64 {
        self.last_generation.load(Ordering::Relaxed)
    }

    /// The current token. Use this (not a guard) across `.await` points.
    pub(crate) fn load_full(&self) -> Option<Arc<Published>> {
        self.current.load_full()
    }

    /// Publishes `token` under a new generation.
    pub(crate) fn publish(&self, token: Token, skew: Duration) -> Arc<Published> {
        let generation = Generation(self.last_generation.fetch_add(1, Ordering::Relaxed) + 1);
        let published = Arc::new(Published {
            refresh_at_millis: token.refresh_at(skew).map_or(u64::MAX, unix_millis),
            bearer: token.header_value().map(|header| Bearer {
                header: header.clone(),
                generation,
            }),
            generation,
            token,
        });
        self.current.store(Some(Arc::clone(&published)));
        published
    }

    /// Withdraws the current token (it was rejected and cannot be replaced).
    pub(crate) fn clear(&self) {
        self.current.store(None);
    }
}
