//! Where tokens live between processes and restarts.
//!
//! Procore's refresh tokens are single use, so a store must never let an older pair
//! overwrite a newer one. [`TokenStore::save`] is therefore a compare-and-swap: "save
//! this pair only if the stored pair is still the one I read". A store shared by many
//! processes (Redis, a database) implements the same contract with its own atomic
//! primitive.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use crate::transport::BoxFuture;
use crate::Token;

mod keyed;

pub(crate) use keyed::TenantStore;
pub use keyed::{KeyedFileStore, KeyedMemoryStore, KeyedTokenStore, MAX_KEY_FILE_NAME};

/// Persists the current token.
pub trait TokenStore: Send + Sync + fmt::Debug {
    /// The stored token, if any.
    fn load(&self) -> BoxFuture<'_, Result<Option<Token>, StoreError>>;

    /// Stores `token` if the stored token is still `expected` (compared with
    /// [`Token::same_credentials`]; `None` means "whatever is stored").
    ///
    /// # Errors
    ///
    /// [`StoreError::Conflict`] if another writer stored a different token since
    /// `expected` was read; nothing is written then.
    fn save<'a>(
        &'a self,
        token: &'a Token,
        expected: Option<&'a Token>,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Removes the stored token (after [`TokenManager::revoke`](crate::TokenManager::revoke)).
    /// Removing from an empty store succeeds.
    ///
    /// The default fails with an I/O error of kind `Unsupported`.
    fn clear(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        let error = StoreError::from(io::Error::new(
            io::ErrorKind::Unsupported,
            "this token store cannot remove its token",
        ));
        Box::pin(async move { Err(error) })
    }

    /// Asks whether this process may present `presenting`'s refresh token now: the
    /// cross-process single flight of a store shared by several processes.
    ///
    /// A manager calls this after reading the store and before every refresh. A
    /// store shared by processes takes a lease (or waits while a peer holds one) and
    /// answers [`RefreshTurn::Go`] with it, or [`RefreshTurn::PeerSaved`] when a peer
    /// saved a new pair meanwhile, or [`RefreshTurn::PeerRefused`] when a peer
    /// presented this very refresh token and was refused. An error means "not now":
    /// the refresh fails (transiently) without presenting anything.
    ///
    /// Answer `PeerSaved` too when a peer has already replaced the pair `presenting`
    /// belongs to: the manager adopts a stored pair only if it was issued in a later
    /// whole second, so two pairs of one second are told apart only by the store.
    ///
    /// The default (one process per store) is `Go` without a lease.
    fn begin_refresh<'a>(
        &'a self,
        presenting: Option<&'a Token>,
    ) -> BoxFuture<'a, Result<RefreshTurn, StoreError>> {
        let _ = presenting;
        Box::pin(async { Ok(RefreshTurn::Go(None)) })
    }
}

/// What [`TokenStore::begin_refresh`] decided.
#[derive(Debug)]
#[non_exhaustive]
pub enum RefreshTurn {
    /// Refresh now; with a lease, re-read the store first, then end the lease with
    /// the refresh's outcome.
    Go(Option<Box<dyn RefreshLease>>),
    /// A peer saved a new pair while this process waited: adopt it from the store.
    PeerSaved,
    /// A peer presented this refresh token and Procore refused it: do not present it
    /// again (the user must authorize again, unless a peer saves a new pair).
    PeerRefused,
}

/// A cross-process refresh lease, held while one process refreshes. The store keeps
/// it alive while the refresh runs; a holder that dies loses it when it expires.
pub trait RefreshLease: Send + Sync + fmt::Debug {
    /// Releases the lease, telling waiting peers how the refresh went.
    fn end(self: Box<Self>, outcome: RefreshOutcome) -> BoxFuture<'static, ()>;
}

/// How a refresh under a [`RefreshLease`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RefreshOutcome {
    /// A new pair was saved: peers adopt it.
    Saved,
    /// Procore refused the refresh token presented: peers must not present it.
    Refused,
    /// Nothing new was saved (a transient failure, or nothing to do): a peer may
    /// try.
    Unchanged,
}

/// A token store failure.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Another writer stored a different token since it was read.
    #[error("token store holds a different token than expected; not overwritten")]
    Conflict,
    /// Reading or writing failed.
    #[error("token store I/O failed")]
    Io(#[source] Arc<io::Error>),
    /// The stored data is not a token.
    #[error("token store content is not a valid token: {reason}")]
    Corrupt {
        /// What is wrong, by position (never quoting the content).
        reason: String,
    },
    /// Peer processes kept refreshing while this one waited for its turn.
    #[error("token store stayed busy with peer refreshes")]
    Busy,
}

impl StoreError {
    /// Whether trying again later may succeed: I/O failures (a store that is
    /// unreachable) and a busy store.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Io(_) | Self::Busy)
    }
}

impl From<io::Error> for StoreError {
    fn from(error: io::Error) -> Self {
        Self::Io(Arc::new(error))
    }
}

fn check_expected(stored: Option<&Token>, expected: Option<&Token>) -> Result<(), StoreError> {
    match (stored, expected) {
        (_, None) | (None, Some(_)) => Ok(()),
        (Some(stored), Some(expected)) if stored.same_credentials(expected) => Ok(()),
        (Some(_), Some(_)) => Err(StoreError::Conflict),
    }
}

/// Keeps the token in memory: shared by clones, lost on exit.
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    token: Arc<Mutex<Option<Token>>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// A store holding `token`.
    pub fn with_token(token: Token) -> Self {
        Self {
            token: Arc::new(Mutex::new(Some(token))),
        }
    }
}

impl TokenStore for MemoryStore {
    fn load(&self) -> BoxFuture<'_, Result<Option<Token>, StoreError>> {
        let token = self
            .token
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        Box::pin(async move { Ok(token) })
    }

    fn save<'a>(
        &'a self,
        token: &'a Token,
        expected: Option<&'a Token>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let mut stored = self.token.lock().unwrap_or_else(PoisonError::into_inner);
        let result = check_expected(stored.as_ref(), expected).map(|()| {
            *stored = Some(token.clone());
        });
        Box::pin(async move { result })
    }

    fn clear(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        *self.token.lock().unwrap_or_else(PoisonError::into_inner) = None;
        Box::pin(async { Ok(()) })
    }
}

/// Keeps the token in a JSON file, readable only by its owner (mode 0600 on Unix).
///
/// Writes go to a new temporary file in the same directory, are flushed to disk, then
/// renamed over the old file, so a crash leaves either the old token or the new one,
/// never a truncated file. The temporary file's name is random for every write
/// (`<file>.<32 hex digits>.tmp`) and it is created with `create_new`, which fails
/// rather than follow a link (or open a file) that another user planted there. A crash
/// between creating and renaming may leave such a file behind; it is never read. As
/// for any secret file, the directory should not be writable by other users. The compare-and-swap is atomic between clones of one
/// `FileStore` in one process; processes sharing a file need a store with a real
/// cross-process lock.
///
/// File I/O is synchronous: a few hundred bytes, once per token lifetime.
#[derive(Clone, Debug)]
pub struct FileStore {
    path: PathBuf,
    write_lock: Arc<Mutex<()>>,
}

impl FileStore {
    /// A store at `path`; the file need not exist yet, its directory must.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self::sharing_lock(path.into(), Arc::default())
    }

    /// A store whose writes are serialised with those of every store holding `write_lock`.
    pub(crate) fn sharing_lock(path: PathBuf, write_lock: Arc<Mutex<()>>) -> Self {
        Self { path, write_lock }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn remove(&self) -> Result<(), StoreError> {
        let _writer = self
            .write_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match fs::remove_file(&self.path) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error.into()),
            _ => Ok(()),
        }
    }

    fn read(&self) -> Result<Option<Token>, StoreError> {
        match fs::read(&self.path) {
            Ok(bytes) => parse_token_file(&bytes).map(Some),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    fn write(&self, token: &Token, expected: Option<&Token>) -> Result<(), StoreError> {
        let _writer = self
            .write_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if expected.is_some() {
            check_expected(self.read()?.as_ref(), expected)?;
        }
        let json = serde_json::to_vec_pretty(token).map_err(|error| StoreError::Corrupt {
            reason: crate::error::describe_json_error(&error, "token", 0),
        })?;
        self.replace_via(&self.temporary_path(), &json)
    }

    /// Writes `contents` to a new file at `temporary`, then renames it over the token
    /// file: readers see the old file or the new one, never a part.
    fn replace_via(&self, temporary: &Path, contents: &[u8]) -> Result<(), StoreError> {
        // If this fails, nothing was created: whatever is at `temporary` is not ours.
        write_new_private_file(temporary, contents)?;
        if let Err(error) = fs::rename(temporary, &self.path) {
            let _ = fs::remove_file(temporary); // best effort: the error below matters
            return Err(error.into());
        }
        sync_directory(&self.path);
        Ok(())
    }

    /// `<file>.<128 random bits in hex>.tmp`, next to the file (a rename within one
    /// directory is atomic). Unique per write, so no other process can predict it and
    /// plant something there; [`write_new_private_file`] refuses it anyway if it exists.
    fn temporary_path(&self) -> PathBuf {
        let mut name = self
            .path
            .file_name()
            .map(|name| name.to_os_string())
            .unwrap_or_default();
        name.push(format!(".{}.tmp", crate::random::unguessable_string()));
        self.path.with_file_name(name)
    }
}

/// Parses a token file's content; an error describes what is wrong by position only,
/// never quoting the content (it may hold a token).
fn parse_token_file(bytes: &[u8]) -> Result<Token, StoreError> {
    serde_json::from_slice(bytes).map_err(|error| StoreError::Corrupt {
        reason: crate::error::describe_json_error(&error, "stored token", bytes.len()),
    })
}

/// Creates `path` as a new file, mode 0600 on Unix, writes `contents` and syncs it.
///
/// `create_new` (`O_CREAT | O_EXCL` on Unix, `CREATE_NEW` on Windows) fails if
/// anything exists at `path`, and POSIX requires it to fail for a symbolic link even
/// when the link dangles: a link planted at the temporary name is never followed, so
/// no other file is truncated, written or created through it. (`O_NOFOLLOW` would add
/// nothing here, and would need the `libc` crate.) On failure after creating the file,
/// the file is removed.
fn write_new_private_file(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    let written = (|| {
        #[cfg(unix)]
        {
            // The umask may have cleared bits of 0600 at creation: make it exact. This
            // changes the open file (`fchmod`), not whatever the path names now.
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(fs::Permissions::from_mode(0o600))?;
        }
        file.write_all(contents)?;
        file.sync_all()
    })();
    if written.is_err() {
        drop(file);
        let _ = fs::remove_file(path); // ours: created above; the error below matters
    }
    written
}

/// Makes the rename durable. Best effort: some platforms cannot open directories.
fn sync_directory(path: &Path) {
    #[cfg(unix)]
    if let Some(directory) = path.parent() {
        let directory = if directory.as_os_str().is_empty() {
            Path::new(".")
        } else {
            directory
        };
        if let Ok(directory) = fs::File::open(directory) {
            let _ = directory.sync_all();
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

impl TokenStore for FileStore {
    fn load(&self) -> BoxFuture<'_, Result<Option<Token>, StoreError>> {
        let result = self.read();
        Box::pin(async move { result })
    }

    fn save<'a>(
        &'a self,
        token: &'a Token,
        expected: Option<&'a Token>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let result = self.write(token, expected);
        Box::pin(async move { result })
    }

    fn clear(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        let result = self.remove();
        Box::pin(async move { result })
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::{AccessToken, RefreshToken};

    pub(super) fn token(access: &str, refresh: &str) -> Token {
        Token::new(
            AccessToken::new(access),
            Some(RefreshToken::new(refresh)),
            UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            Some(UNIX_EPOCH + Duration::from_secs(1_700_005_400)),
        )
        .unwrap()
    }

    pub(super) fn block_on<F: std::future::Future>(future: F) -> F::Output {
        futures_util::FutureExt::now_or_never(future).expect("store futures complete at once")
    }

    fn exercise_compare_and_swap(store: &dyn TokenStore) {
        assert!(block_on(store.load()).unwrap().is_none());
        let first = token("a1", "r1");
        block_on(store.save(&first, None)).unwrap();
        let second = token("a2", "r2");
        block_on(store.save(&second, Some(&first))).unwrap();
        // A writer that still believes `first` is stored loses: `second` stays.
        let stale = token("a3", "r3");
        assert!(matches!(
            block_on(store.save(&stale, Some(&first))),
            Err(StoreError::Conflict)
        ));
        let loaded = block_on(store.load()).unwrap().unwrap();
        assert!(loaded.same_credentials(&second));
        assert_eq!(loaded.expires_at(), second.expires_at());
    }

    #[test]
    fn memory_store_compare_and_swap() {
        exercise_compare_and_swap(&MemoryStore::new());
    }

    #[test]
    fn file_store_round_trip_and_compare_and_swap() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path().join("token.json"));
        exercise_compare_and_swap(&store);
        // A second store on the same file (a restarted process) sees the token.
        let reopened = FileStore::new(store.path());
        let loaded = block_on(reopened.load()).unwrap().unwrap();
        assert_eq!(loaded.access_token().unwrap().secret(), "a2");
        assert_eq!(loaded.refresh_token().unwrap().secret(), "r2");
    }

    #[cfg(unix)]
    #[test]
    fn file_store_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token.json");
        // Even a pre-existing world-readable file ends up 0600 after a save.
        fs::write(&path, b"{}").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let store = FileStore::new(&path);
        block_on(store.save(&token("a", "r"), None)).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn interrupted_write_leaves_the_previous_file_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path().join("token.json"));
        block_on(store.save(&token("old", "old-r"), None)).unwrap();
        // A crash mid-write leaves a truncated temporary file behind...
        let temporary = store.temporary_path();
        fs::write(&temporary, b"{\"access_token\":\"ha").unwrap();
        // ...which never affects what is loaded,
        let loaded = block_on(store.load()).unwrap().unwrap();
        assert_eq!(loaded.access_token().unwrap().secret(), "old");
        // and a write that fails before the rename (here: something already exists
        // at the temporary path) leaves the previous token in place, and the obstacle
        // (not ours) where it was.
        fs::remove_file(&temporary).unwrap();
        fs::create_dir(&temporary).unwrap();
        let json = serde_json::to_vec(&token("new", "new-r")).unwrap();
        let err = store.replace_via(&temporary, &json).unwrap_err();
        assert!(matches!(err, StoreError::Io(_)), "{err:?}");
        assert!(temporary.is_dir());
        let loaded = block_on(store.load()).unwrap().unwrap();
        assert_eq!(loaded.access_token().unwrap().secret(), "old");
        // The next save picks a fresh temporary name and succeeds, leaving no
        // temporary file of its own.
        block_on(store.save(&token("new", "new-r"), None)).unwrap();
        assert_eq!(
            block_on(store.load())
                .unwrap()
                .unwrap()
                .access_token()
                .unwrap()
                .secret(),
            "new"
        );
        let mut names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .collect();
        names.sort();
        let mut expected = vec![store.path().to_owned(), temporary];
        expected.sort();
        assert_eq!(names, expected);
    }

    #[test]
    fn corrupt_and_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path().join("token.json"));
        assert!(block_on(store.load()).unwrap().is_none());
        fs::write(store.path(), b"not json").unwrap();
        assert!(matches!(
            block_on(store.load()),
            Err(StoreError::Corrupt { .. })
        ));
        let missing_dir = FileStore::new(dir.path().join("no/such/dir/token.json"));
        assert!(matches!(
            block_on(missing_dir.save(&token("a", "r"), None)),
            Err(StoreError::Io(_))
        ));
    }

    /// Issue 11 item 6: a symlink planted where the store writes its temporary file
    /// (the old, predictable `<file>.<pid>.tmp`, and other guesses) must not be
    /// followed: the victim stays untouched and the token file is a regular file.
    #[cfg(unix)]
    #[test]
    fn save_never_writes_through_a_symlink_planted_at_a_temporary_path() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token.json");
        let victim = dir.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        let pid = std::process::id();
        for guess in [
            format!("token.json.{pid}.tmp"),
            "token.json.tmp".to_owned(),
            format!(".token.json.{pid}.tmp"),
        ] {
            symlink(&victim, dir.path().join(guess)).unwrap();
        }
        // A dangling link: following it would create a file the attacker chose.
        let planted = dir.path().join("created-through-a-link");
        symlink(
            &planted,
            dir.path().join(format!("token.json.{}.tmp", pid + 1)),
        )
        .unwrap();
        let store = FileStore::new(&path);
        block_on(store.save(&token("a", "r"), None)).unwrap();
        block_on(store.save(&token("a2", "r2"), None)).unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        assert!(!planted.exists());
        assert!(fs::symlink_metadata(&path).unwrap().file_type().is_file());
        let loaded = block_on(store.load()).unwrap().unwrap();
        assert_eq!(loaded.access_token().unwrap().secret(), "a2");
    }

    /// The temporary file is created fresh: whatever already exists at its path (a
    /// link, dangling or not, or a file) is an error, never opened.
    #[cfg(unix)]
    #[test]
    fn temporary_file_is_created_new_never_through_a_link() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        let linked = dir.path().join("linked.tmp");
        symlink(&victim, &linked).unwrap();
        let err = write_new_private_file(&linked, b"token").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists, "{err:?}");
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        let target = dir.path().join("would-be-created");
        let dangling = dir.path().join("dangling.tmp");
        symlink(&target, &dangling).unwrap();
        let err = write_new_private_file(&dangling, b"token").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists, "{err:?}");
        assert!(!target.exists());
    }

    #[test]
    fn temporary_names_are_unique_and_unpredictable() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path().join("token.json"));
        let first = store.temporary_path();
        let second = store.temporary_path();
        assert_ne!(first, second);
        let pid_name = dir
            .path()
            .join(format!("token.json.{}.tmp", std::process::id()));
        assert_ne!(first, pid_name);
        assert_eq!(
            first.parent(),
            Some(dir.path()),
            "same directory: rename is atomic"
        );
    }

    /// Issue 11 item 3: a huge timestamp in the token file is a corrupt file, not a
    /// panic (`UNIX_EPOCH + Duration` overflows `SystemTime`).
    #[test]
    fn absurd_timestamps_in_the_file_are_corrupt_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path().join("token.json"));
        let max = u64::MAX;
        let past_i64 = 1_u64 << 63;
        for (issued, expires) in [
            (max.to_string(), "null".to_owned()),
            (past_i64.to_string(), "null".to_owned()),
            ("1700000000".to_owned(), max.to_string()),
            ("1700000000".to_owned(), past_i64.to_string()),
        ] {
            fs::write(
                store.path(),
                format!(
                    r#"{{"access_token":"a","refresh_token":"r","issued_at":{issued},"expires_at":{expires}}}"#
                ),
            )
            .unwrap();
            let loaded =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| block_on(store.load())));
            assert!(
                matches!(loaded, Ok(Err(StoreError::Corrupt { .. }))),
                "issued_at {issued}, expires_at {expires}: {:?}",
                loaded.as_ref().map_err(|_| "panicked")
            );
        }
        // The largest representable times are fine, and their arithmetic is checked.
        let far = i64::MAX.to_string();
        fs::write(
            store.path(),
            format!(r#"{{"access_token":"a","issued_at":{far},"expires_at":{far}}}"#),
        )
        .unwrap();
        let token = block_on(store.load()).unwrap().unwrap();
        let _ = token.refresh_at(crate::DEFAULT_REFRESH_SKEW);
        assert!(!token.is_expired_at(UNIX_EPOCH + Duration::from_secs(1_700_000_000)));
    }

    #[test]
    fn store_errors_print_no_secret() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path().join("token.json"));
        fs::write(
            store.path(),
            br#"{"access_token":"leaky-secret","issued_at":"leaky-secret"}"#,
        )
        .unwrap();
        let err = block_on(store.load()).unwrap_err();
        let printed = format!("{err} {err:?}");
        assert!(!printed.contains("leaky-secret"), "{printed}");
    }
}

/// The token-file parser under arbitrary input: `scripts/fuzz.sh` runs this for
/// millions of cases; CI runs proptest's default 256.
#[cfg(test)]
mod fuzz {
    use std::time::{Duration, UNIX_EPOCH};

    use proptest::prelude::*;

    use super::*;

    /// A marker that would show up in an error message that quotes its input.
    const MARKER: &str = "SeCrEtMaRkEr";

    /// JSON-shaped token files: the stored fields (and others) with values of every
    /// JSON type, many of them the marker or numbers at the edges of every integer
    /// type and of `SystemTime`.
    fn json_file() -> impl Strategy<Value = Vec<u8>> {
        let number = prop_oneof![
            any::<u64>().prop_map(|n| n.to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<f64>().prop_map(|n| format!("{n:?}")),
            Just(u64::MAX.to_string()),
            Just((1_u64 << 63).to_string()),
            Just(i64::MAX.to_string()),
            Just((i64::MAX as u64 / 1_000).to_string()),
            Just("18446744073709551616".to_owned()),
            Just("1e400".to_owned()),
            Just("-0".to_owned()),
            (0u64..4_000_000_000).prop_map(|n| n.to_string()),
        ];
        let value = prop_oneof![
            3 => number,
            2 => Just(format!("\"{MARKER}\"")),
            1 => Just(format!("\"{MARKER}\\n\\u0000\"")),
            1 => Just(format!("\"Bearer {MARKER}\"")),
            1 => Just("\"\"".to_owned()),
            1 => Just("null".to_owned()),
            1 => Just("true".to_owned()),
            1 => Just(format!("[\"{MARKER}\"]")),
            1 => Just(format!("{{\"x\":\"{MARKER}\"}}")),
            1 => "[ -~]{0,20}".prop_map(|s| format!("{s:?}")),
        ];
        let key = prop_oneof![
            Just("access_token"),
            Just("refresh_token"),
            Just("issued_at"),
            Just("expires_at"),
            Just("expires_in"),
            Just("created_at"),
            Just("other"),
            Just(MARKER),
        ];
        // Mostly well-formed files (the stored fields, each may be absent, values
        // varied), sometimes any mix.
        let fields = prop_oneof![
            (
                proptest::option::of(value.clone()),
                proptest::option::of(value.clone()),
                value.clone(),
                proptest::option::of(value.clone()),
            )
                .prop_map(|(access, refresh, issued, expires)| {
                    let mut fields = vec![("issued_at", issued)];
                    fields.extend(access.map(|v| ("access_token", v)));
                    fields.extend(refresh.map(|v| ("refresh_token", v)));
                    fields.extend(expires.map(|v| ("expires_at", v)));
                    fields
                }),
            proptest::collection::vec((key, value), 0..8),
        ];
        fields.prop_map(|fields| {
            let fields: Vec<String> = fields
                .into_iter()
                .map(|(key, value)| format!("\"{key}\":{value}"))
                .collect();
            format!("{{{}}}", fields.join(",")).into_bytes()
        })
    }

    fn any_file() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            3 => json_file(),
            1 => proptest::collection::vec(any::<u8>(), 0..256),
            1 => json_file().prop_map(|mut file| {
                file.truncate(file.len() / 2);
                file
            }),
            1 => (json_file(), any::<prop::sample::Index>(), any::<u8>()).prop_map(
                |(mut file, at, byte)| {
                    let at = at.index(file.len());
                    file[at] = byte;
                    file
                }
            ),
        ]
    }

    proptest! {
        #[test]
        fn token_files_never_panic_or_leak(file in any_file()) {
            match parse_token_file(&file) {
                Err(error) => {
                    let printed = format!("{error} {error:?}");
                    prop_assert!(!printed.contains(MARKER), "{}", printed);
                }
                Ok(token) => {
                    // What loads is usable without a panic, shows no secret, and
                    // saves back to the same token.
                    let printed = format!("{token:?}");
                    prop_assert!(!printed.contains(MARKER), "{}", printed);
                    let _ = token.refresh_at(crate::DEFAULT_REFRESH_SKEW);
                    let _ = token.refresh_at(Duration::MAX);
                    let _ = token.is_expired_at(UNIX_EPOCH);
                    let saved = serde_json::to_vec_pretty(&token).expect("a token serializes");
                    let again = parse_token_file(&saved).expect("a saved token loads");
                    prop_assert!(again.same_credentials(&token));
                    prop_assert_eq!(again.issued_at(), token.issued_at());
                    prop_assert_eq!(again.expires_at(), token.expires_at());
                }
            }
        }
    }
}
