//! The crate's error type.
//!
//! No variant carries a secret: token endpoint bodies are reduced to their RFC 6749
//! `error` code and description, and parse failures to a position, never a value.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

use crate::store::StoreError;
use crate::transport::{TransportError, TransportErrorKind, MAX_RESPONSE_BYTES};

/// Everything that can go wrong while obtaining, refreshing or using a token.
///
/// Errors are `Clone` because one failed refresh is shared by every request that was
/// waiting for it.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The user (or service account) must authorize again: the refresh token was
    /// rejected (`invalid_grant`), there is no refresh token, or no token was ever set.
    /// No further token calls are made until a new token is set.
    #[error("reauthorization required: {reason}")]
    ReauthorizationRequired {
        /// Why the current credentials cannot be refreshed.
        reason: ReauthorizationReason,
    },

    /// The token, revoke or token-info endpoint answered with an error status.
    #[error("token endpoint answered {status}{}", describe_oauth_error(.error.as_ref()))]
    TokenEndpoint {
        /// The HTTP status.
        status: StatusCode,
        /// The RFC 6749 §5.2 error, when the body carried one.
        error: Option<OAuthError>,
        /// The `Retry-After` delay, for 429 and 503 answers that carried one.
        retry_after: Option<Duration>,
    },

    /// The endpoint answered success, but the body is not what Procore sends.
    #[error("malformed response from the token endpoint: {reason}")]
    InvalidResponse {
        /// What was wrong (never includes a token value).
        reason: String,
    },

    /// The response body exceeded the size limit; it was not parsed.
    #[error("token endpoint response exceeds the {limit}-byte limit")]
    ResponseTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },

    /// The request could not be sent or its response was not received.
    #[error(transparent)]
    Transport(TransportError),

    /// The token store failed. A token that could not be saved is still used in memory.
    #[error(transparent)]
    Store(#[from] StoreError),

    /// The authorization redirect did not carry a valid code.
    #[error("authorization callback rejected: {0}")]
    Callback(CallbackError),

    /// A previous refresh failed and the next attempt is not due yet.
    #[error("token refresh is backing off for {retry_in:?} after a failure")]
    BackingOff {
        /// How long until the next attempt is allowed.
        retry_in: Duration,
        /// The failure that started the back-off.
        #[source]
        last_error: Arc<Error>,
    },

    /// The configuration is invalid (for example, a custom base URL).
    #[error("invalid configuration: {0}")]
    Config(String),

    /// A user-supplied [`TokenSource`](crate::TokenSource) panicked while fetching a token.
    #[error("the token source panicked")]
    SourcePanicked,
}

impl Error {
    /// The RFC 6749 error code, if the token endpoint sent one.
    pub fn oauth_error(&self) -> Option<&OAuthErrorCode> {
        match self {
            Self::TokenEndpoint {
                error: Some(error), ..
            } => Some(&error.code),
            _ => None,
        }
    }

    /// Whether a later attempt may succeed without anything changing on the caller's
    /// side: 5xx, 429, transport failures and back-off.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::TokenEndpoint { status, .. } => {
                status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS
            }
            Self::Transport(_) | Self::BackingOff { .. } => true,
            _ => false,
        }
    }

    /// How long the server asked us to wait, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::TokenEndpoint { retry_after, .. } => *retry_after,
            Self::BackingOff { last_error, .. } => last_error.retry_after(),
            _ => None,
        }
    }

    pub(crate) fn is_invalid_grant(&self) -> bool {
        matches!(self.oauth_error(), Some(OAuthErrorCode::InvalidGrant))
    }

    pub(crate) fn invalid_response(reason: impl Into<String>) -> Self {
        Self::InvalidResponse {
            reason: reason.into(),
        }
    }
}

/// Describes a JSON failure by category and position only: serde's own messages quote
/// the offending value, which could be a token.
pub(crate) fn describe_json_error(error: &serde_json::Error, what: &str, len: usize) -> String {
    let problem = match error.classify() {
        serde_json::error::Category::Data => "has missing or mistyped fields",
        serde_json::error::Category::Eof => "is truncated",
        serde_json::error::Category::Syntax | serde_json::error::Category::Io => "is not JSON",
    };
    format!(
        "{what} {problem} (line {}, column {}, {len} bytes)",
        error.line(),
        error.column()
    )
}

/// A body cut off by the transport is the same failure as one refused by the parser.
impl From<TransportError> for Error {
    fn from(error: TransportError) -> Self {
        match error.kind() {
            TransportErrorKind::ResponseTooLarge => Self::ResponseTooLarge {
                limit: MAX_RESPONSE_BYTES,
            },
            _ => Self::Transport(error),
        }
    }
}

fn describe_oauth_error(error: Option<&OAuthError>) -> String {
    error.map_or_else(String::new, |error| format!(": {error}"))
}

/// Why [`Error::ReauthorizationRequired`] was returned.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReauthorizationReason {
    /// The token endpoint answered `invalid_grant`: the refresh token was used,
    /// revoked or expired, and no peer had stored a newer one.
    InvalidGrant {
        /// The server's `error_description`, if any.
        description: Option<String>,
    },
    /// The current token has no refresh token and its grant cannot mint a new one.
    MissingRefreshToken,
    /// No token has been set and none is in the token store.
    NoToken,
}

impl fmt::Display for ReauthorizationReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidGrant { description: None } => {
                f.write_str("the refresh token was rejected")
            }
            Self::InvalidGrant {
                description: Some(description),
            } => write!(f, "the refresh token was rejected ({description})"),
            Self::MissingRefreshToken => f.write_str("the token has no refresh token"),
            Self::NoToken => f.write_str("no token is available"),
        }
    }
}

/// An RFC 6749 §5.2 error body: `{"error": "...", "error_description": "..."}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OAuthError {
    /// The `error` code.
    pub code: OAuthErrorCode,
    /// The human-readable `error_description`, if sent.
    pub description: Option<String>,
}

impl fmt::Display for OAuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.description {
            Some(description) => write!(f, "{} ({description})", self.code),
            None => write!(f, "{}", self.code),
        }
    }
}

/// The `error` codes of RFC 6749 §5.2, plus anything else a server sends.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OAuthErrorCode {
    /// `invalid_request`
    InvalidRequest,
    /// `invalid_client`: wrong client id or secret.
    InvalidClient,
    /// `invalid_grant`: the code or refresh token is used, revoked, expired or foreign.
    InvalidGrant,
    /// `unauthorized_client`
    UnauthorizedClient,
    /// `unsupported_grant_type`
    UnsupportedGrantType,
    /// `invalid_scope`
    InvalidScope,
    /// Any other code.
    Other(String),
}

impl OAuthErrorCode {
    pub(crate) fn parse(code: &str) -> Self {
        match code {
            "invalid_request" => Self::InvalidRequest,
            "invalid_client" => Self::InvalidClient,
            "invalid_grant" => Self::InvalidGrant,
            "unauthorized_client" => Self::UnauthorizedClient,
            "unsupported_grant_type" => Self::UnsupportedGrantType,
            "invalid_scope" => Self::InvalidScope,
            other => Self::Other(other.to_owned()),
        }
    }

    /// The code as it appears on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidClient => "invalid_client",
            Self::InvalidGrant => "invalid_grant",
            Self::UnauthorizedClient => "unauthorized_client",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::InvalidScope => "invalid_scope",
            Self::Other(other) => other,
        }
    }
}

impl fmt::Display for OAuthErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an authorization redirect was rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallbackError {
    /// The `state` parameter is missing or differs from the one sent: possible CSRF.
    StateMismatch,
    /// The redirect carries neither a `code` nor an `error`.
    MissingCode,
    /// The user or Procore declined (`error=access_denied`, …).
    Denied(OAuthError),
}

impl fmt::Display for CallbackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::StateMismatch => f.write_str("the state parameter does not match"),
            Self::MissingCode => f.write_str("no authorization code in the redirect"),
            Self::Denied(error) => write!(f, "authorization denied: {error}"),
        }
    }
}
