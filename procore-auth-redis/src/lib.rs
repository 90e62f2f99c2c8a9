//! A Redis token store for procore-auth, for fleets of processes sharing Procore users.
//!
//! Procore's refresh tokens are single use: when two replicas of a service refresh one
//! user's token at once, the loser presents a burnt token and the user is locked out.
//! [`RedisStore`] makes the replicas behave like one process: tokens are saved by
//! compare-and-swap, and a refresh across processes needs the key's lease, so exactly
//! one process refreshes while the others wait for its new pair and adopt it.
//!
//! It is a [`KeyedTokenStore`](procore_auth_core::KeyedTokenStore) (one Redis key per
//! tenant, for a [`TokenRegistry`](procore_auth_core::TokenRegistry)), and
//! [`RedisStore::for_key`] gives one tenant's [`TokenStore`](procore_auth_core::TokenStore)
//! for a single [`TokenManager`](procore_auth_core::TokenManager). See [`RedisStore`]
//! for the keys, the lease, and the Redis settings durability needs.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod events;
mod lease;
mod scripts;
mod store;

pub use store::{
    RedisKeyStore, RedisStore, RedisStoreBuilder, DEFAULT_LEASE_TTL, DEFAULT_MAX_WAIT,
    DEFAULT_POLL_INTERVAL, DEFAULT_PREFIX, DEFAULT_RESPONSE_TIMEOUT,
};

/// Setting up a [`RedisStore`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The URL is invalid, or Redis could not be reached.
    #[error("cannot connect to redis")]
    Connect(#[source] redis::RedisError),
    /// The key prefix holds `{` or `}`, which would break the hash tag that keeps a
    /// tenant's keys in one Redis Cluster slot (and could make two prefixes share
    /// keys).
    #[error("the redis key prefix must not contain `{{` or `}}`")]
    InvalidPrefix,
}
