//! The crate's error type.
//!
//! No variant prints a secret: token endpoint bodies are reduced to their RFC 6749
//! `error` code and description, and parse failures to a position, never a value.
//! Text a server sent (`error`, `error_description`) is kept only after
//! [`server_text`] has escaped its control characters, capped its length and scrubbed
//! the secrets known where it was parsed (the client secret, the tokens presented).
//! The one secret an error may hold is [`Error::rotated_refresh_token`], which
//! `Display` omits and `Debug` redacts.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

use crate::registry::Tenant;
use crate::secret::RefreshToken;
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
    #[error("reauthorization required{}: {reason}", tenant_suffix(.tenant.as_ref()))]
    ReauthorizationRequired {
        /// Why the current credentials cannot be refreshed.
        reason: ReauthorizationReason,
        /// Whose credentials, for a manager of a [`TokenRegistry`](crate::TokenRegistry):
        /// the tenant to ask to sign in again.
        tenant: Option<Tenant>,
    },

    /// The token's rate-limit budget is spent until `reset_at`, and the
    /// [`RateLimitPolicy`](crate::RateLimitPolicy) says not to wait that long (or not
    /// at all). Nothing was sent.
    #[error("the procore rate limit is spent until {} (unix seconds)", unix_seconds(*.reset_at))]
    RateLimited {
        /// When the budget resets.
        reset_at: std::time::SystemTime,
    },

    /// A request for the API named no tenant (no key in its extensions, or none the
    /// key function could derive), so it got no token: a registry never guesses.
    #[error("the request names no tenant, so it gets no Procore token")]
    TenantNotSelected,

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
        /// A new refresh token the rejected body carried. Procore burnt the refresh
        /// token that was presented when it answered, so this is the only live one:
        /// keep it (a [`TokenManager`](crate::TokenManager) saves it before it returns
        /// the error, and strips it from the error it shares). Not printed.
        rotated_refresh_token: Option<RefreshToken>,
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

    /// The transport (or the parsing of its answer) panicked during a one-off OAuth
    /// call: [`OAuthClient::exchange_code`](crate::OAuthClient::exchange_code),
    /// [`revoke`](crate::OAuthClient::revoke) or
    /// [`token_info`](crate::OAuthClient::token_info).
    #[error("the OAuth call panicked")]
    CallPanicked,

    /// The [`TokenSource`](crate::TokenSource) cannot revoke tokens (see
    /// [`TokenSource::revoke`](crate::TokenSource::revoke)); nothing was changed.
    #[error("the token source cannot revoke tokens")]
    RevokeUnsupported,
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
    /// side: 5xx, 429, transport failures, back-off, and a token store that is
    /// unreachable or busy ([`StoreError::is_transient`]).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::TokenEndpoint { status, .. } => {
                status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS
            }
            Self::Transport(_) | Self::BackingOff { .. } | Self::RateLimited { .. } => true,
            Self::Store(error) => error.is_transient(),
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

    /// The tenant whose credentials an error concerns, for errors from a manager of a
    /// [`TokenRegistry`](crate::TokenRegistry) (see [`Error::ReauthorizationRequired`]).
    pub fn tenant(&self) -> Option<&Tenant> {
        match self {
            Self::ReauthorizationRequired { tenant, .. } => tenant.as_ref(),
            _ => None,
        }
    }

    pub(crate) fn reauthorization_required(reason: ReauthorizationReason) -> Self {
        Self::ReauthorizationRequired {
            reason,
            tenant: None,
        }
    }

    /// This error, naming `tenant` if it asks for reauthorization.
    pub(crate) fn for_tenant(mut self, tenant: Option<&Tenant>) -> Self {
        if let (Self::ReauthorizationRequired { tenant: slot, .. }, Some(tenant)) =
            (&mut self, tenant)
        {
            *slot = Some(tenant.clone());
        }
        self
    }

    pub(crate) fn is_invalid_grant(&self) -> bool {
        matches!(self.oauth_error(), Some(OAuthErrorCode::InvalidGrant))
    }

    /// The new refresh token a rejected success body carried (see
    /// [`Error::InvalidResponse`]): keep it, the one presented is burnt.
    pub fn rotated_refresh_token(&self) -> Option<&RefreshToken> {
        match self {
            Self::InvalidResponse {
                rotated_refresh_token,
                ..
            } => rotated_refresh_token.as_ref(),
            _ => None,
        }
    }

    /// Takes the rotated refresh token out of the error.
    pub(crate) fn take_rotated_refresh_token(&mut self) -> Option<RefreshToken> {
        match self {
            Self::InvalidResponse {
                rotated_refresh_token,
                ..
            } => rotated_refresh_token.take(),
            _ => None,
        }
    }

    pub(crate) fn invalid_response(reason: impl Into<String>) -> Self {
        Self::InvalidResponse {
            reason: reason.into(),
            rotated_refresh_token: None,
        }
    }

    /// Scrubs `secrets` from the server text this error holds (already sanitized when
    /// it was parsed; this removes secrets the parser did not know).
    pub(crate) fn scrubbed(self, secrets: &[&str]) -> Self {
        if !secrets
            .iter()
            .any(|secret| secret.len() >= MIN_SCRUBBED_SECRET_LEN)
        {
            return self;
        }
        match self {
            Self::TokenEndpoint {
                status,
                error,
                retry_after,
            } => Self::TokenEndpoint {
                status,
                error: error.map(|error| error.scrubbed(secrets)),
                retry_after,
            },
            Self::ReauthorizationRequired {
                reason: ReauthorizationReason::InvalidGrant { description },
                tenant,
            } => Self::ReauthorizationRequired {
                reason: ReauthorizationReason::InvalidGrant {
                    description: description.map(|text| rescrub(&text, secrets)),
                },
                tenant,
            },
            Self::Callback(CallbackError::Denied(error)) => {
                Self::Callback(CallbackError::Denied(error.scrubbed(secrets)))
            }
            Self::BackingOff {
                retry_in,
                last_error,
            } => Self::BackingOff {
                retry_in,
                last_error: Arc::new((*last_error).clone().scrubbed(secrets)),
            },
            other => other,
        }
    }
}

/// The longest server text (in characters, after escaping) kept in an error.
pub(crate) const MAX_SERVER_TEXT_CHARS: usize = 200;

/// Shorter secrets are not scrubbed: every occurrence of a two-letter "secret" in a
/// message would be noise, and would point at the secret besides.
const MIN_SCRUBBED_SECRET_LEN: usize = 4;

const REDACTED: &str = "[redacted]";

/// Makes text a server sent safe to show and log: every occurrence of a secret in
/// `secrets` (raw or form-encoded) becomes `[redacted]`, control characters (and
/// Unicode line separators and bidirectional overrides) are escaped, so no line can
/// be forged, and the result is cut at [`MAX_SERVER_TEXT_CHARS`] with an ellipsis.
pub(crate) fn server_text(text: &str, secrets: &[&str]) -> String {
    let scrubbed = scrub(text, secrets);
    let mut out = String::new();
    let mut chars = 0;
    let mut escaped = String::new();
    for c in scrubbed.chars() {
        escaped.clear();
        escape_into(c, &mut escaped);
        let len = escaped.chars().count();
        if chars + len > MAX_SERVER_TEXT_CHARS {
            out.push('…');
            break;
        }
        out.push_str(&escaped);
        chars += len;
    }
    out
}

fn escape_into(c: char, out: &mut String) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        // Line and paragraph separators, bidirectional embeddings, overrides and
        // isolates: they reorder or break what a terminal or log viewer shows.
        c if c.is_control()
            || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}') =>
        {
            out.extend(c.escape_unicode());
        }
        c => out.push(c),
    }
}

fn scrub(text: &str, secrets: &[&str]) -> String {
    let mut text = text.to_owned();
    for secret in secrets {
        if secret.len() < MIN_SCRUBBED_SECRET_LEN {
            continue;
        }
        if text.contains(secret) {
            text = text.replace(secret, REDACTED);
        }
        let encoded: String = form_urlencoded::byte_serialize(secret.as_bytes()).collect();
        if encoded != *secret && text.contains(&encoded) {
            text = text.replace(&encoded, REDACTED);
        }
    }
    text
}

/// Scrubs already-sanitized text again, with more secrets: also a secret's beginning
/// left at the end of text that was cut off.
fn rescrub(text: &str, secrets: &[&str]) -> String {
    let mut text = scrub(text, secrets);
    if let Some(body) = text.strip_suffix('…') {
        let cut = secrets
            .iter()
            .filter(|secret| secret.len() >= MIN_SCRUBBED_SECRET_LEN)
            .filter_map(|secret| {
                (MIN_SCRUBBED_SECRET_LEN..secret.len())
                    .rev()
                    .filter(|&len| secret.is_char_boundary(len))
                    .find(|&len| body.ends_with(&secret[..len]))
            })
            .max();
        if let Some(cut) = cut {
            text = format!("{}{REDACTED}…", &body[..body.len() - cut]);
        }
    }
    text
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

fn unix_seconds(time: std::time::SystemTime) -> u64 {
    time.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

fn tenant_suffix(tenant: Option<&Tenant>) -> String {
    tenant.map_or_else(String::new, |tenant| format!(" for tenant {tenant}"))
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
    /// The token was revoked with [`TokenManager::revoke`](crate::TokenManager::revoke).
    Revoked,
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
            Self::Revoked => f.write_str("the token was revoked"),
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

impl OAuthError {
    /// An error a server sent, made safe with [`server_text`].
    pub(crate) fn from_server(code: &str, description: Option<&str>, secrets: &[&str]) -> Self {
        Self {
            code: match OAuthErrorCode::parse(code) {
                OAuthErrorCode::Other(other) => OAuthErrorCode::Other(server_text(&other, secrets)),
                known => known,
            },
            description: description.map(|text| server_text(text, secrets)),
        }
    }

    fn scrubbed(self, secrets: &[&str]) -> Self {
        Self {
            code: match self.code {
                OAuthErrorCode::Other(other) => OAuthErrorCode::Other(rescrub(&other, secrets)),
                known => known,
            },
            description: self.description.map(|text| rescrub(&text, secrets)),
        }
    }
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
