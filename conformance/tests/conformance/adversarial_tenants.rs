//! Adversarial end-to-end scenarios for the multi-tenant registry (issue 12), through
//! both adapters against the emulator. Each fails if the bug it names exists.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use http::{Request, StatusCode};
use procore_auth_conformance::{
    me, scenario, tenant_registry, user_tokens, wait_until, Client, Reply,
};
use procore_auth_core::{
    BoxFuture, KeyedMemoryStore, KeyedTokenStore, StoreError, Token, TokenRegistry,
};
use procore_auth_testkit::{Emulator, Route, UserId};

/// The `id` of the user a `/me` reply is for.
fn identity(reply: &Reply) -> u64 {
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    reply.json()["id"]
        .as_u64()
        .unwrap_or_else(|| panic!("no id: {}", reply.text()))
}

async fn insert_tokens(registry: &TokenRegistry<UserId>, emulator: &Emulator, users: &[UserId]) {
    for (&user, token) in users.iter().zip(user_tokens(emulator, users).await) {
        registry.insert(user, token).await.expect("inserted");
    }
}

/// A keyed memory store whose saves fail for a key when told to (a full disk, a Redis
/// blip), for that key only.
#[derive(Clone, Debug, Default)]
struct FlakyStore {
    memory: KeyedMemoryStore<UserId>,
    failing_saves: Arc<Mutex<HashMap<UserId, u32>>>,
}

impl FlakyStore {
    fn fail_next_save(&self, user: UserId) {
        self.failing_saves.lock().unwrap().insert(user, 1);
    }
}

impl KeyedTokenStore<UserId> for FlakyStore {
    fn load<'a>(&'a self, key: &'a UserId) -> BoxFuture<'a, Result<Option<Token>, StoreError>> {
        self.memory.load(key)
    }

    fn save<'a>(
        &'a self,
        key: &'a UserId,
        token: &'a Token,
        expected: Option<&'a Token>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let failing = match self.failing_saves.lock().unwrap().get_mut(key) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        };
        if failing {
            return Box::pin(async { Err(std::io::Error::other("disk full").into()) });
        }
        self.memory.save(key, token, expected)
    }

    fn clear<'a>(&'a self, key: &'a UserId) -> BoxFuture<'a, Result<(), StoreError>> {
        self.memory.clear(key)
    }
}

/// Requests for `users` one after another, so that idle tenants are evicted.
async fn cycle(client: &Client, me: &str, users: &[UserId]) {
    for &user in users {
        for _ in 0..3 {
            assert_eq!(
                identity(&client.get_as(me, user).await.unwrap()),
                user.get()
            );
        }
    }
}

scenario! {
    /// A's token is rotated by a refresh whose save to the store fails once: the manager
    /// keeps the new pair in memory only. A goes idle and is evicted by other tenants'
    /// requests; the next request reloads A's old pair, whose refresh token the server
    /// burnt: A's next refresh is `invalid_grant` and A must sign in again, for nothing.
    #[tokio::test]
    async fn a_failed_save_then_eviction_locks_the_tenant_out(adapter) {
        let emulator = Emulator::builder().users(8).start().await;
        let users = emulator.users();
        let a = users[0];
        let store = FlakyStore::default();
        let registry = tenant_registry(adapter, &emulator, |_, manager| manager)
            .store(store.clone())
            .max_resident(2)
            .build();
        insert_tokens(&registry, &emulator, &users).await;
        let client = Client::with_tokens(adapter, registry.clone());
        let me = me(&emulator);
        assert_eq!(identity(&client.get_as(&me, a).await.unwrap()), a.get());

        store.fail_next_save(a);
        emulator.expire_tokens_of(a);
        assert_eq!(identity(&client.get_as(&me, a).await.unwrap()), a.get());
        assert_eq!(emulator.user_stats(a).refresh_grants, 1);

        cycle(&client, &me, &users[1..]).await;
        let evicted = registry.tenant_metrics(&a).is_none();

        emulator.expire_tokens_of(a);
        let reply = client.get_as(&me, a).await;
        let seen = emulator.user_stats(a);
        assert!(
            reply.is_ok() && seen.failed_token_calls == 0,
            "A locked out after one failed save (evicted: {evicted}): {reply:?}; {seen:?}"
        );
        assert_eq!(identity(&reply.unwrap()), a.get());
    }
}

scenario! {
    /// Eviction racing with requests: 30 tenants through a registry keeping 2, all their
    /// access tokens expired by the server, 6 concurrent requests per tenant: every reply
    /// is its own tenant's, each tenant costs exactly one refresh and no token call
    /// fails (two managers for one tenant would present a refresh token twice).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn eviction_racing_with_concurrent_requests_keeps_one_refresh_per_tenant(adapter) {
        let emulator = Emulator::builder().users(30).start().await;
        let users = emulator.users();
        let registry = tenant_registry(adapter, &emulator, |_, manager| manager)
            .max_resident(2)
            .build();
        insert_tokens(&registry, &emulator, &users).await;
        let client = Client::with_tokens(adapter, registry.clone());
        let me = me(&emulator);
        for round in 0..3 {
            emulator.expire_all_tokens();
            let requests: Vec<_> = users
                .iter()
                .flat_map(|&user| std::iter::repeat_n(user, 6))
                .map(|user| {
                    let (client, me) = (client.clone(), me.clone());
                    tokio::spawn(async move { (user, client.get_as(&me, user).await) })
                })
                .collect();
            for request in requests {
                let (user, reply) = request.await.unwrap();
                let reply = reply.unwrap_or_else(|error| panic!("{user}: {error:?}"));
                assert_eq!(identity(&reply), user.get(), "tenant {user} got another's identity");
            }
            for &user in &users {
                let seen = emulator.user_stats(user);
                assert_eq!(seen.refresh_grants, round + 1, "tenant {user}: {seen:?}");
                assert_eq!(seen.failed_token_calls, 0, "tenant {user}: {seen:?}");
            }
        }
    }
}

scenario! {
    /// Requests dropped at every stage (timeouts from 1 ms to 60 ms against a token
    /// endpoint taking 30 ms), for 20 tenants through a registry keeping 3: the refreshes
    /// they started still finish, nothing stays pinned (10 other tenants' requests bring
    /// residency back to 3), and every tenant is served afterwards with one refresh in
    /// all and no failed token call.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_cancelled_at_every_stage_leave_nothing_stuck_or_pinned(adapter) {
        let emulator = Emulator::builder()
            .users(30)
            .latency(Route::Token, Duration::from_millis(30))
            .start()
            .await;
        let everyone = emulator.users();
        let (users, others) = everyone.split_at(20);
        let registry = tenant_registry(adapter, &emulator, |_, manager| manager)
            .max_resident(3)
            .build();
        insert_tokens(&registry, &emulator, &everyone).await;
        let client = Client::with_tokens(adapter, registry.clone());
        let me = me(&emulator);
        emulator.expire_all_tokens();
        let requests: Vec<_> = users
            .iter()
            .enumerate()
            .flat_map(|(n, &user)| (0..4).map(move |k| (user, 1 + ((n * 4 + k) * 7) % 60)))
            .map(|(user, millis)| {
                let (client, me) = (client.clone(), me.clone());
                tokio::spawn(async move {
                    let limit = Duration::from_millis(millis as u64);
                    let _ = tokio::time::timeout(limit, client.get_as(&me, user)).await;
                })
            })
            .collect();
        for request in requests {
            request.await.unwrap();
        }
        // A tenant whose requests all gave up before their 401 came back started no
        // refresh; those that did finish theirs in the background.
        wait_until("the refreshes under way finished", || {
            users.iter().all(|&user| {
                let seen = emulator.user_stats(user);
                seen.token_calls == 1 + seen.refresh_grants + seen.failed_token_calls
            })
        })
        .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Other tenants' requests (misses, which evict): nothing of the burst stays pinned.
        cycle(&client, &me, others).await;
        let metrics = registry.metrics();
        assert!(metrics.resident <= 3, "{metrics:?}");
        cycle(&client, &me, users).await;
        for &user in users {
            let seen = emulator.user_stats(user);
            assert_eq!((seen.refresh_grants, seen.failed_token_calls), (1, 0), "{user}: {seen:?}");
        }
    }
}

scenario! {
    /// A key function that panics for one request (a malformed header, say) fails that
    /// request only: the same client keeps serving every tenant, with its own token.
    #[tokio::test]
    async fn a_panicking_key_function_fails_only_its_request(adapter) {
        let emulator = Emulator::builder().users(3).start().await;
        let users = emulator.users();
        let registry: TokenRegistry<String> =
            tenant_registry(adapter, &emulator, |_, manager| manager).build();
        for (&user, token) in users.iter().zip(user_tokens(&emulator, &users).await) {
            registry.insert(emulator.user_login(user), token).await.unwrap();
        }
        let keyed = registry.keyed_by(|headers, _| {
            let tenant = headers.get("x-tenant")?.to_str().ok()?;
            assert_ne!(tenant, "boom", "the key function panics");
            Some(tenant.to_owned())
        });
        let client = Client::with_tokens(adapter, keyed);
        let me = me(&emulator);
        let as_tenant = |login: &str| {
            Request::get(&me).header("x-tenant", login).body(Bytes::new()).unwrap()
        };
        let outcome = AssertUnwindSafe(client.send(as_tenant("boom"))).catch_unwind().await;
        assert!(outcome.is_err() || outcome.as_ref().is_ok_and(Result::is_err));
        for &user in &users {
            let reply = client.send(as_tenant(&emulator.user_login(user))).await.unwrap();
            assert_eq!(identity(&reply), user.get());
        }
    }
}

scenario! {
    /// An app's background job holds A's manager (`registry.manager(&a)`; "a caller
    /// holding it keeps it resident"). A uninstalls (`remove`) and installs again
    /// (`insert` with a new code exchange's token): the registry builds a second manager
    /// while the held one lives on; the held one re-reads the store (as every manager
    /// needing reauthorization does), adopts the new pair, and when the server expires
    /// A's access token both refresh it: the refresh token is presented twice, one
    /// refresh is refused, and a request fails or the server counts a failed call.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn remove_then_insert_while_a_manager_is_held_never_refreshes_twice(adapter) {
        let emulator = Emulator::builder()
            .users(2)
            .latency(Route::Token, Duration::from_millis(200))
            .start()
            .await;
        let users = emulator.users();
        let a = users[0];
        let clock = procore_auth_conformance::frozen_clock();
        let registry = {
            let clock = clock.clone();
            tenant_registry(adapter, &emulator, move |_, manager| manager.clock(clock.clone()))
                .build()
        };
        insert_tokens(&registry, &emulator, &users).await;
        let client = Client::with_tokens(adapter, registry.clone());
        let me = me(&emulator);
        let held = registry.manager(&a);
        assert_eq!(identity(&client.get_as(&me, a).await.unwrap()), a.get());

        registry.remove(&a).await.unwrap();
        let again = user_tokens(&emulator, &[a]).await.remove(0);
        registry.insert(a, again).await.unwrap();
        assert_eq!(identity(&client.get_as(&me, a).await.unwrap()), a.get());
        clock.advance(Duration::from_secs(5)); // past the store re-read interval
        let adopted = held.bearer().await;

        emulator.expire_tokens_of(a);
        let before = emulator.user_stats(a);
        let job = async {
            match &adopted {
                Ok(bearer) => held.rejected(bearer.generation()).await.map(|_| ()),
                Err(error) => Err(error.clone()),
            }
        };
        let (job, request) = tokio::join!(job, client.get_as(&me, a));
        let seen = emulator.user_stats(a);
        assert!(
            request.is_ok() && seen.failed_token_calls == before.failed_token_calls,
            "two managers refreshed A: held adopted {:?}, job {job:?}, request {request:?}; \
             before {before:?}, after {seen:?}",
            adopted.map(|bearer| bearer.generation())
        );
    }
}
