//! The emulator's users: who approved an authorization, whom a token acts for.

use std::collections::{HashMap, VecDeque};
use std::fmt;

use crate::fault::TokenFault;

/// The id of the default user, who exists in every emulator.
const DEFAULT_USER_ID: u64 = 4242;
const DEFAULT_USER_LOGIN: &str = "testkit.user@example.com";
const DEFAULT_USER_NAME: &str = "Testkit User";
/// Users after the default one get ids from here on (`10_001` for the second user, …): clear of
/// the default user's and the service account's ids.
const OTHER_USER_ID_BASE: u64 = 10_000;

/// A user of an [`Emulator`](crate::Emulator): the `id` that `GET /rest/v1.0/me` reports for
/// the user's tokens.
///
/// Get one from [`Emulator::default_user`](crate::Emulator::default_user),
/// [`Emulator::add_user`](crate::Emulator::add_user) or
/// [`Emulator::users`](crate::Emulator::users); ids are only meaningful to the emulator that
/// made them. `Display` prints the bare number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(u64);

impl UserId {
    /// The default user, who exists in every emulator.
    pub(crate) const DEFAULT: UserId = UserId(DEFAULT_USER_ID);

    /// The numeric id, as `GET /rest/v1.0/me` reports it in `id` (and
    /// `/oauth/token/info` in `resource_owner_id`).
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl From<UserId> for u64 {
    fn from(user: UserId) -> u64 {
        user.0
    }
}

/// A consistent snapshot of one user's counters, taken by
/// [`Emulator::user_stats`](crate::Emulator::user_stats).
///
/// A call counts for a user when it can be attributed to one: a token-endpoint call by the
/// refresh token or authorization code it presents (whatever their state, burned or not), an
/// API call or `/oauth/token/info` call by its bearer token. Calls with an unknown credential,
/// or with a client-credentials token (which acts for the service account, not a user), count
/// for no user; [`Stats`](crate::Stats) counts every call. Tokens minted with
/// [`Emulator::issue_token_for`](crate::Emulator::issue_token_for) count nowhere.
///
/// All counters start at zero and only grow.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct UserStats {
    /// Token-endpoint calls attributed to the user, whatever their outcome.
    pub token_calls: u64,
    /// `refresh_token` grants of the user answered with a token (no error, no scripted fault).
    pub refresh_grants: u64,
    /// The user's token calls that did not answer a well-formed token: every error status and
    /// every scripted [`TokenFault`], global or the user's own.
    pub failed_token_calls: u64,
    /// The user's refresh tokens burned by a `refresh_token` grant, even if the call then
    /// failed.
    pub consumed_refresh_tokens: u64,
    /// `/rest/` calls that presented one of the user's access tokens (live or not).
    pub api_calls: u64,
    /// 401 responses served by the `/rest/` routes and `/oauth/token/info` to calls that
    /// presented one of the user's access tokens.
    pub unauthorized_served: u64,
    /// 429 responses served by the `/rest/` routes to calls that presented one of the user's
    /// access tokens (rate limit, spike limit or scripted
    /// [`ApiFault::RateLimited`](crate::ApiFault::RateLimited)). Each token has its own
    /// budget: the user's other tokens, and other users', are unaffected.
    pub rate_limited_served: u64,
}

/// One user and what the server keeps about them.
#[derive(Debug)]
pub(crate) struct UserRecord {
    pub(crate) login: String,
    pub(crate) name: String,
    pub(crate) stats: UserStats,
    /// Faults for the next token calls of this user only.
    pub(crate) token_faults: VecDeque<TokenFault>,
    /// Every access token minted for the user, for per-user expiry and revocation.
    pub(crate) access_tokens: Vec<String>,
}

impl UserRecord {
    fn new(login: String, name: String) -> Self {
        Self {
            login,
            name,
            stats: UserStats::default(),
            token_faults: VecDeque::new(),
            access_tokens: Vec::new(),
        }
    }
}

/// Every user, by id and by login; the default user always exists.
#[derive(Debug)]
pub(crate) struct Users {
    by_id: HashMap<UserId, UserRecord>,
    by_login: HashMap<String, UserId>,
    /// Ids in creation order, the default user first.
    order: Vec<UserId>,
}

impl Default for Users {
    fn default() -> Self {
        let mut users = Self {
            by_id: HashMap::new(),
            by_login: HashMap::new(),
            order: Vec::new(),
        };
        users.insert(
            UserId::DEFAULT,
            DEFAULT_USER_LOGIN.to_owned(),
            DEFAULT_USER_NAME.to_owned(),
        );
        users
    }
}

impl Users {
    fn insert(&mut self, id: UserId, login: String, name: String) {
        self.by_login.insert(login.clone(), id);
        self.by_id.insert(id, UserRecord::new(login, name));
        self.order.push(id);
    }

    /// The id and name of the next user: the `n`-th (1-based) in creation order.
    fn next(&self) -> (UserId, usize) {
        let n = self.order.len() + 1;
        let index = u64::try_from(self.order.len()).unwrap_or(u64::MAX);
        (UserId(OTHER_USER_ID_BASE.saturating_add(index)), n)
    }

    /// Adds a user with this login; `Err` if another user has it.
    pub(crate) fn add(&mut self, login: String) -> Result<UserId, String> {
        if self.by_login.contains_key(&login) {
            return Err(login);
        }
        let (id, n) = self.next();
        self.insert(id, login, format!("Testkit User {n}"));
        Ok(id)
    }

    /// Adds a user with a generated login, `testkit.user<n>@example.com`, `n` the user's rank
    /// in creation order (1-based). Used before any user is added by hand, so the login is free.
    pub(crate) fn add_numbered(&mut self) -> UserId {
        let n = self.order.len() + 1;
        let login = format!("testkit.user{n}@example.com");
        match self.add(login) {
            Ok(id) => id,
            // Unreachable in practice; fall back to a login made unique by the id.
            Err(login) => {
                let (id, n) = self.next();
                self.insert(id, format!("{id}.{login}"), format!("Testkit User {n}"));
                id
            }
        }
    }

    pub(crate) fn get(&self, id: UserId) -> Option<&UserRecord> {
        self.by_id.get(&id)
    }

    pub(crate) fn get_mut(&mut self, id: UserId) -> Option<&mut UserRecord> {
        self.by_id.get_mut(&id)
    }

    pub(crate) fn by_login(&self, login: &str) -> Option<UserId> {
        self.by_login.get(login).copied()
    }

    /// Every user id, in creation order.
    pub(crate) fn ids(&self) -> Vec<UserId> {
        self.order.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_have_distinct_ids_logins_and_names() {
        let mut users = Users::default();
        assert_eq!(users.ids(), vec![UserId::DEFAULT]);
        let second = users.add_numbered();
        let alice = users.add("alice@example.com".to_owned()).unwrap();
        assert_eq!(
            users.add("alice@example.com".to_owned()),
            Err("alice@example.com".to_owned())
        );
        assert_eq!(users.ids(), vec![UserId::DEFAULT, second, alice]);
        assert_eq!(second.get(), 10_001);
        assert_eq!(alice.to_string(), "10002");
        assert_eq!(users.by_login("alice@example.com"), Some(alice));
        assert_eq!(
            users.get(second).unwrap().login,
            "testkit.user2@example.com"
        );
        let names: std::collections::HashSet<&str> = users
            .ids()
            .into_iter()
            .map(|id| users.get(id).unwrap().name.as_str())
            .collect();
        assert_eq!(names.len(), 3);
    }
}
