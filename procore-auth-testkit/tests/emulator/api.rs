//! The protected API: bearer checks, company header, rate-limit headers, faults, file redirects.

use std::time::Duration;

use procore_auth_testkit::{ApiFault, Emulator};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, LOCATION, RETRY_AFTER};
use reqwest::StatusCode;

use crate::{client, me, refresh, status_json};

const COMPANY: &str = "procore-company-id";

#[tokio::test]
async fn me_answers_a_live_bearer_and_401s_everything_else() {
    let emulator = Emulator::start().await;
    let grant = emulator.issue_token();

    let (status, body) = status_json(me(&emulator, Some(&grant.access_token)).await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["id"], 4242);
    assert_eq!(body["login"], "testkit.user@example.com");
    assert!(body["name"].is_string());
    assert_eq!(body["authorization_received"], true);

    for token in [
        None,
        Some("unknown-token"),
        Some(grant.refresh_token.as_deref().unwrap()),
    ] {
        let (status, body) = status_json(me(&emulator, token).await).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{token:?}");
        assert_eq!(body["errors"], "The access token is invalid");
        assert_eq!(body["authorization_received"], token.is_some(), "{token:?}");
    }
    let basic = client()
        .get(format!("{}/rest/v1.0/me", emulator.base_url()))
        .header(AUTHORIZATION, format!("Basic {}", grant.access_token))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), StatusCode::UNAUTHORIZED);

    let stats = emulator.stats();
    assert_eq!(stats.api_calls, 5);
    assert_eq!(stats.unauthorized_served, 4);
}

#[tokio::test]
async fn expire_all_tokens_401s_every_issued_token_and_refresh_recovers() {
    let emulator = Emulator::start().await;
    let first = emulator.issue_token();
    let second = emulator.issue_token();
    emulator.expire_all_tokens();
    for grant in [&first, &second] {
        let (status, body) = status_json(me(&emulator, Some(&grant.access_token)).await).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["errors"], "The access token expired");
    }
    let (status, body) =
        status_json(refresh(&emulator, first.refresh_token.as_deref().unwrap()).await).await;
    assert_eq!(status, StatusCode::OK);
    let fresh = body["access_token"].as_str().unwrap();
    assert_eq!(me(&emulator, Some(fresh)).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn revoke_all_tokens_kills_access_and_refresh_tokens() {
    let emulator = Emulator::start().await;
    let grant = emulator.issue_token();
    emulator.revoke_all_tokens();
    let (status, body) = status_json(me(&emulator, Some(&grant.access_token)).await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["errors"], "The access token was revoked");
    let response = refresh(&emulator, grant.refresh_token.as_deref().unwrap()).await;
    assert_eq!(crate::oauth_error(response, 400).await, "invalid_grant");
    assert!(emulator.stats().consumed_refresh_tokens.is_empty());
}

#[tokio::test]
async fn echo_returns_the_body_and_responses_carry_company_and_rate_limit_headers() {
    let emulator = Emulator::start().await;
    let token = emulator.issue_token().access_token;
    let call = || {
        client()
            .post(format!("{}/rest/v1.0/echo", emulator.base_url()))
            .bearer_auth(&token)
            .header(COMPANY, "5000000000123")
            .header(CONTENT_TYPE, "application/json")
            .body(r#"{"hello":"procore"}"#)
            .send()
    };
    let first = call().await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let headers = first.headers().clone();
    assert_eq!(headers[COMPANY], "5000000000123");
    assert_eq!(headers[CONTENT_TYPE], "application/json");
    assert_eq!(headers["x-rate-limit-limit"], "3600");
    let reset: i64 = headers["x-rate-limit-reset"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(reset > 1_600_000_000 && reset % 3600 == 0, "{reset}");
    assert_eq!(first.text().await.unwrap(), r#"{"hello":"procore"}"#);

    let second = call().await.unwrap();
    let remaining = |h: &reqwest::header::HeaderMap| -> u64 {
        h["x-rate-limit-remaining"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(remaining(second.headers()), remaining(&headers) - 1);

    // Errors carry them too, and no company header means none echoed.
    let unauthorized = me(&emulator, None).await;
    assert!(unauthorized
        .headers()
        .contains_key("x-rate-limit-remaining"));
    assert!(!unauthorized.headers().contains_key(COMPANY));
}

#[tokio::test]
async fn the_forbidden_company_gets_403() {
    let emulator = Emulator::builder().forbidden_company(42).start().await;
    let token = emulator.issue_token().access_token;
    let get = |company: &'static str| {
        client()
            .get(format!("{}/rest/v1.0/companies", emulator.base_url()))
            .bearer_auth(&token)
            .header(COMPANY, company)
            .send()
    };
    let (status, body) = status_json(get("42").await.unwrap()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        body["errors"].as_str().unwrap().contains("not connected"),
        "{body}"
    );
    let (status, body) = status_json(get("43").await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body[0]["id"].as_u64().unwrap() > u64::from(u32::MAX));

    let stats = emulator.stats();
    assert_eq!(
        (
            stats.forbidden_served,
            stats.unauthorized_served,
            stats.token_calls
        ),
        (1, 0, 0)
    );
}

#[tokio::test]
async fn api_faults_answer_429_503_and_a_one_off_401_in_order() {
    let emulator = Emulator::start().await;
    let token = emulator.issue_token().access_token;
    emulator.push_api_fault(ApiFault::RateLimited {
        retry_after_secs: 3,
    });
    emulator.push_api_fault(ApiFault::Unavailable {
        retry_after_secs: 5,
    });
    emulator.push_api_fault(ApiFault::Unauthorized);

    let limited = me(&emulator, Some(&token)).await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.headers()[RETRY_AFTER], "3");
    assert_eq!(limited.headers()["x-rate-limit-remaining"], "0");
    let unavailable = me(&emulator, Some(&token)).await;
    assert_eq!(unavailable.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(unavailable.headers()[RETRY_AFTER], "5");
    let (status, body) = status_json(me(&emulator, Some(&token)).await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["authorization_received"], true);
    assert_eq!(me(&emulator, Some(&token)).await.status(), StatusCode::OK);

    let stats = emulator.stats();
    assert_eq!((stats.api_calls, stats.unauthorized_served), (4, 1));
}

#[tokio::test]
async fn file_downloads_redirect_off_host_and_storage_records_authorization() {
    let emulator = Emulator::start().await;
    let token = emulator.issue_token().access_token;
    let url = format!("{}/rest/v1.0/files/abc-1", emulator.base_url());

    let redirect = client().get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(redirect.status(), StatusCode::FOUND);
    let location = redirect.headers()[LOCATION].to_str().unwrap();
    assert_eq!(
        location,
        format!("{}/storage/abc-1", emulator.alternate_host_url())
    );
    assert!(emulator
        .alternate_host_url()
        .starts_with("http://localhost:"));

    // reqwest drops the bearer on a cross-host redirect: storage sees none.
    let following = reqwest::Client::new();
    let download = following
        .get(&url)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(download.status(), StatusCode::OK);
    assert_eq!(download.url().host_str(), Some("localhost"));
    assert_eq!(download.text().await.unwrap(), "contents of file abc-1");
    let stats = emulator.stats();
    assert_eq!(
        (
            stats.storage_requests,
            stats.storage_requests_with_authorization
        ),
        (1, 0)
    );

    // A client that does send it is caught.
    let leaked = following
        .get(format!("{}/storage/abc-1", emulator.alternate_host_url()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(leaked.status(), StatusCode::OK);
    let stats = emulator.stats();
    assert_eq!(
        (
            stats.storage_requests,
            stats.storage_requests_with_authorization
        ),
        (2, 1)
    );
    assert_eq!(stats.api_calls, 2, "storage is not an API call");
}

#[tokio::test]
async fn unknown_api_routes_are_authenticated_404s() {
    let emulator = Emulator::start().await;
    let token = emulator.issue_token().access_token;
    let url = format!("{}/rest/v1.0/projects/1/nothing", emulator.base_url());
    let found = client()
        .delete(&url)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(found.status(), StatusCode::NOT_FOUND);
    let anonymous = client().get(&url).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn zero_lifetime_tokens_are_expired_on_arrival() {
    let emulator = Emulator::builder()
        .access_token_lifetime(Duration::ZERO)
        .start()
        .await;
    let grant = emulator.issue_token();
    assert_eq!(grant.expires_in, 0);
    assert_eq!(
        me(&emulator, Some(&grant.access_token)).await.status(),
        StatusCode::UNAUTHORIZED
    );
}
