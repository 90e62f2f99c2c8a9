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

/// Copies of a template request whose header map has room for one more header, as
/// a request made by a builder has, for the tower and reqwest fixtures.
///
/// Cloning a `HeaderMap` gives an entries `Vec` whose capacity is its length, so the
/// first header inserted into a cloned request (`Authorization`, in every variant
/// that authorizes) reallocates it: about 490 instructions of a typical tower request
/// that belong to the fixture, not to a real client, whose request comes from a
/// builder (its map holds 6 entries in 8 slots from the first header on). Building
/// each request with a fresh builder costs far more than that reallocation (about
/// 1 250 instructions more than a clone, measured: every name hashed again, and the
/// builder's moves). So the template carries one more header, [`SPARE_HEADER`],
/// which each copy removes at once (the last entry, so no entry moves: about 230
/// instructions), leaving room for one. The same for every variant. An empty
/// template is left alone: its clone allocates nothing, and the first insert
/// allocates, as it does in a built request.
pub(crate) mod headroom {
    use http::header::{HeaderName, FROM};
    use http::{HeaderMap, HeaderValue};

    /// The header the template carries only to leave room in its copies: a standard
    /// name (hashed cheaply) that no variant reads or writes.
    pub(crate) const SPARE_HEADER: HeaderName = FROM;

    /// Gives a template's copies room (see the module): call once on the template.
    pub(crate) fn reserve_in_template(headers: &mut HeaderMap) {
        assert!(
            !headers.contains_key(SPARE_HEADER),
            "the template has no spare"
        );
        if !headers.is_empty() {
            headers.append(SPARE_HEADER, HeaderValue::from_static(""));
        }
    }

    /// Makes the room in a copy of a template given [`reserve_in_template`].
    pub(crate) fn make_room(headers: &mut HeaderMap) {
        if !headers.is_empty() {
            headers.remove(SPARE_HEADER);
        }
    }
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
