//! The last rate-limit budget `whoami` saw, kept beside the token for `status`.
//!
//! Procore's budget belongs to one access token, so the snapshot records which token
//! it was read for (by its issue time, not by any secret) and `status` shows it only
//! while that token is the saved one.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use procore_auth_core::{RateLimit, Token};
use serde::{Deserialize, Serialize};

/// A rate-limit snapshot as saved (all times in Unix seconds).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Snapshot {
    /// The issue time of the token whose budget this is.
    pub(crate) token_issued_at: u64,
    /// Requests allowed per window.
    pub(crate) limit: u64,
    /// Requests left when it was seen.
    pub(crate) remaining: u64,
    /// When the window resets.
    pub(crate) reset_at: u64,
    /// When it was seen.
    pub(crate) observed_at: u64,
}

impl Snapshot {
    pub(crate) fn new(token: &Token, rate_limit: &RateLimit, observed_at: SystemTime) -> Self {
        Self {
            token_issued_at: unix(token.issued_at()),
            limit: rate_limit.limit,
            remaining: rate_limit.remaining,
            reset_at: unix(rate_limit.reset_at),
            observed_at: unix(observed_at),
        }
    }

    /// Whether this is the budget of `token`.
    pub(crate) fn is_for(&self, token: &Token) -> bool {
        self.token_issued_at == unix(token.issued_at())
    }

    pub(crate) fn reset_at(&self) -> SystemTime {
        time(self.reset_at)
    }

    pub(crate) fn observed_at(&self) -> SystemTime {
        time(self.observed_at)
    }
}

/// `<token file without .json>.rate-limit.json`.
pub(crate) fn path_for(token_file: &Path) -> PathBuf {
    let stem = token_file
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = stem.strip_suffix(".json").unwrap_or(&stem);
    token_file.with_file_name(format!("{stem}.rate-limit.json"))
}

/// The saved snapshot, if there is a readable one.
pub(crate) fn load(token_file: &Path) -> Option<Snapshot> {
    let bytes = fs::read(path_for(token_file)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Saves `snapshot` (best effort: it is informational, and holds no secret).
pub(crate) fn save(token_file: &Path, snapshot: &Snapshot) {
    if let Ok(json) = serde_json::to_vec_pretty(snapshot) {
        let _ = fs::write(path_for(token_file), json);
    }
}

/// Deletes the snapshot (after `logout`, or a new `login`).
pub(crate) fn remove(token_file: &Path) {
    let _ = fs::remove_file(path_for(token_file));
}

fn unix(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

fn time(secs: u64) -> SystemTime {
    UNIX_EPOCH
        .checked_add(Duration::from_secs(secs))
        .unwrap_or(UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_snapshot_sits_beside_the_token_file() {
        assert_eq!(
            path_for(Path::new("/c/procore-auth/login.procore.com.json")),
            Path::new("/c/procore-auth/login.procore.com.rate-limit.json")
        );
        assert_eq!(path_for(Path::new("tok")), Path::new("tok.rate-limit.json"));
    }

    #[test]
    fn snapshots_round_trip_and_belong_to_one_token() {
        let directory = tempfile::tempdir().unwrap();
        let file = directory.path().join("t.json");
        assert_eq!(load(&file), None);
        let snapshot = Snapshot {
            token_issued_at: 1_700_000_000,
            limit: 3600,
            remaining: 3599,
            reset_at: 1_700_003_600,
            observed_at: 1_700_000_010,
        };
        save(&file, &snapshot);
        assert_eq!(load(&file), Some(snapshot.clone()));
        let token_issued = |secs| {
            Token::new(
                procore_auth_core::AccessToken::new("a"),
                None,
                time(secs),
                Some(time(secs + 5400)),
            )
            .unwrap()
        };
        assert!(snapshot.is_for(&token_issued(1_700_000_000)));
        assert!(!snapshot.is_for(&token_issued(1_700_005_400)));
        remove(&file);
        assert_eq!(load(&file), None);
    }
}
