//! Which requests get the token, and when a request is replayed: decided once, here,
//! for every adapter.

use http::header::{HeaderName, AUTHORIZATION};
use http::{HeaderMap, HeaderValue, Uri};

use crate::{Bearer, Environment, Error};

/// The header Procore uses to select the company a request acts on.
pub const PROCORE_COMPANY_ID: HeaderName = HeaderName::from_static("procore-company-id");

/// How adapters treat requests.
///
/// - The token goes only to the environment's API origin (scheme, host and port), and
///   to further origins the application names with
///   [`trust_origin`](Self::trust_origin). Never elsewhere: not to other Procore hosts
///   (another environment's API, or storage hosts that file downloads redirect to),
///   and not to any other host.
/// - A request that already has an `Authorization` header keeps it (unless told
///   otherwise) and is never replayed.
/// - An optional default `Procore-Company-Id` is added where the request has none.
/// - A request is replayed only after a 401, and at most once; never after 403/404,
///   which are permission problems, not token problems.
///
/// ```
/// use procore_auth_core::{Environment, RequestPolicy};
///
/// let policy = RequestPolicy::new(&Environment::production()).with_company_id(5_000_000_000);
/// let headers = http::HeaderMap::new();
/// assert!(policy.should_attach(&"https://api.procore.com/rest/v1.0/me".parse()?, &headers));
/// // Not another Procore host or environment, unless trusted by name:
/// assert!(!policy.should_attach(&"https://storage.procore.com/x".parse()?, &headers));
/// assert!(!policy.should_attach(&"https://sandbox.procore.com/x".parse()?, &headers));
/// assert!(!policy.should_attach(&"https://s3.amazonaws.com/x".parse()?, &headers));
/// assert!(!policy.should_attach(&"http://api.procore.com/plain-http".parse()?, &headers));
///
/// let policy = policy.trust_origin("https://storage.procore.com")?;
/// assert!(policy.should_attach(&"https://storage.procore.com/x".parse()?, &headers));
/// assert!(!policy.should_attach(&"https://other.procore.com/x".parse()?, &headers));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct RequestPolicy {
    api_scheme: String,
    /// The API base's authority as written (`host` or `host:port`): most requests
    /// match it exactly, which is much cheaper to check than parsing their host.
    api_authority: String,
    api_host: String,
    api_port: u16,
    /// Origins trusted by name besides the API's; empty unless the application
    /// called [`trust_origin`](Self::trust_origin).
    extra_origins: Vec<Origin>,
    overwrite_authorization: bool,
    company_id: Option<(u64, HeaderValue)>,
}

/// A trusted origin: lowercase scheme and host (without a trailing dot), and port.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl Origin {
    /// `host` has no trailing dot.
    fn matches(&self, scheme: &str, host: &str, port: u16) -> bool {
        port == self.port
            && scheme.eq_ignore_ascii_case(&self.scheme)
            && host.eq_ignore_ascii_case(&self.host)
    }
}

impl RequestPolicy {
    /// The default policy for `environment`: the token goes to its API origin only.
    pub fn new(environment: &Environment) -> Self {
        // Environment validated the base as an absolute http(s) URL.
        let api: Uri = environment.api_base().parse().unwrap_or_default();
        let api_scheme = api.scheme_str().unwrap_or("https").to_ascii_lowercase();
        let api_port = api.port_u16().unwrap_or(default_port(&api_scheme));
        Self {
            api_authority: api
                .authority()
                .map(|authority| authority.as_str().to_ascii_lowercase())
                .unwrap_or_default(),
            api_host: api
                .host()
                .unwrap_or_default()
                .trim_end_matches('.')
                .to_ascii_lowercase(),
            api_scheme,
            api_port,
            extra_origins: Vec::new(),
            overwrite_authorization: false,
            company_id: None,
        }
    }

    /// Also sends the token to `origin`, named exactly: `https://host` or
    /// `https://host:port`, no wildcards, no path. Only for hosts that act for Procore
    /// with this environment's tokens (Procore sends file downloads to storage hosts
    /// that need no token, so most applications need none of this).
    ///
    /// `http` is accepted only for loopback hosts (`localhost`, `127.0.0.0/8`, `[::1]`),
    /// such as a local emulator or proxy: a bearer token must not cross a network in
    /// clear text.
    ///
    /// ```
    /// use procore_auth_core::{Environment, Error, RequestPolicy};
    ///
    /// let policy = RequestPolicy::new(&Environment::production())
    ///     .trust_origin("https://storage.procore.com")?
    ///     .trust_origin("http://127.0.0.1:8080")?;
    /// assert!(matches!(
    ///     RequestPolicy::new(&Environment::production()).trust_origin("https://*.procore.com"),
    ///     Err(Error::Config(_))
    /// ));
    /// # Ok::<(), Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Config`] unless `origin` is an absolute `https` URL (or `http` to a
    /// loopback host) with a host and nothing but an optional port and `/` after it:
    /// no user info, path, query or wildcard.
    pub fn trust_origin(mut self, origin: &str) -> Result<Self, Error> {
        let origin = parse_origin(origin)?;
        if !self.extra_origins.contains(&origin) {
            self.extra_origins.push(origin);
        }
        Ok(self)
    }

    /// Adds `Procore-Company-Id: id` to requests that do not set one.
    pub fn with_company_id(mut self, id: u64) -> Self {
        self.company_id = Some((id, HeaderValue::from(id)));
        self
    }

    /// Replace an `Authorization` header the caller set (default: keep it).
    pub fn overwrite_existing_authorization(mut self, overwrite: bool) -> Self {
        self.overwrite_authorization = overwrite;
        self
    }

    /// The default company id, if any.
    pub fn company_id(&self) -> Option<u64> {
        self.company_id.as_ref().map(|(id, _)| *id)
    }

    /// Whether a request to `uri` with `headers` gets our token. Relative URIs never do.
    #[inline]
    pub fn should_attach(&self, uri: &Uri, headers: &HeaderMap) -> bool {
        if !self.overwrite_authorization && carries_authorization(headers) {
            return false;
        }
        let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else {
            return false;
        };
        let scheme = scheme.as_str();
        let written = authority.as_str();
        // Fast paths: exactly the API base's bytes (almost every request), then the
        // same ignoring case. `Uri::host` re-parses, so it comes last.
        (scheme == self.api_scheme && written == self.api_authority)
            || (scheme.eq_ignore_ascii_case(&self.api_scheme)
                && written.eq_ignore_ascii_case(&self.api_authority))
            || self.is_trusted_origin(scheme, authority.host(), authority.port_u16())
    }

    /// [`should_attach`](Self::should_attach) for clients whose URLs are not
    /// [`http::Uri`]s: the request's scheme, host and explicit port.
    pub fn should_attach_to(
        &self,
        scheme: &str,
        host: &str,
        port: Option<u16>,
        headers: &HeaderMap,
    ) -> bool {
        (self.overwrite_authorization || !carries_authorization(headers))
            && self.is_trusted_origin(scheme, host, port)
    }

    fn is_trusted_origin(&self, scheme: &str, host: &str, port: Option<u16>) -> bool {
        let port = port.unwrap_or_else(|| default_port(scheme));
        // Fast path: exactly the API's bytes (almost every request), compared whole
        // rather than byte by byte ignoring case.
        if port == self.api_port && host == self.api_host && scheme == self.api_scheme {
            return true;
        }
        let host = host.trim_end_matches('.');
        (port == self.api_port
            && scheme.eq_ignore_ascii_case(&self.api_scheme)
            && host.eq_ignore_ascii_case(&self.api_host))
            || self
                .extra_origins
                .iter()
                .any(|origin| origin.matches(scheme, host, port))
    }

    /// Puts the token (and the default company id) on a request that
    /// [`should_attach`](Self::should_attach) approved.
    pub fn attach(&self, headers: &mut HeaderMap, bearer: &Bearer) {
        self.attach_header(headers, bearer.header_value().clone());
    }

    /// [`attach`](Self::attach) with a header value the caller no longer needs.
    pub(crate) fn attach_header(&self, headers: &mut HeaderMap, header: HeaderValue) {
        headers.insert(AUTHORIZATION, header);
        if let Some((_, company_id)) = &self.company_id {
            if !headers.contains_key(&PROCORE_COMPANY_ID) {
                headers.insert(PROCORE_COMPANY_ID, company_id.clone());
            }
        }
    }
}

/// Whether the caller set `Authorization`. A request carries a handful of headers, and
/// comparing each name (an integer compare for a standard one) costs less than hashing
/// the name for a lookup; a larger map is looked up.
#[inline]
fn carries_authorization(headers: &HeaderMap) -> bool {
    if headers.keys_len() <= 8 {
        headers.keys().any(|name| *name == AUTHORIZATION)
    } else {
        headers.contains_key(AUTHORIZATION)
    }
}

fn parse_origin(origin: &str) -> Result<Origin, Error> {
    let invalid = |why: &str| Error::Config(format!("trusted origin `{origin}` {why}"));
    let uri: Uri = origin.parse().map_err(|_| invalid("is not a valid URL"))?;
    let scheme = match uri.scheme_str() {
        Some(scheme) if scheme.eq_ignore_ascii_case("https") => "https",
        Some(scheme) if scheme.eq_ignore_ascii_case("http") => "http",
        _ => return Err(invalid("must be an absolute https:// URL")),
    };
    let authority = uri
        .authority()
        .ok_or_else(|| invalid("must be an absolute https:// URL"))?;
    if authority.as_str().contains('@') {
        return Err(invalid("must not have user info"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(invalid("must be an origin only: no path or query"));
    }
    let host = authority.host().trim_end_matches('.').to_ascii_lowercase();
    let label_ok = |label: &str| {
        !label.is_empty()
            && label
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
    };
    let is_ipv6 = host.starts_with('[') && host.ends_with(']');
    if !is_ipv6 && !host.split('.').all(label_ok) {
        return Err(invalid("must name one host (no wildcards)"));
    }
    if scheme == "http" && !is_loopback(&host) {
        return Err(invalid(
            "must use https: only a loopback host may get the token over http",
        ));
    }
    Ok(Origin {
        scheme: scheme.to_owned(),
        port: authority.port_u16().unwrap_or(default_port(scheme)),
        host,
    })
}

/// `localhost`, `127.0.0.0/8` or `[::1]` (`host` lowercase).
fn is_loopback(host: &str) -> bool {
    if host == "localhost" {
        return true;
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.parse::<std::net::IpAddr>()
        .is_ok_and(|address| address.is_loopback())
}

fn default_port(scheme: &str) -> u16 {
    if scheme.eq_ignore_ascii_case("http") {
        80
    } else {
        443
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attaches(policy: &RequestPolicy, url: &str) -> bool {
        policy.should_attach(&url.parse().unwrap(), &HeaderMap::new())
    }

    /// The caller's own `Authorization` is found in small maps (compared name by name)
    /// and large ones (looked up), wherever it sits.
    #[test]
    fn a_callers_authorization_is_kept_in_maps_of_every_size() {
        let policy = RequestPolicy::new(&Environment::production());
        let uri: Uri = "https://api.procore.com/rest/v1.0/me".parse().unwrap();
        for others in [0, 1, 7, 8, 9, 30] {
            for position in 0..=others {
                let mut headers = HeaderMap::new();
                for index in 0..others {
                    if index == position {
                        headers.insert(AUTHORIZATION, HeaderValue::from_static("Basic x"));
                    }
                    let name =
                        http::header::HeaderName::try_from(format!("x-other-{index}")).unwrap();
                    headers.insert(name, HeaderValue::from_static("1"));
                }
                if position == others {
                    headers.insert(AUTHORIZATION, HeaderValue::from_static("Basic x"));
                }
                assert!(!policy.should_attach(&uri, &headers), "{others} {position}");
                assert!(!policy.should_attach_to("https", "api.procore.com", None, &headers));
                headers.remove(AUTHORIZATION);
                assert!(policy.should_attach(&uri, &headers), "{others} {position}");
                assert!(policy.should_attach_to("https", "api.procore.com", None, &headers));
            }
        }
    }

    #[test]
    fn production_trusts_exactly_its_api_origin_by_default() {
        let policy = RequestPolicy::new(&Environment::production());
        for yes in [
            "https://api.procore.com/rest/v1.0/me",
            "https://API.Procore.com:443/x",
            "https://api.procore.com./x",
            "https://user@api.procore.com/x",
        ] {
            assert!(attaches(&policy, yes), "{yes}");
        }
        for no in [
            // Other Procore hosts, including other environments' APIs and storage.
            "https://sandbox.procore.com/x",
            "https://storage.procore.com/x",
            "https://login.procore.com/x",
            "https://api-monthly.procore.com/x",
            "https://app.procore.com/x",
            "https://api.procoregov.com/x",
            // Not the API origin at all.
            "http://api.procore.com/x",
            "https://api.procore.com:8443/x",
            "https://api.procore.com.evil.example/x",
            "https://procore.com.evil.example/x",
            "https://evilprocore.com/x",
            "https://procore.com/x",
            "https://storage.example.com/x",
            "/rest/v1.0/me",
        ] {
            assert!(!attaches(&policy, no), "{no}");
        }
    }

    /// Issue 11 item 7: a sandbox token never goes to production (or anywhere but the
    /// sandbox API), and the same for every built-in environment.
    #[test]
    fn every_builtin_environment_trusts_only_its_own_api_origin() {
        let apis = [
            "https://api.procore.com",
            "https://sandbox.procore.com",
            "https://api-monthly.procore.com",
            "https://api.procoregov.com",
            "https://login.procore.com",
            "https://login-sandbox.procore.com",
            "https://login.procoregov.com",
            "https://storage.procoregov.com",
        ];
        for env in [
            Environment::production(),
            Environment::developer_sandbox(),
            Environment::monthly_sandbox(),
            Environment::federal(),
        ] {
            let policy = RequestPolicy::new(&env);
            for api in apis {
                let url = format!("{api}/rest/v1.0/me");
                assert_eq!(
                    attaches(&policy, &url),
                    api == env.api_base(),
                    "{env:?} -> {url}"
                );
                let host = api.trim_start_matches("https://");
                assert_eq!(
                    policy.should_attach_to("https", host, None, &HeaderMap::new()),
                    api == env.api_base(),
                    "{env:?} -> {host}"
                );
            }
        }
    }

    #[test]
    fn custom_environment_trusts_exactly_its_api_origin() {
        let env = Environment::custom("http://127.0.0.1:8080").unwrap();
        let policy = RequestPolicy::new(&env);
        assert!(attaches(&policy, "http://127.0.0.1:8080/rest/v1.0/me"));
        assert!(!attaches(&policy, "http://localhost:8080/rest/v1.0/me"));
        assert!(!attaches(&policy, "http://127.0.0.1:8081/x"));
        assert!(!attaches(&policy, "https://127.0.0.1:8080/x"));
        assert!(!attaches(&policy, "https://api.procore.com/x"));
    }

    #[test]
    fn further_origins_are_trusted_only_by_name() {
        let policy = RequestPolicy::new(&Environment::developer_sandbox())
            .trust_origin("https://Storage.Procore.com/")
            .unwrap()
            .trust_origin("https://files.example:8443")
            .unwrap()
            .trust_origin("http://127.0.0.1:9000")
            .unwrap();
        for yes in [
            "https://sandbox.procore.com/rest/v1.0/me",
            "https://storage.procore.com/x",
            "https://STORAGE.procore.com.:443/x",
            "https://files.example:8443/x",
            "http://127.0.0.1:9000/x",
        ] {
            assert!(attaches(&policy, yes), "{yes}");
        }
        for no in [
            "https://api.procore.com/x",
            "http://storage.procore.com/x",
            "https://storage.procore.com:8443/x",
            "https://eu.storage.procore.com/x",
            "https://files.example/x",
            "http://files.example:8443/x",
            "http://127.0.0.1:9001/x",
            "https://127.0.0.1:9000/x",
        ] {
            assert!(!attaches(&policy, no), "{no}");
        }
        let headers = HeaderMap::new();
        assert!(policy.should_attach_to("https", "storage.procore.com", Some(443), &headers));
        assert!(policy.should_attach_to("HTTPS", "storage.procore.com.", None, &headers));
        assert!(!policy.should_attach_to("http", "storage.procore.com", None, &headers));
        assert!(!policy.should_attach_to("https", "api.procore.com", None, &headers));
        // The same origin named twice is kept once.
        let twice = RequestPolicy::new(&Environment::production())
            .trust_origin("https://storage.procore.com")
            .unwrap()
            .trust_origin("https://storage.procore.com:443")
            .unwrap();
        assert_eq!(twice.extra_origins.len(), 1);
    }

    #[test]
    fn bad_trusted_origins_are_config_errors() {
        for bad in [
            "",
            "storage.procore.com",
            "//storage.procore.com",
            "ftp://storage.procore.com",
            "https://*.procore.com",
            "https://.procore.com",
            "https://storage..procore.com",
            "https://storage.procore.com/path",
            "https://storage.procore.com/?q=1",
            "https://storage.procore.com?q=1",
            "https://user@storage.procore.com",
            "https://user:pass@storage.procore.com",
            "https://storage procore.com",
            "http://storage.procore.com",
            "http://10.0.0.1",
            "http://localhost.evil.example",
            "http://127.0.0.1.evil.example",
            "/relative",
        ] {
            let err = RequestPolicy::new(&Environment::production())
                .trust_origin(bad)
                .unwrap_err();
            assert!(matches!(err, Error::Config(_)), "{bad}: {err:?}");
        }
        for good in [
            "https://storage.procore.com",
            "https://storage.procore.com:8443/",
            "http://localhost:8080",
            "http://127.0.0.2",
            "http://[::1]:8080",
            "https://[2001:db8::1]",
        ] {
            assert!(
                RequestPolicy::new(&Environment::production())
                    .trust_origin(good)
                    .is_ok(),
                "{good}"
            );
        }
        let ipv6 = RequestPolicy::new(&Environment::production())
            .trust_origin("http://[::1]:8080")
            .unwrap();
        assert!(attaches(&ipv6, "http://[::1]:8080/x"));
        assert!(!attaches(&ipv6, "http://[::2]:8080/x"));
    }

    #[test]
    fn existing_authorization_is_kept_unless_overwrite_is_set() {
        let policy = RequestPolicy::new(&Environment::production());
        let uri: Uri = "https://api.procore.com/x".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert!(!policy.should_attach(&uri, &headers));
        assert!(policy
            .overwrite_existing_authorization(true)
            .should_attach(&uri, &headers));
    }
}
