//! A local emulator of Procore's OAuth 2.0 and REST API, served over real loopback HTTP, for
//! testing Procore clients.
//!
//! [`Emulator::start`] binds `127.0.0.1:0` and serves, on one port, both the auth endpoints
//! (`/oauth/authorize`, `/oauth/token`, `/oauth/revoke`, `/oauth/token/info`) and a small
//! protected API under `/rest/v1.0/`. It follows Procore's rules, most importantly single-use
//! refresh tokens that are burned even when the refresh call fails, and it can script the faults
//! a real deployment produces: 5xx, 429 with `Retry-After`, hangs, garbled or huge bodies,
//! `invalid_grant`, and a refresh whose response is lost after the token was rotated. It can
//! enforce Procore's per-token rate limits with the real headers (see [Rate
//! limits](#rate-limits)). [`Emulator::stats`] reports what the server saw, and
//! [`Emulator::api_log`] when each API request arrived, so tests can assert on it.
//!
//! Each emulator is independent (its own port and state), so many can run in parallel in one
//! test binary; dropping it shuts the server down.
//!
//! # Example
//!
//! Start one per test; point the client under test at [`Emulator::base_url`]:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use procore_auth_testkit::{Emulator, TokenFault};
//!
//! let emulator = Emulator::start().await; // http://127.0.0.1:<free port>
//! let grant = emulator.issue_token(); // a live access + refresh pair, no HTTP needed
//! let me = reqwest::Client::new()
//!     .get(format!("{}/rest/v1.0/me", emulator.base_url()))
//!     .bearer_auth(&grant.access_token)
//!     .send()
//!     .await
//!     .unwrap();
//! assert_eq!(me.status(), 200);
//! assert_eq!(emulator.stats().api_calls, 1);
//!
//! // Script what the next token-endpoint call does: burn the refresh token, then answer 500.
//! emulator.push_token_fault(TokenFault::RotateThenFail);
//! # }
//! ```
//!
//! # Routes
//!
//! | route | behaviour |
//! |---|---|
//! | `GET /oauth/authorize` | auto-approves for the default user, or for the user whose login is the `login_hint` parameter: 302 to `redirect_uri?code=…&state=…`, or an HTML page showing the code for `urn:ietf:wg:oauth:2.0:oob`; 400 for an unknown client, an unregistered `redirect_uri` or an unknown `login_hint` |
//! | `POST /oauth/token` | grants `authorization_code` (tokens for the user who approved), `refresh_token` (rotating, single use; the new pair keeps the user) and `client_credentials` (no refresh token; acts for a service account, no user); form-encoded or JSON body; RFC 6749 errors |
//! | `POST /oauth/revoke` | revokes the access token and its refresh token; 200 whether or not the token was known |
//! | `GET /oauth/token/info` | Doorkeeper-style token introspection for a bearer token (`resource_owner_id`: the user's id); 401 if it is not live |
//! | `GET /rest/v1.0/me` | the token's user: `{"id":…,"login":…,"name":…,"authorization_received":true}` (the service account for client-credentials tokens) |
//! | `GET /rest/v1.0/companies` | one company |
//! | `POST`/`PUT`/`PATCH /rest/v1.0/echo` | answers with the request body and its `Content-Type` |
//! | `GET /rest/v1.0/files/{id}` | 302 to [`Emulator::alternate_host_url`]`/storage/{id}` (another host name, same server) |
//! | `GET /storage/{id}` | the file's bytes; counts requests and those carrying `Authorization` |
//! | any `/rest/` route, any method | first a scripted [`ApiFault`] if one is queued (429, 503 with `Retry-After` in seconds or as an HTTP-date, 401), then the presented token's rate limits (429 with `Retry-After` when [`EmulatorBuilder::rate_limit`] or [`EmulatorBuilder::spike_limit`] is exceeded), then the bearer and company checks below |
//!
//! Every `/rest/` response carries `X-Rate-Limit-Limit`, `X-Rate-Limit-Remaining` and
//! `X-Rate-Limit-Reset` for the presented token's budget (see [Rate limits](#rate-limits)),
//! and echoes the request's `Procore-Company-Id` header. A missing, unknown,
//! expired or revoked bearer gets 401 `{"errors":"…","authorization_received":<bool>}` (the last
//! field is the emulator's, so tests can see whether a client sent a token to a host it should
//! not trust); a `Procore-Company-Id` equal to
//! [`EmulatorBuilder::forbidden_company`] gets 403.
//!
//! # Several users
//!
//! Every emulator has a default user (id 4242, login `testkit.user@example.com`), whom the
//! methods without a user ([`Emulator::issue_token`], [`Emulator::authorize_code`]) and
//! `/oauth/authorize` without `login_hint` act for. Create more with
//! [`EmulatorBuilder::users`] or [`Emulator::add_user`]; each [`UserId`] has its own id, login
//! and name, which `GET /rest/v1.0/me` answers for that user's tokens.
//!
//! Tokens and codes belong to a user ([`Emulator::issue_token_for`],
//! [`Emulator::authorize_code_for`], [`TokenGrant::user`]), and a refresh keeps it. Per user
//! there are scripted faults ([`Emulator::push_token_fault_for`]: taken only by token calls
//! that present that user's refresh token or code), counters ([`Emulator::user_stats`]),
//! expiry and revocation ([`Emulator::expire_tokens_of`], [`Emulator::revoke_tokens_of`]).
//! Lookups are by hash, so thousands of users and concurrent requests cost no more per request
//! than one.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use procore_auth_testkit::{Emulator, TokenFault};
//!
//! let emulator = Emulator::builder().users(2).start().await;
//! let (alice, bob) = (emulator.users()[0], emulator.users()[1]);
//! let alices = emulator.issue_token_for(alice);
//! let bobs = emulator.issue_token_for(bob);
//!
//! // Bob's refreshes fail twice (503, refresh token left live); Alice's are unaffected.
//! emulator.push_token_fault_for(bob, TokenFault::Status(503));
//! emulator.push_token_fault_for(bob, TokenFault::Status(503));
//!
//! let http = reqwest::Client::new();
//! let refresh = |refresh_token: String| {
//!     http.post(format!("{}/oauth/token", emulator.base_url()))
//!         .form(&[
//!             ("grant_type", "refresh_token"),
//!             ("refresh_token", refresh_token.as_str()),
//!             ("client_id", emulator.client_id()),
//!             ("client_secret", emulator.client_secret()),
//!         ])
//!         .send()
//! };
//! assert_eq!(refresh(alices.refresh_token.unwrap()).await.unwrap().status(), 200);
//! assert_eq!(refresh(bobs.refresh_token.clone().unwrap()).await.unwrap().status(), 503);
//! assert_eq!(emulator.user_stats(alice).refresh_grants, 1);
//! assert_eq!(emulator.user_stats(bob).failed_token_calls, 1);
//!
//! // `/me` tells the users apart.
//! let me: serde_json::Value = http
//!     .get(format!("{}/rest/v1.0/me", emulator.base_url()))
//!     .bearer_auth(&bobs.access_token)
//!     .send()
//!     .await
//!     .unwrap()
//!     .json()
//!     .await
//!     .unwrap();
//! assert_eq!(me["id"], bob.get());
//! assert_eq!(me["login"], emulator.user_login(bob).as_str());
//! # }
//! ```
//!
//! # Token lifetimes and early expiry
//!
//! Access tokens claim `expires_in` = [`EmulatorBuilder::access_token_lifetime`] (default
//! 5400 s) and `created_at` = their issue time floored to whole Unix seconds. Like Procore, the
//! server accepts a token until exactly `expires_in` after the instant it was minted
//! (millisecond precision), so a client computing `created_at + expires_in` is never late.
//! Two knobs make the server refuse tokens that a client still believes live, for access tokens
//! from every grant (and [`Emulator::issue_token`]); the refusals are 401
//! `"The access token expired"` on the `/rest/` routes and `/oauth/token/info`:
//!
//! * [`EmulatorBuilder::floor_issue_times`]: an independent RFC 6749 server that keeps issue
//!   times in whole seconds and sends no `created_at`. Tokens die `expires_in` after the
//!   floored issue time, up to a second before the `receive time + expires_in` a client falls
//!   back to.
//! * [`EmulatorBuilder::expire_early`]: tokens die a fixed time before their issue time
//!   `+ expires_in`, while responses stay truthful: the deterministic choice for tests.
//!
//! [`Emulator::expire_all_tokens`] expires every token issued so far at once,
//! [`Emulator::expire_tokens_of`] those of one user.
//!
//! # Rate limits
//!
//! Procore limits requests per access token (3600 per 60-minute window by default) and
//! reports the budget on every response. The emulator keeps a budget per access token it
//! issued (requests without a token it knows share one anonymous budget), so two users', or
//! one user's two tokens, never share a limit:
//!
//! * **Without a knob**, each token reports 3600 per hour in windows aligned to the hour
//!   (`X-Rate-Limit-Reset` is the next full hour), counting down to 0, and nothing is
//!   enforced: no request is ever answered 429 by the limiter.
//! * [`EmulatorBuilder::rate_limit`]`(limit, window)` enforces fixed windows that start at
//!   the token's first API request and end exactly `window` later. `X-Rate-Limit-Remaining`
//!   is what is left **after** this request; `X-Rate-Limit-Reset` is the window's end in Unix
//!   seconds **rounded up**, so a client that waits until that second always finds a new
//!   window. Over the limit: 429 with the same headers, `Retry-After` (seconds to the end,
//!   rounded up) and a JSON body. 429s do not count against the budget; every other
//!   answer does, except scripted [`ApiFault`]s.
//! * [`EmulatorBuilder::spike_limit`]`(limit, window)` adds a sliding window per token: over
//!   it, 429 with `Retry-After`, while the `X-Rate-Limit-*` headers keep describing the main
//!   window (Procore documents no spike headers).
//! * Scripted 503s ([`ApiFault::Unavailable`], [`ApiFault::UnavailableHttpDate`],
//!   [`ApiFault::UnavailableRaw`]) play Procore under heavy load; each applies to the next
//!   API request, whatever its method.
//!
//! [`Stats::rate_limited_served`], [`Stats::spike_limited_served`],
//! [`Stats::service_unavailable_served`] and [`UserStats::rate_limited_served`] count the
//! refusals. With [`EmulatorBuilder::record_api_log`], [`Emulator::api_log`] lists every API
//! request with its method, path, status and arrival time on the server's clock: enough to
//! check that a client came back no sooner than a `Retry-After` allowed, or did not retry a
//! `POST`, without timing the client.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use std::time::Duration;
//!
//! use procore_auth_testkit::{ApiFault, Emulator};
//!
//! let emulator = Emulator::builder()
//!     .rate_limit(2, Duration::from_secs(60))
//!     .record_api_log(true)
//!     .start()
//!     .await;
//! let token = emulator.issue_token().access_token;
//! let http = reqwest::Client::new();
//! let me = || {
//!     http.get(format!("{}/rest/v1.0/me", emulator.base_url()))
//!         .bearer_auth(&token)
//!         .send()
//! };
//! let header = |response: &reqwest::Response, name: &str| {
//!     response.headers()[name].to_str().unwrap().to_owned()
//! };
//!
//! let first = me().await.unwrap();
//! assert_eq!(first.status(), 200);
//! assert_eq!(header(&first, "x-rate-limit-limit"), "2");
//! assert_eq!(header(&first, "x-rate-limit-remaining"), "1");
//! assert_eq!(me().await.unwrap().status(), 200);
//!
//! let limited = me().await.unwrap();
//! assert_eq!(limited.status(), 429);
//! assert_eq!(header(&limited, "x-rate-limit-remaining"), "0");
//! assert_eq!(header(&limited, "x-rate-limit-reset"), header(&first, "x-rate-limit-reset"));
//! let retry_after: u64 = header(&limited, "retry-after").parse().unwrap();
//! assert!((59..=60).contains(&retry_after));
//!
//! // A scripted 503 answers in front of the limiter, with its own Retry-After.
//! emulator.push_api_fault(ApiFault::Unavailable { retry_after_secs: 2 });
//! let unavailable = me().await.unwrap();
//! assert_eq!(unavailable.status(), 503);
//! assert_eq!(header(&unavailable, "retry-after"), "2");
//!
//! let stats = emulator.stats();
//! assert_eq!((stats.rate_limited_served, stats.service_unavailable_served), (1, 1));
//! let statuses: Vec<u16> = emulator.api_log().iter().map(|r| r.status).collect();
//! assert_eq!(statuses, [200, 200, 429, 503]);
//! # }
//! ```
//!
//! # Slow responses
//!
//! [`EmulatorBuilder::latency`] holds a route's responses back **after** the request took
//! effect: with `latency(Route::Token, …)` a refresh has rotated the refresh token (and
//! [`Emulator::stats`] shows it) while its response is still on the way.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod emulator;
mod fault;
mod params;
mod rate_limit;
mod redis_server;
mod routes;
mod server;
mod state;
mod stats;
mod token;
mod user;

pub use emulator::{Emulator, EmulatorBuilder, Route, TokenGrant};
pub use fault::{ApiFault, TokenFault};
pub use redis_server::{RedisServer, RedisServerBuilder};
pub use stats::{ApiRequest, Stats};
pub use user::{UserId, UserStats};
