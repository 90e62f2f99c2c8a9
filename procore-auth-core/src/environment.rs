//! Procore environments: where the OAuth endpoints and the REST API live.

use std::fmt;
use std::str::FromStr;

use http::Uri;

use crate::Error;

/// The installed-app redirect URI: Procore shows the code on its own page for the user
/// to paste back into the application.
pub const OUT_OF_BAND_REDIRECT_URI: &str = "urn:ietf:wg:oauth:2.0:oob";

/// A Procore environment: its login (OAuth) base URL and its REST API base URL.
///
/// Tokens are not shared across environments; each has its own client id and secret.
/// Requests get the token only at the environment's API origin (scheme, host and
/// port of [`api_base`](Self::api_base)); see [`RequestPolicy`](crate::RequestPolicy)
/// to trust further origins by name.
///
/// ```
/// use procore_auth_core::Environment;
///
/// let sandbox = Environment::developer_sandbox();
/// assert_eq!(sandbox.token_url(), "https://login-sandbox.procore.com/oauth/token");
/// assert_eq!(sandbox.api_base(), "https://sandbox.procore.com");
///
/// let local: Environment = "http://127.0.0.1:8080".parse()?;
/// assert_eq!(local.token_url(), "http://127.0.0.1:8080/oauth/token");
/// # Ok::<(), procore_auth_core::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Environment {
    auth_base: String,
    api_base: String,
}

impl Environment {
    fn builtin(auth_base: &str, api_base: &str) -> Self {
        Self {
            auth_base: auth_base.to_owned(),
            api_base: api_base.to_owned(),
        }
    }

    /// Procore production: `login.procore.com` / `api.procore.com`.
    pub fn production() -> Self {
        Self::builtin("https://login.procore.com", "https://api.procore.com")
    }

    /// The developer sandbox: `login-sandbox.procore.com` / `sandbox.procore.com`.
    pub fn developer_sandbox() -> Self {
        Self::builtin(
            "https://login-sandbox.procore.com",
            "https://sandbox.procore.com",
        )
    }

    /// The monthly sandbox (used with production credentials).
    pub fn monthly_sandbox() -> Self {
        Self::builtin(
            "https://login-sandbox-monthly.procore.com",
            "https://api-monthly.procore.com",
        )
    }

    /// The federal zone: `login.procoregov.com` / `api.procoregov.com`.
    pub fn federal() -> Self {
        Self::builtin("https://login.procoregov.com", "https://api.procoregov.com")
    }

    /// The environment a name or URL designates: `production`, `sandbox` (the
    /// developer sandbox), `monthly-sandbox`, `federal`, or an `http(s)://` base URL
    /// ([`custom`](Self::custom)). Names are case-insensitive.
    ///
    /// ```
    /// use procore_auth_core::Environment;
    ///
    /// assert_eq!(Environment::named("sandbox")?.api_base(), "https://sandbox.procore.com");
    /// assert_eq!(Environment::named("http://127.0.0.1:8080")?.api_base(), "http://127.0.0.1:8080");
    /// assert!(Environment::named("staging").is_err());
    /// # Ok::<(), procore_auth_core::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for any other name, or a URL [`custom`](Self::custom) refuses.
    pub fn named(name: &str) -> Result<Self, Error> {
        let name = name.trim();
        match name.to_ascii_lowercase().as_str() {
            "production" | "prod" => Ok(Self::production()),
            "sandbox" | "developer-sandbox" => Ok(Self::developer_sandbox()),
            "monthly-sandbox" | "monthly" => Ok(Self::monthly_sandbox()),
            "federal" | "gov" => Ok(Self::federal()),
            lower if lower.starts_with("http://") || lower.starts_with("https://") => {
                Self::custom(name)
            }
            _ => Err(Error::Config(format!(
                "unknown Procore environment {:?}: expected production, sandbox, \
                 monthly-sandbox, federal or an http(s) URL",
                crate::error::server_text(name, &[])
            ))),
        }
    }

    /// A custom environment where the OAuth endpoints and the API share one base URL,
    /// such as a local emulator or a proxy.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] unless `base` is an absolute `http` or `https` URL.
    pub fn custom(base: &str) -> Result<Self, Error> {
        Self::custom_split(base, base)
    }

    /// A custom environment with separate OAuth and API base URLs.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] unless both are absolute `http` or `https` URLs.
    pub fn custom_split(auth_base: &str, api_base: &str) -> Result<Self, Error> {
        Ok(Self {
            auth_base: normalize_base(auth_base)?,
            api_base: normalize_base(api_base)?,
        })
    }

    /// The login base URL, without a trailing slash.
    pub fn auth_base(&self) -> &str {
        &self.auth_base
    }

    /// The REST API base URL, without a trailing slash.
    pub fn api_base(&self) -> &str {
        &self.api_base
    }

    /// `GET` here to ask the user for authorization.
    pub fn authorize_url(&self) -> String {
        format!("{}/oauth/authorize", self.auth_base)
    }

    /// `POST` here for every grant.
    pub fn token_url(&self) -> String {
        format!("{}/oauth/token", self.auth_base)
    }

    /// `POST` here to revoke a token (and its refresh token).
    pub fn revoke_url(&self) -> String {
        format!("{}/oauth/revoke", self.auth_base)
    }

    /// `GET` here with a bearer token to learn about it.
    pub fn token_info_url(&self) -> String {
        format!("{}/oauth/token/info", self.auth_base)
    }
}

impl fmt::Debug for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Environment")
            .field("auth_base", &self.auth_base)
            .field("api_base", &self.api_base)
            .finish()
    }
}

/// Parses `production`, `sandbox` (or `developer-sandbox`), `monthly-sandbox`,
/// `federal`, or an `http(s)://` base URL for a custom environment.
impl FromStr for Environment {
    type Err = Error;

    fn from_str(name: &str) -> Result<Self, Error> {
        match name {
            "production" => Ok(Self::production()),
            "sandbox" | "developer-sandbox" => Ok(Self::developer_sandbox()),
            "monthly-sandbox" => Ok(Self::monthly_sandbox()),
            "federal" => Ok(Self::federal()),
            url => Self::custom(url),
        }
    }
}

fn normalize_base(base: &str) -> Result<String, Error> {
    let uri: Uri = base
        .parse()
        .map_err(|_| Error::Config(format!("`{base}` is not a valid URL")))?;
    let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
    if !scheme_ok || uri.host().is_none() {
        return Err(Error::Config(format!(
            "`{base}` must be an absolute http:// or https:// URL"
        )));
    }
    if uri.query().is_some() {
        return Err(Error::Config(format!(
            "`{base}` must not have a query string"
        )));
    }
    Ok(base.trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_environments_use_documented_hosts() {
        let cases = [
            (
                Environment::production(),
                "https://login.procore.com",
                "https://api.procore.com",
            ),
            (
                Environment::developer_sandbox(),
                "https://login-sandbox.procore.com",
                "https://sandbox.procore.com",
            ),
            (
                Environment::monthly_sandbox(),
                "https://login-sandbox-monthly.procore.com",
                "https://api-monthly.procore.com",
            ),
            (
                Environment::federal(),
                "https://login.procoregov.com",
                "https://api.procoregov.com",
            ),
        ];
        for (env, auth, api) in cases {
            assert_eq!(env.auth_base(), auth);
            assert_eq!(env.api_base(), api);
            assert_eq!(env.authorize_url(), format!("{auth}/oauth/authorize"));
            assert_eq!(env.token_url(), format!("{auth}/oauth/token"));
            assert_eq!(env.revoke_url(), format!("{auth}/oauth/revoke"));
            assert_eq!(env.token_info_url(), format!("{auth}/oauth/token/info"));
        }
    }

    #[test]
    fn names_parse() {
        assert_eq!(
            "production".parse::<Environment>().unwrap(),
            Environment::production()
        );
        assert_eq!(
            "sandbox".parse::<Environment>().unwrap(),
            Environment::developer_sandbox()
        );
        assert_eq!(
            "monthly-sandbox".parse::<Environment>().unwrap(),
            Environment::monthly_sandbox()
        );
        assert_eq!(
            "federal".parse::<Environment>().unwrap(),
            Environment::federal()
        );
    }

    #[test]
    fn custom_base_is_normalized() {
        let env =
            Environment::custom_split("http://127.0.0.1:9/", "https://proxy.example/api/").unwrap();
        assert_eq!(env.token_url(), "http://127.0.0.1:9/oauth/token");
        assert_eq!(env.api_base(), "https://proxy.example/api");
    }

    #[test]
    fn bad_custom_bases_are_config_errors() {
        for bad in [
            "",
            "not a url",
            "ftp://host",
            "/relative",
            "http://host/?q=1",
            "sandbox2",
        ] {
            let err = Environment::custom(bad).unwrap_err();
            assert!(matches!(err, Error::Config(_)), "{bad}: {err:?}");
        }
    }
}
