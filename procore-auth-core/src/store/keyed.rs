//! Stores holding one token per tenant, for a [`TokenRegistry`](crate::TokenRegistry).

use std::collections::HashMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use super::{check_expected, FileStore, RefreshTurn, StoreError, TokenStore};
use crate::transport::BoxFuture;
use crate::Token;

/// Persists one token per tenant key: the contract of [`TokenStore`] for each key,
/// keys independent of each other.
///
/// [`save`](Self::save) is the same compare-and-swap as [`TokenStore::save`]: store
/// `token` under `key` only if the token stored there is still `expected`.
pub trait KeyedTokenStore<K>: Send + Sync + fmt::Debug {
    /// The token stored for `key`, if any.
    fn load<'a>(&'a self, key: &'a K) -> BoxFuture<'a, Result<Option<Token>, StoreError>>;

    /// Stores `token` for `key` if the token stored for `key` is still `expected`
    /// (compared with [`Token::same_credentials`]; `None` means "whatever is stored").
    ///
    /// # Errors
    ///
    /// [`StoreError::Conflict`] if another writer stored a different token for `key`
    /// since `expected` was read; nothing is written then.
    fn save<'a>(
        &'a self,
        key: &'a K,
        token: &'a Token,
        expected: Option<&'a Token>,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Removes the token stored for `key`. Removing a missing token succeeds.
    fn clear<'a>(&'a self, key: &'a K) -> BoxFuture<'a, Result<(), StoreError>>;

    /// [`TokenStore::begin_refresh`] for `key`. The default is `Go` without a lease.
    fn begin_refresh<'a>(
        &'a self,
        key: &'a K,
        presenting: Option<&'a Token>,
    ) -> BoxFuture<'a, Result<RefreshTurn, StoreError>> {
        let _ = (key, presenting);
        Box::pin(async { Ok(RefreshTurn::Go(None)) })
    }
}

/// One tenant's view of a keyed store: what that tenant's
/// [`TokenManager`](crate::TokenManager) reads and writes.
pub(crate) struct TenantStore<K> {
    pub(crate) store: Arc<dyn KeyedTokenStore<K>>,
    pub(crate) key: K,
}

impl<K: fmt::Display> fmt::Debug for TenantStore<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantStore")
            .field("tenant", &format_args!("{}", self.key))
            .field("store", &self.store)
            .finish()
    }
}

impl<K: fmt::Display + Send + Sync> TokenStore for TenantStore<K> {
    fn load(&self) -> BoxFuture<'_, Result<Option<Token>, StoreError>> {
        self.store.load(&self.key)
    }

    fn save<'a>(
        &'a self,
        token: &'a Token,
        expected: Option<&'a Token>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.store.save(&self.key, token, expected)
    }

    fn clear(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        self.store.clear(&self.key)
    }

    fn begin_refresh<'a>(
        &'a self,
        presenting: Option<&'a Token>,
    ) -> BoxFuture<'a, Result<RefreshTurn, StoreError>> {
        self.store.begin_refresh(&self.key, presenting)
    }
}

/// Keeps one token per key in memory: shared by clones, lost on exit.
#[derive(Clone)]
pub struct KeyedMemoryStore<K> {
    tokens: Arc<Mutex<HashMap<K, Token>>>,
}

impl<K> KeyedMemoryStore<K> {
    /// An empty store.
    pub fn new() -> Self {
        Self {
            tokens: Arc::default(),
        }
    }

    fn tokens(&self) -> std::sync::MutexGuard<'_, HashMap<K, Token>> {
        self.tokens.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many tokens the store holds.
    pub fn len(&self) -> usize {
        self.tokens().len()
    }

    /// Whether the store holds no token.
    pub fn is_empty(&self) -> bool {
        self.tokens().is_empty()
    }
}

impl<K> Default for KeyedMemoryStore<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K> fmt::Debug for KeyedMemoryStore<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedMemoryStore")
            .field("tokens", &self.len())
            .finish()
    }
}

impl<K: Hash + Eq + Clone + Send + Sync> KeyedTokenStore<K> for KeyedMemoryStore<K> {
    fn load<'a>(&'a self, key: &'a K) -> BoxFuture<'a, Result<Option<Token>, StoreError>> {
        let token = self.tokens().get(key).cloned();
        Box::pin(async move { Ok(token) })
    }

    fn save<'a>(
        &'a self,
        key: &'a K,
        token: &'a Token,
        expected: Option<&'a Token>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let mut tokens = self.tokens();
        let result = check_expected(tokens.get(key), expected).map(|()| {
            tokens.insert(key.clone(), token.clone());
        });
        Box::pin(async move { result })
    }

    fn clear<'a>(&'a self, key: &'a K) -> BoxFuture<'a, Result<(), StoreError>> {
        self.tokens().remove(key);
        Box::pin(async { Ok(()) })
    }
}

/// Keeps one token per key in a directory, one JSON file per key, each written as
/// [`FileStore`] writes its file (private, atomic replace).
///
/// A key's file is named after its `Display` form: `tenant-`, then lowercase ASCII
/// letters, digits, `-` and `_` as they are and every other byte (uppercase letters
/// included, for case-insensitive file systems) as `%XX`, then `.json`
/// (`company-7/User 1` becomes `tenant-company-7%2F%55ser%201.json`), so distinct
/// names never share a file, none is a Windows device name, and no key can name a
/// path outside the directory. Keys are told apart by their `Display` form only:
/// two tenants whose keys print alike share a file, so make `Display` show every
/// field that distinguishes a tenant. A key whose encoding would be empty or longer
/// than [`MAX_KEY_FILE_NAME`] bytes is refused with an I/O error of kind
/// `InvalidInput`.
///
/// The compare-and-swap is atomic between clones of one `KeyedFileStore` in one
/// process, as for [`FileStore`]. Writes to different keys do not wait for each other
/// (beyond a rare shared lock stripe); file I/O is synchronous, a few hundred bytes per
/// tenant per token lifetime.
#[derive(Clone, Debug)]
pub struct KeyedFileStore {
    directory: PathBuf,
    write_locks: Arc<[Arc<Mutex<()>>; LOCK_STRIPES]>,
}

/// Write locks, shared by the keys whose file names hash alike: bounded, whatever the
/// number of tenants.
const LOCK_STRIPES: usize = 64;

/// Starts every key's file name, so no name is a device name on Windows (`con`,
/// `nul`, `com1`…).
const FILE_PREFIX: &str = "tenant-";

/// The longest encoded key (between `tenant-` and `.json`) accepted: file systems
/// commonly allow 255 bytes, and the temporary file's name adds 38.
pub const MAX_KEY_FILE_NAME: usize = 200;

impl KeyedFileStore {
    /// A store in `directory`, which must exist.
    pub fn new(directory: impl Into<PathBuf>) -> Self {
        Self {
            directory: directory.into(),
            write_locks: Arc::new(std::array::from_fn(|_| Arc::default())),
        }
    }

    /// The directory.
    pub fn directory(&self) -> &Path {
        &self.directory
    }

    /// The store of `key`'s file, with its key's write lock.
    fn file(&self, key: &impl fmt::Display) -> Result<FileStore, StoreError> {
        let name = file_name(&key.to_string())?;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        name.hash(&mut hasher);
        let stripe = (hasher.finish() % LOCK_STRIPES as u64) as usize;
        Ok(FileStore::sharing_lock(
            self.directory.join(name),
            Arc::clone(&self.write_locks[stripe]),
        ))
    }
}

/// `key` as a file name (see [`KeyedFileStore`]).
fn file_name(key: &str) -> Result<String, StoreError> {
    let mut name = String::with_capacity(key.len() + 12);
    name.push_str(FILE_PREFIX);
    for byte in key.bytes() {
        // Uppercase letters escaped too: `Ann` and `ann` are one file on
        // case-insensitive file systems.
        if byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-' || byte == b'_' {
            name.push(char::from(byte));
        } else {
            name.push_str(&format!("%{byte:02X}"));
        }
    }
    let encoded = name.len() - FILE_PREFIX.len();
    if encoded == 0 || encoded > MAX_KEY_FILE_NAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "a tenant key must name a file of 1 to {MAX_KEY_FILE_NAME} bytes, not {encoded}"
            ),
        )
        .into());
    }
    name.push_str(".json");
    Ok(name)
}

impl<K: fmt::Display + Send + Sync> KeyedTokenStore<K> for KeyedFileStore {
    fn load<'a>(&'a self, key: &'a K) -> BoxFuture<'a, Result<Option<Token>, StoreError>> {
        let result = self.file(key).and_then(|file| file.read());
        Box::pin(async move { result })
    }

    fn save<'a>(
        &'a self,
        key: &'a K,
        token: &'a Token,
        expected: Option<&'a Token>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let result = self.file(key).and_then(|file| file.write(token, expected));
        Box::pin(async move { result })
    }

    fn clear<'a>(&'a self, key: &'a K) -> BoxFuture<'a, Result<(), StoreError>> {
        let result = self.file(key).and_then(|file| file.remove());
        Box::pin(async move { result })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::{block_on, token};

    /// The per-key compare-and-swap, and keys independent of each other.
    fn exercise(store: &dyn KeyedTokenStore<String>) {
        let (a, b) = ("company-1/user a".to_owned(), "company-2/user b".to_owned());
        assert!(block_on(store.load(&a)).unwrap().is_none());
        let a1 = token("a1", "ra1");
        block_on(store.save(&a, &a1, None)).unwrap();
        let b1 = token("b1", "rb1");
        // B's expectation concerns B only: nothing stored for B yet.
        block_on(store.save(&b, &b1, Some(&a1))).unwrap();
        let a2 = token("a2", "ra2");
        block_on(store.save(&a, &a2, Some(&a1))).unwrap();
        assert!(matches!(
            block_on(store.save(&a, &token("a3", "ra3"), Some(&a1))),
            Err(StoreError::Conflict)
        ));
        let loaded = block_on(store.load(&a)).unwrap().unwrap();
        assert!(loaded.same_credentials(&a2));
        block_on(store.clear(&a)).unwrap();
        block_on(store.clear(&a)).unwrap();
        assert!(block_on(store.load(&a)).unwrap().is_none());
        let loaded = block_on(store.load(&b)).unwrap().unwrap();
        assert!(loaded.same_credentials(&b1));
    }

    #[test]
    fn keyed_memory_store_compare_and_swap_per_key() {
        exercise(&KeyedMemoryStore::new());
    }

    #[test]
    fn keyed_file_store_compare_and_swap_per_key() {
        let directory = tempfile::tempdir().unwrap();
        let store = KeyedFileStore::new(directory.path());
        exercise(&store);
        let mut names: Vec<_> = std::fs::read_dir(directory.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["tenant-company-2%2Fuser%20b.json"]);
    }

    #[test]
    fn key_file_names_are_injective_and_stay_in_the_directory() {
        let keys = [
            "a",
            "A",
            "a.b",
            "a%2Eb",
            "../etc/passwd",
            "é",
            "a b",
            "a_b-c",
        ];
        let names: std::collections::HashSet<_> =
            keys.iter().map(|key| file_name(key).unwrap()).collect();
        assert_eq!(names.len(), keys.len());
        for name in &names {
            assert!(!name.contains('/') && !name.contains('\\'), "{name}");
            assert!(!name.starts_with('.'), "{name}");
        }
        assert_eq!(file_name("../x").unwrap(), "tenant-%2E%2E%2Fx.json");
        assert_ne!(
            file_name("Ann").unwrap().to_lowercase(),
            file_name("ann").unwrap().to_lowercase()
        );
        assert_eq!(file_name("con").unwrap(), "tenant-con.json");
    }

    #[test]
    fn empty_and_overlong_keys_are_refused() {
        let directory = tempfile::tempdir().unwrap();
        let store = KeyedFileStore::new(directory.path());
        for key in [String::new(), "x".repeat(MAX_KEY_FILE_NAME + 1)] {
            let error = block_on(store.save(&key, &token("a", "r"), None)).unwrap_err();
            assert!(
                matches!(&error, StoreError::Io(io) if io.kind() == io::ErrorKind::InvalidInput),
                "{error:?}"
            );
        }
        file_name(&"x".repeat(MAX_KEY_FILE_NAME)).unwrap();
    }
}
