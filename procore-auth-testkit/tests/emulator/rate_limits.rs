//! Per-token rate limits and spike limits with Procore's headers, scripted 503s with
//! `Retry-After`, and the API log that lets tests check when a client came back.

use std::time::Duration;

use procore_auth_testkit::{ApiFault, Emulator};
use reqwest::header::{HeaderMap, CONTENT_TYPE, DATE, RETRY_AFTER};
use reqwest::{Client, Response, StatusCode};

use crate::{client, me, status_json};

/// `X-Rate-Limit-Limit`, `-Remaining` and `-Reset` of a response.
fn rate_headers(headers: &HeaderMap) -> (u64, u64, i64) {
    let number = |name: &str| -> i64 {
        headers[name]
            .to_str()
            .expect("ASCII")
            .parse()
            .unwrap_or_else(|_| panic!("{name} is not a number: {:?}", headers[name]))
    };
    let count = |name: &str| u64::try_from(number(name)).expect("not negative");
    (
        count("x-rate-limit-limit"),
        count("x-rate-limit-remaining"),
        number("x-rate-limit-reset"),
    )
}

/// `Retry-After` in seconds.
fn retry_after_secs(headers: &HeaderMap) -> u64 {
    headers[RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .expect("delay-seconds")
}

/// `GET /rest/v1.0/me` on a shared (pooled) client.
async fn get(http: &Client, emulator: &Emulator, token: &str) -> Response {
    http.get(format!("{}/rest/v1.0/me", emulator.base_url()))
        .bearer_auth(token)
        .send()
        .await
        .expect("api call")
}

/// The wall clock in Unix milliseconds: the emulator runs on it (without a clock offset), so a
/// test can wait for the second a `X-Rate-Limit-Reset` names, as a client would.
#[allow(clippy::disallowed_methods)]
fn unix_now_millis() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    i64::try_from(now.as_millis()).unwrap()
}

/// Sleeps until the wall clock reaches `reset` (Unix seconds). Tokio's timer runs on the
/// monotonic clock, so check the wall clock again rather than trust one sleep.
async fn sleep_until_second(reset: i64) {
    loop {
        let wait = reset * 1000 - unix_now_millis();
        if wait <= 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(u64::try_from(wait).unwrap())).await;
    }
}

/// Unix seconds of an RFC 9110 IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
fn parse_http_date(text: &str) -> i64 {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let parts: Vec<&str> = text.split(' ').collect();
    assert_eq!(parts.len(), 6, "{text}");
    assert!(parts[0].ends_with(','), "{text}");
    assert_eq!(parts[5], "GMT", "{text}");
    let day: i64 = parts[1].parse().unwrap();
    let month = i64::try_from(MONTHS.iter().position(|m| *m == parts[2]).unwrap()).unwrap() + 1;
    let year: i64 = parts[3].parse().unwrap();
    let time: Vec<i64> = parts[4].split(':').map(|p| p.parse().unwrap()).collect();
    // Howard Hinnant's days_from_civil.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days * 86_400 + time[0] * 3600 + time[1] * 60 + time[2]
}

#[test]
fn the_test_date_parser_is_right() {
    assert_eq!(
        parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
        784_111_777
    );
    assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), 0);
    assert_eq!(
        parse_http_date("Tue, 29 Feb 2000 23:59:59 GMT"),
        951_868_799
    );
}

#[tokio::test]
async fn the_sixth_request_in_a_window_of_five_is_429_and_the_budget_returns_after_the_reset() {
    let emulator = Emulator::builder()
        .rate_limit(5, Duration::from_secs(2))
        .start()
        .await;
    let token = emulator.issue_token().access_token;
    let http = Client::new();

    let mut resets = Vec::new();
    for expected_remaining in (0..5).rev() {
        let response = get(&http, &emulator, &token).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert!(!response.headers().contains_key(RETRY_AFTER));
        let (limit, remaining, reset) = rate_headers(response.headers());
        assert_eq!((limit, remaining), (5, expected_remaining));
        resets.push(reset);
    }
    let reset = resets[0];
    assert!(resets.iter().all(|r| *r == reset), "{resets:?}");

    let limited = get(&http, &emulator, &token).await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(rate_headers(limited.headers()), (5, 0, reset));
    let retry_after = retry_after_secs(limited.headers());
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    assert_eq!(limited.headers()[CONTENT_TYPE], "application/json");
    let (_, body) = status_json(limited).await;
    assert!(
        body["errors"]
            .as_str()
            .unwrap()
            .starts_with("You have surpassed the max number of requests"),
        "{body}"
    );

    // Still limited, and the 429s do not push the reset back.
    let again = get(&http, &emulator, &token).await;
    assert_eq!(again.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(rate_headers(again.headers()), (5, 0, reset));

    // Retry-After is enough: the next window has a full budget.
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    let back = get(&http, &emulator, &token).await;
    assert_eq!(back.status(), StatusCode::OK);
    let (limit, remaining, next_reset) = rate_headers(back.headers());
    assert_eq!((limit, remaining), (5, 4));
    assert!(next_reset >= reset + 2, "{next_reset} vs {reset}");

    let stats = emulator.stats();
    assert_eq!(stats.api_calls, 8);
    assert_eq!(stats.rate_limited_served, 2);
    assert_eq!(stats.spike_limited_served, 0);
    assert_eq!(stats.service_unavailable_served, 0);
    let user = emulator.user_stats(emulator.default_user());
    assert_eq!((user.api_calls, user.rate_limited_served), (8, 2));
}

#[tokio::test]
async fn a_request_at_the_reset_second_is_in_a_new_window() {
    // A window of 1.5 s: its end is never on a whole second for long, so the header has to be
    // rounded up for a client waking at that second to find the window over.
    let emulator = Emulator::builder()
        .rate_limit(1, Duration::from_millis(1500))
        .record_api_log(true)
        .start()
        .await;
    let token = emulator.issue_token().access_token;
    let http = Client::new();

    let mut reset = None;
    for round in 0..3 {
        let first = get(&http, &emulator, &token).await;
        assert_eq!(first.status(), StatusCode::OK, "round {round}");
        let (_, remaining, this_reset) = rate_headers(first.headers());
        assert_eq!(remaining, 0);
        if let Some(previous) = reset {
            assert!(this_reset > previous, "round {round}");
        }
        let limited = get(&http, &emulator, &token).await;
        assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(rate_headers(limited.headers()).2, this_reset);
        reset = Some(this_reset);
        // Wake exactly at the reset second, as a client honouring the header would.
        sleep_until_second(this_reset).await;
    }

    // The server's own records: every window's first request was served, the rest refused.
    let statuses: Vec<u16> = emulator.api_log().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 429, 200, 429, 200, 429]);
    let log = emulator.api_log();
    for pair in [(0, 2), (2, 4)] {
        let gap = log[pair.1].at - log[pair.0].at;
        assert!(gap >= Duration::from_millis(1500), "{pair:?}: {gap:?}");
    }
    assert_eq!(emulator.stats().rate_limited_served, 3);
}

#[tokio::test]
async fn tokens_and_users_have_independent_budgets() {
    let emulator = Emulator::builder()
        .users(2)
        .rate_limit(2, Duration::from_secs(60))
        .start()
        .await;
    let (alice, bob) = (emulator.users()[0], emulator.users()[1]);
    let alices = emulator.issue_token_for(alice).access_token;
    let alices_second = emulator.issue_token_for(alice).access_token;
    let bobs = emulator.issue_token_for(bob).access_token;
    let http = Client::new();

    for _ in 0..2 {
        assert_eq!(get(&http, &emulator, &alices).await.status(), 200);
    }
    let limited = get(&http, &emulator, &alices).await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);

    // Bob's token, and Alice's other token, start their own windows.
    for token in [&bobs, &alices_second] {
        let response = get(&http, &emulator, token).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(rate_headers(response.headers()).1, 1);
    }

    // Requests without a known token share one anonymous budget, and are limited too.
    assert_eq!(me(&emulator, None).await.status(), StatusCode::UNAUTHORIZED);
    let unknown = me(&emulator, Some("not-a-token")).await;
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(rate_headers(unknown.headers()).1, 0);
    assert_eq!(
        me(&emulator, None).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );

    // An expired token keeps its (spent) budget: the limiter answers before the token check.
    emulator.expire_tokens_of(alice);
    assert_eq!(
        get(&http, &emulator, &alices).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    let expired = get(&http, &emulator, &alices_second).await;
    assert_eq!(expired.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(rate_headers(expired.headers()).1, 0);

    let stats = emulator.stats();
    assert_eq!(stats.rate_limited_served, 3);
    assert_eq!(stats.unauthorized_served, 3);
    assert_eq!(emulator.user_stats(alice).rate_limited_served, 2);
    assert_eq!(emulator.user_stats(bob).rate_limited_served, 0);
    assert_eq!(emulator.user_stats(bob).api_calls, 1);
}

#[tokio::test]
async fn the_spike_limit_answers_429_with_retry_after_and_the_main_window_headers() {
    let emulator = Emulator::builder()
        .rate_limit(100, Duration::from_secs(60))
        .spike_limit(3, Duration::from_secs(1))
        .start()
        .await;
    let token = emulator.issue_token().access_token;
    let http = Client::new();

    let mut reset = 0;
    for expected_remaining in [99, 98, 97] {
        let response = get(&http, &emulator, &token).await;
        assert_eq!(response.status(), StatusCode::OK);
        let (limit, remaining, this_reset) = rate_headers(response.headers());
        assert_eq!((limit, remaining), (100, expected_remaining));
        reset = this_reset;
    }
    let spiked = get(&http, &emulator, &token).await;
    assert_eq!(spiked.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(retry_after_secs(spiked.headers()), 1);
    // The headers describe the hourly (here: one-minute) window, which has room left.
    assert_eq!(rate_headers(spiked.headers()), (100, 97, reset));
    let (_, body) = status_json(spiked).await;
    assert!(body["errors"].is_string(), "{body}");

    tokio::time::sleep(Duration::from_secs(1)).await;
    let back = get(&http, &emulator, &token).await;
    assert_eq!(back.status(), StatusCode::OK);
    assert_eq!(rate_headers(back.headers()), (100, 96, reset));

    // Another token has its own spike window.
    let other = emulator.issue_token().access_token;
    assert_eq!(get(&http, &emulator, &other).await.status(), 200);

    let stats = emulator.stats();
    assert_eq!(
        (stats.rate_limited_served, stats.spike_limited_served),
        (1, 1)
    );
}

#[tokio::test]
async fn a_spike_limit_alone_leaves_the_default_hourly_headers() {
    let emulator = Emulator::builder()
        .spike_limit(1, Duration::from_secs(30))
        .start()
        .await;
    let token = emulator.issue_token().access_token;
    let http = Client::new();
    let first = get(&http, &emulator, &token).await;
    assert_eq!(first.status(), StatusCode::OK);
    let (limit, remaining, reset) = rate_headers(first.headers());
    assert_eq!((limit, remaining), (3600, 3599));
    assert_eq!(reset % 3600, 0);
    let spiked = get(&http, &emulator, &token).await;
    assert_eq!(spiked.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after = retry_after_secs(spiked.headers());
    assert!((29..=30).contains(&retry_after), "{retry_after}");
    assert_eq!(rate_headers(spiked.headers()), (3600, 3599, reset));
}

#[tokio::test]
async fn without_rate_limit_each_token_reports_its_own_hourly_budget() {
    let emulator = Emulator::start().await;
    let http = Client::new();
    let first = emulator.issue_token().access_token;
    let second = emulator.issue_token().access_token;
    for (token, expected) in [(&first, 3599), (&first, 3598), (&second, 3599)] {
        let response = get(&http, &emulator, token).await;
        assert_eq!(response.status(), StatusCode::OK);
        let (limit, remaining, reset) = rate_headers(response.headers());
        assert_eq!((limit, remaining), (3600, expected));
        assert_eq!(reset % 3600, 0, "aligned to the hour");
    }
    assert_eq!(emulator.stats().rate_limited_served, 0);
}

#[tokio::test]
async fn scripted_503s_carry_retry_after_in_seconds_or_as_an_http_date() {
    let emulator = Emulator::builder()
        .rate_limit(1, Duration::from_secs(60))
        .record_api_log(true)
        .start()
        .await;
    let token = emulator.issue_token().access_token;
    let http = Client::new();
    emulator.push_api_fault(ApiFault::Unavailable {
        retry_after_secs: 2,
    });
    emulator.push_api_fault(ApiFault::UnavailableHttpDate {
        retry_after_secs: 2,
    });
    emulator.push_api_fault(ApiFault::UnavailableRaw {
        retry_after: Some("soon".to_owned()),
    });
    emulator.push_api_fault(ApiFault::UnavailableRaw { retry_after: None });

    let seconds = get(&http, &emulator, &token).await;
    assert_eq!(seconds.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(seconds.headers()[RETRY_AFTER], "2");
    // Faults answer in front of the limiter: the budget is untouched (and not started).
    assert_eq!(rate_headers(seconds.headers()).0, 1);
    assert_eq!(rate_headers(seconds.headers()).1, 1);

    // Any method takes the next fault.
    let dated = http
        .post(format!("{}/rest/v1.0/echo", emulator.base_url()))
        .bearer_auth(&token)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(dated.status(), StatusCode::SERVICE_UNAVAILABLE);
    let retry_at = parse_http_date(dated.headers()[RETRY_AFTER].to_str().unwrap());
    // hyper's `Date` is the response's second (floored); the Retry-After date is the arrival
    // plus 2 s, rounded up.
    let date = parse_http_date(dated.headers()[DATE].to_str().unwrap());
    assert!((2..=3).contains(&(retry_at - date)), "{retry_at} vs {date}");

    let raw = get(&http, &emulator, &token).await;
    assert_eq!(raw.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(raw.headers()[RETRY_AFTER], "soon");
    let none = get(&http, &emulator, &token).await;
    assert_eq!(none.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(!none.headers().contains_key(RETRY_AFTER));
    let (_, body) = status_json(none).await;
    assert_eq!(body["errors"], "Service unavailable");

    // The whole budget is still there.
    let served = get(&http, &emulator, &token).await;
    assert_eq!(served.status(), StatusCode::OK);
    assert_eq!(rate_headers(served.headers()).1, 0);

    let stats = emulator.stats();
    assert_eq!(stats.service_unavailable_served, 4);
    assert_eq!(stats.rate_limited_served, 0);
    let log = emulator.api_log();
    let seen: Vec<(&str, &str, u16)> = log
        .iter()
        .map(|r| (r.method.as_str(), r.path.as_str(), r.status))
        .collect();
    assert_eq!(
        seen,
        [
            ("GET", "/rest/v1.0/me", 503),
            ("POST", "/rest/v1.0/echo", 503),
            ("GET", "/rest/v1.0/me", 503),
            ("GET", "/rest/v1.0/me", 503),
            ("GET", "/rest/v1.0/me", 200),
        ]
    );
    assert!(log.iter().all(|r| r.user == Some(emulator.default_user())));
    assert!(log.windows(2).all(|pair| pair[0].at <= pair[1].at));
}

#[tokio::test]
async fn the_api_log_shows_when_a_client_came_back_after_a_503() {
    // A client honouring `Retry-After: 2` on a GET, and not retrying a POST: what a test of
    // such a client asserts, with the server's own arrival times.
    let emulator = Emulator::builder().record_api_log(true).start().await;
    let token = emulator.issue_token().access_token;
    let http = client();

    emulator.push_api_fault(ApiFault::Unavailable {
        retry_after_secs: 2,
    });
    let first = get(&http, &emulator, &token).await;
    assert_eq!(first.status(), StatusCode::SERVICE_UNAVAILABLE);
    tokio::time::sleep(Duration::from_secs(retry_after_secs(first.headers()))).await;
    assert_eq!(get(&http, &emulator, &token).await.status(), StatusCode::OK);

    emulator.push_api_fault(ApiFault::Unavailable {
        retry_after_secs: 2,
    });
    let post = http
        .post(format!("{}/rest/v1.0/echo", emulator.base_url()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), StatusCode::SERVICE_UNAVAILABLE);

    let log = emulator.api_log();
    assert_eq!(log.len(), 3);
    assert_eq!((log[0].status, log[1].status), (503, 200));
    assert!(log[1].at - log[0].at >= Duration::from_secs(2), "{log:?}");
    let posts: Vec<u16> = log
        .iter()
        .filter(|r| r.method == "POST")
        .map(|r| r.status)
        .collect();
    assert_eq!(posts, [503], "one POST, not retried");
    assert!(
        Emulator::start().await.api_log().is_empty(),
        "off by default"
    );
}
