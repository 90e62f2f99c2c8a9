//! Real OS processes sharing one Procore user through one real `redis-server`.
//!
//! This test binary re-executes itself: [`child`] is an ignored test that does
//! nothing unless [`CHILD`] is set in its environment, which only [`Replica::spawn`]
//! does. A child is one replica of a service: a [`TokenManager`](procore_auth_core::TokenManager)
//! over `RedisStore::for_key`, refreshing with a `RefreshTokenGrant` over
//! `ReqwestTransport`, and a `reqwest` client with `ProcoreAuthMiddleware` through
//! which it sends `GET /rest/v1.0/me` to the emulator (which runs in the parent).
//!
//! The parent drives each child over its stdin, one command a line, and reads the
//! answers from its stdout, lines that carry [`MARK`] (the test harness of the child
//! prints its own lines too):
//!
//! | command | answer |
//! |---|---|
//! | (start) | `ready pid=<pid>` |
//! | `fire <n>` | `fired ok=… store=… backoff=… reauth=… peer_refused=… status=… other=… detail=…` after `n` concurrent requests |
//! | `token` | `token <refresh token or -> <access token or ->`: the manager's current pair |
//! | `store-error` | `store-error <none, conflict, io, busy or corrupt>`: the manager's last store error |
//! | `authorize <code>` | `authorized ok` or `authorized error …`: exchanges the code, `set_token` |
//!
//! Children are killed with SIGKILL when their [`Replica`] is dropped, so a failing
//! (panicking) test leaves no process behind.

mod child;

use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use procore_auth_core::{
    AuthorizationCode, ClientSecret, Environment, OAuthClient, Token, TokenStore,
};
use procore_auth_redis::{RedisStore, DEFAULT_PREFIX};
use procore_auth_reqwest::ReqwestTransport;
use procore_auth_testkit::{Emulator, RedisServer};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// Set (to anything) in a child's environment: makes [`child`] run.
const CHILD: &str = "PROCORE_AUTH_REDIS_TEST_CHILD";
/// Marks the child's protocol lines on its stdout.
const MARK: &str = "<<replica>>";

/// The child's configuration, passed in its environment.
const API_URL: &str = "PROCORE_AUTH_REDIS_TEST_API_URL";
const AUTH_URL: &str = "PROCORE_AUTH_REDIS_TEST_AUTH_URL";
const CLIENT_ID: &str = "PROCORE_AUTH_REDIS_TEST_CLIENT_ID";
const CLIENT_SECRET: &str = "PROCORE_AUTH_REDIS_TEST_CLIENT_SECRET";
const REDIS_URL: &str = "PROCORE_AUTH_REDIS_TEST_REDIS_URL";
const KEY: &str = "PROCORE_AUTH_REDIS_TEST_KEY";
const LEASE_TTL_MS: &str = "PROCORE_AUTH_REDIS_TEST_LEASE_TTL_MS";
const BACKOFF_MS: &str = "PROCORE_AUTH_REDIS_TEST_BACKOFF_MS";
const STORE_RECHECK_MS: &str = "PROCORE_AUTH_REDIS_TEST_STORE_RECHECK_MS";

/// The tenant key every multi-process test shares its user under.
pub(crate) const USER_KEY: &str = "company-7/user-4242";

/// How long the parent waits for any one answer from a child before failing the
/// test: a regression fails, it does not hang.
const ANSWER_LIMIT: Duration = Duration::from_secs(60);

/// The child process's entry point (see the module docs); a no-op in a normal run.
#[test]
#[ignore = "a child process of the multi-process tests; they run it themselves"]
fn child() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(child::run());
}

/// How to start children: where the emulator and Redis are, and the knobs.
#[derive(Clone, Debug)]
pub(crate) struct ChildConfig {
    vars: Vec<(&'static str, String)>,
}

impl ChildConfig {
    /// Children of `emulator` and `redis`, sharing [`USER_KEY`], with the library's
    /// defaults otherwise.
    pub(crate) fn new(emulator: &Emulator, redis: &RedisServer) -> Self {
        Self {
            vars: vec![
                (API_URL, emulator.base_url()),
                (CLIENT_ID, emulator.client_id().to_owned()),
                (CLIENT_SECRET, emulator.client_secret().to_owned()),
                (REDIS_URL, redis.url()),
                (KEY, USER_KEY.to_owned()),
            ],
        }
    }

    fn set(mut self, name: &'static str, value: String) -> Self {
        self.vars.retain(|(set, _)| *set != name);
        self.vars.push((name, value));
        self
    }

    /// Token calls go to `url` instead of the emulator (API calls still go there).
    pub(crate) fn auth_url(self, url: String) -> Self {
        self.set(AUTH_URL, url)
    }

    /// `RedisStore::builder(..).lease_ttl(ttl)`.
    pub(crate) fn lease_ttl(self, ttl: Duration) -> Self {
        self.set(LEASE_TTL_MS, ttl.as_millis().to_string())
    }

    /// `TokenManagerBuilder::backoff(delay, delay)`.
    pub(crate) fn backoff(self, delay: Duration) -> Self {
        self.set(BACKOFF_MS, delay.as_millis().to_string())
    }

    /// `TokenManagerBuilder::store_recheck(interval)`.
    pub(crate) fn store_recheck(self, interval: Duration) -> Self {
        self.set(STORE_RECHECK_MS, interval.as_millis().to_string())
    }
}

/// What one `fire` did: how its requests ended.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Fired {
    /// 200 from the API.
    pub(crate) ok: u64,
    /// `Error::Store` that `is_transient()`.
    pub(crate) store: u64,
    /// `Error::BackingOff` after a store failure (transient too).
    pub(crate) backoff: u64,
    /// `Error::ReauthorizationRequired`…
    pub(crate) reauth: u64,
    /// …of which this many because a peer's refresh with this refresh token was
    /// refused (`RefreshTurn::PeerRefused`), not Procore's own answer.
    pub(crate) peer_refused: u64,
    /// Another HTTP status than 200.
    pub(crate) status: u64,
    /// Any other error.
    pub(crate) other: u64,
    /// The distinct failures, for messages.
    pub(crate) detail: String,
}

impl Fired {
    pub(crate) fn failed(&self) -> u64 {
        self.store + self.backoff + self.reauth + self.status + self.other
    }

    /// The sum over `fired`.
    pub(crate) fn total(fired: &[Fired]) -> Fired {
        let mut total = Fired::default();
        for one in fired {
            total.ok += one.ok;
            total.store += one.store;
            total.backoff += one.backoff;
            total.reauth += one.reauth;
            total.peer_refused += one.peer_refused;
            total.status += one.status;
            total.other += one.other;
            if !one.detail.is_empty() {
                total.detail.push_str(&one.detail);
                total.detail.push(' ');
            }
        }
        total
    }

    fn parse(answer: &str) -> Self {
        let (counts, detail) = answer.split_once("detail=").unwrap_or((answer, ""));
        let mut fired = Fired {
            detail: detail.trim().to_owned(),
            ..Fired::default()
        };
        for pair in counts.split_whitespace() {
            let (name, value) = pair.split_once('=').expect("name=value");
            let value: u64 = value.parse().expect("a count");
            match name {
                "ok" => fired.ok = value,
                "store" => fired.store = value,
                "backoff" => fired.backoff = value,
                "reauth" => fired.reauth = value,
                "peer_refused" => fired.peer_refused = value,
                "status" => fired.status = value,
                "other" => fired.other = value,
                _ => panic!("unknown count {name} in {answer:?}"),
            }
        }
        fired
    }
}

/// One child process: a replica sharing the user through Redis.
#[derive(Debug)]
pub(crate) struct Replica {
    name: String,
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    pid: u32,
}

impl Replica {
    /// Starts a child and waits until it is ready (connected to Redis, nothing loaded).
    pub(crate) async fn spawn(name: &str, config: &ChildConfig) -> Self {
        let mut replica = Self::start(name, config);
        replica.ready().await;
        replica
    }

    /// Starts `n` children at once and waits until all are ready.
    pub(crate) async fn spawn_many(prefix: &str, n: usize, config: &ChildConfig) -> Vec<Self> {
        let mut replicas: Vec<Self> = (0..n)
            .map(|i| Self::start(&format!("{prefix}{i}"), config))
            .collect();
        for replica in &mut replicas {
            replica.ready().await;
        }
        replicas
    }

    fn start(name: &str, config: &ChildConfig) -> Self {
        let exe = std::env::current_exe().expect("the test binary's path");
        let mut child = Command::new(exe)
            .args(["--exact", "processes::child", "--ignored", "--nocapture"])
            .args(["--test-threads", "1"])
            .env(CHILD, "1")
            .envs(config.vars.iter().map(|(name, value)| (name, value)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("the test binary starts as a child");
        let pid = child.id().expect("a running child has a pid");
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        Self {
            name: name.to_owned(),
            child,
            stdin,
            stdout,
            pid,
        }
    }

    async fn ready(&mut self) {
        let answer = self.answer("ready").await;
        assert_eq!(answer, format!("pid={}", self.pid), "{}", self.name);
    }

    /// Sends a command line.
    pub(crate) async fn command(&mut self, line: &str) {
        let sent = async {
            self.stdin.write_all(line.as_bytes()).await?;
            self.stdin.write_all(b"\n").await?;
            self.stdin.flush().await
        };
        sent.await
            .unwrap_or_else(|error| panic!("{}: cannot send {line:?}: {error}", self.name));
    }

    /// The next answer tagged `tag` (the rest of its line).
    pub(crate) async fn answer(&mut self, tag: &str) -> String {
        let name = self.name.clone();
        let read = async {
            loop {
                let line = self
                    .stdout
                    .next_line()
                    .await
                    .unwrap_or_else(|error| panic!("{name}: cannot read: {error}"))
                    .unwrap_or_else(|| panic!("{name} exited while the test waited for {tag:?}"));
                let Some((_, said)) = line.split_once(MARK) else {
                    continue;
                };
                let said = said.trim();
                let (said_tag, rest) = said.split_once(' ').unwrap_or((said, ""));
                assert_eq!(said_tag, tag, "{name} answered {said:?}");
                return rest.to_owned();
            }
        };
        tokio::time::timeout(ANSWER_LIMIT, read)
            .await
            .unwrap_or_else(|_| panic!("{name} did not answer {tag:?} within {ANSWER_LIMIT:?}"))
    }

    /// Sends `n` concurrent requests and waits for how they ended.
    pub(crate) async fn fire(&mut self, n: usize) -> Fired {
        self.start_fire(n).await;
        self.fired().await
    }

    /// Starts sending `n` concurrent requests; [`fired`](Self::fired) waits for them.
    pub(crate) async fn start_fire(&mut self, n: usize) {
        self.command(&format!("fire {n}")).await;
    }

    /// How the requests of the last [`start_fire`](Self::start_fire) ended.
    pub(crate) async fn fired(&mut self) -> Fired {
        Fired::parse(&self.answer("fired").await)
    }

    /// The refresh token of the child's current pair (`-` for none).
    pub(crate) async fn refresh_token(&mut self) -> String {
        self.command("token").await;
        let answer = self.answer("token").await;
        answer
            .split_whitespace()
            .next()
            .expect("a refresh token")
            .to_owned()
    }

    /// The child manager's last store error: `none`, `conflict`, `io`, `busy`, `corrupt`.
    pub(crate) async fn store_error(&mut self) -> String {
        self.command("store-error").await;
        self.answer("store-error").await
    }

    /// Exchanges an authorization `code` in the child and sets the token (a new
    /// authorization on this replica).
    pub(crate) async fn authorize(&mut self, code: &str) {
        self.command(&format!("authorize {code}")).await;
        assert_eq!(self.answer("authorized").await, "ok", "{}", self.name);
    }

    /// SIGKILL, and waits for the process to be gone.
    pub(crate) async fn kill(&mut self) {
        self.child
            .kill()
            .await
            .unwrap_or_else(|error| panic!("{}: cannot kill: {error}", self.name));
    }

    /// SIGSTOP: the process stalls (as in a long GC pause or a frozen VM); its lease
    /// is no longer extended.
    pub(crate) fn stop(&self) {
        signal("-STOP", self.pid);
    }

    /// SIGCONT after [`stop`](Self::stop).
    pub(crate) fn resume(&self) {
        signal("-CONT", self.pid);
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        // SIGKILL also ends a stopped process.
        let _ = self.child.start_kill();
    }
}

fn signal(signal: &str, pid: u32) {
    let status = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("kill(1) runs");
    assert!(status.success(), "kill {signal} {pid} failed");
}

/// Sends `fire n` to every replica at once, then collects every answer.
pub(crate) async fn fire_all(replicas: &mut [Replica], n: usize) -> Vec<Fired> {
    for replica in replicas.iter_mut() {
        replica.start_fire(n).await;
    }
    let mut fired = Vec::with_capacity(replicas.len());
    for replica in replicas.iter_mut() {
        fired.push(replica.fired().await);
    }
    fired
}

/// The OAuth client of the emulator's registered application.
pub(crate) fn oauth(emulator: &Emulator) -> OAuthClient {
    OAuthClient::new(
        Environment::custom(&emulator.base_url()).expect("the emulator's base URL"),
        emulator.client_id(),
        ClientSecret::new(emulator.client_secret()),
    )
}

/// The default user's token from a real authorization-code exchange (one token call).
pub(crate) async fn user_token(emulator: &Emulator) -> Token {
    let code = emulator.authorize_code_for(emulator.default_user(), "http://localhost");
    oauth(emulator)
        .exchange_code(
            &ReqwestTransport::new().expect("a token transport"),
            &AuthorizationCode::new(code),
            "http://localhost",
        )
        .await
        .expect("an authorization-code exchange")
}

/// A user's token from a real authorization-code exchange, saved under [`USER_KEY`]
/// as an app's OAuth callback would.
pub(crate) async fn seed(emulator: &Emulator, redis: &RedisServer) -> Token {
    let token = user_token(emulator).await;
    key_store(redis)
        .await
        .save(&token, None)
        .await
        .expect("the first token is saved");
    token
}

async fn key_store(redis: &RedisServer) -> impl TokenStore {
    RedisStore::connect(redis.url())
        .await
        .expect("redis answers")
        .for_key(USER_KEY)
}

/// The pair stored under [`USER_KEY`], read with a connection of the parent's own.
pub(crate) async fn stored(redis: &RedisServer) -> Option<Token> {
    key_store(redis)
        .await
        .load()
        .await
        .expect("the stored token loads")
}

/// The refresh token of `token`.
pub(crate) fn refresh_of(token: &Token) -> String {
    token
        .refresh_token()
        .expect("a refresh token")
        .secret()
        .to_owned()
}

/// A raw connection, for what the store does not expose (the lease key, `CLIENT PAUSE`).
pub(crate) async fn raw(redis: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis.url())
        .expect("a redis URL")
        .get_multiplexed_async_connection()
        .await
        .expect("redis answers")
}

/// Whether a process holds the refresh lease of [`USER_KEY`] (`<prefix>{key}:lease`).
pub(crate) async fn lease_held(redis: &RedisServer) -> bool {
    let exists: i64 = redis::cmd("EXISTS")
        .arg(format!("{DEFAULT_PREFIX}{{{USER_KEY}}}:lease"))
        .query_async(&mut raw(redis).await)
        .await
        .expect("EXISTS");
    exists == 1
}

/// Waits until `condition` holds (checked every 5 ms), failing after 20 s.
pub(crate) async fn eventually<F: std::future::Future<Output = bool>>(
    what: &str,
    mut condition: impl FnMut() -> F,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still waiting after 20 s: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A token endpoint that accepts connections and never answers: a request sent to it
/// never reaches Procore. Counts the connections it accepted.
#[derive(Debug)]
pub(crate) struct BlackHole {
    url: String,
    accepted: Arc<AtomicUsize>,
}

impl BlackHole {
    pub(crate) fn start() -> Self {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("a loopback port");
        let url = format!("http://{}", listener.local_addr().expect("an address"));
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        // Detached: it ends with the test binary. Connections are held open, unread.
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming().flatten() {
                counter.fetch_add(1, Ordering::SeqCst);
                held.push(stream);
            }
        });
        Self { url, accepted }
    }

    pub(crate) fn url(&self) -> String {
        self.url.clone()
    }

    pub(crate) fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}
