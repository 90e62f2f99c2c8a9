//! Many tenants through one client: a `TokenRegistry` behind each adapter, each
//! request naming its tenant (in its extensions, or by a key function), against an
//! emulator serving one user per tenant, whose `/me` tells them apart.

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, StatusCode};
use procore_auth_conformance::{
    frozen_clock, get, me, scenario, tenant_registry, user_tokens, wait_until, Client, Origin,
    Reply, BACKOFF_MAX,
};
use procore_auth_core::{Error as AuthError, KeyedFileStore, TokenRegistry};
use procore_auth_testkit::{Emulator, TokenFault, UserId};
use tokio::sync::Semaphore;

/// The `id` of the user a `/me` reply is for.
///
/// # Panics
///
/// If the reply is not a 200 with an `id`.
fn identity(reply: &Reply) -> u64 {
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    reply.json()["id"]
        .as_u64()
        .unwrap_or_else(|| panic!("no id: {}", reply.text()))
}

/// Puts each user's token, from a real code exchange, in the registry under the
/// user's id (as an app does in its OAuth callback).
async fn insert_tokens(registry: &TokenRegistry<UserId>, emulator: &Emulator, users: &[UserId]) {
    for (&user, token) in users.iter().zip(user_tokens(emulator, users).await) {
        registry
            .insert(user, token)
            .await
            .expect("a token is inserted");
    }
}

/// Tenants in the first scenario…
const TENANTS: usize = 100;

/// …and concurrent requests for each.
const REQUESTS_PER_TENANT: usize = 20;

/// At most this many of them in flight at once: each is a connection, and two sockets
/// in this process (the client's and the emulator's). Unbounded, the scenario peaked
/// above 11 000 open files with both adapters running.
const ON_THE_WIRE: usize = 400;

scenario! {
    /// 100 tenants, each with its own user's token, all expired by the server at once;
    /// then 20 concurrent requests per tenant (2000 in all, a few hundred at a time on
    /// the wire): every one gets a 200 with its own tenant's identity, each 401 is
    /// replayed once, and each tenant costs exactly one refresh (100 in all). One
    /// manager shared by all tenants, a wrong tenant's token, or a refresh per request
    /// rather than per tenant each fail this.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hundred_tenants_times_twenty_requests_after_a_forced_expiry_refresh_once_each(
        adapter
    ) {
        let emulator = Emulator::builder().users(TENANTS).start().await;
        let users = emulator.users();
        assert_eq!(users.len(), TENANTS);
        let registry = tenant_registry(adapter, &emulator, |_, manager| manager).build();
        insert_tokens(&registry, &emulator, &users).await;
        let client = Client::with_tokens(adapter, registry.clone());
        let me = me(&emulator);

        // Warm: each tenant's token works as it is.
        for &user in &users {
            assert_eq!(identity(&client.get_as(&me, user).await.unwrap()), user.get());
        }
        let warm = emulator.stats();
        assert_eq!(warm.refresh_token_grants, 0, "{warm:?}");

        emulator.expire_all_tokens();
        // All spawned at once, each tenant's together; the socket budget lets a few
        // hundred at a time on the wire (each tenant's twenty at once, and many
        // tenants).
        let on_the_wire = Arc::new(Semaphore::new(ON_THE_WIRE));
        let requests: Vec<_> = users
            .iter()
            .flat_map(|&user| std::iter::repeat_n(user, REQUESTS_PER_TENANT))
            .map(|user| {
                let (client, me) = (client.clone(), me.clone());
                let on_the_wire = Arc::clone(&on_the_wire);
                tokio::spawn(async move {
                    let _permit = on_the_wire.acquire().await.unwrap();
                    (user, client.get_as(&me, user).await)
                })
            })
            .collect();
        for request in requests {
            let (user, outcome) = request.await.unwrap();
            let reply = outcome.unwrap_or_else(|error| panic!("tenant {user}: {error:?}"));
            assert_eq!(identity(&reply), user.get(), "tenant {user} got another's identity");
        }

        let stats = emulator.stats();
        assert_eq!(stats.refresh_token_grants, TENANTS as u64, "{stats:?}");
        assert_eq!(stats.failed_token_calls, 0, "{stats:?}");
        // Each 401 (the requests sent with the expired token) was replayed once, and
        // nothing else was sent.
        let burst = stats.api_calls - warm.api_calls;
        let rejected = stats.unauthorized_served - warm.unauthorized_served;
        assert_eq!(burst, (TENANTS * REQUESTS_PER_TENANT) as u64 + rejected, "{stats:?}");
        for &user in &users {
            let seen = emulator.user_stats(user);
            assert_eq!(seen.refresh_grants, 1, "tenant {user}: {seen:?}");
            // Its code exchange, and its one refresh.
            assert_eq!(seen.token_calls, 2, "tenant {user}: {seen:?}");
            assert!(
                (1..=REQUESTS_PER_TENANT as u64).contains(&seen.unauthorized_served),
                "tenant {user}: {seen:?}"
            );
            let metrics = registry.tenant_metrics(&user).expect("every tenant stays resident");
            assert_eq!(metrics.refreshes, 1, "tenant {user}: {metrics:?}");
        }
        let metrics = registry.metrics();
        assert_eq!((metrics.loaded, metrics.evicted), (TENANTS as u64, 0), "{metrics:?}");
    }
}

/// Tenants in the second scenario: three that fail, and the others.
const FAILING_AND_OTHERS: usize = 10;

/// Concurrent requests per tenant in the second scenario.
const REQUESTS_EACH: usize = 10;

/// 503s scripted for the tenant whose refreshes fail transiently.
const SCRIPTED_503S: u64 = 3;

scenario! {
    /// Three tenants' refreshes fail: A's token endpoint answers 503 (three times), B's
    /// refresh token is refused (`invalid_grant`), H's refresh hangs. With every token
    /// expired, concurrent requests for A, B and seven others (ten each): A's fail
    /// transiently (its 503, or its back-off), B's ask for B to sign in again (the error
    /// names B), and the others all get a 200 with their own identity, one refresh
    /// each, while H's requests are still waiting on its hanging refresh (ordering,
    /// not time: no tenant waits on another). Time stands still, so A's back-off stays
    /// in force throughout: a back-off shared between tenants would fail the others.
    /// A recovers on its own once its 503s are spent; H's requests end with a transient
    /// error when the server closes their connection.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_tenants_failing_token_endpoint_neither_fails_nor_delays_the_others(adapter) {
        let emulator = Emulator::builder().users(FAILING_AND_OTHERS).start().await;
        let users = emulator.users();
        let (a, b, h, others) = (users[0], users[1], users[2], users[3..].to_vec());
        let clock = frozen_clock();
        let registry = {
            let clock = clock.clone();
            tenant_registry(adapter, &emulator, move |_, manager| manager.clock(clock.clone()))
                .build()
        };
        insert_tokens(&registry, &emulator, &users).await;
        let client = Client::with_tokens(adapter, registry.clone());
        let me = me(&emulator);
        for &user in &users {
            assert_eq!(identity(&client.get_as(&me, user).await.unwrap()), user.get());
        }
        for _ in 0..SCRIPTED_503S {
            emulator.push_token_fault_for(a, TokenFault::Status(503));
        }
        emulator.push_token_fault_for(b, TokenFault::InvalidGrant);
        emulator.push_token_fault_for(h, TokenFault::Hang);
        emulator.expire_all_tokens();

        let spawn = |user: UserId| {
            let (client, me) = (client.clone(), me.clone());
            tokio::spawn(async move { client.get_as(&me, user).await })
        };
        let hanging: Vec<_> = (0..REQUESTS_EACH).map(|_| spawn(h)).collect();
        wait_until("H's refresh reaches the token endpoint", || {
            emulator.user_stats(h).token_calls == 2
        })
        .await;

        let mut burst = Vec::new();
        for _ in 0..REQUESTS_EACH {
            for &user in [a, b].iter().chain(&others) {
                burst.push((user, spawn(user)));
            }
        }
        for (user, request) in burst {
            let outcome = request.await.unwrap();
            if user == a {
                let error = outcome.expect_err("A's refresh fails");
                let unavailable = |status: &StatusCode| *status == StatusCode::SERVICE_UNAVAILABLE;
                assert!(
                    matches!(&error, AuthError::TokenEndpoint { status, .. } if unavailable(status))
                        || matches!(error, AuthError::BackingOff { .. }),
                    "A: {error:?}"
                );
                assert!(error.is_transient(), "A: {error:?}");
            } else if user == b {
                let error = outcome.expect_err("B must sign in again");
                assert!(matches!(error, AuthError::ReauthorizationRequired { .. }), "B: {error:?}");
                assert_eq!(error.tenant().and_then(|tenant| tenant.key::<UserId>()), Some(&b));
            } else {
                let reply = outcome.unwrap_or_else(|error| panic!("tenant {user}: {error:?}"));
                assert_eq!(identity(&reply), user.get(), "tenant {user}");
            }
        }
        // Every other tenant is done, and H's requests still wait on its one refresh.
        for request in &hanging {
            assert!(!request.is_finished(), "H's request ended before its refresh did");
        }
        assert_eq!(emulator.user_stats(h).token_calls, 2, "H: one refresh for all");
        // One refresh per tenant: a single failed call for A (then its back-off), one
        // for B, one each for the others.
        for user in [a, b].iter().chain(&others) {
            let seen = emulator.user_stats(*user);
            assert_eq!(seen.token_calls, 2, "tenant {user}: {seen:?}");
            let failed = u64::from(*user == a || *user == b);
            assert_eq!(seen.failed_token_calls, failed, "tenant {user}: {seen:?}");
        }

        // A's back-off is A's own: past it, A's next refreshes meet its remaining 503s,
        // then one works.
        for _ in 1..SCRIPTED_503S {
            clock.advance(BACKOFF_MAX);
            let error = client.get_as(&me, a).await.unwrap_err();
            assert!(error.is_transient(), "A: {error:?}");
        }
        clock.advance(BACKOFF_MAX);
        assert_eq!(identity(&client.get_as(&me, a).await.unwrap()), a.get());
        let seen = emulator.user_stats(a);
        assert_eq!((seen.failed_token_calls, seen.refresh_grants), (SCRIPTED_503S, 1), "{seen:?}");
        // B stays refused, naming B, without another token call.
        let error = client.get_as(&me, b).await.unwrap_err();
        assert_eq!(error.tenant().and_then(|tenant| tenant.key::<UserId>()), Some(&b));
        assert_eq!(emulator.user_stats(b).token_calls, 2);

        // The server goes away, closing H's hanging refresh: its requests fail, transiently.
        drop(emulator);
        for request in hanging {
            let error = request.await.unwrap().expect_err("H's refresh failed");
            assert!(error.is_transient(), "H: {error:?}");
        }
    }
}

scenario! {
    /// With a registry, a request for the API that names no tenant (or names one with a
    /// key of another type) fails with `TenantNotSelected` before it is sent, although
    /// a tenant's fresh token is right there: the server sees no call. A request to
    /// another origin needs no tenant: it passes untouched, with no token, as does one
    /// naming a tenant.
    #[tokio::test]
    async fn a_request_for_the_api_naming_no_tenant_gets_no_token_and_other_origins_pass_untouched(
        adapter
    ) {
        let emulator = Emulator::start().await;
        let user = emulator.default_user();
        let registry = tenant_registry(adapter, &emulator, |_, manager| manager).build();
        insert_tokens(&registry, &emulator, &[user]).await;
        let client = Client::with_tokens(adapter, registry.clone());
        let me = me(&emulator);
        assert_eq!(identity(&client.get_as(&me, user).await.unwrap()), user.get());
        let before = emulator.stats();

        let error = client.send(get(&me)).await.unwrap_err();
        assert!(matches!(error, AuthError::TenantNotSelected), "{error:?}");
        let error = client.get_as(&me, user.get()).await.unwrap_err();
        assert!(matches!(error, AuthError::TenantNotSelected), "a u64 is not a UserId: {error:?}");
        assert_eq!(emulator.stats(), before, "nothing reached the server");
        assert_eq!(client.sent_authorizations().len(), 1, "only the tenant's request was sent");

        let elsewhere = Origin::start().await;
        let reply = client.send(get(&elsewhere.url_for("/files/7"))).await.unwrap();
        assert_eq!((reply.status, reply.text()), (StatusCode::OK, "GET "));
        let reply = client.get_as(&elsewhere.url_for("/files/8"), user).await.unwrap();
        assert_eq!((reply.status, reply.text()), (StatusCode::OK, "GET "));
        let seen = elsewhere.seen();
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert!(seen.iter().all(|seen| seen.authorization.is_none()), "{seen:?}");
        assert_eq!(client.sent_authorizations()[1..], [None, None]);
        assert_eq!(emulator.stats(), before);
    }
}

/// Tenants cycling through the bounded registry…
const CYCLING_TENANTS: usize = 1_000;

/// …of which this many at most stay resident (idle)…
const MAX_RESIDENT: usize = 10;

/// …and this many requests are in flight at once (each pins its tenant's manager).
const IN_FLIGHT: usize = 2;

/// Every this many tenants, one is rotated just before the cycle moves on.
const ROTATE_EVERY: usize = 100;

/// A directory for a file store of many tenants: in memory where the system has one
/// (`/dev/shm`), as each save syncs to disk and a thousand of them take seconds on a
/// busy disk. The store behaves the same (a file per key, replaced atomically).
fn store_directory() -> tempfile::TempDir {
    let memory = std::path::Path::new("/dev/shm");
    memory
        .is_dir()
        .then(|| tempfile::tempdir_in(memory).ok())
        .flatten()
        .unwrap_or_else(|| tempfile::tempdir().expect("a temporary directory"))
}

scenario! {
    /// 1 000 tenants, their tokens in a `KeyedFileStore`, through a registry keeping 10
    /// resident: inserting them all, then a request for each (two at a time), never
    /// holds more than 10 + 2 managers. Every 100th tenant's token is rotated (expired
    /// by the server, so its request refreshes) right before the cycle moves on and
    /// evicts it; each comes back, loaded from its file, with its newest pair: its next
    /// forced refresh works (no `invalid_grant`), and the server saw no failed token
    /// call for it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_thousand_tenants_through_ten_resident_stay_bounded_and_rotated_ones_come_back_newest(
        adapter
    ) {
        let emulator = Emulator::builder().users(CYCLING_TENANTS).start().await;
        let users = emulator.users();
        let directory = store_directory();
        let registry = tenant_registry(adapter, &emulator, |_, manager| manager)
            .store(KeyedFileStore::new(directory.path()))
            .max_resident(MAX_RESIDENT)
            .build();
        let bound = MAX_RESIDENT + IN_FLIGHT;
        let bounded = |registry: &TokenRegistry<UserId>| {
            let metrics = registry.metrics();
            assert!(metrics.resident <= bound, "{metrics:?}");
        };
        let tokens = user_tokens(&emulator, &users).await;
        for (&user, token) in users.iter().zip(tokens) {
            registry.insert(user, token).await.unwrap();
            bounded(&registry);
        }
        assert_eq!(std::fs::read_dir(directory.path()).unwrap().count(), CYCLING_TENANTS);

        let client = Client::with_tokens(adapter, registry.clone());
        let me = me(&emulator);
        let rotated: Vec<UserId> =
            users.iter().copied().skip(ROTATE_EVERY / 2).step_by(ROTATE_EVERY).collect();
        for pair in users.chunks(IN_FLIGHT) {
            for user in pair.iter().filter(|user| rotated.contains(user)) {
                emulator.expire_tokens_of(*user);
            }
            let replies = futures_util::future::join_all(
                pair.iter().map(|&user| client.get_as(&me, user)),
            )
            .await;
            for (&user, reply) in pair.iter().zip(replies) {
                let reply = reply.unwrap_or_else(|error| panic!("tenant {user}: {error:?}"));
                assert_eq!(identity(&reply), user.get(), "tenant {user}");
            }
            bounded(&registry);
        }
        for &user in &rotated {
            let seen = emulator.user_stats(user);
            assert_eq!((seen.refresh_grants, seen.failed_token_calls), (1, 0), "{user}: {seen:?}");
        }
        // The last rotated tenants may still be resident: more requests for others
        // evict them.
        let mut others = users.iter().copied().filter(|user| !rotated.contains(user)).cycle();
        for _ in 0..CYCLING_TENANTS {
            if rotated.iter().all(|user| registry.tenant_metrics(user).is_none()) {
                break;
            }
            let user = others.next().unwrap();
            assert_eq!(identity(&client.get_as(&me, user).await.unwrap()), user.get());
            bounded(&registry);
        }
        for user in &rotated {
            assert!(registry.tenant_metrics(user).is_none(), "tenant {user} was never evicted");
        }

        // Back from the store, each refreshes with its newest refresh token.
        for &user in &rotated {
            emulator.expire_tokens_of(user);
            let reply = client.get_as(&me, user).await;
            let reply = reply.unwrap_or_else(|error| panic!("tenant {user}: {error:?}"));
            assert_eq!(identity(&reply), user.get(), "tenant {user}");
            let seen = emulator.user_stats(user);
            assert_eq!((seen.refresh_grants, seen.failed_token_calls), (2, 0), "{user}: {seen:?}");
            bounded(&registry);
        }
        let stats = emulator.stats();
        assert_eq!(stats.refresh_token_grants, 2 * rotated.len() as u64, "{stats:?}");
        assert_eq!(stats.failed_token_calls, 0, "{stats:?}");
        let metrics = registry.metrics();
        // Each tenant loaded to insert it and again for its request, after its eviction.
        assert!(metrics.loaded >= 2 * CYCLING_TENANTS as u64, "{metrics:?}");
        assert!(metrics.evicted + bound as u64 >= metrics.loaded, "{metrics:?}");
    }
}

scenario! {
    /// A registry wired with a key function (`keyed_by`) that reads the tenant from an
    /// `x-tenant` header (a user's login here): each tenant's requests get its own
    /// identity; after a forced expiry, ten concurrent requests per tenant cost one
    /// refresh each; a request without the header gets `TenantNotSelected`, unsent.
    #[tokio::test]
    async fn a_tenant_selected_by_a_key_function_from_a_header(adapter) {
        let emulator = Emulator::builder().users(3).start().await;
        let users = emulator.users();
        let registry: TokenRegistry<String> =
            tenant_registry(adapter, &emulator, |_, manager| manager).build();
        for (&user, token) in users.iter().zip(user_tokens(&emulator, &users).await) {
            registry.insert(emulator.user_login(user), token).await.unwrap();
        }
        let keyed = registry.keyed_by(|headers, _extensions| {
            Some(headers.get("x-tenant")?.to_str().ok()?.to_owned())
        });
        let client = Client::with_tokens(adapter, keyed);
        let me = me(&emulator);
        let as_tenant = |login: String| {
            Request::get(&me)
                .header("x-tenant", login)
                .body(Bytes::new())
                .unwrap()
        };
        let check = |user: UserId, reply: &Reply| {
            assert_eq!(identity(reply), user.get());
            assert_eq!(reply.json()["login"], emulator.user_login(user).as_str());
        };
        for &user in &users {
            check(user, &client.send(as_tenant(emulator.user_login(user))).await.unwrap());
        }

        emulator.expire_all_tokens();
        let requests: Vec<_> = (0..10)
            .flat_map(|_| users.iter().copied())
            .map(|user| {
                let (client, request) = (client.clone(), as_tenant(emulator.user_login(user)));
                (user, tokio::spawn(async move { client.send(request).await }))
            })
            .collect();
        for (user, request) in requests {
            check(user, &request.await.unwrap().unwrap());
        }
        for &user in &users {
            assert_eq!(emulator.user_stats(user).refresh_grants, 1, "tenant {user}");
        }

        let before = emulator.stats();
        let error = client.send(get(&me)).await.unwrap_err();
        assert!(matches!(error, AuthError::TenantNotSelected), "{error:?}");
        assert_eq!(emulator.stats(), before);
    }
}
