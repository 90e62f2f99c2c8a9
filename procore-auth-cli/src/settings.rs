//! Where the token lives and which app and environment it belongs to.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use procore_auth_core::{ClientSecret, Environment, FileStore, OAuthClient, ENV_CLIENT_SECRET};

use crate::cli::Global;
use crate::failure::Failure;

/// The resolved global options.
#[derive(Debug)]
pub(crate) struct Settings {
    environment: Environment,
    client_id: Option<String>,
    token_file: PathBuf,
}

impl Settings {
    /// Resolves `--env`, `--client-id` and `--token-file` (or their variables).
    pub(crate) fn resolve(global: &Global) -> Result<Self, Failure> {
        let environment = match global.environment.as_deref() {
            Some(name) if !name.trim().is_empty() => Environment::named(name)
                .map_err(|error| Failure::from_core("--env / PROCORE_ENVIRONMENT", &error))?,
            _ => Environment::production(),
        };
        let token_file = match &global.token_file {
            Some(path) if !path.as_os_str().is_empty() => path.clone(),
            _ => default_token_file(&environment)?,
        };
        let client_id = global
            .client_id
            .as_deref()
            .map(str::trim)
            .filter(|id| !id.is_empty())
            .map(str::to_owned);
        Ok(Self {
            environment,
            client_id,
            token_file,
        })
    }

    pub(crate) fn environment(&self) -> &Environment {
        &self.environment
    }

    pub(crate) fn token_file(&self) -> &Path {
        &self.token_file
    }

    /// The app's OAuth client: the id from `--client-id` / `PROCORE_CLIENT_ID`, the
    /// secret from `PROCORE_CLIENT_SECRET` only.
    pub(crate) fn oauth(&self) -> Result<OAuthClient, Failure> {
        let client_id = self.client_id.as_deref().ok_or_else(|| {
            Failure::usage("no client id: pass --client-id or set PROCORE_CLIENT_ID")
        })?;
        let secret = match std::env::var(ENV_CLIENT_SECRET) {
            Ok(secret) if !secret.trim().is_empty() => secret,
            Ok(_) | Err(std::env::VarError::NotPresent) => {
                return Err(Failure::usage(format!(
                    "{ENV_CLIENT_SECRET} is not set (the client secret is read from the \
                     environment only, never from the command line)"
                )))
            }
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(Failure::usage(format!(
                    "{ENV_CLIENT_SECRET} is not valid Unicode"
                )))
            }
        };
        Ok(OAuthClient::new(
            self.environment.clone(),
            client_id,
            ClientSecret::new(secret.trim()),
        ))
    }

    /// The token file as a core `FileStore` (atomic writes, mode 0600).
    pub(crate) fn store(&self) -> FileStore {
        FileStore::new(&self.token_file)
    }

    /// Creates the token file's directory (mode 0700 where created), for `login`.
    pub(crate) fn create_token_directory(&self) -> Result<(), Failure> {
        let Some(directory) = self.directory() else {
            return Ok(());
        };
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(directory).map_err(|error| {
            Failure::failed(format!(
                "cannot create the directory {}: {error}",
                directory.display()
            ))
        })
    }

    /// Holds `<token file>.lock` exclusively: one `procore-auth` process at a time
    /// reads, refreshes and writes the token (a refresh token is single use, so two
    /// processes refreshing at once would lock the user out). Blocks while another
    /// process holds it.
    ///
    /// `Ok(None)` when the token file's directory does not exist: there is no token.
    pub(crate) fn lock(&self) -> Result<Option<TokenLock>, Failure> {
        let path = lock_path(&self.token_file);
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = match options.open(&path) {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(error) => {
                return Err(Failure::failed(format!(
                    "cannot open the lock file {}: {error}",
                    path.display()
                )))
            }
        };
        let mut lock = fd_lock::RwLock::new(file);
        // The guard borrows the lock; forgetting neither, the lock is released when
        // the file is closed (`flock`/`LockFileEx` locks belong to the open file).
        match lock.write() {
            Ok(guard) => std::mem::forget(guard),
            Err(error) => {
                return Err(Failure::failed(format!(
                    "cannot lock {}: {error}",
                    path.display()
                )))
            }
        }
        Ok(Some(TokenLock { _file: lock }))
    }

    fn directory(&self) -> Option<&Path> {
        self.token_file
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
    }
}

/// An exclusive lock on the token file, released when dropped (the file is closed).
#[derive(Debug)]
pub(crate) struct TokenLock {
    _file: fd_lock::RwLock<File>,
}

/// `<token file>.lock`.
fn lock_path(token_file: &Path) -> PathBuf {
    let mut name = token_file.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// `<config dir>/procore-auth/<login host>[_<port>].json`.
fn default_token_file(environment: &Environment) -> Result<PathBuf, Failure> {
    let config = dirs::config_dir().ok_or_else(|| {
        Failure::usage("no configuration directory is known here: pass --token-file")
    })?;
    Ok(config
        .join("procore-auth")
        .join(format!("{}.json", file_stem(environment))))
}

/// The login host (and port, if any) of `environment`, safe as a file name.
fn file_stem(environment: &Environment) -> String {
    let authority = environment
        .auth_base()
        .parse::<http::Uri>()
        .ok()
        .and_then(|uri| {
            uri.authority()
                .map(|authority| authority.as_str().to_owned())
        })
        .unwrap_or_else(|| "procore".to_owned());
    // Drop any userinfo; keep host and port.
    let host_port = authority.rsplit('@').next().unwrap_or(&authority);
    host_port
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_files_are_named_after_the_login_host() {
        let stem = |name: &str| file_stem(&Environment::named(name).unwrap());
        assert_eq!(stem("production"), "login.procore.com");
        assert_eq!(stem("sandbox"), "login-sandbox.procore.com");
        assert_eq!(stem("monthly-sandbox"), "login-sandbox-monthly.procore.com");
        assert_eq!(stem("federal"), "login.procoregov.com");
        assert_eq!(stem("http://127.0.0.1:8080"), "127.0.0.1_8080");
        assert_eq!(stem("https://[::1]:9/x"), "___1__9");
    }

    #[test]
    fn the_lock_sits_beside_the_token_file() {
        assert_eq!(
            lock_path(Path::new("/a/b/login.procore.com.json")),
            Path::new("/a/b/login.procore.com.json.lock")
        );
    }

    #[test]
    fn a_second_lock_waits_for_the_first() {
        let directory = tempfile::tempdir().unwrap();
        let settings = Settings {
            environment: Environment::production(),
            client_id: None,
            token_file: directory.path().join("token.json"),
        };
        let first = settings.lock().unwrap().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let path = settings.token_file.clone();
        let waiter = std::thread::spawn(move || {
            let settings = Settings {
                environment: Environment::production(),
                client_id: None,
                token_file: path,
            };
            let _second = settings.lock().unwrap().unwrap();
            tx.send(()).unwrap();
        });
        assert!(rx
            .recv_timeout(std::time::Duration::from_millis(200))
            .is_err());
        drop(first);
        rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
        waiter.join().unwrap();
        let missing = Settings {
            environment: Environment::production(),
            client_id: None,
            token_file: directory.path().join("no/such/dir/token.json"),
        };
        assert!(missing.lock().unwrap().is_none());
    }
}
