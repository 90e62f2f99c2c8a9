//! Which requests get the token, and when a request is replayed: decided once, here,
//! for every adapter.

use http::header::{HeaderName, AUTHORIZATION};
use http::{HeaderMap, HeaderValue, Uri};

use crate::{Bearer, Environment};

/// The header Procore uses to select the company a request acts on.
pub const PROCORE_COMPANY_ID: HeaderName = HeaderName::from_static("procore-company-id");

/// How adapters treat requests.
///
/// - The token goes only to the environment's API origin and, for Procore's own
///   environments, to any `https` host under its domain (`*.procore.com` or
///   `*.procoregov.com`). Never elsewhere: file downloads redirect to storage hosts.
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
/// assert!(policy.should_attach(&"https://storage.procore.com/x".parse()?, &headers));
/// assert!(!policy.should_attach(&"https://s3.amazonaws.com/x".parse()?, &headers));
/// assert!(!policy.should_attach(&"http://api.procore.com/plain-http".parse()?, &headers));
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
    trusted_domain: Option<&'static str>,
    overwrite_authorization: bool,
    company_id: Option<(u64, HeaderValue)>,
}

impl RequestPolicy {
    /// The default policy for `environment`.
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
            api_host: api.host().unwrap_or_default().to_ascii_lowercase(),
            api_scheme,
            api_port,
            trusted_domain: environment.trusted_domain(),
            overwrite_authorization: false,
            company_id: None,
        }
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
        if !self.overwrite_authorization && headers.contains_key(AUTHORIZATION) {
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
        (self.overwrite_authorization || !headers.contains_key(AUTHORIZATION))
            && self.is_trusted_origin(scheme, host, port)
    }

    fn is_trusted_origin(&self, scheme: &str, host: &str, port: Option<u16>) -> bool {
        let port = port.unwrap_or(default_port(scheme));
        let host = host.trim_end_matches('.');
        if scheme.eq_ignore_ascii_case(&self.api_scheme)
            && host.eq_ignore_ascii_case(&self.api_host)
            && port == self.api_port
        {
            return true;
        }
        self.trusted_domain.is_some_and(|domain| {
            scheme.eq_ignore_ascii_case("https")
                && port == 443
                && host.len() > domain.len()
                && host.as_bytes()[host.len() - domain.len() - 1] == b'.'
                && host[host.len() - domain.len()..].eq_ignore_ascii_case(domain)
        })
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

    #[test]
    fn production_trusts_procore_https_hosts_only() {
        let policy = RequestPolicy::new(&Environment::production());
        for yes in [
            "https://api.procore.com/rest/v1.0/me",
            "https://API.Procore.com:443/x",
            "https://sandbox.procore.com/x",
            "https://api.procore.com./x",
        ] {
            assert!(attaches(&policy, yes), "{yes}");
        }
        for no in [
            "http://api.procore.com/x",
            "https://api.procore.com:8443/x",
            "https://procore.com.evil.example/x",
            "https://evilprocore.com/x",
            "https://procore.com/x",
            "https://api.procoregov.com/x",
            "https://storage.example.com/x",
            "/rest/v1.0/me",
        ] {
            assert!(!attaches(&policy, no), "{no}");
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
