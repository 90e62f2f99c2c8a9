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

/// An access token with its optional refresh token and expiry — or, to start from,
/// a refresh token alone.
///
/// The `Authorization: Bearer …` header value is built once, marked sensitive, and
/// cloned (a reference-count increment) for every request.
///
/// A token made by [`Token::from_refresh_token`] has no access token and no header
/// ([`access_token`](Self::access_token) and [`header_value`](Self::header_value)
/// are `None`). It is always expired, so a [`TokenManager`](crate::TokenManager)
/// never hands it out: the first request refreshes it.
///
/// Serializes (for [token stores](crate::TokenStore)) as
/// `{"access_token","refresh_token","expires_at","issued_at"}` with Unix seconds
/// (`access_token` omitted for a refresh token alone). `Debug` shows no secret.
#[derive(Clone, Serialize, Deserialize)]
#[serde(try_from = "StoredToken", into = "StoredToken")]
pub struct Token {
    /// `None` only for a refresh token alone (then `refresh_token` is `Some`).
    access_token: Option<AccessToken>,
    refresh_token: Option<RefreshToken>,
    issued_at: SystemTime,
    expires_at: Option<SystemTime>,
    /// Present exactly when `access_token` is.
    header: Option<HeaderValue>,
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
            access_token: Some(access_token),
            refresh_token,
            issued_at,
            expires_at,
            header: Some(header),
        })
    }

    /// A refresh token alone, with no access token yet: what a user who kept only the
    /// refresh token starts from. It is always expired (and counts as issued at the
    /// Unix epoch), so the first request refreshes it; it is never sent as a bearer.
    ///
    /// Because it counts as the oldest possible token, a pair that a
    /// [token store](crate::TokenStore) holds (saved by an earlier run, which
    /// presented and so burnt this refresh token) wins over it. To replace what a
    /// store holds, use [`TokenManager::set_token`](crate::TokenManager::set_token).
    ///
    /// ```
    /// use std::time::SystemTime;
    /// use bytes::Bytes;
    /// use procore_auth_core::{
    ///     BoxFuture, ClientSecret, Environment, ManualClock, OAuthClient, RefreshToken,
    ///     RefreshTokenGrant, Token, TokenManager, Transport, TransportError,
    /// };
    ///
    /// /// Stands in for an HTTP client: Procore's answer to the refresh.
    /// #[derive(Debug)]
    /// struct Procore;
    /// impl Transport for Procore {
    ///     fn send(&self, request: http::Request<Bytes>)
    ///         -> BoxFuture<'_, Result<http::Response<Bytes>, TransportError>>
    ///     {
    ///         let body = std::str::from_utf8(request.body()).unwrap();
    ///         assert!(body.contains("refresh_token=kept-refresh-token"));
    ///         Box::pin(async {
    ///             Ok(http::Response::new(Bytes::from_static(br#"{"access_token":"new-access",
    ///                 "token_type":"bearer","expires_in":5400,"refresh_token":"new-refresh"}"#)))
    ///         })
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), procore_auth_core::Error> {
    /// let token = Token::from_refresh_token(RefreshToken::new("kept-refresh-token"));
    /// assert!(token.access_token().is_none() && token.header_value().is_none());
    /// assert!(token.is_expired_at(SystemTime::UNIX_EPOCH));
    ///
    /// let client = OAuthClient::new(Environment::production(), "id", ClientSecret::new("secret"));
    /// let manager = TokenManager::builder(RefreshTokenGrant::new(client, Procore))
    ///     .token(token)
    ///     .clock(ManualClock::at_unix(1_700_000_000))
    ///     .build();
    /// // The first request refreshes: the refresh token alone is never sent as a bearer.
    /// let bearer = manager.bearer().await?;
    /// assert_eq!(bearer.header_value(), "Bearer new-access");
    /// # Ok(())
    /// # }
    /// ```
    pub fn from_refresh_token(refresh_token: RefreshToken) -> Self {
        Self::refresh_only(refresh_token, UNIX_EPOCH)
    }

    /// A refresh token alone that counts as issued (and expired) at `issued_at`.
    pub(crate) fn refresh_only(refresh_token: RefreshToken, issued_at: SystemTime) -> Self {
        Self {
            access_token: None,
            refresh_token: Some(refresh_token),
            issued_at,
            expires_at: Some(issued_at),
            header: None,
        }
    }

    /// This token with `refresh_token` in place of its own: a rotated refresh token
    /// salvaged from an answer that was otherwise rejected. The access token is kept
    /// only if `keep_access` (it is still valid and was not rejected).
    pub(crate) fn with_rotated_refresh_token(
        &self,
        refresh_token: RefreshToken,
        keep_access: bool,
        now: SystemTime,
    ) -> Self {
        if keep_access && self.access_token.is_some() && !self.is_expired_at(now) {
            Self {
                refresh_token: Some(refresh_token),
                ..self.clone()
            }
        } else {
            Self::refresh_only(refresh_token, now.max(self.issued_at))
        }
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

    /// The access token; `None` for a refresh token alone
    /// ([`from_refresh_token`](Self::from_refresh_token)).
    pub fn access_token(&self) -> Option<&AccessToken> {
        self.access_token.as_ref()
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

    /// The ready-made, sensitive `Bearer …` header value; `None` for a refresh token
    /// alone.
    pub fn header_value(&self) -> Option<&HeaderValue> {
        self.header.as_ref()
    }

    /// Whether the token has expired at `now`. A refresh token alone always has.
    pub fn is_expired_at(&self, now: SystemTime) -> bool {
        self.access_token.is_none() || self.expires_at.is_some_and(|expires_at| now >= expires_at)
    }

    /// When to refresh: `skew` before expiry, where the skew is at most a tenth of the
    /// token's lifetime. `None` if the expiry is unknown; the Unix epoch (at once) for
    /// a refresh token alone.
    pub fn refresh_at(&self, skew: Duration) -> Option<SystemTime> {
        if self.access_token.is_none() {
            return Some(UNIX_EPOCH);
        }
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    access_token: Option<AccessToken>,
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

#[cfg(test)]
fn from_unix_seconds(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// A stored Unix time; one `SystemTime` cannot hold is an error, never a panic.
fn stored_time(secs: u64) -> Result<SystemTime, Error> {
    UNIX_EPOCH
        .checked_add(Duration::from_secs(secs))
        .ok_or_else(|| Error::invalid_response("a stored time is out of range"))
}

impl TryFrom<StoredToken> for Token {
    type Error = Error;

    fn try_from(stored: StoredToken) -> Result<Self, Error> {
        let issued_at = stored_time(stored.issued_at)?;
        match (stored.access_token, stored.refresh_token) {
            (Some(access_token), refresh_token) => Token::new(
                access_token,
                refresh_token,
                issued_at,
                stored.expires_at.map(stored_time).transpose()?,
            ),
            (None, Some(refresh_token)) => Ok(Token::refresh_only(refresh_token, issued_at)),
            (None, None) => Err(Error::invalid_response(
                "a stored token has neither an access nor a refresh token",
            )),
        }
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
        assert_eq!(token.header_value().unwrap(), "Bearer access");
        assert!(token.header_value().unwrap().is_sensitive());
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

    #[test]
    fn a_token_can_start_from_a_refresh_token_alone() {
        let token = Token::from_refresh_token(RefreshToken::new("only-refresh"));
        assert!(token.access_token().is_none());
        assert!(token.header_value().is_none());
        assert_eq!(
            token.refresh_token().map(RefreshToken::secret),
            Some("only-refresh")
        );
        // Always expired and due: the first request refreshes it.
        for now in [
            UNIX_EPOCH,
            from_unix_seconds(SENT),
            from_unix_seconds(4_000_000_000),
        ] {
            assert!(token.is_expired_at(now));
            assert!(token.refresh_at(DEFAULT_REFRESH_SKEW).unwrap() <= now);
        }
        // Round-trips through a store without inventing an access token.
        let json = serde_json::to_string(&token).unwrap();
        assert!(!json.contains("access_token"), "{json}");
        let back: Token = serde_json::from_str(&json).unwrap();
        assert!(back.same_credentials(&token));
        assert!(back.access_token().is_none() && back.is_expired_at(UNIX_EPOCH));
        // A stored token with neither token is not a token.
        assert!(serde_json::from_str::<Token>(r#"{"issued_at":0}"#).is_err());
        assert!(!format!("{token:?}").contains("only-refresh"));
    }

    #[test]
    fn absurd_created_at_values_are_ignored_not_a_panic() {
        for created_at in [i64::MIN, -1, 0, i64::MAX, 253_402_300_800] {
            let token = grant(Some(5400), Some(created_at));
            assert_eq!(token.issued_at(), from_unix_seconds(SENT), "{created_at}");
        }
        // At the far end of SystemTime, arithmetic saturates instead of panicking.
        let far = UNIX_EPOCH + Duration::from_secs(i64::MAX as u64 / 2);
        let token = Token::from_grant(
            AccessToken::new("a"),
            None,
            Some(u64::MAX),
            Some(i64::MAX),
            far,
        )
        .unwrap();
        assert!(token.expires_at().unwrap() >= far);
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
