//! The emulator's behaviour over real loopback HTTP, with reqwest as the client.

mod api;
mod core_client;
mod expiry;
mod faults;
mod lifecycle;
mod oauth;
mod rate_limits;
mod users;

use procore_auth_testkit::Emulator;
use reqwest::{Client, Response, StatusCode};
use serde_json::Value;

/// A client that does not follow redirects, so tests can look at them.
fn client() -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// `POST /oauth/token` with a form body.
async fn token_call(emulator: &Emulator, form: &[(&str, &str)]) -> Response {
    client()
        .post(format!("{}/oauth/token", emulator.base_url()))
        .form(form)
        .send()
        .await
        .expect("token call")
}

/// A `refresh_token` grant for the default client.
async fn refresh(emulator: &Emulator, refresh_token: &str) -> Response {
    token_call(
        emulator,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", emulator.client_id()),
            ("client_secret", emulator.client_secret()),
        ],
    )
    .await
}

/// `GET /rest/v1.0/me` with an optional bearer token.
async fn me(emulator: &Emulator, access_token: Option<&str>) -> Response {
    let request = client().get(format!("{}/rest/v1.0/me", emulator.base_url()));
    let request = match access_token {
        Some(token) => request.bearer_auth(token),
        None => request,
    };
    request.send().await.expect("api call")
}

/// The status and JSON body of a response.
async fn status_json(response: Response) -> (StatusCode, Value) {
    let status = response.status();
    let body = response.json().await.expect("a JSON body");
    (status, body)
}

/// The `error` field of an RFC 6749 error response, checking its status.
async fn oauth_error(response: Response, status: u16) -> String {
    let (actual, body) = status_json(response).await;
    assert_eq!(actual, status, "{body}");
    assert!(body["error_description"].is_string(), "{body}");
    body["error"].as_str().expect("an error code").to_owned()
}
