//! The token model and its expiry arithmetic.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderValue;
use serde::{Deserialize, Serialize};

use crate::secret::{AccessToken, RefreshToken};
use crate::Error;

/// How far Procore's `created_at` may disagree with our clock before it is ignored in
/// favour of the time the token request was sent.
pub const MAX_CLOCK_DISAGREEMENT: Duration = Duration::from_secs(60);

/// The longest access-token lifetime believed; a server's larger `expires_in` is
/// treated as this. (Procore's tokens live 90 minutes.)
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(366 * 24 * 60 * 60);

/// The default (and largest) refresh skew: refresh this long before expiry.
pub const DEFAULT_REFRESH_SKEW: Duration = Duration::from_secs(5 * 60);

/// The skew never exceeds this fraction (1/10) of the token's lifetime, so a
/// short-lived token is not refreshed almost as soon as it arrives.
const SKEW_LIFETIME_DIVISOR: u32 = 10;

/// An access token with its optional refresh token and expiry.
///
/// The `Authorization: Bearer …` header value is built once, marked sensitive, and
/// cloned (a reference-count increment) for every request.
///
/// Serializes (for [token stores](crate::TokenStore)) as
/// `{"access_token","refresh_token","expires_at","issued_at"}` with Unix seconds.
/// `Debug` shows no secret.
#[derive(Clone, Serialize, Deserialize)]
#[serde(try_from = "StoredToken", into = "StoredToken")]
pub struct Token {
    access_token: AccessToken,
    refresh_token: Option<RefreshToken>,
    issued_at: SystemTime,
    expires_at: Option<SystemTime>,
    header: HeaderValue,
}

impl Token {
    /// A token that was issued at `issued_at` and expires at `expires_at` (`None`:
    /// unknown, refreshed only after a 401).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidResponse`] if the access token is empty or cannot appear in an
    /// HTTP header.
    pub fn new(
        access_token: AccessToken,
        refresh_token: Option<RefreshToken>,
        issued_at: SystemTime,
        expires_at: Option<SystemTime>,
    ) -> Result<Self, Error> {
        if access_token.secret().is_empty() {
            return Err(Error::invalid_response("the access token is empty"));
        }
        let mut header = HeaderValue::try_from(format!("Bearer {}", access_token.secret()))
            .map_err(|_| {
                Error::invalid_response("the access token has characters not allowed in a header")
            })?;
        header.set_sensitive(true);
        Ok(Self {
            access_token,
            refresh_token,
            issued_at,
            expires_at,
            header,
        })
    }

    /// Builds a token from a token-endpoint answer.
    ///
    /// The expiry is `created_at + expires_in` when the server's `created_at` agrees
    /// with our clock to within [`MAX_CLOCK_DISAGREEMENT`] of `sent_at` (the time the
    /// request was sent), else `sent_at + expires_in`: a server clock that is off
    /// must not make every new token look expired (a refresh loop) or immortal.
    pub(crate) fn from_grant(
        access_token: AccessToken,
        refresh_token: Option<RefreshToken>,
        expires_in: Option<u64>,
        created_at: Option<i64>,
        sent_at: SystemTime,
    ) -> Result<Self, Error> {
        let issued_at = created_at
            .and_then(|secs| u64::try_from(secs).ok())
            .and_then(|secs| UNIX_EPOCH.checked_add(Duration::from_secs(secs)))
            .filter(|created| abs_diff(*created, sent_at) <= MAX_CLOCK_DISAGREEMENT)
            .unwrap_or(sent_at);
        // An absurd lifetime from the server is clamped, never overflowed.
        let expires_at = expires_in.map(|secs| {
            let lifetime = Duration::from_secs(secs).min(MAX_TOKEN_LIFETIME);
            issued_at.checked_add(lifetime).unwrap_or(issued_at)
        });
        Self::new(access_token, refresh_token, issued_at, expires_at)
    }

    /// The access token.
    pub fn access_token(&self) -> &AccessToken {
        &self.access_token
    }

    /// The refresh token, if the grant returned one (client-credentials grants do not).
    pub fn refresh_token(&self) -> Option<&RefreshToken> {
        self.refresh_token.as_ref()
    }

    /// When the token was issued (by the server's clock when it agrees with ours).
    pub fn issued_at(&self) -> SystemTime {
        self.issued_at
    }

    /// When the token expires, if known.
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.expires_at
    }

    /// The ready-made, sensitive `Bearer …` header value.
    pub fn header_value(&self) -> &HeaderValue {
        &self.header
    }

    /// Whether the token has expired at `now`.
    pub fn is_expired_at(&self, now: SystemTime) -> bool {
        self.expires_at.is_some_and(|expires_at| now >= expires_at)
    }

    /// When to refresh: `skew` before expiry, where the skew is at most a tenth of the
    /// token's lifetime. `None` if the expiry is unknown.
    pub fn refresh_at(&self, skew: Duration) -> Option<SystemTime> {
        let expires_at = self.expires_at?;
        let lifetime = expires_at
            .duration_since(self.issued_at)
            .unwrap_or(Duration::ZERO);
        let skew = skew.min(lifetime / SKEW_LIFETIME_DIVISOR);
        Some(expires_at.checked_sub(skew).unwrap_or(expires_at))
    }

    /// Whether `other` carries the same credentials (access and refresh token).
    pub fn same_credentials(&self, other: &Token) -> bool {
        self.access_token == other.access_token && self.refresh_token == other.refresh_token
    }

    /// Keeps `previous` as the refresh token if the server sent none, as RFC 6749
    /// §6 allows: dropping it would force the user to authorize again.
    pub(crate) fn inherit_refresh_token(mut self, previous: Option<&Token>) -> Self {
        if self.refresh_token.is_none() {
            self.refresh_token = previous.and_then(|token| token.refresh_token.clone());
        }
        self
    }
}

fn abs_diff(a: SystemTime, b: SystemTime) -> Duration {
    a.duration_since(b)
        .or_else(|_| b.duration_since(a))
        .unwrap_or(Duration::ZERO)
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("access_token", &self.access_token)
            .field("refresh_token", &self.refresh_token)
            .field("issued_at", &unix_seconds(self.issued_at))
            .field("expires_at", &self.expires_at.map(unix_seconds))
            .finish_non_exhaustive()
    }
}

/// The serialized form of a [`Token`].
#[derive(Serialize, Deserialize)]
struct StoredToken {
    access_token: AccessToken,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    refresh_token: Option<RefreshToken>,
    issued_at: u64,
    #[serde(default)]
    expires_at: Option<u64>,
}

fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

fn from_unix_seconds(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

impl TryFrom<StoredToken> for Token {
    type Error = Error;

    fn try_from(stored: StoredToken) -> Result<Self, Error> {
        Token::new(
            stored.access_token,
            stored.refresh_token,
            from_unix_seconds(stored.issued_at),
            stored.expires_at.map(from_unix_seconds),
        )
    }
}

impl From<Token> for StoredToken {
    fn from(token: Token) -> Self {
        StoredToken {
            issued_at: unix_seconds(token.issued_at),
            expires_at: token.expires_at.map(unix_seconds),
            access_token: token.access_token,
            refresh_token: token.refresh_token,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_absurd_expires_in_is_clamped_not_a_panic() {
        let sent_at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        for expires_in in [u64::MAX, 1 << 63, 4_000_000_000_000] {
            for created_at in [None, Some(i64::MAX), Some(1_700_000_000)] {
                let token = Token::from_grant(
                    AccessToken::new("a"),
                    None,
                    Some(expires_in),
                    created_at,
                    sent_at,
                )
                .unwrap();
                assert_eq!(token.expires_at(), Some(sent_at + MAX_TOKEN_LIFETIME));
            }
        }
    }
    use proptest::prelude::*;

    const SENT: u64 = 1_700_000_000;

    fn grant(expires_in: Option<u64>, created_at: Option<i64>) -> Token {
        Token::from_grant(
            AccessToken::new("access"),
            Some(RefreshToken::new("refresh")),
            expires_in,
            created_at,
            from_unix_seconds(SENT),
        )
        .unwrap()
    }

    #[test]
    fn expiry_uses_created_at_when_clocks_agree() {
        let token = grant(Some(5400), Some(SENT as i64 + 2));
        assert_eq!(token.expires_at(), Some(from_unix_seconds(SENT + 2 + 5400)));
    }

    #[test]
    fn expiry_falls_back_to_send_time_without_created_at() {
        let token = grant(Some(5400), None);
        assert_eq!(token.expires_at(), Some(from_unix_seconds(SENT + 5400)));
    }

    #[test]
    fn expiry_ignores_a_server_clock_ten_minutes_off() {
        for offset in [-600_i64, 600] {
            let token = grant(Some(120), Some(SENT as i64 + offset));
            assert_eq!(
                token.expires_at(),
                Some(from_unix_seconds(SENT + 120)),
                "{offset}"
            );
        }
        assert_eq!(
            grant(Some(120), Some(-5)).issued_at(),
            from_unix_seconds(SENT)
        );
    }

    #[test]
    fn skew_is_five_minutes_for_a_ninety_minute_token_and_scales_down() {
        let long = grant(Some(5400), None);
        assert_eq!(
            long.refresh_at(DEFAULT_REFRESH_SKEW),
            Some(from_unix_seconds(SENT + 5400 - 300))
        );
        let short = grant(Some(20), None);
        assert_eq!(
            short.refresh_at(DEFAULT_REFRESH_SKEW),
            Some(from_unix_seconds(SENT + 18))
        );
        assert_eq!(grant(None, None).refresh_at(DEFAULT_REFRESH_SKEW), None);
    }

    #[test]
    fn bearer_header_is_sensitive_and_precomputed() {
        let token = grant(Some(10), None);
        assert_eq!(token.header_value(), "Bearer access");
        assert!(token.header_value().is_sensitive());
    }

    #[test]
    fn tokens_that_cannot_be_headers_are_rejected() {
        for bad in ["", "line\nbreak", "nul\0"] {
            let err = Token::new(AccessToken::new(bad), None, UNIX_EPOCH, None).unwrap_err();
            assert!(matches!(err, Error::InvalidResponse { .. }), "{bad:?}");
        }
    }

    #[test]
    fn debug_shows_no_secret() {
        let token = Token::new(
            AccessToken::new("acc-secret-1"),
            Some(RefreshToken::new("ref-secret-2")),
            UNIX_EPOCH,
            None,
        )
        .unwrap();
        let printed = format!("{token:?} {token:#?}");
        assert!(
            !printed.contains("acc-secret-1") && !printed.contains("ref-secret-2"),
            "{printed}"
        );
    }

    #[test]
    fn inherits_refresh_token_only_when_none_was_sent() {
        let old = grant(Some(10), None);
        let without = Token::new(AccessToken::new("new"), None, UNIX_EPOCH, None).unwrap();
        let kept = without.inherit_refresh_token(Some(&old));
        assert_eq!(
            kept.refresh_token().map(RefreshToken::secret),
            Some("refresh")
        );
        let with = Token::new(
            AccessToken::new("new"),
            Some(RefreshToken::new("rotated")),
            UNIX_EPOCH,
            None,
        )
        .unwrap();
        let rotated = with.inherit_refresh_token(Some(&old));
        assert_eq!(
            rotated.refresh_token().map(RefreshToken::secret),
            Some("rotated")
        );
    }

    proptest! {
        #[test]
        fn serde_round_trips(
            access in "[A-Za-z0-9._~+/-]{1,200}",
            refresh in proptest::option::of("[A-Za-z0-9._~+/-]{1,200}"),
            issued in 0u64..4_000_000_000,
            lifetime in proptest::option::of(0u64..1_000_000),
        ) {
            let token = Token::new(
                AccessToken::new(access),
                refresh.map(RefreshToken::new),
                from_unix_seconds(issued),
                lifetime.map(|l| from_unix_seconds(issued + l)),
            ).unwrap();
            let json = serde_json::to_string(&token).unwrap();
            let back: Token = serde_json::from_str(&json).unwrap();
            prop_assert!(back.same_credentials(&token));
            prop_assert_eq!(back.issued_at(), token.issued_at());
            prop_assert_eq!(back.expires_at(), token.expires_at());
            prop_assert_eq!(back.header_value(), token.header_value());
        }

        #[test]
        fn refresh_deadline_is_within_the_lifetime(
            issued in 0u64..4_000_000_000,
            lifetime in 0u64..1_000_000,
            skew in 0u64..100_000,
        ) {
            let token = Token::new(
                AccessToken::new("a"),
                None,
                from_unix_seconds(issued),
                Some(from_unix_seconds(issued + lifetime)),
            ).unwrap();
            let refresh_at = token.refresh_at(Duration::from_secs(skew)).unwrap();
            let expires_at = token.expires_at().unwrap();
            prop_assert!(refresh_at <= expires_at);
            prop_assert!(refresh_at >= token.issued_at());
            // At least nine tenths of the lifetime is used before refreshing.
            let used = refresh_at.duration_since(token.issued_at()).unwrap();
            prop_assert!(used >= Duration::from_secs(lifetime) * 9 / 10);
        }
    }
}
