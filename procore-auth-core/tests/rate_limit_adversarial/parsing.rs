//! Adversarial tests of two fast paths, through the public API only (a module of
//! `rate_limit_adversarial`, whose test doubles it shares):
//!
//! - b9be4e6: the rate-limit headers found by comparing names as fixed-size arrays,
//!   and counts parsed four digits at a time (`four_digits`). A count is 1 to 20 ASCII
//!   digits that fit a `u64`; anything else makes the whole report ignored (and
//!   counted). `X-Rate-Limit-Limit` is kept as parsed, whatever its size, so it shows
//!   exactly what the parser made of a value; `Remaining` (up to 2²⁹ − 1) and `Reset`
//!   (within a day) are checked where they can be.
//! - 459986c: the request policy's exact-bytes fast path for the API origin. The token
//!   goes to the API origin only (scheme, host ignoring case and a trailing dot, port
//!   with the scheme's default), through `should_attach` (an `http::Uri`, as tower
//!   gives it) and `should_attach_to` (scheme, host and port, as reqwest gives them).

use std::time::{Duration, UNIX_EPOCH};

use http::header::HeaderName;
use http::{HeaderMap, HeaderValue, StatusCode, Uri};
use procore_auth_core::{
    Authorize, Clock, Environment, ManualClock, RateLimitPolicy, RequestPolicy, TokenManager,
    X_RATE_LIMIT_LIMIT, X_RATE_LIMIT_REMAINING, X_RATE_LIMIT_RESET,
};

// ---------------------------------------------------------------------------------------
// A manager whose responses are made up: authorize → attach → judge, as the adapters do.
// ---------------------------------------------------------------------------------------

use super::{token_at, Minting, T};

fn manager() -> TokenManager {
    let clock = ManualClock::at_unix(T);
    let issued = clock.now() - Duration::from_secs(60);
    TokenManager::builder(Minting::default())
        .clock(clock)
        .request_policy(RequestPolicy::new(&Environment::production()))
        .token(token_at("first", issued))
        .rate_limit(RateLimitPolicy::Observe)
        .build()
}

/// One request to the API, answered 200 with `headers`.
fn answer(manager: &TokenManager, headers: &HeaderMap) {
    let uri: Uri = "https://api.procore.com/rest/v1.0/me".parse().unwrap();
    let Authorize::Ready(authorized) = manager.authorize(&uri, &HeaderMap::new()) else {
        panic!("the request should go at once");
    };
    let attached = authorized.attach(&mut HeaderMap::new());
    assert!(attached.judge(StatusCode::OK, headers).is_none());
}

fn ignored(manager: &TokenManager) -> u64 {
    manager.metrics().rate_limit_headers_ignored
}

fn value(bytes: &[u8]) -> Option<HeaderValue> {
    HeaderValue::from_bytes(bytes).ok()
}

/// The definition: 1 to 20 ASCII digits that fit a `u64` (`u64::from_str` alone would
/// take a leading `+`).
fn by_definition(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() || bytes.len() > 20 || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

/// What the manager made of `candidate` as `X-Rate-Limit-Limit` (with a valid
/// remaining count and reset): `Some(limit)` if the report was taken, `None` if it was
/// ignored. A sentinel report goes first, so a value that leaves the limit unchanged
/// cannot pass for one that was parsed.
struct LimitProbe {
    manager: TokenManager,
}

const SENTINEL: u64 = 424_242_424_242;

impl LimitProbe {
    fn new() -> Self {
        Self { manager: manager() }
    }

    fn parse(&self, candidate: &HeaderValue) -> Option<u64> {
        let mut headers = HeaderMap::new();
        headers.insert(X_RATE_LIMIT_LIMIT, HeaderValue::from(SENTINEL));
        headers.insert(X_RATE_LIMIT_REMAINING, HeaderValue::from_static("5"));
        headers.insert(X_RATE_LIMIT_RESET, HeaderValue::from(T + 600));
        let before = ignored(&self.manager);
        answer(&self.manager, &headers);
        assert_eq!(ignored(&self.manager), before, "the sentinel is valid");
        assert_eq!(self.manager.rate_limit().unwrap().limit, SENTINEL);

        headers.insert(X_RATE_LIMIT_LIMIT, candidate.clone());
        answer(&self.manager, &headers);
        let limit = self.manager.rate_limit().unwrap().limit;
        match ignored(&self.manager) - before {
            0 => Some(limit),
            1 => {
                assert_eq!(limit, SENTINEL, "ignored, yet the limit changed");
                None
            }
            more => panic!("one report counted {more} times"),
        }
    }

    fn check(&self, bytes: &[u8]) {
        let Some(candidate) = value(bytes) else {
            return; // not a header value at all (control bytes)
        };
        assert_eq!(
            self.parse(&candidate),
            by_definition(bytes),
            "{:?} ({bytes:?})",
            String::from_utf8_lossy(bytes)
        );
    }
}

// ---------------------------------------------------------------------------------------
// Attack 1: counts four digits at a time
// ---------------------------------------------------------------------------------------

/// Held: lengths 1 to 22 around the 19-digit unchecked path and the 20-digit checked
/// one, leading zeros, `u64::MAX`, `u64::MAX + 1`, and values around every power of
/// ten (a wrong quad weight or carry between quads shows in one of them).
#[test]
fn counts_of_every_length_parse_exactly() {
    let probe = LimitProbe::new();
    let mut candidates: Vec<String> = vec![
        u64::MAX.to_string(),
        (u128::from(u64::MAX) + 1).to_string(),
        format!("0{}", u64::MAX),
        format!("{:020}", 0),
        format!("{:020}", 42),
        format!("{:019}", u64::MAX / 10),
        "9999999999999999999".into(),
        "10000000000000000000".into(),
        "99999999999999999999".into(),
        "18446744073709551610".into(),
        "18446744073709551620".into(),
        "18446744073709551699".into(),
        "28446744073709551615".into(),
        "1844674407370955161".into(),
        "184467440737095516150".into(),
    ];
    for len in 1..=22 {
        candidates.push("9".repeat(len));
        candidates.push("0".repeat(len));
        candidates.push(format!("1{}", "0".repeat(len - 1)));
        candidates.push(format!("{}1", "0".repeat(len - 1)));
        candidates.push("1234567890123456789012"[..len].to_owned());
        candidates.push("9876543210987654321098"[..len].to_owned());
        candidates.push(format!("{}9", "0".repeat(len - 1)));
    }
    for power in 0..20_u32 {
        let ten = 10_u64.pow(power);
        for number in [
            ten - 1,
            ten,
            ten + 1,
            ten.saturating_mul(9).saturating_add(ten - 1),
        ] {
            candidates.push(number.to_string());
        }
    }
    for candidate in &candidates {
        probe.check(candidate.as_bytes());
    }
}

/// Held: every byte a header value may hold, in every position of counts of 1 to 21
/// digits (so in the head and in each of the four-digit groups, at every alignment).
#[test]
fn any_byte_in_any_position_is_refused_unless_a_digit() {
    let probe = LimitProbe::new();
    let digits = b"123456789012345678901";
    for len in 1..=digits.len() {
        for position in 0..len {
            for byte in 0..=u8::MAX {
                let mut bytes = digits[..len].to_vec();
                bytes[position] = byte;
                probe.check(&bytes);
            }
        }
    }
}

/// Held: two bytes changed in one four-digit group (a carry out of one byte into the
/// next, or a high nibble that another byte's bits could mask), at each alignment.
#[test]
fn two_changed_bytes_in_a_group_are_refused_unless_digits() {
    const INTERESTING: &[u8] = b"/0159:;?@`\t +-.e\x80\x8f\x99\xc9\xf9\xfa\xfc\xff";
    let probe = LimitProbe::new();
    for base in [&b"7777"[..], b"55555", b"999999", b"1234567", b"88888888"] {
        for first in 0..base.len() {
            for second in first + 1..base.len() {
                for &a in INTERESTING {
                    for &b in INTERESTING {
                        let mut bytes = base.to_vec();
                        bytes[first] = a;
                        bytes[second] = b;
                        probe.check(&bytes);
                    }
                }
            }
        }
    }
}

fn report(limit: &[u8], remaining: &[u8], reset: &[u8]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(X_RATE_LIMIT_LIMIT, value(limit).unwrap());
    headers.insert(X_RATE_LIMIT_REMAINING, value(remaining).unwrap());
    headers.insert(X_RATE_LIMIT_RESET, value(reset).unwrap());
    headers
}

/// Held: remaining counts and resets are parsed by the same code; zero-padded to 19
/// and 20 digits they keep their value, padded to 21 the report is ignored. (Each
/// report names a later reset than the last, so it replaces the window.)
#[test]
fn padded_remaining_counts_and_resets_keep_their_value() {
    let manager = manager();
    let mut reset = T + 100;
    for (remaining, expected) in [
        (format!("{:019}", 7), Some(7)),
        (format!("{:020}", 7), Some(7)),
        (format!("{:021}", 7), None),
        (format!("{:020}", 536_870_911), Some(536_870_911)),
        ("0000".to_owned(), Some(0)),
        ("00001234".to_owned(), Some(1234)),
        ("12340000".to_owned(), Some(12_340_000)),
        ("0".to_owned(), Some(0)),
    ] {
        reset += 1;
        let before = ignored(&manager);
        answer(
            &manager,
            &report(b"3600", remaining.as_bytes(), reset.to_string().as_bytes()),
        );
        let taken = ignored(&manager) == before;
        let budget = manager.rate_limit().unwrap();
        match expected {
            Some(count) => {
                assert!(taken, "{remaining:?} refused");
                assert_eq!(budget.remaining, count, "{remaining:?}");
                assert_eq!(budget.reset_at, UNIX_EPOCH + Duration::from_secs(reset));
            }
            None => assert!(!taken, "{remaining:?} taken as {}", budget.remaining),
        }
    }
    for (padded, taken) in [(19, true), (20, true), (21, false)] {
        reset += 1;
        let spelled = format!("{reset:0padded$}");
        let before = ignored(&manager);
        answer(&manager, &report(b"3600", b"9", spelled.as_bytes()));
        assert_eq!(ignored(&manager) == before, taken, "{spelled:?}");
        if taken {
            let budget = manager.rate_limit().unwrap();
            assert_eq!(budget.reset_at, UNIX_EPOCH + Duration::from_secs(reset));
            assert_eq!(budget.remaining, 9);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Attack 1: names compared as fixed-size arrays, duplicates
// ---------------------------------------------------------------------------------------

fn named(pairs: &[(&str, &[u8])]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, bytes) in pairs {
        headers.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value(bytes).unwrap(),
        );
    }
    headers
}

/// What one report did: `Some((limit, remaining))` if taken, `None` if ignored. A
/// fresh manager each time (the first report of a token is always taken).
fn outcome(headers: &HeaderMap) -> Option<(u64, u64)> {
    let manager = manager();
    answer(&manager, headers);
    match ignored(&manager) {
        0 => manager
            .rate_limit()
            .map(|budget| (budget.limit, budget.remaining)),
        1 => {
            assert_eq!(manager.rate_limit(), None, "ignored, yet recorded");
            None
        }
        more => panic!("one report counted {more} times"),
    }
}

const RESET: &[u8] = b"1700000600";

/// Held: names of the same lengths as the three (18 and 22 bytes), and near misses of
/// other lengths, are not taken for them, whatever they hold; names arrive lowercase
/// whatever their spelling on the wire.
#[test]
fn only_the_three_names_count() {
    let decoys: &[&str] = &[
        "x-rate-limit-lomit",
        "x-rate-limit-rese7",
        "y-rate-limit-limit",
        "x-rate-limit_limit",
        "x-rate-limit-remainder",
        "x-rate-limit-remainin",
        "x-rate-limit-remainings",
        "x-ratelimit-remaining",
        "x-rate-limit-limit-",
        "x-rate-limit-",
        "rate-limit-remaining",
        "x-rate-limit-remainingx",
        "xx-rate-limit-reset",
        "x-rate-limit-reset\u{0}",
    ];
    for decoy in decoys {
        let Ok(name) = HeaderName::from_bytes(decoy.as_bytes()) else {
            continue;
        };
        let mut headers = named(&[
            ("x-rate-limit-limit", b"3600"),
            ("x-rate-limit-remaining", b"17"),
            ("x-rate-limit-reset", RESET),
        ]);
        headers.insert(name.clone(), HeaderValue::from_static("garbage"));
        assert_eq!(outcome(&headers), Some((3600, 17)), "{decoy}: garbage");
        headers.insert(name, HeaderValue::from_static("0"));
        assert_eq!(outcome(&headers), Some((3600, 17)), "{decoy}: zero");
    }
    // Any spelling on the wire is one name.
    let shouted = named(&[
        ("X-RATE-LIMIT-LIMIT", b"3600"),
        ("X-Rate-Limit-Remaining", b"17"),
        ("x-RATE-limit-RESET", RESET),
    ]);
    assert_eq!(outcome(&shouted), Some((3600, 17)));
    // A decoy only: nothing recorded, nothing ignored.
    let manager = manager();
    answer(
        &manager,
        &named(&[
            ("x-rate-limit-remainder", b"0"),
            ("x-rate-limit-lomit", b"x"),
        ]),
    );
    assert_eq!((manager.rate_limit(), ignored(&manager)), (None, 0));
}

/// Held: a name repeated with the same bytes is one value, wherever the copies sit; a
/// further copy that differs, by a byte or only in spelling (`060` for `60`), makes the
/// report ambiguous and ignored, for each of the three names.
#[test]
fn repeated_names_agree_or_the_report_is_ignored() {
    let base: [(&str, &[u8]); 3] = [
        ("x-rate-limit-limit", b"3600"),
        ("x-rate-limit-remaining", b"17"),
        ("x-rate-limit-reset", RESET),
    ];
    for (index, &(name, first)) in base.iter().enumerate() {
        // The same value again, with another header in between, then a third time.
        let mut pairs = base.to_vec();
        pairs.push(("x-other", b"1"));
        pairs.push((name, first));
        pairs.push((name, first));
        assert_eq!(outcome(&named(&pairs)), Some((3600, 17)), "{name}");

        let mut differing: Vec<Vec<u8>> = vec![
            [first, &b"0"[..]].concat(),
            [&b"0"[..], first].concat(),
            first[..first.len() - 1].to_vec(),
            b"not a number".to_vec(),
        ];
        let mut last = first.to_vec();
        *last.last_mut().unwrap() ^= 1; // one bit of the last digit
        differing.push(last);
        for other in &differing {
            // Differing second, or third after an agreeing second.
            for agreeing in 0..2 {
                let mut pairs: Vec<(&str, &[u8])> = base.to_vec();
                for _ in 0..agreeing {
                    pairs.push((name, first));
                }
                pairs.push((name, other));
                assert_eq!(
                    outcome(&named(&pairs)),
                    None,
                    "{name}: {:?} then {:?} (index {index})",
                    String::from_utf8_lossy(first),
                    String::from_utf8_lossy(other)
                );
            }
        }
    }
    // Duplicates that agree but are malformed: ignored as malformed.
    let pairs: [(&str, &[u8]); 4] = [
        ("x-rate-limit-remaining", b"1x"),
        ("x-rate-limit-remaining", b"1x"),
        ("x-rate-limit-reset", RESET),
        ("x-rate-limit-limit", b"3600"),
    ];
    assert_eq!(outcome(&named(&pairs)), None);
}

// ---------------------------------------------------------------------------------------
// Attack 2: the request policy's exact-bytes fast path
// ---------------------------------------------------------------------------------------

fn custom(base: &str) -> RequestPolicy {
    RequestPolicy::new(&Environment::custom(base).unwrap())
}

fn attach_uri(policy: &RequestPolicy, uri: &str) -> Option<bool> {
    let uri: Uri = uri.parse().ok()?;
    Some(policy.should_attach(&uri, &HeaderMap::new()))
}

/// Held: for each API origin (written in several ways), URIs as tower sees them get
/// the token exactly when scheme, host (ignoring case and a trailing dot) and port
/// (the scheme's default if none) are the API's. A URI `http` cannot parse is skipped.
#[test]
fn should_attach_gives_the_token_to_the_api_origin_only() {
    let table: &[(RequestPolicy, &[(&str, bool)])] = &[
        (
            RequestPolicy::new(&Environment::production()),
            &[
                ("https://api.procore.com/rest/v1.0/me", true),
                ("https://API.PROCORE.COM/rest/v1.0/me", true),
                ("https://api.procore.com./rest", true),
                ("https://api.procore.com:443/rest", true),
                ("HTTPS://api.procore.com/rest", true),
                ("http://api.procore.com/rest", false),
                ("http://api.procore.com:443/rest", false),
                ("https://api.procore.com:80/rest", false),
                ("https://api.procore.com:8443/rest", false),
                ("https://api.procore.com.evil.example/rest", false),
                ("https://api.procore.co/rest", false),
                ("https://api.procore.comm/rest", false),
                ("https://pi.procore.com/rest", false),
                ("https://xapi.procore.com/rest", false),
                ("https://.api.procore.com/rest", false),
                ("https://api-procore.com/rest", false),
                ("https://xn--api-procore-com/rest", false),
                ("https://evil.example/api.procore.com", false),
                ("https://api.procore.com@evil.example/rest", false),
                ("https://api.procore.com:443@evil.example/rest", false),
                ("https://[::1]/rest", false),
                ("https://storage.procore.com/rest", false),
                ("wss://api.procore.com/rest", false),
                ("ftp://api.procore.com/rest", false),
                ("/rest/v1.0/me", false),
                ("api.procore.com/rest", false),
            ],
        ),
        (
            custom("http://127.0.0.1:8080"),
            &[
                ("http://127.0.0.1:8080/rest", true),
                ("https://127.0.0.1:8080/rest", false),
                ("http://127.0.0.1/rest", false),
                ("http://127.0.0.1:80/rest", false),
                ("http://127.0.0.1:8081/rest", false),
                ("http://localhost:8080/rest", false),
                ("http://127.0.0.2:8080/rest", false),
                ("http://[::1]:8080/rest", false),
                ("http://127.0.0.10:8080/rest", false),
                ("http://27.0.0.1:8080/rest", false),
            ],
        ),
        (
            // Uppercase, a trailing dot and a port in the base.
            custom("https://API.Example.COM.:8443"),
            &[
                ("https://api.example.com:8443/rest", true),
                ("https://API.EXAMPLE.COM.:8443/rest", true),
                ("https://api.example.com./rest", false),
                ("https://api.example.com/rest", false),
                ("https://api.example.com:443/rest", false),
                ("http://api.example.com:8443/rest", false),
                ("https://api.example.co:8443/rest", false),
            ],
        ),
        (
            // The default port spelled out in the base.
            custom("https://api.example.com:443"),
            &[
                ("https://api.example.com/rest", true),
                ("https://api.example.com:443/rest", true),
                ("http://api.example.com:443/rest", false),
                ("http://api.example.com/rest", false),
                ("https://api.example.com:444/rest", false),
            ],
        ),
        (
            custom("http://[::1]:3000"),
            &[
                ("http://[::1]:3000/rest", true),
                ("http://[::1]/rest", false),
                ("http://[::2]:3000/rest", false),
                ("https://[::1]:3000/rest", false),
                ("http://127.0.0.1:3000/rest", false),
                ("http://localhost:3000/rest", false),
            ],
        ),
        (
            custom("http://localhost:3000"),
            &[
                ("http://localhost:3000/rest", true),
                ("http://LOCALHOST:3000/rest", true),
                ("http://localhost.:3000/rest", true),
                ("http://127.0.0.1:3000/rest", false),
                ("http://localhost:3001/rest", false),
                ("http://localhost/rest", false),
                ("http://localhostx:3000/rest", false),
            ],
        ),
    ];
    for (policy, cases) in table {
        for (uri, expected) in *cases {
            if let Some(attached) = attach_uri(policy, uri) {
                assert_eq!(attached, *expected, "{uri} with {policy:?}");
            }
        }
    }
}

/// Held: the same through `should_attach_to`, with what a `reqwest::Url` gives
/// (lowercase scheme and host, no port where it is the default) and with raw values
/// no URL parser would produce: uppercase, trailing dots, a port inside the host,
/// user info, NUL, spaces, non-ASCII look-alikes, empty parts.
#[test]
fn should_attach_to_gives_the_token_to_the_api_origin_only() {
    let production = RequestPolicy::new(&Environment::production());
    let cases: &[(&str, &str, Option<u16>, bool)] = &[
        ("https", "api.procore.com", None, true),
        ("https", "api.procore.com", Some(443), true),
        ("HTTPS", "API.Procore.Com", None, true),
        ("https", "api.procore.com.", None, true),
        ("Https", "api.procore.com.", Some(443), true),
        ("http", "api.procore.com", None, false),
        ("http", "api.procore.com", Some(443), false),
        ("https", "api.procore.com", Some(80), false),
        ("https", "api.procore.com", Some(8443), false),
        ("https", "api.procore.com", Some(0), false),
        ("wss", "api.procore.com", None, false),
        ("ws", "api.procore.com", Some(443), false),
        ("", "api.procore.com", None, false),
        ("https ", "api.procore.com", None, false),
        ("https", "", None, false),
        ("https", ".", None, false),
        ("https", "..", Some(443), false),
        ("https", "api.procore.com:443", None, false),
        ("https", "user@api.procore.com", None, false),
        ("https", "api.procore.com@evil.example", None, false),
        ("https", "api.procore.com\0", None, false),
        ("https", "api.procore.com ", None, false),
        ("https", " api.procore.com", None, false),
        ("https", "api.procore.com/", None, false),
        ("https", "apı.procore.com", None, false),
        ("https", "api.procore.com\u{3002}", None, false),
        ("https", "xn--api-procore-com", None, false),
        ("https", "api.procore.co", None, false),
        ("https", "api.procore.comx", None, false),
        ("https", "api.procore.com.evil.example", Some(443), false),
        ("https", "evil.example", Some(443), false),
        ("https", "[::1]", None, false),
        ("https", "storage.procore.com", None, false),
    ];
    for (scheme, host, port, expected) in cases {
        assert_eq!(
            production.should_attach_to(scheme, host, *port, &HeaderMap::new()),
            *expected,
            "{scheme:?} {host:?} {port:?}"
        );
    }

    let loopback = custom("http://127.0.0.1:8080");
    for (scheme, host, port, expected) in [
        ("http", "127.0.0.1", Some(8080), true),
        ("HTTP", "127.0.0.1.", Some(8080), true),
        ("http", "127.0.0.1", None, false),
        ("http", "127.0.0.1", Some(80), false),
        ("https", "127.0.0.1", Some(8080), false),
        ("http", "localhost", Some(8080), false),
        ("http", "127.0.0.1:8080", None, false),
        ("http", "127.0.0.1:8080", Some(8080), false),
        ("http", "[::1]", Some(8080), false),
    ] {
        assert_eq!(
            loopback.should_attach_to(scheme, host, port, &HeaderMap::new()),
            expected,
            "{scheme:?} {host:?} {port:?}"
        );
    }

    let written = custom("https://API.Example.COM.:8443");
    for (scheme, host, port, expected) in [
        ("https", "api.example.com", Some(8443), true),
        ("https", "api.example.com.", Some(8443), true),
        ("https", "API.EXAMPLE.COM", Some(8443), true),
        ("https", "api.example.com", None, false),
        ("https", "API.Example.COM.", None, false),
        ("http", "api.example.com", Some(8443), false),
    ] {
        assert_eq!(
            written.should_attach_to(scheme, host, port, &HeaderMap::new()),
            expected,
            "{scheme:?} {host:?} {port:?}"
        );
    }

    let default_port = custom("https://api.example.com:443");
    for (scheme, host, port, expected) in [
        ("https", "api.example.com", None, true),
        ("https", "api.example.com", Some(443), true),
        ("http", "api.example.com", Some(443), false),
        ("http", "api.example.com", None, false),
    ] {
        assert_eq!(
            default_port.should_attach_to(scheme, host, port, &HeaderMap::new()),
            expected,
            "{scheme:?} {host:?} {port:?}"
        );
    }

    let plain = custom("http://api.example.com");
    for (scheme, host, port, expected) in [
        ("http", "api.example.com", None, true),
        ("http", "api.example.com", Some(80), true),
        // A scheme that is not http defaults to 443, not 80.
        ("ws", "api.example.com", None, false),
        ("https", "api.example.com", Some(80), false),
        ("https", "api.example.com", None, false),
    ] {
        assert_eq!(
            plain.should_attach_to(scheme, host, port, &HeaderMap::new()),
            expected,
            "{scheme:?} {host:?} {port:?}"
        );
    }

    let ipv6 = custom("http://[::1]:3000");
    for (scheme, host, port, expected) in [
        ("http", "[::1]", Some(3000), true),
        ("http", "[::1]", None, false),
        ("http", "[::2]", Some(3000), false),
        ("https", "[::1]", Some(3000), false),
        ("http", "127.0.0.1", Some(3000), false),
    ] {
        assert_eq!(
            ipv6.should_attach_to(scheme, host, port, &HeaderMap::new()),
            expected,
            "{scheme:?} {host:?} {port:?}"
        );
    }
}
