//! Many Procore users in one process: one `TokenRegistry`, one shared reqwest client.
//!
//! `cargo run -p procore-auth-examples --example multi_tenant` — no Procore account
//! needed: it starts the local Procore emulator with three users and finishes in about
//! three seconds.
//!
//! The three users' tokens expire at different times, so each tenant refreshes on its
//! own schedule, through the same client. Then one user uninstalls the app: their
//! token is revoked, and their next request fails with `ReauthorizationRequired`
//! naming them, while the others carry on.

use std::fmt;
use std::time::Duration;

use procore_auth_core::{
    AccessToken, ClientSecret, Clock, Environment, Error, KeyedMemoryStore, OAuthClient,
    RefreshToken, RefreshTokenGrant, SystemClock, Token, TokenRegistry,
};
use procore_auth_reqwest::{auth_error, ProcoreAuthMiddleware, ReqwestTransport};
use procore_auth_testkit::{Emulator, TokenGrant};
use reqwest_middleware::ClientWithMiddleware;

/// Whom a request acts for: the registry's key. A real app would use the Procore user
/// id its OAuth callback learned from `/me`. A newtype, so that no other value in a
/// request's extensions can be taken for a tenant. Keys are not secrets: `Display`
/// shows them in logs and errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct ProcoreUser(u64);

impl fmt::Display for ProcoreUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "user {}", self.0)
    }
}

/// Time between rounds of requests: longer than Ann's 1 s token, shorter than Bob's
/// 2 s, so round 2 finds only Ann's token expired and round 3 also Bob's.
const ROUND: Duration = Duration::from_millis(1200);

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let emulator = Emulator::start().await;
    let oauth = OAuthClient::new(
        Environment::custom(&emulator.base_url())?,
        emulator.client_id(),
        ClientSecret::new(emulator.client_secret()),
    );

    // One grant serves every tenant: it refreshes whichever token it is handed. The
    // registry gives each tenant its own manager (own single-flight, back-off and
    // reauthorization state), built on the tenant's first request.
    let registry: TokenRegistry<ProcoreUser> =
        TokenRegistry::builder(RefreshTokenGrant::new(oauth, ReqwestTransport::new()?))
            // In memory for the demo; a real service keeps rotated refresh tokens
            // across restarts with `KeyedFileStore::new(dir)` or the Redis store.
            .store(KeyedMemoryStore::new())
            .max_resident(1_000)
            .build();

    // ONE client for all tenants, so they share its connection pool; each request
    // names its tenant in its extensions.
    let client =
        reqwest_middleware::ClientBuilder::new(procore_auth_reqwest::client_builder().build()?)
            .with(ProcoreAuthMiddleware::new(registry.clone()))
            .build();
    let me_url = format!("{}/rest/v1.0/me", emulator.base_url());

    // Three users authorize the app (the emulator mints their tokens at once, as the
    // OAuth callback's code exchange would). Procore's tokens all live 90 minutes, so
    // in production their expiries differ because users sign in at different times;
    // to see that within seconds, the registry is told that Ann's token expires in
    // 1 s and Bob's in 2 s. (The emulator would accept them longer: the refreshes
    // below come from the registry's own schedule, not from a 401.)
    println!("procore-auth multi_tenant: 3 Procore users, one reqwest client, one TokenRegistry");
    let mut tenants = Vec::new();
    for (login, lives) in [
        ("ann@acme.example", Duration::from_secs(1)),
        ("bob@buildco.example", Duration::from_secs(2)),
        ("carol@civil.example", Duration::from_secs(90 * 60)),
    ] {
        let user = emulator.add_user(login);
        let key = ProcoreUser(user.get());
        let token = expiring_in(emulator.issue_token_for(user), lives)?;
        registry.insert(key, token).await?;
        println!(
            "  {key}  {login:<20}  token expires in {} s",
            lives.as_secs()
        );
        tenants.push((key, login, user));
    }

    // Every round, each tenant calls /me through the shared client and must get its
    // own identity back. A tenant whose token has expired refreshes it first (one
    // refresh, its own); the other tenants' tokens are left alone.
    for round in 0..3u32 {
        if round > 0 {
            tokio::time::sleep(ROUND).await;
        }
        println!("t = {:.1} s", (ROUND * round).as_secs_f64());
        for &(key, login, _) in &tenants {
            let identity = me(&client, &me_url, key).await?;
            if identity != login {
                return Err(format!("{key} got the identity of {identity}").into());
            }
            let refreshes = registry.tenant_metrics(&key).map_or(0, |m| m.refreshes);
            println!("  {key}  /me -> {identity:<20}  refreshes so far: {refreshes}");
        }
    }

    // A request that names no tenant gets no token at all, never someone else's.
    let unnamed = client.get(&me_url).send().await;
    match unnamed.as_ref().err().and_then(auth_error) {
        Some(Error::TenantNotSelected) => {
            println!("{:<20} -> {}", "no tenant named", Error::TenantNotSelected)
        }
        _ => return Err("a request naming no tenant was not refused".into()),
    }

    // Bob uninstalls the app: his token is revoked at Procore and deleted from the
    // store. His next request fails with an error that names him, so the app knows
    // whom to ask to sign in again.
    let (bob, _, _) = tenants[1];
    registry.remove(&bob).await?;
    if emulator.stats().revocations == 0 {
        return Err(format!("remove({bob}) revoked nothing at the emulator").into());
    }
    println!(
        "{:<20} -> revoked at Procore, deleted from the store",
        format!("remove({bob})")
    );
    let after = client.get(&me_url).with_extension(bob).send().await;
    match after.as_ref().err().and_then(auth_error) {
        Some(error @ Error::ReauthorizationRequired { .. }) => {
            let named = error
                .tenant()
                .and_then(|tenant| tenant.key::<ProcoreUser>());
            if named != Some(&bob) {
                return Err(format!("the error names {named:?}, not {bob}").into());
            }
            println!("{:<20} -> {error}", format!("{bob} again"));
        }
        _ => return Err(format!("{bob}'s request after remove() did not fail").into()),
    }
    // The others are unaffected.
    let (ann, _, _) = tenants[0];
    let identity = me(&client, &me_url, ann).await?;
    println!("{:<20} -> {identity}", format!("{ann} again"));

    // Each tenant refreshed on its own schedule: Ann once, Bob once, Carol never. The
    // emulator's counts of refresh grants per user agree with the registry's.
    println!("refresh grants at the emulator, per user:");
    let mut expected = [1, 1, 0].into_iter();
    for &(key, login, user) in &tenants {
        let grants = emulator.user_stats(user).refresh_grants;
        println!("  {key}  {login:<20}  {grants}");
        if Some(grants) != expected.next() {
            return Err(format!("{key} made {grants} refresh grants").into());
        }
    }
    // Bob's last request loaded his tenant again (finding no token in the store),
    // so 4 managers were built in all.
    let metrics = registry.metrics();
    println!(
        "registry: {} tenants resident, {} loaded, {} evicted",
        metrics.resident, metrics.loaded, metrics.evicted
    );
    Ok(())
}

/// The emulator's `grant` as a `Token` that expires `lives` from now.
fn expiring_in(grant: TokenGrant, lives: Duration) -> Result<Token, Error> {
    let now = SystemClock.now();
    Token::new(
        AccessToken::new(grant.access_token),
        grant.refresh_token.map(RefreshToken::new),
        now,
        Some(now + lives),
    )
}

/// `GET /rest/v1.0/me` for `tenant`: the login of the user whose token it carried.
async fn me(
    client: &ClientWithMiddleware,
    url: &str,
    tenant: ProcoreUser,
) -> Result<String, Box<dyn std::error::Error>> {
    let response = client
        .get(url)
        .with_extension(tenant)
        .send()
        .await?
        .error_for_status()?;
    let me: serde_json::Value = serde_json::from_slice(&response.bytes().await?)?;
    Ok(me["login"].as_str().unwrap_or_default().to_owned())
}
