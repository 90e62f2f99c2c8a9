//! Turning token-endpoint responses into tokens or typed errors.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{header, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::OAuthClient;
use crate::error::OAuthError;
use crate::secret::{AccessToken, RefreshToken};
use crate::transport::MAX_RESPONSE_BYTES;
use crate::{Error, Token};

/// What `GET /oauth/token/info` says about a token.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct TokenInfo {
    /// The Procore user the token acts for; `None` for service accounts.
    #[serde(default)]
    pub resource_owner_id: Option<u64>,
    /// Scopes (Procore sends an empty list).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Seconds until the token expires.
    #[serde(default)]
    pub expires_in_seconds: Option<i64>,
    /// The application the token was issued to.
    #[serde(default)]
    pub application: Option<TokenApplication>,
    /// When the token was created, in Unix seconds.
    #[serde(default)]
    pub created_at: Option<i64>,
}

/// The `application` object of [`TokenInfo`].
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct TokenApplication {
    /// The application's client id.
    pub uid: Option<String>,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    token_type: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    created_at: Option<i64>,
}

/// What is left of a rejected token answer: its new refresh token, if readable.
#[derive(Deserialize)]
struct RotatedRefreshToken {
    #[serde(default)]
    refresh_token: Option<String>,
}

#[derive(Deserialize)]
struct ErrorResponse {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

impl OAuthClient {
    /// Parses the answer to a code-exchange, refresh or client-credentials request.
    ///
    /// `sent_at` is when the request was sent: the expiry falls back to
    /// `sent_at + expires_in` when the server's `created_at` is missing or implausible,
    /// which errs on the side of refreshing early.
    ///
    /// # Errors
    ///
    /// - [`Error::TokenEndpoint`] for a non-2xx status, with the RFC 6749 error
    ///   (`invalid_grant`, `invalid_client`, …) when the body has one, and
    ///   `Retry-After` for 429/503;
    /// - [`Error::InvalidResponse`] for a 2xx body that is not a Procore token; if
    ///   the body still carried a readable `refresh_token`, the error holds it
    ///   ([`Error::rotated_refresh_token`]): Procore has burnt the one presented, so
    ///   keep it;
    /// - [`Error::ResponseTooLarge`] for a body over [`MAX_RESPONSE_BYTES`].
    ///
    /// Server text kept in an error (`error`, `error_description`) has its control
    /// characters escaped, is cut at 200 characters, and has the client secret
    /// scrubbed. To scrub the refresh token presented as well, use
    /// [`parse_refresh_response`](Self::parse_refresh_response).
    pub fn parse_token_response(
        &self,
        response: &Response<Bytes>,
        sent_at: SystemTime,
    ) -> Result<Token, Error> {
        self.parse_token_response_scrubbing(response, sent_at, &[])
    }

    /// As [`parse_token_response`](Self::parse_token_response), for the answer to a
    /// [`refresh_request`](Self::refresh_request) that presented `presented`, which
    /// is scrubbed from any server text kept in an error, like the client secret.
    ///
    /// # Errors
    ///
    /// As [`parse_token_response`](Self::parse_token_response).
    pub fn parse_refresh_response(
        &self,
        response: &Response<Bytes>,
        sent_at: SystemTime,
        presented: &RefreshToken,
    ) -> Result<Token, Error> {
        self.parse_token_response_scrubbing(response, sent_at, &[presented.secret()])
    }

    /// Parses a token answer, scrubbing `secrets` and the client secret from errors.
    pub(crate) fn parse_token_response_scrubbing(
        &self,
        response: &Response<Bytes>,
        sent_at: SystemTime,
        secrets: &[&str],
    ) -> Result<Token, Error> {
        let mut all_secrets = Vec::with_capacity(secrets.len() + 1);
        all_secrets.push(self.client_secret.secret());
        all_secrets.extend_from_slice(secrets);
        let body = success_body(response, &all_secrets)?;
        parse_token(body, sent_at).map_err(|error| match error {
            Error::InvalidResponse { reason, .. } => Error::InvalidResponse {
                reason,
                rotated_refresh_token: rotated_refresh_token(body),
            },
            other => other,
        })
    }

    /// Parses the answer to a revoke request. Procore answers 200 whether or not the
    /// token was valid.
    ///
    /// # Errors
    ///
    /// As [`parse_token_response`](Self::parse_token_response), for non-2xx answers.
    pub fn parse_revoke_response(&self, response: &Response<Bytes>) -> Result<(), Error> {
        success_body(response, &[self.client_secret.secret()]).map(drop)
    }

    /// Parses the answer to a token-info request.
    ///
    /// # Errors
    ///
    /// As [`parse_token_response`](Self::parse_token_response).
    pub fn parse_token_info_response(
        &self,
        response: &Response<Bytes>,
    ) -> Result<TokenInfo, Error> {
        parse_json(
            success_body(response, &[self.client_secret.secret()])?,
            "token info",
        )
    }
}

fn parse_token(body: &Bytes, sent_at: SystemTime) -> Result<Token, Error> {
    let body: TokenResponse = parse_json(body, "token response")?;
    if let Some(token_type) = &body.token_type {
        if !token_type.eq_ignore_ascii_case("bearer") {
            // Not quoted: errors never repeat what the server sent.
            return Err(Error::invalid_response("token_type is not `bearer`"));
        }
    }
    if body.expires_in == Some(0) {
        return Err(Error::invalid_response("expires_in is zero"));
    }
    Token::from_grant(
        AccessToken::new(body.access_token),
        body.refresh_token
            .filter(|refresh| !refresh.is_empty())
            .map(RefreshToken::new),
        body.expires_in,
        body.created_at,
        sent_at,
    )
}

/// The refresh token of a success body that was otherwise rejected, if it is a
/// non-empty string: whatever else is wrong, a rotated refresh token is the only live
/// one and must not be thrown away.
fn rotated_refresh_token(body: &Bytes) -> Option<RefreshToken> {
    if body.trim_ascii_start().first() != Some(&b'{') {
        return None;
    }
    serde_json::from_slice::<RotatedRefreshToken>(body)
        .ok()?
        .refresh_token
        .filter(|refresh| !refresh.is_empty())
        .map(RefreshToken::new)
}

/// The body of a 2xx response, or the typed error a non-2xx response stands for, whose
/// server text is made safe with [`server_text`](crate::error::server_text), scrubbing
/// `secrets`.
fn success_body<'a>(response: &'a Response<Bytes>, secrets: &[&str]) -> Result<&'a Bytes, Error> {
    let body = response.body();
    if body.len() > MAX_RESPONSE_BYTES {
        return Err(Error::ResponseTooLarge {
            limit: MAX_RESPONSE_BYTES,
        });
    }
    let status = response.status();
    if status.is_success() {
        return Ok(body);
    }
    let error = serde_json::from_slice::<ErrorResponse>(body)
        .ok()
        .map(|error| {
            OAuthError::from_server(&error.error, error.error_description.as_deref(), secrets)
        });
    Err(Error::TokenEndpoint {
        status,
        error,
        retry_after: retry_after(response),
    })
}

/// `Retry-After` in delay-seconds form. The HTTP-date form is not used by Procore and
/// is ignored (the caller's own back-off applies).
fn retry_after(response: &Response<Bytes>) -> Option<Duration> {
    let status = response.status();
    if status != StatusCode::TOO_MANY_REQUESTS && status != StatusCode::SERVICE_UNAVAILABLE {
        return None;
    }
    let value = response.headers().get(header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse().ok().map(Duration::from_secs)
}

/// Deserializes `body`, reporting failures by category and position only: serde's own
/// messages quote the offending value, which could be a token.
fn parse_json<T: DeserializeOwned>(body: &Bytes, what: &str) -> Result<T, Error> {
    // serde would also accept a JSON array as a struct, field by field.
    if body.trim_ascii_start().first() != Some(&b'{') {
        return Err(Error::invalid_response(format!(
            "{what} is not a JSON object ({} bytes)",
            body.len()
        )));
    }
    serde_json::from_slice(body).map_err(|error| {
        Error::invalid_response(crate::error::describe_json_error(&error, what, body.len()))
    })
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;
    use crate::{ClientSecret, Environment, OAuthErrorCode};

    const SENT: u64 = 1_700_000_000;

    fn client() -> OAuthClient {
        OAuthClient::new(Environment::production(), "id", ClientSecret::new("s"))
    }

    fn response(status: u16, body: &str) -> Response<Bytes> {
        Response::builder()
            .status(status)
            .body(Bytes::from(body.to_owned()))
            .unwrap()
    }

    fn parse(status: u16, body: &str) -> Result<Token, Error> {
        client().parse_token_response(
            &response(status, body),
            UNIX_EPOCH + Duration::from_secs(SENT),
        )
    }

    #[test]
    fn parses_procore_token_and_tolerates_unknown_fields() {
        let token = parse(
            200,
            r#"{"access_token":"eyJ.a.b","token_type":"bearer","expires_in":5400,
                "refresh_token":"r1","created_at":1700000001,"scope":"","extra":{"x":1}}"#,
        )
        .unwrap();
        assert_eq!(token.access_token().unwrap().secret(), "eyJ.a.b");
        assert_eq!(token.refresh_token().unwrap().secret(), "r1");
        assert_eq!(
            token.expires_at(),
            Some(UNIX_EPOCH + Duration::from_secs(SENT + 1 + 5400))
        );
    }

    #[test]
    fn client_credentials_answer_has_no_refresh_token() {
        let token = parse(
            200,
            r#"{"access_token":"a","token_type":"Bearer","expires_in":60}"#,
        )
        .unwrap();
        assert!(token.refresh_token().is_none());
    }

    #[test]
    fn malformed_success_bodies_are_invalid_responses_that_quote_no_value() {
        for body in [
            "<html>oops</html>",
            "",
            r#"{"access_token":"#,
            r#"{"token_type":"bearer"}"#,
            r#"{"access_token":12345}"#,
            r#"{"access_token":"a","expires_in":"SECRET-LOOKING-VALUE"}"#,
            r#"{"access_token":"a","expires_in":-5}"#,
            r#"{"access_token":"a","expires_in":0}"#,
            r#"{"access_token":"a","token_type":"mac"}"#,
            r#"{"access_token":""}"#,
            r#"["access_token"]"#,
        ] {
            let err = parse(200, body).unwrap_err();
            assert!(
                matches!(err, Error::InvalidResponse { .. }),
                "{body}: {err:?}"
            );
            assert!(!err.to_string().contains("SECRET-LOOKING-VALUE"), "{err}");
        }
    }

    #[test]
    fn rfc6749_errors_are_typed() {
        let cases = [
            (400, "invalid_grant", OAuthErrorCode::InvalidGrant),
            (401, "invalid_client", OAuthErrorCode::InvalidClient),
            (400, "invalid_request", OAuthErrorCode::InvalidRequest),
            (
                400,
                "unsupported_grant_type",
                OAuthErrorCode::UnsupportedGrantType,
            ),
            (
                400,
                "unauthorized_client",
                OAuthErrorCode::UnauthorizedClient,
            ),
            (400, "invalid_scope", OAuthErrorCode::InvalidScope),
            (
                400,
                "server_specific",
                OAuthErrorCode::Other("server_specific".into()),
            ),
        ];
        for (status, code, expected) in cases {
            let body = format!(r#"{{"error":"{code}","error_description":"why"}}"#);
            let err = parse(status, &body).unwrap_err();
            assert_eq!(err.oauth_error(), Some(&expected));
            assert!(!err.is_transient());
            assert_eq!(
                err.to_string(),
                format!(
                    "token endpoint answered {} {}: {code} (why)",
                    status,
                    StatusCode::from_u16(status)
                        .unwrap()
                        .canonical_reason()
                        .unwrap()
                )
            );
        }
    }

    #[test]
    fn server_errors_and_proxy_pages_are_transient_endpoint_errors() {
        for status in [500, 502, 503, 504] {
            let err = parse(status, "<html>Bad gateway</html>").unwrap_err();
            assert!(
                matches!(err, Error::TokenEndpoint { error: None, .. }),
                "{status}: {err:?}"
            );
            assert!(err.is_transient());
        }
    }

    #[test]
    fn retry_after_is_read_for_429_and_503() {
        let mut limited = response(429, "{}");
        limited
            .headers_mut()
            .insert(header::RETRY_AFTER, "17".parse().unwrap());
        let err = client()
            .parse_token_response(&limited, UNIX_EPOCH)
            .unwrap_err();
        assert!(err.is_transient());
        assert_eq!(err.retry_after(), Some(Duration::from_secs(17)));

        let mut date = response(503, "");
        date.headers_mut().insert(
            header::RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(
            client()
                .parse_token_response(&date, UNIX_EPOCH)
                .unwrap_err()
                .retry_after(),
            None
        );
    }

    #[test]
    fn oversized_bodies_are_refused_before_parsing() {
        let huge = format!(r#"{{"access_token":"{}"}}"#, "a".repeat(MAX_RESPONSE_BYTES));
        assert!(matches!(
            parse(200, &huge),
            Err(Error::ResponseTooLarge {
                limit: MAX_RESPONSE_BYTES
            })
        ));
        assert!(matches!(
            parse(500, &huge),
            Err(Error::ResponseTooLarge { .. })
        ));
    }

    #[test]
    fn a_rejected_success_body_hands_back_its_rotated_refresh_token() {
        for body in [
            r#"{"access_token":"a","token_type":"mac","refresh_token":"rotated-77"}"#,
            r#"{"access_token":"a","expires_in":0,"refresh_token":"rotated-77"}"#,
            r#"{"access_token":"line\nbreak","refresh_token":"rotated-77"}"#,
            r#"{"access_token":"","refresh_token":"rotated-77"}"#,
            r#"{"refresh_token":"rotated-77","expires_in":5400}"#,
            r#"{"access_token":12345,"refresh_token":"rotated-77"}"#,
            r#"{"access_token":"a","expires_in":-5,"refresh_token":"rotated-77"}"#,
        ] {
            let err = parse(200, body).unwrap_err();
            assert!(
                matches!(err, Error::InvalidResponse { .. }),
                "{body}: {err:?}"
            );
            assert_eq!(
                err.rotated_refresh_token().map(RefreshToken::secret),
                Some("rotated-77"),
                "{body}"
            );
            let printed = format!("{err} {err:?} {err:#?}");
            assert!(!printed.contains("rotated-77"), "{printed}");
        }
        // Nothing to salvage: none, empty or not a string.
        for body in [
            r#"{"access_token":"a","token_type":"mac"}"#,
            r#"{"access_token":"a","token_type":"mac","refresh_token":""}"#,
            r#"{"access_token":"a","token_type":"mac","refresh_token":7}"#,
            r#"{"refresh_token":"#,
        ] {
            assert!(parse(200, body)
                .unwrap_err()
                .rotated_refresh_token()
                .is_none());
        }
    }

    #[test]
    fn server_text_in_errors_is_escaped_capped_and_scrubbed() {
        let client = OAuthClient::new(
            Environment::production(),
            "id",
            ClientSecret::new("client-secret-xyz"),
        );
        let presented = RefreshToken::new("presented-refresh-abc");
        let long = "A".repeat(10 * 1024);
        let description = format!(
            "bad\nINFO forged line \u{1b}[31mred\r\u{202e} client-secret-xyz \
             presented-refresh-abc {long}"
        );
        let body = serde_json::json!({
            "error": "weird\ncode client-secret-xyz",
            "error_description": description,
        })
        .to_string();
        for status in [400, 401, 500] {
            let err = client
                .parse_refresh_response(&response(status, &body), UNIX_EPOCH, &presented)
                .unwrap_err();
            // (Pretty `Debug` has line breaks of its own.)
            let printed = format!("{err} | {err:?}");
            for raw in [
                "\n",
                "\r",
                "\u{1b}",
                "\u{202e}",
                "client-secret-xyz",
                "presented-refresh-abc",
                &"A".repeat(300),
            ] {
                assert!(!printed.contains(raw), "{raw:?} in {printed}");
            }
            let Error::TokenEndpoint {
                error: Some(oauth), ..
            } = &err
            else {
                panic!("{err:?}")
            };
            let description = oauth.description.as_deref().unwrap();
            assert!(description.chars().count() <= 201, "{description}");
            assert!(description.ends_with('…'), "{description}");
            assert!(
                description.contains("bad\\nINFO forged line"),
                "{description}"
            );
            assert!(oauth.code.as_str().starts_with("weird\\ncode"));
        }
        // The plain parser scrubs the client secret too, and invalid_grant stays typed.
        let err = client
            .parse_token_response(
                &response(
                    400,
                    r#"{"error":"invalid_grant","error_description":"client-secret-xyz\n"}"#,
                ),
                UNIX_EPOCH,
            )
            .unwrap_err();
        assert_eq!(err.oauth_error(), Some(&OAuthErrorCode::InvalidGrant));
        let printed = err.to_string();
        assert!(!printed.contains("client-secret-xyz") && !printed.contains('\n'));
    }

    #[test]
    fn network_numbers_out_of_range_are_typed_errors_never_panics() {
        for body in [
            r#"{"access_token":"a","expires_in":18446744073709551616}"#,
            r#"{"access_token":"a","expires_in":1e400}"#,
            r#"{"access_token":"a","created_at":9223372036854775808}"#,
        ] {
            assert!(
                matches!(parse(200, body), Err(Error::InvalidResponse { .. })),
                "{body}"
            );
        }
        for body in [
            r#"{"access_token":"a","expires_in":18446744073709551615,"created_at":9223372036854775807}"#,
            r#"{"access_token":"a","expires_in":1,"created_at":-9223372036854775808}"#,
        ] {
            assert!(parse(200, body).is_ok(), "{body}");
        }
        for body in [
            r#"{"expires_in_seconds":9223372036854775807,"created_at":-9223372036854775808}"#,
            r#"{"expires_in_seconds":18446744073709551616}"#,
            r#"{"created_at":1e400}"#,
            r#"{"resource_owner_id":-1}"#,
        ] {
            let _ = client().parse_token_info_response(&response(200, body));
        }
        for value in [
            "18446744073709551615",
            "18446744073709551616",
            "-1",
            "1e9",
            " 99999999999999999999999 ",
        ] {
            let mut limited = response(429, "{}");
            limited
                .headers_mut()
                .insert(header::RETRY_AFTER, value.parse().unwrap());
            let retry_after = client()
                .parse_token_response(&limited, UNIX_EPOCH)
                .unwrap_err()
                .retry_after();
            assert!(
                retry_after.is_none_or(|delay| delay == Duration::from_secs(u64::MAX)),
                "{value}: {retry_after:?}"
            );
        }
    }

    #[test]
    fn revoke_and_token_info() {
        client()
            .parse_revoke_response(&response(200, "{}"))
            .unwrap();
        assert!(client().parse_revoke_response(&response(500, "")).is_err());
        let info = client()
            .parse_token_info_response(&response(
                200,
                r#"{"resource_owner_id":42,"scopes":[],"expires_in_seconds":5399,
                    "application":{"uid":"abc"},"created_at":1700000000}"#,
            ))
            .unwrap();
        assert_eq!(info.resource_owner_id, Some(42));
        assert_eq!(info.application.unwrap().uid.as_deref(), Some("abc"));
        let service = client()
            .parse_token_info_response(&response(200, r#"{"resource_owner_id":null}"#))
            .unwrap();
        assert_eq!(service.resource_owner_id, None);
        assert!(matches!(
            client().parse_token_info_response(&response(401, r#"{"error":"invalid_token"}"#)),
            Err(Error::TokenEndpoint { .. })
        ));
    }
}

/// Fuzzing by property: whatever the token endpoint sends, parsing returns a typed
/// result, never panics, and never quotes the body in an error. CI runs the default
/// number of cases; `scripts/fuzz.sh` runs many more (see FUZZING.md).
#[cfg(test)]
mod fuzz {
    use std::time::UNIX_EPOCH;

    use proptest::prelude::*;

    use super::*;
    use crate::{ClientSecret, Environment};

    /// A marker that would show up in an error message that quotes its input.
    const MARKER: &str = "SeCrEtMaRkEr";

    fn client() -> OAuthClient {
        OAuthClient::new(Environment::production(), "id", ClientSecret::new("s"))
    }

    fn response(status: u16, body: Vec<u8>) -> Response<Bytes> {
        Response::builder()
            .status(status)
            .body(Bytes::from(body))
            .expect("valid status")
    }

    /// JSON-shaped bodies: Procore's fields (and others) with values of every type,
    /// many of them the marker.
    fn json_body() -> impl Strategy<Value = Vec<u8>> {
        let value = prop_oneof![
            Just(format!("\"{MARKER}\"")),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<f64>().prop_map(|n| format!("{n:?}")),
            Just("null".to_owned()),
            Just("true".to_owned()),
            Just(format!("[\"{MARKER}\"]")),
            Just(format!("{{\"x\":\"{MARKER}\"}}")),
            "[ -~]{0,20}".prop_map(|s| format!("{s:?}")),
        ];
        let key = prop_oneof![
            Just("access_token"),
            Just("refresh_token"),
            Just("expires_in"),
            Just("created_at"),
            Just("token_type"),
            Just("error"),
            Just("error_description"),
            Just("resource_owner_id"),
            Just("scopes"),
            Just("application"),
            Just("other"),
        ];
        proptest::collection::vec((key, value), 0..8).prop_map(|fields| {
            let fields: Vec<String> = fields
                .into_iter()
                .map(|(key, value)| format!("\"{key}\":{value}"))
                .collect();
            format!("{{{}}}", fields.join(",")).into_bytes()
        })
    }

    fn any_body() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            json_body(),
            proptest::collection::vec(any::<u8>(), 0..256),
            json_body().prop_map(|mut body| {
                body.truncate(body.len() / 2);
                body
            }),
        ]
    }

    fn status() -> impl Strategy<Value = u16> {
        prop_oneof![
            Just(200),
            Just(400),
            Just(401),
            Just(429),
            Just(503),
            100u16..600
        ]
    }

    proptest! {
        #[test]
        fn token_responses_never_panic_or_leak(status in status(), body in any_body()) {
            let client = client();
            let response = response(status, body);
            if let Err(error) = client.parse_token_response(&response, UNIX_EPOCH) {
                let printed = format!("{error} {error:?}");
                // Only RFC 6749 error descriptions are passed through (on error
                // statuses), by design.
                if !matches!(error, Error::TokenEndpoint { .. }) {
                    prop_assert!(!printed.contains(MARKER), "{}", printed);
                }
            }
            let _ = client.parse_token_info_response(&response);
            let _ = client.parse_revoke_response(&response);
        }
    }
}
