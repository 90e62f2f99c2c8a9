//! Redirects followed hop by hop by the middleware, so that every hop passes the
//! request policy; the wrapped client must follow none itself.

use http::header::{
    HeaderName, AUTHORIZATION, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, COOKIE, LOCATION,
    PROXY_AUTHORIZATION, TRANSFER_ENCODING, WWW_AUTHENTICATE,
};
use http::{Method, StatusCode};
use reqwest::{Request, Response};

use crate::{CONNECT_TIMEOUT, REQUEST_TIMEOUT};

/// Redirects followed per request at most, as reqwest's default policy; the response
/// to the next one is returned as it is.
pub const MAX_REDIRECTS: usize = 10;

/// Credentials that stay with their origin: dropped from the caller's request at a hop
/// to another origin (as browsers and reqwest do). Ours is never copied to a hop at all.
const CREDENTIALS: [HeaderName; 4] = [AUTHORIZATION, COOKIE, PROXY_AUTHORIZATION, WWW_AUTHENTICATE];

/// What describes a body that a 303 (or a 301/302 after a POST) drops.
const PAYLOAD: [HeaderName; 4] = [
    CONTENT_TYPE,
    CONTENT_LENGTH,
    CONTENT_ENCODING,
    TRANSFER_ENCODING,
];

/// A `reqwest::ClientBuilder` for the client that [`ProcoreAuthMiddleware`] wraps:
/// redirects off (the middleware follows them, up to [`MAX_REDIRECTS`], deciding per
/// hop whether it gets the token), [`CONNECT_TIMEOUT`] to connect and
/// [`REQUEST_TIMEOUT`] between reads (no total timeout: downloads may be large). Add
/// what else you need before `build()`.
///
/// ```
/// use procore_auth_reqwest::ProcoreAuthMiddleware;
///
/// # fn run(middleware: ProcoreAuthMiddleware) -> Result<(), reqwest::Error> {
/// let client = reqwest_middleware::ClientBuilder::new(procore_auth_reqwest::client_builder().build()?)
///     .with(middleware)
///     .build();
/// # Ok(()) }
/// ```
///
/// [`ProcoreAuthMiddleware`]: crate::ProcoreAuthMiddleware
pub fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(REQUEST_TIMEOUT)
}

/// A hop as the caller made it, before our headers go on: what its replay and the
/// next hop are built from.
#[derive(Debug)]
pub(crate) struct Template {
    request: Request,
    /// Whether `request` holds the body (a stream cannot be copied).
    whole: bool,
}

impl Template {
    pub(crate) fn of(request: &Request) -> Self {
        if let Some(request) = request.try_clone() {
            return Self {
                request,
                whole: true,
            };
        }
        let mut copy = Request::new(request.method().clone(), request.url().clone());
        *copy.headers_mut() = request.headers().clone();
        *copy.timeout_mut() = request.timeout().copied();
        *copy.version_mut() = request.version();
        Self {
            request: copy,
            whole: false,
        }
    }

    /// The hop's URL.
    pub(crate) fn url(&self) -> &reqwest::Url {
        self.request.url()
    }

    /// A copy to send again, unless the body could not be kept.
    pub(crate) fn copy(&self) -> Option<Request> {
        self.request.try_clone().filter(|_| self.whole)
    }

    /// The request for the hop `response` redirects to, with RFC 9110's method rules:
    /// 303 becomes a GET (a HEAD stays a HEAD) and 301/302 after a POST a GET, without
    /// the body; 307/308 (and 301/302 otherwise) keep the method and the body. `None`:
    /// not a redirect, no usable `Location`, or a body that must go along but was not
    /// kept.
    pub(crate) fn follow(self, response: &Response) -> Option<Request> {
        let Self { mut request, whole } = self;
        let post = request.method() == Method::POST;
        let to_get = match response.status() {
            StatusCode::SEE_OTHER => true,
            StatusCode::MOVED_PERMANENTLY | StatusCode::FOUND => post,
            StatusCode::TEMPORARY_REDIRECT | StatusCode::PERMANENT_REDIRECT => false,
            _ => return None,
        };
        let location = response.headers().get(LOCATION)?.to_str().ok()?;
        let next = request.url().join(location).ok()?;
        if !matches!(next.scheme(), "http" | "https") {
            return None;
        }
        if to_get {
            if request.method() != Method::HEAD {
                *request.method_mut() = Method::GET;
            }
            *request.body_mut() = None;
            for name in PAYLOAD {
                request.headers_mut().remove(name);
            }
        } else if !whole {
            return None;
        }
        if next.origin() != request.url().origin() {
            for name in CREDENTIALS {
                request.headers_mut().remove(name);
            }
        }
        *request.url_mut() = next;
        Some(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, location: &str) -> Response {
        let response = http::Response::builder()
            .status(status)
            .header(LOCATION, location)
            .body(Vec::new())
            .unwrap();
        Response::from(response)
    }

    fn template(method: Method, url: &str) -> Template {
        let mut request = Request::new(method, url.parse().unwrap());
        *request.body_mut() = Some("body".into());
        for (name, value) in [
            (AUTHORIZATION, "Basic abc"),
            (COOKIE, "a=1"),
            (CONTENT_TYPE, "text/plain"),
        ] {
            request.headers_mut().insert(name, value.parse().unwrap());
        }
        Template::of(&request)
    }

    fn body(request: &Request) -> Option<&[u8]> {
        request.body().and_then(reqwest::Body::as_bytes)
    }

    #[test]
    fn method_rules_follow_rfc_9110() {
        for (method, status, expected, keeps_body) in [
            (Method::POST, 301, Method::GET, false),
            (Method::POST, 302, Method::GET, false),
            (Method::PUT, 302, Method::PUT, true),
            (Method::POST, 303, Method::GET, false),
            (Method::HEAD, 303, Method::HEAD, false),
            (Method::POST, 307, Method::POST, true),
            (Method::POST, 308, Method::POST, true),
        ] {
            let template = template(method.clone(), "https://api.example/a");
            let next = template.follow(&response(status, "/b")).unwrap();
            assert_eq!(next.method(), expected, "{method} {status}");
            assert_eq!(next.url().as_str(), "https://api.example/b");
            assert_eq!(body(&next).is_some(), keeps_body, "{method} {status}");
            assert_eq!(next.headers().contains_key(CONTENT_TYPE), keeps_body);
            assert!(next.headers().contains_key(AUTHORIZATION), "same origin");
        }
    }

    #[test]
    fn credentials_stay_on_their_origin() {
        let next = template(Method::GET, "https://api.example/a")
            .follow(&response(302, "https://files.example/b"))
            .unwrap();
        assert!(!next.headers().contains_key(AUTHORIZATION));
        assert!(!next.headers().contains_key(COOKIE));
        // Dropped for good: the next hop starts from this one.
        let next = Template::of(&next).follow(&response(302, "/c")).unwrap();
        assert_eq!(next.url().as_str(), "https://files.example/c");
        assert!(!next.headers().contains_key(AUTHORIZATION));
    }

    #[test]
    fn not_followed() {
        let get = || template(Method::GET, "https://api.example/a");
        assert!(get().follow(&response(200, "/b")).is_none());
        assert!(get().follow(&response(304, "/b")).is_none());
        assert!(get().follow(&response(302, "ftp://x.example/b")).is_none());
        assert!(get().follow(&response(302, "http://[::1")).is_none());
    }

    #[test]
    fn a_stream_is_followed_only_where_its_body_is_dropped() {
        let stream = || {
            let chunks = futures_util::stream::iter([Ok::<_, std::io::Error>("chunk")]);
            let mut request = Request::new(Method::POST, "https://api.example/a".parse().unwrap());
            *request.body_mut() = Some(reqwest::Body::wrap_stream(chunks));
            Template::of(&request)
        };
        assert!(stream().copy().is_none());
        assert!(stream().follow(&response(307, "/b")).is_none());
        assert!(stream().follow(&response(308, "/b")).is_none());
        let next = stream().follow(&response(303, "/b")).unwrap();
        assert_eq!(next.method(), Method::GET);
        assert!(next.body().is_none());
    }
}
