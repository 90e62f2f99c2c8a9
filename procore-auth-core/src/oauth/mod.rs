//! A sans-IO client for Procore's OAuth 2.0 endpoints.
//!
//! [`OAuthClient`] *builds* [`http::Request`]s and *parses* [`http::Response`]s; it
//! never sends anything. Send the requests with any HTTP client (an adapter's
//! [`Transport`](crate::Transport), or your own), then hand the response back:
//!
//! ```
//! use std::time::SystemTime;
//! use bytes::Bytes;
//! use procore_auth_core::{ClientSecret, Environment, OAuthClient, RefreshToken};
//!
//! let client = OAuthClient::new(
//!     Environment::developer_sandbox(),
//!     "my-client-id",
//!     ClientSecret::new("my-client-secret"),
//! );
//! let request = client.refresh_request(&RefreshToken::new("refresh-token"));
//! assert_eq!(request.uri(), "https://login-sandbox.procore.com/oauth/token");
//!
//! // ... send it, then parse what came back:
//! let response = http::Response::builder()
//!     .status(200)
//!     .body(Bytes::from_static(br#"{"access_token":"new-access","token_type":"bearer",
//!         "expires_in":5400,"refresh_token":"new-refresh","created_at":1700000000}"#))?;
//! # #[allow(clippy::disallowed_methods)]
//! let token = client.parse_token_response(&response, SystemTime::now())?;
//! assert!(token.refresh_token().is_some());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod authorize;
mod response;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request};

pub use authorize::AuthorizationRequest;
pub use response::{TokenApplication, TokenInfo};

use crate::secret::{AccessToken, AuthorizationCode, ClientSecret, RefreshToken};
use crate::{Environment, Error};

const FORM_CONTENT_TYPE: &str = "application/x-www-form-urlencoded";

/// Procore OAuth endpoints for one registered application (client id + secret) in one
/// [`Environment`].
///
/// Credentials go in the form body, as Procore's own SDK sends them. No `scope` is
/// sent (Procore has none) and no PKCE parameters (Procore does not document PKCE).
///
/// # Security
///
/// The `http::Request`s built here carry the client secret, codes and refresh tokens
/// in their bodies, and `http::Request`'s `Debug` prints bodies: never log them.
/// The bearer header of [`token_info_request`](Self::token_info_request) is marked
/// sensitive. `OAuthClient`'s own `Debug` shows no secret.
#[derive(Clone, Debug)]
pub struct OAuthClient {
    environment: Environment,
    client_id: String,
    client_secret: ClientSecret,
    user_agent: HeaderValue,
}

/// The `User-Agent` of token calls unless told otherwise: `procore-auth/<version>`.
pub const DEFAULT_USER_AGENT: &str = concat!("procore-auth/", env!("CARGO_PKG_VERSION"));

/// The variable [`OAuthClient::from_env`] reads the client id from.
pub const ENV_CLIENT_ID: &str = "PROCORE_CLIENT_ID";
/// The variable [`OAuthClient::from_env`] reads the client secret from.
pub const ENV_CLIENT_SECRET: &str = "PROCORE_CLIENT_SECRET";
/// The variable [`OAuthClient::from_env`] reads the environment's name or URL from.
pub const ENV_ENVIRONMENT: &str = "PROCORE_ENVIRONMENT";

impl OAuthClient {
    /// A client for the application registered with `client_id` / `client_secret`.
    pub fn new(
        environment: Environment,
        client_id: impl Into<String>,
        client_secret: ClientSecret,
    ) -> Self {
        Self {
            environment,
            client_id: client_id.into(),
            client_secret,
            user_agent: HeaderValue::from_static(DEFAULT_USER_AGENT),
        }
    }

    /// Sends `user_agent` as the `User-Agent` of token, revoke and token-info calls
    /// (default [`DEFAULT_USER_AGENT`]): Procore asks integrations to name themselves,
    /// e.g. `my-app/2.1 (+https://example.com)`.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] if `user_agent` is not a valid header value.
    pub fn user_agent(mut self, user_agent: &str) -> Result<Self, Error> {
        self.user_agent = HeaderValue::from_str(user_agent)
            .map_err(|_| Error::Config("the User-Agent is not a valid header value".into()))?;
        Ok(self)
    }

    /// The client configured by the environment, as Procore's other SDKs read it:
    /// `PROCORE_CLIENT_ID`, `PROCORE_CLIENT_SECRET`, and `PROCORE_ENVIRONMENT` (a name
    /// or URL for [`Environment::named`]; production when unset).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the variable that is missing, not Unicode, or invalid
    /// (never its value when it is the secret).
    pub fn from_env() -> Result<Self, Error> {
        let read = |name: &str| match std::env::var(name) {
            Ok(value) if !value.trim().is_empty() => Ok(Some(value)),
            Ok(_) | Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => {
                Err(Error::Config(format!("{name} is not valid Unicode")))
            }
        };
        let required =
            |name: &str| read(name)?.ok_or_else(|| Error::Config(format!("{name} is not set")));
        let environment = match read(ENV_ENVIRONMENT)? {
            Some(name) => Environment::named(&name)?,
            None => Environment::production(),
        };
        Ok(Self::new(
            environment,
            required(ENV_CLIENT_ID)?.trim(),
            ClientSecret::new(required(ENV_CLIENT_SECRET)?.trim()),
        ))
    }

    /// The environment the endpoints belong to.
    pub fn environment(&self) -> &Environment {
        &self.environment
    }

    /// The application's client id.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// Starts an authorization-code flow: the URL to send the user to, with a fresh
    /// random `state` that [`AuthorizationRequest::verify_redirect`] checks on return.
    ///
    /// `redirect_uri` must exactly match one registered for the application
    /// (`http://localhost` is registered by default), or be
    /// [`OUT_OF_BAND_REDIRECT_URI`](crate::OUT_OF_BAND_REDIRECT_URI) for installed apps.
    pub fn authorization_request(&self, redirect_uri: impl Into<String>) -> AuthorizationRequest {
        AuthorizationRequest::new(self, redirect_uri.into())
    }

    /// The authorization URL with an explicit (or no) `state`. Prefer
    /// [`authorization_request`](Self::authorization_request), which makes and checks one.
    pub fn authorize_url(&self, redirect_uri: &str, state: Option<&str>) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        query
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.client_id)
            .append_pair("redirect_uri", redirect_uri);
        if let Some(state) = state {
            query.append_pair("state", state);
        }
        format!("{}?{}", self.environment.authorize_url(), query.finish())
    }

    /// `POST /oauth/token` exchanging an authorization code; `redirect_uri` must be the
    /// one the code was issued for.
    pub fn exchange_code_request(
        &self,
        code: &AuthorizationCode,
        redirect_uri: &str,
    ) -> Request<Bytes> {
        self.token_request(&[
            ("grant_type", "authorization_code"),
            ("code", code.secret()),
            ("redirect_uri", redirect_uri),
        ])
    }

    /// `POST /oauth/token` with the refresh-token grant. Procore burns `refresh_token`
    /// as soon as it sees this request, whatever the outcome: never send it twice.
    pub fn refresh_request(&self, refresh_token: &RefreshToken) -> Request<Bytes> {
        self.token_request(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token.secret()),
        ])
    }

    /// `POST /oauth/token` with the client-credentials grant (Developer Managed Service
    /// Accounts). The answer has no refresh token; the request is safe to repeat.
    pub fn client_credentials_request(&self) -> Request<Bytes> {
        self.token_request(&[("grant_type", "client_credentials")])
    }

    /// `POST /oauth/revoke`: revokes `token` — an access token, a refresh token, or a
    /// whole [`Token`](crate::Token) (by its refresh token if it has one) — and the
    /// rest of its pair: Procore revokes both.
    ///
    /// ```
    /// # use procore_auth_core::{ClientSecret, Environment, OAuthClient, RefreshToken};
    /// let client = OAuthClient::new(Environment::production(), "id", ClientSecret::new("s"));
    /// let request = client.revoke_request(&RefreshToken::new("refresh-token"));
    /// assert_eq!(request.uri(), "https://login.procore.com/oauth/revoke");
    /// ```
    pub fn revoke_request<'a>(&self, token: impl Into<Revocable<'a>>) -> Request<Bytes> {
        self.form_request(
            self.environment.revoke_url(),
            &[("token", token.into().secret())],
        )
    }

    /// `GET /oauth/token/info` for `token`. A refresh token alone has no bearer: the
    /// request then carries no `Authorization` and Procore answers 401.
    pub fn token_info_request(&self, token: &crate::Token) -> Request<Bytes> {
        let mut request = Request::new(Bytes::new());
        *request.method_mut() = Method::GET;
        *request.uri_mut() = uri(&self.environment.token_info_url());
        let headers = request.headers_mut();
        if let Some(bearer) = token.header_value() {
            headers.insert(header::AUTHORIZATION, bearer.clone());
        }
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        headers.insert(header::USER_AGENT, self.user_agent.clone());
        request
    }

    fn token_request(&self, grant: &[(&str, &str)]) -> Request<Bytes> {
        self.form_request(self.environment.token_url(), grant)
    }

    fn form_request(&self, url: String, pairs: &[(&str, &str)]) -> Request<Bytes> {
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.extend_pairs(pairs.iter().copied())
            .append_pair("client_id", &self.client_id)
            .append_pair("client_secret", self.client_secret.secret());
        let mut request = Request::new(Bytes::from(form.finish()));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = uri(&url);
        let headers = request.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(FORM_CONTENT_TYPE),
        );
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        headers.insert(header::USER_AGENT, self.user_agent.clone());
        request
    }
}

/// A token to revoke with [`OAuthClient::revoke`] or
/// [`OAuthClient::revoke_request`]: made from a `&AccessToken`, a `&RefreshToken` or a
/// `&Token` (its refresh token if it has one, else its access token). `Debug` shows no
/// secret.
#[derive(Clone, Copy, Debug)]
pub enum Revocable<'a> {
    /// An access token.
    Access(&'a AccessToken),
    /// A refresh token.
    Refresh(&'a RefreshToken),
}

impl Revocable<'_> {
    fn secret(&self) -> &str {
        match self {
            Self::Access(token) => token.secret(),
            Self::Refresh(token) => token.secret(),
        }
    }
}

impl<'a> From<&'a AccessToken> for Revocable<'a> {
    fn from(token: &'a AccessToken) -> Self {
        Self::Access(token)
    }
}

impl<'a> From<&'a RefreshToken> for Revocable<'a> {
    fn from(token: &'a RefreshToken) -> Self {
        Self::Refresh(token)
    }
}

impl<'a> From<&'a crate::Token> for Revocable<'a> {
    fn from(token: &'a crate::Token) -> Self {
        match (token.refresh_token(), token.access_token()) {
            (Some(refresh), _) => Self::Refresh(refresh),
            (None, Some(access)) => Self::Access(access),
            // A token has at least one of them (an invariant of `Token`).
            (None, None) => unreachable!("a token without an access or refresh token"),
        }
    }
}

/// Endpoint URLs are built from an [`Environment`] whose base was validated as an
/// absolute URL, plus a fixed path, so they always parse.
fn uri(url: &str) -> http::Uri {
    url.parse().unwrap_or_else(|_| {
        unreachable!("environment base URLs are validated at construction (invariant)")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_calls_carry_a_configurable_user_agent() {
        let request = client().token_info_request(&crate::Token::from_refresh_token(
            crate::RefreshToken::new("r"),
        ));
        assert_eq!(request.headers()[header::USER_AGENT], DEFAULT_USER_AGENT);
        let client = client().user_agent("my-app/2.1").unwrap();
        let request = client.revoke_request(&crate::RefreshToken::new("r"));
        assert_eq!(request.headers()[header::USER_AGENT], "my-app/2.1");
        assert!(
            OAuthClient::new(Environment::production(), "id", ClientSecret::new("s"))
                .user_agent("bad\nagent")
                .is_err()
        );
    }

    /// The only test that touches these variables (tests run in parallel threads).
    #[test]
    fn from_env_reads_id_secret_and_environment_and_names_what_is_missing() {
        let set = |name: &str, value: Option<&str>| match value {
            Some(value) => std::env::set_var(name, value),
            None => std::env::remove_var(name),
        };
        set(ENV_CLIENT_ID, None);
        set(ENV_CLIENT_SECRET, Some("s3cret-value"));
        set(ENV_ENVIRONMENT, None);
        let error = OAuthClient::from_env().unwrap_err().to_string();
        assert!(error.contains(ENV_CLIENT_ID), "{error}");
        set(ENV_CLIENT_ID, Some(" app-id "));
        let client = OAuthClient::from_env().unwrap();
        assert_eq!(client.client_id, "app-id");
        assert_eq!(client.environment().api_base(), "https://api.procore.com");
        set(ENV_ENVIRONMENT, Some("Monthly-Sandbox"));
        assert_eq!(
            OAuthClient::from_env().unwrap().environment().api_base(),
            "https://api-monthly.procore.com"
        );
        set(ENV_ENVIRONMENT, Some("staging"));
        assert!(OAuthClient::from_env().is_err());
        set(ENV_CLIENT_SECRET, Some("   "));
        set(ENV_ENVIRONMENT, None);
        let error = OAuthClient::from_env().unwrap_err().to_string();
        assert!(
            error.contains(ENV_CLIENT_SECRET) && !error.contains("s3cret"),
            "{error}"
        );
        for name in [ENV_CLIENT_ID, ENV_CLIENT_SECRET] {
            set(name, None);
        }
    }

    fn client() -> OAuthClient {
        OAuthClient::new(
            Environment::production(),
            "client id&x",
            ClientSecret::new("se=cr+et"),
        )
    }

    fn form(request: &Request<Bytes>) -> Vec<(String, String)> {
        form_urlencoded::parse(request.body())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }

    fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
        expected
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn refresh_request_is_a_form_post_with_credentials_in_the_body() {
        let request = client().refresh_request(&RefreshToken::new("r/1+2="));
        assert_eq!(request.method(), Method::POST);
        assert_eq!(request.uri(), "https://login.procore.com/oauth/token");
        assert_eq!(request.headers()[header::CONTENT_TYPE], FORM_CONTENT_TYPE);
        assert_eq!(
            form(&request),
            pairs(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", "r/1+2="),
                ("client_id", "client id&x"),
                ("client_secret", "se=cr+et"),
            ])
        );
        // Really encoded, not just concatenated.
        assert!(std::str::from_utf8(request.body())
            .unwrap()
            .contains("se%3Dcr%2Bet"));
    }

    #[test]
    fn code_exchange_and_client_credentials_requests() {
        let code = client().exchange_code_request(
            &AuthorizationCode::new("c0de"),
            crate::OUT_OF_BAND_REDIRECT_URI,
        );
        assert_eq!(
            form(&code)[..3],
            pairs(&[
                ("grant_type", "authorization_code"),
                ("code", "c0de"),
                ("redirect_uri", "urn:ietf:wg:oauth:2.0:oob"),
            ])[..]
        );
        let cc = client().client_credentials_request();
        assert_eq!(
            form(&cc)[0],
            ("grant_type".into(), "client_credentials".into())
        );
        assert!(!form(&cc).iter().any(|(k, _)| k == "scope"));
    }

    #[test]
    fn revoke_and_token_info_requests() {
        let revoke = client().revoke_request(&AccessToken::new("tok"));
        assert_eq!(revoke.uri(), "https://login.procore.com/oauth/revoke");
        assert_eq!(form(&revoke)[0], ("token".into(), "tok".into()));
        let token =
            crate::Token::new(AccessToken::new("tok"), None, std::time::UNIX_EPOCH, None).unwrap();
        let info = client().token_info_request(&token);
        assert_eq!(info.method(), Method::GET);
        assert_eq!(info.uri(), "https://login.procore.com/oauth/token/info");
        assert_eq!(info.headers()[header::AUTHORIZATION], "Bearer tok");
        assert!(info.headers()[header::AUTHORIZATION].is_sensitive());
    }

    #[test]
    fn revoke_requests_take_a_refresh_token_or_a_whole_token() {
        let refresh = client().revoke_request(&RefreshToken::new("ref"));
        assert_eq!(form(&refresh)[0], ("token".into(), "ref".into()));
        // A token revokes through its refresh token (Procore revokes the pair) …
        let pair = crate::Token::new(
            AccessToken::new("acc"),
            Some(RefreshToken::new("ref")),
            std::time::UNIX_EPOCH,
            None,
        )
        .unwrap();
        assert_eq!(form(&client().revoke_request(&pair))[0].1, "ref");
        // … or its access token when it has none.
        let access_only =
            crate::Token::new(AccessToken::new("acc"), None, std::time::UNIX_EPOCH, None).unwrap();
        assert_eq!(form(&client().revoke_request(&access_only))[0].1, "acc");
    }

    #[test]
    fn authorize_url_has_no_scope_and_encodes_parameters() {
        let url = client().authorize_url("http://localhost/cb?x=1", Some("st ate"));
        assert_eq!(
            url,
            "https://login.procore.com/oauth/authorize?response_type=code&client_id=client+id%26x\
             &redirect_uri=http%3A%2F%2Flocalhost%2Fcb%3Fx%3D1&state=st+ate"
        );
    }

    #[test]
    fn debug_hides_the_client_secret() {
        let printed = format!("{:?}", client());
        assert!(!printed.contains("se=cr+et"), "{printed}");
    }
}
