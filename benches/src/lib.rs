//! The variants measured by the criterion suites in `benches/` and by the interleaved
//! ratio runner (`cargo run --release -p procore-auth-benches --bin ratios`).
//!
//! Each variant is written once, here, as a function that runs a number of
//! iterations and returns the elapsed time, so both harnesses measure the same code.
#![forbid(unsafe_code)]
// Benchmarks measure wall-clock time; the ban on reading the clock is for library code.
#![allow(clippy::disallowed_methods)]

pub mod e2e;
pub mod rate_limit;
pub mod redis_store;
pub mod refresh_contention;
pub mod registry;
pub mod reqwest_overhead;
pub mod token_read;
pub mod tower_overhead;

use std::time::{Duration, SystemTime};

use procore_auth_core::{
    AccessToken, BoxFuture, Clock, Error, RefreshToken, SystemClock, Token, TokenManager,
    TokenSource,
};

/// What one run of a tower stack or reqwest chain measured, and what it ran with
/// (for checking that it measured the real thing).
#[derive(Debug)]
pub struct Ran {
    /// The time the requests took.
    pub elapsed: Duration,
    /// The stack's manager (unused by the stacks without one).
    pub manager: TokenManager,
    /// What the service answered, if its answers carried headers.
    pub answers: Option<rate_limit::Answers>,
}

/// A token that expires in 90 minutes.
pub fn fresh_token(name: &str) -> Token {
    token_expiring_at(name, SystemClock.now() + Duration::from_secs(5400))
}

/// A token that expired a minute ago.
pub fn expired_token(name: &str) -> Token {
    token_expiring_at(name, SystemClock.now() - Duration::from_secs(60))
}

fn token_expiring_at(name: &str, expires_at: SystemTime) -> Token {
    Token::new(
        AccessToken::new(format!("bench-access-{name}-{}", "x".repeat(600))),
        Some(RefreshToken::new(format!("bench-refresh-{name}"))),
        expires_at - Duration::from_secs(5400),
        Some(expires_at),
    )
    .expect("bench tokens are valid header values")
}

/// A token source that never answers: for benches where the token must stay fresh.
#[derive(Debug)]
pub struct NeverRefreshes;

impl TokenSource for NeverRefreshes {
    fn fetch<'a>(
        &'a self,
        _: Option<&'a Token>,
        _: &'a dyn Clock,
    ) -> BoxFuture<'a, Result<Token, Error>> {
        Box::pin(std::future::pending())
    }
}
