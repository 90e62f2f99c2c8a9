//! The authorization-code redirect: the URL out, the code back in.

use std::fmt;

use super::OAuthClient;
use crate::error::{CallbackError, OAuthError};
use crate::secret::AuthorizationCode;
use crate::Error;

/// One authorization attempt: the URL to open and the `state` it must come back with.
///
/// ```
/// use procore_auth_core::{ClientSecret, Environment, OAuthClient};
///
/// let client = OAuthClient::new(Environment::production(), "id", ClientSecret::new("secret"));
/// let attempt = client.authorization_request("http://localhost");
/// // Send the user to `attempt.url()`; Procore redirects back to
/// // http://localhost/?code=...&state=... which you hand to `verify_redirect`:
/// let redirect = format!("http://localhost/?code=abc&state={}", attempt.state());
/// let code = attempt.verify_redirect(&redirect)?;
/// assert_eq!(code.secret(), "abc");
/// assert!(attempt.verify_redirect("http://localhost/?code=abc&state=forged").is_err());
/// # Ok::<(), procore_auth_core::Error>(())
/// ```
#[derive(Clone)]
pub struct AuthorizationRequest {
    url: String,
    state: String,
    redirect_uri: String,
}

impl AuthorizationRequest {
    pub(super) fn new(client: &OAuthClient, redirect_uri: String) -> Self {
        let state = crate::random::unguessable_string();
        Self {
            url: client.authorize_url(&redirect_uri, Some(&state)),
            state,
            redirect_uri,
        }
    }

    /// The URL to open in the user's browser.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The random `state` value sent with the request.
    pub fn state(&self) -> &str {
        &self.state
    }

    /// The redirect URI; pass it again to
    /// [`OAuthClient::exchange_code_request`](super::OAuthClient::exchange_code_request).
    pub fn redirect_uri(&self) -> &str {
        &self.redirect_uri
    }

    /// Checks the redirect Procore sent the browser to (the full URL, or just its query
    /// string) and returns the authorization code.
    ///
    /// # Errors
    ///
    /// [`Error::Callback`] if the `state` does not match, the redirect carries an
    /// `error`, or it has no `code`.
    pub fn verify_redirect(&self, redirect: &str) -> Result<AuthorizationCode, Error> {
        let query = redirect
            .split_once('?')
            .map_or(redirect, |(_, query)| query);
        let query = query.split_once('#').map_or(query, |(query, _)| query);
        let (mut code, mut state, mut error, mut description) = (None, None, None, None);
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            match &*key {
                "code" => code = Some(value.into_owned()),
                "state" => state = Some(value.into_owned()),
                "error" => error = Some(value.into_owned()),
                "error_description" => description = Some(value.into_owned()),
                _ => {}
            }
        }
        if state.as_deref() != Some(self.state.as_str()) {
            return Err(Error::Callback(CallbackError::StateMismatch));
        }
        if let Some(error) = error {
            // Made safe like a token endpoint's error: the redirect is attacker-
            // reachable text.
            return Err(Error::Callback(CallbackError::Denied(
                OAuthError::from_server(&error, description.as_deref(), &[self.state()]),
            )));
        }
        code.filter(|code| !code.is_empty())
            .map(AuthorizationCode::new)
            .ok_or(Error::Callback(CallbackError::MissingCode))
    }
}

impl fmt::Debug for AuthorizationRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthorizationRequest")
            .field("redirect_uri", &self.redirect_uri)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ClientSecret, Environment, OAuthErrorCode};

    fn attempt() -> AuthorizationRequest {
        OAuthClient::new(Environment::production(), "id", ClientSecret::new("s"))
            .authorization_request(crate::OUT_OF_BAND_REDIRECT_URI)
    }

    #[test]
    fn each_attempt_has_a_fresh_state_in_its_url() {
        let (a, b) = (attempt(), attempt());
        assert_ne!(a.state(), b.state());
        assert!(a.state().len() >= 32);
        assert!(a.url().ends_with(&format!("&state={}", a.state())));
        assert!(a
            .url()
            .contains("redirect_uri=urn%3Aietf%3Awg%3Aoauth%3A2.0%3Aoob"));
    }

    #[test]
    fn redirect_errors_are_typed() {
        let a = attempt();
        let state = a.state().to_owned();
        assert!(matches!(
            a.verify_redirect("code=x"),
            Err(Error::Callback(CallbackError::StateMismatch))
        ));
        assert!(matches!(
            a.verify_redirect(&format!("http://localhost/?state={state}")),
            Err(Error::Callback(CallbackError::MissingCode))
        ));
        let denied = a
            .verify_redirect(&format!(
                "?error=access_denied&error_description=no+way&state={state}"
            ))
            .unwrap_err();
        match denied {
            Error::Callback(CallbackError::Denied(error)) => {
                assert_eq!(error.code, OAuthErrorCode::Other("access_denied".into()));
                assert_eq!(error.description.as_deref(), Some("no way"));
            }
            other => panic!("unexpected {other:?}"),
        }
        let code = a
            .verify_redirect(&format!(
                "http://localhost/cb?state={state}&code=c%2B1#frag"
            ))
            .unwrap();
        assert_eq!(code.secret(), "c+1");
    }
}
