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
}

/// Keeps the token in a JSON file, readable only by its owner (mode 0600 on Unix).
///
/// Writes go to a temporary file in the same directory, are flushed to disk, then
/// renamed over the old file, so a crash leaves either the old token or the new one,
/// never a truncated file. The compare-and-swap is atomic between clones of one
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
        Self {
            path: path.into(),
            write_lock: Arc::default(),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read(&self) -> Result<Option<Token>, StoreError> {
        match fs::read(&self.path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|error| StoreError::Corrupt {
                        reason: crate::error::describe_json_error(
                            &error,
                            "stored token",
                            bytes.len(),
                        ),
                    })
            }
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
        let temporary = self.temporary_path();
        let written = write_new_private_file(&temporary, &json)
            .and_then(|()| fs::rename(&temporary, &self.path));
        if let Err(error) = written {
            let _ = fs::remove_file(&temporary); // best effort: the error below matters
            return Err(error.into());
        }
        sync_directory(&self.path);
        Ok(())
    }

    fn temporary_path(&self) -> PathBuf {
        let mut name = self
            .path
            .file_name()
            .map(|name| name.to_os_string())
            .unwrap_or_default();
        name.push(format!(".{}.tmp", std::process::id()));
        self.path.with_file_name(name)
    }
}

fn write_new_private_file(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    #[cfg(unix)]
    {
        // `mode` applies only when the file is created; a leftover temporary file
        // from a crash keeps its old mode, so set it explicitly.
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(contents)?;
    file.sync_all()
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
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::{AccessToken, RefreshToken};

    fn token(access: &str, refresh: &str) -> Token {
        Token::new(
            AccessToken::new(access),
            Some(RefreshToken::new(refresh)),
            UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            Some(UNIX_EPOCH + Duration::from_secs(1_700_005_400)),
        )
        .unwrap()
    }

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
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
        assert_eq!(loaded.access_token().secret(), "a2");
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
        assert_eq!(loaded.access_token().secret(), "old");
        // and a write that fails before the rename (here: the temporary path cannot
        // be a file) leaves the previous token in place.
        fs::remove_file(&temporary).unwrap();
        fs::create_dir(&temporary).unwrap();
        let err = block_on(store.save(&token("new", "new-r"), None)).unwrap_err();
        assert!(matches!(err, StoreError::Io(_)), "{err:?}");
        let loaded = block_on(store.load()).unwrap().unwrap();
        assert_eq!(loaded.access_token().secret(), "old");
        // Once the obstacle is gone the next save succeeds.
        fs::remove_dir(&temporary).unwrap();
        block_on(store.save(&token("new", "new-r"), None)).unwrap();
        assert_eq!(
            block_on(store.load())
                .unwrap()
                .unwrap()
                .access_token()
                .secret(),
            "new"
        );
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
